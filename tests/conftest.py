"""Shared fixtures: the real corpus (skipped when absent), the CLI, dcm2niix; test markers.

The CLI runs in the test process (`cli`, `run_cli`: `convkit.cli.app.main([...])` with its
output captured), which is what makes `make test-fast` fast; a handful of smoke tests run the
real `python -m convkit` in a subprocess (`cli_subprocess`, `run_convkit`). To check that the
two agree, run the suite with CONVKIT_TEST_CLI=subprocess: every CLI call is then a subprocess.

Markers (registered in pyproject.toml) are added here from the fixtures a test uses: `corpus`
(../shared/data), `oracle` (dcm2niix, dicom3tools), `subprocess` (the real CLI process); `slow`
is set by hand in the test modules.
"""

from __future__ import annotations

import contextlib
import io
import os
import shutil
import subprocess
import sys
import traceback
import warnings
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


@pytest.fixture(scope="session")
def dcmqi() -> dict[str, str]:
    """Paths of dcmqi's segimage2itkimage and itkimage2segimage (PyPI dcmqi, a test extra):
    skipped locally when missing, an error in CI."""
    found = {name: shutil.which(name) or str(Path(sys.executable).with_name(name))
             for name in ("segimage2itkimage", "itkimage2segimage")}
    if not all(Path(path).exists() for path in found.values()):
        if os.environ.get("CI") == "true":
            pytest.fail("dcmqi is missing in CI: install the test extras (.[test])")
        pytest.skip("dcmqi (segimage2itkimage) is not installed")
    return found


#: What the CLI tests pin: the terminal width (rich tables), and no colour codes.
CLI_ENV = {"COLUMNS": "200", "NO_COLOR": "1"}

#: "subprocess" runs every CLI call of the suite in a real process (to compare the two ways).
CLI_MODE = os.environ.get("CONVKIT_TEST_CLI", "in-process")


def _checked(done: subprocess.CompletedProcess, check_code: int | None
             ) -> subprocess.CompletedProcess:
    if check_code is not None and done.returncode != check_code:
        raise AssertionError(f"exit {done.returncode} != {check_code}\nstdout:\n{done.stdout}\n"
                             f"stderr:\n{done.stderr}")
    return done


def run_convkit(*args: str, check_code: int | None = None) -> subprocess.CompletedProcess:
    """Run the real CLI in a subprocess with a pinned terminal width."""
    env = {**os.environ, **CLI_ENV}
    done = subprocess.run([sys.executable, "-m", "convkit", *map(str, args)], capture_output=True,
                          text=True, env=env, timeout=300)
    return _checked(done, check_code)


class _Output:
    """A text stream like a pipe's (UTF-8, not a terminal) whose bytes can be read back."""

    def __init__(self) -> None:
        self.stream = io.TextIOWrapper(io.BytesIO(), encoding="utf-8", write_through=True)

    def text(self) -> str:
        """Decoded as subprocess.run(text=True) decodes a pipe (universal newlines)."""
        self.stream.flush()
        data = self.stream.buffer.getvalue()
        return io.TextIOWrapper(io.BytesIO(data), encoding="utf-8", newline=None).read()


@contextlib.contextmanager
def _cli_environment():
    """CLI_ENV set in os.environ (rich and click read it when the CLI runs), then restored."""
    saved = {name: os.environ.get(name) for name in CLI_ENV}
    os.environ.update(CLI_ENV)
    try:
        yield
    finally:
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


def _warning_on_stderr(message, category, filename, lineno, file=None, line=None) -> None:
    sys.stderr.write(warnings.formatwarning(message, category, filename, lineno, line))


@contextlib.contextmanager
def _fresh_process_warnings():
    """Warnings as a new `python -m convkit` shows them: Python's default filters, printed on
    (the captured) stderr, instead of pytest's filters and its warning summary."""
    with warnings.catch_warnings():
        warnings.resetwarnings()
        for category in (ResourceWarning, ImportWarning, PendingDeprecationWarning,
                         DeprecationWarning):
            warnings.filterwarnings("ignore", category=category)
        warnings.filterwarnings("default", category=DeprecationWarning, module="__main__")
        warnings.showwarning = _warning_on_stderr
        yield


def run_convkit_in_process(*args: str, check_code: int | None = None
                           ) -> subprocess.CompletedProcess:
    """`convkit.cli.app.main([...])` in this process, as run_convkit runs it in a subprocess:
    same environment (CLI_ENV), stdout and stderr captured as pipes, the exit code main()
    returns (or SystemExit's), and an uncaught exception printed on stderr with exit code 1."""
    from convkit.cli.app import main

    argv = [str(arg) for arg in args]
    out, err = _Output(), _Output()
    with (_cli_environment(), contextlib.redirect_stdout(out.stream),
          contextlib.redirect_stderr(err.stream), _fresh_process_warnings()):
        try:
            code = main(argv)
        except SystemExit as done:
            code = done.code
            if code is not None and not isinstance(code, int):
                print(code, file=sys.stderr)
                code = 1
        except Exception:  # what the interpreter does with an uncaught exception
            traceback.print_exc()
            code = 1
    done = subprocess.CompletedProcess(["convkit", *argv], code or 0, out.text(), err.text())
    return _checked(done, check_code)


def run_cli(*args: str, check_code: int | None = None) -> subprocess.CompletedProcess:
    """The CLI as the tests run it: in this process (or a subprocess, CONVKIT_TEST_CLI)."""
    runner = run_convkit if CLI_MODE == "subprocess" else run_convkit_in_process
    return runner(*args, check_code=check_code)


@pytest.fixture(scope="session")
def cli():
    """The CLI in the test process: cli("dicom2nii", src, out, check_code=0)."""
    return run_cli


@pytest.fixture(scope="session")
def cli_subprocess():
    """The real `python -m convkit` in a subprocess, for the smoke tests of the real process."""
    return run_convkit


#: fixture -> marker for every test that uses it (directly or through another fixture).
FIXTURE_MARKERS = {"corpus": "corpus", "dcm2niix": "oracle", "dicom3tools": "oracle",
                   "dcmqi": "oracle",
                   "cli_subprocess": "subprocess"}


@pytest.hookimpl(tryfirst=True)  # before -m deselects by marker
def pytest_collection_modifyitems(config, items):
    for item in items:
        for fixture in set(getattr(item, "fixturenames", ())) & FIXTURE_MARKERS.keys():
            item.add_marker(FIXTURE_MARKERS[fixture])
