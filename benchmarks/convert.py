"""Benchmark convkit dicom2nii against dcm2niix, dicom2nifti and SimpleITK on one CT series.

The input is a synthetic 512 x 512 x 300 int16 chest CT (0.7 mm pixels, 1 mm slices,
RescaleIntercept -1024, shuffled file names), built once and cached under --work. Each tool
runs as a whole process under GNU time, which reports the peak resident memory of that
process alone; every run writes into a fresh folder. After timing, convkit's .nii.gz is
checked against dcm2niix's output in world space: a benchmark of a wrong output is worthless.

    python benchmarks/convert.py [--work DIR] [--repeats N] [--json PATH]
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import platform
import re
import shutil
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from phantom import (
    PIXEL_SPACING_MM,
    RESCALE_INTERCEPT,
    SEED,
    SHAPE,
    SLICE_SPACING_MM,
    stored_values,
)
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

BASELINE = "dcm2niix -z y"
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
    return parse_checked(benchmark_parser(__doc__, "convkit-bench"), argv)


def tools() -> list[Tool]:
    """The commands compared, each writing into its own output folder."""
    convkit = find_executable("convkit")
    dcm2niix = dcm2niix_binary()
    python = sys.executable
    return [
        Tool("convkit nii.gz", lambda i, o: [convkit, "dicom2nii", str(i), str(o)]),
        Tool("convkit nii", lambda i, o: [convkit, "dicom2nii", str(i), str(o), "--format", "nii"]),
        Tool("dcm2niix -z y", lambda i, o: [dcm2niix, "-z", "y", "-o", str(o), str(i)]),
        Tool("dcm2niix -z n", lambda i, o: [dcm2niix, "-z", "n", "-o", str(o), str(i)]),
        Tool("dicom2nifti", lambda i, o: [python, "-c", DICOM2NIFTI_SCRIPT, str(i),
                                          str(o / "series.nii.gz")]),
        Tool("SimpleITK", lambda i, o: [python, "-c", SIMPLEITK_SCRIPT, str(i),
                                        str(o / "series.nii.gz")]),
    ]


def build_series(work: Path) -> Path:
    """The cached CT series folder, (re)built when missing or when its recipe changed.

    The recipe is the geometry plus the source of the phantom and the DICOM writer, so
    editing either rebuilds the input. The series is written next to the cache and renamed
    into place, so an interrupted build is never reused.
    """
    from convkit.testing import phantoms, synthetic

    recipe = {"shape": list(SHAPE), "pixel_spacing_mm": list(PIXEL_SPACING_MM),
              "slice_spacing_mm": SLICE_SPACING_MM, "rescale_intercept": RESCALE_INTERCEPT,
              "seed": SEED,
              "source_sha256": hashlib.sha256(
                  Path(phantoms.__file__).read_bytes()
                  + Path(synthetic.__file__).read_bytes()).hexdigest()}
    series = work / "ct_series"
    stamp = work / "ct_series.json"
    if series.is_dir() and stamp.exists() and json.loads(stamp.read_text()) == recipe:
        return series
    print(f"Building the {'x'.join(map(str, SHAPE[::-1]))} CT series in {series} ...", flush=True)
    started = time.perf_counter()
    stored = stored_values()  # (k, rows, cols)
    n, rows, cols = SHAPE
    # Centred on the isocentre, so that the phantom's millimetres are patient millimetres.
    origin = (-(cols - 1) / 2 * PIXEL_SPACING_MM[1], -(rows - 1) / 2 * PIXEL_SPACING_MM[0],
              -(n - 1) / 2 * SLICE_SPACING_MM)
    positions = synthetic.regular_positions(n, origin=origin, spacing=SLICE_SPACING_MM)
    staging = work / "ct_series.partial"
    shutil.rmtree(staging, ignore_errors=True)
    stamp.unlink(missing_ok=True)
    synthetic.write_series(staging, stored, positions, pixel_spacing=PIXEL_SPACING_MM,
                                   modality="CT", rescale_slope=1,
                                   rescale_intercept=RESCALE_INTERCEPT,
                                   series_description="bench chest CT", seed=SEED,
                                   shuffle_names=True, extra={"PatientPosition": "HFS"})
    shutil.rmtree(series, ignore_errors=True)
    staging.rename(series)
    stamp.write_text(json.dumps(recipe))
    print(f"  built in {time.perf_counter() - started:.1f} s", flush=True)
    return series


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
            "pigz_on_path": shutil.which("pigz") is not None}


def _read_lines(path: str) -> list[str]:
    try:
        return Path(path).read_text().splitlines()
    except OSError:
        return []


def render(machine: dict, results: dict, repeats: int, input_mb: float) -> str:
    """The header and the markdown table of results."""
    versions = ", ".join(f"{name} {version}" for name, version in machine["versions"].items())
    pigz = "pigz" if machine["pigz_on_path"] else "its internal deflate (no pigz on PATH)"
    lines = [
        f"Machine: {machine['nproc']} CPUs ({machine['cpu']}), {machine['platform']}, "
        f"Python {machine['python']}",
        f"Versions: {versions}",
        f"Input: {'x'.join(map(str, SHAPE[::-1]))} int16 CT, {SHAPE[0]} files, "
        f"{input_mb:.0f} MB, page cache warm. dcm2niix -z y compresses with {pigz}.",
        f"Median wall and CPU (user+sys) time and largest peak RSS of {repeats} runs; "
        "output = image file only.",
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


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    require_gnu_time()
    candidates = tools()
    args.work.mkdir(parents=True, exist_ok=True)
    series = build_series(args.work)
    input_mb = warm_page_cache(series) / 1e6
    print(f"Timing {len(candidates)} tools x {args.repeats} runs ...", flush=True)
    results = benchmark(candidates, series, args.work / "runs", args.repeats)
    machine = machine_info()
    print()
    print(render(machine, results, args.repeats, input_mb))
    equal, detail = same_world_image(single_image(Path(results["convkit nii.gz"]["output_dir"])),
                                     single_image(Path(results[BASELINE]["output_dir"])))
    print()
    print(f"convkit output equals dcm2niix in world space: {'yes' if equal else 'no'} ({detail})")
    if args.json:
        save_json(args.json, {"machine": machine, "repeats": args.repeats, "input_mb": input_mb,
                              "shape_slices_rows_cols": SHAPE, "baseline": BASELINE,
                              "results": results, "convkit_equals_dcm2niix": equal,
                              "verification": detail})
    return 0 if equal else 1


if __name__ == "__main__":
    sys.exit(main())
