"""Five retrieves queued back to back from the window (issue 9 §5), and the setting that says how many run
at once (``AppSettings.parallel_retrieves``, read by the window from settings.json)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from PySide6.QtCore import QItemSelectionModel, Qt

from pacspull.core.errors import InvalidInput
from pacspull.core.samples import SampleStudy, sample_studies
from pacspull.core.settings import AppSettings, load_settings, save_settings, settings_path
from pacspull.gui.models.study_model import ROW_ROLE
from pacspull.gui.models.transfer_model import TransferState

from gui_helpers import SubOperationCounter, files_on_disk, leftovers

TIMEOUT_MS = 60_000
FIVE = ("CT Thorax Übersicht", "MR Head", "CT Abdomen", "Gescanntes Dokument", "胸部正位")


def _sample(description: str) -> SampleStudy:
    return next(s for s in sample_studies() if s.description == description)


def _queue_one(qtbot, window, description: str) -> None:
    """Select one study in the results and press Enter, as a user queues a retrieve."""
    proxy = window.results.proxy
    index = next(proxy.index(r, 0) for r in range(proxy.rowCount())
                 if proxy.index(r, 0).data(ROW_ROLE).description == description)
    selection = window.results.tree.selectionModel()
    selection.clearSelection()
    selection.select(index, QItemSelectionModel.SelectionFlag.Select | QItemSelectionModel.SelectionFlag.Rows)
    window.results.tree.setFocus()
    qtbot.keyClick(window.results.tree, Qt.Key.Key_Return)


@pytest.mark.parametrize("parallel", [1, 3])
def test_five_retrieves_queued_back_to_back_all_finish_with_exactly_the_expected_files(
        qtbot, make_window, peer_node, parallel):
    save_settings(AppSettings(parallel_retrieves=parallel))  # as the Settings dialog left it last time
    window = make_window(peer_node)
    assert window.context.parallel_retrieves == parallel and window.retrieve.parallel == parallel
    counter = SubOperationCounter()
    window.retrieve.workerStarted.connect(counter.attach)
    running_at_start: list[int] = []
    window.retrieve.workerStarted.connect(lambda worker: running_at_start.append(window.retrieve.running))
    with qtbot.waitSignal(window.search.finished, timeout=TIMEOUT_MS):
        qtbot.keyClick(window.form.name, Qt.Key.Key_Return)

    with qtbot.waitSignal(window.retrieve.queueFinished, timeout=TIMEOUT_MS) as finished:
        for description in FIVE:  # five separate actions; none can end before the last is queued
            _queue_one(qtbot, window, description)
        states = [r.state for r in window.transfers.rows()]
        assert states == [TransferState.RUNNING] * parallel + [TransferState.QUEUED] * (5 - parallel)

    studies = [_sample(d) for d in FIVE]
    rows = window.transfers.rows()
    assert [r.state for r in rows] == [TransferState.DONE] * 5
    assert [(r.completed, r.failed, r.warning, r.skipped) for r in rows] == [
        (s.number_of_instances, 0, 0, 0) for s in studies]
    assert running_at_start and max(running_at_start) == parallel
    destination = AppSettings().destination
    on_disk = files_on_disk(destination)
    expected = {uid for s in studies for uid in s.instance_uids}
    assert set(on_disk) == expected  # every instance, nothing else
    assert sorted(counter.stored) == sorted(expected)  # each stored exactly once
    assert not counter.failed and not counter.warnings and not leftovers(destination)
    for row, study in zip(rows, studies):
        assert all(on_disk[uid].is_relative_to(row.folder) for uid in study.instance_uids), study.description
    total = sum(s.number_of_instances for s in studies)
    assert finished.args[0].startswith(f"Retrieve finished: 5 of 5 transfers complete, {total} images stored")


@pytest.mark.parametrize(("value", "ok"), [(1, True), ("4", True), (0, False), (5, False), ("two", False),
                                           (True, False), (2.5, False)])
def test_parallel_retrieves_is_validated_naming_the_field(value, ok):
    if ok:
        assert AppSettings(parallel_retrieves=value).parallel_retrieves == int(value)
        return
    with pytest.raises(InvalidInput) as info:
        AppSettings(parallel_retrieves=value)
    assert info.value.field == "parallel retrieves"
    assert str(info.value).startswith("parallel retrieves: must be a whole number from 1 to 4")


def test_the_window_keeps_the_count_in_the_settings_file_not_in_window_ini(qtbot, make_window, peer_node,
                                                                          isolated_dirs: Path):
    window = make_window(peer_node)
    assert window.context.parallel_retrieves == 1  # the default
    window.context.parallel_retrieves = 2
    assert window.retrieve.parallel == 2
    assert json.loads(settings_path().read_text(encoding="utf-8"))["parallel_retrieves"] == 2
    assert load_settings().parallel_retrieves == 2
    window_ini = isolated_dirs / "config" / "window.ini"
    assert not window_ini.exists() or "parallel" not in window_ini.read_text(encoding="utf-8")
    with pytest.raises(InvalidInput, match="parallel retrieves"):
        window.context.parallel_retrieves = 9
    assert window.context.parallel_retrieves == 2 and load_settings().parallel_retrieves == 2

    # Other settings saved afterwards (the Settings dialog's OK) keep the count.
    window.context.save_settings(AppSettings(max_results=50))
    assert load_settings().parallel_retrieves == 2 and load_settings().max_results == 50
