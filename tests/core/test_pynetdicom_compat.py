"""Fails loudly when a pynetdicom upgrade moves the internals core/_pynetdicom_compat.py relies on."""

from __future__ import annotations

import queue

from pynetdicom import AE

from pacspull.core._pynetdicom_compat import wake_response_wait


def test_dimse_message_queue_is_where_we_expect() -> None:
    ae = AE()
    ae.add_requested_context("1.2.840.10008.1.1")
    from pynetdicom.association import Association

    assoc = Association(ae, mode="requestor")
    assert isinstance(assoc.dimse.msg_queue, queue.Queue)
    wake_response_wait(assoc)
    assert assoc.dimse.get_msg(block=False) == (None, None)
