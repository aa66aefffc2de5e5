"""The window's look: Fusion (the same on every platform) plus a small style sheet for states.

States are dynamic properties set by the widgets (``invalid``, ``state``, ``running``), so the
colours live here and nowhere else.
"""

from __future__ import annotations

from pathlib import Path

from PySide6.QtGui import QIcon
from PySide6.QtWidgets import QApplication

STYLE_SHEET = """
QLabel#error { color: #b3261e; }
QLineEdit[invalid="true"], QComboBox[invalid="true"] { border: 1px solid #b3261e; border-radius: 2px; }
QLabel#hint { color: #5f6368; }
QLabel#nodeCaption { font-weight: bold; }
QLabel#nodeAddress { color: #3c4043; padding-left: 6px; }
QLabel#resultCount { color: #3c4043; padding: 0 4px; }
QLabel#emptyState { color: #70757a; font-size: 11pt; }
QLabel#cappedNote { padding: 6px 8px; border-radius: 3px; }
QLabel#cappedNote[state="warning"] { background: #fff4ce; border: 1px solid #e6c35c; color: #4d3b00; }
QLabel#cappedNote[state="error"] { background: #fdecea; border: 1px solid #e8a29b; color: #7a1c15; }
QPushButton#searchButton { min-width: 96px; font-weight: bold; padding: 5px 12px; }
QPushButton#searchButton[running="true"] { color: #b3261e; }
QTreeView::item { padding: 3px 2px; }
QLabel#stageMark { font-weight: bold; min-width: 14px; }
QLabel#stageMark[state="ok"] { color: #1e7e34; }
QLabel#stageMark[state="failed"], QLabel[state="failed"] { color: #b3261e; }
QLabel#stageMark[state="skipped"], QLabel[state="skipped"] { color: #80868b; }
QLabel#diagnoseSummary { padding: 4px 0; font-weight: bold; }
QLabel#diagnoseSummary[state="ok"] { color: #1e7e34; }
QLabel#layoutExample { color: #3c4043; font-family: monospace; }
QFrame#progressArea { background: palette(base); }
QLabel#transferHeadline { font-weight: bold; font-size: 11pt; }
QLabel#transferTitle { font-size: 10.5pt; }
QLabel#transferStatus[state="failed"] { color: #b3261e; }
QLabel#transferStatus[state="ok"] { color: #1e7e34; }
"""

ICON_PATH = Path(__file__).resolve().parent.parent / "resources" / "pacspull.svg"


def apply(app: QApplication) -> None:
    """Fusion style, the state colours and, when the resources folder is present, the app icon."""
    app.setStyle("Fusion")
    app.setStyleSheet(STYLE_SHEET)
    if ICON_PATH.exists():
        app.setWindowIcon(QIcon(str(ICON_PATH)))
