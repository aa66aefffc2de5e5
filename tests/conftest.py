"""Fixtures and helpers shared by every test folder.

Real peers (Orthanc, dcmtk) are optional on a developer machine: a missing binary skips the test with
the Debian package to install. With ``PACSPULL_REQUIRE_PEERS=1`` (CI, ``make test`` as root) a missing
binary fails the test instead, so a broken image cannot pass by skipping everything.
"""

from __future__ import annotations

import os
import sys
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

# tests/peers.py is plain Python shared with the benchmarks; make `import peers` work whatever the
# pytest import mode.
_TESTS_DIR = str(Path(__file__).resolve().parent)
if _TESTS_DIR not in sys.path:
    sys.path.insert(0, _TESTS_DIR)

# The window logs to the platform log folder; tests (and the programs they start) log to a temp one.
os.environ.setdefault("PACSPULL_LOG_DIR", tempfile.mkdtemp(prefix="pacspull-test-logs-"))

# need_binary/peers_required live in peers.py (pytest imported lazily there) so that other conftest
# files and test modules can import them without `from conftest import ...`, which is fragile when
# several folders have a conftest.py.
from peers import OrthancPeer, SampleStudy, describe_samples, need_binary, peers_required  # noqa: E402,F401


@pytest.fixture(scope="session")
def sample_files(tmp_path_factory: pytest.TempPathFactory) -> list[Path]:
    """The deterministic sample studies written once per session as Part-10 files."""
    from pacspull.core.samples import write_sample_data

    folder = tmp_path_factory.mktemp("samples")
    return [Path(p) for p in write_sample_data(folder)]


@pytest.fixture(scope="session")
def sample_studies(sample_files: list[Path]) -> dict[str, SampleStudy]:
    """``sample_files`` grouped by study: UIDs, SOP classes, transfer syntaxes, patient name."""
    return describe_samples(sample_files)


@pytest.fixture(autouse=True)
def _identifiers_not_logged() -> object:
    """A test that opts in to identifier logging (process-wide) must not leak that into the next test."""
    yield
    from pacspull.core.privacy import enable_identifier_logging

    enable_identifier_logging(False)


@pytest.fixture(scope="session")
def orthanc(tmp_path_factory: pytest.TempPathFactory, sample_files: list[Path]) -> Iterator[OrthancPeer]:
    """Orthanc (AET ORTHANC, C-GET allowed for any calling AE) holding the sample studies, started once for
    the whole session (integration and window tests alike); tests must not change what it holds."""
    need_binary("Orthanc", "orthanc")
    peer = OrthancPeer(tmp_path_factory.mktemp("orthanc"), nodelay=True, graceful_stop=False)
    peer.start()
    try:
        peer.load(sample_files)
        yield peer
    finally:
        peer.stop()


@pytest.fixture
def orthanc_factory(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Callable[..., OrthancPeer]]:
    """``make(**kwargs)`` starts an empty Orthanc (kwargs as OrthancPeer); all stopped after the test."""
    need_binary("Orthanc", "orthanc")
    started: list[OrthancPeer] = []

    def make(**kwargs: object) -> OrthancPeer:
        kwargs.setdefault("graceful_stop", False)
        peer = OrthancPeer(tmp_path_factory.mktemp("orthanc-f"), **kwargs)  # type: ignore[arg-type]
        started.append(peer)
        return peer.start()

    yield make
    for peer in started:
        peer.stop()
