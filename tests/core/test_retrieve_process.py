"""A retrieve in a child process (core.retrieve_process), as the window runs it.

The child is a real spawned interpreter retrieving over loopback from the demo PACS running in this
test's process (throttled with ``Faults`` where a test acts mid-way) or from Orthanc.
"""

from __future__ import annotations

import logging
import os
import pickle
import signal
import subprocess
import threading
import time
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pydicom
import pytest

from pacspull.core import credentials
from pacspull.core.demo_pacs import DemoPacs, Faults
from pacspull.core.errors import ConnectionFailed, InvalidInput
from pacspull.core.get import RetrievalListener, RetrieveOptions, RetrieveRequest
from pacspull.core.nodes import Node
from pacspull.core.progress import CancelToken
from pacspull.core.retrieve_process import (
    CHILD_NICENESS,
    SPARES,
    ChildProcessError,
    IsolatedRetrieval,
    _Job,
    _read_frame,
    _write_frame,
    child_command,
)
from pacspull.core.samples import SampleStudy

pytestmark = pytest.mark.skipif(os.name != "posix", reason="signals and priorities are POSIX here")

LAYOUT = "{PatientID}/{StudyInstanceUID}/{SeriesInstanceUID}/{SOPInstanceUID}.dcm"


def node_of(pacs: Any, **kwargs: Any) -> Node:
    values: dict[str, Any] = {"connect_timeout": 3, "acse_timeout": 5, "dimse_timeout": 10, **kwargs}
    return Node(name="Child test", ae_title=pacs.ae_title, host="127.0.0.1", port=pacs.port, **values)


def study(studies: tuple[SampleStudy, ...], index: int) -> SampleStudy:
    return next(s for s in studies if s.index == index)


def files_in(folder: Path) -> dict[str, Path]:
    """SOP Instance UID → file, for every final (not hidden) file under ``folder``; each must parse."""
    found = {}
    for path in folder.rglob("*"):
        if path.is_file() and not path.name.startswith("."):
            found[str(pydicom.dcmread(path).SOPInstanceUID)] = path
    return found


class Recorder(RetrievalListener):
    """Every callback, with the thread it ran on."""

    def __init__(self) -> None:
        self.events: list[tuple[str, Any]] = []
        self.threads: set[int] = set()
        self.on_stored = lambda count: None

    def _note(self, kind: str, value: Any) -> None:
        self.threads.add(threading.get_ident())
        self.events.append((kind, value))

    def stored(self) -> list[str]:
        return [v.sop_instance_uid for k, v in self.events if k == "stored"]

    def instance_stored(self, outcome: Any, stored: Any) -> None:
        self._note("stored", stored)
        self.on_stored(len(self.stored()))

    def sub_operation_failed(self, outcome: Any, issue: Any) -> None:
        self._note("failed", issue)

    def progress(self, snapshot: Any) -> None:
        self._note("progress", snapshot)

    def request_finished(self, outcome: Any) -> None:
        self._note("request", outcome)

    def finished(self, summary: Any) -> None:
        self._note("finished", summary)


def test_the_child_retrieves_and_reports_on_the_calling_thread(demo_pacs: DemoPacs, sample_metadata: Any,
                                                               tmp_path: Path) -> None:
    first, second = study(sample_metadata, 1), study(sample_metadata, 6)
    recorder = Recorder()
    retrieval = IsolatedRetrieval(node_of(demo_pacs), [RetrieveRequest(first.study_instance_uid),
                                                       RetrieveRequest(second.study_instance_uid)],
                                  tmp_path, layout=LAYOUT, listener=recorder)
    summary = retrieval.run()

    assert retrieval.pid is not None and retrieval.pid != os.getpid()
    assert summary.ok, summary.to_json()
    expected = {*first.instance_uids, *second.instance_uids}
    on_disk = files_in(tmp_path)
    assert set(on_disk) == expected == set(recorder.stored())
    assert len(recorder.stored()) == len(expected)  # each exactly once
    for stored in (v for k, v in recorder.events if k == "stored"):
        assert on_disk[stored.sop_instance_uid] == stored.path
    assert recorder.threads == {threading.get_ident()}
    kinds = [k for k, _ in recorder.events]
    assert kinds.count("request") == 2 and kinds[-1] == "finished"
    # each request's instances come before its outcome; the outcome's counts are the child's
    cut = kinds.index("request")
    assert sum(k == "stored" for k in kinds[:cut]) == first.number_of_instances
    outcomes = [v for k, v in recorder.events if k == "request"]
    assert [o.completed for o in outcomes] == [first.number_of_instances, second.number_of_instances]
    assert [o.request.study_uid for o in outcomes] == [first.study_instance_uid, second.study_instance_uid]
    last_progress = [v for k, v in recorder.events[:cut] if k == "progress"][-1]
    assert last_progress.completed == first.number_of_instances
    assert any("Study Root" in line or "1.2.840.10008.5.1.4.1.2.2.3" in line for line in retrieval.context_report)


def test_cancel_reaches_the_child_and_keeps_what_arrived(demo_pacs: DemoPacs, sample_metadata: Any,
                                                          tmp_path: Path) -> None:
    demo_pacs.faults = Faults(delay_per_instance=0.1)
    ct = max(sample_metadata, key=lambda s: s.number_of_instances)
    token = CancelToken()
    recorder = Recorder()
    recorder.on_stored = lambda count: token.cancel() if count >= 2 else None
    summary = IsolatedRetrieval(node_of(demo_pacs), [RetrieveRequest(ct.study_instance_uid)], tmp_path,
                                layout=LAYOUT, listener=recorder, cancel=token).run()

    outcome = summary.outcomes[0]
    assert summary.cancelled and outcome.cancelled and not summary.ok
    assert 2 <= outcome.completed < ct.number_of_instances
    assert set(files_in(tmp_path)) == set(recorder.stored())
    assert len(recorder.stored()) == outcome.completed


def test_an_unusable_destination_is_refused_naming_the_field(demo_pacs: DemoPacs, tmp_path: Path) -> None:
    afile = tmp_path / "not-a-folder"
    afile.write_text("x")
    with pytest.raises(InvalidInput) as caught:
        IsolatedRetrieval(node_of(demo_pacs), [RetrieveRequest("1.2.3")], afile, layout=LAYOUT).run()
    assert caught.value.field == "destination" and "is a file" in caught.value.rule


def test_a_network_error_comes_back_in_the_summary(tmp_path: Path) -> None:
    node = Node(name="Nobody", ae_title="NOBODY", host="127.0.0.1", port=1, connect_timeout=2)
    summary = IsolatedRetrieval(node, [RetrieveRequest("1.2.3")], tmp_path, layout=LAYOUT).run()
    assert isinstance(summary.error, ConnectionFailed) and summary.exit_code == 3


def test_a_killed_child_is_an_error_and_its_files_stay(demo_pacs: DemoPacs, sample_metadata: Any,
                                                       tmp_path: Path) -> None:
    demo_pacs.faults = Faults(delay_per_instance=0.1)
    ct = max(sample_metadata, key=lambda s: s.number_of_instances)
    recorder = Recorder()
    retrieval = IsolatedRetrieval(node_of(demo_pacs), [RetrieveRequest(ct.study_instance_uid)], tmp_path,
                                  layout=LAYOUT, listener=recorder)
    niceness: list[int] = []

    def on_stored(count: int) -> None:
        if count == 1:
            niceness.append(os.getpriority(os.PRIO_PROCESS, retrieval.pid))
        elif count == 2:
            os.kill(retrieval.pid, signal.SIGKILL)

    recorder.on_stored = on_stored
    with pytest.raises(ChildProcessError) as caught:
        retrieval.run()
    # it ran below our priority, so that the window's thread goes first on a busy machine
    assert niceness == [min(19, os.getpriority(os.PRIO_PROCESS, 0) + CHILD_NICENESS)]
    assert "ended without reporting" in caught.value.message
    kept = files_in(tmp_path)  # every final name parses: no partial file under one
    assert set(recorder.stored()) <= set(kept) and 2 <= len(kept) < ct.number_of_instances


@pytest.mark.parametrize("how", ["silent", "deaf to the cancel"])
def test_a_stuck_child_is_killed_and_its_files_stay(how: str, demo_pacs: DemoPacs, sample_metadata: Any,
                                                    tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A child that stops (here SIGSTOP: no heartbeat, no reading of its stdin) is killed when its silence
    outlasts SILENCE_SECONDS, or when a cancel has had its grace and it still runs: the window's transfer
    ends in a clear error instead of waiting for ever, and what was stored stays."""
    from pacspull.core import retrieve_process

    if how == "silent":
        monkeypatch.setattr(retrieve_process, "SILENCE_SECONDS", 1.0)
    else:
        monkeypatch.setattr(retrieve_process, "CANCELLED_SILENCE_SECONDS", 0.5)
    demo_pacs.faults = Faults(delay_per_instance=0.1)
    ct = max(sample_metadata, key=lambda s: s.number_of_instances)
    recorder, cancel = Recorder(), CancelToken()
    retrieval = IsolatedRetrieval(node_of(demo_pacs), [RetrieveRequest(ct.study_instance_uid)], tmp_path,
                                  layout=LAYOUT, listener=recorder, cancel=cancel,
                                  options=RetrieveOptions(cancel_grace=0.5))

    def on_stored(count: int) -> None:
        if count == 2:
            os.kill(retrieval.pid, signal.SIGSTOP)
            if how != "silent":
                cancel.cancel()

    recorder.on_stored = on_stored
    start = time.monotonic()
    with pytest.raises(ChildProcessError) as caught:
        retrieval.run()
    assert time.monotonic() - start < 15
    expected = "sent nothing for 1 s, not" if how == "silent" else "sent nothing for 0.5 s after the cancel"
    assert expected in caught.value.message and "kept" in (caught.value.hint or "")
    assert _gone(retrieval.pid)
    kept = files_in(tmp_path)
    assert set(recorder.stored()) <= set(kept) and 2 <= len(kept) < ct.number_of_instances


def test_a_live_child_is_not_killed_however_long_its_cancel_takes(sample_files: list[Path], tmp_path: Path,
                                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    """A PACS that ignores C-CANCEL keeps the child busy for the whole grace (then it aborts); its
    heartbeat says it is alive, so it is not killed: the retrieve ends with its summary, files kept."""
    from pynetdicom import AE, evt
    from pynetdicom.sop_class import CTImageStorage, StudyRootQueryRetrieveInformationModelGet

    from pacspull.core import retrieve_process

    monkeypatch.setattr(retrieve_process, "CANCELLED_SILENCE_SECONDS", 0.5)
    plain = ("1.2.840.10008.1.2", "1.2.840.10008.1.2.1")
    datasets = [ds for ds in map(pydicom.dcmread, sample_files)
                if ds.SOPClassUID == "1.2.840.10008.5.1.4.1.1.2" and ds.file_meta.TransferSyntaxUID in plain][:6]

    def on_get(event: Any) -> Any:
        yield len(datasets)
        for ds in datasets:
            time.sleep(0.4)  # and never looks at event.is_cancelled
            yield 0xFF00, ds

    ae = AE(ae_title="DEAFSCP")
    ae.add_supported_context(StudyRootQueryRetrieveInformationModelGet)
    ae.add_supported_context(CTImageStorage, scu_role=True, scp_role=True)
    server = ae.start_server(("127.0.0.1", 0), block=False, evt_handlers=[(evt.EVT_C_GET, on_get)])
    cancel, recorder = CancelToken(), Recorder()
    recorder.on_stored = lambda count: cancel.cancel() if count == 1 else None
    node = Node(name="Deaf", ae_title="DEAFSCP", host="127.0.0.1", port=server.server_address[1])
    try:
        retrieval = IsolatedRetrieval(node, [RetrieveRequest(str(datasets[0].StudyInstanceUID))], tmp_path,
                                      layout=LAYOUT, listener=recorder, cancel=cancel,
                                      options=RetrieveOptions(cancel_grace=1.5))
        start = time.monotonic()
        summary = retrieval.run()  # no ChildProcessError: it was never killed
    finally:
        server.shutdown()
    assert time.monotonic() - start > 1.5  # longer than the 0.5 s of silence allowed after a cancel
    assert summary.total("completed") >= 1 and "within 1.5 s" in (summary.outcomes[0].error or "")
    assert set(recorder.stored()) == set(files_in(tmp_path))


def test_the_watchdog_does_not_count_a_sleep_of_the_computer_as_silence(monkeypatch: pytest.MonkeyPatch) -> None:
    """After a suspend (the clock jumps while nothing ran) the child gets a fresh SILENCE_SECONDS: killing it
    then would end a healthy retrieve. Silence in time the watchdog was awake for still kills."""
    from pacspull.core import retrieve_process

    monkeypatch.setattr(retrieve_process, "SILENCE_SECONDS", 1.0)
    monkeypatch.setattr(retrieve_process, "START_SILENCE_SECONDS", 1.0)
    offset = [0.0]
    monkeypatch.setattr(retrieve_process, "_clock", lambda: time.monotonic() + offset[0])
    killed: list[float] = []
    child = SimpleNamespace(pid=0, poll=lambda: None, kill=lambda: killed.append(time.monotonic()))
    watchdog = retrieve_process._Watchdog(child, CancelToken())  # type: ignore[arg-type]
    try:
        time.sleep(0.6)
        offset[0] += 3600.0  # an hour asleep, between two of its looks
        jumped = time.monotonic()
        time.sleep(0.7)
        assert killed == [], "killed right after the computer woke up"
        deadline = time.monotonic() + 5
        while not killed and time.monotonic() < deadline:
            time.sleep(0.05)
        assert killed and killed[0] - jumped >= 0.9  # a full second of real silence after waking
        assert "sent nothing for 1 s since it started" in watchdog.killed_because
    finally:
        watchdog.stop()


def test_the_child_cancels_when_the_parent_is_gone(demo_pacs: DemoPacs, sample_metadata: Any,
                                                    tmp_path: Path) -> None:
    """The real child, driven by hand: its stdin closing (what the parent's death does) cancels it; it
    sends C-CANCEL, keeps what it stored, and exits by itself."""
    demo_pacs.faults = Faults(delay_per_instance=0.1)
    ct = max(sample_metadata, key=lambda s: s.number_of_instances)
    job = _Job(node_of(demo_pacs), (RetrieveRequest(ct.study_instance_uid),), str(tmp_path), LAYOUT,
               RetrieveOptions(), None, {}, False)
    child = subprocess.Popen(child_command(), stdin=subprocess.PIPE, stdout=subprocess.PIPE)
    assert child.stdin is not None and child.stdout is not None
    _write_frame(child.stdin, job)
    stored: list[str] = []
    while len(stored) < 2:
        batch = _read_frame(child.stdout)
        assert batch is not None, "the child ended early"
        stored += [event[2].sop_instance_uid for event in batch if event[0] == "stored"]
    child.stdin.close()
    events = []
    while (batch := _read_frame(child.stdout)) is not None:
        events += batch
    assert child.wait(15) == 0
    summary = next(event[1] for event in events if event[0] == "done")
    assert summary.cancelled and 2 <= summary.outcomes[0].completed < ct.number_of_instances
    stored += [event[2].sop_instance_uid for event in events if event[0] == "stored"]
    assert set(files_in(tmp_path)) == set(stored)


def test_sigterm_cancels_and_sigint_is_left_to_the_window(demo_pacs: DemoPacs, sample_metadata: Any,
                                                          tmp_path: Path) -> None:
    demo_pacs.faults = Faults(delay_per_instance=0.1)
    small = study(sample_metadata, 2)  # CT Abdomen, 5 instances
    recorder = Recorder()
    retrieval = IsolatedRetrieval(node_of(demo_pacs), [RetrieveRequest(small.study_instance_uid)],
                                  tmp_path / "int", layout=LAYOUT, listener=recorder)
    recorder.on_stored = lambda count: os.kill(retrieval.pid, signal.SIGINT) if count == 2 else None
    assert retrieval.run().ok  # Ctrl+C in the window's terminal is the window's business
    assert len(files_in(tmp_path / "int")) == small.number_of_instances

    ct = max(sample_metadata, key=lambda s: s.number_of_instances)
    recorder = Recorder()
    retrieval = IsolatedRetrieval(node_of(demo_pacs), [RetrieveRequest(ct.study_instance_uid)],
                                  tmp_path / "term", layout=LAYOUT, listener=recorder)
    recorder.on_stored = lambda count: os.kill(retrieval.pid, signal.SIGTERM) if count == 2 else None
    summary = retrieval.run()
    assert summary.cancelled and 2 <= summary.outcomes[0].completed < ct.number_of_instances
    assert set(files_in(tmp_path / "term")) == set(recorder.stored())


def test_a_crash_in_the_child_is_an_error_with_its_traceback_in_the_log(
        demo_pacs: DemoPacs, tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    # Options without the fields the engine reads: a bug in the child, as far as the parent can tell.
    broken = IsolatedRetrieval(node_of(demo_pacs), [RetrieveRequest("1.2.3")], tmp_path, layout=LAYOUT,
                               options=SimpleNamespace(cancel_grace=1.0))  # type: ignore[arg-type]
    with pytest.raises(ChildProcessError) as caught:
        broken.run()
    assert caught.value.message.startswith("the retrieve process failed: AttributeError")
    logged = [r.getMessage() for r in caplog.records if r.name == "pacspull.core.retrieve_process"]
    assert any("Traceback (most recent call last)" in text and "AttributeError" in text for text in logged)


def test_a_change_of_log_level_reaches_a_running_child(demo_pacs: DemoPacs, sample_metadata: Any,
                                                        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    demo_pacs.faults = Faults(delay_per_instance=0.1)
    ct = max(sample_metadata, key=lambda s: s.number_of_instances)
    caplog.set_level(logging.DEBUG)
    storage_log = logging.getLogger("pacspull.core.storage")  # one DEBUG line per file it stores
    storage_log.setLevel(logging.INFO)
    token = CancelToken()
    recorder = Recorder()

    def on_stored(count: int) -> None:
        if count == 2:
            storage_log.setLevel(logging.DEBUG)
        elif count == 6:
            token.cancel()

    recorder.on_stored = on_stored
    try:
        IsolatedRetrieval(node_of(demo_pacs), [RetrieveRequest(ct.study_instance_uid)], tmp_path,
                          layout=LAYOUT, listener=recorder, cancel=token).run()
    finally:
        storage_log.setLevel(logging.NOTSET)
    lines = [r.getMessage() for r in caplog.records if r.name == "pacspull.core.storage"
             and r.process != os.getpid() and r.getMessage().startswith("stored ")]
    assert 1 <= len(lines) <= len(recorder.stored()) - 2  # none for the first two files, some after


def test_the_childs_log_records_reach_the_parent(demo_pacs: DemoPacs, sample_metadata: Any, tmp_path: Path,
                                                 caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="pynetdicom")
    IsolatedRetrieval(node_of(demo_pacs), [RetrieveRequest(study(sample_metadata, 6).study_instance_uid)],
                      tmp_path, layout=LAYOUT).run()
    theirs = [r for r in caplog.records if r.name.startswith("pynetdicom") and r.process != os.getpid()]
    assert any("Association Accepted" in r.getMessage() for r in theirs)


def test_the_nodes_secret_is_handed_to_the_child(demo_pacs: DemoPacs, sample_metadata: Any, tmp_path: Path,
                                                  caplog: pytest.LogCaptureFixture,
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    """Lent for this run only (not in any keyring): the child could not have found it itself."""
    node = node_of(demo_pacs, identity="password", identity_user="radiologist", allow_plain_credentials=True)
    monkeypatch.setattr(credentials, "_for_this_run", {})  # forgotten after this test
    credentials.remember_for_run(node.name, "s3cret-for-child")
    caplog.set_level(logging.DEBUG, logger="pynetdicom")
    summary = IsolatedRetrieval(node, [RetrieveRequest(study(sample_metadata, 6).study_instance_uid)],
                                tmp_path, layout=LAYOUT).run()
    assert summary.ok, summary.to_json()
    # The child's debug dump of its A-ASSOCIATE-RQ names the password: masked there, before it is sent
    # here (the demo PACS in this process logs what it received, unmasked: no masking installed here).
    childs = [r.getMessage() for r in caplog.records if r.process != os.getpid()]
    assert any("Password: [********]" in text for text in childs)
    assert not any("s3cret-for-child" in text for text in childs)


def _gone(pid: int, seconds: float = 10.0) -> bool:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return True
        time.sleep(0.05)
    return False


def test_a_queue_prestarts_the_next_child(demo_pacs: DemoPacs, sample_metadata: Any, tmp_path: Path) -> None:
    """The next retrieve of a queue finds its child already started (Python up, imports done)."""
    small = study(sample_metadata, 2)
    first = IsolatedRetrieval(node_of(demo_pacs), [RetrieveRequest(small.study_instance_uid)], tmp_path / "a",
                              layout=LAYOUT, prestart_next=True)
    assert first.run().ok
    spare = SPARES.pid
    assert spare is not None and spare != first.pid
    second = IsolatedRetrieval(node_of(demo_pacs), [RetrieveRequest(small.study_instance_uid)], tmp_path / "b",
                               layout=LAYOUT)
    assert second.run().ok and second.pid == spare
    assert SPARES.pid is None and len(files_in(tmp_path / "b")) == small.number_of_instances
    assert _gone(spare)

    SPARES.prestart()  # one nobody takes: let go, it exits by itself
    unused = SPARES.pid
    assert unused is not None
    SPARES.discard()
    assert SPARES.pid is None and _gone(unused)


def test_a_spare_discarded_while_it_starts_does_not_stay(monkeypatch: pytest.MonkeyPatch) -> None:
    """The window starts a spare in the background when a search finds studies; closing it meanwhile
    (discard) must not leave that process waiting for a job that never comes."""
    from pacspull.core import retrieve_process

    started: list[int] = []
    real = retrieve_process._start_child

    def slow_start() -> Any:
        time.sleep(0.5)
        child = real()
        started.append(child.pid)
        return child

    monkeypatch.setattr(retrieve_process, "_start_child", slow_start)
    SPARES.discard()
    SPARES.prestart_in_background()
    SPARES.prestart_in_background()  # a second search meanwhile: still one
    time.sleep(0.1)
    SPARES.discard()
    deadline = time.monotonic() + 5
    while not started and time.monotonic() < deadline:
        time.sleep(0.05)
    assert len(started) == 1 and SPARES.pid is None
    assert _gone(started[0])


def test_errors_cross_the_process_boundary_whole() -> None:
    error = pickle.loads(pickle.dumps(InvalidInput("port", "must be 1–65535", value=0)))
    assert type(error) is InvalidInput and (error.field, error.rule, error.exit_code) == ("port", "must be 1–65535", 2)
    error = pickle.loads(pickle.dumps(ConnectionFailed("refused", hint="is it running?", stage="connect")))
    assert str(error) == "connect: refused (is it running?)"
