"""A guard against PySide6 6.12.0's reference-counting bug on Python 3.11.

PySide6 6.12.0 (6.11.2 does not) gives back a reference it never took in a few calls:
``SignalInstance.emit()`` returns ``True`` without a new reference, and ``connect()`` and a Python
``QModelIndex.data()`` that yields ``None`` drop one from ``None``. Each call lowers the reference
count of ``True`` or ``None`` by one. ``True`` starts near 600, so after a few hundred emits (a retrieve
emits one per instance) CPython frees ``True`` and aborts: "Fatal Python error: bool_dealloc".
Python 3.12 made these singletons immortal (PEP 683), which hides the bug there.

``apply()`` does what 3.12 does, only when needed: a probe emits a few signals and checks whether the
count of ``True`` fell; if it did, the counts of ``None``, ``True`` and ``False`` are raised by 2**40,
so no number of leaked references can bring them to zero in the life of the process. These three
objects are never freed anyway; nothing else changes. The real fix is a PySide6 without the bug.
"""

from __future__ import annotations

import ctypes
import logging
import sys

from PySide6 import __version__ as pyside_version
from PySide6.QtCore import QObject, Signal

LOG = logging.getLogger(__name__)

_HEADROOM = 1 << 40
_PROBES = 16
_applied = False


class _Probe(QObject):
    ping = Signal()


def emit_leaks_references() -> bool:
    """True if ``Signal.emit()`` loses a reference to ``True`` (the PySide6 6.12.0 bug)."""
    probe = _Probe()
    before = sys.getrefcount(True)
    for _ in range(_PROBES):
        probe.ping.emit()
    return sys.getrefcount(True) <= before - _PROBES // 2


def apply() -> bool:
    """Make ``None``/``True``/``False`` immortal if this PySide6 leaks their references; True if it did."""
    global _applied
    if _applied:
        return True
    if sys.version_info >= (3, 12) or sys.implementation.name != "cpython" or hasattr(sys, "getobjects"):
        return False  # immortal already; or an object layout where ob_refcnt is not the first field
    if not emit_leaks_references():
        return False
    for singleton in (None, True, False):
        # CPython: id() is the object's address and ob_refcnt its first field (PyObject_HEAD).
        ctypes.c_ssize_t.from_address(id(singleton)).value += _HEADROOM
    _applied = True
    LOG.info("PySide6 %s leaks references to None/True/False: made them immortal (see gui/qtcompat.py)",
             pyside_version)
    return True
