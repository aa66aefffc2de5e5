"""Cooperative cancellation (and, with the retrieve engine, progress snapshots)."""

from __future__ import annotations

import threading


class CancelToken:
    """A flag one thread sets and the worker checks at each step; thread-safe, never reset."""

    def __init__(self) -> None:
        self._event = threading.Event()

    def cancel(self) -> None:
        """Ask the operation to stop at its next step."""
        self._event.set()

    @property
    def cancelled(self) -> bool:
        """True once cancel() was called."""
        return self._event.is_set()

    def wait(self, timeout: float) -> bool:
        """Sleep up to ``timeout`` seconds, waking early on cancel; return ``cancelled``."""
        return self._event.wait(timeout)
