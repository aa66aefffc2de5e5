"""The first-run demo PACS: the node that lets a new user search at once, and the server behind it.

Qt-free; ``AppContext`` drives it. The server is core's in-process ``DemoPacs`` (threaded: ``start()``
returns once it listens), serving the generated samples from ``<data dir>/demo-pacs``.
"""

from __future__ import annotations

import logging
import socket
import threading

from pacspull.core.demo_pacs import DemoPacs
from pacspull.core.errors import PacsPullError
from pacspull.core.nodes import DEMO_NODE_NAME, Node, NodeBook, data_dir

LOG = logging.getLogger(__name__)

DEMO_AE_TITLE = "PACSPULL_DEMO"
DEMO_HOST = "127.0.0.1"
PREFERRED_PORT = 11112  # the registered DICOM port; used when free so the demo looks like a real PACS


def is_demo_node(node: Node | None) -> bool:
    """True for the node that points at our own demo PACS."""
    return (node is not None and node.name == DEMO_NODE_NAME and node.ae_title == DEMO_AE_TITLE
            and node.host in (DEMO_HOST, "localhost"))


def _port_is_free(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        try:
            sock.bind((DEMO_HOST, port))
        except OSError:
            return False
    return True


def demo_node(port: int | None = None) -> Node:
    """The demo node; without ``port``, 11112 if free, else a free port the system picks."""
    if port is None:
        port = PREFERRED_PORT if _port_is_free(PREFERRED_PORT) else _free_port()
    return Node(name=DEMO_NODE_NAME, ae_title=DEMO_AE_TITLE, host=DEMO_HOST, port=port)


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((DEMO_HOST, 0))
        return int(sock.getsockname()[1])


def first_run_setup(book: NodeBook) -> bool:
    """On a first run (no node book on disk) add the demo node, select it and save; True if it did."""
    if book.path.exists() or len(book):
        return False
    node = demo_node()
    book.put(node)
    book.selected = node.name
    book.save()
    LOG.info("first run: added %s on %s", node.name, node.address)
    return True


class DemoServer:
    """Starts and stops the demo PACS for the demo node; at most one server at a time.

    Thread-safe: ``ensure_for`` runs on a worker thread (the first start writes the sample files) while
    the GUI thread may call ``stop``; a lock orders them.
    """

    def __init__(self) -> None:
        self._pacs: DemoPacs | None = None
        self._lock = threading.Lock()

    @property
    def running(self) -> bool:
        """True while the demo PACS listens."""
        return self._pacs is not None and self._pacs.is_running

    @property
    def port(self) -> int | None:
        """The port it listens on, while running."""
        return self._pacs.port if self.running and self._pacs else None

    def ensure_for(self, node: Node) -> Node:
        """Serve ``node``'s port; if that port is taken, serve a free one and return the node moved there.

        Raises PacsPullError (for the status bar) when even a free port cannot be served.
        """
        with self._lock:
            return self._ensure_for(node)

    def _ensure_for(self, node: Node) -> Node:
        if self.running and self.port == node.port:
            return node
        self._stop()
        try:
            self._pacs = self._start(node.port)
            return node
        except OSError as exc:
            LOG.info("demo PACS: port %d unavailable (%s); using a free port", node.port, exc)
        try:
            self._pacs = self._start(0)
        except OSError as exc:
            raise PacsPullError(f"cannot start the demo PACS: {exc}") from None
        return Node.from_json({**node.to_json(), "port": self._pacs.port})

    def _start(self, port: int) -> DemoPacs:
        pacs = DemoPacs(data_dir=data_dir() / "demo-pacs", ae_title=DEMO_AE_TITLE, host=DEMO_HOST, port=port)
        return pacs.start()

    def stop(self) -> None:
        """Stop the server if it runs."""
        with self._lock:
            self._stop()

    def _stop(self) -> None:
        if self._pacs is not None:
            self._pacs.stop()
            self._pacs = None
