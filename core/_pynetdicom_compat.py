"""Every reach into pynetdicom's private internals, in one place, each covered by a test.

pynetdicom's version is pinned to a tested range in pyproject.toml; tests/core/test_pynetdicom_compat.py
fails loudly if an upgrade moves what is used here.
"""

from __future__ import annotations

from pynetdicom import Association


def wake_response_wait(assoc: Association) -> None:
    """Wake a thread blocked waiting for the next DIMSE message of ``assoc``.

    After a local A-ABORT pynetdicom queues nothing for the thread iterating ``send_c_find`` /
    ``send_c_get`` (it does on a peer abort), so that thread would sleep out the whole DIMSE timeout.
    An empty item is what pynetdicom itself queues on a peer abort: the iterator then ends at once.
    """
    assoc.dimse.msg_queue.put((None, None))
