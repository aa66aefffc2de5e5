"""DICOM status codes: their category and plain-language meaning, in one table.

References: PS3.7 Annex C (general statuses), PS3.4 C.4 (Query/Retrieve), PS3.4 B.2.3 (Storage).
"""

from __future__ import annotations

import enum
from dataclasses import dataclass


class Category(str, enum.Enum):
    """What a status means for the caller."""

    PENDING = "pending"
    SUCCESS = "success"
    WARNING = "warning"
    FAILURE = "failure"
    CANCEL = "cancel"


@dataclass(frozen=True)
class StatusInfo:
    """A decoded status: its code, category and meaning."""

    code: int
    category: Category
    text: str

    def __str__(self) -> str:
        if self.code < 0:  # no status at all: there is no code to show
            return self.text
        if self.text == self.category.value:
            return f"0x{self.code:04X} ({self.text})"
        return f"0x{self.code:04X} ({self.category.value}: {self.text})"


# Exact codes first; ranges are handled in describe().
_KNOWN: dict[int, tuple[Category, str]] = {
    0x0000: (Category.SUCCESS, "success"),
    0xFF00: (Category.PENDING, "pending: matches or sub-operations are continuing"),
    0xFF01: (Category.PENDING, "pending: optional keys not supported for this match"),
    0xFE00: (Category.CANCEL, "cancelled: sub-operations terminated by a cancel request"),
    # PS3.4 C.4.3.1.4: C-GET warnings and failures
    0xB000: (Category.WARNING, "sub-operations completed with one or more failures or warnings"),
    0xB007: (Category.WARNING, "data set does not match SOP class (stored anyway)"),
    0xB006: (Category.WARNING, "elements discarded"),
    0xA700: (Category.FAILURE, "refused: out of resources"),
    0xA701: (Category.FAILURE, "refused: out of resources, unable to calculate number of matches"),
    0xA702: (Category.FAILURE, "refused: out of resources, unable to perform sub-operations"),
    0xA801: (Category.FAILURE, "refused: move destination unknown"),
    0xA900: (Category.FAILURE, "identifier does not match SOP class"),
    0xAA00: (Category.FAILURE, "none of the frames requested were found in the SOP instance"),
    0xC000: (Category.FAILURE, "unable to process"),
    0xC001: (Category.FAILURE, "unable to process"),
    0xC002: (Category.FAILURE, "unable to process"),
    0x0122: (Category.FAILURE, "SOP class not supported"),
    0x0124: (Category.FAILURE, "refused: not authorized"),
    0x0210: (Category.FAILURE, "duplicate invocation"),
    0x0211: (Category.FAILURE, "unrecognised operation"),
    0x0212: (Category.FAILURE, "mistyped argument"),
    0x0213: (Category.FAILURE, "resource limitation"),
    0x0117: (Category.FAILURE, "invalid SOP instance"),
    0x0110: (Category.FAILURE, "processing failure"),
    0x0105: (Category.FAILURE, "no such attribute"),
    0x0106: (Category.FAILURE, "invalid attribute value"),
    0x0107: (Category.WARNING, "attribute list error"),
    0x0116: (Category.WARNING, "attribute value out of range"),
}


def describe(code: int | None) -> StatusInfo:
    """Decode a status code; ``None`` (no response at all) is reported as a failure."""
    if code is None:
        return StatusInfo(-1, Category.FAILURE, "no response from the PACS (timeout or aborted association)")
    if code in _KNOWN:
        category, text = _KNOWN[code]
        return StatusInfo(code, category, text)
    # Ranges from PS3.4: A7xx out of resources, A9xx / Cxxx cannot understand or unable to process.
    if 0xA700 <= code <= 0xA7FF:
        return StatusInfo(code, Category.FAILURE, "refused: out of resources")
    if 0xA900 <= code <= 0xA9FF:
        return StatusInfo(code, Category.FAILURE, "error: data set does not match SOP class")
    if 0xC000 <= code <= 0xCFFF:
        return StatusInfo(code, Category.FAILURE, "error: cannot understand / unable to process")
    if 0xB000 <= code <= 0xBFFF:
        return StatusInfo(code, Category.WARNING, "warning")
    return StatusInfo(code, Category.FAILURE, "unknown status")
