"""The transfer queue as a table: one row per retrieve request, and the failed/warning instances of one.

Both models are thin adapters over frozen dataclasses: ``TransferRow`` (what a request is and where it
stands) and ``Issue`` (one failed or warning sub-operation). The queue controller replaces a row with
``update()``; the model only announces the change. Columns are declared once in ``COLUMNS`` and
``ISSUE_COLUMNS`` (header, text, alignment, tooltip). GUI thread only.
"""

from __future__ import annotations

import dataclasses
import enum
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NewType

from PySide6.QtCore import QAbstractTableModel, QModelIndex, QObject, QPersistentModelIndex, Qt
from PySide6.QtGui import QColor

from pacspull.core.get import RetrieveRequest, SubOperationIssue
from pacspull.core.nodes import Node
from pacspull.core.status import StatusInfo
from pacspull.gui import formatting as fmt
from pacspull.gui.models.columns import header_data

REFUSED = "Refused by the PACS"  # the State of a failed transfer whose C-GET the PACS refused
NOT_FOUND = "Not on the PACS"  # the State of a failed transfer whose study or series the PACS does not have
ROW_ROLE = Qt.ItemDataRole.UserRole + 1  # the TransferRow (or Issue) behind an index
FRACTION_ROLE = Qt.ItemDataRole.UserRole + 2  # progress 0..1 as a float, -1.0 when the total is unknown

_LEFT = Qt.AlignmentFlag.AlignLeft | Qt.AlignmentFlag.AlignVCenter
_RIGHT = Qt.AlignmentFlag.AlignRight | Qt.AlignmentFlag.AlignVCenter
_CENTER = Qt.AlignmentFlag.AlignCenter

AnyIndex = QModelIndex | QPersistentModelIndex
TransferId = NewType("TransferId", int)


class TransferState(enum.Enum):
    """Where a transfer stands; the value is what the State column says."""

    QUEUED = "Queued"
    RUNNING = "Retrieving"
    CANCELLING = "Cancelling…"
    DONE = "Done"
    INCOMPLETE = "Incomplete"  # ended, but some instances failed (or the PACS ended it early)
    CANCELLED = "Cancelled"
    FAILED = "Failed"  # nothing could be retrieved: connection, association, destination

    @property
    def active(self) -> bool:
        """Queued or running: the transfer still has work (or a cancel) in flight."""
        return self in (TransferState.QUEUED, TransferState.RUNNING, TransferState.CANCELLING)


# State colours: failures red, success green, cancelled grey; the rest in the normal text colour.
_STATE_COLOURS = {
    TransferState.DONE: QColor("#1e7e34"),
    TransferState.INCOMPLETE: QColor("#b3261e"),
    TransferState.FAILED: QColor("#b3261e"),
    TransferState.CANCELLED: QColor("#5f6368"),
}


@dataclass(frozen=True)
class TransferRow:
    """One retrieve request and its progress. Counts are those of the latest run (a retry starts over:
    what the first run stored then counts as *skipped*, already on disk)."""

    id: TransferId
    request: RetrieveRequest
    node: Node
    destination: Path
    layout: str
    patient: str  # as displayed: "Müller, Jürgen"
    patient_id: str
    study: str  # "CT Thorax Übersicht · 2024-01-15"
    scope: str  # "3 series" (whole study) or "series 2, 3"
    state: TransferState = TransferState.QUEUED
    completed: int = 0
    failed: int = 0
    warning: int = 0
    skipped: int = 0
    remaining: int | None = None
    bytes_received: int = 0
    elapsed: float = 0.0
    eta: float | None = None
    folder: Path | None = None  # deepest folder holding every file of this transfer
    failures: tuple[SubOperationIssue, ...] = ()
    warnings: tuple[SubOperationIssue, ...] = ()
    message: str = ""  # why it failed or stopped early, in the user's words
    notes: tuple[str, ...] = ()
    # The PACS's final C-GET status once ended (code -1: none came, the association ended first; None: the
    # C-GET was never sent, or the run has not ended) and the sub-operation counts it last reported.
    status: StatusInfo | None = None
    pacs_counts: tuple[tuple[str, int], ...] = ()  # ("completed", 60), ("failed", 1), ...
    refused: bool = False  # the PACS refused the C-GET itself (core's RequestOutcome.refused)
    not_found: bool = False  # the PACS has none of it (core's RequestOutcome.not_found)
    runs: int = 0  # 1 after the first start, 2 after a retry...
    generation: int = 0  # of the worker running it (0: none yet)

    @property
    def done(self) -> int:
        """Sub-operations of this run that ended, whatever their outcome."""
        return self.completed + self.failed + self.warning

    @property
    def kept(self) -> int:
        """Instances of this request on disk: stored now, stored with a warning, or already there."""
        return self.completed + self.warning + self.skipped

    @property
    def total(self) -> int | None:
        """Everything the request covers (including what was already on disk), when known."""
        return None if self.remaining is None else self.done + self.skipped + self.remaining

    @property
    def fraction(self) -> float | None:
        """How far along, 0..1, None when the total is unknown: while running, the sub-operations the PACS
        has finished (whatever their outcome); once ended, the part that is on disk."""
        if self.state is TransferState.DONE:
            return 1.0
        total = self.total
        if not total:
            return None
        return min(1.0, self._reached / total)

    @property
    def _reached(self) -> int:
        return self.done + self.skipped if self.state.active else self.kept

    @property
    def bytes_per_second(self) -> float:
        """Average throughput of this run."""
        return self.bytes_received / self.elapsed if self.elapsed > 0 else 0.0

    @property
    def can_cancel(self) -> bool:
        """Queued or running (and not already cancelling)."""
        return self.state in (TransferState.QUEUED, TransferState.RUNNING)

    @property
    def can_retry(self) -> bool:
        """Ended without everything on disk: failed instances, a cancel, or an error."""
        return self.state in (TransferState.INCOMPLETE, TransferState.CANCELLED, TransferState.FAILED)

    def state_text(self) -> str:
        """The State column: the state, with the count that matters for it."""
        state = self.state
        if state is TransferState.RUNNING and self.runs > 1:
            return "Retrying"
        if state is TransferState.DONE and self.warning:
            return f"Done, {fmt.plural(self.warning, 'warning')}"
        if state is TransferState.INCOMPLETE:
            return f"Incomplete, {self.failed:,} failed" if self.failed else "Incomplete"
        if state is TransferState.CANCELLED:
            return f"Cancelled, {self.kept:,} kept"
        if state is TransferState.FAILED and self.refused:
            return REFUSED
        if state is TransferState.FAILED and self.not_found:
            return NOT_FOUND
        return state.value

    def progress_text(self) -> str:
        """``45 / 61``: done of all while running, on disk of all once ended; ``45`` when the total is unknown."""
        if self.state is TransferState.QUEUED and not self.done:
            return ""
        total = self.total
        return f"{self._reached:,} / {total:,}" if total is not None else f"{self._reached:,}"

    def relative_folder(self) -> str:
        """The folder below the destination, as the user will find it; empty before the first file."""
        if self.folder is None:
            return ""
        try:
            return self.folder.relative_to(self.destination).as_posix() or "."
        except ValueError:
            return str(self.folder)

    def pacs_count(self, name: str) -> int | None:
        """One of the PACS's own counts (completed, failed, warning, remaining); None when it did not say."""
        return dict(self.pacs_counts).get(name)

    def status_text(self) -> str:
        """The C-GET status column: ``0xB000 warning``, ``none`` when the association ended without one."""
        return "" if self.status is None else fmt.dicom_status(self.status.code, self.status.category.value)

    def with_state(self, state: TransferState, **changes: Any) -> TransferRow:
        """A copy in another state (and other changes)."""
        return dataclasses.replace(self, state=state, **changes)


@dataclass(frozen=True)
class Column:
    """One column of the transfer table."""

    header: str
    text: Callable[[TransferRow], str]
    align: Qt.AlignmentFlag = _LEFT
    tooltip: str = ""


def _count(value: int) -> str:
    return f"{value:,}" if value else "0"


def _running_only(text: Callable[[TransferRow], str]) -> Callable[[TransferRow], str]:
    """The ETA means something only while running; elsewhere the cell stays empty."""
    return lambda r: text(r) if r.state in (TransferState.RUNNING, TransferState.CANCELLING) else ""


COLUMNS: tuple[Column, ...] = (
    Column("Patient", lambda r: r.patient),
    # A whole study is the usual case: only a series-level transfer says what it covers.
    Column("Study", lambda r: f"{r.study} · {r.scope}" if r.scope.startswith("series") else r.study),
    Column("State", TransferRow.state_text),
    Column("C-GET status", TransferRow.status_text, _LEFT,
           "The PACS's final answer to the C-GET (hover a cell for its meaning; the details below give its counts)"),
    Column("Progress", TransferRow.progress_text, _CENTER,
           "While running: instances done (stored, failed or already on disk) of all the request covers.\n"
           "Once ended: instances on disk of all."),
    Column("Stored", lambda r: _count(r.completed), _RIGHT, "Instances written to disk by this run"),
    Column("Failed", lambda r: _count(r.failed), _RIGHT, "Instances the PACS could not send or we could not store"),
    Column("Warnings", lambda r: _count(r.warning), _RIGHT, "Instances stored with a warning status"),
    Column("Left", lambda r: "" if r.remaining is None else _count(r.remaining), _RIGHT,
           "Sub-operations the PACS has yet to send"),
    Column("Skipped", lambda r: _count(r.skipped), _RIGHT,
           "Already in the destination folder: not fetched again"),
    Column("Speed", lambda r: fmt.rate(r.bytes_per_second) if r.elapsed > 0 and r.bytes_received else "", _RIGHT,
           "Average download speed of this transfer"),
    Column("Elapsed", lambda r: fmt.duration(r.elapsed) if r.runs else "", _RIGHT),
    Column("ETA", _running_only(lambda r: fmt.clock(r.eta)), _RIGHT, "Estimated time left"),
    Column("Folder", TransferRow.relative_folder, _LEFT, "Where the files go, below the destination folder"),
)
PROGRESS_COLUMN = next(i for i, c in enumerate(COLUMNS) if c.header == "Progress")


class TransferModel(QAbstractTableModel):
    """The transfer rows, in the order they were queued."""

    def __init__(self, parent: QObject | None = None) -> None:
        super().__init__(parent)
        self._rows: list[TransferRow] = []
        self._positions: dict[TransferId, int] = {}

    # -- changes ------------------------------------------------------------------------------------

    def add(self, rows: Sequence[TransferRow]) -> None:
        """Append rows."""
        if not rows:
            return
        first = len(self._rows)
        self.beginInsertRows(QModelIndex(), first, first + len(rows) - 1)
        for offset, row in enumerate(rows):
            self._rows.append(row)
            self._positions[row.id] = first + offset
        self.endInsertRows()

    def update(self, row: TransferRow) -> bool:
        """Replace the row with the same id; False if unknown or unchanged (then nothing repaints).

        ``dataChanged`` covers only the columns from the first to the last whose text (or progress bar)
        changed: a running transfer's 10 Hz refresh repaints its counts, not its patient, study and
        folder (a table repaint is most of the window's work per refresh). If no cell changed, the
        first column stands for the row, so that listeners still learn of it."""
        position = self._positions.get(row.id)
        if position is None:
            return False
        old = self._rows[position]
        if old == row:
            return False
        self._rows[position] = row
        changed = [i for i, column in enumerate(COLUMNS) if column.text(old) != column.text(row)]
        if old.fraction != row.fraction:
            changed.append(PROGRESS_COLUMN)
        first, last = (min(changed), max(changed)) if changed else (0, 0)
        self.dataChanged.emit(self.index(position, first), self.index(position, last))
        return True

    def remove(self, ids: Iterable[TransferId]) -> None:
        """Drop rows (finished ones the user cleared), one contiguous block at a time."""
        doomed = sorted((self._positions[i] for i in set(ids) if i in self._positions), reverse=True)
        for position in doomed:
            self.beginRemoveRows(QModelIndex(), position, position)
            del self._rows[position]
            self.endRemoveRows()
        self._positions = {row.id: position for position, row in enumerate(self._rows)}

    # -- reading ------------------------------------------------------------------------------------

    def rows(self) -> list[TransferRow]:
        """Every row, in queue order."""
        return list(self._rows)

    def row(self, transfer_id: TransferId) -> TransferRow | None:
        """The row with this id."""
        position = self._positions.get(transfer_id)
        return None if position is None else self._rows[position]

    def position(self, transfer_id: TransferId) -> int | None:
        """The row number of this id."""
        return self._positions.get(transfer_id)

    def row_at(self, index: AnyIndex) -> TransferRow | None:
        """The row behind ``index``."""
        return self._rows[index.row()] if index.isValid() and index.row() < len(self._rows) else None

    # -- QAbstractTableModel ------------------------------------------------------------------------

    def rowCount(self, parent: AnyIndex = QModelIndex()) -> int:
        """Rows under the root; a table has nothing below a row."""
        return 0 if parent.isValid() else len(self._rows)

    def columnCount(self, parent: AnyIndex = QModelIndex()) -> int:
        """The declared columns."""
        return 0 if parent.isValid() else len(COLUMNS)

    def flags(self, index: AnyIndex) -> Qt.ItemFlag:
        """Selectable, never editable."""
        if not index.isValid():
            return Qt.ItemFlag.NoItemFlags
        return Qt.ItemFlag.ItemIsEnabled | Qt.ItemFlag.ItemIsSelectable | Qt.ItemFlag.ItemNeverHasChildren

    def headerData(self, section: int, orientation: Qt.Orientation, role: int = Qt.ItemDataRole.DisplayRole) -> Any:
        """Column titles and their tooltips."""
        return header_data(COLUMNS, section, orientation, role)

    def data(self, index: AnyIndex, role: int = Qt.ItemDataRole.DisplayRole) -> Any:
        """Cell text, alignment, state colour, tooltips, the progress fraction and the row itself."""
        row = self.row_at(index)
        if row is None:
            return None
        column = COLUMNS[index.column()]
        if role == Qt.ItemDataRole.DisplayRole:
            return column.text(row)
        if role == Qt.ItemDataRole.TextAlignmentRole:
            return column.align
        if role == ROW_ROLE:
            return row
        if role == FRACTION_ROLE:
            fraction = row.fraction
            return -1.0 if fraction is None else fraction
        if role == Qt.ItemDataRole.ForegroundRole and column.header == "State":
            return _STATE_COLOURS.get(row.state)
        if role == Qt.ItemDataRole.ToolTipRole:
            return self._tooltip(row, column)
        return None

    def _tooltip(self, row: TransferRow, column: Column) -> str | None:
        if column.header == "Patient":
            return f"{row.patient}\nPatient ID: {row.patient_id}" if row.patient_id else row.patient
        if column.header == "State":
            return row.message or None
        if column.header == "C-GET status":
            return status_meaning(row.status)
        if column.header == "Folder":
            return str(row.folder or row.destination)
        if column.header == "Study":
            return f"{row.study}\n{row.scope}\nStudy Instance UID: {row.request.study_uid}\nFrom {row.node.name}"
        return None


class IssueKind(enum.Enum):
    """Failed or warning sub-operation."""

    FAILED = "Failed"
    WARNING = "Warning"


@dataclass(frozen=True)
class Issue:
    """One failed or warning instance of a transfer, its status decoded."""

    kind: IssueKind
    detail: SubOperationIssue


def issues_of(row: TransferRow) -> list[Issue]:
    """Failures first, then warnings, each in the order they happened."""
    return ([Issue(IssueKind.FAILED, f) for f in row.failures]
            + [Issue(IssueKind.WARNING, w) for w in row.warnings])


@dataclass(frozen=True)
class IssueColumn:
    """One column of the issue table."""

    header: str
    text: Callable[[Issue], str]


def status_meaning(status: StatusInfo | None) -> str | None:
    """A status in full, for tooltips: ``0xB000 (warning: sub-operations completed with ...)``."""
    if status is None:
        return None
    return f"No status: {status.text}" if status.code < 0 else str(status)


def _status_code(issue: Issue) -> str:
    return fmt.dicom_status(issue.detail.status.code)


ISSUE_COLUMNS: tuple[IssueColumn, ...] = (
    IssueColumn("Result", lambda i: i.kind.value),
    IssueColumn("Status", _status_code),
    IssueColumn("Meaning", lambda i: i.detail.status.text),
    IssueColumn("Reason", lambda i: i.detail.reason),
    IssueColumn("SOP Instance UID", lambda i: i.detail.sop_instance_uid),
)


class IssueModel(QAbstractTableModel):
    """The failed and warning instances of one transfer (the details view)."""

    def __init__(self, parent: QObject | None = None) -> None:
        super().__init__(parent)
        self._issues: list[Issue] = []

    def set_issues(self, issues: Sequence[Issue]) -> None:
        """Show these issues; appending to the same list only inserts the new rows (no flicker)."""
        issues = list(issues)
        old = self._issues
        if issues[: len(old)] == old and len(issues) >= len(old):
            if len(issues) > len(old):
                self.beginInsertRows(QModelIndex(), len(old), len(issues) - 1)
                self._issues = issues
                self.endInsertRows()
            return
        self.beginResetModel()
        self._issues = issues
        self.endResetModel()

    def issues(self) -> list[Issue]:
        """What the table shows."""
        return list(self._issues)

    def rowCount(self, parent: AnyIndex = QModelIndex()) -> int:
        """Issues under the root."""
        return 0 if parent.isValid() else len(self._issues)

    def columnCount(self, parent: AnyIndex = QModelIndex()) -> int:
        """The declared columns."""
        return 0 if parent.isValid() else len(ISSUE_COLUMNS)

    def flags(self, index: AnyIndex) -> Qt.ItemFlag:
        """Selectable (to copy a UID), never editable."""
        if not index.isValid():
            return Qt.ItemFlag.NoItemFlags
        return Qt.ItemFlag.ItemIsEnabled | Qt.ItemFlag.ItemIsSelectable | Qt.ItemFlag.ItemNeverHasChildren

    def headerData(self, section: int, orientation: Qt.Orientation, role: int = Qt.ItemDataRole.DisplayRole) -> Any:
        """Column titles."""
        if orientation == Qt.Orientation.Horizontal and role == Qt.ItemDataRole.DisplayRole \
                and 0 <= section < len(ISSUE_COLUMNS):
            return ISSUE_COLUMNS[section].header
        return None

    def data(self, index: AnyIndex, role: int = Qt.ItemDataRole.DisplayRole) -> Any:
        """Cell text, the red/amber result, the full reason as a tooltip."""
        if not index.isValid() or index.row() >= len(self._issues):
            return None
        issue = self._issues[index.row()]
        column = ISSUE_COLUMNS[index.column()]
        if role == Qt.ItemDataRole.DisplayRole:
            return column.text(issue)
        if role == ROW_ROLE:
            return issue
        if role == Qt.ItemDataRole.ForegroundRole and column.header == "Result":
            return QColor("#b3261e") if issue.kind is IssueKind.FAILED else QColor("#8a5a00")
        if role == Qt.ItemDataRole.ToolTipRole:
            return f"{issue.detail.status}\n{issue.detail.reason}"
        return None
