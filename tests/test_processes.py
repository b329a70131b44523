"""How worker processes are started (convkit.processes): forked only from a process that runs
one thread, else from the forkserver; and a conversion leaves no thread behind, so that the
pools a library user makes afterwards may still fork.

Each case runs in a fresh interpreter: the test process itself may run threads (a Dask
client's, a progress bar's) left by other tests. Every fork of that interpreter is counted
with the number of threads it had at that moment (os.register_at_fork).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = [pytest.mark.subprocess,
              pytest.mark.skipif(not sys.platform.startswith("linux"),
                                 reason="fork is the rule on Linux only")]

#: Prelude of every probe: FORKS lists the thread count at each fork of this process;
#: parents(pool) the parent process of each of its workers.
PRELUDE = """
import json, os, sys, threading
from pathlib import Path
from convkit import processes
FORKS = []
os.register_at_fork(before=lambda: FORKS.append(threading.active_count()))
def parents(pool):
    return {pool.submit(os.getppid).result() for _ in range(8)}
def a_thread():
    threading.Thread(target=threading.Event().wait, daemon=True).start()
"""


def probe(code: str, *args: str) -> dict:
    """The JSON that `code` prints last, run after PRELUDE with args, as the command line
    runs: numpy's OpenBLAS on one thread (a native thread of its own would forbid forks)."""
    done = subprocess.run([sys.executable, "-c", PRELUDE + code, *args], capture_output=True,
                          text=True, timeout=120, env={**os.environ, "OPENBLAS_NUM_THREADS": "1"})
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout.splitlines()[-1])


def test_workers_are_forked_alone_and_come_from_the_forkserver_beside_a_thread():
    found = probe("""
out = {}
with processes.process_pool(2) as pool:
    out["alone"] = sorted(parents(pool)) == [os.getpid()]
out["threads after the pool"] = threading.active_count()
out["forks alone"] = list(FORKS)
a_thread()
out["can fork beside a thread"] = processes.can_fork()
with processes.process_pool(2) as pool:
    out["beside a thread, parent is this process"] = os.getpid() in parents(pool)
    out["answer"] = pool.submit(sum, [1, 2, 3]).result()
out["forks"] = FORKS
print(json.dumps(out))
""")
    assert found["alone"] is True  # both workers are this process's children
    assert found["forks alone"] == [1, 1]  # two forks, each while one thread ran
    assert found["threads after the pool"] == 1
    assert found["can fork beside a thread"] is False
    assert found["beside a thread, parent is this process"] is False  # the forkserver's
    assert found["answer"] == 6
    assert found["forks"] == [1, 1]  # no fork beside the thread


def test_a_fork_that_fails_gives_forkserver_workers():
    found = probe("""
import multiprocessing.popen_fork
def no_fork():
    raise BlockingIOError(11, "Resource temporarily unavailable")
multiprocessing.popen_fork.os.fork = no_fork
with processes.process_pool(2) as pool:
    print(json.dumps({"parents": sorted(parents(pool)), "me": os.getpid(),
                      "answer": pool.submit(max, [4, 9, 2]).result()}))
""")
    assert found["me"] not in found["parents"] and found["answer"] == 9


def test_a_scan_beside_a_thread_forks_nothing_and_reads_the_same(tmp_path: Path):
    """The scan's own header workers (audit, compare, preview) follow the rule too."""
    found = probe("""
import numpy as np
from convkit.dicom import scan
from convkit.testing.synthetic import regular_positions, write_series
tree = Path(sys.argv[1])
for number in (1, 2):
    write_series(tree / f"s{number}", np.full((6, 8, 8), number, np.int16),
                 regular_positions(6, spacing=2.0), series_number=number, seed=number)
def summary(result):
    return [[g.label, len(g.headers)] for g in result.series], \\
        sorted([str(r.path), r.status] for r in result.files)
serial = summary(scan.scan_folder(tree, jobs=1))
scan.PARALLEL_MIN_FILES, scan._CHUNK = 4, 3  # 12 files: in workers
handed = []
a_thread()
FORKS.clear()
parallel = summary(scan.scan_folder(tree, jobs=2, while_waiting=handed.extend))
print(json.dumps({"serial": serial, "parallel": parallel, "handed": len(handed),
                  "forks": FORKS}))
""", str(tmp_path / "tree"))
    assert found["handed"] == 12  # the worker path was taken
    assert found["forks"] == []
    assert found["parallel"] == found["serial"]
    assert [label for label, _ in found["serial"][0]] and \
        [count for _, count in found["serial"][0]] == [6, 6]


def test_a_conversion_leaves_no_thread_behind(tmp_path: Path):
    """Outputs are hashed on a thread of their own while written; it ends with the file, so
    the library user's process may still fork the workers of what it does next."""
    found = probe("""
import numpy as np
from convkit.dicom2nii import convert_folder
from convkit.testing.synthetic import regular_positions, write_series
started = []
start = threading.Thread.start
def recorded(thread):
    started.append(thread.name)
    return start(thread)
threading.Thread.start = recorded
tree = Path(sys.argv[1])
write_series(tree / "ct", (np.arange(48 * 128 * 128) % 999).astype(np.int16).reshape(48, 128, 128),
             regular_positions(48, spacing=2.0), seed=5)
convert_folder(tree, Path(sys.argv[2]), fmt="nii", jobs=2)  # 1.5 MiB: hashed on a thread
with processes.process_pool(2) as pool:
    forked = sorted(parents(pool)) == [os.getpid()]
print(json.dumps({"started": started, "threads": threading.active_count(),
                  "forked": forked}))
""", str(tmp_path / "tree"), str(tmp_path / "out"))
    assert any(name.startswith("convkit-sha256") for name in found["started"])
    assert found["threads"] == 1
    assert found["forked"] is True


def test_a_progress_bar_stops_its_redrawing_while_workers_are_forked():
    """The command line's bar redraws on a thread of its own (cli/progress.py); it stops for
    the fork, so an interactive run forks its workers too, and it redraws again after."""
    found = probe("""
import io
from rich.console import Console
from convkit.cli import progress as bars
terminal = Console(file=io.StringIO(), force_terminal=True, width=80)
bars.error_console = lambda: terminal
with bars.progress_bar() as update:
    update("scan", 1, 4)
    running = [thread.name for thread in threading.enumerate()]
    FORKS.clear()
    with processes.process_pool(2) as pool:
        forked = sorted(parents(pool)) == [os.getpid()]
        again = [thread.name for thread in threading.enumerate()]
    update("scan", 4, 4)
print(json.dumps({"running": running, "forked": forked, "forks": FORKS, "again": again,
                  "after": threading.active_count(),
                  "drawn": "Scanning headers" in terminal.file.getvalue()}))
""")
    assert "convkit-progress" in found["running"] and len(found["running"]) == 2
    assert found["forked"] is True and found["forks"] == [1, 1]
    assert "convkit-progress" in found["again"]  # redrawing again once the workers exist
    assert found["after"] == 1 and found["drawn"] is True  # the bar's thread ended with it
