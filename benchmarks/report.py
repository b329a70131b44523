"""Benchmark `convkit report` against slicesdir-like baselines: one picture per series.

An archive of --series distinct CT series (default 1,000; chest phantoms of ROWS x COLS x
SLICES, each series its own UIDs) is built once under --work, as DICOM (one file per slice)
and as the same volumes in NIfTI (.nii.gz). Timed, side by side in one run, whole
processes under GNU time:

- `convkit report` of the DICOM tree (audit + pictures + the page), all cores and --jobs 1;
- `convkit report` of the NIfTI tree (all cores);
- nilearn: `plot_anat(display_mode="ortho")` of every NIfTI file to a PNG plus an index
  page (what FSL's slicesdir gives: pictures, no metadata), one process, as slicesdir runs;
- matplotlib: three centre planes per NIfTI file in one figure, saved as a PNG, plus the
  index page.

The baselines read the NIfTI files (the conversion is not timed): they get the easier input.
Afterwards the DICOM page is checked: one card per series, each with a thumbnail.

    python benchmarks/report.py [--series N] [--work DIR] [--repeats N] [--json PATH]

nilearn and matplotlib are benchmark dependencies only (the `bench` extra).
"""

from __future__ import annotations

import json
import os
import platform
import re
import sys
import time
from pathlib import Path

import numpy as np
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

ROWS = COLS = 128
SLICES = 40
PIXEL_SPACING_MM = (2.5, 2.5)
SLICE_SPACING_MM = 5.0
DISTINCT_PHANTOMS = 10  # series share these pixel arrays (not their UIDs)
BASELINE = "nilearn plot_anat ortho"

NILEARN_SCRIPT = """\
import sys
from pathlib import Path
import matplotlib
matplotlib.use("Agg")
from nilearn import plotting
source, out = Path(sys.argv[1]), Path(sys.argv[2])
out.mkdir(parents=True, exist_ok=True)
names = []
for path in sorted(source.rglob("*.nii.gz")):
    name = path.name.removesuffix(".nii.gz") + ".png"
    display = plotting.plot_anat(str(path), display_mode="ortho", title=path.name,
                                 output_file=None)
    display.savefig(str(out / name), dpi=60)
    display.close()
    names.append(name)
(out / "index.html").write_text("".join(f'<img src="{n}"><br>{n}<br>' for n in names))
"""
MATPLOTLIB_SCRIPT = """\
import sys
from pathlib import Path
import matplotlib
matplotlib.use("Agg")
import matplotlib.pyplot as plt
import nibabel as nib
import numpy as np
source, out = Path(sys.argv[1]), Path(sys.argv[2])
out.mkdir(parents=True, exist_ok=True)
names = []
fig, axes = plt.subplots(1, 3, figsize=(6, 2))
for path in sorted(source.rglob("*.nii.gz")):
    data = np.asarray(nib.load(str(path)).get_fdata(dtype=np.float32))
    i, j, k = (n // 2 for n in data.shape[:3])
    planes = (data[:, :, k].T, data[:, j, :].T, data[i, :, :].T)
    low, high = np.percentile(data, (1, 99))
    for ax, plane in zip(axes, planes):
        ax.clear()
        ax.imshow(plane, cmap="gray", origin="lower", vmin=low, vmax=high)
        ax.axis("off")
    name = path.name.removesuffix(".nii.gz") + ".png"
    fig.savefig(str(out / name), dpi=60)
    names.append(name)
(out / "index.html").write_text("".join(f'<img src="{n}"><br>{n}<br>' for n in names))
"""


def parse_args(argv: list[str] | None):
    parser = benchmark_parser(__doc__, "convkit-bench-report")
    parser.add_argument("--series", type=int, default=1000, help="series in the archive")
    return parse_checked(parser, argv)


def build_archive(work: Path, count: int) -> tuple[Path, Path]:
    """(DICOM tree, NIfTI tree) of count series; cached, rebuilt when the recipe changes."""
    from convkit.formats import write_volume
    from convkit.testing import phantoms
    from convkit.testing.synthetic import regular_positions, write_series
    from convkit.volume import Volume

    recipe = {"series": count, "shape": [SLICES, ROWS, COLS], "version": 1}
    dicom, nifti = work / f"dicom-{count}", work / f"nifti-{count}"
    stamp = work / f"archive-{count}.json"
    if stamp.exists() and json.loads(stamp.read_text()) == recipe:
        return dicom, nifti
    print(f"Building {count} series in {dicom} and {nifti} ...", flush=True)
    started = time.perf_counter()
    stored = [np.rint(phantoms.chest_ct_hu((SLICES, ROWS, COLS), PIXEL_SPACING_MM,
                                           SLICE_SPACING_MM, seed) + 1024).astype(np.int16)
              for seed in range(DISTINCT_PHANTOMS)]
    positions = regular_positions(SLICES, spacing=SLICE_SPACING_MM)
    # The same grid in RAS: i (columns) to patient left, j (rows) posterior, k superior.
    affine = np.diag([-PIXEL_SPACING_MM[1], -PIXEL_SPACING_MM[0], SLICE_SPACING_MM, 1.0])
    for index in range(count):
        values = stored[index % DISTINCT_PHANTOMS]
        folder = f"patient{index // 10:03d}/series{index % 10}"
        write_series(dicom / folder, values, positions, pixel_spacing=PIXEL_SPACING_MM,
                     rescale_intercept=-1024.0, rescale_slope=1.0, series_number=index % 10 + 1,
                     series_description=f"chest {index}", seed=index + 1)
        (nifti / folder).mkdir(parents=True, exist_ok=True)
        write_volume(Volume(values.transpose(2, 1, 0), affine, 1.0, -1024.0,
                            metadata={"Modality": "CT"}), nifti / folder / f"s{index:04d}.nii.gz")
    stamp.write_text(json.dumps(recipe))
    print(f"  built in {time.perf_counter() - started:.0f} s", flush=True)
    return dicom, nifti


def check_page(page: Path, count: int) -> str:
    """One card per series, each with a WebP thumbnail (a fast wrong page is worthless)."""
    text = page.read_text(encoding="utf-8")
    data = json.loads(re.search(r'id="report-data">(.*?)</script>', text, re.S).group(1))
    cards = data["cards"]
    if len(cards) != count or not all(c["thumb"].startswith("data:image/webp") for c in cards):
        sys.exit(f"convkit report: {len(cards)} cards for {count} series, or a card without a "
                 "picture")
    return f"{len(cards)} cards with thumbnails, page {len(text) / 2**20:.1f} MiB"


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    versions = {"python": platform.python_version(),
                **package_versions(("convkit", "nilearn", "matplotlib", "nibabel", "Pillow"))}
    if "not installed" in (versions["nilearn"], versions["matplotlib"]):
        raise SystemExit("error: nilearn and matplotlib are needed: pip install -e '.[bench]'")
    dicom, nifti = build_archive(args.work, args.series)
    out = args.work / "out"
    out.mkdir(parents=True, exist_ok=True)
    warm_page_cache(dicom)
    warm_page_cache(nifti)
    convkit = find_executable("convkit")
    commands = {
        "convkit report (DICOM)": [convkit, "report", str(dicom), "-o",
                                   str(out / "dicom.html"), "--force"],
        "convkit report (DICOM) --jobs 1": [convkit, "report", str(dicom), "-o",
                                            str(out / "dicom1.html"), "--force", "-j", "1"],
        "convkit report (NIfTI)": [convkit, "report", str(nifti), "-o", str(out / "nifti.html"),
                                   "--force"],
        BASELINE: [sys.executable, "-c", NILEARN_SCRIPT, str(nifti), str(out / "nilearn")],
        "matplotlib 3 planes": [sys.executable, "-c", MATPLOTLIB_SCRIPT, str(nifti),
                                str(out / "matplotlib")],
    }
    use_time = gnu_time_available()
    runs: dict[str, list[Run]] = {name: [] for name in commands}
    for repeat in range(args.repeats):
        for name, command in commands.items():
            log = out / f"{re.sub(r'[^a-z0-9]+', '_', name.lower())}.log"
            runs[name].append(run_timed(command, log, gnu_time=use_time))
            print(f"  run {repeat + 1}/{args.repeats} {name}: {runs[name][-1].wall_s:.1f} s",
                  flush=True)
    verification = check_page(out / "dicom.html", args.series)
    report(args, runs, verification, versions)
    return 0


def report(args, runs: dict[str, list[Run]], verification: str, versions: dict) -> None:
    baseline = summarize(runs[BASELINE])
    print(f"\n{args.series} CT series of {COLS}x{ROWS}x{SLICES} (DICOM: "
          f"{args.series * SLICES} files), median of {args.repeats}, whole processes, warm "
          f"page cache; {os.cpu_count()} CPUs")
    print(f"{'tool':<34}{'wall s':>9}{'series/s':>10}{'cpu s':>9}{'peak MiB':>10}"
          f"{'wall x nilearn':>16}")
    rows = []
    for name, items in runs.items():
        summary = summarize(items)
        wall, cpu, peak = summary.wall_s, summary.cpu_s, summary.peak_rss_mib
        wall_ratio = ratio(wall, baseline.wall_s)
        rows.append({"tool": name, "wall_s": wall, "cpu_s": cpu, "peak_rss_mib": peak,
                     "ratio_to_nilearn": wall_ratio})
        print(f"{name:<34}{wall:>9.1f}{args.series / wall:>10.1f}"
              f"{(f'{cpu:.1f}' if cpu else '-'):>9}{(f'{peak:.0f}' if peak else '-'):>10}"
              f"{wall_ratio:>16.3f}")
    print(f"\nconvkit page: {verification}")
    if args.json:
        save_json(args.json, {"versions": versions, "machine": platform.platform(),
                              "cpus": os.cpu_count(), "series": args.series, "results": rows,
                              "verification": verification})


if __name__ == "__main__":
    sys.exit(main())
