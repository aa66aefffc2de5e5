"""PacsPull's C-GET speed beside dcmtk's getscu and pynetdicom's getscu app, on loopback, in one command.

    .venv/bin/python benchmarks/run.py                 # the full run (about 12-15 minutes on 2 cores)
    .venv/bin/python benchmarks/run.py --tiny          # seconds: what the smoke test runs

One run: measures the machine's loopback TCP and disk limits; generates (or reuses from the cache) the
BIG, MANY and MIXED studies (see workloads.py); starts Orthanc and dcmqrscp on free loopback ports,
each twice: with ``TCP_NODELAY=1`` in its environment and stock (Nagle on, as Debian ships them);
loads every study into each; then, for every (workload, peer, TCP mode) cell, retrieves the study with
each client ``--runs`` times, the clients interleaved (a different order every run), each retrieve a
fresh process into an empty folder, ``sync`` between retrieves (not timed).

Clients, each as a user would run it (default options):

* ``pacspull``: ``python -m pacspull.core.cli get --host --port --aet --study-uid --out --json``
* ``dcmtk``: ``getscu -S -k QueryRetrieveLevel=STUDY -k StudyInstanceUID=... -od DIR``, run with
  ``TCP_NODELAY=1`` in its environment (its best case: without it getscu's own C-STORE responses wait on
  Nagle too, 47 ms an instance here)
* ``pynetdicom``: ``python -m pynetdicom getscu ... -S -k ... -od DIR``

Measured per retrieve: wall time, CPU time (user + system) and peak RSS of the client process (os.wait4),
instances that arrived (files in the folder; for pacspull its JSON summary). MB/s is the study's size as
stored on the PACS, times the fraction that arrived, divided by wall time. A ratio is the client's time
per instance divided by the reference client's in the same cell (< 1: faster).

Stock (Nagle) peers stall every small instance on the receiver's delayed ACK (~40 ms). A client whose
first MANY retrieve of a ``--nagle-probe``-instance study projects the full MANY beyond
``--nagle-budget`` seconds is measured on that smaller study instead, and the table marks the row
(``MANY/300``): rates and ratios stay comparable, the run stays within minutes.

Writes ``<out>/bench-<timestamp>.json`` and ``.md`` plus ``latest.json`` / ``latest.md``.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
sys.path.insert(0, str(REPO / "tests"))
sys.path.insert(0, str(HERE))

import limits  # noqa: E402
import workloads as wl  # noqa: E402
from peers import DcmqrscpPeer, OrthancPeer, dcmtk_version, find_binary, orthanc_version  # noqa: E402

CLIENTS = ("pacspull", "dcmtk", "pynetdicom")
CALLING_AE = "BENCH"


# --------------------------------------------------------------------------------------------------
# one retrieve


@dataclass
class Run:
    client: str
    workload: str  # the study actually retrieved (MANY, or MANY/300 for a Nagle probe)
    expected: int
    received: int
    wall: float
    cpu: float
    peak_rss_mb: float
    exit_code: int
    note: str = ""
    engine: float | None = None  # pacspull only: its own time (association to release), from --json


def client_command(client: str, peer: Any, study_uid: str, out: Path) -> tuple[list[str], dict[str, str]]:
    env = dict(os.environ)
    env.pop("TCP_NODELAY", None)
    if client == "pacspull":
        cmd = [sys.executable, "-m", "pacspull.core.cli", "get", "--host", peer.host, "--port", str(peer.port),
               "--aet", peer.aet, "--study-uid", study_uid, "--out", str(out), "--json"]
    elif client == "dcmtk":
        binary = find_binary("getscu") or "getscu"
        cmd = [binary, "-aet", CALLING_AE, "-aec", peer.aet, peer.host, str(peer.port), "-S",
               "-k", "QueryRetrieveLevel=STUDY", "-k", f"StudyInstanceUID={study_uid}", "-od", str(out)]
        env["TCP_NODELAY"] = "1"
    elif client == "pynetdicom":
        cmd = [sys.executable, "-m", "pynetdicom", "getscu", peer.host, str(peer.port), "-aet", CALLING_AE,
               "-aec", peer.aet, "-S", "-k", "QueryRetrieveLevel=STUDY", "-k", f"StudyInstanceUID={study_uid}",
               "-od", str(out)]
    else:
        raise ValueError(client)
    return cmd, env


def _files(folder: Path) -> list[Path]:
    return [p for p in folder.rglob("*") if p.is_file() and not p.name.startswith(".")]


_GNU_TIME = "/usr/bin/time"


def timed_retrieve(client: str, peer: Any, work: wl.Workload, out: Path, timeout: float) -> Run:
    """One retrieve in a fresh process. CPU time and peak RSS come from GNU time when present: on Linux a
    child's ru_maxrss starts at the peak of the process that spawned it (this 50+ MB Python), which would
    hide a 10 MB client; GNU time's own child starts from GNU time's small footprint."""
    out.mkdir(parents=True)
    cmd, env = client_command(client, peer, work.study_uid, out)
    log_out, log_err = out.with_suffix(".stdout"), out.with_suffix(".stderr")
    usage_file = out.with_suffix(".usage")
    gnu_time = os.path.exists(_GNU_TIME)
    if gnu_time:
        cmd = [_GNU_TIME, "-f", "%x %U %S %M", "-o", str(usage_file), *cmd]
    note = ""
    engine = None
    with open(log_out, "wb") as so, open(log_err, "wb") as se:
        start = time.perf_counter()
        proc = subprocess.Popen(cmd, stdout=so, stderr=se, stdin=subprocess.DEVNULL, env=env)
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
            note = f"killed after {timeout:.0f} s"
        wall = time.perf_counter() - start
    exit_code, cpu, rss_mb = proc.returncode, float("nan"), float("nan")
    if gnu_time:
        try:
            fields = usage_file.read_text().split()[-4:]
            exit_code, cpu, rss_mb = int(fields[0]), float(fields[1]) + float(fields[2]), int(fields[3]) / 1024
        except (OSError, ValueError, IndexError):
            note = note or "no usage figures"
    received = len(_files(out))
    if client == "pacspull":
        try:
            summary = json.loads(log_out.read_text())
            received = int(summary["completed"]) + int(summary["warning"])
            engine = float(summary["seconds"])
            if summary.get("failed"):
                note = note or f"{summary['failed']} failed"
        except (ValueError, KeyError):
            note = note or "no JSON summary"
    if received < work.instances and not note:
        tail = log_err.read_text(errors="replace").strip().splitlines()[-1:] if log_err.exists() else []
        note = f"{work.instances - received} missing" + (f" ({tail[0][:80]})" if tail else "")
    return Run(client, work.name, work.instances, received, wall, cpu, rss_mb, exit_code, note, engine)


def clean(folder: Path) -> None:
    shutil.rmtree(folder, ignore_errors=True)
    for suffix in (".stdout", ".stderr", ".usage"):
        folder.with_suffix(suffix).unlink(missing_ok=True)
    os.sync()


# --------------------------------------------------------------------------------------------------
# peers


def _spec_key(items: list[wl.Workload], extra: str) -> str:
    text = json.dumps([[w.name, w.study_uid, w.instances, w.bytes] for w in items] + [extra])
    return hashlib.sha256(text.encode()).hexdigest()[:12]


def loaded_orthanc_template(cache: Path, items: list[wl.Workload], log: Any) -> Path:
    """An Orthanc data folder (storage + index) holding every workload: loaded once, then reused."""
    template = cache / f"orthanc-{_spec_key(items, orthanc_version() or '?')}"
    if (template / "complete").exists():
        return template
    shutil.rmtree(template, ignore_errors=True)
    building = template.with_name(template.name + ".building")
    shutil.rmtree(building, ignore_errors=True)
    peer = OrthancPeer(building, nodelay=True, graceful_stop=True)
    peer.start()
    started = time.perf_counter()
    try:
        for w in items:
            peer.load(w.files)
        count = peer.instance_count()
    finally:
        peer.stop()  # graceful: the index is complete on disk
    expected = sum(w.instances for w in items)
    if count != expected:
        raise RuntimeError(f"Orthanc holds {count} instances, expected {expected}")
    log(f"  loaded Orthanc once with {count} instances in {time.perf_counter() - started:.0f} s (cached)")
    building.rename(template)
    (template / "complete").write_text("ok")
    return template


def loaded_dcmqrscp_template(cache: Path, items: list[wl.Workload], log: Any) -> Path:
    """A dcmqrscp storage area (hard links + index.dat) holding every workload: indexed once, reused."""
    template = cache / f"dcmqrscp-{_spec_key(items, dcmtk_version() or '?')}"
    if (template / "complete").exists():
        return template
    shutil.rmtree(template, ignore_errors=True)
    started = time.perf_counter()
    peer = DcmqrscpPeer(template)
    for w in items:
        peer.load(w.files)
    (template / "complete").write_text("ok")
    log(f"  indexed the studies for dcmqrscp once in {time.perf_counter() - started:.0f} s (cached)")
    return template


def clone_orthanc(template: Path, workdir: Path) -> None:
    """Hard-link the storage (Orthanc never rewrites a stored file), copy the index."""
    workdir.mkdir(parents=True)
    shutil.copytree(template / "storage", workdir / "storage", copy_function=os.link)
    shutil.copytree(template / "index", workdir / "index")


def start_peers(kinds: list[str], modes: list[str], items: list[wl.Workload], work: Path, cache: Path,
                log: Any) -> dict[tuple[str, str], Any]:
    peers: dict[tuple[str, str], Any] = {}
    for kind in kinds:
        for mode in modes:
            nodelay = mode == "nodelay"
            folder = work / f"{kind}-{mode}"
            started = time.perf_counter()
            if kind == "orthanc":
                clone_orthanc(loaded_orthanc_template(cache, items, log), folder)
                peer: Any = OrthancPeer(folder, nodelay=nodelay, graceful_stop=False)
                peer.start()
            else:
                template = loaded_dcmqrscp_template(cache, items, log)
                peer = DcmqrscpPeer(folder, nodelay=nodelay)
                peer.storage_dir.mkdir(parents=True)
                # The index names the template's files by absolute path: they are read, never written.
                shutil.copyfile(template / "storage" / "index.dat", peer.storage_dir / "index.dat")
                peer.loaded = sum(w.instances for w in items)
                peer.start()
            peers[(kind, mode)] = peer
            log(f"  {kind} ({mode}) ready on port {peer.port} in {time.perf_counter() - started:.1f} s")
    return peers


def idle_cpu_probe(peer: Any, seconds: float = 2.0) -> dict[str, float]:
    """CPU used by this process while it holds an idle association opened by PacsPull's engine."""
    from pynetdicom.sop_class import Verification

    from pacspull.core.association import build_contexts, open_association
    from pacspull.core.nodes import Node

    node = Node(name="probe", ae_title=peer.aet, host=peer.host, port=peer.port)
    assoc = open_association(node, build_contexts([Verification]))
    try:
        assoc.send_c_echo()
        cpu0, t0 = time.process_time(), time.perf_counter()
        time.sleep(seconds)
        cpu = time.process_time() - cpu0
        wall = time.perf_counter() - t0
    finally:
        assoc.release()
        assoc.ae.shutdown()
    return {"seconds": round(wall, 2), "cpu_seconds": round(cpu, 4), "cpu_percent": round(100 * cpu / wall, 2)}


# --------------------------------------------------------------------------------------------------
# the run


@dataclass
class Cell:
    workload: str
    peer: str
    mode: str
    runs: list[Run] = field(default_factory=list)


def summarise(cell: Cell, clients: list[str], sizes: dict[str, wl.Workload]) -> list[dict[str, Any]]:
    rows = []
    per_instance: dict[str, float] = {}
    for client in clients:
        runs = [r for r in cell.runs if r.client == client]
        if not runs:
            continue
        walls = [r.wall for r in runs]
        work = sizes[runs[0].workload]
        received = min(r.received for r in runs)
        med = statistics.median(walls)
        per_instance[client] = med / max(1, received)
        rows.append({
            "workload": cell.workload, "peer": cell.peer, "mode": cell.mode, "client": client,
            "study": runs[0].workload, "runs": len(runs), "median_s": round(med, 3), "min_s": round(min(walls), 3),
            "MB_per_s": round(work.bytes * received / work.instances / 1e6 / med, 1),
            "inst_per_s": round(received / med, 1),
            "peak_rss_mb": round(max(r.peak_rss_mb for r in runs), 1),
            "cpu_s": round(statistics.median(r.cpu for r in runs), 2),
            "received": received, "expected": work.instances,
            "notes": sorted({r.note for r in runs if r.note}),
            "engine_median_s": (round(statistics.median(r.engine for r in runs if r.engine is not None), 3)
                                if any(r.engine is not None for r in runs) else None),
            "walls": [round(w, 3) for w in walls],
        })
    for row in rows:
        for ref in ("dcmtk", "pynetdicom"):
            if ref in per_instance and row["client"] != ref:
                row[f"x_{ref}"] = round(per_instance[row["client"]] / per_instance[ref], 2)
    return rows


def markdown(result: dict[str, Any]) -> str:
    lines = [f"# PacsPull C-GET benchmark ({result['label'] or 'unlabelled'})", "",
             f"{result['started']} · git {result['env']['git']} · {result['env']['cpus']} CPUs · "
             f"Python {result['env']['python']} · pynetdicom {result['env']['pynetdicom']} · "
             f"pydicom {result['env']['pydicom']} · Orthanc {result['env']['orthanc']} · "
             f"dcmtk {result['env']['dcmtk']} · {result['runs']} runs per client per cell, interleaved · "
             f"total {result['seconds']:.0f} s · load average (1/5/15 min) "
             f"{'/'.join(map(str, result.get('load_average_start', [])))} at the start, "
             f"{'/'.join(map(str, result.get('load_average_end', [])))} at the end", ""]
    lim = result.get("limits") or {}
    if lim:
        lines += ["**Machine limits (same run):** "
                  f"loopback TCP {lim['tcp_bulk']['MB_per_s']:.0f} MB/s bulk, "
                  f"{lim['tcp_round_trips']['round_trips_per_s']} round trips/s of 10 KB + 16 B; "
                  f"disk {lim['disk_stream']['MB_per_s_with_fsync']:.0f} MB/s streamed incl. fsync "
                  f"({lim['disk_stream']['MB_per_s_to_page_cache']:.0f} MB/s to the page cache), "
                  f"{lim['disk_small_files']['files_per_s_rename_only']} files/s of 10 KB written + renamed, "
                  f"{lim['disk_small_files']['files_per_s_fsync_each']} files/s with an fsync each.", ""]
    if result.get("idle_cpu"):
        lines += [f"**Idle association:** {result['idle_cpu']['cpu_percent']} % of a CPU while PacsPull holds an "
                  "idle association.", ""]
    gui = result.get("gui")
    if gui and "stall_ms" in gui:
        ms = ", ".join(f"{v:.0f}" for v in gui.get("stalls_ms", [gui["stall_ms"]]))
        lines += [f"**Window:** retrieving {gui['workload']} ({gui['instances']} instances) from {gui['peer']}, "
                  f"the longest event-loop stall (a 5 ms heartbeat timer on the GUI thread) was {gui['stall_ms']:.0f} ms "
                  f"in the worst of {len(gui.get('stalls_ms', [1]))} runs ({ms} ms; worst run {gui['seconds']:.1f} s, "
                  f"p99 gap {gui['p99_gap_ms']:.0f} ms, longest table refresh {gui['longest_refresh_ms']:.0f} ms)."]
        if gui.get("in_window_stalls_ms"):
            lines[-1] += (" With the engine in the window's process instead of its child process: "
                          + ", ".join(f"{v:.0f}" for v in gui["in_window_stalls_ms"]) + " ms.")
        lines += [""]
    lines += ["Studies: " + "; ".join(f"{w['name']} {w['instances']} instances, {w['bytes'] / 1e6:.0f} MB"
                                      for w in result["workloads"].values()), ""]
    for workload in result["workload_order"]:
        rows = [r for r in result["rows"] if r["workload"] == workload]
        if not rows:
            continue
        w = result["workloads"][workload]
        lines += [f"### {workload}: {w['instances']} instances, {w['bytes'] / 1e6:.0f} MB", "",
                  "| peer | TCP | client | median s | min s | MB/s | inst/s | × dcmtk | × pynetdicom | "
                  "peak RSS MB | CPU s | received |",
                  "|---|---|---|--:|--:|--:|--:|--:|--:|--:|--:|--:|"]
        for r in rows:
            study = "" if r["study"] == workload else f" ({r['study']})"
            got = f"{r['received']}/{r['expected']}" + (" ⚠" if r["received"] < r["expected"] else "")
            lines.append(
                f"| {r['peer']} | {r['mode']} | {r['client']}{study} | {r['median_s']:.2f} | {r['min_s']:.2f} | "
                f"{r['MB_per_s']:.0f} | {r['inst_per_s']:.0f} | {r.get('x_dcmtk', '–')} | "
                f"{r.get('x_pynetdicom', '–')} | {r['peak_rss_mb']:.0f} | {r['cpu_s']:.2f} | {got} |")
        engine = [f"{r['peer']}/{r['mode']} {r['engine_median_s']:.2f} s" for r in rows
                  if r["client"] == "pacspull" and r.get("engine_median_s") is not None]
        if engine:
            lines += ["", "PacsPull's own time (association to release, without starting Python and importing "
                      "pydicom/pynetdicom, about 0.5 s here): " + "; ".join(engine)]
        notes = sorted({f"{r['peer']}/{r['mode']}/{r['client']}: {n}" for r in rows for n in r["notes"]})
        if notes:
            lines += [""] + [f"- {n}" for n in notes[:12]]
        lines.append("")
    if result.get("targets"):
        lines += ["### Targets", ""] + [f"- {'✅' if ok else '❌'} {text}" for text, ok in result["targets"]] + [""]
    if result.get("reduced"):
        lines += ["Reduced cells (stock Nagle peer, slow client): " + "; ".join(result["reduced"]), ""]
    return "\n".join(lines)


GUI_RUNS = 3  # per engine placement, interleaved: the figure swings with what else the two cores run


def gui_stall(peer: Any, label: str, work: wl.Workload, folder: Path, timeout: float) -> dict[str, Any]:
    """The window (offscreen, benchmarks/gui_stall.py in a process of its own) retrieving ``work`` from
    ``peer``, ``GUI_RUNS`` times with the engine in its child process (as users run it) and as many with
    the engine in the window's process (the lever): the longest gap of a 5 ms heartbeat timer on the
    GUI thread in each run; the figure that counts is the worst child-process run."""
    folder.mkdir(parents=True, exist_ok=True)
    env = {**os.environ, "QT_QPA_PLATFORM": "offscreen"}
    runs: dict[str, list[dict[str, Any]]] = {"child": [], "in_window": []}
    for index in range(GUI_RUNS):
        for placement in runs:
            out = folder / f"gui-{placement}-{index}.json"
            cmd = [sys.executable, str(HERE / "gui_stall.py"), "--pacs", f"{peer.host}:{peer.port}:{peer.aet}",
                   "--study-uid", work.study_uid, "--flood", "0", "--json", str(out)]
            if placement == "in_window":
                cmd.append("--engine-in-window")
            try:
                proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=timeout)
                runs[placement].append(next(iter(json.loads(out.read_text()).values())))
            except (OSError, subprocess.SubprocessError, ValueError, StopIteration) as exc:
                tail = locals().get("proc")
                return {"error": f"{type(exc).__name__}: {exc}", "stderr": tail.stderr[-500:] if tail else ""}
    worst = max(runs["child"], key=lambda r: r["stall_ms"])
    return {"peer": label, "workload": work.name, **worst,
            "stalls_ms": [r["stall_ms"] for r in runs["child"]],
            "in_window_stalls_ms": [r["stall_ms"] for r in runs["in_window"]],
            "in_window_seconds": [r["seconds"] for r in runs["in_window"]],
            "child_seconds": [r["seconds"] for r in runs["child"]]}


def check_targets(rows: list[dict[str, Any]], gui: dict[str, Any] | None = None) -> list[tuple[str, bool]]:
    out = []

    def row(workload: str, peer: str, mode: str, client: str) -> dict[str, Any] | None:
        return next((r for r in rows if (r["workload"], r["peer"], r["mode"], r["client"])
                     == (workload, peer, mode, client)), None)

    for peer in ("orthanc", "dcmqrscp"):
        for workload, dcmtk_max in (("BIG", 1.5), ("MANY", 2.5)):
            r = row(workload, peer, "nodelay", "pacspull")
            if r is None:
                continue
            if "x_pynetdicom" in r:
                out.append((f"{workload} vs {peer} (TCP_NODELAY): {1 / r['x_pynetdicom']:.1f}× faster than "
                            "pynetdicom getscu (target ≥ 2×)", r["x_pynetdicom"] <= 0.5))
            if "x_dcmtk" in r:
                out.append((f"{workload} vs {peer} (TCP_NODELAY): {r['x_dcmtk']:.2f}× dcmtk getscu's time "
                            f"(target ≤ {dcmtk_max}×)", r["x_dcmtk"] <= dcmtk_max))
        r = row("MANY", peer, "nagle", "pacspull")
        if r is not None:
            for ref in ("dcmtk", "pynetdicom"):
                if f"x_{ref}" in r:
                    out.append((f"MANY vs stock {peer} (Nagle): {r['x_' + ref]:.2f}× {ref} getscu's time per "
                                "instance (target < 1)", r[f"x_{ref}"] < 1))
    rss = [r["peak_rss_mb"] for r in rows if r["client"] == "pacspull"]
    if rss:
        out.append((f"PacsPull peak RSS {max(rss):.0f} MB (target < 300 MB)", max(rss) < 300))
    if gui and "stall_ms" in gui:
        out.append((f"Window retrieving {gui['workload']}: longest event-loop stall {gui['stall_ms']:.0f} ms, "
                    f"worst of {len(gui.get('stalls_ms', [1]))} runs (target < 50 ms)", gui["stall_ms"] < 50))
    elif gui:
        out.append((f"Window stall not measured: {gui.get('error')}", False))
    return out


def environment() -> dict[str, Any]:
    import pydicom
    import pynetdicom

    try:
        git = subprocess.run(["git", "-C", str(REPO), "describe", "--always", "--dirty"], capture_output=True,
                             text=True, timeout=10).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        git = "?"
    return {"python": platform.python_version(), "pynetdicom": pynetdicom.__version__,
            "pydicom": pydicom.__version__, "orthanc": orthanc_version(), "dcmtk": dcmtk_version(),
            "kernel": platform.release(), "cpus": os.cpu_count(), "git": git}


def compile_bytecode() -> str:
    """Write the ``.pyc`` files of PacsPull's own modules, as ``pip install`` or the installers do.

    The repository is installed in editable mode; with ``PYTHONDONTWRITEBYTECODE`` set (as in some
    shells and CI) every client start would otherwise compile cli, get, storage, association and
    _pynetdicom_compat from source again, about 70 ms of CPU that no installed copy spends (the
    libraries in site-packages were compiled when pip installed them). Returns what was done.
    """
    import compileall

    folders = [REPO / "core"]
    ok = all(compileall.compile_dir(str(folder), quiet=1, workers=1) for folder in folders)
    return "core/" if ok else "core/ (with errors)"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=3, help="retrieves per client per cell (default 3)")
    parser.add_argument("--workloads", default="big,many,mixed")
    parser.add_argument("--peers", default="orthanc,dcmqrscp")
    parser.add_argument("--modes", default="nodelay,nagle", help="peer TCP modes: nodelay (TCP_NODELAY=1), nagle")
    parser.add_argument("--clients", default=",".join(CLIENTS))
    parser.add_argument("--tiny", action="store_true", help="tiny studies, 1 run, small limit probes (smoke test)")
    parser.add_argument("--nagle-probe", type=int, default=300,
                        help="instances of the smaller MANY study used to probe stock peers (default 300)")
    parser.add_argument("--nagle-budget", type=float, default=30.0,
                        help="seconds a full MANY retrieve from a stock peer may take before the client is "
                             "measured on the smaller study instead (default 30)")
    parser.add_argument("--no-limits", action="store_true", help="skip the TCP/disk limit measurements")
    parser.add_argument("--no-gui", action="store_true",
                        help="skip the window's event-loop stall measurement (needs PySide6 and Qt's libraries)")
    parser.add_argument("--timeout", type=float, default=600.0, help="seconds before a retrieve is killed")
    parser.add_argument("--cache", type=Path, default=Path(tempfile.gettempdir()) / "pacspull-bench-cache",
                        help="generated studies and a loaded Orthanc, reused across runs")
    parser.add_argument("--work", type=Path, help="scratch folder (default: a temp folder, removed after)")
    parser.add_argument("--out", type=Path, default=HERE / "results", help="where the JSON and markdown go")
    parser.add_argument("--label", default="", help="a label for this run (e.g. before, after)")
    args = parser.parse_args(argv)

    workloads_wanted = [w.strip().lower() for w in args.workloads.split(",") if w.strip()]
    kinds = [p.strip() for p in args.peers.split(",") if p.strip()]
    modes = [m.strip() for m in args.modes.split(",") if m.strip()]
    clients = [c.strip() for c in args.clients.split(",") if c.strip()]
    runs = 1 if args.tiny and args.runs == 3 else args.runs
    t0 = time.perf_counter()

    def log(text: str) -> None:
        print(f"[{time.perf_counter() - t0:6.1f}s] {text}", flush=True)

    missing = [b for b, needed in (("Orthanc", "orthanc" in kinds), ("dcmqrscp", "dcmqrscp" in kinds),
                                   ("dcmqridx", "dcmqrscp" in kinds), ("getscu", "dcmtk" in clients))
               if needed and find_binary(b) is None]
    if missing:
        print(f"missing: {', '.join(missing)} (Debian packages orthanc, dcmtk)", file=sys.stderr)
        return 2

    compiled = compile_bytecode()
    if compiled:
        log(f"compiled PacsPull's bytecode ({compiled}), as an installed copy has it")
    sizes = {"big": 3, "many": 20, "mixed": 0.04} if args.tiny else {}
    probe_size = 5 if args.tiny else args.nagle_probe
    args.cache.mkdir(parents=True, exist_ok=True)
    log("generating / reusing studies")
    items: dict[str, wl.Workload] = {}
    for name in workloads_wanted:
        items[name.upper()] = wl.workload(name, args.cache, sizes.get(name))
    probe: wl.Workload | None = None
    if "many" in workloads_wanted and "nagle" in modes:
        probe = wl.workload("many", args.cache, probe_size)
        probe.name = f"MANY/{probe.instances}"
        items[probe.name] = probe
    for w in items.values():
        log(f"  {w.describe()}")

    result: dict[str, Any] = {"label": args.label, "started": time.strftime("%Y-%m-%d %H:%M:%S"),
                              "load_average_start": [round(x, 2) for x in os.getloadavg()],
                              "env": environment(), "runs": runs, "argv": sys.argv[1:],
                              "workloads": {k: v.to_json() for k, v in items.items()},
                              "workload_order": [w.upper() for w in workloads_wanted], "reduced": []}
    work = args.work or Path(tempfile.mkdtemp(prefix="pacspull-bench-"))
    work.mkdir(parents=True, exist_ok=True)
    peers: dict[tuple[str, str], Any] = {}
    try:
        if not args.no_limits:
            log("measuring loopback TCP and disk limits")
            result["limits"] = limits.measure_all(work, 0.02 if args.tiny else 1.0)
            log(f"  {json.dumps(result['limits'])}")
        log("starting peers")
        peers = start_peers(kinds, modes, list(items.values()), work, args.cache, log)
        if "pacspull" in clients:
            first = next(iter(peers.values()))
            result["idle_cpu"] = idle_cpu_probe(first, 0.5 if args.tiny else 2.0)
            log(f"  idle association: {result['idle_cpu']}")
        cells: list[Cell] = []
        counter = 0
        for workload in workloads_wanted:
            for kind in kinds:
                for mode in modes:
                    cell = Cell(workload.upper(), kind, mode)
                    cells.append(cell)
                    peer = peers[(kind, mode)]
                    study = {c: items[workload.upper()] for c in clients}
                    if workload == "many" and mode == "nagle" and probe is not None:
                        # Probe each client on the smaller study; a slow one stays on it (and says so).
                        for client in clients:
                            counter += 1
                            run = timed_retrieve(client, peer, probe, work / "out" / f"r{counter}", args.timeout)
                            clean(work / "out" / f"r{counter}")
                            projected = run.wall * items["MANY"].instances / max(1, probe.instances)
                            if projected > args.nagle_budget:
                                study[client] = probe
                                cell.runs.append(run)
                                result["reduced"].append(
                                    f"{kind}/{client} on {probe.name} (projected {projected:.0f} s for MANY)")
                                log(f"  {kind}/{mode}/{client}: probe {run.wall:.2f} s -> measured on {probe.name}")
                    for index in range(runs):
                        order = clients[index % len(clients):] + clients[:index % len(clients)]
                        for client in order:
                            if study[client] is probe and index == 0:
                                continue  # the probe run is this client's first run
                            counter += 1
                            out = work / "out" / f"r{counter}"
                            run = timed_retrieve(client, peer, study[client], out, args.timeout)
                            clean(out)
                            cell.runs.append(run)
                            log(f"  {cell.workload:5} {kind:8} {mode:7} {client:10} run {index + 1}: "
                                f"{run.wall:7.2f} s  {run.received}/{run.expected}  cpu {run.cpu:.2f} s  "
                                f"rss {run.peak_rss_mb:.0f} MB {run.note}")
        if "pacspull" in clients and "MANY" in items and not args.no_gui:
            key = ("orthanc", "nodelay") if ("orthanc", "nodelay") in peers else next(iter(peers))
            log(f"window: the longest event-loop stall while it retrieves MANY from {'/'.join(key)}")
            result["gui"] = gui_stall(peers[key], "/".join(key), items["MANY"], work / "gui", args.timeout)
            log(f"  {json.dumps(result['gui'])}")
        result["rows"] = [row for cell in cells for row in summarise(cell, clients, items)]
        result["cells"] = [{**asdict(c)} for c in cells]
        result["targets"] = check_targets(result["rows"], result.get("gui"))
    finally:
        for peer in peers.values():
            peer.stop()
        if args.work is None:
            shutil.rmtree(work, ignore_errors=True)
    result["seconds"] = time.perf_counter() - t0
    result["load_average_end"] = [round(x, 2) for x in os.getloadavg()]
    args.out.mkdir(parents=True, exist_ok=True)
    stamp = time.strftime("%Y%m%d-%H%M%S")
    text = markdown(result)
    for name in (f"bench-{stamp}", "latest"):
        (args.out / f"{name}.json").write_text(json.dumps(result, indent=1))
        (args.out / f"{name}.md").write_text(text)
    print(text)
    log(f"wrote {args.out / f'bench-{stamp}.md'} and .json")
    return 0


if __name__ == "__main__":
    sys.exit(main())
