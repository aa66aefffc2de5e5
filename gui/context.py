"""``AppContext``: the one object widgets get instead of globals (git-cola's context).

It holds the settings, the node book, the worker runner and the demo PACS server, and tells widgets
when nodes or settings change. Everything here runs on the GUI thread.
"""

from __future__ import annotations

import dataclasses
import logging
import time
from pathlib import Path

from PySide6.QtCore import QObject, QSettings, Signal, Slot

from pacspull.core import credentials
from pacspull.core.errors import InvalidInput
from pacspull.core.nodes import Node, NodeBook, config_dir
from pacspull.core.settings import AppSettings, load_settings, save_settings, settings_path
from pacspull.gui.demo import DemoServer, first_run_setup, is_demo_node
from pacspull.gui.security import install_log_masking
from pacspull.gui.workers import DemoStartWorker, WorkerRunner

LOG = logging.getLogger(__name__)

WINDOW_STATE_FILE = "window.ini"


class AppContext(QObject):
    """Settings, nodes, background jobs and the demo PACS, shared by the window and its dialogs."""

    nodesChanged = Signal()
    selectionChanged = Signal(str)  # selected node name ("" for none)
    settingsChanged = Signal()
    demoChanged = Signal(str)  # a line for the status bar about the demo PACS
    demoReady = Signal()  # a background start of the demo PACS ended (running, or failed)

    def __init__(self, parent: QObject | None = None) -> None:
        super().__init__(parent)
        install_log_masking()  # before any association: pynetdicom's debug dump prints passwords
        self.runner = WorkerRunner(self)
        self.demo = DemoServer()
        self._demo_job: DemoStartWorker | None = None
        self._demo_generation = 0
        self.problems: list[str] = []  # load problems to show once the window is up
        self.book = self._load_book()
        self.settings = self._load_settings()
        self.first_run = first_run_setup(self.book)

    # -- loading ------------------------------------------------------------------------------------

    def _load_book(self) -> NodeBook:
        path = NodeBook.default_path()
        try:
            return NodeBook.load(path)
        except InvalidInput as exc:
            kept = _set_aside(path)
            self.problems.append(f"{exc.message}. The file was kept as {kept.name}; add your nodes again.")
            return NodeBook(path=path)

    def _load_settings(self) -> AppSettings:
        try:
            return load_settings()
        except InvalidInput as exc:
            kept = _set_aside(settings_path())
            self.problems.append(f"{exc.message}. The file was kept as {kept.name}; using default settings.")
            return AppSettings()

    # -- nodes --------------------------------------------------------------------------------------

    def selected_node(self) -> Node | None:
        """The node searches go to."""
        if self.book.selected is None:
            return None
        try:
            return self.book.get(self.book.selected)
        except InvalidInput:
            return None

    def select(self, name: str) -> None:
        """Make ``name`` the selected node (saved), starting the demo PACS if it is the demo node."""
        if name == (self.book.selected or ""):
            return
        self.book.selected = name or None
        self._save_book()
        self.ensure_demo()
        self.selectionChanged.emit(name)

    def put_node(self, node: Node, *, replacing: str | None = None) -> None:
        """Add ``node``, or replace the node called ``replacing`` (a rename keeps its place in the list)."""
        if replacing is not None and replacing.casefold() != node.name.casefold():
            if node.name.casefold() in (n.casefold() for n in self.book.names()):
                raise InvalidInput("node name", f"a node named {node.name!r} already exists")
            position = self.book.names().index(self.book.get(replacing).name)
            self.book.nodes[position] = node
            if self.book.selected == replacing:
                self.book.selected = node.name
        else:
            self.book.put(node, replace=replacing is not None)
        self._save_book()
        self.nodesChanged.emit()
        if node.name == self.book.selected:
            self.ensure_demo()
            self.selectionChanged.emit(node.name)

    def remove_node(self, name: str) -> None:
        """Remove a node and its password or token; the selection moves to the first remaining one."""
        node = self.book.remove(name)
        self._save_book()
        if node.identity_has_secret:
            credentials.delete_secret(node.name)
        self.nodesChanged.emit()
        self.ensure_demo()
        self.selectionChanged.emit(self.book.selected or "")

    def new_node_defaults(self) -> dict[str, object]:
        """Values a new node starts with: calling AE and timeouts from the settings."""
        s = self.settings
        return {"calling_ae": s.calling_ae, "connect_timeout": s.connect_timeout,
                "acse_timeout": s.acse_timeout, "dimse_timeout": s.dimse_timeout}

    def _save_book(self) -> None:
        try:
            self.book.save()
        except OSError as exc:
            self.demoChanged.emit(f"Could not save the node list: {exc}")

    # -- demo PACS ----------------------------------------------------------------------------------

    @property
    def demo_starting(self) -> bool:
        """True while the demo PACS is being started in the background."""
        return self._demo_job is not None

    def ensure_demo(self) -> None:
        """Run the demo PACS while the demo node is selected (started off the GUI thread); stop it otherwise."""
        node = self.selected_node()
        if not is_demo_node(node):
            if self.demo.running:
                self.demo.stop()
                self.demoChanged.emit("")
            return
        assert node is not None
        if self._demo_job is not None or (self.demo.running and self.demo.port == node.port):
            return  # a start in flight re-checks the selection when it lands
        self._demo_generation += 1
        worker = DemoStartWorker(self._demo_generation, self.demo, node)
        worker.started.connect(self._demo_started)
        worker.failed.connect(self._demo_failed)
        self._demo_job = worker
        self.runner.start(worker)
        self.demoChanged.emit("Starting the demo PACS…")

    @Slot(int, object)
    def _demo_started(self, generation: int, served: Node) -> None:
        if generation != self._demo_generation:
            return  # queued before shutdown(): acting on it would start the demo PACS again
        self._demo_job = None
        current = self.selected_node()
        if current is not None and is_demo_node(current) and served.port != current.port:
            LOG.info("demo PACS moved from port %d to %d (the old one is taken)", current.port, served.port)
            self.book.put(served, replace=True)
            self._save_book()
            self.nodesChanged.emit()
        self.demoChanged.emit(f"Demo PACS running on {served.host}:{served.port}")
        self.ensure_demo()  # the selection may have changed while it started
        if self.demo.running:
            self.demoReady.emit()

    @Slot(int, str, str)
    def _demo_failed(self, generation: int, message: str, hint: str) -> None:
        if generation != self._demo_generation:
            return
        self._demo_job = None
        self.demoChanged.emit(message)
        self.demoReady.emit()  # waiting searches run (and say the connection failed)

    # -- settings -----------------------------------------------------------------------------------

    def save_settings(self, settings: AppSettings) -> None:
        """Persist new settings and tell the widgets.

        ``parallel_retrieves`` is changed through the property of that name only: the settings dialog
        builds its AppSettings without it (the window sets the count first), so the current one is kept.
        """
        self._store_settings(dataclasses.replace(settings, parallel_retrieves=self.settings.parallel_retrieves))

    def _store_settings(self, settings: AppSettings) -> None:
        save_settings(settings)
        self.settings = settings
        self.settingsChanged.emit()

    @property
    def parallel_retrieves(self) -> int:
        """Transfers that may run at once (``AppSettings.parallel_retrieves``; 1: one after another)."""
        return self.settings.parallel_retrieves

    @parallel_retrieves.setter
    def parallel_retrieves(self, count: int) -> None:
        """Save a new count; InvalidInput (naming the field) outside 1..``MAX_PARALLEL_RETRIEVES``."""
        self._store_settings(dataclasses.replace(self.settings, parallel_retrieves=count))

    def window_state(self) -> QSettings:
        """Window geometry and splitter positions, in an INI file beside nodes.json."""
        return QSettings(str(config_dir() / WINDOW_STATE_FILE), QSettings.Format.IniFormat)

    # -- exit ---------------------------------------------------------------------------------------

    def shutdown(self, timeout_ms: int = 5000) -> bool:
        """Stop background jobs (cancel, then wait) and the demo PACS; True if every job ended."""
        ended = self.runner.shutdown(timeout_ms)
        self._demo_generation += 1  # a start that ended meanwhile has its answer queued: drop it
        self._demo_job = None
        self.demo.stop()
        return ended


def _set_aside(path: Path) -> Path:
    """Rename an unreadable file so the user's data is kept but no longer in the way."""
    kept = path.with_name(f"{path.name}.unreadable-{time.strftime('%Y%m%d-%H%M%S')}")
    try:
        path.replace(kept)
    except OSError:
        LOG.warning("could not set %s aside", path)
    return kept
