"""What each optimisation of PacsPull's retrieve gains, one lever at a time, against real peers.

    .venv/bin/python benchmarks/levers.py [--workloads big,many] [--runs 3] [--peer dcmqrscp]

Each configuration retrieves the study in a fresh process (``--child``) through PacsPull's engine
(``Retrieval`` + ``StudyWriter``), with the levers it names switched on and the others reverted to what
the code did before (pynetdicom's polling DUL, 4 KB receives, PDU and DIMSE objects and thread hand-offs,
an fsync per file, decoding each header with pydicom up to the pixel data, rendering and checking every
folder per instance). The ladder adds one lever at
a time; ``all but X`` rows take one away from the full set; PDU rows vary the maximum PDU we accept (the
peer splits each instance into PDUs of at most that size). A stock (Nagle) peer row set shows what
TCP_QUICKACK does for small instances. Times are the engine's own (``summary.seconds``, association to
release, no interpreter start-up); runs are interleaved across configurations.

Writes ``<out>/levers-<timestamp>.md`` / ``.json`` and ``levers-latest.*``.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Iterator

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent / "tests"))
sys.path.insert(0, str(HERE))

LEVERS = ("batch_fsync", "event_driven", "recv_into", "quickack", "quiet_logging", "fast_store", "fast_pdus",
          "pump", "short_header", "path_cache", "answer_first")


def _upto(last: str) -> dict[str, Any]:
    """Every lever up to and including ``last`` (recv_into and quickack go together)."""
    on = LEVERS[:LEVERS.index(last) + 1]
    return {lever: True for lever in on}


LADDER: list[tuple[str, dict[str, Any]]] = [
    ("none (as before)", {}),
    ("+ batch fsync (one syncfs per request)", _upto("batch_fsync")),
    ("+ event-driven DUL (no 1 ms polls)", _upto("event_driven")),
    ("+ one recv_into per PDU, TCP_QUICKACK", _upto("quickack")),
    ("+ pynetdicom's idle log handlers unbound", _upto("quiet_logging")),
    ("+ C-STORE/C-GET/C-FIND parsed with struct, answer sent directly", _upto("fast_store")),
    ("+ P-DATA PDUs split without pynetdicom objects", _upto("fast_pdus")),
    ("+ waiting thread reads the socket (no hand-offs)", _upto("pump")),
    ("+ header scanned without pydicom, up to what is needed", _upto("short_header")),
    ("+ folder/name caches", _upto("path_cache")),
    ("+ bookkeeping after the C-STORE answer (= all levers)", _upto("answer_first")),
]
ALL = dict.fromkeys(LEVERS, True)


def child(config: dict[str, Any]) -> None:
    """Run one retrieve with ``config``'s levers; print a JSON line."""
    from pacspull.core import _pynetdicom_compat as compat
    from pacspull.core import get, storage
    from pacspull.core.get import Retrieval, RetrieveOptions, RetrieveRequest
    from pacspull.core.nodes import Node
    from pacspull.core.storage import StudyWriter

    levers = config["levers"]
    compat.SETTINGS.event_driven = bool(levers.get("event_driven"))
    compat.SETTINGS.recv_into = bool(levers.get("recv_into"))
    compat.SETTINGS.quickack = bool(levers.get("quickack"))
    compat.SETTINGS.quiet_logging = bool(levers.get("quiet_logging"))
    compat.SETTINGS.fast_store = bool(levers.get("fast_store"))
    compat.SETTINGS.fast_pdus = bool(levers.get("fast_pdus"))
    compat.SETTINGS.pump = bool(levers.get("pump"))
    compat.SETTINGS.answer_first = bool(levers.get("answer_first"))
    if not levers.get("batch_fsync"):
        @contextlib.contextmanager
        def per_file_fsync(self: StudyWriter) -> Iterator[StudyWriter]:
            yield self

        StudyWriter.deferred_sync = per_file_fsync  # type: ignore[method-assign]
    if not levers.get("short_header"):
        get._last_tag = lambda keywords: 0x7FE0000F  # type: ignore[assignment]
        get.scan_header = lambda *args: None  # type: ignore[assignment]
    if not levers.get("path_cache"):
        storage._safe_field_text = storage._safe_field_text.__wrapped__  # type: ignore[attr-defined]
        storage._assemble = storage._assemble.__wrapped__  # type: ignore[attr-defined]

        def uncached(self: StudyWriter, header: Any, uid: str) -> Path:
            final = self.path_for(header, sop_instance_uid=uid)
            final.parent.mkdir(parents=True, exist_ok=True)
            return final

        StudyWriter._prepared_path = uncached  # type: ignore[method-assign]
    node = Node(name="lever", ae_title=config["aet"], host=config["host"], port=config["port"],
                max_pdu=config.get("max_pdu", 131072))
    writer = StudyWriter(Path(config["out"]))
    retrieval = Retrieval(node, [RetrieveRequest(config["study_uid"])], writer,
                          options=RetrieveOptions(skip_existing=False))
    cpu0 = time.process_time()
    summary = retrieval.run()
    print(json.dumps({"seconds": summary.seconds, "cpu": time.process_time() - cpu0,
                      "completed": summary.total("completed"), "error": str(summary.error or "")}))


def run_child(config: dict[str, Any]) -> dict[str, Any]:
    out = Path(config["out"])
    proc = subprocess.run([sys.executable, __file__, "--child", json.dumps(config)], capture_output=True,
                          text=True, timeout=900)
    shutil.rmtree(out, ignore_errors=True)
    os.sync()
    try:
        return json.loads(proc.stdout.strip().splitlines()[-1])
    except (ValueError, IndexError):
        return {"seconds": float("nan"), "cpu": float("nan"), "completed": 0, "error": proc.stderr[-300:]}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--child", help=argparse.SUPPRESS)
    parser.add_argument("--workloads", default="big,many")
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--peer", choices=["dcmqrscp", "orthanc"], default="dcmqrscp")
    parser.add_argument("--no-nagle", action="store_true", help="skip the stock-peer (TCP_QUICKACK) rows")
    parser.add_argument("--no-pdu", action="store_true", help="skip the max PDU rows")
    parser.add_argument("--cache", type=Path, default=Path(tempfile.gettempdir()) / "pacspull-bench-cache")
    parser.add_argument("--out", type=Path, default=HERE / "results")
    args = parser.parse_args(argv)
    if args.child:
        child(json.loads(args.child))
        return 0

    import run as bench
    import workloads as wl

    names = [w.strip().lower() for w in args.workloads.split(",") if w.strip()]
    items = {n.upper(): wl.workload(n, args.cache) for n in names}
    probe = wl.workload("many", args.cache, 300)
    probe.name = "MANY/300"
    all_items = [*items.values(), probe]
    work = Path(tempfile.mkdtemp(prefix="pacspull-levers-"))
    modes = ["nodelay"] + ([] if args.no_nagle else ["nagle"])
    peers = bench.start_peers([args.peer], modes, all_items, work, args.cache, print)
    configs: list[tuple[str, str, str, dict[str, Any], int]] = []  # (workload, mode, label, levers, max_pdu)
    for name in items:
        for label, levers in LADDER:
            configs.append((name, "nodelay", label, levers, 131072))
        for lever in ("batch_fsync", "event_driven", "fast_store", "pump", "short_header", "path_cache"):
            configs.append((name, "nodelay", f"all but {lever}", {**ALL, lever: False}, 131072))
        if not args.no_pdu:
            for pdu in (16384, 1 << 20, 0):
                configs.append((name, "nodelay", f"all, max PDU {pdu or 'unlimited'}", ALL, pdu))
    if not args.no_nagle:
        configs.append(("MANY/300", "nagle", "all (stock peer)", ALL, 131072))
        configs.append(("MANY/300", "nagle", "all but quickack (stock peer)", {**ALL, "quickack": False}, 131072))
        configs.append(("MANY/300", "nagle", "none (stock peer, as before)", {}, 131072))
    studies = {**items, probe.name: probe}
    results: dict[int, list[dict[str, Any]]] = {i: [] for i in range(len(configs))}
    try:
        for run in range(args.runs):
            for index, (name, mode, label, levers, pdu) in enumerate(configs):
                peer = peers[(args.peer, mode)]
                config = {"levers": levers, "host": peer.host, "port": peer.port, "aet": peer.aet,
                          "study_uid": studies[name].study_uid, "max_pdu": pdu,
                          "out": str(work / f"out-{run}-{index}")}
                result = run_child(config)
                results[index].append(result)
                print(f"run {run + 1} {name:9} {mode:7} {label:45} {result['seconds']:7.2f} s "
                      f"cpu {result['cpu']:6.2f} s  {result['completed']}/{studies[name].instances} "
                      f"{result['error'][:60]}", flush=True)
    finally:
        for peer in peers.values():
            peer.stop()
        shutil.rmtree(work, ignore_errors=True)
    rows = []
    for index, (name, mode, label, levers, pdu) in enumerate(configs):
        secs = [r["seconds"] for r in results[index]]
        rows.append({"workload": name, "mode": mode, "levers": label, "max_pdu": pdu,
                     "median_s": round(statistics.median(secs), 3), "min_s": round(min(secs), 3),
                     "cpu_s": round(statistics.median(r["cpu"] for r in results[index]), 2),
                     "inst_per_s": round(studies[name].instances / statistics.median(secs), 1),
                     "completed": min(r["completed"] for r in results[index]), "expected": studies[name].instances})
    lines = [f"# PacsPull levers ({args.peer}, {args.runs} runs, engine time without interpreter start-up)", "",
             "| study | peer TCP | levers | median s | min s | inst/s | CPU s | completed |",
             "|---|---|---|--:|--:|--:|--:|--:|"]
    for r in rows:
        lines.append(f"| {r['workload']} | {r['mode']} | {r['levers']} | {r['median_s']:.2f} | {r['min_s']:.2f} | "
                     f"{r['inst_per_s']:.0f} | {r['cpu_s']:.2f} | {r['completed']}/{r['expected']} |")
    text = "\n".join(lines) + "\n"
    args.out.mkdir(parents=True, exist_ok=True)
    stamp = time.strftime("%Y%m%d-%H%M%S")
    for name in (f"levers-{stamp}", "levers-latest"):
        (args.out / f"{name}.md").write_text(text)
        (args.out / f"{name}.json").write_text(json.dumps(rows, indent=1))
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
