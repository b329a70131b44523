"""PNG encoding of uint8 RGB arrays with zlib and struct (no imaging library).

Kept rather than Pillow's PNG encoder: on a 1384 x 1497 CT mosaic, Pillow took 290 ms at
compress_level 1 (658 kB) and 385 ms at 6 (545 kB), this encoder 50 ms (591 kB).
"""

from __future__ import annotations

import struct
import zlib

import numpy as np

#: Compression level of the PNG data stream: isal's (0..3) when python-isal is installed
#: (a convkit dependency: about 15x faster than zlib's default for a similar size), else zlib's.
PNG_ISAL_LEVEL = 2
PNG_ZLIB_LEVEL = 6
_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def encode_png(rgb: np.ndarray, text: dict[str, str] | None = None) -> bytes:
    """PNG bytes of an (H, W, 3) uint8 RGB (or (H, W) grey) array.

    Rows are written unfiltered (filter type 0: on CT previews, with their noise,
    the 'Up' predictor compressed worse). text: tEXt chunks (Latin-1 keys and values),
    e.g. {"Software": "convkit"}.
    """
    array = np.asarray(rgb)
    if array.dtype != np.uint8 or array.ndim not in (2, 3) or (
            array.ndim == 3 and array.shape[2] != 3):
        raise ValueError("encode_png expects an (H, W, 3) or (H, W) uint8 array")
    height, width = array.shape[:2]
    colour_type = 2 if array.ndim == 3 else 0
    raw = np.zeros((height, width * (3 if colour_type == 2 else 1) + 1), dtype=np.uint8)
    raw[:, 1:] = array.reshape(height, -1)  # column 0: filter type 0 (none) on every row
    chunks = [_chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, colour_type, 0, 0, 0))]
    for key, value in (text or {}).items():
        chunks.append(_chunk(b"tEXt", key.encode("latin-1") + b"\x00" +
                             value.encode("latin-1", "replace")))
    chunks.append(_chunk(b"IDAT", _compress(raw.tobytes())))
    chunks.append(_chunk(b"IEND", b""))
    return _SIGNATURE + b"".join(chunks)


def _compress(data: bytes) -> bytes:
    """A zlib stream (RFC 1950), as PNG requires."""
    try:
        from isal import isal_zlib
    except ImportError:
        return zlib.compress(data, PNG_ZLIB_LEVEL)
    return isal_zlib.compress(data, PNG_ISAL_LEVEL)


def _chunk(kind: bytes, data: bytes) -> bytes:
    return (struct.pack(">I", len(data)) + kind + data
            + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF))
