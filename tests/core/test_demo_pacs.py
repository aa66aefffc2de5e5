"""The demo PACS over real DICOM on loopback, driven by a plain pynetdicom SCU."""

from __future__ import annotations

import logging
import shutil
import socket
import threading
import time
from collections.abc import Callable, Iterator
from datetime import date
from pathlib import Path
from typing import Any

import pydicom
import pytest
from pydicom.dataset import Dataset
from pydicom.multival import MultiValue
from pydicom.pixels import get_decoder
from pydicom.uid import ExplicitVRLittleEndian, ImplicitVRLittleEndian, RLELossless
from pynetdicom import AE, build_role, evt
from pynetdicom.association import Association
from pynetdicom.sop_class import (
    PatientRootQueryRetrieveInformationModelFind,
    PatientRootQueryRetrieveInformationModelGet,
    StudyRootQueryRetrieveInformationModelFind,
    StudyRootQueryRetrieveInformationModelGet,
    Verification,
)

from pacspull.core import samples
from pacspull.core.demo_pacs import HOSTILE_VALUES, DemoPacs, Faults

STUDY_FIND = StudyRootQueryRetrieveInformationModelFind
STUDY_GET = StudyRootQueryRetrieveInformationModelGet
PATIENT_FIND = PatientRootQueryRetrieveInformationModelFind
PATIENT_GET = PatientRootQueryRetrieveInformationModelGet
SOP_CLASSES = sorted({
    inst.sop_class_uid
    for study in samples.sample_studies()
    for series in study.series
    for inst in series.instances
})
Studies = tuple[samples.SampleStudy, ...]


def _no_delay(event: evt.Event) -> None:
    # pynetdicom leaves Nagle's algorithm on: every small DIMSE message would wait ~40 ms for an ACK.
    event.assoc.dul.socket.socket.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)


class Client:
    """A pynetdicom SCU for C-FIND and C-GET; records the C-STORE sub-operations it receives."""

    def __init__(self, pacs: DemoPacs, *, rle: bool = False, ae_title: str = "PACSPULL_TEST") -> None:
        ae = AE(ae_title=ae_title)
        ae.acse_timeout = ae.dimse_timeout = ae.network_timeout = 10
        for model in (Verification, STUDY_FIND, STUDY_GET, PATIENT_FIND, PATIENT_GET):
            ae.add_requested_context(model)
        for uid in SOP_CLASSES:
            ae.add_requested_context(uid, [ExplicitVRLittleEndian, ImplicitVRLittleEndian])
            if rle:
                ae.add_requested_context(uid, [RLELossless])
        self.received: list[tuple[Dataset, str]] = []
        self.on_store: Callable[[], None] = lambda: None
        self.assoc: Association = ae.associate(
            pacs.host, pacs.port, ae_title=pacs.ae_title,
            ext_neg=[build_role(uid, scp_role=True) for uid in SOP_CLASSES],
            evt_handlers=[(evt.EVT_C_STORE, self._store), (evt.EVT_CONN_OPEN, _no_delay)],
        )

    def _store(self, event: evt.Event) -> int:
        self.received.append((event.dataset, str(event.context.transfer_syntax)))
        self.on_store()
        return 0x0000

    @property
    def received_uids(self) -> list[str]:
        return [str(ds.SOPInstanceUID) for ds, _ in self.received]

    def find(self, level: str, model: str = STUDY_FIND, charset: Any = None,
             **keys: Any) -> tuple[list[Dataset], int]:
        """Matches and the final status of a C-FIND."""
        query = Dataset()
        if charset is not None:
            query.SpecificCharacterSet = charset
        query.QueryRetrieveLevel = level
        for keyword, value in keys.items():
            setattr(query, keyword, value)
        matches, final = [], -1
        for status, identifier in self.assoc.send_c_find(query, model):
            if status.Status in (0xFF00, 0xFF01):
                matches.append(identifier)
            else:
                final = status.Status
        return matches, final

    def get(self, level: str, model: str = STUDY_GET, **keys: Any) -> Dataset:
        """The final C-GET response (status and sub-operation counts)."""
        query = Dataset()
        query.QueryRetrieveLevel = level
        for keyword, value in keys.items():
            setattr(query, keyword, value)
        final = Dataset()
        for status, identifier in self.assoc.send_c_get(query, model):
            final = status
            if identifier is not None and "FailedSOPInstanceUIDList" in identifier:
                final.FailedSOPInstanceUIDList = identifier.FailedSOPInstanceUIDList
        return final

    def close(self) -> None:
        if self.assoc.is_established:
            self.assoc.release()


@pytest.fixture
def connect() -> Iterator[Callable[..., Client]]:
    clients: list[Client] = []

    def make(pacs: DemoPacs, **kwargs: Any) -> Client:
        client = Client(pacs, **kwargs)
        clients.append(client)
        return client

    yield make
    for client in clients:
        client.close()


@pytest.fixture
def client(demo_pacs: DemoPacs, connect: Callable[..., Client]) -> Client:
    made = connect(demo_pacs)
    assert made.assoc.is_established
    return made


@pytest.fixture(scope="module")
def shared_client(demo_pacs_session: DemoPacs) -> Iterator[Client]:
    made = Client(demo_pacs_session)
    yield made
    made.close()


@pytest.fixture
def finder(demo_pacs: DemoPacs, shared_client: Client) -> Client:
    """One association reused by the C-FIND-only tests (an association costs ~0.1 s in pynetdicom);
    ``demo_pacs`` guarantees no faults are set."""
    assert shared_client.assoc.is_established
    return shared_client


def values(value: Any) -> tuple[str, ...]:
    if isinstance(value, (MultiValue, list)):
        return tuple(str(v) for v in value)
    return () if value in (None, "") else (str(value),)


def study(studies: Studies, index: int) -> samples.SampleStudy:
    return next(s for s in studies if s.index == index)


def indexes(rows: list[Dataset], studies: Studies) -> set[int]:
    by_uid = {s.study_instance_uid: s.index for s in studies}
    return {by_uid[str(row.StudyInstanceUID)] for row in rows}


# -- C-ECHO and C-FIND -----------------------------------------------------------------------------


def test_echo(client: Client, demo_pacs: DemoPacs) -> None:
    assert client.assoc.send_c_echo().Status == 0x0000
    assert demo_pacs.port > 0 and demo_pacs.host == "127.0.0.1"
    assert demo_pacs.instance_count == 111


STUDY_KEYS = dict(
    PatientName="", PatientID="", PatientBirthDate="", PatientSex="", StudyInstanceUID="",
    StudyDate="", StudyTime="", AccessionNumber="", StudyDescription="", StudyID="",
    ReferringPhysicianName="", ModalitiesInStudy="", SOPClassesInStudy="",
    NumberOfStudyRelatedSeries="", NumberOfStudyRelatedInstances="",
)


def test_study_find_returns_exact_rows(finder: Client, sample_metadata: Studies) -> None:
    rows, final = finder.find("STUDY", **STUDY_KEYS)
    assert final == 0x0000
    got = {
        str(r.StudyInstanceUID): (
            str(r.PatientName), r.PatientID, r.PatientBirthDate, r.PatientSex, r.StudyDate,
            r.StudyTime, r.AccessionNumber, r.StudyDescription, r.StudyID,
            str(r.ReferringPhysicianName), values(r.ModalitiesInStudy),
            values(r.SOPClassesInStudy), int(r.NumberOfStudyRelatedSeries),
            int(r.NumberOfStudyRelatedInstances),
        )
        for r in rows
    }
    expected = {
        s.study_instance_uid: (
            s.patient.name, s.patient.patient_id, s.patient.birth_date, s.patient.sex,
            s.study_date, s.study_time, s.accession_number, s.description, s.study_id,
            s.referring_physician, s.modalities, s.sop_class_uids, s.number_of_series,
            s.number_of_instances,
        )
        for s in sample_metadata
    }
    assert got == expected

    for row in rows:  # exactly the requested keys, plus the level and the record's character set
        s = next(s for s in sample_metadata if s.study_instance_uid == row.StudyInstanceUID)
        extra = {"QueryRetrieveLevel"} | ({"SpecificCharacterSet"} if s.patient.charset else set())
        assert {e.keyword for e in row} == set(STUDY_KEYS) | extra
        if s.patient.charset:
            assert values(row.SpecificCharacterSet) == s.patient.charset


@pytest.mark.parametrize(("name", "charset", "patient_id"), [
    ("Müller*", "ISO_IR 192", "PP-0001"),
    ("müller^jürgen", "ISO_IR 192", "PP-0001"),  # PN matching ignores case
    ("M?ller^J*", "ISO_IR 192", "PP-0001"),
    ("Yamada^Tarou=山田^太郎=やまだ^たろう", ["", "ISO 2022 IR 87"], "PP-0002"),
    ("山田*", ["", "ISO 2022 IR 87"], "PP-0002"),  # matched against each component group
    ("王^小东", "GB18030", "PP-0003"),
    ("*XiaoDong*", None, "PP-0003"),
    ("Doe^Jane", None, "PP-0004"),
])
def test_patient_name_matching_and_decoding(finder: Client, sample_metadata: Studies, name: str,
                                            charset: Any, patient_id: str) -> None:
    rows, final = finder.find("STUDY", charset=charset, PatientName=name, PatientID="",
                              StudyInstanceUID="")
    assert final == 0x0000
    expected = {s.study_instance_uid for s in sample_metadata if s.patient.patient_id == patient_id}
    assert {str(r.StudyInstanceUID) for r in rows} == expected
    patient = next(p for p in samples.SAMPLE_PATIENTS if p.patient_id == patient_id)
    assert {str(r.PatientName) for r in rows} == {patient.name}


@pytest.mark.parametrize(("keys", "expected"), [
    ({"StudyDate": "20240115"}, {1}),
    ({"StudyDate": "20240115-20240116"}, {1, 6}),
    ({"StudyDate": "-20200101"}, {5}),
    ({"StudyDate": "20230101-"}, {1, 3, 4, 6}),
    ({"StudyDate": "20240101-20241231", "StudyTime": "1100-"}, {6}),
    ({"StudyTime": "1000-1100"}, {1}),
    ({"StudyTime": "-0900"}, {4}),
    ({"StudyTime": "1111"}, {6}),  # a partial time names the whole minute
    ({"AccessionNumber": "ACC-24-*"}, {1, 6}),
    ({"StudyDescription": "CT*"}, {1, 6}),
    ({"StudyDescription": "ct*"}, set()),  # only PN ignores case
    ({"StudyDescription": "胸部*"}, {5}),
    ({"PatientID": "PP-000?"}, {1, 2, 3, 4, 5, 6}),
    ({"PatientID": "PP-0002"}, {3, 4}),
    ({"PatientName": "*"}, {1, 2, 3, 4, 5, 6}),
    ({"ModalitiesInStudy": "SR"}, {4, 5}),
    ({"ModalitiesInStudy": ["CT", "MR"]}, {1, 3, 6}),
    ({"SOPClassesInStudy": samples.BASIC_TEXT_SR_STORAGE}, {4, 5}),
    ({"PatientSex": "F"}, {6}),
    ({"StudyID": "2001"}, {3}),
    ({"ReferringPhysicianName": "schmidt*"}, {1, 2, 6}),
])
def test_study_matching(finder: Client, sample_metadata: Studies, keys: dict[str, Any],
                        expected: set[int]) -> None:
    has_non_ascii = any(isinstance(v, str) and not v.isascii() for v in keys.values())
    rows, final = finder.find("STUDY", charset="ISO_IR 192" if has_non_ascii else None,
                              StudyInstanceUID="", **keys)
    assert final == 0x0000
    assert indexes(rows, sample_metadata) == expected


def test_uid_list_and_today(finder: Client, sample_metadata: Studies) -> None:
    wanted = [study(sample_metadata, 1).study_instance_uid,
              study(sample_metadata, 5).study_instance_uid]
    rows, _ = finder.find("STUDY", StudyInstanceUID=wanted)
    assert indexes(rows, sample_metadata) == {1, 5}

    today = study(sample_metadata, samples.TODAY_STUDY_INDEX).study_date
    rows, _ = finder.find("STUDY", StudyDate=today, StudyInstanceUID="")
    assert indexes(rows, sample_metadata) == {samples.TODAY_STUDY_INDEX}


def test_attributes_below_the_level_come_back_empty(finder: Client) -> None:
    rows, _ = finder.find("STUDY", PatientID="PP-0004", SeriesDescription="", Rows=None)
    assert len(rows) == 1
    assert rows[0].SeriesDescription == "" and rows[0].Rows is None


def test_patient_level(finder: Client, sample_metadata: Studies) -> None:
    rows, final = finder.find("PATIENT", PATIENT_FIND, PatientName="", PatientID="",
                              NumberOfPatientRelatedStudies="",
                              NumberOfPatientRelatedInstances="")
    assert final == 0x0000
    got = {r.PatientID: (str(r.PatientName), int(r.NumberOfPatientRelatedStudies),
                         int(r.NumberOfPatientRelatedInstances)) for r in rows}
    expected = {
        p.patient_id: (
            p.name,
            sum(1 for s in sample_metadata if s.patient == p),
            sum(s.number_of_instances for s in sample_metadata if s.patient == p),
        )
        for p in samples.SAMPLE_PATIENTS
    }
    assert got == expected

    # PATIENT is not a level of the Study Root model.
    rows, final = finder.find("PATIENT", STUDY_FIND, PatientID="")
    assert rows == [] and final == 0xA900
    rows, final = finder.find("BOGUS", STUDY_FIND, PatientID="")
    assert rows == [] and final == 0xA900


def test_patient_root_study_level(finder: Client, sample_metadata: Studies) -> None:
    rows, final = finder.find("STUDY", PATIENT_FIND, PatientID="PP-0002", StudyInstanceUID="")
    assert final == 0x0000
    assert indexes(rows, sample_metadata) == {3, 4}


def test_series_level(finder: Client, sample_metadata: Studies) -> None:
    ct = study(sample_metadata, 1)
    rows, final = finder.find(
        "SERIES", StudyInstanceUID=ct.study_instance_uid, SeriesInstanceUID="", SeriesNumber="",
        Modality="", SeriesDescription="", NumberOfSeriesRelatedInstances="",
    )
    assert final == 0x0000
    got = [(r.SeriesInstanceUID, int(r.SeriesNumber), r.Modality, r.SeriesDescription,
            int(r.NumberOfSeriesRelatedInstances)) for r in rows]
    assert got == [(s.series_instance_uid, s.series_number, s.modality, s.description,
                    s.number_of_instances) for s in ct.series]
    assert all(r.SpecificCharacterSet == "ISO_IR 192" for r in rows)

    rows, _ = finder.find("SERIES", Modality="SR", SeriesInstanceUID="", StudyInstanceUID="")
    assert {str(r.StudyInstanceUID) for r in rows} == {
        study(sample_metadata, 4).study_instance_uid, study(sample_metadata, 5).study_instance_uid}


def test_image_level(finder: Client, sample_metadata: Studies) -> None:
    ct = study(sample_metadata, 1)
    rows, final = finder.find(
        "IMAGE", StudyInstanceUID=ct.study_instance_uid,
        SeriesInstanceUID=ct.series[1].series_instance_uid, SOPInstanceUID="", SOPClassUID="",
        InstanceNumber="",
    )
    assert final == 0x0000
    assert [r.SOPInstanceUID for r in rows] == list(ct.series[1].instance_uids)
    assert [int(r.InstanceNumber) for r in rows] == list(range(1, 31))

    scout = ct.series[0].instances[0]
    rows, _ = finder.find("IMAGE", SOPInstanceUID=scout.sop_instance_uid,
                          AvailableTransferSyntaxUID="", SOPClassUID="", NumberOfFrames="")
    assert len(rows) == 1
    assert rows[0].AvailableTransferSyntaxUID == RLELossless
    assert rows[0].SOPClassUID == scout.sop_class_uid

    cine = study(sample_metadata, samples.TODAY_STUDY_INDEX).series[0].instances[0]
    rows, _ = finder.find("IMAGE", SOPInstanceUID=cine.sop_instance_uid, NumberOfFrames="")
    assert int(rows[0].NumberOfFrames) == cine.number_of_frames


def test_no_identifiers_logged_at_info(client: Client, caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.INFO):
        rows, _ = client.find("STUDY", PatientName="Doe*", PatientID="", StudyInstanceUID="")
        client.get("STUDY", StudyInstanceUID=rows[0].StudyInstanceUID)
    assert len(client.received) == 5
    assert "Doe" not in caplog.text and "PP-0004" not in caplog.text


# -- C-GET -----------------------------------------------------------------------------------------


def test_get_study_delivers_exactly_its_instances(client: Client, sample_metadata: Studies) -> None:
    ct = study(sample_metadata, 1)
    final = client.get("STUDY", StudyInstanceUID=ct.study_instance_uid)
    assert final.Status == 0x0000
    assert final.NumberOfCompletedSuboperations == ct.number_of_instances
    assert final.NumberOfFailedSuboperations == 0
    assert client.received_uids == list(ct.instance_uids)
    assert all(str(ds.PatientName) == "Müller^Jürgen" for ds, _ in client.received)


def test_get_series_image_and_patient_levels(client: Client, sample_metadata: Studies) -> None:
    mr = study(sample_metadata, 3)
    assert client.get("SERIES", SeriesInstanceUID=mr.series[1].series_instance_uid).Status == 0
    assert client.received_uids == list(mr.series[1].instance_uids)

    client.received.clear()
    wanted = [mr.series[0].instance_uids[3], mr.series[1].instance_uids[7]]
    assert client.get("IMAGE", SOPInstanceUID=wanted).Status == 0
    assert client.received_uids == wanted

    client.received.clear()
    final = client.get("PATIENT", PATIENT_GET, PatientID="PP-0003")
    assert final.Status == 0 and final.NumberOfCompletedSuboperations == 2
    assert client.received_uids == list(study(sample_metadata, 5).instance_uids)
    assert [str(ds.PatientName) for ds, _ in client.received] == ["Wang^XiaoDong=王^小东"] * 2

    client.received.clear()
    # A series key that does not belong to the given study selects nothing.
    final = client.get("SERIES", StudyInstanceUID=study(sample_metadata, 1).study_instance_uid,
                       SeriesInstanceUID=mr.series[0].series_instance_uid)
    assert final.Status == 0 and final.NumberOfCompletedSuboperations == 0
    assert client.received == []


def test_get_without_its_unique_key_fails(client: Client) -> None:
    final = client.get("SERIES", StudyInstanceUID="1.2.3")
    assert final.Status == 0xA900
    assert client.received == []


def test_compressed_instance_sent_as_stored_or_decoded(
        demo_pacs: DemoPacs, connect: Callable[..., Client], sample_folder: Path,
        sample_metadata: Studies) -> None:
    scout = study(sample_metadata, 1).series[0]
    stored = pydicom.dcmread(sample_folder / scout.instances[0].relative_path)
    native, _ = get_decoder(RLELossless).as_buffer(stored)

    with_rle = connect(demo_pacs, rle=True)
    assert with_rle.get("SERIES", SeriesInstanceUID=scout.series_instance_uid).Status == 0
    [(ds, syntax)] = with_rle.received
    assert syntax == RLELossless
    assert ds.PixelData == stored.PixelData  # the stored codestream, untouched

    plain = connect(demo_pacs)
    assert plain.get("SERIES", SeriesInstanceUID=scout.series_instance_uid).Status == 0
    [(ds, syntax)] = plain.received
    assert syntax == ExplicitVRLittleEndian
    assert ds.PixelData == bytes(native)


# -- cancel and faults -----------------------------------------------------------------------------


def drive_get(client: Client, uid: str, *, cancel_after: int | None = None,
              msg_id: int = 7) -> Dataset:
    """C-GET a study, sending C-CANCEL once `cancel_after` instances arrived; the final response."""
    query = Dataset()
    query.QueryRetrieveLevel = "STUDY"
    query.StudyInstanceUID = uid
    final, cancelled = Dataset(), False
    for status, identifier in client.assoc.send_c_get(query, STUDY_GET, msg_id=msg_id):
        final = status
        if identifier is not None and "FailedSOPInstanceUIDList" in identifier:
            final.FailedSOPInstanceUIDList = identifier.FailedSOPInstanceUIDList
        if (cancel_after is not None and not cancelled and status.Status == 0xFF00
                and len(client.received) >= cancel_after):
            client.assoc.send_c_cancel(msg_id, query_model=STUDY_GET)
            cancelled = True
    return final


def test_cancel_stops_a_throttled_get(demo_pacs: DemoPacs, client: Client,
                                      sample_metadata: Studies) -> None:
    demo_pacs.faults = Faults(delay_per_instance=0.03)
    ct = study(sample_metadata, 1)
    final = drive_get(client, ct.study_instance_uid, cancel_after=3)
    assert final.Status == 0xFE00
    received = len(client.received)
    assert 3 <= received < ct.number_of_instances
    assert final.NumberOfCompletedSuboperations == received
    assert final.NumberOfRemainingSuboperations == ct.number_of_instances - received
    # The association stays usable after a cancel.
    assert client.assoc.send_c_echo().Status == 0x0000


def test_cancel_ends_a_stall_at_once(demo_pacs: DemoPacs, client: Client,
                                     sample_metadata: Studies) -> None:
    demo_pacs.faults = Faults(stall_after=1, stall_seconds=30)
    started = time.monotonic()
    final = drive_get(client, study(sample_metadata, 6).study_instance_uid, cancel_after=1)
    assert time.monotonic() - started < 5
    assert final.Status == 0xFE00
    assert len(client.received) == 1
    assert final.NumberOfRemainingSuboperations == 4


def test_stall_delays_then_completes(demo_pacs: DemoPacs, client: Client,
                                     sample_metadata: Studies) -> None:
    demo_pacs.faults = Faults(stall_after=2, stall_seconds=0.4)
    arrivals: list[float] = []
    client.on_store = lambda: arrivals.append(time.monotonic())
    final = client.get("STUDY", StudyInstanceUID=study(sample_metadata, 6).study_instance_uid)
    assert final.Status == 0x0000 and len(arrivals) == 5
    gaps = [b - a for a, b in zip(arrivals, arrivals[1:])]
    assert gaps[1] >= 0.35  # between sub-operations 2 and 3
    assert max(gaps[0], gaps[2], gaps[3]) < 0.3


def test_abort_after(demo_pacs: DemoPacs, client: Client, sample_metadata: Studies) -> None:
    demo_pacs.faults = Faults(abort_after=2)
    final = client.get("STUDY", StudyInstanceUID=study(sample_metadata, 6).study_instance_uid)
    assert "Status" not in final  # pynetdicom ends the response stream with an empty status
    assert len(client.received) == 2
    # The requestor's reactor thread flags the abort; give it a moment.
    deadline = time.monotonic() + 2
    while not client.assoc.is_aborted and time.monotonic() < deadline:
        time.sleep(0.01)
    assert client.assoc.is_aborted


def test_fail_some_instances(demo_pacs: DemoPacs, client: Client,
                             sample_metadata: Studies) -> None:
    abdomen = study(sample_metadata, 6)
    failing = set(abdomen.instance_uids[1:3])
    demo_pacs.faults = Faults(fail_sop_instance_uids=frozenset(failing))
    final = client.get("STUDY", StudyInstanceUID=abdomen.study_instance_uid)
    assert final.Status == 0xB000
    assert final.NumberOfCompletedSuboperations == 3
    assert final.NumberOfFailedSuboperations == 2
    assert set(values(final.FailedSOPInstanceUIDList)) == failing
    assert set(client.received_uids) == set(abdomen.instance_uids) - failing


def test_fail_every_instance(demo_pacs: DemoPacs, client: Client,
                             sample_metadata: Studies) -> None:
    report = study(sample_metadata, 5)
    demo_pacs.faults = Faults(fail_sop_instance_uids=frozenset(report.instance_uids))
    final = client.get("STUDY", StudyInstanceUID=report.study_instance_uid)
    assert final.Status == 0xA702
    assert final.NumberOfFailedSuboperations == 2 and client.received == []


def test_refuse_sop_classes(demo_pacs: DemoPacs, connect: Callable[..., Client],
                            sample_metadata: Studies) -> None:
    demo_pacs.faults = Faults(refuse_sop_classes=frozenset({samples.CT_IMAGE_STORAGE}))
    client = connect(demo_pacs)
    accepted = {cx.abstract_syntax for cx in client.assoc.accepted_contexts}
    assert samples.CT_IMAGE_STORAGE not in accepted
    assert samples.MR_IMAGE_STORAGE in accepted

    abdomen = study(sample_metadata, 6)
    final = client.get("STUDY", StudyInstanceUID=abdomen.study_instance_uid)
    assert final.Status == 0xA702 and final.NumberOfFailedSuboperations == 5
    assert set(values(final.FailedSOPInstanceUIDList)) == set(abdomen.instance_uids)
    assert client.get("STUDY", StudyInstanceUID=study(sample_metadata, 5).study_instance_uid
                      ).Status == 0x0000


def test_reject_association_then_recover(demo_pacs: DemoPacs,
                                         connect: Callable[..., Client]) -> None:
    demo_pacs.faults = Faults(reject_association=True)
    client = connect(demo_pacs)
    assert client.assoc.is_rejected
    rejection = client.assoc.acceptor.primitive
    # rejected-permanent, by the service user, calling AE title not recognised
    assert (rejection.result, rejection.result_source, rejection.diagnostic) == (1, 1, 3)

    demo_pacs.faults = Faults()
    assert connect(demo_pacs).assoc.is_established


def test_find_status(demo_pacs: DemoPacs, client: Client) -> None:
    demo_pacs.faults = Faults(find_status=0xA700)
    rows, final = client.find("STUDY", PatientName="", StudyInstanceUID="")
    assert rows == [] and final == 0xA700


@pytest.mark.filterwarnings("ignore:Invalid value for VR UI")  # the client decoding '../../CON.1'
def test_hostile_names(demo_pacs: DemoPacs, client: Client, sample_metadata: Studies) -> None:
    demo_pacs.faults = Faults(hostile_names=True)
    rows, _ = client.find("STUDY", PatientID="PP-0004", PatientName="", StudyDescription="",
                          StudyInstanceUID="")
    assert len(rows) == 1
    raw = rows[0].get_item("PatientName").value
    assert b"../..\\CON\x00" in raw and len(raw) > 300
    assert rows[0].PatientID == HOSTILE_VALUES["PatientID"]

    final = client.get("STUDY", StudyInstanceUID=rows[0].StudyInstanceUID)
    assert final.Status == 0x0000
    assert client.received_uids == [f"../../CON.{n}" for n in range(1, 6)]


def test_faults_are_per_request(demo_pacs: DemoPacs, client: Client,
                                sample_metadata: Studies) -> None:
    # A fault set while an association is open applies to its next request.
    demo_pacs.faults = Faults(find_status=0xC000)
    assert client.find("STUDY", StudyInstanceUID="")[1] == 0xC000
    demo_pacs.faults = Faults()
    rows, final = client.find("STUDY", StudyInstanceUID="")
    assert final == 0x0000 and len(rows) == len(sample_metadata)


# -- lifecycle -------------------------------------------------------------------------------------


def test_stop_is_fast_and_leaves_no_threads(make_demo_pacs: Callable[..., DemoPacs],
                                            connect: Callable[..., Client],
                                            sample_metadata: Studies) -> None:
    before = set(threading.enumerate())
    pacs = make_demo_pacs(faults=Faults(stall_after=1, stall_seconds=60))
    client = connect(pacs)
    worker = threading.Thread(
        target=drive_get, args=(client, study(sample_metadata, 6).study_instance_uid))
    worker.start()
    deadline = time.monotonic() + 5
    while not client.received and time.monotonic() < deadline:
        time.sleep(0.01)
    assert len(client.received) == 1  # now stalled inside the C-GET

    started = time.monotonic()
    pacs.stop()
    assert time.monotonic() - started < 3
    worker.join(timeout=5)
    assert not worker.is_alive()
    assert client.assoc.is_aborted or not client.assoc.is_established

    deadline = time.monotonic() + 3
    while set(threading.enumerate()) - before and time.monotonic() < deadline:
        time.sleep(0.02)
    assert set(threading.enumerate()) - before == set()
    assert not pacs.is_running
    pacs.stop()  # idempotent


def test_serves_samples_from_data_dir(tmp_path: Path, sample_folder: Path) -> None:
    data_dir = tmp_path / "demo"
    shutil.copytree(sample_folder, data_dir)  # what a previous run left; generating costs ~1 s
    with DemoPacs(data_dir=data_dir, port=0) as pacs:
        assert pacs.port != 0 and pacs.instance_count == 111
        assert samples.written_day(data_dir) == date.today()
        ae = AE(ae_title="ECHOSCU")
        ae.add_requested_context(Verification)
        assoc = ae.associate(pacs.host, pacs.port, ae_title=pacs.ae_title)
        assert assoc.send_c_echo().Status == 0x0000
        assoc.release()


def test_unreadable_files_are_skipped(make_demo_pacs: Callable[..., DemoPacs],
                                      sample_files: list[Path], tmp_path: Path) -> None:
    junk = tmp_path / "junk.dcm"
    junk.write_bytes(b"not dicom")
    pacs = make_demo_pacs(files=[*sample_files[:3], junk, tmp_path / "missing.dcm"])
    assert pacs.instance_count == 3


def test_a_wrong_called_ae_title_is_rejected_as_by_a_real_pacs(demo_pacs: DemoPacs) -> None:
    """A user trying the demo learns that the called AE title matters; a typo is caught, with the hint."""
    from pacspull.core.echo import echo
    from pacspull.core.errors import AssociationRejected
    from pacspull.core.nodes import Node

    wrong = Node(name="typo", ae_title=demo_pacs.ae_title.lower(), host="127.0.0.1", port=demo_pacs.port)
    with pytest.raises(AssociationRejected) as info:
        echo(wrong)
    assert "Called AE title not recognised" in str(info.value) and "case-sensitive" in str(info.value)
    right = Node(name="ok", ae_title=demo_pacs.ae_title, host="127.0.0.1", port=demo_pacs.port)
    assert echo(right).status.code == 0x0000
