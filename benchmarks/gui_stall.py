"""Measure how long the GUI thread's event loop stalls while the window retrieves many small instances.

A 5 ms heartbeat timer runs on the GUI thread during the retrieve; every gap between two ticks beyond
the interval is time the event loop could not run (the longest one is the stall a user would feel).

Runs, each through the real window (MainWindow → RetrieveQueue → worker → progress panel):

* ``--pacs HOST:PORT:AET --study-uid UID``: that study from a real PACS (benchmarks/run.py passes
  Orthanc with the MANY study loaded: "the longest stall while the window retrieves MANY");
* ``demo`` (without ``--pacs``): ``--count`` tiny instances (8×8 CT images in 4 series, one study) served by the demo PACS
  over loopback, retrieved by the real ``RetrieveWorker`` (C-GET, files written to disk). The demo PACS
  runs in a process of its own, as a real PACS would (``--in-process`` keeps it in the window's process,
  as the first-run demo node does: its threads then share the GIL, and their garbage collections pause
  the GUI thread too);
* ``flood``: a stand-in worker that fires the same callbacks as core's retrieval (``instance_stored``
  and ``progress`` per instance) as fast as it can, ``--flood`` of them, to show what the window does
  at tens of thousands of instances a second, far beyond what the demo PACS can send.

The window's engine runs in a child process (core/retrieve_process.py), as it does for users;
``--engine-in-window`` runs it on the worker's QThread in the window's process instead, as before
session 3, to show what the child process is worth (its Python then competes for the GUI thread's GIL).

It also times the GUI thread's own share, each 10 Hz ``RetrieveQueue.refresh`` (rows updated, labels
set), and counts the transfer table's repaints (it must keep repainting during the flood: a frozen
picture would be a flooded event loop too). On a busy machine the heartbeat gaps are mostly the
scheduler and the GIL (other processes, the retrieving thread).

Run: ``.venv/bin/python benchmarks/gui_stall.py`` (offscreen unless a display is set); ``--json FILE``
writes the figures for benchmarks/run.py. Throwaway config/data folders; nothing of yours is touched.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import sys
import tempfile
import time
from multiprocessing.connection import Connection
from pathlib import Path

if not os.environ.get("DISPLAY"):
    os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")

HEARTBEAT_MS = 5


def make_instances(folder: Path, count: int) -> list[Path]:
    """``count`` tiny CT instances of one study (4 series) as Part-10 files."""
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.uid import CTImageStorage, ExplicitVRLittleEndian, generate_uid

    study, series = generate_uid(), [generate_uid() for _ in range(4)]
    paths = []
    for i in range(count):
        ds = Dataset()
        ds.file_meta = FileMetaDataset()
        ds.file_meta.MediaStorageSOPClassUID = CTImageStorage
        ds.file_meta.MediaStorageSOPInstanceUID = uid = generate_uid()
        ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
        ds.SOPClassUID, ds.SOPInstanceUID = CTImageStorage, uid
        ds.PatientName, ds.PatientID, ds.PatientBirthDate, ds.PatientSex = "Bench^Mark", "BENCH-1", "19700101", "O"
        ds.StudyInstanceUID, ds.SeriesInstanceUID = study, series[i % 4]
        ds.StudyDate, ds.StudyTime, ds.StudyDescription, ds.AccessionNumber = "20240101", "120000", "Many small", "B1"
        ds.Modality, ds.SeriesNumber, ds.InstanceNumber = "CT", i % 4 + 1, i // 4 + 1
        ds.Rows = ds.Columns = 8
        ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
        ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 12, 11, 0
        ds.PixelData = bytes(128)
        path = folder / f"{i:05d}.dcm"
        ds.save_as(path, enforce_file_format=True)
        paths.append(path)
    return paths


def _folder(path: Path) -> Path:
    path.mkdir(parents=True, exist_ok=True)
    return path


def _paint_counter_class() -> type:
    from PySide6.QtCore import QEvent, QObject

    class PaintCounter(QObject):
        """Counts the paint events of one widget."""

        def __init__(self, widget: QObject) -> None:
            super().__init__(widget)
            self.count = 0
            widget.installEventFilter(self)

        def eventFilter(self, watched: QObject, event: QEvent) -> bool:  # noqa: N802 - Qt override
            if event.type() == QEvent.Type.Paint:
                self.count += 1
            return False

    return PaintCounter


def _PaintCounter(widget: object) -> object:  # noqa: N802 - reads as the class it builds
    return _paint_counter_class()(widget)


def _serve(files: list[Path], port_pipe: Connection) -> None:
    """Child process: serve ``files`` on a free port, tell the parent which, run until terminated."""
    from pacspull.core.demo_pacs import DemoPacs

    pacs = DemoPacs(files=files, port=0).start()
    port_pipe.send(pacs.port)
    pacs.serve_forever()


class Heartbeat:
    """A 5 ms timer on the GUI thread; records the gaps between its ticks."""

    def __init__(self) -> None:
        from PySide6.QtCore import QTimer

        self.gaps: list[float] = []
        self.at: list[float] = []  # when each gap ended, seconds after start()
        self._last = self._start = time.perf_counter()
        self.timer = QTimer()
        self.timer.setInterval(HEARTBEAT_MS)
        self.timer.timeout.connect(self._tick)

    def start(self) -> None:
        self._last = self._start = time.perf_counter()
        self.timer.start()

    def stop(self) -> None:
        self.timer.stop()

    def _tick(self) -> None:
        now = time.perf_counter()
        self.gaps.append(now - self._last)
        self.at.append(now - self._start)
        self._last = now

    def figures(self) -> dict[str, float]:
        gaps = sorted(self.gaps) or [0.0]
        return {"ticks": len(self.gaps), "longest_gap_ms": round(gaps[-1] * 1000, 1),
                "stall_ms": round(max(0.0, gaps[-1] - HEARTBEAT_MS / 1000) * 1000, 1),
                "p99_gap_ms": round(gaps[int(0.99 * (len(gaps) - 1))] * 1000, 1)}

    def report(self) -> str:
        gaps = sorted(self.gaps)
        if not gaps:
            return "no heartbeat"
        stall = max(0.0, gaps[-1] - HEARTBEAT_MS / 1000)
        p99 = gaps[int(0.99 * (len(gaps) - 1))]
        worst = sorted(zip(self.gaps, self.at), reverse=True)[:3]
        where = ", ".join(f"{g * 1000:.0f} ms at {t:.2f} s" for g, t in worst)
        return (f"heartbeat ticks {len(gaps)}, longest gap {gaps[-1] * 1000:.1f} ms "
                f"(stall {stall * 1000:.1f} ms beyond the {HEARTBEAT_MS} ms interval), p99 gap {p99 * 1000:.1f} ms; "
                f"worst: {where}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--count", type=int, default=1000, metavar="N",
                        help="instances served by the demo PACS (default: 1000)")
    parser.add_argument("--flood", type=int, default=50_000, metavar="N",
                        help="instances the stand-in worker reports as fast as it can (default: 50000; 0: skip)")
    parser.add_argument("--in-process", action="store_true",
                        help="run the demo PACS in the window's process (default: a process of its own)")
    parser.add_argument("--pacs", metavar="HOST:PORT:AET",
                        help="retrieve from this PACS instead of the demo PACS (with --study-uid)")
    parser.add_argument("--study-uid", metavar="UID", help="the study to retrieve from --pacs")
    parser.add_argument("--engine-in-window", action="store_true",
                        help="run the retrieve engine in the window's process (a QThread), not in its child process")
    parser.add_argument("--think", type=float, default=0.0, metavar="S",
                        help="seconds between the search's results and the click on Retrieve, as a user takes "
                             "them (default 0; the window starts a retrieve process when studies are found)")
    parser.add_argument("--json", type=Path, metavar="FILE", help="also write the figures to FILE as JSON")
    args = parser.parse_args(argv)
    if bool(args.pacs) != bool(args.study_uid):
        parser.error("--pacs and --study-uid go together")

    work = Path(tempfile.mkdtemp(prefix="pacspull-stall-"))
    os.environ["PACSPULL_CONFIG_DIR"] = str(work / "config")
    os.environ["PACSPULL_DATA_DIR"] = str(work / "data")
    from PySide6.QtCore import QTimer
    from PySide6.QtWidgets import QApplication

    from pacspull.core.demo_pacs import DemoPacs
    from pacspull.core.nodes import Node, NodeBook
    from pacspull.core.query import QueryRequest
    from pacspull.gui import style
    from pacspull.gui.context import AppContext
    from pacspull.gui.main_window import MainWindow
    from pacspull.gui.workers import RetrieveWorker

    RetrieveWorker.isolated = not args.engine_in_window

    app = QApplication(sys.argv[:1])
    style.apply(app)
    if args.pacs:
        host, port_text, aet = args.pacs.rsplit(":", 2)
        port, stop, request = int(port_text), (lambda: None), QueryRequest(study_uids=(args.study_uid,))
    elif args.in_process:
        host, aet, request = "127.0.0.1", "PACSPULL_DEMO", QueryRequest()
        pacs = DemoPacs(files=make_instances(_folder(work / "pacs"), args.count), port=0).start()
        port, stop = pacs.port, pacs.stop
    else:
        host, aet, request = "127.0.0.1", "PACSPULL_DEMO", QueryRequest()
        files = make_instances(_folder(work / "pacs"), args.count)
        receive, send = multiprocessing.Pipe(duplex=False)
        server = multiprocessing.get_context("spawn").Process(target=_serve, args=(files, send), daemon=True)
        server.start()
        port, stop = receive.recv(), server.terminate
    node = Node(name="Bench PACS", ae_title=aet, host=host, port=port)
    NodeBook(path=NodeBook.default_path(), nodes=[node], selected=node.name).save()
    context = AppContext()
    window = MainWindow(context)
    window.resize(1360, 860)
    window.show()
    repaints = [0]
    window.transfers.dataChanged.connect(lambda *_: repaints.__setitem__(0, repaints[0] + 1))
    refresh = window.retrieve.refresh
    refreshes: list[float] = []

    def timed_refresh() -> None:
        started = time.perf_counter()
        refresh()
        refreshes.append(time.perf_counter() - started)

    window.retrieve._timer.timeout.disconnect()
    window.retrieve._timer.timeout.connect(timed_refresh)
    table_paints = _PaintCounter(window.progress_panel.table.viewport())

    results: dict[str, dict[str, float | str]] = {}

    def run(label: str) -> None:
        beat = Heartbeat()
        started = [0.0]

        def go(_summary: object) -> None:
            if args.think > 0:
                QTimer.singleShot(int(args.think * 1000), click)
            else:
                click()

        def click() -> None:
            refreshes.clear()
            table_paints.count = 0
            started[0] = time.perf_counter()
            beat.start()
            window.start_retrieve(window.model.studies())

        def done(_text: str) -> None:
            beat.stop()
            seconds = time.perf_counter() - started[0]
            row = window.transfers.rows()[-1]
            count = row.completed + row.skipped
            results[label] = {**beat.figures(), "instances": count, "seconds": round(seconds, 2),
                              "longest_refresh_ms": round(max(refreshes, default=0) * 1000, 1),
                              "table_repaints": table_paints.count}
            print(f"{label}: {count} instances in {seconds:.2f} s ({count / seconds:,.0f}/s), "
                  f"{repaints[0]} row repaints; {beat.report()}; GUI work: longest refresh "
                  f"{max(refreshes, default=0) * 1000:.1f} ms; the transfer table repainted {table_paints.count} times",
                  flush=True)
            app.exit(0)  # not quit(): in Qt 6 that closes the window too

        window.search.finished.connect(go)
        window.retrieve.queueFinished.connect(done)
        window.search.search(node, request)
        app.exec()
        window.search.finished.disconnect(go)
        window.retrieve.queueFinished.disconnect(done)

    engine = "engine in the window's process" if args.engine_in_window else "engine in a child process"
    run(f"{args.pacs} (real C-GET, {engine})" if args.pacs else
        f"demo PACS {'in-process' if args.in_process else 'in its own process'} (real C-GET, {engine})")
    if args.flood:
        window.retrieve.worker_class = _flood_worker(args.flood)
        window.retrieve.clear_finished()
        repaints[0] = 0
        run("stand-in flood (no network)")
    window.quit_now()
    context.shutdown()
    stop()
    if args.json:
        args.json.write_text(json.dumps(results, indent=1))
    return 0


def _flood_worker(count: int) -> type:
    """A RetrieveWorker whose work() reports ``count`` stored instances as fast as Python can."""
    from pacspull.core.get import RequestOutcome, RetrievalProgress, RetrievalSummary
    from pacspull.core.status import describe
    from pacspull.core.storage import StoredInstance
    from pacspull.gui.workers import RetrieveWorker, _Relay

    class FloodWorker(RetrieveWorker):
        def work(self) -> None:
            relay = _Relay(self)
            outcome = RequestOutcome(self.requests[0], attempted=True)
            folder = self.destination / "Bench_Mark_BENCH-1" / "20240101_Many_small_B1"
            start = time.monotonic()
            for i in range(count):
                outcome.completed += 1
                outcome.bytes_received += 1000
                relay.instance_stored(outcome, StoredInstance(folder / f"{i}.dcm", f"1.2.3.{i}", "1.2", "1.2", 1000))
                relay.progress(RetrievalProgress(1, 1, "flood", outcome.completed, 0, 0, 0, count - i - 1,
                                                 outcome.bytes_received, time.monotonic() - start))
            outcome.status, outcome.remaining, outcome.seconds = describe(0), 0, time.monotonic() - start
            relay.request_finished(outcome)
            self.finished.emit(self.generation, RetrievalSummary(str(self.destination), [outcome], outcome.seconds))

    return FloodWorker


if __name__ == "__main__":
    sys.exit(main())
