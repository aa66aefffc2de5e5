"""The transfer queue's models (qtmodeltester), their texts, and grouping a selection into requests."""

from __future__ import annotations

import dataclasses
import subprocess
import sys
from pathlib import Path

from PySide6.QtCore import Qt

from pacspull.core.get import RetrieveRequest, SubOperationIssue
from pacspull.core.query import SeriesRow, StudyRow
from pacspull.core.status import describe
from pacspull.gui.models.transfer_model import (
    COLUMNS,
    FRACTION_ROLE,
    PROGRESS_COLUMN,
    ROW_ROLE,
    IssueKind,
    IssueModel,
    TransferId,
    TransferModel,
    TransferRow,
    TransferState,
    issues_of,
)
from pacspull.gui.retrieve import group_selection, request_for
from pacspull.gui.widgets.progress_panel import TransferDetails, headline, pacs_line, status_line

from gui_helpers import node_for

DEST = Path("/data/Downloads")


def _row(n: int, **changes: object) -> TransferRow:
    base = TransferRow(id=TransferId(n), request=RetrieveRequest(f"1.2.3.{n}", expected=61), node=node_for(104),
                       destination=DEST, layout="{SOPInstanceUID}.dcm", patient="Müller, Jürgen",
                       patient_id="PP-0001", study="CT Thorax · 2024-01-15", scope="whole study, 3 series",
                       remaining=61)
    return dataclasses.replace(base, **changes)  # type: ignore[arg-type]


def _issue(uid: str, code: int = 0xA702) -> SubOperationIssue:
    return SubOperationIssue(uid, describe(code), "the PACS reports it could not send this instance")


def test_transfer_model_passes_qtmodeltester_through_adds_updates_and_removals(qtmodeltester):
    model = TransferModel()
    qtmodeltester.check(model)
    model.add([_row(1), _row(2), _row(3)])
    model.update(_row(2, state=TransferState.RUNNING, completed=30, remaining=31, elapsed=3.0,
                      bytes_received=3_000_000, eta=3.1, folder=DEST / "Müller" / "CT"))
    model.update(_row(3, state=TransferState.INCOMPLETE, completed=59, failed=2, remaining=0,
                      failures=(_issue("1.9.1"), _issue("1.9.2"))))
    qtmodeltester.check(model)
    model.remove([TransferId(1)])
    qtmodeltester.check(model)
    assert [r.id for r in model.rows()] == [2, 3] and model.position(TransferId(3)) == 1


def test_an_unchanged_update_repaints_nothing(qtbot):
    model = TransferModel()
    model.add([_row(1)])
    with qtbot.assertNotEmitted(model.dataChanged):
        assert not model.update(_row(1))
    with qtbot.waitSignal(model.dataChanged):
        assert model.update(_row(1, completed=1, remaining=60))


def test_an_update_repaints_only_the_columns_it_changed(qtbot):
    model = TransferModel()
    running = _row(1, state=TransferState.RUNNING, completed=10, remaining=51, elapsed=2.0,
                   bytes_received=1_000_000, runs=1)
    model.add([running])
    spans: list[tuple[int, int, int]] = []
    model.dataChanged.connect(lambda a, b, *_: spans.append((a.row(), a.column(), b.column())))
    headers = [c.header for c in COLUMNS]

    model.update(dataclasses.replace(running, completed=11, remaining=50, bytes_received=1_100_000))
    first, last = headers[spans[-1][1]], headers[spans[-1][2]]
    assert (spans[-1][0], first, last) == (0, "Progress", "Speed")  # not Patient, Study or Folder

    model.update(dataclasses.replace(model.rows()[0], failures=(_issue("1.9.1"),)))  # no cell shows it
    assert spans[-1] == (0, 0, 0)  # the row still reports the change, repainting one cell

    model.update(dataclasses.replace(model.rows()[0], folder=DEST / "elsewhere"))
    assert headers[spans[-1][1]] == headers[spans[-1][2]] == "Folder"


def test_columns_say_how_far_how_fast_and_where(qtbot):
    model = TransferModel()
    running = _row(1, state=TransferState.RUNNING, completed=30, remaining=31, elapsed=10.0,
                   bytes_received=3_100_000, eta=10.3, folder=DEST / "Müller_Jürgen_PP-0001" / "CT", runs=1)
    model.add([running])
    cells = {c.header: model.index(0, i).data() for i, c in enumerate(COLUMNS)}
    assert cells == {"Patient": "Müller, Jürgen", "Study": "CT Thorax · 2024-01-15",
                     "State": "Retrieving", "C-GET status": "", "Progress": "30 / 61", "Stored": "30", "Failed": "0", "Warnings": "0",
                     "Left": "31", "Skipped": "0", "Speed": "0.31 MB/s", "Elapsed": "10.0 s", "ETA": "0:10",
                     "Folder": "Müller_Jürgen_PP-0001/CT"}
    assert abs(model.index(0, PROGRESS_COLUMN).data(FRACTION_ROLE) - 30 / 61) < 1e-9
    assert model.index(0, 0).data(ROW_ROLE) is running
    assert headline([running], [running]) == \
        "Transfer 1 of 1 · 30 of 61 images (49%) · 3 images/s, 0.31 MB/s · all done in about 0:10"
    assert status_line(running) == "Retrieving: 30 of 61 images · 3 images/s, 0.31 MB/s · about 0:10 left for this one"
    done = _row(2, state=TransferState.DONE, completed=0, skipped=61, remaining=0, elapsed=0.4, runs=2)
    assert done.state_text() == "Done" and done.fraction == 1.0
    assert status_line(done) == "Done: 61 images on disk (0 retrieved, 61 already there) in 0.4 s."
    cancelled = _row(3, state=TransferState.CANCELLED, completed=12, remaining=49)
    assert cancelled.state_text() == "Cancelled, 12 kept" and cancelled.can_retry and not cancelled.can_cancel


def test_the_pacs_final_c_get_status_and_its_counts_are_shown_beside_ours(qtbot):
    model = TransferModel()
    status_column = next(i for i, c in enumerate(COLUMNS) if c.header == "C-GET status")
    some_failed = _row(1, state=TransferState.INCOMPLETE, completed=60, failed=1, remaining=0, status=describe(0xB000),
                       pacs_counts=(("completed", 60), ("failed", 1), ("warning", 0)), failures=(_issue("1.9.1"),))
    aborted = _row(2, state=TransferState.FAILED, remaining=61, status=describe(None),
                   message="The PACS aborted the association in answer to the C-GET request.")
    unknown = _row(3, state=TransferState.FAILED, remaining=0, status=describe(0xC000))
    never_sent = _row(4, state=TransferState.FAILED, message="Connect: connection refused.")
    model.add([some_failed, aborted, unknown, never_sent])
    assert [model.index(r, status_column).data() for r in range(4)] == ["0xB000 warning", "none", "0xC000 failure", ""]
    assert [model.index(r, status_column).data(Qt.ItemDataRole.ToolTipRole) for r in range(4)] == [
        "0xB000 (warning: sub-operations completed with one or more failures or warnings)",
        "No status: no response from the PACS (timeout or aborted association)",
        "0xC000 (failure: unable to process)", None]
    assert pacs_line(some_failed) == ("C-GET status 0xB000 (warning: sub-operations completed with one or more "
                                      "failures or warnings). The PACS counted 60 completed, 1 failed, 0 warnings.")
    assert pacs_line(aborted) == "C-GET status: none. No response from the PACS (timeout or aborted association)."
    assert pacs_line(unknown) == ("C-GET status 0xC000 (failure: unable to process). The PACS gave no sub-operation "
                                  "counts. It sent no instance: is the study on this PACS?")
    assert pacs_line(never_sent) == ""  # no C-GET went out: nothing the PACS said
    details = TransferDetails()
    qtbot.addWidget(details)
    details.show_row(some_failed)
    assert details.pacs.text() == pacs_line(some_failed) and not details.pacs.isHidden()
    assert details.pacs.property("state") == ""
    details.show_row(aborted)
    assert details.pacs.property("state") == "failed"
    assert details.pacs.textInteractionFlags() & Qt.TextInteractionFlag.TextSelectableByKeyboard
    details.show_row(never_sent)
    assert details.pacs.isHidden()


def test_issue_model_passes_qtmodeltester_and_decodes_statuses(qtmodeltester):
    model = IssueModel()
    qtmodeltester.check(model)
    warning = SubOperationIssue("1.9.3", describe(0xB007), "the data set says SOP class X, the request Y")
    row = _row(1, failures=(_issue("1.9.1"), _issue("1.9.2", 0xC210)), warnings=(warning,))
    model.set_issues(issues_of(row))
    qtmodeltester.check(model)
    assert [model.index(r, 0).data() for r in range(3)] == ["Failed", "Failed", "Warning"]
    assert [model.index(r, 1).data() for r in range(3)] == ["0xA702", "0xC210", "0xB007"]
    assert model.index(1, 2).data() == "error: cannot understand / unable to process"
    assert model.index(2, 0).data(ROW_ROLE).kind is IssueKind.WARNING
    model.set_issues(issues_of(row) + issues_of(row)[:1])  # appended: rows inserted, not a reset
    qtmodeltester.check(model)
    assert model.rowCount() == 4


def _study(uid: str, **values: object) -> StudyRow:
    return StudyRow(study_uid=uid, **values)  # type: ignore[arg-type]


def test_a_selection_groups_into_one_request_per_study():
    ct = _study("1.1", description="CT", study_date="20240115", instance_count=61, series_count=3,
                sop_classes=["1.2.840.10008.5.1.4.1.1.2"])
    mr = _study("1.2", description="MR", instance_count=40, series_count=2)
    s1 = SeriesRow(study_uid="1.2", series_uid="1.2.1", number=1, instance_count=20)
    s2 = SeriesRow(study_uid="1.2", series_uid="1.2.2", number=2, instance_count=20)
    ct_series = SeriesRow(study_uid="1.1", series_uid="1.1.1", number=1, instance_count=1)
    groups = group_selection([s1, ct, ct_series, s2], {"1.1": ct, "1.2": mr})
    assert [(g.study.study_uid, [s.series_uid for s in g.series]) for g in groups] == [
        ("1.2", ["1.2.1", "1.2.2"]), ("1.1", [])]
    mr_request, ct_request = (request_for(g) for g in groups)
    assert mr_request == RetrieveRequest("1.2", ("1.2.1", "1.2.2"), label="MR, series 1, 2", expected=40)
    assert ct_request == RetrieveRequest("1.1", label="CT 2024-01-15", sop_classes=("1.2.840.10008.5.1.4.1.1.2",),
                                         expected=61)


def test_the_pyside_reference_leak_guard_keeps_a_signal_flood_alive():
    # PySide6 6.12.0 frees True after a few hundred emits on Python 3.11 (gui/qtcompat.py). In a
    # subprocess, so that a regression aborts that process, not the test run.
    script = (
        "import pacspull.gui\n"
        "from PySide6.QtCore import QObject, Signal, QAbstractTableModel, QModelIndex\n"
        "class P(QObject):\n    s = Signal(int, object)\n"
        "class M(QAbstractTableModel):\n"
        "    def rowCount(self, p=QModelIndex()): return 1\n"
        "    def columnCount(self, p=QModelIndex()): return 1\n"
        "    def data(self, i, r=0): return None\n"
        "p, m = P(), M()\n"
        "for i in range(20000): p.s.emit(i, None); m.index(0, 0).data()\n"
        "for i in range(2000): p.s.connect(print)\n"
        "print('alive')\n"
    )
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0 and result.stdout.strip() == "alive", result.stderr[-1500:]


def test_settings_dialog_sets_how_many_transfers_run_at_once(qtbot, make_window, peer_node):
    from pacspull.gui.widgets.settings_dialog import SettingsDialog

    window = make_window(peer_node)
    assert window.context.parallel_retrieves == 1 and window.retrieve.parallel == 1
    dialog = SettingsDialog(window.context.settings, parallel=window.context.parallel_retrieves)
    qtbot.addWidget(dialog)
    dialog.parallel_spin.setValue(3)
    window.context.parallel_retrieves = dialog.parallel()
    window.context.save_settings(dialog.settings())
    assert window.retrieve.parallel == 3
    window.close()
    again = make_window()
    assert again.context.parallel_retrieves == 3 and again.retrieve.parallel == 3
    assert again.results.retrieve_button.text() == "Retrieve" and not again.results.retrieve_button.isEnabled()


def test_a_transfer_the_pacs_has_nothing_of_ends_not_on_the_pacs() -> None:
    """A retrieve that ends not found (core's RequestOutcome.not_found) is a failed transfer that says so,
    not an "Incomplete" one that a retry could complete."""
    from pacspull.core.get import RequestOutcome, RetrievalSummary
    from pacspull.gui.retrieve import _finished_row, _Run

    row = _row(1, state=TransferState.RUNNING)
    outcome = RequestOutcome(row.request, status=describe(0xC000), attempted=True, not_found=True,
                             error="not found on the PACS: its C-FIND matched no study 1.2.3.1; the C-GET was "
                                   "answered 0xC000 (failure: unable to process)")
    ended = _finished_row(row, _Run(None, row.id), RetrievalSummary(str(DEST), [outcome]))  # type: ignore[arg-type]
    assert ended.state is TransferState.FAILED and ended.state_text() == "Not on the PACS"
    assert ended.message == ("Its C-FIND matched no study 1.2.3.1; the C-GET was answered 0xC000 (failure: unable to "
                             "process).")
