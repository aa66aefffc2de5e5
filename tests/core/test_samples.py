"""The sample generator: content, metadata that matches the files, determinism and idempotence."""

from __future__ import annotations

import shutil
import time
from datetime import date
from pathlib import Path

import pydicom
import pytest
from pydicom.pixels import get_decoder
from pydicom.uid import UID, ExplicitVRLittleEndian, RLELossless

from pacspull.core import samples

DAY = date(2025, 3, 14)


def test_sample_set_is_big_enough_and_small(sample_files: list[Path],
                                            sample_metadata: tuple[samples.SampleStudy, ...]) -> None:
    assert len(sample_files) >= 100
    assert len({s.patient.patient_id for s in sample_metadata}) >= 3
    assert len(sample_metadata) >= 5
    assert sum(p.stat().st_size for p in sample_files) < 5 * 1024 * 1024
    modalities = {m for s in sample_metadata for m in s.modalities}
    assert {"CT", "MR", "SR", "OT", "CR"} <= modalities


def test_metadata_matches_every_file(sample_files: list[Path], sample_folder: Path,
                                     sample_metadata: tuple[samples.SampleStudy, ...]) -> None:
    described = {}
    for study in sample_metadata:
        for series in study.series:
            for inst in series.instances:
                described[sample_folder / inst.relative_path] = (study, series, inst)
    assert set(described) == set(sample_files)

    for path, (study, series, inst) in described.items():
        ds = pydicom.dcmread(path, stop_before_pixels=True)
        patient = study.patient
        assert str(ds.PatientName) == patient.name
        assert ds.PatientID == patient.patient_id
        assert ds.PatientBirthDate == patient.birth_date
        assert ds.PatientSex == patient.sex
        charset = ds.get("SpecificCharacterSet")
        assert (() if charset is None else tuple([charset] if isinstance(charset, str) else charset)
                ) == patient.charset
        assert ds.StudyInstanceUID == study.study_instance_uid
        assert ds.StudyDate == study.study_date
        assert ds.StudyTime == study.study_time
        assert ds.AccessionNumber == study.accession_number
        assert ds.StudyID == study.study_id
        assert ds.StudyDescription == study.description
        assert str(ds.ReferringPhysicianName) == study.referring_physician
        assert ds.SeriesInstanceUID == series.series_instance_uid
        assert ds.SeriesNumber == series.series_number
        assert ds.Modality == series.modality
        assert ds.SeriesDescription == series.description
        assert ds.InstanceNumber == inst.instance_number
        assert ds.SOPClassUID == inst.sop_class_uid
        assert ds.SOPInstanceUID == inst.sop_instance_uid
        assert ds.file_meta.TransferSyntaxUID == inst.transfer_syntax_uid
        assert ds.file_meta.MediaStorageSOPInstanceUID == inst.sop_instance_uid
        assert int(ds.get("NumberOfFrames", 1)) == inst.number_of_frames


def test_uids_are_valid_unique_and_independent_of_the_day() -> None:
    studies = samples.sample_studies(DAY)
    uids = [s.study_instance_uid for s in studies]
    uids += [se.series_instance_uid for s in studies for se in s.series]
    uids += [uid for s in studies for uid in s.instance_uids]
    assert len(uids) == len(set(uids))
    for uid in uids:
        assert UID(uid).is_valid and len(uid) <= 64, uid
    assert samples.sample_studies(date(2031, 1, 2)) != studies
    assert [s.instance_uids for s in samples.sample_studies(date(2031, 1, 2))] == [
        s.instance_uids for s in studies
    ]
    assert samples.sample_studies(DAY) == studies


def test_only_the_today_study_follows_the_day() -> None:
    studies = {s.index: s for s in samples.sample_studies(DAY)}
    assert studies[samples.TODAY_STUDY_INDEX].study_date == "20250314"
    others = {s.study_date for i, s in studies.items() if i != samples.TODAY_STUDY_INDEX}
    assert "20250314" not in others and len(others) == len(studies) - 1


def test_names_are_encoded_in_their_character_sets(sample_folder: Path,
                                                   sample_metadata: tuple[samples.SampleStudy, ...]
                                                   ) -> None:
    raw = {}
    for study in sample_metadata:
        path = sample_folder / study.series[0].instances[0].relative_path
        ds = pydicom.dcmread(path, stop_before_pixels=True)
        raw[study.patient.patient_id] = ds.get_item("PatientName").value.rstrip(b" ")
    assert raw["PP-0001"] == "Müller^Jürgen".encode("utf-8")
    assert b"\x1b$B" in raw["PP-0002"]  # ISO 2022 IR 87 escape into JIS X 0208
    assert "王".encode("gb18030") in raw["PP-0003"]
    assert raw["PP-0004"] == b"Doe^Jane"


def test_special_instances(sample_folder: Path,
                           sample_metadata: tuple[samples.SampleStudy, ...]) -> None:
    instances = [(se, i) for s in sample_metadata for se in s.series for i in se.instances]

    rle = [i for _, i in instances if i.transfer_syntax_uid == RLELossless]
    assert len(rle) == 1
    ds = pydicom.dcmread(sample_folder / rle[0].relative_path)
    pixels, _ = get_decoder(RLELossless).as_buffer(ds)
    assert len(pixels) == 64 * 64 * 2 and len(set(bytes(pixels))) > 2

    multiframe = [i for _, i in instances if i.number_of_frames > 1]
    assert len(multiframe) == 1
    ds = pydicom.dcmread(sample_folder / multiframe[0].relative_path)
    assert ds.NumberOfFrames == multiframe[0].number_of_frames
    assert len(ds.PixelData) == ds.NumberOfFrames * ds.Rows * ds.Columns * 2

    reports = [i for se, i in instances if se.modality == "SR"]
    assert len(reports) == 2
    texts = set()
    for inst in reports:
        ds = pydicom.dcmread(sample_folder / inst.relative_path)
        assert ds.SOPClassUID == samples.BASIC_TEXT_SR_STORAGE
        assert ds.ValueType == "CONTAINER"
        assert [item.ValueType for item in ds.ContentSequence] == ["TEXT", "TEXT"]
        texts.update(item.TextValue for item in ds.ContentSequence)
    assert "未见异常。" in texts

    sc = [i for _, i in instances if i.sop_class_uid == samples.SECONDARY_CAPTURE_IMAGE_STORAGE]
    assert len(sc) == 1


def test_write_is_idempotent_and_repairs_only_what_is_needed(tmp_path: Path, sample_folder: Path
                                                            ) -> None:
    folder = tmp_path / "samples"
    shutil.copytree(sample_folder, folder)  # a complete set written for the session's day
    studies = samples.sample_studies(DAY)
    paths = [folder / i.relative_path for s in studies for se in s.series for i in se.instances]
    today_study = next(s for s in studies if s.index == samples.TODAY_STUDY_INDEX)
    dated = {folder / i.relative_path for se in today_study.series for i in se.instances}
    mtimes = {p: p.stat().st_mtime_ns for p in paths}

    def changed() -> set[Path]:
        return {p for p in paths if p.stat().st_mtime_ns != mtimes[p]}

    # Another day: only the "today" study is rewritten, to follow the day.
    assert samples.write_sample_data(folder, today=DAY) == paths
    assert samples.written_day(folder) == DAY
    assert changed() == dated
    ds = pydicom.dcmread(sorted(dated)[0], stop_before_pixels=True)
    assert ds.StudyDate == "20250314"
    mtimes = {p: p.stat().st_mtime_ns for p in paths}

    started = time.perf_counter()
    assert samples.write_sample_data(folder, today=DAY) == paths
    assert time.perf_counter() - started < 0.2
    assert changed() == set()

    paths[5].unlink()
    assert samples.write_sample_data(folder, today=DAY) == paths
    assert changed() == {paths[5]}

    # A damaged marker means an unknown state: everything is written again, byte for byte as in
    # the session's folder except the dated study (so generation is deterministic across runs).
    (folder / samples.MARKER_NAME).write_text("{", encoding="utf-8")
    assert samples.written_day(folder) is None
    samples.write_sample_data(folder, today=DAY)
    assert samples.written_day(folder) == DAY
    assert changed() == set(paths)
    for path in set(paths) - dated:
        relative = path.relative_to(folder)
        assert path.read_bytes() == (sample_folder / relative).read_bytes(), relative


@pytest.mark.parametrize("index", range(1, 7))
def test_study_indexes_are_stable(index: int) -> None:
    # Other tests and the demo node refer to studies by index; keep their meaning stable.
    study = next(s for s in samples.sample_studies(DAY) if s.index == index)
    expected_patient = {1: "PP-0001", 2: "PP-0001", 3: "PP-0002", 4: "PP-0002", 5: "PP-0003",
                        6: "PP-0004"}[index]
    assert study.patient.patient_id == expected_patient
    assert ExplicitVRLittleEndian in {i.transfer_syntax_uid for se in study.series
                                      for i in se.instances}
