"""Helpers for the GUI tests (a plain module: importing from conftest.py is fragile with several conftests)."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator

from pydicom.dataset import Dataset
from pynetdicom import AE, evt
from pynetdicom.sop_class import StudyRootQueryRetrieveInformationModelFind

from pacspull.core.nodes import Node, NodeBook

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
