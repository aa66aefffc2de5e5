"""The Security tab of the node dialog: DICOM over TLS, user identity, and the password or token.

The values are the node's own fields (``Node.tls`` … ``Node.allow_plain_credentials``) and are checked
with core's rules: a Node is built from them and ``InvalidInput`` names the field and the rule; TLS
files are loaded the way a connection loads them (``core.tls.client_context``); a secret that would
go over plain TCP is refused with core's own message (``core.association.identity_item``).

The secret never reaches a widget's text once saved: the field starts empty, says whether one is
stored, and only a typed value (Password echo mode) or a Clear replaces it (``gui.security``).
"""

from __future__ import annotations

import functools
import os
from pathlib import Path

from PySide6.QtCore import Signal
from PySide6.QtWidgets import (
    QCheckBox,
    QComboBox,
    QFileDialog,
    QFormLayout,
    QGroupBox,
    QHBoxLayout,
    QLabel,
    QLineEdit,
    QPushButton,
    QVBoxLayout,
    QWidget,
)

from pacspull.core import tls
from pacspull.core.association import identity_item
from pacspull.core.errors import InvalidInput
from pacspull.core.nodes import IDENTITY_TYPES, Node
from pacspull.gui.security import SecretAction, SecretChange
from pacspull.gui.widgets.fields import error_label, field_cell

IDENTITY_LABELS = {
    "none": "None",
    "username": "User name only",
    "password": "User name and password",
    "kerberos": "Kerberos service ticket",
    "saml": "SAML assertion",
    "jwt": "JSON Web Token (JWT)",
}
assert set(IDENTITY_LABELS) == set(IDENTITY_TYPES)
# What the secret of each identity is called in labels and messages.
SECRET_NOUNS = {"password": "password", "kerberos": "ticket", "saml": "assertion", "jwt": "token"}
PEM_FILTER = "PEM files (*.pem *.crt *.cer *.key);;All files (*)"
# core's field names (InvalidInput.field) → the key of the widget the message goes under
_CORE_FIELDS = {"user identity": "identity", "user name": "identity_user", "TLS key file": "tls_key_file",
                "TLS CA file": "tls_ca_file", "TLS certificate file": "tls_cert_file"}
PLAIN = "plain"  # the key of the "secret over plain TCP" line
SECRET = "secret"


def _check_node(**values: object) -> Node:
    # Node's rules for the security fields alone: the other values are known to be valid.
    return Node(name="check", ae_title="CHECK", host="localhost", port=104, **values)  # type: ignore[arg-type]


def _file_stamp(path: str) -> tuple[str, float | None]:
    try:
        return path, os.stat(path).st_mtime
    except OSError:
        return path, None


@functools.lru_cache(maxsize=64)
def _pem_problem(checked: str, ca: tuple[str, float | None], cert: tuple[str, float | None],
                 key: tuple[str, float | None]) -> tuple[str, str] | None:
    """Load the files as a connection would: (field key, message) of the first problem, or None.

    ``checked`` is the key of the field under test; the (path, mtime) stamps make an edited file new.
    """
    # Without a CA file core loads the system's CAs (~40 ms): too slow per keystroke. To check the client
    # certificate, the certificate itself stands in as the CA bundle: what matters is that it loads.
    try:
        tls.client_context(_check_node(tls=True, tls_ca_file=ca[0] or cert[0], tls_cert_file=cert[0],
                                       tls_key_file=key[0]))
    except InvalidInput as exc:
        where = "tls_key_file" if exc.field == "TLS key file" or "KEY_VALUES_MISMATCH" in exc.rule else checked
        names = {"tls_ca_file": "TLS CA file", "tls_cert_file": "TLS certificate file", "tls_key_file": "TLS key file"}
        return where, f"{names[where]}: {exc.rule}"
    return None


class PathField(QWidget):
    """A file path with a Browse… button (the path is what is saved; the file is read when connecting)."""

    def __init__(self, title: str, object_name: str, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.title = title
        self.edit = QLineEdit(self)
        self.edit.setObjectName(object_name)
        self.edit.setClearButtonEnabled(True)
        self.browse = QPushButton("Browse…", self)
        self.browse.setObjectName(f"{object_name}_browse")
        self.browse.clicked.connect(self._browse)
        self.edit.textChanged.connect(self._show_whole_path)
        row = QHBoxLayout(self)
        row.setContentsMargins(0, 0, 0, 0)
        row.addWidget(self.edit, 1)
        row.addWidget(self.browse)

    def text(self) -> str:
        """The path as typed, without surrounding spaces."""
        return self.edit.text().strip()

    def _show_whole_path(self, text: str) -> None:
        # A long path shows its end (the file name); the tooltip shows all of it. Empty: the field's own
        # tooltip (set on this widget) shows instead.
        self.edit.setToolTip(text)

    def _browse(self) -> None:
        start = self.text() or str(Path.home())
        path, _ = QFileDialog.getOpenFileName(self, self.title, start, PEM_FILTER)
        if path:
            self.edit.setText(path)


class SecuritySection(QWidget):
    """TLS and user identity of one node, with the secret's state; ``changed`` on every edit."""

    changed = Signal()

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.errors: dict[str, QLabel] = {}
        self._mode = "add"
        self._origin: str | None = None  # the node whose stored secret the dialog started from
        self._stored = False
        self._base_action = SecretAction.KEEP  # KEEP or CLEAR; typing makes it REPLACE
        self._build_tls()
        self._build_identity()
        outer = QVBoxLayout(self)
        outer.setContentsMargins(0, 0, 0, 0)
        outer.addWidget(self.tls_group)
        outer.addWidget(self.identity_group)
        outer.addStretch(1)
        self._sync()

    # -- layout ---------------------------------------------------------------------------------------

    def _cell(self, widget: QWidget, key: str) -> QWidget:
        self.errors[key] = error = error_label(self)
        return field_cell(self, widget, error)

    def _row(self, form: QFormLayout, caption: str, widget: QWidget, key: str, buddy: QWidget) -> QLabel:
        label = QLabel(caption, self)
        label.setBuddy(buddy)
        form.addRow(label, self._cell(widget, key))
        return label

    def _build_tls(self) -> None:
        self.tls_group = QGroupBox("Encryption: DICOM over TLS", self)
        form = QFormLayout(self.tls_group)
        form.setFieldGrowthPolicy(QFormLayout.FieldGrowthPolicy.AllNonFixedFieldsGrow)
        self.tls_check = QCheckBox("&Use TLS (version 1.2 or newer; never falls back to plain TCP)", self)
        self.tls_check.setObjectName("field_tls")
        self.tls_check.setToolTip("The PACS must offer DICOM over TLS on this port (often 2762)")
        self.ca = PathField("CA certificates (PEM)", "field_tls_ca_file", self)
        self.ca.edit.setPlaceholderText("empty: the system's trusted CAs")
        self.ca.setToolTip("The CA certificate(s) that signed the PACS certificate, as a PEM file")
        self.cert = PathField("Client certificate (PEM)", "field_tls_cert_file", self)
        self.cert.edit.setPlaceholderText("only if the PACS asks for one")
        self.cert.setToolTip("Our certificate, for a PACS that requires client certificates")
        self.key = PathField("Client key (PEM)", "field_tls_key_file", self)
        self.key.edit.setPlaceholderText("empty: the key is in the certificate file")
        self.key.setToolTip("The private key of the client certificate")
        self.verify_check = QCheckBox("&Verify that the certificate is issued for this host name", self)
        self.verify_check.setObjectName("field_tls_verify_hostname")
        self.verify_check.setToolTip("Turn off only for a PACS you trust whose certificate names another host; "
                                     "the CA is checked either way")
        form.addRow(self.tls_check)
        self._tls_labels = [
            self._row(form, "CA &bundle", self.ca, "tls_ca_file", self.ca.edit),
            self._row(form, "Client c&ertificate", self.cert, "tls_cert_file", self.cert.edit),
            self._row(form, "Client &key", self.key, "tls_key_file", self.key.edit),
        ]
        form.addRow(self.verify_check)
        self.tls_check.toggled.connect(self._edited)
        self.verify_check.toggled.connect(self._edited)
        for field in (self.ca, self.cert, self.key):
            field.edit.textChanged.connect(self._edited)

    def _build_identity(self) -> None:
        self.identity_group = QGroupBox("User identity", self)
        form = QFormLayout(self.identity_group)
        form.setFieldGrowthPolicy(QFormLayout.FieldGrowthPolicy.AllNonFixedFieldsGrow)
        self.identity_combo = QComboBox(self)
        self.identity_combo.setObjectName("field_identity")
        for key, label in IDENTITY_LABELS.items():
            self.identity_combo.addItem(label, key)
        self.identity_combo.setToolTip("What the PACS asks us to prove, if anything (DICOM User Identity "
                                       "Negotiation)")
        self.user_edit = QLineEdit(self)
        self.user_edit.setObjectName("field_identity_user")
        self.secret_edit = QLineEdit(self)
        self.secret_edit.setObjectName("field_secret")
        self.secret_edit.setEchoMode(QLineEdit.EchoMode.Password)
        self.secret_edit.setToolTip("Saved in the OS keyring when you save, never in the node file or the log")
        self.secret_status = QLabel(self)
        self.secret_status.setObjectName("hint")
        self.secret_status.setWordWrap(True)
        self.clear_button = QPushButton(self)
        self.clear_button.setObjectName("clearSecret")
        self.clear_button.clicked.connect(self._toggle_clear)
        secret_box = QWidget(self)
        column = QVBoxLayout(secret_box)
        column.setContentsMargins(0, 0, 0, 0)
        column.setSpacing(2)
        line = QHBoxLayout()
        line.addWidget(self.secret_edit, 1)
        line.addWidget(self.clear_button)
        column.addLayout(line)
        column.addWidget(self.secret_status)
        self.confirm_check = QCheckBox("Ask the PACS to con&firm the identity (fail if it does not)", self)
        self.confirm_check.setObjectName("field_identity_positive_response")
        self.confirm_check.setToolTip("Requests a positive response; many PACS confirm tokens but not "
                                      "user names or passwords")
        self.allow_check = QCheckBox("A&llow credentials over plain TCP (unsafe)", self)
        self.allow_check.setObjectName("field_allow_plain_credentials")
        self.allow_check.setToolTip("Without TLS the password or token crosses the network readable by anyone "
                                    "on the way. Prefer turning TLS on.")
        self.plain_line = QLabel(self)
        self.plain_line.setObjectName("plainWarning")
        self.plain_line.setWordWrap(True)
        self.errors[PLAIN] = self.plain_line
        self._row(form, "&Identity", self.identity_combo, "identity", self.identity_combo)
        self.user_label = self._row(form, "User na&me", self.user_edit, "identity_user", self.user_edit)
        self.secret_label = self._row(form, "Pass&word", secret_box, SECRET, self.secret_edit)
        form.addRow(self.confirm_check)
        form.addRow(self.allow_check)
        form.addRow(self.plain_line)
        self.identity_combo.currentIndexChanged.connect(self._edited)
        for edit in (self.user_edit, self.secret_edit):
            edit.textChanged.connect(self._edited)
        for box in (self.confirm_check, self.allow_check):
            box.toggled.connect(self._edited)

    # -- values ---------------------------------------------------------------------------------------

    def set_node(self, node: Node | None, *, mode: str, stored: bool) -> None:
        """Show ``node``'s security values; ``stored``: its secret is in the keyring (never shown)."""
        self._mode = mode
        self._origin = node.name if node is not None and mode in ("edit", "duplicate") else None
        self._stored = stored and self._origin is not None
        self._base_action = SecretAction.KEEP
        defaults = node or _check_node()
        widgets: list[QWidget] = [self.tls_check, self.verify_check, self.identity_combo, self.user_edit,
                                  self.confirm_check, self.allow_check, self.ca.edit, self.cert.edit, self.key.edit]
        for widget in widgets:
            widget.blockSignals(True)
        self.tls_check.setChecked(defaults.tls)
        self.ca.edit.setText(defaults.tls_ca_file)
        self.cert.edit.setText(defaults.tls_cert_file)
        self.key.edit.setText(defaults.tls_key_file)
        self.verify_check.setChecked(defaults.tls_verify_hostname)
        self.identity_combo.setCurrentIndex(self.identity_combo.findData(defaults.identity))
        self.user_edit.setText(defaults.identity_user)
        self.confirm_check.setChecked(defaults.identity_positive_response)
        self.allow_check.setChecked(defaults.allow_plain_credentials)
        for widget in widgets:
            widget.blockSignals(False)
        self.secret_edit.clear()
        self._sync()

    @property
    def identity(self) -> str:
        """The identity type chosen (a key of ``IDENTITY_TYPES``)."""
        return str(self.identity_combo.currentData())

    @property
    def needs_secret(self) -> bool:
        """True when the chosen identity sends a password or token."""
        return self.identity in SECRET_NOUNS

    def values(self) -> dict[str, object]:
        """The Node fields this section edits."""
        identity = self.identity
        return {
            "tls": self.tls_check.isChecked(),
            "tls_ca_file": self.ca.text(),
            "tls_cert_file": self.cert.text(),
            "tls_key_file": self.key.text(),
            "tls_verify_hostname": self.verify_check.isChecked(),
            "identity": identity,
            "identity_user": self.user_edit.text().strip() if identity in ("username", "password") else "",
            "identity_positive_response": self.confirm_check.isChecked() and identity != "none",
            "allow_plain_credentials": self.allow_check.isChecked(),
        }

    def typed_secret(self) -> str:
        """The secret typed in the field (tokens lose stray spaces from a paste; passwords are kept as typed)."""
        text = self.secret_edit.text()
        return text if self.identity == "password" else text.strip()

    @property
    def action(self) -> SecretAction:
        """What Save does with the secret: keep the stored one, replace it with the typed one, or clear it."""
        return SecretAction.REPLACE if self.typed_secret() else self._base_action

    def change(self, target: str) -> SecretChange:
        """What Save does to the keyring, for a node that will be called ``target``."""
        return SecretChange(self.action, target, self.needs_secret, self._origin, self._stored,
                            moves=self._mode == "edit", typed=self.typed_secret())

    def summary(self) -> str:
        """One line for the Connection tab: is it encrypted, and who do we say we are."""
        values = self.values()
        encryption = "encrypted (TLS)" if values["tls"] else "not encrypted (plain TCP)"
        who = {"none": "no user identity", "username": f"user {values['identity_user']!r}",
               "password": f"user {values['identity_user']!r} with a password",
               "kerberos": "a Kerberos ticket", "saml": "a SAML assertion", "jwt": "a JSON Web Token"}[self.identity]
        return f"Security: {encryption}, {who}. Change it on the Security tab."

    # -- validation -----------------------------------------------------------------------------------

    def problems(self) -> dict[str, str]:
        """Message per invalid field, as core words them (field: rule)."""
        values = self.values()
        problems: dict[str, str] = {}
        try:
            node = _check_node(**values)
        except InvalidInput as exc:
            problems[_CORE_FIELDS.get(exc.field, "identity")] = exc.message
            return problems
        if node.tls:
            ca, cert, key = (_file_stamp(str(values[k])) for k in ("tls_ca_file", "tls_cert_file", "tls_key_file"))
            none = ("", None)
            for problem in (_pem_problem("tls_ca_file", ca, none, none) if ca[0] else None,
                            _pem_problem("tls_cert_file", none, cert, key) if cert[0] else None):
                if problem:
                    problems.setdefault(*problem)
        if self.needs_secret and self.action is not SecretAction.REPLACE and not (
                self._stored and self.action is SecretAction.KEEP):
            problems[SECRET] = (f"{self.secret_noun}: is needed for user identity {self.identity!r} (saved in the "
                                "OS keyring, never in the node file)")
        if node.identity_has_secret and not node.tls and not node.allow_plain_credentials:
            problems[PLAIN] = self._plain_refusal(node)
        return problems

    @staticmethod
    def _plain_refusal(node: Node) -> str:
        # core's own rule and words; it raises before it would read the keyring.
        try:
            identity_item(node)
        except InvalidInput as exc:
            return exc.message
        return "user identity: would send a password or token unencrypted"

    def show_problems(self, problems: dict[str, str]) -> None:
        """Each message under its field; the plain-TCP line as an error, or as a warning once allowed."""
        for key, label in self.errors.items():
            if key == PLAIN:
                continue
            message = problems.get(key, "")
            label.setText(message)
            label.setVisible(bool(message))
        for key, widget in (("identity_user", self.user_edit), ("tls_ca_file", self.ca.edit),
                            ("tls_cert_file", self.cert.edit), ("tls_key_file", self.key.edit),
                            (SECRET, self.secret_edit)):
            if bool(widget.property("invalid")) != (key in problems):
                widget.setProperty("invalid", key in problems)
                widget.style().polish(widget)
        self._show_plain_line(problems.get(PLAIN, ""))

    def _show_plain_line(self, refusal: str) -> None:
        values = self.values()
        over_plain = self.needs_secret and not values["tls"]
        if refusal:
            text, state = f"✗ {refusal}. Save stays disabled until you do one or the other.", "failed"
        elif over_plain:
            text, state = (f"⚠ Unsafe: the {self.secret_noun} goes over the network unencrypted; anyone on the "
                           "way can read it. Turn TLS on to protect it.", "warning")
        else:
            text, state = "", ""
        self.plain_line.setText(text)
        self.plain_line.setVisible(bool(text))
        if self.plain_line.property("state") != state:
            self.plain_line.setProperty("state", state)
            self.plain_line.style().polish(self.plain_line)

    def show_keyring_error(self, message: str) -> None:
        """A keyring refusal on Save, under the secret field."""
        self.errors[SECRET].setText(message)
        self.errors[SECRET].setVisible(True)

    # -- state ----------------------------------------------------------------------------------------

    @property
    def secret_noun(self) -> str:
        """password, ticket, assertion or token: what the chosen identity sends."""
        return SECRET_NOUNS.get(self.identity, "password or token")

    def _toggle_clear(self) -> None:
        clearing = self._base_action is SecretAction.KEEP
        self._base_action = SecretAction.CLEAR if clearing else SecretAction.KEEP
        if clearing:
            self.secret_edit.clear()
        self._edited()

    def _edited(self) -> None:
        self._sync()
        self.changed.emit()

    def _sync(self) -> None:
        """Enable what applies, and say what Save will do with the secret."""
        tls_on = self.tls_check.isChecked()
        for widget in (self.ca, self.cert, self.key, self.verify_check, *self._tls_labels):
            widget.setEnabled(tls_on)
        identity = self.identity
        uses_user = identity in ("username", "password")
        self.user_edit.setEnabled(uses_user)
        self.user_label.setEnabled(uses_user)
        needed = self.needs_secret
        self.secret_edit.setEnabled(needed)
        self.secret_label.setEnabled(needed)
        noun = self.secret_noun
        self.secret_label.setText({"password": "Pass&word", "kerberos": "&Ticket", "saml": "&Assertion",
                                   "jwt": "&Token"}.get(identity, "Pass&word"))
        self.confirm_check.setEnabled(identity != "none")
        self.allow_check.setEnabled(needed and not tls_on)
        kept = self._stored and self._base_action is SecretAction.KEEP
        self.secret_edit.setPlaceholderText("stored: type to replace" if needed and kept else "")
        self.clear_button.setVisible(self._stored and needed)
        self.clear_button.setText(f"Clear stored {noun}" if kept else "Keep stored")
        self.secret_status.setText(self._secret_status(needed, noun))
        self.secret_status.setVisible(bool(self.secret_status.text()))

    def _secret_status(self, needed: bool, noun: str) -> str:
        action = self.action
        copying = self._mode == "duplicate"
        if not needed:
            if self._stored and self._mode == "edit":
                return "The stored password or token is deleted when you save: this identity sends none."
            return ""
        if action is SecretAction.REPLACE:
            if self._stored and not copying:
                return f"The new {noun} replaces the stored one when you save."
            return "Saved in the OS keyring when you save, never in the node file."
        if action is SecretAction.CLEAR:
            if copying:
                return f"Not copied from {self._origin!r}: type a {noun} for this node."
            return f"The stored {noun} is deleted when you save: type a new one."
        if self._stored:
            if copying:
                return f"The {noun} stored for {self._origin!r} is copied to this node when you save."
            return f"A {noun} is stored in the OS keyring (not shown)."
        return ""
