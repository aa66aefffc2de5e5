"""GUI test fixtures: offscreen Qt, a config/data folder per test, the demo PACS as the peer.

Every test gets its own PACSPULL_CONFIG_DIR/PACSPULL_DATA_DIR (nodes.json, settings.json and the window
state file live there) and QSettings' default paths point into tmp as well, so nothing touches the
developer's own settings. Tests wait on signals (``qtbot.waitSignal``/``waitUntil``), never sleep.
"""

from __future__ import annotations

import os

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")  # before any QApplication exists

from collections.abc import Callable, Iterator  # noqa: E402
from pathlib import Path  # noqa: E402

import keyring
import pytest  # noqa: E402
from gui_helpers import node_for, write_book  # noqa: E402
from PySide6.QtCore import QSettings  # noqa: E402
from PySide6.QtWidgets import QMessageBox  # noqa: E402

from pacspull.core import credentials  # noqa: E402
from pacspull.core.demo_pacs import DemoPacs  # noqa: E402
from pacspull.core.nodes import Node  # noqa: E402
from pacspull.gui import style  # noqa: E402
from pacspull.gui.context import AppContext  # noqa: E402
from pacspull.gui.main_window import MainWindow  # noqa: E402


@pytest.fixture(scope="session", autouse=True)
def _styled_app(qapp):  # type: ignore[no-untyped-def]
    """The real style sheet, so tests see what users see."""
    style.apply(qapp)
    return qapp


@pytest.fixture(autouse=True)
def isolated_dirs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Config and data folders of this test only; QSettings' default locations under tmp too."""
    monkeypatch.setenv("PACSPULL_CONFIG_DIR", str(tmp_path / "config"))
    monkeypatch.setenv("PACSPULL_DATA_DIR", str(tmp_path / "data"))
    for scope in (QSettings.Scope.UserScope, QSettings.Scope.SystemScope):
        QSettings.setPath(QSettings.Format.IniFormat, scope, str(tmp_path / "qsettings"))
        QSettings.setPath(QSettings.Format.NativeFormat, scope, str(tmp_path / "qsettings"))
    return tmp_path


@pytest.fixture(autouse=True)
def secrets(monkeypatch: pytest.MonkeyPatch) -> Iterator[dict[str, str]]:
    """An in-memory keyring ("service/key" -> secret), so no GUI test reads or writes the user's own."""
    store: dict[str, str] = {}
    monkeypatch.setattr(keyring, "get_password", lambda s, k: store.get(f"{s}/{k}"))
    monkeypatch.setattr(keyring, "set_password", lambda s, k, v: store.__setitem__(f"{s}/{k}", v))
    monkeypatch.setattr(keyring, "delete_password", lambda s, k: store.pop(f"{s}/{k}", None))
    yield store
    credentials._for_this_run.clear()  # secrets a test lent for one run must not reach the next test


class Questions:
    """QMessageBox.question stand-in: records each question and gives ``answer`` (a modal box would hang)."""

    def __init__(self) -> None:
        self.asked: list[str] = []
        self.answer = QMessageBox.StandardButton.Yes

    def __call__(self, parent: object, title: str, text: str, *args: object) -> QMessageBox.StandardButton:
        self.asked.append(f"{title}\n{text}")
        return self.answer


@pytest.fixture(autouse=True)
def questions(monkeypatch: pytest.MonkeyPatch) -> Questions:
    """Every QMessageBox.question in a test is answered (Yes unless the test says otherwise) and recorded."""
    stand_in = Questions()
    monkeypatch.setattr(QMessageBox, "question", stand_in)
    return stand_in


@pytest.fixture(scope="session")
def demo_pacs(sample_files: list[Path]) -> Iterator[DemoPacs]:
    """The in-process demo PACS on a free loopback port, serving the session's sample files."""
    with DemoPacs(files=sample_files, port=0) as pacs:
        yield pacs


@pytest.fixture
def peer_node(demo_pacs: DemoPacs) -> Node:
    """A node pointing at the session's demo PACS."""
    return node_for(demo_pacs.port)


@pytest.fixture
def make_window(qtbot) -> Iterator[Callable[..., MainWindow]]:  # type: ignore[no-untyped-def]
    """``make(*nodes)``: save the nodes (first selected), build the context and the window, show it."""
    made: list[MainWindow] = []

    def make(*nodes: Node, selected: str | None = None) -> MainWindow:
        if nodes:
            write_book(*nodes, selected=selected)
        context = AppContext()
        context.ensure_demo()
        window = MainWindow(context)
        qtbot.addWidget(window)
        window.show()
        made.append(window)
        return window

    yield make
    for window in made:
        window.close()
        assert window.context.shutdown(10_000), "a background job did not end"
