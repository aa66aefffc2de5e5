"""Settings: where studies go, how their files are named (with a live example), defaults for new nodes."""

from __future__ import annotations

from collections.abc import Callable

from PySide6.QtWidgets import (
    QDialog,
    QDialogButtonBox,
    QFileDialog,
    QFormLayout,
    QHBoxLayout,
    QLabel,
    QLayout,
    QLineEdit,
    QPushButton,
    QSpinBox,
    QVBoxLayout,
    QWidget,
)

from pacspull.core.errors import InvalidInput
from pacspull.core.nodes import validate_ae_title, validate_timeout
from pacspull.core.settings import AppSettings, validate_destination, validate_max_results
from pacspull.core.storage import DEFAULT_LAYOUT, example_path, validate_layout
from pacspull.core.settings import MAX_PARALLEL_RETRIEVES
from pacspull.gui.widgets.fields import error_label, field_cell

LAYOUT_HELP = ("DICOM keywords in braces, folders separated by /. The file name must contain "
               "{SOPInstanceUID}. Example keywords: {PatientName} {PatientID} {StudyDate} {Modality} "
               "{SeriesNumber} {SeriesDescription} {AccessionNumber}.")

# key: (label, validator, tooltip)
_CHECKS: dict[str, tuple[str, Callable[[str], object], str]] = {
    "destination": ("&Destination folder", validate_destination, "Retrieved studies are saved below this folder"),
    "layout": ("Folder &layout", validate_layout, LAYOUT_HELP),
    "calling_ae": ("&Calling AE title", lambda v: validate_ae_title(v, "calling AE title"),
                   "Our AE title for new nodes (each node can override it)"),
    "connect_timeout": ("Connect timeout (s)", lambda v: validate_timeout(v, "connect timeout"),
                        "For new nodes: how long to wait for the TCP connection"),
    "acse_timeout": ("Association timeout (s)", lambda v: validate_timeout(v, "association timeout"),
                     "For new nodes: how long to wait for the PACS to accept the association"),
    "dimse_timeout": ("Response timeout (s)", lambda v: validate_timeout(v, "response timeout"),
                      "For new nodes: how long to wait for each answer"),
    "max_results": ("Maximum results", validate_max_results,
                    "A search stops after this many studies (the rest: narrow the search)"),
}


class SettingsDialog(QDialog):
    """Edits an ``AppSettings``; after ``accept()`` read ``settings()``."""

    def __init__(self, settings: AppSettings, parent: QWidget | None = None, *, parallel: int = 1) -> None:
        super().__init__(parent)
        self.setWindowTitle("Settings")
        self.edits: dict[str, QLineEdit] = {}
        self.errors: dict[str, QLabel] = {}
        form = QFormLayout()
        form.setFieldGrowthPolicy(QFormLayout.FieldGrowthPolicy.AllNonFixedFieldsGrow)
        for key, (label, _check, tip) in _CHECKS.items():
            edit = QLineEdit(self)
            edit.setObjectName(f"setting_{key}")
            edit.setToolTip(tip)
            edit.textChanged.connect(self.validate)
            error = error_label(self)
            parts: list[QWidget | QLayout] = []
            row = QHBoxLayout()
            row.addWidget(edit, 1)
            if key == "destination":
                browse = QPushButton("Browse…", self)
                browse.clicked.connect(self._browse)
                row.addWidget(browse)
            elif key == "layout":
                reset = QPushButton("Default", self)
                reset.setToolTip("Use the default layout")
                reset.clicked.connect(lambda: self.edits["layout"].setText(DEFAULT_LAYOUT))
                row.addWidget(reset)
            parts.append(row)
            if key == "layout":
                self.example = QLabel(self)
                self.example.setObjectName("layoutExample")
                self.example.setWordWrap(True)
                parts.append(self.example)
            caption = QLabel(label, self)
            caption.setBuddy(edit)
            form.addRow(caption, field_cell(self, *parts, error))
            self.edits[key] = edit
            self.errors[key] = error
        self.parallel_spin = QSpinBox(self)
        self.parallel_spin.setObjectName("setting_parallel")
        self.parallel_spin.setRange(1, MAX_PARALLEL_RETRIEVES)
        self.parallel_spin.setValue(parallel)
        self.parallel_spin.setToolTip("1: transfers run one after another. More: a few run at once, "
                                      "each on its own association (only if the PACS allows that many).")
        caption = QLabel("&Transfers at once", self)
        caption.setBuddy(self.parallel_spin)
        form.addRow(caption, self.parallel_spin)
        self.buttons = QDialogButtonBox(
            QDialogButtonBox.StandardButton.Ok | QDialogButtonBox.StandardButton.Cancel
            | QDialogButtonBox.StandardButton.RestoreDefaults, self)
        self.ok_button = self.buttons.button(QDialogButtonBox.StandardButton.Ok)
        self.buttons.accepted.connect(self.accept)
        self.buttons.rejected.connect(self.reject)
        self.buttons.button(QDialogButtonBox.StandardButton.RestoreDefaults).clicked.connect(self._restore_defaults)
        help_label = QLabel("Calling AE title and timeouts are the starting values for nodes you add.", self)
        help_label.setObjectName("hint")
        outer = QVBoxLayout(self)
        outer.addLayout(form)
        outer.addWidget(help_label)
        outer.addStretch(1)
        outer.addWidget(self.buttons)
        self.resize(760, 420)
        self._fill(settings)

    def _restore_defaults(self) -> None:
        self._fill(AppSettings())
        self.parallel_spin.setValue(1)

    def _fill(self, settings: AppSettings) -> None:
        for key, value in settings.to_json().items():
            if key in self.edits:
                self.edits[key].setText(f"{value:g}" if isinstance(value, float) else str(value))
        self.validate()

    def _browse(self) -> None:
        folder = QFileDialog.getExistingDirectory(self, "Destination folder", self.edits["destination"].text())
        if folder:
            self.edits["destination"].setText(folder)

    def field_errors(self) -> dict[str, str]:
        """Message per invalid field."""
        problems = {}
        for key, (_label, check, _tip) in _CHECKS.items():
            try:
                check(self.edits[key].text())
            except InvalidInput as exc:
                problems[key] = exc.message
        return problems

    def validate(self) -> bool:
        """Show problems under their fields, refresh the example path; OK only when all are valid."""
        problems = self.field_errors()
        for key, label in self.errors.items():
            label.setText(problems.get(key, ""))
            label.setVisible(key in problems)
            edit = self.edits[key]
            edit.setProperty("invalid", key in problems)
            edit.style().polish(edit)
        if "layout" in problems:
            self.example.setText("Example: —")
        else:
            root = self.edits["destination"].text().rstrip("/\\") or "…"
            self.example.setText(f"Example: {root}/{example_path(self.edits['layout'].text().strip())}")
        self.ok_button.setEnabled(not problems)
        return not problems

    def settings(self) -> AppSettings:
        """The settings the fields describe (call only when valid)."""
        return AppSettings.from_json({key: edit.text().strip() for key, edit in self.edits.items()})

    def parallel(self) -> int:
        """How many transfers may run at once."""
        return self.parallel_spin.value()

    def accept(self) -> None:
        """Close only with valid values."""
        if self.validate():
            super().accept()
