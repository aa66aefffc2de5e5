"""StudyWriter: safe names, Part-10 files written atomically and streamed, and the manifest."""

from __future__ import annotations

import contextlib
import errno
import hashlib
import io
import json
import logging
import os
import struct
import subprocess
import sys
import threading
import tracemalloc
import unicodedata
from collections.abc import Iterator
from pathlib import Path, PureWindowsPath

import pydicom
import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st
from pydicom import Dataset
from pydicom.dataset import FileMetaDataset
from pydicom.filebase import DicomBytesIO
from pydicom.filewriter import write_file_meta_info
from pydicom.uid import (
    DeflatedExplicitVRLittleEndian,
    ExplicitVRLittleEndian,
    ImplicitVRLittleEndian,
    RLELossless,
    SecondaryCaptureImageStorage,
)
from pynetdicom.dsutils import encode

from pacspull.core import storage
from pacspull.core.errors import InvalidInput, PacsPullError
from pacspull.core.storage import (
    DEFAULT_LAYOUT,
    IMPLEMENTATION_CLASS_UID,
    IMPLEMENTATION_VERSION_NAME,
    MANIFEST_NAME,
    StorageError,
    StudyWriter,
    example_path,
    safe_component,
    validate_layout,
)

UID = "1.2.826.0.1.3680043.10.543.1.2.3"
UNSAFE_CATEGORIES = {"Cc", "Cf", "Cs", "Zl", "Zp"}


# ------------------------------------------------------------------------------------------
# helpers


def make_dataset(uid: str = UID, *, pixels: bytes | None = None, **attributes: object) -> Dataset:
    """A small 8-bit monochrome Secondary Capture image."""
    ds = Dataset()
    ds.SOPClassUID = SecondaryCaptureImageStorage
    ds.SOPInstanceUID = uid
    ds.PatientName = "Müller^Jürgen"
    ds.PatientID = "PAT001"
    ds.StudyDate = "20240115"
    ds.StudyDescription = "CT Chest"
    ds.AccessionNumber = "ACC1"
    ds.SeriesNumber = 3
    ds.Modality = "OT"
    ds.SeriesDescription = "Axial"
    ds.SpecificCharacterSet = "ISO_IR 192"
    ds.StudyInstanceUID = "1.2.3.100"
    ds.SeriesInstanceUID = "1.2.3.100.1"
    ds.Rows = 16
    ds.Columns = 16
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.BitsAllocated = 8
    ds.BitsStored = 8
    ds.HighBit = 7
    ds.PixelRepresentation = 0
    ds.PixelData = pixels if pixels is not None else bytes(range(256))
    for keyword, value in attributes.items():
        setattr(ds, keyword, value)
    return ds


def wire_bytes(ds: Dataset, transfer_syntax: str) -> bytes:
    """Encode ``ds`` as a C-STORE peer sends it: no preamble, no file meta."""
    if transfer_syntax == RLELossless:
        ds.file_meta = FileMetaDataset()
        ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian  # compress() starts from here
        # pure-Python RLE encoder; PixelData becomes encapsulated, the UID stays
        ds.compress(RLELossless, generate_instance_uid=False)
        encoded = encode(ds, False, True)
    else:
        encoded = encode(
            ds,
            transfer_syntax == ImplicitVRLittleEndian,
            True,
            deflated=transfer_syntax == DeflatedExplicitVRLittleEndian,
        )
    assert encoded is not None
    return encoded


def header_of(ds: Dataset) -> Dataset:
    """The header the engine decodes: everything but the pixels."""
    header = Dataset()
    for element in ds:
        if element.keyword != "PixelData":
            header.add(element)
    return header


@contextlib.contextmanager
def lenient_pydicom() -> Iterator[None]:
    """Let pydicom hold hostile values without validating (and logging) each one."""
    saved = pydicom.config.settings.reading_validation_mode
    pydicom.config.settings.reading_validation_mode = pydicom.config.IGNORE
    try:
        yield
    finally:
        pydicom.config.settings.reading_validation_mode = saved


def header_with(values: dict[str, str]) -> Dataset:
    """A header holding ``values`` as they came, however invalid."""
    header = Dataset()
    with lenient_pydicom():
        for keyword, value in values.items():
            setattr(header, keyword, value)
    return header


def leftovers(root: Path) -> list[Path]:
    """Temp files left anywhere under ``root``."""
    return [path for path in root.rglob("*") if ".partial-" in path.name]


def store_dataset(writer: StudyWriter, ds: Dataset, transfer_syntax: str = ExplicitVRLittleEndian, **kw):
    return writer.store(
        header=header_of(ds),
        sop_class_uid=ds.SOPClassUID,
        sop_instance_uid=ds.SOPInstanceUID,
        transfer_syntax=transfer_syntax,
        source=kw.pop("source", None) or wire_bytes(ds, transfer_syntax),
        **kw,
    )


def reopen(writer: StudyWriter) -> StudyWriter:
    """Open ``writer``'s folder afresh, as a restarted app would: the manifest is read from disk."""
    # Writers in one process share a manifest; forgetting it is what a new process amounts to.
    storage._Manifest._registry.pop(writer.dest, None)
    fresh = StudyWriter(writer.dest, layout=writer.layout)
    assert fresh._manifest is not writer._manifest
    return fresh


@pytest.fixture
def writer(tmp_path: Path) -> StudyWriter:
    return StudyWriter(tmp_path / "dest")


# ------------------------------------------------------------------------------------------
# safe_component

HOSTILE_PIECES = st.sampled_from(
    [
        "..", ".", "../", "..\\", "/", "\\", "\x00", "\x1f", "\x7f", "CON", "con.txt", "LPT1", "COM\u00b9",
        "NUL.tar.gz", "conin$", " ", ".hidden", "a" * 300, "山田" * 100, "Müller", "\u202e", "\u200d",
        "\ud800", "\u2028", ":", "*?", "<>|\"", "~", "C:", "\n", "AUX ", "prn.", "^", "=", "...", "_",
    ]
)
HOSTILE_TEXT = st.lists(st.one_of(HOSTILE_PIECES, st.text(max_size=30)), max_size=8).map("".join)


def assert_safe_name(name: str, max_length: int = 255) -> None:
    assert name
    assert name not in (".", "..")
    assert not name.startswith(".")
    assert not name.endswith((".", " "))
    assert not set(name) & set('/\\<>:"|?*\x00')
    assert not [char for char in name if unicodedata.category(char) in UNSAFE_CATEGORIES]
    assert not PureWindowsPath(name).is_reserved()
    assert len(name) <= max_length
    assert len(name.encode("utf-8")) <= 255


@given(value=HOSTILE_TEXT, max_length=st.integers(min_value=1, max_value=300))
@settings(max_examples=400, deadline=None)
def test_safe_component_output_is_always_one_safe_name(value: str, max_length: int) -> None:
    name = safe_component(value, max_length=max_length)
    assert_safe_name(name, max_length)
    assert safe_component(name, max_length=max_length) == name  # idempotent: already safe


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("Müller", "Müller"),
        ("山田太郎", "山田太郎"),
        ("CT Chest  W/O", "CT_Chest_W_O"),
        ("../../etc/passwd", "etc_passwd"),
        ("..\\..\\Windows", "Windows"),
        ("a<b>c:d\"e|f?g*h", "a_b_c_d_e_f_g_h"),
        ("nul\x00byte", "nul_byte"),
        ("CON", "_CON"),
        ("con.txt", "_con.txt"),
        ("Lpt9.tar.gz", "_Lpt9.tar.gz"),
        ("COM\u00b9", "_COM\u00b9"),
        ("CONSOLE", "CONSOLE"),
        ("name. . .", "name"),
        ("...hidden", "hidden"),
        ("evil\u202etxt.exe", "eviltxt.exe"),
        ("", "_"),
        ("..", "_"),
        ("   ", "_"),
    ],
)
def test_safe_component_examples(value: str, expected: str) -> None:
    assert safe_component(value) == expected


def test_safe_component_caps_characters_and_bytes() -> None:
    assert safe_component("x" * 300) == "x" * 64
    assert safe_component("x" * 300, max_length=300) == "x" * 255
    # 4-byte characters: 255 bytes hold 63 of them, never a cut-off half character
    assert safe_component("😀" * 100, max_length=100) == "😀" * 63
    # truncation that lands on a device name still dodges it
    assert safe_component("CONSOLE", max_length=3) == "_CO"


def test_safe_component_fallback() -> None:
    assert safe_component("\x00", fallback="NoName") == "_"  # a replaced character is something
    assert safe_component("///..", fallback="NoName") == "NoName"  # edge separators are nothing
    with pytest.raises(ValueError):
        safe_component("..", fallback="../x")


# ------------------------------------------------------------------------------------------
# layouts and path_for


def test_example_path_of_default_layout() -> None:
    assert example_path() == (
        f"Doe_Jane_PAT001/20240115_CT_Chest_ACC12345/3_CT_Axial_1.25mm/{IMPLEMENTATION_CLASS_UID}.9.1.3.42.dcm"
    )
    assert example_path("{Modality}/{InstanceNumber}-{SOPInstanceUID}") == (
        f"CT/42-{IMPLEMENTATION_CLASS_UID}.9.1.3.42"
    )


@pytest.mark.parametrize(
    ("template", "rule"),
    [
        ("", "must not be empty"),
        ("   ", "must not be empty"),
        ("{PatientID}/{Nope}/{SOPInstanceUID}.dcm", "unknown DICOM keyword {Nope}"),
        ("/data/{SOPInstanceUID}.dcm", "relative path"),
        ("C:/data/{SOPInstanceUID}.dcm", "relative path"),
        ("~/data/{SOPInstanceUID}.dcm", "relative path"),
        ("{PatientID}/../{SOPInstanceUID}.dcm", ". or .. segments"),
        ("{PatientID}\\{SOPInstanceUID}.dcm", "not \\"),
        ("{PatientID}//{SOPInstanceUID}.dcm", "empty folder names"),
        ("{PatientID}/{SOPInstanceUID}/", "empty folder names"),
        ("{PatientID}/{SeriesNumber}.dcm", "must contain {SOPInstanceUID} exactly once"),
        ("{SOPInstanceUID}/{PatientID}.dcm", "must contain {SOPInstanceUID} exactly once"),
        ("{SOPInstanceUID}_{SOPInstanceUID}", "must contain {SOPInstanceUID} exactly once"),
        ("{InstanceNumber}{SOPInstanceUID}.dcm", "follow a literal _ or -"),
        ("{SOPInstanceUID}_{InstanceNumber}.dcm", "only fixed text"),
        ("{ReferencedSOPSequence}/{SOPInstanceUID}", "sequence or binary"),
        ("{PixelData}/{SOPInstanceUID}", "sequence or binary"),
        ("{PatientID:>10}/{SOPInstanceUID}", "format specs"),
        ("{PatientID/{SOPInstanceUID}", "unmatched"),
        ("{}/{SOPInstanceUID}", "needs a DICOM keyword"),
        (".hidden/{SOPInstanceUID}", "must not start with a dot"),
        ("{PatientID}./{SOPInstanceUID}", "must not end with a dot"),
        ("a<b/{SOPInstanceUID}", "not allowed in file names"),
        ("x" * 101 + "/{SOPInstanceUID}", "at most 100 bytes"),
    ],
)
def test_validate_layout_names_field_and_rule(template: str, rule: str, tmp_path: Path) -> None:
    with pytest.raises(InvalidInput) as caught:
        validate_layout(template)
    assert caught.value.field == "layout"
    assert rule in caught.value.rule
    assert str(caught.value).startswith("layout: ")
    with pytest.raises(InvalidInput):
        StudyWriter(tmp_path, layout=template)
    with pytest.raises(InvalidInput):
        example_path(template)


@pytest.mark.parametrize(
    "template",
    [
        DEFAULT_LAYOUT,
        "{SOPInstanceUID}",
        "{PatientID}/{InstanceNumber}_{SOPInstanceUID}.dcm",
        "studies/{StudyInstanceUID}/{SeriesInstanceUID}/{SOPInstanceUID}.dcm",
    ],
)
def test_validate_layout_accepts_good_templates(template: str) -> None:
    validate_layout(template)


def test_path_for_reads_header_and_makes_names_readable(writer: StudyWriter) -> None:
    path = writer.path_for(make_dataset())
    assert path.relative_to(writer.dest).parts == (
        "Müller_Jürgen_PAT001",
        "20240115_CT_Chest_ACC1",
        "3_OT_Axial",
        f"{UID}.dcm",
    )


def test_path_for_person_name_groups_and_placeholders(writer: StudyWriter) -> None:
    header = Dataset()
    header.PatientName = "=山田^太郎=やまだ^たろう"  # no alphabetic group: use the ideographic one
    header.Modality = "CT"
    parts = writer.path_for(header, sop_instance_uid=UID).relative_to(writer.dest).parts
    assert parts == (
        "山田_太郎_NoID", "NoDate_NoDescription_NoAccession", "NoNumber_CT_NoDescription", f"{UID}.dcm"
    )
    header.PatientName = "Yamada^Tarou=山田^太郎=やまだ^たろう"
    assert writer.path_for(header, sop_instance_uid=UID).relative_to(writer.dest).parts[0] == "Yamada_Tarou_NoID"


def test_path_for_needs_a_uid(writer: StudyWriter) -> None:
    with pytest.raises(InvalidInput) as caught:
        writer.path_for(Dataset())
    assert caught.value.field == "SOPInstanceUID"


def test_path_for_dodges_device_names_built_by_concatenation(tmp_path: Path) -> None:
    writer = StudyWriter(tmp_path, layout="{Modality}{BodyPartExamined}/{SOPInstanceUID}")
    header = Dataset()
    header.Modality = "CO"
    header.BodyPartExamined = "N"
    assert writer.path_for(header, sop_instance_uid=UID).parent.name == "_CON"


def test_long_values_in_one_name_fit_255_bytes_and_keep_the_uid(tmp_path: Path) -> None:
    layout = "{PatientName}_{PatientID}_{StudyDescription}_{SeriesDescription}_{InstitutionName}_{SOPInstanceUID}.dcm"
    writer = StudyWriter(tmp_path, layout=layout)
    header = Dataset()
    for keyword in ("PatientName", "PatientID", "StudyDescription", "SeriesDescription", "InstitutionName"):
        setattr(header, keyword, "山" * 64)
    name = writer.path_for(header, sop_instance_uid=UID).name
    assert len(name.encode("utf-8")) <= 255
    assert name.endswith(f"_{UID}.dcm")
    assert name.startswith("山山山")


@pytest.fixture(scope="module")
def hostile_writer(tmp_path_factory: pytest.TempPathFactory) -> StudyWriter:
    return StudyWriter(tmp_path_factory.mktemp("hostile"))


LAYOUT_KEYWORDS = ["PatientName", "PatientID", "StudyDate", "StudyDescription", "AccessionNumber",
                   "Modality", "SeriesDescription", "SOPInstanceUID"]


@given(values=st.fixed_dictionaries({keyword: HOSTILE_TEXT for keyword in LAYOUT_KEYWORDS}))
@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
def test_path_for_hostile_headers_stays_under_dest(hostile_writer: StudyWriter, values: dict[str, str]) -> None:
    header = header_with(values)
    uid = values["SOPInstanceUID"]
    if not uid.rstrip("\x00 "):  # nothing but DICOM padding: no UID to name the file by
        with pytest.raises(InvalidInput):
            hostile_writer.path_for(header, sop_instance_uid=uid)
        uid = "1"
    path = hostile_writer.path_for(header, sop_instance_uid=uid)
    dest = hostile_writer.dest
    assert os.path.commonpath([str(dest), str(path.resolve())]) == str(dest)
    parts = path.relative_to(dest).parts
    assert len(parts) == 4
    for part in parts:
        assert_safe_name(part)


@given(first=HOSTILE_TEXT, second=HOSTILE_TEXT)
@settings(max_examples=300, deadline=None)
def test_distinct_uids_never_share_a_file(hostile_writer: StudyWriter, first: str, second: str) -> None:
    first, second = first.rstrip("\x00 "), second.rstrip("\x00 ")  # DICOM padding is not part of a UID
    assume(first and second and first != second)
    header = make_dataset()
    one = hostile_writer.path_for(header, sop_instance_uid=first)
    two = hostile_writer.path_for(header, sop_instance_uid=second)
    # casefold: Windows and macOS disks would treat "A" and "a" as one file
    assert str(one).casefold() != str(two).casefold()


@pytest.mark.parametrize(
    ("first", "second"),
    [
        ("1.2.3/4", "1.2.3\\4"),  # both sanitize to 1.2.3_4
        ("1.2.3\x004", "1.2.3\x014"),
        ("1.2..3", "1.2.3"),  # dot runs collapse; the valid one stays verbatim
        ("1.2.A", "1.2.a"),  # case-insensitive file systems
        ("9" * 70 + "1", "9" * 70 + "2"),  # too long: differ only beyond the truncation
        ("1.2.3\u202e", "1.2.3"),  # an invisible character is dropped
    ],
)
def test_uids_differing_only_in_sanitized_characters_get_different_files(
    writer: StudyWriter, first: str, second: str
) -> None:
    header = make_dataset()
    one = writer.path_for(header, sop_instance_uid=first)
    two = writer.path_for(header, sop_instance_uid=second)
    assert one.parent == two.parent
    assert one.name.casefold() != two.name.casefold()
    assert_safe_name(one.name)
    assert_safe_name(two.name)


PATIENT_FOLDER = "Müller_Jürgen_PAT001"  # the default layout's first folder for make_dataset()


def tree(root: Path) -> dict[str, bytes | str]:
    """Every entry under ``root`` (not following links): file bytes, link targets, folders as ''."""
    found: dict[str, bytes | str] = {}
    for dirpath, dirnames, filenames in os.walk(root):
        for name in dirnames + filenames:
            path = Path(dirpath, name)
            key = path.relative_to(root).as_posix()
            if path.is_symlink():
                found[key] = "-> " + os.readlink(path)
            else:
                found[key] = path.read_bytes() if path.is_file() else ""
    return found


@pytest.mark.parametrize("kind", ["outside", "dangling", "file"])
def test_a_folder_name_taken_by_a_link_out_of_dest_is_sidestepped(tmp_path: Path, kind: str,
                                                                   caplog: pytest.LogCaptureFixture) -> None:
    """A link out of dest (or a dangling one, or a file) where the layout wants a folder: the instance
    goes to "<name>_2" beside it, inside dest; nothing is written through the link; a warning says so;
    the manifest knows where the file went, so the next run skips it."""
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "keep.txt").write_bytes(b"precious")
    writer = StudyWriter(tmp_path / "dest")
    planted = writer.dest / PATIENT_FOLDER
    if kind == "outside":
        planted.symlink_to(outside, target_is_directory=True)
    elif kind == "dangling":
        planted.symlink_to(tmp_path / "nowhere", target_is_directory=True)
    else:
        planted.write_bytes(b"in the way")
    ds = make_dataset()
    with caplog.at_level(logging.WARNING, logger="pacspull.core.storage"):
        stored = store_dataset(writer, ds)
    assert stored.path.relative_to(writer.dest).parts[0] == PATIENT_FOLDER + "_2"
    assert stored.path.resolve().is_relative_to(writer.dest) and not stored.path.is_symlink()
    assert pydicom.dcmread(stored.path).SOPInstanceUID == UID
    assert tree(outside) == {"keep.txt": b"precious"}
    assert not (tmp_path / "nowhere").exists()
    assert os.path.lexists(planted) and (kind == "file") != planted.is_symlink()  # left as it was
    assert any(PATIENT_FOLDER in record.getMessage() for record in caplog.records)
    assert writer.path_for(ds) == stored.path
    assert reopen(writer).already_have(UID) == stored.path


def test_a_link_to_a_folder_inside_dest_is_followed(tmp_path: Path) -> None:
    writer = StudyWriter(tmp_path / "dest")
    (writer.dest / "elsewhere").mkdir()
    (writer.dest / PATIENT_FOLDER).symlink_to(writer.dest / "elsewhere", target_is_directory=True)
    stored = store_dataset(writer, make_dataset())
    assert stored.path.relative_to(writer.dest).parts[0] == PATIENT_FOLDER
    assert [p.name for p in (writer.dest / "elsewhere").rglob("*.dcm")] == [stored.path.name]


@pytest.mark.parametrize("target", ["outside-file", "dangling", "outside-folder"])
def test_a_link_at_the_final_file_name_is_replaced_not_followed(tmp_path: Path, target: str) -> None:
    """A link planted where the file itself goes: the file replaces the link (as it would an older file);
    what the link pointed to is neither written nor created."""
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "victim").write_bytes(b"precious")
    link_to = {"outside-file": outside / "victim", "dangling": outside / "created?", "outside-folder": outside}[target]
    writer = StudyWriter(tmp_path / "dest")
    ds = make_dataset()
    final = writer.path_for(ds)
    final.parent.mkdir(parents=True)
    final.symlink_to(link_to)
    stored = store_dataset(writer, ds)
    assert stored.path == final and not final.is_symlink() and final.is_file()
    assert pydicom.dcmread(final).SOPInstanceUID == UID
    assert tree(outside) == {"victim": b"precious"}
    # A second instance in the now-known folder, its final name a link too: replaced just the same.
    second = make_dataset("1.2.3.4.5")
    writer.path_for(second).symlink_to(outside / "victim")
    assert not store_dataset(writer, second).path.is_symlink()
    assert tree(outside) == {"victim": b"precious"}


def test_too_many_names_taken_is_a_storage_error_and_writes_nothing(tmp_path: Path) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    writer = StudyWriter(tmp_path / "dest")
    (writer.dest / PATIENT_FOLDER).symlink_to(outside, target_is_directory=True)
    for number in range(2, storage._DIVERT_TRIES + 1):
        (writer.dest / f"{PATIENT_FOLDER}_{number}").symlink_to(outside, target_is_directory=True)
    with pytest.raises(StorageError, match="symbolic links out of the destination"):
        store_dataset(writer, make_dataset())
    assert list(outside.iterdir()) == []


# ------------------------------------------------------------------------------------------
# stale temp files of a killed writer


def aged(path: Path, seconds: float) -> Path:
    """Set ``path``'s modification time ``seconds`` into the past (the link itself, if it is one)."""
    when = os.stat(path, follow_symlinks=False).st_mtime - seconds
    os.utime(path, (when, when), follow_symlinks=False)
    return path


def leftover(path: Path, data: bytes = b"half a file", age: float = 3600) -> Path:
    path.write_bytes(data)
    return aged(path, age)


def test_stale_partial_files_of_our_own_pattern_are_removed_and_nothing_else(tmp_path: Path) -> None:
    """What a SIGKILL mid-write leaves (an old ``.<name>.partial-<8 hex>``) goes when a writer next writes
    into that folder; a fresh one (a live writer's), other names, links and folders stay."""
    outside = tmp_path / "outside"
    outside.mkdir()
    victim = leftover(outside / ".x.dcm.partial-0badc0de", b"precious", 7200)
    writer = StudyWriter(tmp_path / "dest")
    ds = make_dataset()
    folder = writer.path_for(ds).parent
    folder.mkdir(parents=True)
    real_temp_name = storage._temp_path(folder / "1.2.3.dcm").name  # exactly what a killed writer leaves
    stale = [leftover(folder / real_temp_name), leftover(folder / ".9.9.dcm.partial-deadbeef", age=16 * 60)]
    fresh = folder / ".1.2.4.dcm.partial-0123abcd"
    fresh.write_bytes(b"being written right now")
    others = {
        folder / ".1.2.5.dcm.partial-XYZ12345": b"not our hex",
        folder / "1.2.6.dcm.partial-deadbeef": b"not hidden: not ours",
        folder / ".1.2.7.dcm.partial-deadbeef0": b"nine digits",
        folder / "notes.txt": b"the user's",
    }
    for path, data in others.items():
        leftover(path, data)
    link = folder / ".link.dcm.partial-feedface"
    link.symlink_to(victim)
    aged(link, 7200)
    (folder / ".dir.partial-cafebabe").mkdir()
    aged(folder / ".dir.partial-cafebabe", 7200)

    stored = store_dataset(writer, ds)

    assert not any(path.exists() for path in stale)
    assert fresh.read_bytes() == b"being written right now"
    assert all(path.read_bytes() == data for path, data in others.items())
    assert link.is_symlink() and victim.read_bytes() == b"precious"
    assert (folder / ".dir.partial-cafebabe").is_dir()
    assert stored.path.parent == folder and stored.path.is_file()


def test_stale_partial_files_are_looked_for_once_per_folder_and_only_where_we_write(tmp_path: Path) -> None:
    writer = StudyWriter(tmp_path / "dest")
    ds = make_dataset()
    folder = writer.path_for(ds).parent
    elsewhere = writer.dest / "other-folder"
    elsewhere.mkdir()
    untouched = leftover(elsewhere / ".a.dcm.partial-11111111")
    store_dataset(writer, ds)
    later = leftover(folder / ".b.dcm.partial-22222222")
    store_dataset(writer, make_dataset("1.2.3.4.5"))  # same folder, same writer: no second scan
    assert later.exists()
    assert untouched.exists()  # nothing written there
    store_dataset(reopen(writer), make_dataset("1.2.3.4.6"))  # the next run's writer sweeps it
    assert not later.exists() and untouched.exists()


def test_a_failing_sweep_costs_nothing_but_a_log_line(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                       caplog: pytest.LogCaptureFixture) -> None:
    def refuse(path: object) -> object:
        raise PermissionError(errno.EACCES, "Permission denied")

    monkeypatch.setattr(storage.os, "scandir", refuse)
    writer = StudyWriter(tmp_path / "dest")
    with caplog.at_level(logging.WARNING, logger="pacspull.core.storage"):
        assert store_dataset(writer, make_dataset()).path.is_file()
    assert "stale temporary files" in caplog.text


# ------------------------------------------------------------------------------------------
# store(): Part-10 files


@pytest.mark.parametrize(
    "transfer_syntax",
    [ExplicitVRLittleEndian, ImplicitVRLittleEndian, DeflatedExplicitVRLittleEndian, RLELossless],
    ids=["explicit", "implicit", "deflated", "rle"],
)
@pytest.mark.parametrize("source_kind", ["bytes", "path", "stream"])
def test_store_writes_a_part10_file_pydicom_reads_back(
    writer: StudyWriter, tmp_path: Path, transfer_syntax: str, source_kind: str
) -> None:
    ds = make_dataset(pixels=bytes((index * 7) % 256 for index in range(256)))
    wire = wire_bytes(ds, transfer_syntax)
    expected_pixels = ds.PixelData  # encapsulated fragments for RLE
    source: object
    if source_kind == "bytes":
        source = wire
    elif source_kind == "path":
        source = tmp_path / "received.bin"
        source.write_bytes(wire)
    else:
        source = io.BytesIO(wire)

    stored = writer.store(
        header=header_of(ds),
        sop_class_uid=SecondaryCaptureImageStorage,
        sop_instance_uid=UID,
        transfer_syntax=transfer_syntax,
        source=source,
        source_ae_title="ORTHANC",
    )

    raw = stored.path.read_bytes()
    assert raw[:128] == b"\x00" * 128 and raw[128:132] == b"DICM"
    assert raw.endswith(wire)  # the dataset is copied byte for byte, never re-encoded
    assert stored.size_bytes == len(raw)
    assert stored.path == writer.path_for(ds)
    assert (stored.sop_instance_uid, stored.transfer_syntax) == (UID, transfer_syntax)
    read = pydicom.dcmread(stored.path)
    meta = read.file_meta
    assert meta.TransferSyntaxUID == transfer_syntax
    assert meta.MediaStorageSOPInstanceUID == UID
    assert meta.MediaStorageSOPClassUID == SecondaryCaptureImageStorage
    assert meta.ImplementationClassUID == IMPLEMENTATION_CLASS_UID
    assert meta.ImplementationVersionName == IMPLEMENTATION_VERSION_NAME
    assert meta.SourceApplicationEntityTitle == "ORTHANC"
    assert read.SOPInstanceUID == UID
    assert read.PatientName == "Müller^Jürgen"
    assert read.PixelData == expected_pixels
    assert leftovers(writer.dest) == []


def test_store_overwrites_atomically_and_returns_stored_instance(writer: StudyWriter) -> None:
    first = store_dataset(writer, make_dataset(pixels=b"\x01" * 256))
    second = store_dataset(writer, make_dataset(pixels=b"\x02" * 256))
    assert first.path == second.path
    assert pydicom.dcmread(second.path).PixelData == b"\x02" * 256
    with pytest.raises(AttributeError):
        second.size_bytes = 0  # type: ignore[misc]  # frozen


def test_store_names_the_file_from_the_uid_argument(writer: StudyWriter) -> None:
    ds = make_dataset()
    del ds.SOPInstanceUID  # header without UID: the C-STORE request's UID names the file
    stored = writer.store(
        header=ds, sop_class_uid=SecondaryCaptureImageStorage, sop_instance_uid=UID + "\x00",
        transfer_syntax=ExplicitVRLittleEndian, source=wire_bytes(make_dataset(), ExplicitVRLittleEndian),
    )
    assert stored.path.name == f"{UID}.dcm"
    assert stored.sop_instance_uid == UID


@pytest.mark.filterwarnings("ignore:Invalid value for VR UI")  # pydicom, reading the file back
def test_store_copes_with_a_hostile_uid(writer: StudyWriter) -> None:
    hostile = "../1.2.Ü/\\山\x00x"
    stored = writer.store(
        header=make_dataset(), sop_class_uid=SecondaryCaptureImageStorage, sop_instance_uid=hostile,
        transfer_syntax=ExplicitVRLittleEndian, source=wire_bytes(make_dataset(), ExplicitVRLittleEndian),
    )
    assert stored.path.parent == writer.path_for(make_dataset()).parent
    assert_safe_name(stored.path.name)
    assert writer.already_have(hostile) == stored.path
    assert reopen(writer).already_have(hostile) == stored.path
    read = pydicom.dcmread(stored.path)
    assert read.SOPInstanceUID == UID  # the dataset is untouched
    assert "?" in str(read.file_meta[0x00020003].value)  # non-ASCII became "?" in the meta, not a crash


@pytest.mark.parametrize("field", ["sop_instance_uid", "sop_class_uid", "transfer_syntax"])
def test_store_rejects_empty_uids(writer: StudyWriter, field: str) -> None:
    arguments = dict(sop_class_uid=SecondaryCaptureImageStorage, sop_instance_uid=UID,
                     transfer_syntax=ExplicitVRLittleEndian)
    arguments[field] = ""
    with pytest.raises(InvalidInput):
        writer.store(header=make_dataset(), source=b"", **arguments)
    assert list(writer.dest.rglob("*.dcm")) == []


# ------------------------------------------------------------------------------------------
# atomicity and disk errors


def test_failed_rename_leaves_old_file_and_no_temp(writer: StudyWriter, monkeypatch: pytest.MonkeyPatch) -> None:
    old = store_dataset(writer, make_dataset(pixels=b"\x01" * 256))

    def broken_replace(src: object, dst: object) -> None:
        raise OSError(errno.EIO, "Input/output error")

    monkeypatch.setattr(os, "replace", broken_replace)
    with pytest.raises(StorageError) as caught:
        store_dataset(writer, make_dataset(pixels=b"\x02" * 256))
    assert str(old.path.parent) in str(caught.value)
    assert pydicom.dcmread(old.path).PixelData == b"\x01" * 256  # the old file is untouched
    assert leftovers(writer.dest) == []


def test_failed_first_write_leaves_nothing(writer: StudyWriter, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(os, "replace", lambda src, dst: (_ for _ in ()).throw(OSError(errno.EIO, "boom")))
    ds = make_dataset()
    with pytest.raises(StorageError):
        store_dataset(writer, ds)
    assert not writer.path_for(ds).exists()
    assert leftovers(writer.dest) == []
    assert writer.already_have(UID) is None


class _FailingStream(io.RawIOBase):
    """Gives one chunk of data, then fails like a dropped network stream or a bug."""

    def __init__(self, error: BaseException) -> None:
        self.error = error
        self.calls = 0

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: bytearray) -> int:  # type: ignore[override]
        self.calls += 1
        if self.calls > 1:
            raise self.error
        buffer[:4] = b"\x08\x00\x05\x00"
        return 4


@pytest.mark.parametrize(
    ("error", "expected"),
    [(OSError(errno.ECONNRESET, "reset"), StorageError), (ValueError("decoder bug"), ValueError),
     (KeyboardInterrupt(), KeyboardInterrupt)],
)
def test_failure_mid_copy_leaves_no_file_and_no_temp(
    writer: StudyWriter, error: BaseException, expected: type[BaseException]
) -> None:
    ds = make_dataset()
    stream = _FailingStream(error)
    with pytest.raises(expected):
        writer.store(header=ds, sop_class_uid=ds.SOPClassUID, sop_instance_uid=UID,
                     transfer_syntax=ExplicitVRLittleEndian, source=stream)
    assert stream.calls == 2  # it really failed half way
    assert not writer.path_for(ds).exists()
    assert leftovers(writer.dest) == []


def test_disk_full_raises_storage_error_naming_the_folder(
    writer: StudyWriter, monkeypatch: pytest.MonkeyPatch
) -> None:
    real_write = os.write
    calls = []

    def filling_write(fd: int, data: object) -> int:
        calls.append(fd)
        if len(calls) > 1:  # the first write lands, then the disk is full
            raise OSError(errno.ENOSPC, "No space left on device")
        return real_write(fd, data)

    ds = make_dataset()
    folder = writer.path_for(ds).parent
    with monkeypatch.context() as patch:
        patch.setattr(os, "write", filling_write)
        with pytest.raises(StorageError) as caught:
            store_dataset(writer, ds)
    error = caught.value
    assert isinstance(error, PacsPullError)
    assert error.errno == errno.ENOSPC
    assert error.folder == folder
    assert f"no space left on device in {folder}" in str(error)
    assert len(calls) == 2
    assert not writer.path_for(ds).exists()
    assert leftovers(writer.dest) == []
    assert not (writer.dest / MANIFEST_NAME).exists()


@pytest.mark.parametrize(
    ("target", "code", "words"),
    [
        ("open", errno.EACCES, "permission denied writing"),
        ("open", errno.EROFS, "read-only file system: cannot write"),
        ("fsync", errno.ENOSPC, "no space left on device in"),
        ("fsync", errno.EDQUOT, "disk quota exceeded in"),
        ("mkdir", errno.EACCES, "permission denied writing"),
    ],
)
def test_disk_errors_become_plain_storage_errors(
    writer: StudyWriter, monkeypatch: pytest.MonkeyPatch, target: str, code: int, words: str
) -> None:
    # Tests run as root, where chmod does not stop writes: simulate the kernel's answer instead.
    def refuse(*args: object, **kwargs: object) -> None:
        raise OSError(code, os.strerror(code))

    ds = make_dataset()
    folder = writer.path_for(ds).parent
    if target == "open":
        real_open = os.open

        def refuse_temp_files(path: object, *args: object, **kwargs: object) -> int:
            if ".partial-" in str(path):
                refuse()
            return real_open(path, *args, **kwargs)

        monkeypatch.setattr(os, "open", refuse_temp_files)
    elif target == "fsync":
        monkeypatch.setattr(os, "fsync", refuse)
    else:
        monkeypatch.setattr(Path, "mkdir", refuse)
    with pytest.raises(StorageError) as caught:
        store_dataset(writer, ds)
    assert f"{words} {folder}" in str(caught.value)
    assert caught.value.errno == code
    assert leftovers(writer.dest) == []
    assert not writer.path_for(ds).exists()


@pytest.mark.skipif(hasattr(os, "geteuid") and os.geteuid() == 0, reason="root ignores directory permissions")
def test_read_only_folder_for_real(tmp_path: Path) -> None:
    writer = StudyWriter(tmp_path / "dest")
    ds = make_dataset()
    folder = writer.path_for(ds).parent
    folder.mkdir(parents=True)
    folder.chmod(0o555)
    try:
        with pytest.raises(StorageError, match="permission denied writing"):
            store_dataset(writer, ds)
    finally:
        folder.chmod(0o755)
    assert leftovers(writer.dest) == []


def test_destination_that_is_a_file_is_invalid_input(tmp_path: Path) -> None:
    target = tmp_path / "file"
    target.write_text("x")
    with pytest.raises(InvalidInput) as caught:
        StudyWriter(target)
    assert caught.value.field == "destination"
    assert "is a file" in caught.value.rule


def test_unwritable_destination_is_invalid_input(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(os, "access", lambda path, mode: False)  # as root, chmod would not tell
    with pytest.raises(InvalidInput) as caught:
        StudyWriter(tmp_path / "dest")
    assert caught.value.field == "destination"
    assert "not writable" in caught.value.rule


def test_destination_is_created(tmp_path: Path) -> None:
    writer = StudyWriter(tmp_path / "a" / "b")
    assert writer.dest.is_dir()


# ------------------------------------------------------------------------------------------
# manifest


def manifest_records(dest: Path) -> list[dict[str, object]]:
    return [json.loads(line) for line in (dest / MANIFEST_NAME).read_text("ascii").splitlines() if line]


def test_already_have_after_store_and_after_restart(writer: StudyWriter) -> None:
    assert writer.already_have(UID) is None
    stored = store_dataset(writer, make_dataset())
    assert writer.already_have(UID) == stored.path
    assert writer.already_have(UID + "\x00") == stored.path  # UI padding is not part of the UID
    assert manifest_records(writer.dest) == [
        {
            "uid": UID,
            "path": stored.path.relative_to(writer.dest).as_posix(),
            "size": stored.size_bytes,
            "study_uid": "1.2.3.100",
            "series_uid": "1.2.3.100.1",
            "sop_class_uid": SecondaryCaptureImageStorage,
            "transfer_syntax": ExplicitVRLittleEndian,
            "stored_at": manifest_records(writer.dest)[0]["stored_at"],
        }
    ]
    assert reopen(writer).already_have(UID) == stored.path


def test_store_with_later_leaves_only_bookkeeping_for_later(writer: StudyWriter, monkeypatch: pytest.MonkeyPatch) -> None:
    """What a retrieve does: the file is complete under its final name when store returns; its manifest
    line and (Linux) the write-back hint wait for ``later``, which runs them after the C-STORE answer."""
    from pacspull.core import storage

    hints: list[int] = []
    real = storage._start_writeback
    monkeypatch.setattr(storage, "_start_writeback", lambda fd, **kw: (hints.append(fd), real(fd, **kw)))
    queued: list = []
    with writer.deferred_sync():
        stored = store_dataset(writer, make_dataset(), later=queued.append)
        assert stored.path.is_file() and not list(stored.path.parent.glob(".*partial*"))
        assert pydicom.dcmread(stored.path).SOPInstanceUID == UID
        assert writer.already_have(UID) is None and not (writer.dest / storage.MANIFEST_NAME).exists()
        if storage._writeback() is not None:  # (elsewhere there is no hint to wait: a no-op, called at once)
            assert hints == []
        for work in queued:
            work()
        assert writer.already_have(UID) == stored.path
        assert [r["uid"] for r in manifest_records(writer.dest)] == [UID]
        assert len(hints) == (1 if storage._writeback() is not None else 0)
        if hints:  # the descriptor kept for the hint is closed by it
            with pytest.raises(OSError):
                os.fstat(hints[0])


def test_a_retrieve_writes_into_the_temp_file_made_while_the_pacs_prepared_the_next(
        writer: StudyWriter, monkeypatch: pytest.MonkeyPatch) -> None:
    """The temp file the next instance needs is made after this one's answer (``later``): the next store
    in the same folder renames that very file into place. Each folder keeps its own (a PACS may send a
    study's series interleaved), the oldest folder's goes beyond _SPARES_MAX, one too old is not used;
    none is left when the retrieve ends."""
    def spares(folder: Path) -> list[Path]:
        return sorted(folder.glob(".pacspull-next.partial-*"))

    with writer.deferred_sync():
        queued: list = []
        first = store_dataset(writer, make_dataset("1.2.3.1"), later=queued.append)
        folder = first.path.parent
        assert spares(folder) == []
        for work in queued:
            work()
        [spare] = spares(folder)
        inode = spare.stat().st_ino
        queued.clear()
        second = store_dataset(writer, make_dataset("1.2.3.2"), later=queued.append)
        assert second.path.stat().st_ino == inode and spares(folder) == []  # that file, renamed
        assert pydicom.dcmread(second.path).SOPInstanceUID == "1.2.3.2"
        for work in queued:
            work()
        [waiting] = spares(folder)
        # The next instance goes to another series' folder, then one comes back to the first: each folder
        # has its spare, and the first one's is still the one made for it.
        queued.clear()
        other = store_dataset(writer, make_dataset("1.2.3.3", SeriesNumber=4, SeriesInstanceUID="1.2.3.100.2"),
                              later=queued.append)
        for work in queued:
            work()
        assert other.path.parent != folder and spares(folder) == [waiting]
        [kept] = spares(other.path.parent)
        inode = waiting.stat().st_ino
        queued.clear()
        back = store_dataset(writer, make_dataset("1.2.3.5"), later=queued.append)
        assert back.path.parent == folder and back.path.stat().st_ino == inode and spares(folder) == []
        for work in queued:
            work()
        # Only the last _SPARES_MAX folders keep one: the oldest goes first.
        monkeypatch.setattr(StudyWriter, "_SPARES_MAX", 1)
        writer._make_spare(writer.dest)
        assert spares(folder) == spares(other.path.parent) == [] and len(spares(writer.dest)) == 1
        monkeypatch.setattr(StudyWriter, "_SPARES_MAX", 16)
        writer._make_spare(other.path.parent)
        [kept] = spares(other.path.parent)
        # Too old to trust (the stale-file sweep of another writer could be near): not used, removed.
        monkeypatch.setattr(StudyWriter, "_SPARE_SECONDS", 0.0)
        created: list[str] = []
        real_create = storage._create_temp
        monkeypatch.setattr(storage, "_create_temp", lambda final: (created.append(final.name), real_create(final))[1])
        queued.clear()
        last = store_dataset(writer, make_dataset("1.2.3.4", SeriesNumber=4, SeriesInstanceUID="1.2.3.100.2"),
                             later=queued.append)
        assert not kept.exists() and created == [last.path.name]  # a temp file of its own
        for work in queued:
            work()
        assert len(spares(last.path.parent)) == 1
    assert list(writer.dest.rglob("*partial*")) == []  # the block's end removed the last spare
    assert {r["uid"] for r in manifest_records(writer.dest)} == {"1.2.3.1", "1.2.3.2", "1.2.3.3", "1.2.3.4", "1.2.3.5"}


def test_has_study_knows_studies_stored_here(writer: StudyWriter) -> None:
    assert not writer.has_study("1.2.3.100")
    store_dataset(writer, make_dataset())
    assert writer.has_study("1.2.3.100")
    assert not writer.has_study("1.2.3.999")
    assert reopen(writer).has_study("1.2.3.100")


def test_manifest_survives_a_new_process(writer: StudyWriter) -> None:
    stored = store_dataset(writer, make_dataset())
    code = (
        "import sys; from pathlib import Path; from pacspull.core.storage import StudyWriter;"
        "print(StudyWriter(Path(sys.argv[1])).already_have(sys.argv[2]))"
    )
    result = subprocess.run([sys.executable, "-c", code, str(writer.dest), UID],
                            capture_output=True, text=True, check=True)
    assert result.stdout.strip() == str(stored.path)


def test_torn_last_line_is_ignored_and_next_append_starts_fresh(
    writer: StudyWriter, caplog: pytest.LogCaptureFixture
) -> None:
    first = store_dataset(writer, make_dataset("1.2.3.1"))
    second = store_dataset(writer, make_dataset("1.2.3.2"))
    with (writer.dest / MANIFEST_NAME).open("ab") as manifest:
        manifest.write(b'{"uid":"1.2.3.9","path":"Mu')  # the crash hit mid-append

    with caplog.at_level(logging.WARNING, logger="pacspull.core.storage"):
        writer = reopen(writer)
    assert "damaged" in caplog.text
    assert writer.already_have("1.2.3.1") == first.path
    assert writer.already_have("1.2.3.2") == second.path
    assert writer.already_have("1.2.3.9") is None
    third = store_dataset(writer, make_dataset("1.2.3.3"))

    writer = reopen(writer)
    assert writer.already_have("1.2.3.3") == third.path
    lines = (writer.dest / MANIFEST_NAME).read_bytes().split(b"\n")
    assert lines[2] == b'{"uid":"1.2.3.9","path":"Mu'  # the torn line stays on its own line
    assert json.loads(lines[3])["uid"] == "1.2.3.3"


def test_already_have_checks_the_file_is_still_there(writer: StudyWriter) -> None:
    stored = store_dataset(writer, make_dataset())
    with stored.path.open("ab") as handle:
        handle.write(b"\x00")  # size changed: not the file we wrote
    assert writer.already_have(UID) is None
    stored.path.unlink()
    assert writer.already_have(UID) is None
    assert reopen(writer).already_have(UID) is None


def test_already_have_never_follows_a_tampered_manifest_out_of_dest(writer: StudyWriter, tmp_path: Path) -> None:
    secret = tmp_path / "secret.dcm"
    secret.write_bytes(b"x")
    (writer.dest / MANIFEST_NAME).write_text(
        json.dumps({"uid": "1.1", "path": "../secret.dcm", "size": 1}) + "\n"
        + json.dumps({"uid": "1.2", "path": str(secret), "size": 1}) + "\n"
    )
    writer = reopen(writer)
    assert writer.already_have("1.1") is None
    assert writer.already_have("1.2") is None


def test_manifest_failure_does_not_fail_the_store(
    writer: StudyWriter, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    real_open = os.open

    def no_manifest(path: object, *args: object, **kwargs: object) -> int:
        if str(path).endswith(MANIFEST_NAME):
            raise OSError(errno.ENOSPC, "No space left on device")
        return real_open(path, *args, **kwargs)

    monkeypatch.setattr(os, "open", no_manifest)
    with caplog.at_level(logging.WARNING, logger="pacspull.core.storage"):
        stored = store_dataset(writer, make_dataset())
    assert stored.path.is_file()
    assert "could not update manifest" in caplog.text
    assert writer.already_have(UID) == stored.path  # still known for this session


def test_manifest_append_cut_short_is_followed_by_a_fresh_line(
    writer: StudyWriter, monkeypatch: pytest.MonkeyPatch
) -> None:
    real_open, real_write = os.open, os.write
    manifest_fds: set[int] = set()

    def tracking_open(path: object, *args: object, **kwargs: object) -> int:
        fd = real_open(path, *args, **kwargs)
        if str(path).endswith(MANIFEST_NAME):
            manifest_fds.add(fd)
        return fd

    def half_write(fd: int, data: bytes) -> int:
        if fd in manifest_fds:  # half the line reaches the disk, then it is full
            real_write(fd, bytes(data[: len(data) // 2]))
            raise OSError(errno.ENOSPC, "No space left on device")
        return real_write(fd, data)

    store_dataset(writer, make_dataset("1.2.3.1"))
    with monkeypatch.context() as patch:
        patch.setattr(os, "open", tracking_open)
        patch.setattr(os, "write", half_write)
        store_dataset(writer, make_dataset("1.2.3.2"))
    third = store_dataset(writer, make_dataset("1.2.3.3"))

    fresh = reopen(writer)
    assert fresh.already_have("1.2.3.1") is not None
    assert fresh.already_have("1.2.3.3") == third.path
    assert fresh.already_have("1.2.3.2") is None  # its record was torn: a later retrieve fetches it again


def test_two_writers_in_one_process_share_one_consistent_manifest(tmp_path: Path) -> None:
    writers = [StudyWriter(tmp_path / "dest"), StudyWriter(tmp_path / "dest")]
    payload = wire_bytes(make_dataset(), ExplicitVRLittleEndian)
    header = header_of(make_dataset())
    errors: list[BaseException] = []

    def work(writer: StudyWriter, prefix: str) -> None:
        try:
            for index in range(40):
                writer.store(header=header, sop_class_uid=SecondaryCaptureImageStorage,
                             sop_instance_uid=f"{prefix}.{index}", transfer_syntax=ExplicitVRLittleEndian,
                             source=payload)
        except BaseException as exc:  # noqa: BLE001 - reported to the main thread below
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(writers[n % 2], f"1.2.{n}")) for n in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    expected = {f"1.2.{n}.{index}" for n in range(4) for index in range(40)}
    assert {record["uid"] for record in manifest_records(tmp_path / "dest")} == expected
    assert len(manifest_records(tmp_path / "dest")) == 160  # every line whole, none interleaved
    # each writer sees what the other stored
    assert all(writers[0].already_have(uid) and writers[1].already_have(uid) for uid in expected)
    assert leftovers(tmp_path / "dest") == []


# ------------------------------------------------------------------------------------------
# streaming


def test_large_instance_streams_with_flat_memory(tmp_path: Path) -> None:
    pixel_bytes = 200 * 1024 * 1024
    ds = make_dataset()
    del ds.PixelData
    ds.Rows, ds.Columns, ds.NumberOfFrames = 1024, 1024, 100
    ds.BitsAllocated, ds.BitsStored, ds.HighBit = 16, 16, 15
    head = encode(ds, False, True)
    assert head is not None
    source = tmp_path / "received.bin"
    block = os.urandom(1024 * 1024)
    digest = hashlib.sha256()
    with source.open("wb") as handle:
        for part in (head, b"\xe0\x7f\x10\x00OW\x00\x00" + struct.pack("<I", pixel_bytes)):
            handle.write(part)
            digest.update(part)
        for _ in range(pixel_bytes // len(block)):
            handle.write(block)
            digest.update(block)
    writer = StudyWriter(tmp_path / "dest")

    tracemalloc.start()
    try:
        stored = writer.store(header=ds, sop_class_uid=SecondaryCaptureImageStorage, sop_instance_uid=UID,
                              transfer_syntax=ExplicitVRLittleEndian, source=source)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()

    assert peak < 8 * 1024 * 1024, f"peak {peak / 2**20:.1f} MiB while storing {pixel_bytes / 2**20:.0f} MiB"
    assert stored.size_bytes == stored.path.stat().st_size > pixel_bytes
    copied = hashlib.sha256()
    with stored.path.open("rb") as handle:
        handle.seek(stored.size_bytes - source.stat().st_size)
        while chunk := handle.read(1 << 20):
            copied.update(chunk)
    assert copied.hexdigest() == digest.hexdigest()
    read = pydicom.dcmread(stored.path, stop_before_pixels=True)
    assert read.SOPInstanceUID == UID and read.NumberOfFrames == 100


@pytest.mark.parametrize("uid", ["1.2.3", "1.2.34", f"{IMPLEMENTATION_CLASS_UID}.9"])
@pytest.mark.parametrize("source_ae_title", [None, "ORTHANC", "ODD"])
@pytest.mark.parametrize("transfer_syntax", [ExplicitVRLittleEndian, ImplicitVRLittleEndian, RLELossless])
def test_file_meta_is_exactly_what_pydicom_writes(uid: str, source_ae_title: str | None, transfer_syntax: str) -> None:
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = SecondaryCaptureImageStorage
    meta.MediaStorageSOPInstanceUID = uid
    meta.TransferSyntaxUID = transfer_syntax
    meta.ImplementationClassUID = IMPLEMENTATION_CLASS_UID
    meta.ImplementationVersionName = IMPLEMENTATION_VERSION_NAME
    if source_ae_title:
        meta.SourceApplicationEntityTitle = source_ae_title
    buffer = DicomBytesIO()
    buffer.is_little_endian, buffer.is_implicit_VR = True, False
    write_file_meta_info(buffer, meta, enforce_standard=True)
    ours = storage._file_meta(SecondaryCaptureImageStorage, uid, transfer_syntax, source_ae_title)
    assert ours == b"\x00" * 128 + b"DICM" + buffer.getvalue()
