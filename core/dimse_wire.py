"""DICOM Upper Layer / DIMSE wire format parsed and encoded with struct: no pynetdicom internals.

What the fast transport (core/_pynetdicom_compat.py, which holds every reach into pynetdicom's private
internals) reads and writes itself instead of going through pynetdicom's PDU, message and Dataset
objects: the command sets of C-STORE requests and C-GET / C-FIND responses (group 0000, Implicit VR
Little Endian), the C-STORE-RSP it sends, the PDVs of a P-DATA-TF PDU, the most bytes one PDU read may
ask for, and ``Spool``, where a received data set is kept. Nothing here imports pynetdicom;
tests/core/test_dimse_wire.py checks the encodings byte for byte against pynetdicom's own.
"""

from __future__ import annotations

import io
import struct
from typing import Any

# --------------------------------------------------------------------------------------------------
# DIMSE command sets

COMMAND_FIELD, DATA_SET_TYPE = 0x0100, 0x0800
C_STORE_RQ, C_STORE_RSP, C_GET_RSP, C_FIND_RSP, NO_DATA_SET = 0x0001, 0x8001, 0x8010, 0x8020, 0x0101
PENDING = frozenset({0xFF00, 0xFF01})
_US_TAGS = frozenset({0x0100, 0x0110, 0x0120, 0x0700, 0x0800, 0x0900, 0x1020, 0x1021, 0x1022, 0x1023, 0x1031})
_UI_TAGS = frozenset({0x0002, 0x1000})
STORE_REQUEST_TAGS = frozenset({0x0000, 0x0002, 0x0100, 0x0110, 0x0700, 0x0800, 0x1000, 0x1030, 0x1031})
GET_RESPONSE_TAGS = frozenset({0x0000, 0x0002, 0x0100, 0x0120, 0x0800, 0x0900, 0x1020, 0x1021, 0x1022, 0x1023})
FIND_RESPONSE_TAGS = frozenset({0x0000, 0x0002, 0x0100, 0x0120, 0x0800, 0x0900})
GET_COUNTS = ((0x1020, "NumberOfRemainingSuboperations"), (0x1021, "NumberOfCompletedSuboperations"),
               (0x1022, "NumberOfFailedSuboperations"), (0x1023, "NumberOfWarningSuboperations"))


def parse_command_set(data: bytes | memoryview) -> dict[int, Any] | None:
    """Decode a DIMSE command set (group 0000, Implicit VR Little Endian) into {element: value}.

    US elements become ints, UI and AE ones stripped strings, the rest stays bytes. None when the bytes
    do not parse as a command set.
    """
    view = memoryview(data)
    fields: dict[int, Any] = {}
    offset, end = 0, len(view)
    try:
        while offset < end:
            group, element, length = struct.unpack_from("<HHI", view, offset)
            offset += 8
            if group != 0 or offset + length > end:
                return None
            value = view[offset:offset + length]
            offset += length
            if element in _US_TAGS:
                if length != 2:
                    return None
                fields[element] = value[0] | value[1] << 8
            elif element in _UI_TAGS or element == 0x1030:
                fields[element] = bytes(value).decode("ascii").rstrip("\0 ").lstrip(" ")
            else:
                fields[element] = bytes(value)
    except (struct.error, UnicodeDecodeError):
        return None
    return fields


def _uid_element(element: int, uid: str) -> bytes:
    value = uid.encode("ascii")
    if len(value) % 2:
        value += b"\0"
    return struct.pack("<HHI", 0, element, len(value)) + value


def encode_store_response(message_id: int, sop_class: str, sop_instance: str, status: int) -> bytes:
    """The command set of a C-STORE-RSP, as pynetdicom encodes it (Implicit VR Little Endian)."""
    body = b"".join((
        _uid_element(0x0002, sop_class),
        struct.pack("<HHIH", 0, 0x0100, 2, C_STORE_RSP),
        struct.pack("<HHIH", 0, 0x0120, 2, message_id),
        struct.pack("<HHIH", 0, 0x0800, 2, NO_DATA_SET),
        struct.pack("<HHIH", 0, 0x0900, 2, status),
        _uid_element(0x1000, sop_instance),
    ))
    return struct.pack("<HHII", 0, 0x0000, 4, len(body)) + body


def status_code(status: Any) -> int:
    """The status an EVT_C_STORE handler returned, as pynetdicom reads it (0xC001/0xC002 if unusable;
    other elements of a status Dataset, such as an error comment, are not sent on this path)."""
    if isinstance(status, int) and not isinstance(status, bool):
        return status if 0 <= status <= 0xFFFF else 0xC002
    if hasattr(status, "get") and "Status" in status:
        try:
            return int(status.Status) & 0xFFFF
        except (TypeError, ValueError):
            return 0xC001
    return 0xC001 if hasattr(status, "get") else 0xC002


# --------------------------------------------------------------------------------------------------
# P-DATA-TF PDUs


def p_data_tf(context_id: int, command: bytes) -> bytes:
    """One P-DATA-TF PDU holding one PDV: the last (and only) fragment of a command set."""
    pdv_length = 2 + len(command)
    return struct.pack(">BBIIBB", 0x04, 0, 4 + pdv_length, pdv_length, context_id, 0x03) + command


def split_pdvs(body: bytearray) -> list[list[Any]] | None:
    """[[context ID, memoryview of the PDV's bytes from its message control header on]], or None."""
    view = memoryview(body)
    pdvs: list[list[Any]] = []
    offset, end = 0, len(view)
    while offset < end:
        if offset + 6 > end:
            return None
        length = struct.unpack_from(">I", view, offset)[0]
        if length < 2 or offset + 4 + length > end:
            return None
        pdvs.append([view[offset + 4], view[offset + 5:offset + 4 + length]])
        offset += 4 + length
    return pdvs or None


# A PDU may not exceed the maximum length we announced (PS3.8 9.3.1); an A-ASSOCIATE-AC is small
# whatever we announced. With "no limit" announced, this still bounds what one PDU can make us allocate.
_PDU_FLOOR = 1 << 16
PDU_UNLIMITED_CAP = 1 << 28


def pdu_limit(announced: int | None) -> int:
    """The most bytes one PDU read may ask for, given the maximum PDU length we announced (0: none)."""
    return PDU_UNLIMITED_CAP if not announced else max(announced, _PDU_FLOOR) + 6


# --------------------------------------------------------------------------------------------------
# received data sets


class Spool(io.BytesIO):
    """A received data set: in memory, until it grows past ``spool_bytes`` (the fast transport passes
    ``SETTINGS.spool_bytes``); then in an unnamed temporary file in ``folder`` (the destination's file
    system), so a 2 GB instance costs no memory.

    pynetdicom requires a BytesIO for a request's data set; reads, seeks and ``fileno()`` go to the file
    once it is spooled (``getbuffer()`` then raises ValueError: there is no buffer)."""

    def __init__(self, folder: str | None, spool_bytes: int) -> None:
        super().__init__()
        self.folder = folder
        self.spool_bytes = spool_bytes
        self.file: Any = None

    @property
    def spooled(self) -> bool:
        return self.file is not None

    def write(self, data: Any) -> int:  # type: ignore[override]
        if self.file is not None:
            return self.file.write(data)
        count = super().write(data)
        if super().tell() > self.spool_bytes:
            import tempfile

            self.file = tempfile.TemporaryFile(dir=self.folder, prefix=".pacspull-spool-")
            with super().getbuffer() as view:
                self.file.write(view)
            super().seek(0)
            super().truncate(0)
        return count

    def read(self, size: int | None = -1) -> bytes:
        return self.file.read(size) if self.file is not None else super().read(size)

    def readinto(self, buffer: Any) -> int:
        return self.file.readinto(buffer) if self.file is not None else super().readinto(buffer)

    def seek(self, offset: int, whence: int = 0) -> int:
        return self.file.seek(offset, whence) if self.file is not None else super().seek(offset, whence)

    def tell(self) -> int:
        return self.file.tell() if self.file is not None else super().tell()

    def getbuffer(self) -> memoryview:
        if self.file is not None:
            raise ValueError("the data set is spooled to a file")
        return super().getbuffer()

    def getvalue(self) -> bytes:
        if self.file is None:
            return super().getvalue()
        position = self.file.tell()
        self.file.seek(0)
        try:
            return self.file.read()
        finally:
            self.file.seek(position)

    def fileno(self) -> int:
        if self.file is None:
            return super().fileno()  # raises io.UnsupportedOperation
        return self.file.fileno()

    def close(self) -> None:
        if self.file is not None:
            self.file.close()
        super().close()
