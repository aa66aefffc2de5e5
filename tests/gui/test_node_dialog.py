"""Node dialog: inline validation naming field and rule; Test connection stage by stage."""

from __future__ import annotations

import pytest
from PySide6.QtCore import Qt

from pacspull.core.diagnose import STAGES
from pacspull.gui.context import AppContext
from pacspull.gui.widgets.diagnose_panel import FAIL, PASS, SKIP
from pacspull.gui.widgets.node_dialog import NodeDialog

from gui_helpers import free_port, node_for, write_book

TIMEOUT_MS = 20_000


@pytest.fixture
def context():
    ctx = AppContext()
    yield ctx
    assert ctx.shutdown(10_000)


def open_dialog(qtbot, context, node=None, mode="add") -> NodeDialog:
    dialog = NodeDialog(context, node, mode=mode)
    qtbot.addWidget(dialog)
    dialog.show()
    return dialog


def test_an_invalid_called_ae_keeps_save_disabled_and_says_why(qtbot, context, peer_node):
    dialog = open_dialog(qtbot, context, peer_node, mode="edit")
    assert dialog.ok_button.isEnabled()

    dialog.edits["ae_title"].setText("THIS_AE_IS_TOO_LONG")
    assert not dialog.ok_button.isEnabled() and not dialog.test_button.isEnabled()
    error = dialog.errors["ae_title"]
    assert error.isVisible()
    assert error.text() == "called AE title: must be at most 16 characters, not 19 (got 'THIS_AE_IS_TOO_LONG')"
    assert dialog.edits["ae_title"].property("invalid") is True

    dialog.edits["ae_title"].setText("BAD\\AE")
    assert "called AE title: must not contain a backslash" in error.text()
    dialog.edits["ae_title"].setText("ORTHANC")
    assert dialog.ok_button.isEnabled() and not error.isVisible()
    assert dialog.node().ae_title == "ORTHANC"


def test_every_field_names_its_rule(qtbot, context):
    dialog = open_dialog(qtbot, context)
    assert not dialog.ok_button.isEnabled()  # a new node has no name, AE or host yet
    for key, value, expected in [
        ("name", "", "node name: must not be empty"),
        ("host", "bad host!", "host: must be an IP address or a host name"),
        ("port", "70000", "port: must be a whole number from 1 to 65535"),
        ("calling_ae", "", "calling AE title: must not be empty"),
        ("connect_timeout", "0", "connect timeout: must be more than 0"),
        ("max_pdu", "12", "max PDU: must be 0 (no limit) or from 4096"),
    ]:
        dialog.edits[key].setText(value)
        assert dialog.errors[key].text().startswith(expected), key


def test_a_name_already_in_the_book_is_refused(qtbot, peer_node):
    write_book(peer_node, node_for(1, "Other"))
    ctx = AppContext()
    dialog = open_dialog(qtbot, ctx, peer_node, mode="duplicate")
    assert dialog.edits["name"].text() == "Test PACS (copy)"
    assert dialog.ok_button.isEnabled()
    dialog.edits["name"].setText("other")
    assert dialog.errors["name"].text() == "node name: a node named 'other' already exists"
    assert not dialog.ok_button.isEnabled()


def _run_test(qtbot, dialog: NodeDialog) -> list:
    seen: list = []
    dialog.panel.finished.connect(lambda report: seen.append(report))
    with qtbot.waitSignal(dialog.panel.finished, timeout=TIMEOUT_MS):
        qtbot.mouseClick(dialog.test_button, Qt.MouseButton.LeftButton)
        assert dialog.panel.running
        assert all(line.mark.text() == "…" for line in dialog.panel.lines.values())
    return seen


def test_test_connection_shows_each_stage_for_a_reachable_node(qtbot, context, peer_node):
    dialog = open_dialog(qtbot, context, peer_node, mode="edit")
    shown: list[str] = []
    dialog.panel.stageShown.connect(shown.append)
    _run_test(qtbot, dialog)
    assert shown == list(STAGES)  # each line filled as its stage completed, in order
    lines = dialog.panel.lines
    for name in STAGES:
        if name == "tls":  # a plain-TCP node: the TLS line says it is not used
            assert lines[name].mark.text() == SKIP and "not used" in lines[name].detail.text()
            continue
        assert lines[name].mark.text() == PASS, (name, lines[name].detail.text())
        assert lines[name].time.text().endswith("s")
        assert lines[name].detail.text()
    assert "ready" in dialog.panel.summary.text()
    contexts = [dialog.panel.contexts.item(i).text() for i in range(dialog.panel.contexts.count())]
    assert any(c.startswith(PASS) and "Study Root Query/Retrieve Information Model - FIND" in c for c in contexts)
    assert "accepted" in dialog.panel.contexts_label.text()
    assert dialog.panel.copy_button.isEnabled()


def test_test_connection_shows_each_stage_for_a_closed_port(qtbot, context):
    dialog = open_dialog(qtbot, context, node_for(free_port(), "Nobody home"), mode="edit")
    _run_test(qtbot, dialog)
    lines = dialog.panel.lines
    assert lines["resolve"].mark.text() == PASS
    assert lines["connect"].mark.text() == FAIL
    assert "connection refused" in lines["connect"].detail.text()
    assert "→ nothing listens on that port" in lines["connect"].detail.text()
    for name in ("associate", "echo", "find", "get"):
        assert lines[name].mark.text() == SKIP and lines[name].detail.text() == "not reached"
    assert dialog.panel.summary.text().startswith("Failed at “Open TCP connection”")
    assert dialog.panel.contexts.item(0).text().startswith("No association was made")


def test_test_connection_explains_a_pacs_that_aborts_an_unknown_calling_ae(qtbot, context, orthanc_factory):
    """Orthanc accepts the association of a calling AE it does not know, then aborts it at the C-ECHO: the
    panel marks the echo stage failed with why, the rest not reached, and still lists the contexts."""
    peer = orthanc_factory(extra_config={
        "DicomAlwaysAllowEcho": False, "DicomAlwaysAllowFind": False, "DicomAlwaysAllowGet": False,
        "DicomModalities": {"workstation": ["KNOWN_WS", "127.0.0.1", 104]},
    })
    node = node_for(peer.port, "Strict Orthanc", ae_title=peer.aet, calling_ae="STRANGER")
    dialog = open_dialog(qtbot, context, node, mode="edit")
    _run_test(qtbot, dialog)
    lines = dialog.panel.lines
    assert [lines[n].mark.text() for n in ("resolve", "connect", "associate")] == [PASS] * 3
    assert lines["echo"].mark.text() == FAIL
    assert "calling AE 'STRANGER'" in lines["echo"].detail.text()
    for name in ("find", "get"):
        assert lines[name].mark.text() == SKIP
        assert lines[name].detail.text() == "not reached: the PACS aborted the association"
    assert dialog.panel.summary.text().startswith("Failed at")
    assert dialog.panel.contexts.count() > 3 and dialog.panel.copy_button.isEnabled()
