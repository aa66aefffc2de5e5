"""Form pieces shared by the dialogs: a field with its error message right under it."""

from __future__ import annotations

from PySide6.QtWidgets import QLabel, QLayout, QVBoxLayout, QWidget


def error_label(parent: QWidget) -> QLabel:
    """A hidden, word-wrapped label for a field's error (the style sheet colours ``#error``)."""
    label = QLabel(parent)
    label.setObjectName("error")
    label.setWordWrap(True)
    label.hide()
    return label


def field_cell(parent: QWidget, *parts: QWidget | QLayout) -> QWidget:
    """One form cell: ``parts`` (the field, its buttons, its error label...) stacked tightly."""
    cell = QWidget(parent)
    box = QVBoxLayout(cell)
    box.setContentsMargins(0, 0, 0, 0)
    box.setSpacing(2)
    for part in parts:
        if isinstance(part, QLayout):
            box.addLayout(part)
        else:
            box.addWidget(part)
    return cell
