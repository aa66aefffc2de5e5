"""The log view: what PacsPull and pynetdicom report (associations, contexts, statuses, errors).

``LogHandler`` is a ``logging.Handler`` installed on the root logger. Records arrive on any thread
(pynetdicom logs on the retrieving thread); the handler formats them there, appends the lines to a
bounded buffer and, when the buffer was empty, emits one queued signal. The view drains the buffer at
most ten times a second, so even pynetdicom's debug output at thousands of instances a second costs the
event loop one append per tick, not one per line.

Verbosity: *Normal* (PacsPull's own messages: each retrieve, its final status, failed instances,
rejected presentation contexts, errors), *Associations and DIMSE* (also every negotiated context and
pynetdicom's INFO: association requests and results, every DIMSE message), *Debug* (pynetdicom's PDU
dumps).
Patient identifiers stay out of the log unless the user ticks the box: that switches on pynetdicom's
identifier dumps (``core.association.enable_identifier_logging``) and our storage debug lines, which
name files after the patient. Both are switched at their source (pynetdicom's flags, logger levels),
so they stay out of every handler, the log file included, not only out of this view.
"""

from __future__ import annotations

import collections
import enum
import logging
import threading
from pathlib import Path

from PySide6.QtCore import QObject, QTimer, Signal, Slot
from PySide6.QtGui import QFontDatabase, QGuiApplication
from PySide6.QtWidgets import (
    QCheckBox,
    QComboBox,
    QFileDialog,
    QHBoxLayout,
    QLabel,
    QPlainTextEdit,
    QPushButton,
    QVBoxLayout,
    QWidget,
)

from pacspull.core.association import enable_identifier_logging

DRAIN_MS = 100
SHOWN_LINES = 5000  # lines the view holds; older ones scroll away
KEPT_LINES = 50_000  # lines kept for Save (a long debug session stays well under 10 MB)
FORMAT = "%(asctime)s %(levelname)-7s %(name)s: %(message)s"
# The presentation contexts each retrieve negotiated (gui.workers): shown from "Associations and DIMSE" on.
_CONTEXTS = "pacspull.contexts"
# Loggers whose debug lines name files (and so patients): kept at INFO unless identifiers are allowed.
_IDENTIFYING_DEBUG = ("pacspull.core.storage",)


class Verbosity(enum.Enum):
    """How much the log shows; the value is the label in the switch."""

    NORMAL = "Normal"
    DIMSE = "Associations and DIMSE"
    DEBUG = "Debug (pynetdicom PDUs)"


# (pacspull level, pynetdicom level) per verbosity
_LEVELS = {
    Verbosity.NORMAL: (logging.INFO, logging.WARNING),
    Verbosity.DIMSE: (logging.INFO, logging.INFO),
    Verbosity.DEBUG: (logging.DEBUG, logging.DEBUG),
}


class LogHandler(logging.Handler):
    """Formats records on their own thread into a bounded buffer; ``bridge.pending`` wakes the view."""

    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.setFormatter(logging.Formatter(FORMAT, "%H:%M:%S"))
        self.bridge = _Bridge()
        self._lock = threading.Lock()
        self._new: list[str] = []
        self.kept: collections.deque[str] = collections.deque(maxlen=KEPT_LINES)
        self.warnings = 0  # records at WARNING or above since the last clear

    def emit(self, record: logging.LogRecord) -> None:
        """Any thread: format, buffer, and signal only if the view has not been woken yet."""
        try:
            line = self.format(record)
        except Exception:  # noqa: BLE001 - logging must never raise into the caller (pynetdicom's thread)
            self.handleError(record)
            return
        with self._lock:
            wake = not self._new
            self._new.append(line)
            self.kept.append(line)
            if record.levelno >= logging.WARNING:
                self.warnings += 1
        if wake:
            self.bridge.pending.emit()

    def take(self) -> list[str]:
        """The lines logged since the last call (GUI thread)."""
        with self._lock:
            lines, self._new = self._new, []
        return lines

    def all_lines(self) -> list[str]:
        """Every kept line, oldest first."""
        with self._lock:
            return list(self.kept)

    def clear(self) -> None:
        """Forget everything kept."""
        with self._lock:
            self._new.clear()
            self.kept.clear()
            self.warnings = 0


class _Bridge(QObject):
    """Lives on the GUI thread, so a signal emitted from any thread reaches the view queued."""

    pending = Signal()


class LogView(QWidget):
    """The log: verbosity switch, identifier opt-in, copy, save, clear, and the text itself."""

    warningsChanged = Signal(int)  # warnings and errors logged since the last clear

    def __init__(self, handler: LogHandler, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.handler = handler
        self.text = QPlainTextEdit(self)
        self.text.setObjectName("logText")
        self.text.setReadOnly(True)
        self.text.setLineWrapMode(QPlainTextEdit.LineWrapMode.NoWrap)
        self.text.setMaximumBlockCount(SHOWN_LINES)
        self.text.setFont(QFontDatabase.systemFont(QFontDatabase.SystemFont.FixedFont))
        self.verbosity = QComboBox(self)
        self.verbosity.setObjectName("logVerbosity")
        for level in Verbosity:
            self.verbosity.addItem(level.value, level)
        self.verbosity.setToolTip("Normal: PacsPull's messages. Associations and DIMSE: pynetdicom's "
                                  "association and message log. Debug: every PDU (large).")
        self.identifiers = QCheckBox("Include patient names and IDs", self)
        self.identifiers.setToolTip("Off by default: the log then holds no patient identifiers and can be "
                                    "sent to a PACS admin as it is. Applies from the next query or retrieve.")
        self.copy_button = QPushButton("Copy", self)
        self.copy_button.setToolTip("Copy the selected lines, or the whole log when nothing is selected")
        self.save_button = QPushButton("Save…", self)
        self.clear_button = QPushButton("Clear", self)
        self.note = QLabel(self)
        self.note.setObjectName("hint")
        self._timer = QTimer(self)
        self._timer.setSingleShot(True)
        self._timer.setInterval(DRAIN_MS)
        self._timer.timeout.connect(self.drain)
        self._lay_out()
        handler.bridge.pending.connect(self._pending)
        self.verbosity.currentIndexChanged.connect(self._verbosity_changed)
        self.identifiers.toggled.connect(self.set_identifiers)
        self.copy_button.clicked.connect(self.copy)
        self.save_button.clicked.connect(self.save_dialog)
        self.clear_button.clicked.connect(self.clear)
        self.set_verbosity(Verbosity.NORMAL)

    def _lay_out(self) -> None:
        bar = QHBoxLayout()
        bar.addWidget(QLabel("Show:", self))
        bar.addWidget(self.verbosity)
        bar.addWidget(self.identifiers)
        bar.addStretch(1)
        bar.addWidget(self.note)
        for button in (self.copy_button, self.save_button, self.clear_button):
            bar.addWidget(button)
        layout = QVBoxLayout(self)
        layout.setContentsMargins(6, 6, 6, 6)
        layout.addLayout(bar)
        layout.addWidget(self.text, 1)

    # -- verbosity and privacy ----------------------------------------------------------------------

    def set_verbosity(self, level: Verbosity) -> None:
        """Set the pacspull and pynetdicom logger levels for ``level``."""
        self.verbosity.setCurrentIndex(list(Verbosity).index(level))
        self._apply_levels()

    def _apply_levels(self) -> None:
        ours, theirs = _LEVELS[self.current_verbosity()]
        logging.getLogger("pacspull").setLevel(ours)
        logging.getLogger("pynetdicom").setLevel(theirs)
        logging.getLogger(_CONTEXTS).setLevel(max(ours, theirs))
        identifying = ours if self.identifiers.isChecked() else max(ours, logging.INFO)
        for name in _IDENTIFYING_DEBUG:
            logging.getLogger(name).setLevel(identifying)

    def current_verbosity(self) -> Verbosity:
        """The switch's setting."""
        return list(Verbosity)[self.verbosity.currentIndex()]

    def _verbosity_changed(self, index: int) -> None:
        self._apply_levels()

    def set_identifiers(self, allowed: bool) -> None:
        """Let patient names and IDs into the log (pynetdicom identifier dumps, file paths), or keep them out."""
        if self.identifiers.isChecked() != allowed:
            self.identifiers.setChecked(allowed)
        enable_identifier_logging(allowed)
        self._apply_levels()
        self.note.setText("Patient identifiers are logged" if allowed else "")
        logging.getLogger(__name__).info("Patient identifiers in the log: %s", "on" if allowed else "off")

    # -- text ---------------------------------------------------------------------------------------

    @Slot()
    def _pending(self) -> None:
        if not self._timer.isActive():
            self._timer.start()

    @Slot()
    def drain(self) -> None:
        """Append what arrived since the last drain, in one go (keeping the view at the end if it was)."""
        lines = self.handler.take()
        if not lines:
            return
        lines = lines[-SHOWN_LINES:]  # the view would drop the older ones at once anyway
        bar = self.text.verticalScrollBar()
        at_end = bar.value() >= bar.maximum() - 2
        self.text.appendPlainText("\n".join(lines))
        if at_end:
            bar.setValue(bar.maximum())
        self.warningsChanged.emit(self.handler.warnings)

    def copy(self) -> None:
        """Copy the selection, or everything shown."""
        cursor = self.text.textCursor()
        text = cursor.selection().toPlainText() if cursor.hasSelection() else self.text.toPlainText()
        QGuiApplication.clipboard().setText(text)

    def save(self, path: Path) -> int:
        """Write every kept line to ``path`` (UTF-8); returns the line count. Raises OSError."""
        self.drain()
        lines = self.handler.all_lines()
        path.write_text("\n".join(lines) + ("\n" if lines else ""), encoding="utf-8")
        return len(lines)

    def save_dialog(self) -> None:
        """Ask for a file name and save; a failure is shown beside the buttons, not as a traceback."""
        name, _filter = QFileDialog.getSaveFileName(self, "Save log", "pacspull-log.txt", "Text files (*.txt *.log)")
        if not name:
            return
        try:
            count = self.save(Path(name))
        except OSError as exc:
            self.note.setText(f"Could not save the log: {exc.strerror or exc}")
            return
        self.note.setText(f"Saved {count:,} lines to {name}")

    def clear(self) -> None:
        """Empty the view and the kept lines."""
        self.handler.clear()
        self.text.clear()
        self.warningsChanged.emit(0)


def install_handler() -> LogHandler:
    """Attach a LogHandler to the root logger (remove it with ``remove_handler``)."""
    handler = LogHandler()
    logging.getLogger().addHandler(handler)
    return handler


def remove_handler(handler: LogHandler) -> None:
    """Detach the handler (the window closed)."""
    logging.getLogger().removeHandler(handler)

