"""C-ECHO: is the PACS there and does it speak DICOM to us."""

from __future__ import annotations

import time
from dataclasses import dataclass

from pynetdicom.sop_class import Verification

from pacspull.core._pynetdicom_compat import refused_pdu
from pacspull.core.association import associated, build_contexts, is_open
from pacspull.core.errors import AssociationRejected, ServiceFailed
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
    rsp = assoc.send_c_echo()
    code = int(rsp.Status) if rsp is not None and "Status" in rsp else None
    if code is None and not is_open(assoc):
        refused = refused_pdu(assoc)
        why = (f"we aborted it: the PACS sent a PDU of {refused[0]:,} bytes, more than the {refused[1]:,} "
               "we accept" if refused else "aborted, by the PACS or by us on a malformed answer: see the log")
        raise AssociationRejected(f"the association with {node.address} ended before an answer to C-ECHO "
                                  f"({why})", stage="echo")
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
