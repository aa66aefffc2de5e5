"""`pacspull nodes ...` persists nodes that other commands use by name; diagnose names the failing stage."""

from __future__ import annotations

import json
import socket
from collections.abc import Iterator
from pathlib import Path

import pytest

from pacspull.core.cli import main
from pacspull.core.demo_pacs import DemoPacs, Faults


@pytest.fixture
def config(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("PACSPULL_CONFIG_DIR", str(tmp_path / "config"))
    return tmp_path / "config"


@pytest.fixture
def pacs(sample_files: list[Path]) -> Iterator[DemoPacs]:
    with DemoPacs(files=sample_files) as server:
        yield server


def run(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    code = main(list(args))
    out = capsys.readouterr()
    return code, out.out, out.err


def test_nodes_add_list_use_test_remove(config: Path, pacs: DemoPacs, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(capsys, "nodes", "add", "Demo", "--host", "127.0.0.1", "--port", str(pacs.port),
                       "--aet", pacs.ae_title, "--calling-aet", "WS1", "--timeout", "5")
    assert code == 0 and "saved node 'Demo'" in out
    saved = json.loads((config / "nodes.json").read_text(encoding="utf-8"))
    assert saved["selected"] == "Demo"
    assert saved["nodes"][0] | {"ae_title": pacs.ae_title, "calling_ae": "WS1", "dimse_timeout": 5.0} == saved["nodes"][0]
    code, out, _ = run(capsys, "nodes", "list", "--json")
    assert [n["name"] for n in json.loads(out)] == ["Demo"]
    code, out, _ = run(capsys, "nodes", "add", "demo", "--host", "h", "--port", "1", "--aet", "X")
    assert code == 2
    code, out, _ = run(capsys, "find", "--node", "demo", "--patient-id", "PP-0004", "--json")
    assert code == 0 and [r["PatientName"] for r in json.loads(out)] == ["Doe^Jane"]
    code, out, _ = run(capsys, "nodes", "test", "Demo", "--json")
    assert code == 0 and json.loads(out)["ok"] is True
    code, out, _ = run(capsys, "nodes", "remove", "Demo")
    assert code == 0
    code, _, err = run(capsys, "echo", "--node", "Demo")
    assert code == 2 and "no node named 'Demo'" in err


def test_nodes_add_refuses_a_password_it_could_only_send_in_clear(config: Path,
                                                                    capsys: pytest.CaptureFixture[str]) -> None:
    """Refused when added, naming the option and the way out, not at every later use; nothing is saved."""
    base = ["nodes", "add", "pw", "--host", "127.0.0.1", "--port", "104", "--aet", "PACS"]
    code, _, err = run(capsys, *base, "--user-identity", "password", "--user", "bob")
    assert code == 2
    assert err.strip() == ("pacspull nodes: --user-identity: password sends a secret: give --tls, or "
                           "--allow-plain-credentials to send it unencrypted over plain TCP")
    assert not (config / "nodes.json").exists()
    code, _, _ = run(capsys, *base, "--user-identity", "username", "--user", "bob")  # no secret: plain is fine
    assert code == 0


def test_diagnose_closed_port_fails_at_connect(capsys: pytest.CaptureFixture[str]) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    code, out, _ = run(capsys, "diagnose", "--host", "127.0.0.1", "--port", str(port), "--aet", "X", "--json")
    report = json.loads(out)
    assert code == 3 and report["failed_stage"] == "connect"
    assert [s["ok"] for s in report["stages"]] == [True, False, None, None, None, None, None]
    assert "nothing listens on that port" in report["stages"][1]["hint"]


def test_diagnose_rejected_calling_ae(pacs: DemoPacs, capsys: pytest.CaptureFixture[str]) -> None:
    pacs.faults = Faults(reject_association=True)
    code, out, _ = run(capsys, "diagnose", "--host", pacs.host, "--port", str(pacs.port), "--aet", pacs.ae_title,
                       "--calling-aet", "STRANGER")
    assert code == 3
    assert "[FAIL] associate" in out and "Calling AE title not recognised" in out
    assert "the PACS does not know calling AE 'STRANGER'" in out


def test_diagnose_reports_refused_storage_contexts(pacs: DemoPacs, capsys: pytest.CaptureFixture[str]) -> None:
    """The demo PACS offers storage contexts only for classes it holds: the others show as rejected."""
    code, out, _ = run(capsys, "diagnose", "--host", pacs.host, "--port", str(pacs.port), "--aet", pacs.ae_title,
                       "--json")
    report = json.loads(out)
    assert code == 0
    by_name = {c["name"]: c for c in report["contexts"]}
    assert by_name["CT Image Storage"]["accepted"] and by_name["CT Image Storage"]["scp_role"] is True
    assert by_name["RT Plan Storage"]["accepted"] is False
    assert "does not support this SOP class" in by_name["RT Plan Storage"]["reason"]


def test_find_failure_status_exits_4(pacs: DemoPacs, capsys: pytest.CaptureFixture[str]) -> None:
    pacs.faults = Faults(find_status=0xC000)
    code, _, err = run(capsys, "find", "--host", pacs.host, "--port", str(pacs.port), "--aet", pacs.ae_title)
    assert code == 4 and "refused the C-FIND: 0xC000" in err


def test_the_windows_demo_node_without_the_window_says_where_its_pacs_is(config: Path,
                                                                          capsys: pytest.CaptureFixture[str]) -> None:
    """The window saves its demo node in the shared nodes.json; with the window closed nothing listens there,
    and the CLI says why and what to run instead."""
    from pacspull.core.nodes import DEMO_NODE_NAME, Node, NodeBook

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    book = NodeBook.load()
    book.put(Node(name=DEMO_NODE_NAME, ae_title="PACSPULL_DEMO", host="127.0.0.1", port=port))
    book.save()
    code, _, err = run(capsys, "echo", "--node", DEMO_NODE_NAME)
    assert code == 3 and "connection refused" in err
    assert "runs only while the window is open; 'pacspull demo-pacs' starts one of its own" in err
