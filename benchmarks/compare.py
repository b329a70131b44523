"""Benchmark `convkit compare` of a .nii.gz and a gzip .nrrd against nib-diff on two .nii.gz.

The input is the synthetic 512 x 512 x 300 int16 chest CT of preview.py (built once and
cached under --work): the .nii.gz convkit writes, the same image as a gzip-encoded .nrrd
(LPS, written by convkit through pynrrd) and as a second .nii.gz written by nibabel (the
same real values and affine, as unscaled int16). Side by side, as whole processes
(interpreter start-up and imports included), --repeats times round-robin under GNU time:

- `convkit compare CT.nii.gz CT.nrrd` (the row of issue 12: across formats, in world space);
- `convkit compare CT.nii.gz CT_nib.nii.gz` (the same inputs as nib-diff);
- `nib-diff CT.nii.gz CT_nib.nii.gz` (nibabel's own tool; the baseline of the ratios).

Afterwards convkit's verdict is checked: the two files hold the same image, every value
compared and equal.

    python benchmarks/compare.py [--work DIR] [--repeats N] [--json PATH]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
from pathlib import Path

from preview import build_input
from timing import (
    Run,
    benchmark_parser,
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

BASELINE = "nib-diff (.nii.gz, .nii.gz)"
ROW = "convkit compare (.nii.gz, .nrrd)"
VOXELS = 512 * 512 * 300


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    return parse_checked(benchmark_parser(__doc__, "convkit-bench-compare"), argv)


def build_inputs(work: Path) -> tuple[Path, Path, Path]:
    """(CT.nii.gz, CT.nrrd, CT_nib.nii.gz) in work/inputs, a folder without sidecars; the
    .nrrd and the nibabel copy are rebuilt whenever the .nii.gz is."""
    source = build_input(work / "ct")
    folder = work / "inputs"
    folder.mkdir(parents=True, exist_ok=True)
    nifti, nrrd, copy = folder / "ct.nii.gz", folder / "ct.nrrd", folder / "ct_nib.nii.gz"
    stamp = folder / "built-from.json"
    key = {"mtime_ns": source.stat().st_mtime_ns, "size": source.stat().st_size}
    if stamp.exists() and json.loads(stamp.read_text()) == key and nrrd.exists() \
            and copy.exists():
        return nifti, nrrd, copy
    print(f"Writing the .nrrd and nibabel's .nii.gz of {source} ...", flush=True)
    nifti.unlink(missing_ok=True)
    os.link(source, nifti)
    import nibabel as nib
    import numpy as np

    from convkit.formats import read_volume, write_volume

    write_volume(read_volume(nifti), nrrd)
    image = nib.load(nifti)
    slope, intercept = image.dataobj.slope, image.dataobj.inter
    stored = np.asanyarray(image.dataobj.get_unscaled())
    # the real values (HU) as int16, unscaled: the same image, stored another way
    real = stored.astype(np.int32) * int(slope) + int(intercept)
    nib.save(nib.Nifti1Image(real.astype(np.int16), image.affine), copy)
    stamp.write_text(json.dumps(key))
    return nifti, nrrd, copy


def verify(nifti: Path, nrrd: Path, copy: Path) -> str:
    """convkit's verdict on both pairs: the same image, all values equal."""
    convkit = find_executable("convkit")
    problems = []
    for other in (nrrd, copy):
        done = subprocess.run([convkit, "compare", str(nifti), str(other), "--json"],
                              capture_output=True, text=True)
        report = json.loads(done.stdout)
        voxels = report.get("voxels") or {}
        if done.returncode != 0 or report["verdict"] == "different" \
                or voxels.get("compared") != VOXELS or voxels.get("max_abs_diff") != 0:
            problems.append(f"{other.name}: exit {done.returncode}, {report['verdict']}, "
                            f"{voxels.get('compared')} compared, max |diff| "
                            f"{voxels.get('max_abs_diff')}")
    return "; ".join(problems) or (f"both pairs equal: {VOXELS:,} values compared, "
                                   "max |diff| 0")


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    require_gnu_time()
    found = {"python": platform.python_version(),
             **package_versions(("convkit", "nibabel", "numpy", "pynrrd", "isal"))}
    nifti, nrrd, copy = build_inputs(args.work)
    for path in (nifti, nrrd, copy):
        warm_page_cache(path)
    convkit, nib_diff = find_executable("convkit"), find_executable("nib-diff")
    commands = {
        ROW: [convkit, "compare", str(nifti), str(nrrd)],
        "convkit compare (.nii.gz, .nii.gz)": [convkit, "compare", str(nifti), str(copy)],
        BASELINE: [nib_diff, str(nifti), str(copy)],
    }
    out = args.work / "out"
    out.mkdir(parents=True, exist_ok=True)
    env = {**os.environ, "COLUMNS": "120"}
    runs: dict[str, list[Run]] = {name: [] for name in commands}
    for repeat in range(args.repeats):
        for name, command in commands.items():
            log = out / f"{name.split(' (')[0].replace(' ', '_')}-{len(runs[name])}.log"
            # exit 1 is an answer (nib-diff: the headers differ), not a failure
            runs[name].append(run_timed(command, log, env=env, check=False))
            if runs[name][-1].exit_code not in (0, 1):
                raise SystemExit(f"error: {name} exited {runs[name][-1].exit_code} ({log})")
            print(f"  run {repeat + 1}/{args.repeats} {name}: {runs[name][-1].wall_s:.2f} s",
                  flush=True)
    verification = verify(nifti, nrrd, copy)
    report(args, runs, verification, found)
    return 0 if verification.startswith("both") else 1


def report(args: argparse.Namespace, runs: dict[str, list[Run]], verification: str,
           found: dict[str, str]) -> None:
    baseline = summarize(runs[BASELINE])
    print(f"\ncompare of a 512x512x300 int16 CT, median of {args.repeats}, whole processes; "
          f"{os.cpu_count()} CPUs; ratio = time / time of {BASELINE}")
    print(f"{'tool':<38}{'wall s':>8}{'cpu s':>8}{'peak MiB':>10}{'wall x':>8}{'cpu x':>8}")
    rows = []
    for name, items in runs.items():
        summary = summarize(items)
        wall_ratio, cpu_ratio = ratio(summary.wall_s, baseline.wall_s), \
            ratio(summary.cpu_s, baseline.cpu_s)
        codes = sorted({r.exit_code for r in items})
        rows.append({"tool": name, "wall_s": summary.wall_s, "cpu_s": summary.cpu_s,
                     "peak_rss_mib": summary.peak_rss_mib, "ratio": wall_ratio,
                     "cpu_ratio": cpu_ratio, "exit_codes": codes,
                     "runs": [r.timings() for r in items]})
        print(f"{name:<38}{summary.wall_s:>8.2f}{summary.cpu_s or 0:>8.2f}"
              f"{summary.peak_rss_mib or 0:>10.0f}{wall_ratio or 0:>8.3f}{cpu_ratio or 0:>8.3f}"
              f"  (exit {codes})")
    print(f"\nconvkit's verdict: {verification}")
    if args.json:
        save_json(args.json, {"versions": found, "machine": platform.platform(),
                              "cpus": os.cpu_count(), "results": rows,
                              "verification": verification})


if __name__ == "__main__":
    sys.exit(main())
