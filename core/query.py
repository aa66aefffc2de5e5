"""Study Root C-FIND at study, series and image level.

``QueryRequest`` holds what the user asked for (validated); ``find`` turns it into identifiers, runs the
C-FIND(s) and decodes the answers into frozen rows. A hierarchical PACS (dcmqrscp) only answers a series
query for one study, so series and image queries without UIDs cascade: studies first, then each study.
"""

from __future__ import annotations

import datetime as dt
import enum
import logging
import re
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field, fields
from typing import Any, ClassVar

from pydicom.dataset import Dataset
from pydicom.valuerep import PersonName
from pynetdicom import Association
from pynetdicom.sop_class import StudyRootQueryRetrieveInformationModelFind

from pacspull.core.association import CancelWatcher, associated, build_contexts, no_final_answer
from pacspull.core.errors import InvalidInput, ServiceFailed
from pacspull.core.nodes import Node
from pacspull.core.progress import CancelToken
from pacspull.core.status import Category, describe

LOG = logging.getLogger(__name__)
DEFAULT_LIMIT = 1000
CANCEL_GRACE = 5.0  # seconds a PACS gets to end a query after C-CANCEL before we abort
_DATE = re.compile(r"^\d{8}$")
_UID = re.compile(r"^[0-9]+(\.[0-9]+)*$")
_MODALITY = re.compile(r"^[A-Z0-9_]{1,16}$")
DATE_HELP = "YYYYMMDD, YYYYMMDD-YYYYMMDD, today, yesterday, last7 or last30"


class Level(str, enum.Enum):
    """Query/retrieve level (PS3.4 C.6.2: Study Root)."""

    STUDY = "STUDY"
    SERIES = "SERIES"
    IMAGE = "IMAGE"


@dataclass(frozen=True)
class DateRange:
    """An inclusive date range; either end may be open."""

    start: dt.date | None
    end: dt.date | None

    def to_dicom(self) -> str:
        """The DA range matching value (PS3.4 C.2.2.2.5)."""
        fmt = "%Y%m%d"
        start = self.start.strftime(fmt) if self.start else ""
        end = self.end.strftime(fmt) if self.end else ""
        return start if self.start == self.end else f"{start}-{end}"


def _parse_day(text: str) -> dt.date:
    if not _DATE.match(text):
        raise ValueError(text)
    return dt.datetime.strptime(text, "%Y%m%d").date()


def parse_date(text: str, *, today: dt.date | None = None) -> DateRange | None:
    """Parse a study date filter: YYYYMMDD, a range with '-', or a preset; '' or 'any' is no filter."""
    value = (text or "").strip().lower()
    today = today or dt.date.today()
    presets = {
        "today": (today, today),
        "yesterday": (today - dt.timedelta(days=1), today - dt.timedelta(days=1)),
        "last7": (today - dt.timedelta(days=6), today),
        "last30": (today - dt.timedelta(days=29), today),
    }
    if value in ("", "any"):
        return None
    if value in presets:
        return DateRange(*presets[value])
    try:
        if "-" in value:
            left, _, right = value.partition("-")
            rng = DateRange(_parse_day(left) if left else None, _parse_day(right) if right else None)
            if rng.start is None and rng.end is None:
                raise ValueError(value)
        else:
            day = _parse_day(value)
            rng = DateRange(day, day)
    except ValueError:
        raise InvalidInput("date", f"must be {DATE_HELP} (a real calendar date)", value=text) from None
    if rng.start and rng.end and rng.start > rng.end:
        raise InvalidInput("date", "the range must not end before it starts", value=text)
    return rng


def _check_uid(value: str, field_name: str) -> str:
    value = value.strip()
    if len(value) > 64 or not _UID.match(value):
        raise InvalidInput(field_name, "must be a DICOM UID: digits and dots, at most 64 characters", value=value)
    return value


def _check_text(value: str, field_name: str, max_len: int) -> str:
    value = (value or "").strip()
    if any(ord(c) < 0x20 for c in value) or "\\" in value:
        raise InvalidInput(field_name, "must not contain control characters or a backslash", value=value)
    if len(value) > max_len:
        raise InvalidInput(field_name, f"must be at most {max_len} characters", value=value)
    return value


@dataclass(frozen=True)
class QueryRequest:
    """What the user searches for. Empty fields match anything; text fields accept * and ? wildcards."""

    level: Level = Level.STUDY
    patient_name: str = ""
    patient_id: str = ""
    accession: str = ""
    date: DateRange | None = None
    modalities: tuple[str, ...] = ()
    study_description: str = ""
    study_uids: tuple[str, ...] = ()
    series_uids: tuple[str, ...] = ()
    limit: int = DEFAULT_LIMIT

    def __post_init__(self) -> None:
        object.__setattr__(self, "level", Level(self.level))
        object.__setattr__(self, "patient_name", _check_text(self.patient_name, "patient name", 320))
        object.__setattr__(self, "patient_id", _check_text(self.patient_id, "patient ID", 64))
        object.__setattr__(self, "accession", _check_text(self.accession, "accession number", 16))
        object.__setattr__(self, "study_description", _check_text(self.study_description, "study description", 64))
        mods = tuple(m.strip().upper() for m in self.modalities if m.strip())
        for mod in mods:
            if not _MODALITY.match(mod):
                raise InvalidInput("modality", "must be a code such as CT, MR, US (letters and digits)", value=mod)
        object.__setattr__(self, "modalities", mods)
        object.__setattr__(self, "study_uids", tuple(_check_uid(u, "study UID") for u in self.study_uids))
        object.__setattr__(self, "series_uids", tuple(_check_uid(u, "series UID") for u in self.series_uids))
        if not 1 <= self.limit <= 1_000_000:
            raise InvalidInput("limit", "must be from 1 to 1000000", value=self.limit)


def _keyword(name: str) -> Any:
    return field(default=None, metadata={"keyword": name})


class _Row:
    """Common decoding for result rows: one dataclass field per DICOM keyword (``metadata['keyword']``)."""

    level: ClassVar[Level]

    @classmethod
    def keywords(cls) -> list[str]:
        """The DICOM keywords this row holds, in column order."""
        return [f.metadata["keyword"] for f in fields(cls)]  # type: ignore[arg-type]

    @classmethod
    def from_dataset(cls, ds: Dataset) -> Any:
        """Decode a C-FIND response identifier; missing keys become None."""
        values = {f.name: _decode(ds, f.metadata["keyword"]) for f in fields(cls)}  # type: ignore[arg-type]
        return cls(**values)

    def to_json(self) -> dict[str, Any]:
        """The row keyed by DICOM keyword (what ``pacspull find --json`` prints)."""
        return {f.metadata["keyword"]: getattr(self, f.name) for f in fields(self)}  # type: ignore[arg-type]


_MULTI = {"ModalitiesInStudy", "SOPClassesInStudy"}
_INTS = {
    "NumberOfStudyRelatedSeries",
    "NumberOfStudyRelatedInstances",
    "NumberOfSeriesRelatedInstances",
    "SeriesNumber",
    "InstanceNumber",
    "NumberOfFrames",
}


def _decode(ds: Dataset, keyword: str) -> Any:
    """One value as plain Python: text, int, list of text, or None when absent, empty or undecodable.

    A PACS may send anything (bytes its character set cannot hold, an unknown character set, a number
    that is not one): such a value becomes None rather than an error that loses the whole answer.
    """
    if keyword not in ds:
        return None
    try:
        value = ds[keyword].value
        return _plain(keyword, value)
    except (ValueError, TypeError, LookupError, UnicodeError, AttributeError, OverflowError) as exc:
        LOG.debug("Undecodable %s in a C-FIND answer: %s", keyword, exc)
        return None


def _plain(keyword: str, value: Any) -> Any:
    if value is None or value == "" or value == b"":
        return [] if keyword in _MULTI else None
    if keyword in _MULTI:
        return [str(v) for v in value] if not isinstance(value, (str, bytes)) else [str(value)]
    if keyword in _INTS:
        try:
            return int(value)
        except (TypeError, ValueError):
            return None
    if isinstance(value, PersonName):
        return str(value)
    if isinstance(value, bytes):
        return value.decode("latin-1")
    if not isinstance(value, (str, int, float)):
        return "\\".join(str(v) for v in value)
    return str(value) if not isinstance(value, str) else value


@dataclass(frozen=True)
class StudyRow(_Row):
    """One study as the PACS described it."""

    level: ClassVar[Level] = Level.STUDY
    patient_name: str | None = _keyword("PatientName")
    patient_id: str | None = _keyword("PatientID")
    birth_date: str | None = _keyword("PatientBirthDate")
    sex: str | None = _keyword("PatientSex")
    study_uid: str | None = _keyword("StudyInstanceUID")
    study_date: str | None = _keyword("StudyDate")
    study_time: str | None = _keyword("StudyTime")
    accession: str | None = _keyword("AccessionNumber")
    description: str | None = _keyword("StudyDescription")
    study_id: str | None = _keyword("StudyID")
    referring: str | None = _keyword("ReferringPhysicianName")
    modalities: list[str] | None = _keyword("ModalitiesInStudy")
    series_count: int | None = _keyword("NumberOfStudyRelatedSeries")
    instance_count: int | None = _keyword("NumberOfStudyRelatedInstances")
    sop_classes: list[str] | None = _keyword("SOPClassesInStudy")


@dataclass(frozen=True)
class SeriesRow(_Row):
    """One series of a study."""

    level: ClassVar[Level] = Level.SERIES
    study_uid: str | None = _keyword("StudyInstanceUID")
    series_uid: str | None = _keyword("SeriesInstanceUID")
    number: int | None = _keyword("SeriesNumber")
    modality: str | None = _keyword("Modality")
    description: str | None = _keyword("SeriesDescription")
    series_date: str | None = _keyword("SeriesDate")
    body_part: str | None = _keyword("BodyPartExamined")
    instance_count: int | None = _keyword("NumberOfSeriesRelatedInstances")


@dataclass(frozen=True)
class InstanceRow(_Row):
    """One instance (image, SR, ...) of a series."""

    level: ClassVar[Level] = Level.IMAGE
    study_uid: str | None = _keyword("StudyInstanceUID")
    series_uid: str | None = _keyword("SeriesInstanceUID")
    sop_instance_uid: str | None = _keyword("SOPInstanceUID")
    sop_class_uid: str | None = _keyword("SOPClassUID")
    number: int | None = _keyword("InstanceNumber")
    frames: int | None = _keyword("NumberOfFrames")


ROW_TYPES: dict[Level, type[_Row]] = {Level.STUDY: StudyRow, Level.SERIES: SeriesRow, Level.IMAGE: InstanceRow}
Row = StudyRow | SeriesRow | InstanceRow


def _needs_charset(values: Iterable[str]) -> bool:
    return any(any(ord(c) > 0x7E for c in v) for v in values)


def build_identifier(
    request: QueryRequest,
    level: Level,
    *,
    study_uid: str | None = None,
    series_uid: str | None = None,
    charset: str = "ISO_IR 192",
) -> Dataset:
    """The C-FIND identifier: the request's matching keys plus empty return keys for ``level``'s row."""
    ds = Dataset()
    ds.QueryRetrieveLevel = level.value
    for keyword in ROW_TYPES[level].keywords():
        setattr(ds, keyword, "")
    if level is Level.STUDY:
        ds.PatientName = request.patient_name
        ds.PatientID = request.patient_id
        ds.AccessionNumber = request.accession
        ds.StudyDescription = request.study_description
        ds.StudyDate = request.date.to_dicom() if request.date else ""
        ds.ModalitiesInStudy = list(request.modalities) if request.modalities else ""
        ds.StudyInstanceUID = list(request.study_uids) if request.study_uids else ""
        if _needs_charset([request.patient_name, request.patient_id, request.accession, request.study_description]):
            ds.SpecificCharacterSet = charset
    else:
        # Study Root, hierarchical model: lower levels carry the unique keys of the levels above.
        ds.StudyInstanceUID = study_uid or ""
        if level is Level.SERIES:
            if len(request.modalities) == 1:
                ds.Modality = request.modalities[0]
            ds.SeriesInstanceUID = list(request.series_uids) if request.series_uids else ""
        else:
            ds.SeriesInstanceUID = series_uid or ""
    return ds


@dataclass
class FindResult:
    """Rows found, and whether they are not all there (our cap, the PACS's, or a cancel)."""

    rows: list[Any] = field(default_factory=list)
    capped: bool = False
    cancelled: bool = False
    warnings: list[str] = field(default_factory=list)


class _Finder:
    """Runs C-FINDs on one association, honouring the row limit and the cancel token."""

    def __init__(
        self,
        assoc: Association,
        node: Node,
        cancel: CancelToken | None,
        limit: int,
        on_row: Callable[[Any], None] | None,
    ) -> None:
        self.assoc = assoc
        self.node = node
        self.cancel = cancel
        self.limit = limit
        self.on_row = on_row
        self.result = FindResult()
        self._msg_id = 0

    @property
    def done(self) -> bool:
        if self.cancel is not None and self.cancel.cancelled:
            self.result.cancelled = True
        return self.result.capped or self.result.cancelled

    def run(
        self,
        identifier: Dataset,
        row_type: type[_Row],
        *,
        collect: bool = True,
        keep: Callable[[Any], bool] | None = None,
    ) -> list[Any]:
        """One C-FIND; return its rows that pass ``keep``.

        ``collect`` rows are results (counted against the limit); the others are steps of a cascade
        (studies looked up to query their series).
        """
        self._msg_id += 1
        rows: list[Any] = []
        stop_sent = False
        cancel = self.cancel or CancelToken()
        heard = time.monotonic()  # the request, then each response: the PACS's silence counts from there
        answered = False
        responses = self.assoc.send_c_find(
            identifier, StudyRootQueryRetrieveInformationModelFind, msg_id=self._msg_id
        )
        with CancelWatcher(self.assoc, self._msg_id, cancel, CANCEL_GRACE,
                           StudyRootQueryRetrieveInformationModelFind) as watcher:
            for status, ds in responses:
                code = int(status.Status) if status is not None and "Status" in status else None
                info = describe(code)
                if code is not None:
                    heard, answered = time.monotonic(), True
                if info.category is Category.PENDING:
                    if stop_sent or watcher.sent or ds is None:
                        continue
                    row = row_type.from_dataset(ds)
                    if keep is not None and not keep(row):
                        continue
                    rows.append(row)
                    if collect:
                        self.result.rows.append(row)
                        if self.on_row:
                            self.on_row(row)
                        if len(self.result.rows) >= self.limit:
                            # PS3.4 C.4.1.2.3: C-CANCEL; the PACS then ends with 0xFE00 (or success).
                            self.result.capped = True
                            self.assoc.send_c_cancel(self._msg_id, query_model=StudyRootQueryRetrieveInformationModelFind)
                            stop_sent = True
                    continue
                if watcher.sent:
                    self.result.cancelled = True
                if info.category in (Category.SUCCESS, Category.CANCEL):
                    break
                if code is None:
                    if watcher.sent or stop_sent:
                        break  # cancelled (by the user, or at the row cap) and then no final answer: rows kept
                    raise no_final_answer(
                        self.node, self.assoc, "C-FIND", heard, answered=answered, stage="find",
                        timeout_hint="the query may be too broad or the PACS slow: narrow it or raise the timeout "
                        f"({self.node.dimse_timeout:g} s)")
                if 0xA700 <= code <= 0xA7FF:
                    # Some PACS end an over-broad query with "out of resources" after the rows they allow.
                    self.result.capped = True
                    self.result.warnings.append(f"the PACS stopped the query: {info}")
                    break
                raise ServiceFailed(f"{self.node.address} refused the C-FIND: {info}", stage="find")
        return rows


def find(
    node: Node,
    request: QueryRequest,
    *,
    cancel: CancelToken | None = None,
    on_row: Callable[[Any], None] | None = None,
) -> FindResult:
    """Run the request's query on one association; ``on_row`` sees each row as it arrives.

    Series and image queries without a study UID cascade: studies matching the request first, then the
    series (and instances) of each, so hierarchical PACS such as dcmqrscp answer them too.
    """
    with associated(node, build_contexts([StudyRootQueryRetrieveInformationModelFind])) as assoc:
        finder = _Finder(assoc, node, cancel, request.limit, on_row)
        _cascade(finder, request)
        return finder.result


def _cascade(finder: _Finder, request: QueryRequest) -> None:
    charset = finder.node.query_charset
    if request.level is Level.STUDY:
        finder.run(build_identifier(request, Level.STUDY, charset=charset), StudyRow)
        return
    study_uids = list(request.study_uids)
    if not study_uids:
        found = finder.run(build_identifier(request, Level.STUDY, charset=charset), StudyRow, collect=False)
        study_uids = [s.study_uid for s in found if s.study_uid]

    def wanted(row: SeriesRow) -> bool:
        # Modality is single-valued at series level: several wanted modalities are matched here.
        return not request.modalities or row.modality in request.modalities

    for study_uid in study_uids:
        if finder.done:
            return
        identifier = build_identifier(request, Level.SERIES, study_uid=study_uid)
        series = finder.run(identifier, SeriesRow, collect=request.level is Level.SERIES, keep=wanted)
        if request.level is Level.SERIES:
            continue
        for s in series:
            if finder.done:
                return
            identifier = build_identifier(request, Level.IMAGE, study_uid=study_uid, series_uid=s.series_uid)
            finder.run(identifier, InstanceRow)
