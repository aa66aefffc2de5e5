"""Test connection: the staged diagnose, one line per stage as it completes, then the contexts.

The technician's tool, so it is precise: each stage shows ✓/✗ (or – when not reached), its time, what
happened and, on failure, the hint; below, every presentation context the PACS accepted or rejected.
"""

from __future__ import annotations

import json

from PySide6.QtCore import Qt, Signal, Slot
from PySide6.QtGui import QColor, QGuiApplication
from PySide6.QtWidgets import (
    QGridLayout,
    QGroupBox,
    QHBoxLayout,
    QLabel,
    QListWidget,
    QListWidgetItem,
    QPushButton,
    QVBoxLayout,
    QWidget,
)

from pacspull.core.diagnose import STAGES, DiagnoseReport, StageResult
from pacspull.core.nodes import Node
from pacspull.gui import formatting as fmt
from pacspull.gui.workers import DiagnoseWorker, WorkerRunner

STAGE_TITLES = {
    "resolve": "Resolve host name",
    "connect": "Open TCP connection",
    "tls": "TLS handshake",
    "associate": "DICOM association",
    "echo": "Verification (C-ECHO)",
    "find": "Query (C-FIND)",
    "get": "Retrieve (C-GET)",
}
PASS, FAIL, SKIP, WAIT = "✓", "✗", "–", "…"
OK_COLOUR, FAIL_COLOUR = "#1e7e34", "#b3261e"  # as in the style sheet


class _StageLine:
    """The labels of one stage (display only; the state lives in the StageResult shown)."""

    def __init__(self, grid: QGridLayout, row: int, name: str, parent: QWidget) -> None:
        self.mark = QLabel(parent)
        self.mark.setObjectName("stageMark")
        self.title = QLabel(STAGE_TITLES.get(name, name), parent)
        self.time = QLabel(parent)
        self.time.setAlignment(Qt.AlignmentFlag.AlignRight | Qt.AlignmentFlag.AlignTop)
        self.time.setMinimumWidth(self.time.fontMetrics().horizontalAdvance("0000 ms") + 4)
        self.detail = QLabel(parent)
        self.detail.setWordWrap(True)
        self.detail.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        top = Qt.AlignmentFlag.AlignTop
        grid.addWidget(self.mark, row, 0, top)
        grid.addWidget(self.title, row, 1, top)
        grid.addWidget(self.time, row, 2, top)
        grid.addWidget(self.detail, row, 3)
        self.reset()

    def reset(self) -> None:
        self._set(WAIT, "", "", "pending")

    def show(self, stage: StageResult) -> None:
        if stage.ok is None:
            self._set(SKIP, "", stage.detail or "not reached", "skipped")
            return
        text = stage.detail
        if stage.hint:
            text += f"\n→ {stage.hint}"
        self._set(PASS if stage.ok else FAIL, fmt.seconds(stage.seconds), text, "ok" if stage.ok else "failed")

    def _set(self, mark: str, time: str, detail: str, state: str) -> None:
        self.mark.setText(mark)
        self.time.setText(time)
        self.detail.setText(detail)
        for label in (self.mark, self.title, self.detail):
            label.setProperty("state", state)
            label.style().polish(label)


class DiagnosePanel(QGroupBox):
    """Runs ``diagnose`` for a node in a worker and shows each stage as it completes."""

    stageShown = Signal(str)  # stage name, as each stage's line is filled in
    finished = Signal(object)  # DiagnoseReport

    def __init__(self, runner: WorkerRunner, parent: QWidget | None = None) -> None:
        super().__init__("Connection test", parent)
        self.runner = runner
        self.report: DiagnoseReport | None = None
        self._generation = 0
        self._worker: DiagnoseWorker | None = None
        self.summary = QLabel("Not tested yet. Test connection checks each step from name lookup to C-GET.", self)
        self.summary.setWordWrap(True)
        self.summary.setObjectName("diagnoseSummary")
        grid = QGridLayout()
        grid.setColumnStretch(3, 1)
        grid.setHorizontalSpacing(10)
        self.lines = {name: _StageLine(grid, row, name, self) for row, name in enumerate(STAGES)}
        self.contexts = QListWidget(self)
        self.contexts.setObjectName("contextList")
        self.contexts.setMinimumHeight(90)
        self.contexts.setWordWrap(True)
        self.contexts.setHorizontalScrollBarPolicy(Qt.ScrollBarPolicy.ScrollBarAlwaysOff)
        self.contexts_label = QLabel("Presentation contexts (what the PACS accepted or rejected):", self)
        self.copy_button = QPushButton("Copy report", self)
        self.copy_button.setToolTip("Copy the full report as JSON, e.g. for the PACS administrator")
        self.copy_button.setEnabled(False)
        self.copy_button.clicked.connect(self.copy_report)
        layout = QVBoxLayout(self)
        layout.addWidget(self.summary)
        layout.addLayout(grid)
        layout.addWidget(self.contexts_label)
        layout.addWidget(self.contexts, 1)
        row = QHBoxLayout()
        row.addStretch(1)
        row.addWidget(self.copy_button)
        layout.addLayout(row)

    @property
    def running(self) -> bool:
        """True while a test runs."""
        return self._worker is not None

    def start(self, node: Node) -> None:
        """Test ``node`` (a test still running is cancelled and its answers ignored)."""
        self.cancel()
        self._generation += 1
        self.report = None
        for line in self.lines.values():
            line.reset()
        self.contexts.clear()
        self.copy_button.setEnabled(False)
        self.summary.setText(f"Testing {node.address} as {node.calling_ae}…")
        self.summary.setProperty("state", "pending")
        self.summary.style().polish(self.summary)
        worker = DiagnoseWorker(self._generation, node)
        worker.stageDone.connect(self._on_stage)
        worker.finished.connect(self._on_finished)
        worker.failed.connect(self._on_failed)
        self._worker = worker
        self.runner.start(worker)

    def cancel(self) -> None:
        """Stop waiting for the running test (its results will be dropped)."""
        if self._worker is not None:
            self._worker.cancel()
            self._worker = None

    @Slot(int, object)
    def _on_stage(self, generation: int, stage: StageResult) -> None:
        if generation == self._generation and stage.name in self.lines:
            self.lines[stage.name].show(stage)
            self.stageShown.emit(stage.name)

    @Slot(int, object)
    def _on_finished(self, generation: int, report: DiagnoseReport) -> None:
        if generation != self._generation:
            return
        self._worker = None
        self.report = report
        for stage in report.stages:
            if stage.name in self.lines:
                self.lines[stage.name].show(stage)
        accepted = [c for c in report.contexts if c.accepted]
        rejected = [c for c in report.contexts if not c.accepted]
        for ctx in accepted + rejected:
            item = QListWidgetItem(f"{PASS if ctx.accepted else FAIL}  {ctx.describe()}")
            item.setToolTip(ctx.abstract_syntax)
            item.setForeground(QColor(OK_COLOUR if ctx.accepted else FAIL_COLOUR))
            self.contexts.addItem(item)
        if report.contexts:
            self.contexts_label.setText(f"Presentation contexts: {len(accepted)} accepted, {len(rejected)} rejected")
        else:
            self.contexts.addItem("No association was made, so no presentation contexts were negotiated.")
        failed = report.failed_stage
        if failed is None:
            text, state = f"All {len(report.stages)} steps passed: {report.node.address} is ready.", "ok"
        else:
            text = f"Failed at “{STAGE_TITLES.get(failed.name, failed.name)}”: {failed.detail}"
            state = "failed"
        self.summary.setText(text)
        self.summary.setProperty("state", state)
        self.summary.style().polish(self.summary)
        self.copy_button.setEnabled(True)
        self.finished.emit(report)

    @Slot(int, str, str)
    def _on_failed(self, generation: int, message: str, hint: str) -> None:
        if generation != self._generation:
            return
        self._worker = None
        self.summary.setText(f"The test could not run: {message}" + (f" ({hint})" if hint else ""))
        self.summary.setProperty("state", "failed")
        self.summary.style().polish(self.summary)

    def copy_report(self) -> None:
        """Copy the report as JSON."""
        if self.report is not None:
            QGuiApplication.clipboard().setText(json.dumps(self.report.to_json(), indent=2, ensure_ascii=False))
