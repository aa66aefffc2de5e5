"""Qt item models over plain-Python data."""
