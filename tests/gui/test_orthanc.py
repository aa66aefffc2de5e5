"""The window against a real PACS: Orthanc holding the sample studies (skipped when Orthanc is missing)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from peers import OrthancPeer, need_binary
from PySide6.QtCore import Qt

from pacspull.core.query import QueryRequest, find
from pacspull.gui.models.study_model import ROW_ROLE

from gui_helpers import node_for

pytestmark = pytest.mark.peer
TIMEOUT_MS = 30_000


@pytest.fixture(scope="module")
def orthanc(tmp_path_factory: pytest.TempPathFactory, sample_files: list[Path]) -> Iterator[OrthancPeer]:
    """Orthanc (AET ORTHANC) with the sample studies; the same setup as tests/integration's fixture."""
    need_binary("Orthanc", "orthanc")
    peer = OrthancPeer(tmp_path_factory.mktemp("orthanc-gui"), nodelay=True, graceful_stop=False)
    peer.start()
    try:
        peer.load(sample_files)
        yield peer
    finally:
        peer.stop()


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
