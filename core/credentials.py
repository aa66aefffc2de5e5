"""Passwords and tokens of nodes: in the OS keyring, never in nodes.json, logs or screenshots.

The CLI can also hand a secret over for one run (``remember_for_run``) without storing it.
"""

from __future__ import annotations

import logging
import re
import threading
from collections.abc import Callable
from types import ModuleType

from pacspull.core.errors import PacsPullError

SERVICE = "PacsPull"
_for_this_run: dict[str, str] = {}


class CredentialError(PacsPullError):
    """The OS keyring is missing or refused us."""

    exit_code = 2


def _keyring() -> tuple[ModuleType, type[Exception]]:
    """``keyring`` and its error class, imported on first use: importing keyring and its backends costs
    about 40 ms, and most runs need no secret (the log masking below, needed on every run, does not)."""
    import keyring
    from keyring.errors import KeyringError

    return keyring, KeyringError


def _key(node_name: str) -> str:
    return f"node:{node_name.casefold()}"


def remember_for_run(node_name: str, secret: str) -> None:
    """Use ``secret`` for this node until the process ends, without storing it anywhere."""
    mask_in_logs(secret)
    _for_this_run[_key(node_name)] = secret


def store_secret(node_name: str, secret: str) -> None:
    """Save the node's password or token in the OS keyring."""
    keyring, KeyringError = _keyring()
    try:
        keyring.set_password(SERVICE, _key(node_name), secret)
    except KeyringError as exc:
        raise CredentialError(f"cannot store the secret of node {node_name!r} in the OS keyring: {exc}",
                              hint="install and unlock a keyring (e.g. GNOME Keyring or KWallet), or pass the "
                              "secret for each run with --secret-stdin") from None


def get_secret(node_name: str) -> str | None:
    """The node's password or token: given for this run, else from the keyring, else None."""
    key = _key(node_name)
    if key in _for_this_run:
        return _for_this_run[key]
    keyring, KeyringError = _keyring()
    try:
        secret = keyring.get_password(SERVICE, key)
    except KeyringError:
        return None
    mask_in_logs(secret)
    return secret


def delete_secret(node_name: str) -> None:
    """Forget the node's secret (no error if there was none)."""
    _for_this_run.pop(_key(node_name), None)
    keyring, KeyringError = _keyring()
    try:
        keyring.delete_password(SERVICE, _key(node_name))
    except KeyringError:
        pass


def mask(text: str, secret: str | None) -> str:
    """``text`` with every occurrence of ``secret`` replaced, for logs and messages."""
    return text.replace(secret, MASK) if secret else text


# pynetdicom's debug dump of an A-ASSOCIATE-RQ prints the password in clear ("  Password: [s3cret]"),
# and a User Identity sub-item's str() prints both fields as bytes. Masked by shape, whatever the value.
_PDU_SECRET = re.compile(r"^(\s*Password: \[).*(\]\s*)$|^(\s*(?:Primary|Secondary) field: )(?!\(not used\)).*$",
                         re.MULTILINE)
MASK = "********"

_known: tuple[str, ...] = ()  # replaced, never mutated: the record factory reads it on any thread
_known_lock = threading.Lock()
_installed = False


def mask_in_logs(secret: str | None) -> None:
    """Mask ``secret`` in every log record from now on (any logger, any thread)."""
    global _known
    if not secret:
        return
    with _known_lock:
        if secret not in _known:
            _known = (*_known, secret)


def masked(text: str) -> str:
    """``text`` with every known secret and pynetdicom's identity dump lines masked."""
    for secret in _known:
        text = mask(text, secret)
    if "Password: [" in text or "field: " in text:
        text = _PDU_SECRET.sub(lambda m: f"{m[1]}{MASK}{m[2]}" if m[1] else f"{m[3]}{MASK}", text)
    return text


def _mask_record(record: logging.LogRecord) -> None:
    if not _known and not (record.name or "").startswith("pynetdicom"):  # logging.makeLogRecord: None
        return
    try:
        text = record.getMessage()
    except Exception:  # noqa: BLE001 - a broken format string: logging reports it when it formats
        return
    clean = masked(text)
    if clean != text:
        record.msg, record.args = clean, None


def install_log_masking() -> None:
    """Mask secrets in every log record made from now on (log view, log file, stderr alike); idempotent.

    A record factory rather than a handler filter: it sees records of every logger before any handler,
    including handlers added later, so no path to a log can skip it.
    """
    global _installed
    with _known_lock:
        if _installed:
            return
        previous: Callable[..., logging.LogRecord] = logging.getLogRecordFactory()

        def factory(*args: object, **kwargs: object) -> logging.LogRecord:
            record = previous(*args, **kwargs)
            _mask_record(record)
            return record

        logging.setLogRecordFactory(factory)
        _installed = True
