"""Where the window's log goes: a rotating file in the platform log folder, and stderr when there is one.

A windowed build (``PacsPull.exe``, ``PacsPull.app``) runs without a console: ``sys.stdout`` and
``sys.stderr`` are ``None``, so without a file every warning, every uncaught exception and every native
crash would vanish. The file is where support asks users to look:

    Linux    ~/.local/state/PacsPull/log/pacspull.log
    macOS    ~/Library/Logs/PacsPull/pacspull.log
    Windows  %LOCALAPPDATA%\\PacsPull\\Logs\\pacspull.log

``PACSPULL_LOG_DIR`` overrides the folder (tests, portable installs). Native crashes (a segfault in Qt)
are written by :mod:`faulthandler` to ``pacspull-crash.log`` in the same folder when there is no stderr.
"""

from __future__ import annotations

import faulthandler
import logging
import os
import sys
import threading
from logging.handlers import RotatingFileHandler
from pathlib import Path
from types import TracebackType
from typing import TextIO

import platformdirs

APP_NAME = "PacsPull"
LOG_FILE = "pacspull.log"
CRASH_FILE = "pacspull-crash.log"
MAX_BYTES = 2_000_000
BACKUP_COUNT = 3  # pacspull.log.1 .. .3: a few sessions back, under 8 MB in all
FORMAT = "%(asctime)s %(levelname)s %(name)s [%(threadName)s]: %(message)s"

LOG = logging.getLogger(__name__)
_HANDLER_TAG = "_pacspull_handler"  # marks the handlers configure() added, so a second call replaces them
_crash_file: TextIO | None = None  # kept open for faulthandler, which writes to its descriptor at crash time


def log_dir() -> Path:
    """The folder for log files (``PACSPULL_LOG_DIR`` overrides the platform's user log folder)."""
    override = os.environ.get("PACSPULL_LOG_DIR")
    return Path(override) if override else Path(platformdirs.user_log_dir(APP_NAME, appauthor=False))


def configure(level: int = logging.INFO) -> Path | None:
    """Send the root logger's records to the log file and to stderr (if any); return the file's path.

    Also routes uncaught exceptions (main thread, Qt slots, worker threads) into the log. Returns
    ``None`` when the log file cannot be opened (read-only home, full disk): the app still runs and
    logs to stderr where there is one.
    """
    root = logging.getLogger()
    for handler in [h for h in root.handlers if getattr(h, _HANDLER_TAG, False)]:
        root.removeHandler(handler)
        handler.close()
    root.setLevel(level)
    formatter = logging.Formatter(FORMAT)

    path: Path | None = log_dir() / LOG_FILE
    problem = ""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        file_handler: logging.Handler | None = RotatingFileHandler(
            path, maxBytes=MAX_BYTES, backupCount=BACKUP_COUNT, encoding="utf-8")
    except OSError as exc:
        file_handler, path, problem = None, None, f"cannot write the log file: {exc}"
    handlers = [file_handler] if file_handler is not None else []
    if sys.stderr is not None:
        handlers.append(logging.StreamHandler(sys.stderr))
    for handler in handlers:
        handler.setFormatter(formatter)
        setattr(handler, _HANDLER_TAG, True)
        root.addHandler(handler)

    _log_uncaught_exceptions()
    if sys.stderr is None and path is not None:
        _record_native_crashes(path.parent / CRASH_FILE)
    if problem:
        LOG.warning("%s", problem)
    else:
        LOG.info("%s log: %s", APP_NAME, path)
    return path


def _log_uncaught_exceptions() -> None:
    """Log what would otherwise only reach a (possibly missing) stderr, then let the usual hook run."""
    previous_hook = sys.excepthook
    previous_thread_hook = threading.excepthook

    def excepthook(kind: type[BaseException], value: BaseException, tb: TracebackType | None) -> None:
        if not issubclass(kind, KeyboardInterrupt):
            LOG.critical("uncaught exception", exc_info=(kind, value, tb))
        if sys.stderr is not None:
            previous_hook(kind, value, tb)

    def thread_excepthook(args: threading.ExceptHookArgs) -> None:
        if args.exc_type is not SystemExit:
            name = args.thread.name if args.thread is not None else "?"
            LOG.critical("uncaught exception in thread %s", name,
                         exc_info=(args.exc_type, args.exc_value, args.exc_traceback))  # type: ignore[arg-type]
        if sys.stderr is not None:
            previous_thread_hook(args)

    if getattr(sys.excepthook, _HANDLER_TAG, False):
        return  # already installed by an earlier configure()
    setattr(excepthook, _HANDLER_TAG, True)
    sys.excepthook = excepthook
    threading.excepthook = thread_excepthook


def _record_native_crashes(path: Path) -> None:
    """Let faulthandler write the Python stacks of a hard crash to ``path`` (it has no stderr to use)."""
    global _crash_file
    if _crash_file is not None:
        return
    try:
        _crash_file = path.open("a", encoding="utf-8")
    except OSError as exc:
        LOG.warning("cannot write %s: %s", path, exc)
        return
    faulthandler.enable(file=_crash_file, all_threads=True)
