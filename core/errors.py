"""One small hierarchy of errors, each carrying a message written for the user.

Core raises these; the CLI prints ``str(error)`` on one line and exits with ``error.exit_code``; the GUI
shows the message next to the field or in the progress row. ``hint`` says what to try next.
"""

from __future__ import annotations


ALLOW_C_GET = "ask the PACS admin to allow C-GET for this calling AE (PacsPull retrieves by C-GET, not C-MOVE)"
"""What to do when a PACS will not send by C-GET: the end of every hint that says so."""


class PacsPullError(Exception):
    """Base of every expected failure: a message for the user and, where it helps, a hint."""

    exit_code = 1

    def __init__(self, message: str, *, hint: str = "", stage: str = "") -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint
        self.stage = stage

    def __reduce__(self) -> tuple[object, ...]:
        """Pickle as the same class with the same attributes (a retrieve's child process sends its errors
        to the window); the default would call ``cls(*args)``, which subclasses' signatures refuse."""
        return _rebuild, (type(self), self.args, dict(self.__dict__))

    def __str__(self) -> str:
        text = self.message
        if self.stage:
            text = f"{self.stage}: {text}"
        if self.hint:
            text = f"{text} ({self.hint})"
        return text


def _rebuild(cls: type[PacsPullError], args: tuple[object, ...], state: dict[str, object]) -> PacsPullError:
    """Unpickle a ``PacsPullError`` (see ``__reduce__``) without calling its ``__init__``."""
    error = cls.__new__(cls)
    error.args = args
    error.__dict__.update(state)
    return error


class InvalidInput(PacsPullError):
    """A value given by the user breaks a rule; ``field`` names it."""

    exit_code = 2

    def __init__(self, field: str, rule: str, *, value: object = None) -> None:
        shown = "" if value is None else f" (got {_shown(value)})"
        super().__init__(f"{field}: {rule}{shown}")
        self.field = field
        self.rule = rule


def _shown(value: object) -> str:
    """A refused value as typed: quoted, a backslash as one backslash; escapes only for what cannot print."""
    if isinstance(value, str) and value.isprintable() and "'" not in value:
        return f"'{value}'"
    return repr(value)


class NotFound(PacsPullError):
    """Nothing on the PACS matches what was asked for."""

    exit_code = 1


class ConnectionFailed(PacsPullError):
    """The PACS could not be reached: name resolution, TCP connect or a timeout."""

    exit_code = 3


class AssociationRejected(PacsPullError):
    """The PACS answered but refused (or aborted) the association."""

    exit_code = 3


class ServiceFailed(PacsPullError):
    """The association stood but the PACS refused or failed the DIMSE service."""

    exit_code = 4


class Cancelled(PacsPullError):
    """The user cancelled the operation."""

    exit_code = 1
