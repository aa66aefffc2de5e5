"""Hostile names under every folder layout, and symbolic links planted in the destination, end to end.

An in-process pynetdicom SCP (fault injection: no real PACS stores such values) serves instances whose
UIDs and names are hostile. They are retrieved with ``Retrieval`` + ``StudyWriter(dest, layout=...)`` and
with ``pacspull get --layout``, under layouts that put every hostile attribute in folder names and in the
file name, alone and next to literal text. Then: every instance is kept (count and UIDs), every path stays
inside the destination, no name is ``.``/``..``/a Windows device/invisible, nothing appears outside.

Limit of the sender, not of PacsPull: pynetdicom refuses to put a SOP Instance UID longer than 64
characters, with non-ASCII characters or with a backslash into a C-STORE request (and hangs or aborts on
some), so the SOP Instance UIDs here stay within those bounds; names and Study/Series UIDs, which travel
in the data set only, are hostile without limit. tests/core/test_storage.py covers the other UIDs.
"""

from __future__ import annotations

import os
import stat
import unicodedata
from collections.abc import Iterator
from pathlib import Path, PureWindowsPath
from typing import Any

import pydicom
import pytest
from pydicom.datadict import dictionary_VR, tag_for_keyword
from pydicom.dataelem import RawDataElement
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.tag import Tag
from pydicom.uid import ExplicitVRLittleEndian
from pynetdicom import AE, evt
from pynetdicom.sop_class import (
    CTImageStorage,
    StudyRootQueryRetrieveInformationModelFind,
    StudyRootQueryRetrieveInformationModelGet,
)

from pacspull.core.cli import main
from pacspull.core.get import Retrieval, RetrieveRequest
from pacspull.core.nodes import Node
from pacspull.core.storage import DEFAULT_LAYOUT, MANIFEST_NAME, StudyWriter

# Hostile values make pydicom warn on every access; the warnings are the point, not noise to read.
pytestmark = pytest.mark.filterwarnings("ignore::UserWarning")

ESCAPE_TARGET = "/tmp/pacspull-hostile-layouts-escaped"
HOSTILE_NAMES = [
    "../", "..", ".", "/etc/x", "C:\\x", "a\x00b", "CON", "NUL", "COM1", "LPT1", "con.txt", "NUL.dcm",
    "LPT1.tar.gz", "trailing. ", "trailing...", "x" * 300, "\u202eexe.dcm", "zero\u200bwidth\u200d", "",
    "../../etc/passwd", "\\\\server\\share\\x", "~", ".hidden", " . ", "COM\u00b9", "AUX  ", "山田^太郎" * 30,
    ESCAPE_TARGET, "..\\..\\x", "\n\r\t", "^^^", "=", "1.2.3" + "9" * 200,
]
"""Every one of these goes into every attribute below (each instance takes them in rotation)."""

HOSTILE_SOP_UIDS = [
    "../", "..", ".", "/etc/x", "C:/x", "1.2\x003", "CON", "NUL", "COM1", "LPT1", "con.txt", "NUL.1",
    "LPT1.dcm", "1.2.3.", "1.2.3..", "1.2.840.abc", "1..2", "01.2", "a b", "x .", "...", "x" * 64, "AUX ",
    "~", ".hidden", "com1.dcm", "../../etc/passwd", "/tmp/pacspull-hostile-layouts-escaped", "..%2f",
    "1.2.826.0.1.3680043.10.543.77", "1" * 64, "9.", "-1", "1.2.3",
]
"""Distinct after DICOM padding is stripped; one per instance."""

NAMED_ATTRIBUTES = [
    "PatientName", "PatientID", "StudyDate", "StudyDescription", "AccessionNumber", "Modality",
    "SeriesDescription", "SeriesNumber", "InstanceNumber", "StudyInstanceUID", "SeriesInstanceUID",
]
HOSTILE_STUDY = "1.2.3.666"
LINKS_STUDY = "1.2.3.777"
CALLED_AET = "HOSTILE"

LAYOUTS = {
    "default": DEFAULT_LAYOUT,
    "flat": "{SOPInstanceUID}.dcm",
    "uid-folders": "{StudyInstanceUID}/{SeriesInstanceUID}/{SOPInstanceUID}.dcm",
    "names-in-file": "{PatientName}_{PatientID}_{SOPInstanceUID}.dcm",
    "literals": "PACS-{PatientID} x/Study {StudyDate}-{AccessionNumber}.d/{Modality}~{SeriesNumber}/"
                "img {InstanceNumber}-{SOPInstanceUID}.dicom",
    "deep": "{PatientID}/{PatientName}/{StudyDate}/{StudyInstanceUID}/{AccessionNumber}/{StudyDescription}/"
            "{Modality}/{SeriesNumber}/{SeriesInstanceUID}/{SeriesDescription}/{InstanceNumber}/"
            "{SOPInstanceUID}/{SeriesDescription}-{SOPInstanceUID}",
}
assert len(HOSTILE_SOP_UIDS) >= len(HOSTILE_NAMES)
assert len({uid.rstrip("\x00 ") for uid in HOSTILE_SOP_UIDS}) == len(HOSTILE_SOP_UIDS)
# Every layout attribute is hostile, and each of them appears in some folder and in some file name.
_KEYWORDS = [*NAMED_ATTRIBUTES, "SOPInstanceUID"]
_FOLDERS = {kw for layout in LAYOUTS.values() for part in layout.split("/")[:-1] for kw in _KEYWORDS
            if "{" + kw + "}" in part}
_FILES = {kw for layout in LAYOUTS.values() for kw in _KEYWORDS if "{" + kw + "}" in layout.split("/")[-1]}
assert _FOLDERS == set(NAMED_ATTRIBUTES) | {"SOPInstanceUID"}, set(NAMED_ATTRIBUTES) - _FOLDERS
assert {"PatientName", "PatientID", "SOPInstanceUID", "InstanceNumber", "SeriesDescription"} <= _FILES

WINDOWS_DEVICES = {"CON", "PRN", "AUX", "NUL", "CONIN$", "CONOUT$"} | {
    f"{stem}{digit}" for stem in ("COM", "LPT") for digit in "0123456789\u00b9\u00b2\u00b3"}


def _element(keyword: str, value: str) -> RawDataElement:
    """The value's UTF-8 bytes as they go on the wire (Explicit VR Little Endian), never validated nor
    converted: an IS of "NUL" or a DA of "../" is what a broken PACS sends."""
    tag = tag_for_keyword(keyword)
    vr = dictionary_VR(tag)
    data = value.encode("utf-8")
    if vr == "IS" and not value.isascii():
        vr = "LO"  # pydicom (the sender) re-encodes IS values as Latin-1; a wrong VR is hostile as well
    if len(data) % 2:
        data += b"\x00" if vr == "UI" else b" "
    return RawDataElement(Tag(tag), vr, len(data), data, 0, False, True)


def _instance(sop_uid: str, values: dict[str, str]) -> Dataset:
    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.SpecificCharacterSet = "ISO_IR 192"
    ds.SOPClassUID = CTImageStorage
    for keyword, value in {"SOPInstanceUID": sop_uid, **values}.items():
        ds[tag_for_keyword(keyword)] = _element(keyword, value)
    ds.Rows = ds.Columns = 2
    ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 8, 8, 7, 0
    ds.PixelData = sop_uid.encode("utf-8")[:4].ljust(4, b"\x00")
    # Encoded as it stands: the raw elements go out byte for byte, never decoded by the sender.
    ds.set_original_encoding(False, True, ["utf_8"])
    return ds


def hostile_instances() -> list[Dataset]:
    """One instance per hostile SOP UID; attribute number k of instance i is HOSTILE_NAMES[(i + k) % n],
    so every hostile value lands in every attribute."""
    n = len(HOSTILE_NAMES)
    return [
        _instance(uid, {kw: HOSTILE_NAMES[(i + k) % n] for k, kw in enumerate(NAMED_ATTRIBUTES)})
        for i, uid in enumerate(HOSTILE_SOP_UIDS)
    ]


LINK_SERIES = ["1.2.3.777.1", "1.2.3.777.2", "1.2.3.777.3"]
LINK_SOP_UIDS = [f"{series}.{n}" for series in LINK_SERIES for n in (1, 2)]


def link_instances() -> list[Dataset]:
    """Plain instances for the symbolic link test: three series of two."""
    return [_instance(uid, {"StudyInstanceUID": LINKS_STUDY, "SeriesInstanceUID": uid.rsplit(".", 1)[0],
                            "PatientName": "Links^Test", "PatientID": "LINKS"}) for uid in LINK_SOP_UIDS]


class HostileScp:
    """C-FIND (one study row, for the CLI's planning) and C-GET (the instances of the study asked for)."""

    def __init__(self) -> None:
        self.associations = 0
        ae = AE(ae_title=CALLED_AET)
        ae.add_supported_context(StudyRootQueryRetrieveInformationModelFind)
        ae.add_supported_context(StudyRootQueryRetrieveInformationModelGet)
        # Explicit VR Little Endian only: the syntax the raw elements are encoded in.
        ae.add_supported_context(CTImageStorage, ExplicitVRLittleEndian, scu_role=True, scp_role=True)
        self.server = ae.start_server(("127.0.0.1", 0), block=False, evt_handlers=[
            (evt.EVT_C_FIND, self.on_find), (evt.EVT_C_GET, self.on_get),
            (evt.EVT_REQUESTED, self.on_requested)])
        self.port = self.server.server_address[1]

    def on_requested(self, event: Any) -> None:
        self.associations += 1

    @staticmethod
    def instances(study_uid: str) -> list[Dataset]:
        return link_instances() if study_uid == LINKS_STUDY else hostile_instances()

    def on_find(self, event: Any) -> Iterator[tuple[int, Dataset | None]]:
        study_uid = str(event.identifier.get("StudyInstanceUID", ""))
        row = Dataset()
        row.QueryRetrieveLevel = "STUDY"
        row.StudyInstanceUID = study_uid
        row.SOPClassesInStudy = CTImageStorage
        row.NumberOfStudyRelatedInstances = len(self.instances(study_uid))
        yield 0xFF00, row
        yield 0x0000, None

    def on_get(self, event: Any) -> Iterator[Any]:
        instances = self.instances(str(event.identifier.get("StudyInstanceUID", "")))
        yield len(instances)
        for ds in instances:
            yield 0xFF00, ds


@pytest.fixture(scope="module")
def hostile_scp() -> Iterator[HostileScp]:
    scp = HostileScp()
    try:
        yield scp
    finally:
        scp.server.shutdown()


def node(scp: HostileScp) -> Node:
    return Node(name="hostile", ae_title=CALLED_AET, host="127.0.0.1", port=scp.port, dimse_timeout=10,
                acse_timeout=5)


def snapshot(root: Path, skip: Path | None = None) -> dict[str, tuple[str, int | str]]:
    """Every entry under ``root`` (links not followed, ``skip``'s subtree left out): kind and size/target."""
    found: dict[str, tuple[str, int | str]] = {}
    for dirpath, dirnames, filenames in os.walk(root):
        if skip is not None:
            dirnames[:] = [d for d in dirnames if Path(dirpath, d) != skip]
        for name in dirnames + filenames:
            path = Path(dirpath, name)
            key = path.relative_to(root).as_posix()
            if path.is_symlink():
                found[key] = ("link", os.readlink(path))
            elif path.is_dir():
                found[key] = ("dir", 0)
            else:
                found[key] = ("file", path.stat().st_size)
    return found


def written_by_a_retrieve(root: Path) -> list[str]:
    """Files at or under ``root`` (links not followed) that a retrieve could have written: a DICOM file
    (``DICM`` at offset 128), a temp file, or a manifest. Entries vanishing meanwhile are someone else's."""
    if root.is_symlink():
        return []
    files = [root] if root.is_file() else [
        Path(dirpath, name) for dirpath, _dirnames, filenames in os.walk(root) for name in filenames]
    found = []
    for path in files:
        try:
            if not stat.S_ISREG(path.lstat().st_mode):
                continue  # (a FIFO would block the open; a retrieve writes regular files only)
            with path.open("rb") as handle:
                handle.seek(128)
                dicom = handle.read(4) == b"DICM"
        except OSError:
            continue
        if dicom or ".partial-" in path.name or path.name == MANIFEST_NAME:
            found.append(str(path))
    return found


class Outside:
    """What exists outside the destination before the retrieve, to compare with after it.

    Above ``tmp_path``'s parent, other programs on the machine may create and remove entries at any time;
    there, only new entries of ``/tmp`` holding something a retrieve writes count as an escape."""

    def __init__(self, tmp_path: Path, dest: Path) -> None:
        self.tmp_path, self.dest = tmp_path, dest
        self.before = self.now()
        self.tmp_before = set(os.listdir("/tmp"))

    def now(self) -> tuple[Any, ...]:
        return (snapshot(self.tmp_path, skip=self.dest), sorted(os.listdir(self.tmp_path.parent)),
                os.path.lexists("/etc/x"), os.path.lexists(ESCAPE_TARGET))

    def escaped_to_tmp(self) -> list[str]:
        new = set(os.listdir("/tmp")) - self.tmp_before
        return [found for name in sorted(new) for found in written_by_a_retrieve(Path("/tmp", name))]

    def unchanged(self) -> bool:
        return self.now() == self.before and not self.escaped_to_tmp()


def uid_of(path: Path) -> str:
    return str(pydicom.dcmread(path, stop_before_pixels=True)[0x00080018].value).rstrip("\x00 ")


def assert_all_kept_and_inside(dest: Path, sent: list[str]) -> list[Path]:
    """Every sent instance is a file inside ``dest`` (realpath) holding its UID; every name is safe."""
    real_dest = os.path.realpath(dest)
    files = [p for p in dest.rglob("*") if p.is_file() and p.name != MANIFEST_NAME]
    assert not [p for p in files if ".partial-" in p.name]
    assert len(files) == len(sent)
    assert sorted(uid_of(p) for p in files) == sorted(uid.rstrip("\x00 ") for uid in sent)
    for path in files:
        assert os.path.commonpath([real_dest, os.path.realpath(path)]) == real_dest, path
        for part in path.relative_to(dest).parts:
            assert part not in (".", "..") and not part.startswith("."), part
            assert not part.endswith((".", " ")), part
            assert part.partition(".")[0].rstrip(" ").upper() not in WINDOWS_DEVICES, part
            assert not PureWindowsPath(part).is_reserved(), part
            assert not set(part) & set('/\\<>:"|?*'), part
            assert not [c for c in part if unicodedata.category(c) in ("Cc", "Cf", "Cs", "Zl", "Zp")], repr(part)
            assert 0 < len(part.encode("utf-8")) <= 255, part
    return files


@pytest.mark.parametrize("via", ["api", "cli"])
@pytest.mark.parametrize("layout", list(LAYOUTS.values()), ids=list(LAYOUTS))
def test_hostile_names_stay_inside_under_every_layout(hostile_scp: HostileScp, tmp_path: Path, layout: str,
                                                      via: str, capsys: pytest.CaptureFixture[str]) -> None:
    dest = tmp_path / "dest"
    outside = Outside(tmp_path, dest)
    if via == "api":
        summary = Retrieval(node(hostile_scp), [RetrieveRequest(HOSTILE_STUDY, sop_classes=(CTImageStorage,))],
                            StudyWriter(dest, layout=layout)).run()
        assert summary.ok, summary.to_json()
        assert summary.total("completed") == len(HOSTILE_SOP_UIDS), str(summary.to_json())
        assert summary.total("failed") == summary.total("skipped") == 0
    else:
        code = main(["get", "--host", "127.0.0.1", "--port", str(hostile_scp.port), "--aet", CALLED_AET,
                     "--study-uid", HOSTILE_STUDY, "--out", str(dest), "--layout", layout, "--json"])
        assert code == 0, capsys.readouterr()
    assert_all_kept_and_inside(dest, HOSTILE_SOP_UIDS)
    assert outside.unchanged()


@pytest.mark.parametrize(
    ("layout", "rule"),
    [
        ("../{SOPInstanceUID}.dcm", "must not contain . or .. segments"),
        ("a/../../{SOPInstanceUID}.dcm", "must not contain . or .. segments"),
        ("/etc/{SOPInstanceUID}.dcm", "must be a relative path"),
        ("C:/x/{SOPInstanceUID}.dcm", "must be a relative path"),
        ("~/{SOPInstanceUID}.dcm", "must be a relative path"),
        ("..\\{SOPInstanceUID}.dcm", "must separate folders with /"),
        ("{PatientID}/{StudyDate}.dcm", "must contain {SOPInstanceUID} exactly once"),
        ("x/{SOPInstanceUID}/", "must not contain empty folder names"),
        (".hidden/{SOPInstanceUID}.dcm", "must not start with a dot"),
        ("x\u202e/{SOPInstanceUID}.dcm", "character not allowed"),
    ],
)
def test_cli_refuses_hostile_layouts_before_touching_anything(hostile_scp: HostileScp, tmp_path: Path,
                                                              layout: str, rule: str,
                                                              capsys: pytest.CaptureFixture[str]) -> None:
    dest = tmp_path / "dest"
    outside = Outside(tmp_path, dest)
    associations = hostile_scp.associations
    code = main(["get", "--host", "127.0.0.1", "--port", str(hostile_scp.port), "--aet", CALLED_AET,
                 "--study-uid", HOSTILE_STUDY, "--out", str(dest), "--layout", layout])
    err = capsys.readouterr().err
    assert code == 2
    assert err.startswith("pacspull get: layout: ") and rule in err, err
    assert len(err.strip().splitlines()) == 1 and "Traceback" not in err
    assert not dest.exists() and outside.unchanged()
    assert hostile_scp.associations == associations  # refused before any network traffic


def test_links_planted_in_the_destination_are_never_written_through(hostile_scp: HostileScp,
                                                                   tmp_path: Path) -> None:
    """Before the retrieve, links in dest where the layout will create folders (one to a folder outside,
    one dangling) and where it will create final files (one to a file outside, one dangling). Nothing is
    written outside, the outside targets are unchanged, and every instance is kept inside dest."""
    layout = "{StudyInstanceUID}/{SeriesInstanceUID}/{SOPInstanceUID}.dcm"
    dest = tmp_path / "dest"
    study = dest / LINKS_STUDY
    study.mkdir(parents=True)
    outside_dir = tmp_path / "outside"
    outside_dir.mkdir()
    (outside_dir / f"{LINK_SOP_UIDS[0]}.dcm").write_bytes(b"not yours")  # what a followed link would hit
    victim = tmp_path / "victim.dcm"
    victim.write_bytes(b"precious")
    dangling_dir, dangling_file = tmp_path / "no-such-folder", tmp_path / "no-such-file.dcm"
    # Folders the layout will create: series 1 a link out of dest, series 2 a dangling link.
    (study / LINK_SERIES[0]).symlink_to(outside_dir, target_is_directory=True)
    (study / LINK_SERIES[1]).symlink_to(dangling_dir, target_is_directory=True)
    # Final files the layout will create (series 3): a link to a file outside, a dangling link.
    (study / LINK_SERIES[2]).mkdir()
    (study / LINK_SERIES[2] / f"{LINK_SOP_UIDS[4]}.dcm").symlink_to(victim)
    (study / LINK_SERIES[2] / f"{LINK_SOP_UIDS[5]}.dcm").symlink_to(dangling_file)
    outside = Outside(tmp_path, dest)

    summary = Retrieval(node(hostile_scp), [RetrieveRequest(LINKS_STUDY, sop_classes=(CTImageStorage,))],
                        StudyWriter(dest, layout=layout)).run()

    assert summary.ok and summary.total("completed") == len(LINK_SOP_UIDS), summary.to_json()
    assert outside.unchanged() and victim.read_bytes() == b"precious"
    assert (outside_dir / f"{LINK_SOP_UIDS[0]}.dcm").read_bytes() == b"not yours"
    assert not dangling_dir.exists() and not dangling_file.exists()
    files = [p for p in dest.rglob("*.dcm") if p.is_file() and not p.is_symlink()]
    real_dest = os.path.realpath(dest)
    assert all(os.path.commonpath([real_dest, os.path.realpath(p)]) == real_dest for p in files)
    assert sorted(uid_of(p) for p in files) == sorted(LINK_SOP_UIDS)
    # Where they went: series 1 and 2 beside their links (left as they were), series 3 in place, its two
    # final-name links replaced by the files themselves.
    for index in (0, 1):
        assert (study / LINK_SERIES[index]).is_symlink()
        assert sorted(p.name for p in (study / f"{LINK_SERIES[index]}_2").iterdir()) == sorted(
            f"{uid}.dcm" for uid in LINK_SOP_UIDS[2 * index:2 * index + 2])
    for uid in LINK_SOP_UIDS[4:]:
        path = study / LINK_SERIES[2] / f"{uid}.dcm"
        assert path.is_file() and not path.is_symlink() and uid_of(path) == uid
    # A repeated retrieve finds everything where it was put and fetches nothing again.
    again = Retrieval(node(hostile_scp), [RetrieveRequest(LINKS_STUDY, sop_classes=(CTImageStorage,))],
                      StudyWriter(dest, layout=layout)).run()
    assert again.ok and again.total("completed") == 0 and again.total("skipped") == len(LINK_SOP_UIDS)
