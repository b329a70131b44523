"""Staging folders left by a killed run (SIGKILL: nothing unwinds) are recognised by their
released lock and removed; a live run's, a young one and other names are left alone."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from convkit.formats.output import STALE_STAGING_AGE_S, remove_stale_staging

pytestmark = pytest.mark.skipif(not hasattr(os, "fork"), reason="flock is POSIX")

#: A process that stages a file in OUT and waits inside the staging (killed there).
_STAGER = """
import sys, time
from pathlib import Path
from convkit.formats.output import staged_files
with staged_files(Path(sys.argv[1])) as stage:
    (stage / "half.nii").write_bytes(b"partial")
    print("staged", flush=True)
    time.sleep(60)
"""


def start_stager(out: Path) -> subprocess.Popen:
    process = subprocess.Popen([sys.executable, "-c", _STAGER, str(out)],
                               stdout=subprocess.PIPE, text=True)
    assert process.stdout is not None and process.stdout.readline().strip() == "staged"
    return process


def staging_folders(out: Path) -> list[Path]:
    return [p for p in out.iterdir() if p.name.startswith(".convkit-")]


def age(path: Path) -> None:
    """Make path look older than STALE_STAGING_AGE_S."""
    old = time.time() - 2 * STALE_STAGING_AGE_S
    os.utime(path, (old, old))


def test_a_killed_runs_staging_is_removed_and_a_live_ones_is_not(tmp_path):
    (tmp_path / "kept.nii").write_bytes(b"a finished output")
    killed, live = start_stager(tmp_path), None
    try:
        [left] = staging_folders(tmp_path)
        killed.send_signal(signal.SIGKILL)
        killed.wait(30)
        live = start_stager(tmp_path)
        [running] = [p for p in staging_folders(tmp_path) if p != left]
        for folder in (left, running):
            age(folder)
        assert remove_stale_staging(tmp_path) == [left.name]
        assert not left.exists() and running.is_dir()
        assert (tmp_path / "kept.nii").read_bytes() == b"a finished output"
    finally:
        for process in (killed, live):
            if process is not None and process.poll() is None:
                process.kill()
                process.wait(30)


def test_young_folders_and_other_names_are_left_alone(tmp_path):
    killed = start_stager(tmp_path)
    killed.send_signal(signal.SIGKILL)
    killed.wait(30)
    [left] = staging_folders(tmp_path)
    others = [tmp_path / ".convkit-notes", tmp_path / "x.convkit-0123456789ab",
              tmp_path / ".convkit-0123456789abc"]
    for folder in others:
        folder.mkdir()
        age(folder)
    assert remove_stale_staging(tmp_path) == []  # the killed run's folder is still young
    age(left)
    assert remove_stale_staging(tmp_path) == [left.name]
    assert all(folder.is_dir() for folder in others)


def test_dicom2nii_removes_what_a_killed_run_left(cli, tmp_path):
    """The next run into the folder clears a killed run's staging folder, and says so."""
    import json

    import numpy as np

    from convkit.testing.synthetic import regular_positions, write_series

    write_series(tmp_path / "ct", np.zeros((4, 8, 8), dtype=np.int16), regular_positions(4))
    out = tmp_path / "out"
    killed = start_stager(out)
    killed.send_signal(signal.SIGKILL)
    killed.wait(30)
    [left] = staging_folders(out)
    age(left)
    done = cli("dicom2nii", tmp_path / "ct", out, "--json", check_code=0)
    assert not left.exists() and staging_folders(out) == []
    assert any("staging folder" in note for note in json.loads(done.stdout)["notes"])
    assert (out / "1_synthetic.nii.gz").is_file()
