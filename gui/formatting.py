"""How DICOM values read on screen: names without carets, ISO dates, short durations.

Plain functions (no Qt), so the model, the dialogs and the tests share one spelling of every value.
"""

from __future__ import annotations

import re

_DATE = re.compile(r"^(\d{4})(\d{2})(\d{2})$")
_TIME = re.compile(r"^(\d{2})(\d{2})?(\d{2})?")


def person_name(value: str | None) -> str:
    """``Müller^Jürgen`` → ``Müller, Jürgen``; ideographic/phonetic groups follow in parentheses.

    PS3.5 6.2.1: up to three component groups (alphabetic=ideographic=phonetic), each
    family^given^middle^prefix^suffix. A radiologist reads "Family, Given Middle"; the ideographic
    form, when present, is what the patient's own records show, so it stays visible.
    """
    if not value:
        return ""
    groups = [_one_group(g) for g in value.split("=")]
    alphabetic = groups[0]
    others = [g for g in groups[1:2] if g]  # the phonetic group (third) would only add noise
    if not alphabetic:
        return " ".join(others)
    return f"{alphabetic} ({others[0]})" if others else alphabetic


def _one_group(group: str) -> str:
    parts = [p.strip() for p in group.split("^")]
    family = parts[0] if parts else ""
    given = " ".join(p for p in parts[1:3] if p)  # given and middle names
    prefix = parts[3] if len(parts) > 3 else ""
    suffix = parts[4] if len(parts) > 4 else ""
    if not any(ord(c) > 0x2E7F for c in group):
        first = " ".join(p for p in (prefix, given) if p)
        text = f"{family}, {first}" if family and first else family or first
        return f"{text}, {suffix}" if suffix else text
    # CJK names are written family-first without a comma.
    return " ".join(p for p in (family, given) if p)


def query_name(text: str) -> str:
    """What the user typed in the name field, as a PN matching key: ``Müller, J*`` → ``Müller^J*``."""
    text = text.strip()
    if "^" in text or "," not in text:
        return text
    family, _, given = text.partition(",")
    return f"{family.strip()}^{given.strip()}" if given.strip() else family.strip()


def date(value: str | None) -> str:
    """``20240115`` → ``2024-01-15``; anything else unchanged."""
    if not value:
        return ""
    match = _DATE.match(value.strip())
    return "-".join(match.groups()) if match else value


def time(value: str | None) -> str:
    """``101500.123`` → ``10:15``; anything else unchanged."""
    if not value:
        return ""
    match = _TIME.match(value.strip())
    if not match:
        return value
    hours, minutes, _ = match.groups()
    return f"{hours}:{minutes or '00'}"


def date_time(day: str | None, clock: str | None) -> str:
    """Study date and time in one cell: ``2024-01-15 10:15``."""
    return " ".join(p for p in (date(day), time(clock)) if p)


def count(value: int | None) -> str:
    """A count, or empty when the PACS did not say."""
    return "" if value is None else f"{value:,}"


def seconds(value: float) -> str:
    """A duration for humans: ``0.8 ms``, ``42 ms``, ``1.3 s``."""
    if value < 0.01:
        return f"{value * 1000:.1f} ms"
    if value < 1:
        return f"{value * 1000:.0f} ms"
    return f"{value:.1f} s"
