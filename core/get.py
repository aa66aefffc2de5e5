"""C-GET retrieval: a queue of studies, series or instances fetched on one association.

Thread contract: ``Retrieval.run()`` blocks and must run off the GUI thread. pynetdicom calls our
C-STORE handler on that same thread while it iterates the C-GET responses, so the counters need no
lock; the listener's methods are called on that thread too and must be quick (store, count, signal).
Only the cancel watcher runs elsewhere: it sends C-CANCEL (and, after a grace period, A-ABORT).

Speed (benchmarks/): the associations get pynetdicom's fast transport (core._pynetdicom_compat: no polling,
one receive per PDU, TCP_QUICKACK, lean DIMSE, no thread hand-offs, large data sets spooled to the
destination's disk); headers are read straight from the received bytes (``scan_header``); files are
flushed to the disk once per request, not one by one (StudyWriter.deferred_sync).

Statuses (PS3.4 C.4.3.1.4 for C-GET, B.2.3 for the C-STORE sub-operations we answer) are decoded by
``core.status``; an empty status means no final response at all (timeout or abort), told apart from
0xB000 (some sub-operations failed) and 0xA702 (the PACS could not perform them).
"""

from __future__ import annotations

import functools
import logging
import struct
import time
import zlib
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from io import BytesIO
from typing import Any, BinaryIO

from pydicom.datadict import dictionary_VR, tag_for_keyword
from pydicom.dataset import Dataset
from pydicom.errors import InvalidDicomError
from pydicom.filereader import read_dataset
from pydicom.uid import UID, DeflatedExplicitVRLittleEndian
from pynetdicom import Association, evt
from pynetdicom.dsutils import decode
from pynetdicom.sop_class import (
    StudyRootQueryRetrieveInformationModelFind,
    StudyRootQueryRetrieveInformationModelGet,
)

from pacspull.core._pynetdicom_compat import (
    answer_later,
    how_it_ended,
    install_fast_transport,
    lean_find,
    refused_pdu,
)
from pacspull.core.association import (
    CancelWatcher,
    associated,
    build_contexts,
    close,
    context_results,
    open_association,
    uid_name,
)
from pacspull.core.contexts import DEFAULT_STORAGE_CLASSES, MAX_CONTEXTS, ContextPlan, plan_contexts
from pacspull.core.errors import ALLOW_C_GET, AssociationRejected, ConnectionFailed, PacsPullError, ServiceFailed
from pacspull.core.nodes import Node
from pacspull.core.progress import CancelToken
from pacspull.core.query import Level
from pacspull.core.status import Category, StatusInfo, describe
from pacspull.core.storage import StorageError, StoredInstance, StudyWriter

LOG = logging.getLogger(__name__)

# C-STORE statuses we answer (PS3.4 B.2.3). Each failure says why in the retrieve's summary.
STORE_SUCCESS = 0x0000
STORE_OUT_OF_RESOURCES = 0xA700  # Refused: out of resources (disk full, no permission): stop cleanly
STORE_CANNOT_UNDERSTAND = 0xC210  # Error: cannot understand (the data set does not decode)
STORE_PROCESSING_FAILURE = 0xC211  # Error: unexpected failure while storing (a bug of ours; logged)
STORE_WARNING_MISMATCH = 0xB007  # Warning: data set does not match SOP class; stored anyway

UID_BATCH = 1000  # instance UIDs per IMAGE-level C-GET when resuming
_RETURN_KEYS = ("SOPClassesInStudy", "NumberOfStudyRelatedInstances", "PatientName", "StudyDescription")


@dataclass(frozen=True)
class RetrieveRequest:
    """One thing to fetch: a study, some of its series, or some instances of one series."""

    study_uid: str
    series_uids: tuple[str, ...] = ()
    sop_instance_uids: tuple[str, ...] = ()
    label: str = ""
    sop_classes: tuple[str, ...] = ()
    expected: int | None = None

    @property
    def level(self) -> Level:
        """The C-GET level this request needs."""
        if self.sop_instance_uids:
            return Level.IMAGE
        return Level.SERIES if self.series_uids else Level.STUDY

    def identifier(self) -> Dataset:
        """The C-GET identifier: UIDs only (Orthanc, among others, would also match on any other key)."""
        ds = Dataset()
        ds.QueryRetrieveLevel = self.level.value
        ds.StudyInstanceUID = self.study_uid
        if self.level is Level.SERIES:
            ds.SeriesInstanceUID = list(self.series_uids) if len(self.series_uids) > 1 else self.series_uids[0]
        elif self.level is Level.IMAGE:
            ds.SeriesInstanceUID = self.series_uids[0]
            uids = list(self.sop_instance_uids)
            ds.SOPInstanceUID = uids if len(uids) > 1 else uids[0]
        return ds

    def describe(self) -> str:
        """Short text for messages: the label, or what is asked for by its UIDs."""
        if self.label:
            return self.label
        study = f"study {self.study_uid}"
        if self.level is Level.STUDY:
            return study
        series = f"series {self.series_uids[0]}" if len(self.series_uids) == 1 else f"{len(self.series_uids)} series"
        if self.level is Level.SERIES:
            return f"{series} of {study}"
        count = len(self.sop_instance_uids)
        return f"{count} instance{'s' if count != 1 else ''} of {series} of {study}"


@dataclass(frozen=True)
class RetrieveOptions:
    """How a retrieve behaves."""

    uncompressed_only: bool = False  # propose no compressed transfer syntax (the PACS must decompress)
    skip_existing: bool = True  # fetch only what the destination's manifest does not have
    cancel_grace: float = 10.0  # seconds to wait for the final response after C-CANCEL, then abort


@dataclass(frozen=True)
class SubOperationIssue:
    """A failed or warning sub-operation, with its status decoded."""

    sop_instance_uid: str
    status: StatusInfo
    reason: str

    def to_json(self) -> dict[str, Any]:
        """A JSON-ready dict."""
        return {"sop_instance_uid": self.sop_instance_uid, "status": self.status.code,
                "category": self.status.category.value, "reason": self.reason}


@dataclass(frozen=True)
class RetrievalProgress:
    """A snapshot of one request's progress (frozen: safe to hand to another thread)."""

    request_index: int
    request_count: int
    label: str
    completed: int
    failed: int
    warning: int
    skipped: int
    remaining: int | None
    bytes_received: int
    elapsed: float

    @property
    def done(self) -> int:
        """Sub-operations finished, whatever their outcome."""
        return self.completed + self.failed + self.warning

    @property
    def total(self) -> int | None:
        """Known total of sub-operations, if the PACS or the plan told us."""
        return None if self.remaining is None else self.done + self.remaining

    @property
    def bytes_per_second(self) -> float:
        """Average received throughput."""
        return self.bytes_received / self.elapsed if self.elapsed > 0 else 0.0

    @property
    def eta_seconds(self) -> float | None:
        """Estimated time left, from the average instance rate; None when unknown."""
        if self.remaining is None or self.done == 0 or self.elapsed <= 0:
            return None
        return self.remaining * self.elapsed / self.done


@dataclass
class RequestOutcome:
    """How one request ended. Counts are ours (files written); ``pacs_counts`` are the PACS's own."""

    request: RetrieveRequest
    status: StatusInfo | None = None
    completed: int = 0
    failed: int = 0
    warning: int = 0
    skipped: int = 0
    bytes_received: int = 0
    seconds: float = 0.0
    remaining: int | None = None
    failures: list[SubOperationIssue] = field(default_factory=list)
    warnings: list[SubOperationIssue] = field(default_factory=list)
    pacs_counts: dict[str, int] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    error: str | None = None
    cancelled: bool = False
    attempted: bool = False
    # The PACS refused the C-GET itself: it aborted the association in answer to the request, before any
    # sub-operation (Orthanc does this for a calling AE it does not allow to retrieve).
    refused: bool = False
    # The PACS has nothing the request asks for: planning's C-FIND matched nothing, and nothing came.
    not_found: bool = False

    @property
    def ok(self) -> bool:
        """Everything asked for is on disk."""
        return self.attempted and not self.failed and not self.error and not self.cancelled

    def to_json(self) -> dict[str, Any]:
        """A JSON-ready dict."""
        return {
            "study_uid": self.request.study_uid,
            "series_uids": list(self.request.series_uids),
            "level": self.request.level.value,
            "status": None if self.status is None else self.status.code,
            "status_text": "no response" if self.status is None else str(self.status),
            "completed": self.completed,
            "failed": self.failed,
            "warning": self.warning,
            "skipped": self.skipped,
            "bytes": self.bytes_received,
            "seconds": round(self.seconds, 3),
            "pacs_counts": self.pacs_counts,
            "failures": [f.to_json() for f in self.failures],
            "warnings": [w.to_json() for w in self.warnings],
            "notes": self.notes,
            "error": self.error,
            "cancelled": self.cancelled,
            "refused": self.refused,
            "not_found": self.not_found,
        }


@dataclass
class RetrievalSummary:
    """The whole queue's outcome."""

    destination: str
    outcomes: list[RequestOutcome]
    seconds: float = 0.0
    cancelled: bool = False
    error: PacsPullError | None = None

    def total(self, name: str) -> int:
        """Sum of one count over all requests."""
        return sum(getattr(o, name) for o in self.outcomes)

    @property
    def ok(self) -> bool:
        """Every request fully stored."""
        return self.error is None and not self.cancelled and all(o.ok for o in self.outcomes)

    @property
    def exit_code(self) -> int:
        """0 all stored; 1 some failed or cancelled; 3 network/association; 4 the PACS refused."""
        if self.error is not None:
            return self.error.exit_code
        return 0 if self.ok else 1

    def to_json(self) -> dict[str, Any]:
        """The summary ``pacspull get --json`` prints."""
        return {
            "ok": self.ok,
            "completed": self.total("completed"),
            "failed": self.total("failed"),
            "warning": self.total("warning"),
            "skipped": self.total("skipped"),
            "bytes": self.total("bytes_received"),
            "seconds": round(self.seconds, 3),
            "destination": self.destination,
            "cancelled": self.cancelled,
            "error": None if self.error is None else str(self.error),
            "failures": [f.to_json() for o in self.outcomes for f in o.failures],
            "warnings": [w.to_json() for o in self.outcomes for w in o.warnings],
            "requests": [o.to_json() for o in self.outcomes],
        }


class RetrievalListener:
    """Receives a retrieve's events on the retrieving thread. Override what you need; keep it quick."""

    def instance_stored(self, outcome: RequestOutcome, stored: StoredInstance) -> None:
        """An instance is on disk under its final name."""

    def sub_operation_failed(self, outcome: RequestOutcome, issue: SubOperationIssue) -> None:
        """A sub-operation failed (our storage, or the PACS could not send it)."""

    def sub_operation_warning(self, outcome: RequestOutcome, issue: SubOperationIssue) -> None:
        """An instance was stored with a warning."""

    def progress(self, snapshot: RetrievalProgress) -> None:
        """Counts changed."""

    def request_finished(self, outcome: RequestOutcome) -> None:
        """One request of the queue ended."""

    def finished(self, summary: RetrievalSummary) -> None:
        """The whole queue ended (also after an error or a cancel)."""


class UndecodableDataset(ValueError):
    """A received data set that does not parse (answered 0xC210, cannot understand)."""


# What pydicom and zlib raise on bytes that are not a data set; all mean "cannot understand".
_DECODE_ERRORS = (InvalidDicomError, EOFError, ValueError, KeyError, IndexError, TypeError, AttributeError,
                  LookupError, OverflowError, NotImplementedError, struct.error, zlib.error)


def _last_tag(keywords: Iterable[str] | None) -> int:
    """The highest tag among ``keywords`` (pixel data's when None or unknown): reading stops after it."""
    if not keywords:
        return 0x7FE0000F
    tags = [tag_for_keyword(k) for k in keywords]
    return 0x7FE0000F if any(t is None for t in tags) else min(max(t for t in tags if t is not None), 0x7FE0000F)


def read_header(stream: BinaryIO, transfer_syntax: str, keywords: Iterable[str] | None = None) -> Dataset:
    """Decode a received data set up to its pixel data, without touching the pixel data.

    With ``keywords``, decoding stops after the last of those attributes (a data set is sorted by tag):
    naming files needs the patient/study/series attributes of groups 0008-0020, not the rest.

    Raises UndecodableDataset for bytes that do not parse; the stream is rewound either way.
    """
    ts = UID(transfer_syntax)
    start = stream.tell()
    last = _last_tag(tuple(keywords) if keywords is not None else None)
    try:
        source = stream
        if ts == DeflatedExplicitVRLittleEndian:
            # Inflate only the beginning: the attributes a path needs come long before the pixel data.
            inflater = zlib.decompressobj(-zlib.MAX_WBITS)
            source = BytesIO(inflater.decompress(stream.read(1 << 20), 4 << 20))
        try:
            ds = read_dataset(
                source,
                is_implicit_VR=ts.is_implicit_VR,
                is_little_endian=ts.is_little_endian,
                stop_when=lambda tag, vr, length: tag > last,
                defer_size=4096,
            )
        except EOFError:
            if source is not stream:  # the inflated head was cut mid-element: what came before is enough
                return Dataset()
            raise
        # Decode the few values a path uses now, while the stream is ours.
        for keyword in ("SOPInstanceUID", "SOPClassUID", "PatientName"):
            ds.get(keyword)
        return ds
    except _DECODE_ERRORS as exc:
        raise UndecodableDataset(f"the data set does not decode: {exc}") from None
    finally:
        stream.seek(start)



# -- a fast look at the attributes that name the file ------------------------------------------------

# VRs whose value is text the layout can use; an explicit VR outside these and _LONG_VRS is not a data set.
_TEXT_VRS = frozenset({"AE", "AS", "CS", "DA", "DS", "DT", "IS", "LO", "LT", "PN", "SH", "ST", "TM", "UC", "UI",
                       "UR", "UT"})
_LONG_VRS = frozenset({b"OB", b"OD", b"OF", b"OL", b"OV", b"OW", b"SQ", b"SV", b"UC", b"UN", b"UR", b"UT", b"UV"})
_SHORT_VRS = frozenset({b"AE", b"AS", b"AT", b"CS", b"DA", b"DS", b"DT", b"FD", b"FL", b"IS", b"LO", b"LT",
                        b"PN", b"SH", b"SL", b"SS", b"ST", b"TM", b"UI", b"UL", b"US"})
_SIMPLE_CHARSETS = {None: None, "": None, "ISO_IR 6": None, "ISO_IR 100": "latin_1", "ISO_IR 192": "utf_8"}
_CHARSET_TAG = 0x00080005
_ITEM, _ITEM_END, _SEQUENCE_END = 0xFFFEE000, 0xFFFEE00D, 0xFFFEE0DD
_UNDEFINED = 0xFFFFFFFF


class _Header(dict):  # type: ignore[type-arg]
    """The header values the writer needs, as text: what ``Dataset.get`` would give, without pydicom."""


def _skip_undefined(view: memoryview, offset: int, implicit: bool, end_tag: int) -> int:
    """Offset just after the delimiter ``end_tag`` of an undefined-length sequence or item at ``offset``."""
    while True:
        group, element = struct.unpack_from("<HH", view, offset)
        tag = group << 16 | element
        if tag in (_ITEM, _ITEM_END, _SEQUENCE_END):
            length = struct.unpack_from("<I", view, offset + 4)[0]
            offset += 8
            if tag == end_tag:
                return offset
            if tag == _ITEM and length == _UNDEFINED:
                offset = _skip_undefined(view, offset, implicit, _ITEM_END)
            elif tag == _ITEM:
                offset += length
            continue
        offset, length, _vr = _element_head(view, offset, implicit)
        if length == _UNDEFINED:
            offset = _skip_undefined(view, offset, implicit, _SEQUENCE_END)
        else:
            offset += length
        if offset > len(view):
            raise ValueError("element runs past the end")


def _element_head(view: memoryview, offset: int, implicit: bool) -> tuple[int, int, bytes | None]:
    """(offset of the value, its length, explicit VR or None) of the element at ``offset``."""
    if implicit:
        return offset + 8, struct.unpack_from("<I", view, offset + 4)[0], None
    vr = bytes(view[offset + 4:offset + 6])
    if vr in _SHORT_VRS:
        return offset + 8, struct.unpack_from("<H", view, offset + 6)[0], vr
    if vr in _LONG_VRS:
        return offset + 12, struct.unpack_from("<I", view, offset + 8)[0], vr
    raise ValueError(f"unknown VR {vr!r}")


def scan_header(stream: BinaryIO, transfer_syntax: str, wanted: dict[int, str]) -> _Header | None:
    """The values of ``wanted`` ({tag: keyword}, text VRs only) straight from a received data set's bytes.

    Little Endian (implicit or explicit VR) data sets in memory only; reading stops after the last wanted
    tag. None whenever anything is unusual (another syntax, a malformed element, a text value needing a
    character set other than ASCII, Latin-1 or UTF-8): then pydicom decodes it (``read_header``).
    """
    implicit = _little_endian_encoding(str(transfer_syntax))
    if implicit is None or not hasattr(stream, "getbuffer"):
        return None
    last = max(wanted)
    raw: dict[int, bytes] = {}
    charset: str | None = None
    try:
        with stream.getbuffer() as view:
            offset, end = 0, len(view)
            previous = -1
            while offset + 8 <= end:
                group, element = struct.unpack_from("<HH", view, offset)
                tag = group << 16 | element
                if tag > last:
                    break
                if tag <= previous:
                    return None  # out of order: leave it to pydicom
                previous = tag
                start, length, _vr = _element_head(view, offset, implicit)
                if length == _UNDEFINED:
                    if tag in wanted:
                        return None
                    offset = _skip_undefined(view, start, implicit, _SEQUENCE_END)
                    continue
                offset = start + length
                if offset > end:
                    return None
                if tag in wanted or tag == _CHARSET_TAG:
                    raw[tag] = bytes(view[start:offset])
    except (struct.error, ValueError, IndexError):
        return None
    if _CHARSET_TAG in raw:
        charset = raw[_CHARSET_TAG].decode("ascii", "replace").strip(" \x00")
    codec = _SIMPLE_CHARSETS.get(charset, "?")
    header = _Header()
    for tag, value in raw.items():
        keyword = wanted.get(tag)
        if keyword is None:
            continue
        if value.isascii() and b"\x1b" not in value:  # the same text in every DICOM character set
            text = value.decode("ascii")
        elif codec in ("latin_1", "utf_8"):
            try:
                text = value.decode(codec)
            except UnicodeDecodeError:
                return None
        else:
            return None
        header[keyword] = text.rstrip("\x00 ").lstrip(" ")
    return header


@functools.lru_cache(maxsize=64)
def _little_endian_encoding(transfer_syntax: str) -> bool | None:
    """True for Implicit VR Little Endian, False for an Explicit VR Little Endian encoding (compressed
    syntaxes included: only their pixel data is encapsulated), None otherwise (big endian, deflated)."""
    ts = UID(transfer_syntax)
    if not ts.is_transfer_syntax or not ts.is_little_endian or ts.is_deflated:
        return None
    return bool(ts.is_implicit_VR)


def _wanted_tags(keywords: Iterable[str]) -> dict[int, str] | None:
    """{tag: keyword} for a fast header scan, or None if some keyword is not a plain text attribute."""
    wanted: dict[int, str] = {}
    for keyword in keywords:
        tag = tag_for_keyword(keyword)
        if tag is None or dictionary_VR(tag) not in _TEXT_VRS:
            return None
        wanted[tag] = keyword
    return wanted or None


def _fast_transport(event: evt.Event, spool_folder: str | None = None) -> None:
    """EVT_CONN_OPEN: pynetdicom made fast for a retrieve (see _pynetdicom_compat); large received data
    sets spool to ``spool_folder`` (the destination: same disk, so no memory and no other disk)."""
    try:
        enabled = install_fast_transport(event.assoc, spool_folder=spool_folder)
        LOG.debug("Fast transport: %s", ", ".join(enabled) or "off")
    except Exception:  # noqa: BLE001 - an optimisation must never cost the association
        LOG.warning("Could not install the fast transport; using pynetdicom's own", exc_info=True)


def _decode_identifier(stream: Any, transfer_syntax: str, wanted: dict[int, str] | None) -> Any:
    """A C-FIND match: ``scan_header``'s dict when ``wanted`` and it can; else pydicom's Dataset (None
    when it does not decode, which pynetdicom would have logged and skipped as well)."""
    if wanted is not None:
        stream.seek(0)
        header = scan_header(stream, transfer_syntax, wanted)
        if header is not None:
            return header
    ts = UID(transfer_syntax)
    try:
        return decode(stream, ts.is_implicit_VR, ts.is_little_endian, ts.is_deflated)
    except Exception:  # noqa: BLE001 - what pynetdicom does with an identifier it cannot decode
        LOG.warning("A C-FIND match did not decode; skipped", exc_info=True)
        return None


def _sop_class_text(uid: str) -> str:
    """``CT Image Storage (1.2.840.10008.5.1.4.1.1.2)``; an unregistered UID alone."""
    name = uid_name(uid)
    return uid if name == uid else f"{name} ({uid})"


def _status_code(status: Dataset | None) -> int | None:
    return int(status.Status) if status is not None and "Status" in status else None


@dataclass
class _Work:
    """A request as planned: the C-GET identifiers to send and what the plan learned."""

    outcome: RequestOutcome
    identifiers: list[Dataset]
    sop_classes: tuple[str, ...]
    expected: int | None
    found: bool | None = None  # what planning's C-FIND said: None when it did not ask (or could not)
    skipped_in_plan: int = 0  # instances already on disk, not asked for


class Retrieval:
    """Fetch a queue of requests from one node into a StudyWriter, reporting to a listener."""

    def __init__(
        self,
        node: Node,
        requests: Sequence[RetrieveRequest],
        writer: StudyWriter,
        *,
        listener: RetrievalListener | None = None,
        cancel: CancelToken | None = None,
        options: RetrieveOptions = RetrieveOptions(),
    ) -> None:
        self.node = node
        self.requests = list(requests)
        self.writer = writer
        self.listener = listener or RetrievalListener()
        self.cancel = cancel or CancelToken()
        self.options = options
        self._current: RequestOutcome | None = None
        self._index = 0
        self._started = 0.0
        self._msg_id = 0
        self._counted_before: dict[str, int] = {}  # PACS counts of the current request's earlier C-GETs
        self._stopped = False  # the retrieve cancelled itself (the destination failed): not the user's cancel
        self._answered_gets = 0  # C-GETs answered on the current association
        self._last_activity = 0.0  # monotonic time of the last C-STORE received
        self.context_report: list[str] = []
        # What the writer reads from a header (layout and manifest) and what _on_c_store checks; decoding
        # stops after the last of them. A writer that does not say: decode up to the pixel data.
        keywords = getattr(writer, "keywords", None)
        self._header_keywords = frozenset(keywords) | {"SOPClassUID", "SOPInstanceUID"} if keywords else None
        self._wanted_tags = _wanted_tags(self._header_keywords) if self._header_keywords else None

    # -- planning ---------------------------------------------------------------------------------
    def _plan(self) -> list[_Work]:
        """Learn each request's SOP classes and what is already on disk, on a short C-FIND association."""
        works = [_Work(RequestOutcome(r), [r.identifier()], r.sop_classes, r.expected) for r in self.requests]
        need_find = [w for w in works if not w.sop_classes or self.options.skip_existing]
        if not need_find:
            return works
        try:
            with associated(self.node, build_contexts([StudyRootQueryRetrieveInformationModelFind]),
                            evt_handlers=[(evt.EVT_CONN_OPEN, _fast_transport)]) as assoc:
                for work in need_find:
                    if self.cancel.cancelled:
                        break
                    self._plan_one(assoc, work)
        except PacsPullError as exc:
            # Planning is an optimisation: without C-FIND we still retrieve, proposing common classes.
            LOG.warning("Could not query the PACS before retrieving (%s); proposing common storage classes", exc)
        return works

    def _find(self, assoc: Association, identifier: Dataset, keys: Sequence[str] = ()) -> list[Any]:
        """The matches of one C-FIND. With ``keys`` (single-valued text attributes), each match is read
        straight from its bytes (``scan_header``) into a dict of those keys; else decoded by pydicom."""
        self._msg_id += 1
        wanted = _wanted_tags(keys) if keys else None
        rows = []
        for code, stream, ts in lean_find(assoc, identifier, StudyRootQueryRetrieveInformationModelFind,
                                          self._msg_id):
            info = describe(code)
            if info.category is Category.PENDING and stream is not None:
                row = _decode_identifier(stream, ts, wanted)
                if row is not None:
                    rows.append(row)
            elif info.category is not Category.PENDING:
                if info.category is Category.FAILURE:
                    raise ServiceFailed(f"C-FIND failed: {info}", stage="plan")
                break
        return rows

    def _plan_one(self, assoc: Association, work: _Work) -> None:
        request = work.outcome.request
        if request.level is Level.STUDY and not work.sop_classes:
            ident = Dataset()
            ident.QueryRetrieveLevel = "STUDY"
            ident.StudyInstanceUID = request.study_uid
            for keyword in _RETURN_KEYS:
                setattr(ident, keyword, "")
            matches = self._find(assoc, ident)
            work.found = bool(matches)
            for ds in matches:
                classes = ds.get("SOPClassesInStudy") or ()
                work.sop_classes = tuple(str(c) for c in ([classes] if isinstance(classes, str) else classes))
                count = ds.get("NumberOfStudyRelatedInstances")
                work.expected = int(count) if count not in (None, "") else work.expected
        have_any = self.options.skip_existing and self.writer.has_study(request.study_uid)
        if work.sop_classes and not have_any:
            return
        # List the instances: their classes for the contexts, and which ones the destination lacks.
        instances = self._list_instances(assoc, request)
        if not instances:
            # A study can match while its instances are not listed (a PACS without IMAGE-level queries);
            # series and instances are asked for by those very queries.
            if request.level is not Level.STUDY:
                work.found = False
            return
        work.found = True
        work.sop_classes = tuple(dict.fromkeys(c for _, _, c in instances if c)) or work.sop_classes
        work.expected = len(instances)
        if not have_any:
            return
        missing: dict[str, list[str]] = {}
        for series_uid, sop_uid, _ in instances:
            if self.writer.already_have(sop_uid) is None:
                missing.setdefault(series_uid, []).append(sop_uid)
            else:
                work.outcome.skipped += 1
                work.skipped_in_plan += 1
        work.identifiers = []
        for series_uid, uids in missing.items():
            for start in range(0, len(uids), UID_BATCH):
                sub = RetrieveRequest(request.study_uid, (series_uid,), tuple(uids[start : start + UID_BATCH]))
                work.identifiers.append(sub.identifier())
        work.expected = sum(len(u) for u in missing.values())
        if work.outcome.skipped:
            work.outcome.notes.append(f"{work.outcome.skipped} instance(s) already in the destination: skipped")

    def _list_instances(self, assoc: Association, request: RetrieveRequest) -> list[tuple[str, str, str]]:
        """(series UID, SOP instance UID, SOP class UID) of every instance the request covers."""
        series_uids = list(request.series_uids)
        if not series_uids:
            ident = Dataset()
            ident.QueryRetrieveLevel = "SERIES"
            ident.StudyInstanceUID = request.study_uid
            ident.SeriesInstanceUID = ""
            series_uids = [str(ds.SeriesInstanceUID) for ds in self._find(assoc, ident) if ds.get("SeriesInstanceUID")]
        wanted = set(request.sop_instance_uids)
        found = []
        for series_uid in series_uids:
            ident = Dataset()
            ident.QueryRetrieveLevel = "IMAGE"
            ident.StudyInstanceUID = request.study_uid
            ident.SeriesInstanceUID = series_uid
            ident.SOPInstanceUID = ""
            ident.SOPClassUID = ""
            for ds in self._find(assoc, ident, keys=("SOPInstanceUID", "SOPClassUID")):
                uid = str(ds.get("SOPInstanceUID") or "")
                if uid and (not wanted or uid in wanted):
                    found.append((series_uid, uid, str(ds.get("SOPClassUID") or "")))
        return found

    # -- the C-STORE sub-operations -----------------------------------------------------------------
    def _snapshot(self, outcome: RequestOutcome) -> RetrievalProgress:
        return RetrievalProgress(
            request_index=self._index,
            request_count=len(self.requests),
            label=outcome.request.describe(),
            completed=outcome.completed,
            failed=outcome.failed,
            warning=outcome.warning,
            skipped=outcome.skipped,
            remaining=outcome.remaining,
            bytes_received=outcome.bytes_received,
            elapsed=outcome.seconds or (time.monotonic() - self._started),
        )

    def _count_down(self, outcome: RequestOutcome) -> None:
        if outcome.remaining is not None and outcome.remaining > 0:
            outcome.remaining -= 1

    def _fail(self, outcome: RequestOutcome, uid: str, code: int, reason: str) -> int:
        issue = SubOperationIssue(uid, describe(code), reason)
        outcome.failed += 1
        outcome.failures.append(issue)
        self._count_down(outcome)
        self.listener.sub_operation_failed(outcome, issue)
        self.listener.progress(self._snapshot(outcome))
        return code

    def _on_c_store(self, event: evt.Event) -> int:
        """EVT_C_STORE: write the instance, answer its status. Never raises across the association."""
        outcome = self._current
        request = event.request
        uid = str(request.AffectedSOPInstanceUID or "")
        self._last_activity = time.monotonic()
        if outcome is None:
            return STORE_PROCESSING_FAILURE  # a C-STORE outside any C-GET of ours: refuse it
        try:
            if self.options.skip_existing and self.writer.already_have(uid) is not None:
                outcome.skipped += 1
                self._count_down(outcome)
                self.listener.progress(self._snapshot(outcome))
                return STORE_SUCCESS
            ts = str(event.context.transfer_syntax)
            stream = request.DataSet
            stream.seek(0)
            header: Any = None
            if self._wanted_tags is not None:
                header = scan_header(stream, ts, self._wanted_tags)
            try:
                if header is None:
                    header = read_header(stream, ts, self._header_keywords)
            except UndecodableDataset as exc:
                return self._fail(outcome, uid, STORE_CANNOT_UNDERSTAND, str(exc))
            sop_class = str(request.AffectedSOPClassUID)
            warning = None
            if header.get("SOPClassUID") not in (None, "", sop_class):
                warning = (f"the data set says SOP class {_sop_class_text(str(header.get('SOPClassUID')))}, "
                           f"the request {_sop_class_text(sop_class)}")
            # Bookkeeping that does not change the answer waits until it is sent (the PACS prepares
            # the next sub-operation meanwhile); the file itself is complete before the answer.
            later = answer_later(event.assoc)
            # The file is named after the UID the PACS announced: the one the counts refer to.
            stored = self.writer.store(header=header, sop_class_uid=sop_class, sop_instance_uid=uid,
                                       transfer_syntax=ts, source=stream, source_ae_title=self.node.ae_title,
                                       later=later)
        except StorageError as exc:
            # Disk full / no permission: answer "out of resources" and stop the retrieve cleanly.
            outcome.error = str(exc)
            if not self.cancel.cancelled:  # (a user's cancel stays the user's)
                self._stopped = True  # cancelled by us, not by the user: reported as the error it is
            self.cancel.cancel()
            return self._fail(outcome, uid, STORE_OUT_OF_RESOURCES, str(exc))
        except Exception as exc:  # noqa: BLE001 - a handler must never raise into pynetdicom
            LOG.exception("Unexpected error storing %s", uid)
            return self._fail(outcome, uid, STORE_PROCESSING_FAILURE, f"unexpected error: {exc}")
        outcome.bytes_received += stored.size_bytes
        self._count_down(outcome)
        if warning:
            issue = SubOperationIssue(uid, describe(STORE_WARNING_MISMATCH), warning)
            outcome.warning += 1
            outcome.warnings.append(issue)
        else:
            outcome.completed += 1
        snapshot = self._snapshot(outcome)
        tell = functools.partial(self._tell_stored, outcome, stored, issue if warning else None, snapshot)
        if later is None:
            tell()
        else:
            later(tell)
        return STORE_WARNING_MISMATCH if warning else STORE_SUCCESS

    def _tell_stored(self, outcome: RequestOutcome, stored: StoredInstance, issue: SubOperationIssue | None,
                     snapshot: RetrievalProgress) -> None:
        self.listener.instance_stored(outcome, stored)
        if issue is not None:
            self.listener.sub_operation_warning(outcome, issue)
        self.listener.progress(snapshot)

    # -- the C-GETs ---------------------------------------------------------------------------------
    def _get(self, assoc: Association, outcome: RequestOutcome, identifier: Dataset) -> None:
        """One C-GET; updates ``outcome`` (status, PACS counts, failures the PACS reports)."""
        self._msg_id += 1
        last_message = time.monotonic()
        final: Dataset | None = None
        code: int | None = None
        self._counted_before = dict(outcome.pacs_counts)  # a request may need several C-GETs (a re-fetch)
        answered = False  # any response to this C-GET
        with CancelWatcher(assoc, self._msg_id, self.cancel, self.options.cancel_grace,
                           StudyRootQueryRetrieveInformationModelGet) as watcher:
            for status, ident in assoc.send_c_get(identifier, StudyRootQueryRetrieveInformationModelGet,
                                                  msg_id=self._msg_id):
                code = _status_code(status)
                if code is not None:
                    if not answered:
                        self._answered_gets += 1
                    answered = True
                    self._pacs_counts(outcome, status)
                if code is not None and describe(code).category is Category.PENDING:
                    last_message = time.monotonic()
                    self.listener.progress(self._snapshot(outcome))
                    continue
                final = ident
                break
        outcome.status = describe(code) if code is not None else None
        if code is None:
            silent = time.monotonic() - max(last_message, self._last_activity)
            oversized = refused_pdu(assoc)
            ended = how_it_ended(assoc)
            if oversized is not None:
                outcome.error = (f"we aborted the association: the PACS sent a PDU of {oversized[0]:,} bytes, more "
                                 f"than the {oversized[1]:,} we accept")
            elif watcher.aborted:
                outcome.error = (f"the PACS did not end the retrieve within {self.options.cancel_grace:g} s of "
                                 "the cancel request: association aborted")
            elif silent >= self.node.dimse_timeout * 0.9:
                outcome.error = (f"the PACS sent nothing for {self.node.dimse_timeout:g} s: retrieve timed out "
                                 "(association aborted)")
            elif (ended == "peer" and not answered and not self._answered_gets
                  and outcome.completed + outcome.failed + outcome.warning + outcome.skipped == 0):
                # The first C-GET of the association, aborted before anything: how Orthanc refuses it.
                outcome.refused = True
                outcome.error = (f"the PACS aborted the association in answer to the C-GET request: it may not "
                                 f"allow C-GET for calling AE {self.node.calling_ae!r} (Orthanc does this): "
                                 f"{ALLOW_C_GET}")
            elif ended == "peer":
                outcome.error = "the PACS aborted the association"
            elif ended == "ours":
                outcome.error = ("we aborted the association: the PACS sent a message that was malformed or could "
                                 "not come then (-v logs it)")
            else:
                outcome.error = "the connection to the PACS closed without an A-ABORT (PACS stopped or network lost)"
            if outcome.completed + outcome.warning:
                outcome.error += f"; the {outcome.completed + outcome.warning} instance(s) received are kept"
            return
        info = describe(code)
        if info.category is Category.CANCEL or watcher.sent:
            outcome.cancelled = True
        failed_list = final.get("FailedSOPInstanceUIDList") if final is not None else None
        if failed_list:
            ours = {f.sop_instance_uid for f in outcome.failures}
            for uid in [failed_list] if isinstance(failed_list, str) else failed_list:
                if str(uid) not in ours:
                    self._fail(outcome, str(uid), code, "the PACS reports it could not send this instance")
        if info.category is Category.FAILURE and not outcome.error:
            outcome.error = f"the PACS failed the C-GET: {info}"

    def _pacs_counts(self, outcome: RequestOutcome, status: Dataset) -> None:
        counts = {}
        for key, name in (("NumberOfRemainingSuboperations", "remaining"),
                          ("NumberOfCompletedSuboperations", "completed"),
                          ("NumberOfFailedSuboperations", "failed"),
                          ("NumberOfWarningSuboperations", "warning")):
            value = status.get(key)
            if value is not None:
                counts[name] = int(value) + (self._counted_before.get(name, 0) if name != "remaining" else 0)
        if counts:
            earlier = {k: v for k, v in self._counted_before.items() if k != "remaining"}
            outcome.pacs_counts = {**earlier, **counts}
        if "remaining" in counts:
            outcome.remaining = counts["remaining"]

    def _check_counts(self, work: _Work) -> None:
        outcome, pacs = work.outcome, work.outcome.pacs_counts
        if not pacs or outcome.status is None:
            return
        # What the PACS sent and we answered with success: stored, or already on disk (skipped on arrival).
        ours = outcome.completed + outcome.warning + outcome.skipped - work.skipped_in_plan
        theirs = pacs.get("completed", 0) + pacs.get("warning", 0)
        if "completed" in pacs and theirs != ours and not outcome.cancelled and not self._stopped:
            outcome.notes.append(f"the PACS counted {theirs} sub-operation(s) done, we received {ours}")

    def _not_found(self, work: _Work) -> None:
        """Planning's C-FIND matched nothing and the C-GETs brought nothing: say so (a PACS answers such a
        C-GET with success and no sub-operations, or with a failure), rather than report an empty success."""
        outcome = work.outcome
        if (outcome.cancelled or (outcome.error and outcome.status is None)
                or outcome.completed + outcome.failed + outcome.warning + outcome.skipped):
            return
        status = outcome.status
        if work.found is not False:  # it matched (or nobody asked): was anything at all listed?
            if work.expected and not outcome.error and status is not None and status.category is Category.SUCCESS:
                outcome.error = (f"the PACS sent nothing: {work.expected} instance(s) were listed, and its C-GET "
                                 f"ended {status} without a single sub-operation")
            return
        if status is not None and status.category is Category.FAILURE and status.code != 0xC000:
            return  # a refusal stays one (an empty listing may also be a PACS without IMAGE-level queries)
        answer = f"; the C-GET was answered {status}" if status is not None else ""
        outcome.not_found = True
        outcome.error = f"not found on the PACS: its C-FIND matched no {outcome.request.describe()}{answer}"

    def _run_work(self, assoc: Association, work: _Work) -> None:
        outcome = work.outcome
        outcome.attempted = True
        self._current = outcome
        start = time.monotonic()
        self._started = start
        outcome.remaining = work.expected
        self.listener.progress(self._snapshot(outcome))
        try:
            for identifier in work.identifiers:
                if self.cancel.cancelled:
                    outcome.cancelled = True
                    break
                self._get(assoc, outcome, identifier)
                if outcome.error and outcome.status is None:
                    break
        finally:
            self._current = None
            outcome.seconds = time.monotonic() - start
            if outcome.cancelled:
                # The PACS's last "remaining" can lag behind what still arrived after the cancel (Orthanc:
                # 51 left with 11 of 61 stored): what is left is at most what was asked for (instances
                # already on disk are not) minus what ended.
                done = outcome.completed + outcome.failed + outcome.warning
                if outcome.remaining is not None and work.expected is not None:
                    outcome.remaining = max(0, min(outcome.remaining, work.expected - done))
            elif (outcome.remaining is not None and outcome.status is not None
                  and outcome.status.category is not Category.PENDING):
                outcome.remaining = 0
            if self._stopped:
                outcome.cancelled = False  # the C-CANCEL was ours: the outcome's error says why
            self._check_counts(work)
            self._not_found(work)
            self._sync(outcome)
            self.listener.progress(self._snapshot(outcome))
            self.listener.request_finished(outcome)

    def _sync(self, outcome: RequestOutcome) -> None:
        """Flush the request's files to the disk before saying it is done (one flush, not one per file)."""
        try:
            self.writer.sync()
        except StorageError as exc:
            outcome.error = outcome.error or f"the received files could not be flushed to the disk: {exc}"

    def run(self) -> RetrievalSummary:
        """Plan, then run every request on as few associations as the context limit allows."""
        started = time.monotonic()
        summary = RetrievalSummary(str(self.writer.dest), [])
        try:
            # Files are fsynced together at the end of each request, not one by one (StudyWriter).
            with self.writer.deferred_sync():
                self._run_all(summary)
        except PacsPullError as exc:
            summary.error = exc
        finally:
            summary.seconds = time.monotonic() - started
            summary.cancelled = not self._stopped and (self.cancel.cancelled
                                                       or any(o.cancelled for o in summary.outcomes))
            for outcome in summary.outcomes:
                if not outcome.attempted and summary.error is None:
                    outcome.error = "not attempted (an earlier request ended the association, or cancelled)"
            if summary.error is None:
                summary.error = self._service_error(summary)
            self.listener.finished(summary)
        return summary

    def _run_all(self, summary: RetrievalSummary) -> None:
        works = self._plan()
        summary.outcomes = [w.outcome for w in works]
        pending = [w for w in works if w.identifiers]
        for work in works:
            if not work.identifiers:
                work.outcome.attempted = True
                work.outcome.status = describe(0)
                work.outcome.remaining = 0
                self.listener.request_finished(work.outcome)
        for plan, batch in self._group(pending):
            if self.cancel.cancelled:
                break
            self._run_batch(plan, batch)
            if any(w.outcome.error and w.outcome.status is None for w in batch):
                break  # the association died: the rest stay not attempted, and say so

    def _service_error(self, summary: RetrievalSummary) -> PacsPullError | None:
        """Map the worst request outcome onto the error the CLI reports (exit 3 or 4)."""
        for outcome in summary.outcomes:
            if outcome.refused:  # an abort in answer to the C-GET: the service refused, as C-ECHO and C-FIND say
                return ServiceFailed(outcome.error or "the PACS refused the C-GET", stage="get")
        for outcome in summary.outcomes:
            if outcome.error and outcome.status is None and not outcome.cancelled and outcome.attempted:
                return ConnectionFailed(outcome.error, stage="get")
        for outcome in summary.outcomes:
            if (outcome.status is not None and outcome.status.category is Category.FAILURE and not outcome.not_found
                    and outcome.completed == 0 and outcome.status.code != STORE_OUT_OF_RESOURCES
                    and not outcome.failures):
                return ServiceFailed(f"{outcome.request.describe()}: the PACS refused the C-GET: {outcome.status}",
                                     stage="get")
        return None

    def _group(self, works: Sequence[_Work]) -> Iterable[tuple[ContextPlan, list[_Work]]]:
        """Batch requests so that each batch's storage classes fit one association (128 contexts).

        A request whose classes are unknown gets the common classes. Requests are kept whole: a single
        request needing more than 127 classes is not split (no real study comes near that).
        """
        limit = MAX_CONTEXTS - 1
        batches: list[tuple[list[str], list[_Work]]] = []
        for work in works:
            classes = list(work.sop_classes or DEFAULT_STORAGE_CLASSES)
            if batches:
                merged = list(dict.fromkeys(batches[-1][0] + classes))
                if len(merged) <= limit:
                    batches[-1] = (merged, batches[-1][1] + [work])
                    continue
            batches.append((list(dict.fromkeys(classes)), [work]))
        for classes, batch in batches:
            yield plan_contexts(classes, uncompressed_only=self.options.uncompressed_only)[0], batch

    def _run_batch(self, plan: ContextPlan, batch: list[_Work]) -> None:
        assoc = open_association(self.node, plan.contexts, ext_neg=plan.roles,
                                 evt_handlers=[(evt.EVT_C_STORE, self._on_c_store),
                                               (evt.EVT_CONN_OPEN, _fast_transport, [str(self.writer.dest)])])
        self._answered_gets = 0  # C-GETs this association answered: an abort after one is no refusal
        try:
            results = context_results(assoc, scp_roles=plan.sop_classes)
            rejected = [r.describe() for r in results if not r.accepted or r.scp_role is False]
            self.context_report = [r.describe() for r in results]
            if not any(r.accepted for r in results if r.abstract_syntax == StudyRootQueryRetrieveInformationModelGet):
                raise AssociationRejected(
                    f"{self.node.address} does not accept Study Root C-GET",
                    hint=f"the PACS cannot send studies by C-GET: {ALLOW_C_GET}",
                    stage="associate")
            if rejected:
                LOG.info("Contexts not accepted: %s", "; ".join(rejected))
            for work in batch:
                if self.cancel.cancelled:
                    break
                self._index = self.requests.index(work.outcome.request) + 1
                self._run_work(assoc, work)
                if work.outcome.error and work.outcome.status is None:
                    break
        finally:
            close(assoc)
