"""build_scripts/build.py: its command line, the steps it plans per OS, and the version guard.

The plans are checked without running them (Windows and macOS steps cannot run here anyway); .ci/run
runs the real Linux build.
"""

from __future__ import annotations

import os
import stat
import subprocess
import tarfile
from pathlib import Path

import pytest
from packaging_helpers import BUILD_SCRIPTS, ROOT, load

build = load("build")
bundle = load("bundle")


def test_defaults() -> None:
    args = build.parse_args([])
    assert args.dist == ROOT / "dist"
    assert args.work == ROOT / "build" / "pyinstaller"
    assert not (args.no_installer or args.clean or args.dry_run)
    assert args.iscc is None


def test_relative_folders_become_absolute(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    args = build.parse_args(["--dist", "out", "--work", "w"])
    assert args.dist == tmp_path / "out" and args.work == tmp_path / "w"


def test_unknown_option_is_a_usage_error(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_info:
        build.parse_args(["--onefile"])
    assert exit_info.value.code == 2
    assert "unrecognized arguments: --onefile" in capsys.readouterr().err


def _pyinstaller_step(steps: list) -> tuple[str, ...]:  # type: ignore[type-arg]
    commands = [step.command for step in steps if "PyInstaller" in step.command]
    assert len(commands) == 1
    return commands[0]


def test_linux_plan_builds_the_bundle_then_a_tarball(tmp_path: Path) -> None:
    args = build.parse_args(["--dist", str(tmp_path / "d"), "--work", str(tmp_path / "w")])
    steps = build.plan(args, "0.1.0", platform="linux", machine="x86_64")
    command = _pyinstaller_step(steps)
    assert command[-1] == str(BUILD_SCRIPTS / "pacspull.spec")
    assert command[command.index("--distpath") + 1] == str(tmp_path / "d")
    assert command[command.index("--workpath") + 1] == str(tmp_path / "w")
    assert "--clean" not in command
    assert steps[-1].title == "archive PacsPull-0.1.0-linux-x86_64.tar.gz"


def test_no_installer_stops_after_pyinstaller() -> None:
    steps = build.plan(build.parse_args(["--no-installer"]), "0.1.0", platform="linux")
    assert "PyInstaller" in steps[-1].command


def test_clean_empties_the_work_folder_first(tmp_path: Path) -> None:
    args = build.parse_args(["--clean", "--no-installer", "--work", str(tmp_path / "w")])
    steps = build.plan(args, "0.1.0", platform="linux")
    empty = next(step for step in steps if step.title.startswith("empty"))
    assert steps.index(empty) < steps.index(next(s for s in steps if "PyInstaller" in s.command))
    assert "--clean" in _pyinstaller_step(steps)
    (tmp_path / "w").mkdir()
    empty.action()
    assert not (tmp_path / "w").exists()


def test_windows_plan_runs_inno_setup_with_the_pyproject_version(tmp_path: Path) -> None:
    iscc = tmp_path / "ISCC.exe"
    iscc.write_bytes(b"")
    args = build.parse_args(["--iscc", str(iscc), "--dist", str(tmp_path / "d")])
    steps = build.plan(args, "1.2.3rc1", platform="win32")
    inno = steps[-1].command
    assert inno[0] == str(iscc) and inno[-1] == str(BUILD_SCRIPTS / "windows" / "pacspull.iss")
    assert "/DAppVersion=1.2.3rc1" in inno
    assert "/DAppVersionNumeric=1.2.3.0" in inno
    assert f"/DSourceDir={tmp_path / 'd' / 'PacsPull'}" in inno
    assert f"/DOutputDir={tmp_path / 'd'}" in inno


def test_windows_plan_without_inno_setup_says_what_to_do(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PATH", str(tmp_path))
    for variable in ("ProgramFiles(x86)", "ProgramFiles", "LOCALAPPDATA"):
        monkeypatch.setenv(variable, str(tmp_path))
    with pytest.raises(build.BuildError, match=r"Inno Setup 6 not found: install it \(choco install innosetup"):
        build.plan(build.parse_args([]), "0.1.0", platform="win32")
    with pytest.raises(build.BuildError, match="no such file"):
        build.plan(build.parse_args(["--iscc", str(tmp_path / "nope.exe")]), "0.1.0", platform="win32")


def test_windows_finds_inno_setup_in_its_usual_folder(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PATH", str(tmp_path / "empty"))
    monkeypatch.setenv("ProgramFiles(x86)", str(tmp_path))
    iscc = tmp_path / "Inno Setup 6" / "ISCC.exe"
    iscc.parent.mkdir()
    iscc.write_bytes(b"")
    assert build.find_iscc() == iscc


def test_macos_plan_makes_a_disk_image_from_the_app(tmp_path: Path) -> None:
    args = build.parse_args(["--dist", str(tmp_path)])
    steps = build.plan(args, "0.1.0", platform="darwin")
    assert steps[-1].command == ("bash", str(BUILD_SCRIPTS / "macos" / "make_dmg.sh"),
                                 str(tmp_path / "PacsPull.app"), "0.1.0", str(tmp_path))
    assert build.executables(tmp_path, "darwin") == [
        tmp_path / "PacsPull.app" / "Contents" / "MacOS" / "PacsPull",
        tmp_path / "PacsPull.app" / "Contents" / "MacOS" / "pacspull-cli",
    ]


def test_dry_run_prints_the_steps_and_builds_nothing(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert build.main(["--dry-run", "--no-installer", "--dist", str(tmp_path / "d"),
                       "--work", str(tmp_path / "w")]) == 0
    out = capsys.readouterr().out
    assert "PyInstaller bundle: " in out and "pacspull.spec" in out
    assert not (tmp_path / "d").exists() and not (tmp_path / "w").exists()


def test_the_versions_agree() -> None:
    assert build.check_version() == bundle.read_version() == build.core_version()


def test_a_version_mismatch_stops_the_build(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setattr(build, "core_version", lambda: "9.9.9")
    assert build.main(["--dry-run"]) == 2
    assert "pacspull.core.__version__ is 9.9.9: make them equal" in capsys.readouterr().err


def test_core_version_is_read_without_importing(tmp_path: Path) -> None:
    init = tmp_path / "__init__.py"
    init.write_text('"""Core."""\n\n__version__ = "2.5.0"\n', encoding="utf-8")
    assert build.core_version(init) == "2.5.0"
    init.write_text('"""Core."""\n', encoding="utf-8")
    with pytest.raises(build.BuildError, match="no __version__ line"):
        build.core_version(init)


def test_tarball_keeps_symlinks_and_counts_no_link_twice(tmp_path: Path) -> None:
    source = tmp_path / "PacsPull"
    (source / "_internal").mkdir(parents=True)
    (source / "_internal" / "libQt6Core.so.6").write_bytes(b"x" * 1000)
    os.symlink("_internal/libQt6Core.so.6", source / "libQt6Core.so.6")
    assert build.tree_size(source) == 1000
    target = tmp_path / "PacsPull-0.1.0-linux-x86_64.tar.gz"
    build.make_tarball(source, target)
    with tarfile.open(target) as tar:
        link = tar.getmember("PacsPull/libQt6Core.so.6")
        assert link.issym() and link.linkname == "_internal/libQt6Core.so.6"
    assert not list(tmp_path.glob("*.partial"))


def test_installer_scripts_are_well_formed() -> None:
    iss = (BUILD_SCRIPTS / "windows" / "pacspull.iss").read_text(encoding="ascii")  # ISCC reads it as ANSI
    for line in ("PrivilegesRequired=lowest", "OutputBaseFilename={#AppName}-{#AppVersion}-windows-x64-setup",
                 "#error AppVersion is not defined", 'Tasks: desktopicon', '{autoprograms}\\{#AppName}'):
        assert line in iss, line
    assert 'Name: "desktopicon"; Description: "{cm:CreateDesktopIcon}"; GroupDescription: "{cm:AdditionalIcons}"; ' \
           "Flags: unchecked" in iss
    make_dmg = BUILD_SCRIPTS / "macos" / "make_dmg.sh"
    assert make_dmg.stat().st_mode & stat.S_IXUSR
    assert subprocess.run(["bash", "-n", str(make_dmg)], capture_output=True).returncode == 0
    workflow = (ROOT / ".github" / "workflows" / "build.yml").read_text(encoding="utf-8")
    for text in ("workflow_dispatch", 'tags: ["v*"]', "choco install innosetup", "build_scripts/build.py",
                 "build_scripts/smoke_test.py", "actions/upload-artifact"):
        assert text in workflow, text


def test_smoke_test_finds_the_programs_per_platform(tmp_path: Path) -> None:
    smoke = load("smoke_test")
    assert smoke.programs(tmp_path / "PacsPull", "linux") == (tmp_path / "PacsPull" / "PacsPull",
                                                            tmp_path / "PacsPull" / "pacspull")
    assert smoke.programs(tmp_path / "PacsPull", "win32")[1].name == "pacspull.com"
    macos = smoke.programs(tmp_path / "PacsPull.app", "darwin")
    assert macos[1] == tmp_path / "PacsPull.app" / "Contents" / "MacOS" / "pacspull-cli"
    assert smoke.main([str(tmp_path)]) == 2  # no bundle there
