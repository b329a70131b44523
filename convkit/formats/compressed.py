"""Compressed voxel data (gzip, zlib, bzip2) read into exactly the bytes a header describes.

Bounded: no more than the header's size is decompressed and kept, so a
decompression bomb stops where the header says the data end. Checked: the stream
is read to its end, so that gzip's CRC-32 and length (ISIZE), zlib's Adler-32 and
bzip2's CRC are verified. nibabel and pynrrd stop at the bytes they need (or never look at the
trailer), so a corrupt deflate stream that still yields the right number of bytes
went through them as different voxels and exit 0.
"""

from __future__ import annotations

import bz2
import zlib
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO, cast

import numpy as np

from convkit.errors import InputError, exception_reason

#: The most deflate can expand (1032:1): a gzip stream cannot hold more than this
#: times its own size, whatever its header says.
DEFLATE_MAX_RATIO = 1032
#: Decompressed bytes beyond the image data that are read (to reach the trailer and
#: its CRC) and discarded, at most; with NRRD's byte skip -1, the most kept before the
#: data.
MAX_TRAILING_BYTES = 1 << 24
#: Compressed bytes read, and decompressed bytes produced, per step.
_CHUNK = 1 << 20
#: Magic bytes that start another member (concatenated gzip or bzip2 streams; zlib has none).
_MAGIC = {"gzip": b"\x1f\x8b", "bzip2": b"BZh"}


class StreamError(Exception):
    """A compressed stream that is corrupt, truncated or longer than described (one line).
    total: decompressed bytes read before it was found (set by stream_length)."""

    total = 0


class EndedEarly(StreamError):
    """The stream stops before its end (a truncated file)."""


@contextmanager
def data_read_errors(path: Path, kind: str) -> Iterator[None]:
    """Damaged streams and OS errors while reading voxel data -> one InputError (exit 3):
    '{path}: cannot read {kind}: {reason}'."""
    try:
        yield
    except StreamError as exc:
        raise InputError(f"{path}: cannot read {kind}: {exc}",
                         "the file is damaged: copy or export it again") from exc
    except OSError as exc:
        raise InputError(f"{path}: cannot read {kind}: {exception_reason(exc)}",
                         "check the file and its data file") from exc


def gzip_can_hold(compressed_bytes: int, nbytes: int) -> bool:
    """False when compressed_bytes of deflate data cannot expand to nbytes (a damaged or
    hostile header: the file cannot hold the data, so nothing need be decompressed)."""
    return nbytes <= DEFLATE_MAX_RATIO * compressed_bytes + _CHUNK


def read_exact(handle: IO[bytes], nbytes: int) -> np.ndarray:
    """Exactly nbytes from handle's position (a uint8 array); StreamError when the file
    ends first."""
    out = np.empty(nbytes, np.uint8)
    view, filled = out.data, 0
    while filled < nbytes:
        got = handle.readinto(view[filled:])  # type: ignore[attr-defined]
        if not got:
            raise StreamError(f"truncated: the file ends after {filled} of {nbytes} bytes")
        filled += got
    return out


def read_head(handle: IO[bytes], compression: str, nbytes: int) -> bytes:
    """At most the first nbytes of a compressed stream (fewer when it is shorter); nothing
    past them is decompressed, so no CRC is checked here. Raises StreamError."""
    out = bytearray()
    try:
        for chunk in _chunks(handle, compression, nbytes):
            out += chunk
            if len(out) >= nbytes:
                break
    except EndedEarly:
        pass
    return bytes(out[:nbytes])


def read_decompressed(handle: IO[bytes], compression: str, nbytes: int, skip: int = 0,
                      extra_ok: bool = False) -> np.ndarray:
    """nbytes decompressed bytes (a uint8 array) after skip bytes, from handle's position.

    compression: 'gzip', 'zlib' (MetaImage: a zlib or gzip header) or 'bzip2'
    (concatenated gzip and bzip2 members are followed). The stream is
    read to its end (its CRC checked); data beyond skip + nbytes is an error unless
    extra_ok (then up to MAX_TRAILING_BYTES). skip -1: the data are the last nbytes of
    the stream. Raises StreamError.
    """
    if skip == -1:
        return _read_tail(handle, compression, nbytes)
    out = np.empty(nbytes, np.uint8)  # pages are committed as they are filled
    view = out.data
    filled, to_skip, trailing = 0, skip, 0
    try:
        for chunk in _chunks(handle, compression):
            if to_skip:
                cut = min(to_skip, len(chunk))
                chunk, to_skip = chunk[cut:], to_skip - cut
            take = min(len(chunk), nbytes - filled)
            view[filled:filled + take] = chunk[:take]
            filled += take
            trailing += len(chunk) - take
            if trailing and not extra_ok:
                raise StreamError(f"Size of the data does not equal what its header describes "
                                  f"(the {compression} stream holds more than {skip + nbytes} "
                                  "bytes)")
            if trailing > MAX_TRAILING_BYTES:
                raise StreamError(f"the {compression} stream holds more than "
                                  f"{MAX_TRAILING_BYTES} bytes beyond the image data")
    except EndedEarly as exc:
        if filled < nbytes:
            raise StreamError(f"truncated {compression} stream: {skip - to_skip + filled} of "
                              f"{skip + nbytes} bytes") from exc
        raise StreamError(f"truncated {compression} stream (it ends before its CRC)") from exc
    if filled < nbytes:
        raise StreamError(f"Size of the data does not equal what its header describes (the "
                          f"{compression} stream holds {skip - to_skip + filled} of "
                          f"{skip + nbytes} bytes)")
    return out


def stream_length(handle: IO[bytes], compression: str, limit: int) -> int:
    """Decompressed bytes of the stream from the handle's position, nothing kept; counting
    stops a little past limit (more than expected is all a size check needs to know).
    Raises StreamError when the stream is corrupt or ends early (EndedEarly)."""
    total = 0
    try:
        for chunk in _chunks(handle, compression):
            total += len(chunk)
            if total > limit:
                break
    except StreamError as exc:
        exc.total = total
        raise
    return total


def _read_tail(handle: IO[bytes], compression: str, nbytes: int) -> np.ndarray:
    kept = bytearray()
    total = 0
    try:
        for chunk in _chunks(handle, compression):
            kept += chunk
            total += len(chunk)
            if total > nbytes + MAX_TRAILING_BYTES:
                raise StreamError(f"the {compression} stream holds more than "
                                  f"{MAX_TRAILING_BYTES} bytes before the image data")
            if len(kept) > 2 * nbytes + _CHUNK:
                del kept[:len(kept) - nbytes]
    except EndedEarly as exc:
        raise StreamError(f"truncated {compression} stream ({total} bytes)") from exc
    if len(kept) < nbytes:
        raise StreamError(f"the {compression} stream holds {len(kept)} of the {nbytes} bytes its "
                          "header describes")
    return np.frombuffer(bytes(kept[len(kept) - nbytes:]), np.uint8).copy()


def _chunks(handle: IO[bytes], compression: str, size: int = _CHUNK) -> Iterator[bytes]:
    """Decompressed chunks (at most size bytes each) of every member, to the end.

    Bytes after the last member that do not start another member are ignored (as
    gzip and bzip2 tools do with padding). Raises StreamError (corrupt) or EndedEarly.
    """
    magic = _MAGIC.get(compression)
    pending = handle.read(_CHUNK)
    while True:
        decompressor = _decompressor(compression)
        start = _position(handle, len(pending))
        yield from _member(handle, decompressor, pending, compression, size, start)
        if magic is None:
            return
        pending = decompressor.unused_data or handle.read(_CHUNK)
        if len(pending) < len(magic):
            pending += handle.read(_CHUNK)
        if not pending.startswith(magic):
            return


def _member(handle: IO[bytes], decompressor, pending: bytes, compression: str, size: int,
            start: int | None = None) -> Iterator[bytes]:
    errors = _errors()
    full = False  # the last call filled its size: the decompressor may hold more output
    while not decompressor.eof:
        if not pending and not full and _needs_input(decompressor):
            pending = handle.read(_CHUNK)
            if not pending:
                raise EndedEarly(f"the {compression} stream ends early")
        try:
            chunk = decompressor.decompress(pending, size)
        except errors as exc:
            message = _corrupt(compression, exc)
            if _checksum_or_length(exc):
                message = _zlib_verdict(handle, start, compression, message)
            raise StreamError(message) from exc
        pending = getattr(decompressor, "unconsumed_tail", b"")
        full = len(chunk) == size
        if chunk:
            yield chunk


def _position(handle: IO[bytes], pending: int) -> int | None:
    """Where in the file the bytes not yet decompressed (pending of them read) start; None
    for a stream that cannot tell."""
    try:
        return handle.tell() - pending
    except (OSError, AttributeError, ValueError):
        return None


def _checksum_or_length(exc: BaseException) -> bool:
    """isal's one error for a wrong CRC-32 and a wrong length (ISIZE, Adler-32) alike."""
    return not isinstance(exc, zlib.error) and "checksum" in str(exc).lower()


def _zlib_verdict(handle: IO[bytes], start: int | None, compression: str, fallback: str) -> str:
    """The message the standard library's zlib gives for a damaged member from start: it
    tells a CRC mismatch from a length mismatch, which isal does not. Only a damaged
    stream pays for this second reading; fallback when the member cannot be read again."""
    if start is None or compression == "bzip2":
        return fallback
    decompressor = zlib.decompressobj(31 if compression == "gzip" else 47)
    try:
        handle.seek(start)
        while not decompressor.eof and (data := handle.read(_CHUNK)):
            while data and not decompressor.eof:  # bounded output, thrown away
                decompressor.decompress(data, _CHUNK)
                data = decompressor.unconsumed_tail
        while not decompressor.eof and decompressor.decompress(b"", _CHUNK):
            pass  # output held back by the bound, up to the trailer
    except zlib.error as exc:
        return _corrupt(compression, exc)
    except (OSError, ValueError):
        return fallback
    return fallback


def _needs_input(decompressor) -> bool:
    """bzip2 says whether it holds output still; zlib may, when max_length stopped it."""
    return bool(getattr(decompressor, "needs_input", True))


def _decompressor(compression: str):
    if compression == "bzip2":
        return bz2.BZ2Decompressor()
    wbits = 31 if compression == "gzip" else 47  # 47: a zlib or a gzip header
    try:
        from isal import isal_zlib  # igzip: several times faster than zlib, same checks
    except ImportError:  # pragma: no cover - isal is a dependency
        return zlib.decompressobj(wbits)
    return isal_zlib.decompressobj(wbits)


def _errors() -> tuple[type[BaseException], ...]:
    found: list[type[BaseException]] = [zlib.error, OSError, EOFError, ValueError]
    try:
        from isal import isal_zlib
    except ImportError:  # pragma: no cover
        return tuple(found)
    return (*found, cast(type[BaseException], isal_zlib.error))


def _corrupt(compression: str, exc: BaseException) -> str:
    text = str(exc).lower()
    if "data check" in text or "checksum" in text or "crc" in text:
        return f"corrupt {compression} stream (CRC mismatch)"
    if "length check" in text or "isize" in text:
        return f"corrupt {compression} stream (length mismatch)"
    lines = str(exc).strip().splitlines()
    return f"corrupt {compression} stream ({lines[0][:120] if lines else type(exc).__name__})"
