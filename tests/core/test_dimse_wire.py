"""core/dimse_wire.py: the DIMSE / Upper Layer wire format, byte for byte what pynetdicom sends and reads.

pynetdicom's own encoders and decoders are the reference here (its public PDU, primitive and message
classes); what the fast transport assumes about pynetdicom's internals is tested in
test_pynetdicom_compat.py.
"""

from __future__ import annotations

from typing import Any

import pytest

from pacspull.core import dimse_wire


def _encoded_command(primitive: Any) -> bytes:
    from pynetdicom.dimse import DIMSEServiceProvider  # noqa: F401 - the module pairs primitives/messages
    from pynetdicom.dimse_messages import C_STORE_RQ, C_STORE_RSP

    message = (C_STORE_RSP if primitive.MessageIDBeingRespondedTo is not None else C_STORE_RQ)()
    message.primitive_to_message(primitive)
    pdata = next(message.encode_msg(1, 0))
    (context_id, pdv), = pdata.presentation_data_value_list
    assert context_id == 1 and pdv[0] & 0x03 == 0x03
    return pdv[1:]


@pytest.mark.parametrize("status", [0x0000, 0xA700, 0xC210, 0xB007])
@pytest.mark.parametrize("uid", ["1.2.3", "1.2.34", "2.25.1234567890123456789"])
def test_store_response_is_byte_for_byte_pynetdicoms(status: int, uid: str) -> None:
    from pynetdicom.dimse_primitives import C_STORE

    response = C_STORE()
    response.MessageIDBeingRespondedTo = 7
    response.AffectedSOPClassUID = "1.2.840.10008.5.1.4.1.1.2"
    response.AffectedSOPInstanceUID = uid
    response.Status = status
    encoded = dimse_wire.encode_store_response(7, "1.2.840.10008.5.1.4.1.1.2", uid, status)
    assert encoded == _encoded_command(response)


def test_store_request_command_set_parses_as_pynetdicom_encodes_it() -> None:
    from pynetdicom.dimse_primitives import C_STORE

    request = C_STORE()
    request.MessageID = 12
    request.AffectedSOPClassUID = "1.2.840.10008.5.1.4.1.1.2"
    request.AffectedSOPInstanceUID = "1.2.3.4.5"
    request.Priority = 2
    request.MoveOriginatorApplicationEntityTitle = "MOVER"
    request.MoveOriginatorMessageID = 3
    from io import BytesIO

    request.DataSet = BytesIO(b"\x08\x00\x18\x00UI\x02\x001\x00")
    fields = dimse_wire.parse_command_set(_encoded_command(request))
    assert fields is not None
    assert fields[0x0100] == 0x0001 and fields[0x0110] == 12 and fields[0x0700] == 2
    assert fields[0x0002] == "1.2.840.10008.5.1.4.1.1.2" and fields[0x1000] == "1.2.3.4.5"
    assert fields[0x1030] == "MOVER" and fields[0x1031] == 3 and fields[0x0800] != 0x0101
    assert set(fields) <= dimse_wire.STORE_REQUEST_TAGS


def test_command_sets_that_do_not_parse_are_refused() -> None:
    assert dimse_wire.parse_command_set(b"\x00\x00\x00\x01\xff\xff\xff\xff") is None  # length past the end
    assert dimse_wire.parse_command_set(b"\x08\x00\x18\x00\x02\x00\x00\x00ab") is None  # not group 0000
    assert dimse_wire.parse_command_set(b"\x00\x00\x00\x01\x03\x00\x00\x00abc") is None  # US of 3 bytes


def test_pdvs_split_as_pynetdicom_decodes_them() -> None:
    from pynetdicom.pdu import P_DATA_TF

    from pynetdicom.pdu_primitives import P_DATA

    pdu = P_DATA_TF()

    primitive = P_DATA()
    primitive.presentation_data_value_list = [[1, b"\x03" + b"c" * 10], [3, b"\x00" + b"d" * 5], [3, b"\x02e"]]
    pdu.from_primitive(primitive)
    encoded = pdu.encode()
    assert encoded[0] == 0x04
    pdvs = dimse_wire.split_pdvs(bytearray(encoded[6:]))
    assert [[cx, bytes(data)] for cx, data in pdvs] == primitive.presentation_data_value_list
    assert dimse_wire.split_pdvs(bytearray(encoded[6:-1])) is None  # cut short: malformed


def test_store_response_pdu_is_byte_for_byte_pynetdicoms() -> None:
    from pynetdicom.pdu import P_DATA_TF
    from pynetdicom.pdu_primitives import P_DATA

    command = dimse_wire.encode_store_response(7, "1.2.840.10008.5.1.4.1.1.2", "1.2.3", 0x0000)
    primitive = P_DATA()
    primitive.presentation_data_value_list = [[5, b"\x03" + command]]
    pdu = P_DATA_TF()
    pdu.from_primitive(primitive)
    assert dimse_wire.p_data_tf(5, command) == pdu.encode()


def test_spool_moves_a_large_data_set_to_a_file(tmp_path: Any) -> None:
    import io
    import os

    spool = dimse_wire.Spool(str(tmp_path), 1000)
    assert isinstance(spool, io.BytesIO)  # what pynetdicom's C_STORE.DataSet insists on
    data = os.urandom(5000)
    for start in range(0, len(data), 700):
        spool.write(memoryview(data)[start:start + 700])
    assert spool.spooled and spool.tell() == len(data)
    spool.seek(0)
    assert spool.read(10) == data[:10] and spool.getvalue() == data and spool.tell() == 10
    assert os.fstat(spool.fileno()).st_size == len(data)
    with pytest.raises(ValueError):
        spool.getbuffer()
    assert list(tmp_path.iterdir()) == []  # an unnamed file: nothing to clean up, even after a crash
    small = dimse_wire.Spool(str(tmp_path), 1000)
    small.write(b"abc")
    assert not small.spooled and small.getvalue() == b"abc"
