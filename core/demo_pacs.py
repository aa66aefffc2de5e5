"""An embedded Query/Retrieve SCP: the first-run demo node, and a fault-injectable peer for tests.

``DemoPacs`` serves a set of Part-10 files (by default the generated samples of ``core.samples``) over
C-ECHO, C-FIND (Patient Root and Study Root, PATIENT/STUDY/SERIES/IMAGE) and C-GET (same models,
STUDY/SERIES/IMAGE, and PATIENT in Patient Root). It indexes the file headers once at ``start()`` and
keeps the index in memory, read-only, so any number of associations may query it at once.

Matching (PS3.4 C.2.2.2), as implemented here:

* an empty key, or ``*``, matches everything (universal matching);
* ``UI`` keys match any of their backslash-separated values exactly (list of UID matching);
* ``DA``/``TM``/``DT`` keys match a single value or a range ``A-B``, ``-B``, ``A-`` (bounds included;
  a partial time such as ``1200`` as an upper bound covers ``12:00:59.999999``). Date and time are
  matched independently, not as a combined date-time range;
* other text keys match a single value with the wildcards ``*`` and ``?``; several backslash-separated
  values match if any of them does. ``PN`` matching ignores case (as Orthanc does by default) and a
  pattern is tried against the whole name and against each component group, so ``山田*`` finds
  ``Yamada^Tarou=山田^太郎=...``; every other VR is case-sensitive;
* a non-empty key never matches a record that lacks the attribute or holds it empty;
* ``ModalitiesInStudy`` and ``SOPClassesInStudy`` match if any value of the study matches any key value;
  the ``NumberOf...Related...`` keys, ``RetrieveAETitle``, ``InstanceAvailability`` and
  ``AvailableTransferSyntaxUID`` (IMAGE level) are computed and returned but never used to filter;
  sequence keys are not matched and are returned with the record's items (or empty).

A response holds exactly the keys of the request, ``QueryRetrieveLevel``, and the
``SpecificCharacterSet`` of the matched record's files (absent for the default repertoire), so non-ASCII
names reach the client encoded as they were stored. Attributes of a level below the queried one are
returned empty.

C-GET sends every instance as a C-STORE sub-operation on the same association, with the stored
transfer syntax when the client accepted it (compressed ones included), else converted: pynetdicom
switches between uncompressed syntaxes itself, and RLE is decoded here (pydicom needs no plugin for
it); other compressed instances then fail their sub-operation. Storage contexts are accepted (SCU role
for us) only for the SOP classes the files hold. Accepted sockets have Nagle's algorithm off.

Threads: pynetdicom runs the handlers on each association's own thread; they only read the index and
the current ``Faults`` (an immutable value swapped atomically), so changing ``pacs.faults`` at runtime
is safe and takes effect at the next request (and, for ``reject_association``/``refuse_sop_classes``,
the next association). One session-scoped server can therefore serve many tests; starting a new one is
also cheap (about 0.1-0.3 s for the 111 sample files, mostly reading their headers).

Logging: pynetdicom's identifier dumps (patient data) are off unless the user opts in: ``core.privacy``
owns that process-wide switch, for this server and the client alike.
"""

from __future__ import annotations

import copy
import logging
import re
import socket
import ssl
import threading
import time
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from enum import Enum
from functools import lru_cache
from pathlib import Path
from typing import Any

from pydicom import config as pydicom_config
from pydicom import dcmread
from pydicom.datadict import tag_for_keyword
from pydicom.dataelem import DataElement
from pydicom.dataset import Dataset
from pydicom.errors import InvalidDicomError
from pydicom.multival import MultiValue
from pydicom.pixels import get_decoder
from pydicom.sequence import Sequence
from pydicom.tag import BaseTag, Tag
from pydicom.uid import (
    UID,
    DeflatedExplicitVRLittleEndian,
    ExplicitVRLittleEndian,
    ImplicitVRLittleEndian,
)
from pynetdicom import AE, evt
from pynetdicom.association import Association
from pynetdicom.presentation import (
    PresentationContext,
    build_context,
)
from pynetdicom.sop_class import (
    PatientRootQueryRetrieveInformationModelFind,
    PatientRootQueryRetrieveInformationModelGet,
    StudyRootQueryRetrieveInformationModelFind,
    StudyRootQueryRetrieveInformationModelGet,
    Verification,
)
from pynetdicom.transport import ThreadedAssociationServer

from pacspull.core import privacy, samples  # noqa: F401 - privacy: identifier dumps off on import
from pacspull.core._pynetdicom_compat import wake_response_wait
from pacspull.core.contexts import COMPRESSED, UNCOMPRESSED
from pacspull.core.nodes import data_dir

__all__ = ["DemoPacs", "Faults", "Level", "default_data_dir", "HOSTILE_VALUES"]

log = logging.getLogger(__name__)


# Storage transfer syntaxes in our order of preference: the acceptor picks the first of *its* list
# that the requestor proposed in a context, so uncompressed comes first and compressed instances are
# sent as stored whenever the client proposes their syntax in a context of its own.
STORAGE_TRANSFER_SYNTAXES: tuple[UID, ...] = (*UNCOMPRESSED, *COMPRESSED)
_QUERY_TRANSFER_SYNTAXES = (
    ExplicitVRLittleEndian,
    ImplicitVRLittleEndian,
    DeflatedExplicitVRLittleEndian,
)

# With require_calling_aet set to a title no client uses, pynetdicom rejects every association with
# result 1 (rejected-permanent), source 1 (service user), reason 3 (calling AE title not recognised).
_NOBODY_AET = "PACSPULL-NOBODY"

# Statuses (PS3.4 C.4.1.1.4 and C.4.3.1.4) with their meanings.
_PENDING = 0xFF00  # match or sub-operation continuing
_CANCEL = 0xFE00  # matching or sub-operations terminated due to C-CANCEL
_BAD_IDENTIFIER = 0xA900  # identifier does not match SOP class
_UNABLE_TO_PROCESS = 0xC000  # unable to process (the identifier could not be decoded)

MISLABELLED_SOP_CLASS = UID("1.2.840.10008.5.1.4.1.1.7")  # Secondary Capture Image Storage
"""What the data set of an instance in ``Faults.mislabel_sop_instance_uids`` says its SOP class is."""


class Level(str, Enum):
    """Query/Retrieve level, in hierarchy order."""

    PATIENT = "PATIENT"
    STUDY = "STUDY"
    SERIES = "SERIES"
    IMAGE = "IMAGE"

    @property
    def depth(self) -> int:
        """0 for PATIENT ... 3 for IMAGE."""
        return _LEVELS.index(self)


_LEVELS = (Level.PATIENT, Level.STUDY, Level.SERIES, Level.IMAGE)
_UNIQUE_KEY = {
    Level.PATIENT: "PatientID",
    Level.STUDY: "StudyInstanceUID",
    Level.SERIES: "SeriesInstanceUID",
    Level.IMAGE: "SOPInstanceUID",
}
_MODEL_LEVELS = {
    PatientRootQueryRetrieveInformationModelFind: _LEVELS,
    PatientRootQueryRetrieveInformationModelGet: _LEVELS,
    StudyRootQueryRetrieveInformationModelFind: _LEVELS[1:],
    StudyRootQueryRetrieveInformationModelGet: _LEVELS[1:],
}


def _tags(*keywords: str) -> frozenset[BaseTag]:
    return frozenset(Tag(tag_for_keyword(kw)) for kw in keywords)


# The level each attribute belongs to (PS3.4 C.6.1.1 and C.6.2.1 keys, plus the IE modules of
# PS3.3 that a PACS keeps per patient, study and series). Anything else is instance-level.
_PATIENT_ATTRIBUTES = _tags(
    "PatientName", "PatientID", "IssuerOfPatientID", "IssuerOfPatientIDQualifiersSequence",
    "PatientBirthDate", "PatientBirthTime", "PatientSex", "OtherPatientIDsSequence",
    "OtherPatientNames", "EthnicGroup", "PatientComments", "PatientSpeciesDescription",
    "PatientBreedDescription", "ResponsiblePerson", "PatientIdentityRemoved",
)
_STUDY_ATTRIBUTES = _tags(
    "StudyInstanceUID", "StudyDate", "StudyTime", "AccessionNumber",
    "IssuerOfAccessionNumberSequence", "StudyID", "StudyDescription", "ReferringPhysicianName",
    "PhysiciansOfRecord", "NameOfPhysiciansReadingStudy", "ProcedureCodeSequence",
    "AdmittingDiagnosesDescription", "PatientAge", "PatientSize", "PatientWeight", "Occupation",
    "AdditionalPatientHistory", "ReasonForPerformedProcedureCodeSequence",
)
_SERIES_ATTRIBUTES = _tags(
    "SeriesInstanceUID", "SeriesNumber", "Modality", "SeriesDescription", "SeriesDate",
    "SeriesTime", "BodyPartExamined", "ProtocolName", "Laterality", "OperatorsName",
    "PerformingPhysicianName", "PerformedProcedureStepStartDate",
    "PerformedProcedureStepStartTime", "PerformedProcedureStepID",
    "PerformedProcedureStepDescription", "RequestAttributesSequence", "Manufacturer",
    "ManufacturerModelName", "InstitutionName", "StationName", "SoftwareVersions",
)
_COUNT_KEYWORDS = {
    "NumberOfPatientRelatedStudies": (Level.PATIENT, Level.STUDY),
    "NumberOfPatientRelatedSeries": (Level.PATIENT, Level.SERIES),
    "NumberOfPatientRelatedInstances": (Level.PATIENT, Level.IMAGE),
    "NumberOfStudyRelatedSeries": (Level.STUDY, Level.SERIES),
    "NumberOfStudyRelatedInstances": (Level.STUDY, Level.IMAGE),
    "NumberOfSeriesRelatedInstances": (Level.SERIES, Level.IMAGE),
}
_SKIPPED_KEYS = _tags("SpecificCharacterSet", "QueryRetrieveLevel")

HOSTILE_VALUES: dict[str, str] = {
    # A backslash splits PN/LO into two values; NUL, '..', separators, a Windows device name, a
    # trailing dot and 300 characters are what storage.safe_component() must neutralise.
    "PatientName": "../..\\CON\x00" + "X" * 300 + ".",
    "PatientID": "../../CON.",
    "StudyDescription": "..\\..\\AUX\x00",
    "SeriesDescription": "LPT1" + "\x00" + "...",
}
"""Values served when ``Faults.hostile_names`` is set (SOP Instance UIDs become ``../../CON.<n>``)."""


@dataclass(frozen=True)
class Faults:
    """Misbehaviour to inject; the default injects none. Assign a new value to ``DemoPacs.faults``.

    abort_after
        C-GET: after that many sub-operations were sent, A-ABORT the association (0 aborts right after
        the C-GET request is accepted, before any C-STORE; a retrieve of no more instances than
        that completes normally).
    stall_after, stall_seconds
        C-GET: sleep ``stall_seconds`` before sub-operation ``stall_after + 1``; the sleep ends early on
        C-CANCEL (then answered 0xFE00), on ``stop()`` or when the association goes away.
    delay_per_instance
        C-GET: sleep that long before every sub-operation (throttle for cancel tests and screenshots);
        interruptible like the stall.
    fail_sop_instance_uids
        C-GET: these instances are not sent; each counts as a failed sub-operation and is listed in
        the final response's FailedSOPInstanceUIDList, so the final status is 0xB000 (warning), or
        0xA702 if every sub-operation failed.
    refuse_sop_classes
        New associations reject storage presentation contexts for these SOP classes (result 3,
        abstract syntax not supported), and C-GET counts their instances as failed like
        ``fail_sop_instance_uids`` (also on an association opened before the change).
    reject_association
        Reject every new association: "calling AE title not recognised" (permanent, service user).
    find_status
        Answer every C-FIND with this status and no matches (use a failure code such as 0xA700 or
        0xC000, or 0xA900).
    mislabel_sop_instance_uids
        C-GET: these instances are sent under their SOP class, but their data sets say Secondary Capture
        Image Storage (``MISLABELLED_SOP_CLASS``), as from a PACS whose index disagrees with its files.
        A retrieve keeps them and answers 0xB007 (a warning), so the final status is 0xB000 with
        NumberOfWarningSuboperations.
    hostile_names
        C-FIND responses and C-GET datasets carry ``HOSTILE_VALUES`` for PatientName, PatientID,
        StudyDescription and SeriesDescription; C-GET datasets also get a SOP Instance UID of the form
        ``../../CON.<n>`` (C-FIND keeps the real UIDs so that a retrieve can still be asked for).
    """

    abort_after: int | None = None
    stall_after: int | None = None
    stall_seconds: float = 0.0
    delay_per_instance: float = 0.0
    fail_sop_instance_uids: frozenset[str] = field(default_factory=frozenset)
    refuse_sop_classes: frozenset[str] = field(default_factory=frozenset)
    reject_association: bool = False
    find_status: int | None = None
    mislabel_sop_instance_uids: frozenset[str] = field(default_factory=frozenset)
    hostile_names: bool = False


@dataclass(eq=False)
class _Node:
    """One patient, study, series or instance of the index."""

    level: Level
    key: str  # PatientID or the entity's UID
    header: Dataset  # the first instance's header (no pixel data): source of every attribute
    parent: _Node | None = None
    children: list[_Node] = field(default_factory=list)
    path: Path | None = None  # instances only
    transfer_syntax: str = ""  # instances only

    def descendants(self, level: Level) -> Iterator[_Node]:
        """Every node at `level` below (or equal to) this one, in index order."""
        if self.level == level:
            yield self
            return
        for child in self.children:
            yield from child.descendants(level)

    def ancestor(self, level: Level) -> _Node:
        node = self
        while node.level != level:
            assert node.parent is not None
            node = node.parent
        return node


class _Index:
    """Patients ▸ studies ▸ series ▸ instances, built from file headers; read-only once built."""

    def __init__(self) -> None:
        self.patients: list[_Node] = []
        self.sop_classes: frozenset[str] = frozenset()  # every SOP Class UID held
        self._by_key: dict[tuple[Level, str], _Node] = {}

    @classmethod
    def build(cls, files: Iterable[Path]) -> _Index:
        index = cls()
        for path in files:
            try:
                header = dcmread(path, stop_before_pixels=True)
                # PatientID is type 2 (may be empty or, in careless files, absent); the UIDs are not.
                keys = [str(header.get("PatientID", "") or "")]
                keys += [str(header[_UNIQUE_KEY[lv]].value) for lv in _LEVELS[1:]]
            except (OSError, InvalidDicomError, KeyError, ValueError) as exc:
                log.warning("demo PACS: skipping %s: %s", path, exc)
                continue
            index._add(Path(path), header, keys)
        index._sort()
        index.sop_classes = frozenset(
            str(n.header.get("SOPClassUID", "")) for n in index.nodes(Level.IMAGE)
        ) - {""}
        return index

    def _add(self, path: Path, header: Dataset, keys: list[str]) -> None:
        if (Level.IMAGE, keys[3]) in self._by_key:
            log.warning("demo PACS: skipping %s: duplicate SOP Instance UID", path)
            return
        parent: _Node | None = None
        for level, key in zip(_LEVELS, keys):
            node = self._by_key.get((level, key))
            if node is None:
                node = _Node(level, key, header, parent)
                self._by_key[(level, key)] = node
                if parent is None:
                    self.patients.append(node)
                else:
                    parent.children.append(node)
            parent = node
        assert parent is not None
        parent.path = path
        tsyntax = getattr(header.file_meta, "TransferSyntaxUID", ImplicitVRLittleEndian)
        parent.transfer_syntax = str(tsyntax)

    def _sort(self) -> None:
        def number(node: _Node, keyword: str) -> int:
            try:
                return int(node.header.get(keyword) or 0)
            except (TypeError, ValueError):
                return 0

        self.patients.sort(key=lambda n: n.key)
        for patient in self.patients:
            patient.children.sort(key=lambda n: (str(n.header.get("StudyDate", "")), n.key))
            for study in patient.children:
                study.children.sort(key=lambda n: (number(n, "SeriesNumber"), n.key))
                for series in study.children:
                    series.children.sort(key=lambda n: (number(n, "InstanceNumber"), n.key))

    def nodes(self, level: Level) -> Iterator[_Node]:
        """Every node at `level`, in index order."""
        for patient in self.patients:
            yield from patient.descendants(level)

    def __len__(self) -> int:
        return sum(1 for _ in self.nodes(Level.IMAGE))


class _NoDelayServer(ThreadedAssociationServer):
    """pynetdicom's server with Nagle's algorithm off on each accepted connection.

    A DIMSE message leaves as several small writes (command, then data set); with Nagle on, each
    waits for the peer's delayed ACK, costing ~40 ms per message on loopback.
    """

    def get_request(self) -> tuple[socket.socket, tuple[str, int]]:
        client, address = super().get_request()
        client.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        return client, address


class _BadIdentifier(Exception):
    """The request identifier does not fit the information model (answered 0xA900)."""


def default_data_dir() -> Path:
    """Where the demo PACS writes its sample data when given neither files nor a folder."""
    return data_dir() / "demo-pacs"


class DemoPacs:
    """An in-process C-ECHO/C-FIND/C-GET SCP on loopback over a folder of DICOM files.

    ``start()`` returns at once with the server listening on ``host``:``port`` (``port=0`` picks a free
    port, read back from ``.port``); ``stop()`` aborts open associations, closes the socket and joins
    the threads. Use as a context manager in tests. See the module docstring for matching rules and
    ``Faults`` for fault injection.
    """

    def __init__(
        self,
        *,
        files: Iterable[Path] | None = None,
        data_dir: Path | None = None,
        ae_title: str = "PACSPULL_DEMO",
        host: str = "127.0.0.1",
        port: int = 0,
        faults: Faults | None = None,
        ssl_context: ssl.SSLContext | None = None,
        users: Mapping[str, str | None] | None = None,
        tokens: Iterable[str] = (),
    ) -> None:
        """``ssl_context`` serves DICOM over TLS. ``users`` (name → password, or None for a name alone)
        and ``tokens`` (accepted Kerberos/SAML/JWT values) make user identity required: wrong
        credentials are rejected (A-ASSOCIATE-RJ), an association without any is aborted."""
        self._ssl_context = ssl_context
        self._users = dict(users or {})
        self._tokens = frozenset(tokens)
        self._files = None if files is None else [Path(f) for f in files]
        self._data_dir = data_dir
        self.ae_title = ae_title
        self.host = host
        self._port = port
        self._faults = faults or Faults()
        self._index = _Index()
        self._ae: AE | None = None
        self._server: ThreadedAssociationServer | None = None
        self._server_thread: threading.Thread | None = None
        self._stopping = threading.Event()
        self._gets = 0  # C-GET handlers running (stop() lets them end before it aborts)
        self._gets_ended = threading.Condition()
        self._lock = threading.Lock()

    # -- lifecycle --------------------------------------------------------------------------------

    def start(self) -> DemoPacs:
        """Index the files (generating samples first if none were given) and start listening."""
        with self._lock:
            if self._server is not None:
                return self
            files = self._files
            if files is None:
                files = samples.write_sample_data(self._data_dir or default_data_dir())
            self._index = _Index.build(files)

            ae = AE(ae_title=self.ae_title)
            ae.acse_timeout = 30
            ae.dimse_timeout = 30
            ae.network_timeout = 60
            ae.maximum_associations = 16
            # As a real PACS: a wrong called AE title is rejected ("called AE title not recognised"), so a
            # user trying the demo learns that the AE title matters, and a typo is caught here too.
            ae.require_called_aet = True
            self._stopping.clear()
            server = ae.make_server(
                (self.host, self._port),
                evt_handlers=[
                    (evt.EVT_C_FIND, self._handle_find),
                    (evt.EVT_C_GET, self._handle_get),
                    (evt.EVT_USER_ID, self._handle_user_id),
                    (evt.EVT_ESTABLISHED, self._check_identity_given),
                ],
                contexts=self._storage_contexts(),
                server_class=_NoDelayServer,
                ssl_context=self._ssl_context,
            )
            # As start_server(block=False) does, so that ae.shutdown() stops this server too.
            ae._servers.append(server)
            self._port = server.server_address[1]
            self._server = server
            self._ae = ae
            self._apply_association_faults()  # before the first connection is accepted
            self._server_thread = threading.Thread(
                # A short poll interval: shutdown() waits for the loop to notice it.
                target=lambda: server.serve_forever(poll_interval=0.05),
                name=f"DemoPacs {self.ae_title}@{self._port}",
                daemon=True,
            )
            self._server_thread.start()
            log.info(
                "demo PACS %s listening on %s:%d with %d instances",
                self.ae_title, self.host, self._port, len(self._index),
            )
            return self

    def stop(self) -> None:
        """Abort open associations, close the listening socket and wait for the threads to end."""
        with self._lock:
            ae, self._ae, self._server = self._ae, None, None
            if ae is None:
                return
            associations = list(ae.active_associations)
            # The C-GET handlers end first, sending nothing more (_handle_get: no next C-STORE, and no final
            # response, which pynetdicom would send while the association counts as established); only
            # then the abort. A message queued just before an abort lands after it (InvalidEventError,
            # Evt9 in Sta13, in pynetdicom's reactor thread). A handler still waiting for a C-STORE answer
            # after 0.5 s is woken after the abort.
            self._stopping.set()
            with self._gets_ended:
                self._gets_ended.wait_for(lambda: self._gets == 0, timeout=0.5)
            ae.shutdown()
            for assoc in associations:
                # A C-GET waiting for a C-STORE response would otherwise sit out the DIMSE timeout.
                wake_response_wait(assoc)
            for thread in [*associations, self._server_thread]:
                if thread is not None:
                    thread.join(timeout=2.0)
            self._server_thread = None
            log.info("demo PACS %s stopped", self.ae_title)

    # -- user identity ----------------------------------------------------------------------------

    @property
    def requires_identity(self) -> bool:
        """True when associations must carry an accepted user identity."""
        return bool(self._users or self._tokens)

    def _handle_user_id(self, event: evt.Event) -> tuple[bool, bytes | None]:
        """EVT_USER_ID: accept a known user (and password) or token; pynetdicom rejects the rest."""
        if not self.requires_identity:
            return True, None
        kind = event.user_id_type
        primary = (event.primary_field or b"").decode("utf-8", "replace")
        if kind == 1:
            ok = primary in self._users and self._users[primary] is None
        elif kind == 2:
            secondary = (event.secondary_field or b"").decode("utf-8", "replace")
            ok = self._users.get(primary) is not None and self._users.get(primary) == secondary
        else:
            ok = primary in self._tokens
        # A positive response carries nothing for names/passwords (PS3.7 D.3.3.7.2); tokens echo back.
        return ok, (b"" if kind in (1, 2) else event.primary_field) if ok else None

    def _check_identity_given(self, event: evt.Event) -> None:
        """EVT_ESTABLISHED: an association that offered no identity at all is aborted when one is required."""
        if self.requires_identity and event.assoc.requestor.user_identity is None:
            event.assoc.abort()

    def serve_forever(self) -> None:
        """Start if needed and serve until interrupted (Ctrl+C); for ``pacspull demo-pacs``."""
        self.start()
        try:
            while not self._stopping.wait(0.5):
                pass
        except KeyboardInterrupt:
            pass
        finally:
            self.stop()

    def __enter__(self) -> DemoPacs:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    # -- properties -------------------------------------------------------------------------------

    @property
    def port(self) -> int:
        """The bound port once started (the requested one before)."""
        return self._port

    @property
    def is_running(self) -> bool:
        """True between ``start()`` and ``stop()``."""
        return self._server is not None

    @property
    def instance_count(self) -> int:
        """How many instances the index holds."""
        return len(self._index)

    @property
    def faults(self) -> Faults:
        """The faults in force; assign a new ``Faults`` to change them while running."""
        return self._faults

    @faults.setter
    def faults(self, value: Faults) -> None:
        self._faults = value
        self._apply_association_faults()

    def _apply_association_faults(self) -> None:
        ae, server = self._ae, self._server
        if ae is None or server is None:
            return
        ae.require_calling_aet = [_NOBODY_AET] if self._faults.reject_association else []
        # The server copies its contexts into each new association, so this applies from the next one.
        server.contexts = self._storage_contexts()

    def _storage_contexts(self) -> list[PresentationContext]:
        return _contexts(self._index.sop_classes - self._faults.refuse_sop_classes)

    # -- C-FIND -----------------------------------------------------------------------------------

    def _handle_find(self, event: evt.Event) -> Iterator[tuple[int, Dataset | None]]:
        """EVT_C_FIND: yield (0xFF00, identifier) per match, checking for C-CANCEL between matches."""
        faults = self._faults
        if faults.find_status is not None:
            yield faults.find_status, None
            return
        try:
            query = event.identifier
            level = _query_level(query, event.request.AffectedSOPClassUID)
        except _BadIdentifier as exc:
            log.info("demo PACS: C-FIND refused: %s", exc)
            yield _BAD_IDENTIFIER, None
            return
        except Exception as exc:  # a malformed identifier must not escape into pynetdicom
            log.info("demo PACS: C-FIND identifier unreadable: %s", exc)
            yield _UNABLE_TO_PROCESS, None
            return

        matches = 0
        try:
            for node in self._index.nodes(level):
                if event.is_cancelled:
                    yield _CANCEL, None
                    return
                if _matches(node, level, query):
                    matches += 1
                    yield _PENDING, self._find_response(node, level, query, faults)
        except _BadIdentifier as exc:
            log.info("demo PACS: C-FIND refused: %s", exc)
            yield _BAD_IDENTIFIER, None
            return
        except Exception as exc:  # noqa: BLE001 - a handler never raises across the association
            log.warning("demo PACS: C-FIND failed: %s", exc)
            yield _UNABLE_TO_PROCESS, None
            return
        log.debug("demo PACS: C-FIND at %s level: %d matches", level.value, matches)

    def _find_response(self, node: _Node, level: Level, query: Dataset, faults: Faults) -> Dataset:
        rsp = Dataset()
        if "SpecificCharacterSet" in node.header:
            rsp.SpecificCharacterSet = node.header.SpecificCharacterSet
        rsp.QueryRetrieveLevel = level.value
        for elem in query:
            if elem.tag in _SKIPPED_KEYS or elem.tag.is_private or elem.tag.element == 0:
                continue
            rsp.add(self._answer(node, level, elem))
        if faults.hostile_names:
            _make_hostile(rsp)
        return rsp

    def _answer(self, node: _Node, level: Level, key: DataElement) -> DataElement:
        computed = self._computed(node, level, key.keyword)
        if computed is not None:
            return DataElement(key.tag, key.VR, computed)
        record = _record_element(node, level, key.tag)
        if record is not None:
            return DataElement(key.tag, record.VR, copy.deepcopy(record.value))
        return DataElement(key.tag, key.VR, Sequence() if key.VR == "SQ" else None)

    def _computed(self, node: _Node, level: Level, keyword: str) -> Any:
        if keyword in _COUNT_KEYWORDS:
            owner, counted = _COUNT_KEYWORDS[keyword]
            if owner != level:
                return None
            return sum(1 for _ in node.descendants(counted))
        if keyword in ("ModalitiesInStudy", "SOPClassesInStudy") and level == Level.STUDY:
            return sorted(_study_values(node, keyword))
        if keyword == "RetrieveAETitle":
            return self.ae_title
        if keyword == "InstanceAvailability":
            return "ONLINE"
        if keyword == "AvailableTransferSyntaxUID" and level == Level.IMAGE:
            return node.transfer_syntax
        return None

    # -- C-GET ------------------------------------------------------------------------------------

    def _handle_get(self, event: evt.Event) -> Iterator[Any]:
        """EVT_C_GET: yield the sub-operation count, then (0xFF00, dataset) per instance.

        pynetdicom sends each dataset as a C-STORE on this association, counts the sub-operation
        results and builds the final status from them (0x0000, 0xB000 with FailedSOPInstanceUIDList,
        or 0xA702 when every one failed). It needs a ``Dataset``: a path is not accepted here.
        """
        with self._gets_ended:
            self._gets += 1
        try:
            yield from self._serve_get(event)
        finally:
            with self._gets_ended:
                self._gets -= 1
                self._gets_ended.notify_all()

    def _serve_get(self, event: evt.Event) -> Iterator[Any]:
        faults = self._faults
        try:
            query = event.identifier
            level = _query_level(query, event.request.AffectedSOPClassUID)
            instances = _retrieve_set(self._index, level, query)
        except Exception as exc:  # noqa: BLE001 - every failure must become a status
            log.info("demo PACS: C-GET refused: %s", exc)
            # pynetdicom expects the sub-operation count first; one pending "slot" lets us answer a
            # proper failure status instead of its generic 0xC413 (it reports that slot as failed).
            yield 1
            yield (_BAD_IDENTIFIER if isinstance(exc, _BadIdentifier) else _UNABLE_TO_PROCESS), None
            return

        yield len(instances)
        for number, node in enumerate(instances):
            if faults.abort_after is not None and number >= faults.abort_after:
                log.info("demo PACS fault: A-ABORT after %d sub-operations", number)
                event.assoc.abort()
                return
            pause = faults.delay_per_instance
            if faults.stall_after is not None and number == faults.stall_after:
                pause += faults.stall_seconds
            if (pause > 0 and self._pause(event, pause)) or event.is_cancelled:
                yield _CANCEL, None
                return
            if self._stopping.is_set():
                # stop() aborts this association once this handler has returned. pynetdicom decides
                # whether to send the final C-GET response by is_established alone: cleared now, it sends
                # nothing that the abort could overtake (InvalidEventError, Evt9 in Sta13).
                event.assoc.is_established = False
                return
            yield _PENDING, self._store_dataset(event.assoc, node, number, faults)

    def _pause(self, event: evt.Event, seconds: float) -> bool:
        """Sleep up to `seconds`; True if a C-CANCEL arrived (is_cancelled reports it only once)."""
        deadline = time.monotonic() + seconds
        while (remaining := deadline - time.monotonic()) > 0:
            if self._stopping.wait(min(0.02, remaining)) or not event.assoc.is_established:
                return False
            if event.is_cancelled:
                return True
        return False

    def _store_dataset(
        self, assoc: Association, node: _Node, number: int, faults: Faults
    ) -> Dataset:
        sop_class = str(node.header.get("SOPClassUID", ""))
        if node.key in faults.fail_sop_instance_uids or sop_class in faults.refuse_sop_classes:
            log.info("demo PACS fault: not sending instance %d (counted as failed)", number + 1)
            return _unsendable(node)
        assert node.path is not None
        try:
            ds = _fit_transfer_syntax(dcmread(node.path), assoc)
        except Exception as exc:  # noqa: BLE001 - a bad file fails its sub-operation, not the C-GET
            log.warning("demo PACS: cannot send %s: %s", node.path, exc)
            return _unsendable(node)
        if faults.hostile_names:
            _make_hostile(ds)
            _set(ds, "SOPInstanceUID", "UI", f"../../CON.{number + 1}")
        if node.key in faults.mislabel_sop_instance_uids:
            log.info("demo PACS fault: instance %d's data set says another SOP class", number + 1)
            ds = _Mislabelled(ds, sop_class)
        return ds


# -- helpers ----------------------------------------------------------------------------------------


@lru_cache(maxsize=16)
def _contexts(storage_classes: frozenset[str]) -> list[PresentationContext]:
    """Supported contexts: verification, the four Q/R models, and storage (as SCU, for C-GET) for
    `storage_classes`.

    Only the SOP classes the index holds are offered for storage: others could never be sent, and
    pynetdicom deep-copies the acceptor's contexts for every association (all ~150 storage classes
    cost 50-90 ms per association). The result is cached and shared, so it must not be mutated.
    """
    contexts = [build_context(Verification, [ImplicitVRLittleEndian, ExplicitVRLittleEndian])]
    for model in _MODEL_LEVELS:
        contexts.append(build_context(model, list(_QUERY_TRANSFER_SYNTAXES)))
    for uid in sorted(storage_classes):
        cx = build_context(uid, list(STORAGE_TRANSFER_SYNTAXES))
        # For C-GET the requestor proposes the SCP role; accepting it makes us the storage SCU.
        # We do not take the SCU role for the requestor: the demo PACS accepts no C-STORE uploads.
        cx.scu_role = False
        cx.scp_role = True
        contexts.append(cx)
    return contexts


def _query_level(query: Dataset, model: str) -> Level:
    value = str(query.get("QueryRetrieveLevel", "") or "").strip().upper()
    try:
        level = Level(value)
    except ValueError:
        raise _BadIdentifier(f"unknown QueryRetrieveLevel {value!r}") from None
    if level not in _MODEL_LEVELS.get(UID(str(model)), ()):
        raise _BadIdentifier(f"level {level.value} is not part of model {model}")
    return level


def _retrieve_set(index: _Index, level: Level, query: Dataset) -> list[_Node]:
    """The instances a C-GET identifier names: the unique key of its level, filtered by those above."""
    wanted: dict[Level, set[str]] = {}
    for lv in _LEVELS[: level.depth + 1]:
        keyword = _UNIQUE_KEY[lv]
        values = _values(query[keyword] if keyword in query else None)
        if values:
            wanted[lv] = {str(v).strip() for v in values}
    if level not in wanted:
        raise _BadIdentifier(f"C-GET at {level.value} level needs {_UNIQUE_KEY[level]}")
    instances: list[_Node] = []
    for node in index.nodes(level):
        if all(node.ancestor(lv).key in keys for lv, keys in wanted.items()):
            instances.extend(node.descendants(Level.IMAGE))
    return instances


class _Mislabelled(Dataset):
    """A data set whose SOP Class UID element says ``MISLABELLED_SOP_CLASS`` while pynetdicom, which reads
    the ``SOPClassUID`` attribute, puts ``request_sop_class`` in the C-STORE request."""

    def __init__(self, ds: Dataset, request_sop_class: str) -> None:
        super().__init__(ds)
        self.file_meta = ds.file_meta
        self.__dict__["_request_sop_class"] = UID(request_sop_class)
        self[0x00080016] = DataElement(0x00080016, "UI", MISLABELLED_SOP_CLASS)

    @property  # type: ignore[override]
    def SOPClassUID(self) -> UID:  # noqa: N802 - the keyword pynetdicom reads
        return self.__dict__["_request_sop_class"]


def _unsendable(node: _Node) -> Dataset:
    """A dataset pynetdicom cannot send: without file meta it raises in send_c_store, which counts a
    failed sub-operation and lists this SOP Instance UID in FailedSOPInstanceUIDList."""
    ds = Dataset()
    ds.SOPClassUID = node.header.get("SOPClassUID", "")
    ds.SOPInstanceUID = node.key
    return ds


def _fit_transfer_syntax(ds: Dataset, assoc: Association) -> Dataset:
    """Send compressed pixel data as stored when the client accepted that syntax; otherwise decode it
    to Explicit VR Little Endian if pydicom can here (RLE needs no extra package) and the client
    accepted an uncompressed syntax. If neither, the dataset goes as is and its C-STORE sub-operation
    fails, as with a real PACS that cannot transcode. pynetdicom itself converts between the
    uncompressed syntaxes."""
    tsyntax = UID(str(ds.file_meta.get("TransferSyntaxUID", ImplicitVRLittleEndian)))
    if not tsyntax.is_compressed:
        return ds
    accepted = {
        cx.transfer_syntax[0]
        for cx in assoc.accepted_contexts
        if cx.abstract_syntax == ds.get("SOPClassUID") and cx.as_scu
    }
    if tsyntax in accepted or all(ts.is_compressed for ts in accepted):
        return ds
    try:
        pixels, meta = get_decoder(tsyntax).as_buffer(ds)
    except Exception as exc:  # noqa: BLE001 - no decoder plugin: leave it to fail honestly
        log.info("demo PACS: cannot decode %s here: %s", tsyntax.name, exc)
        return ds
    del ds.PixelData
    ds.add_new(0x7FE00010, "OW" if ds.BitsAllocated > 8 else "OB", bytes(pixels))
    if "photometric_interpretation" in meta:
        ds.PhotometricInterpretation = meta["photometric_interpretation"]
    if ds.get("SamplesPerPixel", 1) > 1:
        ds.PlanarConfiguration = meta.get("planar_configuration", 0)
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    return ds


def _set(ds: Dataset, keyword: str, vr: str, value: str) -> None:
    # These values are invalid on purpose: skip pydicom's value validation.
    ds.add(DataElement(tag_for_keyword(keyword), vr, value, validation_mode=pydicom_config.IGNORE))


def _make_hostile(ds: Dataset) -> None:
    for keyword, value in HOSTILE_VALUES.items():
        if keyword in ds:
            _set(ds, keyword, ds[keyword].VR, value)


def _study_values(study: _Node, keyword: str) -> set[str]:
    source = "Modality" if keyword == "ModalitiesInStudy" else "SOPClassUID"
    level = Level.SERIES if keyword == "ModalitiesInStudy" else Level.IMAGE
    return {str(n.header.get(source, "")) for n in study.descendants(level)} - {""}


def _attribute_level(tag: BaseTag) -> Level:
    if tag in _PATIENT_ATTRIBUTES:
        return Level.PATIENT
    if tag in _STUDY_ATTRIBUTES:
        return Level.STUDY
    if tag in _SERIES_ATTRIBUTES:
        return Level.SERIES
    return Level.IMAGE


def _record_element(node: _Node, level: Level, tag: BaseTag) -> DataElement | None:
    """The record's element for `tag`, or None if absent or below the queried level."""
    if _attribute_level(tag).depth > level.depth or tag not in node.header:
        return None
    return node.header[tag]


def _values(elem: DataElement | None) -> list[Any]:
    if elem is None or elem.value is None or elem.value == "":
        return []
    if isinstance(elem.value, (MultiValue, list, tuple)):
        return [v for v in elem.value if v is not None and str(v) != ""]
    return [elem.value]


def _matches(node: _Node, level: Level, query: Dataset) -> bool:
    for key in query:
        if key.tag in _SKIPPED_KEYS or key.tag.is_private or key.tag.element == 0:
            continue
        if key.VR == "SQ":
            continue  # sequence matching is not supported: treated as universal
        wanted = [str(v).strip() for v in _values(key)]
        if not wanted or wanted == ["*"]:
            continue  # universal matching
        keyword = key.keyword
        if keyword in ("ModalitiesInStudy", "SOPClassesInStudy"):
            if level != Level.STUDY:
                continue
            have = _study_values(node, keyword)
            if not any(_match_value("CS", w, h) for w in wanted for h in have):
                return False
            continue
        if keyword in _COUNT_KEYWORDS or keyword in (
            "RetrieveAETitle", "InstanceAvailability", "AvailableTransferSyntaxUID"
        ):
            continue
        record = _record_element(node, level, key.tag)
        have = [str(v).strip() for v in _values(record)]
        if not have:
            return False
        vr = record.VR if record is not None else key.VR
        if not any(_match_value(vr, w, h) for w in wanted for h in have):
            return False
    return True


def _match_value(vr: str, wanted: str, have: str) -> bool:
    if vr == "UI":
        return wanted == have
    if vr in ("DA", "TM", "DT"):
        return _match_range(vr, wanted, have)
    if vr == "PN":
        pattern = _wildcard(wanted, True)
        return any(pattern.fullmatch(part) for part in (have, *have.split("=")))
    if vr in ("IS", "DS") and "*" not in wanted and "?" not in wanted:
        try:
            return float(wanted) == float(have)
        except ValueError:
            return False
    return _wildcard(wanted, False).fullmatch(have) is not None


_DT_BOUND = r"\d{4,14}(?:\.\d{1,6})?(?:[+-]\d{4})?"


def _match_range(vr: str, wanted: str, have: str) -> bool:
    """Single value or range matching for DA/TM/DT; a single partial value covers its whole span."""
    if vr == "DT" and re.fullmatch(_DT_BOUND, wanted):
        low = high = wanted  # a lone "-" here starts a UTC offset, not a range
    elif "-" in wanted:
        low, _, high = wanted.partition("-")
        if not low and not high:
            raise _BadIdentifier(f"empty range {wanted!r}")
    else:
        low = high = wanted
    value = _bound(vr, have, "0")
    if low and value < _bound(vr, low, "0"):
        return False
    if high and value > _bound(vr, high, "9"):
        return False
    return True


def _bound(vr: str, value: str, fill: str) -> str:
    """Pad a DA/TM/DT to a fixed width so that string order is time order; fill "0" for a lower
    bound or a stored value, "9" for an upper bound ("1200" then covers 12:00:59.999999)."""
    value = value.strip()
    if vr == "DA":
        return value.replace(".", "").ljust(8, fill)  # also accepts ACR-NEMA "YYYY.MM.DD"
    if vr == "TM":
        whole, _, fraction = value.replace(":", "").partition(".")
        return whole.ljust(6, fill) + "." + fraction.ljust(6, fill)
    whole, _, fraction = re.split(r"[+-]", value, maxsplit=1)[0].partition(".")  # DT: drop offset
    return whole.ljust(14, fill) + "." + fraction.ljust(6, fill)


@lru_cache(maxsize=256)
def _wildcard(pattern: str, ignore_case: bool) -> re.Pattern[str]:
    regex = "".join(".*" if c == "*" else "." if c == "?" else re.escape(c) for c in pattern)
    return re.compile(regex, re.IGNORECASE | re.DOTALL if ignore_case else re.DOTALL)
