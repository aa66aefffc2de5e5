"""The window against a real PACS: Orthanc holding the sample studies (skipped when Orthanc is missing).

Search and expand, then a retrieve through the window (C-GET from Orthanc into the destination folder).
"""

from __future__ import annotations

import pytest
from PySide6.QtCore import Qt

from pacspull.core.query import QueryRequest, find
from pacspull.core.samples import sample_studies
from pacspull.core.settings import AppSettings
from pacspull.gui.models.study_model import ROW_ROLE
from pacspull.gui.models.transfer_model import TransferState

from gui_helpers import SubOperationCounter, files_on_disk, node_for

pytestmark = pytest.mark.peer
TIMEOUT_MS = 30_000


def test_search_and_expand_against_orthanc(qtbot, make_window, orthanc):
    node = node_for(orthanc.port, "Orthanc", orthanc.aet)
    window = make_window(node)
    with qtbot.waitSignal(window.search.finished, timeout=TIMEOUT_MS):
        window.form.name.setText("Yamada*")
        qtbot.keyClick(window.form.name, Qt.Key.Key_Return)

    expected = find(node, QueryRequest(patient_name="Yamada*")).rows
    assert len(expected) == 2
    assert sorted(s.study_uid for s in window.model.studies()) == sorted(s.study_uid for s in expected)
    proxy = window.results.proxy
    assert {proxy.index(r, 0).data() for r in range(proxy.rowCount())} == {"Yamada, Tarou (山田 太郎)"}

    first = proxy.index(0, 0)
    with qtbot.waitSignal(window.model.rowsInserted, timeout=TIMEOUT_MS):
        window.results.tree.expand(first)
    study = first.data(ROW_ROLE)
    assert proxy.rowCount(first) == study.series_count


def test_retrieve_from_orthanc_through_the_window(qtbot, make_window, orthanc):
    node = node_for(orthanc.port, "Orthanc", orthanc.aet)
    window = make_window(node)
    counter = SubOperationCounter()
    window.retrieve.workerStarted.connect(counter.attach)
    with qtbot.waitSignal(window.search.finished, timeout=TIMEOUT_MS):
        window.form.name.setText("Yamada*")
        qtbot.keyClick(window.form.name, Qt.Key.Key_Return)
    proxy, tree = window.results.proxy, window.results.tree
    mr = next(proxy.index(r, 0) for r in range(proxy.rowCount()) if proxy.index(r, 0).data(ROW_ROLE).description == "MR Head")
    tree.setCurrentIndex(mr)
    tree.setFocus()
    with qtbot.waitSignal(window.retrieve.queueFinished, timeout=TIMEOUT_MS):
        qtbot.keyClick(tree, Qt.Key.Key_Return)

    sample = next(s for s in sample_studies() if s.description == "MR Head")
    row = window.transfers.rows()[0]
    assert (row.state, row.completed, row.failed, row.warning) == (TransferState.DONE, 40, 0, 0)
    assert set(files_on_disk(AppSettings().destination)) == set(sample.instance_uids)
    assert sorted(counter.stored) == sorted(sample.instance_uids) and not counter.failed and not counter.warnings
    assert row.relative_folder() == "Yamada_Tarou_PP-0002/20230620_MR_Head_ACC-23-0042"
