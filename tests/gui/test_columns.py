"""Column headers of the study and transfer tables: title, tooltip, alignment; nothing outside them."""

from __future__ import annotations

import pytest
from PySide6.QtCore import Qt

from pacspull.gui.models import study_model, transfer_model

ROLE = Qt.ItemDataRole


@pytest.mark.parametrize("module, model_class", [(study_model, study_model.StudyModel),
                                                 (transfer_model, transfer_model.TransferModel)])
def test_headers_show_each_columns_title_tooltip_and_alignment(qtbot, module, model_class) -> None:  # type: ignore[no-untyped-def]
    model = model_class()
    columns = module.COLUMNS
    horizontal = Qt.Orientation.Horizontal
    assert [model.headerData(i, horizontal, ROLE.DisplayRole) for i in range(len(columns))] == \
        [c.header for c in columns]
    assert [model.headerData(i, horizontal, ROLE.ToolTipRole) for i in range(len(columns))] == \
        [c.tooltip or None for c in columns]
    assert [model.headerData(i, horizontal, ROLE.TextAlignmentRole) for i in range(len(columns))] == \
        [c.align for c in columns]
    assert any(c.tooltip for c in columns)
    assert model.headerData(len(columns), horizontal, ROLE.DisplayRole) is None
    assert model.headerData(-1, horizontal, ROLE.DisplayRole) is None
    assert model.headerData(0, Qt.Orientation.Vertical, ROLE.DisplayRole) is None
    assert model.headerData(0, horizontal, ROLE.FontRole) is None
