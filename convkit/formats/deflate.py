"""Gzip output on every core: pigz's scheme with ISA-L's deflate (igzip).

The uncompressed stream is cut into pieces of PIECE_BYTES. Each piece is deflated on a
worker thread (ISA-L releases the GIL), primed with the 32 KiB before it so that matches
still reach back across the cut, and ended with a sync flush; the pieces are joined in
order into one gzip member (one deflate stream, as any gzip reader expects) and their
CRC-32s combined. Within a piece, a sync flush every FLUSH_BYTES starts a new deflate block
with its own Huffman tables: at ISA-L level 2 that makes noisy CT data about 1.5 % smaller
than one block per piece, at the same speed.

A file header (the NIfTI header) is a deflate block of its own and the data after it are
not primed with it, so the data can be compressed while they are still being decoded,
before the header is known (DeflatingStream, write_gzip). The bytes written depend on the
header, the data, the level and the two sizes only: never on how the data were fed, on the
number of threads or on their timing.
"""

from __future__ import annotations

import shutil
import struct
import tempfile
from collections import deque
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import Any, BinaryIO, Protocol, TypeVar

from convkit import cores

#: ISA-L level (0-3). On a 512x512x300 CT with noise, level 2 with a block every 64 KiB is
#: 1.04x the size of zlib level 6 (dcm2niix's default) at 1/20 of its time; level 1 is 1.07x
#: at the same speed and level 3 is both slower and larger (benchmarks/README.md).
GZIP_LEVEL = 2
#: Uncompressed bytes per piece (one task for a worker thread).
PIECE_BYTES = 1 << 20
#: Uncompressed bytes per deflate block within a piece.
FLUSH_BYTES = 64 << 10
_WINDOW = 32 << 10  # deflate's window: what a piece is primed with
T = TypeVar("T")
# ID1 ID2, deflate, no flags, no modification time, no extra flags, OS unknown (as pigz -n).
_GZIP_HEADER = b"\x1f\x8b\x08\x00\x00\x00\x00\x00\x00\xff"


class Writable(Protocol):
    """Where compressed bytes go: a binary file, or formats.output.HashingWriter."""

    def write(self, data: bytes, /) -> int: ...


def worker_count() -> int:
    """The threads to compress on: what one series may use (convkit.cores)."""
    return cores.threads()


def deflate_piece(piece: memoryview, primer: memoryview | None, level: int,
                  last: bool) -> tuple[bytes, int]:
    """(raw deflate of piece, its CRC-32): primed with `primer` (the data just before it), a
    block per FLUSH_BYTES, ended with a sync flush, or with the final block when last."""
    from isal import isal_zlib

    if primer is not None:
        compressor = isal_zlib.compressobj(level, isal_zlib.DEFLATED, -15, zdict=primer)
    else:
        compressor = isal_zlib.compressobj(level, isal_zlib.DEFLATED, -15)
    parts = []
    for start in range(0, len(piece), FLUSH_BYTES):
        parts.append(compressor.compress(piece[start:start + FLUSH_BYTES]))
        if not last or start + FLUSH_BYTES < len(piece):
            parts.append(compressor.flush(isal_zlib.Z_SYNC_FLUSH))
    if last:
        parts.append(compressor.flush(isal_zlib.Z_FINISH))
    return b"".join(parts), isal_zlib.crc32(piece)


class DeflatingStream:
    """The raw deflate stream of some data, compressed on worker threads while the data are
    still being produced (decoded): feed() the data in order, then write_gzip() it.

    feed() keeps views of large buffers instead of copying them: what is fed must stay
    unchanged until the stream is written or cancelled (a volume being read is). Compressed
    pieces are spilled in order to an anonymous temporary file in `spill_dir` (the output's
    folder: the same disk the output goes to), so that they do not add to the memory the
    volume takes. `source` names the array the data are the bytes of (set by the producer):
    a writer uses the stream only for that very array.
    """

    def __init__(self, level: int = GZIP_LEVEL, threads: int | None = None,
                 spill_dir: Path | None = None) -> None:
        self.level = level
        self.source: object = None
        self._threads = threads or worker_count()
        # one thread: the pieces are deflated as they are fed, on this thread (--jobs 1
        # keeps to one core; a second thread would only hand the work back and forth)
        self._pool: ThreadPoolExecutor | _ThisThread = _ThisThread() if self._threads == 1 \
            else ThreadPoolExecutor(max_workers=self._threads, thread_name_prefix="convkit-gzip")
        self._pending: deque[tuple[Future[tuple[bytes, int]], int]] = deque()
        self._spill_dir = spill_dir
        self._spill: BinaryIO | None = None
        self._spill_failed = False
        self._small = bytearray()  # the start of the next piece, from small feeds
        self._held: memoryview | None = None  # a full piece, submitted once it is not last
        self._primer: memoryview | None = None  # the end of the piece before the held one
        self.crc = 0
        self.size = 0  # uncompressed bytes fed
        self._closed = False

    def feed(self, data: bytes | bytearray | memoryview) -> None:
        """Add data to the stream (kept by reference; see the class)."""
        if self._closed:
            raise ValueError("the deflate stream was already written or cancelled")
        view = memoryview(data).cast("B")
        self.size += len(view)
        if self._small:
            take = min(len(view), PIECE_BYTES - len(self._small))
            self._small += view[:take]
            view = view[take:]
            if len(self._small) == PIECE_BYTES:
                self._hold(memoryview(bytes(self._small)))
                self._small = bytearray()
        while len(view) >= PIECE_BYTES:
            self._hold(view[:PIECE_BYTES])
            view = view[PIECE_BYTES:]
        if len(view):
            self._small += view

    def write_to(self, handle: Writable) -> None:
        """Finish the stream and write all of it (raw deflate, ending with the final block)
        to handle; the stream is then closed."""
        if self._closed:
            raise ValueError("the deflate stream was already written or cancelled")
        tail = memoryview(bytes(self._small)) if self._small else None
        self._small = bytearray()
        if self._held is not None:
            self._submit(self._held, last=tail is None)
        if tail is not None or self._held is None:
            self._submit(tail if tail is not None else memoryview(b""), last=True)
        self._held = None
        try:
            if self._spill is not None:
                self._spill.seek(0)
                shutil.copyfileobj(self._spill, handle, 1 << 20)
            while self._pending:
                handle.write(self._oldest())
        finally:
            self.cancel()

    def cancel(self) -> None:
        """Stop and free everything (the stream cannot be written afterwards)."""
        for future, _ in self._pending:
            future.cancel()
        self._pending.clear()
        self._pool.shutdown(wait=True)
        if self._spill is not None:
            self._spill.close()
            self._spill = None
        self._closed = True

    def _hold(self, piece: memoryview) -> None:
        if self._held is not None:
            self._submit(self._held, last=False)
        self._held = piece

    def _submit(self, piece: memoryview, last: bool) -> None:
        future = self._pool.submit(deflate_piece, piece, self._primer, self.level, last)
        self._pending.append((future, len(piece)))
        self._primer = piece[-_WINDOW:] if len(piece) >= _WINDOW else None
        while len(self._pending) > 2 * self._threads and self._can_spill():
            self._spill.write(self._oldest())  # type: ignore[union-attr]  # _can_spill

    def _can_spill(self) -> bool:
        """Whether there is a spill file (made on first use: in spill_dir, else in the
        temporary folder; without either the pieces stay in memory)."""
        for folder in (self._spill_dir, None):
            if self._spill is not None or self._spill_failed:
                break
            try:
                self._spill = tempfile.TemporaryFile(dir=folder)
            except OSError:
                self._spill_failed = folder is None
        return self._spill is not None

    def _oldest(self) -> bytes:
        from isal import isal_zlib

        future, length = self._pending.popleft()
        compressed, crc = future.result()
        self.crc = isal_zlib.crc32_combine(self.crc, crc, length)
        return compressed


class _ThisThread:
    """The part of ThreadPoolExecutor that DeflatingStream uses, running each task at once on
    the calling thread."""

    def submit(self, function: Callable[..., T], /, *args: Any) -> Future[T]:
        future: Future[T] = Future()
        try:
            future.set_result(function(*args))
        except Exception as exc:  # as a pool would: raised by result()
            future.set_exception(exc)
        return future

    def shutdown(self, wait: bool = True) -> None:
        return None


def write_gzip(handle: Writable, prefix: bytes, stream: DeflatingStream) -> None:
    """One gzip member: prefix (a file header) deflated on its own, then the stream's data.

    The prefix is a deflate block of its own and the data are not primed with it, so the
    data can be compressed before the prefix is known (DeflatingStream)."""
    from isal import isal_zlib

    handle.write(_GZIP_HEADER)
    head, head_crc = deflate_piece(memoryview(prefix), None, stream.level, last=False)
    handle.write(head)
    size = stream.size
    stream.write_to(handle)
    crc = isal_zlib.crc32_combine(head_crc, stream.crc, size)
    handle.write(struct.pack("<II", crc, (len(prefix) + size) & 0xFFFFFFFF))


def gzip_bytes(handle: Writable, prefix: bytes, data: bytes | bytearray | memoryview,
               level: int = GZIP_LEVEL, threads: int | None = None) -> None:
    """write_gzip of data at hand (the data are not copied)."""
    stream = DeflatingStream(level, threads)
    try:
        stream.feed(data)
    except BaseException:
        stream.cancel()
        raise
    write_gzip(handle, prefix, stream)
