"""Deterministic sample DICOM data: the demo PACS's studies and the test suites' fixtures.

``sample_studies()`` describes, as frozen dataclasses, exactly what ``write_sample_data()`` writes, so a
test can assert rows without reading a file back. The set is small (4 patients, 6 studies, 111 instances,
about 1 MB) and covers what a retrieve client meets in practice: CT and MR series of 16-bit slices, a CR,
a secondary capture, a multi-frame image, two Basic Text SRs, one RLE Lossless compressed instance, and
patient names in UTF-8 (``ISO_IR 192``), Japanese (``ISO 2022 IR 87``) and Chinese (``GB18030``).

Determinism: every UID, name, number and pixel is a pure function of the sample version, with one
exception: the study of ``TODAY_STUDY_INDEX`` is dated *the day the files are written* (``today``,
default ``date.today()``) so that a "today" query preset finds something. Its UIDs do not depend on the
date. The marker file records the version and that date; ``write_sample_data`` rewrites the set when
either changed, so a demo PACS started on a later day still has a study dated today. Tests that compare
files with metadata pass the same ``today`` to both functions.
"""

from __future__ import annotations

import json
import math
import os
import sys
from array import array
from dataclasses import dataclass
from datetime import date, datetime
from functools import lru_cache
from pathlib import Path
from typing import Callable

from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.sequence import Sequence
from pydicom.uid import (
    PYDICOM_ROOT_UID,
    UID,
    ExplicitVRLittleEndian,
    RLELossless,
    generate_uid,
)

__all__ = [
    "SAMPLES_VERSION",
    "SAMPLE_PATIENTS",
    "TODAY_STUDY_INDEX",
    "SamplePatient",
    "SampleInstance",
    "SampleSeries",
    "SampleStudy",
    "sample_studies",
    "sample_instances",
    "write_sample_data",
    "written_day",
]

SAMPLES_VERSION = 1
"""Bump when the generated content changes; a folder written by another version is rewritten."""

MARKER_NAME = "pacspull-samples.json"

CT_IMAGE_STORAGE = UID("1.2.840.10008.5.1.4.1.1.2")
MR_IMAGE_STORAGE = UID("1.2.840.10008.5.1.4.1.1.4")
CR_IMAGE_STORAGE = UID("1.2.840.10008.5.1.4.1.1.1")
SECONDARY_CAPTURE_IMAGE_STORAGE = UID("1.2.840.10008.5.1.4.1.1.7")
MULTIFRAME_GRAYSCALE_WORD_SC_IMAGE_STORAGE = UID("1.2.840.10008.5.1.4.1.1.7.3")
BASIC_TEXT_SR_STORAGE = UID("1.2.840.10008.5.1.4.1.1.88.11")

_ROWS = _COLUMNS = 64
_MULTIFRAME_FRAMES = 8


def _uid(*parts: object) -> UID:
    """A UID under pydicom's root derived from a hash of `parts`: stable across runs and machines."""
    return generate_uid(
        prefix=PYDICOM_ROOT_UID,
        entropy_srcs=["pacspull-samples", *(str(part) for part in parts)],
    )


@dataclass(frozen=True)
class SamplePatient:
    """A generated patient; ``name`` is the decoded PN value with all component groups."""

    name: str
    patient_id: str
    birth_date: str
    sex: str
    charset: tuple[str, ...]
    """SpecificCharacterSet values as written; ``()`` means the default repertoire (element absent)."""


@dataclass(frozen=True)
class SampleInstance:
    """One generated SOP instance and where it lives below the sample folder."""

    sop_instance_uid: str
    sop_class_uid: str
    instance_number: int
    transfer_syntax_uid: str
    relative_path: str
    number_of_frames: int = 1


@dataclass(frozen=True)
class SampleSeries:
    """One generated series; every series holds a single SOP class."""

    series_instance_uid: str
    series_number: int
    modality: str
    description: str
    instances: tuple[SampleInstance, ...]

    @property
    def number_of_instances(self) -> int:
        """NumberOfSeriesRelatedInstances."""
        return len(self.instances)

    @property
    def instance_uids(self) -> tuple[str, ...]:
        """SOP Instance UIDs in instance-number order."""
        return tuple(inst.sop_instance_uid for inst in self.instances)


@dataclass(frozen=True)
class SampleStudy:
    """One generated study, with the study-level values a PACS indexes and computes."""

    index: int
    patient: SamplePatient
    study_instance_uid: str
    study_date: str
    study_time: str
    accession_number: str
    study_id: str
    description: str
    referring_physician: str
    series: tuple[SampleSeries, ...]

    @property
    def number_of_series(self) -> int:
        """NumberOfStudyRelatedSeries."""
        return len(self.series)

    @property
    def number_of_instances(self) -> int:
        """NumberOfStudyRelatedInstances."""
        return sum(s.number_of_instances for s in self.series)

    @property
    def modalities(self) -> tuple[str, ...]:
        """ModalitiesInStudy, sorted."""
        return tuple(sorted({s.modality for s in self.series}))

    @property
    def sop_class_uids(self) -> tuple[str, ...]:
        """SOPClassesInStudy, sorted."""
        return tuple(sorted({i.sop_class_uid for s in self.series for i in s.instances}))

    @property
    def instance_uids(self) -> tuple[str, ...]:
        """Every SOP Instance UID of the study, series by series."""
        return tuple(uid for s in self.series for uid in s.instance_uids)


MUELLER = SamplePatient("Müller^Jürgen", "PP-0001", "19580312", "M", ("ISO_IR 192",))
YAMADA = SamplePatient(
    "Yamada^Tarou=山田^太郎=やまだ^たろう", "PP-0002", "19700401", "M", ("", "ISO 2022 IR 87")
)
WANG = SamplePatient("Wang^XiaoDong=王^小东", "PP-0003", "19851120", "M", ("GB18030",))
DOE = SamplePatient("Doe^Jane", "PP-0004", "19900707", "F", ())

SAMPLE_PATIENTS: tuple[SamplePatient, ...] = (MUELLER, YAMADA, WANG, DOE)

TODAY_STUDY_INDEX = 4
"""``SampleStudy.index`` of the study dated on the day of generation."""


@dataclass(frozen=True)
class _SeriesSpec:
    kind: str  # which writer builds its instances: CT, MR, CR, SC, MF, SR
    number: int
    description: str
    count: int
    compressed: bool = False


@dataclass(frozen=True)
class _StudySpec:
    index: int
    patient: SamplePatient
    date: str | None  # None: the generation day
    time: str
    accession: str
    study_id: str
    description: str
    referring: str
    series: tuple[_SeriesSpec, ...]


_STUDY_SPECS: tuple[_StudySpec, ...] = (
    _StudySpec(1, MUELLER, "20240115", "101500", "ACC-24-0001", "1001", "CT Thorax Übersicht",
               "Schmidt^Anna", (
                   _SeriesSpec("CT", 1, "Topogramm", 1, compressed=True),
                   _SeriesSpec("CT", 2, "Thorax 5mm Weichteil", 30),
                   _SeriesSpec("CT", 3, "Thorax 5mm Lunge", 30),
               )),
    _StudySpec(2, MUELLER, "20221103", "143000", "ACC-22-0815", "1002", "Gescanntes Dokument",
               "Schmidt^Anna", (_SeriesSpec("SC", 1, "Scan", 1),)),
    _StudySpec(3, YAMADA, "20230620", "091500", "ACC-23-0042", "2001", "MR Head",
               "Suzuki^Ichiro", (
                   _SeriesSpec("MR", 1, "T1 AX", 20),
                   _SeriesSpec("MR", 2, "T2 AX", 20),
               )),
    _StudySpec(TODAY_STUDY_INDEX, YAMADA, None, "083000", "ACC-00-0007", "2002",
               "Follow-up cine and report", "Suzuki^Ichiro", (
                   _SeriesSpec("MF", 1, "Cine", 1),
                   _SeriesSpec("SR", 2, "Report", 1),
               )),
    _StudySpec(5, WANG, "20191231", "160000", "ACC-19-1231", "3001", "胸部正位", "Li^Wei", (
        _SeriesSpec("CR", 1, "Chest PA", 1),
        _SeriesSpec("SR", 2, "Report", 1),
    )),
    _StudySpec(6, DOE, "20240116", "111100", "ACC-24-0002", "4001", "CT Abdomen", "Schmidt^Anna", (
        _SeriesSpec("CT", 1, "Abdomen 5mm", 5),
    )),
)

_KIND_SOP_CLASS = {
    "CT": CT_IMAGE_STORAGE,
    "MR": MR_IMAGE_STORAGE,
    "CR": CR_IMAGE_STORAGE,
    "SC": SECONDARY_CAPTURE_IMAGE_STORAGE,
    "MF": MULTIFRAME_GRAYSCALE_WORD_SC_IMAGE_STORAGE,
    "SR": BASIC_TEXT_SR_STORAGE,
}
_KIND_MODALITY = {"CT": "CT", "MR": "MR", "CR": "CR", "SC": "OT", "MF": "OT", "SR": "SR"}


def sample_studies(today: date | None = None) -> tuple[SampleStudy, ...]:
    """Describe the generated studies; ``today`` dates study ``TODAY_STUDY_INDEX`` (default: now)."""
    day = (today or date.today()).strftime("%Y%m%d")
    studies = []
    for spec in _STUDY_SPECS:
        series = []
        for se in spec.series:
            instances = tuple(
                SampleInstance(
                    sop_instance_uid=_uid("instance", spec.index, se.number, number),
                    sop_class_uid=_KIND_SOP_CLASS[se.kind],
                    instance_number=number,
                    transfer_syntax_uid=RLELossless if se.compressed else ExplicitVRLittleEndian,
                    relative_path=f"study{spec.index}/series{se.number}/{number:04d}.dcm",
                    number_of_frames=_MULTIFRAME_FRAMES if se.kind == "MF" else 1,
                )
                for number in range(1, se.count + 1)
            )
            series.append(
                SampleSeries(
                    series_instance_uid=_uid("series", spec.index, se.number),
                    series_number=se.number,
                    modality=_KIND_MODALITY[se.kind],
                    description=se.description,
                    instances=instances,
                )
            )
        studies.append(
            SampleStudy(
                index=spec.index,
                patient=spec.patient,
                study_instance_uid=_uid("study", spec.index),
                study_date=spec.date or day,
                study_time=spec.time,
                accession_number=spec.accession,
                study_id=spec.study_id,
                description=spec.description,
                referring_physician=spec.referring,
                series=tuple(series),
            )
        )
    return tuple(studies)


def sample_instances(today: date | None = None) -> dict[str, SampleInstance]:
    """Every generated instance by SOP Instance UID."""
    return {
        inst.sop_instance_uid: inst
        for study in sample_studies(today)
        for series in study.series
        for inst in series.instances
    }


def write_sample_data(folder: Path, *, today: date | None = None) -> list[Path]:
    """Write the sample set as Part-10 files below `folder` and return their paths.

    Idempotent and cheap to repeat: the marker file records the version and day of a complete set.
    With a matching marker only missing files are written, and only the "today" study's when the day
    changed; without one (or for another version) everything is. Each file is written to a temporary
    name and renamed; the marker is removed first and written last, so an interrupted run is redone.
    """
    folder = Path(folder)
    studies = sample_studies(today)
    day = (today or date.today()).strftime("%Y%m%d")
    marker = folder / MARKER_NAME
    expected = {"version": SAMPLES_VERSION, "today": day}
    try:
        found = json.loads(marker.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        found = None  # no marker or a damaged one: write everything
    complete = isinstance(found, dict) and found.get("version") == SAMPLES_VERSION

    paths: list[Path] = []
    todo: list[tuple[SampleStudy, SampleSeries, SampleInstance]] = []
    for study in studies:
        stale = study.index == TODAY_STUDY_INDEX and found != expected
        for series in study.series:
            for inst in series.instances:
                path = folder / inst.relative_path
                paths.append(path)
                if not complete or stale or not path.is_file():
                    todo.append((study, series, inst))
    if not todo and found == expected:
        return paths

    folder.mkdir(parents=True, exist_ok=True)
    marker.unlink(missing_ok=True)
    for study, series, inst in todo:
        _write_atomic(_build_instance(study, series, inst), folder / inst.relative_path)
    tmp = marker.with_suffix(".tmp")
    tmp.write_text(json.dumps(expected), encoding="utf-8")
    os.replace(tmp, marker)
    return paths


def written_day(folder: Path) -> date | None:
    """The ``today`` a complete sample set in `folder` was written for, or None if there is none.

    Lets a test that did not choose the day (a shared session fixture) describe the files exactly:
    ``sample_studies(written_day(folder))``.
    """
    try:
        marker = json.loads((Path(folder) / MARKER_NAME).read_text(encoding="utf-8"))
        if marker.get("version") != SAMPLES_VERSION:
            return None
        return datetime.strptime(marker["today"], "%Y%m%d").date()
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        return None


def _write_atomic(ds: Dataset, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    ds.save_as(tmp, enforce_file_format=True)
    os.replace(tmp, path)


def _build_instance(study: SampleStudy, series: SampleSeries, inst: SampleInstance) -> Dataset:
    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    patient = study.patient
    if patient.charset:
        ds.SpecificCharacterSet = (
            list(patient.charset) if len(patient.charset) > 1 else patient.charset[0]
        )
    ds.SOPClassUID = inst.sop_class_uid
    ds.SOPInstanceUID = inst.sop_instance_uid
    ds.StudyDate = ds.SeriesDate = ds.ContentDate = study.study_date
    ds.StudyTime = ds.SeriesTime = ds.ContentTime = study.study_time
    ds.AccessionNumber = study.accession_number
    ds.Modality = series.modality
    ds.Manufacturer = "PacsPull"
    ds.InstitutionName = "PacsPull Demo Hospital"
    ds.ReferringPhysicianName = study.referring_physician
    ds.StationName = "DEMO"
    ds.StudyDescription = study.description
    ds.SeriesDescription = series.description
    ds.PatientName = patient.name
    ds.PatientID = patient.patient_id
    ds.PatientBirthDate = patient.birth_date
    ds.PatientSex = patient.sex
    ds.StudyInstanceUID = study.study_instance_uid
    ds.SeriesInstanceUID = series.series_instance_uid
    ds.StudyID = study.study_id
    ds.SeriesNumber = series.series_number
    ds.InstanceNumber = inst.instance_number

    kind = next(k for k, uid in _KIND_SOP_CLASS.items() if uid == inst.sop_class_uid)
    _KIND_WRITERS[kind](ds, study, series, inst)
    if inst.transfer_syntax_uid == RLELossless:
        # The native pydicom encoder needs no numpy; keep the UID we promised in the metadata.
        ds.compress(RLELossless, encoding_plugin="pydicom", generate_instance_uid=False)
    return ds


def _grid(value: Callable[[float, float], int], *, bits: int = 16) -> array:
    """Pixel values from `value(x, y)` with x, y in [-1, 1], row by row."""
    out = array("H" if bits == 16 else "B")
    for r in range(_ROWS):
        y = (2 * r + 1) / _ROWS - 1
        out.extend(value((2 * c + 1) / _COLUMNS - 1, y) for c in range(_COLUMNS))
    return out


def _to_le_bytes(values: array) -> bytes:
    if values.itemsize > 1 and sys.byteorder == "big":
        values = array(values.typecode, values)
        values.byteswap()  # the files are little endian whatever the host
    return values.tobytes()


def _image_pixel_module(ds: Dataset, *, bits_allocated: int = 16, bits_stored: int = 12) -> None:
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.Rows = _ROWS
    ds.Columns = _COLUMNS
    ds.BitsAllocated = bits_allocated
    ds.BitsStored = bits_stored
    ds.HighBit = bits_stored - 1
    ds.PixelRepresentation = 0


def _image_plane(ds: Dataset, study: SampleStudy, z: float) -> None:
    ds.FrameOfReferenceUID = _uid("frame-of-reference", study.index)
    ds.PositionReferenceIndicator = ""
    ds.ImageOrientationPatient = [1, 0, 0, 0, 1, 0]
    ds.ImagePositionPatient = [-160, -160, z]
    ds.PixelSpacing = [5, 5]
    ds.SliceThickness = 5
    ds.SliceLocation = z


def _write_ct(ds: Dataset, study: SampleStudy, series: SampleSeries, inst: SampleInstance) -> None:
    n = inst.instance_number
    scout = series.series_number == 1 and len(series.instances) == 1
    ds.ImageType = ["ORIGINAL", "PRIMARY", "LOCALIZER" if scout else "AXIAL"]
    ds.KVP = 120
    ds.AcquisitionNumber = 1
    ds.RescaleIntercept = -1024
    ds.RescaleSlope = 1
    ds.RescaleType = "HU"
    ds.WindowCenter = 40 if series.series_number != 3 else -600
    ds.WindowWidth = 400 if series.series_number != 3 else 1500
    _image_plane(ds, study, -5.0 * n)
    _image_pixel_module(ds)
    # Lungs shrink towards the base in six steps; cached, as pure-Python pixel loops dominate the time.
    base = _ct_phantom(6 * (n - 1) // max(len(series.instances), 1))
    if series.series_number == 3:
        # A sharp-kernel look: deterministic texture, different on every slice.
        texture = _ct_texture()
        base = array("H", (min(4095, max(0, v + (t + n) % 31 - 15)) for v, t in zip(base, texture)))
    ds.PixelData = _to_le_bytes(base)


@lru_cache(maxsize=None)
def _ct_phantom(step: int) -> array:
    lung = 0.35 * (1 - step / 12)

    def hu(x: float, y: float) -> int:
        if x * x / 0.8 + y * y / 0.55 > 1:
            return 24  # air, -1000 HU after the rescale intercept of -1024
        if (x - 0.05) ** 2 + (y - 0.45) ** 2 < 0.01:
            return 1724  # spine, 700 HU
        if min((x - 0.4) ** 2, (x + 0.4) ** 2) / lung + y * y / (1.6 * lung) < 0.3:
            return 224  # lungs, -800 HU
        return 1064  # soft tissue, 40 HU

    return _grid(hu)


@lru_cache(maxsize=None)
def _ct_texture() -> array:
    return _grid(lambda x, y: int((x + 1) * 97) * 7 + int((y + 1) * 89) * 13)


def _write_mr(ds: Dataset, study: SampleStudy, series: SampleSeries, inst: SampleInstance) -> None:
    n = inst.instance_number
    t2 = series.series_number == 2
    ds.ImageType = ["ORIGINAL", "PRIMARY", "OTHER"]
    ds.ScanningSequence = "SE"
    ds.SequenceVariant = "NONE"
    ds.ScanOptions = ""
    ds.MRAcquisitionType = "2D"
    ds.RepetitionTime = 4000 if t2 else 500
    ds.EchoTime = 100 if t2 else 15
    ds.EchoTrainLength = 8 if t2 else 1
    ds.MagneticFieldStrength = 1.5
    ds.WindowCenter = 1000
    ds.WindowWidth = 2000
    _image_plane(ds, study, 5.0 * n)
    _image_pixel_module(ds)
    ds.PixelData = _to_le_bytes(_mr_phantom(abs(n - 10), t2))


@lru_cache(maxsize=None)
def _mr_phantom(distance: int, t2: bool) -> array:
    """A head `distance` slices from the widest one; CSF is bright on T2, dark on T1."""
    scale = 1 - distance / 14

    def signal(x: float, y: float) -> int:
        r2 = (x * x / 0.7 + y * y / 0.85) / (scale * scale)
        if r2 > 1:
            return 0
        if r2 > 0.85:
            return 900 if t2 else 1400  # scalp and skull
        if abs(x) < 0.08 and abs(y) < 0.3:
            return 1800 if t2 else 300  # ventricles (CSF)
        return 1100 if t2 else 1600  # brain

    return _grid(signal)


def _write_cr(ds: Dataset, study: SampleStudy, series: SampleSeries, inst: SampleInstance) -> None:
    ds.ImageType = ["ORIGINAL", "PRIMARY"]
    ds.BodyPartExamined = "CHEST"
    ds.ViewPosition = "PA"
    ds.ImagerPixelSpacing = [6, 6]
    ds.WindowCenter = 2048
    ds.WindowWidth = 4096
    _image_pixel_module(ds)

    def density(x: float, y: float) -> int:
        if min((x - 0.45) ** 2, (x + 0.45) ** 2) / 0.09 + y * y / 0.45 < 1:
            base = 600  # lungs
        else:
            base = 2600
        rib = 500 if int((y + 1) * 8) % 2 == 0 and abs(x) > 0.15 else 0
        return min(4095, base + rib)

    ds.PixelData = _to_le_bytes(_grid(density))


def _write_sc(ds: Dataset, study: SampleStudy, series: SampleSeries, inst: SampleInstance) -> None:
    ds.ImageType = ["DERIVED", "SECONDARY"]
    ds.ConversionType = "WSD"
    _image_pixel_module(ds, bits_allocated=8, bits_stored=8)

    def page(x: float, y: float) -> int:
        line = int((y + 1) * 16) % 3 == 0 and abs(x) < 0.8 and y > -0.8
        return 30 if line else 235

    ds.PixelData = _to_le_bytes(_grid(page, bits=8))


def _write_multiframe(
    ds: Dataset, study: SampleStudy, series: SampleSeries, inst: SampleInstance
) -> None:
    ds.ImageType = ["DERIVED", "SECONDARY"]
    ds.ConversionType = "WSD"
    ds.NumberOfFrames = _MULTIFRAME_FRAMES
    ds.FrameTime = 100
    ds.FrameIncrementPointer = 0x00181063  # (0018,1063) Frame Time
    ds.RescaleIntercept = 0
    ds.RescaleSlope = 1
    _image_pixel_module(ds)
    frames = []
    for frame in range(_MULTIFRAME_FRAMES):
        angle = 2 * math.pi * frame / _MULTIFRAME_FRAMES
        cx, cy = 0.5 * math.cos(angle), 0.5 * math.sin(angle)
        frames.append(
            _to_le_bytes(
                _grid(lambda x, y, cx=cx, cy=cy: 3000 if (x - cx) ** 2 + (y - cy) ** 2 < 0.06 else 200)
            )
        )
    ds.PixelData = b"".join(frames)


_SR_TEXT = {
    "PP-0002": ("Stable appearance compared with 2023-06-20.", "No new findings."),
    "PP-0003": ("两肺未见明显异常。", "未见异常。"),
}


def _code(value: str, scheme: str, meaning: str) -> Dataset:
    item = Dataset()
    item.CodeValue = value
    item.CodingSchemeDesignator = scheme
    item.CodeMeaning = meaning
    return item


def _write_sr(ds: Dataset, study: SampleStudy, series: SampleSeries, inst: SampleInstance) -> None:
    finding, impression = _SR_TEXT.get(study.patient.patient_id, ("Normal.", "Normal."))
    ds.CompletionFlag = "COMPLETE"
    ds.VerificationFlag = "UNVERIFIED"
    ds.ReferencedPerformedProcedureStepSequence = Sequence()
    ds.PerformedProcedureCodeSequence = Sequence()
    ds.ValueType = "CONTAINER"
    ds.ConceptNameCodeSequence = Sequence([_code("18748-4", "LN", "Diagnostic Imaging Report")])
    ds.ContinuityOfContent = "SEPARATE"
    items = []
    for code, text in ((_code("121071", "DCM", "Finding"), finding),
                       (_code("121073", "DCM", "Impression"), impression)):
        item = Dataset()
        item.RelationshipType = "CONTAINS"
        item.ValueType = "TEXT"
        item.ConceptNameCodeSequence = Sequence([code])
        item.TextValue = text
        items.append(item)
    ds.ContentSequence = Sequence(items)


_KIND_WRITERS: dict[str, Callable[[Dataset, SampleStudy, SampleSeries, SampleInstance], None]] = {
    "CT": _write_ct,
    "MR": _write_mr,
    "CR": _write_cr,
    "SC": _write_sc,
    "MF": _write_multiframe,
    "SR": _write_sr,
}
