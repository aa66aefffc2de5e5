"""C-ECHO: is the PACS there and does it speak DICOM to us."""

from __future__ import annotations

import time
from dataclasses import dataclass

from pynetdicom.sop_class import Verification

from pacspull.core.association import associated, build_contexts, is_open, no_final_answer
from pacspull.core.errors import ServiceFailed
from pacspull.core.nodes import Node
from pacspull.core.status import Category, StatusInfo, describe


@dataclass(frozen=True)
class EchoResult:
    """The outcome of a successful C-ECHO."""

    node: Node
    status: StatusInfo
    seconds: float


def send_echo(assoc, node: Node) -> StatusInfo:  # type: ignore[no-untyped-def]
    """C-ECHO on an open association; raise ServiceFailed unless the PACS answers success."""
    asked = time.monotonic()
    rsp = assoc.send_c_echo()
    code = int(rsp.Status) if rsp is not None and "Status" in rsp else None
    if code is None and not is_open(assoc):
        raise no_final_answer(node, assoc, "C-ECHO", asked, answered=False, stage="echo")
    info = describe(code)
    if info.category is not Category.SUCCESS:
        raise ServiceFailed(f"{node.address} answered C-ECHO with {info}", stage="echo")
    return info


def echo(node: Node) -> EchoResult:
    """Associate, C-ECHO, release; raise ConnectionFailed / AssociationRejected / ServiceFailed."""
    start = time.perf_counter()
    with associated(node, build_contexts([Verification])) as assoc:
        info = send_echo(assoc, node)
    return EchoResult(node, info, time.perf_counter() - start)
