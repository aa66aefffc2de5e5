"""AppContext.shutdown: a demo PACS start that ends during shutdown does not start it again afterwards."""

from __future__ import annotations

from PySide6.QtCore import QCoreApplication

from pacspull.gui.context import AppContext
from pacspull.gui.demo import is_demo_node


def test_a_demo_start_answered_after_shutdown_is_dropped(qtbot):
    context = AppContext()  # a first run: the demo node is selected
    assert is_demo_node(context.selected_node())
    context.ensure_demo()
    assert context.demo_starting
    assert context.shutdown(10_000)
    # The worker's "started" answer was queued while shutdown() waited: deliver it. Before the fix it
    # started the demo PACS again, on a thread nobody waited for (Qt aborts when such a thread is freed).
    QCoreApplication.processEvents()
    assert context.runner.active == 0 and not context.demo_starting and not context.demo.running
