"""C-GET retrieval against Orthanc, dcmqrscp and the demo PACS: what lands on disk, byte for byte."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import threading
from pathlib import Path
from typing import Any

import pydicom
import pytest
from peers import node_of

from pacspull.core import association, samples
from pacspull.core.cli import main
from pacspull.core.demo_pacs import MISLABELLED_SOP_CLASS, DemoPacs, Faults
from pacspull.core.get import Retrieval, RetrievalListener, RetrieveRequest, RetrieveOptions
from pacspull.core.progress import CancelToken
from pacspull.core.storage import StudyWriter

STUDIES = {s.study_instance_uid: s for s in samples.sample_studies()}
INSTANCES = samples.sample_instances()
CT_STUDY = next(s for s in STUDIES.values() if s.accession_number == "ACC-24-0001")  # 61 CT, one RLE
MIXED_STUDY = next(s for s in STUDIES.values() if len(set(s.sop_class_uids)) > 1)


def dicom_files(folder: Path) -> list[Path]:
    return sorted(p for p in folder.rglob("*") if p.is_file() and not p.name.startswith("."))


def assert_same_as_samples(received: list[Path], sample_root: Path, uids: set[str]) -> None:
    """Every received file is a readable Part-10 file identical in UID, syntax and pixels to its source."""
    seen = set()
    for path in received:
        got = pydicom.dcmread(path)
        uid = got.SOPInstanceUID
        source = pydicom.dcmread(sample_root / INSTANCES[uid].relative_path)
        assert got.file_meta.TransferSyntaxUID == source.file_meta.TransferSyntaxUID
        assert got.SOPClassUID == source.SOPClassUID
        if "PixelData" in source:
            assert got.PixelData == source.PixelData
        seen.add(uid)
    assert seen == uids
    assert len(received) == len(uids)


@pytest.fixture
def sample_root(sample_files: list[Path]) -> Path:
    return Path(os.path.commonpath([str(p) for p in sample_files]))


class Recorder(RetrievalListener):
    """Counts every event, as the GUI's worker will turn each into a signal."""

    def __init__(self) -> None:
        self.stored: list[str] = []
        self.failed: list[Any] = []
        self.warnings: list[Any] = []
        self.summaries: list[Any] = []

    def instance_stored(self, outcome: Any, stored: Any) -> None:
        self.stored.append(stored.sop_instance_uid)

    def sub_operation_failed(self, outcome: Any, issue: Any) -> None:
        self.failed.append(issue)

    def sub_operation_warning(self, outcome: Any, issue: Any) -> None:
        self.warnings.append(issue)

    def finished(self, summary: Any) -> None:
        self.summaries.append(summary)


@pytest.mark.parametrize("peer_name", ["orthanc", "demo"])
def test_every_study_arrives_byte_for_byte(request: pytest.FixtureRequest, peer_name: str, tmp_path: Path,
                                           sample_root: Path) -> None:
    """All sample studies queued on one association: CT, MR, SR, secondary capture, multi-frame, RLE."""
    peer = request.getfixturevalue(peer_name)
    recorder = Recorder()
    requests = [RetrieveRequest(uid) for uid in STUDIES]
    summary = Retrieval(node_of(peer), requests, StudyWriter(tmp_path), listener=recorder).run()
    assert summary.ok, summary.to_json()
    all_uids = {u for s in STUDIES.values() for u in s.instance_uids}
    assert_same_as_samples(dicom_files(tmp_path), sample_root, all_uids)
    assert summary.total("completed") == len(all_uids) == len(recorder.stored)
    assert recorder.failed == [] and len(recorder.summaries) == 1
    # the RLE instance travelled compressed, as stored: no transcoding by the PACS
    rle = [p for p in dicom_files(tmp_path) if pydicom.dcmread(p, stop_before_pixels=True)
           .file_meta.TransferSyntaxUID == pydicom.uid.RLELossless]
    assert len(rle) == 1


def test_queue_runs_on_one_association(demo: DemoPacs, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    opened: list[Any] = []
    real = association.open_association

    def counting(*args: Any, **kwargs: Any) -> Any:
        assoc = real(*args, **kwargs)
        opened.append(assoc)
        return assoc

    monkeypatch.setattr("pacspull.core.get.open_association", counting)
    requests = [RetrieveRequest(uid) for uid in list(STUDIES)[:3]]
    summary = Retrieval(node_of(demo), requests, StudyWriter(tmp_path)).run()
    assert summary.ok
    assert len(opened) == 1  # the C-GETs; planning C-FINDs use their own short association
    assert len(dicom_files(tmp_path)) == sum(STUDIES[r.study_uid].number_of_instances for r in requests)


def test_dcmqrscp_serves_what_it_can_and_reports_the_rest(dcmqrscp: Any, tmp_path: Path, sample_root: Path) -> None:
    """dcmqrscp sends every instance of a class on that class's first context and cannot decompress RLE:
    the RLE instance fails (0xB000), the other 60 arrive intact."""
    summary = Retrieval(node_of(dcmqrscp), [RetrieveRequest(CT_STUDY.study_instance_uid)],
                        StudyWriter(tmp_path)).run()
    outcome = summary.outcomes[0]
    rle_uid = next(u for u, i in INSTANCES.items() if i.transfer_syntax_uid == pydicom.uid.RLELossless)
    assert outcome.status is not None and outcome.status.code == 0xB000
    assert outcome.completed == CT_STUDY.number_of_instances - 1
    assert [f.sop_instance_uid for f in outcome.failures] == [rle_uid]
    assert summary.exit_code == 1
    assert_same_as_samples(dicom_files(tmp_path), sample_root, set(CT_STUDY.instance_uids) - {rle_uid})


def test_series_level_fetches_that_series_only(any_peer: Any, tmp_path: Path, sample_root: Path) -> None:
    study = next(s for s in STUDIES.values() if len(s.series) > 1 and s.accession_number != "ACC-24-0001")
    series = study.series[1]
    summary = Retrieval(node_of(any_peer), [RetrieveRequest(study.study_instance_uid,
                                                             series_uids=(series.series_instance_uid,))],
                        StudyWriter(tmp_path)).run()
    assert summary.ok, summary.to_json()
    assert_same_as_samples(dicom_files(tmp_path), sample_root, set(series.instance_uids))


def test_a_study_or_series_the_pacs_does_not_have_is_not_found(any_peer: Any, tmp_path: Path,
                                                                capsys: pytest.CaptureFixture[str]) -> None:
    """Not an empty success: whatever the PACS answers such a C-GET (the demo PACS and dcmqrscp success
    with no sub-operations, Orthanc 0xC000), the request says not found, and the CLI exits 1 (not 4)."""
    study = MIXED_STUDY.study_instance_uid  # (one that dcmqrscp serves whole)
    missing_series = RetrieveRequest(study, series_uids=("1.2.3.4.5.6.7.8.9",))
    # As the window asks: classes and count known from its own search, so planning asks nothing.
    listed = RetrieveRequest("1.2.3.4.5.6.7.8", sop_classes=(samples.CT_IMAGE_STORAGE,), expected=5)
    summary = Retrieval(node_of(any_peer), [RetrieveRequest("1.2.3.4.5.6.7.8"), missing_series,
                                            RetrieveRequest(study)], StudyWriter(tmp_path / "api")).run()
    absent, series, present = summary.outcomes
    vanished = Retrieval(node_of(any_peer), [listed], StudyWriter(tmp_path / "api")).run().outcomes[0]
    for outcome in (absent, series):
        assert outcome.not_found and not outcome.ok and outcome.completed == 0
        assert outcome.error.startswith(f"not found on the PACS: its C-FIND matched no {outcome.request.describe()}")
    assert series.request.describe() == f"series 1.2.3.4.5.6.7.8.9 of study {study}"
    assert present.ok and not present.not_found and present.completed == MIXED_STUDY.number_of_instances
    assert not vanished.ok and vanished.completed == 0 and not vanished.not_found  # (no C-FIND to prove it)
    assert vanished.error in ("the PACS sent nothing: 5 instance(s) were listed, and its C-GET ended 0x0000 (success) "
                              "without a single sub-operation", "the PACS failed the C-GET: 0xC000 (failure: unable "
                              "to process)"), vanished.error
    assert summary.exit_code == 1 and summary.error is None

    node = node_of(any_peer)
    code = main(["get", "--host", node.host, "--port", str(node.port), "--aet", node.ae_title,
                 "--study-uid", "1.2.3.4.5.6.7.8", "--out", str(tmp_path / "cli"), "--json"])
    report = json.loads(capsys.readouterr().out)
    assert code == 1 and report["ok"] is False and report["completed"] == 0
    assert report["requests"][0]["not_found"] is True and report["error"] is None
    assert report["requests"][0]["error"].startswith(
        "not found on the PACS: its C-FIND matched no study 1.2.3.4.5.6.7.8")
    assert main(["get", "--host", node.host, "--port", str(node.port), "--aet", node.ae_title, "--series-uid",
                 "1.2.3.4.5.6.7.8.9", "--study-uid", study, "--out", str(tmp_path / "cli")]) == 1
    out = capsys.readouterr().out
    assert out.startswith("incomplete: kept 0 instance(s)")
    assert f"  series 1.2.3.4.5.6.7.8.9 of study {study}: 0 stored" in out
    assert f"    error: not found on the PACS: its C-FIND matched no series 1.2.3.4.5.6.7.8.9 of study {study}" in out


def test_a_partial_refetch_counts_what_the_pacs_sent_over_all_its_c_gets(demo: DemoPacs, tmp_path: Path) -> None:
    """Re-fetching a study with a series and one more file missing asks for them with one C-GET per series;
    the PACS's counts are added up over those C-GETs, and the instances already on disk are not among
    what it sent, so the counts agree and no note says otherwise."""
    writer = StudyWriter(tmp_path)
    assert Retrieval(node_of(demo), [RetrieveRequest(CT_STUDY.study_instance_uid)], writer).run().ok
    by_uid = {pydicom.dcmread(p, stop_before_pixels=True).SOPInstanceUID: p for p in dicom_files(tmp_path)}
    gone = set(CT_STUDY.series[2].instance_uids) | {CT_STUDY.series[1].instance_uids[0]}
    for uid in gone:
        by_uid[uid].unlink()
    summary = Retrieval(node_of(demo), [RetrieveRequest(CT_STUDY.study_instance_uid)], StudyWriter(tmp_path)).run()
    outcome = summary.outcomes[0]
    assert summary.ok and (outcome.completed, outcome.skipped) == (len(gone), CT_STUDY.number_of_instances - len(gone))
    assert outcome.pacs_counts["completed"] == len(gone) and outcome.pacs_counts["remaining"] == 0
    assert not [n for n in outcome.notes if "the PACS counted" in n], outcome.notes
    assert len(dicom_files(tmp_path)) == CT_STUDY.number_of_instances


def test_mixed_sop_classes_arrive_whole(any_peer: Any, tmp_path: Path, sample_root: Path) -> None:
    summary = Retrieval(node_of(any_peer), [RetrieveRequest(MIXED_STUDY.study_instance_uid)],
                        StudyWriter(tmp_path)).run()
    assert summary.ok, summary.to_json()
    assert_same_as_samples(dicom_files(tmp_path), sample_root, set(MIXED_STUDY.instance_uids))


def test_uncompressed_only_makes_orthanc_decompress(orthanc: Any, tmp_path: Path) -> None:
    summary = Retrieval(node_of(orthanc), [RetrieveRequest(CT_STUDY.study_instance_uid)], StudyWriter(tmp_path),
                        options=RetrieveOptions(uncompressed_only=True)).run()
    assert summary.ok
    syntaxes = {pydicom.dcmread(p, stop_before_pixels=True).file_meta.TransferSyntaxUID
                for p in dicom_files(tmp_path)}
    assert pydicom.uid.RLELossless not in syntaxes and len(dicom_files(tmp_path)) == CT_STUDY.number_of_instances


def test_cli_get_json_and_repeat_skips(orthanc: Any, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    args = ["get", "--host", orthanc.host, "--port", str(orthanc.port), "--aet", orthanc.aet,
            "--patient-id", "PP-0001", "--out", str(tmp_path), "--json"]
    assert main(args) == 0
    first = json.loads(capsys.readouterr().out)
    expected = sum(s.number_of_instances for s in STUDIES.values() if s.patient.patient_id == "PP-0001")
    assert (first["completed"], first["failed"], first["skipped"]) == (expected, 0, 0)
    assert first["destination"] == str(tmp_path.resolve())
    assert main(args) == 0
    again = json.loads(capsys.readouterr().out)
    assert (again["completed"], again["skipped"]) == (0, expected)
    assert len(dicom_files(tmp_path)) == expected


def test_cancel_keeps_complete_files_and_a_repeat_completes(make_slow_demo: Any, tmp_path: Path,
                                                            sample_root: Path) -> None:
    pacs = make_slow_demo(Faults(delay_per_instance=0.05))
    cancel = CancelToken()

    class CancelAfterFive(Recorder):
        def instance_stored(self, outcome: Any, stored: Any) -> None:
            super().instance_stored(outcome, stored)
            if len(self.stored) == 5:
                cancel.cancel()

    recorder = CancelAfterFive()
    request = RetrieveRequest(CT_STUDY.study_instance_uid)
    summary = Retrieval(node_of(pacs), [request], StudyWriter(tmp_path), listener=recorder, cancel=cancel).run()
    assert summary.cancelled and summary.exit_code == 1
    outcome = summary.outcomes[0]
    assert outcome.cancelled and outcome.status is not None and outcome.status.code == 0xFE00
    kept = dicom_files(tmp_path)
    assert 5 <= len(kept) < CT_STUDY.number_of_instances
    assert len(kept) == outcome.completed == len(recorder.stored)
    assert_same_as_samples(kept, sample_root, set(recorder.stored))
    assert not [p for p in tmp_path.rglob("*partial*")]
    pacs.faults = Faults()
    again = Retrieval(node_of(pacs), [request], StudyWriter(tmp_path)).run()
    assert again.ok
    assert again.outcomes[0].skipped == len(kept)
    assert again.outcomes[0].completed == CT_STUDY.number_of_instances - len(kept)
    assert_same_as_samples(dicom_files(tmp_path), sample_root, set(CT_STUDY.instance_uids))


@pytest.fixture
def make_slow_demo(sample_files: list[Path]) -> Any:
    started: list[DemoPacs] = []

    def make(faults: Faults) -> DemoPacs:
        pacs = DemoPacs(files=sample_files, faults=faults).start()
        started.append(pacs)
        return pacs

    yield make
    for pacs in started:
        pacs.stop()


def test_abort_mid_transfer_keeps_completed_files(make_slow_demo: Any, tmp_path: Path,
                                                  capsys: pytest.CaptureFixture[str]) -> None:
    pacs = make_slow_demo(Faults(abort_after=7))
    code = main(["get", "--host", pacs.host, "--port", str(pacs.port), "--aet", pacs.ae_title,
                 "--study-uid", CT_STUDY.study_instance_uid, "--out", str(tmp_path), "--json"])
    summary = json.loads(capsys.readouterr().out)
    assert code == 3
    assert summary["completed"] == 7 == len(dicom_files(tmp_path))
    assert "aborted the association" in summary["error"] and "7 instance(s) received are kept" in summary["error"]
    for path in dicom_files(tmp_path):
        pydicom.dcmread(path)  # complete and readable


def test_stall_times_out_with_a_clear_error(make_slow_demo: Any, tmp_path: Path) -> None:
    pacs = make_slow_demo(Faults(stall_after=3, stall_seconds=30))
    node = node_of(pacs, dimse_timeout=1.0)
    summary = Retrieval(node, [RetrieveRequest(CT_STUDY.study_instance_uid)], StudyWriter(tmp_path)).run()
    assert summary.exit_code == 3
    assert "sent nothing for 1 s" in summary.outcomes[0].error
    assert summary.outcomes[0].completed == 3 == len(dicom_files(tmp_path))


def test_failed_sub_operations_are_listed_with_status(make_slow_demo: Any, tmp_path: Path) -> None:
    bad = set(CT_STUDY.instance_uids[:2])
    pacs = make_slow_demo(Faults(fail_sop_instance_uids=frozenset(bad)))
    recorder = Recorder()
    summary = Retrieval(node_of(pacs), [RetrieveRequest(CT_STUDY.study_instance_uid)], StudyWriter(tmp_path),
                        listener=recorder).run()
    outcome = summary.outcomes[0]
    assert outcome.status is not None and outcome.status.code == 0xB000
    assert {f.sop_instance_uid for f in outcome.failures} == bad == {f.sop_instance_uid for f in recorder.failed}
    assert outcome.completed == CT_STUDY.number_of_instances - 2 == len(dicom_files(tmp_path))
    assert summary.exit_code == 1


def test_mislabelled_instances_are_kept_and_reported_as_warnings(make_slow_demo: Any, tmp_path: Path,
                                                                  capsys: pytest.CaptureFixture[str]) -> None:
    """A data set whose SOP class is not the one its C-STORE request names: stored all the same, answered
    0xB007, counted by us and by the PACS as a warning (final 0xB000), listed with the reason."""
    mislabelled = set(CT_STUDY.instance_uids[3:5])
    pacs = make_slow_demo(Faults(mislabel_sop_instance_uids=frozenset(mislabelled)))
    recorder = Recorder()
    summary = Retrieval(node_of(pacs), [RetrieveRequest(CT_STUDY.study_instance_uid)], StudyWriter(tmp_path / "api"),
                        listener=recorder).run()
    outcome = summary.outcomes[0]
    assert (outcome.completed, outcome.warning, outcome.failed) == (CT_STUDY.number_of_instances - 2, 2, 0)
    assert outcome.status is not None and outcome.status.code == 0xB000
    assert outcome.pacs_counts["warning"] == 2 and outcome.pacs_counts["failed"] == 0
    assert {w.sop_instance_uid for w in outcome.warnings} == mislabelled == {w.sop_instance_uid
                                                                             for w in recorder.warnings}
    assert all(w.status.code == 0xB007 for w in outcome.warnings)
    assert all(w.reason == f"the data set says SOP class Secondary Capture Image Storage ({MISLABELLED_SOP_CLASS}), "
               f"the request CT Image Storage ({samples.CT_IMAGE_STORAGE})" for w in outcome.warnings)
    # Every instance is on disk and stored (a warning is a success with a remark); the file says what the
    # PACS sent: the request's SOP class in its meta, the data set's own in the data set.
    assert sorted(recorder.stored) == sorted(CT_STUDY.instance_uids)
    files = {pydicom.dcmread(p).SOPInstanceUID: pydicom.dcmread(p) for p in dicom_files(tmp_path / "api")}
    assert set(files) == set(CT_STUDY.instance_uids)
    for uid in mislabelled:
        assert files[uid].file_meta.MediaStorageSOPClassUID == samples.CT_IMAGE_STORAGE
        assert files[uid].SOPClassUID == MISLABELLED_SOP_CLASS
    assert summary.ok and summary.exit_code == 0

    code = main(["get", "--host", "127.0.0.1", "--port", str(pacs.port), "--aet", pacs.ae_title,
                 "--study-uid", CT_STUDY.study_instance_uid, "--out", str(tmp_path / "cli"), "--json"])
    report = json.loads(capsys.readouterr().out)
    assert code == 0 and report["ok"]
    assert (report["completed"], report["warning"], report["failed"]) == (CT_STUDY.number_of_instances - 2, 2, 0)
    request = report["requests"][0]
    assert request["status"] == 0xB000 and request["pacs_counts"]["warning"] == 2
    assert {w["sop_instance_uid"] for w in request["warnings"]} == mislabelled
    assert len(dicom_files(tmp_path / "cli")) == CT_STUDY.number_of_instances

    main(["get", "--host", "127.0.0.1", "--port", str(pacs.port), "--aet", pacs.ae_title, "--no-skip",
          "--study-uid", CT_STUDY.study_instance_uid, "--out", str(tmp_path / "cli")])
    out = capsys.readouterr().out
    assert f"retrieved {CT_STUDY.number_of_instances} instance(s)" in out
    assert "failed 0, warnings 2, skipped (already there) 0" in out
    for uid in mislabelled:
        assert f"    {uid}: 0xB007" in out and "the data set says SOP class" in out


@pytest.mark.filterwarnings("ignore:Invalid value for VR UI")
def test_hostile_names_never_leave_the_destination(make_slow_demo: Any, tmp_path: Path) -> None:
    pacs = make_slow_demo(Faults(hostile_names=True))
    dest = tmp_path / "dest"
    summary = Retrieval(node_of(pacs), [RetrieveRequest(CT_STUDY.study_instance_uid)], StudyWriter(dest)).run()
    assert summary.total("completed") == CT_STUDY.number_of_instances
    everything = [p for p in tmp_path.rglob("*") if p.is_file()]
    assert everything and all(dest.resolve() in p.resolve().parents for p in everything)
    assert len(dicom_files(dest)) == CT_STUDY.number_of_instances  # still unique after sanitising


def test_disk_full_answers_out_of_resources_and_stops(make_slow_demo: Any, tmp_path: Path,
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    from pacspull.core import storage

    pacs = make_slow_demo(Faults(delay_per_instance=0.01))
    writer = StudyWriter(tmp_path)
    real = storage.StudyWriter.store
    calls = {"n": 0}

    def store(self: Any, **kwargs: Any) -> Any:
        calls["n"] += 1
        if calls["n"] > 4:
            raise storage.StorageError(f"no space left on device in {tmp_path}")
        return real(self, **kwargs)

    monkeypatch.setattr(storage.StudyWriter, "store", store)
    summary = Retrieval(node_of(pacs), [RetrieveRequest(CT_STUDY.study_instance_uid)], writer).run()
    outcome = summary.outcomes[0]
    assert outcome.completed == 4 == len(dicom_files(tmp_path))
    assert outcome.failures[0].status.code == 0xA700
    assert "no space left on device" in (outcome.error or "")
    assert outcome.completed + outcome.failed < CT_STUDY.number_of_instances  # stopped, did not grind on
    # Stopped by the retrieve itself (its C-CANCEL), not cancelled by the user: the error is what it says.
    assert not summary.cancelled and not outcome.cancelled and outcome.status.code == 0xFE00
    assert summary.exit_code == 1
    assert not [p for p in tmp_path.rglob("*partial*")]
    # Space freed: the next run completes the study, fetching only what is missing, duplicating nothing.
    monkeypatch.setattr(storage.StudyWriter, "store", real)
    again = Retrieval(node_of(pacs), [RetrieveRequest(CT_STUDY.study_instance_uid)], StudyWriter(tmp_path)).run()
    assert again.ok and again.outcomes[0].skipped == 4
    assert again.outcomes[0].completed == CT_STUDY.number_of_instances - 4
    assert len(dicom_files(tmp_path)) == CT_STUDY.number_of_instances


def test_dcmtk_getscu_cross_checks_the_demo_pacs(demo: DemoPacs, tmp_path: Path) -> None:
    """dcmtk's getscu retrieving from the demo PACS gets the same instances PacsPull does."""
    if shutil.which("getscu") is None:
        from peers import need_binary

        need_binary("getscu", "dcmtk")
    out = tmp_path / "getscu"
    out.mkdir()
    subprocess.run(["getscu", "-aet", "GETSCU", "-aec", demo.ae_title, demo.host, str(demo.port), "-S",
                    "-k", "QueryRetrieveLevel=STUDY", "-k", f"StudyInstanceUID={MIXED_STUDY.study_instance_uid}",
                    "-od", str(out)], check=True, timeout=60, capture_output=True)
    theirs = {pydicom.dcmread(p, stop_before_pixels=True).SOPInstanceUID for p in out.iterdir()}
    ours_dir = tmp_path / "ours"
    Retrieval(node_of(demo), [RetrieveRequest(MIXED_STUDY.study_instance_uid)], StudyWriter(ours_dir)).run()
    ours = {pydicom.dcmread(p, stop_before_pixels=True).SOPInstanceUID for p in dicom_files(ours_dir)}
    assert theirs == ours == set(MIXED_STUDY.instance_uids)


def test_getscu_and_pacspull_agree_on_orthanc(orthanc: Any, tmp_path: Path) -> None:
    out = tmp_path / "getscu"
    out.mkdir()
    subprocess.run(["getscu", "-aet", "GETSCU", "-aec", orthanc.aet, orthanc.host, str(orthanc.port), "-S",
                    "-k", "QueryRetrieveLevel=STUDY", "-k", f"StudyInstanceUID={MIXED_STUDY.study_instance_uid}",
                    "-od", str(out)], check=True, timeout=60, capture_output=True)
    theirs = {pydicom.dcmread(p, stop_before_pixels=True).SOPInstanceUID for p in out.iterdir()}
    assert theirs == set(MIXED_STUDY.instance_uids)


def test_cancel_from_another_thread_while_the_pacs_stalls(make_slow_demo: Any, tmp_path: Path) -> None:
    """No C-STORE arrives during a stall, yet cancel still goes out (the watcher thread sends it)."""
    pacs = make_slow_demo(Faults(stall_after=2, stall_seconds=30))
    cancel = CancelToken()
    timer = threading.Timer(1.0, cancel.cancel)
    timer.start()
    summary = Retrieval(node_of(pacs), [RetrieveRequest(CT_STUDY.study_instance_uid)], StudyWriter(tmp_path),
                        cancel=cancel).run()
    timer.cancel()
    assert summary.cancelled and summary.outcomes[0].completed == 2
    assert summary.outcomes[0].status is not None and summary.outcomes[0].status.code == 0xFE00
