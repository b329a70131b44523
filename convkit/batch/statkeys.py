"""When a file's stat key (size, mtime_ns, inode, ctime_ns) proves it unchanged since it was
looked at: the outputs a rerun need not hash again (work.outputs_intact) and the input tree
of an unchanged rerun (batch.rerun). Standard library only: the no-op rerun imports it.

Any write changes a file's ctime, which no user can set back (touch and os.utime restore
the mtime, not the ctime). On a file system that keeps whole seconds, a key taken within
RACY_NS of its ctime is not trusted (a write in the same second would leave the ctime as
it was), as git does with its index. Elsewhere the ctime has the kernel clock's tick (a few
ms; exact on Linux 6.13+), so the one write a key can miss is one within that tick after
convkit took the key.
"""

from __future__ import annotations

import os

from convkit.batch.manifest import Output

#: On a file system with whole-second timestamps, a stat key is trusted only when taken
#: this long after the file's ctime.
RACY_NS = 2_000_000_000
_SECOND_NS = 1_000_000_000


def stat_key(info: os.stat_result) -> tuple[int, int, int, int]:
    """(size, mtime_ns, inode, ctime_ns): what any change to a file changes."""
    return info.st_size, info.st_mtime_ns, info.st_ino, info.st_ctime_ns


def trusted(ctime_ns: int, checked_ns: int) -> bool:
    """Whether a key taken at checked_ns (the clock) of a file with this ctime tells every
    later write: taken after the ctime, RACY_NS after it where the file system keeps whole
    seconds."""
    margin = RACY_NS if ctime_ns % _SECOND_NS == 0 else 0
    return checked_ns - ctime_ns >= margin


def unchanged_since_hashed(output: Output, info: os.stat_result) -> bool:
    """The file has not been written since output.sha256 was taken: the same stat key,
    taken after its ctime (RACY_NS after it where the file system keeps whole seconds)."""
    if output.stat is None:
        return False
    mtime_ns, inode, ctime_ns, checked_ns = output.stat
    return ((info.st_mtime_ns, info.st_ino, info.st_ctime_ns) == (mtime_ns, inode, ctime_ns)
            and trusted(ctime_ns, checked_ns))


__all__ = ["RACY_NS", "stat_key", "trusted", "unchanged_since_hashed"]
