"""Benchmark convkit nii2dicom --seg against dcmqi's itkimage2segimage: a 5-label mask -> SEG.

The reference series is convert.py's synthetic 512 x 512 x 300 chest CT (cached under
--work, built once); the mask is the phantom's body, lungs, vessels, ground-glass patches
and spine as labels 1..5 on that grid (NIfTI). Each tool runs as a whole process under GNU
time, --repeats times round-robin, into a fresh file (convkit byte-compiled first, as an
installed package is). Afterwards both SEGs are read back by
highdicom and must hold the mask's labels at the CT's voxel centres: a benchmark of a wrong
output is worthless.

    python benchmarks/seg.py [--work DIR] [--repeats N] [--json PATH]
"""

from __future__ import annotations

import json
import sys
import warnings
from pathlib import Path

import numpy as np
from convert import build_series
from phantom import PIXEL_SPACING_MM, SEED, SHAPE, SLICE_SPACING_MM
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

LABELS = ("body", "lungs", "vessels", "ggo", "bone")  # painted in this order: later wins
BASELINE = "dcmqi itkimage2segimage"


def build_mask(work: Path) -> tuple[Path, Path]:
    """The 5-label mask (NIfTI, on the CT's grid) and dcmqi's metadata JSON for it."""
    from convkit.formats import write_volume
    from convkit.geometry import affine_lps, lps_to_ras
    from convkit.testing.phantoms import chest_ct_masks
    from convkit.volume import Volume

    mask_path, meta_path = work / "mask5.nii.gz", work / "mask5_dcmqi.json"
    if mask_path.exists() and meta_path.exists():
        return mask_path, meta_path
    masks = chest_ct_masks(SHAPE, PIXEL_SPACING_MM, SLICE_SPACING_MM, SEED)
    labels = np.zeros(SHAPE, dtype=np.uint8)
    for number, name in enumerate(LABELS, start=1):
        labels[masks[name]] = number
    n, rows, cols = SHAPE
    origin = (-(cols - 1) / 2 * PIXEL_SPACING_MM[1], -(rows - 1) / 2 * PIXEL_SPACING_MM[0],
              -(n - 1) / 2 * SLICE_SPACING_MM)
    affine = lps_to_ras(affine_lps((1, 0, 0, 0, 1, 0), PIXEL_SPACING_MM, origin,
                                   (0, 0, SLICE_SPACING_MM)))
    write_volume(Volume(np.asfortranarray(labels.transpose(2, 1, 0)), affine), mask_path)
    code = {"CodeValue": "85756007", "CodingSchemeDesignator": "SCT", "CodeMeaning": "Tissue"}
    meta = {"ContentCreatorName": "bench", "SeriesDescription": "bench", "SeriesNumber": "300",
            "InstanceNumber": "1", "segmentAttributes": [[
                {"labelID": n, "SegmentLabel": name, "SegmentAlgorithmType": "MANUAL",
                 "SegmentedPropertyCategoryCodeSequence": code,
                 "SegmentedPropertyTypeCodeSequence": code}
                for n, name in enumerate(LABELS, start=1)]]}
    meta_path.write_text(json.dumps(meta))
    return mask_path, meta_path


def compile_convkit() -> None:
    """Byte-compile convkit as installing it does (pip writes the .pyc files): run from a
    source tree under PYTHONDONTWRITEBYTECODE, every process would compile its ~50 modules
    again (~0.2 s), a cost no installed convkit pays. Written to __pycache__ (git-ignored)."""
    import compileall

    import convkit

    compileall.compile_dir(Path(convkit.__file__).parent, quiet=1)


def commands(mask: Path, meta: Path, series: Path) -> dict[str, list[str]]:
    convkit = [sys.executable, "-m", "convkit", "nii2dicom", str(mask)]
    return {
        "convkit --seg (LABELMAP)": [*convkit, "{out}", "--seg", "--reference", str(series)],
        "convkit --seg --seg-type binary": [*convkit, "{out}", "--seg", "--reference",
                                            str(series), "--seg-type", "binary"],
        BASELINE: [find_executable("itkimage2segimage"), "--inputImageList", str(mask),
                   "--inputDICOMDirectory", str(series), "--inputMetadata", str(meta),
                   "--outputDICOM", "{out}"],
    }


def verify(seg_path: Path, mask: Path) -> str:
    """'' when highdicom reads the mask's labels back at every voxel centre, else why not."""
    import highdicom as hd
    import nibabel as nib

    image = nib.load(mask)
    labels = np.asarray(image.dataobj)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        volume = hd.seg.segread(seg_path).get_volume(combine_segments=True)
    seg_affine = np.diag([-1.0, -1.0, 1.0, 1.0]) @ np.asarray(volume.affine)  # (s, r, c) -> RAS
    index = np.indices(labels.shape).reshape(3, -1)
    world = image.affine @ np.vstack([index, np.ones(index.shape[1])])
    seg_index = np.rint(np.linalg.inv(seg_affine) @ world)[:3].astype(int)
    inside = ((seg_index >= 0) & (seg_index < np.array(volume.array.shape)[:, None])).all(0)
    found = np.zeros(index.shape[1], dtype=np.int64)
    found[inside] = np.asarray(volume.array)[tuple(seg_index[:, inside])]
    wrong = int(np.count_nonzero(found != labels.reshape(-1)))
    return "" if wrong == 0 else f"{wrong} voxels differ"


def main(argv: list[str] | None = None) -> int:
    args = parse_checked(benchmark_parser(__doc__, "convkit-bench"), argv)
    require_gnu_time()
    args.work.mkdir(parents=True, exist_ok=True)
    series = build_series(args.work)
    mask, meta = build_mask(args.work)
    warm_page_cache(series)
    compile_convkit()
    runs_dir = args.work / "seg_runs"
    runs_dir.mkdir(exist_ok=True)
    tools = commands(mask, meta, series)
    runs: dict[str, list[Run]] = {name: [] for name in tools}
    outputs: dict[str, Path] = {}
    for repeat in range(args.repeats):
        for index, (name, argv_template) in enumerate(tools.items()):
            out = runs_dir / f"tool{index}.dcm"
            out.unlink(missing_ok=True)
            runs[name].append(run_timed([a.replace("{out}", str(out)) for a in argv_template],
                                        runs_dir / f"tool{index}.log"))
            outputs[name] = out
            print(f"  run {repeat + 1}: {name}: {runs[name][-1].wall_s:.2f} s", flush=True)
    base = summarize(runs[BASELINE])
    results = {}
    print(f"\n512x512x300 mask, {len(LABELS)} labels -> DICOM SEG ({args.repeats} runs, median)")
    print(f"{'tool':34} {'wall s':>8} {'cpu s':>8} {'peak MiB':>9} {'x dcmqi':>8} "
          f"{'cpu x':>6}  check")
    failed = False
    for name in tools:
        summary = summarize(runs[name])
        problem = verify(outputs[name], mask)
        failed |= bool(problem)
        share = ratio(summary.wall_s, base.wall_s)
        cpu_share = ratio(summary.cpu_s, base.cpu_s)
        results[name] = {"wall_s": summary.wall_s, "cpu_s": summary.cpu_s,
                         "peak_rss_mib": summary.peak_rss_mib, "wall_vs_dcmqi": share,
                         "cpu_vs_dcmqi": cpu_share,
                         "bytes": outputs[name].stat().st_size, "check": problem or "ok",
                         "runs": [r.timings() for r in runs[name]]}
        print(f"{name:34} {summary.wall_s:8.2f} {summary.cpu_s or 0:8.2f} "
              f"{summary.peak_rss_mib or 0:9.0f} {share or 0:8.2f} {cpu_share or 0:6.2f}  "
              f"{problem or 'ok'}")
    if args.json:
        save_json(args.json, {"results": results, "versions": package_versions(
            ["convkit", "highdicom", "pydicom", "dcmqi", "numpy"])})
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
