"""The benchmark's generated studies: BIG, MANY and MIXED (and scaled-down versions for the smoke test).

* BIG: one CT series of 512 x 512 x 16-bit slices (512 KB of pixels each), Explicit VR Little Endian.
* MANY: small CT slices (70 x 70 x 16-bit, about 10 KB a file) in 10 series.
* MIXED: six SOP classes and five transfer syntaxes: CT uncompressed, MR JPEG Lossless (dcmcjpeg),
  CR RLE Lossless (pydicom's native encoder), colour Secondary Capture JPEG-LS Lossless (dcmcjpls),
  Basic Text SR, and multi-frame grayscale Secondary Capture Deflated Explicit VR Little Endian.

Files are written once into a cache folder keyed by the spec (``.spec.json`` says what is there) and
reused by later runs. Pixel content is deterministic apart from BIG's noise (random bytes, so that
nothing on the way can shortcut it); compressed classes get smooth images so their codecs compress.
"""

from __future__ import annotations

import functools
import json
import math
import os
import random
import shutil
import subprocess
import sys
from array import array
from dataclasses import dataclass, field
from pathlib import Path

from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.sequence import Sequence
from pydicom.uid import (
    DeflatedExplicitVRLittleEndian,
    ExplicitVRLittleEndian,
    JPEGLosslessSV1,
    JPEGLSLossless,
    RLELossless,
    UID,
)

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from peers import find_binary  # noqa: E402

GENERATOR_VERSION = 2
ROOT = "2.25.31415926535897932384626433832795028841"  # our own 2.25 arc for generated benchmark UIDs

CT = UID("1.2.840.10008.5.1.4.1.1.2")
MR = UID("1.2.840.10008.5.1.4.1.1.4")
CR = UID("1.2.840.10008.5.1.4.1.1.1")
SC = UID("1.2.840.10008.5.1.4.1.1.7")
MF_BYTE_SC = UID("1.2.840.10008.5.1.4.1.1.7.2")
BASIC_TEXT_SR = UID("1.2.840.10008.5.1.4.1.1.88.11")


@dataclass
class Workload:
    """A generated study: its files and what they add up to."""

    name: str
    study_uid: str
    files: list[Path] = field(default_factory=list)
    bytes: int = 0
    sop_classes: dict[str, int] = field(default_factory=dict)
    transfer_syntaxes: dict[str, int] = field(default_factory=dict)

    @property
    def instances(self) -> int:
        return len(self.files)

    def describe(self) -> str:
        return f"{self.name}: {self.instances} instances, {self.bytes / 1e6:.1f} MB"

    def to_json(self) -> dict[str, object]:
        return {"name": self.name, "study_uid": self.study_uid, "instances": self.instances,
                "bytes": self.bytes, "sop_classes": self.sop_classes,
                "transfer_syntaxes": self.transfer_syntaxes}


def _uid(*parts: object) -> str:
    text = ".".join(str(p) for p in parts)
    return f"{ROOT}.{text}"[:64]


def _base(study: str, series: str, sop_class: str, number: int, series_number: int,
          modality: str, description: str, workload: str) -> Dataset:
    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.SpecificCharacterSet = "ISO_IR 100"
    ds.SOPClassUID = sop_class
    ds.SOPInstanceUID = f"{series}.{number}"
    ds.StudyDate = ds.SeriesDate = ds.ContentDate = "20260101"
    ds.StudyTime = ds.SeriesTime = ds.ContentTime = "120000"
    ds.AccessionNumber = f"BENCH-{workload}"
    ds.Modality = modality
    ds.Manufacturer = "PacsPull benchmark"
    ds.ReferringPhysicianName = ""
    ds.StudyDescription = f"Benchmark {workload}"
    ds.SeriesDescription = description
    ds.PatientName = f"Bench^{workload.title()}"
    ds.PatientID = f"BENCH-{workload}"
    ds.PatientBirthDate = "19700101"
    ds.PatientSex = "O"
    ds.StudyInstanceUID = study
    ds.SeriesInstanceUID = series
    ds.StudyID = "1"
    ds.SeriesNumber = series_number
    ds.InstanceNumber = number
    return ds


def _pixels(ds: Dataset, rows: int, cols: int, bits: int, data: bytes, *, samples: int = 1,
            frames: int = 1) -> None:
    ds.SamplesPerPixel = samples
    ds.PhotometricInterpretation = "RGB" if samples == 3 else "MONOCHROME2"
    if samples == 3:
        ds.PlanarConfiguration = 0
    ds.Rows, ds.Columns = rows, cols
    ds.BitsAllocated = bits
    ds.BitsStored = 12 if bits == 16 else 8
    ds.HighBit = ds.BitsStored - 1
    ds.PixelRepresentation = 0
    if frames > 1:
        ds.NumberOfFrames = frames
    ds.PixelData = data


@functools.lru_cache(maxsize=16)
def _smooth16(rows: int, cols: int, phase: float) -> bytes:
    """A smooth 12-bit image (compresses well); callers vary ``phase`` over a few values (pure-Python
    pixel loops are slow), so images repeat every few instances: irrelevant to a retrieve."""
    out = array("H")
    for r in range(rows):
        y = r / rows
        out.extend(int(2048 + 1500 * math.sin(6.0 * (c / cols) + phase) * math.cos(4.0 * y - phase))
                   for c in range(cols))
    if sys.byteorder == "big":
        out.byteswap()
    return out.tobytes()


@functools.lru_cache(maxsize=64)
def _smooth8(rows: int, cols: int, phase: float, samples: int = 1) -> bytes:
    out = bytearray()
    for r in range(rows):
        for c in range(cols):
            v = int(127 + 100 * math.sin(5.0 * c / cols + phase) * math.cos(3.0 * r / rows))
            out.extend(bytes((v, (v + 40) % 256, (255 - v))[:samples]))
    return bytes(out)


def _save(ds: Dataset, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    ds.save_as(path, enforce_file_format=True)


def _dcmtk(tool: str, *args: str) -> None:
    binary = find_binary(tool)
    if binary is None:
        raise RuntimeError(f"{tool} not found (Debian package dcmtk): needed to compress MIXED")
    subprocess.run([binary, *args], check=True, capture_output=True)


# --------------------------------------------------------------------------------------------------
# the three studies


def _big(folder: Path, count: int) -> list[Path]:
    study = _uid(1, count)
    series = f"{study}.1"
    rng = random.Random(1)
    files = []
    for n in range(1, count + 1):
        ds = _base(study, series, CT, n, 1, "CT", "Axial 512", "BIG")
        ds.ImageType = ["ORIGINAL", "PRIMARY", "AXIAL"]
        ds.RescaleIntercept, ds.RescaleSlope = -1024, 1
        _pixels(ds, 512, 512, 16, rng.randbytes(512 * 512 * 2))
        files.append(folder / f"big{n:05d}.dcm")
        _save(ds, files[-1])
    return files


def _many(folder: Path, count: int) -> list[Path]:
    study = _uid(2, count)
    rng = random.Random(2)
    files = []
    series_count = 10 if count >= 100 else 1
    for n in range(1, count + 1):
        s = (n - 1) % series_count + 1
        ds = _base(study, f"{study}.{s}", CT, n, s, "CT", f"Small series {s}", "MANY")
        ds.ImageType = ["ORIGINAL", "PRIMARY", "AXIAL"]
        _pixels(ds, 70, 70, 16, rng.randbytes(70 * 70 * 2))
        files.append(folder / f"many{n:05d}.dcm")
        _save(ds, files[-1])
    return files


def _mixed(folder: Path, scale: float) -> list[Path]:
    """~270 instances at scale 1: every SOP class and transfer syntax listed in the module doc."""
    study = _uid(3, int(scale * 1000))
    files: list[Path] = []

    def n_of(count: int) -> int:
        return max(1, round(count * scale))

    # CT, uncompressed 512 KB slices
    rng = random.Random(3)
    for n in range(1, n_of(60) + 1):
        ds = _base(study, f"{study}.1", CT, n, 1, "CT", "CT uncompressed", "MIXED")
        _pixels(ds, 512, 512, 16, rng.randbytes(512 * 512 * 2))
        files.append(folder / f"ct{n:04d}.dcm")
        _save(ds, files[-1])
    # MR, JPEG Lossless SV1 (dcmcjpeg's default), 256 x 256 smooth
    raw = folder / "raw"
    raw.mkdir(exist_ok=True)
    for n in range(1, n_of(100) + 1):
        ds = _base(study, f"{study}.2", MR, n, 2, "MR", "MR JPEG lossless", "MIXED")
        _pixels(ds, 256, 256, 16, _smooth16(256, 256, n % 4 / 2))
        source = raw / f"mr{n:04d}.dcm"
        _save(ds, source)
        files.append(folder / f"mr{n:04d}.dcm")
        _dcmtk("dcmcjpeg", "+e1", str(source), str(files[-1]))  # JPEG Lossless SV1
    # CR, RLE Lossless (pydicom's own encoder: no numpy needed)
    for n in range(1, n_of(40) + 1):
        ds = _base(study, f"{study}.3", CR, n, 3, "CR", "CR RLE", "MIXED")
        _pixels(ds, 512, 512, 16, _smooth16(512, 512, n % 4 / 2))
        ds.compress(RLELossless, encoding_plugin="pydicom", generate_instance_uid=False)
        files.append(folder / f"cr{n:04d}.dcm")
        _save(ds, files[-1])
    # Secondary Capture, RGB, JPEG-LS Lossless
    for n in range(1, n_of(30) + 1):
        ds = _base(study, f"{study}.4", SC, n, 4, "OT", "SC JPEG-LS", "MIXED")
        ds.ConversionType = "WSD"
        _pixels(ds, 256, 256, 8, _smooth8(256, 256, n % 4 / 2, samples=3), samples=3)
        source = raw / f"sc{n:04d}.dcm"
        _save(ds, source)
        files.append(folder / f"sc{n:04d}.dcm")
        _dcmtk("dcmcjpls", "+el", str(source), str(files[-1]))
    # Basic Text SR
    for n in range(1, n_of(30) + 1):
        ds = _base(study, f"{study}.5", BASIC_TEXT_SR, n, 5, "SR", "Reports", "MIXED")
        ds.CompletionFlag, ds.VerificationFlag = "COMPLETE", "UNVERIFIED"
        ds.ValueType, ds.ContinuityOfContent = "CONTAINER", "SEPARATE"
        code = Dataset()
        code.CodeValue, code.CodingSchemeDesignator, code.CodeMeaning = "18748-4", "LN", "Diagnostic Imaging Report"
        ds.ConceptNameCodeSequence = Sequence([code])
        item = Dataset()
        item.RelationshipType, item.ValueType, item.TextValue = "CONTAINS", "TEXT", f"Finding {n}: normal. " * 20
        item.ConceptNameCodeSequence = Sequence([code])
        ds.ContentSequence = Sequence([item])
        files.append(folder / f"sr{n:04d}.dcm")
        _save(ds, files[-1])
    # Multi-frame grayscale byte SC, Deflated Explicit VR Little Endian (16 frames of 256 x 256)
    for n in range(1, n_of(10) + 1):
        ds = _base(study, f"{study}.6", MF_BYTE_SC, n, 6, "OT", "Multi-frame deflated", "MIXED")
        ds.ConversionType = "WSD"
        frames = b"".join(_smooth8(256, 256, f / 4) for f in range(16))
        _pixels(ds, 256, 256, 8, frames, frames=16)
        ds.file_meta.TransferSyntaxUID = DeflatedExplicitVRLittleEndian
        files.append(folder / f"mf{n:04d}.dcm")
        _save(ds, files[-1])
    shutil.rmtree(raw)
    return files


SPECS = {
    # name: (generator, default size argument)
    "big": (_big, 400),
    "many": (_many, 3000),
    "mixed": (_mixed, 1.0),
}


def workload(name: str, cache: Path, size: float | None = None) -> Workload:
    """The generated workload ``name`` (written into ``cache`` unless already there)."""
    generator, default = SPECS[name]
    size = default if size is None else size
    folder = cache / f"{name}-{size}"
    marker = folder / ".spec.json"
    spec = {"version": GENERATOR_VERSION, "name": name, "size": size}
    if marker.exists():
        try:
            saved = json.loads(marker.read_text())
        except ValueError:
            saved = {}
        if saved.get("spec") == spec:
            files = [folder / f for f in saved["files"]]
            if all(f.exists() for f in files):
                return _describe(name, saved, files)
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True)
    files = generator(folder, size)  # type: ignore[operator]
    from pydicom import dcmread

    classes: dict[str, int] = {}
    syntaxes: dict[str, int] = {}
    study_uid = ""
    for f in files:
        ds = dcmread(f, stop_before_pixels=True)
        study_uid = str(ds.StudyInstanceUID)
        name_c, name_t = UID(ds.SOPClassUID).name, UID(ds.file_meta.TransferSyntaxUID).name
        classes[name_c] = classes.get(name_c, 0) + 1
        syntaxes[name_t] = syntaxes.get(name_t, 0) + 1
    saved = {"spec": spec, "study_uid": study_uid, "files": [f.name for f in files],
             "sop_classes": classes, "transfer_syntaxes": syntaxes}
    marker.write_text(json.dumps(saved))
    return _describe(name, saved, files)


def _describe(name: str, saved: dict, files: list[Path]) -> Workload:
    w = Workload(name.upper(), saved["study_uid"], files, sop_classes=dict(saved["sop_classes"]),
                 transfer_syntaxes=dict(saved["transfer_syntaxes"]))
    w.bytes = sum(os.path.getsize(f) for f in files)
    return w
