"""PNG encoding of uint8 RGB arrays with zlib and struct (no imaging library)."""

from __future__ import annotations

import struct
import zlib

import numpy as np

#: zlib level for PNG data: 6 is zlib's default; quick-look images are small.
PNG_ZLIB_LEVEL = 6
_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def encode_png(rgb: np.ndarray, text: dict[str, str] | None = None) -> bytes:
    """PNG bytes of an (H, W, 3) uint8 RGB (or (H, W) grey) array.

    Rows are written with filter type 'Up' (a good, cheap predictor for images
    with large flat areas). text: tEXt chunks (Latin-1 keys and values), e.g.
    {"Software": "convkit"}.
    """
    array = np.asarray(rgb)
    if array.dtype != np.uint8 or array.ndim not in (2, 3) or (
            array.ndim == 3 and array.shape[2] != 3):
        raise ValueError("encode_png expects an (H, W, 3) or (H, W) uint8 array")
    height, width = array.shape[:2]
    colour_type = 2 if array.ndim == 3 else 0
    rows = array.reshape(height, -1)
    up = rows.copy()
    up[1:] -= rows[:-1]  # uint8 arithmetic wraps modulo 256, as PNG's filter does
    raw = np.empty((height, rows.shape[1] + 1), dtype=np.uint8)
    raw[:, 0] = 2  # filter 'Up' (row 0: the row above counts as zeros)
    raw[:, 1:] = up
    chunks = [_chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, colour_type, 0, 0, 0))]
    for key, value in (text or {}).items():
        chunks.append(_chunk(b"tEXt", key.encode("latin-1") + b"\x00" +
                             value.encode("latin-1", "replace")))
    chunks.append(_chunk(b"IDAT", zlib.compress(raw.tobytes(), PNG_ZLIB_LEVEL)))
    chunks.append(_chunk(b"IEND", b""))
    return _SIGNATURE + b"".join(chunks)


def _chunk(kind: bytes, data: bytes) -> bytes:
    return (struct.pack(">I", len(data)) + kind + data
            + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF))
