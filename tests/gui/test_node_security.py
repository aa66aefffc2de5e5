"""The node dialog's Security tab: TLS and user identity from the window, the secret in the keyring only.

Peers are demo PACS over TLS (certificates from tests/certs.py), on port 0; the keyring is the
in-memory one of conftest's ``secrets`` fixture.
"""

from __future__ import annotations

import json
import logging
import ssl
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import keyring
import pytest
from certs import Authority
from PySide6.QtCore import Qt
from PySide6.QtWidgets import QLabel, QLineEdit

from pacspull.core import credentials
from pacspull.core.demo_pacs import DemoPacs
from pacspull.core.echo import echo
from pacspull.core.nodes import Node, NodeBook
from pacspull.gui.context import AppContext
from pacspull.gui.widgets import log_view
from pacspull.gui.widgets.diagnose_panel import FAIL, PASS, SKIP
from pacspull.gui.widgets.node_dialog import NodeDialog
from pacspull.gui.widgets.security_section import PLAIN, SECRET

from gui_helpers import node_for, write_book

TIMEOUT_MS = 20_000
PASSWORD = "s3cret-Pa55"  # distinctive, so a leak is found by a plain substring search
KEY = "PacsPull/node:{}"  # how the fake keyring files a node's secret (service/key)


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    folder = tmp_path_factory.mktemp("pki")
    ca = Authority(folder / "ca")
    return {"ca": ca.pem, "other": Authority(folder / "other", "Other CA").pem, "server": ca.issue("server"),
            "client": ca.issue("client", hosts=("pacspull-client",), client=True), "folder": folder}


def _server_context(pki: dict[str, Any]) -> ssl.SSLContext:
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(pki["server"].cert, pki["server"].key)
    return ctx


@pytest.fixture(scope="module")
def tls_pacs(sample_files: list[Path], pki: dict[str, Any]) -> Iterator[DemoPacs]:
    """A demo PACS over TLS that requires user alice with PASSWORD."""
    with DemoPacs(files=sample_files, ssl_context=_server_context(pki), users={"alice": PASSWORD}) as pacs:
        yield pacs


@pytest.fixture
def context() -> Iterator[AppContext]:
    ctx = AppContext()
    yield ctx
    assert ctx.shutdown(10_000)


def open_dialog(qtbot, context: AppContext, node: Node | None = None, mode: str = "add") -> NodeDialog:
    dialog = NodeDialog(context, node, mode=mode)
    qtbot.addWidget(dialog)
    dialog.show()
    dialog.tabs.setCurrentIndex(1)  # the Security tab, as the user would open it
    return dialog


def fill_connection(dialog: NodeDialog, pacs: DemoPacs, name: str = "Secure PACS") -> None:
    for key, value in (("name", name), ("ae_title", pacs.ae_title), ("host", pacs.host), ("port", str(pacs.port)),
                       ("connect_timeout", "3"), ("acse_timeout", "5"), ("dimse_timeout", "10")):
        dialog.edits[key].setText(value)


def set_identity(dialog: NodeDialog, identity: str) -> None:
    combo = dialog.security.identity_combo
    combo.setCurrentIndex(combo.findData(identity))


def save(qtbot, dialog: NodeDialog, context: AppContext, *, replacing: str | None = None) -> Node:
    """Press Save and store the node as the node bar does after the dialog closes."""
    assert dialog.ok_button.isEnabled(), dialog.field_errors()
    qtbot.mouseClick(dialog.ok_button, Qt.MouseButton.LeftButton)
    assert dialog.result() == NodeDialog.DialogCode.Accepted
    node = dialog.node()
    context.put_node(node, replacing=replacing)
    return node


def run_test(qtbot, dialog: NodeDialog):  # type: ignore[no-untyped-def]
    with qtbot.waitSignal(dialog.panel.finished, timeout=TIMEOUT_MS) as done:
        qtbot.mouseClick(dialog.test_button, Qt.MouseButton.LeftButton)
    return done.args[0]


def shown_texts(dialog: NodeDialog) -> list[str]:
    """Every text the dialog shows (line edits of the Password kind show dots, not their text)."""
    texts = [label.text() for label in dialog.findChildren(QLabel)]
    texts += [edit.text() for edit in dialog.findChildren(QLineEdit) if edit.echoMode() == QLineEdit.EchoMode.Normal]
    texts += [edit.placeholderText() for edit in dialog.findChildren(QLineEdit)]
    return texts


def tls_dialog(qtbot, context: AppContext, pacs: DemoPacs, ca: Path) -> NodeDialog:
    dialog = open_dialog(qtbot, context)
    fill_connection(dialog, pacs)
    dialog.security.tls_check.setChecked(True)
    dialog.security.ca.edit.setText(str(ca))
    return dialog


# -- TLS ----------------------------------------------------------------------------------------------

def test_tls_settings_are_saved_and_come_back_when_editing(qtbot, context, tls_pacs, pki):
    dialog = tls_dialog(qtbot, context, tls_pacs, pki["ca"].cert)
    section = dialog.security
    assert section.verify_check.isChecked()  # host name checking is on by default
    section.cert.edit.setText(str(pki["client"].cert))
    section.key.edit.setText(str(pki["client"].key))
    section.verify_check.setChecked(False)
    node = save(qtbot, dialog, context)
    assert (node.tls, node.tls_ca_file, node.tls_cert_file, node.tls_key_file, node.tls_verify_hostname) == (
        True, str(pki["ca"].cert), str(pki["client"].cert), str(pki["client"].key), False)

    on_disk = NodeBook.load().get("Secure PACS")
    assert on_disk == node
    again = open_dialog(qtbot, context, on_disk, mode="edit")
    section = again.security
    assert section.tls_check.isChecked() and not section.verify_check.isChecked()
    assert [f.text() for f in (section.ca, section.cert, section.key)] == [
        str(pki["ca"].cert), str(pki["client"].cert), str(pki["client"].key)]
    assert again.node() == on_disk
    assert again.security_summary.text() == ("Security: encrypted (TLS), no user identity. Change it on the "
                                             "Security tab.")

    section.tls_check.setChecked(False)  # the file fields stay (for turning TLS on again) but are unused
    assert not section.ca.isEnabled() and not section.verify_check.isEnabled()
    assert again.node().tls is False and again.node().tls_ca_file == str(pki["ca"].cert)


def test_tls_files_are_checked_as_a_connection_would_load_them(qtbot, context, tls_pacs, pki):
    dialog = tls_dialog(qtbot, context, tls_pacs, pki["folder"] / "missing.pem")
    errors = dialog.security.errors
    assert errors["tls_ca_file"].text() == (
        f"TLS CA file: must be a readable PEM file; {str(pki['folder'] / 'missing.pem')!r} does not exist")
    assert not dialog.ok_button.isEnabled() and not dialog.test_button.isEnabled()
    assert dialog.tabs.tabText(1).endswith("⚠") and not dialog.tabs.tabText(0).endswith("⚠")

    not_pem = pki["folder"] / "notes.txt"
    not_pem.write_text("not a certificate")
    dialog.security.ca.edit.setText(str(not_pem))
    assert errors["tls_ca_file"].text().startswith("TLS CA file: cannot be loaded as PEM certificates/keys")

    dialog.security.ca.edit.setText(str(pki["ca"].cert))
    dialog.security.key.edit.setText(str(pki["client"].key))
    assert errors["tls_key_file"].text() == (
        "TLS key file: goes with a TLS certificate file: give both or neither")
    dialog.security.cert.edit.setText(str(pki["server"].cert))  # a certificate whose key this is not
    assert "TLS key file: cannot be loaded" in errors["tls_key_file"].text()
    dialog.security.cert.edit.setText(str(pki["client"].cert))
    assert not any(label.isVisible() for label in errors.values())
    assert dialog.ok_button.isEnabled() and dialog.tabs.tabText(1) == "&Security"


def test_test_connection_over_tls_passes_with_the_right_ca(qtbot, context, tls_pacs, pki):
    dialog = tls_dialog(qtbot, context, tls_pacs, pki["ca"].cert)
    set_identity(dialog, "password")
    dialog.security.user_edit.setText("alice")
    dialog.security.secret_edit.setText(PASSWORD)
    report = run_test(qtbot, dialog)
    lines = dialog.panel.lines
    assert report.ok, [(s.name, s.detail) for s in report.stages]
    assert lines["tls"].mark.text() == PASS
    assert "TLSv1." in lines["tls"].detail.text() and "verified" in lines["tls"].detail.text()
    assert all(line.mark.text() == PASS for line in lines.values())
    assert "ready" in dialog.panel.summary.text()


def test_test_connection_with_the_wrong_ca_fails_at_the_tls_stage(qtbot, context, tls_pacs, pki):
    dialog = tls_dialog(qtbot, context, tls_pacs, pki["other"].cert)
    report = run_test(qtbot, dialog)
    lines = dialog.panel.lines
    assert report.failed_stage.name == "tls"
    assert lines["tls"].mark.text() == FAIL
    assert "is not trusted" in lines["tls"].detail.text()
    assert "→ give the CA file that signed the PACS certificate" in lines["tls"].detail.text()
    assert [lines[s].mark.text() for s in ("resolve", "connect")] == [PASS, PASS]
    assert all(lines[s].mark.text() == SKIP for s in ("associate", "echo", "find", "get"))


# -- user identity ------------------------------------------------------------------------------------

def identity_dialog(qtbot, context, tls_pacs, pki, password: str) -> NodeDialog:
    dialog = tls_dialog(qtbot, context, tls_pacs, pki["ca"].cert)
    set_identity(dialog, "password")
    dialog.security.user_edit.setText("alice")
    dialog.security.secret_edit.setText(password)
    return dialog


def test_a_typed_password_is_tested_before_it_is_saved(qtbot, context, tls_pacs, pki, secrets):
    dialog = identity_dialog(qtbot, context, tls_pacs, pki, PASSWORD)
    assert run_test(qtbot, dialog).ok
    assert dialog.panel.lines["associate"].mark.text() == PASS
    assert secrets == {}  # tested, not saved

    dialog.security.secret_edit.setText("wrong-password")
    report = run_test(qtbot, dialog)
    associate = dialog.panel.lines["associate"]
    assert report.failed_stage.name == "associate" and associate.mark.text() == FAIL
    assert "rejected the association" in associate.detail.text()
    assert "→ the PACS probably refused the user identity (password for 'alice')" in associate.detail.text()
    assert dialog.panel.lines["tls"].mark.text() == PASS

    qtbot.mouseClick(dialog.buttons.button(dialog.buttons.StandardButton.Cancel), Qt.MouseButton.LeftButton)
    assert secrets == {}
    assert not credentials.get_secret("Secure PACS")  # the secret lent to the test was given back


def test_the_secret_goes_to_the_keyring_never_to_the_node_file(qtbot, context, tls_pacs, pki, secrets):
    dialog = identity_dialog(qtbot, context, tls_pacs, pki, PASSWORD)
    node = save(qtbot, dialog, context)
    assert secrets == {KEY.format("secure pacs"): PASSWORD}
    text = NodeBook.default_path().read_text(encoding="utf-8")
    assert PASSWORD not in text
    saved = next(n for n in json.loads(text)["nodes"] if n["name"] == "Secure PACS")
    assert (saved["identity"], saved["identity_user"], saved["tls"]) == ("password", "alice", True)

    # Editing shows that a password is stored, never the password.
    edit = open_dialog(qtbot, context, node, mode="edit")
    section = edit.security
    assert section.secret_edit.text() == "" and section.secret_edit.echoMode() == QLineEdit.EchoMode.Password
    assert section.secret_status.text() == "A password is stored in the OS keyring (not shown)."
    assert section.secret_edit.placeholderText() == "stored: type to replace"
    assert section.clear_button.isVisible() and section.clear_button.text() == "Clear stored password"
    assert not any(PASSWORD in t for t in shown_texts(edit))
    assert edit.ok_button.isEnabled()
    assert run_test(qtbot, edit).ok  # the stored password is used

    # Replace it.
    section.secret_edit.setText("n3w-Pa55")
    assert section.secret_status.text() == "The new password replaces the stored one when you save."
    save(qtbot, edit, context, replacing=node.name)
    assert secrets == {KEY.format("secure pacs"): "n3w-Pa55"}
    assert credentials.get_secret(node.name) == "n3w-Pa55"

    # Clear it: while the identity needs one, Save waits for a new one.
    edit = open_dialog(qtbot, context, node, mode="edit")
    qtbot.mouseClick(edit.security.clear_button, Qt.MouseButton.LeftButton)
    assert edit.security.secret_status.text() == "The stored password is deleted when you save: type a new one."
    assert edit.security.errors[SECRET].text().startswith("password: is needed for user identity 'password'")
    assert not edit.ok_button.isEnabled()
    set_identity(edit, "none")
    assert "deleted when you save" in edit.security.secret_status.text()
    save(qtbot, edit, context, replacing=node.name)
    assert secrets == {}


def test_a_renamed_node_takes_its_secret_along_and_a_duplicate_copies_it(qtbot, context, tls_pacs, pki, secrets):
    node = save(qtbot, identity_dialog(qtbot, context, tls_pacs, pki, PASSWORD), context)
    duplicate = open_dialog(qtbot, context, node, mode="duplicate")
    assert "copied to this node" in duplicate.security.secret_status.text()
    assert run_test(qtbot, duplicate).ok  # the copy is tested with the original's password
    copy = save(qtbot, duplicate, context)
    assert secrets == {KEY.format("secure pacs"): PASSWORD, KEY.format("secure pacs (copy)"): PASSWORD}

    edit = open_dialog(qtbot, context, copy, mode="edit")
    edit.edits["name"].setText("Renamed PACS")
    save(qtbot, edit, context, replacing=copy.name)
    assert secrets == {KEY.format("secure pacs"): PASSWORD, KEY.format("renamed pacs"): PASSWORD}
    context.remove_node("Renamed PACS")
    assert secrets == {KEY.format("secure pacs"): PASSWORD}


def test_a_secret_over_plain_tcp_warns_and_needs_explicit_permission(qtbot, context, tls_pacs, pki):
    dialog = open_dialog(qtbot, context)
    fill_connection(dialog, tls_pacs)
    section = dialog.security
    set_identity(dialog, "password")
    section.user_edit.setText("alice")
    section.secret_edit.setText(PASSWORD)
    line = section.errors[PLAIN]
    assert line.isVisible() and line.property("state") == "failed"
    assert "would send a password or token unencrypted" in line.text()
    assert not dialog.ok_button.isEnabled() and not dialog.test_button.isEnabled()
    assert dialog.tabs.tabText(1) == "&Security ⚠"
    assert section.allow_check.isEnabled()

    section.allow_check.setChecked(True)
    assert dialog.ok_button.isEnabled()
    assert line.isVisible() and line.property("state") == "warning"
    assert line.text().startswith("⚠ Unsafe: the password goes over the network unencrypted")

    section.allow_check.setChecked(False)
    section.tls_check.setChecked(True)  # with TLS the question does not arise
    assert not line.isVisible() and not section.allow_check.isEnabled()
    assert dialog.ok_button.isEnabled()

    section.tls_check.setChecked(False)
    set_identity(dialog, "username")  # a user name alone is no secret
    assert not line.isVisible() and dialog.ok_button.isEnabled()


def test_identity_fields_name_their_rule(qtbot, context, tls_pacs, pki):
    dialog = tls_dialog(qtbot, context, tls_pacs, pki["ca"].cert)
    section = dialog.security
    set_identity(dialog, "password")
    assert section.errors["identity_user"].text() == "user name: is needed for user identity 'password'"
    section.user_edit.setText("alice")
    assert section.errors[SECRET].text() == ("password: is needed for user identity 'password' (saved in the OS "
                                             "keyring, never in the node file)")
    assert not dialog.ok_button.isEnabled()
    set_identity(dialog, "jwt")
    assert not section.user_edit.isEnabled() and section.secret_label.text() == "&Token"
    assert section.errors[SECRET].text().startswith("token: is needed for user identity 'jwt'")
    section.secret_edit.setText("  header.payload.signature \n")
    assert dialog.ok_button.isEnabled() and section.typed_secret() == "header.payload.signature"
    assert dialog.node().identity_user == ""  # a token identity sends no user name


def test_the_log_never_shows_the_secret(qtbot, context, tls_pacs, pki, secrets):
    handler = log_view.install_handler()
    wire = logging.getLogger("pynetdicom")
    level = wire.level
    wire.setLevel(logging.DEBUG)  # the log view's Debug verbosity: pynetdicom dumps every PDU
    try:
        dialog = identity_dialog(qtbot, context, tls_pacs, pki, PASSWORD)
        assert run_test(qtbot, dialog).ok
        node = save(qtbot, dialog, context)
        assert echo(context.book.get(node.name)).status.code == 0  # the saved node, as a search uses it
    finally:
        wire.setLevel(level)
        log_view.remove_handler(handler)
    lines = handler.all_lines()
    assert any("Password: [********]" in line for line in lines)  # pynetdicom did dump it: masked
    assert not [line for line in lines if PASSWORD in line]


def test_a_keyring_refusal_keeps_the_dialog_open_and_says_why(qtbot, context, tls_pacs, pki, monkeypatch):
    from keyring.errors import KeyringError

    def refuse(service: str, key: str, value: str) -> None:
        raise KeyringError("no backend")

    import keyring

    monkeypatch.setattr(keyring, "set_password", refuse)
    dialog = identity_dialog(qtbot, context, tls_pacs, pki, PASSWORD)
    qtbot.mouseClick(dialog.ok_button, Qt.MouseButton.LeftButton)
    assert dialog.isVisible() and dialog.result() != NodeDialog.DialogCode.Accepted
    assert dialog.tabs.currentIndex() == 1
    message = dialog.security.errors[SECRET].text()
    assert message.startswith("cannot store the secret of node 'Secure PACS' in the OS keyring")
    assert "install and unlock a keyring" in message


def test_editing_a_plain_node_touches_no_keyring(qtbot, context, peer_node, secrets, monkeypatch):
    calls: list[str] = []
    for name in ("get_password", "set_password", "delete_password"):
        monkeypatch.setattr(keyring, name, lambda *a, _n=name: calls.append(_n))
    write_book(peer_node, node_for(1, "Other"))
    ctx = AppContext()
    dialog = open_dialog(qtbot, ctx, peer_node, mode="edit")
    save(qtbot, dialog, ctx, replacing=peer_node.name)
    ctx.remove_node("Other")
    assert calls == []
    assert ctx.shutdown(10_000)


def test_log_masking_covers_pdu_dumps_and_known_secrets(caplog):
    from pynetdicom.pdu_items import UserIdentitySubItemRQ

    from pacspull.gui.security import install_log_masking, mask_in_logs

    install_log_masking()
    mask_in_logs("tok-XYZ-123")
    item = UserIdentitySubItemRQ()
    item.user_identity_type = 2
    item.primary_field, item.secondary_field = b"alice", b"unknown-to-the-window"
    caplog.set_level(logging.DEBUG, logger="pynetdicom")  # the log view may have left it at WARNING
    with caplog.at_level(logging.DEBUG):
        logging.getLogger("pynetdicom.pdu_items").debug("%s", item)  # the sub-item's own dump
        logging.getLogger("pynetdicom._handlers").debug("  Password: [pa]ss]")
        logging.getLogger("pacspull.anything").warning("sent %s to the PACS", "tok-XYZ-123")
    text = "\n".join(r.getMessage() for r in caplog.records)
    assert "unknown-to-the-window" not in text and "pa]ss" not in text and "tok-XYZ-123" not in text
    assert "Secondary field: ********" in text and "  Password: [********]" in text
    assert "sent ******** to the PACS" in text
