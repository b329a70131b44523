"""Benchmark `convkit preview` against nilearn and a matplotlib subplot loop: a 5x5 mosaic.

The input is a synthetic 512 x 512 x 300 int16 chest CT as .nii.gz (0.7 mm pixels, 1 mm
slices, scl_inter -1024), built once and cached under --work. Every tool draws 25 axial
slices (0, 10, ..., 240) in the lung window (W 1500, L -600) into a PNG, as a whole process
(interpreter start-up and imports included), under GNU time for the CPU time and peak
memory when it is installed (CPU time is the steadier figure on a shared machine).
Afterwards convkit's PNG is checked: a 5x5 grid of the requested slices.

    python benchmarks/preview.py [--work DIR] [--repeats N] [--json PATH]
                                 [--baseline-python PYTHON]

nilearn and matplotlib are benchmark dependencies only (the `bench` extra), never runtime ones.
`--baseline-python` runs them from another environment, so that convkit (beside this
interpreter) is timed as a user installs it: the bench extra brings python-gdcm and requests,
which pydicom imports at start-up when they are installed.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
from convert import compile_convkit
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
    find_executable,
    gnu_time_available,
    package_versions,
    parse_checked,
    ratio,
    run_timed,
    save_json,
    summarize,
    warm_page_cache,
)

SLICES = list(range(0, 250, 10))  # the classic 5x5 mosaic of every 10th slice
LUNG = (-600, 1500)  # centre, width
BASELINE = "nilearn plot_img mosaic"

NILEARN_SCRIPT = """\
import sys
import matplotlib
matplotlib.use("Agg")
import nibabel as nib
from nilearn import plotting
img = nib.load(sys.argv[1])
slices = [int(k) for k in sys.argv[3].split(",")]
z = [float((img.affine @ [0, 0, k, 1])[2]) for k in slices]
centre = img.affine @ ([(n - 1) / 2 for n in img.shape[:3]] + [1])
display = plotting.plot_img(img, display_mode="mosaic", cmap="gray", colorbar=False,
                            cut_coords={"x": [centre[0]], "y": [centre[1]], "z": z},
                            vmin=float(sys.argv[4]), vmax=float(sys.argv[5]))
display.savefig(sys.argv[2])
display.close()
"""
MATPLOTLIB_SCRIPT = """\
import sys
import matplotlib
matplotlib.use("Agg")
import matplotlib.pyplot as plt
import nibabel as nib
import numpy as np
img = nib.load(sys.argv[1])
slices = [int(k) for k in sys.argv[3].split(",")]
fig, axes = plt.subplots(5, 5, figsize=(10, 10))
for ax, k in zip(axes.flat, slices):
    plane = np.asarray(img.dataobj[:, :, k], dtype=np.float32)
    ax.imshow(plane.T, cmap="gray", vmin=float(sys.argv[4]), vmax=float(sys.argv[5]),
              origin="lower")
    ax.set_title(f"k={k}", fontsize=8)
    ax.axis("off")
fig.savefig(sys.argv[2], dpi=100)
"""


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = benchmark_parser(__doc__, "convkit-bench-preview")
    parser.add_argument("--baseline-python", default=sys.executable,
                        help="the interpreter that runs nilearn and matplotlib "
                             "(default: this one)")
    return parse_checked(parser, argv)


def baseline_versions(python: str) -> dict[str, str]:
    """nilearn's and matplotlib's versions in the baseline interpreter's environment."""
    probe = ("import importlib.metadata as m\n"
             "for name in ('nilearn', 'matplotlib'):\n"
             "    try:\n        print(m.version(name))\n"
             "    except m.PackageNotFoundError:\n        print('not installed')\n")
    done = subprocess.run([python, "-c", probe], capture_output=True, text=True, check=True)
    return dict(zip(("nilearn", "matplotlib"), done.stdout.split(), strict=True))


def tools(nifti: Path, out: Path, baseline_python: str) -> dict[str, list[str]]:
    convkit = find_executable("convkit")
    low, high = LUNG[0] - LUNG[1] / 2, LUNG[0] + LUNG[1] / 2
    script_args = [str(nifti), "", ",".join(map(str, SLICES)), str(low), str(high)]
    commands = {
        "convkit preview": [convkit, "preview", str(nifti), "-o", str(out / "convkit.png"),
                            "--mosaic", "5x5", "--step", "10", "--window", "lung", "--force"],
    }
    for name, script, file in ((BASELINE, NILEARN_SCRIPT, "nilearn.png"),
                               ("matplotlib subplots", MATPLOTLIB_SCRIPT, "matplotlib.png")):
        argv = list(script_args)
        argv[1] = str(out / file)
        commands[name] = [baseline_python, "-c", script, *argv]
    return commands


def build_input(work: Path) -> Path:
    """The cached CT as .nii.gz, rebuilt when the phantom's source or the recipe changes."""
    from convkit.formats import write_volume
    from convkit.testing import phantoms
    from convkit.volume import Volume

    recipe = {"shape": list(SHAPE), "pixel_spacing_mm": list(PIXEL_SPACING_MM),
              "slice_spacing_mm": SLICE_SPACING_MM, "seed": SEED,
              "source_sha256": hashlib.sha256(
                  Path(phantoms.__file__).read_bytes()).hexdigest()}
    nifti = work / "ct.nii.gz"
    stamp = work / "ct.recipe.json"  # not ct.json: convkit would read that as ct's sidecar
    if nifti.exists() and stamp.exists() and json.loads(stamp.read_text()) == recipe:
        return nifti
    print(f"Building the {'x'.join(map(str, SHAPE[::-1]))} CT in {nifti} ...", flush=True)
    started = time.perf_counter()
    stored = stored_values()  # (k, rows, cols)
    n, rows, cols = SHAPE
    # An axial DICOM stack in RAS: i (columns) to patient left, j (rows) posterior, k superior.
    affine = np.diag([-PIXEL_SPACING_MM[1], -PIXEL_SPACING_MM[0], SLICE_SPACING_MM, 1.0])
    affine[:3, 3] = [(cols - 1) / 2 * PIXEL_SPACING_MM[1], (rows - 1) / 2 * PIXEL_SPACING_MM[0],
                     -(n - 1) / 2 * SLICE_SPACING_MM]
    volume = Volume(stored.transpose(2, 1, 0), affine, 1.0, float(RESCALE_INTERCEPT),
                    metadata={"Modality": "CT"})
    work.mkdir(parents=True, exist_ok=True)
    partial = work / "ct.partial.nii.gz"
    write_volume(volume, partial)
    partial.replace(nifti)
    stamp.write_text(json.dumps(recipe))
    print(f"  built in {time.perf_counter() - started:.1f} s", flush=True)
    return nifti


def verify_convkit(nifti: Path, out: Path) -> str:
    """convkit's mosaic holds the 25 requested slices in a 5x5 grid (checked via --json and
    by decoding the PNG with SimpleITK)."""
    import SimpleITK as sitk

    convkit = find_executable("convkit")
    done = subprocess.run([convkit, "preview", str(nifti), "-o", str(out / "check.png"),
                           "--mosaic", "5x5", "--step", "10", "--window", "lung", "--force",
                           "--json"], capture_output=True, text=True, check=True)
    report = json.loads(done.stdout)
    slices = [tile["slice"] for tile in report["tiles"]]
    png = sitk.GetArrayFromImage(sitk.ReadImage(str(out / "check.png")))
    problems = []
    if slices != SLICES or report["grid"] != [5, 5]:
        problems.append(f"slices {slices}, grid {report['grid']}")
    if list(png.shape[1::-1]) != report["size"]:
        problems.append(f"PNG {png.shape} != reported size {report['size']}")
    return "; ".join(problems) or (f"5x5 grid of slices 0..240, {png.shape[1]}x{png.shape[0]} "
                                   "PNG, lung window")


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    found = {"python": platform.python_version(),
             **package_versions(("convkit", "nibabel", "numpy")),
             **baseline_versions(args.baseline_python)}
    if "not installed" in (found["nilearn"], found["matplotlib"]):
        raise SystemExit("error: nilearn and matplotlib are needed for this benchmark: "
                         "pip install -e '.[bench]'")
    compile_convkit()  # as installed: see convert.py
    work = args.work
    nifti = build_input(work)
    out = work / "out"
    out.mkdir(parents=True, exist_ok=True)
    warm_page_cache(nifti)
    use_time = gnu_time_available()
    commands = tools(nifti, out, args.baseline_python)
    env = {**os.environ, "COLUMNS": "120"}
    runs: dict[str, list[Run]] = {name: [] for name in commands}
    for repeat in range(args.repeats):
        for name, command in commands.items():
            log = out / f"{name.replace(' ', '_')}.log"
            runs[name].append(run_timed(command, log, gnu_time=use_time, env=env))
            print(f"  run {repeat + 1}/{args.repeats} {name}: {runs[name][-1].wall_s:.2f} s",
                  flush=True)
    verification = verify_convkit(nifti, out)
    baseline = summarize(runs[BASELINE])
    print(f"\n5x5 mosaic of a {'x'.join(map(str, SHAPE[::-1]))} CT (.nii.gz), "
          f"median of {args.repeats}, whole processes; {os.cpu_count()} CPUs")
    print(f"{'tool':<26}{'wall s':>9}{'cpu s':>9}{'peak MiB':>10}{'wall x nilearn':>16}"
          f"{'cpu x nilearn':>15}")
    rows = []
    for name, results in runs.items():
        summary = summarize(results)
        wall, cpu, rss = summary.wall_s, summary.cpu_s, summary.peak_rss_mib
        wall_ratio, cpu_ratio = ratio(wall, baseline.wall_s), ratio(cpu, baseline.cpu_s)
        rows.append({"tool": name, "wall_s": wall, "cpu_s": cpu, "peak_rss_mib": rss,
                     "ratio_to_nilearn": wall_ratio, "cpu_ratio_to_nilearn": cpu_ratio})
        print(f"{name:<26}{wall:>9.2f}{(f'{cpu:.2f}' if cpu else '-'):>9}"
              f"{(f'{rss:.0f}' if rss else '-'):>10}{wall_ratio:>16.2f}"
              f"{(f'{cpu_ratio:.2f}' if cpu_ratio else '-'):>15}")
    print(f"\nconvkit output: {verification}")
    print(f"outputs: {out}")
    if args.json:
        save_json(args.json, {"versions": found, "baseline_python": args.baseline_python,
                              "machine": platform.platform(),
                              "cpus": os.cpu_count(), "results": rows,
                              "verification": verification})
    return 0


if __name__ == "__main__":
    sys.exit(main())
