"""Start-up and persistence: first run with the demo PACS, settings and layout across restarts, --self-test."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

from PySide6.QtCore import Qt

from pacspull.core.nodes import DEMO_NODE_NAME, NodeBook
from pacspull.core.settings import AppSettings, load_settings
from pacspull.gui.context import AppContext
from pacspull.gui.demo import demo_node, is_demo_node
from pacspull.gui.widgets.settings_dialog import SettingsDialog

from gui_helpers import node_for

TIMEOUT_MS = 20_000


def test_first_run_adds_selects_and_starts_the_demo_pacs(qtbot, make_window):
    assert not NodeBook.default_path().exists()
    window = make_window()
    context = window.context
    assert context.first_run
    node = context.selected_node()
    assert node is not None and node.name == DEMO_NODE_NAME and is_demo_node(node)
    assert NodeBook.load().selected == DEMO_NODE_NAME
    assert window.windowTitle() == f"PacsPull — {DEMO_NODE_NAME}"

    # A search typed before the demo PACS listens waits for it rather than failing.
    with qtbot.waitSignal(window.search.finished, timeout=TIMEOUT_MS) as blocker:
        qtbot.keyClick(window.form.name, Qt.Key.Key_Return)
    assert context.demo.running and context.demo.port == context.selected_node().port
    assert blocker.args[0].count == 6
    assert "Demo PACS running on 127.0.0.1" in window.demo_label.text()


def test_a_later_run_moves_the_demo_pacs_when_its_port_is_taken(qtbot, make_window):
    with socket.socket() as squatter:
        squatter.bind(("127.0.0.1", 0))
        squatter.listen()
        taken = squatter.getsockname()[1]
        window = make_window(demo_node(port=taken))
        assert not window.context.first_run
        qtbot.waitUntil(lambda: window.context.demo.running, timeout=TIMEOUT_MS)
        qtbot.waitUntil(lambda: window.context.selected_node().port != taken, timeout=TIMEOUT_MS)
    moved = NodeBook.load().get(DEMO_NODE_NAME).port
    assert moved == window.context.demo.port != taken
    assert f"{moved}" in window.node_bar.address.text()


def test_the_demo_pacs_stops_when_another_node_is_selected(qtbot, make_window, peer_node):
    window = make_window(demo_node(), peer_node)
    qtbot.waitUntil(lambda: window.context.demo.running, timeout=TIMEOUT_MS)
    window.node_bar.combo.setCurrentText(peer_node.name)
    assert not window.context.demo.running
    assert NodeBook.load().selected == peer_node.name


def test_settings_survive_a_restart(qtbot, tmp_path):
    context = AppContext()
    assert context.settings == AppSettings()
    dialog = SettingsDialog(context.settings)
    qtbot.addWidget(dialog)
    dest = tmp_path / "Studies"
    dialog.edits["destination"].setText(str(dest))
    dialog.edits["layout"].setText("{PatientID}/{StudyDate}/{SOPInstanceUID}.dcm")
    assert dialog.example.text() == f"Example: {dest}/PAT001/20240115/2.25.78817973785810553161819116523804454001.9.1.3.42.dcm"
    dialog.edits["calling_ae"].setText("RADIOLOGY1")
    dialog.edits["dimse_timeout"].setText("90")
    dialog.edits["max_results"].setText("250")
    assert dialog.ok_button.isEnabled()
    context.save_settings(dialog.settings())

    again = AppContext()
    assert again.settings.destination == dest
    assert again.settings.layout == "{PatientID}/{StudyDate}/{SOPInstanceUID}.dcm"
    assert again.settings.calling_ae == "RADIOLOGY1" and again.settings.dimse_timeout == 90.0
    assert again.settings.max_results == 250
    assert again.new_node_defaults()["calling_ae"] == "RADIOLOGY1"


def test_settings_dialog_validates_inline(qtbot):
    dialog = SettingsDialog(AppSettings())
    qtbot.addWidget(dialog)
    dialog.edits["layout"].setText("{PatientID}/flat.dcm")
    assert not dialog.ok_button.isEnabled()
    assert dialog.errors["layout"].text().startswith("layout: the file name (last part) must contain {SOPInstanceUID}")
    assert dialog.example.text() == "Example: —"
    dialog.edits["layout"].setText("{PatientID}/{SOPInstanceUID}.dcm")
    dialog.edits["destination"].setText("relative/folder")
    assert dialog.errors["destination"].text().startswith("destination folder: must be an absolute path")
    dialog.edits["calling_ae"].setText("A" * 17)
    assert dialog.errors["calling_ae"].text().startswith("calling AE title: must be at most 16 characters")
    assert not dialog.ok_button.isEnabled()


def test_window_layout_survives_a_restart(qtbot, make_window, peer_node):
    window = make_window(peer_node)
    window.resize(900, 700)  # the offscreen screen is 800 px wide: restoring clamps the width to it
    window.splitter.setSizes([500, 120])
    sizes = window.splitter.sizes()
    window.close()
    again = make_window()
    assert again.size().height() == 700
    assert again.splitter.sizes() == sizes
    assert (Path(os.environ["PACSPULL_CONFIG_DIR"]) / "window.ini").exists()


def test_renaming_the_selected_node_keeps_it_selected(qtbot, make_window, peer_node):
    window = make_window(peer_node, node_for(1, "Other"))
    renamed = node_for(peer_node.port, "Renamed PACS")
    window.context.put_node(renamed, replacing=peer_node.name)
    book = NodeBook.load()
    assert book.names() == ["Renamed PACS", "Other"] and book.selected == "Renamed PACS"
    assert window.windowTitle() == "PacsPull — Renamed PACS"
    assert window.node_bar.combo.currentText() == "Renamed PACS"


def test_an_unreadable_node_book_is_set_aside_not_lost(qtbot):
    path = NodeBook.default_path()
    path.parent.mkdir(parents=True)
    path.write_text("{not json", encoding="utf-8")
    context = AppContext()
    assert context.book.names() == [DEMO_NODE_NAME] and context.problems  # usable at once
    assert "was kept as nodes.json.unreadable-" in context.problems[0]
    assert any(p.name.startswith("nodes.json.unreadable-") for p in path.parent.iterdir())
    context.shutdown()


def test_self_test_flag_queries_and_retrieves_from_the_demo_pacs_and_exits_0(tmp_path):
    env = {**os.environ, "PACSPULL_CONFIG_DIR": str(tmp_path / "c"), "PACSPULL_DATA_DIR": str(tmp_path / "d"),
           "QT_QPA_PLATFORM": "offscreen"}
    result = subprocess.run([sys.executable, "-m", "pacspull.gui.app", "--self-test"], env=env,
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.startswith("self-test: 6 studies from the demo PACS")
    # the smallest study (one image), through the child process, into a temporary folder it then removed
    assert "; retrieved 1 images in a retrieve process of its own" in result.stdout
    demo_data = tmp_path / "d" / "demo-pacs"
    assert not [p for p in (tmp_path / "d").rglob("*.dcm") if not p.is_relative_to(demo_data)]
    assert load_settings() == AppSettings()  # nothing leaked into this test's own config folder
