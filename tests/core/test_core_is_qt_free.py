"""core must never load Qt: it runs headless in the CLI, the tests and the benchmarks."""

from __future__ import annotations

import subprocess
import sys


def test_importing_all_of_core_loads_no_qt() -> None:
    code = (
        "import sys, pkgutil, importlib, pacspull.core as c\n"
        "for m in pkgutil.iter_modules(c.__path__): importlib.import_module('pacspull.core.' + m.name)\n"
        "bad = sorted(n for n in sys.modules if n.split('.')[0] in ('PySide6', 'shiboken6', 'PyQt5', 'PyQt6')"
        " or n.startswith('pacspull.gui'))\n"
        "print(','.join(bad))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == ""
