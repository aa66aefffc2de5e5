"""Passwords and tokens of nodes: in the OS keyring, never in nodes.json, logs or screenshots.

The CLI can also hand a secret over for one run (``remember_for_run``) without storing it.
"""

from __future__ import annotations

import keyring
from keyring.errors import KeyringError

from pacspull.core.errors import PacsPullError

SERVICE = "PacsPull"
_for_this_run: dict[str, str] = {}


class CredentialError(PacsPullError):
    """The OS keyring is missing or refused us."""

    exit_code = 2


def _key(node_name: str) -> str:
    return f"node:{node_name.casefold()}"


def remember_for_run(node_name: str, secret: str) -> None:
    """Use ``secret`` for this node until the process ends, without storing it anywhere."""
    _for_this_run[_key(node_name)] = secret


def store_secret(node_name: str, secret: str) -> None:
    """Save the node's password or token in the OS keyring."""
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
    try:
        return keyring.get_password(SERVICE, key)
    except KeyringError:
        return None


def delete_secret(node_name: str) -> None:
    """Forget the node's secret (no error if there was none)."""
    _for_this_run.pop(_key(node_name), None)
    try:
        keyring.delete_password(SERVICE, _key(node_name))
    except KeyringError:
        pass


def mask(text: str, secret: str | None) -> str:
    """``text`` with every occurrence of ``secret`` replaced, for logs and messages."""
    return text.replace(secret, "********") if secret else text
