"""Benchmark `convkit audit --json` (without and with --index) against `dcm2niix -n -1 -d 9`
and a plain pydicom loop.

A tree of --files files (default 20,000) is built from hard links under --work (never in the
repository): distinct synthetic CT and MR series plus the real corpus (../shared/data/dicom:
vendor MR and CT, enhanced multi-frame, compressed syntaxes, NIfTI ground truths), repeated
in replica folders until the count is reached. convkit's fast header path reads CT and MR
alike, vendor private elements included (the Siemens CSA header, GE and Philips diffusion
tags); only enhanced multi-frame files and files whose diffusion attributes sit in sequences
fall back to pydicom. Every tool runs as a whole process under GNU time (`/usr/bin/time`: CPU
time and peak memory), --repeats times round-robin, after the page cache has been warmed.

The index rows (`--index FILE`, the index under --work): a first audit into an empty index
(beside the audit without one: what keeping the index costs), a re-audit of the unchanged
tree, and a re-audit after --changed files were replaced by new copies (new inodes: a hard
link touched would change every link of it), different files before each run.

    python benchmarks/audit.py [--files 20000] [--changed 100] [--repeats 3] [--work DIR]
                               [--json PATH]
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import platform
import random
import shutil
import sys
import tempfile
from pathlib import Path

from timing import (
    REPO,
    Run,
    benchmark_parser,
    dcm2niix_binary,
    parse_checked,
    ratio,
    require_gnu_time,
    run_timed,
    save_json,
    summarize,
    warm_page_cache,
)

CORPUS = REPO.parent / "shared" / "data" / "dicom"
BASELINE = "dcm2niix -n -1 -d 9"
FIRST_INDEXED = "convkit audit --json --index (empty)"
UNCHANGED = "  re-audit, unchanged tree"
CHANGED = "  re-audit, changed files"
#: Slices per synthetic series and their matrix (rows, columns).
SLICES = 250
SYNTHETIC_MATRIX = (64, 64)
SOURCES_VERSION = "1"  # bump when the source set changes (the cache is rebuilt)

PYDICOM_LOOP = """\
import os, sys
import pydicom
count = 0
for folder, _, names in os.walk(sys.argv[1]):
    for name in names:
        try:
            pydicom.dcmread(os.path.join(folder, name), stop_before_pixels=True)
            count += 1
        except Exception:
            pass
print(count, "DICOM headers read")
"""


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = benchmark_parser(__doc__, "convkit-bench-audit")
    parser.add_argument("--files", type=int, default=20000, help="files in the tree "
                        "(default: %(default)s)")
    parser.add_argument("--ct-series", type=int, default=6,
                        help=f"distinct synthetic CT series of {SLICES} slices (default: 6)")
    parser.add_argument("--mr-series", type=int, default=2,
                        help=f"distinct synthetic MR series of {SLICES} slices (default: 2)")
    parser.add_argument("--no-corpus", action="store_true",
                        help="leave the real corpus out of the tree")
    parser.add_argument("--corpus", type=Path, default=CORPUS,
                        help="the real corpus's DICOM folder (default: ../shared/data/dicom "
                             "beside the repository; a git worktree elsewhere names it here)")
    parser.add_argument("--changed", type=int, default=100,
                        help="files replaced before each re-audit after changes (default: 100)")
    parser.add_argument("--copies", action="store_true",
                        help="fill the tree with real copies instead of hard links (convkit "
                             "knows hard links to one file are identical without reading them; "
                             "copies must be read)")
    return parse_checked(parser, argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    require_gnu_time()
    dcm2niix = dcm2niix_binary()  # the binary itself, not the package's Python wrapper
    if not Path(dcm2niix).exists():
        sys.exit("dcm2niix is missing: pip install -e '.[test]'")
    synthetic = (("CT", args.ct_series), ("MR", args.mr_series))
    corpus = not args.no_corpus and args.corpus.is_dir()
    name = f"ct{args.ct_series}-mr{args.mr_series}{'-corpus' if corpus else ''}"
    sources = build_sources(args.work / f"sources-v{SOURCES_VERSION}-{name}", synthetic,
                            args.corpus if corpus else None)
    tree = build_tree(args.work / f"tree-{name}-{args.files}{'-copies' if args.copies else ''}",
                      sources, args.files, args.copies)
    files = sum(len(names) for _, _, names in os.walk(tree))
    warm_page_cache(tree)
    scratch = Path(tempfile.mkdtemp(prefix="run-", dir=args.work))
    convkit = [sys.executable, "-m", "convkit", "audit", str(tree), "--json"]
    index = scratch / "index.sqlite"
    indexed = convkit + ["--index", str(index)]
    tools = {
        "convkit audit --json": convkit,
        "convkit audit --json --jobs 1": convkit + ["--jobs", "1"],
        FIRST_INDEXED: indexed,
        UNCHANGED: indexed,
        CHANGED: indexed,
        BASELINE: [dcm2niix, "-n", "-1", "-d", "9", "-o", str(scratch), str(tree)],
        "pydicom loop (stop_before_pixels)": [sys.executable, "-c", PYDICOM_LOOP, str(tree)],
    }
    prepare = {FIRST_INDEXED: lambda: remove_index(index),
               UNCHANGED: lambda: ensure_index(indexed, scratch),
               CHANGED: lambda: change_files(tree, args.changed, rng, indexed, scratch)}
    rng = random.Random(1)
    runs: dict[str, list[Run]] = {name: [] for name in tools}
    for repeat in range(args.repeats):
        for number, (name, command) in enumerate(tools.items()):
            if name in prepare:
                prepare[name]()
            out = scratch / f"{number}-{len(runs[name])}.out"
            runs[name].append(run_timed(command, out, check=False, with_stderr=False))
            if repeat == 0 and name in ("convkit audit --json", CHANGED):
                check_audit(out, files, plain=scratch / "0-0.out" if name == CHANGED else None)
    shutil.rmtree(scratch, ignore_errors=True)
    report(args, tree, files, runs, describe_sources(synthetic, corpus))
    return 0


# ------------------------------------------------------------------------------------------
# The tree


def build_sources(folder: Path, synthetic: tuple[tuple[str, int], ...],
                  corpus: Path | None) -> Path:
    """Distinct synthetic series and a copy of the corpus (hard links need one file system)."""
    stamp = folder / ".complete"
    if stamp.exists():
        return folder
    import numpy as np

    from convkit.testing.synthetic import regular_positions, write_series

    shutil.rmtree(folder, ignore_errors=True)
    rows, cols = SYNTHETIC_MATRIX
    print(f"building the source set in {folder} (once) ...", file=sys.stderr)
    number = 0
    slices = SLICES
    for modality, count in synthetic:
        for index in range(count):
            number += 1
            stored = (np.arange(slices * rows * cols, dtype=np.int16).reshape(slices, rows, cols)
                      % 1000)
            write_series(folder / "synthetic" / f"{modality}{index + 1}", stored,
                         regular_positions(slices, spacing=1.25), modality=modality,
                         series_number=number, series_description=f"{modality} {index + 1}",
                         seed=1000 + number, rescale_intercept=-1024 if modality == "CT" else None)
    if corpus is not None:
        shutil.copytree(corpus, folder / "corpus")
    stamp.write_text("ok\n")
    return folder


def build_tree(tree: Path, sources: Path, count: int, copies: bool = False) -> Path:
    """count hard links to the source files (copies of them with copies), in replica folders
    (built once, then reused).

    The completion marker sits beside the tree, not in it (the tools would count it).
    """
    marker = tree.parent / f".{tree.name}.complete"
    if marker.exists() and tree.is_dir():
        return tree
    shutil.rmtree(tree, ignore_errors=True)
    files = sorted(p for p in sources.rglob("*") if p.is_file() and p.name != ".complete")
    print(f"{'copying' if copies else 'linking'} {count} files into {tree} ...", file=sys.stderr)
    for index in range(count):
        source = files[index % len(files)]
        target = tree / f"replica{index // len(files):03d}" / source.relative_to(sources)
        target.parent.mkdir(parents=True, exist_ok=True)
        (shutil.copy2 if copies else os.link)(source, target)
    marker.write_text(f"{count}\n")
    return tree


def remove_index(index: Path) -> None:
    for name in (index, Path(f"{index}-wal"), Path(f"{index}-shm")):
        name.unlink(missing_ok=True)


def ensure_index(command: list[str], scratch: Path) -> None:
    """An index that has seen the tree as it is now (untimed)."""
    run_timed(command, scratch / "prepare.out", gnu_time=False, with_stderr=False)


def change_files(tree: Path, count: int, rng: random.Random, command: list[str],
                 scratch: Path) -> None:
    """count files of the tree changed (new mtime and ctime, same content: the same tree for
    every other tool), and nothing else since the index last saw it.

    The tree is made of hard links, and a link's times are its inode's: the files are first
    replaced by copies of their own (untimed; that changes the ctime of the other links of
    the old inode, so the index is brought up to date before the files are touched).
    """
    files = sorted(p for p in tree.rglob("*") if p.is_file())
    chosen = rng.sample(files, min(count, len(files)))
    for path in chosen:
        if path.stat().st_nlink > 1:
            copy = path.with_name(path.name + ".copy")
            shutil.copyfile(path, copy)
            os.replace(copy, path)
    ensure_index(command, scratch)
    for path in chosen:
        os.utime(path)


# ------------------------------------------------------------------------------------------
# Checking and reporting


def check_audit(out: Path, files: int, plain: Path | None = None) -> None:
    """The audit must account for every file: a fast wrong answer is worthless. An indexed
    audit must give the audit without the index, and say how many files it read."""
    document = json.loads(out.read_text())
    listed = document["summary"]["files"]
    if listed != files:
        sys.exit(f"convkit audit listed {listed} files, the tree has {files}")
    if plain is not None:
        counts = document.pop("index")
        if document != json.loads(plain.read_text()):
            sys.exit("convkit audit --index differs from convkit audit without the index")
        print(f"re-audit after changes: {counts['files_read']} files read, "
              f"{counts['files_from_index']} from the index", file=sys.stderr)


def report(args: argparse.Namespace, tree: Path, files: int, runs: dict[str, list[Run]],
           sources: str) -> None:
    baseline = summarize(runs[BASELINE]).wall_s
    fast = importlib.util.find_spec("convkit.dicom.fastheader") is not None
    print(f"\n{files} files in {tree} ({'copies' if args.copies else 'hard links'} of "
          f"{sources})")
    print(f"machine: {platform.machine()}, {os.cpu_count()} cores, Python "
          f"{platform.python_version()}; fast header path in scan.py: {'yes' if fast else 'no'}")
    print(f"median of {args.repeats} runs, whole processes, warm page cache; ratio = "
          f"time / time of {BASELINE} (below 1: faster)\n")
    header = f"{'tool':38} {'wall s':>7} {'files/s':>8} {'ratio':>6} {'CPU s':>7} {'peak MiB':>9}"
    print(header)
    print("-" * len(header))
    results = {}
    for name, items in runs.items():
        summary = summarize(items)
        wall, cpu, peak = summary.wall_s, summary.cpu_s, summary.peak_rss_mib
        codes = sorted({r.exit_code for r in items})
        print(f"{name:38} {wall:7.2f} {files / wall:8.0f} {ratio(wall, baseline):6.2f} {cpu:7.2f} "
              f"{peak:9.0f}" + (f"  (exit {codes})" if codes != [0] else ""))
        results[name] = {"wall_s": [r.wall_s for r in items], "cpu_s": [r.cpu_s for r in items],
                         "peak_rss_mib": peak, "exit_codes": codes,
                         "files_per_s": files / wall}
    first, plain = (summarize(runs[name]).wall_s for name in (FIRST_INDEXED,
                                                               "convkit audit --json"))
    print(f"\nfirst audit with --index / without: {first / plain:.2f}; re-audit ratios "
          f"(unchanged, {args.changed} changed) are against {BASELINE} in the same run")
    print("\npeak MiB: GNU time's maximum resident set of the process tree's largest process "
          "(convkit's header workers are separate processes)")
    if args.json:
        save_json(args.json, {"files": files, "sources": sources, "copies": args.copies,
                              "fast_header_path": fast,
                              "machine": platform.platform(), "cores": os.cpu_count(),
                              "results": results})


def describe_sources(synthetic: tuple[tuple[str, int], ...], corpus: bool) -> str:
    kinds = " + ".join(f"{count} {modality}" for modality, count in synthetic if count)
    distinct = sum(count for _, count in synthetic) * SLICES
    return (f"{distinct} distinct synthetic files ({kinds} series x {SLICES} slices)"
            + (" and the real corpus" if corpus else "") + ", repeated")


if __name__ == "__main__":
    sys.exit(main())
