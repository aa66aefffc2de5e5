"""The node selector at the top of the window: pick a PACS, test it, add, edit, duplicate or remove nodes."""

from __future__ import annotations

from PySide6.QtCore import Qt
from PySide6.QtGui import QAction
from PySide6.QtWidgets import (
    QComboBox,
    QHBoxLayout,
    QLabel,
    QMenu,
    QMessageBox,
    QPushButton,
    QToolButton,
    QWidget,
)

from pacspull.core.errors import InvalidInput
from pacspull.core.nodes import Node
from pacspull.gui.context import AppContext
from pacspull.gui.widgets.node_dialog import NodeDialog


class NodeBar(QWidget):
    """Combo of nodes, the selected node's address, and the node actions."""

    def __init__(self, context: AppContext, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.context = context
        self.combo = QComboBox(self)
        self.combo.setMinimumContentsLength(18)
        self.combo.setSizeAdjustPolicy(QComboBox.SizeAdjustPolicy.AdjustToContents)
        self.combo.setToolTip("The PACS to search")
        self.address = QLabel(self)
        self.address.setObjectName("nodeAddress")
        self.address.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        self.add_action = QAction("&Add node…", self)
        self.edit_action = QAction("&Edit node…", self)
        self.duplicate_action = QAction("&Duplicate node…", self)
        self.remove_action = QAction("&Remove node", self)
        self.test_action = QAction("&Test connection…", self)
        self.test_action.setShortcut("Ctrl+T")
        self.add_action.triggered.connect(self.add_node)
        self.edit_action.triggered.connect(self.edit_node)
        self.duplicate_action.triggered.connect(self.duplicate_node)
        self.remove_action.triggered.connect(self.remove_node)
        self.test_action.triggered.connect(self.test_node)
        test = QPushButton("Test connection", self)
        test.setToolTip("Check this PACS step by step (Ctrl+T)")
        test.clicked.connect(self.test_node)
        edit = QPushButton("Edit…", self)
        edit.clicked.connect(self.edit_node)
        more = QToolButton(self)
        more.setText("Nodes")
        more.setPopupMode(QToolButton.ToolButtonPopupMode.InstantPopup)
        menu = QMenu(more)
        for action in (self.add_action, self.duplicate_action, self.remove_action):
            menu.addAction(action)
        more.setMenu(menu)
        self._buttons = (test, edit)
        layout = QHBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        caption = QLabel("&PACS:", self)
        caption.setBuddy(self.combo)
        caption.setObjectName("nodeCaption")
        layout.addWidget(caption)
        layout.addWidget(self.combo)
        layout.addWidget(self.address, 1)
        layout.addWidget(test)
        layout.addWidget(edit)
        layout.addWidget(more)
        self.combo.currentIndexChanged.connect(self._combo_changed)
        context.nodesChanged.connect(self.refresh)
        context.selectionChanged.connect(self.refresh)
        self.refresh()

    def refresh(self) -> None:
        """Re-read the node book into the combo and the address label."""
        self.combo.blockSignals(True)
        self.combo.clear()
        for name in self.context.book.names():
            self.combo.addItem(name)
        self.combo.setCurrentIndex(self.combo.findText(self.context.book.selected or ""))
        self.combo.blockSignals(False)
        node = self.context.selected_node()
        self.address.setText(f"{node.ae_title} @ {node.host}:{node.port}  (as {node.calling_ae})" if node else
                             "No PACS yet: add one with Nodes ▸ Add node…")
        has = node is not None
        for widget in (*self._buttons, self.edit_action, self.duplicate_action, self.remove_action, self.test_action):
            widget.setEnabled(has)

    def _combo_changed(self, index: int) -> None:
        if index >= 0:
            self.context.select(self.combo.itemText(index))

    # -- actions ------------------------------------------------------------------------------------

    def add_node(self) -> None:
        """Add a node; the new one becomes the selected node."""
        self._run_dialog(NodeDialog(self.context, mode="add", parent=self.window()), replacing=None)

    def edit_node(self) -> None:
        """Edit the selected node."""
        node = self.context.selected_node()
        if node is not None:
            self._run_dialog(NodeDialog(self.context, node, mode="edit", parent=self.window()), replacing=node.name)

    def duplicate_node(self) -> None:
        """Start a new node from a copy of the selected one."""
        node = self.context.selected_node()
        if node is not None:
            self._run_dialog(NodeDialog(self.context, node, mode="duplicate", parent=self.window()), replacing=None)

    def test_node(self) -> None:
        """Open the selected node's dialog with the connection test already running."""
        node = self.context.selected_node()
        if node is None:
            return
        dialog = NodeDialog(self.context, node, mode="edit", parent=self.window())
        dialog.test_connection()
        self._run_dialog(dialog, replacing=node.name)

    def remove_node(self) -> None:
        """Remove the selected node after asking."""
        node = self.context.selected_node()
        if node is None:
            return
        answer = QMessageBox.question(self.window(), "Remove node",
                                      f"Remove {node.name} ({node.address}) from PacsPull?\n"
                                      "Nothing on the PACS or on disk is deleted.")
        if answer == QMessageBox.StandardButton.Yes:
            self.context.remove_node(node.name)

    def _run_dialog(self, dialog: NodeDialog, *, replacing: str | None) -> Node | None:
        if dialog.exec() != NodeDialog.DialogCode.Accepted:
            return None
        node = dialog.node()
        try:
            self.context.put_node(node, replacing=replacing)
        except InvalidInput as exc:
            QMessageBox.warning(self.window(), "Node not saved", exc.message)
            return None
        self.context.select(node.name)
        return node
