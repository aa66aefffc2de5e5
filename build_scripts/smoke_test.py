"""Smoke test of a frozen PacsPull bundle: the programs users get, run the way users run them.

    python build_scripts/smoke_test.py [BUNDLE]

BUNDLE defaults to dist/PacsPull (dist/PacsPull.app on macOS). .ci/run runs it on Linux after the test
suite; the installer workflow runs it on Windows and macOS. Python here only drives and checks: every
program under test is a frozen one, started with a scrubbed environment (no venv or PYTHON* variables;
HOME and the PacsPull folders in a temporary folder; on Linux also PATH=/usr/bin:/bin and LC_ALL=C, so
the UTF-8 handling is the bundle's own).

  1. `pacspull --version` and `PacsPull --version` report pyproject's version
  2. the frozen `pacspull demo-pacs --port 0` starts; its port is read from its first line
  3. `pacspull echo` succeeds
  4. `pacspull find --json` lists the demo studies, the Japanese (ISO 2022 IR 87) names decoded
  5. `pacspull get` of the smallest multi-instance study: every instance arrives as a Part-10 file
  6. `pacspull get --uncompressed-only` of the largest study: the demo PACS decompresses its RLE series
     (pydicom's pixel decoders made it into the bundle)
  7. (Linux) Qt's libraries stay out of the programs that draw nothing: the running demo PACS (the CLI)
     and the window's executable started as a retrieve process (PyInstaller's PySide6 runtime hook
     would load QtCore in both; see bundle.scripts_for)
  8. `PacsPull --self-test` offscreen: the window starts, queries its own demo PACS, retrieves a study
     through its retrieve child process (the frozen executable started again as the child), exits 0,
     and writes its log file

Then it reports the bundle's size. Exit status 0 when all pass, 1 at the first failure (with the output
that explains it), 2 when the bundle is not there.
"""

from __future__ import annotations

import argparse
import json
import os
import queue
import re
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
import bundle  # noqa: E402

AET = "SMOKE_PACS"
TIMEOUT_S = 120
DEMO_START_S = 90  # the first start writes the sample studies
JAPANESE_NAME = "=山田^太郎="
LISTENING = re.compile(rf"^Demo PACS '{AET}' listening on 127\.0\.0\.1:(\d+)")


class SmokeFailure(Exception):
    """One check failed; the message holds what the program said."""


class Smoke:
    """The checks, in order, against one bundle, in one temporary folder."""

    def __init__(self, gui: Path, cli: Path, work: Path) -> None:
        self.gui, self.cli, self.work = gui, cli, work
        self.passed = 0
        self.env = self._environment()
        self.peer: list[str] = []

    def _environment(self) -> dict[str, str]:
        scrubbed = {key: value for key, value in os.environ.items()
                    if not key.startswith(("PYTHON", "PACSPULL_", "QT_", "VIRTUAL_ENV", "LC_", "LANG"))}
        if sys.platform.startswith("linux"):
            scrubbed = {"PATH": "/usr/bin:/bin", "LC_ALL": "C"}
        home = self.work / "home"
        tmp = self.work / "tmp"
        home.mkdir()
        tmp.mkdir()
        scrubbed.update({
            "HOME": str(home), "TMPDIR": str(tmp),
            "PACSPULL_CONFIG_DIR": str(self.work / "config"),
            "PACSPULL_DATA_DIR": str(self.work / "data"),
            "PACSPULL_LOG_DIR": str(self.work / "logs"),
            "QT_QPA_PLATFORM": "offscreen",
        })
        return scrubbed

    def ok(self, what: str) -> None:
        self.passed += 1
        print(f"[smoke] ok: {what}", flush=True)

    def run(self, program: Path, *args: str) -> subprocess.CompletedProcess[bytes]:
        """Run a frozen program to its end; fail unless it exits 0."""
        try:
            result = subprocess.run([str(program), *args], env=self.env, cwd=self.work, capture_output=True,
                                    timeout=TIMEOUT_S, check=False)
        except subprocess.TimeoutExpired as exc:
            raise SmokeFailure(f"{program.name} {' '.join(args)}: no exit within {TIMEOUT_S} s") from exc
        if result.returncode != 0:
            raise SmokeFailure(f"{program.name} {' '.join(args)} exited {result.returncode}:\n"
                               f"{_text(result.stdout)}\n{_text(result.stderr)[-3000:]}")
        return result

    def versions(self, version: str) -> None:
        out = _text(self.run(self.cli, "--version").stdout).strip()
        if out != f"pacspull {version}":
            raise SmokeFailure(f"pacspull --version printed {out!r}, expected 'pacspull {version}'")
        self.ok(f"pacspull --version: {out}")
        if sys.platform.startswith("win"):
            self.ok("PacsPull.exe --version: skipped (a windowed program has no stdout on Windows)")
            return
        out = _text(self.run(self.gui, "--version").stdout).strip()
        if out != f"pacspull-gui {version}":
            raise SmokeFailure(f"PacsPull --version printed {out!r}, expected 'pacspull-gui {version}'")
        self.ok(f"PacsPull --version: {out}")

    def demo_pacs(self) -> subprocess.Popen[bytes]:
        """Start the frozen demo PACS on a free port; remember how to reach it."""
        demo = subprocess.Popen([str(self.cli), "demo-pacs", "--port", "0", "--aet", AET], env=self.env,
                                cwd=self.work, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
        lines: queue.Queue[str] = queue.Queue()
        threading.Thread(target=_pump, args=(demo, lines), daemon=True).start()
        seen: list[str] = []
        deadline = time.monotonic() + DEMO_START_S
        while time.monotonic() < deadline:
            try:
                line = lines.get(timeout=0.5)
            except queue.Empty:
                if demo.poll() is not None:
                    break
                continue
            seen.append(line)
            match = LISTENING.match(line)
            if match:
                self.peer = ["--host", "127.0.0.1", "--port", match.group(1), "--aet", AET, "--timeout", "30"]
                self.ok(f"demo-pacs listening on 127.0.0.1:{match.group(1)}")
                return demo
        _stop(demo)
        raise SmokeFailure("demo-pacs did not report its port:\n" + "".join(seen))

    def echo(self) -> None:
        self.ok("echo: " + _text(self.run(self.cli, "echo", *self.peer).stdout).strip())

    def find(self) -> list[dict[str, Any]]:
        rows: list[dict[str, Any]] = json.loads(self.run(self.cli, "find", *self.peer, "--json").stdout)
        if len(rows) < 2:
            raise SmokeFailure(f"find returned {len(rows)} studies")
        if not any(JAPANESE_NAME in str(row.get("PatientName", "")) for row in rows):
            names = [row.get("PatientName") for row in rows]
            raise SmokeFailure(f"find: no ISO 2022 IR 87 (Japanese) name decoded among {names}")
        self.ok(f"find: {len(rows)} studies, Japanese names decoded")
        return rows

    def get(self, label: str, row: dict[str, Any], *options: str) -> None:
        """Retrieve one study; every instance must arrive as a Part-10 file."""
        uid, expected = row["StudyInstanceUID"], int(row["NumberOfStudyRelatedInstances"])
        dest = self.work / label
        summary = json.loads(self.run(self.cli, "get", *self.peer, "--study-uid", uid, "--out", str(dest),
                                      "--json", *options).stdout)
        if summary.get("completed") != expected or summary.get("failed") != 0:
            raise SmokeFailure(f"get ({label}): expected {expected} completed, 0 failed; got "
                               f"{json.dumps(summary, ensure_ascii=False)[:1500]}")
        files = list(dest.rglob("*.dcm"))
        if len(files) != expected:
            raise SmokeFailure(f"get ({label}): {len(files)} .dcm files on disk, expected {expected}")
        not_dicom = [f.name for f in files if f.read_bytes()[128:132] != b"DICM"]
        if not_dicom:
            raise SmokeFailure(f"get ({label}): not DICOM Part-10 files: {not_dicom[:5]}")
        self.ok(f"{' '.join(('get', *options))}: {expected} instances of study {uid} arrived as Part-10 files")

    def no_qt(self, demo: subprocess.Popen[bytes]) -> None:
        """Linux: no Qt library mapped in the running CLI (the demo PACS) nor in a retrieve child."""
        if not sys.platform.startswith("linux"):
            self.ok("no Qt outside the window: skipped (checked on Linux, through /proc)")
            return
        child = subprocess.Popen([str(self.gui), bundle.RETRIEVE_CHILD_FLAG], env=self.env, cwd=self.work,
                                 stdin=subprocess.PIPE, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        try:
            for name, process in (("pacspull demo-pacs", demo), ("PacsPull as a retrieve process", child)):
                qt = [lib for lib in _settled_libraries(process) if "Qt6" in lib or "shiboken6" in lib]
                if qt:
                    raise SmokeFailure(f"{name} loaded Qt, which only the window needs: {qt[:5]}")
        finally:
            assert child.stdin is not None
            child.stdin.close()  # no job: the child exits
            _stop(child)
        self.ok("no Qt library loaded by the CLI or by a retrieve process")

    def self_test(self) -> None:
        result = self.run(self.gui, "--self-test", "--timeout", "60")
        line = _text(result.stdout).strip()
        # A windowed Windows program has no stdout: there the exit code and the log file must do.
        if not sys.platform.startswith("win") and not re.match(
                r"self-test: \d+ studies from the demo PACS .*; retrieved [1-9]\d* images in a retrieve process", line):
            raise SmokeFailure(f"PacsPull --self-test printed {line!r}\n{_text(result.stderr)[-2000:]}")
        log = self.work / "logs" / "pacspull.log"
        if not log.is_file() or log.stat().st_size == 0:
            raise SmokeFailure(f"PacsPull --self-test wrote no log file at {log}")
        self.ok(f"PacsPull --self-test: {line or 'exit 0'} (log file written)")


def _text(data: bytes | None) -> str:
    return (data or b"").decode("utf-8", errors="replace")


def _pump(process: subprocess.Popen[bytes], lines: queue.Queue[str]) -> None:
    """Forward a child's output lines to a queue (pipes cannot be polled with a timeout on Windows)."""
    assert process.stdout is not None
    for raw in process.stdout:
        lines.put(_text(raw))


def _settled_libraries(process: subprocess.Popen[bytes], quiet_s: float = 0.5, after: str = "/_ssl.") -> set[str]:
    """The shared objects ``process`` has mapped once its start is over: ``after`` (a library its own imports
    load, pynetdicom's ssl: the runtime hooks ran long before) is mapped, and nothing new for ``quiet_s``
    (it waits for work); Linux only."""
    maps = Path(f"/proc/{process.pid}/maps")
    seen: set[str] = set()
    quiet_since = time.monotonic()
    deadline = quiet_since + TIMEOUT_S
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise SmokeFailure(f"{process.args} exited {process.returncode} during its start")
        now = {line.split()[-1] for line in maps.read_text().splitlines() if ".so" in line}
        if now != seen:
            seen, quiet_since = now, time.monotonic()
        elif time.monotonic() - quiet_since >= quiet_s and any(after in lib for lib in seen):
            return seen
        time.sleep(0.05)
    raise SmokeFailure(f"{process.args} was still starting after {TIMEOUT_S} s")


def _stop(process: subprocess.Popen[bytes]) -> None:
    if process.poll() is None:
        process.terminate()  # SIGTERM; TerminateProcess on Windows
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def programs(target: Path, platform: str = sys.platform) -> tuple[Path, Path]:
    """The window and the CLI inside ``target`` (a bundle folder, or PacsPull.app on macOS)."""
    folder = target / "Contents" / "MacOS" if target.suffix == ".app" else target
    return folder / bundle.gui_name_in_bundle(platform), folder / bundle.cli_name_in_bundle(platform)


def report_size(target: Path) -> None:
    """Print the bundle's size and its largest files."""
    files = [p for p in target.rglob("*") if p.is_file() and not p.is_symlink()]
    total = sum(p.stat().st_size for p in files)
    print(f"[smoke] bundle size: {total / 2**20:.0f} MiB ({total / 1e6:.0f} MB) in {len(files)} files; "
          "the largest:")
    for path in sorted(files, key=lambda p: p.stat().st_size, reverse=True)[:8]:
        print(f"[smoke]   {path.stat().st_size / 2**20:5.1f} MiB  {path.relative_to(target).as_posix()}")


def main(argv: Sequence[str] | None = None) -> int:
    """Run every check; 0 when all pass."""
    default = bundle.ROOT / "dist" / (f"{bundle.APP_NAME}.app" if sys.platform == "darwin" else bundle.APP_NAME)
    parser = argparse.ArgumentParser(description="Smoke test of a frozen PacsPull bundle.")
    parser.add_argument("bundle", nargs="?", type=Path, default=default,
                        help=f"the bundle folder or .app (default: {default.relative_to(bundle.ROOT)})")
    args = parser.parse_args(argv)
    target = args.bundle.resolve()
    gui, cli = programs(target)
    missing = [str(p) for p in (gui, cli) if not p.is_file()]
    if missing:
        print(f"[smoke] no bundle: {', '.join(missing)} missing "
              "(build it with: python build_scripts/build.py --no-installer)", file=sys.stderr)
        return 2
    version = bundle.read_version()
    print(f"[smoke] {target}, expecting version {version}", flush=True)

    work = Path(tempfile.mkdtemp(prefix="pacspull-smoke-"))
    smoke = Smoke(gui, cli, work)
    demo = None
    try:
        smoke.versions(version)
        demo = smoke.demo_pacs()
        smoke.echo()
        rows = smoke.find()
        counts = [(int(row["NumberOfStudyRelatedInstances"]), row) for row in rows]
        smoke.get("small", min((c for c in counts if c[0] > 1), key=lambda c: c[0])[1])
        smoke.get("large", max(counts, key=lambda c: c[0])[1], "--uncompressed-only")
        smoke.no_qt(demo)
        _stop(demo)
        demo = None
        smoke.self_test()
    except SmokeFailure as exc:
        print(f"[smoke] FAIL: {exc}", file=sys.stderr, flush=True)
        print(f"{smoke.passed} passed, 1 failed")
        return 1
    finally:
        if demo is not None:
            _stop(demo)
        shutil.rmtree(work, ignore_errors=True)
    report_size(target)
    print(f"{smoke.passed} passed, 0 failed")
    return 0


if __name__ == "__main__":
    sys.exit(main())
