"""echo, find and diagnose against Orthanc, dcmqrscp and the demo PACS: exact rows, decoded names."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from peers import node_of

from pacspull.core import samples
from pacspull.core.cli import main
from pacspull.core.diagnose import diagnose
from pacspull.core.query import Level, QueryRequest, find, parse_date

STUDIES = {s.study_instance_uid: s for s in samples.sample_studies()}


def cli_json(capsys: pytest.CaptureFixture[str], peer: Any, *args: str) -> Any:
    code = main([args[0], "--host", peer.host, "--port", str(peer.port), "--aet", node_of(peer).ae_title,
                 *args[1:], "--json"])
    out = capsys.readouterr().out
    assert code == 0, out
    return json.loads(out)


def test_echo(any_peer: Any, capsys: pytest.CaptureFixture[str]) -> None:
    result = cli_json(capsys, any_peer, "echo")
    assert result["ok"] is True and result["status"] == 0


def test_study_find_returns_every_study_with_exact_names(any_peer: Any, capsys: pytest.CaptureFixture[str]) -> None:
    rows = cli_json(capsys, any_peer, "find")
    by_uid = {r["StudyInstanceUID"]: r for r in rows}
    assert set(by_uid) == set(STUDIES)
    for uid, study in STUDIES.items():
        row = by_uid[uid]
        # ISO_IR 192, GB18030 and ISO 2022 IR 87 names all decode back to exactly what was stored.
        assert row["PatientName"] == study.patient.name
        assert row["PatientID"] == study.patient.patient_id
        assert row["StudyDate"] == study.study_date
        assert row["AccessionNumber"] == study.accession_number
        if row["NumberOfStudyRelatedInstances"] is not None:  # optional key: dcmqrscp leaves it out
            assert row["NumberOfStudyRelatedInstances"] == study.number_of_instances
        if row["ModalitiesInStudy"]:
            assert sorted(row["ModalitiesInStudy"]) == list(study.modalities)


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (["--patient-name", "Müller*"], lambda s: s.patient.patient_id == "PP-0001"),
        (["--patient-id", "PP-0002"], lambda s: s.patient.patient_id == "PP-0002"),
        (["--date", "20240101-20240131"], lambda s: "20240101" <= s.study_date <= "20240131"),
        (["--date", "today"], lambda s: s.index == samples.TODAY_STUDY_INDEX),
        (["--accession", "ACC-24-0001"], lambda s: s.accession_number == "ACC-24-0001"),
    ],
)
def test_matching_keys(any_peer: Any, capsys: pytest.CaptureFixture[str], args: list[str], expected: Any) -> None:
    rows = cli_json(capsys, any_peer, "find", *args)
    assert {r["StudyInstanceUID"] for r in rows} == {u for u, s in STUDIES.items() if expected(s)}


def test_series_and_image_levels(any_peer: Any) -> None:
    node = node_of(any_peer)
    study = next(s for s in STUDIES.values() if len(s.series) > 1)
    series = find(node, QueryRequest(level=Level.SERIES, study_uids=(study.study_instance_uid,))).rows
    assert {r.series_uid for r in series} == {s.series_instance_uid for s in study.series}
    for row in series:
        expected = next(s for s in study.series if s.series_instance_uid == row.series_uid)
        assert (row.number, row.modality) == (expected.series_number, expected.modality)
    target = study.series[0]
    images = find(node, QueryRequest(level=Level.IMAGE, study_uids=(study.study_instance_uid,),
                                     series_uids=(target.series_instance_uid,))).rows
    assert sorted(r.sop_instance_uid for r in images) == sorted(target.instance_uids)
    classes = {r.sop_class_uid for r in images}
    if classes != {None}:  # dcmqrscp does not return SOPClassUID (optional key); the others must be right
        assert classes == {i.sop_class_uid for i in target.instances}


def test_series_level_without_study_uid_cascades(any_peer: Any) -> None:
    """A hierarchical PACS needs a study UID at series level: the client finds the studies first."""
    rows = find(node_of(any_peer), QueryRequest(level=Level.SERIES, patient_id="PP-0001")).rows
    expected = {se.series_instance_uid for s in STUDIES.values() if s.patient.patient_id == "PP-0001"
                for se in s.series}
    assert {r.series_uid for r in rows} == expected


def test_result_cap_stops_the_query(any_peer: Any) -> None:
    result = find(node_of(any_peer), QueryRequest(limit=2))
    assert len(result.rows) == 2 and result.capped


def test_diagnose_passes_every_stage(any_peer: Any) -> None:
    report = diagnose(node_of(any_peer))
    assert [(s.name, s.ok) for s in report.stages] == [
        ("resolve", True), ("connect", True), ("tls", None), ("associate", True), ("echo", True), ("find", True),
        ("get", True)]
    assert report.ok
    get_cx = [c for c in report.contexts if c.name.endswith("GET")]
    assert get_cx and get_cx[0].accepted
    assert any(c.scp_role for c in report.contexts)


def test_diagnose_json_for_orthanc_refusing_get(orthanc_factory: Any, capsys: pytest.CaptureFixture[str]) -> None:
    """Orthanc without C-GET rights aborts the association on C-GET: diagnose names that stage."""
    peer = orthanc_factory(allow_get=False)
    code = main(["diagnose", "--host", peer.host, "--port", str(peer.port), "--aet", peer.aet, "--json"])
    report = json.loads(capsys.readouterr().out)
    assert code == 4
    assert report["failed_stage"] == "get"
    stages = {s["stage"]: s for s in report["stages"]}
    assert all(stages[n]["ok"] for n in ("resolve", "connect", "associate", "echo", "find"))
    assert stages["tls"]["ok"] is None
    assert stages["get"]["detail"].endswith("aborted the association in answer to the C-GET request")
    assert stages["get"]["hint"].startswith("Orthanc does this when C-GET is not allowed for this calling AE")
    assert "ask the PACS admin to allow C-GET for this calling AE" in stages["get"]["hint"]


def strict_orthanc(orthanc_factory: Any) -> Any:
    """An Orthanc that serves only its one registered AE, KNOWN_WS: it accepts anyone's association and
    aborts it at the first request of an AE it does not know."""
    return orthanc_factory(extra_config={
        "DicomAlwaysAllowEcho": False, "DicomAlwaysAllowFind": False, "DicomAlwaysAllowGet": False,
        "DicomModalities": {"workstation": ["KNOWN_WS", "127.0.0.1", 104]},
    })


@pytest.mark.parametrize("command", ["echo", "find", "get"])
def test_an_unknown_calling_ae_is_told_as_such_by_every_command(orthanc_factory: Any, command: str, tmp_path: Path,
                                                                 capsys: pytest.CaptureFixture[str]) -> None:
    """Not a timeout, nor a query too broad: an abort in answer to the request, said the same way with the
    same exit code (4) by echo, find and get; the registered AE is served."""
    peer = strict_orthanc(orthanc_factory)
    args = [command, "--host", peer.host, "--port", str(peer.port), "--aet", peer.aet]
    if command == "get":
        args += ["--study-uid", "1.2.3", "--out", str(tmp_path)]
    code = main([*args, "--calling-aet", "STRANGER"])
    err = capsys.readouterr().err
    assert code == 4, err
    assert f"aborted the association in answer to the C-{command.upper()} request" in err
    assert "calling AE 'STRANGER'" in err and "Traceback" not in err
    assert "too broad" not in err and "timed out" not in err
    assert main([*args, "--calling-aet", "KNOWN_WS"]) == (1 if command == "get" else 0)  # (1.2.3: not found)


def test_diagnose_stops_where_a_pacs_aborts_an_unknown_calling_ae(orthanc_factory: Any,
                                                                   capsys: pytest.CaptureFixture[str]) -> None:
    """An Orthanc that serves registered AEs only accepts a stranger's association and aborts it at the first
    request. The report says so at that stage, names the calling AE, marks the rest not reached, and
    never runs a request on the dead association (which raised a traceback before); the registered AE
    passes every stage."""
    peer = strict_orthanc(orthanc_factory)
    base = ["diagnose", "--host", peer.host, "--port", str(peer.port), "--aet", peer.aet]
    code = main([*base, "--calling-aet", "STRANGER", "--json"])
    report = json.loads(capsys.readouterr().out)
    assert code == 4 and report["failed_stage"] == "echo"
    stages = {s["stage"]: s for s in report["stages"]}
    assert all(stages[n]["ok"] for n in ("resolve", "connect", "associate"))
    assert stages["echo"]["detail"].endswith("aborted the association in answer to the C-ECHO request")
    assert "calling AE 'STRANGER'" in stages["echo"]["hint"]
    assert [(stages[n]["ok"], stages[n]["detail"]) for n in ("find", "get")] == [
        (None, "not reached: the PACS aborted the association")] * 2

    code = main([*base, "--calling-aet", "STRANGER"])
    out, err = capsys.readouterr()
    assert code == 4 and "Traceback" not in out + err and "Failed at stage 'echo'." in out
    assert main([*base, "--calling-aet", "KNOWN_WS", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["ok"] is True


def test_date_presets_are_real_ranges() -> None:
    assert parse_date("last7") is not None
