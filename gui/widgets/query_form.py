"""The query form: what to search for. Builds a ``QueryRequest``; shows core's validation next to the field.

Enter in any field searches; Escape cancels a running search. The Search button turns into Cancel
while a query runs.
"""

from __future__ import annotations

import datetime as dt

from PySide6.QtCore import QDate, Qt, Signal
from PySide6.QtGui import QKeyEvent
from PySide6.QtWidgets import (
    QCheckBox,
    QComboBox,
    QDateEdit,
    QGridLayout,
    QHBoxLayout,
    QLabel,
    QLineEdit,
    QMenu,
    QPushButton,
    QToolButton,
    QVBoxLayout,
    QWidget,
    QWidgetAction,
)

from pacspull.core.errors import InvalidInput
from pacspull.core.query import DEFAULT_LIMIT, QueryRequest, parse_date
from pacspull.gui import formatting as fmt

MODALITIES = ("CT", "MR", "CR", "DX", "US", "MG", "XA", "RF", "NM", "PT", "OT", "SR")

# (label, parse_date key); "custom" shows the two calendar pickers.
DATE_PRESETS = (
    ("Any date", "any"),
    ("Today", "today"),
    ("Yesterday", "yesterday"),
    ("Last 7 days", "last7"),
    ("Last 30 days", "last30"),
    ("Custom range…", "custom"),
)

NAME_HINT = "Use * as a wildcard: Müll* or *jürgen. Type Family, Given or Family^Given. Some PACS match case exactly."


class ModalityPicker(QToolButton):
    """A drop-down of modality check boxes; the menu stays open while the user ticks several."""

    changed = Signal()

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.setPopupMode(QToolButton.ToolButtonPopupMode.InstantPopup)
        self.setToolButtonStyle(Qt.ToolButtonStyle.ToolButtonTextOnly)
        self.setMinimumWidth(140)
        self.setToolTip("Modalities in the study; tick several to find any of them")
        menu = QMenu(self)
        panel = QWidget(menu)
        grid = QGridLayout(panel)
        grid.setContentsMargins(8, 6, 8, 6)
        self._boxes: dict[str, QCheckBox] = {}
        for i, code in enumerate(MODALITIES):
            box = QCheckBox(code, panel)
            box.toggled.connect(self._update)
            grid.addWidget(box, i // 4, i % 4)
            self._boxes[code] = box
        clear = QPushButton("Any modality", panel)
        clear.clicked.connect(self.clear)
        grid.addWidget(clear, (len(MODALITIES) + 3) // 4, 0, 1, 4)
        action = QWidgetAction(menu)
        action.setDefaultWidget(panel)
        menu.addAction(action)
        self.setMenu(menu)
        self._update()

    def selected(self) -> tuple[str, ...]:
        """The ticked modality codes, in menu order."""
        return tuple(code for code, box in self._boxes.items() if box.isChecked())

    def set_selected(self, codes: tuple[str, ...]) -> None:
        """Tick exactly ``codes``."""
        for code, box in self._boxes.items():
            box.setChecked(code in codes)

    def clear(self) -> None:
        """Untick everything (any modality)."""
        self.set_selected(())

    def _update(self) -> None:
        codes = self.selected()
        self.setText(", ".join(codes) if codes else "Any modality")
        self.changed.emit()


class DateFilter(QWidget):
    """A preset combo plus, for a custom range, two calendar pickers."""

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        layout = QHBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        self.preset = QComboBox(self)
        for label, key in DATE_PRESETS:
            self.preset.addItem(label, key)
        self.start = self._date_edit("From (inclusive)")
        self.end = self._date_edit("To (inclusive)")
        self.dash = QLabel("–", self)
        layout.addWidget(self.preset)
        layout.addWidget(self.start)
        layout.addWidget(self.dash)
        layout.addWidget(self.end)
        layout.addStretch(1)
        self.preset.currentIndexChanged.connect(self._preset_changed)
        self._preset_changed()

    def _date_edit(self, tip: str) -> QDateEdit:
        edit = QDateEdit(QDate.currentDate(), self)
        edit.setCalendarPopup(True)
        edit.setDisplayFormat("yyyy-MM-dd")
        edit.setToolTip(tip)
        return edit

    def _preset_changed(self) -> None:
        custom = self.preset.currentData() == "custom"
        for widget in (self.start, self.dash, self.end):
            widget.setVisible(custom)

    def text(self) -> str:
        """The filter as ``parse_date`` reads it."""
        key = self.preset.currentData()
        if key != "custom":
            return key
        fmt_ = "yyyyMMdd"
        return f"{self.start.date().toString(fmt_)}-{self.end.date().toString(fmt_)}"

    def set_preset(self, key: str) -> None:
        """Choose a preset by its key (``any``, ``today``, ..., ``custom``)."""
        self.preset.setCurrentIndex(max(0, self.preset.findData(key)))

    def set_range(self, start: dt.date, end: dt.date) -> None:
        """Choose a custom range."""
        self.set_preset("custom")
        self.start.setDate(QDate(start.year, start.month, start.day))
        self.end.setDate(QDate(end.year, end.month, end.day))


class QueryForm(QWidget):
    """Patient name, ID, accession, date, modality and description; emits a validated request."""

    searchRequested = Signal(object)  # QueryRequest
    cancelRequested = Signal()

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.limit = DEFAULT_LIMIT
        self._running = False
        self.name = self._line("e.g. Müller* or Doe, Jane", 320)
        self.patient_id = self._line("e.g. PP-0001", 64)
        self.accession = self._line("e.g. ACC-24-0001", 16)
        self.description = self._line("e.g. *thorax*", 64)
        self.date = DateFilter(self)
        self.modality = ModalityPicker(self)
        self.search_button = QPushButton("Search", self)
        self.search_button.setObjectName("searchButton")
        self.search_button.setToolTip("Search the PACS (Enter)")
        self.search_button.clicked.connect(self._button_clicked)
        self.clear_button = QPushButton("Clear", self)
        self.clear_button.setToolTip("Empty every field")
        self.clear_button.clicked.connect(self.clear)
        self.hint = QLabel(NAME_HINT, self)
        self.hint.setObjectName("hint")
        self.error = QLabel(self)
        self.error.setObjectName("error")
        self.error.setWordWrap(True)
        self.error.hide()
        self._fields = {
            "patient name": self.name, "patient ID": self.patient_id, "accession number": self.accession,
            "study description": self.description, "date": self.date.preset, "modality": self.modality,
        }
        self._lay_out()

    def _line(self, placeholder: str, max_length: int) -> QLineEdit:
        edit = QLineEdit(self)
        edit.setPlaceholderText(placeholder)
        edit.setMaxLength(max_length)
        edit.setClearButtonEnabled(True)
        edit.textEdited.connect(self._clear_error)
        return edit

    def _lay_out(self) -> None:
        grid = QGridLayout()
        grid.setHorizontalSpacing(8)
        grid.setVerticalSpacing(6)
        rows = (
            (("Patient &name", self.name), ("Patient &ID", self.patient_id), ("A&ccession", self.accession)),
            (("Study &date", self.date), ("&Modality", self.modality), ("Desc&ription", self.description)),
        )
        for r, row in enumerate(rows):
            for c, (label, widget) in enumerate(row):
                caption = QLabel(label, self)
                caption.setBuddy(widget)
                grid.addWidget(caption, r, c * 2, Qt.AlignmentFlag.AlignRight | Qt.AlignmentFlag.AlignVCenter)
                grid.addWidget(widget, r, c * 2 + 1)
        for c in (1, 3, 5):
            grid.setColumnStretch(c, 1)
        grid.setColumnStretch(1, 2)
        buttons = QVBoxLayout()
        buttons.addWidget(self.search_button)
        buttons.addWidget(self.clear_button)
        top = QHBoxLayout()
        top.addLayout(grid, 1)
        top.addSpacing(12)
        top.addLayout(buttons)
        outer = QVBoxLayout(self)
        outer.setContentsMargins(0, 0, 0, 0)
        outer.addLayout(top)
        outer.addWidget(self.hint)
        outer.addWidget(self.error)

    # -- behaviour ----------------------------------------------------------------------------------

    def request(self) -> QueryRequest:
        """The request the fields describe; raises InvalidInput naming the field and the rule."""
        return QueryRequest(
            patient_name=fmt.query_name(self.name.text()),
            patient_id=self.patient_id.text(),
            accession=self.accession.text(),
            date=parse_date(self.date.text()),
            modalities=self.modality.selected(),
            study_description=self.description.text(),
            limit=self.limit,
        )

    def submit(self) -> None:
        """Validate and emit ``searchRequested``, or show what is wrong next to the form."""
        try:
            request = self.request()
        except InvalidInput as exc:
            self.show_error(exc)
            return
        self._clear_error()
        self.searchRequested.emit(request)

    def show_error(self, exc: InvalidInput) -> None:
        """Show a validation message and mark the field it names."""
        self.error.setText(exc.message)
        self.error.show()
        widget = self._fields.get(exc.field)
        if widget is not None:
            widget.setProperty("invalid", True)
            widget.style().polish(widget)
            widget.setFocus()

    def _clear_error(self) -> None:
        self.error.hide()
        for widget in self._fields.values():
            if widget.property("invalid"):
                widget.setProperty("invalid", False)
                widget.style().polish(widget)

    def clear(self) -> None:
        """Empty every field (any date, any modality)."""
        for edit in (self.name, self.patient_id, self.accession, self.description):
            edit.clear()
        self.date.set_preset("any")
        self.modality.clear()
        self._clear_error()
        self.name.setFocus()

    def set_running(self, running: bool) -> None:
        """Search ⇄ Cancel."""
        self._running = running
        self.search_button.setText("Cancel" if running else "Search")
        self.search_button.setToolTip("Stop the running search (Esc)" if running else "Search the PACS (Enter)")
        self.search_button.setProperty("running", running)
        self.search_button.style().polish(self.search_button)

    def _button_clicked(self) -> None:
        if self._running:
            self.cancelRequested.emit()
        else:
            self.submit()

    def keyPressEvent(self, event: QKeyEvent) -> None:
        """Enter in any field searches (a new search replaces a running one); Escape cancels."""
        if event.key() in (Qt.Key.Key_Return, Qt.Key.Key_Enter):
            self.submit()
        elif event.key() == Qt.Key.Key_Escape and self._running:
            self.cancelRequested.emit()
        else:
            super().keyPressEvent(event)
