"""``pacspull-gui``: the desktop window.

``main()`` builds the QApplication, loads settings and nodes (on a first run: the demo PACS node,
selected), starts the demo PACS in the background when the demo node is selected, shows the window
and, on exit, stops background jobs and the demo PACS.

``--self-test`` (for installers): start, show the window, run one query against the demo PACS and
retrieve its smallest study into a temporary folder (through the retrieve's child process, as a user's
retrieve runs), exit 0 if rows and every file arrived and 1 otherwise, within ``--timeout`` seconds.
"""

from __future__ import annotations

import argparse
import dataclasses
import logging
import os
import shutil
import signal
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path

from PySide6.QtCore import QObject, QTimer, Slot
from PySide6.QtWidgets import QApplication, QMessageBox

from pacspull.core import __version__
from pacspull.core.query import QueryRequest
from pacspull.gui import logging_setup, style
from pacspull.gui.context import AppContext
from pacspull.gui.demo import demo_node, is_demo_node
from pacspull.gui.main_window import MainWindow
from pacspull.gui.models.transfer_model import TransferState
from pacspull.gui.workers import FindDone, RetrieveWorker

LOG = logging.getLogger(__name__)
APP_NAME = "PacsPull"


class SelfTest(QObject):
    """One query and one retrieve from the demo PACS through the real window; the result becomes the exit
    code."""

    def __init__(self, window: MainWindow, timeout_s: float) -> None:
        super().__init__(window)
        self.window = window
        self.timeout_s = timeout_s
        self.exit_code: int | None = None
        self.found = ""
        self.folder = Path(tempfile.mkdtemp(prefix="pacspull-self-test-"))
        self.child_pids: list[int | None] = []

    def start(self) -> None:
        """Find (or make, unsaved) the demo node, start its server, search once."""
        context = self.window.context
        node = next((n for n in context.book if is_demo_node(n)), None) or demo_node()
        try:
            node = context.demo.ensure_for(node)
        except Exception as exc:  # noqa: BLE001 - any failure is a failed self-test, reported on one line
            self._done(1, f"self-test: cannot start the demo PACS: {exc}")
            return
        self.window.search.finished.connect(self._finished)
        self.window.search.failed.connect(self._failed)
        QTimer.singleShot(int(self.timeout_s * 1000), self._timed_out)
        self.window.search.search(node, QueryRequest())

    @Slot(object)
    def _finished(self, summary: FindDone) -> None:
        if summary.count <= 0 or not self.window.model.studies():
            self._done(1, "self-test: the demo PACS answered with no studies")
            return
        self.found = f"self-test: {summary.count} studies from the demo PACS in {summary.seconds:.2f} s"
        window = self.window
        smallest = min(window.model.studies(), key=lambda s: s.instance_count or 1_000_000)
        window.context.settings = dataclasses.replace(window.context.settings, destination=self.folder)
        window.retrieve.workerStarted.connect(self._worker_started)
        window.retrieve.queueFinished.connect(self._retrieved)
        window.start_retrieve([smallest])

    @Slot(object)
    def _worker_started(self, worker: RetrieveWorker) -> None:
        worker.finished.connect(self._note_child)

    @Slot(int, object)
    def _note_child(self, generation: int, summary: object) -> None:
        worker = self.sender()
        self.child_pids.append(worker.child_pid if isinstance(worker, RetrieveWorker) else None)

    @Slot(str)
    def _retrieved(self, text: str) -> None:
        row = self.window.transfers.rows()[-1]
        files = [p for p in self.folder.rglob("*") if p.is_file() and not p.name.startswith(".")]
        dicom = [p for p in files if p.read_bytes()[128:132] == b"DICM"]
        elsewhere = [pid for pid in self.child_pids if pid in (None, os.getpid())]
        if row.state is not TransferState.DONE or not row.completed or len(dicom) != row.completed or elsewhere:
            self._done(1, f"self-test: retrieve failed: {row.state_text()}, {len(dicom)} DICOM files on disk, "
                          f"child process {self.child_pids}: {row.message or text}")
            return
        self._done(0, f"{self.found}; retrieved {row.completed} images in a retrieve process of its own")

    @Slot(str, str)
    def _failed(self, message: str, hint: str) -> None:
        self._done(1, f"self-test: query failed: {message}")

    @Slot()
    def _timed_out(self) -> None:
        self._done(1, f"self-test: no answer within {self.timeout_s:g} s")

    def _done(self, code: int, line: str) -> None:
        if self.exit_code is not None:
            return
        self.exit_code = code
        print(line, flush=True)
        LOG.info("%s", line)
        shutil.rmtree(self.folder, ignore_errors=True)
        QApplication.exit(code)


def _parse(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="pacspull-gui", description="PacsPull desktop window")
    parser.add_argument("--self-test", action="store_true",
                        help="query the built-in demo PACS, retrieve its smallest study into a temporary "
                        "folder, and exit 0 if every file arrived")
    parser.add_argument("--timeout", type=float, default=20.0, metavar="S",
                        help="self-test time limit in seconds (default: 20)")
    parser.add_argument("--version", action="version", version=f"pacspull-gui {__version__}")
    return parser.parse_args(argv)


def _headless_if_needed() -> None:
    # An installer may run the self-test without a desktop session: fall back to offscreen rendering.
    if sys.platform.startswith("linux") and not os.environ.get("QT_QPA_PLATFORM") \
            and not os.environ.get("DISPLAY") and not os.environ.get("WAYLAND_DISPLAY"):
        os.environ["QT_QPA_PLATFORM"] = "offscreen"


def _close_on_signals(window: MainWindow) -> None:
    """Ctrl+C or SIGTERM closes the window the normal way, so the demo PACS and workers stop cleanly."""
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: window.quit_now())
    # Python runs signal handlers only when it gets control back; a short idle timer gives it that.
    wake = QTimer(window)
    wake.timeout.connect(_noop)
    wake.start(300)


def _noop() -> None:
    """Nothing: the timer tick itself lets Python deliver a pending signal."""


def main(argv: Sequence[str] | None = None) -> int:
    """Run the window; returns the exit code."""
    args = _parse(argv)
    logging_setup.configure(logging.INFO)  # a log file too: a windowed build has no stderr
    # pynetdicom narrates every PDU at INFO; the log view (issue 6) can turn it up on request.
    logging.getLogger("pynetdicom").setLevel(logging.WARNING)
    if args.self_test:
        _headless_if_needed()
    app = QApplication.instance() or QApplication([sys.argv[0]])
    assert isinstance(app, QApplication)
    app.setOrganizationName(APP_NAME)
    app.setApplicationName(APP_NAME)
    app.setApplicationVersion(__version__)
    style.apply(app)

    context = AppContext()
    if not args.self_test:
        context.ensure_demo()
    window = MainWindow(context)
    window.show()
    _close_on_signals(window)
    for problem in context.problems:
        QMessageBox.warning(window, "PacsPull", problem)
    self_test = SelfTest(window, args.timeout) if args.self_test else None
    if self_test is not None:
        QTimer.singleShot(0, self_test.start)

    code = app.exec()
    window.save_state()
    ended = context.shutdown()
    if self_test is not None and self_test.exit_code is not None:
        code = self_test.exit_code
    if not ended:
        # A job is still blocked on a silent PACS (core waits up to the response timeout). Destroying
        # its QThread would abort the process, so leave without running destructors.
        logging.shutdown()
        sys.stdout.flush()
        os._exit(code)
    return code


if __name__ == "__main__":
    sys.exit(main())
