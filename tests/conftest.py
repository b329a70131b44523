"""Shared fixtures: the real corpus (skipped when absent), the CLI in a subprocess, dcm2niix."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
CORPUS = REPO.parent / "shared" / "data"


@pytest.fixture(scope="session")
def corpus() -> Path:
    """../shared/data relative to the repository; tests using it skip when it is absent."""
    if not CORPUS.is_dir():
        pytest.skip("the shared corpus (../shared/data) is not available")
    return CORPUS


@pytest.fixture(scope="session")
def dcm2niix() -> str:
    """Path of the dcm2niix binary (PyPI package dcm2niix, a test dependency)."""
    found = shutil.which("dcm2niix") or str(Path(sys.executable).with_name("dcm2niix"))
    if not Path(found).exists():
        pytest.fail("dcm2niix is missing: install the test extras (pip install -e '.[test]')")
    return found


@pytest.fixture(scope="session")
def dicom3tools() -> dict[str, str]:
    """Paths of dciodvfy and dcentvfy (Debian's dicom3tools, installed by `make test`)."""
    found = {name: shutil.which(name) for name in ("dciodvfy", "dcentvfy")}
    if not all(found.values()):
        if os.environ.get("CI") == "true":
            pytest.fail("dicom3tools is missing in CI: `make test` should have installed it")
        pytest.skip("dicom3tools (dciodvfy, dcentvfy) is not installed")
    return found


def run_convkit(*args: str, check_code: int | None = None) -> subprocess.CompletedProcess:
    """Run the real CLI in a subprocess with a pinned terminal width."""
    env = {**os.environ, "COLUMNS": "200", "NO_COLOR": "1"}
    done = subprocess.run([sys.executable, "-m", "convkit", *map(str, args)], capture_output=True,
                          text=True, env=env, timeout=300)
    if check_code is not None and done.returncode != check_code:
        raise AssertionError(f"exit {done.returncode} != {check_code}\nstdout:\n{done.stdout}\n"
                             f"stderr:\n{done.stderr}")
    return done


@pytest.fixture(scope="session")
def cli():
    return run_convkit
