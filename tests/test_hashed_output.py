"""Outputs hashed as they are written (formats.output.hashed_file): the recorded sha256 is
the file's, for .nii and .nii.gz, and it is forgotten once the file is not the one written."""

from __future__ import annotations

import hashlib
import os
import signal

import numpy as np
import pytest

from convkit.formats.nifti import write_nifti
from convkit.formats.output import hashed_file, recorded_sha256
from convkit.volume import Volume


@pytest.mark.parametrize("threaded", [True, False])
def test_recorded_sha256_is_the_files(tmp_path, threaded):
    rng = np.random.default_rng(5)
    pieces = [rng.bytes(n) for n in (10, 3 << 20, 1, 1 << 20)]  # small and threaded writes
    path = tmp_path / "out.bin"
    with hashed_file(path, threaded) as handle:
        for piece in pieces:
            handle.write(memoryview(piece))
    assert recorded_sha256(os.stat(path)) == hashlib.sha256(b"".join(pieces)).hexdigest()


@pytest.mark.parametrize("name", ["v.nii", "v.nii.gz"])
def test_nifti_writes_are_hashed_and_a_rename_keeps_the_hash(tmp_path, name):
    data = np.random.default_rng(1).integers(0, 4000, size=(64, 64, 300), dtype=np.int16)
    write_nifti(Volume(np.asfortranarray(data), np.eye(4)), tmp_path / name)
    moved = tmp_path / f"moved-{name}"
    os.rename(tmp_path / name, moved)
    assert recorded_sha256(os.stat(moved)) == hashlib.sha256(moved.read_bytes()).hexdigest()


def test_a_file_changed_after_writing_has_no_recorded_hash(tmp_path):
    path = tmp_path / "out.bin"
    with hashed_file(path) as handle:
        handle.write(b"written by convkit")
    with open(path, "ab") as other:
        other.write(b" and then by someone else")
    assert recorded_sha256(os.stat(path)) is None


@pytest.mark.skipif(not hasattr(os, "fork"), reason="fork is POSIX")
def test_a_forked_child_hashes_with_a_pool_of_its_own(tmp_path):
    """The parent's hashing thread does not exist in a forked child (a decode or scan
    worker): the child must not queue work for it and wait forever."""
    with hashed_file(tmp_path / "parent.bin") as handle:
        handle.write(bytes(2 << 20))  # starts the parent's hashing thread
    pid = os.fork()
    if pid == 0:  # the child: hash a large write, exit 0 when its digest is right
        ok = False
        signal.alarm(30)  # a child waiting for a thread that is not there dies of SIGALRM
        try:
            data = bytes(range(256)) * 8192
            with hashed_file(tmp_path / "child.bin") as handle:
                handle.write(data)
            ok = recorded_sha256(os.stat(tmp_path / "child.bin")) == \
                hashlib.sha256(data).hexdigest()
        finally:
            os._exit(0 if ok else 1)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0
