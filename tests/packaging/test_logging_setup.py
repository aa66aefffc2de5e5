"""gui/logging_setup.py: a windowed build has no stdout/stderr, so the log file must catch everything.

Each case runs in a fresh interpreter: configure() changes the root logger and the exception hooks of
the process it runs in.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import platformdirs

WINDOWED = "import sys\nsys.stdout = sys.stderr = None  # as in a windowed PyInstaller build\n"


def _run(code: str, log_dir: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PACSPULL_LOG_DIR": str(log_dir)}
    return subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=60)


def test_a_windowed_app_logs_records_and_uncaught_exceptions_to_the_file(tmp_path: Path) -> None:
    log_dir = tmp_path / "logs"
    result = _run(WINDOWED + (
        "import logging, threading\n"
        "from pacspull.gui import logging_setup\n"
        "path = logging_setup.configure()\n"
        "logging_setup.configure()  # twice: still one file handler\n"
        "logging.getLogger('pacspull.test').warning('Müller retrieved')\n"
        "worker = threading.Thread(target=lambda: 1 / 0, name='RetrieveWorker')\n"
        "worker.start(); worker.join()\n"
        "raise RuntimeError('boom in a slot')\n"
    ), log_dir)
    assert result.returncode == 1 and result.stdout == "" and result.stderr == ""
    log = (log_dir / "pacspull.log").read_text(encoding="utf-8")
    assert log.count("PacsPull log: ") == 2 and log.count("WARNING pacspull.test [MainThread]: Müller retrieved") == 1
    assert "uncaught exception in thread RetrieveWorker" in log and "ZeroDivisionError" in log
    assert "CRITICAL" in log and "RuntimeError: boom in a slot" in log
    assert (log_dir / "pacspull-crash.log").exists()  # faulthandler's target, empty unless Qt crashes


def test_with_a_console_it_logs_to_stderr_too(tmp_path: Path) -> None:
    result = _run(
        "import logging\nfrom pacspull.gui import logging_setup\n"
        "logging_setup.configure()\nlogging.getLogger('x').info('hello')\n", tmp_path)
    assert result.returncode == 0
    assert "INFO x [MainThread]: hello" in result.stderr
    assert "INFO x [MainThread]: hello" in (tmp_path / "pacspull.log").read_text(encoding="utf-8")
    assert not (tmp_path / "pacspull-crash.log").exists()  # faulthandler keeps using stderr


def test_an_unwritable_log_folder_does_not_stop_the_app(tmp_path: Path) -> None:
    blocker = tmp_path / "not-a-folder"
    blocker.write_text("", encoding="utf-8")
    result = _run(
        "from pacspull.gui import logging_setup\n"
        "assert logging_setup.configure() is None\nprint('running')\n", blocker / "logs")
    assert result.returncode == 0, result.stderr
    assert result.stdout == "running\n" and "cannot write the log file" in result.stderr


def test_the_log_folder_is_the_platform_one_unless_overridden(monkeypatch) -> None:  # type: ignore[no-untyped-def]
    from pacspull.gui import logging_setup

    monkeypatch.delenv("PACSPULL_LOG_DIR", raising=False)
    assert logging_setup.log_dir() == Path(platformdirs.user_log_dir("PacsPull", appauthor=False))
    monkeypatch.setenv("PACSPULL_LOG_DIR", "/somewhere/logs")
    assert logging_setup.log_dir() == Path("/somewhere/logs")
