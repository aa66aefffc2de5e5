"""PacsPull desktop window (PySide6)."""

from pacspull.gui import qtcompat

# Before any window exists: guards against PySide6 6.12.0 freeing True/None after a few hundred
# signal emissions (qtcompat's docstring tells the story).
qtcompat.apply()
