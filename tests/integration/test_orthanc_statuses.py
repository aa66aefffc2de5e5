"""Every C-GET outcome Orthanc produces, decoded with exact counts in the summary and the CLI.

What Orthanc 1.10 does, as observed here: it counts our C-STORE answers (a failed one gives 0xB000 with
exact counts, no FailedSOPInstanceUIDList); it answers 0xC000 when it cannot send an instance at all (no
accepted context) or the study is unknown; it honours C-CANCEL with 0xFE00; and it aborts the association
on a C-GET it does not allow.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from peers import node_of

from pacspull.core import samples, storage
from pacspull.core.cli import main
from pacspull.core.get import Retrieval, RetrievalListener, RetrieveRequest
from pacspull.core.progress import CancelToken
from pacspull.core.storage import StudyWriter

STUDIES = {s.accession_number: s for s in samples.sample_studies()}
CT = STUDIES["ACC-24-0001"]  # 61 instances
SINGLE = STUDIES["ACC-22-0815"]  # 1 instance


def files(folder: Path) -> list[Path]:
    return [p for p in folder.rglob("*.dcm")]


def get_json(capsys: pytest.CaptureFixture[str], peer: Any, study_uid: str, out: Path) -> tuple[int, dict]:
    code = main(["get", "--host", peer.host, "--port", str(peer.port), "--aet", peer.aet,
                 "--study-uid", study_uid, "--out", str(out), "--json"])
    return code, json.loads(capsys.readouterr().out)


def failing_store(monkeypatch: pytest.MonkeyPatch, should_fail: Any) -> None:
    """Make our own storage fail for chosen instances (an unexpected error: answered 0xC211)."""
    real = storage.StudyWriter.store

    def store(self: StudyWriter, **kwargs: Any) -> Any:
        if should_fail(kwargs["sop_instance_uid"]):
            raise RuntimeError("simulated failure")
        return real(self, **kwargs)

    monkeypatch.setattr(storage.StudyWriter, "store", store)


def test_success(orthanc: Any, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, summary = get_json(capsys, orthanc, CT.study_instance_uid, tmp_path)
    assert code == 0
    request = summary["requests"][0]
    assert request["status"] == 0x0000
    assert request["pacs_counts"].get("completed", 61) == 61 and summary["completed"] == 61 == len(files(tmp_path))


def test_some_sub_operations_failed(orthanc: Any, tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                    monkeypatch: pytest.MonkeyPatch) -> None:
    victim = CT.instance_uids[10]
    failing_store(monkeypatch, lambda uid: uid == victim)
    code, summary = get_json(capsys, orthanc, CT.study_instance_uid, tmp_path)
    request = summary["requests"][0]
    assert code == 1
    assert request["status"] == 0xB000
    assert request["pacs_counts"]["completed"] == 60 and request["pacs_counts"]["failed"] == 1
    assert (summary["completed"], summary["failed"]) == (60, 1) and len(files(tmp_path)) == 60
    assert [f["sop_instance_uid"] for f in summary["failures"]] == [victim]
    assert summary["failures"][0]["status"] == 0xC211


def test_all_sub_operations_failed(orthanc: Any, tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                   monkeypatch: pytest.MonkeyPatch) -> None:
    failing_store(monkeypatch, lambda uid: True)
    code, summary = get_json(capsys, orthanc, SINGLE.study_instance_uid, tmp_path)
    request = summary["requests"][0]
    assert code != 0 and files(tmp_path) == []
    assert request["status"] == 0xA702  # refused: out of resources, unable to perform sub-operations
    assert request["pacs_counts"] == {"completed": 0, "failed": 1, "warning": 0}
    assert (summary["completed"], summary["failed"]) == (0, 1)
    assert request["status_text"].startswith(f"0x{request['status']:04X}")


def test_not_found(orthanc: Any, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """Orthanc answers a C-GET for a study it does not have with 0xC000: reported as not found (exit 1, as
    from a PACS that answers success with no sub-operations), its status kept."""
    code, summary = get_json(capsys, orthanc, "1.2.3.4.5.6.7.8.9", tmp_path)
    assert code == 1 and summary["error"] is None
    request = summary["requests"][0]
    assert request["status"] == 0xC000 and summary["completed"] == summary["failed"] == 0
    assert request["not_found"] is True and request["refused"] is False  # it answered: not a refusal
    assert request["error"] == ("not found on the PACS: its C-FIND matched no study 1.2.3.4.5.6.7.8.9; the C-GET "
                                "was answered 0xC000 (failure: unable to process)")


def test_cancelled(orthanc: Any, tmp_path: Path) -> None:
    cancel = CancelToken()

    class CancelAfterTen(RetrievalListener):
        def __init__(self) -> None:
            self.stored = 0

        def instance_stored(self, outcome: Any, stored: Any) -> None:
            self.stored += 1
            if self.stored == 10:
                cancel.cancel()

    summary = Retrieval(node_of(orthanc), [RetrieveRequest(CT.study_instance_uid)], StudyWriter(tmp_path),
                        listener=CancelAfterTen(), cancel=cancel).run()
    outcome = summary.outcomes[0]
    assert summary.cancelled and summary.exit_code == 1
    assert outcome.status is not None and outcome.status.code == 0xFE00
    assert 10 <= outcome.completed < 61 and outcome.completed == len(files(tmp_path))
    # Orthanc's last "remaining" lags behind what still arrived after the cancel; ours adds up.
    assert outcome.remaining == 61 - outcome.completed - outcome.failed


def test_refused(orthanc_factory: Any, sample_files: list[Path], tmp_path: Path,
                 capsys: pytest.CaptureFixture[str]) -> None:
    peer = orthanc_factory(allow_get=False)
    peer.load(sample_files[:3])
    code, summary = get_json(capsys, peer, CT.study_instance_uid, tmp_path)
    assert code == 4  # the service refused, as for C-ECHO and C-FIND
    assert "aborted the association" in summary["error"]
    assert "C-GET" in summary["error"]  # says what the PACS refused, not just "aborted"
    assert [r["refused"] for r in summary["requests"]] == [True]
    assert files(tmp_path) == []
