"""Retrieve through the real window against the demo PACS: selection → queue → worker → files → panel.

Every test waits on signals or on the model (``waitUntil``), never on time. Throttled peers
(``Faults.delay_per_instance``) only make a retrieve last long enough to act on it mid-way.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
from PySide6.QtCore import QItemSelectionModel, Qt
from PySide6.QtGui import QDesktopServices

from pacspull.core.demo_pacs import DemoPacs, Faults
from pacspull.core.retrieve_process import SPARES
from pacspull.core.samples import SampleStudy, sample_studies
from pacspull.core.settings import AppSettings
from pacspull.gui.models.study_model import ROW_ROLE
from pacspull.gui.models.transfer_model import ISSUE_COLUMNS, TransferState

from gui_helpers import SubOperationCounter, files_on_disk, leftovers, node_for

TIMEOUT_MS = 20_000


def _sample(description: str) -> SampleStudy:
    return next(s for s in sample_studies() if s.description == description)


def _search(qtbot, window) -> None:
    with qtbot.waitSignal(window.search.finished, timeout=TIMEOUT_MS):
        qtbot.keyClick(window.form.name, Qt.Key.Key_Return)


def _study_index(window, description: str):
    proxy = window.results.proxy
    return next(proxy.index(r, 0) for r in range(proxy.rowCount())
                if proxy.index(r, 0).data(ROW_ROLE).description == description)


def _select(window, *indexes, clear: bool = True) -> None:
    selection = window.results.tree.selectionModel()
    flags = QItemSelectionModel.SelectionFlag.Rows
    if clear:
        selection.clearSelection()
    for index in indexes:
        selection.select(index, QItemSelectionModel.SelectionFlag.Select | flags)


def _retrieve(qtbot, window, *descriptions: str) -> None:
    """Select these studies in the results and press Enter in the tree."""
    _select(window, *(_study_index(window, d) for d in descriptions))
    window.results.tree.setFocus()
    qtbot.keyClick(window.results.tree, Qt.Key.Key_Return)


@pytest.fixture
def counter(qtbot) -> SubOperationCounter:  # type: ignore[no-untyped-def]
    return SubOperationCounter()


def _window(make_window, node, counter: SubOperationCounter):
    window = make_window(node)
    window.retrieve.workerStarted.connect(counter.attach)
    return window


@pytest.fixture
def own_pacs(sample_files: list[Path]) -> Iterator[DemoPacs]:
    """A demo PACS of this test only, for faults that must not reach other tests."""
    with DemoPacs(files=sample_files, port=0) as pacs:
        yield pacs


def _destination() -> Path:
    return AppSettings().destination  # the default below this test's PACSPULL_DATA_DIR


def test_retrieve_puts_exactly_the_expected_files_on_disk_and_counts_every_sub_operation(
        qtbot, make_window, peer_node, counter):
    window = _window(make_window, peer_node, counter)
    _search(qtbot, window)
    ct, mr = _sample("CT Thorax Übersicht"), _sample("MR Head")
    # The whole CT study, and series 2 of the MR study (picked after expanding it).
    mr_index = _study_index(window, "MR Head")
    with qtbot.waitSignal(window.model.rowsInserted, timeout=TIMEOUT_MS):
        window.results.tree.expand(mr_index)
    proxy = window.results.proxy
    t2 = next(proxy.index(r, 0, mr_index) for r in range(proxy.rowCount(mr_index))
              if proxy.index(r, 0, mr_index).data(ROW_ROLE).number == 2)
    _select(window, _study_index(window, "CT Thorax Übersicht"), t2)

    with qtbot.waitSignal(window.retrieve.queueFinished, timeout=TIMEOUT_MS) as finished:
        qtbot.mouseClick(window.results.retrieve_button, Qt.MouseButton.LeftButton)

    expected = set(ct.instance_uids) | set(next(s for s in mr.series if s.series_number == 2).instance_uids)
    on_disk = files_on_disk(_destination())
    assert set(on_disk) == expected
    assert not leftovers(_destination())
    rows = window.transfers.rows()
    assert [r.state for r in rows] == [TransferState.DONE, TransferState.DONE]
    assert [(r.completed, r.failed, r.warning, r.skipped) for r in rows] == [(61, 0, 0, 0), (20, 0, 0, 0)]
    assert [r.progress_text() for r in rows] == ["61 / 61", "20 / 20"]
    assert [r.scope for r in rows] == ["whole study, 3 series", "series 2"]
    # One instanceStored per stored instance, no failed or warning signal: exactly the sub-operations.
    assert sorted(counter.stored) == sorted(expected)
    assert len(counter.stored) == sum(r.completed + r.warning for r in rows)
    assert len(counter.failed) == sum(r.failed for r in rows) == 0
    assert len(counter.warnings) == sum(r.warning for r in rows) == 0
    # Where the files went: the CT study has a folder of its own, named after patient and study.
    assert rows[0].relative_folder() == "Müller_Jürgen_PP-0001/20240115_CT_Thorax_Übersicht_ACC-24-0001"
    assert all(p.is_relative_to(rows[0].folder) for uid, p in on_disk.items() if uid in ct.instance_uids)
    assert finished.args[0].startswith("Retrieve finished: 2 of 2 transfers complete, 81 images stored")
    assert window.statusBar().currentMessage() == finished.args[0]
    panel = window.progress_panel
    assert panel.headline.text().startswith("All transfers ended: 2 of 2 complete, 81 images on disk")
    assert panel.where.text() == f'Saving to: <a href="open">{_destination()}</a>'
    assert window.bottom_tabs.tabText(0) == "Transfers"


def test_retrieving_again_skips_what_is_on_disk_and_a_queued_duplicate_is_refused(
        qtbot, make_window, peer_node, counter):
    window = _window(make_window, peer_node, counter)
    _search(qtbot, window)
    with qtbot.waitSignal(window.retrieve.queueFinished, timeout=TIMEOUT_MS):
        _retrieve(qtbot, window, "CT Abdomen")
    with qtbot.waitSignal(window.retrieve.queueFinished, timeout=TIMEOUT_MS):
        _retrieve(qtbot, window, "CT Abdomen")
    first, again = window.transfers.rows()
    assert (first.completed, first.skipped) == (5, 0)
    assert (again.state, again.completed, again.skipped) == (TransferState.DONE, 0, 5)
    assert len(counter.stored) == 5

    window.retrieve.set_parallel(1)
    _retrieve(qtbot, window, "Gescanntes Dokument")
    _retrieve(qtbot, window, "Gescanntes Dokument")  # still queued or running: not queued twice
    assert window.statusBar().currentMessage() == "Already in the transfer queue"
    qtbot.waitUntil(lambda: window.retrieve.active == 0, timeout=TIMEOUT_MS)
    assert len(window.transfers.rows()) == 3


def _retrieve_with_faults(qtbot, make_window, own_pacs, counter, faults: Faults, description: str):
    """Search ``own_pacs`` (with ``faults``) in a new window and retrieve one study; the window and its
    finished transfer row."""
    own_pacs.faults = faults
    window = _window(make_window, node_for(own_pacs.port), counter)
    _search(qtbot, window)
    with qtbot.waitSignal(window.retrieve.rowFinished, timeout=TIMEOUT_MS) as ended:
        _retrieve(qtbot, window, description)
    return window, ended.args[0]


def _issues_shown(window, row) -> list[dict[str, str]]:
    """The details' failed/warning instances of ``row`` (which the details show), cell by cell."""
    details = window.progress_panel.details
    assert details.row is not None and details.row.id == row.id
    return [{c.header: details.issues.index(r, i).data() for i, c in enumerate(ISSUE_COLUMNS)}
            for r in range(details.issues.rowCount())]


def test_failed_sub_operations_show_their_reason_and_retry_completes_the_study(
        qtbot, make_window, own_pacs, counter):
    study = _sample("CT Abdomen")
    failing = set(study.instance_uids[1:3])
    window, row = _retrieve_with_faults(qtbot, make_window, own_pacs, counter,
                                        Faults(fail_sop_instance_uids=frozenset(failing)), "CT Abdomen")
    assert (row.state, row.completed, row.failed) == (TransferState.INCOMPLETE, 3, 2)
    assert row.state_text() == "Incomplete, 2 failed"
    assert row.progress_text() == "3 / 5"  # on disk of all: an ended bar never looks complete when it is not
    assert set(counter.failed) == failing and len(counter.stored) == 3
    assert set(files_on_disk(_destination())) == set(study.instance_uids) - failing
    # The details view lists each failed instance with its status decoded and the reason.
    shown = _issues_shown(window, row)
    details = window.progress_panel.details
    assert {s["SOP Instance UID"] for s in shown} == failing
    assert {(s["Result"], s["Status"]) for s in shown} == {("Failed", "0xB000")}
    assert all(s["Reason"] == "the PACS reports it could not send this instance" for s in shown)
    assert all("failures or warnings" in s["Meaning"] for s in shown)
    assert details.issues_caption.text() == "2 failed instances:"
    assert details.retry_button.isEnabled() and not details.cancel_button.isEnabled()
    assert details.retry_button.text() == "Retry failed"

    own_pacs.faults = Faults()
    with qtbot.waitSignal(window.retrieve.rowFinished, timeout=TIMEOUT_MS) as ended:
        qtbot.mouseClick(details.retry_button, Qt.MouseButton.LeftButton)
    row = ended.args[0]
    assert (row.state, row.completed, row.failed, row.skipped) == (TransferState.DONE, 2, 0, 3)
    assert set(files_on_disk(_destination())) == set(study.instance_uids)
    assert sorted(counter.stored) == sorted(study.instance_uids)
    assert details.issues.rowCount() == 0 and details.issues_caption.text() == "No failed or warning instances."
    assert not details.retry_button.isEnabled()


def test_mislabelled_instances_show_as_warnings_and_are_kept(qtbot, make_window, own_pacs, counter):
    study = _sample("CT Abdomen")
    mislabelled = set(study.instance_uids[:2])
    window, row = _retrieve_with_faults(qtbot, make_window, own_pacs, counter,
                                        Faults(mislabel_sop_instance_uids=frozenset(mislabelled)), "CT Abdomen")
    assert (row.state, row.completed, row.warning, row.failed) == (TransferState.DONE, 3, 2, 0)
    assert row.state_text() == "Done, 2 warnings" and row.progress_text() == "5 / 5"
    assert set(counter.warnings) == mislabelled and sorted(counter.stored) == sorted(study.instance_uids)
    assert set(files_on_disk(_destination())) == set(study.instance_uids)
    cells = {window.transfers.headerData(c, Qt.Orientation.Horizontal): window.transfers.index(0, c).data()
             for c in range(window.transfers.columnCount())}
    assert (cells["State"], cells["Stored"], cells["Warnings"], cells["Failed"]) == ("Done, 2 warnings", "3", "2", "0")
    assert cells["C-GET status"] == "0xB000 warning"
    shown = _issues_shown(window, row)
    details = window.progress_panel.details
    assert {s["SOP Instance UID"] for s in shown} == mislabelled
    assert {(s["Result"], s["Status"]) for s in shown} == {("Warning", "0xB007")}
    assert all(s["Reason"] == "the data set says SOP class Secondary Capture Image Storage "
               "(1.2.840.10008.5.1.4.1.1.7), the request CT Image Storage (1.2.840.10008.5.1.4.1.1.2)" for s in shown)
    assert details.issues_caption.text() == "2 warnings:"
    assert not details.retry_button.isEnabled()  # nothing is missing: a retry would fetch nothing


def test_cancel_mid_way_shows_cancelled_with_what_was_kept(qtbot, make_window, own_pacs, counter):
    own_pacs.faults = Faults(delay_per_instance=0.03)
    window = _window(make_window, node_for(own_pacs.port), counter)
    _search(qtbot, window)
    _retrieve(qtbot, window, "CT Thorax Übersicht")
    qtbot.waitUntil(lambda: window.transfers.rows()[0].completed >= 3, timeout=TIMEOUT_MS)
    details = window.progress_panel.details
    assert details.cancel_button.isEnabled() and details.status.text().startswith("Retrieving: ")

    with qtbot.waitSignal(window.retrieve.rowFinished, timeout=TIMEOUT_MS) as ended:
        qtbot.mouseClick(details.cancel_button, Qt.MouseButton.LeftButton)
    row = ended.args[0]
    on_disk = files_on_disk(_destination())
    assert row.state is TransferState.CANCELLED
    assert 3 <= row.completed < 61 and row.kept == row.completed == len(on_disk) == len(counter.stored)
    assert row.state_text() == f"Cancelled, {row.completed} kept"
    assert row.progress_text() == f"{row.completed} / 61"
    assert row.message.startswith(f"Cancelled: {row.completed} images kept in {row.folder}")
    assert set(on_disk) <= set(_sample("CT Thorax Übersicht").instance_uids)
    assert not leftovers(_destination())
    assert details.retry_button.isEnabled() and details.retry_button.text() == "Resume"


def test_transfers_run_one_after_another_unless_more_are_allowed(qtbot, make_window, own_pacs, counter):
    own_pacs.faults = Faults(delay_per_instance=0.05)
    window = _window(make_window, node_for(own_pacs.port), counter)
    _search(qtbot, window)
    _retrieve(qtbot, window, "CT Thorax Übersicht", "MR Head", "CT Abdomen")
    states = [r.state for r in window.transfers.rows()]
    assert states == [TransferState.RUNNING, TransferState.QUEUED, TransferState.QUEUED]
    assert window.progress_panel.headline.text().startswith("Transfer 1 of 3 · 0 of 106 images (0%)")
    assert window.bottom_tabs.tabText(0) == "Transfers (3 active)"

    window.retrieve.set_parallel(2)
    states = [r.state for r in window.transfers.rows()]
    assert states == [TransferState.RUNNING, TransferState.RUNNING, TransferState.QUEUED]

    with qtbot.waitSignal(window.retrieve.queueFinished, timeout=TIMEOUT_MS) as finished:
        qtbot.mouseClick(window.progress_panel.cancel_all_button, Qt.MouseButton.LeftButton)
    assert {r.state for r in window.transfers.rows()} == {TransferState.CANCELLED}
    assert window.transfers.rows()[2].message == "Cancelled before it started: nothing retrieved."
    assert "3 cancelled" in finished.args[0]
    qtbot.mouseClick(window.progress_panel.clear_button, Qt.MouseButton.LeftButton)
    assert window.transfers.rowCount() == 0
    assert window.progress_panel.stack.currentWidget() is window.progress_panel.empty


def _client_threads() -> list[threading.Thread]:
    """Our side's retrieve threads: the cancel watchers and requestor associations."""
    from pynetdicom.association import Association

    return [t for t in threading.enumerate() if t.name == "pacspull-cancel"
            or (isinstance(t, Association) and t.is_requestor)]


def test_the_engine_runs_in_a_process_of_its_own(qtbot, make_window, own_pacs, counter):
    """The window's process only relays: no association of ours in it, so the engine's Python never holds
    the GUI thread's GIL (benchmarks/gui_stall.py measures what that is worth)."""
    own_pacs.faults = Faults(delay_per_instance=0.03)
    window = _window(make_window, node_for(own_pacs.port), counter)
    workers = []
    window.retrieve.workerStarted.connect(workers.append)
    SPARES.discard()
    assert SPARES.pid is None
    _search(qtbot, window)
    # Studies found: a retrieve process starts now (Python and imports), before anyone clicks Retrieve.
    qtbot.waitUntil(lambda: SPARES.pid is not None, timeout=TIMEOUT_MS)
    warm = SPARES.pid
    assert warm is not None and _alive(warm)
    with qtbot.waitSignal(window.retrieve.queueFinished, timeout=TIMEOUT_MS):
        _retrieve(qtbot, window, "CT Abdomen")
        qtbot.waitUntil(lambda: window.transfers.rows()[0].completed >= 2, timeout=TIMEOUT_MS)
        pid = workers[0].child_pid
        assert pid == warm and pid != os.getpid() and _alive(pid)
        assert not _client_threads()
    assert window.transfers.rows()[0].state is TransferState.DONE
    assert sorted(counter.stored) == sorted(files_on_disk(_destination())) == sorted(_sample("CT Abdomen").instance_uids)
    assert not _alive(pid)  # it exited (and was reaped) with the transfer


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def test_queueing_updates_the_panel_once_and_at_once(qtbot, make_window, own_pacs, counter):
    """Queueing fires four model, selection and queue signals; the panel redraws its lines once (about
    2 ms of the GUI thread each time), and before start_retrieve returns."""
    own_pacs.faults = Faults(delay_per_instance=0.05)
    window = _window(make_window, node_for(own_pacs.port), counter)
    _search(qtbot, window)
    updates: list[int] = []
    window.progress_panel.activeChanged.connect(updates.append)  # emitted at the end of every update
    window.start_retrieve([s for s in window.model.studies()
                           if s.description in ("CT Abdomen", "MR Head", "CT Thorax Übersicht")])
    assert updates == [3]
    assert window.progress_panel.headline.text().startswith("Transfer 1 of 3 · 0 of 106 images (0%)")
    with qtbot.waitSignal(window.retrieve.queueFinished, timeout=TIMEOUT_MS):
        window.retrieve.cancel_all()


def test_queued_transfers_find_their_child_process_started(qtbot, make_window, peer_node, counter):
    """While one transfer runs, the next one's child process starts (Python and imports take ~0.3 s);
    none is left once the queue is done."""
    window = _window(make_window, peer_node, counter)
    started: list[tuple[object, int | None]] = []  # each worker, and the spare waiting when it started
    window.retrieve.workerStarted.connect(lambda worker: started.append((worker, SPARES.pid)))
    _search(qtbot, window)
    with qtbot.waitSignal(window.retrieve.queueFinished, timeout=TIMEOUT_MS):
        _retrieve(qtbot, window, "CT Abdomen", "胸部正位", "Gescanntes Dokument")
    assert [r.state for r in window.transfers.rows()] == [TransferState.DONE] * 3
    pids = [worker.child_pid for worker, _ in started]
    assert len(set(pids)) == 3 and os.getpid() not in pids
    assert [spare for _, spare in started[1:]] == pids[1:]  # each later one took the spare waiting for it
    assert SPARES.pid is None
    qtbot.waitUntil(lambda: not any(_alive(pid) for pid in pids), timeout=TIMEOUT_MS)


def test_closing_mid_retrieve_asks_then_cancels_and_leaves_no_thread(
        qtbot, make_window, own_pacs, counter, questions):
    own_pacs.faults = Faults(delay_per_instance=0.03)
    window = _window(make_window, node_for(own_pacs.port), counter)
    _search(qtbot, window)
    workers = []
    window.retrieve.workerStarted.connect(workers.append)
    _retrieve(qtbot, window, "CT Thorax Übersicht", "MR Head")
    qtbot.waitUntil(lambda: window.transfers.rows()[0].completed >= 2, timeout=TIMEOUT_MS)

    questions.answer = questions.answer.No
    window.close()
    assert window.isVisible() and len(questions.asked) == 1
    assert questions.asked[0].startswith("Quit PacsPull?\n2 transfers still running or queued")
    assert window.retrieve.running == 1  # answering No changed nothing

    questions.answer = questions.answer.Yes
    window.close()
    assert not window.isVisible() and len(questions.asked) == 2
    assert window.context.runner.active == 0  # every worker thread ended inside closeEvent
    assert not _client_threads() and not any(_alive(w.child_pid) for w in workers)  # no retrieve process left
    on_disk = files_on_disk(_destination())
    assert 2 <= len(on_disk) < 61 and not leftovers(_destination())
    # The last instanceStored signals were queued while closeEvent waited; they still arrive, one per file.
    qtbot.waitUntil(lambda: len(counter.stored) == len(on_disk), timeout=TIMEOUT_MS)
    assert set(counter.stored) == set(on_disk)


def test_open_folder_opens_the_transfer_folder(qtbot, make_window, peer_node, counter, monkeypatch):
    opened: list[str] = []
    monkeypatch.setattr(QDesktopServices, "openUrl", lambda url: opened.append(url.toLocalFile()) or True)
    window = _window(make_window, peer_node, counter)
    _search(qtbot, window)
    with qtbot.waitSignal(window.retrieve.queueFinished, timeout=TIMEOUT_MS):
        _retrieve(qtbot, window, "胸部正位")
    row = window.transfers.rows()[0]
    qtbot.mouseClick(window.progress_panel.details.open_button, Qt.MouseButton.LeftButton)
    window.progress_panel.where.linkActivated.emit("open")  # the destination path under the headline is a link
    assert opened == [str(row.folder), str(_destination())]
    assert row.relative_folder() == "Wang_XiaoDong_PP-0003/20191231_胸部正位_ACC-19-1231"


def test_an_unusable_destination_fails_the_transfer_with_a_message(qtbot, make_window, peer_node, counter, tmp_path):
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    window = _window(make_window, peer_node, counter)
    window.context.settings = AppSettings(destination=tmp_path / "a-file" / "below")
    _search(qtbot, window)
    with qtbot.waitSignal(window.retrieve.rowFinished, timeout=TIMEOUT_MS) as ended:
        _retrieve(qtbot, window, "CT Abdomen")
    row = ended.args[0]
    assert row.state is TransferState.FAILED
    assert row.message.startswith("Destination: ")
    assert window.progress_panel.details.status.text().startswith("Failed.")
