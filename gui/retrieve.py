"""The transfer queue: turns a selection into retrieve requests, runs them in workers, keeps the rows current.

Each row of the queue is one ``RetrieveRequest`` run by its own ``RetrieveWorker`` (so one row can be
cancelled or retried without touching the others). Rows run one after another by default;
``parallel`` allows a few at once. While anything runs, a ~10 Hz timer copies each worker's latest
progress snapshot (and the failures collected since) into its row: the table repaints at most ten times
a second whatever the instance rate. Every run gets a generation number; signals from a run the user
has since cancelled-and-retried are dropped.

GUI thread only; the workers report through queued signals to the slots here.
"""

from __future__ import annotations

import dataclasses
import logging
import os
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from PySide6.QtCore import QObject, QTimer, Signal, Slot

from pacspull.core.get import RetrievalSummary, RetrieveOptions, RetrieveRequest, SubOperationIssue
from pacspull.core.nodes import Node
from pacspull.core.query import SeriesRow, StudyRow
from pacspull.core.retrieve_process import SPARES
from pacspull.core.settings import MAX_PARALLEL_RETRIEVES
from pacspull.core.status import describe
from pacspull.gui import formatting as fmt
from pacspull.gui.models.transfer_model import TransferId, TransferModel, TransferRow, TransferState
from pacspull.gui.workers import RetrieveWorker, WorkerRunner

LOG = logging.getLogger(__name__)

REFRESH_MS = 100  # rows repaint from the latest snapshots at most this often
# After C-CANCEL, how long a PACS may take to stop before the association is aborted. Shorter than the
# window's 5 s wait at exit, so closing mid-retrieve ends the thread even with a PACS that ignores the
# cancel (the instances already stored are kept either way).
CANCEL_GRACE_S = 4.0


@dataclass(frozen=True)
class Selection:
    """What the user picked in one study: the whole study, or some of its series."""

    study: StudyRow
    series: tuple[SeriesRow, ...] = ()


def group_selection(rows: Sequence[StudyRow | SeriesRow], studies: Mapping[str, StudyRow]) -> list[Selection]:
    """Selected studies and series → one selection per study, in the order first picked.

    Series of the same study become one request (one C-GET at SERIES level); a series whose study is
    unknown (should not happen: the results tree holds it) is dropped.
    """
    picked: dict[str, Selection] = {}
    for row in rows:
        uid = row.study_uid or ""
        if isinstance(row, StudyRow):
            picked[uid] = Selection(row)  # the whole study covers any of its series picked too
            continue
        current = picked.get(uid)
        if current is None:
            if uid in studies:
                picked[uid] = Selection(studies[uid], (row,))
        elif current.series:
            picked[uid] = Selection(current.study, current.series + (row,))
    return [s for s in picked.values() if s.study.study_uid]


def request_for(selection: Selection) -> RetrieveRequest:
    """The C-GET request of one selection, with what the search already told (classes, count)."""
    study, series = selection.study, selection.series
    label = " ".join(p for p in (study.description or "study", fmt.date(study.study_date)) if p)
    if not series:
        return RetrieveRequest(study.study_uid or "", label=label, sop_classes=tuple(study.sop_classes or ()),
                               expected=study.instance_count)
    counts = [s.instance_count for s in series]
    expected = None if any(c is None for c in counts) else sum(c for c in counts if c is not None)
    return RetrieveRequest(study.study_uid or "", tuple(s.series_uid or "" for s in series),
                           label=f"{label}, {_series_scope(series)}", expected=expected)


def _series_scope(series: Sequence[SeriesRow]) -> str:
    numbers = [str(s.number) if s.number is not None else (s.description or "?") for s in series]
    return f"series {', '.join(numbers)}"


def _scope(selection: Selection) -> str:
    if selection.series:
        return _series_scope(selection.series)
    count = selection.study.series_count
    return "whole study" if count is None else f"whole study, {fmt.plural(count, 'series', 'series')}"


@dataclass
class _Run:
    """A running worker and what arrived since the last refresh (GUI thread)."""

    worker: RetrieveWorker
    transfer_id: TransferId
    failures: list[SubOperationIssue] = field(default_factory=list)
    warnings: list[SubOperationIssue] = field(default_factory=list)
    folder: Path | None = None
    dirty: bool = False  # issues or folder changed since the last refresh


class RetrieveQueue(QObject):
    """Owns the transfer rows and the retrieve workers."""

    workerStarted = Signal(object)  # a RetrieveWorker about to start: connect here to see each sub-operation
    rowFinished = Signal(object)  # the TransferRow that just ended (done, incomplete, cancelled, failed)
    activeChanged = Signal(int)  # transfers queued or running
    queueFinished = Signal(str)  # every transfer ended: a one-line summary for the status bar

    def __init__(self, model: TransferModel, runner: WorkerRunner, parent: QObject | None = None) -> None:
        super().__init__(parent)
        self.model = model
        self.runner = runner
        self.parallel = 1  # transfers at once; set_parallel() changes it
        self.options = RetrieveOptions(cancel_grace=CANCEL_GRACE_S)
        self.worker_class = RetrieveWorker  # a stand-in with the same signals can replace it (benchmarks)
        self._next_id = 0
        self._generation = 0
        self._runs: dict[int, _Run] = {}  # by generation
        self._finished_since_idle: list[TransferId] = []
        self._closed = False  # shutdown() ran: no more processes started ahead
        self._timer = QTimer(self)
        self._timer.setInterval(REFRESH_MS)
        self._timer.timeout.connect(self.refresh)

    # -- state ----------------------------------------------------------------------------------------

    @property
    def running(self) -> int:
        """Transfers with a worker (running or cancelling)."""
        return len(self._runs)

    @property
    def active(self) -> int:
        """Transfers queued or running."""
        return sum(1 for r in self.model.rows() if r.state.active)

    def batch(self) -> list[TransferRow]:
        """The current run of work: transfers queued or running, and those that ended since the queue was
        last idle (what "transfer 2 of 3" counts); empty while idle."""
        ended = set(self._finished_since_idle)
        return [r for r in self.model.rows() if r.state.active or r.id in ended]

    def worker_of(self, transfer_id: TransferId) -> RetrieveWorker | None:
        """The worker running this transfer, if any."""
        return next((run.worker for run in self._runs.values() if run.transfer_id == transfer_id), None)

    # -- commands ---------------------------------------------------------------------------------------

    def add(self, selections: Iterable[Selection], node: Node, *, destination: Path, layout: str) -> list[TransferId]:
        """Queue one transfer per selection (skipping one already queued or running); returns the new ids."""
        busy = {(r.node.address, r.request) for r in self.model.rows() if r.state.active}
        rows = []
        for selection in selections:
            request = request_for(selection)
            if (node.address, request) in busy:
                continue
            self._next_id += 1
            study = selection.study
            rows.append(TransferRow(
                id=TransferId(self._next_id), request=request, node=node, destination=destination, layout=layout,
                patient=fmt.person_name(study.patient_name) or "(no name)", patient_id=study.patient_id or "",
                study=" · ".join(p for p in (study.description or "(no description)", fmt.date(study.study_date)) if p),
                scope=_scope(selection), remaining=request.expected))
            busy.add((node.address, request))
        self.model.add(rows)
        if rows:
            self._schedule()
            self.activeChanged.emit(self.active)
        return [r.id for r in rows]

    def set_parallel(self, count: int) -> None:
        """How many transfers may run at once (1 to ``MAX_PARALLEL_RETRIEVES``); more start at once if allowed."""
        self.parallel = max(1, min(count, MAX_PARALLEL_RETRIEVES))
        self._schedule()

    def cancel(self, ids: Iterable[TransferId]) -> None:
        """Cancel transfers: a queued one ends at once; a running one gets C-CANCEL and ends when the PACS stops."""
        for transfer_id in ids:
            row = self.model.row(transfer_id)
            if row is None or not row.can_cancel:
                continue
            if row.state is TransferState.QUEUED:
                self._end(row.with_state(TransferState.CANCELLED, message="Cancelled before it started: nothing retrieved."))
                continue
            worker = self.worker_of(transfer_id)
            if worker is not None:
                LOG.info("Retrieve #%d: cancel requested", worker.generation)
                worker.cancel()
            self.model.update(row.with_state(TransferState.CANCELLING))
        self._schedule()

    def cancel_all(self) -> None:
        """Cancel every queued and running transfer."""
        self.cancel([r.id for r in self.model.rows() if r.can_cancel])

    def retry(self, transfer_id: TransferId) -> bool:
        """Run an ended, incomplete transfer again: what is on disk is skipped, the rest fetched."""
        row = self.model.row(transfer_id)
        if row is None or not row.can_retry:
            return False
        self.model.update(row.with_state(TransferState.QUEUED, message="", notes=()))
        self._schedule()
        self.activeChanged.emit(self.active)
        return True

    def clear_finished(self) -> None:
        """Remove every ended row."""
        self.model.remove([r.id for r in self.model.rows() if not r.state.active])

    def warm_up(self) -> None:
        """A retrieve is likely soon (a search found studies): start a retrieve process now, so that the
        first transfer does not wait ~0.3 s for Python and its imports. It waits, idle, until a transfer
        takes it or the window closes."""
        if getattr(self.worker_class, "isolated", False) and not self.active and not self._closed:
            SPARES.prestart_in_background()  # (starting a process can take a while on Windows)

    def shutdown(self) -> None:
        """Cancel everything and stop refreshing (the window is closing; the runner waits for the threads)."""
        self._closed = True
        self.cancel_all()
        self._timer.stop()
        SPARES.discard()

    # -- running --------------------------------------------------------------------------------------

    def _schedule(self) -> None:
        for row in self.model.rows():
            if self.running >= self.parallel:
                break
            if row.state is TransferState.QUEUED:
                self._start(row)

    def _start(self, row: TransferRow) -> None:
        self._generation += 1
        worker = self.worker_class(self._generation, row.node, [row.request], destination=row.destination,
                                   layout=row.layout, options=self.options)
        worker.subOperationFailed.connect(self._on_failed_sub)
        worker.subOperationWarning.connect(self._on_warning_sub)
        worker.folderChanged.connect(self._on_folder)
        worker.finished.connect(self._on_finished)
        worker.failed.connect(self._on_failed)
        self._runs[self._generation] = _Run(worker, row.id, folder=row.folder)
        # A retry starts its counts over; what the last run stored shows up as skipped.
        self.model.update(dataclasses.replace(
            row, state=TransferState.RUNNING, generation=self._generation, runs=row.runs + 1,
            completed=0, failed=0, warning=0, skipped=0, bytes_received=0, elapsed=0.0, eta=None,
            remaining=row.request.expected if row.runs == 0 else None, failures=(), warnings=(),
            message="", notes=(), status=None, pacs_counts=(), refused=False, not_found=False))
        # With more waiting, the next transfer's child process starts while this one runs (SPARES).
        worker.prestart_next = any(r.state is TransferState.QUEUED for r in self.model.rows())
        self.workerStarted.emit(worker)  # before the thread starts, so no event can be missed
        self.runner.start(worker)
        if not self._timer.isActive():
            self._timer.start()

    @Slot()
    def refresh(self) -> None:
        """Copy each running worker's latest snapshot (and new issues) into its row: one repaint per row."""
        for run in self._runs.values():
            row = self.model.row(run.transfer_id)
            snapshot = run.worker.latest_progress()
            if row is None or (snapshot is None and not run.dirty):
                continue
            changes: dict[str, object] = {}
            if snapshot is not None:
                changes.update(completed=snapshot.completed, failed=snapshot.failed, warning=snapshot.warning,
                               skipped=snapshot.skipped, remaining=snapshot.remaining,
                               bytes_received=snapshot.bytes_received, elapsed=snapshot.elapsed,
                               eta=snapshot.eta_seconds)
            if run.dirty:
                changes.update(failures=tuple(run.failures), warnings=tuple(run.warnings), folder=run.folder)
                run.dirty = False
            self.model.update(dataclasses.replace(row, **changes))  # type: ignore[arg-type]

    def _run(self, generation: int) -> _Run | None:
        return self._runs.get(generation)

    @Slot(int, object)
    def _on_failed_sub(self, generation: int, issue: SubOperationIssue) -> None:
        run = self._run(generation)
        if run is not None:
            run.failures.append(issue)
            run.dirty = True

    @Slot(int, object)
    def _on_warning_sub(self, generation: int, issue: SubOperationIssue) -> None:
        run = self._run(generation)
        if run is not None:
            run.warnings.append(issue)
            run.dirty = True

    @Slot(int, str)
    def _on_folder(self, generation: int, folder: str) -> None:
        run = self._run(generation)
        if run is not None:
            # A retry only reports the files it fetched: keep the folder that covers the earlier ones too.
            run.folder = Path(folder if run.folder is None else os.path.commonpath([run.folder, folder]))
            run.dirty = True

    @Slot(int, object)
    def _on_finished(self, generation: int, summary: RetrievalSummary) -> None:
        run = self._runs.pop(generation, None)
        if run is None:
            return
        row = self.model.row(run.transfer_id)
        if row is not None:
            self._end(_finished_row(row, run, summary))
        self._schedule()

    @Slot(int, str, str)
    def _on_failed(self, generation: int, message: str, hint: str) -> None:
        run = self._runs.pop(generation, None)
        if run is None:
            return
        row = self.model.row(run.transfer_id)
        if row is not None:
            text = f"{message[:1].upper()}{message[1:]}" + (f". {hint[:1].upper()}{hint[1:]}." if hint else "")
            self._end(row.with_state(TransferState.FAILED, message=text, eta=None))
        self._schedule()

    def _end(self, row: TransferRow) -> None:
        self.model.update(row)
        self._finished_since_idle.append(row.id)
        if not self._runs:
            self._timer.stop()
        active = self.active
        ended: list[TransferRow] = []
        if not active:  # the run of work is over: the batch starts afresh with the next transfer
            ended = [r for r in (self.model.row(i) for i in self._finished_since_idle) if r is not None]
            self._finished_since_idle = []
        self.rowFinished.emit(row)
        self.activeChanged.emit(active)
        if not active:
            SPARES.discard()  # a child started for a transfer that was then cancelled before it ran
            self.queueFinished.emit(queue_summary(ended))


def _finished_row(row: TransferRow, run: _Run, summary: RetrievalSummary) -> TransferRow:
    """The row as the run left it: final counts from the outcome, state and message decided here."""
    outcome = summary.outcomes[0] if summary.outcomes else None
    changes: dict[str, object] = {"folder": run.folder, "eta": None}
    if outcome is not None:
        changes.update(completed=outcome.completed, failed=outcome.failed, warning=outcome.warning,
                       skipped=outcome.skipped, bytes_received=outcome.bytes_received, elapsed=outcome.seconds,
                       remaining=outcome.remaining, failures=tuple(outcome.failures),
                       warnings=tuple(outcome.warnings), notes=tuple(outcome.notes),
                       pacs_counts=tuple(outcome.pacs_counts.items()), refused=outcome.refused,
                       not_found=outcome.not_found,
                       # A C-GET that got no final answer (aborted, timed out) says so: code -1, "none".
                       status=outcome.status or (describe(None) if outcome.attempted else None))
    else:
        changes.update(failures=tuple(run.failures), warnings=tuple(run.warnings), elapsed=summary.seconds)
    ended = dataclasses.replace(row, **changes)  # type: ignore[arg-type]
    complete = (outcome is not None and outcome.attempted and not outcome.failed and not outcome.error
                and not outcome.cancelled and summary.error is None)
    if complete:
        return ended.with_state(TransferState.DONE, remaining=0)
    if summary.cancelled or (outcome is not None and outcome.cancelled):
        where = f" in {ended.folder}" if ended.folder else ""
        return ended.with_state(TransferState.CANCELLED,
                                message=f"Cancelled: {fmt.plural(ended.kept, 'image')} kept{where}.")
    error = outcome.error if outcome is not None and outcome.error else None
    if outcome is not None and outcome.not_found:  # (the state says "Not on the PACS": the message says why)
        why = (outcome.error or "").removeprefix("not found on the PACS: ")
        return ended.with_state(TransferState.FAILED, message=_sentence(why) if why else "")
    if summary.error is not None and not ended.kept:
        text = summary.error.message + (f" ({summary.error.hint})" if summary.error.hint else "")
        return ended.with_state(TransferState.FAILED, message=_sentence(text))
    reason = error or (str(summary.error) if summary.error else "")
    if not reason and ended.failed:
        reason = f"{fmt.plural(ended.failed, 'image')} could not be retrieved (see the list below)"
    return ended.with_state(TransferState.INCOMPLETE, message=_sentence(reason) if reason else "")


def _sentence(text: str) -> str:
    text = text.strip()
    return f"{text[:1].upper()}{text[1:]}{'' if text.endswith('.') else '.'}"


def queue_summary(rows: Sequence[TransferRow]) -> str:
    """One line for the status bar when the queue empties: what arrived, what did not, where."""
    stored = sum(r.completed + r.warning for r in rows)
    failed = sum(r.failed for r in rows)
    size = sum(r.bytes_received for r in rows)
    done = sum(1 for r in rows if r.state is TransferState.DONE)
    parts = [f"Retrieve finished: {done} of {fmt.plural(len(rows), 'transfer')} complete",
             f"{fmt.plural(stored, 'image')} stored ({fmt.size(size)})"]
    if failed:
        parts.append(f"{failed:,} failed")
    cancelled = sum(1 for r in rows if r.state is TransferState.CANCELLED)
    if cancelled:
        parts.append(f"{cancelled} cancelled")
    broken = sum(1 for r in rows if r.state is TransferState.FAILED)
    if broken:
        parts.append(f"{broken} could not run")
    return ", ".join(parts)
