"""The search: runs a query in a worker, feeds the study model, fetches series when a study expands.

Generations: each search gets a new number. Rows from an older search (or from one the user cancelled)
are dropped here; series answers are checked by the model against the result set they were asked for.
"""

from __future__ import annotations

import logging

from PySide6.QtCore import QObject, Signal, Slot

from pacspull.core.nodes import Node
from pacspull.core.query import QueryRequest
from pacspull.gui.models.study_model import StudyModel
from pacspull.gui.workers import FindDone, FindWorker, SeriesWorker, WorkerRunner

LOG = logging.getLogger(__name__)


class SearchController(QObject):
    """Owns the running query (at most one) and the series fetches of the current result set."""

    runningChanged = Signal(bool)
    finished = Signal(object)  # FindDone (also after a cancel: cancelled=True)
    failed = Signal(str, str)  # message, hint
    seriesFailed = Signal(str, str)  # study UID, message

    def __init__(self, model: StudyModel, runner: WorkerRunner, parent: QObject | None = None) -> None:
        super().__init__(parent)
        self.model = model
        self.runner = runner
        self._generation = 0
        self._worker: FindWorker | None = None
        self._node: Node | None = None  # the node the shown results came from
        self._request: QueryRequest | None = None  # the query they answer
        self._received = 0
        model.seriesRequested.connect(self._fetch_series)

    @property
    def running(self) -> bool:
        """True while a query runs."""
        return self._worker is not None

    @property
    def node(self) -> Node | None:
        """The node the current results came from."""
        return self._node

    @property
    def request(self) -> QueryRequest | None:
        """The query the current results answer."""
        return self._request

    def search(self, node: Node, request: QueryRequest) -> int:
        """Start a query (cancelling one still running); returns its generation."""
        self._stop_current()
        self._generation += 1
        self._node = node
        self._request = request
        self._received = 0
        self.model.reset(self._generation)
        worker = FindWorker(self._generation, node, request)
        worker.rowsFound.connect(self._on_rows)
        worker.finished.connect(self._on_finished)
        worker.failed.connect(self._on_failed)
        self._worker = worker
        self.runner.start(worker)
        self.runningChanged.emit(True)
        return self._generation

    def cancel(self) -> None:
        """Stop the running query: the PACS gets a C-CANCEL, the rows so far stay, later ones are dropped."""
        if self._worker is None:
            return
        LOG.info("query %d cancelled by the user", self._generation)
        self._stop_current()
        self.runningChanged.emit(False)
        self.finished.emit(FindDone(self._received, False, True, (), 0.0))

    def _stop_current(self) -> None:
        if self._worker is not None:
            self._worker.cancel()
            self._worker = None

    def _is_current(self, generation: int) -> bool:
        return self._worker is not None and generation == self._worker.generation

    @Slot(int, list)
    def _on_rows(self, generation: int, rows: list) -> None:
        if self._is_current(generation):
            self._received += len(rows)
            self.model.add_studies(generation, rows)

    @Slot(int, object)
    def _on_finished(self, generation: int, summary: FindDone) -> None:
        if self._is_current(generation):
            self._worker = None
            self.runningChanged.emit(False)
            self.finished.emit(summary)

    @Slot(int, str, str)
    def _on_failed(self, generation: int, message: str, hint: str) -> None:
        if self._is_current(generation):
            self._worker = None
            self.runningChanged.emit(False)
            self.failed.emit(message, hint)

    @Slot(str)
    def _fetch_series(self, study_uid: str) -> None:
        if self._node is None:
            return
        worker = SeriesWorker(self.model.generation, self._node, study_uid)
        worker.seriesFound.connect(self._on_series)
        worker.seriesFailed.connect(self._on_series_failed)
        self.runner.start(worker)

    @Slot(int, str, list)
    def _on_series(self, generation: int, study_uid: str, rows: list) -> None:
        self.model.set_series(generation, study_uid, rows)

    @Slot(int, str, str)
    def _on_series_failed(self, generation: int, study_uid: str, message: str) -> None:
        if self.model.set_series_failed(generation, study_uid, message):
            self.seriesFailed.emit(study_uid, message)
