"""Where each received instance goes on disk, and how it gets there.

A ``StudyWriter`` owns one destination folder. For every instance a C-GET delivers it

* names the file from a *layout* template of DICOM keywords, each value made safe by
  ``safe_component`` (nothing from the network becomes a path any other way);
* writes a Part-10 file — preamble, ``DICM``, a File Meta group built here, then the dataset bytes
  exactly as received (never decoded, streamed in chunks so a 2 GB instance costs no memory);
* writes it atomically: a hidden temp file in the same folder, ``os.replace`` onto the final name, the
  temp file removed on any failure; fsynced before the rename, or, inside ``deferred_sync()`` (what a
  retrieve uses), flushed together with the others by ``sync()`` (see ``StudyWriter``);
* records it in an append-only manifest (``<dest>/.pacspull-manifest.jsonl``) so a repeated retrieve
  can skip what is already on disk;
* never writes outside ``dest``: a symbolic link already in the destination is never written through
  when it leads out of it (see ``StudyWriter`` for where such an instance goes instead);
* removes the stale temp files a killed PacsPull left in the folders it writes into (see
  ``StudyWriter``).

Disk failures (full, permission denied, read-only) raise ``StorageError``; the retrieval engine
answers the C-STORE sub-operation with 0xA700 (out of resources) on it.
"""

from __future__ import annotations

import contextlib
import errno
import functools
import hashlib
import json
import logging
import os
import re
import secrets
import stat
import string
import struct
import sys
import threading
import time
import unicodedata
import weakref
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path, PurePosixPath
from collections.abc import Iterator
from typing import BinaryIO, Callable, Final, TypeVar, Union

from pydicom import Dataset
from pydicom.datadict import dictionary_VR, tag_for_keyword
from pydicom.dataset import FileMetaDataset
from pydicom.filebase import DicomBytesIO
from pydicom.filewriter import write_dataset
from pydicom.multival import MultiValue
from pydicom.uid import UID

from pacspull.core import __version__
from pacspull.core.errors import InvalidInput, PacsPullError
from pacspull.core.privacy import identifiers_logged

__all__ = [
    "DEFAULT_LAYOUT",
    "IMPLEMENTATION_CLASS_UID",
    "IMPLEMENTATION_VERSION_NAME",
    "MANIFEST_NAME",
    "StorageError",
    "StoredInstance",
    "StudyWriter",
    "example_path",
    "safe_component",
    "validate_layout",
]

logger = logging.getLogger(__name__)

# A UUID-derived UID (PS3.5 B.2: the 2.25 arc needs no registration) identifying PacsPull as the
# implementation that wrote a file. Example UIDs shown in the GUI hang below it, so they never
# collide with real ones.
IMPLEMENTATION_CLASS_UID: Final = UID("2.25.78817973785810553161819116523804454001")
# SH: at most 16 characters.
IMPLEMENTATION_VERSION_NAME: Final = f"PACSPULL_{__version__}"[:16]

DEFAULT_LAYOUT: Final = (
    "{PatientName}_{PatientID}/{StudyDate}_{StudyDescription}_{AccessionNumber}/"
    "{SeriesNumber}_{Modality}_{SeriesDescription}/{SOPInstanceUID}.dcm"
)
MANIFEST_NAME: Final = ".pacspull-manifest.jsonl"

# Most file systems (ext4, NTFS, APFS) limit one name to 255 bytes (or UTF-16 units, which a
# 255-byte UTF-8 name never exceeds).
COMPONENT_MAX_BYTES: Final = 255
# One attribute's share of a folder or file name; 64 is the longest LO/UI value anyway.
VALUE_MAX_LENGTH: Final = 64
# Read/write in 1 MiB pieces: large enough for throughput, small enough that memory stays flat.
_CHUNK: Final = 1 << 20
_PREAMBLE: Final = b"\x00" * 128 + b"DICM"

_FORBIDDEN_CHARS: Final = frozenset('/\\<>:"|?*')
# Unicode categories replaced by "_": controls (incl. NUL), lone surrogates (cannot be encoded in a
# file name), line/paragraph separators. Format characters (Cf: bidi overrides, zero-width joiners)
# are dropped instead, so a name cannot be displayed as something else (RTLO spoofing).
_REPLACED_CATEGORIES: Final = frozenset({"Cc", "Cs", "Zl", "Zp"})
_UNSAFE_LITERAL_CATEGORIES: Final = _REPLACED_CATEGORIES | {"Cf"}
_WINDOWS_RESERVED: Final = frozenset(
    {"CON", "PRN", "AUX", "NUL", "CONIN$", "CONOUT$"}
    | {f"{stem}{suffix}" for stem in ("COM", "LPT") for suffix in "0123456789\u00b9\u00b2\u00b3"}
)
_VALID_UID: Final = re.compile(r"[0-9]+(?:\.[0-9]+)*")
# VRs that cannot name anything: sequences and binary blobs.
_UNNAMEABLE_VRS: Final = frozenset({"SQ", "OB", "OD", "OF", "OL", "OV", "OW", "UN", "OB or OW"})
_UID_KEYWORD: Final = "SOPInstanceUID"
_LAYOUT_MAX_CHARS: Final = 1024
# The temp file of _temp_path: "." + (part of) the final name + ".partial-" + 8 hex digits.
_PARTIAL_NAME: Final = re.compile(r"\..*\.partial-[0-9a-f]{8}", re.DOTALL)
# A temp file untouched this long belongs to no live writer (one writes each file in one go, so its
# modification time is at most seconds old while it is written): it is a killed writer's leftover.
STALE_PARTIAL_SECONDS: Final = 15 * 60
# The name a writer's spare temp file is made for (``StudyWriter._make_spare``): ".pacspull-next.partial-…".
SPARE_NAME: Final = "pacspull-next"
# A folder the layout names whose name is taken by something unusable (a symbolic link out of dest, a
# dangling one, a file) is replaced by "<name>_2", "<name>_3", ... up to this many tries.
_DIVERT_TRIES: Final = 20
# Literal text per component is capped so the component always fits 255 bytes once the UID
# (at most 24 * 4 + 18 bytes when hashed) is added and the other values shrink to nothing.
_LITERAL_MAX_BYTES: Final = 100
_MISSING_VALUE: Final = {
    "PatientName": "NoName",
    "PatientID": "NoID",
    "StudyDate": "NoDate",
    "SeriesDate": "NoDate",
    "AcquisitionDate": "NoDate",
    "ContentDate": "NoDate",
    "AccessionNumber": "NoAccession",
    "Modality": "NoModality",
    "SeriesNumber": "NoNumber",
    "InstanceNumber": "NoNumber",
    "AcquisitionNumber": "NoNumber",
}

# Values for example_path(): a made-up instance, its UIDs under our own root.
_EXAMPLE_VALUES: Final = {
    "PatientName": "Doe^Jane",
    "PatientID": "PAT001",
    "PatientBirthDate": "19700101",
    "PatientSex": "F",
    "StudyDate": "20240115",
    "StudyTime": "093000",
    "StudyDescription": "CT Chest",
    "StudyID": "1",
    "AccessionNumber": "ACC12345",
    "ReferringPhysicianName": "Smith^John",
    "InstitutionName": "General Hospital",
    "StationName": "CT01",
    "Manufacturer": "ACME",
    "BodyPartExamined": "CHEST",
    "StudyInstanceUID": f"{IMPLEMENTATION_CLASS_UID}.9.1",
    "SeriesInstanceUID": f"{IMPLEMENTATION_CLASS_UID}.9.1.3",
    "SeriesDate": "20240115",
    "SeriesTime": "093512",
    "SeriesNumber": "3",
    "SeriesDescription": "Axial 1.25mm",
    "Modality": "CT",
    "AcquisitionNumber": "1",
    "InstanceNumber": "42",
    "SOPClassUID": "1.2.840.10008.5.1.4.1.1.2",
    "SOPInstanceUID": f"{IMPLEMENTATION_CLASS_UID}.9.1.3.42",
}


class StorageError(PacsPullError):
    """Writing an instance to disk failed (full, permission denied, read-only...); names the folder."""

    def __init__(
        self, message: str, *, folder: Path | None = None, errno_code: int | None = None, hint: str = ""
    ) -> None:
        super().__init__(message, hint=hint)
        self.folder = folder
        self.errno = errno_code


@dataclass(frozen=True, slots=True)
class StoredInstance:
    """One instance written to disk; ``size_bytes`` is the size of the whole Part-10 file."""

    path: Path
    sop_instance_uid: str
    sop_class_uid: str
    transfer_syntax: str
    size_bytes: int


Source = Union[bytes, bytearray, memoryview, Path, BinaryIO]
Later = Callable[[Callable[[], None]], None]
"""Takes work that may wait (a no-argument callable) and runs it soon, on the same thread."""
_T = TypeVar("_T")


# --------------------------------------------------------------------------------------------
# Path components


def safe_component(value: str, *, max_length: int = VALUE_MAX_LENGTH, fallback: str = "_") -> str:
    """Return ``value`` made into one safe file or folder name (never empty, never a path).

    Path separators, NUL/control characters, characters Windows forbids (``<>:"|?*``) and
    whitespace become ``_``; invisible format characters are dropped; runs of ``_`` and of ``.``
    collapse to one; leading dots (hidden files, ``.``/``..``) and trailing dots/spaces (Windows)
    go; Windows device names (``CON``, ``com1.txt``...) get a ``_`` prefix. The result is NFC,
    at most ``max_length`` characters and 255 UTF-8 bytes; ``fallback`` if nothing is left.
    Letters of any script are kept.
    """
    if max_length < 1:
        raise ValueError("max_length must be at least 1")
    # Edge whitespace is DICOM padding, dots/spaces at the ends are what Windows drops, and edge
    # separators would only become "_" noise ("../../etc/passwd" reads better as "etc_passwd").
    value = re.sub(r"^[\s./\\]+|[\s./\\]+$", "", unicodedata.normalize("NFC", value))
    pieces: list[str] = []
    for char in value:
        category = unicodedata.category(char)
        if category == "Cf":
            continue
        if char in _FORBIDDEN_CHARS or category in _REPLACED_CATEGORIES or char.isspace():
            pieces.append("_")
        else:
            pieces.append(char)
    text = re.sub(r"_{2,}", "_", re.sub(r"\.{2,}", ".", "".join(pieces)))
    # Dropping format characters can expose a leading dot ("\u202e.x"), so strip again.
    text = _truncate(text.lstrip("."), max_length).rstrip(". ")
    if not text:
        if fallback == "_" or safe_component(fallback, max_length=max_length) == fallback:
            return fallback
        raise ValueError(f"fallback {fallback!r} is not itself a safe component")
    if _is_windows_reserved(text):
        # Truncating again may cut the device name itself, which is just as good.
        text = _truncate("_" + text, max_length).rstrip(". ")
    return text


def _truncate(text: str, max_chars: int) -> str:
    """Cut ``text`` to ``max_chars`` characters and ``COMPONENT_MAX_BYTES`` UTF-8 bytes."""
    text = text[:max_chars]
    encoded = text.encode("utf-8")
    if len(encoded) <= COMPONENT_MAX_BYTES:
        return text
    # "ignore" drops a multi-byte character cut in half rather than leaving an invalid sequence.
    return encoded[:COMPONENT_MAX_BYTES].decode("utf-8", "ignore")


def _is_windows_reserved(name: str) -> bool:
    """Whether Windows would open a device instead of a file for ``name`` (extension irrelevant)."""
    return name.partition(".")[0].rstrip(" ").upper() in _WINDOWS_RESERVED


def _uid_text(uid: str) -> str:
    """Return the file-name text for a SOP Instance UID, distinct for distinct UIDs.

    A well-formed UID (digits and dots, at most 64 characters) is used as is. Anything else is
    sanitized and suffixed with ``_h`` + 16 hex digits of its SHA-256, so two UIDs that sanitize
    alike (``1.2/3`` and ``1.2\\3``) or differ only in case (case-insensitive disks) still get
    different files. The ``h`` keeps a hashed text from ever ending like a well-formed UID.
    """
    if len(uid) <= 64 and _VALID_UID.fullmatch(uid):
        return uid
    digest = hashlib.sha256(uid.encode("utf-8", "surrogatepass")).hexdigest()[:16]
    return f"{safe_component(uid, max_length=24)}_h{digest}"


def _clean_uid(uid: str) -> str:
    """Drop the NUL/space padding DICOM allows after a UI value."""
    return str(uid).rstrip("\x00 ")


# --------------------------------------------------------------------------------------------
# Layout templates


@dataclass(frozen=True, slots=True)
class _Field:
    keyword: str


_Component = tuple[Union[str, _Field], ...]


def validate_layout(template: str) -> None:
    """Raise ``InvalidInput("layout", rule)`` unless ``template`` is a usable layout."""
    _parse_layout(template)


@functools.lru_cache(maxsize=32)
def _parse_layout(template: str) -> tuple[_Component, ...]:
    """Parse a layout into components of literal text and fields; raise InvalidInput if unusable."""

    def bad(rule: str) -> InvalidInput:
        return InvalidInput("layout", rule, value=template)

    if not isinstance(template, str) or not template.strip():
        raise bad("must not be empty")
    if len(template) > _LAYOUT_MAX_CHARS:
        raise bad(f"must be at most {_LAYOUT_MAX_CHARS} characters")
    if "\\" in template:
        raise bad("must separate folders with /, not \\")
    if template.startswith(("/", "~")) or re.match(r"[A-Za-z]:", template):
        raise bad("must be a relative path (no leading /, drive letter or ~)")
    texts = template.split("/")
    if any(text in (".", "..") for text in texts):
        raise bad("must not contain . or .. segments")
    if any(not text for text in texts):
        raise bad("must not contain empty folder names (// or a trailing /)")
    components = tuple(_parse_component(text, bad) for text in texts)
    for component in components[:-1]:
        if sum(1 for part in component if part == _Field(_UID_KEYWORD)) > 1:
            raise bad("a folder name may contain {SOPInstanceUID} at most once")
    _check_file_name(components[-1], bad)
    return components


def _parse_component(text: str, bad: Callable[[str], InvalidInput]) -> _Component:
    """Parse one folder or file name of a layout into literal text and fields."""
    try:
        parsed = list(string.Formatter().parse(text))
    except ValueError:
        raise bad(f"{text!r} has an unmatched {{ or }}") from None
    parts: list[str | _Field] = []
    for literal, keyword, format_spec, conversion in parsed:
        if literal:
            if any(
                char in _FORBIDDEN_CHARS or unicodedata.category(char) in _UNSAFE_LITERAL_CATEGORIES
                for char in literal
            ):
                raise bad(f"{literal!r} contains a character not allowed in file names")
            parts.append(literal)
        if keyword is None:
            continue
        if not keyword:
            raise bad("each {} needs a DICOM keyword, e.g. {PatientID}")
        if format_spec or conversion:
            raise bad(f"{{{keyword}}}: format specs and conversions are not supported")
        if tag_for_keyword(keyword) is None:
            raise bad(f"unknown DICOM keyword {{{keyword}}}")
        if dictionary_VR(tag_for_keyword(keyword)) in _UNNAMEABLE_VRS:
            raise bad(f"{{{keyword}}} is a sequence or binary attribute and cannot name a file")
        parts.append(_Field(keyword))
    if isinstance(parts[0], str) and parts[0].startswith((".", " ")):
        raise bad(f"{text!r} must not start with a dot or space (hidden files)")
    if isinstance(parts[-1], str) and parts[-1].endswith((".", " ")):
        raise bad(f"{text!r} must not end with a dot or space (Windows drops them)")
    literal_bytes = sum(len(part.encode("utf-8")) for part in parts if isinstance(part, str))
    if literal_bytes > _LITERAL_MAX_BYTES:
        raise bad(f"fixed text in {text!r} must be at most {_LITERAL_MAX_BYTES} bytes")
    return tuple(parts)


def _check_file_name(component: _Component, bad: Callable[[str], InvalidInput]) -> None:
    """Enforce the rules that make the file name unique per SOP Instance UID."""
    uid_field = _Field(_UID_KEYWORD)
    positions = [index for index, part in enumerate(component) if part == uid_field]
    if len(positions) != 1:
        raise bad(
            "the file name (last part) must contain {SOPInstanceUID} exactly once, "
            "so every instance gets its own file"
        )
    index = positions[0]
    if any(isinstance(part, _Field) for part in component[index + 1 :]):
        raise bad("only fixed text (such as .dcm) may follow {SOPInstanceUID} in the file name")
    # The UID must be separable from what precedes it, or "{InstanceNumber}{SOPInstanceUID}" would
    # give "1" + "12.3" and "11" + "2.3" the same name.
    if index > 0:
        before = component[index - 1]
        if not (isinstance(before, str) and before.endswith(("_", "-"))):
            raise bad("{SOPInstanceUID} must start the file name or follow a literal _ or -")


def example_path(template: str = DEFAULT_LAYOUT) -> str:
    """Return the relative path (with /) ``template`` gives a made-up CT instance, for previews."""
    components = _parse_layout(template)
    header = Dataset()
    for keyword, value in _EXAMPLE_VALUES.items():
        setattr(header, keyword, value)
    return "/".join(_render(components, header, _EXAMPLE_VALUES["SOPInstanceUID"]))


def _render(components: tuple[_Component, ...], header: Dataset, uid: str) -> list[str]:
    """Fill each component of a parsed layout from ``header``; ``uid`` names the instance."""
    return [_render_component(component, header, uid) for component in components]


def _render_component(component: _Component, header: Dataset, uid: str) -> str:
    """Fill one component, then make the whole safe: tidy, fit 255 bytes, dodge device names."""
    texts: list[str] = []
    shrinkable: list[int] = []
    for part in component:
        if isinstance(part, str):
            texts.append(part)
        elif part.keyword == _UID_KEYWORD:
            texts.append(_uid_text(uid))
        else:
            shrinkable.append(len(texts))
            texts.append(_field_text(header, part.keyword))
    return _assemble(tuple(texts), tuple(shrinkable))


@functools.lru_cache(maxsize=1024)
def _assemble(parts: tuple[str, ...], shrinkable: tuple[int, ...]) -> str:
    """Join the texts of one component into a safe name (cached: folders repeat per instance)."""
    texts = list(parts)
    while True:
        name = _tidy("".join(texts))
        if _is_windows_reserved(name):
            # Concatenation can build a device name ("{A}{B}" with "CO" and "N"; "NUL.anything").
            name = "_" + name
        excess = len(name.encode("utf-8")) - COMPONENT_MAX_BYTES
        if excess <= 0:
            return name or "_"
        # Shorten the longest attribute value; literals and the UID stay whole, so uniqueness
        # survives. Never out of values to shorten: _parse_layout caps literals so that literals,
        # the UID and a "_" prefix fit on their own.
        longest = max(shrinkable, key=lambda index: len(texts[index]))
        texts[longest] = texts[longest][: max(0, len(texts[longest]) - max(1, excess // 4))]


def _tidy(name: str) -> str:
    """Collapse doubled underscores left by empty values; drop _ . and space at either end."""
    return re.sub(r"_{2,}", "_", name).strip("_. ")


def _field_text(header: Dataset, keyword: str) -> str:
    """Return the safe text for one attribute of ``header``, or its placeholder if missing."""
    missing = _MISSING_VALUE.get(keyword, "NoDescription" if keyword.endswith("Description") else "")
    try:
        value = header.get(keyword)
        if value is None or isinstance(value, (bytes, bytearray)):
            return missing
        if isinstance(value, (list, tuple, MultiValue)):
            text = "\\".join(str(item) for item in value)
        else:
            text = str(value)
    except Exception:  # noqa: BLE001 - a malformed network value must cost a placeholder, not the instance
        logger.debug("unreadable %s in header; using a placeholder", keyword, exc_info=True)
        return missing
    return _safe_field_text(keyword, text, missing)


@functools.lru_cache(maxsize=1024)
def _safe_field_text(keyword: str, text: str, missing: str) -> str:
    """The file-name text of one attribute value (cached: a series repeats its values per instance)."""
    if dictionary_VR(tag_for_keyword(keyword)) == "PN":
        text = _person_name_text(text)
    if not text.strip(" \x00\\^="):
        return missing
    return safe_component(text, max_length=VALUE_MAX_LENGTH)


def _person_name_text(name: str) -> str:
    """Return a readable PN: the first non-empty group (usually alphabetic), components joined by _.

    ``Müller^Jürgen`` → ``Müller_Jürgen``; ``Yamada^Tarou=山田^太郎=やまだ^たろう`` →
    ``Yamada_Tarou``; a name with only ideographic groups (``=山田^太郎``) uses those.
    """
    for group in name.split("="):
        components = [component.strip() for component in group.split("^") if component.strip()]
        if components:
            return "_".join(components)
    return ""


def _usable_as_folder(dest: Path, path: Path) -> bool:
    """Whether ``path`` can hold our files: absent (it will be created), a folder, or a link to a folder
    inside ``dest``. Not: a link leading out of dest, a dangling link, a file or anything else."""
    try:
        info = path.lstat()
    except FileNotFoundError:
        return True
    except OSError:
        return False
    if stat.S_ISDIR(info.st_mode):
        return True
    if not stat.S_ISLNK(info.st_mode):
        return False
    try:
        resolved = path.resolve(strict=True)
    except (OSError, RuntimeError):  # dangling, or a loop
        return False
    return resolved.is_dir() and os.path.commonpath([dest, resolved]) == str(dest)


def _remove_stale_partials(folder: Path, *, now: float | None = None) -> int:
    """Remove the temp files a killed writer left in ``folder`` (see ``StudyWriter``); return how many.

    Only regular files (never links or folders) whose names match ``_temp_path``'s pattern and that
    are older than ``STALE_PARTIAL_SECONDS``. Any failure is logged and otherwise ignored: a leftover
    costs disk space, not correctness.
    """
    now = time.time() if now is None else now
    removed = 0
    try:
        with os.scandir(folder) as entries:
            for entry in entries:
                if not _PARTIAL_NAME.fullmatch(entry.name):
                    continue
                try:
                    info = entry.stat(follow_symlinks=False)
                    if not stat.S_ISREG(info.st_mode) or now - info.st_mtime <= STALE_PARTIAL_SECONDS:
                        continue
                    # unlink never follows a link: even a file swapped for one since is only unlinked.
                    os.unlink(entry.path)
                    removed += 1
                except FileNotFoundError:
                    continue  # renamed or removed meanwhile by its writer
    except OSError as exc:
        logger.warning("could not look for stale temporary files in %s: %s", folder, exc)
    if removed:
        logger.info("removed %d stale temporary file(s) left by an interrupted retrieve in %s", removed, folder)
    return removed


def _ensure_inside(dest: Path, path: Path) -> Path:
    """Return ``path`` if, with symlinks resolved, it stays under ``dest``; else raise StorageError."""
    resolved = path.resolve()
    if os.path.commonpath([dest, resolved]) != str(dest):
        # Sanitizing makes this unreachable through names; a symlink planted in dest is the way.
        raise StorageError(
            f"refusing to write {path}: it leads outside the destination folder {dest}",
            folder=dest,
            hint="remove the symbolic link that points out of the destination folder",
        )
    return path


# --------------------------------------------------------------------------------------------
# Errors


def _storage_error(exc: OSError, folder: Path) -> StorageError:
    """Turn an OSError while writing into ``folder`` into a StorageError in plain words."""
    code = exc.errno
    if code == errno.ENOSPC:
        message, hint = f"no space left on device in {folder}", "free some space or pick another folder"
    elif code == getattr(errno, "EDQUOT", None):
        message, hint = f"disk quota exceeded in {folder}", "free some space or pick another folder"
    elif code in (errno.EACCES, errno.EPERM) or isinstance(exc, PermissionError):
        message, hint = f"permission denied writing {folder}", "pick a folder you can write to"
    elif code == errno.EROFS:
        message, hint = f"read-only file system: cannot write {folder}", "pick a writable folder"
    elif code in (errno.ENOTDIR, errno.EEXIST):
        message, hint = f"cannot create folder {folder}: a file is in the way", ""
    elif code == errno.ENAMETOOLONG:
        message, hint = f"path too long in {folder}", "use a shorter destination or layout"
    else:
        message, hint = f"could not write {folder}: {exc.strerror or exc}", ""
    return StorageError(message, folder=folder, errno_code=code, hint=hint)


def _destination_problem(exc: OSError) -> str:
    """Say in plain words why the destination folder cannot be created."""
    if exc.errno == errno.ENOSPC:
        return "cannot be created: no space left on device"
    if exc.errno in (errno.EACCES, errno.EPERM):
        return "cannot be created: permission denied"
    if exc.errno == errno.EROFS:
        return "cannot be created: read-only file system"
    if exc.errno in (errno.ENOTDIR, errno.EEXIST):
        return "cannot be created: a file is in the way"
    return f"cannot be created: {exc.strerror or exc}"


# --------------------------------------------------------------------------------------------
# Manifest


class _Manifest:
    """The append-only JSON-lines record of what a destination holds; one per folder per process.

    Each line is ``{"uid", "path" (relative, /), "size", "study_uid", "series_uid",
    "sop_class_uid", "transfer_syntax", "stored_at"}``; a later line for the same UID wins. A line
    cut short by a crash is skipped when loading, and the next append starts on a fresh line.
    Writers in one process share the instance (and its lock) through ``for_dest``.
    """

    _registry: "weakref.WeakValueDictionary[Path, _Manifest]" = weakref.WeakValueDictionary()
    _registry_lock = threading.Lock()

    def __init__(self, dest: Path) -> None:
        self.path = dest / MANIFEST_NAME
        self._lock = threading.Lock()
        self._index: dict[str, tuple[str, int]] = {}
        self._studies: set[str] = set()
        self._needs_newline = False
        self._load()

    @classmethod
    def for_dest(cls, dest: Path) -> _Manifest:
        """Return the shared manifest of the (resolved) destination folder ``dest``."""
        with cls._registry_lock:
            manifest = cls._registry.get(dest)
            if manifest is None:
                manifest = cls(dest)
                cls._registry[dest] = manifest
            return manifest

    def _load(self) -> None:
        """Read every complete, well-formed record; skip the rest."""
        try:
            handle = self.path.open("rb")
        except FileNotFoundError:
            return
        except OSError as exc:
            logger.warning("cannot read manifest %s (%s); starting empty", self.path, exc)
            return
        skipped = 0
        with handle:
            for line in handle:
                self._needs_newline = not line.endswith(b"\n")
                record = _parse_record(line)
                if record is None:
                    skipped += bool(line.strip())
                    continue
                uid, relative, size, study_uid = record
                self._index[uid] = (relative, size)
                if study_uid:
                    self._studies.add(study_uid)
        if skipped:
            logger.warning("skipped %d damaged line(s) in %s", skipped, self.path)

    def lookup(self, uid: str) -> tuple[str, int] | None:
        """Return (relative path, size) recorded for ``uid``, if any."""
        with self._lock:
            return self._index.get(uid)

    def has_study(self, study_uid: str) -> bool:
        """Whether any record names this Study Instance UID."""
        with self._lock:
            return study_uid in self._studies

    def append(self, uid: str, relative: str, size: int, *, study_uid: str, **details: str) -> None:
        """Add one record; a failure is logged, not raised (the file itself is already safe)."""
        record = {"uid": uid, "path": relative, "size": size, "study_uid": study_uid, **details}
        # ASCII JSON: a hostile UID with lone surrogates still round-trips as \udXXX escapes.
        line = (json.dumps(record, separators=(",", ":")) + "\n").encode("ascii")
        with self._lock:
            self._index[uid] = (relative, size)
            if study_uid:
                self._studies.add(study_uid)
            if self._needs_newline:
                line = b"\n" + line
            try:
                fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | _O_BINARY, 0o666)
                try:
                    # One write of one whole line: O_APPEND keeps concurrent lines from interleaving.
                    _write_all(fd, line)
                finally:
                    os.close(fd)
                self._needs_newline = False
            except OSError as exc:
                # A partial line may be on disk now; start the next one on a fresh line.
                self._needs_newline = True
                logger.warning("could not update manifest %s: %s", self.path, exc)


def _parse_record(line: bytes) -> tuple[str, str, int, str] | None:
    """Return (uid, relative path, size, study UID or "") from one manifest line, or None if damaged."""
    try:
        record = json.loads(line)
    except ValueError:
        return None
    if not isinstance(record, dict):
        return None
    uid, path, size = record.get("uid"), record.get("path"), record.get("size")
    if not isinstance(uid, str) or not isinstance(path, str):
        return None
    if not isinstance(size, int) or isinstance(size, bool) or size < 0:
        return None
    study_uid = record.get("study_uid")
    return uid, path, size, study_uid if isinstance(study_uid, str) else ""


# --------------------------------------------------------------------------------------------
# Writing

_O_BINARY: Final = getattr(os, "O_BINARY", 0)  # Windows would otherwise translate newlines


def _write_all(fd: int, data: bytes | bytearray | memoryview) -> int:
    """Write all of ``data`` to ``fd`` (os.write may write less); return the byte count."""
    view = memoryview(data).cast("B")
    total = len(view)
    while view:
        written = os.write(fd, view[:_CHUNK])
        view = view[written:]
    return total


def _copy_source(fd: int, source: Source) -> int:
    """Copy the dataset bytes from ``source`` to ``fd`` in chunks; return the byte count."""
    if isinstance(source, (bytes, bytearray, memoryview)):
        return _write_all(fd, source)
    if isinstance(source, Path):
        try:
            handle = source.open("rb", buffering=0)
        except OSError as exc:
            raise StorageError(f"could not read the received instance from {source}: {exc.strerror}") from exc
        with handle:
            # One reused buffer: a multi-GB file costs 1 MiB of memory.
            buffer = bytearray(_CHUNK)
            view = memoryview(buffer)
            total = 0
            while count := _read(lambda: handle.readinto(buffer), str(source)):
                total += _write_all(fd, view[:count])
            return total
    if not hasattr(source, "read"):
        raise TypeError(f"source must be bytes, a Path or a binary stream, not {type(source).__name__}")
    copied = _copy_file_backed(fd, source)
    if copied is not None:
        return copied
    if hasattr(source, "getbuffer"):
        # An in-memory stream (pynetdicom's BytesIO): write straight from its buffer, no copy.
        try:
            with source.getbuffer() as view:
                start = source.tell()
                total = _write_all(fd, view[start:])
            source.seek(start + total)
            return total
        except (ValueError, BufferError, OSError, AttributeError):
            pass  # a stream without a buffer after all: read it in chunks
    # A stream (pynetdicom's BytesIO, or a spooled file) from its position to its end. read()
    # allocates each chunk afresh, but only as large as the data: small instances stay cheap.
    total = 0
    while chunk := _read(lambda: source.read(_CHUNK), "the network stream"):
        total += _write_all(fd, chunk)
    return total


def _copy_file_backed(fd: int, source: BinaryIO) -> int | None:
    """Linux: copy a stream backed by a file (a spooled data set) from its position inside the kernel
    (copy_file_range); None when the stream has no file, on other systems, or if the kernel cannot
    (then the caller copies through user space, which reports any real disk error itself)."""
    copy = getattr(os, "copy_file_range", None)
    if copy is None or not sys.platform.startswith("linux"):
        return None
    try:
        src = source.fileno()
    except (OSError, AttributeError, ValueError):
        return None
    start = source.tell()
    end = os.fstat(src).st_size
    total = 0
    try:
        while start + total < end:
            count = copy(src, fd, min(end - start - total, 1 << 30), start + total)
            if count <= 0:
                break
            total += count
    except OSError:
        if total == 0:
            return None  # not between these files here (another file system type): user space then
        raise
    source.seek(start + total)
    return total


def _read(read: Callable[[], _T], what: str) -> _T:
    """Call ``read``; a failure there is the source's fault, not the destination's."""
    try:
        return read()
    except OSError as exc:
        raise StorageError(f"could not read the received instance from {what}: {exc}") from exc


def _file_meta(
    sop_class_uid: str, sop_instance_uid: str, transfer_syntax: str, source_ae_title: str | None
) -> bytes:
    """Return preamble, ``DICM`` and the encoded File Meta group for one instance.

    Byte for byte what ``pydicom.filewriter.write_file_meta_info`` writes (a test holds us to
    that), but only the one element that differs per instance, (0002,0003), and the group length
    are encoded here; pydicom encodes the rest once per SOP class and transfer syntax, because
    building and encoding a whole group costs about 0.5 ms — a lot at thousands of instances/s.
    """
    before, after = _constant_meta_elements(
        _ascii(sop_class_uid), _ascii(transfer_syntax), _ascii(source_ae_title or "")
    )
    value = _ascii(sop_instance_uid).encode("ascii")
    if len(value) % 2:
        value += b"\x00"  # UI pads with NUL to even length (PS3.5 6.2)
    if len(value) > 0xFFFE:
        raise InvalidInput("SOPInstanceUID", "is too long to store", value=sop_instance_uid[:80])
    # Explicit VR Little Endian: tag group, element, VR, 2-byte length, value.
    instance = struct.pack("<HH2sH", 0x0002, 0x0003, b"UI", len(value)) + value
    body = before + instance + after
    group_length = struct.pack("<HH2sHI", 0x0002, 0x0000, b"UL", 4, len(body))
    return _PREAMBLE + group_length + body


@functools.lru_cache(maxsize=64)
def _constant_meta_elements(sop_class_uid: str, transfer_syntax: str, source_ae_title: str) -> tuple[bytes, bytes]:
    """Encode with pydicom the File Meta elements before and after (0002,0003)."""
    before = FileMetaDataset()
    before.FileMetaInformationVersion = b"\x00\x01"
    before.MediaStorageSOPClassUID = UID(sop_class_uid)
    after = FileMetaDataset()
    after.TransferSyntaxUID = UID(transfer_syntax)
    after.ImplementationClassUID = IMPLEMENTATION_CLASS_UID
    after.ImplementationVersionName = IMPLEMENTATION_VERSION_NAME
    if source_ae_title:
        after.SourceApplicationEntityTitle = source_ae_title
    return _encode_meta_elements(before), _encode_meta_elements(after)


def _encode_meta_elements(elements: FileMetaDataset) -> bytes:
    """Encode File Meta elements as the group always is: Explicit VR Little Endian."""
    buffer = DicomBytesIO()
    buffer.is_little_endian = True
    buffer.is_implicit_VR = False
    write_dataset(buffer, elements)
    return buffer.getvalue()


def _ascii(text: str) -> str:
    """UIDs and AE titles are ASCII; a peer's stray other character becomes ``?``, not a crash."""
    return text.encode("ascii", "replace").decode("ascii")


def _temp_path(final: Path) -> Path:
    """Return a hidden, unique sibling of ``final`` that still fits 255 bytes."""
    suffix = f".partial-{secrets.token_hex(4)}"
    room = COMPONENT_MAX_BYTES - 1 - len(suffix)
    stem = final.name.encode("utf-8")[:room].decode("utf-8", "ignore")
    return final.with_name(f".{stem}{suffix}")


def _create_temp(final: Path) -> tuple[Path, int]:
    """Create (O_EXCL, never through a link) and open a new temp file for ``final``."""
    folder = final.parent
    for _attempt in range(5):
        temp = _temp_path(final)
        try:
            # Mode 0o666 honours the umask, as a normal file would (mkstemp would force 0o600).
            return temp, os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | _O_BINARY, 0o666)
        except FileExistsError:
            continue
        except OSError as exc:
            raise _storage_error(exc, folder) from exc
    raise StorageError(f"could not create a temporary file in {folder}", folder=folder)


def _write_atomically(final: Path, head: bytes, source: Source, *, fsync: bool = True,
                      later: Later | None = None, temp: tuple[Path, int] | None = None) -> int:
    """Write ``head`` + ``source`` to ``final`` via a temp file and os.replace; return size.

    With ``fsync`` the temp file reaches the disk before the rename. Without, the rename still makes
    the complete file appear at once (a crash of this process never leaves a partial file under the
    final name); only a power loss before the next ``StudyWriter.sync()`` can lose it. Then the
    write-back hint (``_start_writeback``) goes to ``later`` if given. ``temp``: an empty temp file
    in ``final``'s folder, already created and open (a writer's spare), instead of a new one.
    """
    folder = final.parent
    temp, fd = temp or _create_temp(final)
    kept = None  # a second descriptor for the write-back hint, given to ``later``
    try:
        try:
            size = _write_all(fd, head) + _copy_source(fd, source)
            if fsync:
                # The data must be on disk before the rename makes it visible under its final name.
                os.fsync(fd)
            elif later is None or _writeback() is None:
                _start_writeback(fd)
            else:
                kept = os.dup(fd)
        finally:
            os.close(fd)
        os.replace(temp, final)
    except BaseException as exc:
        if kept is not None:
            os.close(kept)
        with contextlib.suppress(OSError):
            os.unlink(temp)
        if isinstance(exc, OSError):
            raise _storage_error(exc, folder) from exc
        raise
    if kept is not None and later is not None:
        later(functools.partial(_start_writeback, kept, close=True))
    return size


@functools.lru_cache(maxsize=None)
def _linux_libc(name: str, *argtypes: str) -> Callable[..., int] | None:
    """The C library's ``name`` (ctypes argument types named by ``argtypes``) on Linux, else None."""
    if not sys.platform.startswith("linux"):
        return None
    try:
        import ctypes

        function = getattr(ctypes.CDLL(None, use_errno=True), name)
    except (OSError, AttributeError):
        return None
    function.argtypes = [getattr(ctypes, t) for t in argtypes]
    function.restype = ctypes.c_int
    return function


def _libc_syncfs() -> Callable[[int], int] | None:
    """Linux's syncfs(2) (flush one file system: every dirty file and directory on it), or None."""
    return _linux_libc("syncfs", "c_int")


def _writeback() -> Callable[..., int] | None:
    """Linux's sync_file_range(2), or None."""
    return _linux_libc("sync_file_range", "c_int", "c_longlong", "c_longlong", "c_uint")


def _discard_temp(temp: Path, fd: int) -> None:
    """Close and remove a temp file nothing was written to."""
    with contextlib.suppress(OSError):
        os.close(fd)
    with contextlib.suppress(OSError):
        os.unlink(temp)


def _start_writeback(fd: int, *, close: bool = False) -> None:
    """Linux: have the kernel start writing the file's pages now, without waiting (sync_file_range
    SYNC_FILE_RANGE_WRITE), so the flush at the end of a request finds little left to do. Elsewhere,
    and on any error, nothing: the later sync() still flushes everything. ``close``: then close ``fd``."""
    try:
        sync_file_range = _writeback()
        if sync_file_range is not None:
            sync_file_range(fd, 0, 0, 2)  # SYNC_FILE_RANGE_WRITE; a failure here changes nothing
    finally:
        if close:
            os.close(fd)


def _fsync_path(path: Path, *, directory: bool = False) -> None:
    """fsync an existing file (or, where the OS allows it, a folder) by name."""
    if directory and sys.platform == "win32":
        return  # Windows cannot open a folder to flush it; NTFS journals the rename itself
    fd = os.open(path, (os.O_RDONLY | getattr(os, "O_DIRECTORY", 0)) if directory else (os.O_RDONLY | _O_BINARY))
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class StudyWriter:
    """Writes received instances under one destination folder, atomically, and remembers them.

    Thread contract: ``store`` may run on pynetdicom's handler thread while other threads call
    ``already_have``; writers on the same folder in one process share one manifest and its lock.

    Durability: by default every file is fsynced before its rename (about 3 ms on an SSD: a cap of a few
    hundred instances a second). Inside ``deferred_sync()`` (what a retrieve uses) files are written
    and renamed, on Linux with their write-back started at once (``sync_file_range``, not waited for),
    and ``sync()`` flushes them all together (Linux: one ``syncfs`` of the destination's file system;
    elsewhere an fsync of each file and folder), at the end of each request and when the block ends. Either way a crash of the program cannot leave a partial file under a
    final name (temp file + rename); a power loss before ``sync()`` may lose or truncate files written
    since the last one — and a truncated file is never skipped by a later retrieve, because the
    manifest records each file's size and ``already_have`` compares it.

    Symbolic links already in the destination: nothing is ever written through a link that leads out of
    ``dest``, and no instance is lost to one either.

    * A folder of the layout whose name is taken by a link leading outside ``dest``, by a dangling link
      or by a file is not used: the instance goes to ``<name>_2`` beside it (``_3``... if that is taken
      too) and a warning names the link. The manifest records where each file really went, so a
      repeated retrieve still skips it. A link to a folder inside ``dest`` is followed as usual.
    * A link (or anything else) at a file's own final name is replaced by the file, as an older file
      of that name would be: ``os.replace`` swaps the directory entry and never opens the link's target.
    * Temp files are created with ``O_CREAT | O_EXCL``, which never follows a link either.

    Folders are checked when first written into by this writer; a link planted during a retrieve, in a
    folder already in use, is not looked for again (only the final name is always safe).

    Stale temp files: a writer killed mid-write (SIGKILL, power loss) leaves its hidden temp file
    (``.<name>.partial-<8 hex digits>``). The first time a writer writes into a folder it removes from
    that folder the regular files (never links, never folders) whose names match that pattern exactly
    and whose modification time is more than ``STALE_PARTIAL_SECONDS`` (15 minutes) old. A live writer,
    in this process or another, writes each file in one go, so its temp file is only seconds old: the
    age is the whole "is anyone still writing this" test, with no lock files or PIDs to go stale or to
    mislead on a network share. Files of other programs and other names are never touched. (The temp
    file made ahead during a retrieve, ``.pacspull-next.partial-…``, one per folder for the next instance
    of that folder, is used within ``_SPARE_SECONDS`` or removed, and at the latest when the retrieve ends.)
    """

    _FOLDER_CACHE = 4096  # prepared folders remembered (a study has a handful)
    _SPARE_SECONDS = 60.0  # a spare temp file older than this is not used (far from the stale-file sweep)
    _SPARES_MAX = 16  # folders with a spare temp file at once (a study's series, sent interleaved)

    def __init__(self, dest: Path, *, layout: str = DEFAULT_LAYOUT) -> None:
        """Check ``layout``, create ``dest`` if needed and load its manifest."""
        self._components = _parse_layout(layout)
        self._layout = layout
        self._dest = _prepare_destination(Path(dest))
        self._manifest = _Manifest.for_dest(self._dest)
        self._deferred = 0
        self._sync_lock = threading.Lock()
        self._unsynced: list[Path] = []
        self._unsynced_folders: set[Path] = set()
        # Layout folder -> the folder really used (see the class doc), created, checked to stay inside
        # dest and swept of stale temp files once; checked again once the cache is full.
        self._folder_for: dict[Path, Path] = {}
        # Folder -> (path, descriptor, monotonic time made): a temp file made there while the PACS prepared
        # the next instance (``later``), which store uses for the next instance of that folder. One per
        # folder, for the last ``_SPARES_MAX`` folders: a PACS may send a study's series interleaved.
        self._spares: dict[Path, tuple[Path, int, float]] = {}
        self.keywords: frozenset[str] = frozenset(
            part.keyword for component in self._components for part in component if isinstance(part, _Field)
        ) | {"StudyInstanceUID", "SeriesInstanceUID", "SOPInstanceUID", "SOPClassUID"}
        """Attributes ``store`` reads from a header (the layout's, and the manifest's UIDs)."""

    @contextlib.contextmanager
    def deferred_sync(self) -> Iterator[StudyWriter]:
        """Within the block, files are not fsynced one by one; ``sync()`` (called at the end of the
        block, and by the caller whenever it reports something done) flushes them together."""
        self._deferred += 1
        try:
            yield self
        finally:
            self._deferred -= 1
            if not self._deferred:
                self.discard_spares()
                self.sync()

    def _take_spare(self, folder: Path) -> tuple[Path, int] | None:
        """The spare temp file of ``folder``, if there is one and it is fresh (a stale one is removed)."""
        spare = self._spares.pop(folder, None)
        if spare is None:
            return None
        temp, fd, made = spare
        if time.monotonic() - made < self._SPARE_SECONDS:
            return temp, fd
        _discard_temp(temp, fd)
        return None

    def _make_spare(self, folder: Path) -> None:
        """Create the temp file the next instance of ``folder`` will need, off the critical path: ``store``
        hands this to ``later``. A failure only means the next store creates its own. Only inside
        ``deferred_sync``, whose end removes them; beyond ``_SPARES_MAX`` folders the oldest goes."""
        if folder in self._spares or not self._deferred:
            return
        while len(self._spares) >= self._SPARES_MAX:
            temp, fd, _made = self._spares.pop(next(iter(self._spares)))
            _discard_temp(temp, fd)
        try:
            temp, fd = _create_temp(folder / SPARE_NAME)
        except (OSError, StorageError):
            return
        self._spares[folder] = (temp, fd, time.monotonic())

    def discard_spares(self) -> None:
        """Remove the spare temp files (the end of a retrieve: ``deferred_sync`` does it)."""
        spares, self._spares = self._spares, {}
        for temp, fd, _made in spares.values():
            _discard_temp(temp, fd)

    @property
    def unsynced(self) -> int:
        """Files written since the last ``sync()`` (0 outside ``deferred_sync``)."""
        return len(self._unsynced)

    def sync(self) -> None:
        """Flush every file stored since the last sync, their folders and the manifest to the disk.

        Raises ``StorageError`` when the disk reports a failure (then those files may not survive a
        power loss; they are complete for every program that reads them now).
        """
        with self._sync_lock:
            if not self._unsynced:
                return
            files, folders = self._unsynced, self._unsynced_folders
            self._unsynced, self._unsynced_folders = [], set()
        try:
            syncfs = _libc_syncfs()
            if syncfs is not None:
                fd = os.open(self._dest, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
                try:
                    if syncfs(fd) != 0:
                        import ctypes

                        code = ctypes.get_errno()
                        raise OSError(code, os.strerror(code))
                finally:
                    os.close(fd)
            else:
                for path in files:
                    with contextlib.suppress(FileNotFoundError):  # replaced or removed since: not ours now
                        _fsync_path(path)
                for folder in folders | {self._dest}:
                    _fsync_path(folder, directory=True)
                if self._manifest.path.exists():
                    _fsync_path(self._manifest.path)
        except OSError as exc:
            raise _storage_error(exc, self._dest) from exc

    @property
    def dest(self) -> Path:
        """The destination folder, resolved."""
        return self._dest

    @property
    def layout(self) -> str:
        """The layout template in use."""
        return self._layout

    def path_for(self, header: Dataset, *, sop_instance_uid: str | None = None) -> Path:
        """Return where the instance described by ``header`` goes (the UID may be given apart)."""
        uid = _clean_uid(sop_instance_uid if sop_instance_uid is not None else _header_uid(header, _UID_KEYWORD))
        if not uid:
            raise InvalidInput("SOPInstanceUID", "is needed to name the file and is missing")
        parts = _render(self._components, header, uid)
        return self._usable_folder(parts[:-1], warn=False) / parts[-1]

    def _usable_folder(self, names: list[str], *, warn: bool = True) -> Path:
        """The folder ``names`` give under dest, each name that is taken by something unusable (a link
        out of dest or dangling, a file) replaced by ``<name>_2``, ``<name>_3``...; see the class doc."""
        folder = self._dest
        for name in names:
            candidate = folder / name
            tries = 1
            while not _usable_as_folder(self._dest, candidate):
                tries += 1
                if tries > _DIVERT_TRIES:
                    raise StorageError(
                        f"refusing to write into {folder / name}: it and {_DIVERT_TRIES - 1} alternatives "
                        f"are symbolic links out of the destination folder {self._dest}, or files",
                        folder=folder, hint="remove the symbolic links that point out of the destination folder")
                suffix = f"_{tries}"
                stem = name.encode("utf-8")[: COMPONENT_MAX_BYTES - len(suffix)].decode("utf-8", "ignore")
                candidate = folder / f"{stem}{suffix}"
            if tries > 1 and warn:
                logger.warning("%s is a symbolic link out of the destination folder, a dangling link or a file: "
                               "writing into %s instead", folder / name, candidate.name)
            folder = candidate
        return folder

    def _prepared_path(self, header: Dataset, uid: str) -> Path:
        """``path_for``, with the folder created; folder checks are done once per folder."""
        parts = _render(self._components, header, uid)
        wanted = self._dest.joinpath(*parts[:-1])
        folder = self._folder_for.get(wanted)
        if folder is None:
            folder = self._usable_folder(parts[:-1])
            try:
                folder.mkdir(parents=True, exist_ok=True)
            except OSError as exc:
                raise _storage_error(exc, folder) from exc
            # Checked name by name above; once more as a whole, now that it exists.
            _ensure_inside(self._dest, folder)
            _remove_stale_partials(folder)
            if len(self._folder_for) >= self._FOLDER_CACHE:
                self._folder_for.clear()
            self._folder_for[wanted] = folder
        # Whatever is at the final name (an old file, a link anywhere) is replaced, never written through.
        return folder / parts[-1]

    def already_have(self, sop_instance_uid: str) -> Path | None:
        """Return the stored file for this UID if the manifest has it and it is intact, else None."""
        entry = self._manifest.lookup(_clean_uid(sop_instance_uid))
        if entry is None:
            return None
        relative, size = entry
        parts = PurePosixPath(relative).parts
        # The manifest is a plain file anyone can edit: never follow it out of dest.
        if not parts or PurePosixPath(relative).is_absolute() or ".." in parts:
            return None
        path = self._dest.joinpath(*parts)
        try:
            _ensure_inside(self._dest, path)
            info = path.stat()
        except (OSError, StorageError):
            return None
        if not stat.S_ISREG(info.st_mode) or info.st_size != size:
            return None
        return path

    def has_study(self, study_instance_uid: str) -> bool:
        """Whether anything of this study was stored here (a cheap hint; files are not checked).

        The retrieval engine asks this before listing a study's instances to skip those already
        on disk; a study never seen needs no such listing.
        """
        return self._manifest.has_study(_clean_uid(study_instance_uid))

    def store(
        self,
        *,
        header: Dataset,
        sop_class_uid: str,
        sop_instance_uid: str,
        transfer_syntax: str,
        source: Source,
        source_ae_title: str | None = None,
        later: Later | None = None,
    ) -> StoredInstance:
        """Write one received instance as a Part-10 file and record it in the manifest.

        ``source`` is the dataset exactly as received (no preamble, no file meta), encoded in
        ``transfer_syntax``; it is copied byte for byte, never decoded (deflated and compressed
        syntaxes included). ``header`` is used only to name the file; the UID arguments win over
        its contents. Either the complete file appears under its final name or nothing changes
        (a previous file of the same name stays as it was).
        Raises ``StorageError`` for disk problems (full, permission, read-only) — answer the
        C-STORE with 0xA700 — and ``InvalidInput`` for an empty UID.

        ``later`` (a retrieve passes ``answer_later``'s): what takes work that need not delay the
        C-STORE answer, the manifest line and the write-back hint, and runs it soon after. The file
        is complete under its final name when ``store`` returns, either way.
        """
        uid = _clean_uid(sop_instance_uid)
        sop_class_uid = _clean_uid(sop_class_uid)
        transfer_syntax = _clean_uid(transfer_syntax)
        for field, value in (
            ("SOPInstanceUID", uid),
            ("SOPClassUID", sop_class_uid),
            ("TransferSyntaxUID", transfer_syntax),
        ):
            if not value:
                raise InvalidInput(field, "must not be empty")
        head = _file_meta(sop_class_uid, uid, transfer_syntax, source_ae_title)
        final = self._prepared_path(header, uid)
        deferred = self._deferred > 0
        later = later if deferred else None
        hints: list[Callable[[], None]] = []
        size = _write_atomically(final, head, source, fsync=not deferred, later=hints.append if later else None,
                                 temp=self._take_spare(final.parent) if later else None)
        if deferred:
            with self._sync_lock:
                self._unsynced.append(final)
                self._unsynced_folders.add(final.parent)
        # The file is complete under its final name now: the manifest line can wait for ``later``.
        record = functools.partial(self._record, uid, final, size, header, sop_class_uid, transfer_syntax)
        if later is None:
            record()
        else:
            # The next instance's temp file first: made after the write-back hint, it waits on the disk.
            later(functools.partial(self._make_spare, final.parent))
            later(record)
            for hint in hints:
                later(hint)
        return StoredInstance(
            path=final,
            sop_instance_uid=uid,
            sop_class_uid=sop_class_uid,
            transfer_syntax=transfer_syntax,
            size_bytes=size,
        )

    def _record(self, uid: str, final: Path, size: int, header: Dataset, sop_class_uid: str,
                transfer_syntax: str) -> None:
        """The manifest line of a stored file (a crash before it just means a re-download)."""
        self._manifest.append(
            uid,
            final.relative_to(self._dest).as_posix(),
            size,
            study_uid=_clean_uid(_header_uid(header, "StudyInstanceUID")),
            series_uid=_clean_uid(_header_uid(header, "SeriesInstanceUID")),
            sop_class_uid=sop_class_uid,
            transfer_syntax=transfer_syntax,
            stored_at=datetime.now(timezone.utc).isoformat(timespec="seconds"),
        )
        if identifiers_logged():
            logger.debug("stored %s as %s (%d bytes)", uid, final, size)
        else:  # the path holds the patient's name: only with the user's opt-in (core.privacy)
            logger.debug("stored %s (%d bytes)", uid, size)


def _header_uid(header: Dataset, keyword: str) -> str:
    """Return a UID attribute of ``header`` as raw text ('' if absent or unreadable)."""
    try:
        value = header.get(keyword)
    except Exception:  # noqa: BLE001 - an unreadable UID is reported as missing by the caller
        return ""
    if value is None:
        return ""
    if isinstance(value, (list, tuple, MultiValue)):
        # pydicom splits a value at backslashes; put it back together for hashing.
        return "\\".join(str(item) for item in value)
    return str(value)


def _prepare_destination(dest: Path) -> Path:
    """Create ``dest`` if needed and return it resolved; InvalidInput if it cannot be used."""
    dest = dest.expanduser()
    if dest.exists() and not dest.is_dir():
        raise InvalidInput("destination", "is a file, not a folder", value=str(dest))
    try:
        dest.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise InvalidInput("destination", _destination_problem(exc), value=str(dest)) from exc
    # os.access also reports a read-only file system, even to root.
    if not os.access(dest, os.W_OK | os.X_OK):
        raise InvalidInput("destination", "is not writable (permission denied or read-only)", value=str(dest))
    return dest.resolve()
