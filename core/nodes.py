"""DICOM nodes (a PACS the user talks to) and the node book persisted as JSON.

Every value is validated where it enters, with a message that names the field and the rule.
"""

from __future__ import annotations

import dataclasses
import ipaddress
import json
import os
import re
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import platformdirs

from pacspull.core.errors import InvalidInput

APP_NAME = "PacsPull"
DEFAULT_CALLING_AE = "PACSPULL"
DEMO_NODE_NAME = "Demo PACS"
# Big enough that a PACS sends few, large PDUs (dcmtk's own ceiling); the peer may still send smaller ones.
DEFAULT_MAX_PDU = 131072

# PS3.8 D.3.3.7.1 User-Identity-Type: 1 username, 2 username+passcode, 3 Kerberos, 4 SAML, 5 JWT.
IDENTITY_TYPES: dict[str, int] = {"none": 0, "username": 1, "password": 2, "kerberos": 3, "saml": 4, "jwt": 5}

_HOSTNAME_LABEL = re.compile(r"^(?!-)[A-Za-z0-9-]{1,63}(?<!-)$")


def config_dir() -> Path:
    """The folder holding nodes.json and settings (``PACSPULL_CONFIG_DIR`` overrides, for tests)."""
    override = os.environ.get("PACSPULL_CONFIG_DIR")
    return Path(override) if override else Path(platformdirs.user_config_dir(APP_NAME, appauthor=False))


def data_dir() -> Path:
    """The folder for app data: demo PACS samples (``PACSPULL_DATA_DIR`` overrides)."""
    override = os.environ.get("PACSPULL_DATA_DIR")
    return Path(override) if override else Path(platformdirs.user_data_dir(APP_NAME, appauthor=False))


def validate_ae_title(value: str, field_name: str = "AE title") -> str:
    """Return the AE title stripped of insignificant spaces, or raise InvalidInput naming the rule.

    PS3.5 6.2 (AE VR): 1 to 16 characters of the default repertoire, no backslash, no control characters;
    leading and trailing spaces are not significant and an all-space value is not allowed.
    """
    if not isinstance(value, str):
        raise InvalidInput(field_name, "must be text", value=value)
    if any(ord(c) < 0x20 or ord(c) == 0x7F for c in value):
        raise InvalidInput(field_name, "must not contain control characters", value=value)
    if "\\" in value:
        raise InvalidInput(field_name, "must not contain a backslash", value=value)
    if any(ord(c) > 0x7E for c in value):
        raise InvalidInput(field_name, "must use plain ASCII characters only", value=value)
    stripped = value.strip(" ")
    if not stripped:
        raise InvalidInput(field_name, "must not be empty (1 to 16 characters)", value=value)
    if len(stripped) > 16:
        raise InvalidInput(field_name, f"must be at most 16 characters, not {len(stripped)}", value=value)
    return stripped


def validate_port(value: object, field_name: str = "port") -> int:
    """Return the port as an int in 1..65535 or raise InvalidInput."""
    try:
        port = int(str(value).strip())
    except (TypeError, ValueError):
        raise InvalidInput(field_name, "must be a whole number from 1 to 65535", value=value) from None
    if not 1 <= port <= 65535:
        raise InvalidInput(field_name, "must be a whole number from 1 to 65535", value=value)
    return port


def validate_port_or_zero(value: object, field_name: str = "port") -> int:
    """Like validate_port, but 0 (let the system choose a free port) is allowed: for servers we start."""
    if str(value).strip() == "0":
        return 0
    return validate_port(value, field_name)


def validate_host(value: str, field_name: str = "host") -> str:
    """Return the host name or IP address, or raise InvalidInput."""
    host = (value or "").strip()
    if not host:
        raise InvalidInput(field_name, "must not be empty (a host name or IP address)")
    try:
        ipaddress.ip_address(host)
        return host
    except ValueError:
        pass
    labels = host.rstrip(".").split(".")
    if len(host) > 253 or not all(_HOSTNAME_LABEL.match(label) for label in labels):
        raise InvalidInput(
            field_name, "must be an IP address or a host name of letters, digits, '-' and '.'", value=value
        )
    return host


def validate_timeout(value: object, field_name: str = "timeout") -> float:
    """Return a timeout in seconds (0 < t <= 3600) or raise InvalidInput."""
    try:
        seconds = float(str(value).strip())
    except (TypeError, ValueError):
        raise InvalidInput(field_name, "must be a number of seconds", value=value) from None
    if not 0 < seconds <= 3600:
        raise InvalidInput(field_name, "must be more than 0 and at most 3600 seconds", value=value)
    return seconds


def validate_max_pdu(value: object, field_name: str = "max PDU") -> int:
    """Return the maximum PDU length we accept: 0 (no limit) or 4096..2**32-1 bytes."""
    try:
        size = int(str(value).strip())
    except (TypeError, ValueError):
        raise InvalidInput(field_name, "must be a whole number of bytes", value=value) from None
    if size != 0 and not 4096 <= size <= 0xFFFFFFFF:
        raise InvalidInput(field_name, "must be 0 (no limit) or from 4096 to 4294967295 bytes", value=value)
    return size


@dataclass(frozen=True)
class Node:
    """A PACS: where it is, who we are to it, and how long we wait for it."""

    name: str
    ae_title: str
    host: str
    port: int
    calling_ae: str = DEFAULT_CALLING_AE
    connect_timeout: float = 10.0
    acse_timeout: float = 30.0
    dimse_timeout: float = 60.0
    max_pdu: int = DEFAULT_MAX_PDU
    query_charset: str = "ISO_IR 192"
    # DICOM over TLS (core/tls.py). Certificate files are PEM paths; an empty CA file means the system's.
    tls: bool = False
    tls_ca_file: str = ""
    tls_cert_file: str = ""
    tls_key_file: str = ""
    tls_verify_hostname: bool = True
    # User Identity negotiation (PS3.7 D.3.3.7). The password or token itself lives in the OS keyring
    # (core/credentials.py), never here.
    identity: str = "none"
    identity_user: str = ""
    identity_positive_response: bool = False
    allow_plain_credentials: bool = False

    def __post_init__(self) -> None:
        name = (self.name or "").strip()
        if not name:
            raise InvalidInput("node name", "must not be empty")
        if len(name) > 64 or any(ord(c) < 0x20 for c in name):
            raise InvalidInput("node name", "must be at most 64 printable characters", value=self.name)
        object.__setattr__(self, "name", name)
        object.__setattr__(self, "ae_title", validate_ae_title(self.ae_title, "called AE title"))
        object.__setattr__(self, "calling_ae", validate_ae_title(self.calling_ae, "calling AE title"))
        object.__setattr__(self, "host", validate_host(self.host))
        object.__setattr__(self, "port", validate_port(self.port))
        for timeout in ("connect_timeout", "acse_timeout", "dimse_timeout"):
            object.__setattr__(self, timeout, validate_timeout(getattr(self, timeout), timeout.replace("_", " ")))
        object.__setattr__(self, "max_pdu", validate_max_pdu(self.max_pdu))
        if self.identity not in IDENTITY_TYPES:
            raise InvalidInput("user identity", f"must be one of {', '.join(IDENTITY_TYPES)}", value=self.identity)
        if self.identity in ("username", "password") and not self.identity_user.strip():
            raise InvalidInput("user name", f"is needed for user identity {self.identity!r}")
        if self.tls_key_file and not self.tls_cert_file:
            raise InvalidInput("TLS key file", "goes with a TLS certificate file: give both or neither")

    @property
    def identity_has_secret(self) -> bool:
        """True when the identity sends a password or token (kept in the keyring)."""
        return self.identity not in ("none", "username")

    @property
    def address(self) -> str:
        """``AE@host:port`` for messages."""
        return f"{self.ae_title}@{self.host}:{self.port}"

    def with_timeout(self, seconds: float) -> Node:
        """The same node with every timeout set to ``seconds`` (the CLI's ``--timeout``)."""
        return dataclasses.replace(self, connect_timeout=seconds, acse_timeout=seconds, dimse_timeout=seconds)

    def to_json(self) -> dict[str, object]:
        """A JSON-ready dict."""
        return dataclasses.asdict(self)

    @classmethod
    def from_json(cls, data: dict[str, object]) -> Node:
        """Build a node from ``to_json`` output, ignoring unknown keys from newer versions."""
        known = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in known})  # type: ignore[arg-type]


@dataclass
class NodeBook:
    """The user's nodes, persisted as ``nodes.json`` in the config folder (written atomically)."""

    path: Path
    nodes: list[Node] = field(default_factory=list)
    selected: str | None = None

    @classmethod
    def default_path(cls) -> Path:
        """Where the node book lives."""
        return config_dir() / "nodes.json"

    @classmethod
    def load(cls, path: Path | None = None) -> NodeBook:
        """Read the node book; a missing file gives an empty book, a corrupt one a clear error."""
        path = path or cls.default_path()
        if not path.exists():
            return cls(path=path)
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
            nodes = [Node.from_json(item) for item in data.get("nodes", [])]
        except (OSError, ValueError, TypeError, AttributeError) as exc:
            raise InvalidInput("node book", f"cannot read {path}: {exc}") from None
        return cls(path=path, nodes=nodes, selected=data.get("selected"))

    def save(self) -> None:
        """Write the book atomically (temp file + replace), so a crash never leaves half a file."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        payload = {"version": 1, "selected": self.selected, "nodes": [n.to_json() for n in self.nodes]}
        fd, tmp = tempfile.mkstemp(prefix=".nodes-", suffix=".json", dir=self.path.parent)
        try:
            with os.fdopen(fd, "w", encoding="utf-8") as fh:
                json.dump(payload, fh, indent=2, ensure_ascii=False)
            os.replace(tmp, self.path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise

    def __iter__(self) -> Iterator[Node]:
        return iter(self.nodes)

    def __len__(self) -> int:
        return len(self.nodes)

    def names(self) -> list[str]:
        """Node names in book order."""
        return [n.name for n in self.nodes]

    def get(self, name: str) -> Node:
        """The node called ``name`` (case-insensitive), or InvalidInput listing the known names."""
        for node in self.nodes:
            if node.name.casefold() == name.strip().casefold():
                return node
        known = ", ".join(repr(n) for n in self.names()) or "none yet (add one with 'pacspull nodes add')"
        raise InvalidInput("node", f"no node named {name!r}; known nodes: {known}")

    def put(self, node: Node, *, replace: bool = False) -> None:
        """Add a node; with ``replace`` an existing node of that name is updated in place."""
        for i, existing in enumerate(self.nodes):
            if existing.name.casefold() == node.name.casefold():
                if not replace:
                    raise InvalidInput("node name", f"a node named {existing.name!r} already exists")
                self.nodes[i] = node
                return
        self.nodes.append(node)

    def remove(self, name: str) -> Node:
        """Remove and return the node called ``name``."""
        node = self.get(name)
        self.nodes.remove(node)
        if self.selected == node.name:
            self.selected = self.nodes[0].name if self.nodes else None
        return node
