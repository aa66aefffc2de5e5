"""The real-peer harness works, and pins what Orthanc 1.10 and dcmqrscp 3.6.7 actually do.

Plain pynetdicom is the SCU here (not pacspull.core), so a failure points at the harness or the peer,
not at our client. Facts pinned (each test says which):

* both peers answer C-ECHO, study-level C-FIND, and C-GET with storage sub-operations on the same
  association when the SCU offers SCP role selection for the storage SOP classes;
* without role selection both answer every sub-operation as failed and end with 0xA702 (dcmqrscp
  lists the Failed SOP Instance UIDs, Orthanc sends an empty identifier);
* Orthanc without ``DicomAlwaysAllowGet`` accepts the association and the GET context, then aborts
  (A-ABORT, source DUL service-user) on the C-GET request;
* charsets: Orthanc answers every C-FIND in its ``DefaultEncoding`` (ISO_IR 192 for our peers; stock
  Latin1 loses CJK names); dcmqrscp converts each answer to the query's character set where iconv can
  and otherwise answers in the record's own character set, so one C-FIND can mix character sets.
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
from peers import (
    DcmqrscpPeer,
    OrthancPeer,
    SampleStudy,
    dcmtk_version,
    orthanc_version,
)
from pydicom import dcmread
from pydicom.dataset import Dataset
from pydicom.uid import ExplicitVRLittleEndian, ImplicitVRLittleEndian
from pynetdicom import AE, build_role, evt
from pynetdicom.association import Association
from pynetdicom.sop_class import (
    StudyRootQueryRetrieveInformationModelFind,
    StudyRootQueryRetrieveInformationModelGet,
    Verification,
)

pytestmark = pytest.mark.peer

Peer = OrthancPeer | DcmqrscpPeer
UNCOMPRESSED = [ExplicitVRLittleEndian, ImplicitVRLittleEndian]
TIMEOUT = 15.0


@pytest.fixture(params=["orthanc", "dcmqrscp"])
def peer(request: pytest.FixtureRequest) -> Peer:
    return request.getfixturevalue(request.param)


# --------------------------------------------------------------------------------------------------
# plain pynetdicom helpers


@contextmanager
def associate(peer: Peer, *, find: bool = False, get_studies: list[SampleStudy] | None = None,
              scp_role: bool = True, on_store=None) -> Iterator[Association]:
    """An association to ``peer``: Verification, plus Study Root FIND and/or GET with storage contexts
    for every SOP class and transfer syntax of ``get_studies`` (one context per stored compressed
    syntax, one for the uncompressed pair), SCP role selection when ``scp_role``."""
    ae = AE(ae_title="HARNESS")
    ae.acse_timeout = ae.dimse_timeout = ae.network_timeout = TIMEOUT
    ae.add_requested_context(Verification)
    roles = []
    handlers = []
    if find:
        ae.add_requested_context(StudyRootQueryRetrieveInformationModelFind)
    if get_studies is not None:
        ae.add_requested_context(StudyRootQueryRetrieveInformationModelGet)
        by_class: dict[str, set[str]] = {}
        for study in get_studies:
            for sop_class in study.sop_class_uids:
                by_class.setdefault(sop_class, set()).update(study.transfer_syntaxes)
        for sop_class, syntaxes in sorted(by_class.items()):
            for syntax in sorted(syntaxes - set(UNCOMPRESSED)):
                ae.add_requested_context(sop_class, [syntax])
            ae.add_requested_context(sop_class, UNCOMPRESSED)
            if scp_role:
                roles.append(build_role(sop_class, scp_role=True))
        assert len(ae.requested_contexts) <= 128
        handlers.append((evt.EVT_C_STORE, on_store or (lambda event: 0x0000)))
    assoc = ae.associate(peer.host, peer.port, ae_title=peer.aet, ext_neg=roles or None,
                         evt_handlers=handlers)
    try:
        assert assoc.is_established, f"association to {peer!r} failed:\n{peer.log_tail()}"
        yield assoc
    finally:
        if assoc.is_established:
            assoc.release()
        ae.shutdown()


def study_find(peer: Peer, *, charset: str | list[str] | None = None,
               patient_name: str = "") -> list[Dataset]:
    query = Dataset()
    if charset is not None:
        query.SpecificCharacterSet = charset
    query.QueryRetrieveLevel = "STUDY"
    query.StudyInstanceUID = ""
    query.PatientName = patient_name
    query.PatientID = ""
    answers: list[Dataset] = []
    with associate(peer, find=True) as assoc:
        final = None
        for status, identifier in assoc.send_c_find(query, StudyRootQueryRetrieveInformationModelFind):
            assert status, "no C-FIND response (timeout or abort)"
            if status.Status in (0xFF00, 0xFF01):
                answers.append(identifier)
            else:
                final = status.Status
        assert final == 0x0000
    return answers


def charset_of(ds: Dataset) -> tuple[str, ...]:
    raw = ds.get("SpecificCharacterSet") or ()
    return (raw,) if isinstance(raw, str) else tuple(str(c) for c in raw)


# --------------------------------------------------------------------------------------------------
# the peers start, hold the samples and answer


def test_installed_versions(orthanc: OrthancPeer, dcmqrscp: DcmqrscpPeer) -> None:
    assert orthanc.version == orthanc_version()
    assert dcmqrscp.version == dcmtk_version()
    assert orthanc.startup_seconds is not None and orthanc.startup_seconds < 30
    assert dcmqrscp.startup_seconds is not None and dcmqrscp.startup_seconds < 30


def test_peers_run_with_tcp_nodelay(peer: Peer) -> None:
    environ = Path(f"/proc/{peer.pid}/environ")
    if not environ.exists():
        pytest.skip("no /proc on this system")
    assert b"TCP_NODELAY=1" in environ.read_bytes().split(b"\0")


def test_echo(peer: Peer) -> None:
    with associate(peer) as assoc:
        status = assoc.send_c_echo()
    assert status and status.Status == 0x0000


def test_loaded_counts(peer: Peer, sample_files: list[Path],
                       sample_studies: dict[str, SampleStudy]) -> None:
    instances = sum(len(study.sop_instance_uids) for study in sample_studies.values())
    assert instances == len(sample_files)  # sample SOP Instance UIDs are unique
    assert peer.loaded == len(sample_files)
    assert peer.instance_count() == instances


def test_study_find_returns_loaded_studies(peer: Peer, sample_studies: dict[str, SampleStudy]) -> None:
    answers = study_find(peer)
    uids = [ds.StudyInstanceUID for ds in answers]
    assert sorted(uids) == sorted(sample_studies)


def test_study_find_names_decode_to_the_stored_names(peer: Peer,
                                                    sample_studies: dict[str, SampleStudy]) -> None:
    for charset in (None, "ISO_IR 192"):
        answers = {ds.StudyInstanceUID: ds for ds in study_find(peer, charset=charset)}
        for uid, study in sample_studies.items():
            assert str(answers[uid].PatientName) == study.patient_name, (charset, study)


def test_orthanc_answers_in_its_default_encoding(orthanc: OrthancPeer) -> None:
    for charset in (None, "ISO_IR 100", "GB18030", ["", "ISO 2022 IR 87"]):
        assert {charset_of(ds) for ds in study_find(orthanc, charset=charset)} == {("ISO_IR 192",)}


def test_stock_orthanc_latin1_default_loses_cjk_names(orthanc_factory,
                                                      sample_studies: dict[str, SampleStudy]) -> None:
    """Stock Orthanc (DefaultEncoding Latin1) answers in ISO_IR 100 and drops what Latin-1 cannot hold."""
    peer = orthanc_factory(default_encoding="Latin1")
    peer.load(path for study in sample_studies.values() for path in study.files[:1])
    answers = {ds.StudyInstanceUID: ds for ds in study_find(peer, charset="ISO_IR 192")}
    assert {charset_of(ds) for ds in answers.values()} == {("ISO_IR 100",)}
    for uid, study in sample_studies.items():
        name = str(answers[uid].PatientName)
        try:
            study.patient_name.encode("latin-1")
        except UnicodeEncodeError:
            assert name != study.patient_name
            assert name.encode("latin-1")  # what is left is Latin-1 (e.g. "Wang^XiaoDong=^")
        else:
            assert name == study.patient_name


def test_dcmqrscp_converts_answers_to_the_query_charset_where_it_can(
        dcmqrscp: DcmqrscpPeer, sample_studies: dict[str, SampleStudy]) -> None:
    answers = {ds.StudyInstanceUID: ds for ds in study_find(dcmqrscp, charset="ISO_IR 192")}
    seen: dict[tuple[str, ...], tuple[str, ...]] = {}
    for uid, study in sample_studies.items():
        got = charset_of(answers[uid])
        # converted to the query's ISO_IR 192, or left in the record's own character set
        assert got in {("ISO_IR 192",), study.specific_character_set}, (study, got)
        seen[study.specific_character_set] = got
    if ("GB18030",) in seen:
        assert seen[("GB18030",)] == ("ISO_IR 192",)  # iconv converts GB18030
    if ("", "ISO 2022 IR 87") in seen:
        # dcmtk's iconv backend does not support ISO 2022 IR 87: answered in the stored charset
        assert seen[("", "ISO 2022 IR 87")] == ("", "ISO 2022 IR 87")
    # With no charset in the query dcmqrscp tries ASCII, fails for non-ASCII names, keeps the record's.
    plain = {ds.StudyInstanceUID: charset_of(ds) for ds in study_find(dcmqrscp)}
    for uid, study in sample_studies.items():
        if not study.patient_name.isascii():
            assert plain[uid] == study.specific_character_set


# --------------------------------------------------------------------------------------------------
# C-GET


def c_get_studies(peer: Peer, studies: list[SampleStudy], *, scp_role: bool = True):
    """One association, one study-level C-GET per study; returns (received, finals, final datasets)."""
    received: dict[str, str] = {}

    def on_store(event: evt.Event) -> int:
        received[event.request.AffectedSOPInstanceUID] = event.context.transfer_syntax
        return 0x0000

    finals: list[Dataset] = []
    identifiers: list[Dataset | None] = []
    with associate(peer, get_studies=studies, scp_role=scp_role, on_store=on_store) as assoc:
        for study in studies:
            query = Dataset()
            query.QueryRetrieveLevel = "STUDY"
            query.StudyInstanceUID = study.study_uid
            last = None
            for status, identifier in assoc.send_c_get(query, StudyRootQueryRetrieveInformationModelGet):
                assert status, f"no C-GET response from {peer!r}:\n{peer.log_tail()}"
                last = status, identifier
            assert last is not None
            finals.append(last[0])
            identifiers.append(last[1])
    return received, finals, identifiers


def stored_syntaxes(studies: list[SampleStudy]) -> dict[str, str]:
    """SOP Instance UID -> transfer syntax of the sample file."""
    stored = {}
    for study in studies:
        for path in study.files:
            meta = dcmread(path, stop_before_pixels=True).file_meta
            stored[meta.MediaStorageSOPInstanceUID] = meta.TransferSyntaxUID
    return stored


def test_c_get_with_scp_role_retrieves_every_study(peer: Peer,
                                                   sample_studies: dict[str, SampleStudy]) -> None:
    """Offered each stored syntax in its own context (plus an uncompressed one) and SCP role:

    * Orthanc sends every instance in its stored transfer syntax (the RLE one as RLE);
    * dcmqrscp rejects the RLE storage context (it accepts uncompressed syntaxes only, unless started
      with e.g. ``+xr``), picks the first accepted context of the SOP class for every instance and
      cannot decompress RLE: that sub-operation fails ("unable to convert ... from 'RLE Lossless'")
      and the study ends 0xB000 with the rest delivered. The association stays usable."""
    studies = list(sample_studies.values())
    stored = stored_syntaxes(studies)
    compressed = {uid for uid, syntax in stored.items() if syntax not in UNCOMPRESSED}
    started = time.perf_counter()
    received, finals, _ = c_get_studies(peer, studies)
    elapsed = time.perf_counter() - started
    undeliverable = compressed if isinstance(peer, DcmqrscpPeer) else set()
    for study, final in zip(studies, finals):
        failed = len(study.sop_instance_uids & undeliverable)
        assert final.Status == (0xB000 if failed else 0x0000), (study.study_uid, hex(final.Status))
        assert final.NumberOfCompletedSuboperations == len(study.sop_instance_uids) - failed
        assert final.get("NumberOfFailedSuboperations", 0) == failed
    assert received == {uid: syntax for uid, syntax in stored.items() if uid not in undeliverable}
    print(f"{peer!r}: {len(received)} instances by C-GET in {elapsed:.2f} s")


def test_compressed_instance_when_only_uncompressed_is_offered(
        peer: Peer, sample_studies: dict[str, SampleStudy]) -> None:
    """One context per SOP class with the uncompressed syntaxes only (what a simple SCU offers):
    Orthanc decompresses the RLE instance; dcmqrscp fails that sub-operation (0xB000)."""
    stored = stored_syntaxes(list(sample_studies.values()))
    compressed = {uid for uid, syntax in stored.items() if syntax not in UNCOMPRESSED}
    studies = [s for s in sample_studies.values() if s.sop_instance_uids & compressed]
    if not studies:
        pytest.skip("no compressed instance in the sample data")
    plain = [SampleStudy(s.study_uid, s.patient_name, s.specific_character_set, s.files,
                         s.sop_instance_uids, s.sop_class_uids, set(UNCOMPRESSED)) for s in studies]
    received, finals, _ = c_get_studies(peer, plain)
    expected = {uid for s in studies for uid in s.sop_instance_uids}
    if isinstance(peer, DcmqrscpPeer):
        assert {hex(f.Status) for f in finals} == {"0xb000"}
        assert set(received) == expected - compressed
    else:
        assert {f.Status for f in finals} == {0x0000}
        assert set(received) == expected
        assert set(received.values()) <= set(UNCOMPRESSED)


def test_c_get_without_role_selection_fails_every_sub_operation(
        peer: Peer, sample_studies: dict[str, SampleStudy]) -> None:
    study = min(sample_studies.values(), key=lambda s: len(s.sop_instance_uids))
    received, finals, identifiers = c_get_studies(peer, [study], scp_role=False)
    assert received == {}
    final, identifier = finals[0], identifiers[0]
    assert final.Status == 0xA702  # Refused: out of resources - unable to perform sub-operations
    assert final.NumberOfFailedSuboperations == len(study.sop_instance_uids)
    assert final.NumberOfCompletedSuboperations == 0
    failed = identifier.get("FailedSOPInstanceUIDList") if identifier is not None else None
    if isinstance(peer, DcmqrscpPeer):
        failed = [failed] if isinstance(failed, str) else list(failed)
        assert set(failed) == study.sop_instance_uids
    else:
        assert not failed  # Orthanc 1.10 sends an empty identifier


def test_orthanc_without_allow_get_aborts_on_c_get(orthanc_factory,
                                                   sample_studies: dict[str, SampleStudy]) -> None:
    peer = orthanc_factory(allow_get=False)
    study = min(sample_studies.values(), key=lambda s: len(s.sop_instance_uids))
    assert peer.load(study.files) == len(study.files)
    received: list[str] = []
    with associate(peer, get_studies=[study],
                   on_store=lambda event: received.append("x") or 0x0000) as assoc:
        # The association and the GET context are accepted: the refusal comes with the request.
        get_context = [cx for cx in assoc.accepted_contexts
                       if cx.abstract_syntax == StudyRootQueryRetrieveInformationModelGet]
        assert get_context
        query = Dataset()
        query.QueryRetrieveLevel = "STUDY"
        query.StudyInstanceUID = study.study_uid
        responses = list(assoc.send_c_get(query, StudyRootQueryRetrieveInformationModelGet))
        # pynetdicom yields one (empty status, None) pair when the peer aborts ...
        assert len(responses) == 1
        status, identifier = responses[0]
        assert not status and identifier is None
        # ... and may flag the abort a moment after the generator ends.
        deadline = time.monotonic() + 5
        while not assoc.is_aborted and time.monotonic() < deadline:
            time.sleep(0.01)
        assert assoc.is_aborted
    assert received == []
    log = peer.log_tail(200)
    assert "Rejected Get request" in log, log


def test_dcmqrscp_disable_get_rejects_the_get_context(dcmqrscp_factory,
                                                      sample_studies: dict[str, SampleStudy]) -> None:
    study = min(sample_studies.values(), key=lambda s: len(s.sop_instance_uids))
    peer = dcmqrscp_factory(study.files, disable_get=True)
    with associate(peer, get_studies=[study]) as assoc:
        accepted = {cx.abstract_syntax for cx in assoc.accepted_contexts}
        assert StudyRootQueryRetrieveInformationModelGet not in accepted


def test_dcmqridx_loads_while_running_and_replaces_duplicates(
        dcmqrscp_factory, sample_studies: dict[str, SampleStudy]) -> None:
    first, second = sorted(sample_studies.values(), key=lambda s: len(s.sop_instance_uids))[:2]
    peer = dcmqrscp_factory(first.files)
    peer.load(second.files)  # while running
    peer.load(first.files)  # again: same SOP Instance UIDs replace the old records
    assert peer.instance_count() == len(first.files) + len(second.files)
    assert sorted(ds.StudyInstanceUID for ds in study_find(peer)) == sorted(
        [first.study_uid, second.study_uid])


def test_dcmqrscp_load_over_network(dcmqrscp_factory, sample_studies: dict[str, SampleStudy]) -> None:
    study = min(sample_studies.values(), key=lambda s: len(s.sop_instance_uids))
    peer = dcmqrscp_factory()
    assert peer.load_over_network(study.files) == len(study.files)
    assert [ds.StudyInstanceUID for ds in study_find(peer)] == [study.study_uid]


def test_orthanc_clear_empties_it(orthanc_factory, sample_studies: dict[str, SampleStudy]) -> None:
    peer = orthanc_factory()
    study = min(sample_studies.values(), key=lambda s: len(s.sop_instance_uids))
    peer.load(study.files)
    assert peer.instance_count() == len(study.files)
    peer.clear()
    assert peer.instance_count() == 0
    assert study_find(peer) == []


def test_stopped_peers_leave_no_process(orthanc_factory, dcmqrscp_factory) -> None:
    peers = [orthanc_factory(), dcmqrscp_factory()]
    pids = [p.pid for p in peers]
    for p in peers:
        p.stop()
        assert not p.running
    for pid in pids:
        with pytest.raises(ProcessLookupError):
            os.kill(pid, 0)


@pytest.mark.parametrize("pattern", ["Müller*", "*王*", "*山田*", "Yamada*", "wang*"])
def test_non_ascii_name_matching(peer: Peer, sample_studies: dict[str, SampleStudy],
                                 pattern: str) -> None:
    """A PatientName key sent in ISO_IR 192. Orthanc matches on its UTF-8 index, ignoring case and
    accents; dcmqrscp converts the key to each record's character set (GB18030 works) but cannot for
    ISO 2022 IR 87 records (unsupported by its iconv backend): it then compares raw bytes, so a kanji
    key finds nothing. dcmqrscp matches case-sensitively."""
    import fnmatch

    answers = study_find(peer, charset="ISO_IR 192", patient_name=pattern)
    found = {ds.StudyInstanceUID for ds in answers}
    expected = set()
    for uid, study in sample_studies.items():
        name = study.patient_name
        if isinstance(peer, OrthancPeer):
            hit = fnmatch.fnmatchcase(name.casefold(), pattern.casefold())
        else:
            hit = fnmatch.fnmatchcase(name, pattern) and not (
                "ISO 2022 IR 87" in study.specific_character_set and not pattern.strip("*").isascii())
        if hit:
            expected.add(uid)
    assert found == expected
    if pattern == "*山田*":
        assert bool(found) == isinstance(peer, OrthancPeer)


def test_need_binary_skips_or_fails(monkeypatch: pytest.MonkeyPatch) -> None:
    from peers import need_binary

    monkeypatch.delenv("PACSPULL_REQUIRE_PEERS", raising=False)
    with pytest.raises(pytest.skip.Exception, match="Debian package no-such-pkg"):
        need_binary("no-such-binary-pacspull", "no-such-pkg")
    monkeypatch.setenv("PACSPULL_REQUIRE_PEERS", "1")
    with pytest.raises(pytest.fail.Exception, match="not installed"):
        need_binary("no-such-binary-pacspull", "no-such-pkg")
    assert need_binary("sh", "dash")
