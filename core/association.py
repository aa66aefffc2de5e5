"""Open and close associations for a node, and say in plain words why one failed.

``open_association`` raises ``ConnectionFailed`` (resolve / TCP connect / timeout) or
``AssociationRejected`` (A-ASSOCIATE-RJ decoded, abort, no acceptable context); on success the caller
owns the association and must release it (``associated`` does that as a context manager).
"""

from __future__ import annotations

import errno
import logging
import socket
import threading
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

from pydicom.uid import UID, ExplicitVRLittleEndian, ImplicitVRLittleEndian
from pynetdicom import AE, Association, build_context, evt
from pynetdicom.pdu_primitives import UserIdentityNegotiation
from pynetdicom.presentation import PresentationContext

from pacspull.core._pynetdicom_compat import (
    how_it_ended,
    install_fast_transport,
    is_open,
    note_acse_primitive,
    refused_pdu,
    wake_response_wait,
)
from pacspull.core import credentials, tls
from pacspull.core.errors import AssociationRejected, ConnectionFailed, InvalidInput, PacsPullError, ServiceFailed
from pacspull.core.nodes import IDENTITY_TYPES, Node
from pacspull.core.privacy import enable_identifier_logging  # noqa: F401 - re-exported for callers
from pacspull.core.progress import CancelToken

LOG = logging.getLogger(__name__)

# Privacy: pynetdicom logs every C-FIND/C-GET identifier (patient names, IDs) by default; core.privacy
# turns that off on import, and debug logging that wants them opts in explicitly.

UNCOMPRESSED = [ExplicitVRLittleEndian, ImplicitVRLittleEndian]

# PS3.8 9.3.3.2: presentation context results
_CONTEXT_RESULT = {
    0x00: "accepted",
    0x01: "rejected by the PACS (user rejection)",
    0x02: "rejected, no reason given (provider rejection)",
    0x03: "rejected: the PACS does not support this SOP class (abstract syntax not supported)",
    0x04: "rejected: the PACS supports none of the proposed transfer syntaxes",
}


def uid_name(uid: str) -> str:
    """The registered name of a UID, or the UID itself."""
    name = UID(uid).name
    return name if name and name != uid else uid


@dataclass(frozen=True)
class ContextResult:
    """One proposed presentation context and what the PACS said about it."""

    abstract_syntax: str
    accepted: bool
    reason: str
    transfer_syntax: str | None = None
    scp_role: bool | None = None

    @property
    def name(self) -> str:
        """The SOP class name."""
        return uid_name(self.abstract_syntax)

    def describe(self) -> str:
        """One line for logs, diagnose output and the GUI."""
        if self.accepted:
            ts = uid_name(self.transfer_syntax or "")
            role = "" if self.scp_role is None else (", SCP role accepted" if self.scp_role else ", SCP role NOT accepted")
            return f"{self.name}: accepted with {ts}{role}"
        return f"{self.name}: {self.reason}"

    def to_json(self) -> dict[str, Any]:
        """A JSON-ready dict."""
        return {
            "abstract_syntax": self.abstract_syntax,
            "name": self.name,
            "accepted": self.accepted,
            "reason": self.reason,
            "transfer_syntax": self.transfer_syntax,
            "scp_role": self.scp_role,
        }


def context_results(assoc: Association, *, scp_roles: Sequence[str] = ()) -> list[ContextResult]:
    """Decode the accepted and rejected contexts of a negotiated association.

    ``scp_roles`` lists abstract syntaxes for which we asked for the SCP role (C-GET storage); for those
    the result says whether the PACS granted it.
    """
    results: list[ContextResult] = []
    for cx in assoc.accepted_contexts:
        role = bool(cx.as_scp) if cx.abstract_syntax in scp_roles else None
        results.append(ContextResult(str(cx.abstract_syntax), True, "accepted", str(cx.transfer_syntax[0]), role))
    for cx in assoc.rejected_contexts:
        reason = _CONTEXT_RESULT.get(cx.result if cx.result is not None else -1, f"rejected (result {cx.result})")
        results.append(ContextResult(str(cx.abstract_syntax), False, reason))
    return results


def make_ae(node: Node) -> AE:
    """An AE configured with the node's calling AE title, timeouts and maximum PDU."""
    ae = AE(ae_title=node.calling_ae)
    ae.connection_timeout = node.connect_timeout
    ae.acse_timeout = node.acse_timeout
    ae.dimse_timeout = node.dimse_timeout
    ae.network_timeout = max(node.dimse_timeout, node.acse_timeout)
    ae.maximum_pdu_size = node.max_pdu
    return ae


def resolve(node: Node) -> list[str]:
    """Resolve the node's host to addresses, or raise ConnectionFailed at stage 'resolve'."""
    try:
        infos = socket.getaddrinfo(node.host, node.port, type=socket.SOCK_STREAM)
    except socket.gaierror as exc:
        raise ConnectionFailed(
            f"cannot resolve host {node.host!r}: {exc.strerror}",
            hint="check the host name, or use the PACS's IP address",
            stage="resolve",
        ) from None
    return sorted({info[4][0] for info in infos})


def explain_connect_error(node: Node, exc: OSError) -> ConnectionFailed:
    """Turn a TCP connect error into a ConnectionFailed with a hint."""
    where = f"{node.host}:{node.port}"
    if isinstance(exc, (socket.timeout, TimeoutError)) or exc.errno == errno.ETIMEDOUT:
        return ConnectionFailed(
            f"no answer from {where} within {node.connect_timeout:g} s",
            hint="a firewall may drop the connection, or the host is down; check host, port and network",
            stage="connect",
        )
    if exc.errno == errno.ECONNREFUSED:
        return ConnectionFailed(
            f"connection refused by {where}",
            hint="nothing listens on that port: check the port number and that the PACS service is running",
            stage="connect",
        )
    if exc.errno in (errno.EHOSTUNREACH, errno.ENETUNREACH):
        return ConnectionFailed(
            f"{where} is unreachable ({exc.strerror})", hint="check the network route to the PACS", stage="connect"
        )
    return ConnectionFailed(f"cannot connect to {where}: {exc.strerror or exc}", stage="connect")


def tcp_probe(node: Node) -> float:
    """Open and close a plain TCP connection; return the seconds it took or raise ConnectionFailed."""
    start = time.perf_counter()
    try:
        with socket.create_connection((node.host, node.port), timeout=node.connect_timeout):
            pass
    except OSError as exc:
        raise explain_connect_error(node, exc) from None
    return time.perf_counter() - start


def explain_rejection(node: Node, primitive: Any) -> AssociationRejected:
    """Decode an A-ASSOCIATE-RJ (PS3.8 9.3.4) into a message and a hint."""
    result = "permanently" if primitive.result == 0x01 else "transiently"
    reason = primitive.reason_str
    hint = ""
    if primitive.result_source == 1 and primitive.diagnostic == 3:
        hint = f"the PACS does not know calling AE {node.calling_ae!r}: add it to the PACS's list of allowed modalities"
    elif primitive.result_source == 1 and primitive.diagnostic == 7:
        hint = f"the PACS is not called {node.ae_title!r}: check the called AE title (it is case-sensitive)"
    elif primitive.result_source == 3:
        hint = "the PACS is busy or at its association limit: try again shortly"
    elif node.identity != "none" and primitive.diagnostic == 1:
        hint = f"the PACS probably refused the user identity ({node.identity} for {node.identity_user!r})"
    return AssociationRejected(
        f"{node.address} {result} rejected the association: {reason}", hint=hint, stage="associate"
    )


def set_nodelay(assoc: Association) -> None:
    """Turn off Nagle's algorithm on the association's socket.

    A DIMSE message leaves as several small writes (command, then data set); with Nagle on, each waits
    for the peer's delayed ACK (~40 ms on loopback): ten times slower C-FINDs and C-STORE responses.
    """
    sock = getattr(getattr(assoc.dul, "socket", None), "socket", None)
    if sock is not None:
        try:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        except OSError as exc:  # not fatal: only slower
            LOG.debug("Cannot set TCP_NODELAY: %s", exc)


class _Watch:
    """Collects what pynetdicom tells us while an association is negotiated."""

    def __init__(self) -> None:
        self.connected = False
        self.response: Any = None

    def on_conn_open(self, event: evt.Event) -> None:
        self.connected = True
        set_nodelay(event.assoc)
        try:
            # Event-driven DUL, TCP_QUICKACK, lean DIMSE paths (see _pynetdicom_compat): every query and
            # retrieve, not only C-GET; a PACS with Nagle on otherwise stalls each C-FIND match ~40 ms.
            install_fast_transport(event.assoc)
        except Exception:  # noqa: BLE001 - an optimisation must never cost the association
            LOG.warning("Could not install the fast transport; using pynetdicom's own", exc_info=True)

    def on_acse_recv(self, event: evt.Event) -> None:
        self.response = event.primitive
        note_acse_primitive(event.assoc, event.primitive)  # (an A-ABORT later on: the PACS ended it)

    def handlers(self) -> list[tuple[Any, Any]]:
        return [(evt.EVT_CONN_OPEN, self.on_conn_open), (evt.EVT_ACSE_RECV, self.on_acse_recv)]


def identity_item(node: Node) -> UserIdentityNegotiation | None:
    """The User Identity item for the node; refuses to send a secret in clear unless the node allows it."""
    if node.identity == "none":
        return None
    item = UserIdentityNegotiation()
    item.user_identity_type = IDENTITY_TYPES[node.identity]
    item.positive_response_requested = node.identity_positive_response
    if node.identity in ("username", "password"):
        item.primary_field = node.identity_user.encode("utf-8")
    if node.identity_has_secret:
        if not node.tls and not node.allow_plain_credentials:
            raise InvalidInput("user identity", "would send a password or token unencrypted: turn TLS on for "
                               "this node, or allow credentials over plain TCP explicitly")
        secret = credentials.get_secret(node.name)
        if not secret:
            raise InvalidInput("user identity", f"no password or token is stored for node {node.name!r} "
                               "(save one with the node, or pass it with --secret-stdin)")
        if node.identity == "password":
            item.secondary_field = secret.encode("utf-8")
        else:
            item.primary_field = secret.encode("utf-8")
    return item


def open_association(
    node: Node,
    contexts: Sequence[PresentationContext],
    *,
    ext_neg: Sequence[Any] | None = None,
    evt_handlers: Sequence[tuple[Any, Any]] | None = None,
    ae: AE | None = None,
) -> Association:
    """Associate with ``node`` proposing ``contexts``; raise a PacsPullError saying which stage failed."""
    identity = identity_item(node)
    tls_args = tls.tls_args(node)
    resolve(node)
    ae = ae or make_ae(node)
    watch = _Watch()
    handlers = list(evt_handlers or []) + watch.handlers()
    assoc = ae.associate(
        node.host,
        node.port,
        contexts=list(contexts),
        ae_title=node.ae_title,
        max_pdu=node.max_pdu,
        ext_neg=list(ext_neg or []) + ([identity] if identity else []) or None,
        evt_handlers=handlers,
        tls_args=tls_args,
    )
    if assoc.is_established:
        if identity is not None and identity.positive_response_requested:
            if assoc.acceptor.user_identity is None:
                assoc.abort()
                assoc.ae.shutdown()
                raise AssociationRejected(
                    f"{node.address} accepted the association but did not confirm the user identity",
                    hint="the node asks for a positive response; the PACS may ignore user identity",
                    stage="associate")
        return assoc
    if not watch.connected:
        # pynetdicom only logs the socket error; repeat the connect to learn exactly what happened.
        tcp_probe(node)
        if node.tls:
            tls.handshake_probe(node)
        raise ConnectionFailed(f"cannot connect to {node.host}:{node.port}", stage="connect")
    refused = refused_pdu(assoc)
    if refused is not None:
        raise AssociationRejected(
            f"{node.address} answered with a PDU of {refused[0]:,} bytes, more than the {refused[1]:,} we "
            "accept: association aborted", hint="a broken or hostile peer, or no DICOM service on this port",
            stage="associate")
    if assoc.is_rejected and watch.response is not None:
        raise explain_rejection(node, watch.response)
    if node.tls and not assoc.is_rejected:
        tls.handshake_probe(node)  # a TLS refusal after the handshake (client certificate) is named here
    if watch.response is None:
        raise AssociationRejected(
            f"{node.address} did not answer the association request within {node.acse_timeout:g} s",
            hint="is this port a DICOM service? A TLS-only port also looks like this",
            stage="associate",
        )
    if assoc.rejected_contexts and not assoc.accepted_contexts:
        reasons = "; ".join(c.describe() for c in context_results(assoc))
        raise AssociationRejected(
            f"{node.address} accepted none of the proposed services: {reasons}", stage="associate"
        )
    raise AssociationRejected(
        f"{node.address} aborted the association during negotiation",
        hint="the PACS may not allow this calling AE or this service (check its logs), or the port expects "
        "TLS" if not node.tls else "the PACS may not allow this calling AE or this service; check its logs",
        stage="associate",
    )


@contextmanager
def associated(
    node: Node,
    contexts: Sequence[PresentationContext],
    **kwargs: Any,
) -> Iterator[Association]:
    """``open_association`` as a context manager that releases (or aborts) the association after."""
    assoc = open_association(node, contexts, **kwargs)
    try:
        yield assoc
    finally:
        close(assoc)


def no_final_answer(node: Node, assoc: Association, service: str, since: float, *, answered: bool, stage: str,
                    timeout_hint: str = "", refusal_hint: str = "") -> PacsPullError:
    """Why a request (``service``: "C-ECHO", "C-FIND"...) ended without a final response, from who ended the
    association (``how_it_ended``) and when: we aborted it on an oversized PDU, or on a timeout (``since``:
    monotonic time of the request or of its last response), or on an answer pynetdicom could not take; the
    PACS aborted it, which in answer to the request itself (``answered`` False) is how a PACS such as
    Orthanc refuses a calling AE it does not know; or the connection closed."""
    refused = refused_pdu(assoc)
    if refused is not None:
        return AssociationRejected(
            f"the association with {node.address} ended before an answer to {service} (we aborted it: the PACS "
            f"sent a PDU of {refused[0]:,} bytes, more than the {refused[1]:,} we accept)",
            hint="a broken or hostile peer", stage=stage)
    ended = how_it_ended(assoc)
    if ended == "peer":
        if answered:
            return ServiceFailed(f"{node.address} aborted the association during the {service}", stage=stage)
        calling = node.calling_ae
        return ServiceFailed(
            f"{node.address} aborted the association in answer to the {service} request",
            hint=refusal_hint or (f"it probably does not allow calling AE {calling!r} to use {service} (Orthanc "
                                  f"does this for an AE it does not know): ask the PACS admin to register "
                                  f"{calling!r} with this computer's address"),
            stage=stage)
    if time.monotonic() - since >= node.dimse_timeout * 0.9:
        return ServiceFailed(f"{node.address} sent nothing for {node.dimse_timeout:g} s during the {service}: "
                             "timed out (association aborted)", hint=timeout_hint, stage=stage)
    if ended == "ours":
        return ServiceFailed(f"we aborted the association: {node.address}'s answer to the {service} was malformed "
                             "or not one that can come then (-v logs it)", stage=stage)
    return ConnectionFailed(f"the connection to {node.address} closed during the {service}, without an A-ABORT",
                            hint="the PACS stopped or the network dropped the connection", stage=stage)


def close(assoc: Association) -> None:
    """Release ``assoc`` if it is still open, stop its AE and wait for its thread to end (the end of every
    association we open: nothing of it outlives the call, so a window closing mid-retrieve leaves none)."""
    if is_open(assoc):
        assoc.release()
    assoc.ae.shutdown()
    if assoc.is_alive() and assoc is not threading.current_thread():
        assoc.join(_THREAD_END_SECONDS)


_THREAD_END_SECONDS = 5.0  # its last reactor turn after release or abort takes milliseconds


def build_contexts(
    abstract_syntaxes: Sequence[str], transfer_syntaxes: Sequence[str] = UNCOMPRESSED
) -> list[PresentationContext]:
    """Presentation contexts for the given SOP classes, each with the given transfer syntaxes."""
    return [build_context(uid, list(transfer_syntaxes)) for uid in abstract_syntaxes]


class CancelWatcher:
    """Sends C-CANCEL when the token fires during one C-FIND/C-GET; aborts if the PACS then stays silent.

    A thread of its own, because the thread iterating the responses is blocked while the PACS says
    nothing (a stall, or a slow query): it cannot notice the cancel itself.
    """

    def __init__(self, assoc: Association, msg_id: int, cancel: CancelToken, grace: float, query_model: str) -> None:
        self.assoc = assoc
        self.query_model = query_model
        self.msg_id = msg_id
        self.cancel = cancel
        self.grace = grace
        self.finished = threading.Event()
        self.sent = False
        self.aborted = False
        self.thread = threading.Thread(target=self._watch, name="pacspull-cancel", daemon=True)

    def __enter__(self) -> CancelWatcher:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.finished.set()
        self.thread.join()

    def _watch(self) -> None:
        while not self.finished.is_set():
            if self.cancel.wait(0.05):
                break
        if self.finished.is_set():
            return
        LOG.info("Cancel requested: sending C-CANCEL for message %d", self.msg_id)
        self.sent = True
        self.assoc.send_c_cancel(self.msg_id, query_model=self.query_model)
        if not self.finished.wait(self.grace):
            LOG.warning("No final response %.0f s after C-CANCEL: aborting the association", self.grace)
            self.aborted = True
            self.assoc.abort()
            wake_response_wait(self.assoc)
