"""Every reach into pynetdicom's private internals, in one place, each covered by a test.

pynetdicom is pinned to the tested range ``pynetdicom>=3.0.4,<3.1``; tests/core/test_pynetdicom_compat.py
fails loudly if an upgrade moves what is used here: the attributes, and the few lines of pynetdicom
source whose behaviour this module assumes.

The wire format that the fast transport reads and writes itself (command sets parsed and the C-STORE-RSP
encoded with ``struct``, PDVs split out of a P-DATA-TF PDU, the PDU length cap ``pdu_limit``, the
``Spool`` a received data set goes to) reaches into nothing of pynetdicom's: it is in core/dimse_wire.py,
checked against pynetdicom's own encodings by tests/core/test_dimse_wire.py. What stays here is what hooks
it into pynetdicom.

``wake_response_wait`` wakes a thread waiting for a DIMSE message; ``lean_find`` is ``send_c_find``
without the per-response work; ``install_fast_transport`` makes a connected association fast (PacsPull's
EVT_CONN_OPEN handlers call it: core.association for every association, core.get again with a spool
folder, which wins). Its parts, each switchable in ``SETTINGS`` (benchmarks/levers.py measures each):

* **event_driven: no 1 ms polls.** pynetdicom's DUL thread sleeps ``_run_loop_delay`` (1 ms) whenever it
  finds nothing to do, then looks again: up to a millisecond per message each way, and 1,000 wake-ups a
  second on an idle association. Here its idle sleep waits in ``select()`` on the socket and on a
  wake-up socket pair written whenever another thread gives the DUL work (an outgoing primitive, an
  event, a kill); ``idle_poll`` (50 ms) stays as a safety net for the ARTIM timer. The hook is
  ``pynetdicom.dul.time``, replaced by a proxy whose ``sleep`` does this wait on a DUL thread that has
  one and the real ``time.sleep`` anywhere else, so pynetdicom's own loop keeps running unchanged.
* **recv_into, quickack: one receive per PDU, TCP_QUICKACK before each.** pynetdicom reads a PDU in 4 KB
  ``recv`` calls; here one ``recv_into`` a buffer of the PDU's size. On Linux ``TCP_QUICKACK`` is set
  before every receive: against a PACS that leaves Nagle's algorithm on (Debian's dcmtk and Orthanc
  unless ``TCP_NODELAY=1``), each small message otherwise waits for our delayed ACK, about 40 ms.
  Windows and macOS have no per-socket equivalent reachable from Python (Windows' ``TcpAckFrequency``
  is a registry value, and the ``SIO_TCP_SET_ACK_FREQUENCY`` ioctl is not one ``socket.ioctl`` accepts;
  macOS has only the system-wide ``net.inet.tcp.delayed_ack`` sysctl): there it is skipped.
* **quiet_logging: no silent logging work.** pynetdicom binds "standard" logging handlers to every
  association's PDU and DIMSE events; they format a dozen lines per message whether or not anything is
  logged, and the one for a received C-STORE copies the whole data set (``getvalue()``) just to print
  "Present". While pynetdicom's logger drops INFO (unless the user asked for its log) they are unbound.
* **fast_store: lean DIMSE.** For each instance pynetdicom decodes the C-STORE request's command set into
  a pydicom Dataset, copies it onto a primitive attribute by attribute, and builds the response through
  another Dataset that the DUL thread encodes; C-GET and C-FIND responses likewise. Here the command
  sets of C-STORE requests, and of C-GET and C-FIND responses, are parsed with ``struct`` as their PDVs
  arrive and reach the waiting thread as pynetdicom's own primitives through its message queue (the
  EVT_C_STORE handler is still called through ``evt.trigger``); pending C-GET responses, which only
  carry progress counts, are handed on at most every ``pending_interval``; a data set larger than
  ``spool_bytes`` moves from memory to an unnamed temporary file in the spool folder (``Spool``), so a
  2 GB instance costs no memory; the C-STORE response, seven fixed elements, is encoded with ``struct``
  and written to the socket by the handling thread itself, under a lock shared with the DUL's own sends.
  Anything else (other messages, a command set spanning PDVs, chunked-to-file mode, a bound
  EVT_DIMSE_RECV/SENT handler other than pynetdicom's logging ones) takes pynetdicom's own path.
* **fast_pdus: P-DATA without PDU objects.** In data transfer (Sta6) a P-DATA-TF PDU is read with one
  receive and split into PDVs with ``struct`` (what DT-2 does, without pynetdicom's PDU, item and
  primitive objects and their three copies of each fragment). Any other PDU goes to pynetdicom's reader.
* **pump: no thread hand-offs.** pynetdicom's DUL thread reads every PDU and hands each message to the
  thread blocked in ``dimse.get_msg`` (the one iterating ``send_c_get``): a futex wake-up and a GIL
  transfer per message, which on a small VM cost more than the work itself. While a thread waits in
  ``get_msg`` on an association in Sta6 it now reads the P-DATA PDUs itself until a message is there;
  meanwhile the DUL thread leaves the socket alone (its idle wait watches only its wake-up socket), and
  any other PDU (release, abort) is put back for the DUL thread to read and handle, as before. A lock
  keeps one reader at a time. Same handler thread, same order, no hand-off. Off with TLS (decrypted
  bytes that select() cannot see).
* **answer_first: bookkeeping after the answer.** A PACS sends the next C-STORE only once it has our
  answer to this one, so whatever the handler does before answering is wall time. The handler's work
  that cannot change the answer (the manifest line, the write-back hint, progress callbacks) is queued
  with ``answer_later`` and run right after the answer is sent, on the same thread, while the PACS
  prepares the next sub-operation. The file itself is complete under its final name before the answer.
* **quiet_reactor: an idle association costs nothing.** The association's own reactor thread sleeps
  1 ms between looks at its flags whenever no service call has paused it (``time.sleep(0.001)`` in
  ``Association._run_reactor``), 1,000 wake-ups a second while an association is open but idle. Its
  sleep now waits up to ``idle_poll`` for a nudge: a service call pausing it (its checkpoint event is
  cleared or set), kill(), or an ACSE primitive (release, abort) queued for it. It never takes a DIMSE
  message: on a requestor each one answers a send_*() call of ours (see ``_quiet_reactor``).
"""

from __future__ import annotations

import functools
import io
import logging
import queue
import select
import struct
import socket
import sys
import threading
import time
import types
import weakref
from dataclasses import dataclass
from typing import Any, Callable

from pynetdicom import Association, _config, evt
from pynetdicom import _handlers
from pynetdicom import association as _association_module
from pynetdicom import dul as _dul_module
from pynetdicom.dimse_primitives import C_FIND, C_GET, C_STORE
from pynetdicom.pdu_primitives import A_ABORT, P_DATA

from pacspull.core.dimse_wire import (
    C_FIND_RSP,
    C_GET_RSP,
    C_STORE_RQ,
    COMMAND_FIELD,
    DATA_SET_TYPE,
    FIND_RESPONSE_TAGS,
    GET_COUNTS,
    GET_RESPONSE_TAGS,
    NO_DATA_SET,
    PDU_UNLIMITED_CAP,
    PENDING,
    STORE_REQUEST_TAGS,
    Spool,
    encode_store_response,
    p_data_tf,
    parse_command_set,
    pdu_limit,
    split_pdvs,
    status_code,
)

try:
    import ssl
except ImportError:  # pragma: no cover - Python without OpenSSL
    ssl = None  # type: ignore[assignment]

TCP_QUICKACK: int | None = getattr(socket, "TCP_QUICKACK", None) if sys.platform.startswith("linux") else None

# The attribute our DUL threads carry: their idle wait (see _DulTime.sleep).
_WAIT_ATTR = "_pacspull_idle_wait"


@dataclass
class FastTransportSettings:
    """What ``install_fast_transport`` turns on (all of it by default)."""

    event_driven: bool = True  # DUL idle wait in select() instead of 1 ms sleeps
    recv_into: bool = True  # one recv_into per PDU instead of 4 KB recv calls
    quickack: bool = True  # TCP_QUICKACK before every receive (Linux)
    quiet_logging: bool = True  # unbind pynetdicom's standard log handlers while its log is off
    fast_store: bool = True  # C-STORE requests parsed and answered with struct, response sent directly
    fast_pdus: bool = True  # P-DATA-TF PDUs read and split by us, not through pynetdicom's PDU objects
    pending_interval: float = 0.1  # pending C-GET responses handed on at most this often (fast_store)
    pump: bool = True  # the thread waiting for a DIMSE message reads the socket itself (fast_store)
    quiet_reactor: bool = True  # the association reactor waits for a nudge instead of 1 ms sleeps
    spool_bytes: int = 32 << 20  # a received data set larger than this moves to a temp file (fast_store)
    answer_first: bool = True  # a C-STORE handler's bookkeeping runs after its answer is sent (fast_store)
    idle_poll: float = 0.05  # longest idle wait: a safety net only, every wake-up is signalled


SETTINGS = FastTransportSettings()


def wake_response_wait(assoc: Association) -> None:
    """Wake a thread blocked waiting for the next DIMSE message of ``assoc``.

    After a local A-ABORT pynetdicom queues nothing for the thread iterating ``send_c_find`` /
    ``send_c_get`` (it does on a peer abort), so that thread would sleep out the whole DIMSE timeout.
    An empty item is what pynetdicom itself queues on a peer abort: the iterator then ends at once.
    """
    assoc.dimse.msg_queue.put((None, None))


# --------------------------------------------------------------------------------------------------
# event-driven DUL reactor


class _DulTime(types.ModuleType):
    """What ``pynetdicom.dul`` sees as the ``time`` module: the real one, except that ``sleep`` on a DUL
    thread with a fast transport waits for work instead of sleeping a fixed time."""

    def __init__(self, real: types.ModuleType) -> None:
        super().__init__("time")
        self._real = real

    def __getattr__(self, name: str) -> Any:
        return getattr(self._real, name)

    def sleep(self, seconds: float) -> None:
        wait = getattr(threading.current_thread(), _WAIT_ATTR, None)
        if wait is None:
            self._real.sleep(seconds)
        else:
            wait(seconds)


def _install_dul_time() -> None:
    if not isinstance(_dul_module.time, _DulTime):
        _dul_module.time = _DulTime(_dul_module.time)  # type: ignore[attr-defined]


class _NudgedEvent(threading.Event):
    """``Association._reactor_checkpoint``: an Event that also nudges the reactor when set or cleared
    (a service call pausing the reactor must not wait out the reactor's longer idle wait)."""

    def __init__(self, nudge: Callable[[], None], is_set: bool) -> None:
        super().__init__()
        self._nudge = nudge
        if is_set:
            super().set()

    def set(self) -> None:
        super().set()
        self._nudge()

    def clear(self) -> None:
        super().clear()
        self._nudge()


def _quiet_reactor(assoc: Association) -> None:
    """The association reactor's 1 ms poll becomes a wait for a nudge (see the module doc)."""
    nudged = threading.Event()

    def wait(seconds: float) -> None:
        if seconds != _REACTOR_POLL:
            time.sleep(seconds)  # another sleep of this thread (kill() waiting for the DUL): as asked
            return
        nudged.wait(SETTINGS.idle_poll)
        nudged.clear()

    assoc._reactor_checkpoint = _NudgedEvent(nudged.set, assoc._reactor_checkpoint.is_set())
    # kill() sets the checkpoint (a nudge) *before* it sets _kill: nudge again once _kill is set, or the
    # reactor may look too early and then sleep out idle_poll, outliving the association by that much.
    assoc.kill = _then_nudge(assoc.kill, nudged.set)  # type: ignore[method-assign]
    # The reactor of a requestor never takes a DIMSE message: each one is an answer that a send_*() call
    # of ours is waiting for. pynetdicom pauses the reactor during send_*(), but its pause check reads a
    # stale _is_paused right after the previous call resumed it, so the reactor could take the answer to
    # the next request (a C-FIND's final response after a C-ECHO, 2 in 300 under load) and the caller
    # waited out its timeout.
    get_msg = assoc.dimse.get_msg

    def get_msg_unless_reactor(block: bool = False) -> Any:
        if threading.current_thread() is assoc:
            return None, None
        return get_msg(block)

    assoc.dimse.get_msg = get_msg_unless_reactor  # type: ignore[method-assign]
    assoc.dul.to_user_queue.put = _then_nudge(assoc.dul.to_user_queue.put, nudged.set)  # type: ignore[method-assign]
    setattr(assoc, _WAIT_ATTR, wait)  # the Association object is the reactor thread
    if not isinstance(_association_module.time, _DulTime):
        _association_module.time = _DulTime(_association_module.time)  # type: ignore[attr-defined]


_REACTOR_POLL = 0.001  # the sleep in Association._run_reactor's loop


def _then_nudge(method: Callable[..., Any], nudge: Callable[[], None]) -> Callable[..., Any]:
    @functools.wraps(method)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        result = method(*args, **kwargs)
        nudge()
        return result

    return wrapper


class _Waker:
    """A socket pair: any thread writes a byte to wake a DUL thread waiting in select()."""

    def __init__(self) -> None:
        self.reader, self.writer = socket.socketpair()
        self.reader.setblocking(False)
        self.writer.setblocking(False)

    def wake(self) -> None:
        try:
            self.writer.send(b"\0")
        except (BlockingIOError, OSError):
            pass  # already full of wake-ups, or closed: either way nothing more to do

    def drain(self) -> None:
        try:
            while self.reader.recv(4096):
                pass
        except (BlockingIOError, OSError):
            pass

    def close(self) -> None:
        self.reader.close()
        self.writer.close()


def _then_wake(method: Callable[..., Any], waker: _Waker, owner: threading.Thread) -> Callable[..., Any]:
    """``method``, then a wake-up unless called on ``owner`` (the DUL thread itself, which is awake)."""

    @functools.wraps(method)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        result = method(*args, **kwargs)
        if threading.current_thread() is not owner:
            waker.wake()
        return result

    return wrapper


def _idle_wait(asock: Any, waker: _Waker, fallback: float) -> None:
    """Wait until the peer sent something, another thread queued work, or ``idle_poll`` passed."""
    watch: list[Any] = [waker.reader]
    sock = asock.socket
    pump = getattr(asock, "pump", None)
    if pump is not None and pump.active:
        sock = None  # another thread reads the socket now: wait for a wake-up only
    elif getattr(asock, "unread_pending", None) is not None and asock.unread_pending():
        return  # bytes put back for the DUL thread: no waiting
    if sock is not None:
        try:
            if ssl is not None and isinstance(sock, ssl.SSLSocket) and sock.pending():
                return  # decrypted bytes already buffered: select() would not see them
            if sock.fileno() >= 0:
                watch.append(sock)
        except (OSError, ValueError):
            pass
    try:
        ready, _, _ = select.select(watch, [], [], SETTINGS.idle_poll)
    except (OSError, ValueError):  # closed under us: the loop notices on its next pass
        time.sleep(fallback)
        return
    if waker.reader in ready:
        waker.drain()


def _event_driven(assoc: Association) -> None:
    dul = assoc.dul
    asock = dul.socket
    waker = _Waker()
    # Anything another thread hands the DUL wakes it: outgoing primitives, events, a kill.
    dul.to_provider_queue.put = _then_wake(dul.to_provider_queue.put, waker, dul)  # type: ignore[method-assign]
    dul.event_queue.put = _then_wake(dul.event_queue.put, waker, dul)  # type: ignore[method-assign]
    dul.kill_dul = _then_wake(dul.kill_dul, waker, dul)  # type: ignore[method-assign]
    original_stop = dul.stop_dul

    def stop_dul() -> bool:
        # pynetdicom sets the kill flag and then waits for the thread: set it first and wake the thread.
        if dul.state_machine.current_state == "Sta1":
            dul._kill_thread = True
            waker.wake()
        return original_stop()

    dul.stop_dul = stop_dul  # type: ignore[method-assign]
    setattr(dul, _WAIT_ATTR, functools.partial(_idle_wait, asock, waker))
    dul._pacspull_waker = waker
    weakref.finalize(dul, waker.close)
    _install_dul_time()


# --------------------------------------------------------------------------------------------------
# lean C-STORE sub-operations


class _StoreReceiver:
    """``DIMSEServiceProvider.receive_primitive`` for C-STORE requests and C-GET responses without a
    data set; pynetdicom's own for everything else.

    Pending C-GET responses only carry progress counts; they are handed on at most every
    ``pending_interval`` seconds (the final response always), which spares the retrieving thread
    pynetdicom's per-response work for each instance.
    """

    def __init__(self, assoc: Association) -> None:
        self.assoc = assoc
        self.dimse = assoc.dimse
        self.original = assoc.dimse.receive_primitive
        self.current: tuple[int, dict[int, Any], io.BytesIO] | None = None
        self.last_pending = 0.0
        self.spool_folder: str | None = None

    def ours(self) -> bool:
        """Whether nothing but us (and pynetdicom's unbound-able logging) needs the DIMSE messages."""
        handlers = self.assoc.get_handlers(evt.EVT_DIMSE_RECV)
        return (not _config.STORE_RECV_CHUNKED_DATASET
                and all(h is _handlers.standard_dimse_recv_handler for h, _ in handlers))

    def __call__(self, primitive: Any) -> None:
        """DT-2's call: a P-DATA primitive."""
        if self.current is None and (self.dimse.message is not None or not self.ours()):
            return self.original(primitive)
        if not self.feed(primitive.presentation_data_value_list):
            return self.original(primitive)
        return None

    def feed(self, pdvs: list[Any]) -> bool:
        """Take the PDVs ([context ID, bytes or memoryview], ...) of one P-DATA; False: not ours (nothing
        consumed, give them to pynetdicom)."""
        if self.current is None:
            if not pdvs or self.dimse.message is not None:
                return False
            context_id, first = pdvs[0]
            if first[0] & 0x03 != 0x03:  # not one whole command set in the first PDV
                return False
            fields = parse_command_set(memoryview(first)[1:])
            if fields is None:
                return False
            command = fields.get(COMMAND_FIELD)
            has_data = fields.get(DATA_SET_TYPE, NO_DATA_SET) != NO_DATA_SET
            if (command == C_STORE_RQ and has_data and set(fields) <= STORE_REQUEST_TAGS
                    and {0x0002, 0x0110, 0x1000} <= set(fields)):
                self.current = (context_id, fields, Spool(self.spool_folder, SETTINGS.spool_bytes))
            elif (command == C_GET_RSP and not has_data and set(fields) <= GET_RESPONSE_TAGS
                  and {0x0120, 0x0900} <= set(fields) and len(pdvs) == 1):
                self._get_response(context_id, fields)
                return True
            elif command == C_FIND_RSP and set(fields) <= FIND_RESPONSE_TAGS and {0x0120, 0x0900} <= set(fields):
                if not has_data:
                    if len(pdvs) != 1:
                        return False
                    self._find_response(context_id, fields, None)
                    return True
                self.current = (context_id, fields, io.BytesIO())
            else:
                return False
            pdvs = pdvs[1:]
        for index, (_context_id, data) in enumerate(pdvs):
            context_id, fields, buffer = self.current
            if data[0] & 0x01:  # a command fragment inside a data set: what pynetdicom calls invalid
                self.current = None
                self.dimse.dul.event_queue.put("Evt19")
                return True
            buffer.write(memoryview(data)[1:])
            if data[0] & 0x02:  # the data set's last fragment
                self.current = None
                if fields[COMMAND_FIELD] == C_FIND_RSP:
                    self._find_response(context_id, fields, buffer)
                else:
                    self._deliver(context_id, fields, buffer)
                rest = pdvs[index + 1:]
                # (no peer does this, but it is allowed: the next message, in the same PDU)
                if rest and not self.feed(rest):
                    self.original_pdvs(rest)
                return True
        return True

    def original_pdvs(self, pdvs: list[Any]) -> None:
        """Hand PDVs to pynetdicom's own receive_primitive, as a P-DATA primitive."""
        primitive = P_DATA()
        primitive.presentation_data_value_list = [[context_id, bytes(data)] for context_id, data in pdvs]
        self.original(primitive)

    def _deliver(self, context_id: int, fields: dict[int, Any], buffer: io.BytesIO) -> None:
        request = C_STORE()
        request.MessageID = fields[0x0110]
        request.AffectedSOPClassUID = fields[0x0002]
        request.AffectedSOPInstanceUID = fields[0x1000]
        request.Priority = fields.get(0x0700, 0)
        if 0x1030 in fields:
            request.MoveOriginatorApplicationEntityTitle = fields[0x1030]
        if 0x1031 in fields:
            request.MoveOriginatorMessageID = fields[0x1031]
        request.DataSet = buffer
        request._context_id = context_id
        self.dimse.msg_queue.put((context_id, request))

    def _find_response(self, context_id: int, fields: dict[int, Any], identifier: io.BytesIO | None) -> None:
        response = C_FIND()  # (its optional Affected SOP Class UID is not kept: nobody reads it)
        response.MessageIDBeingRespondedTo = fields[0x0120]
        response.Status = fields[0x0900]
        response.Identifier = identifier
        response._context_id = context_id
        self.dimse.msg_queue.put((context_id, response))

    def _get_response(self, context_id: int, fields: dict[int, Any]) -> None:
        status = fields[0x0900]
        if status in PENDING:
            now = time.monotonic()
            if now - self.last_pending < SETTINGS.pending_interval:
                return  # progress only, and the last one is recent enough
            self.last_pending = now
        response = C_GET()  # (its optional Affected SOP Class UID is not kept: nobody reads it)
        response.MessageIDBeingRespondedTo = fields[0x0120]
        response.Status = status
        for tag, keyword in GET_COUNTS:
            if tag in fields:
                setattr(response, keyword, fields[tag])
        response._context_id = context_id
        self.dimse.msg_queue.put((context_id, response))


class _StoreResponder:
    """``Association._c_store_scp``: the handler through evt.trigger as before, the answer sent at once."""

    def __init__(self, assoc: Association) -> None:
        self.assoc = assoc
        self.original = assoc._c_store_scp
        self.contexts: dict[tuple[str, int | None], Any] = {}
        self.deferred: list[Callable[[], None]] | None = None  # while a handler runs (answer_first)
        asock = assoc.dul.socket
        self.send_lock = threading.Lock()
        original_send = asock.send

        def locked_send(bytestream: bytes) -> None:
            with self.send_lock:
                original_send(bytestream)

        asock.send = locked_send  # the DUL's own sends take the same lock
        self.asock = asock

    def _context(self, sop_class: str, context_id: int | None) -> Any:
        key = (sop_class, context_id)
        if key not in self.contexts:
            try:
                self.contexts[key] = self.assoc._get_valid_context(sop_class, "", "scp", context_id=context_id)
            except ValueError:
                self.contexts[key] = None
        return self.contexts[key]

    def __call__(self, request: Any) -> None:
        assoc = self.assoc
        sent = assoc.get_handlers(evt.EVT_DIMSE_SENT)
        context = self._context(str(request.AffectedSOPClassUID), request._context_id)
        if context is None or not all(h is _handlers.standard_dimse_sent_handler for h, _ in sent):
            return self.original(request)
        self.deferred = [] if SETTINGS.answer_first else None
        try:
            status = evt.trigger(assoc, evt.EVT_C_STORE, {"request": request, "context": context.as_tuple})
        except Exception:  # noqa: BLE001 - what pynetdicom answers when the handler raises
            logging.getLogger("pynetdicom").exception("Exception in the handler bound to 'evt.EVT_C_STORE'")
            status = 0xC211
        finally:
            deferred, self.deferred = self.deferred, None
        try:
            self._answer(context.context_id, request, status_code(status))
        finally:
            stop: BaseException | None = None
            for work in deferred or ():  # all of it, whatever happens (each piece may hold a descriptor)
                try:
                    work()
                except Exception:  # noqa: BLE001 - the answer is out; a failure here is only logged
                    logging.getLogger("pacspull").exception("Error after answering a C-STORE")
                except BaseException as exc:  # noqa: BLE001 - re-raised once the rest has run
                    stop = stop or exc
            if stop is not None:
                raise stop
        return None

    def later(self, work: Callable[[], None]) -> None:
        """Run ``work`` once the answer to the C-STORE being handled is sent (``answer_later``)."""
        if self.deferred is None:
            work()
        else:
            self.deferred.append(work)

    def _answer(self, context_id: int, request: Any, status: int) -> None:
        assoc = self.assoc
        pdu = p_data_tf(context_id, encode_store_response(
            request.MessageID, str(request.AffectedSOPClassUID), str(request.AffectedSOPInstanceUID), status))
        sock = self.asock.socket
        if sock is None or not assoc.is_established or assoc.dul.state_machine.current_state != "Sta6":
            return  # released or aborted meanwhile: nothing may be sent any more
        try:
            with self.send_lock:
                sock.sendall(pdu)
        except OSError:
            assoc.dul.event_queue.put("Evt17")  # what AssociationSocket.send reports: connection closed


class _PduReader:
    """``DULServiceProvider._read_pdu_data`` for P-DATA-TF PDUs in state Sta6 (data transfer): read with
    one receive, split into PDVs with ``struct``, given straight to the _StoreReceiver (what DT-2 does,
    without building pynetdicom's PDU and primitive objects and copying each fragment three times).
    Any other PDU, any other state, or a bound EVT_DATA_RECV/EVT_PDU_RECV handler: pynetdicom's own."""

    def __init__(self, assoc: Association, receiver: _StoreReceiver) -> None:
        self.assoc = assoc
        self.dul = assoc.dul
        self.receiver = receiver
        self.original = assoc.dul._read_pdu_data
        self.asock = assoc.dul.socket
        self.handed_over = False  # a PDU left for the DUL thread (see _hand_over)

    def _eligible_handlers(self) -> bool:
        return (not self.assoc.get_handlers(evt.EVT_DATA_RECV)
                and all(h is _handlers.standard_pdu_recv_handler
                        for h, _ in self.assoc.get_handlers(evt.EVT_PDU_RECV))
                and self.receiver.ours())

    def _eligible(self) -> bool:
        return (self.dul.state_machine.current_state == "Sta6" and self.dul.event_queue.empty()
                and self._eligible_handlers())

    def __call__(self) -> None:
        if not self._eligible():
            return self.original()
        asock = self.asock
        try:
            head = asock.recv(6)
        except (OSError, TimeoutError):
            return self._closed()
        if len(head) < 6 or head[0] != 0x04:
            asock.unread(head)  # not a complete P-DATA-TF header: pynetdicom reads (and judges) it
            return self._hand_over()
        length = struct.unpack_from(">I", head, 2)[0]
        try:
            body = asock.recv(length)
        except (OSError, TimeoutError):
            return self._closed()
        if len(body) != length:
            return self._closed()
        pdvs = split_pdvs(body)
        if pdvs is None:  # malformed: let pynetdicom decode it and say so
            asock.unread(bytes(head) + bytes(body))
            return self._hand_over()
        if not self.receiver.feed(pdvs):
            self.receiver.original_pdvs(pdvs)
        return None

    def _hand_over(self) -> None:
        """pynetdicom's own reading of the PDU just put back. On the DUL thread: now. On a pumping thread:
        later, by the DUL thread (pynetdicom queues a PDU's event before the PDU itself, which only works
        when the thread that reads is the one that handles the event)."""
        if threading.current_thread() is self.dul:
            return self.original()
        self.handed_over = True
        return None

    def _closed(self) -> None:
        LOGGER.error("Connection closed before the entire PDU was received")
        self.dul.event_queue.put("Evt17")


LOGGER = logging.getLogger("pynetdicom.dul")


class _Pump:
    """``dimse.get_msg`` that, while nothing is queued, reads the association's socket on the calling
    thread (see the module doc); and the DUL side of the arrangement."""

    def __init__(self, assoc: Association, reader: _PduReader) -> None:
        self.assoc = assoc
        self.dul = assoc.dul
        self.dimse = assoc.dimse
        self.reader = reader
        self.asock = assoc.dul.socket
        self.active = False
        self.pumper: threading.Thread | None = None
        self.read_lock = threading.Lock()  # held while a PDU is read, by either thread
        self.waker = _Waker()
        weakref.finalize(self, self.waker.close)
        self.original_get_msg = assoc.dimse.get_msg
        self.original_transport_event = assoc.dul._is_transport_event
        queue_put = assoc.dimse.msg_queue.put

        def put(item: Any, *args: Any, **kwargs: Any) -> None:
            queue_put(item, *args, **kwargs)
            if self.active and threading.current_thread() is not self.pumper:
                self.waker.wake()  # an abort, a cancel wake-up: the pumping thread must look

        assoc.dimse.msg_queue.put = put  # type: ignore[method-assign]

    def transport_event(self) -> bool:
        """The DUL's ``_is_transport_event``: leave the socket to a pumping thread; read what a pumping
        thread put back for it (select() cannot see those bytes)."""
        if self.active or not self.read_lock.acquire(blocking=False):
            return False
        try:
            if self.asock.unread_pending() and self.dul.state_machine.current_state != "Sta13":
                self.dul._read_pdu_data()
                return True
            return bool(self.original_transport_event())
        finally:
            self.read_lock.release()

    def _can_pump(self) -> bool:
        return (self.asock.socket is not None and self.dul.state_machine.current_state == "Sta6"
                and self.reader._eligible_handlers() and self.dul.is_alive())

    def get_msg(self, block: bool = False) -> Any:
        if not block:
            return self.original_get_msg(block)
        msg_queue = self.dimse.msg_queue
        timeout = self.dimse.dimse_timeout
        deadline = None if timeout is None else time.monotonic() + timeout
        self.pumper = threading.current_thread()
        try:
            while True:
                # Active first, then look at the queue: a message the DUL thread queues after this either
                # is seen by get_nowait() or wakes the select() below (its put() sees ``active``).
                self.active = self._can_pump()
                try:
                    return msg_queue.get_nowait()
                except queue.Empty:
                    pass
                remaining = None if deadline is None else deadline - time.monotonic()
                if remaining is not None and remaining <= 0:
                    return None, None  # what pynetdicom's get_msg answers after the DIMSE timeout
                if not self.active:
                    self._stop()
                    return self._wait_queue(remaining)
                sock = self.asock.socket
                try:
                    ready, _, _ = select.select([sock, self.waker.reader], [], [],
                                                SETTINGS.idle_poll if remaining is None
                                                else min(remaining, SETTINGS.idle_poll))
                except (OSError, ValueError, TypeError):  # closed under us (None after an abort)
                    self._stop()
                    continue
                if self.waker.reader in ready:
                    self.waker.drain()
                if sock in ready:
                    with self.read_lock:
                        # The DUL thread may have read what select() saw before we got the lock: look again,
                        # or a blocking read would wait for a PDU the peer sends only after our answer.
                        try:
                            still = (msg_queue.empty() and self.dul.state_machine.current_state == "Sta6"
                                     and self.asock.socket is sock and select.select([sock], [], [], 0)[0])
                        except (OSError, ValueError):  # closed meanwhile (an abort): the loop sees it
                            still = False
                        if still:
                            self.reader()
                            self.dul._idle_timer.restart()
                if self.reader.handed_over:  # not a P-DATA PDU: the DUL thread reads and handles it
                    self.reader.handed_over = False
                    self._stop()
                    waker = getattr(self.dul, "_pacspull_waker", None)
                    if waker is not None:
                        waker.wake()
                    remaining = None if deadline is None else max(0.0, deadline - time.monotonic())
                    try:
                        return msg_queue.get(block=True, timeout=remaining)
                    except queue.Empty:
                        return None, None
        finally:
            self._stop()

    def _wait_queue(self, remaining: float | None) -> Any:
        """Wait for a queued message, but give up at once when the association is gone: a DUL that
        stopped after an abort queues nothing more, and waiting out the DIMSE timeout would report a
        peer's abort as a 60 s stall."""
        deadline = None if remaining is None else time.monotonic() + remaining
        while True:
            step = 0.2 if deadline is None else min(0.2, deadline - time.monotonic())
            if step <= 0:
                return None, None
            try:
                return self.dimse.msg_queue.get(block=True, timeout=step)
            except queue.Empty:
                if not self.dul.is_alive() or self.assoc.is_aborted:
                    return None, None

    def _stop(self) -> None:
        # The DUL thread watches the socket again from its next idle wait (at most ``idle_poll`` away; any
        # work another thread gives it wakes it at once). Not waking it here saves a wake-up per message.
        self.active = False


def _fast_store(assoc: Association, spool_folder: str | None = None) -> None:
    receiver = _StoreReceiver(assoc)
    receiver.spool_folder = spool_folder
    assoc.dimse.receive_primitive = receiver  # type: ignore[method-assign]
    assoc._c_store_scp = _StoreResponder(assoc)  # type: ignore[method-assign]
    if SETTINGS.fast_pdus and getattr(assoc.dul.socket, "unread", None) is not None:
        reader = _PduReader(assoc, receiver)
        assoc.dul._read_pdu_data = reader  # type: ignore[method-assign]
        tls = ssl is not None and isinstance(assoc.dul.socket.socket, ssl.SSLSocket)
        if SETTINGS.pump and SETTINGS.event_driven and not tls:  # (TLS buffers what select() cannot see)
            pump = _Pump(assoc, reader)
            assoc.dul.socket.pump = pump
            assoc.dul._is_transport_event = pump.transport_event  # type: ignore[method-assign]
            assoc.dimse.get_msg = pump.get_msg  # type: ignore[method-assign]


def answer_later(assoc: Association) -> Callable[[Callable[[], None]], None] | None:
    """Inside an EVT_C_STORE handler: a function that schedules work (a no-argument callable) to run
    right after the handler's answer has been sent, on the same thread, before the next message is read;
    or None when the answer is pynetdicom's to send (then do the work before returning).

    While the PACS prepares the next sub-operation, which it sends only once it has our answer, the
    handling thread is otherwise idle: bookkeeping that does not change the answer (a manifest line, a
    write-back hint, progress callbacks) costs no wall time there. Work that fails is logged."""
    responder = getattr(assoc, "_c_store_scp", None)
    if isinstance(responder, _StoreResponder) and responder.deferred is not None:
        return responder.later
    return None


def lean_find(assoc: Association, identifier: Any, query_model: str, msg_id: int) -> Any:
    """``assoc.send_c_find``, yielding ``(status code or None, raw identifier stream or None, transfer
    syntax)``: pynetdicom's request, reactor pause and no-response handling, but none of the Dataset it
    builds per response for the status, nor the identifier decode and the log lines. For a listing of
    thousands of instances (what a retrieve plan does when the PACS does not say which SOP classes a
    study holds) that is most of the time. ``None`` as status: no response (timeout, abort).
    """
    def lean(transfer_syntax: Any, _query_model: Any) -> Any:
        ts = str(transfer_syntax)
        while True:
            _context_id, rsp = assoc.dimse.get_msg(block=True)
            if rsp is None:
                assoc._handle_no_response()
                assoc._reactor_checkpoint.set()
                yield None, None, ts
                return
            if not isinstance(rsp, C_FIND) or not rsp.is_valid_response:
                logging.getLogger("pynetdicom").error("Received an unexpected or invalid C-FIND response")
                assoc.abort()
                assoc._reactor_checkpoint.set()
                yield None, None, ts
                return
            if rsp.Status in PENDING:
                yield rsp.Status, rsp.Identifier, ts
                continue
            assoc._reactor_checkpoint.set()
            yield rsp.Status, None, ts
            return

    assoc._wrap_find_responses = lean  # type: ignore[method-assign]
    try:
        return assoc.send_c_find(identifier, query_model, msg_id=msg_id)
    finally:
        del assoc._wrap_find_responses  # pynetdicom's own again for anyone else


# --------------------------------------------------------------------------------------------------
# logging

# pynetdicom's "standard" notification handlers (Association._bind_defaults), by event.
_STANDARD_LOG_HANDLERS = (
    (evt.EVT_DIMSE_RECV, _handlers.standard_dimse_recv_handler),
    (evt.EVT_DIMSE_SENT, _handlers.standard_dimse_sent_handler),
    (evt.EVT_PDU_RECV, _handlers.standard_pdu_recv_handler),
    (evt.EVT_PDU_SENT, _handlers.standard_pdu_sent_handler),
)


def _unbind_silent_log_handlers(assoc: Association) -> bool:
    """Unbind pynetdicom's standard log handlers if everything they log would be dropped."""
    if logging.getLogger("pynetdicom").isEnabledFor(logging.INFO):
        return False
    for event, handler in _STANDARD_LOG_HANDLERS:
        assoc.unbind(event, handler)
    return True


# --------------------------------------------------------------------------------------------------
# receiving


_REFUSED_ATTR = "_pacspull_refused_pdu"


def refused_pdu(assoc: Association) -> tuple[int, int] | None:
    """(declared length, our limit) if the fast transport aborted ``assoc`` over an oversized PDU."""
    return getattr(assoc, _REFUSED_ATTR, None)


_PEER_ABORT_ATTR = "_pacspull_peer_aborted"


def note_acse_primitive(assoc: Association, primitive: Any) -> None:
    """EVT_ACSE_RECV: remember an A-ABORT from the peer (pynetdicom consumes it before anyone can look)."""
    if isinstance(primitive, A_ABORT):
        setattr(assoc, _PEER_ABORT_ATTR, True)


def is_open(assoc: Association) -> bool:
    """Whether ``assoc`` can still carry messages: established, and its DUL still in data transfer (Sta6).

    ``is_established`` alone lags: it turns False only once the association's reactor thread has seen
    the abort (ours on a malformed PDU, or the peer's), and a release sent meanwhile would wait out the
    whole ACSE timeout for an answer that cannot come.
    """
    return bool(assoc.is_established) and assoc.dul.state_machine.current_state == "Sta6"


def how_it_ended(assoc: Association) -> str:
    """Who ended ``assoc``: "ours" (we aborted it: a DIMSE timeout, a malformed or unexpected answer, an
    oversized PDU), "peer" (the PACS sent A-ABORT), "lost" (the connection closed without one), or
    "open" when it has not ended."""
    if refused_pdu(assoc) is not None or assoc._sent_abort:
        return "ours"
    if getattr(assoc, _PEER_ABORT_ATTR, False) or assoc.acse.is_aborted("a-abort"):
        return "peer"
    if is_open(assoc):
        return "open"
    return "lost"


def _fast_recv(asock: Any, quickack: bool, limit: int = PDU_UNLIMITED_CAP,
               refused: Callable[[int, int], None] | None = None) -> Callable[[int], bytearray]:
    """``AssociationSocket.recv``: read exactly ``nr_bytes`` (fewer only if the peer closed). Bytes put
    back with ``asock.unread`` (a PDU header read by the fast PDU path) are returned first.

    A request beyond ``limit`` (a PDU length the peer declared, e.g. 4 GiB) is refused as a closed
    connection before anything is allocated: pynetdicom then aborts the association. ``refused(length,
    limit)`` is told first, so that the error the user sees can say why.
    """
    pushed = bytearray()

    def unread(data: bytes | bytearray) -> None:
        pushed[:0] = data

    def recv(nr_bytes: int) -> bytearray:
        if nr_bytes > limit:
            LOGGER.error("The peer declared a PDU of %d bytes, more than the %d we accept: aborting",
                         nr_bytes, limit)
            if refused is not None:
                refused(nr_bytes, limit)
            raise OSError(f"PDU length {nr_bytes} exceeds the maximum {limit}")
        sock = asock.socket
        buffer = bytearray(nr_bytes)
        got = 0
        if pushed:
            got = min(nr_bytes, len(pushed))
            buffer[:got] = pushed[:got]
            del pushed[:got]
        with memoryview(buffer) as view:
            while got < nr_bytes:
                if quickack:
                    try:
                        sock.setsockopt(socket.IPPROTO_TCP, TCP_QUICKACK, 1)
                    except OSError:
                        pass
                count = sock.recv_into(view[got:])
                if not count:
                    break
                got += count
        if got < nr_bytes:
            del buffer[got:]
        return buffer

    asock.unread = unread
    asock.unread_pending = lambda: len(pushed)
    return recv


def install_fast_transport(assoc: Association, *, spool_folder: str | None = None) -> tuple[str, ...]:
    """Put the fast transport (see the module doc) on a just-connected association; returns what is on.

    Call it from an EVT_CONN_OPEN handler: the socket exists and no PDU has been read yet. Received data
    sets larger than ``SETTINGS.spool_bytes`` go to an unnamed temporary file in ``spool_folder`` (the
    system's temporary folder when None).
    """
    asock = assoc.dul.socket
    if asock is None or asock.socket is None:
        return ()
    if getattr(assoc, "_pacspull_fast", None) is not None:
        return assoc._pacspull_fast  # installed already (another EVT_CONN_OPEN handler did it)
    enabled: list[str] = []
    quickack = SETTINGS.quickack and TCP_QUICKACK is not None
    if SETTINGS.recv_into or quickack:
        limit = pdu_limit(getattr(assoc.requestor, "maximum_length", None))
        asock.recv = _fast_recv(asock, quickack, limit,  # type: ignore[method-assign]
                                lambda length, most: setattr(assoc, _REFUSED_ATTR, (length, most)))
        enabled.append("recv_into")
        if quickack:
            enabled.append("quickack")
    if SETTINGS.event_driven:
        _event_driven(assoc)
        enabled.append("event_driven")
    if SETTINGS.quiet_logging and _unbind_silent_log_handlers(assoc):
        enabled.append("quiet_logging")
    if SETTINGS.fast_store:
        _fast_store(assoc, spool_folder)
        enabled.append("fast_store")
    if SETTINGS.quiet_reactor and assoc.is_requestor:
        _quiet_reactor(assoc)
        enabled.append("quiet_reactor")
    assoc._pacspull_fast = tuple(enabled)
    return assoc._pacspull_fast
