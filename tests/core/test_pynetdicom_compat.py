"""Fails loudly when a pynetdicom upgrade moves the internals core/_pynetdicom_compat.py relies on.

Two kinds of test: the internals are where the module expects them (attributes, and the few lines of
pynetdicom source whose behaviour the fast transport assumes), and the fast transport works end to end
on a real association.
"""

from __future__ import annotations

import inspect
import queue
import socket
import threading
import time
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pynetdicom
import pytest
from pynetdicom import AE, build_context, evt
from pynetdicom import dul as dul_module
from pynetdicom.association import Association
from pynetdicom.dul import DULServiceProvider
from pynetdicom.sop_class import Verification
from pynetdicom.transport import AssociationSocket

from pacspull.core import _pynetdicom_compat as compat
from pacspull.core._pynetdicom_compat import install_fast_transport, wake_response_wait

# The range pyproject.toml pins pynetdicom to ("pynetdicom>=3.0.4,<3.1"); widen both together after
# running these tests and the benchmark against the new version.
TESTED = ((3, 0, 4), (3, 1, 0))


def _requestor() -> Association:
    ae = AE()
    ae.add_requested_context(Verification)
    return Association(ae, mode="requestor")


def test_pynetdicom_version_is_in_the_tested_range() -> None:
    version = tuple(int(part) for part in pynetdicom.__version__.split(".")[:3])
    assert TESTED[0] <= version < TESTED[1], (
        f"pynetdicom {pynetdicom.__version__} is outside the tested range: run tests/core/"
        "test_pynetdicom_compat.py and benchmarks/run.py against it, then widen the pin")


def test_dimse_message_queue_is_where_we_expect() -> None:
    assoc = _requestor()
    assert isinstance(assoc.dimse.msg_queue, queue.Queue)
    wake_response_wait(assoc)
    assert assoc.dimse.get_msg(block=False) == (None, None)


# --------------------------------------------------------------------------------------------------
# what the fast transport assumes about pynetdicom


def test_dul_idle_sleep_is_a_module_level_time_sleep_of_the_run_loop_delay() -> None:
    # The whole hook: the DUL loop sleeps through ``pynetdicom.dul.time.sleep(self._run_loop_delay)``
    # when it found nothing to do, and only then.
    source = inspect.getsource(DULServiceProvider.run_reactor)
    assert "time.sleep(self._run_loop_delay)" in source
    assert source.count("time.sleep(") == 1
    assert hasattr(dul_module, "time") and callable(dul_module.time.sleep)
    assert _requestor().dul._run_loop_delay == pytest.approx(0.001)


def test_dul_work_sources_are_the_queues_we_wake_on() -> None:
    # Whatever makes the DUL loop do something comes from the socket, to_provider_queue (peeked) or
    # event_queue; a kill sets _kill_thread (stop_dul only in state Sta1).
    source = inspect.getsource(DULServiceProvider.run_reactor)
    for needle in ("self._process_recv_primitive()", "self._is_transport_event()",
                   "self.event_queue.get(block=False)", "self._kill_thread"):
        assert needle in source, needle
    assert "self.to_provider_queue.queue[0]" in inspect.getsource(DULServiceProvider._process_recv_primitive)
    stop = inspect.getsource(DULServiceProvider.stop_dul)
    assert 'current_state == "Sta1"' in stop and "self._kill_thread = True" in stop
    assert "self._kill_thread = True" in inspect.getsource(DULServiceProvider.kill_dul)
    dul = _requestor().dul
    assert isinstance(dul, threading.Thread)
    assert isinstance(dul.to_provider_queue, queue.Queue) and isinstance(dul.event_queue, queue.Queue)
    assert dul.state_machine.current_state == "Sta1"
    assert dul._kill_thread is False


def test_pdus_are_read_through_the_association_sockets_recv() -> None:
    source = inspect.getsource(DULServiceProvider._read_pdu_data)
    assert "self.socket.recv(6)" in source and "self.socket.recv(pdu_length)" in source
    assert "def recv(self, nr_bytes: int) -> bytearray" in inspect.getsource(AssociationSocket.recv)
    # The ``socket`` attribute is the connected socket.socket (an SSLSocket with TLS), or None.
    assert "self.socket = client_socket" in inspect.getsource(AssociationSocket.__init__)


# --------------------------------------------------------------------------------------------------
# the parts, alone


class _FakeSocket:
    """recv_into hands out at most ``step`` bytes at a time; records setsockopt calls."""

    def __init__(self, data: bytes, step: int) -> None:
        self.data, self.step, self.options = data, step, 0

    def setsockopt(self, level: int, option: int, value: int) -> None:
        assert (level, option, value) == (socket.IPPROTO_TCP, compat.TCP_QUICKACK, 1)
        self.options += 1

    def recv_into(self, view: memoryview) -> int:
        count = min(len(view), self.step, len(self.data))
        view[:count] = self.data[:count]
        self.data = self.data[count:]
        return count


@pytest.mark.parametrize("quickack", [False, True])
def test_fast_recv_reads_exactly_the_bytes_asked_for(quickack: bool) -> None:
    if quickack and compat.TCP_QUICKACK is None:
        pytest.skip("no TCP_QUICKACK on this platform")
    payload = bytes(range(256)) * 40
    fake = _FakeSocket(payload + b"next PDU", step=1000)
    recv = compat._fast_recv(SimpleNamespace(socket=fake), quickack)
    got = recv(len(payload))
    assert isinstance(got, bytearray) and got == payload
    assert fake.data == b"next PDU"
    assert fake.options == (11 if quickack else 0)  # once before every receive


def test_fast_recv_returns_what_arrived_when_the_peer_closes() -> None:
    recv = compat._fast_recv(SimpleNamespace(socket=_FakeSocket(b"abc", step=2)), False)
    assert recv(6) == bytearray(b"abc")


def test_dul_time_sleeps_normally_on_other_threads() -> None:
    proxy = compat._DulTime(time)
    assert proxy.monotonic is time.monotonic
    start = time.perf_counter()
    proxy.sleep(0.02)
    assert time.perf_counter() - start >= 0.015


# --------------------------------------------------------------------------------------------------
# end to end, against an in-process pynetdicom SCP


@pytest.fixture
def echo_scp() -> Any:
    ae = AE(ae_title="ECHO_SCP")
    ae.add_supported_context(Verification)
    server = ae.start_server(("127.0.0.1", 0), block=False)
    try:
        yield server.server_address
    finally:
        server.shutdown()


def _associate(address: tuple[str, int], fast: bool) -> Association:
    ae = AE(ae_title="COMPAT")
    ae.add_requested_context(Verification)
    installed: list[tuple[str, ...]] = []
    handlers = [(evt.EVT_CONN_OPEN, lambda event: installed.append(install_fast_transport(event.assoc)))]
    assoc = ae.associate(address[0], address[1], ae_title="ECHO_SCP", evt_handlers=handlers if fast else [])
    assert assoc.is_established
    if fast:
        assert installed and "event_driven" in installed[0] and "recv_into" in installed[0]
    return assoc


def test_fast_transport_echoes_idles_quietly_and_releases_promptly(
        echo_scp: tuple[str, int], monkeypatch: pytest.MonkeyPatch) -> None:
    assoc = _associate(echo_scp, fast=True)
    try:
        assert isinstance(dul_module.time, compat._DulTime)
        assert getattr(assoc.dul, compat._WAIT_ATTR, None) is not None
        for _ in range(20):
            assert assoc.send_c_echo().Status == 0x0000
        # Idle: the DUL thread waits in select() (50 ms at a time) instead of waking every millisecond.
        waits = []
        real_select = compat.select.select

        def counting_select(*args: Any) -> Any:
            if threading.current_thread() is assoc.dul:  # (the SCP's threads use select too)
                waits.append(time.perf_counter())
            return real_select(*args)

        monkeypatch.setattr(compat.select, "select", counting_select)
        time.sleep(0.5)
        monkeypatch.setattr(compat.select, "select", real_select)
        assert 1 <= len(waits) <= 20, f"{len(waits)} wake-ups in 0.5 s idle"
        # A request from this thread wakes the DUL at once: an echo takes far less than the 50 ms poll.
        start = time.perf_counter()
        for _ in range(10):
            assoc.send_c_echo()
        assert (time.perf_counter() - start) / 10 < 0.02
    finally:
        start = time.perf_counter()
        assoc.release()
        released = time.perf_counter() - start
        assoc.ae.shutdown()
    assert assoc.is_released
    assert released < 0.5
    assoc.dul.join(2)
    assert not assoc.dul.is_alive()


def test_plain_associations_in_the_same_process_keep_pynetdicoms_behaviour(echo_scp: tuple[str, int]) -> None:
    fast = _associate(echo_scp, fast=True)
    plain = _associate(echo_scp, fast=False)
    try:
        assert getattr(plain.dul, compat._WAIT_ATTR, None) is None
        assert plain.send_c_echo().Status == 0x0000
        assert fast.send_c_echo().Status == 0x0000
    finally:
        for assoc in (fast, plain):
            assoc.release()
            assoc.ae.shutdown()


def test_abort_from_another_thread_ends_a_fast_association(echo_scp: tuple[str, int]) -> None:
    assoc = _associate(echo_scp, fast=True)
    try:
        threading.Thread(target=assoc.abort).start()
        deadline = time.monotonic() + 2
        while not assoc.is_aborted and time.monotonic() < deadline:
            time.sleep(0.01)
        assert assoc.is_aborted
    finally:
        assoc.ae.shutdown()
    assoc.dul.join(2)
    assert not assoc.dul.is_alive()


def test_standard_log_handlers_are_the_ones_bound_by_default() -> None:
    source = inspect.getsource(Association._bind_defaults)
    for event, handler in compat._STANDARD_LOG_HANDLERS:
        assert f"self.bind({event_name(event)}, {handler.__name__})" in source
    # The C-STORE one copies the whole data set to print "Present": the reason to unbind it.
    assert "msg.data_set.getvalue()" in inspect.getsource(pynetdicom._handlers._recv_c_store_rq)


def event_name(event: Any) -> str:
    return "evt." + next(name for name in dir(evt) if getattr(evt, name) is event)


@pytest.mark.parametrize("level", ["WARNING", "INFO"])
def test_log_handlers_are_unbound_only_while_pynetdicoms_log_is_off(
        echo_scp: tuple[str, int], level: str) -> None:
    import logging

    logger = logging.getLogger("pynetdicom")
    before = logger.level
    logger.setLevel(level)
    try:
        assoc = _associate(echo_scp, fast=True)
    finally:
        logger.setLevel(before)
    try:
        bound = [handler for event, _ in compat._STANDARD_LOG_HANDLERS
                 for handler, _args in assoc.get_handlers(event)]
        standard = [handler for _, handler in compat._STANDARD_LOG_HANDLERS]
        if level == "INFO":
            assert all(handler in bound for handler in standard)
        else:
            assert not any(handler in bound for handler in standard)
        assert assoc.send_c_echo().Status == 0x0000
    finally:
        assoc.release()
        assoc.ae.shutdown()


# --------------------------------------------------------------------------------------------------
# the lean DIMSE paths (their wire format: test_dimse_wire.py)


def test_lean_find_relies_on_send_c_find_calling_the_wrapper_on_the_instance() -> None:
    source = inspect.getsource(Association.send_c_find)
    assert "return self._wrap_find_responses(transfer_syntax, query_model)" in source
    assert "self._reactor_checkpoint.clear()" in source
    wrapper = inspect.getsource(Association._wrap_find_responses)
    assert "self._reactor_checkpoint.set()" in wrapper and "self._handle_no_response()" in wrapper
    assert "self._c_store_scp(rsp)" in inspect.getsource(Association._wrap_get_move_responses)
    assert "self.dimse.get_msg(block=True)" in inspect.getsource(Association._wrap_get_move_responses)


@pytest.mark.parametrize("switch", ["all", "no_pump", "no_fast_pdus", "no_fast_store", "no_answer_first", "none"])
def test_a_retrieve_stores_every_instance_identically_whatever_is_switched_on(
        switch: str, tmp_path: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    """The demo PACS (pynetdicom) sends a CT study with one RLE instance; every file must be the sample's
    data set byte for byte, with every combination of the fast transport's parts."""
    from pacspull.core import samples
    from pacspull.core.demo_pacs import DemoPacs
    from pacspull.core.get import Retrieval, RetrieveRequest
    from pacspull.core.nodes import Node
    from pacspull.core.storage import StudyWriter

    off = {"all": (), "no_pump": ("pump",), "no_fast_pdus": ("fast_pdus",), "no_fast_store": ("fast_store",),
           "no_answer_first": ("answer_first",), "none": ("event_driven", "recv_into", "quickack", "quiet_logging", "fast_store")}[switch]
    for name in off:
        monkeypatch.setattr(compat.SETTINGS, name, False)
    monkeypatch.setattr(compat.SETTINGS, "spool_bytes", 20_000)  # some instances spool to a file too
    files = samples.write_sample_data(tmp_path / "samples")
    study = next(s for s in samples.sample_studies() if s.accession_number == "ACC-24-0001")
    with DemoPacs(files=files) as pacs:
        node = Node(name="demo", ae_title=pacs.ae_title, host="127.0.0.1", port=pacs.port)
        summary = Retrieval(node, [RetrieveRequest(study.study_instance_uid)], StudyWriter(tmp_path / "out")).run()
    assert summary.ok, summary.to_json()
    stored = {p.name: p for p in (tmp_path / "out").rglob("*.dcm")}
    assert len(stored) == summary.total("completed") == sum(len(s.instances) for s in study.series)
    from pydicom import dcmread

    sources = {dcmread(f, stop_before_pixels=True).SOPInstanceUID: f for f in files}
    for path in stored.values():
        source = sources[dcmread(path, stop_before_pixels=True).SOPInstanceUID]
        assert _data_set(path) == _data_set(source)


def _get_scp(datasets: list[Any], answered: list[threading.Event]) -> Any:
    """A pynetdicom C-GET SCP sending ``datasets``; ``answered[i]`` is set once it has the answer to the
    i-th C-STORE (pynetdicom asks the generator for the next item only after that)."""
    from pynetdicom.sop_class import CTImageStorage, StudyRootQueryRetrieveInformationModelGet

    def on_get(event: Any) -> Any:
        yield len(datasets)
        for index, ds in enumerate(datasets):
            yield 0xFF00, ds
            answered[index].set()

    ae = AE(ae_title="GETSCP")
    ae.add_supported_context(StudyRootQueryRetrieveInformationModelGet)
    ae.add_supported_context(CTImageStorage, scu_role=True, scp_role=True)
    return ae.start_server(("127.0.0.1", 0), block=False, evt_handlers=[(evt.EVT_C_GET, on_get)])


def _plain_ct(sample_files: list[Path], count: int) -> list[Any]:
    """``count`` sample CT data sets of one study in an uncompressed syntax (what _get_scp can send)."""
    from pydicom import dcmread

    plain = ("1.2.840.10008.1.2", "1.2.840.10008.1.2.1")
    datasets = [ds for ds in map(dcmread, sample_files)
                if ds.SOPClassUID == "1.2.840.10008.5.1.4.1.1.2" and ds.file_meta.TransferSyntaxUID in plain][:count]
    assert len(datasets) == count and len({ds.StudyInstanceUID for ds in datasets}) == 1
    return datasets


def _retrieve_from_get_scp(datasets: list[Any], answered: list[threading.Event], writer: Any,
                           listener: Any) -> Any:
    """Retrieve ``datasets``' study from a _get_scp into ``writer``; the summary."""
    from pacspull.core.get import Retrieval, RetrieveRequest
    from pacspull.core.nodes import Node

    server = _get_scp(datasets, answered)
    try:
        node = Node(name="scp", ae_title="GETSCP", host="127.0.0.1", port=server.server_address[1])
        return Retrieval(node, [RetrieveRequest(str(datasets[0].StudyInstanceUID))], writer,
                         listener=listener).run()
    finally:
        server.shutdown()


@pytest.mark.parametrize("answer_first", [True, False])
def test_a_retrieves_bookkeeping_runs_once_the_pacs_has_its_answer(
        answer_first: bool, sample_files: list[Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The PACS sends the next instance only once it has our answer to this one; the manifest line and
    the listener's calls for an instance run after that answer is sent (answer_first), while the PACS
    prepares the next one. Switched off, they run before it. Either way the file is complete first."""
    from pacspull.core.get import RetrievalListener
    from pacspull.core.storage import StudyWriter

    monkeypatch.setattr(compat.SETTINGS, "answer_first", answer_first)
    datasets = _plain_ct(sample_files, 3)
    answered = [threading.Event() for _ in datasets]
    index = {str(ds.SOPInstanceUID): i for i, ds in enumerate(datasets)}
    seen: list[tuple[str, bool, bool, bool]] = []
    writer = StudyWriter(tmp_path / "out")

    class Listener(RetrievalListener):
        def instance_stored(self, outcome: Any, stored: Any) -> None:
            uid = stored.sop_instance_uid
            # Answered already, or (switched off) not: then the PACS is still waiting for it.
            had_answer = answered[index[uid]].wait(3 if answer_first else 0.3)
            seen.append((uid, had_answer, stored.path.is_file(), writer.already_have(uid) is not None))

    summary = _retrieve_from_get_scp(datasets, answered, writer, Listener())
    assert summary.ok and summary.total("completed") == 3, summary.to_json()
    assert [uid for uid, *_ in seen] == [str(ds.SOPInstanceUID) for ds in datasets]
    assert all(is_file and in_manifest for _, _, is_file, in_manifest in seen)
    assert [had_answer for _, had_answer, _, _ in seen] == [answer_first] * 3


def test_bookkeeping_that_fails_after_the_answer_is_logged_and_the_retrieve_goes_on(
        sample_files: list[Path], tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """A listener that raises after an instance was answered cannot change that answer: the error is
    logged, every instance is still stored, counted and in the manifest."""
    from pacspull.core.get import RetrievalListener
    from pacspull.core.storage import StudyWriter

    datasets = _plain_ct(sample_files, 2)

    class Listener(RetrievalListener):
        def instance_stored(self, outcome: Any, stored: Any) -> None:
            raise RuntimeError("listener broke")

    writer = StudyWriter(tmp_path / "out")
    summary = _retrieve_from_get_scp(datasets, [threading.Event() for _ in datasets], writer, Listener())
    assert summary.ok and summary.total("completed") == 2, summary.to_json()
    assert all(writer.already_have(str(ds.SOPInstanceUID)) for ds in datasets)
    errors = [r for r in caplog.records if r.getMessage() == "Error after answering a C-STORE"]
    assert len(errors) == 2 and "listener broke" in str(errors[0].exc_info[1])


def _data_set(path: Any) -> bytes:
    """A Part-10 file's bytes after its File Meta group."""
    data = Path(path).read_bytes()
    assert data[128:132] == b"DICM"
    return data[144 + int.from_bytes(data[140:144], "little"):]


def test_association_reactor_polls_with_a_1ms_module_level_sleep_and_pauses_on_its_checkpoint() -> None:
    import pynetdicom.association as association_module

    reactor = inspect.getsource(Association._run_reactor)
    assert "time.sleep(0.001)" in reactor and reactor.count("time.sleep(") == 1
    assert "self._reactor_checkpoint.wait()" in reactor and "self._is_paused = True" in reactor
    for method in (Association.send_c_get, Association.send_c_find, Association.release):
        source = inspect.getsource(method)
        assert "self._reactor_checkpoint.clear()" in source and "while not self._is_paused" in source
    assert hasattr(association_module, "time") and compat._REACTOR_POLL == 0.001
    assoc = _requestor()
    assert isinstance(assoc._reactor_checkpoint, threading.Event) and assoc._reactor_checkpoint.is_set()
    assert isinstance(assoc.dul.to_user_queue, queue.Queue)


def test_an_idle_fast_association_barely_wakes(echo_scp: tuple[str, int]) -> None:
    assoc = _associate(echo_scp, fast=True)
    try:
        assert "quiet_reactor" in assoc._pacspull_fast
        assert assoc.send_c_echo().Status == 0x0000
        waits = []
        real = compat.SETTINGS.idle_poll
        nudged_wait = threading.Event.wait

        def counting(self: threading.Event, timeout: float | None = None) -> bool:
            if threading.current_thread() is assoc and timeout == real:
                waits.append(timeout)
            return nudged_wait(self, timeout)

        threading.Event.wait = counting  # type: ignore[method-assign]
        try:
            time.sleep(0.5)
        finally:
            threading.Event.wait = nudged_wait  # type: ignore[method-assign]
        assert len(waits) <= 20, f"{len(waits)} reactor wake-ups in 0.5 s idle"
        start = time.perf_counter()
        for _ in range(10):  # each echo pauses the reactor: the nudge makes that immediate
            assoc.send_c_echo()
        assert (time.perf_counter() - start) / 10 < 0.02
    finally:
        assoc.release()
        assoc.ae.shutdown()
    assert assoc.is_released


@pytest.mark.parametrize("end", ["release", "abort"])
def test_a_quiet_reactor_ends_with_its_association(echo_scp: tuple[str, int], monkeypatch: pytest.MonkeyPatch,
                                                   end: str) -> None:
    """The quiet reactor sleeps until nudged (its idle wait made 30 s here): release and abort must nudge
    it once the association is over, or its thread outlives the association (a window closing
    mid-retrieve would still have a requestor thread). kill() sets the checkpoint before _kill, so
    install_fast_transport nudges once more after kill()."""
    monkeypatch.setattr(compat.SETTINGS, "idle_poll", 30.0)
    for _ in range(10):  # the gap between the two is a race: try it often
        assoc = _associate(echo_scp, fast=True)
        try:
            assert "quiet_reactor" in assoc._pacspull_fast
            assert assoc.send_c_echo().Status == 0x0000
            getattr(assoc, end)()
            assoc.join(5)
            assert not assoc.is_alive(), f"the reactor outlived the association ({end})"
        finally:
            assoc.ae.shutdown()


def test_the_reactor_of_a_requestor_never_takes_an_answer(echo_scp: tuple[str, int]) -> None:
    """A DIMSE message queued while no send_*() call waits stays for the next caller. pynetdicom's own
    reactor would take it (its pause check can read a stale flag right after the previous call), and the
    caller then waited out its timeout: a C-FIND after a C-ECHO lost its final response 2 times in 300."""
    assoc = _associate(echo_scp, fast=True)
    try:
        assert "quiet_reactor" in assoc._pacspull_fast
        assert assoc.send_c_echo().Status == 0x0000
        assert assoc._reactor_checkpoint.is_set()  # not paused: the reactor is free to look
        marker = object()
        assoc.dimse.msg_queue.put((1, marker))
        assoc._reactor_checkpoint.set()  # a nudge: the reactor runs its loop now
        time.sleep(0.3)
        assert assoc.dimse.msg_queue.get_nowait() == (1, marker)
    finally:
        assoc.abort()  # not release(): a reactor that took the marker died on it and would never pause
        assoc.ae.shutdown()


def test_an_association_says_who_ended_it(echo_scp: tuple[str, int]) -> None:
    """how_it_ended reads pynetdicom's private ``_sent_abort`` and the A-ABORT seen by EVT_ACSE_RECV (core's
    open_association binds note_acse_primitive): the difference between "the PACS refused us" and "we gave
    up" in every error message. An upgrade that renames either fails here."""
    from pacspull.core.association import close, open_association
    from pacspull.core.nodes import Node

    def node(address: tuple[str, int]) -> Node:
        return Node(name="t", ae_title="ECHO_SCP", host=address[0], port=address[1], dimse_timeout=5)

    contexts = [build_context(Verification)]
    assoc = open_association(node(echo_scp), contexts)
    assert compat.how_it_ended(assoc) == "open" and hasattr(assoc, "_sent_abort")
    assoc.abort()
    assert compat.how_it_ended(assoc) == "ours"
    close(assoc)

    ae = AE(ae_title="ECHO_SCP")
    ae.add_supported_context(Verification)
    aborting = ae.start_server(("127.0.0.1", 0), block=False,
                               evt_handlers=[(evt.EVT_C_ECHO, lambda event: event.assoc.abort())])
    try:
        assoc = open_association(node(aborting.server_address), contexts)
        rsp = assoc.send_c_echo()
        assert "Status" not in rsp  # no answer: the PACS aborted instead
        deadline = time.monotonic() + 2
        while compat.how_it_ended(assoc) == "open" and time.monotonic() < deadline:
            time.sleep(0.01)
        assert compat.how_it_ended(assoc) == "peer" and not assoc._sent_abort
        close(assoc)
    finally:
        aborting.shutdown()
