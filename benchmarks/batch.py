"""Batch conversion of a tree of series: serial dcm2niix over the series folders (what users
script today) against convkit dicom2nii --jobs 1, --jobs 2, the default --jobs (every core)
and a two-worker local Dask cluster, and a no-op rerun of the whole tree, side by side in
one run (with the start-up of `convkit dicom2nii --help`, the floor of any run, and two
`--jobs 1` processes started together on the two halves of the folders, the ceiling of
`--jobs 2` on two cores).

    .venv/bin/python benchmarks/batch.py [--series 16] [--size 512] [--repeats 1] [--pairs 0]
                                         [--work DIR]

Input: --series synthetic CT series of 100 to 300 slices (evenly spread), --size x --size
int16 (512: a CT's matrix; 1.6 GB for 16 series), in one folder each; built once and cached
under --work. Every tool runs as a whole process into a fresh folder, after os.sync() (the
last run's outputs are not written back during the next); reported: the median wall time
and the ratio to --jobs 1. The outputs of --jobs 2, the default and Dask are compared byte
for byte with --jobs 1's, then removed (at most two runs' outputs are kept at once). On a
shared machine the figures depend on what else runs: the script prints the load average
and how many of two cores a pure-Python loop got before and after the run.
"""

from __future__ import annotations

import argparse
import filecmp
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

CONVKIT = [sys.executable, "-m", "convkit"]
#: As users run it: Python may cache compiled modules (a no-op rerun is mostly start-up).
ENV = {name: value for name, value in os.environ.items() if name != "PYTHONDONTWRITEBYTECODE"}


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--series", type=int, default=16)
    parser.add_argument("--size", type=int, default=512)
    parser.add_argument("--repeats", type=int, default=1)
    parser.add_argument("--pairs", type=int, default=0,
                        help="then alternate --jobs 1 / --jobs 2 this many times, measuring "
                             "the cores free before each pair")
    parser.add_argument("--work", type=Path,
                        default=Path(tempfile.gettempdir()) / "convkit-bench-batch")
    return parser.parse_args(argv)


def build_tree(tree: Path, series: int, size: int) -> int:
    """The synthetic tree (cached); returns its number of slices."""
    import numpy as np

    from convkit.testing.synthetic import regular_positions, write_series

    counts = [100 + round(200 * n / max(series - 1, 1)) for n in range(series)]
    stamp = tree / f".built-{series}-{size}"
    if not stamp.exists():
        shutil.rmtree(tree, ignore_errors=True)
        for number, slices in enumerate(counts, 1):
            rng = np.random.default_rng(number)
            ramp = np.add.outer(np.arange(size), np.arange(size)).astype(np.int16)
            stored = (ramp[None] + rng.integers(0, 64, (slices, size, size))).astype(np.int16)
            write_series(tree / f"series{number:03d}", stored,
                         regular_positions(slices, spacing=1.0), rescale_intercept=-1024,
                         seed=number, series_number=number, series_description=f"s{number}")
        stamp.touch()
    return sum(counts)


def timed(command: list[str]) -> float:
    os.sync()  # the last run's outputs written back now, not during this run
    started = time.perf_counter()
    subprocess.run(command, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                   env=ENV)
    return time.perf_counter() - started


def convkit_each(tree: Path, out: Path) -> list[list[str]]:
    return [[*CONVKIT, "dicom2nii", str(folder), str(out / folder.name), "--jobs", "1"]
            for folder in sorted(p for p in tree.iterdir() if p.is_dir())]


def halves(tree: Path, work: Path) -> list[Path]:
    """The series folders in two trees of hard links with about as many bytes each (the
    largest folder first, each to the lighter half)."""
    sizes = {folder: sum(f.stat().st_size for f in folder.iterdir())
             for folder in tree.iterdir() if folder.is_dir()}
    roots = [work / "halves" / "a", work / "halves" / "b"]
    shutil.rmtree(work / "halves", ignore_errors=True)
    weight = [0, 0]
    for folder in sorted(sizes, key=lambda folder: -sizes[folder]):
        half = weight.index(min(weight))
        weight[half] += sizes[folder]
        (roots[half] / folder.name).mkdir(parents=True)
        for file in folder.iterdir():
            os.link(file, roots[half] / folder.name / file.name)
    return roots


def two_at_once(roots: list[Path], out: Path) -> float:
    """Wall time of two `--jobs 1` processes started together, one per half tree: what two
    processes can do when neither waits for the other (no shared scan, no shared manifest),
    the ceiling of --jobs 2 on two cores."""
    os.sync()
    started = time.perf_counter()
    running = [subprocess.Popen([*CONVKIT, "dicom2nii", str(root), str(out / root.name),
                                 "--jobs", "1"], stdout=subprocess.DEVNULL,
                                stderr=subprocess.DEVNULL, env=ENV) for root in roots]
    codes = [process.wait() for process in running]
    if any(codes):
        raise RuntimeError(f"convkit exited with {codes}")
    return time.perf_counter() - started


def dcm2niix_each(tree: Path, out: Path) -> list[list[str]]:
    binary = str(Path(sys.executable).with_name("dcm2niix"))
    commands = []
    for folder in sorted(p for p in tree.iterdir() if p.is_dir()):
        target = out / folder.name
        commands.append(["mkdir", "-p", str(target)])
        commands.append([binary, "-z", "y", "-o", str(target), str(folder)])
    return commands


#: The runs whose outputs must equal those of --jobs 1, byte for byte.
COMPARED = ("convkit --jobs 2", "convkit, default --jobs (every core)",
            "convkit --scheduler local (2 workers)")
BASE = "convkit --jobs 1"


def run_all(tree: Path, work: Path, repeats: int) -> tuple[dict[str, float], bool]:
    """The median wall time of each tool, and whether the compared outputs were the same."""
    each = {"dcm2niix, one process per series folder": dcm2niix_each,
            "convkit, one process per series folder": convkit_each}
    tools: dict[str, list[str] | None] = {
        "dcm2niix, one process per series folder": None,
        "convkit, one process per series folder": None,
        BASE: ["--jobs", "1"],
        "convkit --jobs 2": ["--jobs", "2"],
        "convkit, default --jobs (every core)": [],
        "convkit --scheduler local (2 workers)": ["--scheduler", "local", "--jobs", "2"],
    }
    times: dict[str, list[float]] = {name: [] for name in tools}
    roots = halves(tree, work)
    together = "(two --jobs 1 at once, each on half the folders)"
    times[together] = []
    same = True
    base = work / "convkit_jobs_1"
    for _ in range(repeats):
        out = work / "two_at_once"
        shutil.rmtree(out, ignore_errors=True)  # a killed run's outputs would be up to date
        times[together].append(two_at_once(roots, out))
        shutil.rmtree(out)
        for name, extra in tools.items():
            out = base if name == BASE else work / "run"
            shutil.rmtree(out, ignore_errors=True)
            if extra is None:
                os.sync()
                started = time.perf_counter()
                for command in each[name](tree, out):
                    subprocess.run(command, check=True, stdout=subprocess.DEVNULL,
                                   stderr=subprocess.DEVNULL, env=ENV)
                times[name].append(time.perf_counter() - started)
            else:
                times[name].append(timed([*CONVKIT, "dicom2nii", str(tree), str(out), *extra]))
            if name in COMPARED:
                same = same and same_outputs(base, out)
            if out != base:
                shutil.rmtree(out)
    times["convkit rerun, all up to date"] = [
        timed([*CONVKIT, "dicom2nii", str(tree), str(base)]) for _ in range(repeats)]
    # the floor of any run: Python, numpy and the CLI imported, nothing done
    times["(convkit dicom2nii --help: start-up only)"] = [
        timed([*CONVKIT, "dicom2nii", "--help"]) for _ in range(repeats)]
    return {name: statistics.median(values) for name, values in times.items()}, same


def spin(_: object = None) -> float:
    """Seconds of a pure-Python loop (one core's worth of work)."""
    started = time.perf_counter()
    total = 0
    for number in range(5_000_000):
        total += number
    return time.perf_counter() - started


def cores_free() -> float:
    """How many cores this machine gives right now (up to 2): the loop alone, then twice at
    once in two processes; 2.0 when both run as fast as one alone. On a shared machine this
    says what the --jobs 2 row could win."""
    from concurrent.futures import ProcessPoolExecutor

    alone = min(spin() for _ in range(2))
    with ProcessPoolExecutor(2) as pool:
        pool.submit(spin).result()  # started
        pair = max(pool.map(spin, range(2)))
    return round(2 * alone / pair, 2)


#: A pair counts as run on an idle machine when a loop got this many of the two cores.
IDLE_CORES = 1.8


def alternate(tree: Path, work: Path, pairs: int) -> None:
    """--jobs 1 then --jobs 2 (fresh output folders), `pairs` times, each pair after
    measuring the cores free: on a shared machine, the pairs run while both cores were
    free tell what --jobs 2 wins."""
    ratios, every = [], []
    for _ in range(pairs):
        free = cores_free()
        seconds = []
        for jobs in ("1", "2"):
            out = work / f"pair_jobs_{jobs}"
            shutil.rmtree(out, ignore_errors=True)
            seconds.append(timed([*CONVKIT, "dicom2nii", str(tree), str(out), "--jobs", jobs]))
            shutil.rmtree(out)
        print(f"pair: cores free {free:4.2f}  --jobs 1 {seconds[0]:5.2f} s  --jobs 2 "
              f"{seconds[1]:5.2f} s  ratio {seconds[1] / seconds[0]:.2f}")
        every.append(seconds[1] / seconds[0])
        if free >= IDLE_CORES:
            ratios.append(seconds[1] / seconds[0])
    if every:  # adjacent runs: a machine whose speed drifts slows both runs of a pair alike
        print(f"--jobs 2 / --jobs 1, median of all {len(every)} pairs: "
              f"{statistics.median(every):.2f}")
    if ratios:
        print(f"--jobs 2 / --jobs 1, median of the {len(ratios)} pairs with {IDLE_CORES} cores "
              f"or more free: {statistics.median(ratios):.2f}")


def same_outputs(first: Path, second: Path) -> bool:
    names = sorted(p.name for p in first.iterdir() if not p.name.startswith("."))
    if names != sorted(p.name for p in second.iterdir() if not p.name.startswith(".")):
        return False
    return all(filecmp.cmp(first / n, second / n, shallow=False) for n in names)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    args.work.mkdir(parents=True, exist_ok=True)
    tree = args.work / "tree"
    slices = build_tree(tree, args.series, args.size)
    print(f"{args.series} series, {slices} slices of {args.size} x {args.size} int16 "
          f"({slices * args.size**2 * 2 / 2**20:.0f} MiB of pixels); {os.cpu_count()} cores")
    free_before = cores_free()
    medians, same = run_all(tree, args.work, args.repeats)
    free_after = cores_free()
    base = medians[BASE]
    default = medians["convkit, default --jobs (every core)"]
    for name, seconds in medians.items():
        print(f"{name:42s} {seconds:8.2f} s  {seconds / base:5.2f}x --jobs 1  "
              f"{seconds / default:5.2f}x default --jobs")
    print("outputs of --jobs 2, default --jobs and Dask byte-identical to --jobs 1:", same)
    print(f"(figures are this machine's at this moment: load average "
          f"{', '.join(f'{v:.2f}' for v in os.getloadavg())}; cores free (of 2) before "
          f"{free_before}, after {free_after})")
    alternate(tree, args.work, args.pairs)
    return 0 if same else 1


if __name__ == "__main__":
    sys.exit(main())
