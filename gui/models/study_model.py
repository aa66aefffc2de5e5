"""Query results as a tree: studies, each expanding into its series (fetched lazily on expand).

The model adapts frozen ``StudyRow``/``SeriesRow`` dataclasses from core; it never talks DICOM. Columns
are declared once in ``COLUMNS`` (header, study value, series value, alignment, sort key). The source
model only appends and resets, so a row's position is stable and indexes carry no pointers:
``internalId`` is 0 for a study and ``study position + 1`` for its series. Sorting and filtering are the
proxy's job (``StudyProxyModel``).

Each result set has a ``generation``; rows or series for another generation are dropped.
"""

from __future__ import annotations

import enum
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from PySide6.QtCore import (
    QAbstractItemModel,
    QModelIndex,
    QObject,
    QPersistentModelIndex,
    QSortFilterProxyModel,
    Qt,
    Signal,
)
from PySide6.QtWidgets import QApplication, QStyle

from pacspull.core.query import SeriesRow, StudyRow
from pacspull.gui import formatting as fmt
from pacspull.gui.models.columns import header_data

ROW_ROLE = Qt.ItemDataRole.UserRole + 1  # the StudyRow or SeriesRow behind an index
SORT_ROLE = Qt.ItemDataRole.UserRole + 2  # a key of one type per column, so sorting never mixes types
UID_ROLE = Qt.ItemDataRole.UserRole + 3  # the study or series instance UID

_LEFT = Qt.AlignmentFlag.AlignLeft | Qt.AlignmentFlag.AlignVCenter
_RIGHT = Qt.AlignmentFlag.AlignRight | Qt.AlignmentFlag.AlignVCenter
_STUDY = 0  # internalId of a study index

AnyIndex = QModelIndex | QPersistentModelIndex


def _text_key(value: str | None) -> str:
    return (value or "").casefold()


def _int_key(value: int | None) -> int:
    return -1 if value is None else value


@dataclass(frozen=True)
class Column:
    """One column: what a study and a series show in it, how it aligns and sorts."""

    header: str
    study: Callable[[StudyRow], str]
    series: Callable[[SeriesRow], str]
    study_key: Callable[[StudyRow], Any]
    series_key: Callable[[SeriesRow], Any]
    align: Qt.AlignmentFlag = _LEFT
    tooltip: str = ""


def _blank(_row: object) -> str:
    return ""


def _series_label(row: SeriesRow) -> str:
    return f"Series {row.number}" if row.number is not None else "Series"


COLUMNS: tuple[Column, ...] = (
    Column("Patient name", lambda s: fmt.person_name(s.patient_name), _series_label,
           lambda s: _text_key(fmt.person_name(s.patient_name)), lambda r: _int_key(r.number),
           tooltip="Patient name; a series row shows the series number"),
    Column("Patient ID", lambda s: s.patient_id or "", _blank,
           lambda s: _text_key(s.patient_id), lambda r: _int_key(r.number)),
    Column("Birth date", lambda s: fmt.date(s.birth_date), _blank,
           lambda s: s.birth_date or "", lambda r: _int_key(r.number)),
    Column("Study date", lambda s: fmt.date_time(s.study_date, s.study_time), lambda r: fmt.date(r.series_date),
           lambda s: f"{s.study_date or ''}{s.study_time or ''}", lambda r: r.series_date or ""),
    Column("Modality", lambda s: ", ".join(s.modalities or ()), lambda r: r.modality or "",
           lambda s: ", ".join(s.modalities or ()), lambda r: r.modality or ""),
    Column("Description", lambda s: s.description or "", lambda r: r.description or "",
           lambda s: _text_key(s.description), lambda r: _text_key(r.description)),
    Column("Accession", lambda s: s.accession or "", _blank,
           lambda s: _text_key(s.accession), lambda r: _int_key(r.number)),
    Column("Series", lambda s: fmt.count(s.series_count), _blank,
           lambda s: _int_key(s.series_count), lambda r: _int_key(r.number), _RIGHT),
    Column("Images", lambda s: fmt.count(s.instance_count), lambda r: fmt.count(r.instance_count),
           lambda s: _int_key(s.instance_count), lambda r: _int_key(r.instance_count), _RIGHT,
           tooltip="Number of instances (images, reports, documents)"),
)


class SeriesState(enum.Enum):
    """Where a study's series list stands."""

    NOT_LOADED = "not loaded"
    LOADING = "loading"
    LOADED = "loaded"
    FAILED = "failed"


class _Study:
    """A study row plus its lazily fetched series (model-internal, GUI thread only)."""

    __slots__ = ("row", "series", "state", "error")

    def __init__(self, row: StudyRow) -> None:
        self.row = row
        self.series: list[SeriesRow] = []
        self.state = SeriesState.NOT_LOADED
        self.error = ""


class StudyModel(QAbstractItemModel):
    """Studies (top level) ▸ series (children). ``seriesRequested`` asks the owner to fetch a study's series."""

    seriesRequested = Signal(str)  # study instance UID

    def __init__(self, parent: QObject | None = None) -> None:
        super().__init__(parent)
        self._studies: list[_Study] = []
        self._by_uid: dict[str, int] = {}
        self.generation = 0

    # -- changes (GUI thread) -----------------------------------------------------------------------

    def reset(self, generation: int) -> None:
        """Forget every row; from now on only rows of ``generation`` are accepted."""
        self.beginResetModel()
        self._studies.clear()
        self._by_uid.clear()
        self.generation = generation
        self.endResetModel()

    def add_studies(self, generation: int, rows: Sequence[StudyRow]) -> bool:
        """Append a batch of studies; False (and nothing changes) if ``generation`` is stale."""
        if generation != self.generation or not rows:
            return False
        first = len(self._studies)
        self.beginInsertRows(QModelIndex(), first, first + len(rows) - 1)
        for offset, row in enumerate(rows):
            self._studies.append(_Study(row))
            if row.study_uid:
                self._by_uid.setdefault(row.study_uid, first + offset)
        self.endInsertRows()
        return True

    def set_series(self, generation: int, study_uid: str, rows: Sequence[SeriesRow]) -> bool:
        """Give a study its series (sorted by number); False if stale or the study is unknown."""
        position = self._position(generation, study_uid)
        if position is None:
            return False
        study = self._studies[position]
        parent = self.index(position, 0)
        if study.series:  # already there (a second fetch raced the first): keep what is shown
            return False
        ordered = sorted(rows, key=lambda r: (_int_key(r.number), r.series_uid or ""))
        if ordered:
            self.beginInsertRows(parent, 0, len(ordered) - 1)
            study.series = ordered
            study.state = SeriesState.LOADED
            self.endInsertRows()
        else:
            study.state = SeriesState.LOADED
        self._study_changed(position)
        return True

    def set_series_failed(self, generation: int, study_uid: str, message: str) -> bool:
        """Mark a study's series fetch as failed (expanding again retries); False if stale."""
        position = self._position(generation, study_uid)
        if position is None:
            return False
        study = self._studies[position]
        study.state, study.error = SeriesState.FAILED, message
        self._study_changed(position)
        return True

    def _position(self, generation: int, study_uid: str) -> int | None:
        if generation != self.generation:
            return None
        return self._by_uid.get(study_uid)

    def _study_changed(self, position: int) -> None:
        self.dataChanged.emit(self.index(position, 0), self.index(position, len(COLUMNS) - 1))

    # -- reading ------------------------------------------------------------------------------------

    def study_count(self) -> int:
        """How many studies the model holds."""
        return len(self._studies)

    def studies(self) -> list[StudyRow]:
        """Every study row, in arrival order."""
        return [s.row for s in self._studies]

    def series_state(self, study_uid: str) -> SeriesState | None:
        """Where the series of a study stand (None for an unknown study)."""
        position = self._by_uid.get(study_uid)
        return None if position is None else self._studies[position].state

    def row_at(self, index: AnyIndex) -> StudyRow | SeriesRow | None:
        """The dataclass behind ``index`` (None for an invalid index)."""
        if not index.isValid():
            return None
        study = self._studies[self._study_position(index)]
        return study.row if index.internalId() == _STUDY else study.series[index.row()]

    def _study_position(self, index: AnyIndex) -> int:
        return index.row() if index.internalId() == _STUDY else index.internalId() - 1

    # -- QAbstractItemModel -------------------------------------------------------------------------

    def index(self, row: int, column: int, parent: AnyIndex = QModelIndex()) -> QModelIndex:
        """Study indexes have internalId 0; series indexes carry their study's position + 1."""
        if not self.hasIndex(row, column, parent):
            return QModelIndex()
        if not parent.isValid():
            return self.createIndex(row, column, _STUDY)
        return self.createIndex(row, column, parent.row() + 1)

    def parent(self, child: AnyIndex | None = None) -> Any:  # type: ignore[override]
        """The study of a series index; the root for a study. Without argument: QObject.parent()."""
        if child is None:
            return QObject.parent(self)
        if not child.isValid() or child.internalId() == _STUDY:
            return QModelIndex()
        return self.createIndex(child.internalId() - 1, 0, _STUDY)

    def rowCount(self, parent: AnyIndex = QModelIndex()) -> int:
        """Studies under the root; fetched series under a study's first column; nothing under a series."""
        if not parent.isValid():
            return len(self._studies)
        if parent.internalId() == _STUDY and parent.column() == 0:
            return len(self._studies[parent.row()].series)
        return 0

    def columnCount(self, parent: AnyIndex = QModelIndex()) -> int:
        """Every row has the same columns."""
        return len(COLUMNS)

    def hasChildren(self, parent: AnyIndex = QModelIndex()) -> bool:
        """A study shows an expander until its series are known to be none."""
        if not parent.isValid():
            return bool(self._studies)
        if parent.internalId() != _STUDY or parent.column() != 0:
            return False
        study = self._studies[parent.row()]
        if study.state is SeriesState.LOADED:
            return bool(study.series)
        return study.row.series_count != 0

    def canFetchMore(self, parent: AnyIndex) -> bool:
        """True for a study whose series were not fetched yet (or whose fetch failed)."""
        if not parent.isValid() or parent.internalId() != _STUDY or parent.column() != 0:
            return False
        study = self._studies[parent.row()]
        return study.state in (SeriesState.NOT_LOADED, SeriesState.FAILED) and study.row.series_count != 0

    def fetchMore(self, parent: AnyIndex) -> None:
        """Ask the owner for the study's series (``seriesRequested``); they arrive via ``set_series``."""
        if not self.canFetchMore(parent):
            return
        study = self._studies[parent.row()]
        study.state, study.error = SeriesState.LOADING, ""
        self._study_changed(parent.row())
        if study.row.study_uid:
            self.seriesRequested.emit(study.row.study_uid)

    def flags(self, index: AnyIndex) -> Qt.ItemFlag:
        """Rows are selectable, never editable."""
        if not index.isValid():
            return Qt.ItemFlag.NoItemFlags
        flags = Qt.ItemFlag.ItemIsEnabled | Qt.ItemFlag.ItemIsSelectable
        if index.internalId() != _STUDY:
            flags |= Qt.ItemFlag.ItemNeverHasChildren
        return flags

    def headerData(self, section: int, orientation: Qt.Orientation, role: int = Qt.ItemDataRole.DisplayRole) -> Any:
        """Column titles (and their tooltips)."""
        return header_data(COLUMNS, section, orientation, role)

    def data(self, index: AnyIndex, role: int = Qt.ItemDataRole.DisplayRole) -> Any:
        """Display text, alignment, sort key, tooltip and state icon of one cell."""
        if not index.isValid():
            return None
        column = COLUMNS[index.column()]
        study = self._studies[self._study_position(index)]
        is_study = index.internalId() == _STUDY
        row: StudyRow | SeriesRow = study.row if is_study else study.series[index.row()]
        if role == Qt.ItemDataRole.DisplayRole:
            return column.study(study.row) if is_study else column.series(row)  # type: ignore[arg-type]
        if role == SORT_ROLE:
            return column.study_key(study.row) if is_study else column.series_key(row)  # type: ignore[arg-type]
        if role == Qt.ItemDataRole.TextAlignmentRole:
            return column.align
        if role == ROW_ROLE:
            return row
        if role == UID_ROLE:
            return study.row.study_uid if is_study else row.series_uid  # type: ignore[union-attr]
        if is_study and index.column() == 0:
            return self._study_status(study, role)
        return None

    def _study_status(self, study: _Study, role: int) -> Any:
        """The first cell of a study tells whether its series are loading or failed to load."""
        if role == Qt.ItemDataRole.DecorationRole:
            icon = {SeriesState.LOADING: QStyle.StandardPixmap.SP_BrowserReload,
                    SeriesState.FAILED: QStyle.StandardPixmap.SP_MessageBoxWarning}.get(study.state)
            return QApplication.style().standardIcon(icon) if icon is not None else None
        if role == Qt.ItemDataRole.ToolTipRole:
            raw = study.row.patient_name or ""
            if study.state is SeriesState.LOADING:
                return f"{raw}\nFetching the series…"
            if study.state is SeriesState.FAILED:
                return f"{raw}\nCould not fetch the series: {study.error}\nCollapse and expand to retry."
            return raw
        return None


class StudyProxyModel(QSortFilterProxyModel):
    """Sorting by each column's key and a quick text filter that keeps a study when it or a series matches."""

    def __init__(self, parent: QObject | None = None) -> None:
        super().__init__(parent)
        self.setSortRole(SORT_ROLE)
        self.setFilterKeyColumn(-1)
        self.setFilterCaseSensitivity(Qt.CaseSensitivity.CaseInsensitive)
        self.setRecursiveFilteringEnabled(True)
        # A matching study keeps all its series visible, so a retrieve can still pick any of them.
        self.setAutoAcceptChildRows(True)
