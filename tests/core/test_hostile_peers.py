"""Hostile and broken peers: clear errors, no crash, no hang, nothing outside the destination, work kept.

The peers here are in-process pynetdicom SCPs (fault injection) and raw sockets (malformed PDUs).
"""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pydicom.dataset import Dataset
from pynetdicom import AE, build_role, evt
from pynetdicom.sop_class import (
    CTImageStorage,
    StudyRootQueryRetrieveInformationModelFind,
    StudyRootQueryRetrieveInformationModelGet,
    Verification,
)

from pacspull.core import samples
from pacspull.core.demo_pacs import DemoPacs, Faults
from pacspull.core.echo import echo
from pacspull.core.errors import PacsPullError
from pacspull.core.get import Retrieval, RetrieveRequest, UndecodableDataset, read_header
from pacspull.core.nodes import Node
from pacspull.core.query import QueryRequest, StudyRow, find
from pacspull.core.storage import StudyWriter

CT = next(s for s in samples.sample_studies() if s.accession_number == "ACC-24-0001")

# Hostile values make pydicom warn on every access; the warnings are the point, not noise to read.
pytestmark = pytest.mark.filterwarnings("ignore::UserWarning")


def node(port: int, **kwargs: Any) -> Node:
    kwargs.setdefault("dimse_timeout", 5)
    kwargs.setdefault("acse_timeout", 5)
    return Node(name="hostile", ae_title="HOSTILE", host="127.0.0.1", port=port, **kwargs)


class Scp:
    """A pynetdicom SCP with handlers given by the test."""

    def __init__(self, handlers: list[tuple[Any, Callable[..., Any]]], storage_scu: bool = False) -> None:
        ae = AE(ae_title="HOSTILE")
        ae.add_supported_context(Verification)
        ae.add_supported_context(StudyRootQueryRetrieveInformationModelFind)
        ae.add_supported_context(StudyRootQueryRetrieveInformationModelGet)
        if storage_scu:
            ae.add_supported_context(CTImageStorage, scu_role=True, scp_role=True)
        self.server = ae.start_server(("127.0.0.1", 0), block=False, evt_handlers=handlers)
        self.port = self.server.server_address[1]

    def stop(self) -> None:
        self.server.shutdown()


@pytest.fixture
def scp() -> Iterator[Callable[..., Scp]]:
    started: list[Scp] = []

    def make(*args: Any, **kwargs: Any) -> Scp:
        server = Scp(*args, **kwargs)
        started.append(server)
        return server

    yield make
    for server in started:
        server.stop()


# -- C-FIND answers that are wrong in every way ------------------------------------------------------

def test_find_survives_invalid_charsets_and_garbage(scp: Callable[..., Scp]) -> None:
    def handle(event: Any) -> Iterator[tuple[int, Dataset | None]]:
        for charset, name in [("ISO_IR 999", b"M\xfcller"), ("", b"\xff\xfe\x00garbage"),
                              ("ISO 2022 IR 87", b"\x1b$B;3ED\x1b(B"), ("GB18030", b"\x81\x30")]:
            ds = Dataset()
            ds.SpecificCharacterSet = charset
            ds.add_new(0x00100010, "PN", name)
            ds.StudyInstanceUID = "1.2.3"
            ds.ModalitiesInStudy = "CT"
            yield 0xFF00, ds
        yield 0x0000, None

    server = scp([(evt.EVT_C_FIND, handle)])
    rows = find(node(server.port), QueryRequest()).rows
    assert len(rows) == 4
    assert all(r.study_uid == "1.2.3" for r in rows)
    assert rows[2].patient_name and all(isinstance(r.patient_name, str) for r in rows)


text_or_bytes = st.one_of(st.text(max_size=80), st.binary(max_size=80))


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(values=st.dictionaries(st.sampled_from(StudyRow.keywords()), text_or_bytes, max_size=10),
       charset=st.sampled_from(["", "ISO_IR 100", "ISO_IR 192", "GB18030", "ISO 2022 IR 87", "ISO_IR 999", "\\\\"]))
def test_any_find_response_decodes_without_raising(values: dict[str, Any], charset: str) -> None:
    """Whatever a PACS puts in a response, decoding gives a row (with None where a value is unusable)."""
    from pydicom.datadict import dictionary_VR, tag_for_keyword
    from pydicom.dataelem import RawDataElement
    from pydicom.tag import Tag

    ds = Dataset()
    ds.SpecificCharacterSet = charset
    for keyword, value in values.items():
        raw = value if isinstance(value, bytes) else value.encode("utf-8", "surrogatepass")
        tag = tag_for_keyword(keyword)
        assert tag is not None
        # As pynetdicom hands a received identifier over: raw, decoded only when read.
        ds[tag] = RawDataElement(Tag(tag), dictionary_VR(tag), len(raw), raw, 0, False, True)
    row = StudyRow.from_dataset(ds)
    for key, value in row.to_json().items():
        assert value is None or isinstance(value, (str, int, list)), (key, value)


@settings(max_examples=200, deadline=None)
@given(data=st.binary(max_size=600), ts=st.sampled_from(["1.2.840.10008.1.2", "1.2.840.10008.1.2.1",
                                                         "1.2.840.10008.1.2.1.99"]))
def test_any_received_bytes_either_decode_or_raise_a_known_error(data: bytes, ts: str) -> None:
    """read_header is what the C-STORE handler calls first: garbage must end in an error it maps to 0xC210."""
    from io import BytesIO

    stream = BytesIO(data)
    try:
        read_header(stream, ts)
    except UndecodableDataset as exc:
        assert str(exc).startswith("the data set does not decode")
    assert stream.tell() == 0  # the stream is rewound for the writer either way


# -- C-GET peers that lie ---------------------------------------------------------------------------

class FakeStoreEvent:
    """What pynetdicom hands the C-STORE handler: the request (with its raw data set) and the context."""

    def __init__(self, uid: str, data: bytes, ts: str = "1.2.840.10008.1.2.1") -> None:
        from io import BytesIO
        from types import SimpleNamespace

        self.request = SimpleNamespace(AffectedSOPInstanceUID=uid, AffectedSOPClassUID=CTImageStorage,
                                       DataSet=BytesIO(data))
        self.context = SimpleNamespace(transfer_syntax=[ts], abstract_syntax=CTImageStorage)


def test_store_handler_answers_garbage_with_cannot_understand(tmp_path: Path) -> None:
    from pacspull.core.get import RequestOutcome

    retrieval = Retrieval(node(1), [RetrieveRequest("1.2.3")], StudyWriter(tmp_path))
    outcome = RequestOutcome(RetrieveRequest("1.2.3"))
    retrieval._current = outcome
    assert retrieval._on_c_store(FakeStoreEvent("1.2.3.4", b"\x08\x00\x18\x00UI\xff\xff" + b"x" * 10)) == 0xC210
    assert retrieval._on_c_store(FakeStoreEvent("1.2.3.5", b"\x06", "1.2.840.10008.1.2.1.99")) == 0xC210
    assert [f.status.code for f in outcome.failures] == [0xC210, 0xC210]
    assert "does not decode" in outcome.failures[0].reason
    assert [p for p in tmp_path.rglob("*") if p.is_file()] == []


def test_absurd_counts_from_the_pacs_do_not_break_progress(tmp_path: Path) -> None:
    from pacspull.core.get import RequestOutcome

    retrieval = Retrieval(node(1), [RetrieveRequest("1.2.3")], StudyWriter(tmp_path))
    outcome = RequestOutcome(RetrieveRequest("1.2.3"))
    status = Dataset()
    status.Status = 0xFF00
    status.NumberOfRemainingSuboperations = 65535
    status.NumberOfCompletedSuboperations = 65535
    status.NumberOfFailedSuboperations = 0
    status.NumberOfWarningSuboperations = 0
    retrieval._pacs_counts(outcome, status)
    outcome.completed = 1
    snap = retrieval._snapshot(outcome)
    assert snap.total == 65536 and snap.eta_seconds is not None and snap.eta_seconds >= 0
    outcome.status = None
    retrieval._check_counts(outcome)  # no final status: nothing to compare, no crash


# -- A-ABORT at many points ------------------------------------------------------------------------

@pytest.fixture(scope="module")
def samples_files(tmp_path_factory: pytest.TempPathFactory) -> list[Path]:
    return samples.write_sample_data(tmp_path_factory.mktemp("samples"))


@pytest.mark.parametrize("after", list(range(0, 14)))
def test_abort_during_get_keeps_what_arrived(after: int, samples_files: list[Path], tmp_path: Path) -> None:
    with DemoPacs(files=samples_files, faults=Faults(abort_after=after)) as pacs:
        start = time.monotonic()
        summary = Retrieval(node(pacs.port), [RetrieveRequest(CT.study_instance_uid)],
                            StudyWriter(tmp_path)).run()
    assert time.monotonic() - start < 10
    outcome = summary.outcomes[0]
    assert outcome.completed == after == len([p for p in tmp_path.rglob("*.dcm")])
    assert summary.exit_code == 3 and "aborted" in (outcome.error or "")
    assert not [p for p in tmp_path.rglob("*partial*")]


@pytest.mark.parametrize("after_rows", [0, 1, 2, 3])
def test_abort_during_find_is_a_clear_error(after_rows: int, scp: Callable[..., Scp]) -> None:
    def handle(event: Any) -> Iterator[tuple[int, Dataset | None]]:
        for i in range(10):
            if i == after_rows:
                event.assoc.abort()
                return
            ds = Dataset()
            ds.StudyInstanceUID = f"1.2.{i}"
            yield 0xFF00, ds
        yield 0x0000, None

    server = scp([(evt.EVT_C_FIND, handle)])
    start = time.monotonic()
    with pytest.raises(PacsPullError, match="stopped answering the C-FIND"):
        find(node(server.port), QueryRequest())
    assert time.monotonic() - start < 5


def test_abort_on_echo_and_right_after_accept(scp: Callable[..., Scp]) -> None:
    server = scp([(evt.EVT_C_ECHO, lambda event: event.assoc.abort())])
    with pytest.raises(PacsPullError):
        echo(node(server.port))
    accept_then_abort = scp([(evt.EVT_ESTABLISHED, lambda event: event.assoc.abort())])
    with pytest.raises(PacsPullError):
        echo(node(accept_then_abort.port))


# -- raw sockets: malformed PDUs -------------------------------------------------------------------

def raw_peer(reply: Callable[[socket.socket], None]) -> tuple[int, threading.Thread, socket.socket]:
    """A TCP server that reads the association request and answers with ``reply``."""
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(1)

    def serve() -> None:
        conn, _ = server.accept()
        with conn:
            conn.settimeout(5)
            try:
                conn.recv(65536)
                reply(conn)
                time.sleep(0.5)
            except OSError:
                pass

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    return server.getsockname()[1], thread, server


@pytest.mark.parametrize(
    "payload",
    [
        pytest.param(b"\x09\x00\x00\x00\x00\x04abcd", id="unknown-pdu-type"),
        pytest.param(b"\x02\x00\x00\x00\x00\x02\x00", id="truncated-associate-ac"),
        pytest.param(b"\x02\x00\x00\x00\x00\x10" + b"\xff" * 16, id="garbage-associate-ac"),
        pytest.param(b"\x03\x00\x00\x00\x00\x04\x00\x01\x07\x09", id="reject-with-odd-reason"),
        pytest.param(b"\x07\x00\x00\x00\x00\x04\x00\x00\x02\x06", id="abort"),
        pytest.param(b"HTTP/1.1 400 Bad Request\r\n\r\n", id="http-server"),
        pytest.param(b"", id="close-at-once"),
    ],
)
def test_malformed_answers_to_associate(payload: bytes) -> None:
    port, thread, server = raw_peer(lambda conn: conn.sendall(payload))
    try:
        start = time.monotonic()
        with pytest.raises(PacsPullError) as info:
            echo(node(port, acse_timeout=3))
        assert info.value.exit_code == 3
        assert time.monotonic() - start < 6
    finally:
        thread.join(5)
        server.close()


def test_a_declared_4_gib_pdu_is_refused_before_any_allocation(scp: Callable[..., Scp], tmp_path: Path) -> None:
    """A PACS that announces a P-DATA PDU of 4 GiB: the client aborts instead of trying to hold it."""
    import resource

    def handle(event: Any) -> Iterator[Any]:
        event.assoc.dul.socket.socket.sendall(b"\x04\x00\xff\xff\xff\xff" + b"\x00" * 4096)
        yield 0

    server = scp([(evt.EVT_C_GET, handle)], storage_scu=True)
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    start = time.monotonic()
    summary = Retrieval(node(server.port), [RetrieveRequest("1.2.3", sop_classes=(CTImageStorage,))],
                        StudyWriter(tmp_path)).run()
    assert time.monotonic() - start < 10
    assert summary.exit_code == 3 and summary.outcomes[0].error
    grown_mb = (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before) / 1024
    assert grown_mb < 256, f"peak RSS grew {grown_mb:.0f} MB"


def test_pdu_limit_follows_what_we_announced() -> None:
    from pacspull.core._pynetdicom_compat import pdu_limit

    assert pdu_limit(131072) == 131072 + 6
    assert pdu_limit(4096) == (1 << 16) + 6  # an A-ASSOCIATE-AC may exceed a tiny announced maximum
    assert pdu_limit(0) == 1 << 28
