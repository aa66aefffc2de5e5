"""``python -m pacspull.core.cli`` ends with os._exit (core.cli.run: no interpreter teardown, ~0.1 s less
per call in the benchmark); what a normal exit guarantees must still hold: the exit code, everything
printed to stdout (a pipe: block-buffered) and stderr, atexit handlers."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
from pathlib import Path


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]  # nothing listens once closed: connection refused


def test_exit_code_and_json_survive_the_fast_exit(tmp_path: Path) -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "pacspull.core.cli", "get", "--host", "127.0.0.1", "--port", str(_closed_port()),
         "--aet", "NOBODY", "--study-uid", "1.2.3", "--out", str(tmp_path / "out"), "--json", "--timeout", "5"],
        capture_output=True, text=True, timeout=60,
    )
    assert proc.returncode == 3, proc.stderr[-2000:]
    summary = json.loads(proc.stdout)
    assert summary["ok"] is False and "connect" in summary["error"]


def test_atexit_handlers_and_buffered_output_run_before_the_fast_exit(tmp_path: Path) -> None:
    marker = tmp_path / "atexit-ran"
    code = (
        "import atexit, sys\n"
        f"atexit.register(lambda: open({str(marker)!r}, 'w').write('yes'))\n"
        "import pacspull.core.cli as cli\n"
        "cli.main = lambda argv=None: (print('x' * 100000, end=''), print('tail', file=sys.stderr), 7)[-1]\n"
        "cli.run()\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 7
    assert proc.stdout == "x" * 100000
    assert proc.stderr == "tail\n"
    assert marker.read_text() == "yes"
