"""Where a PacsPull retrieve spends its time: py-spy samples of ``pacspull get``, every thread, summed.

    .venv/bin/pip install py-spy          # once (a sampling profiler; it sees pynetdicom's DUL thread too)
    .venv/bin/python benchmarks/profile_get.py [--workload many] [--peer dcmqrscp] [--top 30]

Starts one peer (TCP_NODELAY=1) holding the benchmark studies, runs the CLI under ``py-spy record``
(raw collapsed stacks, 1,000 samples a second, idle samples dropped) and prints, per thread, the
functions with the most samples on top of the stack (self) and anywhere in it (inclusive).
"""

from __future__ import annotations

import argparse
import collections
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent / "tests"))
sys.path.insert(0, str(HERE))


def summarise(raw: Path, top: int) -> str:
    self_time: dict[str, collections.Counter[str]] = collections.defaultdict(collections.Counter)
    inclusive: dict[str, collections.Counter[str]] = collections.defaultdict(collections.Counter)
    totals: collections.Counter[str] = collections.Counter()
    for line in raw.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        if not stack:
            continue
        frames = stack.split(";")
        thread = frames[0].split(" ")[0] if frames[0].startswith(("thread", "process")) else "?"
        for frame in frames:
            if frame.startswith("thread"):
                thread = frame
        body = [f for f in frames if not f.startswith(("process", "thread"))]
        if not body:
            continue
        n = int(count)
        totals[thread] += n
        self_time[thread][_short(body[-1])] += n
        for name in {_short(f) for f in body}:
            inclusive[thread][name] += n
    out = []
    for thread, total in totals.most_common():
        out.append(f"\n== {thread}: {total} samples")
        out.append("  self:")
        out += [f"    {n / total:6.1%}  {name}" for name, n in self_time[thread].most_common(top)]
        out.append("  inclusive:")
        out += [f"    {n / total:6.1%}  {name}" for name, n in inclusive[thread].most_common(top)]
    return "\n".join(out)


def _short(frame: str) -> str:
    # "function (path/to/module.py:123)" -> "function (module.py)"
    name, _, where = frame.partition(" (")
    module = where.rsplit("/", 1)[-1].split(":")[0]
    return f"{name} ({module})"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--workload", default="many", choices=["big", "many", "mixed"])
    parser.add_argument("--peer", default="dcmqrscp", choices=["dcmqrscp", "orthanc"])
    parser.add_argument("--nagle", action="store_true", help="stock peer (Nagle on)")
    parser.add_argument("--top", type=int, default=30)
    parser.add_argument("--cache", type=Path, default=Path(tempfile.gettempdir()) / "pacspull-bench-cache")
    parser.add_argument("--raw", type=Path, help="keep the collapsed stacks here")
    args = parser.parse_args()
    py_spy = shutil.which("py-spy") or str(Path(sys.executable).with_name("py-spy"))
    if not Path(py_spy).exists():
        print("py-spy not found: .venv/bin/pip install py-spy", file=sys.stderr)
        return 2

    import run as bench
    import workloads as wl

    work = Path(tempfile.mkdtemp(prefix="pacspull-profile-"))
    item = wl.workload(args.workload, args.cache)
    mode = "nagle" if args.nagle else "nodelay"
    peers = bench.start_peers([args.peer], [mode], [item], work, args.cache, print)
    peer = peers[(args.peer, mode)]
    raw = args.raw or work / "stacks.txt"
    try:
        cmd, env = bench.client_command("pacspull", peer, item.study_uid, work / "out")
        subprocess.run([py_spy, "record", "--format", "raw", "--threads", "--rate", "1000", "--nonblocking",
                        "-o", str(raw), "--", *cmd], env=env, check=True, stdout=subprocess.DEVNULL)
        print(summarise(raw, args.top))
    finally:
        for p in peers.values():
            p.stop()
        if args.raw is None:
            shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
