"""dicom2nii as a library call: every series under a folder -> volume + JSON sidecar.

convert_folder returns a ConversionReport (one SeriesResult per series, one
FileRecord per input file) that the CLI renders as a table or JSON. Refusals of
single series are results, not exceptions, so a batch goes on.
"""

from __future__ import annotations

import filecmp
import json
import os
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from convkit import collector, cores
from convkit.batch.executors import LocalPool
from convkit.batch.headers import HeaderCache
from convkit.batch.manifest import Manifest
from convkit.batch.report import ConversionReport, SeriesResult
from convkit.batch.rerun import Request, snapshot_text, tree_state
from convkit.batch.run import BatchRun, Hooks, choose_executor, in_order, one_run, workers_likely
from convkit.batch.work import (
    Item,
    SeriesTask,
    TaskOutcome,
    Why,
    digests,
    options_key,
    plan_items,
)
from convkit.dicom.diffusion import fsl_bvecs, write_bval, write_bval_bvec
from convkit.dicom.group import SeriesGroup
from convkit.dicom.header import FileRecord, FileStatus
from convkit.dicom.naming import check_template, name_series
from convkit.dicom.overlays import OVERLAY_SUFFIX, overlay_labels
from convkit.dicom.plan import ConvertOptions, plan_series
from convkit.dicom.scan import ScanResult, scan_folder
from convkit.dicom.series import read_series
from convkit.dicom.sidecar import relative_sources, sidecar_document
from convkit.errors import (
    ConvkitError,
    InputError,
    OutputError,
    RefusedError,
    UnreadableFileError,
    UsageError,
)
from convkit.formats import FORMATS, write_volume
from convkit.formats.deflate import DeflatingStream
from convkit.formats.output import (
    check_batch_folder,
    check_targets,
    file_states,
    path_kind,
    remove_stale_staging,
    staged_files,
)
from convkit.outcomes import DONE, Outcome
from convkit.processes import warm_up
from convkit.seg.folder import convert_segmentations, segmentation_records
from convkit.volume import Volume, max_volume_bytes, memory_limit

DEFAULT_NAME = "{SeriesNumber}_{SeriesDescription}"

#: progress(stage, done, total): stage is 'scan', a series label, or (series converted in
#: worker processes) batch.run.BATCH_SERIES and BATCH_BYTES.
Progress = Callable[[str, int, int], None]


class BatchInterrupted(KeyboardInterrupt):
    """A batch stopped by KeyboardInterrupt (Ctrl-C, or SIGTERM in the CLI); ``report`` holds
    what was done before (staging files of the item in progress are removed)."""

    def __init__(self, report: Any) -> None:
        super().__init__()
        self.report = report
        self.shown = False  # set by a CLI command that rendered the report itself


def convert_folder(
    in_dir: Path | str,
    out_dir: Path | str | None,
    *,
    options: ConvertOptions | None = None,
    fmt: str = "nii.gz",
    name_template: str = DEFAULT_NAME,
    select: list[str] | None = None,
    force: bool = False,
    list_only: bool = False,
    progress: Progress | None = None,
    overlays: bool = False,
    seg_overlap: str = "files",
    jobs: int = 0,
    scheduler: str | None = None,
    retry_failed: bool = False,
) -> ConversionReport:
    """Convert every (selected) series under in_dir into out_dir.

    Raises InputError when in_dir holds no DICOM image, UsageError for bad
    arguments, OutputError when a target exists without force. Series that
    cannot be converted faithfully are reported as refused; a series whose outputs
    cannot be written (a full disk) as failed, and the others are still tried.
    KeyboardInterrupt becomes BatchInterrupted, with the report of what was done.
    overlays: also write each series' overlay planes as NAME_overlay (overlays.py).

    Resumable: out_dir/.convkit/manifest.sqlite records every series (convkit.batch); a
    series converted before from the same files with the same options is 'up to date' (its
    outputs verified), one that failed is tried again only with retry_failed, and force
    converts everything again. jobs: the cores the run may use (0: every core; convkit.cores):
    with jobs 1 everything runs on one core; with more, series are converted at once in
    worker processes (as many as jobs and series, for batches of at least
    batch.run.PARALLEL_MIN_BYTES when jobs is 0; lowered when they would not fit in memory)
    that share the cores, and a series converted alone uses all of them. scheduler: the
    address of a Dask scheduler (or 'local' for a LocalCluster) to convert them on instead.
    """
    options = options or ConvertOptions()
    if scheduler:  # workers elsewhere: every path absolute
        in_dir = os.path.abspath(in_dir)
        out_dir = os.path.abspath(out_dir) if out_dir is not None else None
    in_dir = Path(in_dir)
    if fmt not in FORMATS:
        raise UsageError(f"unknown --format {fmt!r}", f"choose one of {', '.join(FORMATS)}")
    if jobs < 0:
        raise UsageError(f"--jobs {jobs}: give the number of cores to use, or 0 for all")
    check_template(name_template)
    if seg_overlap not in ("files", "stack", "split"):
        raise UsageError(f"unknown --seg-overlap {seg_overlap!r}",
                         "choose files, stack or split")
    if not in_dir.exists():
        raise InputError(f"{in_dir} does not exist", "check the input path")
    out_path = _check_output_dir(in_dir, out_dir, list_only)
    scan_progress = (lambda d, t: progress("scan", d, t)) if progress else None
    # the input tree as it is before the scan reads it: an unchanged rerun's snapshot
    tree = None if list_only else tree_state(in_dir)
    with _early_workers(tree, jobs, scheduler) as (early, scan_jobs):
        # big trees: headers in worker processes, as the audit; a rerun reads only new files
        cache = None if out_path is None else HeaderCache(in_dir, out_path)
        with collector.paused():  # thousands of headers, kept to the end
            scan = scan_folder(in_dir, scan_progress, jobs=scan_jobs, workers=early) \
                if cache is None else cache.scan(scan_progress, scan_jobs, early)
        name_series(scan.series, name_template)
        groups = _select(scan, select)
        report = ConversionReport(str(in_dir), str(out_path or ""), [], scan.files)
        if list_only:
            report.series = [_result(g, Outcome.FOUND) for g in groups]
            return report
        assert out_path is not None, "_check_output_dir returns a folder unless list_only"
        suffix = FORMATS[fmt]
        key = options_key(options, fmt, overlays)
        with one_run(out_path) as manifest:
            left = remove_stale_staging(out_path)  # under the run's lock: no other run writes
            if left:
                report.notes.append(f"removed {len(left)} staging folder(s) a killed run "
                                    f"left in {out_path}")
            items = plan_items(groups, manifest.rows(), in_dir, key, out_path,
                               lambda group: _all_targets(out_path, group, suffix),
                               force=force, retry_failed=retry_failed,
                               stat_of=cache.stat_of if cache else None)
            converting = [item for item in items if item.converts]
            check_collisions(out_path, [i.group for i in converting if not i.owned], suffix,
                             force, overlays)
            check_collisions(out_path, [i.group for i in converting if i.owned], suffix, True,
                             overlays)
            unreadable = _unreadable_by_series(scan)
            hooks = Hooks(convert_task, lambda item: _settled(item, unreadable, out_path),
                          lambda group: _all_targets(out_path, group, suffix),
                          lambda group: _targets(out_path, group.label, suffix))
            template = SeriesTask(groups[0], str(in_dir), str(out_path), suffix, options, force,
                                  overlays, max_volume_bytes())
            run = BatchRun(manifest, hooks, template, key, progress, report.series,
                           report.output_failed, meanwhile=cache.save if cache else None)
            executor = choose_executor(items, jobs, scheduler, options, report.notes, early)
            if early is not None and executor is not early:
                early.close()  # fewer series, or less memory, than workers
            try:
                if executor is None:
                    with cores.limited(cores.for_jobs(jobs)):  # --jobs: the cores of the run
                        run.serial(items)
                else:
                    with executor:
                        run.parallel(items, executor)
            except KeyboardInterrupt:
                _interrupted(report, groups, run.before)
            request = Request(in_dir, out_path, key, name_template, list(select or []),
                              seg_overlap, retry_failed)
            _remember_rerun(manifest, request, tree, report, items, scan)
    _mark_refused_files(report, groups)
    with cores.limited(cores.for_jobs(jobs)):
        _convert_segmentations(report, scan, groups, out_path, suffix, options, force,
                               seg_overlap)
    return report


@contextmanager
def _early_workers(tree: list | None, jobs: int, scheduler: str | None,
                   ) -> Iterator[tuple[LocalPool | None, int]]:
    """The worker processes started before the scan when the run will likely convert in
    them (run.workers_likely), and the scan's jobs. Forked now (LocalPool.forked_now), they
    read the tree's headers, then convert; where they cannot be forked, a forkserver gets
    ready on one core while the others scan. Stopped on the way out, unless the run used
    them (and stopped them) or closed them."""
    if tree is None or not workers_likely(sum(entry[1] for entry in tree),
                                          len({os.path.dirname(entry[0]) for entry in tree}),
                                          jobs, scheduler):
        yield None, jobs
        return
    early = LocalPool.forked_now(cores.for_jobs(jobs))
    if early is None:
        warm_up()
        yield None, max(1, cores.for_jobs(jobs) - 1)
        return
    with early:
        yield early, jobs


def _remember_rerun(manifest: Manifest, request: Request, tree: list | None,
                    report: ConversionReport, items: list[Item], scan: ScanResult) -> None:
    """After a complete run (every series written or up to date, no SEG or RTSTRUCT), the
    snapshot that lets a rerun of the same request on the same tree print, without reading
    it, the report the normal path would give (batch.rerun): each series' result as
    _recorded makes it from its manifest row."""
    done = (Outcome.WRITTEN, Outcome.UP_TO_DATE)
    if tree is None or len(report.series) != len(items) or segmentation_records(scan.files) \
            or any(result.status not in done for result in report.series):
        return
    rows = manifest.rows()
    rerun = []
    for item in items:
        row = rows.get(item.group.label)
        if row is None or (row.status, row.fingerprint) != (Outcome.WRITTEN, item.fingerprint):
            return
        rerun.append(_recorded(Item(item.group, Why.UP_TO_DATE, item.fingerprint, row, True),
                               request.out_dir))
    document = ConversionReport(report.input, report.output, rerun, report.files).to_json()
    fingerprints = {item.group.label: item.fingerprint for item in items}
    manifest.set_rerun(snapshot_text(request, tree, fingerprints, document))


def _convert_segmentations(report: ConversionReport, scan: ScanResult,
                           groups: list[SeriesGroup], out_dir: Path, suffix: str,
                           options: ConvertOptions, force: bool, overlap: str) -> None:
    """SEG and RTSTRUCT files of the (selected) series, as label maps (convkit.seg)."""
    records = segmentation_records(scan.files)
    if not records:
        return
    unchanged: set[str] = set()

    def write(volume: Volume, stem: Path) -> list[Path]:
        return _write_unless_same(volume, stem, suffix, force, unchanged)

    outcomes = convert_segmentations(records, groups, out_dir, write, options, overlap)
    for outcome in outcomes:
        status = outcome.status
        if status == Outcome.WRITTEN and outcome.outputs and set(outcome.outputs) <= unchanged:
            status = Outcome.UP_TO_DATE
        result = SeriesResult(outcome.label, "", None, outcome.path.name, outcome.kind, 1,
                              status, outcome.outputs, outcome.shape,
                              notes=outcome.notes, reason=outcome.reason, hint=outcome.hint)
        if outcome.source is not None:
            result.series_uid = outcome.source.series_uid
        report.series.append(result)


def _write_unless_same(volume: Volume, stem: Path, suffix: str, force: bool,
                       unchanged: set[str]) -> list[Path]:
    """write_outputs, except that outputs already there with exactly the bytes this run
    would write are left alone (their paths are added to unchanged): a label map of a SEG
    or RTSTRUCT is not in the batch manifest, so a rerun checks it by its content."""
    if force or not all(path_kind(p) == "file" for p in _volume_files(stem, suffix)):
        return write_outputs(volume, stem, suffix, force, 1)
    with tempfile.TemporaryDirectory(dir=stem.parent, prefix=".convkit-check-") as folder:
        fresh = write_outputs(volume, Path(folder) / stem.name, suffix, False, 1)
        existing = [stem.parent / path.name for path in fresh]
        if all(path_kind(old) == "file" and filecmp.cmp(new, old, shallow=False)
               for new, old in zip(fresh, existing, strict=True)):
            unchanged.update(str(path) for path in existing)
            return existing
    return write_outputs(volume, stem, suffix, force, 1)  # refused: another file is there


def _interrupted(report: ConversionReport, groups: list[SeriesGroup], before: dict) -> None:
    in_order(report.series, groups)
    _written_when_interrupted(report, groups, before)
    done = {s.label for s in report.series}
    report.not_tried = [g.label for g in groups if g.label not in done]
    _mark_refused_files(report, groups)
    for record in report.files:
        if record.status == FileStatus.USED and record.series in report.not_tried:
            record.status, record.reason = FileStatus.SKIPPED, "not converted: interrupted"
    raise BatchInterrupted(report) from None


def _settled(item: Item, unreadable: dict[str, list[FileRecord]], out_dir: Path,
             ) -> SeriesResult | None:
    """The result of a series not converted in this run: one with unreadable files (not
    recorded: the manifest's fingerprint does not see them), or one that the manifest says
    is up to date, failed before or was refused; None for a series to convert."""
    broken = unreadable.get(item.group.series_uid)
    if broken:
        return _incomplete(item.group, broken)
    return None if item.converts else _recorded(item, out_dir)


def _recorded(item: Item, out_dir: Path) -> SeriesResult:
    """A series' result from the manifest: up to date, skipped (failed before) or refused."""
    assert item.row is not None, "only a series the manifest knows is not converted"
    row = item.row
    known = {name: value for name, value in row.result.items()
             if name in SeriesResult.__dataclass_fields__}
    result = SeriesResult(**known)
    result.label, result.series_uid, result.seconds = item.group.label, row.series_uid, 0.0
    if item.why == Why.UP_TO_DATE:
        result.status = Outcome.UP_TO_DATE
        result.outputs = [str(out_dir / output.path) for output in row.outputs]
    elif item.why == Why.FAILED_BEFORE:
        result.status = Outcome.SKIPPED
        result.reason = f"failed in an earlier run: {row.reason}"
        result.hint = "--retry-failed converts it again"
    else:
        result.status = Outcome.REFUSED
        result.notes = [*result.notes, "refused in an earlier run from the same files with "
                        "the same options (--force tries again)"]
    return result


def convert_task(task: SeriesTask, progress: Progress | None = None) -> TaskOutcome:
    """Convert one series and hash its outputs: what a worker (local or Dask) runs, a
    function of its task alone (the group's headers, the options, the folders)."""
    started = time.perf_counter()
    if task.cwd:
        os.chdir(task.cwd)
    report = ConversionReport(task.input, task.out_dir, [], [])
    with memory_limit(task.max_bytes), cores.limited(task.threads or cores.threads()):
        result = _convert_one(task.group, Path(task.out_dir), task.suffix, task.options,
                              task.force, progress, report, task.overlays)
    outputs = []
    if result.status == Outcome.WRITTEN:
        try:
            outputs = digests(result.outputs, Path(task.out_dir))
        except OSError:  # gone already: recorded without outputs, so converted next time
            outputs = []
    result.seconds = round(time.perf_counter() - started, 3)
    return TaskOutcome(result, bool(report.output_failed), outputs)


def _all_targets(out_dir: Path, group: SeriesGroup, suffix: str) -> list[Path]:
    """Every name a series may write: its outputs, gradient files and overlay volume."""
    overlay = [out_dir / f"{group.label}{OVERLAY_SUFFIX}{suffix}"]
    return _targets(out_dir, group.label, suffix) + overlay


def _targets(out_dir: Path, label: str, suffix: str) -> list[Path]:
    return [out_dir / f"{label}{ext}" for ext in (*_outputs(suffix), *GRADIENT_FILES)]


def _written_when_interrupted(report: ConversionReport, groups: list[SeriesGroup],
                              before: dict) -> None:
    """The series in progress when the batch was interrupted, if its outputs were written
    (the interrupt came after they were published): listed as written."""
    if not before or len(report.series) >= len(groups):
        return
    current = groups[len(report.series)]  # one result per group before it
    now = file_states(list(before))
    required = [path for path in before if path.suffix not in GRADIENT_FILES]
    if now != before and all(now[path] for path in required):
        result = _result(current, Outcome.WRITTEN)
        result.outputs = [str(path) for path, state in now.items() if state]
        result.notes = ["interrupted after its outputs were written"]
        report.series.append(result)


#: Data files that a detached header writes beside it (NRRD .nhdr, MetaImage .mhd).
DATA_FILES = {".nhdr": ".raw.gz", ".mhd": ".zraw"}
#: What a diffusion series writes besides the volume and its sidecar.
GRADIENT_FILES = (".bval", ".bvec")


def _outputs(suffix: str) -> tuple[str, ...]:
    """The suffixes written for every series in a format (bval/bvec only for diffusion)."""
    return (suffix, DATA_FILES[suffix], ".json") if suffix in DATA_FILES else (suffix, ".json")


def check_collisions(out_dir: Path, groups: list[SeriesGroup], suffix: str, force: bool,
                     overlays: bool = False) -> None:
    """Every file a series writes is new, or replaced with force; and no file that another
    run left under a series' name (a volume in another format, .bval/.bvec) would be paired
    with the new sidecar NAME.json, which describes this series (readers and the audit take
    NAME.json for every NAME.<volume>). Such files are allowed only with force and when the
    sidecar there already describes this series (the same series in another format)."""
    check_targets([out_dir / f"{g.label}{ext}" for g in groups for ext in _outputs(suffix)]
                  + [out_dir / f"{g.label}{OVERLAY_SUFFIX}{suffix}" for g in groups
                     if overlays and any(h.overlays for h in g.headers)], force)
    # Sidecars written only for some series: no FIFO, device or link in the way of one.
    check_targets([out_dir / f"{g.label}{ext}" for g in groups for ext in GRADIENT_FILES],
                  force=True)
    own = set(_outputs(suffix))
    every = {ext for other in FORMATS.values() for ext in _outputs(other)} | set(GRADIENT_FILES)
    for group in groups:
        left = [out_dir / f"{group.label}{ext}" for ext in sorted(every - own)
                if path_kind(out_dir / f"{group.label}{ext}") is not None]
        if not left or (force and _sidecar_series(out_dir / f"{group.label}.json")
                        == group.series_uid):
            continue
        shown = ", ".join(str(p) for p in left[:3]) + (" ..." if len(left) > 3 else "")
        raise OutputError(f"{shown} exists under the name of series {group.label} "
                          f"(SeriesInstanceUID {group.series_uid}): {group.label}.json would "
                          "describe it too", "remove it, or write into another folder "
                          "(--force replaces only the files of the format written, and only "
                          "for the same series)")


def _sidecar_series(path: Path) -> str | None:
    """The SeriesInstanceUID a JSON sidecar names (None when it is missing or unreadable)."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return str(data.get("SeriesInstanceUID") or "") or None if isinstance(data, dict) else None


def _check_output_dir(in_dir: Path, out_dir: Path | str | None, list_only: bool) -> Path | None:
    if list_only:
        return Path(out_dir) if out_dir else None
    if out_dir is None:
        raise UsageError("no output folder given", "pass OUT_DIR, or --list to only list series")
    out_path = Path(out_dir)
    check_batch_folder(in_dir, out_path, "pass a new or existing folder as OUT_DIR")
    return out_path


def _select(scan: ScanResult, select: list[str] | None) -> list[SeriesGroup]:
    if not scan.series:
        counts = ", ".join(f"{scan.count(s)} {s}" for s in ("not-dicom", "dicomdir", "unreadable",
                                                            "skipped") if scan.count(s))
        problems = [r for r in scan.files if r.status in ("unreadable", "skipped")]
        example = f"; {problems[0].path.name}: {problems[0].reason}" if problems else ""
        raise InputError(f"no DICOM images under {scan.root} ({counts or 'no files'}{example})",
                         "point convkit at the folder that holds the DICOM files")
    if not select:
        return scan.series
    wanted = set(select)
    chosen = [g for g in scan.series if wanted & g.names]
    if not chosen:
        raise UsageError(f"--series {', '.join(select)} matches no series",
                         "run with --list to see the series numbers, labels and UIDs")
    return chosen


def _result(group: SeriesGroup, status: Outcome) -> SeriesResult:
    first = group.first
    return SeriesResult(group.label, group.series_uid, first.series_number,
                        first.series_description, first.modality, group.n_files, status,
                        split=group.split_reason)


def _unreadable_by_series(scan: ScanResult) -> dict[str, list[FileRecord]]:
    found: dict[str, list[FileRecord]] = {}
    for record in scan.files:
        if record.status == "unreadable" and record.series_uid:
            found.setdefault(record.series_uid, []).append(record)
    return found


def _incomplete(group: SeriesGroup, broken: list[FileRecord]) -> SeriesResult:
    """A series with unreadable files is not converted: the volume would have a hole."""
    result = _result(group, Outcome.FAILED)
    first = broken[0]
    more = f" (and {len(broken) - 1} more)" if len(broken) > 1 else ""
    result.reason = f"series {group.label}: {first.path} is unreadable: {first.reason}{more}"
    result.unreadable = [str(r.path) for r in broken]
    result.hint = "re-export the series, or remove the file and convert with --resample"
    return result


def _convert_one(group: SeriesGroup, out_dir: Path, suffix: str, options: ConvertOptions,
                 force: bool, progress: Progress | None, report: ConversionReport,
                 overlays: bool = False) -> SeriesResult:
    result = _result(group, Outcome.WRITTEN)
    # .nii.gz: the voxels are compressed on the other cores while they are decoded
    deflating = DeflatingStream(spill_dir=_existing(out_dir)) if suffix == ".nii.gz" else None
    try:
        callback = (lambda d, t: progress(group.label, d, t)) if progress else None
        volume = read_series(group, options, callback, deflating)
        relative_sources(volume.metadata, Path(report.input))
        extra = _overlay_volume(group, volume, options) if overlays else {}
        outputs = write_outputs(volume, out_dir / group.label, suffix, force, group.n_files,
                                extra, deflating)
    except RefusedError as exc:
        result.status, result.reason, result.hint = Outcome.REFUSED, exc.message, exc.hint
        return result
    except OutputError as exc:  # e.g. a full disk: this series failed, the next may fit
        result.status = Outcome.FAILED
        result.reason, result.hint = f"series {group.label}: {exc.message}", exc.hint
        report.output_failed.append(group.label)
        return result
    except (InputError, OSError) as exc:
        if isinstance(exc, UnreadableFileError):
            result.unreadable.append(str(exc.path))
        result.status = Outcome.FAILED
        result.reason = getattr(exc, "message", None) or str(exc)
        result.hint = getattr(exc, "hint", "")
        return result
    finally:
        if deflating is not None:
            deflating.cancel()  # written, or not needed: free its threads and spill file
    result.outputs = [str(p) for p in outputs]
    result.shape = list(volume.shape)
    result.spacing = [round(s, 6) for s in volume.spacing]
    result.orientation = volume.orientation
    result.dtype = str(volume.array.dtype) if not volume.is_rgb else "rgb24"
    result.notes = list(volume.notes)
    return result


def _overlay_volume(group: SeriesGroup, volume: Volume, options: ConvertOptions,
                    ) -> dict[str, Volume]:
    """{OVERLAY_SUFFIX: the label map of the series' overlays on the volume's grid}, or {}
    when it has none or they cannot be placed as stored (said in the volume's notes)."""
    if not any(header.overlays for header in group.headers):
        return {}
    try:
        labels = overlay_labels(plan_series(group, options))
    except RefusedError as exc:
        volume.notes.append(exc.message)
        volume.metadata.setdefault("ConvkitNotes", []).append(exc.message)
        return {}
    note = (f"overlays written as {group.label}{OVERLAY_SUFFIX} (value: the sum of 2**n "
            "over the overlay groups 60xx covering the voxel, n = xx/2)")
    volume.notes.append(note)
    volume.metadata.setdefault("ConvkitNotes", []).append(note)
    volume.metadata["OverlayFile"] = f"{group.label}{OVERLAY_SUFFIX}"
    return {OVERLAY_SUFFIX: Volume(labels, volume.affine)}


def _existing(folder: Path) -> Path | None:
    """folder or its nearest existing parent (where a temporary file can go), or None."""
    for candidate in (folder, *folder.parents):
        if candidate.is_dir():
            return candidate
    return None


def _volume_files(stem: Path, suffix: str) -> list[Path]:
    """The files of one volume in a format: the volume, and a detached header's data file."""
    files = [stem.with_name(stem.name + suffix)]
    if suffix in DATA_FILES:
        files.append(stem.with_name(stem.name + DATA_FILES[suffix]))
    return files


def write_outputs(volume: Volume, stem: Path, suffix: str, force: bool = False,
                  source_files: int | None = None,
                  extra: dict[str, Volume] | None = None,
                  deflated: DeflatingStream | None = None) -> list[Path]:
    """Write stem+suffix and stem.json atomically (both or neither); return their paths.
    extra: more volumes written with them, as stem+key+suffix (an overlay label map).
    deflated: the volume's voxels compressed as they were read (formats.write_volume)."""
    sidecar = sidecar_document(volume.metadata)
    if source_files is not None:
        sidecar["SourceFiles"] = source_files
    with staged_files(stem.parent, force) as stage:
        write_volume(volume, stage / f"{stem.name}{suffix}", deflated)
        (stage / f"{stem.name}.json").write_text(json.dumps(sidecar, indent=2) + "\n")
        if volume.diffusion is not None:
            bvals, directions = volume.diffusion
            if directions is None:  # unknown directions: the b-values only (sidecar says why)
                write_bval(stage / stem.name, bvals)
            else:
                write_bval_bvec(stage / stem.name, bvals, fsl_bvecs(directions, volume.affine))
        for name, other in (extra or {}).items():
            write_volume(other, stage / f"{stem.name}{name}{suffix}")
    stale = stem.parent / f"{stem.name}.bvec"
    if force and volume.diffusion is not None and volume.diffusion[1] is None \
            and stale.is_file():  # an earlier run's gradients must not pair with this image
        stale.unlink()
    written = [*_volume_files(stem, suffix), stem.parent / f"{stem.name}.json"]
    if volume.diffusion is not None:
        written.append(stem.parent / f"{stem.name}.bval")
        if volume.diffusion[1] is not None:
            written.append(stem.parent / f"{stem.name}.bvec")
    for name in extra or {}:
        written += _volume_files(stem.with_name(stem.name + name), suffix)
    return written


def _mark_refused_files(report: ConversionReport, groups: list[SeriesGroup]) -> None:
    """Files of series that were not written are 'refused' (or 'unreadable'), with the reason."""
    by_label = {s.label: s for s in report.series}
    for record in report.files:
        result = by_label.get(record.series)
        if record.status == FileStatus.USED and result and result.status not in DONE:
            if str(record.path) in result.unreadable:
                record.status = FileStatus.UNREADABLE
            elif result.status == Outcome.REFUSED:
                record.status = FileStatus.REFUSED
            else:
                record.status = FileStatus.SKIPPED
            record.reason = result.reason


__all__ = ["BatchInterrupted", "ConversionReport", "SeriesResult", "convert_folder", "convert_task",
           "write_outputs", "ConvkitError"]
