"""Smoke run of the benchmark script on tiny studies: it runs end to end and writes its table and JSON.

Benchmark numbers are never pass/fail; what is checked is that every client retrieved every instance
and that the report holds what README's Performance section shows.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from peers import need_binary

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.peer
def test_benchmark_runs_on_tiny_studies(tmp_path: Path) -> None:
    for name in ("dcmqrscp", "dcmqridx", "getscu"):
        need_binary(name, "dcmtk")
    out = tmp_path / "results"
    proc = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "run.py"), "--tiny", "--peers", "dcmqrscp",
         "--modes", "nodelay", "--workloads", "big,many", "--out", str(out), "--cache", str(tmp_path / "cache"),
         "--work", str(tmp_path / "work")],
        capture_output=True, text=True, timeout=240,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    result = json.loads((out / "latest.json").read_text())
    rows = result["rows"]
    assert {(r["workload"], r["client"]) for r in rows} == {
        (w, c) for w in ("BIG", "MANY") for c in ("pacspull", "dcmtk", "pynetdicom")}
    for row in rows:
        assert row["received"] == row["expected"], row
        assert row["median_s"] > 0 and row["peak_rss_mb"] > 0 and row["cpu_s"] >= 0
    pacspull = [r for r in rows if r["client"] == "pacspull"]
    assert all("x_dcmtk" in r and "x_pynetdicom" in r for r in pacspull)
    assert set(result["limits"]) == {"tcp_bulk", "tcp_round_trips", "disk_stream", "disk_small_files"}
    table = (out / "latest.md").read_text()
    assert "| dcmqrscp | nodelay | pacspull |" in table and "### Targets" in table
    # The window's figure: it retrieved the whole MANY study while a heartbeat timer ran on its GUI thread.
    gui = result["gui"]
    assert gui.get("instances") == result["workloads"]["MANY"]["instances"], gui
    assert gui["ticks"] > 0 and gui["stall_ms"] >= 0 and "**Window:**" in table
    # three runs with the engine in its child process (the worst one reported), three with it in the window
    assert len(gui["stalls_ms"]) == len(gui["in_window_stalls_ms"]) == 3 and gui["stall_ms"] == max(gui["stalls_ms"])
    assert "With the engine in the window's process" in table
    assert list(out.glob("bench-*.json")) and list(out.glob("bench-*.md"))
    assert not list((tmp_path / "work").glob("out/*")), "retrieved files are cleaned up after each run"
