"""The progress panel: the transfer queue with a bar per row, a headline, and the selected transfer's details.

The headline answers what a radiologist asks first (how far, how fast, how long) and the line under it
where the files go; the table has one row per retrieve; the details under it show the selected
transfer's folder, its buttons (Cancel, Retry failed, Open folder) and every failed or warning instance
with its status decoded. Everything here reads the ``TransferModel``; the ``RetrieveQueue`` does the work.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path

from PySide6.QtCore import QItemSelectionModel, QModelIndex, QPersistentModelIndex, QPoint, Qt, QUrl, Signal
from PySide6.QtGui import QAction, QColor, QDesktopServices, QGuiApplication, QKeySequence, QPainter, QPalette
from PySide6.QtWidgets import (
    QAbstractItemView,
    QApplication,
    QHBoxLayout,
    QHeaderView,
    QLabel,
    QMenu,
    QPushButton,
    QSplitter,
    QStackedWidget,
    QStyle,
    QStyledItemDelegate,
    QStyleOptionProgressBar,
    QStyleOptionViewItem,
    QTableView,
    QVBoxLayout,
    QWidget,
)

from pacspull.core.status import Category
from pacspull.gui import formatting as fmt
from pacspull.gui.models.transfer_model import (
    COLUMNS,
    FRACTION_ROLE,
    PROGRESS_COLUMN,
    ROW_ROLE,
    IssueModel,
    TransferId,
    TransferModel,
    TransferRow,
    TransferState,
    issues_of,
)
from pacspull.gui.retrieve import RetrieveQueue

EMPTY_TEXT = ("Retrievals will appear here.\nSelect studies or series above and press Enter, "
              "click Retrieve, or choose Retrieve selected (Ctrl+R).")

# Bar colours by state; running rows use the palette's highlight.
_BAR_COLOURS = {
    TransferState.DONE: QColor("#2e7d32"),
    TransferState.INCOMPLETE: QColor("#c62828"),
    TransferState.FAILED: QColor("#c62828"),
    TransferState.CANCELLED: QColor("#9aa0a6"),
    TransferState.CANCELLING: QColor("#9aa0a6"),
}
# Initial column widths as sample text; Folder takes what is left.
_WIDTH_SAMPLES = {"Patient": "Yamada, Tarou (山田 太郎)", "Study": "CT Thorax Übersicht · 2024-01-15",
                  "State": "Cancelled, 1,234 kept", "C-GET status": "0x0000 success",
                  "Progress": "1,234 / 1,234 xx", "Speed": "12.3 MB/s", "Elapsed": "1:23:45", "ETA": "1:23:45"}


def retry_label(row: TransferRow | None) -> str:
    """The retry button's words for ``row``: a cancelled transfer is resumed, a failed one retried."""
    if row is not None and row.state is TransferState.CANCELLED:
        return "Resume"
    return "Retry failed" if row is None or row.failed else "Retry"


class ProgressDelegate(QStyledItemDelegate):
    """Paints the Progress cell as a progress bar carrying its ``45 / 61`` text."""

    def paint(self, painter: QPainter, option: QStyleOptionViewItem, index: QModelIndex | QPersistentModelIndex) -> None:
        """The selection background, then a bar (coloured by state) with the text on it."""
        text = index.data(Qt.ItemDataRole.DisplayRole)
        row = index.data(ROW_ROLE)
        if not text or not isinstance(row, TransferRow):
            super().paint(painter, option, index)
            return
        widget = option.widget  # type: ignore[attr-defined]
        style = widget.style() if widget is not None else QApplication.style()
        style.drawPrimitive(QStyle.PrimitiveElement.PE_PanelItemViewItem, option, painter, widget)
        fraction = float(index.data(FRACTION_ROLE))
        bar = QStyleOptionProgressBar()
        bar.rect = option.rect.adjusted(4, 3, -4, -3)  # type: ignore[attr-defined]
        bar.state = QStyle.StateFlag.State_Enabled | QStyle.StateFlag.State_Horizontal
        bar.direction = option.direction  # type: ignore[attr-defined]
        bar.fontMetrics = option.fontMetrics  # type: ignore[attr-defined]
        bar.palette = QPalette(option.palette)  # type: ignore[attr-defined]
        colour = _BAR_COLOURS.get(row.state)
        if colour is not None:
            bar.palette.setColor(QPalette.ColorRole.Highlight, colour)
        bar.minimum, bar.maximum = 0, 1000
        bar.progress = int(max(0.0, fraction) * 1000)
        bar.text = text
        bar.textVisible = True
        bar.textAlignment = Qt.AlignmentFlag.AlignCenter
        style.drawControl(QStyle.ControlElement.CE_ProgressBar, bar, painter, widget)


class TransferDetails(QWidget):
    """The selected transfer: what, where it stands, its folder, its buttons and its problem instances."""

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.row: TransferRow | None = None
        self.title = QLabel(self)
        self.title.setObjectName("transferTitle")
        self.title.setWordWrap(True)
        self.status = QLabel(self)
        self.status.setObjectName("transferStatus")
        self.status.setWordWrap(True)
        self.pacs = QLabel(self)  # the PACS's final C-GET status and counts, for whoever diagnoses it
        self.pacs.setObjectName("transferPacsStatus")
        self.pacs.setWordWrap(True)
        self.pacs.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse
                                          | Qt.TextInteractionFlag.TextSelectableByKeyboard)
        self.folder = QLabel(self)
        self.folder.setObjectName("transferFolder")
        self.folder.setWordWrap(True)
        self.folder.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        self.cancel_button = QPushButton("Cancel", self)
        self.cancel_button.setToolTip("Stop this transfer (C-CANCEL); what has arrived is kept")
        self.retry_button = QPushButton("Retry failed", self)
        self.retry_button.setToolTip("Fetch what is missing (failed, cancelled or never sent); "
                                     "what is already on disk is skipped")
        self.open_button = QPushButton("Open folder", self)
        self.open_button.setToolTip("Show the files in the file manager")
        self.issues_caption = QLabel(self)
        self.issues_caption.setObjectName("hint")
        self.issues = IssueModel(self)
        self.issue_table = QTableView(self)
        self.issue_table.setObjectName("issueTable")
        self.issue_table.setModel(self.issues)
        self.issue_table.setSelectionBehavior(QAbstractItemView.SelectionBehavior.SelectRows)
        self.issue_table.verticalHeader().hide()
        self.issue_table.horizontalHeader().setStretchLastSection(True)
        self.issue_table.setWordWrap(False)
        self.issue_table.setAlternatingRowColors(True)
        self.issue_table.verticalHeader().setDefaultSectionSize(self.fontMetrics().height() + 6)
        self.issue_table.horizontalHeader().setResizeContentsPrecision(100)  # fitting columns reads 100 rows at most
        text = QVBoxLayout()
        text.setSpacing(2)
        for label in (self.title, self.status, self.pacs, self.folder):
            text.addWidget(label)
        buttons = QVBoxLayout()
        buttons.setSpacing(4)
        row = QHBoxLayout()
        for button in (self.cancel_button, self.retry_button, self.open_button):
            row.addWidget(button)
        buttons.addLayout(row)
        buttons.addStretch(1)
        top = QHBoxLayout()
        top.addLayout(text, 1)
        top.addLayout(buttons)
        layout = QVBoxLayout(self)
        layout.setContentsMargins(2, 6, 2, 0)
        layout.setSpacing(4)
        layout.addLayout(top)
        layout.addWidget(self.issues_caption)
        layout.addWidget(self.issue_table, 100)
        layout.addStretch(1)  # without failed instances the text lines stay together at the top
        self.show_row(None)

    def show_row(self, row: TransferRow | None) -> None:
        """Show ``row`` (None: nothing selected)."""
        shown_before = self.row.id if self.row is not None else None
        self.row = row
        # Each button is set once per call: a button switched off and on again at every 10 Hz refresh
        # restyles and repaints for nothing.
        self.cancel_button.setEnabled(row is not None and row.can_cancel)
        self.retry_button.setEnabled(row is not None and row.can_retry)
        retry_text = retry_label(row)
        if self.retry_button.text() != retry_text:
            self.retry_button.setText(retry_text)
        self.open_button.setEnabled(row is not None)
        if row is None:
            self.title.setText("Select a transfer to see its details")
            self.status.setText("")
            self.pacs.setText("")
            self.pacs.hide()
            self.folder.setText("")
            self.issues_caption.setText("")
            self.issues.set_issues([])
            self.issue_table.hide()
            return
        # Which PACS, and as which calling AE: what an administrator asks first when a PACS refuses.
        source = f"from {row.node.name} ({row.node.address}, as {row.node.calling_ae})"
        self.title.setText(f"<b>{_html(row.patient)}</b> — {_html(row.study)} ({_html(row.scope)}) {_html(source)}")
        self.status.setText(_html(status_line(row)))
        _set_state(self.status, _status_state(row))
        pacs = pacs_line(row)
        self.pacs.setText(_html(pacs))
        self.pacs.setToolTip(pacs)
        _set_state(self.pacs, _pacs_state(row))
        self.pacs.setVisible(bool(pacs))
        where = row.folder or row.destination
        label = "Files in" if row.folder else ("Files will go to" if row.state.active else "Destination")
        self.folder.setText(f"{label}: {_html(str(where))}")
        self.folder.setToolTip(str(where))
        issues = issues_of(row)
        had_issues = self.issues.rowCount() > 0
        self.issues.set_issues(issues)
        self.issue_table.setVisible(bool(issues))
        if issues and (not had_issues or row.id != shown_before):
            # Fit status, meaning and reason to what this transfer's first rows say (once, not per refresh);
            # the UID takes the rest.
            for column in range(self.issues.columnCount() - 1):
                self.issue_table.resizeColumnToContents(column)
        if issues:
            failed, warned = len(row.failures), len(row.warnings)
            parts = ([fmt.plural(failed, "failed instance")] if failed else []) \
                + ([fmt.plural(warned, "warning")] if warned else [])
            self.issues_caption.setText(" and ".join(parts) + ":")
        elif row.state.active:
            self.issues_caption.setText("")
        else:
            self.issues_caption.setText("No failed or warning instances.")


def status_line(row: TransferRow) -> str:
    """The details' status sentence: counts, speed and time, then the message if any."""
    state = row.state
    total = row.total
    reached = row.done + row.skipped
    of = f"{reached:,} of {fmt.plural(total, 'image')}" if total is not None else fmt.plural(reached, "image")
    if state is TransferState.QUEUED:
        text = "Queued: starts when the transfer before it ends."
    elif state in (TransferState.RUNNING, TransferState.CANCELLING):
        verb = "Cancelling" if state is TransferState.CANCELLING else "Retrieving"
        parts = [f"{verb}: {of}"]
        if row.elapsed > 0:
            parts.append(f"{row.done / row.elapsed:.0f} images/s, {fmt.rate(row.bytes_per_second)}")
        if row.eta is not None and state is TransferState.RUNNING:
            parts.append(f"about {fmt.clock(row.eta)} left for this one")
        text = " · ".join(parts)
    elif state is TransferState.DONE:
        text = f"Done: {fmt.plural(row.kept, 'image')} on disk ({row.completed:,} retrieved, " \
               f"{row.skipped:,} already there) in {fmt.duration(row.elapsed)}."
    elif state is TransferState.INCOMPLETE:
        on_disk = f"{row.kept:,} of {fmt.plural(total, 'image')}" if total else fmt.plural(row.kept, "image")
        text = f"Incomplete: {on_disk} on disk, {row.failed:,} failed."
        if row.message:
            text = f"{text} {row.message}"
    elif state is TransferState.CANCELLED:
        text = row.message or f"Cancelled: {fmt.plural(row.kept, 'image')} kept."
    else:
        head = row.state_text()  # "Failed", or "Refused by the PACS"
        text = f"{head}. {row.message}" if row.message else f"{head}."
    if row.notes and not state.active:
        text = f"{text} ({'; '.join(row.notes)})"
    return text


def pacs_line(row: TransferRow) -> str:
    """What the PACS itself answered, once the transfer ended: its final C-GET status in full and the
    sub-operation counts it reported (which can differ from ours: they are shown side by side)."""
    status = row.status
    if status is None:
        return ""
    if status.code < 0:
        return f"C-GET status: none. {status.text[:1].upper()}{status.text[1:]}."
    text = f"C-GET status {status}"
    counts = dict(row.pacs_counts)
    if counts:
        parts = [f"{counts.get('completed', 0):,} completed", f"{counts.get('failed', 0):,} failed",
                 fmt.plural(counts.get("warning", 0), "warning")]
        if "remaining" in counts:
            parts.append(f"{counts['remaining']:,} remaining")
        text = f"{text}. The PACS counted {', '.join(parts)}."
    else:
        text = f"{text}. The PACS gave no sub-operation counts."
    if status.category is Category.FAILURE and not any(counts.values()) and not row.done and not row.skipped:
        text = f"{text} It sent no instance: is the study on this PACS?"
    return text


def _pacs_state(row: TransferRow) -> str:
    # Red (the style sheet's QLabel[state="failed"]) for a failure or no status at all.
    return "failed" if row.status is not None and row.status.category is Category.FAILURE else ""


def _status_state(row: TransferRow) -> str:
    if row.state in (TransferState.FAILED, TransferState.INCOMPLETE):
        return "failed"
    return "ok" if row.state is TransferState.DONE else ""


def _html(text: str) -> str:
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


class ProgressPanel(QWidget):
    """Headline, transfer table and details; ``message`` carries status-bar text for the window."""

    message = Signal(str)
    activeChanged = Signal(int)  # transfers queued or running, after each change the panel shows

    def __init__(self, queue: RetrieveQueue, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.queue = queue
        self.model: TransferModel = queue.model
        self.destination: Path | None = None  # the settings' destination, shown while idle
        self._deferred = 0  # inside one_update(): updates wait for its end
        self._stale = False
        self.headline = QLabel(self)
        self.headline.setObjectName("transferHeadline")
        self.where = QLabel(self)
        self.where.setObjectName("transferWhere")
        self.where.setTextInteractionFlags(Qt.TextInteractionFlag.TextBrowserInteraction)
        self.where.setToolTip("Click the folder to open it in the file manager")
        self.cancel_all_button = QPushButton("Cancel all", self)
        self.cancel_all_button.setToolTip("Stop every queued and running transfer; what has arrived is kept")
        self.clear_button = QPushButton("Clear finished", self)
        self.clear_button.setToolTip("Remove ended transfers from the list (their files stay)")
        self.table = self._make_table()
        self.details = TransferDetails(self)
        self.split = QSplitter(Qt.Orientation.Vertical, self)
        self.split.setObjectName("transferSplitter")
        self.split.addWidget(self.table)
        self.split.addWidget(self.details)
        self.split.setStretchFactor(0, 1)
        self.split.setStretchFactor(1, 1)
        self.split.setChildrenCollapsible(False)
        self.empty = QLabel(EMPTY_TEXT, self)
        self.empty.setObjectName("emptyState")
        self.empty.setAlignment(Qt.AlignmentFlag.AlignCenter)
        self.stack = QStackedWidget(self)
        self.stack.addWidget(self.empty)
        self.stack.addWidget(self.split)
        self._make_actions()
        self._lay_out()
        self._wire()
        self._update()

    # -- construction -------------------------------------------------------------------------------

    def _make_table(self) -> QTableView:
        table = QTableView(self)
        table.setObjectName("transferTable")
        table.setModel(self.model)
        table.setItemDelegateForColumn(PROGRESS_COLUMN, ProgressDelegate(table))
        table.setSelectionBehavior(QAbstractItemView.SelectionBehavior.SelectRows)
        table.setSelectionMode(QAbstractItemView.SelectionMode.ExtendedSelection)
        table.setAlternatingRowColors(True)
        table.setWordWrap(False)
        table.setShowGrid(False)
        table.verticalHeader().hide()
        table.verticalHeader().setDefaultSectionSize(self.fontMetrics().height() + 12)
        table.setContextMenuPolicy(Qt.ContextMenuPolicy.CustomContextMenu)
        table.customContextMenuRequested.connect(self._context_menu)
        header = table.horizontalHeader()
        header.setStretchLastSection(True)
        header.setHighlightSections(False)
        metrics = table.fontMetrics()
        for i, column in enumerate(COLUMNS):
            sample = _WIDTH_SAMPLES.get(column.header, column.header)
            header.resizeSection(i, max(metrics.horizontalAdvance(sample), metrics.horizontalAdvance(column.header)) + 14)
        header.setSectionResizeMode(QHeaderView.ResizeMode.Interactive)
        return table

    def _make_actions(self) -> None:
        self.cancel_action = QAction("&Cancel transfer", self)
        self.cancel_action.setShortcut(QKeySequence(Qt.Key.Key_Delete))
        self.cancel_action.triggered.connect(self.cancel_selected)
        self.retry_action = QAction("&Retry failed", self)
        self.retry_action.triggered.connect(self.retry_selected)
        self.open_action = QAction("&Open folder", self)
        self.open_action.triggered.connect(self.open_selected_folder)
        self.copy_folder_action = QAction("Copy folder &path", self)
        self.copy_folder_action.triggered.connect(self.copy_folder)
        self.cancel_all_action = QAction("Cancel &all transfers", self)
        self.cancel_all_action.triggered.connect(self.queue.cancel_all)
        self.clear_action = QAction("C&lear finished", self)
        self.clear_action.triggered.connect(self.queue.clear_finished)
        # Delete cancels only while the table has focus: elsewhere it edits text.
        self.cancel_action.setShortcutContext(Qt.ShortcutContext.WidgetWithChildrenShortcut)
        self.table.addAction(self.cancel_action)

    def _lay_out(self) -> None:
        lines = QVBoxLayout()
        lines.setSpacing(2)
        lines.addWidget(self.headline)
        lines.addWidget(self.where)
        top = QHBoxLayout()
        top.addLayout(lines, 1)
        top.addWidget(self.cancel_all_button, 0, Qt.AlignmentFlag.AlignTop)
        top.addWidget(self.clear_button, 0, Qt.AlignmentFlag.AlignTop)
        layout = QVBoxLayout(self)
        layout.setContentsMargins(6, 6, 6, 6)
        layout.setSpacing(6)
        layout.addLayout(top)
        layout.addWidget(self.stack, 1)

    def _wire(self) -> None:
        self.model.rowsInserted.connect(self._rows_inserted)
        self.model.rowsRemoved.connect(self._update)
        self.model.dataChanged.connect(self._data_changed)
        self.queue.activeChanged.connect(self._update)
        self.table.selectionModel().selectionChanged.connect(self._update)
        self.details.cancel_button.clicked.connect(self.cancel_selected)
        self.details.retry_button.clicked.connect(self.retry_selected)
        self.details.open_button.clicked.connect(self.open_selected_folder)
        self.where.linkActivated.connect(self.open_destination)
        self.cancel_all_button.clicked.connect(self.queue.cancel_all)
        self.clear_button.clicked.connect(self.queue.clear_finished)

    # -- selection ----------------------------------------------------------------------------------

    def selected_rows(self) -> list[TransferRow]:
        """Selected transfers, in table order."""
        indexes = sorted(self.table.selectionModel().selectedRows(0), key=lambda i: i.row())
        return [r for r in (self.model.row_at(i) for i in indexes) if r is not None]

    def current_row(self) -> TransferRow | None:
        """The transfer the details show: the current one if selected, else the first selected."""
        current = self.table.selectionModel().currentIndex()
        if current.isValid() and self.table.selectionModel().isRowSelected(current.row(), QModelIndex()):
            return self.model.row_at(current)
        rows = self.selected_rows()
        return rows[0] if rows else None

    def select(self, transfer_id: TransferId) -> None:
        """Make this transfer the selected one (its details show)."""
        position = self.model.position(transfer_id)
        if position is None:
            return
        index = self.model.index(position, 0)
        self.table.selectionModel().setCurrentIndex(
            index, QItemSelectionModel.SelectionFlag.ClearAndSelect | QItemSelectionModel.SelectionFlag.Rows)

    def _rows_inserted(self, parent: QModelIndex, first: int, last: int) -> None:
        # Follow the new transfers unless the user is looking at one already.
        if not self.table.selectionModel().hasSelection():
            row = self.model.row_at(self.model.index(first, 0))
            if row is not None:
                self.select(row.id)
        self._update()

    def _data_changed(self, *_args: object) -> None:
        self._update()

    # -- commands -----------------------------------------------------------------------------------

    def cancel_selected(self) -> None:
        """Cancel the selected transfers."""
        self.queue.cancel([r.id for r in self.selected_rows()])

    def retry_selected(self) -> None:
        """Retry the selected transfers that ended incomplete."""
        for row in self.selected_rows():
            self.queue.retry(row.id)

    def open_selected_folder(self) -> None:
        """Open the current transfer's folder (its destination before any file arrived)."""
        row = self.current_row()
        if row is not None:
            self._open(row.folder or row.destination)

    def open_destination(self, _link: str = "") -> None:
        """Open the destination folder the line under the headline names."""
        row = self.current_row()
        target = row.destination if row is not None else self.destination
        if target is not None:
            self._open(target)

    def _open(self, folder: Path) -> None:
        # The folder appears with its first file; until then show the nearest one that exists.
        target = folder
        while not target.is_dir() and target.parent != target:
            target = target.parent
        if not QDesktopServices.openUrl(QUrl.fromLocalFile(str(target))):
            self.message.emit(f"Could not open {target}: no file manager answered")

    def copy_folder(self) -> None:
        """Copy the current transfer's folder path."""
        row = self.current_row()
        if row is not None:
            QGuiApplication.clipboard().setText(str(row.folder or row.destination))

    def _context_menu(self, pos: QPoint) -> None:
        menu = QMenu(self)
        if self.table.indexAt(pos).isValid():
            for action in (self.cancel_action, self.retry_action, self.open_action, self.copy_folder_action):
                menu.addAction(action)
            menu.addSeparator()
        menu.addAction(self.cancel_all_action)
        menu.addAction(self.clear_action)
        menu.exec(self.table.viewport().mapToGlobal(pos))

    # -- state shown --------------------------------------------------------------------------------

    @contextlib.contextmanager
    def one_update(self) -> Iterator[None]:
        """Within: the model, selection and queue signals mark the panel stale; leaving: one update.

        Queueing transfers fires four of them at once (rows inserted, selection, a row running, the
        active count), and each full update costs the GUI thread about 2 ms."""
        self._deferred += 1
        try:
            yield
        finally:
            self._deferred -= 1
            if not self._deferred and self._stale:
                self._update()

    def _update(self, *_args: object) -> None:
        if self._deferred:
            self._stale = True
            return
        self._stale = False
        rows = self.model.rows()
        self.stack.setCurrentWidget(self.split if rows else self.empty)
        selected = self.selected_rows()
        current = self.current_row()
        self.details.show_row(current)
        self.cancel_action.setEnabled(any(r.can_cancel for r in selected))
        self.retry_action.setEnabled(any(r.can_retry for r in selected))
        self.open_action.setEnabled(current is not None)
        self.copy_folder_action.setEnabled(current is not None)
        active = [r for r in rows if r.state.active]
        self.cancel_all_button.setEnabled(any(r.can_cancel for r in active))
        self.cancel_all_action.setEnabled(self.cancel_all_button.isEnabled())
        self.clear_button.setEnabled(len(active) < len(rows))
        self.clear_action.setEnabled(self.clear_button.isEnabled())
        self.headline.setText(headline(self.queue.batch(), rows))
        destination = current.destination if current is not None else self.destination
        self.where.setText("" if destination is None else
                           f'Saving to: <a href="open">{_html(str(destination))}</a>')
        self.activeChanged.emit(len(active))


def _set_state(label: QLabel, state: str) -> None:
    """Set the ``state`` property the style sheet colours by; re-polish (a restyle, relayout and repaint
    of the label) only when it changed, not at every 10 Hz refresh."""
    if label.property("state") != state:
        label.setProperty("state", state)
        label.style().polish(label)


def headline(batch: list[TransferRow], rows: list[TransferRow]) -> str:
    """The panel's first line: which transfer of how many, how far, how fast, how long (or how it ended).

    ``batch`` is the current run of work (queued, running, ended since the queue was last idle);
    ``rows`` every row shown, for the line once everything ended.
    """
    if not batch:
        if not rows:
            return "No transfers yet"
        done = sum(1 for r in rows if r.state is TransferState.DONE)
        stored = sum(r.kept for r in rows)
        return f"All transfers ended: {done} of {len(rows)} complete, {fmt.plural(stored, 'image')} on disk"
    running = [r for r in batch if r.state in (TransferState.RUNNING, TransferState.CANCELLING)]
    if len(running) <= 1:  # none: between two transfers, the next one starting
        position = batch.index(running[0]) if running else sum(1 for r in batch if not r.state.active)
        parts = [f"Transfer {min(position + 1, len(batch))} of {len(batch)}"]
    else:
        parts = [f"{len(running)} of {fmt.plural(len(batch), 'transfer')} running"]
    reached = sum(r.done + r.skipped for r in batch)
    # An ended transfer counts what it reached; one still to come, what it will cover.
    totals = [r.done + r.skipped if not r.state.active else r.total for r in batch]
    known = None if any(t is None for t in totals) else sum(t for t in totals if t is not None)
    if known:
        parts.append(f"{reached:,} of {fmt.plural(known, 'image')} ({100 * reached / known:.0f}%)")
    else:
        parts.append(fmt.plural(reached, "image"))
    timed = [r for r in running if r.elapsed > 0]
    per_second = sum(r.done / r.elapsed for r in timed)
    if timed:
        parts.append(f"{per_second:.0f} images/s, {fmt.rate(sum(r.bytes_per_second for r in timed))}")
    if known and per_second > 0:
        parts.append(f"all done in about {fmt.clock((known - reached) / per_second)}")
    return " · ".join(parts)
