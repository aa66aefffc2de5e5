"""Peak memory of `pacspull get` for a 1 GB study and for one 500 MB multi-frame instance.

Not a test: a measurement to report. The client runs as a child process, so its peak RSS is read from
the kernel (ru_maxrss of the reaped child) and nothing of this script's own memory counts.

    .venv/bin/python benchmarks/memory_get.py [--gb 1.0] [--big-mb 500] [--keep]

The peer is dcmtk's dcmqrscp (indexed with dcmqridx, no network load), started with TCP_NODELAY=1.
"""

from __future__ import annotations

import argparse
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import ExplicitVRLittleEndian, generate_uid

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from peers import DcmqrscpPeer  # noqa: E402

CT = "1.2.840.10008.5.1.4.1.1.2"
MF_SC = "1.2.840.10008.5.1.4.1.1.7.3"  # Multi-frame Grayscale Word Secondary Capture


def make_instance(path: Path, study: str, series: str, number: int, *, frames: int, side: int, sop_class: str) -> None:
    """One instance of ``frames`` x ``side`` x ``side`` 16-bit random pixels."""
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = sop_class
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = Dataset()
    ds.file_meta = meta
    ds.SOPClassUID, ds.SOPInstanceUID = sop_class, meta.MediaStorageSOPInstanceUID
    ds.PatientName, ds.PatientID = "Memory^Test", "MEM-1"
    ds.StudyInstanceUID, ds.SeriesInstanceUID = study, series
    ds.StudyDate, ds.Modality, ds.SeriesNumber, ds.InstanceNumber = "20260101", "CT", 1, number
    ds.Rows = ds.Columns = side
    ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 16, 15, 0
    if frames > 1:
        ds.NumberOfFrames = frames
    ds.PixelData = os.urandom(frames * side * side * 2)
    ds.save_as(path, enforce_file_format=True)


def measure(cmd: list[str]) -> tuple[float, float, int]:
    """Run ``cmd``; return (seconds, peak RSS in MB of that child, exit code).

    The peak comes from GNU time (/usr/bin/time) when present: on Linux a child's ru_maxrss starts at the
    peak RSS of the process that forked it (this script held the generated 500 MB instance), so reading
    it here would report this script's memory, not the client's.
    """
    usage = Path(tempfile.mkstemp(prefix="pacspull-mem-", suffix=".usage")[1])
    gnu_time = Path("/usr/bin/time").exists()
    full = ["/usr/bin/time", "-f", "%M", "-o", str(usage), *cmd] if gnu_time else cmd
    before = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    start = time.perf_counter()
    proc = subprocess.run(full, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    seconds = time.perf_counter() - start
    if gnu_time:
        peak_kb = int(usage.read_text().split()[-1])
    else:
        peak_kb = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
        if peak_kb <= before:
            print("  (peak RSS not above an earlier child's; run each case in its own invocation to be sure)")
    usage.unlink(missing_ok=True)
    if proc.returncode:
        print(proc.stderr[-2000:])
    return seconds, peak_kb / 1024, proc.returncode


def run_case(name: str, files: list[Path], study: str, work: Path) -> None:
    peer = DcmqrscpPeer(work / f"peer-{name}", nodelay=True, max_pdu=131072)
    peer.load(files)
    peer.start()
    try:
        out = work / f"out-{name}"
        cmd = [sys.executable, "-m", "pacspull.core.cli", "get", "--host", peer.host, "--port", str(peer.port),
               "--aet", peer.aet, "--study-uid", study, "--out", str(out), "--json"]
        size = sum(f.stat().st_size for f in files)
        seconds, peak_mb, code = measure(cmd)
        got = sum(p.stat().st_size for p in out.rglob("*.dcm"))
        print(f"{name}: {len(files)} instance(s), {size / 1e6:.0f} MB in {seconds:.1f} s; exit {code}; "
              f"received {got / 1e6:.0f} MB; client peak RSS {peak_mb:.0f} MB")
    finally:
        peer.stop()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--gb", type=float, default=1.0, help="size of the many-instance study (default 1.0)")
    parser.add_argument("--big-mb", type=int, default=500, help="size of the single multi-frame (default 500)")
    parser.add_argument("--case", choices=["study", "big", "both"], default="both")
    parser.add_argument("--keep", action="store_true", help="keep the temporary folder")
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="pacspull-mem-"))
    try:
        if args.case in ("study", "both"):
            study, series = generate_uid(), generate_uid()
            side = 512  # 512 KB per CT slice
            count = int(args.gb * 1e9 / (side * side * 2))
            folder = work / "study"
            folder.mkdir()
            files = []
            for n in range(1, count + 1):
                path = folder / f"{n:05d}.dcm"
                make_instance(path, study, series, n, frames=1, side=side, sop_class=CT)
                files.append(path)
            run_case("study", files, study, work)
        if args.case in ("big", "both"):
            study, series = generate_uid(), generate_uid()
            side = 1024
            frames = max(1, int(args.big_mb * 1e6 / (side * side * 2)))
            path = work / "big.dcm"
            make_instance(path, study, series, 1, frames=frames, side=side, sop_class=MF_SC)
            run_case("big", [path], study, work)
    finally:
        if args.keep:
            print(f"kept {work}")
        else:
            shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    os.environ.setdefault("TCP_NODELAY", "1")
    sys.exit(main())
