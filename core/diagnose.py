"""A staged connectivity check for the technician: which stage fails, what the PACS accepted, and why.

Stages, in order: resolve the host, TCP connect, TLS handshake (for a TLS node), associate, C-ECHO,
C-FIND, C-GET capability. A failed
stage stops the stages that depend on it; each stage records its time and, on failure, a hint.
"""

from __future__ import annotations

import functools
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from pydicom.dataset import Dataset
from pydicom.uid import generate_uid
from pynetdicom import Association
from pynetdicom.sop_class import (
    StudyRootQueryRetrieveInformationModelFind,
    StudyRootQueryRetrieveInformationModelGet,
    Verification,
)

from pacspull.core.association import (
    ContextResult,
    build_contexts,
    close,
    context_results,
    is_open,
    no_final_answer,
    open_association,
    resolve,
    tcp_probe,
)
from pacspull.core import tls
from pacspull.core._pynetdicom_compat import how_it_ended
from pacspull.core.contexts import DEFAULT_STORAGE_CLASSES, MAX_CONTEXTS, storage_contexts
from pacspull.core.echo import send_echo
from pacspull.core.errors import ALLOW_C_GET, PacsPullError
from pacspull.core.nodes import Node
from pacspull.core.query import QueryRequest, StudyRow, build_identifier, Level
from pacspull.core.status import Category, describe

LOG = logging.getLogger(__name__)

STAGES = ("resolve", "connect", "tls", "associate", "echo", "find", "get")


@dataclass(frozen=True)
class StageResult:
    """One stage's outcome: ``ok`` is None when the stage was not reached."""

    name: str
    ok: bool | None
    seconds: float = 0.0
    detail: str = ""
    hint: str = ""

    def to_json(self) -> dict[str, Any]:
        """A JSON-ready dict."""
        return {"stage": self.name, "ok": self.ok, "seconds": round(self.seconds, 4),
                "detail": self.detail, "hint": self.hint}


@dataclass
class DiagnoseReport:
    """Every stage's result and the presentation contexts the PACS accepted or rejected."""

    node: Node
    stages: list[StageResult] = field(default_factory=list)
    contexts: list[ContextResult] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        """True when every stage passed."""
        return len(self.stages) == len(STAGES) and all(
            s.ok or (s.name == "tls" and not self.node.tls) for s in self.stages)

    @property
    def failed_stage(self) -> StageResult | None:
        """The first stage that failed, if any."""
        return next((s for s in self.stages if s.ok is False), None)

    def to_json(self) -> dict[str, Any]:
        """A JSON-ready dict (``pacspull diagnose --json``)."""
        return {
            "node": {"host": self.node.host, "port": self.node.port, "ae_title": self.node.ae_title,
                     "calling_ae": self.node.calling_ae},
            "ok": self.ok,
            "failed_stage": self.failed_stage.name if self.failed_stage else None,
            "stages": [s.to_json() for s in self.stages],
            "contexts": [c.to_json() for c in self.contexts],
        }


class _Run:
    def __init__(self, node: Node, on_stage: Callable[[StageResult], None] | None) -> None:
        self.report = DiagnoseReport(node)
        self.on_stage = on_stage
        self.assoc: Association | None = None  # once associated
        self.ended: str | None = None  # how the association ended, once it has (how_it_ended, or "error")

    def record(self, result: StageResult) -> StageResult:
        self.report.stages.append(result)
        if self.on_stage:
            self.on_stage(result)
        return result

    def stage(self, name: str, action: Callable[[], str]) -> bool:
        """Run one stage: ``action`` returns its detail or raises a PacsPullError."""
        start = time.perf_counter()
        try:
            detail = action()
        except PacsPullError as exc:
            message, hint = exc.message, exc.hint
        except Exception as exc:  # noqa: BLE001 - the report must still come out, naming the stage
            LOG.exception("diagnose: the %s stage failed unexpectedly", name)
            message, hint = f"unexpected error: {exc}", ""
            if self.assoc is not None and is_open(self.assoc):
                self.assoc.abort()  # its answers may still be coming: no later stage can trust it
                self.ended = "error"
        else:
            self._note_end()
            self.record(StageResult(name, True, time.perf_counter() - start, detail))
            return True
        self._note_end()
        self.record(StageResult(name, False, time.perf_counter() - start, message, hint))
        return False

    def _note_end(self) -> None:
        if self.assoc is not None and self.ended is None and (ended := how_it_ended(self.assoc)) != "open":
            self.ended = ended

    def skip_rest(self) -> None:
        done = {s.name for s in self.report.stages}
        why = {"peer": "not reached: the PACS aborted the association",
               "ours": "not reached: we aborted the association (see the stage above)",
               "lost": "not reached: the connection closed",
               "error": "not reached: the association was aborted after the unexpected error"}.get(
                   self.ended or "", "not reached")
        for name in STAGES:
            if name not in done:
                self.record(StageResult(name, None, 0.0, why))


def diagnose(node: Node, *, on_stage: Callable[[StageResult], None] | None = None) -> DiagnoseReport:
    """Run every stage against ``node``; never raises for a PACS problem, the report tells it."""
    run = _Run(node, on_stage)
    storage_classes = list(DEFAULT_STORAGE_CLASSES[: MAX_CONTEXTS - 3])
    contexts = build_contexts(
        [Verification, StudyRootQueryRetrieveInformationModelFind, StudyRootQueryRetrieveInformationModelGet]
    )
    store_cx, roles = storage_contexts(storage_classes)

    def do_resolve() -> str:
        return "resolved to " + ", ".join(resolve(node))

    def do_connect() -> str:
        return f"TCP connection to {node.host}:{node.port} opened in {tcp_probe(node) * 1000:.1f} ms"

    def do_associate() -> str:
        assoc = open_association(node, contexts + store_cx, ext_neg=roles)
        run.assoc = assoc
        run.report.contexts = context_results(assoc, scp_roles=storage_classes)
        accepted = sum(1 for c in run.report.contexts if c.accepted)
        return (f"association accepted by {node.ae_title!r} (max PDU {assoc.acceptor.maximum_length}); "
                f"{accepted} of {len(run.report.contexts)} proposed contexts accepted")

    try:
        ok = run.stage("resolve", do_resolve) and run.stage("connect", do_connect)
        if ok and node.tls:
            ok = run.stage("tls", lambda: tls.handshake_probe(node))
        elif ok:
            run.record(StageResult("tls", None, 0.0, "not used: plain TCP (turn TLS on in the node to encrypt)"))
        ok = ok and run.stage("associate", do_associate)
        if ok:
            assoc = run.assoc
            for name, service in (("echo", _echo), ("find", _find), ("get", _get)):
                if run.ended:
                    break  # nothing more can be asked on this association
                run.stage(name, functools.partial(service, assoc, node, run.report))
    finally:
        if run.assoc is not None:
            close(run.assoc)
    run.skip_rest()
    return run.report


def _accepted(report: DiagnoseReport, uid: str) -> ContextResult | None:
    return next((c for c in report.contexts if c.abstract_syntax == uid and c.accepted), None)


def _rejection(report: DiagnoseReport, uid: str) -> str:
    found = next((c for c in report.contexts if c.abstract_syntax == uid), None)
    return found.reason if found else "not proposed"


def _echo(assoc: Association, node: Node, report: DiagnoseReport) -> str:
    if not _accepted(report, Verification):
        raise PacsPullError(f"Verification (C-ECHO) {_rejection(report, Verification)}")
    info = send_echo(assoc, node)
    return f"C-ECHO answered {info}"


def _find(assoc: Association, node: Node, report: DiagnoseReport) -> str:
    uid = StudyRootQueryRetrieveInformationModelFind
    if not _accepted(report, uid):
        raise PacsPullError(f"Study Root C-FIND {_rejection(report, uid)}",
                            hint="this PACS cannot be searched with Study Root queries")
    identifier = build_identifier(QueryRequest(), Level.STUDY)
    rows = 0
    heard, answered = time.monotonic(), False
    for status, ds in assoc.send_c_find(identifier, uid, msg_id=11):
        code = int(status.Status) if status is not None and "Status" in status else None
        if code is not None:
            heard, answered = time.monotonic(), True
        info = describe(code)
        if info.category is Category.PENDING:
            if ds is not None:
                StudyRow.from_dataset(ds)  # proves the answer decodes
                rows += 1
                if rows == 1:
                    # One row proves the service; stop the PACS listing everything it holds.
                    assoc.send_c_cancel(11, query_model=uid)
            continue
        if info.category in (Category.SUCCESS, Category.CANCEL):
            return f"Study Root C-FIND works ({'at least one study' if rows else 'no studies'} found)"
        if code is None:
            raise no_final_answer(node, assoc, "C-FIND", heard, answered=answered, stage="")
        raise PacsPullError(f"the PACS answered the C-FIND with {info}")
    raise PacsPullError("the C-FIND ended without a final status")


def _get(assoc: Association, node: Node, report: DiagnoseReport) -> str:
    uid = StudyRootQueryRetrieveInformationModelGet
    hint = f"this PACS cannot send studies by C-GET: {ALLOW_C_GET}"
    if not _accepted(report, uid):
        raise PacsPullError(f"Study Root C-GET {_rejection(report, uid)}", hint=hint)
    storage = [c for c in report.contexts if c.scp_role is not None]
    with_role = [c for c in storage if c.accepted and c.scp_role]
    if not with_role:
        raise PacsPullError(
            "the PACS accepted no storage context with the SCP role, so it cannot send images back on a C-GET",
            hint=hint,
        )
    # A C-GET for a study that cannot exist: a PACS that serves C-GET answers with no sub-operations.
    identifier = Dataset()
    identifier.QueryRetrieveLevel = "STUDY"
    identifier.StudyInstanceUID = generate_uid()
    final = None
    asked = time.monotonic()
    for status, _ in assoc.send_c_get(identifier, uid, msg_id=21):
        final = int(status.Status) if status is not None and "Status" in status else None
    if final is None:
        raise no_final_answer(node, assoc, "C-GET", asked, answered=False, stage="",
                              refusal_hint=f"Orthanc does this when C-GET is not allowed for this calling AE; {hint}")
    info = describe(final)
    if info.category is Category.FAILURE and final not in (0xA900, 0xC000):
        raise PacsPullError(f"the PACS answered a test C-GET with {info}", hint=hint)
    return (f"Study Root C-GET accepted; {len(with_role)} of {len(storage)} storage classes accepted with the "
            f"SCP role; a test C-GET for an unknown study answered {info}")
