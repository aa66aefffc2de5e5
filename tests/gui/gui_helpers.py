"""Helpers for the GUI tests (a plain module: importing from conftest.py is fragile with several conftests)."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from pydicom import dcmread
from pydicom.dataset import Dataset
from pynetdicom import AE, evt
from pynetdicom.sop_class import StudyRootQueryRetrieveInformationModelFind
from PySide6.QtCore import QObject, Slot

from pacspull.core.nodes import Node, NodeBook
from pacspull.core.storage import MANIFEST_NAME

PEER_AE = "PACSPULL_DEMO"


def node_for(port: int, name: str = "Test PACS", ae_title: str = PEER_AE, **kwargs: object) -> Node:
    """A loopback node with short timeouts, so a failing test fails fast."""
    values: dict[str, object] = {"connect_timeout": 3, "acse_timeout": 5, "dimse_timeout": 10, **kwargs}
    return Node(name=name, ae_title=ae_title, host="127.0.0.1", port=port, **values)  # type: ignore[arg-type]


def write_book(*nodes: Node, selected: str | None = None) -> NodeBook:
    """Save a node book (so the app sees a later run, not a first run)."""
    book = NodeBook(path=NodeBook.default_path(), nodes=list(nodes),
                    selected=selected or (nodes[0].name if nodes else None))
    book.save()
    return book


def free_port() -> int:
    """A loopback port nobody listens on (for closed-port tests)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class SlowFindScp:
    """A C-FIND SCP that answers one study every ``interval`` seconds, ``count`` in all; honours C-CANCEL."""

    def __init__(self, count: int = 200, interval: float = 0.05) -> None:
        self.count = count
        self.interval = interval
        self.cancelled = threading.Event()
        ae = AE(ae_title="SLOWPACS")
        ae.add_supported_context(StudyRootQueryRetrieveInformationModelFind)
        self._server = ae.start_server(("127.0.0.1", 0), block=False,
                                       evt_handlers=[(evt.EVT_C_FIND, self._on_find)])
        self.port = int(self._server.server_address[1])
        self._ae = ae

    def _on_find(self, event: evt.Event) -> Iterator[tuple[int, Dataset | None]]:
        for i in range(self.count):
            if event.is_cancelled:
                self.cancelled.set()
                yield 0xFE00, None  # matching terminated due to cancel
                return
            time.sleep(self.interval)
            ds = Dataset()
            ds.QueryRetrieveLevel = "STUDY"
            ds.PatientName = f"Slow^Patient{i:03d}"
            ds.PatientID = f"S{i:03d}"
            ds.StudyInstanceUID = f"1.2.3.4.{i + 1}"
            ds.StudyDate = "20240101"
            ds.NumberOfStudyRelatedSeries = 1
            yield 0xFF00, ds

    def stop(self) -> None:
        self._ae.shutdown()


class SubOperationCounter(QObject):
    """Counts a RetrieveWorker's per-sub-operation signals (slots on the GUI thread, as the contract asks)."""

    def __init__(self) -> None:
        super().__init__()
        self.stored: list[str] = []  # SOP Instance UIDs, in arrival order
        self.failed: list[str] = []
        self.warnings: list[str] = []

    def watch(self, worker: Any) -> None:
        """Connect to one worker (hook this to ``RetrieveQueue.workerStarted``)."""
        worker.instanceStored.connect(self.on_stored)
        worker.subOperationFailed.connect(self.on_failed)
        worker.subOperationWarning.connect(self.on_warning)

    @Slot(object)
    def attach(self, worker: Any) -> None:
        """Slot form of ``watch``."""
        self.watch(worker)

    @Slot(int, object)
    def on_stored(self, generation: int, stored: Any) -> None:
        self.stored.append(stored.sop_instance_uid)

    @Slot(int, object)
    def on_failed(self, generation: int, issue: Any) -> None:
        self.failed.append(issue.sop_instance_uid)

    @Slot(int, object)
    def on_warning(self, generation: int, issue: Any) -> None:
        self.warnings.append(issue.sop_instance_uid)


def files_on_disk(folder: Path) -> dict[str, Path]:
    """Every DICOM file below ``folder`` by its SOP Instance UID (read from the file itself)."""
    found: dict[str, Path] = {}
    for path in folder.rglob("*.dcm"):
        ds = dcmread(path, stop_before_pixels=True)
        found[str(ds.SOPInstanceUID)] = path
    return found


def leftovers(folder: Path) -> list[Path]:
    """Files that are neither DICOM files nor the manifest: half-written temp files would show here."""
    return [p for p in folder.rglob("*") if p.is_file() and p.suffix != ".dcm" and p.name != MANIFEST_NAME]
