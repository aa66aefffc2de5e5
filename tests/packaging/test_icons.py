"""The icons rendered from resources/pacspull.svg: current with the SVG, and well-formed containers."""

from __future__ import annotations

import struct
from pathlib import Path

from packaging_helpers import load
from PySide6.QtGui import QImage

render_icons = load("render_icons")
bundle = load("bundle")


def _max_difference(a: QImage, b: QImage) -> int:
    """The largest difference of any channel of any pixel (images of the same size)."""
    assert a.size() == b.size()
    worst = 0
    for y in range(a.height()):
        for x in range(a.width()):
            pa, pb = a.pixel(x, y), b.pixel(x, y)
            worst = max(worst, *(abs(((pa >> shift) & 0xFF) - ((pb >> shift) & 0xFF)) for shift in (0, 8, 16, 24)))
    return worst


def test_committed_icons_match_the_svg(qapp, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    """After editing the SVG, run `python build_scripts/render_icons.py` and commit the results."""
    png, ico, icns = render_icons.render_all(tmp_path)
    committed = QImage(str(bundle.ICON_PNG)).convertToFormat(QImage.Format.Format_ARGB32)
    fresh = QImage(str(png)).convertToFormat(QImage.Format.Format_ARGB32)
    assert committed.width() == render_icons.PNG_SIZE
    assert _max_difference(committed, fresh) <= 8, "resources/pacspull.png is stale: re-run render_icons.py"
    assert bundle.ICON_ICO.is_file() and bundle.ICON_ICNS.is_file()


def test_ico_holds_every_size(qapp, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    for path in (bundle.ICON_ICO, render_icons.render_all(tmp_path)[1]):
        data = path.read_bytes()
        reserved, kind, count = struct.unpack_from("<HHH", data)
        assert (reserved, kind, count) == (0, 1, len(render_icons.ICO_SIZES))
        sizes = []
        for index in range(count):
            width, height, _, _, planes, bits, length, offset = struct.unpack_from("<BBBBHHII", data, 6 + 16 * index)
            assert (planes, bits) == (1, 32) and offset + length <= len(data)
            payload = data[offset:offset + length]
            side = width or 256
            if side >= 256:
                assert payload.startswith(b"\x89PNG")
            else:  # a bottom-up 32-bit DIB with an AND mask: height is doubled
                assert struct.unpack_from("<Iii", payload) == (40, side, side * 2)
            sizes.append(side)
        assert sizes == list(render_icons.ICO_SIZES)
        image = QImage(str(path))
        assert not image.isNull()


def test_icns_holds_every_element(qapp, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    for path in (bundle.ICON_ICNS, render_icons.render_all(tmp_path)[2]):
        data = path.read_bytes()
        assert data[:4] == b"icns" and struct.unpack_from(">I", data, 4)[0] == len(data)
        kinds, offset = [], 8
        while offset < len(data):
            kind, length = data[offset:offset + 4], struct.unpack_from(">I", data, offset + 4)[0]
            assert data[offset + 8:offset + 12] == b"\x89PNG"
            kinds.append(kind)
            offset += length
        assert offset == len(data)
        assert kinds == [kind for kind, _ in render_icons.ICNS_TYPES]
