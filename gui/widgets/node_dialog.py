"""Add, edit or duplicate a node, with inline validation and the staged Test connection beside it.

Each field is checked as it is typed with core's own validators; the message under the field names the
field and the rule, and OK stays disabled until every field is valid. The Security tab
(``security_section``) holds TLS and user identity; its password or token goes to the OS keyring on
Save (``gui.security``), never into nodes.json, and Test connection uses it as typed, saved or not.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from PySide6.QtCore import Qt
from PySide6.QtGui import QCloseEvent
from PySide6.QtWidgets import (
    QDialog,
    QDialogButtonBox,
    QFormLayout,
    QGroupBox,
    QHBoxLayout,
    QLabel,
    QLineEdit,
    QPushButton,
    QTabWidget,
    QVBoxLayout,
    QWidget,
)

from pacspull.core.credentials import CredentialError
from pacspull.core.errors import InvalidInput
from pacspull.core.nodes import (
    DEFAULT_MAX_PDU,
    Node,
    validate_ae_title,
    validate_host,
    validate_max_pdu,
    validate_port,
    validate_timeout,
)
from pacspull.gui.context import AppContext
from pacspull.gui.security import SecretKeeper
from pacspull.gui.widgets.diagnose_panel import DiagnosePanel
from pacspull.gui.widgets.fields import error_label, field_cell
from pacspull.gui.widgets.security_section import SecuritySection

CONNECTION_TAB, SECURITY_TAB = "C&onnection", "&Security"  # Alt+C is the called AE title
PROBLEM_MARK = " ⚠"  # after a tab's title while a field on it is invalid: Save is disabled for a reason there


def _node_name(value: str) -> str:
    # Node's own rule for names, applied alone: the other values are known to be valid.
    return Node(name=value, ae_title="A", host="localhost", port=104).name


@dataclass(frozen=True)
class _Field:
    key: str  # Node attribute
    label: str
    check: Callable[[str], object]
    tip: str
    group: str = "connection"


FIELDS: tuple[_Field, ...] = (
    _Field("name", "&Name", _node_name, "How this PACS is listed in PacsPull"),
    _Field("ae_title", "&Called AE title", lambda v: validate_ae_title(v, "called AE title"),
           "The PACS's AE title (1-16 characters, usually upper case; case-sensitive)"),
    _Field("host", "&Host", validate_host, "Host name or IP address of the PACS"),
    _Field("port", "&Port", validate_port, "The PACS's DICOM port (often 104 or 11112)"),
    _Field("calling_ae", "C&alling AE title", lambda v: validate_ae_title(v, "calling AE title"),
           "Our AE title: the PACS must know it (ask its administrator to add it)", "advanced"),
    _Field("connect_timeout", "Connect timeout (s)", lambda v: validate_timeout(v, "connect timeout"),
           "How long to wait for the TCP connection", "advanced"),
    _Field("acse_timeout", "Association timeout (s)", lambda v: validate_timeout(v, "association timeout"),
           "How long to wait for the PACS to accept the association", "advanced"),
    _Field("dimse_timeout", "Response timeout (s)", lambda v: validate_timeout(v, "response timeout"),
           "How long to wait for each answer to a query or retrieve", "advanced"),
    _Field("max_pdu", "Max PDU (bytes)", validate_max_pdu,
           f"Largest PDU we accept: 0 for no limit, default {DEFAULT_MAX_PDU}", "advanced"),
)


class NodeDialog(QDialog):
    """``mode`` is "add", "edit" or "duplicate"; after ``accept()`` read ``node()``."""

    def __init__(self, context: AppContext, node: Node | None = None, *, mode: str = "add",
                 parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.context = context
        self.mode = mode
        self.original = node
        self._charset = node.query_charset if node else "ISO_IR 192"
        self.setWindowTitle({"add": "Add node", "edit": "Edit node", "duplicate": "Duplicate node"}[mode])
        self.edits: dict[str, QLineEdit] = {}
        self.errors: dict[str, QLabel] = {}
        self.keeper = SecretKeeper()
        self.security = SecuritySection(self)
        self.security.changed.connect(self.validate)
        self.tabs = QTabWidget(self)
        self.panel = DiagnosePanel(context.runner, self)
        self.buttons = QDialogButtonBox(QDialogButtonBox.StandardButton.Ok | QDialogButtonBox.StandardButton.Cancel,
                                        self)
        self.ok_button = self.buttons.button(QDialogButtonBox.StandardButton.Ok)
        self.ok_button.setText("Save")
        self.test_button = QPushButton("&Test connection", self)
        self.test_button.setToolTip("Check each step, from name lookup to C-GET, with the values above")
        self.buttons.addButton(self.test_button, QDialogButtonBox.ButtonRole.ActionRole)
        self.buttons.accepted.connect(self.accept)
        self.buttons.rejected.connect(self.reject)
        self.test_button.clicked.connect(self.test_connection)
        self._lay_out()
        self._fill(node)
        self.validate()

    def _lay_out(self) -> None:
        groups = {"connection": QGroupBox("PACS", self), "advanced": QGroupBox("This computer and limits", self)}
        forms = {key: QFormLayout(box) for key, box in groups.items()}
        for form in forms.values():
            form.setFieldGrowthPolicy(QFormLayout.FieldGrowthPolicy.AllNonFixedFieldsGrow)
        for spec in FIELDS:
            edit = QLineEdit(self)
            edit.setObjectName(f"field_{spec.key}")
            edit.setToolTip(spec.tip)
            edit.textChanged.connect(self.validate)
            error = error_label(self)
            cell = field_cell(self, edit, error)
            label = QLabel(spec.label, self)
            label.setBuddy(edit)
            forms[spec.group].addRow(label, cell)
            self.edits[spec.key] = edit
            self.errors[spec.key] = error
        connection = QWidget(self)
        left = QVBoxLayout(connection)
        left.addWidget(groups["connection"])
        left.addWidget(groups["advanced"])
        self.security_summary = QLabel(self)
        self.security_summary.setObjectName("hint")
        self.security_summary.setWordWrap(True)
        left.addWidget(self.security_summary)
        left.addStretch(1)
        security = QWidget(self)
        QVBoxLayout(security).addWidget(self.security)
        self.tabs.addTab(connection, CONNECTION_TAB)
        self.tabs.addTab(security, SECURITY_TAB)
        body = QHBoxLayout()
        body.addWidget(self.tabs, 1)  # as wide as the test: file paths and the secret's state need the room
        body.addWidget(self.panel, 1)
        outer = QVBoxLayout(self)
        outer.addLayout(body, 1)
        outer.addWidget(self.buttons)
        self.resize(1120, 660)

    def _fill(self, node: Node | None) -> None:
        if node is None:
            values: dict[str, object] = {"port": 104, "max_pdu": DEFAULT_MAX_PDU, **self.context.new_node_defaults()}
        else:
            values = node.to_json()
            if self.mode == "duplicate":
                values["name"] = self._copy_name(node.name)
        for key, edit in self.edits.items():
            value = values.get(key, "")
            edit.setText(f"{value:g}" if isinstance(value, float) else str(value))
        stored = self.mode != "add" and node is not None and node.identity_has_secret and self.keeper.stored(node.name)
        self.security.set_node(node, mode=self.mode, stored=stored)
        self.edits["name"].setFocus()

    def _copy_name(self, name: str) -> str:
        taken = {n.casefold() for n in self.context.book.names()}
        candidate, number = f"{name} (copy)", 2
        while candidate.casefold() in taken:
            candidate, number = f"{name} (copy {number})", number + 1
        return candidate

    # -- validation -------------------------------------------------------------------------------

    def field_errors(self) -> dict[str, str]:
        """Message per invalid field (field and rule, as core words them)."""
        problems: dict[str, str] = {}
        for spec in FIELDS:
            try:
                spec.check(self.edits[spec.key].text())
            except InvalidInput as exc:
                problems[spec.key] = exc.message
        name = self.edits["name"].text().strip()
        if "name" not in problems and self._name_taken(name):
            problems["name"] = f"node name: a node named {name!r} already exists"
        problems.update(self.security.problems())
        return problems

    def _name_taken(self, name: str) -> bool:
        own = self.original.name.casefold() if self.original and self.mode == "edit" else None
        return any(n.casefold() == name.casefold() and n.casefold() != own for n in self.context.book.names())

    def validate(self) -> bool:
        """Show each field's problem under it; enable Save and Test only when all are valid."""
        problems = self.field_errors()
        for key, label in self.errors.items():
            message = problems.get(key, "")
            label.setText(message)
            label.setVisible(bool(message))
            edit = self.edits[key]
            if bool(edit.property("invalid")) != bool(message):
                edit.setProperty("invalid", bool(message))
                edit.style().polish(edit)
        self.security.show_problems(problems)
        self.security_summary.setText(self.security.summary())
        on_connection = any(key in self.edits for key in problems)
        on_security = any(key not in self.edits for key in problems)
        self.tabs.setTabText(0, CONNECTION_TAB + (PROBLEM_MARK if on_connection else ""))
        self.tabs.setTabText(1, SECURITY_TAB + (PROBLEM_MARK if on_security else ""))
        valid = not problems
        self.ok_button.setEnabled(valid)
        self.test_button.setEnabled(valid)
        return valid

    def node(self) -> Node:
        """The node the fields describe (call only when ``validate()`` is True)."""
        values: dict[str, object] = {key: edit.text().strip() for key, edit in self.edits.items()}
        values.update(self.security.values())
        return Node.from_json({**values, "query_charset": self._charset})  # Node converts and checks types

    # -- actions ----------------------------------------------------------------------------------

    def test_connection(self) -> None:
        """Run the staged diagnose on the values as typed (saved or not), the typed secret included."""
        if self.validate():
            node = self.node()
            self.keeper.secret_for_test(self.security.change(node.name))
            self.panel.start(node)

    def accept(self) -> None:
        """Save only valid values (OK is disabled otherwise, but Enter still lands here).

        The secret goes to the OS keyring here; the caller saves the node itself (``node()``). A keyring
        refusal keeps the dialog open with the reason under the secret field.
        """
        if not self.validate():
            return
        self.panel.cancel()
        try:
            self.keeper.save(self.security.change(self.node().name))
        except CredentialError as exc:
            self.tabs.setCurrentIndex(1)
            self.security.show_keyring_error(str(exc))
            return
        super().accept()

    def reject(self) -> None:
        """Close without saving; a running test is abandoned (its answer is dropped), a lent secret given back."""
        self.panel.cancel()
        self.keeper.give_back()
        super().reject()

    def closeEvent(self, event: QCloseEvent) -> None:
        """Closing the window is Cancel."""
        self.panel.cancel()
        super().closeEvent(event)

    def keyPressEvent(self, event) -> None:  # type: ignore[no-untyped-def]
        """Enter saves only when valid (QDialog would otherwise press the default button)."""
        if event.key() in (Qt.Key.Key_Return, Qt.Key.Key_Enter) and not self.ok_button.isEnabled():
            return
        super().keyPressEvent(event)
