"""Bad input exits 2 with one line naming the field and the rule; network failures exit 3 with a hint."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
from pynetdicom import AE
from pynetdicom.sop_class import Verification

from pacspull.core.cli import main


def run_cli(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    """The real console entry point in a subprocess, so tracebacks and exit codes are what a user sees."""
    return subprocess.run(
        [sys.executable, "-m", "pacspull.core.cli", *args],
        capture_output=True, text=True, timeout=60, env={**os.environ, **(env or {})},
    )


CONN = ["--host", "127.0.0.1", "--port", "104"]


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (["echo", "--host", "127.0.0.1", "--port", "104", "--aet", ""], "called AE title: must not be empty"),
        (["echo", *CONN, "--aet", "A" * 17], "called AE title: must be at most 16 characters"),
        (["echo", *CONN, "--aet", "BAD\\AE"], "called AE title: must not contain a backslash"),
        (["echo", *CONN, "--aet", "BAD\tAE"], "called AE title: must not contain control characters"),
        (["echo", *CONN, "--aet", "PACS", "--calling-aet", "X" * 20], "calling AE title: must be at most 16"),
        (["echo", "--host", "127.0.0.1", "--port", "0", "--aet", "PACS"], "port: must be a whole number from 1 to 65535"),
        (["echo", "--host", "127.0.0.1", "--port", "65536", "--aet", "PACS"], "port: must be a whole number"),
        (["echo", "--host", "127.0.0.1", "--port", "abc", "--aet", "PACS"], "port: must be a whole number"),
        (["find", *CONN, "--aet", "PACS", "--date", "20241301"], "date: must be YYYYMMDD"),
        (["find", *CONN, "--aet", "PACS", "--date", "2024-01-01"], "date: must be YYYYMMDD"),
        (["echo", "--node", "no such node"], "node: no node named 'no such node'"),
        (["echo", "--host", "127.0.0.1"], "connection: give --node NAME, or all of --host, --port and --aet"),
        (["echo", *CONN, "--aet", "PACS", "--timeout", "-1"], "--timeout: must be more than 0"),
        (["find", *CONN, "--aet", "PACS", "--level", "patient"], "argument --level: invalid choice"),
        (["demo-pacs", "--port", "99999"], "--port: must be a whole number"),
    ],
)
def test_bad_input_exits_2_with_one_line(args: list[str], expected: str, tmp_path: Path) -> None:
    result = run_cli(*args, env={"PACSPULL_CONFIG_DIR": str(tmp_path)})
    assert result.returncode == 2, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert expected in lines[0]
    assert "Traceback" not in result.stderr and result.stdout == ""


def test_connection_refused_exits_3_with_stage_and_hint() -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # closed again before use: nothing listens there
    result = run_cli("echo", "--host", "127.0.0.1", "--port", str(port), "--aet", "PACS")
    assert result.returncode == 3
    assert result.stderr.strip() == (
        f"pacspull echo: connect: connection refused by 127.0.0.1:{port} "
        "(nothing listens on that port: check the port number and that the PACS service is running)"
    )


@pytest.mark.parametrize("command", [["echo"], ["find"], ["diagnose"], ["get", "--study-uid", "1.2.3"]])
def test_a_failure_with_json_is_json_on_stdout_too(command: list[str], tmp_path: Path,
                                                   capsys: pytest.CaptureFixture[str]) -> None:
    """A script reading --json output gets a failure as JSON (ok false, the stage, the error), whichever
    command; people still read the one line on stderr."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    code = main([command[0], "--host", "127.0.0.1", "--port", str(port), "--aet", "PACS", *command[1:], "--json"]
                + (["--out", str(tmp_path)] if command[0] == "get" else []))
    out, err = capsys.readouterr()
    report = json.loads(out)
    assert code == 3 and report["ok"] is False
    if command[0] == "diagnose":  # its report, the failed stage named
        assert report["failed_stage"] == "connect"
    elif command[0] == "get":  # its summary, with the error
        assert "connection refused by 127.0.0.1" in report["error"] and report["completed"] == 0
    else:
        assert report["stage"] == "connect" and report["exit_code"] == 3
        assert report["error"].startswith("connection refused by 127.0.0.1:") and "nothing listens" in report["hint"]
        assert err.startswith(f"pacspull {command[0]}: connect: connection refused")


def test_unresolvable_host_exits_3() -> None:
    result = run_cli("echo", "--host", "no-such-host.invalid", "--port", "104", "--aet", "PACS")
    assert result.returncode == 3
    assert "resolve: cannot resolve host 'no-such-host.invalid'" in result.stderr


@pytest.fixture
def silent_server() -> Iterator[int]:
    """A TCP server that accepts and then says nothing: a PACS that hangs, or a port that is not DICOM."""
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen()
    held: list[socket.socket] = []
    stop = threading.Event()

    def accept() -> None:
        server.settimeout(0.2)
        while not stop.is_set():
            try:
                held.append(server.accept()[0])
            except OSError:
                continue

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    yield server.getsockname()[1]
    stop.set()
    thread.join()
    for conn in held:
        conn.close()
    server.close()


def test_silent_peer_times_out_with_exit_3(silent_server: int, capsys: pytest.CaptureFixture[str]) -> None:
    code = main(["echo", "--host", "127.0.0.1", "--port", str(silent_server), "--aet", "PACS", "--timeout", "1"])
    assert code == 3
    err = capsys.readouterr().err
    assert "associate: PACS@127.0.0.1:" in err and "did not answer the association request within 1 s" in err


@pytest.fixture
def picky_scp() -> Iterator[int]:
    """A pynetdicom SCP that only accepts calling AE 'FRIEND' (PS3.8 rejection reason 3)."""
    ae = AE(ae_title="PICKY")
    ae.add_supported_context(Verification)
    ae.require_calling_aet = ["FRIEND"]
    server = ae.start_server(("127.0.0.1", 0), block=False)
    yield server.server_address[1]
    server.shutdown()


def test_rejected_calling_ae_exits_3_with_hint(picky_scp: int, capsys: pytest.CaptureFixture[str]) -> None:
    code = main(["echo", "--host", "127.0.0.1", "--port", str(picky_scp), "--aet", "PICKY", "--calling-aet", "STRANGER"])
    assert code == 3
    err = capsys.readouterr().err
    assert "rejected the association: Calling AE title not recognised" in err
    assert "the PACS does not know calling AE 'STRANGER'" in err
    assert main(["echo", "--host", "127.0.0.1", "--port", str(picky_scp), "--aet", "PICKY",
                 "--calling-aet", "FRIEND"]) == 0


def test_version() -> None:
    result = run_cli("--version")
    assert result.returncode == 0 and result.stdout.startswith("pacspull 0.")


def test_a_refused_value_is_shown_as_typed() -> None:
    """One backslash stays one backslash (repr doubled it); what cannot print is still escaped."""
    from pacspull.core.errors import InvalidInput

    assert str(InvalidInput("called AE title", "must not contain a backslash", value="AB\\CD")) == (
        "called AE title: must not contain a backslash (got 'AB\\CD')")
    assert str(InvalidInput("patient name", "no control characters", value="a\x00b")).endswith("(got 'a\\x00b')")
    assert str(InvalidInput("port", "must be 1-65535", value=70000)).endswith("(got 70000)")


def test_a_request_describes_itself_by_what_it_asks_for() -> None:
    from pacspull.core.get import RetrieveRequest

    assert RetrieveRequest("1.2").describe() == "study 1.2"
    assert RetrieveRequest("1.2", ("1.2.3",)).describe() == "series 1.2.3 of study 1.2"
    assert RetrieveRequest("1.2", ("1.2.3", "1.2.4")).describe() == "2 series of study 1.2"
    assert RetrieveRequest("1.2", ("1.2.3",), ("1.2.3.4",)).describe() == "1 instance of series 1.2.3 of study 1.2"
    assert RetrieveRequest("1.2", ("1.2.3",), ("1.2.3.4", "1.2.3.5")).describe() == (
        "2 instances of series 1.2.3 of study 1.2")
    assert RetrieveRequest("1.2", label="Doe^Jane CT").describe() == "Doe^Jane CT"


def test_warnings_read_like_the_other_messages_unless_verbose(tmp_path: Path) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    args = ("get", "--host", "127.0.0.1", "--port", str(port), "--aet", "PACS", "--study-uid", "1.2",
            "--out", str(tmp_path))
    plain = run_cli(*args).stderr.splitlines()
    assert plain[0].startswith("pacspull get: warning: Could not query the PACS before retrieving (connect: ")
    for verbose in (run_cli("-v", *args), run_cli(*args, "-v")):  # before or after the command
        assert verbose.stderr.startswith("WARNING pacspull.core.get: Could not query the PACS before retrieving")
