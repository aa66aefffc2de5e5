"""Cancelling a query reaches the PACS even while it is silent, and never waits out the DIMSE timeout."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest
from pydicom.dataset import Dataset
from pynetdicom import AE, evt
from pynetdicom.sop_class import StudyRootQueryRetrieveInformationModelFind

from pacspull.core.nodes import Node
from pacspull.core.progress import CancelToken
from pacspull.core.query import QueryRequest, find


class SlowFindScp:
    """Answers one study, then thinks for a long time; notes whether a C-CANCEL arrived."""

    def __init__(self, honour_cancel: bool) -> None:
        self.honour_cancel = honour_cancel
        self.cancel_seen = threading.Event()
        self.release = threading.Event()
        ae = AE(ae_title="SLOW")
        ae.add_supported_context(StudyRootQueryRetrieveInformationModelFind)
        self.server = ae.start_server(("127.0.0.1", 0), block=False,
                                      evt_handlers=[(evt.EVT_C_FIND, self.handle)])
        self.port = self.server.server_address[1]

    def handle(self, event: Any) -> Iterator[tuple[int, Dataset | None]]:
        row = Dataset()
        row.QueryRetrieveLevel = "STUDY"
        row.StudyInstanceUID = "1.2.3.4"
        yield 0xFF00, row
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and not self.release.is_set():
            if event.is_cancelled:
                self.cancel_seen.set()
                if self.honour_cancel:
                    yield 0xFE00, None
                    return
            time.sleep(0.02)
        yield 0x0000, None

    def stop(self) -> None:
        self.release.set()
        self.server.shutdown()


@pytest.mark.parametrize("honour_cancel", [True, False])
def test_cancel_while_the_pacs_is_silent(honour_cancel: bool, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("pacspull.core.query.CANCEL_GRACE", 0.5)
    scp = SlowFindScp(honour_cancel)
    try:
        node = Node(name="slow", ae_title="SLOW", host="127.0.0.1", port=scp.port, dimse_timeout=60)
        cancel = CancelToken()
        rows: list[Any] = []

        def on_row(row: Any) -> None:
            rows.append(row)
            threading.Timer(0.2, cancel.cancel).start()

        start = time.monotonic()
        result = find(node, QueryRequest(), cancel=cancel, on_row=on_row)
        took = time.monotonic() - start
        assert result.cancelled and [r.study_uid for r in result.rows] == ["1.2.3.4"]
        assert scp.cancel_seen.wait(2)  # the C-CANCEL really went out while the PACS was silent
        # well under the 60 s response timeout: honoured at once, or aborted after the 0.5 s grace
        assert took < 10
    finally:
        scp.stop()
