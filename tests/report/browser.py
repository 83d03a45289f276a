"""Headless Chromium (Debian's `chromium` package) for the report tests, and a PNG reader.

Chromium runs with `--no-sandbox` because CI runs the tests as root, where Chromium's sandbox
refuses to start; the pages rendered are the report's own files, which fetch nothing.
"""

from __future__ import annotations

import shutil
import struct
import subprocess
import tempfile
import zlib
from pathlib import Path

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
WHY_ABSENT = "chromium is not installed (apt-get install chromium; .ci/run installs it)"


def _run(args: list[str]) -> subprocess.CompletedProcess:
    with tempfile.TemporaryDirectory(prefix="probe-chromium-") as profile:
        return subprocess.run([CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--no-first-run",
                               "--hide-scrollbars", f"--user-data-dir={profile}", *args],
                              capture_output=True, timeout=120, check=True)


def dump_dom(page: Path) -> str:
    """The DOM Chromium built from the page, serialised (`--dump-dom`)."""
    return _run(["--dump-dom", page.resolve().as_uri()]).stdout.decode("utf-8")


def screenshot(page: Path, out: Path, width: int, height: int, scale: float = 1.0) -> Path:
    _run([f"--window-size={width},{height}", f"--force-device-scale-factor={scale}",
          f"--screenshot={out}", page.resolve().as_uri()])
    return out


def read_png(path: Path) -> tuple[int, int, list[bytes]]:
    """(width, height, rows of RGB(A) bytes) of an 8-bit, non-interlaced RGB or RGBA PNG: the
    filters of the PNG specification (section 9), nothing more."""
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n", "not a PNG"
    pos, chunks, header = 8, [], None
    while pos < len(data):
        length, kind = struct.unpack(">I4s", data[pos:pos + 8])
        body = data[pos + 8:pos + 8 + length]
        if kind == b"IHDR":
            header = struct.unpack(">IIBBBBB", body)
        elif kind == b"IDAT":
            chunks.append(body)
        pos += 12 + length
    width, height, depth, colour, _compression, _filter, interlace = header
    assert depth == 8 and colour in (2, 6) and interlace == 0, f"unsupported PNG {header}"
    channels = 3 if colour == 2 else 4
    raw = zlib.decompress(b"".join(chunks))
    stride = width * channels
    rows, previous = [], bytearray(stride)
    for y in range(height):
        kind, line = raw[y * (stride + 1)], bytearray(raw[y * (stride + 1) + 1:(y + 1) * (stride + 1)])
        for i in range(stride):
            left = line[i - channels] if i >= channels else 0
            up = previous[i]
            upper_left = previous[i - channels] if i >= channels else 0
            if kind == 1:
                line[i] = (line[i] + left) & 0xFF
            elif kind == 2:
                line[i] = (line[i] + up) & 0xFF
            elif kind == 3:
                line[i] = (line[i] + (left + up) // 2) & 0xFF
            elif kind == 4:
                p = left + up - upper_left
                pa, pb, pc = abs(p - left), abs(p - up), abs(p - upper_left)
                line[i] = (line[i] + (left if pa <= pb and pa <= pc else up if pb <= pc else upper_left)) & 0xFF
        rows.append(bytes(line))
        previous = line
    return width, height, [bytes(row) if channels == 3 else bytes(b for j, b in enumerate(row) if j % 4 != 3)
                           for row in rows]
