"""What the models' column headers show: shared by the study and transfer tables."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Protocol

from PySide6.QtCore import Qt


class HeaderColumn(Protocol):
    """A column with a title, a tooltip ("" for none) and an alignment."""

    header: str
    tooltip: str
    align: Qt.AlignmentFlag


def header_data(columns: Sequence[HeaderColumn], section: int, orientation: Qt.Orientation, role: int) -> Any:
    """``QAbstractItemModel.headerData`` for horizontal headers: title, tooltip and alignment."""
    if orientation != Qt.Orientation.Horizontal or not 0 <= section < len(columns):
        return None
    column = columns[section]
    if role == Qt.ItemDataRole.DisplayRole:
        return column.header
    if role == Qt.ItemDataRole.ToolTipRole and column.tooltip:
        return column.tooltip
    if role == Qt.ItemDataRole.TextAlignmentRole:
        return column.align
    return None
