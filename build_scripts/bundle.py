"""What goes into the PacsPull bundle: names, version, icons, hidden imports and the Qt parts left out.

Plain Python (no PyInstaller import), shared by the spec (``pacspull.spec``), ``build.py`` and
``tests/packaging``, so the rules are written once and tested without running a build.
"""

from __future__ import annotations

import fnmatch
import re
import shutil
import sys
from collections.abc import Callable, Iterable
from pathlib import Path, PurePosixPath

# A PyInstaller TOC entry: (path in the bundle, source path or symlink target, typecode).
TocEntry = tuple[str, str, str]

ROOT = Path(__file__).resolve().parent.parent
RESOURCES = ROOT / "resources"
BUILD_SCRIPTS = ROOT / "build_scripts"

APP_NAME = "PacsPull"
BUNDLE_ID = "org.pacspull.PacsPull"
PUBLISHER = "PacsPull"

# The two executables share one onedir bundle. Their names differ only in case, which Windows and macOS
# file systems do not tell apart, so the CLI gets a distinct name where they would collide:
#   Linux    dist/PacsPull/PacsPull        dist/PacsPull/pacspull
#   Windows  dist/PacsPull/PacsPull.exe    dist/PacsPull/pacspull.com (a console PE; cmd and PowerShell
#            try .COM before .EXE, so typing `pacspull` runs the CLI: Inkscape and devenv do the same)
#   macOS    PacsPull.app/Contents/MacOS/PacsPull and .../pacspull-cli (link it as `pacspull` on PATH)
GUI_EXE = "PacsPull"
CLI_EXE = "pacspull"
CLI_EXE_BUILD = "pacspull-cli"  # the CLI's name during the PyInstaller run on Windows and macOS

# The entry modules; the launchers beside this file only call their main().
GUI_ENTRY = BUILD_SCRIPTS / "launch_gui.py"
CLI_ENTRY = BUILD_SCRIPTS / "launch_cli.py"

# Modules PyInstaller's analysis cannot see. pydicom's pixel decoders/encoders (the RLE decoder is what
# the demo PACS uses to send a compressed sample uncompressed), pydicom/data/charset files and
# platformdirs' per-OS module come from the hooks in pyinstaller-hooks-contrib (hook-pydicom,
# hook-platformdirs); keyring's backends from PyInstaller's hook-keyring; PySide6's plugins from its Qt
# hooks. What is left to declare here:
HIDDEN_IMPORTS = [
    # pydicom decodes each response by Python codec name (pydicom.charset.python_encoding: latin_1,
    # iso2022_jp, gb18030, euc_kr, ...). PyInstaller ships every `encodings` module today; naming the ones
    # the DICOM character sets need makes a trimmed-down build fail loudly instead of garbling names.
    *(f"encodings.{name}" for name in (
        "euc_kr", "gb18030", "gb2312", "gbk", "iso2022_jp", "iso2022_jp_2", "shift_jis", "tis_620",
        "iso8859_1", "iso8859_2", "iso8859_3", "iso8859_4", "iso8859_5", "iso8859_6", "iso8859_7",
        "iso8859_8", "iso8859_9",
    )),
]
# Every pacspull module, including those imported lazily inside functions (CLI sub-commands, dialogs).
HIDDEN_PACKAGES = ["pacspull.core", "pacspull.gui"]
# Both call importlib.metadata.version() on their own name at import time.
METADATA = ["pydicom", "pynetdicom"]

# Python modules never wanted in the bundle, even when the build machine has them installed.
EXCLUDED_MODULES = [
    "tkinter",
    "_tkinter",
    "unittest",
    "pydoc_data",
    "lib2to3",
    "numpy",
    "PIL",
    "pytest",
    "hypothesis",
    "setuptools",
    "pkg_resources",
    "pip",
    # Qt modules PacsPull does not use (it needs QtCore, QtGui and QtWidgets; QtSvg only as the icon
    # engine's library). Excluding the Python modules keeps PyInstaller's Qt hooks from collecting them.
    *(f"PySide6.{name}" for name in (
        "Qt3DAnimation", "Qt3DCore", "Qt3DExtras", "Qt3DInput", "Qt3DLogic", "Qt3DRender",
        "QtAxContainer", "QtBluetooth", "QtCharts", "QtConcurrent", "QtDataVisualization", "QtDBus",
        "QtDesigner", "QtGraphs", "QtGraphsWidgets", "QtHelp", "QtHttpServer", "QtLocation",
        "QtMultimedia", "QtMultimediaWidgets", "QtNetwork", "QtNetworkAuth", "QtNfc", "QtOpenGL",
        "QtOpenGLWidgets", "QtPdf", "QtPdfWidgets", "QtPositioning", "QtPrintSupport", "QtQml",
        "QtQuick", "QtQuick3D", "QtQuickControls2", "QtQuickTest", "QtQuickWidgets", "QtRemoteObjects",
        "QtScxml", "QtSensors", "QtSerialBus", "QtSerialPort", "QtSpatialAudio", "QtSql",
        "QtStateMachine", "QtSvgWidgets", "QtTest", "QtTextToSpeech", "QtUiTools", "QtWebChannel",
        "QtWebEngineCore", "QtWebEngineQuick", "QtWebEngineWidgets", "QtWebSockets", "QtXml",
    )),
]

# Collected files (bundle-relative paths, '/'-separated, matched case-insensitively; `*` also spans
# folders) that the Qt hooks bring in for QtGui but PacsPull never loads. PySide6 keeps Qt under
# PySide6/Qt/{lib,plugins,translations} on Linux and macOS and under PySide6/{plugins,translations} with
# the DLLs beside them on Windows, hence the `PySide6/*` prefixes.
# Qt libraries nothing kept needs: QtQuick/QML and their kin arrive with the virtual keyboard, qpdf and
# lottie plugins, QtNetwork with QML; the rest guard against hooks that collect more on other platforms.
UNUSED_QT_LIBRARIES = (
    "Quick", "Qml", "Pdf", "VirtualKeyboard", "Lottie", "Labs", "ShaderTools",
    "Network", "Designer", "Sql", "Test", "Help", "UiTools", "Multimedia", "WebEngine", "3D", "SvgWidgets",
    "WaylandCompositor", "WaylandEglCompositor", "WlShellIntegration", "EglFS",
)
EXCLUDED_FILES = [
    # Qt's own translations: the app installs no QTranslator, so they are never read.
    "PySide6/*translations/*",
    # The virtual keyboard input context needs QtQuick and QtQml.
    "PySide6/*plugins/platforminputcontexts/*qtvirtualkeyboard*",
    # Image formats the app never opens (it shows its own SVG/PNG icon); qpdf needs QtPdf.
    *(f"PySide6/*plugins/imageformats/*{name}*" for name in ("qpdf", "qwebp", "qtiff", "qtga", "qwbmp", "qgif")),
    "PySide6/*plugins/vectorimageformats/*",
    # Linux platform plugins for kiosks and framebuffers: a desktop uses xcb or wayland, the self-test
    # offscreen.
    *(f"PySide6/*plugins/platforms/*{name}*" for name in ("qeglfs", "qlinuxfb", "qminimalegl", "qvnc", "qvkkhrdisplay")),
    "PySide6/*plugins/egldeviceintegrations/*",
    "PySide6/*plugins/generic/*",
    # The GTK theme plugin would need the system's GTK 3 and bring the build machine's cairo and pango,
    # a classic source of version clashes; the app draws with Fusion and the portal theme stays.
    "PySide6/*plugins/platformthemes/*qgtk3*",
    # Wayland compositor (server-side) integrations: PacsPull is a client.
    "PySide6/*plugins/wayland-graphics-integration-server/*",
    # The libraries of the modules above, by platform: libQt6X.so.6, Qt6X.dll, QtX.framework.
    *(f"PySide6/*Qt6{name}*" for name in UNUSED_QT_LIBRARIES),
    *(f"PySide6/*/Qt{name}*.framework/*" for name in UNUSED_QT_LIBRARIES),
    "PySide6/opengl32sw.dll",  # Mesa's software OpenGL for Windows (~ 20 MB); widgets do not use OpenGL
    "PySide6/*qml/*",
]

# PyInstaller's runtime hooks run in every executable of the bundle, before its entry script. The PySide6
# one imports PySide6.QtCore (to look for an embedded qt.conf): Qt's libraries loaded, ~0.1-0.2 s and tens
# of MB, in programs that never use Qt. So the command line runs without it, and the window runs it only
# when it is the window, not when it is started as a retrieve process (RETRIEVE_CHILD_FLAG).
QT_RUNTIME_HOOKS = frozenset({"pyi_rth_pyside6"})
RETRIEVE_CHILD_FLAG = "--pacspull-retrieve-process"  # core/retrieve_process.py's CHILD_FLAG (tested equal)


def scripts_for(scripts: Iterable[TocEntry], entry: Path, entries: Iterable[Path], hook_dir: Path) -> list[TocEntry]:
    """The scripts of ``entry``'s executable, from the analysis' ``scripts`` (PyInstaller's bootstrap, the
    runtime hooks, then every entry script): the other programs' entry scripts left out; the Qt runtime
    hooks left out of the command line, and in the window wrapped to skip themselves in a retrieve child
    (the wrappers are written to ``hook_dir``)."""
    others = {Path(e).stem for e in entries} - {entry.stem}
    kept: list[TocEntry] = []
    for name, source, typecode in scripts:
        if name in others:
            continue
        if name in QT_RUNTIME_HOOKS:
            if entry == CLI_ENTRY:
                continue
            source = str(_window_only_hook(name, Path(source), hook_dir))
        kept.append((name, source, typecode))
    return kept


def _window_only_hook(name: str, hook: Path, hook_dir: Path) -> Path:
    """Write a runtime hook that runs ``hook`` (its exact source) unless the program is a retrieve child."""
    hook_dir.mkdir(parents=True, exist_ok=True)
    wrapper = hook_dir / f"{name}_window_only.py"
    wrapper.write_text(
        f"# Generated by build_scripts/bundle.py: PyInstaller's {name}, skipped in a retrieve child process.\n"
        "import sys as _sys\n"
        f"if _sys.argv[1:] != [{RETRIEVE_CHILD_FLAG!r}]:\n"
        f"    exec(compile({hook.read_text(encoding='utf-8')!r}, {str(hook)!r}, 'exec'), {{'__name__': '__main__'}})\n"
        "del _sys\n",
        encoding="utf-8",
    )
    return wrapper


# resources/ files that go into the bundle at pacspull/resources/ (where the installed package has them).
BUNDLED_RESOURCES = ["pacspull.svg", "pacspull.png"]
ICON_SVG = RESOURCES / "pacspull.svg"
ICON_PNG = RESOURCES / "pacspull.png"
ICON_ICO = RESOURCES / "pacspull.ico"
ICON_ICNS = RESOURCES / "pacspull.icns"


def read_version(pyproject: Path = ROOT / "pyproject.toml") -> str:
    """The ``[project] version`` from pyproject.toml: the one version every bundle and installer carries."""
    import tomllib  # Python 3.11+, as building needs anyway

    with pyproject.open("rb") as fh:
        return str(tomllib.load(fh)["project"]["version"])


def stage_sources(dest: Path, pyproject: Path = ROOT / "pyproject.toml") -> Path:
    """Copy the ``pacspull`` packages under ``dest`` as they install (pyproject's package-dir mapping).

    The development install is editable: setuptools' import hook maps ``pacspull.core`` to ``core/``,
    which PyInstaller's module finder cannot follow. Analysing a plain copy laid out like the installed
    package works with any kind of install and bundles exactly what a wheel would hold.
    """
    import tomllib

    with pyproject.open("rb") as fh:
        mapping: dict[str, str] = tomllib.load(fh)["tool"]["setuptools"]["package-dir"]
    top_levels = {package.split(".")[0] for package in mapping}
    for name in top_levels:
        shutil.rmtree(dest / name, ignore_errors=True)
    for package, folder in sorted(mapping.items()):
        shutil.copytree(pyproject.parent / folder, dest.joinpath(*package.split(".")), dirs_exist_ok=True,
                        ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    return dest


def info_plist(version: str) -> dict[str, object]:
    """macos/Info.plist with its placeholders filled in: the keys PyInstaller's BUNDLE gets."""
    import plistlib

    text = (BUILD_SCRIPTS / "macos" / "Info.plist").read_text(encoding="utf-8")
    for placeholder, value in {"@VERSION@": version, "@BUNDLE_ID@": BUNDLE_ID, "@APP_NAME@": APP_NAME,
                               "@EXECUTABLE@": GUI_EXE, "@ICON@": ICON_ICNS.name}.items():
        text = text.replace(placeholder, value)
    return plistlib.loads(text.encode("utf-8"))


def numeric_version(version: str) -> tuple[int, int, int, int]:
    """``"1.2.3rc1"`` -> ``(1, 2, 3, 0)``: the four numbers Windows version resources and Inno Setup take."""
    match = re.match(r"^(\d+)(?:\.(\d+))?(?:\.(\d+))?(?:\.(\d+))?", version)
    if match is None:
        raise ValueError(f"version {version!r} does not start with a number")
    first, *rest = (int(part) if part else 0 for part in match.groups())
    return (first, rest[0], rest[1], rest[2])


def is_excluded(dest: str) -> bool:
    """True when a collected file (its bundle-relative path) is on the EXCLUDED_FILES list."""
    path = PurePosixPath(dest.replace("\\", "/")).as_posix().lower()
    return any(fnmatch.fnmatchcase(path, pattern.lower()) for pattern in EXCLUDED_FILES)


def split_excluded(toc: Iterable[TocEntry]) -> tuple[list[TocEntry], list[TocEntry]]:
    """``(kept, removed)``: entries on EXCLUDED_FILES, and symlinks pointing at them, go to ``removed``."""
    kept: list[TocEntry] = []
    removed: list[TocEntry] = []
    for entry in toc:
        dest, src, typecode = entry
        gone = is_excluded(dest) or (typecode == "SYMLINK" and is_excluded(src))
        (removed if gone else kept).append(entry)
    return kept, removed


def _name(path: str) -> str:
    return PurePosixPath(path.replace("\\", "/")).name


def orphaned_libraries(kept: Iterable[TocEntry], removed: Iterable[TocEntry],
                       imports_of: Callable[[str], Iterable[str]]) -> set[str]:
    """Bundle paths of libraries that only removed files needed (pruned after the Qt exclusions).

    PyInstaller resolves binary dependencies before the spec can filter, so dropping the GTK theme
    plugin leaves cairo, pango & co. behind. Candidates are the top-level libraries (where PyInstaller
    puts the dependencies it pulls in) reachable from a removed binary; a candidate stays when any kept
    binary still needs it, directly or through other libraries. ``imports_of(source path)`` gives the
    names a binary links against.
    """
    kept = list(kept)
    libraries = {_name(dest): (dest, src) for dest, src, typecode in kept
                 if typecode == "BINARY" and "/" not in dest.replace("\\", "/")}

    def closure(sources: Iterable[str], skip: set[str]) -> set[str]:
        seen: set[str] = set()
        todo = list(sources)
        while todo:
            for name in imports_of(todo.pop()):
                name = _name(name)
                if name in libraries and name not in seen and name not in skip:
                    seen.add(name)
                    todo.append(libraries[name][1])
        return seen

    suspects = closure((src for _, src, typecode in removed if typecode in ("BINARY", "EXTENSION")), set())
    roots = [src for dest, src, typecode in kept
             if typecode in ("BINARY", "EXTENSION", "EXECUTABLE") and _name(dest) not in suspects]
    still_needed = closure(roots, set())
    return {libraries[name][0] for name in suspects - still_needed}


def cli_name_in_bundle(platform: str = sys.platform) -> str:
    """The CLI's file name inside the finished bundle on ``platform`` (see the table above)."""
    if platform.startswith("win"):
        return f"{CLI_EXE}.com"
    if platform == "darwin":
        return CLI_EXE_BUILD
    return CLI_EXE


def gui_name_in_bundle(platform: str = sys.platform) -> str:
    """The GUI's file name inside the finished bundle on ``platform``."""
    return f"{GUI_EXE}.exe" if platform.startswith("win") else GUI_EXE
