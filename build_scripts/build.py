"""Build PacsPull for the current OS: the PyInstaller bundle, then its installer.

    python build_scripts/build.py                 # bundle + installer
    python build_scripts/build.py --no-installer  # bundle only (what CI's Linux smoke test needs)
    python build_scripts/build.py --dry-run       # print the steps, run nothing

Needs Python 3.11+ with PacsPull installed with its build extra: ``pip install -e ".[build]"``.

What it leaves in ``dist/`` (``--dist``):

    all      PacsPull/                  the onedir bundle: the window PacsPull, the CLI pacspull
                                        (pacspull.com on Windows, see bundle.py) and _internal/
    Linux    PacsPull-<ver>-linux-<arch>.tar.gz
    Windows  PacsPull-<ver>-windows-x64-setup.exe   (Inno Setup 6: ISCC on PATH, in its usual
                                                     folder, or --iscc)
    macOS    PacsPull.app, PacsPull-<ver>-macos-<arch>.dmg   (signed and notarized when the
                                                     variables in macos/make_dmg.sh are set)

The version everywhere is pyproject.toml's; the build stops if pacspull.core.__version__ (what
``pacspull --version`` prints) says otherwise.
"""

from __future__ import annotations

import argparse
import os
import platform as platform_module
import re
import shutil
import subprocess
import sys
import tarfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import bundle  # noqa: E402

SPEC = bundle.BUILD_SCRIPTS / "pacspull.spec"
ISS = bundle.BUILD_SCRIPTS / "windows" / "pacspull.iss"
MAKE_DMG = bundle.BUILD_SCRIPTS / "macos" / "make_dmg.sh"


class BuildError(Exception):
    """A build step cannot run or failed; the message says what to do."""


@dataclass(frozen=True)
class Step:
    """One step of the build: an external command, or a function run here."""

    title: str
    command: tuple[str, ...] = ()
    action: Callable[[], None] | None = None

    def describe(self) -> str:
        """The step as one line for --dry-run and the log."""
        detail = " ".join(_quote(part) for part in self.command) if self.command else "(in-process)"
        return f"{self.title}: {detail}"


def _quote(text: str) -> str:
    return f'"{text}"' if (" " in text or not text) else text


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    """The command line (see the module docstring)."""
    parser = argparse.ArgumentParser(
        prog="build.py", description="Build the PacsPull bundle and installer for this OS.")
    parser.add_argument("--no-installer", action="store_true",
                        help="stop after the PyInstaller bundle (no .tar.gz, setup.exe or .dmg)")
    parser.add_argument("--clean", action="store_true",
                        help="empty PyInstaller's cache and work folder first (default: reuse them)")
    parser.add_argument("--dist", type=Path, default=bundle.ROOT / "dist", metavar="DIR",
                        help="output folder (default: dist/)")
    parser.add_argument("--work", type=Path, default=bundle.ROOT / "build" / "pyinstaller", metavar="DIR",
                        help="PyInstaller's work folder (default: build/pyinstaller/)")
    parser.add_argument("--iscc", type=Path, metavar="PATH",
                        help="Windows: Inno Setup's ISCC.exe (default: on PATH or in its usual folder)")
    parser.add_argument("--dry-run", action="store_true", help="print the steps and run nothing")
    args = parser.parse_args(argv)
    args.dist = args.dist.resolve()
    args.work = args.work.resolve()
    return args


def core_version(init: Path = bundle.ROOT / "core" / "__init__.py") -> str:
    """``pacspull.core.__version__`` as written in core/__init__.py (read, not imported)."""
    match = re.search(r'^__version__\s*=\s*["\']([^"\']+)["\']', init.read_text(encoding="utf-8"), re.M)
    if match is None:
        raise BuildError(f"{init} has no __version__ line")
    return match.group(1)


def check_version() -> str:
    """pyproject's version, after checking the CLI and window will report the same one."""
    version = bundle.read_version()
    reported = core_version()
    if reported != version:
        raise BuildError(f"pyproject.toml says version {version} but pacspull.core.__version__ is {reported}: "
                         "make them equal before building")
    return version


def find_iscc(explicit: Path | None = None) -> Path:
    """Inno Setup 6's compiler: --iscc, ISCC on PATH, or its usual install folders."""
    if explicit is not None:
        if not explicit.is_file():
            raise BuildError(f"--iscc {explicit}: no such file")
        return explicit
    on_path = shutil.which("ISCC") or shutil.which("iscc")
    if on_path:
        return Path(on_path)
    for base in ("ProgramFiles(x86)", "ProgramFiles", "LOCALAPPDATA"):
        root = os.environ.get(base)
        if root:
            for folder in ("Inno Setup 6", os.path.join("Programs", "Inno Setup 6")):
                candidate = Path(root) / folder / "ISCC.exe"
                if candidate.is_file():
                    return candidate
    raise BuildError("Inno Setup 6 not found: install it (choco install innosetup, or jrsoftware.org), "
                     "pass --iscc PATH, or build with --no-installer")


def bundle_dir(dist: Path) -> Path:
    """The onedir bundle folder."""
    return dist / bundle.APP_NAME


def executables(dist: Path, platform: str = sys.platform) -> list[Path]:
    """Where the two programs end up (on macOS inside PacsPull.app, which is what ships)."""
    if platform == "darwin":
        folder = dist / f"{bundle.APP_NAME}.app" / "Contents" / "MacOS"
    else:
        folder = bundle_dir(dist)
    return [folder / bundle.gui_name_in_bundle(platform), folder / bundle.cli_name_in_bundle(platform)]


def tree_size(path: Path) -> int:
    """Bytes in the regular files under ``path`` (symlinks count as nothing)."""
    total = 0
    for root, _, files in os.walk(path):
        for name in files:
            file = Path(root, name)
            if not file.is_symlink():
                total += file.stat().st_size
    return total


def make_tarball(source: Path, target: Path) -> None:
    """``target`` (.tar.gz) holding ``source`` as its top folder, symlinks kept as links."""
    target.unlink(missing_ok=True)
    partial = target.with_name(target.name + ".partial")
    with tarfile.open(partial, "w:gz", compresslevel=6) as tar:
        tar.add(source, arcname=source.name)
    os.replace(partial, target)


def plan(args: argparse.Namespace, version: str, platform: str = sys.platform,
         machine: str | None = None) -> list[Step]:
    """The steps for ``platform``; nothing runs here (ISCC is looked up, as the plan needs its path)."""
    from render_icons import icon_paths, render_all

    machine = machine or platform_module.machine().lower() or "unknown"
    steps: list[Step] = []
    if not all(path.exists() for path in icon_paths()):
        steps.append(Step("render the icons from resources/pacspull.svg", action=render_all))
    if args.clean:
        steps.append(Step(f"empty {args.work}", action=lambda: shutil.rmtree(args.work, ignore_errors=True)))
    pyinstaller = [sys.executable, "-m", "PyInstaller", "--noconfirm", "--log-level", "WARN",
                   "--distpath", str(args.dist), "--workpath", str(args.work)]
    if args.clean:
        pyinstaller.append("--clean")
    steps.append(Step("PyInstaller bundle", tuple(pyinstaller + [str(SPEC)])))
    if args.no_installer:
        return steps

    if platform.startswith("win"):
        iscc = find_iscc(args.iscc)
        numeric = ".".join(str(part) for part in bundle.numeric_version(version))
        steps.append(Step("Inno Setup installer", (
            str(iscc), "/Q", f"/DAppVersion={version}", f"/DAppVersionNumeric={numeric}",
            f"/DSourceDir={bundle_dir(args.dist)}", f"/DOutputDir={args.dist}",
            f"/DIconFile={bundle.ICON_ICO}", str(ISS))))
    elif platform == "darwin":
        steps.append(Step("disk image", (
            "bash", str(MAKE_DMG), str(args.dist / f"{bundle.APP_NAME}.app"), version, str(args.dist))))
    else:
        tarball = args.dist / f"{bundle.APP_NAME}-{version}-linux-{machine}.tar.gz"
        steps.append(Step(f"archive {tarball.name}",
                          action=lambda: make_tarball(bundle_dir(args.dist), tarball)))
    return steps


def run(steps: Sequence[Step]) -> None:
    """Run the steps in order; raise BuildError naming the first that fails."""
    for step in steps:
        print(f"[build] {step.describe()}", flush=True)
        started = time.monotonic()
        if step.action is not None:
            step.action()
        else:
            result = subprocess.run(step.command, cwd=bundle.ROOT, check=False)
            if result.returncode != 0:
                raise BuildError(f"{step.title} failed (exit code {result.returncode})")
        print(f"[build] {step.title}: {time.monotonic() - started:.0f} s", flush=True)


def main(argv: Sequence[str] | None = None) -> int:
    """Build; exit 0 on success, 1 when a step failed, 2 when the build cannot start."""
    args = parse_args(argv)
    try:
        if sys.version_info < (3, 11):
            raise BuildError("building needs Python 3.11 or newer")
        version = check_version()
        steps = plan(args, version)
    except BuildError as exc:
        print(f"build.py: {exc}", file=sys.stderr)
        return 2
    if args.dry_run:
        for step in steps:
            print(step.describe())
        return 0
    try:
        import PyInstaller  # noqa: F401
    except ImportError:
        print('build.py: PyInstaller is missing: pip install -e ".[build]"', file=sys.stderr)
        return 2

    started = time.monotonic()
    try:
        run(steps)
        missing = [path for path in executables(args.dist) if not path.is_file()]
        if missing:
            raise BuildError("the bundle lacks " + ", ".join(str(path) for path in missing))
    except BuildError as exc:
        print(f"build.py: {exc}", file=sys.stderr)
        return 1
    shipped = args.dist / f"{bundle.APP_NAME}.app" if sys.platform == "darwin" else bundle_dir(args.dist)
    print(f"[build] PacsPull {version} built in {time.monotonic() - started:.0f} s: {shipped} "
          f"({tree_size(shipped) / 1e6:.0f} MB)")
    for path in sorted(args.dist.glob(f"{bundle.APP_NAME}-{version}-*")):
        print(f"[build] installer: {path} ({path.stat().st_size / 1e6:.0f} MB)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
