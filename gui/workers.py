"""Background work: each worker turns one core call into Qt signals, on a QThread of its own.

Thread contract, for every worker here:

* ``run()`` executes on the worker's thread. It calls core, never touches a widget or a model, and
  reports only by emitting signals; Qt queues them to the receivers' thread (the GUI thread).
* Every signal carries the worker's ``generation``. The receiver compares it with the generation it is
  waiting for and drops anything older, so a slow answer never overwrites a newer one.
* ``cancel()`` may be called from any thread; it sets the worker's ``CancelToken`` and core stops at
  its next step (for C-FIND: C-CANCEL after the next response).
* ``done`` is always the last signal; the runner stops the thread on it.

Volume: a retrieve can store thousands of instances a second. ``RetrieveWorker`` emits one signal per
sub-operation for receivers that need each event, but nothing that repaints should connect to them:
the window reads ``latest_progress()`` from a ~10 Hz timer instead (Anki's pulled progress), so the
event loop sees a bounded amount of work whatever the instance rate.

Receivers must be slots of QObjects living on the GUI thread (not lambdas): PySide runs a plain callable
connected to a cross-thread signal on the emitting thread.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Generic, TypeVar

from PySide6.QtCore import QObject, Qt, QThread, Signal, Slot

from pacspull.core.diagnose import StageResult, diagnose
from pacspull.core.errors import PacsPullError
from pacspull.core.get import (
    RequestOutcome,
    RetrievalListener,
    RetrievalProgress,
    RetrievalSummary,
    Retrieval,
    RetrieveOptions,
    RetrieveRequest,
    SubOperationIssue,
)
from pacspull.core.nodes import Node
from pacspull.core.progress import CancelToken
from pacspull.core.query import Level, QueryRequest, find
from pacspull.core.retrieve_process import IsolatedRetrieval
from pacspull.core.storage import StoredInstance, StudyWriter
from pacspull.gui.demo import DemoServer

LOG = logging.getLogger(__name__)
# The presentation contexts of each retrieve, one line each: a logger of their own, so the log view can
# show them with pynetdicom's association log and hide them in its normal verbosity.
CONTEXT_LOG = logging.getLogger("pacspull.contexts")

# Rows reach the GUI in batches at most this often: a PACS answering 5,000 rows a second costs the
# event loop 20 signals a second, not 5,000 (Picard's time-budget batching).
BATCH_SECONDS = 0.05
# The ``progress`` signal of a retrieve is emitted at most this often (plus once when a request ends).
PROGRESS_SIGNAL_SECONDS = 0.1
# Failed sub-operations logged one by one per request; the rest are counted in one line.
LOGGED_ISSUES = 20

T = TypeVar("T")


@dataclass(frozen=True)
class FindDone:
    """How a query ended: row count, whether the rows are incomplete, and how long it took."""

    count: int
    capped: bool
    cancelled: bool
    warnings: tuple[str, ...]
    seconds: float


class Worker(QObject):
    """One core call on a worker thread; subclasses implement ``work()`` (called on that thread)."""

    failed = Signal(int, str, str)  # generation, message, hint
    done = Signal()

    def __init__(self, generation: int) -> None:
        super().__init__()
        self.generation = generation
        self.token = CancelToken()

    def cancel(self) -> None:
        """Ask the core call to stop at its next step; safe from any thread."""
        self.token.cancel()

    @Slot()
    def run(self) -> None:
        """Entry point on the worker thread: ``work()``, errors turned into ``failed``, then ``done``."""
        try:
            self.work()
        except PacsPullError as exc:
            self.failed.emit(self.generation, exc.message, exc.hint)
        except Exception as exc:  # the thread boundary: a bug must still end the job and reach the user
            LOG.exception("%s failed unexpectedly", type(self).__name__)
            self.failed.emit(self.generation, f"unexpected error: {exc}", "details are in the log")
        finally:
            self.done.emit()

    def work(self) -> None:
        """The core call; runs on the worker thread."""
        raise NotImplementedError


class FindWorker(Worker):
    """A C-FIND; rows arrive in batches (``rowsFound``), then ``finished`` with a ``FindDone``."""

    rowsFound = Signal(int, list)  # generation, rows
    finished = Signal(int, object)  # generation, FindDone

    def __init__(self, generation: int, node: Node, request: QueryRequest) -> None:
        super().__init__(generation)
        self.node = node
        self.request = request
        self._batch: list[Any] = []
        self._flushed_at = 0.0

    def work(self) -> None:
        """Run the query, flushing rows every ``BATCH_SECONDS``."""
        start = self._flushed_at = time.monotonic()
        result = find(self.node, self.request, cancel=self.token, on_row=self._on_row)
        self._flush()
        summary = FindDone(len(result.rows), result.capped, result.cancelled, tuple(result.warnings),
                           time.monotonic() - start)
        self.finished.emit(self.generation, summary)

    def _on_row(self, row: Any) -> None:
        self._batch.append(row)
        if time.monotonic() - self._flushed_at >= BATCH_SECONDS:
            self._flush()

    def _flush(self) -> None:
        self._flushed_at = time.monotonic()
        if self._batch:
            batch, self._batch = self._batch, []
            self.rowsFound.emit(self.generation, batch)


class SeriesWorker(Worker):
    """The series of one study, for a lazy expand: ``seriesFound`` or ``seriesFailed``, by study UID."""

    seriesFound = Signal(int, str, list)  # generation, study UID, rows
    seriesFailed = Signal(int, str, str)  # generation, study UID, message (with its hint)

    def __init__(self, generation: int, node: Node, study_uid: str) -> None:
        super().__init__(generation)
        self.node = node
        self.study_uid = study_uid

    def work(self) -> None:
        """One SERIES-level C-FIND for the study."""
        request = QueryRequest(level=Level.SERIES, study_uids=(self.study_uid,))
        try:
            result = find(self.node, request, cancel=self.token)
        except PacsPullError as exc:
            self.seriesFailed.emit(self.generation, self.study_uid, str(exc))
            return
        self.seriesFound.emit(self.generation, self.study_uid, list(result.rows))


class DiagnoseWorker(Worker):
    """The staged connection test: ``stageDone`` as each stage ends, then ``finished`` with the report."""

    stageDone = Signal(int, object)  # generation, StageResult
    finished = Signal(int, object)  # generation, DiagnoseReport

    def __init__(self, generation: int, node: Node) -> None:
        super().__init__(generation)
        self.node = node

    def work(self) -> None:
        """Run every stage; diagnose itself never raises for a PACS problem."""
        report = diagnose(self.node, on_stage=self._on_stage)
        self.finished.emit(self.generation, report)

    def _on_stage(self, stage: StageResult) -> None:
        self.stageDone.emit(self.generation, stage)


class DemoStartWorker(Worker):
    """Starts the demo PACS off the GUI thread (the first start writes ~1 MB of sample files)."""

    started = Signal(int, object)  # generation, the Node actually served (its port may have moved)

    def __init__(self, generation: int, server: DemoServer, node: Node) -> None:
        super().__init__(generation)
        self.server = server
        self.node = node

    def work(self) -> None:
        """``DemoServer.ensure_for``; raises PacsPullError when no port can be served."""
        self.started.emit(self.generation, self.server.ensure_for(self.node))


class Latest(Generic[T]):
    """The newest value one thread posts and another reads; an older value is simply replaced."""

    def __init__(self, value: T) -> None:
        self._lock = threading.Lock()
        self._value = value

    def set(self, value: T) -> None:
        """Replace the value (any thread)."""
        with self._lock:
            self._value = value

    def get(self) -> T:
        """The newest value (any thread)."""
        with self._lock:
            return self._value


class RetrieveWorker(Worker):
    """A C-GET of ``requests`` from ``node`` into ``destination`` (core's ``Retrieval`` in a child process,
    watched from this thread; see ``isolated``).

    Signals, all carrying the generation first:

    * ``instanceStored(StoredInstance)`` once per instance written (also for a warning sub-operation,
      which is stored too), ``subOperationFailed(SubOperationIssue)`` once per failed sub-operation,
      ``subOperationWarning(SubOperationIssue)`` once per warning one; so
      ``instanceStored == completed + warning`` and ``subOperationFailed == failed``.
    * ``folderChanged(str)``: the deepest folder holding every file stored so far (a few times per request).
    * ``progress(RetrievalProgress)``: at most every ``PROGRESS_SIGNAL_SECONDS`` and when a request ends;
      ``latest_progress()`` always has the newest snapshot, for a timer to read.
    * ``requestFinished(RequestOutcome)`` per request; ``finished(RetrievalSummary)`` when the retrieval
      ran, whatever its outcome (the summary tells failures, errors and cancels apart);
      ``failed(message, hint)`` only when it could not run at all (unusable destination) or on a bug.

    ``cancel()`` (any thread) makes core send C-CANCEL; instances already stored are kept.
    """

    # The engine runs in a child process (core.retrieve_process): its Python work then never holds the
    # GIL the GUI thread needs. Off: on this thread, in this process (tests that patch core use it).
    isolated = True

    instanceStored = Signal(int, object)  # generation, StoredInstance
    subOperationFailed = Signal(int, object)  # generation, SubOperationIssue
    subOperationWarning = Signal(int, object)  # generation, SubOperationIssue
    folderChanged = Signal(int, str)  # generation, folder
    progress = Signal(int, object)  # generation, RetrievalProgress
    requestFinished = Signal(int, object)  # generation, RequestOutcome
    finished = Signal(int, object)  # generation, RetrievalSummary

    def __init__(self, generation: int, node: Node, requests: Sequence[RetrieveRequest], *,
                 destination: Path, layout: str, options: RetrieveOptions = RetrieveOptions()) -> None:
        super().__init__(generation)
        self.node = node
        self.requests = tuple(requests)
        self.destination = destination
        self.layout = layout
        self.options = options
        self._latest: Latest[RetrievalProgress | None] = Latest(None)
        self._isolated: IsolatedRetrieval | None = None
        # Another transfer waits in the queue: start its child process while this one runs.
        self.prestart_next = False

    @property
    def child_pid(self) -> int | None:
        """The process running the engine (None before it starts, or when not ``isolated``)."""
        return None if self._isolated is None else self._isolated.pid

    def latest_progress(self) -> RetrievalProgress | None:
        """The newest progress snapshot (None before the first one); safe from any thread."""
        return self._latest.get()

    def work(self) -> None:
        """Run the retrieval (in a child process unless ``isolated`` is off), report it; runs on the
        worker thread. An unusable destination raises ``InvalidInput``: ``failed``."""
        relay = _Relay(self)
        LOG.info("Retrieve #%d from %s: %s into %s", self.generation, self.node.address,
                 ", ".join(r.describe() for r in self.requests), self.destination)
        retrieval: Retrieval | IsolatedRetrieval
        if self.isolated:
            retrieval = self._isolated = IsolatedRetrieval(
                self.node, self.requests, self.destination, layout=self.layout, listener=relay,
                cancel=self.token, options=self.options, prestart_next=self.prestart_next)
        else:
            writer = StudyWriter(self.destination, layout=self.layout)
            retrieval = Retrieval(self.node, self.requests, writer, listener=relay, cancel=self.token,
                                  options=self.options)
        summary = retrieval.run()
        self._log_summary(summary, retrieval.context_report)
        self.finished.emit(self.generation, summary)

    def _log_summary(self, summary: RetrievalSummary, contexts: Sequence[str]) -> None:
        for line in contexts:
            CONTEXT_LOG.info("Retrieve #%d context %s", self.generation, line)
        for outcome in summary.outcomes:
            status = "no final response" if outcome.status is None else str(outcome.status)
            level = logging.INFO if outcome.ok else logging.WARNING
            LOG.log(level, "Retrieve #%d %s: C-GET status %s; %d stored, %d failed, %d warning, "
                    "%d already on disk, %.1f s%s", self.generation, outcome.request.describe(), status,
                    outcome.completed, outcome.failed, outcome.warning, outcome.skipped, outcome.seconds,
                    " (cancelled)" if outcome.cancelled else "")
            for issue in outcome.failures[:LOGGED_ISSUES]:
                LOG.warning("  failed %s: %s: %s", issue.sop_instance_uid, issue.status, issue.reason)
            for issue in outcome.warnings[:LOGGED_ISSUES]:
                LOG.info("  warning %s: %s: %s", issue.sop_instance_uid, issue.status, issue.reason)
            hidden = max(0, len(outcome.failures) - LOGGED_ISSUES) + max(0, len(outcome.warnings) - LOGGED_ISSUES)
            if hidden:
                LOG.warning("  … and %d more (listed in the transfer's details)", hidden)
            for note in outcome.notes:
                LOG.info("  note: %s", note)
            if outcome.error:
                LOG.warning("  %s", outcome.error)
        if summary.error is not None:
            LOG.error("Retrieve #%d failed: %s", self.generation, summary.error)


class _Relay(RetrievalListener):
    """Core's retrieve callbacks → the worker's signals. Runs on the retrieving thread: quick, no UI."""

    def __init__(self, worker: RetrieveWorker) -> None:
        self.worker = worker
        self.generation = worker.generation
        self._signalled_at = 0.0
        self._folder: str | None = None
        self._last_parent: str | None = None

    def instance_stored(self, outcome: RequestOutcome, stored: StoredInstance) -> None:
        """Signal it; follow the folder the files go to."""
        self.worker.instanceStored.emit(self.generation, stored)
        parent = str(stored.path.parent)
        if parent == self._last_parent:
            return  # the common case: the next file of the same series
        self._last_parent = parent
        folder = parent if self._folder is None else os.path.commonpath([self._folder, parent])
        if folder != self._folder:
            self._folder = folder
            self.worker.folderChanged.emit(self.generation, folder)

    def sub_operation_failed(self, outcome: RequestOutcome, issue: SubOperationIssue) -> None:
        """Signal it."""
        self.worker.subOperationFailed.emit(self.generation, issue)

    def sub_operation_warning(self, outcome: RequestOutcome, issue: SubOperationIssue) -> None:
        """Signal it."""
        self.worker.subOperationWarning.emit(self.generation, issue)

    def progress(self, snapshot: RetrievalProgress) -> None:
        """Keep the newest snapshot; signal it at most every ``PROGRESS_SIGNAL_SECONDS``."""
        self.worker._latest.set(snapshot)
        now = time.monotonic()
        if now - self._signalled_at >= PROGRESS_SIGNAL_SECONDS:
            self._signalled_at = now
            self.worker.progress.emit(self.generation, snapshot)

    def request_finished(self, outcome: RequestOutcome) -> None:
        """The final snapshot of the request, then the outcome."""
        snapshot = self.worker._latest.get()
        if snapshot is not None:
            self.worker.progress.emit(self.generation, snapshot)
        self.worker.requestFinished.emit(self.generation, outcome)


class WorkerRunner(QObject):
    """Starts each worker on a new QThread, keeps both alive until the thread ends, stops them all on exit.

    Lives on the GUI thread. A thread per job keeps a stalled PACS from queueing other work (a series
    fetch while a query runs); jobs are few and long, so thread start-up cost does not matter.
    """

    def __init__(self, parent: QObject | None = None) -> None:
        super().__init__(parent)
        self._jobs: dict[QThread, Worker] = {}

    @property
    def active(self) -> int:
        """How many jobs are running."""
        return len(self._jobs)

    def start(self, worker: Worker) -> Worker:
        """Move ``worker`` to a new thread and run it; returns it for chaining."""
        thread = QThread()
        thread.setObjectName(type(worker).__name__)
        worker.moveToThread(thread)
        thread.started.connect(worker.run)
        # Direct: quit() is thread-safe and must not wait for the GUI thread, which may itself be
        # blocked in shutdown()'s wait() for this very thread (a queued quit would never arrive).
        worker.done.connect(thread.quit, Qt.ConnectionType.DirectConnection)
        thread.finished.connect(self._reap)
        self._jobs[thread] = worker
        thread.start()
        return worker

    @Slot()
    def _reap(self) -> None:
        # QThread.finished is emitted just before the thread ends: wait() covers that last instant,
        # so the QThread is never destroyed while still running.
        thread = self.sender()
        if isinstance(thread, QThread) and thread in self._jobs:
            thread.wait()
            del self._jobs[thread]

    def cancel_all(self) -> None:
        """Ask every running job to stop."""
        for worker in self._jobs.values():
            worker.cancel()

    def shutdown(self, timeout_ms: int = 5000) -> bool:
        """Cancel every job and wait for its thread, at most ``timeout_ms`` in all; True if all ended.

        Never ``terminate()``: a thread killed inside pynetdicom could leave a half-written file or a
        socket in an unknown state. A job still blocked on a silent PACS ends at its DIMSE timeout.
        """
        self.cancel_all()
        deadline = time.monotonic() + timeout_ms / 1000
        for thread in list(self._jobs):
            remaining = max(0, int((deadline - time.monotonic()) * 1000))
            if thread.wait(remaining):
                del self._jobs[thread]
        if self._jobs:
            LOG.warning("%d background job(s) still waiting for the PACS at exit", len(self._jobs))
        return not self._jobs
