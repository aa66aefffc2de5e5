"""A retrieve run in a child process, reporting to a listener in the calling process.

Why: the window's retrieve used to run on a QThread of the window's own process. Receiving a study is
about a millisecond of Python per instance, so at hundreds of instances a second that thread holds the
GIL most of the time, and the GUI thread, which needs the GIL for every Python slot, paint call and
timer tick, waits for it: 40–80 ms stalls while retrieving 3,000 small instances (benchmarks/gui_stall.py).
In a process of its own the engine has its own GIL; the window's process only reads a few batches of
events a second.

``IsolatedRetrieval`` has ``Retrieval``'s shape (``run()`` → ``RetrievalSummary``, ``context_report``)
and calls the same ``RetrievalListener`` methods, on the thread that called ``run()``:

* the child is a fresh interpreter (``child_command()``: this Python running ``child_main``; in a
  frozen build the window's own executable with ``CHILD_FLAG``), never a fork of a process running Qt, and it imports
  neither Qt nor the script that started the window. It runs ``Retrieval`` into its own ``StudyWriter``,
  so every storage guarantee is the engine's own;
* the job goes to its stdin, its events come back on its stdout, as length-prefixed pickles: in
  batches, at most every ``BATCH_SECONDS`` (stored instances, failed and warning sub-operations in order;
  the newest progress snapshot; each request's outcome; log records, already masked by the child), then
  the summary or the error. Anything the child prints goes to the null device, never between frames;
* ``cancel`` is forwarded as a frame on its stdin (the child sends an empty batch at least every
  ``HEARTBEAT_SECONDS``, so the reader looks at the token that often); the child sends C-CANCEL as the
  engine does in-process. If the calling process goes away, the child sees its stdin close and cancels
  too, keeping every instance stored so far (and, as always, no partial file under a final name);
* the child lowers its own priority (``CHILD_NICENESS``; below normal on Windows) before it imports
  anything;
* ``prestart_next``: when another retrieve follows in a queue, its child is started while this one runs
  (``SPARES``), so that it does not wait for Python to start and import;
* the log: the child follows our loggers' levels and the patient-identifier switch (core.privacy),
  sent with the job and again whenever they change, and sends its records here; a crash's traceback
  is logged here in full;
* a stuck child (stopped, hung in native code) is killed (``_Watchdog``): one silent for
  ``SILENCE_SECONDS`` (its heartbeat comes from a thread of its own, whatever the network does), or for
  ``CANCELLED_SILENCE_SECONDS`` once the user cancelled (a stuck child never reads the cancel). A child
  that still sends its heartbeat is never killed. The retrieve then ends in an error that says so; what
  was stored stays;
* signals: the child ignores SIGINT (Ctrl+C in the window's terminal is the window's to handle: it
  cancels) and takes SIGTERM as a cancel;
* the node's secret, if it needs one, is read here (the keyring, or one lent for this run) and handed
  to the child with the job (empty if none is stored): the child never asks the keyring.

Why not ``multiprocessing``: its *spawn* re-imports the parent's ``__main__`` in the child (the window's
script, so Qt: +0.2 s and ~30 MB per retrieve) and needs ``freeze_support`` in frozen builds; a plain
child process with two pipes needs neither.
"""

from __future__ import annotations

import copy
import logging
import os
import pickle
import signal
import struct
import subprocess
import sys
import threading
import time
import traceback
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

from pacspull.core import credentials, privacy
from pacspull.core.errors import PacsPullError
from pacspull.core.get import (
    RequestOutcome,
    RetrievalListener,
    RetrievalProgress,
    RetrievalSummary,
    Retrieval,
    RetrieveOptions,
    RetrieveRequest,
    SubOperationIssue,
)
from pacspull.core.nodes import Node
from pacspull.core.progress import CancelToken
from pacspull.core.storage import StoredInstance, StudyWriter

LOG = logging.getLogger(__name__)
BATCH_SECONDS = 0.05  # the child sends what happened at most this often (20 batches a second)
HEARTBEAT_SECONDS = 0.25  # and an empty batch this often, so a cancel is passed on even while nothing arrives
# A frozen build's window executable, started as the child: build_scripts/launch_gui.py checks for it
# (and lowers its priority) before it imports anything heavy.
CHILD_FLAG = "--pacspull-retrieve-process"
# The child runs at a lower priority than the window: on a busy machine (the PACS itself on the same two
# cores, a viewer rendering) the scheduler then lets the GUI thread run first, and the retrieve is no
# slower for it (measured: benchmarks/FINDINGS.md, "The window").
CHILD_NICENESS = 10  # launch_gui.py spells it out too (it runs before any import; a test keeps them equal)
# A child that sends nothing this long, not even its heartbeat (sent by a thread of its own whatever the
# network does), is stuck (stopped, hung in native code): it is killed and the retrieve ends in an error.
SILENCE_SECONDS = 30.0
# Before its first frame a fresh child starts Python and imports at low priority (a cold frozen start on
# a busy machine, an antivirus scanning it): it gets this long.
START_SILENCE_SECONDS = 120.0
# After a cancel the user is waiting: a child silent this long then is stuck (and never read the cancel).
# One that still sends its heartbeat is alive, however long its C-CANCEL, release or flush take.
CANCELLED_SILENCE_SECONDS = 5.0
_clock = time.monotonic  # the watchdog's clock (a test moves it)
_WINDOWS_FLAGS = getattr(subprocess, "CREATE_NO_WINDOW", 0) | getattr(subprocess, "BELOW_NORMAL_PRIORITY_CLASS", 0)
_LOGGER_PREFIXES = ("pacspull", "pynetdicom")


class ChildProcessError(PacsPullError):  # noqa: A001 - ours, not the builtin; named for what it says
    """The retrieve's child process ended without reporting (killed, or a crash in the interpreter)."""


@dataclass(frozen=True)
class _Job:
    node: Node
    requests: tuple[RetrieveRequest, ...]
    destination: str
    layout: str
    options: RetrieveOptions
    secret: str | None
    levels: dict[str, int]
    identifiers_logged: bool


def _log_settings() -> tuple[dict[str, int], bool]:
    """What the child's log must follow: our logger levels and the patient-identifier switch."""
    return _logger_levels(), privacy.identifiers_logged()


def _apply_log_settings(levels: dict[str, int], identifiers_logged: bool) -> None:
    for name, level in levels.items():
        logging.getLogger(name or None).setLevel(level)
    privacy.enable_identifier_logging(identifiers_logged)


def _logger_levels() -> dict[str, int]:
    """The levels set on our loggers and pynetdicom's (and the root's) here, for the child to copy."""
    levels = {"": logging.getLogger().level}
    for name, logger in logging.root.manager.loggerDict.items():
        if isinstance(logger, logging.Logger) and logger.level and name.startswith(_LOGGER_PREFIXES):
            levels[name] = logger.level
    return levels


class IsolatedRetrieval:
    """``Retrieval`` of ``requests`` from ``node`` into ``destination``, run in a child process."""

    def __init__(self, node: Node, requests: Sequence[RetrieveRequest], destination: Path | str, *,
                 layout: str, listener: RetrievalListener | None = None, cancel: CancelToken | None = None,
                 options: RetrieveOptions = RetrieveOptions(), prestart_next: bool = False) -> None:
        self.node = node
        self.requests = tuple(requests)
        self.destination = str(destination)
        self.layout = layout
        self.listener = listener or RetrievalListener()
        self.cancel = cancel or CancelToken()
        self.options = options
        self.context_report: list[str] = []
        self.pid: int | None = None
        self.prestart_next = prestart_next  # another retrieve follows: start its child now (SPARES)

    def _secret(self) -> str | None:
        """The node's secret for the child ("" if it needs one and none is stored: the child then
        refuses as the engine does here, without asking a keyring itself); None if it needs none."""
        if not self.node.identity_has_secret:
            return None
        return credentials.get_secret(self.node.name) or ""

    def run(self) -> RetrievalSummary:
        """Start the child, relay its events to the listener until it reports the end; the summary.

        Raises what the child raised before it could retrieve (an unusable destination:
        ``InvalidInput``), or ``ChildProcessError`` if it could not start or ended without a word."""
        settings = _log_settings()
        job = _Job(self.node, self.requests, self.destination, self.layout, self.options, self._secret(),
                   *settings)
        child = SPARES.take() or _start_child()
        if self.prestart_next:
            SPARES.prestart()
        self.pid = child.pid
        assert child.stdin is not None and child.stdout is not None
        summary: RetrievalSummary | None = None
        watchdog = _Watchdog(child, self.cancel)
        try:
            try:
                _write_frame(child.stdin, job)
            except OSError:  # it died before it read the job (EPIPE; EINVAL on Windows)
                pass
            else:
                summary = self._relay(child.stdout, child.stdin, settings, watchdog)
        finally:
            watchdog.stop()
            # Closing its stdin is "cancel" to a child still running (the listener raised): give it the
            # time a C-CANCEL may take before killing it. One that reported only has to exit.
            self._close(child, grace=5.0 if summary is not None else self.options.cancel_grace + 5.0)
        if summary is None:
            if watchdog.killed_because:
                raise ChildProcessError(f"the retrieve process {watchdog.killed_because}, so it was stopped",
                                        hint="instances stored before it stopped are kept")
            raise self._ended(child)
        return summary

    @staticmethod
    def _close(child: subprocess.Popen[bytes], grace: float) -> None:
        for stream in (child.stdin, child.stdout):
            try:
                if stream is not None:
                    stream.close()
            except OSError:
                pass
        try:
            child.wait(grace)
        except subprocess.TimeoutExpired:
            LOG.warning("The retrieve process %s did not exit within %.0f s; killing it", child.pid, grace)
            child.kill()
            child.wait()

    def _ended(self, child: subprocess.Popen[bytes]) -> ChildProcessError:
        return ChildProcessError(f"the retrieve process ended without reporting (exit code {child.returncode})",
                                 hint="instances stored before it ended are kept; the log may say more")

    def _relay(self, events: IO[bytes], control: IO[bytes], settings: tuple[dict[str, int], bool],
               watchdog: _Watchdog) -> RetrievalSummary | None:
        """Read the child's batches (at least one every ``HEARTBEAT_SECONDS``), pass on cancel and any
        change of the log ``settings`` the job carried; the summary, or None if its output ended
        without one."""
        outcomes = [RequestOutcome(request) for request in self.requests]
        cancel_sent = False
        while True:
            batch = _read_frame(events)
            if batch is None:
                return None
            watchdog.heard()
            summary = None
            for event in batch:
                summary = self._dispatch(event, outcomes) or summary  # log records after "done" too
            watchdog.heard()  # (again: the time our listener took is not the child's silence)
            if summary is not None:
                self.listener.finished(summary)
                return summary
            try:
                if self.cancel.cancelled and not cancel_sent:
                    cancel_sent = True
                    _write_frame(control, "cancel")
                now = _log_settings()
                if now != settings:  # the user changed the log's verbosity or privacy mid-retrieve
                    settings = now
                    _write_frame(control, ("log settings", *now))
            except OSError:
                pass  # already gone: its last frames (or their absence) tell the rest

    def _dispatch(self, event: tuple[Any, ...], outcomes: list[RequestOutcome]) -> RetrievalSummary | None:
        kind = event[0]
        if kind == "stored":
            self.listener.instance_stored(outcomes[event[1]], event[2])
        elif kind == "failed":
            self.listener.sub_operation_failed(outcomes[event[1]], event[2])
        elif kind == "warning":
            self.listener.sub_operation_warning(outcomes[event[1]], event[2])
        elif kind == "progress":
            self.listener.progress(event[1])
        elif kind == "request":
            outcomes[event[1]] = event[2]
            self.listener.request_finished(event[2])
        elif kind == "log":
            record = logging.makeLogRecord(event[1])
            logger = logging.getLogger(record.name)
            if logger.isEnabledFor(record.levelno):
                logger.handle(record)
        elif kind == "done":
            self.context_report = event[2]
            return event[1]
        elif kind == "error":
            raise event[1]
        elif kind == "crash":
            LOG.error("The retrieve process failed:\n%s", event[1].rstrip())
            raise ChildProcessError(f"the retrieve process failed: {event[1].strip().splitlines()[-1]}",
                                    hint="details are in the log")
        return None


class _Watchdog:
    """Kills a child that is stuck: silent (no frame, not even its heartbeat) for ``SILENCE_SECONDS``
    (``START_SILENCE_SECONDS`` before its first frame, ``CANCELLED_SILENCE_SECONDS`` once cancelled). The
    blocked read of its events then ends, and ``killed_because`` says why. Time in which the watchdog
    itself did not run (the computer slept) does not count."""

    def __init__(self, child: subprocess.Popen[bytes], cancel: CancelToken) -> None:
        self.child = child
        self.cancel = cancel
        self.killed_because = ""
        self._last = _clock()
        self._started = False  # a first frame arrived
        self._stopped = threading.Event()
        threading.Thread(target=self._watch, name="pacspull-child-watchdog", daemon=True).start()

    def heard(self) -> None:
        self._last = _clock()
        self._started = True

    def stop(self) -> None:
        self._stopped.set()

    def _limit(self) -> tuple[float, str]:
        if self.cancel.cancelled:
            return min(CANCELLED_SILENCE_SECONDS, SILENCE_SECONDS), " after the cancel"
        if not self._started:
            return max(START_SILENCE_SECONDS, SILENCE_SECONDS), " since it started"
        return SILENCE_SECONDS, ""

    def _watch(self) -> None:
        step = min(0.5, SILENCE_SECONDS / 4, CANCELLED_SILENCE_SECONDS / 4)
        checked = _clock()
        was_cancelled = False
        while not self._stopped.wait(step):
            now = _clock()
            if now - checked > step + 5.0:
                # We did not run for seconds (the computer slept, or the whole system stalled): the
                # child did not either, so its silence meanwhile says nothing.
                self._last = now
            checked = now
            if self.cancel.cancelled and not was_cancelled:
                was_cancelled = True
                self._last = max(self._last, now - 0.5)  # the cancel reaches it with its next frame
            limit, when = self._limit()
            if now - self._last <= limit:
                continue
            if self.child.poll() is None and not self._stopped.is_set():
                why = f"sent nothing for {limit:g} s{when}, not even its heartbeat"
                LOG.warning("The retrieve process %s %s; killing it", self.child.pid, why)
                self.killed_because = why
                self.child.kill()
            return


def _start_child() -> subprocess.Popen[bytes]:
    try:
        return subprocess.Popen(child_command(), stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                stderr=None if sys.stderr else subprocess.DEVNULL, creationflags=_WINDOWS_FLAGS)
    except OSError as exc:
        raise ChildProcessError(f"cannot start the retrieve process: {exc}",
                                hint="reinstall PacsPull if this persists") from None


class _Spares:
    """At most one child started ahead of time: for the next retrieve of a queue, or for the first one
    once a search in the window found studies (``RetrieveQueue.warm_up``).

    A child spends about 0.3 s starting Python and importing pydicom and pynetdicom before it reads its
    job; a queue of many small transfers would pay that for each one, and every first click too. A spare has done it and waits,
    blocked on its stdin (no CPU), until a retrieve takes it or ``discard()`` (or our exit) closes it.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._child: subprocess.Popen[bytes] | None = None
        self._starting = False
        self._discards = 0  # a start that began before a discard does not become the spare

    def take(self) -> subprocess.Popen[bytes] | None:
        """The spare if it is still alive (it is then no longer the spare), else None."""
        with self._lock:
            child, self._child = self._child, None
        if child is not None and child.poll() is None:
            return child
        return None

    def prestart(self) -> None:
        """Start a spare unless one is waiting or starting; a failure only means the next retrieve starts
        its own. The process starts outside the lock (a slow CreateProcess delays no ``take``)."""
        with self._lock:
            if self._starting or (self._child is not None and self._child.poll() is None):
                return
            self._starting, discards = True, self._discards
        child = None
        try:
            child = _start_child()
        except ChildProcessError as exc:
            LOG.warning("%s", exc)
        finally:
            with self._lock:
                self._starting = False
                if child is not None and discards == self._discards and self._child is None:
                    self._child, child = child, None
        if child is not None:  # discarded while it started, or another one is waiting
            self._let_go(child)

    def prestart_in_background(self) -> None:
        """``prestart`` on a thread of its own (the caller is the GUI thread)."""
        threading.Thread(target=self.prestart, name="pacspull-spare-start", daemon=True).start()

    def discard(self) -> None:
        """Let the waiting spare go (the queue is idle, or the window closes), and any being started.
        Never blocks: the spare exits once it reads the end of its stdin, and a thread of its own collects
        it."""
        with self._lock:
            self._discards += 1
        child = self.take()
        if child is not None:
            self._let_go(child)

    @staticmethod
    def _let_go(child: subprocess.Popen[bytes]) -> None:
        threading.Thread(target=IsolatedRetrieval._close, args=(child, 10.0), name="pacspull-spare-exit",
                         daemon=True).start()

    @property
    def pid(self) -> int | None:
        """The waiting spare's process id, if one is waiting."""
        with self._lock:
            return None if self._child is None or self._child.poll() is not None else self._child.pid


SPARES = _Spares()


def child_command() -> list[str]:
    """How to start the child: this interpreter with this module, or (frozen) this executable with
    ``CHILD_FLAG``, which the window's entry script hands to ``child_main`` before importing Qt."""
    if getattr(sys, "frozen", False):
        return [sys.executable, CHILD_FLAG]
    # Not "-m": that puts the current folder first on sys.path, where a stray pydicom/ or logging.py
    # (say, in the folder the window was started from) would shadow the real one in the child. The
    # priority is lowered first, so that even the imports give way to the window (CHILD_NICENESS).
    return [sys.executable, "-c", f"import os, sys; del sys.path[0]; hasattr(os, 'nice') and os.nice({CHILD_NICENESS}); "
            "from pacspull.core.retrieve_process import child_main; sys.exit(child_main())"]


# -- frames: a 4-byte big-endian length, then a pickle ------------------------------------------------


def _write_frame(stream: IO[bytes], value: Any) -> None:
    data = pickle.dumps(value, protocol=pickle.HIGHEST_PROTOCOL)
    stream.write(struct.pack(">I", len(data)) + data)
    stream.flush()


def _read_exact(stream: IO[bytes], size: int) -> bytes | None:
    chunks, left = [], size
    while left:
        chunk = stream.read(left)
        if not chunk:
            return None
        chunks.append(chunk)
        left -= len(chunk)
    return b"".join(chunks)


def _read_frame(stream: IO[bytes]) -> Any:
    """The next value, or None at the end of the stream."""
    header = _read_exact(stream, 4)
    if header is None:
        return None
    data = _read_exact(stream, struct.unpack(">I", header)[0])
    return None if data is None else pickle.loads(data)


# -- the child ----------------------------------------------------------------------------------------


class _Outbox:
    """Events of the child, sent to the parent in batches by a thread of their own: at most every
    ``BATCH_SECONDS``, and an empty one every ``HEARTBEAT_SECONDS`` so the parent can pass on a cancel."""

    def __init__(self, stream: IO[bytes]) -> None:
        self.stream = stream
        self._lock = threading.Lock()
        self._events: list[tuple[Any, ...]] = []
        self._progress: RetrievalProgress | None = None
        self._sent_at = time.monotonic()
        self._closed = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="pacspull-outbox", daemon=True)
        self._thread.start()

    def put(self, *event: Any) -> None:
        with self._lock:
            self._events.append(event)

    def progress(self, snapshot: RetrievalProgress) -> None:
        with self._lock:
            self._progress = snapshot

    def progress_now(self) -> None:
        """Queue the newest snapshot in order (before a request's outcome)."""
        with self._lock:
            if self._progress is not None:
                self._events.append(("progress", self._progress))
                self._progress = None

    def _flush(self) -> None:
        with self._lock:
            batch, self._events = self._events, []
            if self._progress is not None:
                batch.append(("progress", self._progress))
                self._progress = None
        if batch or time.monotonic() - self._sent_at >= HEARTBEAT_SECONDS:
            _write_frame(self.stream, batch)
            self._sent_at = time.monotonic()

    def _loop(self) -> None:
        while not self._closed.wait(BATCH_SECONDS):
            try:
                self._flush()
            except OSError:
                return  # the parent is gone; the control watcher cancels the retrieve
            except Exception:  # noqa: BLE001 - a bug must not silence the heartbeat (and with it cancel)
                self.put("log", _record_state(logging.makeLogRecord({
                    "name": __name__, "levelno": logging.ERROR, "levelname": "ERROR",
                    "msg": "retrieve process: a batch of events was lost:\n" + traceback.format_exc()})))

    def close(self, *final: Any) -> None:
        """Send what is left and ``final`` last, then stop."""
        self._closed.set()
        self._thread.join()
        self.put(*final)
        try:
            self._flush()
        except OSError:
            pass


class _ChildListener(RetrievalListener):
    def __init__(self, outbox: _Outbox, requests: Sequence[RetrieveRequest]) -> None:
        self.outbox = outbox
        self._index = {id(request): i for i, request in enumerate(requests)}

    def _of(self, outcome: RequestOutcome) -> int:
        return self._index.get(id(outcome.request), 0)

    def instance_stored(self, outcome: RequestOutcome, stored: StoredInstance) -> None:
        self.outbox.put("stored", self._of(outcome), stored)

    def sub_operation_failed(self, outcome: RequestOutcome, issue: SubOperationIssue) -> None:
        self.outbox.put("failed", self._of(outcome), issue)

    def sub_operation_warning(self, outcome: RequestOutcome, issue: SubOperationIssue) -> None:
        self.outbox.put("warning", self._of(outcome), issue)

    def progress(self, snapshot: RetrievalProgress) -> None:
        self.outbox.progress(snapshot)

    def request_finished(self, outcome: RequestOutcome) -> None:
        self.outbox.progress_now()
        # A copy: the outbox pickles it later, on its own thread, and the engine may still add a note.
        self.outbox.put("request", self._of(outcome), copy.deepcopy(outcome))


class _Forward(logging.Handler):
    """Sends each record (its message already formatted and masked) to the parent."""

    def __init__(self, outbox: _Outbox) -> None:
        super().__init__(logging.DEBUG)
        self.outbox = outbox

    def emit(self, record: logging.LogRecord) -> None:
        try:
            self.outbox.put("log", _record_state(record))
        except Exception:  # noqa: BLE001 - logging must never break the retrieve
            self.handleError(record)


_RECORD_FIELDS = ("name", "levelno", "levelname", "pathname", "filename", "module", "lineno", "funcName",
                  "created", "msecs", "relativeCreated", "thread", "threadName", "process", "processName")


def _record_state(record: logging.LogRecord) -> dict[str, Any]:
    """A record as plain, picklable fields; the message formatted, the traceback as text, both masked
    (the message already is, by the record factory)."""
    state = {field: getattr(record, field, None) for field in _RECORD_FIELDS}
    state["msg"], state["args"] = record.getMessage(), None
    if record.exc_info:
        state["exc_text"] = credentials.masked(logging.Formatter().formatException(record.exc_info))
    elif record.exc_text:
        state["exc_text"] = credentials.masked(record.exc_text)
    if record.stack_info:
        state["stack_info"] = credentials.masked(record.stack_info)
    return state


def _watch_control(control: IO[bytes], cancel: CancelToken) -> None:
    """Follow the parent's log settings; cancel on its word, or when it is gone (its end of the pipe
    closed)."""
    try:
        while True:
            message = _read_frame(control)
            if message in ("cancel", None):
                break
            if isinstance(message, tuple) and message[0] == "log settings":
                _apply_log_settings(*message[1:])
    except (OSError, ValueError, pickle.UnpicklingError):
        pass
    cancel.cancel()


def _retrieve(job: _Job, outbox: _Outbox, cancel: CancelToken) -> None:
    root = logging.getLogger()
    root.handlers[:] = [_Forward(outbox)]
    _apply_log_settings(job.levels, job.identifiers_logged)
    credentials.install_log_masking()
    if job.secret is not None:
        credentials.remember_for_run(job.node.name, job.secret)  # "" reads as no secret stored
    try:
        writer = StudyWriter(job.destination, layout=job.layout)
        retrieval = Retrieval(job.node, job.requests, writer, listener=_ChildListener(outbox, job.requests),
                              cancel=cancel, options=job.options)
        summary = retrieval.run()
        outbox.close("done", summary, retrieval.context_report)
    except PacsPullError as exc:
        outbox.close("error", exc)


def child_main() -> int:
    """The child process: read the job from stdin, retrieve, report through stdout; stdin then carries
    "cancel" (or closes, when the parent is gone). Anything else printed goes nowhere."""
    control = os.fdopen(os.dup(0), "rb")
    events = os.fdopen(os.dup(1), "wb")
    null = os.open(os.devnull, os.O_RDWR)
    os.dup2(null, 0)
    os.dup2(null, 1)  # a stray print() must never land between two frames
    if null > 2:
        os.close(null)
    cancel = CancelToken()
    # It shares the window's process group: Ctrl+C in the window's terminal is the window's to handle
    # (it cancels, which reaches us on stdin), and SIGTERM (logout, kill) cancels like the user would.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, lambda *_: cancel.cancel())
    outbox = None
    try:
        job = _read_frame(control)
        if not isinstance(job, _Job):
            return 2
        outbox = _Outbox(events)
        threading.Thread(target=_watch_control, args=(control, cancel), name="pacspull-control",
                         daemon=True).start()
        _retrieve(job, outbox, cancel)
    except BaseException:  # noqa: BLE001 - reported to the parent, which decides
        if outbox is None:
            raise
        outbox.close("crash", traceback.format_exc())
    finally:
        logging.shutdown()
    try:
        events.close()
    except OSError:
        pass
    return 0

