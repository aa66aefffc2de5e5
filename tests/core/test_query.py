"""Query requests: date presets and ranges, validation, and the identifiers they become."""

from __future__ import annotations

import datetime as dt

import pytest
from pydicom.dataset import Dataset

from pacspull.core.errors import InvalidInput
from pacspull.core.query import Level, QueryRequest, StudyRow, build_identifier, parse_date

TODAY = dt.date(2026, 11, 28)


@pytest.mark.parametrize(
    ("text", "dicom"),
    [
        ("20240102", "20240102"),
        ("20240101-20240131", "20240101-20240131"),
        ("20240101-", "20240101-"),
        ("-20240131", "-20240131"),
        ("today", "20261128"),
        ("yesterday", "20261127"),
        ("last7", "20261122-20261128"),
        ("LAST30", "20261030-20261128"),
    ],
)
def test_dates(text: str, dicom: str) -> None:
    rng = parse_date(text, today=TODAY)
    assert rng is not None and rng.to_dicom() == dicom


@pytest.mark.parametrize("text", ["", "any", "  "])
def test_no_date_filter(text: str) -> None:
    assert parse_date(text) is None


@pytest.mark.parametrize("text", ["2024010", "20241301", "20240230", "tomorrow", "-", "2024-01-01", "20240102-20240101"])
def test_bad_dates_name_the_field_and_rule(text: str) -> None:
    with pytest.raises(InvalidInput) as info:
        parse_date(text)
    assert info.value.field == "date"
    assert "YYYYMMDD" in str(info.value) or "must not end before it starts" in str(info.value)


def test_request_validation() -> None:
    with pytest.raises(InvalidInput, match="study UID"):
        QueryRequest(study_uids=("1.2.3.abc",))
    with pytest.raises(InvalidInput, match="modality"):
        QueryRequest(modalities=("C T",))
    with pytest.raises(InvalidInput, match="patient name"):
        QueryRequest(patient_name="A\\B")
    assert QueryRequest(modalities=(" ct ", "mr")).modalities == ("CT", "MR")


def test_study_identifier_has_matching_and_return_keys() -> None:
    req = QueryRequest(patient_name="Müller*", date=parse_date("20240101-20240131"), modalities=("CT", "MR"))
    ds = build_identifier(req, Level.STUDY)
    assert ds.QueryRetrieveLevel == "STUDY"
    assert ds.PatientName == "Müller*"
    assert ds.StudyDate == "20240101-20240131"
    assert list(ds.ModalitiesInStudy) == ["CT", "MR"]
    assert ds.SpecificCharacterSet == "ISO_IR 192"  # non-ASCII key: say how it is encoded
    for keyword in StudyRow.keywords():
        assert keyword in ds
    assert "SpecificCharacterSet" not in build_identifier(QueryRequest(patient_name="DOE*"), Level.STUDY)


def test_series_identifier_is_hierarchical() -> None:
    ds = build_identifier(QueryRequest(modalities=("CT",)), Level.SERIES, study_uid="1.2.3")
    assert (ds.QueryRetrieveLevel, ds.StudyInstanceUID, ds.Modality) == ("SERIES", "1.2.3", "CT")
    assert "PatientName" not in ds


def test_row_decoding_to_json() -> None:
    ds = Dataset()
    ds.SpecificCharacterSet = "ISO_IR 192"
    ds.PatientName = "Müller^Jürgen"
    ds.StudyInstanceUID = "1.2.3"
    ds.ModalitiesInStudy = ["CT", "SR"]
    ds.NumberOfStudyRelatedInstances = "42"
    ds.StudyDescription = ""
    row = StudyRow.from_dataset(ds)
    out = row.to_json()
    assert out["PatientName"] == "Müller^Jürgen"
    assert out["ModalitiesInStudy"] == ["CT", "SR"]
    assert out["NumberOfStudyRelatedInstances"] == 42
    assert out["StudyDescription"] is None and out["AccessionNumber"] is None
