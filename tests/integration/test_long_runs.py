"""Load and long runs: 10,000 small instances, 2 GB, and a client killed mid-retrieve.

Every received file is compared with its source by the hash of its data set (the bytes after the file
meta group, which names the receiver and so legitimately differs), and every UID with the C-FIND answer.
"""

from __future__ import annotations

import hashlib
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import ExplicitVRLittleEndian

from pacspull.core.nodes import Node
from pacspull.core.query import Level, QueryRequest, find

CT = "1.2.840.10008.5.1.4.1.1.2"
ROOT = "1.2.826.0.1.3680043.10.1138.77."
STUDY_UID = ROOT + "1"
SERIES_UID = ROOT + "2"


def dataset_hash(path: Path) -> str:
    """SHA-256 of a Part-10 file's data set: everything after the preamble and the file meta group."""
    with path.open("rb") as fh:
        head = fh.read(144)
        assert head[128:132] == b"DICM"
        meta_length = int.from_bytes(head[140:144], "little")  # (0002,0000) UL value
        fh.seek(144 + meta_length)
        digest = hashlib.sha256()
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def make_study(folder: Path, count: int, pixel_bytes: int) -> dict[str, Path]:
    """``count`` CT instances of one series, written fast from one template (fixed-length UIDs)."""
    folder.mkdir(parents=True, exist_ok=True)
    placeholder = ROOT + "1" + "9" * 8
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID, meta.MediaStorageSOPInstanceUID = CT, placeholder
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = Dataset()
    ds.file_meta = meta
    ds.SOPClassUID, ds.SOPInstanceUID = CT, placeholder
    ds.PatientName, ds.PatientID, ds.StudyDate = "Load^Test", "LOAD-1", "20260101"
    ds.StudyInstanceUID, ds.SeriesInstanceUID, ds.Modality, ds.SeriesNumber = STUDY_UID, SERIES_UID, "CT", 1
    ds.InstanceNumber = 1
    side = max(8, int((pixel_bytes // 2) ** 0.5))
    ds.Rows = ds.Columns = side
    ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 16, 15, 0
    ds.PixelData = b"\x00" * (side * side * 2)
    template_path = folder / "template.dcm"
    ds.save_as(template_path, enforce_file_format=True)
    template = template_path.read_bytes()
    template_path.unlink()
    pixel_at = template.rindex(b"\x00" * 64) - side * side * 2 + 64
    files = {}
    for i in range(count):
        uid = f"{ROOT}1{i:08d}"  # fixed length, no leading zero (PS3.5 9.1)
        data = bytearray(template.replace(placeholder.encode(), uid.encode()))
        # distinct pixels per instance, so a mix-up between files cannot hide behind equal hashes
        data[pixel_at:pixel_at + 8] = i.to_bytes(8, "little")
        path = folder / f"{i:06d}.dcm"
        path.write_bytes(data)
        files[uid] = path
    return files


def received(folder: Path) -> dict[str, Path]:
    from pydicom import dcmread

    return {str(dcmread(p, stop_before_pixels=True, specific_tags=["SOPInstanceUID"]).SOPInstanceUID): p
            for p in folder.rglob("*.dcm")}


@pytest.fixture
def loaded_peer(dcmqrscp_factory: Any, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    def make(count: int, pixel_bytes: int) -> tuple[Any, dict[str, Path]]:
        files = make_study(tmp_path_factory.mktemp("load-src"), count, pixel_bytes)
        peer = dcmqrscp_factory(files=list(files.values()), max_pdu=131072)
        return peer, files

    yield make


def cli_get(peer: Any, out: Path, *extra: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "pacspull.core.cli", "get", "--host", peer.host, "--port", str(peer.port),
         "--aet", peer.aet, "--study-uid", STUDY_UID, "--out", str(out), "--json", *extra],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def peak_rss_mb_of(proc: subprocess.Popen[str]) -> tuple[dict[str, Any], float]:
    """Wait for ``proc``; return its JSON summary and its peak RSS in MB.

    Read as VmHWM from /proc while it runs: wait4's ru_maxrss would count the pytest process it was
    forked from (the high-water mark survives exec), which after a long suite is hundreds of MB.
    """
    peak_kb = 0
    status = Path(f"/proc/{proc.pid}/status")
    while proc.poll() is None:
        try:
            for line in status.read_text().splitlines():
                if line.startswith("VmHWM:"):
                    peak_kb = max(peak_kb, int(line.split()[1]))
        except (OSError, ValueError):
            pass
        time.sleep(0.05)
    out = proc.stdout.read() if proc.stdout else ""
    return json.loads(out), peak_kb / 1024


def check_complete(peer: Any, files: dict[str, Path], out: Path) -> None:
    node = Node(name="p", ae_title=peer.aet, host=peer.host, port=peer.port)
    listed = find(node, QueryRequest(level=Level.IMAGE, study_uids=(STUDY_UID,), series_uids=(SERIES_UID,),
                                     limit=1_000_000)).rows
    got = received(out)
    assert set(got) == {r.sop_instance_uid for r in listed} == set(files)
    for uid, path in got.items():
        assert dataset_hash(path) == dataset_hash(files[uid]), uid
    assert not list(out.rglob("*.partial*"))


def post_all(peer: Any, paths: list[Path], connections: int = 4) -> None:
    """Load Orthanc over several keep-alive connections at once (dcmqrscp's index holds fewer than 10,000)."""
    import http.client
    from concurrent.futures import ThreadPoolExecutor

    def post(chunk: list[Path]) -> None:
        conn = http.client.HTTPConnection("127.0.0.1", peer.http_port, timeout=60)
        for path in chunk:
            conn.request("POST", "/instances", body=path.read_bytes(), headers={"Content-Type": "application/dicom"})
            response = conn.getresponse()
            response.read()
            assert response.status == 200, path
        conn.close()

    with ThreadPoolExecutor(connections) as pool:
        list(pool.map(post, [paths[i::connections] for i in range(connections)]))


def test_ten_thousand_small_instances(orthanc_factory: Any, tmp_path_factory: pytest.TempPathFactory,
                                      tmp_path: Path) -> None:
    files = make_study(tmp_path_factory.mktemp("many-src"), 10_000, 8 * 1024)
    peer = orthanc_factory()
    post_all(peer, list(files.values()))
    summary, rss = peak_rss_mb_of(cli_get(peer, tmp_path / "out"))
    assert summary["completed"] == 10_000 and summary["failed"] == 0, summary["error"]
    check_complete(peer, files, tmp_path / "out")
    assert rss < 300, f"peak RSS {rss:.0f} MB"


def test_two_gigabytes(orthanc_factory: Any, tmp_path_factory: pytest.TempPathFactory, tmp_path: Path) -> None:
    """Orthanc, since dcmqrscp caps a study at 1 GB (it keeps the first 2,045 of 4,000 x 512 KB)."""
    files = make_study(tmp_path_factory.mktemp("big-src"), 410, 5 * 1024 * 1024)
    peer = orthanc_factory()
    peer.load(list(files.values()))
    summary, rss = peak_rss_mb_of(cli_get(peer, tmp_path / "out"))
    assert summary["completed"] == 410 and summary["bytes"] > 2_000_000_000, json.dumps(summary)[:3000]
    check_complete(peer, files, tmp_path / "out")
    assert rss < 300, f"peak RSS {rss:.0f} MB"


def test_killed_client_is_completed_by_the_next_run(loaded_peer: Any, tmp_path: Path) -> None:
    """SIGKILL mid-retrieve: the next run fetches only what is missing and removes stale temp files; nothing
    lost, duplicated or partial."""
    peer, files = loaded_peer(1_500, 64 * 1024)
    out = tmp_path / "out"
    proc = cli_get(peer, out)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and len(list(out.rglob("*.dcm"))) < 200:
        time.sleep(0.02)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    first = len(list(out.rglob("*.dcm")))
    assert 0 < first < 1_500, "the kill must land mid-retrieve"
    for path in out.rglob("*.dcm"):
        assert dataset_hash(path) == dataset_hash(files[path.stem]), "a file under a final name is incomplete"
    # What the kill left mid-write (if it landed there), plus one such temp file for certain, as the real
    # writer names them; aged, as the next run would find them an hour later. That run removes them
    # (StudyWriter sweeps stale temp files of its own pattern), and check_complete sees none left.
    from pacspull.core.storage import _temp_path

    series_folder = next(out.rglob("*.dcm")).parent
    leftovers = [*out.rglob(".*.partial-*"), _temp_path(series_folder / f"{ROOT}199999999.dcm")]
    leftovers[-1].write_bytes(b"\x00" * 1000)
    hour_ago = time.time() - 3600
    for path in leftovers:
        os.utime(path, (hour_ago, hour_ago))
    again = cli_get(peer, out)
    summary = json.loads(again.communicate(timeout=300)[0])
    assert summary["ok"], summary
    assert summary["skipped"] >= first - 1 and summary["completed"] + summary["skipped"] == 1_500
    check_complete(peer, files, out)
    assert len(list(out.rglob("*.dcm"))) == 1_500  # nothing duplicated
