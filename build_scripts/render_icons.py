"""Render resources/pacspull.svg to the icon files the bundles need: .png, .ico (Windows), .icns (macOS).

    python build_scripts/render_icons.py           # write resources/pacspull.{png,ico,icns}
    python build_scripts/render_icons.py --out DIR # write them elsewhere (tests compare with the committed ones)

Every size is rendered from the SVG itself (not scaled down from one big bitmap), so small icons stay
sharp. Qt's SVG renderer (QtSvg ships with PySide6-Essentials) draws; the .ico and .icns containers are
written here in plain Python, so no imaging library is needed. The outputs are committed (build.py
renders them only when one is missing); after editing the SVG, run this script and commit the results
(tests/packaging checks that the committed PNG still matches the SVG).
"""

from __future__ import annotations

import argparse
import os
import struct
import sys
from collections.abc import Sequence
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import bundle  # noqa: E402

PNG_SIZE = 256
# Windows picks from these for the taskbar, Explorer views, shortcuts and title bars at any DPI.
ICO_SIZES = (16, 20, 24, 32, 40, 48, 64, 96, 128, 256)
# icns element types and their pixel sizes (PNG payloads, macOS 10.7+); @2x variants included.
ICNS_TYPES = (
    (b"icp4", 16), (b"icp5", 32), (b"ic11", 32), (b"ic12", 64), (b"ic07", 128),
    (b"ic13", 256), (b"ic08", 256), (b"ic14", 512), (b"ic09", 512), (b"ic10", 1024),
)


def _renderer():  # type: ignore[no-untyped-def]
    """A QSvgRenderer for the icon (a QGuiApplication first, offscreen, if there is none)."""
    os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
    from PySide6.QtGui import QGuiApplication
    from PySide6.QtSvg import QSvgRenderer

    if QGuiApplication.instance() is None:
        _renderer.app = QGuiApplication([sys.argv[0]])  # type: ignore[attr-defined]  # kept alive
    renderer = QSvgRenderer(str(bundle.ICON_SVG))
    if not renderer.isValid():
        raise SystemExit(f"render_icons: {bundle.ICON_SVG} is not a valid SVG")
    return renderer


def render_argb(renderer, size: int):  # type: ignore[no-untyped-def]
    """The icon as a ``size`` x ``size`` QImage in Format_ARGB32 (straight alpha)."""
    from PySide6.QtCore import QRectF, Qt
    from PySide6.QtGui import QImage, QPainter

    image = QImage(size, size, QImage.Format.Format_ARGB32_Premultiplied)
    image.fill(Qt.GlobalColor.transparent)
    painter = QPainter(image)
    painter.setRenderHint(QPainter.RenderHint.Antialiasing)
    painter.setRenderHint(QPainter.RenderHint.SmoothPixmapTransform)
    renderer.render(painter, QRectF(0, 0, size, size))
    painter.end()
    return image.convertToFormat(QImage.Format.Format_ARGB32)


def png_bytes(image) -> bytes:  # type: ignore[no-untyped-def]
    """``image`` encoded as PNG."""
    from PySide6.QtCore import QBuffer, QByteArray, QIODevice

    data = QByteArray()
    buffer = QBuffer(data)
    buffer.open(QIODevice.OpenModeFlag.WriteOnly)
    if not image.save(buffer, "PNG"):
        raise SystemExit("render_icons: Qt could not encode a PNG")
    buffer.close()
    return bytes(data.data())


def dib_bytes(image) -> bytes:  # type: ignore[no-untyped-def]
    """``image`` as an ICO bitmap entry: BITMAPINFOHEADER, bottom-up BGRA rows, an all-clear AND mask.

    Format_ARGB32 is stored as B, G, R, A bytes on little-endian machines, which is exactly the DIB's
    32-bit layout; the alpha channel does the masking, so the 1-bit AND mask stays zero.
    """
    width, height = image.width(), image.height()
    stride = image.bytesPerLine()
    pixels = bytes(image.constBits())[: stride * height]
    if sys.byteorder != "little":
        raise SystemExit("render_icons: writing .ico bitmaps assumes a little-endian machine")
    rows = [pixels[y * stride: y * stride + width * 4] for y in range(height)]
    xor = b"".join(reversed(rows))
    mask_stride = ((width + 31) // 32) * 4
    mask = bytes(mask_stride * height)
    header = struct.pack("<IiiHHIIiiII", 40, width, height * 2, 1, 32, 0, len(xor) + len(mask), 0, 0, 0, 0)
    return header + xor + mask


def ico_bytes(entries: Sequence[tuple[int, bytes]]) -> bytes:
    """An .ico file holding ``(size, payload)`` entries (payload: a DIB entry or PNG data)."""
    header = struct.pack("<HHH", 0, 1, len(entries))
    offset = len(header) + 16 * len(entries)
    directory, blobs = b"", b""
    for size, payload in entries:
        side = 0 if size >= 256 else size  # 0 means 256 in an ICONDIRENTRY
        directory += struct.pack("<BBBBHHII", side, side, 0, 0, 1, 32, len(payload), offset)
        blobs += payload
        offset += len(payload)
    return header + directory + blobs


def icns_bytes(elements: Sequence[tuple[bytes, bytes]]) -> bytes:
    """An .icns file holding ``(type, PNG data)`` elements."""
    body = b"".join(kind + struct.pack(">I", 8 + len(data)) + data for kind, data in elements)
    return b"icns" + struct.pack(">I", 8 + len(body)) + body


def icon_paths(out_dir: Path = bundle.RESOURCES) -> tuple[Path, Path, Path]:
    """Where the .png, .ico and .icns go."""
    return (out_dir / bundle.ICON_PNG.name, out_dir / bundle.ICON_ICO.name, out_dir / bundle.ICON_ICNS.name)


def render_all(out_dir: Path = bundle.RESOURCES) -> tuple[Path, Path, Path]:
    """Write the .png, .ico and .icns into ``out_dir``; return their paths."""
    renderer = _renderer()
    cache: dict[int, object] = {}

    def image(size: int):  # type: ignore[no-untyped-def]
        if size not in cache:
            cache[size] = render_argb(renderer, size)
        return cache[size]

    png, ico, icns = icon_paths(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    png.write_bytes(png_bytes(image(PNG_SIZE)))
    # Vista and later read PNG entries; the classic bitmap for the small sizes suits every other reader
    # (resource editors, Inno Setup's wizard), as Microsoft's own icons do.
    ico.write_bytes(ico_bytes([
        (size, png_bytes(image(size)) if size >= 256 else dib_bytes(image(size))) for size in ICO_SIZES
    ]))
    icns.write_bytes(icns_bytes([(kind, png_bytes(image(size))) for kind, size in ICNS_TYPES]))
    return png, ico, icns


def main(argv: Sequence[str] | None = None) -> int:
    """Render the icons."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=bundle.RESOURCES, metavar="DIR",
                        help="folder to write into (default: resources/)")
    args = parser.parse_args(argv)
    for path in render_all(args.out.resolve()):
        print(f"render_icons: wrote {path} ({path.stat().st_size:,} bytes)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
