"""Widgets of the PacsPull window."""
