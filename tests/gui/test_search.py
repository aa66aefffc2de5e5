"""The search through the real window against the demo PACS: form → worker → model → view."""

from __future__ import annotations

from datetime import date

from PySide6.QtCore import QModelIndex, Qt
from PySide6.QtWidgets import QApplication

from pacspull.core.query import QueryRequest, SeriesRow, StudyRow, find
from pacspull.core.samples import sample_studies
from pacspull.gui.models.study_model import COLUMNS, ROW_ROLE, SeriesState

from gui_helpers import SlowFindScp, free_port, node_for

TIMEOUT_MS = 15_000


def _by_uid(rows: list) -> list:
    return sorted(rows, key=lambda r: r.study_uid)


def _search(qtbot, window, text: str = "") -> None:
    """Type ``text`` into the patient name field and press Enter; wait for the query to end."""
    with qtbot.waitSignal(window.search.finished, timeout=TIMEOUT_MS):
        if text.isascii():
            qtbot.keyClicks(window.form.name, text)
        else:  # QTest can only type ASCII keys
            window.form.name.setText(text)
        qtbot.keyClick(window.form.name, Qt.Key.Key_Return)


def test_typing_a_name_and_enter_fills_exactly_the_expected_rows(qtbot, make_window, peer_node):
    window = make_window(peer_node)
    _search(qtbot, window, "Müller*")

    expected = find(peer_node, QueryRequest(patient_name="Müller*")).rows
    assert _by_uid(window.model.studies()) == _by_uid(expected)
    samples = {s.study_instance_uid for s in sample_studies() if s.patient.name == "Müller^Jürgen"}
    assert {s.study_uid for s in window.model.studies()} == samples
    shown = {window.results.proxy.index(r, 0).data() for r in range(window.results.proxy.rowCount())}
    assert shown == {"Müller, Jürgen"}
    assert window.results.count.text() == "2 studies"
    assert window.form.search_button.text() == "Search"


def test_a_search_that_finds_nothing_says_so_and_what_to_loosen(qtbot, make_window, peer_node):
    """Not the "no results yet" of a window that never searched: the search ran, matched nothing, and a
    name typed without a wildcard is matched exactly (Müller finds no Müller^Jürgen)."""
    window = make_window(peer_node)
    from pacspull.gui.widgets.results_view import EMPTY_TEXT

    assert window.results.empty.text() == EMPTY_TEXT
    _search(qtbot, window, "Müller")
    assert window.model.studies() == [] and window.results.stack.currentWidget() is window.results.empty
    text = window.results.empty.text()
    assert text.startswith("No studies match this search.")
    assert "The PACS matches the name exactly: Müller* finds everything that begins with it." in text
    assert window.statusBar().currentMessage().startswith("0 studies from Test PACS")

    window.form.name.clear()
    _search(qtbot, window, "Müll*")
    assert window.results.stack.currentWidget() is window.results.tree and len(window.model.studies()) == 2
    window.form.name.clear()
    _search(qtbot, window, "Nobody*")
    assert "matches the name exactly" not in window.results.empty.text()  # it had a wildcard
    assert window.results.empty.text().startswith("No studies match this search.")


def test_empty_search_lists_every_sample_and_renders_non_ascii_names(qtbot, make_window, peer_node):
    window = make_window(peer_node)
    _search(qtbot, window)

    studies = window.model.studies()
    assert {s.study_uid for s in studies} == {s.study_instance_uid for s in sample_studies()}
    names = {window.results.proxy.index(r, 0).data() for r in range(window.results.proxy.rowCount())}
    assert names == {"Müller, Jürgen", "Yamada, Tarou (山田 太郎)", "Wang, XiaoDong (王 小东)", "Doe, Jane"}
    descriptions = {s.description for s in studies}
    assert "胸部正位" in descriptions and "CT Thorax Übersicht" in descriptions
    assert "6 studies from Test PACS" in window.statusBar().currentMessage()
    assert not window.results.note.isVisible()


def test_date_preset_today_finds_the_study_dated_today(qtbot, make_window, peer_node):
    window = make_window(peer_node)
    window.form.date.set_preset("today")
    _search(qtbot, window)
    assert [s.study_date for s in window.model.studies()] == [date.today().strftime("%Y%m%d")]


def test_expanding_a_study_fetches_its_series(qtbot, make_window, peer_node):
    window = make_window(peer_node)
    _search(qtbot, window, "Müller*")
    proxy, tree = window.results.proxy, window.results.tree
    ct = next(proxy.index(r, 0) for r in range(proxy.rowCount())
              if proxy.index(r, 0).data(ROW_ROLE).description == "CT Thorax Übersicht")
    study: StudyRow = ct.data(ROW_ROLE)
    assert proxy.rowCount(ct) == 0 and proxy.hasChildren(ct)

    with qtbot.waitSignal(window.model.rowsInserted, timeout=TIMEOUT_MS):
        tree.expand(ct)
    assert window.model.series_state(study.study_uid) is SeriesState.LOADED

    series = [proxy.index(r, 0, ct).data(ROW_ROLE) for r in range(proxy.rowCount(ct))]
    assert all(isinstance(s, SeriesRow) for s in series)
    sample = next(s for s in sample_studies() if s.study_instance_uid == study.study_uid)
    assert sorted((s.number, s.modality, s.description, s.instance_count) for s in series) == sorted(
        (se.series_number, se.modality, se.description, se.number_of_instances) for se in sample.series)
    assert proxy.index(0, 0, ct).data() == "Series 1"


def test_cancelling_a_query_leaves_the_window_usable(qtbot, make_window, peer_node):
    slow = SlowFindScp(count=400, interval=0.05)
    try:
        window = make_window(node_for(slow.port, "Slow PACS", "SLOWPACS"), peer_node, selected="Slow PACS")
        qtbot.keyClick(window.form.name, Qt.Key.Key_Return)
        qtbot.waitUntil(lambda: window.form.search_button.text() == "Cancel" and window.model.study_count() > 0,
                        timeout=TIMEOUT_MS)

        with qtbot.waitSignal(window.search.finished, timeout=TIMEOUT_MS) as blocker:
            qtbot.mouseClick(window.form.search_button, Qt.MouseButton.LeftButton)
        assert blocker.args[0].cancelled
        assert window.form.search_button.text() == "Search"
        assert "cancelled" in window.results.note.text()
        kept = window.model.study_count()
        assert 0 < kept < 400
        assert slow.cancelled.wait(10), "the PACS never saw the C-CANCEL"

        window.node_bar.combo.setCurrentText("Test PACS")
        _search(qtbot, window)
        assert window.model.study_count() == len(sample_studies())
        assert window.windowTitle() == "PacsPull — Test PACS"
    finally:
        slow.stop()


def test_a_new_search_drops_the_rows_of_the_one_it_replaces(qtbot, make_window, peer_node):
    slow = SlowFindScp(count=400, interval=0.05)
    try:
        window = make_window(node_for(slow.port, "Slow PACS", "SLOWPACS"), peer_node, selected="Slow PACS")
        qtbot.keyClick(window.form.name, Qt.Key.Key_Return)
        qtbot.waitUntil(lambda: window.model.study_count() > 0, timeout=TIMEOUT_MS)

        window.node_bar.combo.setCurrentText("Test PACS")
        _search(qtbot, window)
        qtbot.waitUntil(lambda: window.context.runner.active == 0, timeout=TIMEOUT_MS)  # the slow job ended
        names = {s.patient_name for s in window.model.studies()}
        assert len(names) == 4 and not any(n.startswith("Slow") for n in names)
    finally:
        slow.stop()


def test_a_failed_search_says_why_where_the_results_would_be(qtbot, make_window):
    window = make_window(node_for(free_port(), "Closed PACS"))
    with qtbot.waitSignal(window.search.failed, timeout=TIMEOUT_MS):
        qtbot.keyClick(window.form.name, Qt.Key.Key_Return)
    assert window.results.note.isVisible()
    assert "connection refused" in window.results.note.text()
    assert window.results.note.property("state") == "error"
    assert window.form.search_button.text() == "Search"


def test_capped_results_show_a_visible_note(qtbot, make_window, peer_node):
    window = make_window(peer_node)
    window.form.limit = 2
    _search(qtbot, window)
    assert window.model.study_count() == 2
    assert window.results.note.isVisible()
    assert "first 2 studies" in window.results.note.text()


def test_invalid_query_input_is_shown_next_to_the_form_and_nothing_runs(qtbot, make_window, peer_node):
    window = make_window(peer_node)
    window.form.date.set_range(date(2024, 2, 1), date(2024, 1, 1))
    with qtbot.assertNotEmitted(window.form.searchRequested):
        qtbot.keyClick(window.form.name, Qt.Key.Key_Return)
    assert window.form.error.isVisible()
    assert "date: the range must not end before it starts" in window.form.error.text()
    window.form.clear()
    assert not window.form.error.isVisible()


def test_quick_filter_keeps_matching_studies(qtbot, make_window, peer_node):
    window = make_window(peer_node)
    _search(qtbot, window)
    window.results.filter.setText("山田")
    proxy = window.results.proxy
    assert proxy.rowCount() == 2
    assert window.results.count.text() == "2 of 6 studies match the filter"
    window.results.filter.clear()
    assert proxy.rowCount() == 6


def test_sorting_by_patient_name(qtbot, make_window, peer_node):
    window = make_window(peer_node)
    _search(qtbot, window)
    window.results.tree.sortByColumn(0, Qt.SortOrder.AscendingOrder)
    proxy = window.results.proxy
    names = [proxy.index(r, 0).data() for r in range(proxy.rowCount())]
    assert names == sorted(names, key=str.casefold)


def test_selection_retrieve_signal_and_copy(qtbot, make_window, peer_node):
    window = make_window(peer_node)
    _search(qtbot, window, "Doe*")
    tree, proxy = window.results.tree, window.results.proxy
    assert not window.results.retrieve_action.isEnabled()
    tree.setCurrentIndex(proxy.index(0, 0))
    study: StudyRow = proxy.index(0, 0).data(ROW_ROLE)

    with qtbot.waitSignal(window.retrieveRequested) as blocker:
        window.results.retrieve_action.trigger()
    assert blocker.args[0] == [study]

    window.results.copy_uids()
    assert QApplication.clipboard().text() == study.study_uid
    window.results.copy_rows()
    header, row = QApplication.clipboard().text().splitlines()
    assert header.split("\t")[0] == COLUMNS[0].header
    assert row.split("\t")[:2] == ["Doe, Jane", "PP-0004"]


def test_the_results_tree_is_keyboard_navigable(qtbot, make_window, peer_node):
    window = make_window(peer_node)
    _search(qtbot, window, "Müller*")
    tree, proxy = window.results.tree, window.results.proxy
    tree.setFocus()
    tree.setCurrentIndex(proxy.index(0, 0))
    qtbot.keyClick(tree, Qt.Key.Key_Down)
    assert tree.currentIndex().row() == 1
    study = tree.currentIndex()
    with qtbot.waitSignal(window.model.rowsInserted, timeout=TIMEOUT_MS):
        qtbot.keyClick(tree, Qt.Key.Key_Right)
    assert tree.isExpanded(study) and proxy.rowCount(study) >= 1
    assert tree.currentIndex().parent() == QModelIndex() or tree.currentIndex().isValid()


def test_a_stalled_pacs_never_freezes_the_window(qtbot, make_window, peer_node):
    # Each answer takes 1.5 s; Cancel must free the window at once, not when the PACS next speaks.
    slow = SlowFindScp(count=3, interval=1.5)
    try:
        window = make_window(node_for(slow.port, "Stalled PACS", "SLOWPACS"), peer_node, selected="Stalled PACS")
        qtbot.keyClick(window.form.name, Qt.Key.Key_Return)
        qtbot.waitUntil(lambda: window.form.search_button.text() == "Cancel", timeout=TIMEOUT_MS)
        assert window.model.study_count() == 0
        with qtbot.waitSignal(window.search.finished, timeout=500):
            qtbot.keyClick(window.form.name, Qt.Key.Key_Escape)
        assert window.form.search_button.text() == "Search" and not window.search.running

        window.node_bar.combo.setCurrentText("Test PACS")
        _search(qtbot, window)
        assert window.model.study_count() == len(sample_studies())
        qtbot.waitUntil(lambda: window.context.runner.active == 0, timeout=TIMEOUT_MS)
        assert all(not s.patient_name.startswith("Slow") for s in window.model.studies())
    finally:
        slow.stop()
