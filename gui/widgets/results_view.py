"""The results: a sortable, filterable tree of studies ▸ series with multi-select and a context menu.

``retrieveRequested`` carries the selected ``StudyRow``/``SeriesRow`` objects (Retrieve button, Enter in
the tree, Ctrl+R, context menu); the window queues them. A series whose study is also selected is left
out (the study covers it).
"""

from __future__ import annotations

from PySide6.QtCore import QEvent, QModelIndex, QObject, QPoint, Qt, Signal
from PySide6.QtGui import QAction, QGuiApplication, QKeyEvent, QKeySequence
from PySide6.QtWidgets import (
    QAbstractItemView,
    QHBoxLayout,
    QHeaderView,
    QLabel,
    QLineEdit,
    QMenu,
    QPushButton,
    QStackedWidget,
    QTreeView,
    QVBoxLayout,
    QWidget,
)

from pacspull.core.query import QueryRequest, SeriesRow, StudyRow
from pacspull.gui.models.study_model import COLUMNS, ROW_ROLE, UID_ROLE, StudyModel, StudyProxyModel
from pacspull.gui.workers import FindDone

# Initial widths, as the text a typical cell holds; Description takes the space left over.
_WIDTH_SAMPLES = {"Patient name": "Yamada, Tarou (山田 太郎) xx", "Patient ID": "PP-0001-XXX", "Birth date": "0000-00-00",
                  "Study date": "0000-00-00 00:00", "Modality": "CT, MR, SR", "Description": "CT Thorax Übersicht",
                  "Accession": "ACC-24-00000", "Series": "Series", "Images": "Images"}

EMPTY_TEXT = ("No results yet.\n\nFill in what you know (or nothing, to list everything) and press Enter.\n"
              "Double-click or press → on a study to see its series.")


def no_match_text(request: QueryRequest | None) -> str:
    """What the empty results say after a search that found nothing: that it ran, and what to loosen."""
    if request is None:
        return "No studies match this search."
    tips = []
    for label, value in (("name", request.patient_name), ("patient ID", request.patient_id)):
        if value and "*" not in value and "?" not in value:
            tips.append(f"The PACS matches the {label} exactly: {value}* finds everything that begins with it.")
    if request.date is not None:
        tips.append("Widen the date range, or clear a field, then search again.")
    elif any((request.patient_name, request.patient_id, request.accession, request.modalities,
              request.study_description)):
        tips.append("Clear a field, then search again.")
    else:
        tips.append("The PACS lists no study at all for this calling AE.")
    return "No studies match this search.\n\n" + "\n".join(tips)


class ResultsView(QWidget):
    """Filter box, counts, capped-results note, and the tree itself."""

    retrieveRequested = Signal(list)  # StudyRow / SeriesRow objects

    def __init__(self, model: StudyModel, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.model = model
        self.proxy = StudyProxyModel(self)
        self.proxy.setSourceModel(model)
        self.filter = QLineEdit(self)
        self.filter.setPlaceholderText("Filter these results (Ctrl+F): name, ID, description…")
        self.filter.setClearButtonEnabled(True)
        self.filter.textChanged.connect(self._filter_changed)
        self.count = QLabel(self)
        self.count.setObjectName("resultCount")
        self.note = QLabel(self)
        self.note.setObjectName("cappedNote")
        self.note.setWordWrap(True)
        self.note.hide()
        self.tree = self._make_tree()
        self.tree.installEventFilter(self)
        self.retrieve_button = QPushButton("Retrieve", self)
        self.retrieve_button.setObjectName("retrieveButton")
        self.retrieve_button.setToolTip("Download the selected studies or series (Enter in the list, Ctrl+R)")
        self.retrieve_button.clicked.connect(self.request_retrieve)
        self.empty = QLabel(EMPTY_TEXT, self)
        self.empty.setObjectName("emptyState")
        self.empty.setAlignment(Qt.AlignmentFlag.AlignCenter)
        self.stack = QStackedWidget(self)
        self.stack.addWidget(self.empty)
        self.stack.addWidget(self.tree)
        self._make_actions()
        self._lay_out()
        model.modelReset.connect(self._update_count)
        model.rowsInserted.connect(self._update_count)
        self.proxy.rowsInserted.connect(self._update_count)
        self.proxy.rowsRemoved.connect(self._update_count)
        self.proxy.modelReset.connect(self._update_count)
        self.tree.selectionModel().selectionChanged.connect(self._selection_changed)
        self._update_count()
        self._selection_changed()

    def _make_tree(self) -> QTreeView:
        tree = QTreeView(self)
        tree.setModel(self.proxy)
        tree.setSortingEnabled(True)
        tree.sortByColumn(3, Qt.SortOrder.DescendingOrder)  # newest study first
        tree.setSelectionMode(QAbstractItemView.SelectionMode.ExtendedSelection)
        tree.setSelectionBehavior(QAbstractItemView.SelectionBehavior.SelectRows)
        tree.setAlternatingRowColors(True)
        tree.setUniformRowHeights(True)
        tree.setAllColumnsShowFocus(True)
        tree.setExpandsOnDoubleClick(True)
        tree.setContextMenuPolicy(Qt.ContextMenuPolicy.CustomContextMenu)
        tree.customContextMenuRequested.connect(self._context_menu)
        header = tree.header()
        header.setStretchLastSection(False)
        header.setSectionsMovable(True)
        metrics = tree.fontMetrics()
        for i, column in enumerate(COLUMNS):
            sample = _WIDTH_SAMPLES.get(column.header, column.header)
            header.resizeSection(i, max(metrics.horizontalAdvance(sample), metrics.horizontalAdvance(column.header))
                                 + 28)  # cell padding, sort arrow, expander indent
        header.setSectionResizeMode(COLUMNS.index(next(c for c in COLUMNS if c.header == "Description")),
                                    QHeaderView.ResizeMode.Stretch)
        return tree

    def _make_actions(self) -> None:
        self.retrieve_action = QAction("&Retrieve selected", self)
        self.retrieve_action.setShortcut(QKeySequence("Ctrl+R"))
        self.retrieve_action.setToolTip("Download the selected studies or series")
        self.retrieve_action.triggered.connect(self.request_retrieve)
        self.copy_uid_action = QAction("Copy &UID", self)
        self.copy_uid_action.setShortcut(QKeySequence("Ctrl+Shift+C"))
        self.copy_uid_action.triggered.connect(self.copy_uids)
        self.copy_row_action = QAction("&Copy row", self)
        self.copy_row_action.setShortcut(QKeySequence.StandardKey.Copy)
        self.copy_row_action.triggered.connect(self.copy_rows)
        self.filter_action = QAction("&Filter results", self)
        self.filter_action.setShortcut(QKeySequence.StandardKey.Find)
        self.filter_action.triggered.connect(self._focus_filter)
        for action in (self.retrieve_action, self.copy_uid_action, self.copy_row_action, self.filter_action):
            action.setShortcutContext(Qt.ShortcutContext.WindowShortcut)
            self.addAction(action)

    def _lay_out(self) -> None:
        bar = QHBoxLayout()
        bar.addWidget(self.filter, 1)
        bar.addWidget(self.count)
        bar.addWidget(self.retrieve_button)
        layout = QVBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.addLayout(bar)
        layout.addWidget(self.note)
        layout.addWidget(self.stack, 1)

    # -- state shown ------------------------------------------------------------------------------

    def show_summary(self, summary: FindDone, request: QueryRequest | None = None) -> None:
        """After a query: the note about incomplete results (capped, cancelled, PACS warnings); for a query
        that found nothing, the empty state says so."""
        self.empty.setText(no_match_text(request) if not summary.count and not summary.cancelled else EMPTY_TEXT)
        lines = []
        if summary.capped:
            lines.append(f"Showing the first {summary.count:,} studies: the PACS has more. "
                         "Narrow the search (date, modality, name) to see the rest.")
        if summary.cancelled:
            lines.append(f"Search cancelled: showing the {summary.count:,} studies received before that.")
        lines.extend(f"The PACS said: {w}" for w in summary.warnings)
        self._show_note("\n".join(lines), "warning")

    def show_error(self, message: str, hint: str) -> None:
        """A failed search: what happened and what to try, where the results would be."""
        self._show_note(f"Search failed: {message}" + (f"\n{hint[:1].upper()}{hint[1:]}." if hint else ""), "error")

    def _show_note(self, text: str, state: str) -> None:
        self.note.setText(text)
        self.note.setProperty("state", state)
        self.note.style().polish(self.note)
        self.note.setVisible(bool(text))

    def clear_summary(self) -> None:
        """Hide the note (a new search started)."""
        self.note.hide()
        self.empty.setText(EMPTY_TEXT)

    def _update_count(self) -> None:
        total = self.model.study_count()
        shown = self.proxy.rowCount()
        self.stack.setCurrentWidget(self.tree if total else self.empty)
        if not total:
            self.count.setText("")
        elif shown == total:
            self.count.setText(f"{total:,} {'study' if total == 1 else 'studies'}")
        else:
            self.count.setText(f"{shown:,} of {total:,} studies match the filter")

    def _filter_changed(self, text: str) -> None:
        self.proxy.setFilterFixedString(text)
        self._update_count()

    def _focus_filter(self) -> None:
        self.filter.setFocus()
        self.filter.selectAll()

    # -- selection --------------------------------------------------------------------------------

    def selected_rows(self) -> list[StudyRow | SeriesRow]:
        """Selected studies and series, in view order; a series under a selected study is left out."""
        indexes = sorted(self.tree.selectionModel().selectedRows(0), key=self._view_order)
        rows = [index.data(ROW_ROLE) for index in indexes]
        studies = {r.study_uid for r in rows if isinstance(r, StudyRow)}
        return [r for r in rows if isinstance(r, StudyRow) or r.study_uid not in studies]

    def _view_order(self, index: QModelIndex) -> tuple[int, int]:
        parent = index.parent()
        return (parent.row(), index.row()) if parent.isValid() else (index.row(), -1)

    def _selection_changed(self) -> None:
        has = self.tree.selectionModel().hasSelection()
        for action in (self.retrieve_action, self.copy_uid_action, self.copy_row_action):
            action.setEnabled(has)
        self.retrieve_button.setEnabled(has)

    def eventFilter(self, watched: QObject, event: QEvent) -> bool:
        """Enter in the tree retrieves the selection (double-click still expands a study)."""
        if watched is self.tree and event.type() == QEvent.Type.KeyPress and isinstance(event, QKeyEvent) \
                and event.key() in (Qt.Key.Key_Return, Qt.Key.Key_Enter) \
                and event.modifiers() in (Qt.KeyboardModifier.NoModifier, Qt.KeyboardModifier.KeypadModifier):
            self.request_retrieve()
            return True
        return super().eventFilter(watched, event)

    def request_retrieve(self) -> None:
        """Emit ``retrieveRequested`` with the selection (nothing when nothing is selected)."""
        rows = self.selected_rows()
        if rows:
            self.retrieveRequested.emit(rows)

    def copy_uids(self) -> None:
        """Copy the selected rows' study or series instance UIDs, one per line."""
        indexes = sorted(self.tree.selectionModel().selectedRows(0), key=self._view_order)
        uids = [index.data(UID_ROLE) or "" for index in indexes]
        QGuiApplication.clipboard().setText("\n".join(uids))

    def copy_rows(self) -> None:
        """Copy the selected rows as tab-separated text (with a header line), ready for a spreadsheet."""
        indexes = sorted(self.tree.selectionModel().selectedRows(0), key=self._view_order)
        header = self.tree.header()
        order = [header.logicalIndex(v) for v in range(header.count()) if not header.isSectionHidden(header.logicalIndex(v))]
        lines = ["\t".join(COLUMNS[c].header for c in order)]
        for index in indexes:
            lines.append("\t".join(str(index.siblingAtColumn(c).data() or "") for c in order))
        QGuiApplication.clipboard().setText("\n".join(lines))

    def _context_menu(self, pos: QPoint) -> None:
        if not self.tree.indexAt(pos).isValid():
            return
        menu = QMenu(self)
        menu.addAction(self.retrieve_action)
        menu.addSeparator()
        menu.addAction(self.copy_uid_action)
        menu.addAction(self.copy_row_action)
        menu.exec(self.tree.viewport().mapToGlobal(pos))
