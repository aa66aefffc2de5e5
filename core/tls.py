"""DICOM over TLS (PS3.15 B.1): the client context for a node, and handshake failures in plain words.

TLS 1.2 is the minimum; the PACS certificate is always verified (against the node's CA file, else the
system's CAs), its host name too unless the node turns that off. A node with TLS never falls back to
plain TCP: a PACS that does not answer the handshake is refused.
"""

from __future__ import annotations

import socket
import ssl
import time
from pathlib import Path

from pacspull.core.errors import ConnectionFailed, InvalidInput
from pacspull.core.nodes import Node

# OpenSSL X509 verify codes (x509_vfy.h) we explain; others fall back to OpenSSL's own message.
_EXPIRED = 10
_NOT_YET_VALID = 9
_UNTRUSTED = {2, 18, 19, 20, 21, 27}
_HOSTNAME_MISMATCH = {62, 64}  # host name, IP address


def _readable(path: str, field: str) -> str:
    if not Path(path).is_file():
        raise InvalidInput(field, f"must be a readable PEM file; {path!r} does not exist")
    return path


def client_context(node: Node) -> ssl.SSLContext:
    """The SSL context a TLS node is reached with; InvalidInput names a bad file."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    ctx.check_hostname = node.tls_verify_hostname
    ctx.verify_mode = ssl.CERT_REQUIRED
    try:
        if node.tls_ca_file:
            ctx.load_verify_locations(cafile=_readable(node.tls_ca_file, "TLS CA file"))
        else:
            ctx.load_default_certs(ssl.Purpose.SERVER_AUTH)
        if node.tls_cert_file:
            key = _readable(node.tls_key_file, "TLS key file") if node.tls_key_file else None
            ctx.load_cert_chain(_readable(node.tls_cert_file, "TLS certificate file"), key)
    except ssl.SSLError as exc:
        raise InvalidInput("TLS files", f"cannot be loaded as PEM certificates/keys: {exc.reason or exc}") from None
    return ctx


def tls_args(node: Node) -> tuple[ssl.SSLContext, str] | None:
    """pynetdicom's ``tls_args`` for the node, or None without TLS."""
    return (client_context(node), node.host) if node.tls else None


def explain(node: Node, exc: BaseException) -> ConnectionFailed:
    """Say which TLS check failed, and what to do about it."""
    where = f"{node.host}:{node.port}"
    if isinstance(exc, ssl.SSLCertVerificationError):
        code = exc.verify_code
        if code == _EXPIRED:
            return ConnectionFailed(f"the certificate of {where} has expired",
                                    hint="the PACS admin must renew it", stage="tls")
        if code == _NOT_YET_VALID:
            return ConnectionFailed(f"the certificate of {where} is not valid yet",
                                    hint="check the clocks of both machines", stage="tls")
        if code in _HOSTNAME_MISMATCH:
            return ConnectionFailed(f"the certificate of {where} is not issued for host {node.host!r}",
                                    hint="connect by the name in the certificate, or turn off host name checking "
                                    "for this node if you trust it", stage="tls")
        if code in _UNTRUSTED:
            return ConnectionFailed(f"the certificate of {where} is not trusted: {exc.verify_message}",
                                    hint="give the CA file that signed the PACS certificate", stage="tls")
        return ConnectionFailed(f"the certificate of {where} was refused: {exc.verify_message}", stage="tls")
    reason = (getattr(exc, "reason", None) or "").upper()
    text = str(exc).upper()
    if "PROTOCOL_VERSION" in reason or "UNSUPPORTED_PROTOCOL" in reason or "NO_PROTOCOLS" in reason \
            or "PROTOCOL VERSION" in text:
        return ConnectionFailed(f"{where} offers only TLS older than 1.2, which is refused as insecure",
                                hint="the PACS must enable TLS 1.2 or newer", stage="tls")
    if "CERTIFICATE_REQUIRED" in reason or "HANDSHAKE_FAILURE" in reason or "BAD_CERTIFICATE" in reason \
            or "UNKNOWN_CA" in reason:
        return ConnectionFailed(f"{where} refused the TLS handshake ({reason.lower() or exc})",
                                hint="the PACS may require a client certificate it trusts: set this node's "
                                "certificate and key", stage="tls")
    if isinstance(exc, (ssl.SSLEOFError, ssl.SSLZeroReturnError, ConnectionResetError, EOFError)) \
            or "WRONG_VERSION_NUMBER" in reason or "RECORD_LAYER" in reason or "PACKET_LENGTH" in reason:
        return ConnectionFailed(f"{where} does not answer TLS: the port seems to speak plain DICOM (or "
                                "another protocol); not falling back to an unencrypted connection",
                                hint="check the TLS port, or turn TLS off for this node if the PACS has none",
                                stage="tls")
    if isinstance(exc, (socket.timeout, TimeoutError)):
        return ConnectionFailed(f"no TLS answer from {where} within {node.connect_timeout:g} s",
                                hint="the port may not be a TLS port", stage="tls")
    return ConnectionFailed(f"TLS handshake with {where} failed: {exc}", stage="tls")


def handshake_probe(node: Node) -> str:
    """Open a TLS connection like an association would; return a description or raise ConnectionFailed."""
    ctx = client_context(node)
    start = time.perf_counter()
    try:
        with socket.create_connection((node.host, node.port), timeout=node.connect_timeout) as raw:
            with ctx.wrap_socket(raw, server_hostname=node.host) as tls:
                version, cipher = tls.version(), tls.cipher()
                subject = dict(x[0] for x in (tls.getpeercert() or {}).get("subject", ()))
                # With TLS 1.3 a server refuses our client certificate only after the handshake: a short
                # read lets that alert arrive here. A DICOM server waiting for our request sends nothing.
                tls.settimeout(0.3)
                try:
                    tls.recv(1)
                except (socket.timeout, TimeoutError):
                    pass
    except (ssl.SSLError, OSError, EOFError) as exc:
        if isinstance(exc, ConnectionRefusedError):
            from pacspull.core.association import explain_connect_error

            raise explain_connect_error(node, exc) from None
        raise explain(node, exc) from None
    took = (time.perf_counter() - start) * 1000
    who = subject.get("commonName", "?")
    return f"{version} with {cipher[0] if cipher else '?'} in {took:.1f} ms; certificate for {who!r} verified"
