"""Fixtures for core tests: the sample set's metadata and in-process demo PACS servers on port 0.

``sample_files`` (session, the root conftest) writes the samples once; ``sample_metadata`` describes the
very same files, dated with the day they were written for, so a run across midnight stays consistent.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from pacspull.core import samples
from pacspull.core.demo_pacs import DemoPacs, Faults


@pytest.fixture(scope="session")
def sample_folder(sample_files: list[Path]) -> Path:
    """The folder ``sample_files`` were written into."""
    return Path(os.path.commonpath(sample_files))


@pytest.fixture(scope="session")
def sample_metadata(sample_folder: Path) -> tuple[samples.SampleStudy, ...]:
    """``samples.sample_studies()`` for the day the session's sample files were written for."""
    day = samples.written_day(sample_folder)
    assert day is not None, "the sample folder has no marker"
    return samples.sample_studies(day)


@pytest.fixture(scope="session")
def demo_pacs_session(sample_files: list[Path]) -> Iterator[DemoPacs]:
    """One demo PACS for the whole session; prefer ``demo_pacs``, which resets its faults."""
    with DemoPacs(files=sample_files, ae_title="DEMO_TEST") as pacs:
        yield pacs


@pytest.fixture
def demo_pacs(demo_pacs_session: DemoPacs) -> Iterator[DemoPacs]:
    """The session's demo PACS with no faults; a test may set ``demo_pacs.faults`` freely."""
    demo_pacs_session.faults = Faults()
    yield demo_pacs_session
    demo_pacs_session.faults = Faults()


@pytest.fixture
def make_demo_pacs(sample_files: list[Path]) -> Iterator[Callable[..., DemoPacs]]:
    """Factory for a fresh, started demo PACS (keyword arguments go to ``DemoPacs``); stopped after."""
    started: list[DemoPacs] = []

    def make(**kwargs: object) -> DemoPacs:
        kwargs.setdefault("files", sample_files)
        pacs = DemoPacs(**kwargs).start()  # type: ignore[arg-type]
        started.append(pacs)
        return pacs

    yield make
    for pacs in started:
        pacs.stop()
