"""Whether patient identifiers may appear in logs: off unless the user opts in (-vv --log-identifiers, or
the window's log view). pynetdicom logs C-FIND/C-GET identifiers by default; it follows this switch too."""

from __future__ import annotations

from pynetdicom import _config

_enabled = False


def enable_identifier_logging(enabled: bool) -> None:
    """Let patient data (query identifiers, file paths named after patients) reach debug logs."""
    global _enabled
    _enabled = enabled
    _config.LOG_REQUEST_IDENTIFIERS = enabled
    _config.LOG_RESPONSE_IDENTIFIERS = enabled


def identifiers_logged() -> bool:
    """True once the user opted in."""
    return _enabled


enable_identifier_logging(False)
