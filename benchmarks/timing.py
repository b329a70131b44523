"""What the benchmark scripts share: common options and whole processes timed under GNU time.

Every tool runs as a separate process under GNU time, a small parent of its own: measured
from this process, a child's peak RSS would include ours (see README.md). The scripts run as
`python benchmarks/NAME.py`, so their folder is sys.path[0] and they import this module as
`timing`.
"""

from __future__ import annotations

import argparse
import importlib.metadata
import json
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
GNU_TIME = "/usr/bin/time"
# GNU time: elapsed s, peak RSS KiB, user s, system s (the last line of its -o file).
TIME_FORMAT = "%e %M %U %S"


@dataclass(frozen=True)
class Run:
    """One timed process; CPU time and peak RSS are None when it ran without GNU time."""

    wall_s: float
    cpu_s: float | None
    peak_rss_mib: float | None
    exit_code: int = 0

    def timings(self) -> dict[str, float | None]:
        """The measured figures alone, as the JSON results list each run."""
        return {"wall_s": self.wall_s, "cpu_s": self.cpu_s, "peak_rss_mib": self.peak_rss_mib}


@dataclass(frozen=True)
class Summary:
    """The runs of one tool as one figure each (see summarize)."""

    wall_s: float
    cpu_s: float | None
    peak_rss_mib: float | None


def benchmark_parser(doc: str, work_folder: str) -> argparse.ArgumentParser:
    """A parser described by the script's first paragraph, with --work, --repeats and --json."""
    parser = argparse.ArgumentParser(description=doc.split("\n\n")[0])
    parser.add_argument("--work", type=Path, default=Path(tempfile.gettempdir()) / work_folder,
                        help="cache and scratch folder, outside the repository "
                             "(default: %(default)s)")
    parser.add_argument("--repeats", type=int, default=3, help="runs per tool (default: 3)")
    parser.add_argument("--json", type=Path, help="also save the results to this JSON file")
    return parser


def parse_checked(parser: argparse.ArgumentParser, argv: list[str] | None) -> argparse.Namespace:
    """Parse argv; a median needs a run, and caches of hundreds of MB stay out of the checkout."""
    args = parser.parse_args(argv)
    if args.repeats < 1:
        parser.error("--repeats must be at least 1")
    if args.work.resolve().is_relative_to(REPO):
        parser.error(f"--work {args.work} is inside the repository; choose a folder outside it")
    return args


def find_executable(name: str) -> str:
    """name from this interpreter's bin folder (the venv), else from PATH."""
    beside = Path(sys.executable).parent / name
    found = str(beside) if beside.exists() else shutil.which(name)
    if not found:
        raise SystemExit(f"error: {name} not found next to {sys.executable} or on PATH")
    return found


def gnu_time_available() -> bool:
    """Whether GNU time is installed: the shell's and BusyBox's time lack -o and -f."""
    try:
        version = subprocess.run([GNU_TIME, "--version"], capture_output=True, text=True)
    except OSError:
        return False
    return "GNU" in version.stdout + version.stderr


def require_gnu_time() -> None:
    """Exit with a clear message unless GNU time is installed (it measures per-process RSS)."""
    if not gnu_time_available():
        raise SystemExit(f"error: GNU time is required at {GNU_TIME} to measure the peak memory "
                         "of each process; install it (Debian/Ubuntu: apt-get install -y time)")


def warm_page_cache(path: Path) -> int:
    """Read a file, or every file below a folder, once and untimed, so that no tool pays
    for the first disk read. Returns the bytes read."""
    files = [path] if path.is_file() else sorted(p for p in path.rglob("*") if p.is_file())
    total = 0
    for file in files:
        with open(file, "rb") as handle:
            while chunk := handle.read(1 << 20):
                total += len(chunk)
    return total


def run_timed(argv: Sequence[str], output: Path, *, gnu_time: bool = True, check: bool = True,
              with_stderr: bool = True, env: Mapping[str, str] | None = None) -> Run:
    """Run argv as a whole process (start-up included) with its stdout in `output`.

    Wall time is measured here, CPU time and peak RSS by GNU time (into output.time).
    stderr joins `output` unless with_stderr is False (when stdout must stay parseable).
    With check, a failing tool stops the benchmark: the time of a failure is worthless.
    """
    report = output.with_suffix(".time")
    prefix = [GNU_TIME, "-o", str(report), "-f", TIME_FORMAT] if gnu_time else []
    with open(output, "wb") as sink:
        started = time.perf_counter()
        code = subprocess.call([*prefix, *argv], stdin=subprocess.DEVNULL, stdout=sink,
                               stderr=subprocess.STDOUT if with_stderr else subprocess.DEVNULL,
                               env=env)
        wall = time.perf_counter() - started
    if check and code != 0:
        tail = "\n".join(output.read_text(errors="replace").splitlines()[-20:])
        raise SystemExit(f"error: exit code {code} from {' '.join(argv)} (output in {output})"
                         f"\n{tail}")
    if not gnu_time:
        return Run(wall, None, None, code)
    _, peak_kib, user, system = report.read_text().splitlines()[-1].split()
    return Run(wall, float(user) + float(system), int(peak_kib) / 1024, code)


def summarize(runs: Sequence[Run]) -> Summary:
    """Median wall and CPU time (the figure a noisy neighbour moves least) and the largest
    peak RSS (the memory a machine must have); None where a run lacks the figure."""
    cpus = [r.cpu_s for r in runs]
    peaks = [r.peak_rss_mib for r in runs]
    return Summary(statistics.median(r.wall_s for r in runs),
                   None if None in cpus else statistics.median(cpus),
                   None if None in peaks else max(peaks))


def ratio(value: float | None, baseline: float | None) -> float | None:
    """value / baseline, or None when a figure is missing (no GNU time) or the baseline is 0."""
    if value is None or not baseline:
        return None
    return value / baseline


def package_versions(packages: Iterable[str]) -> dict[str, str]:
    """The installed version of each package, so that saved results say what was timed."""
    versions = {}
    for package in packages:
        try:
            versions[package] = importlib.metadata.version(package)
        except importlib.metadata.PackageNotFoundError:
            versions[package] = "not installed"
    return versions


def save_json(path: Path, document: dict) -> None:
    """Write document to path as indented JSON, creating its folder."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(document, indent=2) + "\n")


def dcm2niix_binary() -> str:
    """The dcm2niix binary itself: the pip package's console script is a Python wrapper."""
    try:
        import dcm2niix
    except ImportError:
        return find_executable("dcm2niix")
    return dcm2niix.bin
