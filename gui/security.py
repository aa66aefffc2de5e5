"""Passwords and tokens on the window's side: what Save does to the keyring, secrets lent to a connection
test, and masking in every log record.

Qt-free on purpose (the node dialog drives it; tests call it directly). The secret itself lives in the
OS keyring (``core.credentials``) and, while a dialog tests it, in core's per-run table; never in
``nodes.json``, a widget's saved state or the log.

Per-run secrets: core reads a node's secret from ``remember_for_run`` first, then the keyring. A test
of an unsaved secret lends it there under the node's name; Cancel gives back what was there before, and
Save puts the saved value there too (the per-run table and the keyring agree for every node the window
saved). core has no call to *drop* a per-run entry, so "nothing before" is given back as an empty
secret, which core treats exactly as "none stored". The one visible effect: a secret another process
(the CLI) stores for a node the window tested this way is seen after a restart.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass

from pacspull.core import credentials
# Masking lives in core (the CLI needs it too); the window's modules import it from here.
from pacspull.core.credentials import install_log_masking, mask_in_logs  # noqa: F401

class SecretAction(enum.Enum):
    """What the user did with the password/token field of the node dialog."""

    KEEP = "keep"  # left it alone: the stored secret (if any) stays
    REPLACE = "replace"  # typed a new one
    CLEAR = "clear"  # asked to delete the stored one


@dataclass(frozen=True)
class SecretChange:
    """What Save does to the keyring for the node being saved.

    ``origin`` is the node whose secret the dialog started from: the node itself when editing, the
    original when duplicating, None for a new node; ``stored`` says whether it has one. ``moves`` is
    True when editing (a renamed node takes its secret along); a duplicate copies it and leaves the
    original's alone. ``needed``: the identity chosen sends a secret.
    """

    action: SecretAction
    target: str
    needed: bool
    origin: str | None = None
    stored: bool = False
    moves: bool = False
    typed: str = ""

    def renamed(self) -> bool:
        """True when the secret must change key (keys ignore case, as node names do)."""
        return self.origin is not None and self.origin.casefold() != self.target.casefold()


class SecretKeeper:
    """The keyring side of one node dialog: secrets lent to a connection test, and what Save writes.

    GUI thread only (the dialog's): keyring calls are quick local IPC, made when the dialog opens and on
    Test connection and Save; a locked keyring may show its own unlock prompt then.
    """

    def __init__(self) -> None:
        self._lent: dict[str, tuple[str, str | None]] = {}  # casefolded name -> (name, secret before lending)

    def stored(self, name: str | None) -> bool:
        """True when a secret is stored (or lent) for ``name``; the value itself is only masked."""
        if not name:
            return False
        secret = credentials.get_secret(name)
        mask_in_logs(secret)
        return bool(secret)

    def secret_for_test(self, change: SecretChange) -> None:
        """Make core find the secret the dialog shows under ``change.target`` while a test runs."""
        if not change.needed:
            return
        if change.action is SecretAction.REPLACE:
            self._lend(change.target, change.typed)
        elif change.action is SecretAction.KEEP and change.stored and change.renamed():
            assert change.origin is not None
            self._lend(change.target, credentials.get_secret(change.origin) or "")

    def _lend(self, name: str, secret: str) -> None:
        key = name.casefold()
        if key not in self._lent:
            self._lent[key] = (name, credentials.get_secret(name))
        mask_in_logs(secret)
        credentials.remember_for_run(name, secret)

    def give_back(self) -> None:
        """Undo every loan (Cancel, and the first step of Save)."""
        for name, before in self._lent.values():
            credentials.remember_for_run(name, before or "")
        self._lent.clear()

    def save(self, change: SecretChange) -> None:
        """Write ``change`` to the keyring; raises ``CredentialError`` when the keyring refuses.

        Nothing is deleted before its replacement is stored, so a refusal loses no secret.
        """
        self.give_back()
        value: str | None = None
        if change.needed and change.action is SecretAction.REPLACE:
            value = change.typed
        elif change.needed and change.action is SecretAction.KEEP and change.stored and change.renamed():
            assert change.origin is not None
            value = credentials.get_secret(change.origin)
            if not value:
                raise credentials.CredentialError(
                    f"cannot read the stored secret of node {change.origin!r} to keep it under the new name",
                    hint="unlock the OS keyring, or type the password or token again")
        if value:
            credentials.store_secret(change.target, value)
            mask_in_logs(value)
            # A loan given back (now, or by an earlier dialog that was cancelled) may sit in core's per-run
            # table in front of the keyring: it must say the same.
            credentials.remember_for_run(change.target, value)
        if change.moves and change.stored and change.origin is not None and (not change.needed or change.renamed()):
            credentials.delete_secret(change.origin)
