"""Render the window with real results from the demo PACS and save a PNG (for the docs).

Run under a display (Xvfb works): ``.venv/bin/python docs/make_screenshot.py docs/screenshot-search.png``.
Uses throwaway config/data folders, so it never touches your own nodes or settings.
"""

from __future__ import annotations

import os
import sys
import tempfile
from pathlib import Path

from PySide6.QtCore import QTimer
from PySide6.QtWidgets import QApplication


def main() -> int:
    out = Path(sys.argv[1] if len(sys.argv) > 1 else "screenshot-search.png").resolve()
    work = Path(tempfile.mkdtemp(prefix="pacspull-shot-"))
    os.environ["PACSPULL_CONFIG_DIR"] = str(work / "config")
    os.environ["PACSPULL_DATA_DIR"] = str(work / "data")
    from pacspull.gui import style
    from pacspull.gui.context import AppContext
    from pacspull.gui.main_window import MainWindow
    from pacspull.gui.models.study_model import ROW_ROLE

    app = QApplication(sys.argv[:1])
    style.apply(app)
    context = AppContext()
    context.ensure_demo()
    window = MainWindow(context)
    window.resize(1360, 820)
    window.show()

    def expand() -> None:
        proxy, tree = window.results.proxy, window.results.tree
        for r in range(proxy.rowCount()):
            if proxy.index(r, 0).data(ROW_ROLE).description == "CT Thorax Übersicht":
                tree.expand(proxy.index(r, 0))
                tree.selectionModel().select(
                    proxy.index(r, 0), tree.selectionModel().SelectionFlag.ClearAndSelect
                    | tree.selectionModel().SelectionFlag.Rows)
        QTimer.singleShot(800, shoot)

    def shoot() -> None:
        window.grab().save(str(out))
        print(out)
        app.quit()

    window.search.finished.connect(lambda _summary: QTimer.singleShot(300, expand))
    QTimer.singleShot(300, window.form.submit)
    app.exec()
    window.close()
    context.shutdown()
    return 0


if __name__ == "__main__":
    sys.exit(main())
