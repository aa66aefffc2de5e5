"""The main window: composes the node bar, query form, results and progress area, and wires them.

No DICOM here: the search controller runs queries, the retrieve queue runs transfers, the widgets show
them. The bottom area holds two tabs: Transfers (the progress panel) and Log.
"""

from __future__ import annotations

import platform

import pydicom
import pynetdicom
from PySide6 import __version__ as pyside_version
from PySide6.QtCore import QByteArray, Qt, QTimer, Signal, qVersion
from PySide6.QtGui import QAction, QCloseEvent, QIcon, QKeySequence
from PySide6.QtWidgets import (
    QApplication,
    QFrame,
    QLabel,
    QMainWindow,
    QMessageBox,
    QSplitter,
    QStyle,
    QSystemTrayIcon,
    QTabWidget,
    QVBoxLayout,
    QWidget,
)

from pacspull.core import __version__
from pacspull.core.query import QueryRequest, SeriesRow, StudyRow
from pacspull.gui import formatting as fmt
from pacspull.gui.context import AppContext
from pacspull.gui.demo import is_demo_node
from pacspull.gui.formatting import seconds
from pacspull.gui.models.study_model import StudyModel
from pacspull.gui.models.transfer_model import TransferModel
from pacspull.gui.retrieve import RetrieveQueue, group_selection
from pacspull.gui.search import SearchController
from pacspull.gui.widgets.log_view import LogView, install_handler, remove_handler
from pacspull.gui.widgets.node_bar import NodeBar
from pacspull.gui.widgets.progress_panel import ProgressPanel
from pacspull.gui.widgets.query_form import QueryForm
from pacspull.gui.widgets.results_view import ResultsView
from pacspull.gui.widgets.settings_dialog import SettingsDialog
from pacspull.gui.workers import FindDone

# Quick searches never flash "Cancel" or "Searching…": the busy state shows after this delay.
BUSY_DELAY_MS = 250
SHUTDOWN_WAIT_MS = 5000
NOTIFY_MS = 8000  # how long a tray notification stays up
# When a retrieve starts and the transfer panel is shorter than this, it grows to show a few rows.
MIN_PANEL_HEIGHT = 320


class MainWindow(QMainWindow):
    """PacsPull's one window."""

    retrieveRequested = Signal(list)  # StudyRow / SeriesRow objects chosen for retrieve

    def __init__(self, context: AppContext) -> None:
        super().__init__()
        self.context = context
        self._pending: QueryRequest | None = None  # a search waiting for the demo PACS to start
        self.model = StudyModel(self)
        self.search = SearchController(self.model, context.runner, self)
        self.node_bar = NodeBar(context, self)
        self.form = QueryForm(self)
        self.form.limit = context.settings.max_results
        self.results = ResultsView(self.model, self)
        self.transfers = TransferModel(self)
        self.retrieve = RetrieveQueue(self.transfers, context.runner, self)
        self.retrieve.set_parallel(context.parallel_retrieves)
        self.progress_panel = ProgressPanel(self.retrieve, self)
        self.progress_panel.destination = context.settings.destination
        self.log_handler = install_handler()
        self.log_view = LogView(self.log_handler, self)
        self._tray: QSystemTrayIcon | None = None
        self._quit_confirmed = False
        self.progress_area = self._make_progress_area()
        self.splitter = QSplitter(Qt.Orientation.Vertical, self)
        self.splitter.setObjectName("mainSplitter")
        self.splitter.addWidget(self.results)
        self.splitter.addWidget(self.progress_area)
        self.splitter.setStretchFactor(0, 3)
        self.splitter.setStretchFactor(1, 2)
        self.splitter.setChildrenCollapsible(False)
        self.demo_label = QLabel(self)
        self.demo_label.setObjectName("demoStatus")
        self.statusBar().addPermanentWidget(self.demo_label)
        self._busy_timer = QTimer(self)
        self._busy_timer.setSingleShot(True)
        self._busy_timer.setInterval(BUSY_DELAY_MS)
        self._busy_timer.timeout.connect(self._show_busy)
        self._lay_out()
        self._make_menus()
        self._wire()
        self._update_title()
        self._restore_state()

    # -- construction -------------------------------------------------------------------------------

    def _make_progress_area(self) -> QFrame:
        area = QFrame(self)
        area.setObjectName("progressArea")
        area.setFrameShape(QFrame.Shape.NoFrame)
        layout = QVBoxLayout(area)
        layout.setContentsMargins(0, 0, 0, 0)
        self.bottom_tabs = QTabWidget(area)
        self.bottom_tabs.setObjectName("bottomTabs")
        self.bottom_tabs.setDocumentMode(True)
        self.bottom_tabs.addTab(self.progress_panel, "Transfers")
        self.bottom_tabs.addTab(self.log_view, "Log")
        layout.addWidget(self.bottom_tabs)
        return area

    def _lay_out(self) -> None:
        central = QWidget(self)
        layout = QVBoxLayout(central)
        layout.setContentsMargins(10, 8, 10, 4)
        layout.setSpacing(8)
        layout.addWidget(self.node_bar)
        line = QFrame(central)
        line.setFrameShape(QFrame.Shape.HLine)
        line.setFrameShadow(QFrame.Shadow.Sunken)
        layout.addWidget(line)
        layout.addWidget(self.form)
        layout.addWidget(self.splitter, 1)
        self.setCentralWidget(central)
        self.resize(1280, 800)

    def _make_menus(self) -> None:
        bar = self.menuBar()
        file_menu = bar.addMenu("&File")
        self.settings_action = self._action("&Settings…", "Ctrl+,", self.open_settings)
        file_menu.addAction(self.settings_action)
        file_menu.addSeparator()
        file_menu.addAction(self._action("&Quit", QKeySequence.StandardKey.Quit, self.close))
        search_menu = bar.addMenu("&Search")
        self.search_action = self._action("&Search", "Ctrl+Return", self.form.submit)
        self.search_action.setShortcuts([QKeySequence("Ctrl+Return"), QKeySequence("F5")])
        search_menu.addAction(self.search_action)
        self.cancel_action = self._action("&Cancel search", None, self.search.cancel)
        self.cancel_action.setEnabled(False)
        search_menu.addAction(self.cancel_action)
        search_menu.addAction(self._action("C&lear form", "Ctrl+L", self.form.clear))
        search_menu.addSeparator()
        search_menu.addAction(self.results.filter_action)
        results_menu = bar.addMenu("&Results")
        for action in (self.results.retrieve_action, self.results.copy_uid_action, self.results.copy_row_action):
            results_menu.addAction(action)
        transfers_menu = bar.addMenu("&Transfers")
        panel = self.progress_panel
        for action in (panel.cancel_action, panel.retry_action, panel.open_action, None,
                       panel.cancel_all_action, panel.clear_action):
            transfers_menu.addSeparator() if action is None else transfers_menu.addAction(action)
        transfers_menu.addSeparator()
        transfers_menu.addAction(self._action("Show &log", "Ctrl+Shift+L",
                                              lambda: self.bottom_tabs.setCurrentWidget(self.log_view)))
        nodes_menu = bar.addMenu("&Nodes")
        nb = self.node_bar
        for action in (nb.test_action, None, nb.add_action, nb.edit_action, nb.duplicate_action, nb.remove_action):
            nodes_menu.addSeparator() if action is None else nodes_menu.addAction(action)
        help_menu = bar.addMenu("&Help")
        help_menu.addAction(self._action("&About PacsPull", None, self.about))

    def _action(self, text: str, shortcut: object, slot: object) -> QAction:
        action = QAction(text, self)
        if shortcut is not None:
            action.setShortcut(QKeySequence(shortcut))  # type: ignore[arg-type]
        action.triggered.connect(slot)
        self.addAction(action)
        return action

    def _wire(self) -> None:
        self.form.searchRequested.connect(self.start_search)
        self.form.cancelRequested.connect(self.search.cancel)
        self.search.runningChanged.connect(self._running_changed)
        self.search.finished.connect(self._search_finished)
        self.search.failed.connect(self._search_failed)
        self.search.seriesFailed.connect(self._series_failed)
        self.results.retrieveRequested.connect(self.retrieveRequested)
        self.retrieveRequested.connect(self.start_retrieve)
        self.retrieve.queueFinished.connect(self.notify)
        self.progress_panel.message.connect(self.statusBar().showMessage)
        self.log_view.warningsChanged.connect(self._log_warnings)
        self.progress_panel.activeChanged.connect(self._transfers_active)
        self.context.selectionChanged.connect(self._update_title)
        self.context.nodesChanged.connect(self._update_title)
        self.context.settingsChanged.connect(self._settings_changed)
        self.context.demoChanged.connect(self.demo_label.setText)
        self.context.demoReady.connect(self._demo_ready)

    # -- search ---------------------------------------------------------------------------------------

    def start_search(self, request: QueryRequest) -> None:
        """Run ``request`` against the selected node."""
        node = self.context.selected_node()
        if node is None:
            self.statusBar().showMessage("Choose or add a PACS first (Nodes ▸ Add node…)")
            return
        self.results.clear_summary()
        if self.context.demo_starting and is_demo_node(node):
            # The first start writes the sample files; search as soon as the demo PACS listens.
            self._pending = request
            self.statusBar().showMessage("Waiting for the demo PACS to start…")
            return
        self._pending = None
        self.search.search(node, request)
        self.statusBar().clearMessage()

    def _demo_ready(self) -> None:
        request, self._pending = self._pending, None
        if request is not None:
            self.start_search(request)

    def _running_changed(self, running: bool) -> None:
        self.cancel_action.setEnabled(running)
        if running:
            self._busy_timer.start()
        else:
            self._busy_timer.stop()
            self.form.set_running(False)

    def _show_busy(self) -> None:
        if self.search.running:
            self.form.set_running(True)
            node = self.search.node
            self.statusBar().showMessage(f"Searching {node.name if node else ''}… (Esc to cancel)")

    def _search_finished(self, summary: FindDone) -> None:
        node = self.search.node
        where = f" from {node.name}" if node else ""
        if summary.cancelled:
            text = f"Search cancelled after {summary.count:,} studies"
        else:
            text = f"{summary.count:,} {'study' if summary.count == 1 else 'studies'}{where} in {seconds(summary.seconds)}"
        self.statusBar().showMessage(text)
        self.results.show_summary(summary, self.search.request)
        if summary.count and not summary.cancelled:
            self.retrieve.warm_up()

    def _search_failed(self, message: str, hint: str) -> None:
        self.statusBar().showMessage("Search failed")
        self.results.show_error(message, hint)

    def _series_failed(self, study_uid: str, message: str) -> None:
        self.statusBar().showMessage(f"Could not fetch the series: {message}")

    # -- retrieve -----------------------------------------------------------------------------------

    def start_retrieve(self, rows: list[StudyRow | SeriesRow]) -> None:
        """Queue the selected studies/series from the node the results came from, into the destination."""
        node = self.search.node
        if node is None or not rows:
            self.statusBar().showMessage("Search first, then select the studies or series to retrieve")
            return
        studies = {s.study_uid: s for s in self.model.studies() if s.study_uid}
        settings = self.context.settings
        with self.progress_panel.one_update():
            added = self.retrieve.add(group_selection(rows, studies), node, destination=settings.destination,
                                      layout=settings.layout)
        self.bottom_tabs.setCurrentWidget(self.progress_panel)
        if not added:
            self.statusBar().showMessage("Already in the transfer queue")
            return
        self._make_room_for_transfers()
        self.statusBar().showMessage(f"Queued {fmt.plural(len(added), 'transfer')} from {node.name} "
                                     f"into {settings.destination}")

    def _make_room_for_transfers(self) -> None:
        sizes = self.splitter.sizes()
        if len(sizes) == 2 and sizes[1] < MIN_PANEL_HEIGHT and sum(sizes) > 2 * MIN_PANEL_HEIGHT:
            self.splitter.setSizes([sum(sizes) - MIN_PANEL_HEIGHT, MIN_PANEL_HEIGHT])

    def notify(self, text: str) -> None:
        """A retrieve finished: say so in the status bar and, if the user is elsewhere, the system tray."""
        self.statusBar().showMessage(text)
        if self.isActiveWindow() or not QSystemTrayIcon.isSystemTrayAvailable():
            return
        if self._tray is None:
            icon = self.windowIcon()
            if icon.isNull():
                icon = QApplication.style().standardIcon(QStyle.StandardPixmap.SP_ArrowDown)
            self._tray = QSystemTrayIcon(QIcon(icon), self)
            self._tray.setToolTip("PacsPull")
            self._tray.messageClicked.connect(self._raise)
        self._tray.show()
        self._tray.showMessage("PacsPull", text, QSystemTrayIcon.MessageIcon.Information, NOTIFY_MS)
        QApplication.alert(self)

    def _raise(self) -> None:
        self.showNormal()
        self.raise_()
        self.activateWindow()

    def _transfers_active(self, count: int) -> None:
        self._set_tab_text(self.progress_panel, f"Transfers ({count} active)" if count else "Transfers")

    def _log_warnings(self, count: int) -> None:
        self._set_tab_text(self.log_view, f"Log ({fmt.plural(count, 'warning')})" if count else "Log")

    def _set_tab_text(self, page: QWidget, text: str) -> None:
        # Only on a change: setTabText lays the tab bar out and repaints it even for the same text, and
        # the transfers' count is reported at every 10 Hz refresh.
        index = self.bottom_tabs.indexOf(page)
        if self.bottom_tabs.tabText(index) != text:
            self.bottom_tabs.setTabText(index, text)

    # -- other actions ----------------------------------------------------------------------------

    def open_settings(self) -> None:
        """Show the settings dialog; save on OK."""
        dialog = SettingsDialog(self.context.settings, self, parallel=self.context.parallel_retrieves)
        if dialog.exec() == SettingsDialog.DialogCode.Accepted:
            try:
                self.context.parallel_retrieves = dialog.parallel()
                self.context.save_settings(dialog.settings())
            except OSError as exc:
                QMessageBox.warning(self, "Settings not saved", f"Could not write the settings: {exc}")

    def _settings_changed(self) -> None:
        self.form.limit = self.context.settings.max_results
        self.progress_panel.destination = self.context.settings.destination
        self.retrieve.set_parallel(self.context.parallel_retrieves)

    def about(self) -> None:
        """Versions of everything that matters for a bug report."""
        QMessageBox.about(
            self, "About PacsPull",
            f"<h3>PacsPull {__version__}</h3>"
            "<p>Search a PACS and retrieve studies with C-FIND and C-GET.</p>"
            f"<p>pynetdicom {pynetdicom.__version__}<br>pydicom {pydicom.__version__}<br>"
            f"Qt {qVersion()} (PySide6 {pyside_version})<br>Python {platform.python_version()}</p>",
        )

    def _update_title(self) -> None:
        node = self.context.selected_node()
        self.setWindowTitle(f"PacsPull — {node.name}" if node else "PacsPull")

    # -- state and exit ---------------------------------------------------------------------------

    def _restore_state(self) -> None:
        state = self.context.window_state()
        geometry = state.value("window/geometry")
        if isinstance(geometry, QByteArray):
            self.restoreGeometry(geometry)
        splitter = state.value("window/splitter")
        if isinstance(splitter, QByteArray):
            self.splitter.restoreState(splitter)

    def save_state(self) -> None:
        """Remember geometry and splitter positions."""
        state = self.context.window_state()
        state.setValue("window/geometry", self.saveGeometry())
        state.setValue("window/splitter", self.splitter.saveState())
        state.sync()

    def quit_now(self) -> None:
        """Close without asking (Ctrl+C, SIGTERM): running transfers are cancelled, their files kept."""
        self._quit_confirmed = True
        self.close()

    def _confirm_quit(self) -> bool:
        """Ask before cancelling running transfers; True to quit."""
        rows = [r for r in self.transfers.rows() if r.state.active]
        stored = sum(r.completed + r.warning for r in rows)
        answer = QMessageBox.question(
            self, "Quit PacsPull?",
            f"{fmt.plural(len(rows), 'transfer')} still running or queued ({fmt.plural(stored, 'image')} "
            "received so far).\n\nQuit and cancel them? The images already received are kept; "
            "retrieving the same studies again later fetches only what is missing.",
            QMessageBox.StandardButton.Yes | QMessageBox.StandardButton.No, QMessageBox.StandardButton.No)
        return answer == QMessageBox.StandardButton.Yes

    def closeEvent(self, event: QCloseEvent) -> None:
        """Confirm if transfers run; then save the layout, cancel everything and wait (bounded) for the jobs."""
        if self.retrieve.active and not self._quit_confirmed and not self._confirm_quit():
            event.ignore()
            return
        self._quit_confirmed = True  # app.exec() may deliver a second close: ask once
        self.save_state()
        self.hide()  # closes at once for the user, even while a job waits out a silent PACS below
        self.search.cancel()
        self.retrieve.shutdown()  # C-CANCEL to every running transfer
        self.context.runner.shutdown(SHUTDOWN_WAIT_MS)
        remove_handler(self.log_handler)
        if self._tray is not None:
            self._tray.hide()
        super().closeEvent(event)
