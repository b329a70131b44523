"""Benchmark convkit dicom2nii against dcm2niix (and dicom2nifti, SimpleITK) on every input kind.

The inputs (convert_inputs.py) are a synthetic 512 x 512 x 300 int16 chest CT (0.7 mm
pixels, 1 mm slices, RescaleIntercept -1024, shuffled file names), the same CT in JPEG-LS,
JPEG lossless (SV1), JPEG 2000 and RLE, as one enhanced multi-frame file, and a 300-volume
mosaic fMRI series; each is built once and cached under --work. Each tool runs as a whole
process under GNU time, which reports the peak resident memory of that process alone; every
run writes into a fresh folder, the tools of a case alternating run by run. After timing,
convkit's .nii.gz is checked against dcm2niix's output in world space: a benchmark of a
wrong output is worthless.

    python benchmarks/convert.py [--work DIR] [--repeats N] [--json PATH] [--cases ct,rle]
                                 [--no-others]
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import platform
import re
import shutil
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from convert_inputs import CASES, DESCRIPTIONS, available, build
from timing import (
    Run,
    benchmark_parser,
    dcm2niix_binary,
    find_executable,
    package_versions,
    parse_checked,
    ratio,
    require_gnu_time,
    run_timed,
    save_json,
    summarize,
    warm_page_cache,
)

#: dcm2niix's internal deflate at its default level (6; -z y is the same without pigz).
BASELINE = "dcm2niix -z i"
#: The issue's targets: (case, tool, against, figure, at most).
TARGETS = [
    ("ct", "convkit nii.gz", "dcm2niix -z i", "wall_s", 0.3),
    ("ct", "convkit nii.gz", "dcm2niix -z i -1", "wall_s", 0.9),
    ("ct", "convkit nii.gz", "dcm2niix -z i", "output_mb", 1.05),
    ("ct", "convkit nii", "dcm2niix -z n", "wall_s", 1.5),
    ("ct", "convkit nii.gz", "dcm2niix -z i", "peak_rss_mib", 1.2),
    *[(case, "convkit nii.gz", "dcm2niix -z i", "wall_s", 1.0)
      for case in ("jpegls", "jpeg", "j2k", "rle", "enhanced", "mosaic")],
]
IMAGE_SUFFIXES = (".nii", ".nii.gz")

DICOM2NIFTI_SCRIPT = """\
import sys
import dicom2nifti
dicom2nifti.dicom_series_to_nifti(sys.argv[1], sys.argv[2], reorient_nifti=False)
"""
SIMPLEITK_SCRIPT = """\
import sys
import SimpleITK as sitk
names = sitk.ImageSeriesReader.GetGDCMSeriesFileNames(sys.argv[1])
sitk.WriteImage(sitk.ReadImage(names), sys.argv[2])
"""


@dataclass(frozen=True)
class Tool:
    """A converter as a command line: argv(input folder, fresh output folder)."""

    name: str
    argv: Callable[[Path, Path], list[str]]


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = benchmark_parser(__doc__, "convkit-bench")
    parser.add_argument("--cases", default=",".join(CASES),
                        help=f"comma-separated inputs to time (default: all: {','.join(CASES)})")
    parser.add_argument("--no-others", action="store_true",
                        help="leave out dicom2nifti and SimpleITK (the slow ones)")
    args = parse_checked(parser, argv)
    args.cases = [case.strip() for case in args.cases.split(",") if case.strip()]
    unknown = sorted(set(args.cases) - set(CASES))
    if unknown:
        parser.error(f"unknown case(s) {', '.join(unknown)}; choose from {', '.join(CASES)}")
    return args


def tools(case: str, others: bool = True) -> list[Tool]:
    """The commands compared on a case, each writing into its own output folder: on the
    native CT every variant, on the other inputs convkit's .nii.gz and dcm2niix's default."""
    convkit = find_executable("convkit")
    dcm2niix = dcm2niix_binary()
    python = sys.executable
    chosen = [
        Tool("convkit nii.gz", lambda i, o: [convkit, "dicom2nii", str(i), str(o)]),
        Tool("dcm2niix -z i", lambda i, o: [dcm2niix, "-z", "i", "-o", str(o), str(i)]),
    ]
    if case != "ct":
        return chosen
    chosen += [
        Tool("dcm2niix -z i -1", lambda i, o: [dcm2niix, "-z", "i", "-1", "-o", str(o), str(i)]),
        Tool("convkit nii", lambda i, o: [convkit, "dicom2nii", str(i), str(o), "--format", "nii"]),
        Tool("dcm2niix -z n", lambda i, o: [dcm2niix, "-z", "n", "-o", str(o), str(i)]),
    ]
    if others:
        chosen += [
            Tool("dicom2nifti", lambda i, o: [python, "-c", DICOM2NIFTI_SCRIPT, str(i),
                                              str(o / "series.nii.gz")]),
            Tool("SimpleITK", lambda i, o: [python, "-c", SIMPLEITK_SCRIPT, str(i),
                                            str(o / "series.nii.gz")]),
        ]
    return chosen


def timed_run(argv: list[str], out_dir: Path) -> Run:
    """Run argv under GNU time with out_dir fresh; its output goes to out_dir.parent/log."""
    shutil.rmtree(out_dir, ignore_errors=True)
    out_dir.mkdir(parents=True)
    return run_timed(argv, out_dir.parent / f"{out_dir.name}.log")


def image_bytes(folder: Path) -> int:
    """Size of the image files in folder (sidecars excluded: not every tool writes one)."""
    return sum(p.stat().st_size for p in folder.iterdir() if p.name.endswith(IMAGE_SUFFIXES))


def slug(name: str) -> str:
    """A folder name for a tool: 'convkit nii.gz' -> 'convkit_niigz'."""
    return re.sub(r"[^A-Za-z0-9_-]", "", name.replace(" ", "_"))


def benchmark(candidates: list[Tool], series: Path, runs_dir: Path, repeats: int) -> dict:
    """Time every tool `repeats` times, round-robin; keep only the last output of each.

    Returns {tool name: summary} with the median wall and CPU time, the largest peak RSS,
    the image size, every run, and the folder holding the last output.
    """
    shutil.rmtree(runs_dir, ignore_errors=True)
    runs: dict[str, list[Run]] = {tool.name: [] for tool in candidates}
    for repeat in range(repeats):
        for tool in candidates:
            folder = runs_dir / slug(tool.name)
            if repeat:
                shutil.rmtree(folder / str(repeat - 1))
            run = timed_run(tool.argv(series, folder / str(repeat)), folder / str(repeat))
            runs[tool.name].append(run)
            print(f"  [{repeat + 1}/{repeats}] {tool.name:<15} {run.wall_s:7.2f} s "
                  f"{run.peak_rss_mib:8.0f} MiB", flush=True)
    results = {}
    for tool in candidates:
        last = runs_dir / slug(tool.name) / str(repeats - 1)
        summary = summarize(runs[tool.name])
        results[tool.name] = {
            "argv": tool.argv(Path("IN"), Path("OUT")),
            "wall_s": summary.wall_s,
            "cpu_s": summary.cpu_s,
            "peak_rss_mib": summary.peak_rss_mib,
            "output_mb": image_bytes(last) / 1e6,
            "runs": [r.timings() for r in runs[tool.name]],
            "output_dir": str(last),
        }
    return results


def same_world_image(first: Path, second: Path) -> tuple[bool, str]:
    """Whether two NIfTI files hold the same voxels at the same world positions.

    Both are brought to the closest canonical (RAS) orientation, then shape, affine
    (within 0.01 mm) and voxel values (exactly) are compared. Returns (equal, detail).
    """
    import nibabel as nib

    a = nib.as_closest_canonical(nib.load(first))
    b = nib.as_closest_canonical(nib.load(second))
    if a.shape != b.shape:
        return False, f"shapes differ: {a.shape} vs {b.shape}"
    affine_error = float(np.abs(a.affine - b.affine).max())
    if affine_error > 0.01:
        return False, f"affines differ by up to {affine_error:.4g} mm"
    differing = int(np.count_nonzero(a.get_fdata() != b.get_fdata()))
    if differing:
        return False, f"{differing} voxels differ"
    return True, f"shape {a.shape}, affines within {affine_error:.2g} mm, all voxels equal"


def single_image(folder: Path) -> Path:
    """The one NIfTI image a tool wrote into folder."""
    images = [p for p in folder.iterdir() if p.name.endswith(IMAGE_SUFFIXES)]
    if len(images) != 1:
        raise SystemExit(f"error: expected one NIfTI image in {folder}, found {len(images)}")
    return images[0]


def machine_info() -> dict:
    """The machine and the versions of everything timed."""
    versions = package_versions(
        ("convkit", "dicom2nifti", "SimpleITK", "nibabel", "pydicom", "isal"))
    banner = subprocess.run([dcm2niix_binary(), "--version"], capture_output=True, text=True)
    found = re.search(r"v\d+\.\d+\.\d+", banner.stdout + banner.stderr)
    versions["dcm2niix"] = found.group() if found else "unknown"
    cpu = next((line.split(":", 1)[1].strip() for line in _read_lines("/proc/cpuinfo")
                if line.startswith("model name")), platform.processor() or "unknown")
    return {"nproc": len(os.sched_getaffinity(0)), "cpu": cpu, "platform": platform.platform(),
            "python": platform.python_version(), "versions": versions,
            "pigz_on_path": shutil.which("pigz") is not None,
            "pydicom_also_imports": [name for name in OPTIONAL_IMPORTS
                                     if importlib.util.find_spec(name) is not None]}


#: Packages that pydicom imports at start-up when they are installed (its pixel plugins and
#: data downloads) and convkit does not depend on: the bench extra brings both (dicom2nifti
#: -> python-gdcm, nilearn -> requests), about 0.5 s more on every convkit run (0.17 s with
#: requests alone). Pillow, which pydicom imports as well, is a dependency of convkit (the
#: report): ~0.01 s.
OPTIONAL_IMPORTS = ("gdcm", "requests")


def _read_lines(path: str) -> list[str]:
    try:
        return Path(path).read_text().splitlines()
    except OSError:
        return []


def render_machine(machine: dict, repeats: int) -> str:
    versions = ", ".join(f"{name} {version}" for name, version in machine["versions"].items())
    pigz = "pigz" if machine["pigz_on_path"] else "no pigz on PATH: -z y = -z i"
    extra = machine["pydicom_also_imports"]
    warning = ([f"Note: pydicom also imports {', '.join(extra)} in this environment (installed "
                "by the bench extra): convkit's times include that; see README.md."]
               if extra else [])
    return "\n".join([*warning,
        f"Machine: {machine['nproc']} CPUs ({machine['cpu']}), {machine['platform']}, "
        f"Python {machine['python']}",
        f"Versions: {versions} ({pigz})",
        f"Median wall and CPU (user+sys) time and largest peak RSS of {repeats} alternating "
        "runs, page cache warm; output = image file only."])


def render(case: str, results: dict, input_mb: float) -> str:
    """The markdown table of one case."""
    lines = [
        f"### {case}: {DESCRIPTIONS[case]} ({input_mb:.0f} MB)",
        "",
        f"| tool | wall (s) | CPU (s) | peak RSS (MiB) | output (MB) "
        f"| time vs {BASELINE} | memory vs {BASELINE} |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    base = results[BASELINE]
    for name, result in results.items():
        lines.append(
            f"| {name} | {result['wall_s']:.2f} | {result['cpu_s']:.2f} "
            f"| {result['peak_rss_mib']:.0f} | {result['output_mb']:.1f} "
            f"| {ratio(result['wall_s'], base['wall_s']):.2f}x "
            f"| {ratio(result['peak_rss_mib'], base['peak_rss_mib']):.2f}x |")
    return "\n".join(lines)


def render_targets(cases: dict) -> str:
    """The issue's targets: each ratio measured and whether it is met."""
    names = {"wall_s": "time", "output_mb": "output size", "peak_rss_mib": "peak memory"}
    lines = ["| input | figure | convkit | against | ratio | target | met |",
             "|---|---|---|---|---:|---:|---|"]
    for case, tool, against, figure, limit in TARGETS:
        if case not in cases:
            continue
        results = cases[case]["results"]
        value = ratio(results[tool][figure], results[against][figure])
        if value is None:
            continue
        lines.append(f"| {case} | {names[figure]} | {tool} | {against} | {value:.2f}x "
                     f"| <= {limit}x | {'yes' if value <= limit else 'no'} |")
    return "\n".join(lines)


def run_case(case: str, args: argparse.Namespace) -> dict:
    """Build (or reuse) a case's input, time its tools and check convkit against dcm2niix."""
    series = build(case, args.work)
    input_mb = warm_page_cache(series) / 1e6
    candidates = tools(case, not args.no_others)
    print(f"Timing {case}: {len(candidates)} tools x {args.repeats} runs ...", flush=True)
    results = benchmark(candidates, series, args.work / "runs" / case, args.repeats)
    equal, detail = same_world_image(single_image(Path(results["convkit nii.gz"]["output_dir"])),
                                     single_image(Path(results[BASELINE]["output_dir"])))
    print(f"  convkit equals dcm2niix in world space: {'yes' if equal else 'no'} ({detail})")
    return {"input_mb": input_mb, "results": results, "convkit_equals_dcm2niix": equal,
            "verification": detail}


def compile_convkit() -> None:
    """Byte-compile convkit as installing it does (pip writes the .pyc files): run from a
    source tree under PYTHONDONTWRITEBYTECODE (set on the project's machine), every convkit
    process would compile its ~100 modules again (~0.1-0.2 s), a cost no installed convkit
    pays. Written to __pycache__ (git-ignored); seg.py does the same."""
    import compileall

    import convkit

    compileall.compile_dir(Path(convkit.__file__).parent, quiet=1)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    require_gnu_time()
    args.work.mkdir(parents=True, exist_ok=True)
    compile_convkit()
    cases = {}
    for case in args.cases:
        why = available(case)
        if why:
            print(f"Skipping {case}: {why}", flush=True)
            continue
        cases[case] = run_case(case, args)
    machine = machine_info()
    print()
    print(render_machine(machine, args.repeats))
    for case, outcome in cases.items():
        print()
        print(render(case, outcome["results"], outcome["input_mb"]))
        print(f"\nconvkit equals dcm2niix in world space: "
              f"{'yes' if outcome['convkit_equals_dcm2niix'] else 'no'} "
              f"({outcome['verification']})")
    print()
    print(render_targets(cases))
    if args.json:
        save_json(args.json, {"machine": machine, "repeats": args.repeats, "baseline": BASELINE,
                              "cases": cases})
    return 0 if all(outcome["convkit_equals_dcm2niix"] for outcome in cases.values()) else 1


if __name__ == "__main__":
    sys.exit(main())
