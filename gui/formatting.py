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


def clock(value: float | None) -> str:
    """Elapsed or remaining time as a clock: ``0:07``, ``12:30``, ``1:02:03``; empty when unknown."""
    if value is None or value < 0:
        return ""
    total = int(value + 0.5)
    hours, rest = divmod(total, 3600)
    minutes, secs = divmod(rest, 60)
    return f"{hours}:{minutes:02d}:{secs:02d}" if hours else f"{minutes}:{secs:02d}"


def duration(value: float) -> str:
    """How long something took: ``0.4 s``, ``12.3 s``, then as a clock from a minute on (``1:05``)."""
    return f"{value:.1f} s" if value < 60 else clock(value)


def rate(bytes_per_second: float) -> str:
    """Throughput in decimal megabytes: ``0.42 MB/s``, ``3.1 MB/s``, ``118 MB/s``."""
    mb = bytes_per_second / 1_000_000
    if mb < 1:
        return f"{mb:.2f} MB/s"
    return f"{mb:.1f} MB/s" if mb < 100 else f"{mb:.0f} MB/s"


def size(value: int) -> str:
    """A byte count for humans: ``812 kB``, ``4.2 MB``, ``1.3 GB`` (decimal units, as file managers show)."""
    if value < 1_000_000:
        return f"{value / 1000:.0f} kB"
    if value < 1_000_000_000:
        return f"{value / 1_000_000:.1f} MB"
    return f"{value / 1_000_000_000:.1f} GB"


def plural(n: int, one: str, many: str | None = None) -> str:
    """``1 image``, ``3 images`` (with thousands separators)."""
    return f"{n:,} {one if n == 1 else (many or one + 's')}"


def dicom_status(code: int, category: str = "") -> str:
    """A DICOM status code as a technician reads it: ``0xB000``, with its category ``0xB000 warning``;
    ``none`` for -1 (no status came: the association ended first)."""
    if code < 0:
        return "none"
    return f"0x{code:04X} {category}" if category else f"0x{code:04X}"
