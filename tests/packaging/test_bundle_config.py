"""What the PyInstaller spec declares (build_scripts/bundle.py), checked without running a build.

The real bundle is built and smoke-tested by .ci/run (build_scripts/build.py, then smoke_test.py); these
tests catch the cheap mistakes early: a hidden import that no longer exists, an exclusion that would cut
out something the app imports, a Qt library rule that drops what the window needs.
"""

from __future__ import annotations

import codecs
import importlib.metadata
import importlib.resources
import importlib.util
import json
import os
import subprocess
import sys
import tomllib

import pytest
from packaging_helpers import ROOT, load

bundle = load("bundle")


def test_hidden_imports_resolve() -> None:
    missing = [name for name in bundle.HIDDEN_IMPORTS if importlib.util.find_spec(name) is None]
    assert not missing, f"hidden imports that do not exist (fix build_scripts/bundle.py): {missing}"


def test_every_dicom_character_set_has_its_codec_declared() -> None:
    from pydicom.charset import python_encoding

    needed = {"encodings." + codecs.lookup(name).name.replace("-", "_") for name in python_encoding.values()}
    needed.discard("encodings.utf_8")  # built into the interpreter
    assert needed <= set(bundle.HIDDEN_IMPORTS), sorted(needed - set(bundle.HIDDEN_IMPORTS))


def test_packages_metadata_and_entry_scripts_exist() -> None:
    for package in bundle.HIDDEN_PACKAGES:
        assert importlib.util.find_spec(package) is not None, package
    for distribution in bundle.METADATA:
        assert importlib.metadata.version(distribution)
    for entry in (bundle.GUI_ENTRY, bundle.CLI_ENTRY):
        compile(entry.read_text(encoding="utf-8"), str(entry), "exec")
    spec = bundle.BUILD_SCRIPTS / "pacspull.spec"
    compile(spec.read_text(encoding="utf-8"), str(spec), "exec")


def test_contributed_hooks_cover_what_the_spec_leaves_to_them() -> None:
    """bundle.py relies on pyinstaller-hooks-contrib for pydicom's pixel handlers and platformdirs."""
    hooks = pytest.importorskip("_pyinstaller_hooks_contrib", reason='needs the build extra: pip install -e ".[build]"')
    stdhooks = os.path.join(os.path.dirname(hooks.__file__), "stdhooks")
    for name in ("hook-pydicom.py", "hook-platformdirs.py"):
        assert os.path.isfile(os.path.join(stdhooks, name)), name
    with open(os.path.join(stdhooks, "hook-pydicom.py"), encoding="utf-8") as fh:
        assert "pydicom.pixels.decoders.rle" in fh.read()  # the decoder the demo PACS needs


def test_pacspull_imports_nothing_the_bundle_excludes() -> None:
    """Every pacspull module, imported in a fresh interpreter, loads no module on the exclusion list."""
    code = (
        "import importlib, json, pkgutil, sys\n"
        "import pacspull.core, pacspull.gui\n"
        "for package in (pacspull.core, pacspull.gui):\n"
        "    for info in pkgutil.walk_packages(package.__path__, package.__name__ + '.'):\n"
        "        importlib.import_module(info.name)\n"
        "print(json.dumps(sorted(sys.modules)))\n"
    )
    env = {**os.environ, "QT_QPA_PLATFORM": "offscreen"}
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=120)
    assert result.returncode == 0, result.stderr[-3000:]
    loaded = json.loads(result.stdout.splitlines()[-1])
    clashes = [name for name in loaded
               if any(name == excluded or name.startswith(excluded + ".") for excluded in bundle.EXCLUDED_MODULES)]
    assert not clashes, f"the app imports modules build_scripts/bundle.py leaves out of the bundle: {clashes}"


@pytest.mark.parametrize("dest", [
    "PySide6/Qt/translations/qtbase_de.qm",
    "PySide6/translations/qtbase_ja.qm",
    "PySide6/Qt/plugins/platforminputcontexts/libqtvirtualkeyboardplugin.so",
    "PySide6/Qt/plugins/imageformats/libqpdf.so",
    "PySide6/plugins/imageformats/qpdf.dll",
    "PySide6/Qt/plugins/platforms/libqeglfs.so",
    "PySide6/Qt/plugins/platformthemes/libqgtk3.so",
    "PySide6/Qt/lib/libQt6Quick.so.6",
    "PySide6/Qt/lib/libQt6QmlModels.so.6",
    "PySide6/Qt/lib/libQt6Network.so.6",
    "PySide6/Qt/lib/libQt6EglFsKmsSupport.so.6",
    "PySide6/Qt6Qml.dll",
    "PySide6\\Qt6Pdf.dll",
    "PySide6/opengl32sw.dll",
    "PySide6/Qt/lib/QtQuick.framework/Versions/A/QtQuick",
    "PySide6/Qt/qml/QtQuick/Controls/qmldir",
])
def test_unused_qt_parts_are_excluded(dest: str) -> None:
    assert bundle.is_excluded(dest)


@pytest.mark.parametrize("dest", [
    "PySide6/Qt/lib/libQt6Core.so.6",
    "PySide6/Qt/lib/libQt6Gui.so.6",
    "PySide6/Qt/lib/libQt6Widgets.so.6",
    "PySide6/Qt/lib/libQt6DBus.so.6",
    "PySide6/Qt/lib/libQt6Svg.so.6",
    "PySide6/Qt/lib/libQt6XcbQpa.so.6",
    "PySide6/Qt/lib/libQt6WaylandClient.so.6",
    "PySide6/Qt/lib/libicudata.so.73",
    "PySide6/Qt/plugins/platforms/libqxcb.so",
    "PySide6/Qt/plugins/platforms/libqwayland.so",
    "PySide6/Qt/plugins/platforms/libqoffscreen.so",
    "PySide6/Qt/plugins/platforms/libqminimal.so",
    "PySide6/Qt/plugins/platforms/libqcocoa.dylib",
    "PySide6/plugins/platforms/qwindows.dll",
    "PySide6/Qt/plugins/imageformats/libqsvg.so",
    "PySide6/Qt/plugins/imageformats/libqico.so",
    "PySide6/Qt/plugins/iconengines/libqsvgicon.so",
    "PySide6/Qt/plugins/platformthemes/libqxdgdesktopportal.so",
    "PySide6/plugins/styles/qmodernwindowsstyle.dll",
    "PySide6/Qt6Core.dll",
    "PySide6/Qt6Widgets.dll",
    "PySide6/QtWidgets.pyd",
    "PySide6/Qt/lib/QtCore.framework/Versions/A/QtCore",
    "PySide6/Qt/lib/QtGui.framework/Versions/A/Resources/Info.plist",
    "pydicom/data/charset_files/chrH31.dcm",
    "pacspull/resources/pacspull.svg",
])
def test_what_the_window_needs_is_kept(dest: str) -> None:
    assert not bundle.is_excluded(dest)


def test_symlinks_to_excluded_libraries_go_with_them() -> None:
    toc = [
        ("libQt6Core.so.6", "PySide6/Qt/lib/libQt6Core.so.6", "SYMLINK"),
        ("libQt6Network.so.6", "PySide6/Qt/lib/libQt6Network.so.6", "SYMLINK"),
        ("PySide6/Qt/lib/libQt6Network.so.6", "/venv/libQt6Network.so.6", "BINARY"),
        ("PySide6/Qt/lib/libQt6Core.so.6", "/venv/libQt6Core.so.6", "BINARY"),
    ]
    kept, removed = bundle.split_excluded(toc)
    assert [entry[0] for entry in kept] == ["libQt6Core.so.6", "PySide6/Qt/lib/libQt6Core.so.6"]
    assert len(removed) == 2


def test_libraries_only_excluded_plugins_needed_are_pruned() -> None:
    kept = [
        ("PySide6/Qt/lib/libQt6Gui.so.6", "/v/libQt6Gui.so.6", "BINARY"),
        ("PySide6/QtGui.abi3.so", "/v/QtGui.abi3.so", "EXTENSION"),
        ("libfreetype.so.6", "/s/libfreetype.so.6", "BINARY"),
        ("libpng16.so.16", "/s/libpng16.so.16", "BINARY"),
        ("libcairo.so.2", "/s/libcairo.so.2", "BINARY"),
        ("libpixman-1.so.0", "/s/libpixman-1.so.0", "BINARY"),
        ("libz.so.1", "/s/libz.so.1", "BINARY"),
    ]
    removed = [("PySide6/Qt/plugins/platformthemes/libqgtk3.so", "/v/libqgtk3.so", "BINARY")]
    links = {
        "/v/libqgtk3.so": ["libgtk-3.so.0", "libcairo.so.2", "libfreetype.so.6", "libQt6Gui.so.6"],
        "/s/libcairo.so.2": ["libpixman-1.so.0", "libfreetype.so.6", "libpng16.so.16", "libz.so.1"],
        "/v/libQt6Gui.so.6": ["libfreetype.so.6"],
        "/s/libfreetype.so.6": ["libpng16.so.16", "libz.so.1"],
        "/v/QtGui.abi3.so": ["libQt6Gui.so.6"],
    }
    orphans = bundle.orphaned_libraries(kept, removed, lambda path: links.get(path, []))
    assert orphans == {"libcairo.so.2", "libpixman-1.so.0"}


@pytest.mark.parametrize(("version", "numbers"), [
    ("0.1.0", (0, 1, 0, 0)), ("1.2", (1, 2, 0, 0)), ("2.0.1rc1", (2, 0, 1, 0)), ("3.4.5.6", (3, 4, 5, 6)),
    ("1.0.0.dev3", (1, 0, 0, 0)),
])
def test_numeric_version_for_windows_resources(version: str, numbers: tuple[int, ...]) -> None:
    assert bundle.numeric_version(version) == numbers


def test_numeric_version_rejects_a_version_without_numbers() -> None:
    with pytest.raises(ValueError):
        bundle.numeric_version("dev")


@pytest.mark.parametrize(("platform", "gui", "cli"), [
    ("linux", "PacsPull", "pacspull"),
    ("win32", "PacsPull.exe", "pacspull.com"),
    ("darwin", "PacsPull", "pacspull-cli"),
])
def test_the_two_programs_never_collide_on_case_insensitive_file_systems(platform: str, gui: str, cli: str) -> None:
    assert (bundle.gui_name_in_bundle(platform), bundle.cli_name_in_bundle(platform)) == (gui, cli)
    if platform != "linux":
        assert gui.lower() != cli.lower()


def test_version_comes_from_pyproject() -> None:
    with (ROOT / "pyproject.toml").open("rb") as fh:
        assert bundle.read_version() == tomllib.load(fh)["project"]["version"]


def test_info_plist_has_what_macos_needs() -> None:
    plist = bundle.info_plist("1.2.3")
    assert plist["CFBundleShortVersionString"] == plist["CFBundleVersion"] == "1.2.3"
    assert plist["CFBundleIdentifier"] == bundle.BUNDLE_ID
    assert plist["CFBundleExecutable"] == bundle.GUI_EXE
    assert plist["CFBundleIconFile"] == "pacspull.icns"
    assert plist["NSHighResolutionCapable"] is True
    assert plist["LSBackgroundOnly"] is False  # the console CLI in the same bundle must not make it faceless
    assert "local network" in str(plist["NSLocalNetworkUsageDescription"])
    assert not any("@" in str(value) for value in plist.values()), "a placeholder was left unfilled"


def test_sources_are_staged_as_installed(tmp_path) -> None:  # type: ignore[no-untyped-def]
    staged = bundle.stage_sources(tmp_path)
    package = staged / "pacspull"
    assert not (package / "__init__.py").exists()  # a namespace package, as installed
    for path in ("core/cli.py", "gui/app.py", "gui/logging_setup.py", "gui/widgets/__init__.py",
                 "resources/pacspull.svg"):
        assert (package / path).is_file(), path
    assert not list(package.rglob("__pycache__"))
    bundle.stage_sources(tmp_path)  # again, over the first copy
    assert (package / "core" / "cli.py").is_file()


def test_the_icon_ships_with_the_package() -> None:
    files = importlib.resources.files("pacspull.resources")
    for name in bundle.BUNDLED_RESOURCES:
        assert files.joinpath(name).is_file(), name
    from pacspull.gui import style

    assert style.ICON_PATH.is_file()  # the window finds it beside the gui package, as in the bundle


def test_the_window_launcher_becomes_the_retrieve_child_first() -> None:
    """launch_gui.py turns the frozen window executable into a retrieve's child process (and lowers its
    priority) before importing anything: it spells out core.retrieve_process's flag and niceness, which
    must stay what that module uses."""
    from pacspull.core.retrieve_process import CHILD_FLAG, CHILD_NICENESS

    text = (ROOT / "build_scripts" / "launch_gui.py").read_text(encoding="utf-8")
    assert f'sys.argv[1:] == ["{CHILD_FLAG}"]' in text
    assert f"os.nice({CHILD_NICENESS})" in text
    assert text.index("child_main") < text.index("pacspull.gui")  # the child never imports the window


SCRIPTS = [
    ("pyiboot01_bootstrap", "/pyinstaller/loader/pyiboot01_bootstrap.py", "PYSOURCE"),
    ("pyi_rth_inspect", "/pyinstaller/hooks/rthooks/pyi_rth_inspect.py", "PYSOURCE"),
    ("pyi_rth_pyside6", "HOOK", "PYSOURCE"),
    ("launch_gui", str(bundle.GUI_ENTRY), "PYSOURCE"),
    ("launch_cli", str(bundle.CLI_ENTRY), "PYSOURCE"),
]


def _scripts(entry, tmp_path):  # type: ignore[no-untyped-def]
    hook = tmp_path / "pyi_rth_pyside6.py"
    hook.write_text("import sys\nsys.ran_qt_hook = getattr(sys, 'ran_qt_hook', 0) + 1\n'''a \"quoted\"\nstring'''\n",
                    encoding="utf-8")
    scripts = [(n, str(hook) if p == "HOOK" else p, t) for n, p, t in SCRIPTS]
    return bundle.scripts_for(scripts, entry, [bundle.GUI_ENTRY, bundle.CLI_ENTRY], tmp_path / "hooks")


def test_the_command_line_runs_without_qts_runtime_hook(tmp_path) -> None:  # type: ignore[no-untyped-def]
    """PyInstaller's PySide6 runtime hook imports QtCore; the CLI never draws, so it goes without (the smoke
    test checks the built CLI for Qt libraries)."""
    names = [name for name, _path, _kind in _scripts(bundle.CLI_ENTRY, tmp_path)]
    assert names == ["pyiboot01_bootstrap", "pyi_rth_inspect", "launch_cli"]


@pytest.mark.parametrize(("argv", "runs"), [(["PacsPull"], 1), (["PacsPull", "--self-test"], 1),
                                            (["PacsPull", bundle.RETRIEVE_CHILD_FLAG], 0)])
def test_the_window_runs_qts_runtime_hook_unless_it_is_a_retrieve_process(  # type: ignore[no-untyped-def]
        tmp_path, argv, runs) -> None:
    """The window keeps the hook, wrapped so that it does nothing when the executable is started as a
    retrieve process; the wrapper runs the hook's own source unchanged."""
    from pacspull.core.retrieve_process import CHILD_FLAG

    assert bundle.RETRIEVE_CHILD_FLAG == CHILD_FLAG
    scripts = _scripts(bundle.GUI_ENTRY, tmp_path)
    assert [name for name, _path, _kind in scripts] == ["pyiboot01_bootstrap", "pyi_rth_inspect", "pyi_rth_pyside6",
                                                         "launch_gui"]
    wrapper = scripts[2][1]
    code = (f"import sys\nsys.argv = {argv!r}\nexec(compile(open({wrapper!r}).read(), 'w', 'exec'), {{}})\n"
            f"print(getattr(sys, 'ran_qt_hook', 0), sys.argv == {argv!r})")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.split()
    assert out == [str(runs), "True"]
