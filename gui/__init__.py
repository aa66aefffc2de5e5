"""PacsPull desktop window (PySide6)."""
