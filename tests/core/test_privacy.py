"""At any log level short of an explicit opt-in, no patient name or ID reaches the log."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

from pacspull.core import association, samples
from pacspull.core.cli import main
from pacspull.core.demo_pacs import DemoPacs

MUELLER = samples.MUELLER


@pytest.fixture
def pacs(sample_files: list[Path]):  # type: ignore[no-untyped-def]
    with DemoPacs(files=sample_files) as server:
        yield server
    association.enable_identifier_logging(False)


def run_logged(pacs: DemoPacs, caplog: pytest.LogCaptureFixture, tmp_path: Path, *extra: str) -> str:
    conn = ["--host", pacs.host, "--port", str(pacs.port), "--aet", pacs.ae_title]
    with caplog.at_level(logging.DEBUG):
        assert main(["-vv", *extra, "find", *conn, "--patient-id", MUELLER.patient_id]) == 0
        assert main(["-vv", *extra, "get", *conn, "--patient-id", MUELLER.patient_id, "--out", str(tmp_path)]) == 0
    return caplog.text


def test_debug_logging_keeps_patient_data_out(pacs: DemoPacs, caplog: pytest.LogCaptureFixture,
                                              tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    text = run_logged(pacs, caplog, tmp_path)
    assert "C-GET" in text or "Get SCP" in text  # the debug log is really on
    for secret in ("Müller", "Muller", "Jürgen", MUELLER.patient_id, MUELLER.birth_date):
        assert secret not in text


def test_identifiers_only_with_the_opt_in(pacs: DemoPacs, caplog: pytest.LogCaptureFixture, tmp_path: Path,
                                          capsys: pytest.CaptureFixture[str]) -> None:
    text = run_logged(pacs, caplog, tmp_path, "--log-identifiers")
    assert MUELLER.patient_id in text
