"""Every C-GET outcome Orthanc produces, as the window shows it (issue #9, point 4).

The same six outcomes as tests/integration/test_orthanc_statuses.py, provoked the same way against a real
Orthanc (one for the module, ``orthanc`` in tests/gui/conftest.py; a second one that refuses C-GET for the
refused case), but retrieved through the window: search, select, Enter, and then read what a technician
reads: the row's cells (State, C-GET status, Stored / Failed / Warnings / Left / Skipped, Progress), the
details under the table (status sentence, the PACS's own status and counts, the failed instances, the
folder), the destination line, the status bar, and the files on disk.
"""

from __future__ import annotations

import dataclasses
import re
import time
from pathlib import Path
from typing import Any

import pytest
from PySide6.QtCore import Qt

from pacspull.core import storage
from pacspull.core.samples import SampleStudy, sample_studies
from pacspull.core.settings import AppSettings
from pacspull.core.storage import StudyWriter
from pacspull.gui.models.study_model import ROW_ROLE
from pacspull.gui.models.transfer_model import COLUMNS, ISSUE_COLUMNS
from pacspull.gui.workers import RetrieveWorker

from gui_helpers import files_on_disk, leftovers, node_for

pytestmark = pytest.mark.peer
TIMEOUT_MS = 30_000

STUDIES = {s.accession_number: s for s in sample_studies()}
CT = STUDIES["ACC-24-0001"]  # "CT Thorax Übersicht", 61 instances in 3 series
SINGLE = STUDIES["ACC-22-0815"]  # "Gescanntes Dokument", 1 instance


# -- driving the window --------------------------------------------------------------------------------


def _open(make_window: Any, peer: Any) -> Any:
    return make_window(node_for(peer.port, "Orthanc", peer.aet))


def _search(qtbot: Any, window: Any) -> None:
    with qtbot.waitSignal(window.search.finished, timeout=TIMEOUT_MS):
        qtbot.keyClick(window.form.name, Qt.Key.Key_Return)


def _study_index(window: Any, study: SampleStudy) -> Any:
    proxy = window.results.proxy
    return next(proxy.index(r, 0) for r in range(proxy.rowCount())
                if proxy.index(r, 0).data(ROW_ROLE).study_uid == study.study_instance_uid)


def _press_enter_on(qtbot: Any, window: Any, study: SampleStudy) -> None:
    """Select the study in the results and press Enter there (what a user does)."""
    tree = window.results.tree
    tree.setCurrentIndex(_study_index(window, study))
    tree.setFocus()
    qtbot.keyClick(tree, Qt.Key.Key_Return)


def _retrieve(qtbot: Any, window: Any, study: SampleStudy) -> None:
    """Search, select the study, Enter; return once its transfer ended."""
    _search(qtbot, window)
    with qtbot.waitSignal(window.retrieve.rowFinished, timeout=TIMEOUT_MS):
        _press_enter_on(qtbot, window, study)


# -- reading what the user sees ------------------------------------------------------------------------


def _cells(window: Any, position: int = 0) -> dict[str, str]:
    """The transfer table's row as displayed, by column header."""
    model = window.progress_panel.table.model()
    return {c.header: model.index(position, i).data() for i, c in enumerate(COLUMNS)}


def _tooltip(window: Any, header: str, position: int = 0) -> str:
    model = window.progress_panel.table.model()
    column = next(i for i, c in enumerate(COLUMNS) if c.header == header)
    return model.index(position, column).data(Qt.ItemDataRole.ToolTipRole)


def _counts(cells: dict[str, str]) -> tuple[str, ...]:
    return tuple(cells[h] for h in ("Stored", "Failed", "Warnings", "Left", "Skipped"))


def _issues(window: Any) -> list[dict[str, str]]:
    """The details' failed/warning instances table, as displayed."""
    issues = window.progress_panel.details.issues
    return [{c.header: issues.index(r, i).data() for i, c in enumerate(ISSUE_COLUMNS)}
            for r in range(issues.rowCount())]


def _destination() -> Path:
    return AppSettings().destination  # the default, below this test's PACSPULL_DATA_DIR


def _destination_is_shown(window: Any) -> None:
    details = window.progress_panel.details
    assert window.progress_panel.where.text() == f'Saving to: <a href="open">{_destination()}</a>'
    assert details.folder.text().startswith(("Files in: ", "Destination: "))
    assert str(_destination()) in details.folder.text()


def _failing_store(monkeypatch: pytest.MonkeyPatch, should_fail: Any, delay: float = 0.0) -> None:
    """Our own storage fails for chosen instances (answered 0xC211), as in the CLI test; ``delay`` slows
    every store down so that a cancel can land mid-study."""
    real = storage.StudyWriter.store

    def store(self: StudyWriter, **kwargs: Any) -> Any:
        if delay:
            time.sleep(delay)
        if should_fail(kwargs["sop_instance_uid"]):
            raise RuntimeError("simulated failure")
        return real(self, **kwargs)

    monkeypatch.setattr(storage.StudyWriter, "store", store)
    # The patch lives in this process: run the engine here too, not in its usual child process.
    monkeypatch.setattr(RetrieveWorker, "isolated", False)


# -- the six outcomes ----------------------------------------------------------------------------------


def test_success_shows_done_0x0000_and_every_instance_on_disk(qtbot, make_window, orthanc):
    window = _open(make_window, orthanc)
    _retrieve(qtbot, window, CT)

    cells = _cells(window)
    assert cells["State"] == "Done"
    assert cells["C-GET status"] == "0x0000 success"
    assert cells["Progress"] == "61 / 61"
    assert _counts(cells) == ("61", "0", "0", "0", "0")
    details = window.progress_panel.details
    assert details.status.text().startswith("Done: 61 images on disk (61 retrieved, 0 already there)")
    assert details.pacs.text() == ("C-GET status 0x0000 (success). "
                                   "The PACS counted 61 completed, 0 failed, 0 warnings.")
    assert details.issues_caption.text() == "No failed or warning instances."
    assert set(files_on_disk(_destination())) == set(CT.instance_uids) and not leftovers(_destination())
    assert cells["Folder"] == "Müller_Jürgen_PP-0001/20240115_CT_Thorax_Übersicht_ACC-24-0001"
    _destination_is_shown(window)
    assert window.statusBar().currentMessage().startswith("Retrieve finished: 1 of 1 transfer complete, 61 images")


def test_some_sub_operations_failed_shows_0xB000_exact_counts_and_the_failed_instance(
        qtbot, make_window, orthanc, monkeypatch):
    victim = CT.instance_uids[10]
    _failing_store(monkeypatch, lambda uid: uid == victim)
    window = _open(make_window, orthanc)
    _retrieve(qtbot, window, CT)

    cells = _cells(window)
    assert cells["State"] == "Incomplete, 1 failed"
    assert cells["C-GET status"] == "0xB000 warning"
    assert _tooltip(window, "C-GET status") == \
        "0xB000 (warning: sub-operations completed with one or more failures or warnings)"
    assert cells["Progress"] == "60 / 61"
    assert _counts(cells) == ("60", "1", "0", "0", "0")
    details = window.progress_panel.details
    assert details.status.text() == "Incomplete: 60 of 61 images on disk, 1 failed. " \
                                    "1 image could not be retrieved (see the list below)."
    # The PACS's own verdict and counts, beside ours: Orthanc counted our failed C-STORE answer.
    assert details.pacs.text() == ("C-GET status 0xB000 (warning: sub-operations completed with one or more "
                                   "failures or warnings). The PACS counted 60 completed, 1 failed, 0 warnings.")
    assert details.pacs.property("state") == ""
    # Which instance failed, and why: our own answer to Orthanc's C-STORE.
    assert details.issues_caption.text() == "1 failed instance:"
    assert _issues(window) == [{"Result": "Failed", "Status": "0xC211",
                                "Meaning": "error: cannot understand / unable to process",
                                "Reason": "unexpected error: simulated failure", "SOP Instance UID": victim}]
    on_disk = files_on_disk(_destination())
    assert set(on_disk) == set(CT.instance_uids) - {victim} and not leftovers(_destination())
    assert details.retry_button.isEnabled()
    _destination_is_shown(window)
    assert window.statusBar().currentMessage().startswith(
        "Retrieve finished: 0 of 1 transfer complete, 60 images stored")
    assert ", 1 failed" in window.statusBar().currentMessage()


def test_all_sub_operations_failed_shows_0xA702_and_nothing_on_disk(qtbot, make_window, orthanc, monkeypatch):
    _failing_store(monkeypatch, lambda uid: True)
    window = _open(make_window, orthanc)
    _retrieve(qtbot, window, SINGLE)

    cells = _cells(window)
    assert cells["State"] == "Incomplete, 1 failed"
    assert cells["C-GET status"] == "0xA702 failure"
    assert _counts(cells) == ("0", "1", "0", "0", "0")
    assert cells["Progress"] == "0 / 1"
    details = window.progress_panel.details
    meaning = "refused: out of resources, unable to perform sub-operations"
    assert details.status.text() == (f"Incomplete: 0 of 1 image on disk, 1 failed. "
                                     f"The PACS failed the C-GET: 0xA702 (failure: {meaning}).")
    assert details.pacs.text() == (f"C-GET status 0xA702 (failure: {meaning}). "
                                   "The PACS counted 0 completed, 1 failed, 0 warnings.")
    assert details.pacs.property("state") == "failed"
    assert [(i["Result"], i["Status"], i["SOP Instance UID"]) for i in _issues(window)] == \
        [("Failed", "0xC211", SINGLE.instance_uids[0])]
    assert files_on_disk(_destination()) == {}
    _destination_is_shown(window)


def test_a_study_the_pacs_does_not_have_shows_0xC000_and_that_nothing_was_sent(qtbot, make_window, orthanc):
    window = _open(make_window, orthanc)
    _search(qtbot, window)
    # A study the search listed but the PACS no longer has (deleted meanwhile): its UID is unknown to Orthanc.
    listed = _study_index(window, CT).data(ROW_ROLE)
    gone = dataclasses.replace(listed, study_uid="1.2.3.4.5.6.7.8.9")
    with qtbot.waitSignal(window.retrieve.rowFinished, timeout=TIMEOUT_MS):
        window.start_retrieve([gone])

    cells = _cells(window)
    assert cells["State"] == "Failed"
    assert cells["C-GET status"] == "0xC000 failure"
    assert _counts(cells)[:3] == ("0", "0", "0") and cells["Skipped"] == "0"
    details = window.progress_panel.details
    assert details.status.text().startswith("Failed. ")
    assert "the PACS refused the C-GET: 0xC000 (failure: unable to process)" in details.status.text()
    assert details.pacs.text().startswith("C-GET status 0xC000 (failure: unable to process).")
    assert details.pacs.text().endswith("It sent no instance: is the study on this PACS?")
    assert details.issue_table.isHidden() and details.issues_caption.text() == "No failed or warning instances."
    assert not _destination().exists() or files_on_disk(_destination()) == {}
    _destination_is_shown(window)
    assert window.statusBar().currentMessage().endswith("1 could not run")


def test_cancel_shows_0xFE00_what_was_kept_and_both_sides_counts(qtbot, make_window, orthanc, monkeypatch):
    _failing_store(monkeypatch, lambda uid: False, delay=0.03)  # slow enough to cancel mid-study
    window = _open(make_window, orthanc)
    panel = window.progress_panel
    _search(qtbot, window)
    _press_enter_on(qtbot, window, CT)
    qtbot.waitUntil(lambda: int(_cells(window)["Stored"]) >= 10, timeout=TIMEOUT_MS)
    # Cancel from the keyboard: the transfer table has focus, its row is selected, Delete.
    panel.table.setFocus()
    panel.select(window.transfers.rows()[0].id)
    with qtbot.waitSignal(window.retrieve.rowFinished, timeout=TIMEOUT_MS):
        qtbot.keyClick(panel.table, Qt.Key.Key_Delete)

    cells = _cells(window)
    on_disk = files_on_disk(_destination())
    kept = len(on_disk)
    assert 10 <= kept < 61 and set(on_disk) <= set(CT.instance_uids) and not leftovers(_destination())
    assert cells["State"] == f"Cancelled, {kept} kept"
    assert cells["C-GET status"] == "0xFE00 cancel"
    # Left: what the study still had, at most 61 minus what arrived (never more than the study holds).
    assert _counts(cells) == (str(kept), "0", "0", str(61 - kept), "0")
    assert cells["Progress"] == f"{kept} / 61"
    details = panel.details
    folder = _destination() / cells["Folder"]
    assert details.status.text() == f"Cancelled: {kept} images kept in {folder}."
    # Orthanc's own counts at its final answer: the C-STORE in flight when it stopped may count or not,
    # but they cover the study exactly; ours are shown beside them, never silently replaced.
    pacs = re.fullmatch(r"C-GET status 0xFE00 \(cancel: cancelled: sub-operations terminated by a cancel "
                        r"request\)\. The PACS counted (\d+) completed, 0 failed, 0 warnings, (\d+) remaining\.",
                        details.pacs.text())
    assert pacs is not None, details.pacs.text()
    pacs_completed, pacs_remaining = int(pacs[1]), int(pacs[2])
    assert pacs_completed in (kept - 1, kept) and pacs_completed + pacs_remaining == 61
    assert details.retry_button.isEnabled()
    _destination_is_shown(window)


def test_a_pacs_that_refuses_c_get_is_shown_as_failed_with_the_reason(
        qtbot, make_window, orthanc_factory, sample_files):
    refusing = orthanc_factory(allow_get=False)  # DicomAlwaysAllowGet off, no modality registered
    refusing.load(sample_files[:3])
    window = _open(make_window, refusing)
    _search(qtbot, window)  # C-FIND is allowed, so the study is listed
    listed = window.results.proxy.index(0, 0).data(ROW_ROLE)
    study = next(s for s in STUDIES.values() if s.study_instance_uid == listed.study_uid)
    with qtbot.waitSignal(window.retrieve.rowFinished, timeout=TIMEOUT_MS):
        _press_enter_on(qtbot, window, study)

    cells = _cells(window)
    assert cells["State"] == "Refused by the PACS"
    assert cells["C-GET status"] == "none"
    assert _tooltip(window, "C-GET status") == "No status: no response from the PACS (timeout or aborted association)"
    assert _counts(cells)[:3] == ("0", "0", "0")
    details = window.progress_panel.details
    reason = details.status.text()
    assert reason.startswith("Refused by the PACS. The PACS aborted the association in answer to the C-GET request")
    assert "it may not allow C-GET for calling AE 'PACSPULL'" in reason
    assert "ask the PACS admin to allow C-GET for this calling AE (PacsPull retrieves by C-GET, not C-MOVE)" in reason
    assert _tooltip(window, "State") == reason.removeprefix("Refused by the PACS. ")
    assert details.pacs.text() == "C-GET status: none. No response from the PACS (timeout or aborted association)."
    assert details.pacs.property("state") == "failed"
    # Which PACS refused, and the calling AE its administrator has to allow.
    assert details.title.text().endswith(f"from Orthanc (ORTHANC@127.0.0.1:{refusing.port}, as PACSPULL)")
    assert not _destination().exists() or files_on_disk(_destination()) == {}
    _destination_is_shown(window)
    assert window.statusBar().currentMessage().endswith("1 could not run")
