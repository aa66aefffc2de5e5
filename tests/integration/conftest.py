"""Real peers for integration tests: Orthanc and dcmtk's dcmqrscp on free loopback ports.

The session peers are started once with ``TCP_NODELAY=1`` and loaded with ``sample_files``; treat them
as read-only (a test that needs other data or settings asks a factory for its own peer).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from peers import DcmqrscpPeer, need_binary  # tests/ is on sys.path (tests/conftest.py)


def _need_dcmtk() -> None:
    for name in ("dcmqrscp", "dcmqridx"):
        need_binary(name, "dcmtk")


@pytest.fixture(scope="session")
def dcmqrscp(tmp_path_factory: pytest.TempPathFactory, sample_files: list[Path]) -> Iterator[DcmqrscpPeer]:
    """dcmqrscp (AET DCMQRSCP, C-GET enabled) holding the sample studies (indexed with dcmqridx)."""
    _need_dcmtk()
    peer = DcmqrscpPeer(tmp_path_factory.mktemp("dcmqrscp"), nodelay=True)
    peer.load(sample_files)
    peer.start()
    try:
        yield peer
    finally:
        peer.stop()


@pytest.fixture
def dcmqrscp_factory(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Callable[..., DcmqrscpPeer]]:
    """``make(files=(), **kwargs)`` starts a dcmqrscp (kwargs as DcmqrscpPeer) holding ``files``."""
    _need_dcmtk()
    started: list[DcmqrscpPeer] = []

    def make(files: tuple[Path, ...] | list[Path] = (), **kwargs: object) -> DcmqrscpPeer:
        peer = DcmqrscpPeer(tmp_path_factory.mktemp("dcmqrscp-f"), **kwargs)  # type: ignore[arg-type]
        started.append(peer)
        if files:
            peer.load(files)
        return peer.start()

    yield make
    for peer in started:
        peer.stop()


@pytest.fixture(scope="session")
def demo(sample_files: list[Path]) -> Iterator[object]:
    """The embedded demo PACS (in-process, port 0) serving the same sample studies as the real peers."""
    from pacspull.core.demo_pacs import DemoPacs

    pacs = DemoPacs(files=sample_files).start()
    try:
        yield pacs
    finally:
        pacs.stop()


@pytest.fixture(params=["orthanc", "dcmqrscp", "demo"])
def any_peer(request: pytest.FixtureRequest) -> object:
    """Each peer in turn: Orthanc, dcmqrscp and the demo PACS, all holding the sample studies."""
    return request.getfixturevalue(request.param)
