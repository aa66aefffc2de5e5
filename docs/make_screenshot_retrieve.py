"""Render the window mid-retrieve and save a PNG (for the docs).

A demo PACS throttled to one instance every 50 ms (``Faults.delay_per_instance``) serves the sample
studies; three studies are queued, and the picture is taken while the second one is about half done
(the first finished, the third waiting).

Run under a display (Xvfb works):
``xvfb-run -a -s "-screen 0 1600x1000x24" .venv/bin/python docs/make_screenshot_retrieve.py docs/screenshot-retrieve.png``.
Uses throwaway config/data folders, so it never touches your own nodes or settings.
"""

from __future__ import annotations

import os
import sys
import tempfile
from pathlib import Path

from PySide6.QtCore import QItemSelectionModel, QTimer
from PySide6.QtWidgets import QApplication

STUDIES = ("CT Abdomen", "CT Thorax Übersicht", "MR Head")  # queued in this order
SHOOT_AT = 0.45  # fraction of the second study done when the picture is taken


def main() -> int:
    out = Path(sys.argv[1] if len(sys.argv) > 1 else "screenshot-retrieve.png").resolve()
    work = Path(tempfile.mkdtemp(prefix="pacspull-shot-"))
    os.environ["PACSPULL_CONFIG_DIR"] = str(work / "config")
    os.environ["PACSPULL_DATA_DIR"] = str(work / "data")
    from pacspull.core.demo_pacs import DemoPacs, Faults
    from pacspull.core.nodes import Node, NodeBook
    from pacspull.core.samples import write_sample_data
    from pacspull.gui import style
    from pacspull.gui.context import AppContext
    from pacspull.gui.main_window import MainWindow
    from pacspull.gui.models.study_model import ROW_ROLE

    app = QApplication(sys.argv[:1])
    style.apply(app)
    files = write_sample_data(work / "samples")
    pacs = DemoPacs(files=files, port=0, faults=Faults(delay_per_instance=0.05)).start()
    node = Node(name="Radiology PACS", ae_title="PACSPULL_DEMO", host="127.0.0.1", port=pacs.port)
    NodeBook(path=NodeBook.default_path(), nodes=[node], selected=node.name).save()
    context = AppContext()
    window = MainWindow(context)
    window.resize(1360, 900)
    window.show()

    def retrieve(_summary: object) -> None:
        proxy, tree = window.results.proxy, window.results.tree
        selection = tree.selectionModel()
        for r in range(proxy.rowCount()):
            if proxy.index(r, 0).data(ROW_ROLE).description in STUDIES:
                selection.select(proxy.index(r, 0),
                                 QItemSelectionModel.SelectionFlag.Select | QItemSelectionModel.SelectionFlag.Rows)
        rows = sorted(window.results.selected_rows(), key=lambda s: STUDIES.index(s.description))
        window.start_retrieve(rows)
        poll.start(50)

    def maybe_shoot() -> None:
        rows = window.transfers.rows()
        second = rows[1] if len(rows) > 1 else None
        if second is None or second.total is None or second.completed < SHOOT_AT * second.total:
            return
        poll.stop()
        window.progress_panel.select(second.id)
        QTimer.singleShot(250, shoot)  # one more refresh tick and repaint

    def shoot() -> None:
        window.grab().save(str(out))
        print(out)
        window.quit_now()
        app.quit()

    poll = QTimer()
    poll.timeout.connect(maybe_shoot)
    window.search.finished.connect(retrieve)
    QTimer.singleShot(300, window.form.submit)
    app.exec()
    context.shutdown()
    pacs.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
