"""DICOM over TLS and user identity: what works with the right settings, and each refusal named."""

from __future__ import annotations

import dataclasses
import socket
import ssl
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import keyring
import pytest
from certs import Authority, Pem
from peers import node_of

from pacspull.core import credentials, samples
from pacspull.core.demo_pacs import DemoPacs
from pacspull.core.diagnose import diagnose
from pacspull.core.echo import echo
from pacspull.core.errors import AssociationRejected, ConnectionFailed, InvalidInput
from pacspull.core.get import Retrieval, RetrieveRequest
from pacspull.core.query import QueryRequest, find
from pacspull.core.storage import StudyWriter

STUDY = next(s for s in samples.sample_studies() if s.accession_number == "ACC-24-0002")  # 5 CT


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    folder = tmp_path_factory.mktemp("pki")
    ca, other = Authority(folder / "ca"), Authority(folder / "other", "Other CA")
    return {
        "ca": ca,
        "other": other,
        "server": ca.issue("server"),
        "expired": ca.issue("expired", expired=True),
        "wrong_host": ca.issue("wrong-host", hosts=("pacs.example.org",)),
        "client": ca.issue("client", hosts=("pacspull-client",), client=True),
    }


def server_context(pem: Pem, *, client_ca: Pem | None = None, max_version: ssl.TLSVersion | None = None
                   ) -> ssl.SSLContext:
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(pem.cert, pem.key)
    if client_ca is not None:
        ctx.verify_mode = ssl.CERT_REQUIRED
        ctx.load_verify_locations(client_ca.cert)
    if max_version is not None:
        ctx.minimum_version = ssl.TLSVersion.TLSv1
        ctx.maximum_version = max_version
        ctx.set_ciphers("DEFAULT:@SECLEVEL=0")
    return ctx


@pytest.fixture
def tls_demo(sample_files: list[Path]) -> Iterator[Any]:
    started: list[DemoPacs] = []

    def make(ctx: ssl.SSLContext, **kwargs: Any) -> DemoPacs:
        pacs = DemoPacs(files=sample_files, ssl_context=ctx, **kwargs).start()
        started.append(pacs)
        return pacs

    yield make
    for pacs in started:
        pacs.stop()


def tls_node(peer: Any, ca: Pem, **kwargs: Any) -> Any:
    return node_of(peer, tls=True, tls_ca_file=str(ca.cert), **kwargs)


def test_echo_find_get_over_tls(tls_demo: Any, pki: dict[str, Any], tmp_path: Path) -> None:
    pacs = tls_demo(server_context(pki["server"]))
    node = tls_node(pacs, pki["ca"].pem)
    assert echo(node).status.code == 0
    rows = find(node, QueryRequest(accession=STUDY.accession_number)).rows
    assert [r.study_uid for r in rows] == [STUDY.study_instance_uid]
    summary = Retrieval(node, [RetrieveRequest(STUDY.study_instance_uid)], StudyWriter(tmp_path)).run()
    assert summary.ok and summary.total("completed") == STUDY.number_of_instances
    report = diagnose(node)
    assert report.ok and "TLSv1." in report.stages[2].detail and "verified" in report.stages[2].detail


def test_client_certificate_when_the_pacs_requires_one(tls_demo: Any, pki: dict[str, Any]) -> None:
    pacs = tls_demo(server_context(pki["server"], client_ca=pki["ca"].pem))
    with pytest.raises(ConnectionFailed) as info:
        echo(tls_node(pacs, pki["ca"].pem))
    assert info.value.stage == "tls"
    node = tls_node(pacs, pki["ca"].pem, tls_cert_file=str(pki["client"].cert), tls_key_file=str(pki["client"].key))
    assert echo(node).status.code == 0


@pytest.mark.parametrize(
    ("case", "expected"),
    [
        ("untrusted", "is not trusted"),
        ("expired", "has expired"),
        ("wrong_host", "is not issued for host '127.0.0.1'"),
        ("old_tls", "offers only TLS older than 1.2"),
    ],
)
def test_refusals_say_which(case: str, expected: str, tls_demo: Any, pki: dict[str, Any]) -> None:
    ca = pki["ca"].pem
    if case == "untrusted":
        pacs, ca = tls_demo(server_context(pki["server"])), pki["other"].pem
    elif case == "expired":
        pacs = tls_demo(server_context(pki["expired"]))
    elif case == "wrong_host":
        pacs = tls_demo(server_context(pki["wrong_host"]))
    else:
        pacs = tls_demo(server_context(pki["server"], max_version=ssl.TLSVersion.TLSv1_1))
    with pytest.raises(ConnectionFailed) as info:
        echo(tls_node(pacs, ca))
    assert info.value.stage == "tls" and expected in str(info.value)
    report = diagnose(tls_node(pacs, ca))
    assert report.failed_stage is not None and report.failed_stage.name == "tls"


def test_wrong_host_accepted_when_hostname_check_is_off(tls_demo: Any, pki: dict[str, Any]) -> None:
    pacs = tls_demo(server_context(pki["wrong_host"]))
    assert echo(tls_node(pacs, pki["ca"].pem, tls_verify_hostname=False)).status.code == 0


def test_no_silent_fallback_to_plain_tcp(demo: DemoPacs, pki: dict[str, Any]) -> None:
    with pytest.raises(ConnectionFailed) as info:
        echo(tls_node(demo, pki["ca"].pem))
    assert info.value.stage == "tls" and "not falling back to an unencrypted connection" in str(info.value)


def test_plain_client_to_tls_port_is_not_a_hang(tls_demo: Any, pki: dict[str, Any]) -> None:
    pacs = tls_demo(server_context(pki["server"]))
    with pytest.raises((AssociationRejected, ConnectionFailed)) as info:
        echo(node_of(pacs, acse_timeout=2, connect_timeout=2))
    assert "TLS" in str(info.value) or "did not answer" in str(info.value)


def test_orthanc_over_tls(orthanc_factory: Any, sample_files: list[Path], pki: dict[str, Any], tmp_path: Path) -> None:
    server = pki["server"]
    peer = orthanc_factory(extra_config={
        "DicomTlsEnabled": True,
        "DicomTlsCertificate": str(server.cert),
        "DicomTlsPrivateKey": str(server.key),
        "DicomTlsTrustedCertificates": str(pki["ca"].pem.cert),
        "DicomTlsRemoteCertificateRequired": False,
    })
    wanted = {samples.sample_instances()[uid].relative_path for uid in STUDY.instance_uids}
    study_files = [p for p in sample_files if any(p.as_posix().endswith(r) for r in wanted)]
    peer.load(study_files)
    node = tls_node(peer, pki["ca"].pem)
    assert echo(node).status.code == 0
    assert [r.study_uid for r in find(node, QueryRequest()).rows] == [STUDY.study_instance_uid]
    summary = Retrieval(node, [RetrieveRequest(STUDY.study_instance_uid)], StudyWriter(tmp_path)).run()
    assert summary.ok and summary.total("completed") == STUDY.number_of_instances
    with pytest.raises(ConnectionFailed, match="not trusted"):
        echo(tls_node(peer, pki["other"].pem))


# -- user identity ----------------------------------------------------------------------------------

@pytest.fixture
def secrets(monkeypatch: pytest.MonkeyPatch) -> dict[str, str]:
    """An in-memory keyring, so the tests never touch the user's."""
    store: dict[str, str] = {}
    monkeypatch.setattr(keyring, "get_password", lambda s, k: store.get(f"{s}/{k}"))
    monkeypatch.setattr(keyring, "set_password", lambda s, k, v: store.__setitem__(f"{s}/{k}", v))
    return store


@pytest.fixture
def guarded(sample_files: list[Path]) -> Iterator[DemoPacs]:
    with DemoPacs(files=sample_files, users={"alice": "s3cret", "bob": None}, tokens={"token-123"}) as pacs:
        yield pacs


def test_identity_outcomes(guarded: DemoPacs, secrets: dict[str, str]) -> None:
    base = node_of(guarded, allow_plain_credentials=True)
    credentials.store_secret(base.name, "s3cret")
    assert echo(dataclasses.replace(base, identity="password", identity_user="alice")).status.code == 0
    assert echo(dataclasses.replace(base, identity="username", identity_user="bob")).status.code == 0
    credentials.store_secret(base.name, "token-123")
    # pynetdicom answers a positive response for tokens only (not for names/passwords): ask for it here
    assert echo(dataclasses.replace(base, identity="jwt", identity_positive_response=True)).status.code == 0
    credentials.store_secret(base.name, "wrong")
    with pytest.raises(AssociationRejected) as info:
        echo(dataclasses.replace(base, identity="password", identity_user="alice"))
    assert "refused the user identity" in str(info.value)
    with pytest.raises(AssociationRejected):
        echo(dataclasses.replace(base, identity="username", identity_user="mallory"))
    with pytest.raises(AssociationRejected):
        echo(base)  # no identity at all: aborted


def test_positive_response_requested_but_absent_is_detected(demo: DemoPacs, secrets: dict[str, str]) -> None:
    """The plain demo PACS ignores user identity: asking for a positive response exposes that."""
    node = node_of(demo, identity="username", identity_user="bob", identity_positive_response=True)
    with pytest.raises(AssociationRejected, match="did not confirm the user identity"):
        echo(node)
    assert echo(dataclasses.replace(node, identity_positive_response=False)).status.code == 0


def test_no_secret_over_plain_tcp_unless_allowed(guarded: DemoPacs, secrets: dict[str, str]) -> None:
    node = node_of(guarded, identity="password", identity_user="alice")
    credentials.store_secret(node.name, "s3cret")
    with pytest.raises(InvalidInput, match="would send a password or token unencrypted"):
        echo(node)


def test_missing_secret_is_a_clear_error(guarded: DemoPacs, secrets: dict[str, str]) -> None:
    with pytest.raises(InvalidInput, match="no password or token is stored"):
        echo(node_of(guarded, identity="jwt", allow_plain_credentials=True))


def test_secret_never_in_the_node_file(tmp_path: Path, secrets: dict[str, str], guarded: DemoPacs,
                                       monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    from pacspull.core.cli import main

    monkeypatch.setenv("PACSPULL_CONFIG_DIR", str(tmp_path))
    monkeypatch.setattr("sys.stdin", __import__("io").StringIO("s3cret\n"))
    assert main(["nodes", "add", "Guarded", "--host", guarded.host, "--port", str(guarded.port), "--aet",
                 guarded.ae_title, "--user-identity", "password", "--user", "alice", "--secret-stdin",
                 "--allow-plain-credentials"]) == 0
    assert "s3cret" not in (tmp_path / "nodes.json").read_text(encoding="utf-8")
    assert "s3cret" in secrets.values()
    credentials._for_this_run.clear()
    assert main(["echo", "--node", "Guarded"]) == 0
    assert "s3cret" not in capsys.readouterr().out


def test_tls_with_password_identity(tls_demo: Any, pki: dict[str, Any], secrets: dict[str, str]) -> None:
    pacs = tls_demo(server_context(pki["server"]), users={"alice": "s3cret"})
    node = tls_node(pacs, pki["ca"].pem, identity="password", identity_user="alice")
    credentials.store_secret(node.name, "s3cret")
    assert echo(node).status.code == 0  # TLS on: no explicit permission needed for the password


def test_closed_tls_port(pki: dict[str, Any]) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    from pacspull.core.nodes import Node

    node = Node(name="x", ae_title="X", host="127.0.0.1", port=port, tls=True, tls_ca_file=str(pki["ca"].pem.cert))
    with pytest.raises(ConnectionFailed, match="connection refused"):
        echo(node)


