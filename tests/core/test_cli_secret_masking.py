"""The CLI at -vv never prints a password: pynetdicom's association dump is masked."""

from __future__ import annotations

import io
import logging
from pathlib import Path

import pytest

from pacspull.core import credentials
from pacspull.core.cli import main
from pacspull.core.demo_pacs import DemoPacs


def test_password_masked_in_debug_output(sample_files: list[Path], monkeypatch: pytest.MonkeyPatch,
                                         caplog: pytest.LogCaptureFixture) -> None:
    with DemoPacs(files=sample_files, users={"alice": "s3cret-LEAK"}) as pacs:
        monkeypatch.setattr("sys.stdin", io.StringIO("s3cret-LEAK\n"))
        with caplog.at_level(logging.DEBUG):
            code = main(["-vv", "echo", "--host", pacs.host, "--port", str(pacs.port), "--aet", pacs.ae_title,
                         "--user-identity", "password", "--user", "alice", "--secret-stdin",
                         "--allow-plain-credentials"])
    credentials._for_this_run.clear()
    assert code == 0
    assert "Password" in caplog.text or "User Identity" in caplog.text  # the dump is there...
    assert "s3cret-LEAK" not in caplog.text  # ...masked
