"""The log view: thread-safe and flood-proof, a verbosity switch, no patient identifiers unless asked, copy/save."""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterator

import pytest
from pynetdicom import _config
from PySide6.QtCore import QObject, Qt, Slot
from PySide6.QtWidgets import QApplication

from pacspull.core.samples import sample_studies
from pacspull.gui.widgets.log_view import LogView, Verbosity, install_handler, remove_handler

TIMEOUT_MS = 20_000


@pytest.fixture(autouse=True)
def _restore_logging() -> Iterator[None]:
    """The view sets process-wide logger levels and pynetdicom switches: put them back."""
    levels = {name: logging.getLogger(name).level
              for name in ("pacspull", "pynetdicom", "pacspull.core.storage", "pacspull.contexts")}
    yield
    for name, level in levels.items():
        logging.getLogger(name).setLevel(level)
    _config.LOG_REQUEST_IDENTIFIERS = _config.LOG_RESPONSE_IDENTIFIERS = False


@pytest.fixture
def view(qtbot) -> Iterator[LogView]:  # type: ignore[no-untyped-def]
    handler = install_handler()
    widget = LogView(handler)
    qtbot.addWidget(widget)
    yield widget
    remove_handler(handler)


class _Wakes(QObject):
    def __init__(self) -> None:
        super().__init__()
        self.count = 0

    @Slot()
    def woken(self) -> None:
        self.count += 1


def test_a_flood_from_another_thread_arrives_whole_with_few_wake_ups(qtbot, view):
    wakes = _Wakes()
    view.handler.bridge.pending.connect(wakes.woken)
    log = logging.getLogger("pacspull.test.flood")

    def flood() -> None:
        for i in range(3000):
            log.info("line %d", i)

    thread = threading.Thread(target=flood)
    thread.start()
    thread.join()
    qtbot.waitUntil(lambda: view.text.blockCount() >= 3000, timeout=TIMEOUT_MS)
    lines = view.text.toPlainText().splitlines()
    assert lines[0].endswith("pacspull.test.flood: line 0") and lines[-1].endswith("line 2999")
    # One wake-up per drain, not one per record: the event loop saw a handful of signals for 3000 lines.
    assert wakes.count <= 5


def test_verbosity_switch_sets_what_pynetdicom_logs(qtbot, view):
    assert view.current_verbosity() is Verbosity.NORMAL
    assert logging.getLogger("pynetdicom").level == logging.WARNING
    assert logging.getLogger("pacspull").level == logging.INFO
    assert logging.getLogger("pacspull.contexts").level == logging.WARNING
    view.verbosity.setCurrentIndex(list(Verbosity).index(Verbosity.DIMSE))
    assert logging.getLogger("pynetdicom").level == logging.INFO
    assert logging.getLogger("pacspull.contexts").level == logging.INFO
    view.verbosity.setCurrentIndex(list(Verbosity).index(Verbosity.DEBUG))
    assert logging.getLogger("pynetdicom").level == logging.DEBUG
    assert logging.getLogger("pacspull").level == logging.DEBUG
    # Storage debug lines name files after the patient: they stay off until identifiers are allowed.
    assert logging.getLogger("pacspull.core.storage").level == logging.INFO
    view.set_identifiers(True)
    assert logging.getLogger("pacspull.core.storage").level == logging.DEBUG


def test_patient_identifiers_stay_out_unless_the_user_opts_in(qtbot, view):
    assert not view.identifiers.isChecked()
    assert not _config.LOG_REQUEST_IDENTIFIERS and not _config.LOG_RESPONSE_IDENTIFIERS
    qtbot.mouseClick(view.identifiers, Qt.MouseButton.LeftButton)
    assert _config.LOG_REQUEST_IDENTIFIERS and _config.LOG_RESPONSE_IDENTIFIERS
    assert view.note.text() == "Patient identifiers are logged"
    qtbot.mouseClick(view.identifiers, Qt.MouseButton.LeftButton)
    assert not _config.LOG_REQUEST_IDENTIFIERS and not _config.LOG_RESPONSE_IDENTIFIERS


def test_a_debug_retrieve_logs_associations_but_no_patient_identifier(qtbot, make_window, peer_node):
    window = make_window(peer_node)
    window.log_view.set_verbosity(Verbosity.DEBUG)
    with qtbot.waitSignal(window.search.finished, timeout=TIMEOUT_MS):
        qtbot.keyClick(window.form.name, Qt.Key.Key_Return)
    study = next(s for s in window.model.studies() if s.description == "CT Abdomen")
    with qtbot.waitSignal(window.retrieve.queueFinished, timeout=TIMEOUT_MS):
        window.start_retrieve([study])
    window.log_view.drain()
    text = window.log_view.text.toPlainText()
    assert "Association Accepted" in text and "Sending Get Request" in text  # pynetdicom, at debug
    assert "C-GET status 0x0000 (success); 5 stored" in text
    assert "context CT Image Storage: accepted with" in text  # what the PACS accepted, one line each
    patient = next(s.patient for s in sample_studies() if s.description == "CT Abdomen")
    for identifier in ("Doe", patient.patient_id, patient.birth_date):
        assert identifier not in text, f"{identifier!r} leaked into the log"

    window.log_view.set_identifiers(True)  # the user opts in: file names (patient folders) may appear
    with qtbot.waitSignal(window.retrieve.queueFinished, timeout=TIMEOUT_MS):
        window.start_retrieve([next(s for s in window.model.studies() if s.description == "胸部正位")])
    window.log_view.drain()
    assert "Wang_XiaoDong_PP-0003" in window.log_view.text.toPlainText()


def test_copy_and_save(qtbot, view, tmp_path):
    logging.getLogger("pacspull.test").warning("first")
    logging.getLogger("pacspull.test").info("second")
    view.drain()
    view.copy()
    assert QApplication.clipboard().text().splitlines()[-1].endswith("pacspull.test: second")
    target = tmp_path / "log.txt"
    assert view.save(target) == 2
    saved = target.read_text(encoding="utf-8").splitlines()
    assert "WARNING" in saved[0] and saved[0].endswith("first") and saved[1].endswith("second")
    assert view.handler.warnings == 1
    view.clear()
    assert view.text.toPlainText() == "" and view.save(target) == 0
