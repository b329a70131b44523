"""Inputs and outputs of previews: what a path holds, PNG files written atomically, batches."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from convkit.dicom.naming import unique_labels
from convkit.dicom.scan import iter_files, scan_folder
from convkit.dicom.series import read_series
from convkit.dicom2nii import BatchInterrupted
from convkit.errors import ConvkitError, InputError, OutputError, RefusedError, UsageError
from convkit.formats import VOLUME_SUFFIXES, read_volume, volume_format, volume_stem
from convkit.formats.output import (
    check_batch_folder,
    check_targets,
    file_states,
    staged_files,
)
from convkit.inputs import attach_sidecar
from convkit.outcomes import Outcome, batch_exit_code
from convkit.preview.overlay import HIGHLIGHTS, ggo_overlay
from convkit.preview.render import draw_preview, plan_preview, png_bytes
from convkit.preview.window import hounsfield_reason
from convkit.volume import Volume

#: progress(stage, done, total): stage is 'scan' (reading headers) or 'render'.
Progress = Callable[[str, int, int], None]


@dataclass
class PreviewSource:
    """One volume to preview: a volume file, or a DICOM series (group) under path."""

    name: str  # output file stem
    path: Path
    group: Any = None  # convkit.dicom.scan.SeriesGroup for DICOM

    @property
    def label(self) -> str:
        return str(self.path) if self.group is None else f"{self.path} (series {self.name})"


def find_sources(path: Path | str, series: list[str] | None = None,
                 progress: Progress | None = None) -> list[PreviewSource]:
    """Every volume under path: volume files (NIfTI, NRRD, MetaImage) and DICOM series.

    series: keep only DICOM series with this SeriesNumber, label or UID (or volume files
    with this name). Raises InputError when nothing previewable is found.
    """
    path = Path(path)
    if not path.exists():
        raise InputError(f"{path} does not exist", "check the path")
    if path.is_file() and volume_format(path):
        return [PreviewSource(volume_stem(path.name), path)]
    sources = []
    if path.is_dir():
        for file in iter_files(path):
            if volume_format(file) and not file.name.startswith("."):
                relative = file.relative_to(path).as_posix()
                sources.append(PreviewSource(volume_stem(relative).replace("/", "_"), file))
    scan = scan_folder(path, (lambda d, t: progress("scan", d, t)) if progress else None,
                       jobs=0)  # big trees: headers in worker processes, as the audit reads them
    sources += [PreviewSource(group.label, path, group) for group in scan.series]
    if series:
        wanted = set(series)
        sources = [s for s in sources if wanted & _source_keys(s)]
        if not sources:
            raise UsageError(f"--series {', '.join(series)} matches nothing in {path}",
                             "run `convkit dicom2nii --list` on the folder to see the series")
    if not sources:
        raise InputError(f"{path}: no DICOM images and no volume files",
                         f"pass a DICOM folder or a {', '.join(VOLUME_SUFFIXES)} file")
    _unique_names(sources)
    return sources


def _source_keys(source: PreviewSource) -> set[str]:
    if source.group is None:
        return {source.name, source.path.name}
    return source.group.names


def _unique_names(sources: list[PreviewSource]) -> None:
    """Output names unique (ignoring case: _2, _3 ...) and short enough for NAME.png."""
    names = unique_labels([(source.name, "") for source in sources])
    for source, name in zip(sources, names, strict=True):
        source.name = name


def load_for_preview(source: PreviewSource, options=None) -> Volume:
    """The volume of a source; a volume file's JSON sidecar (NAME.json) adds its
    Modality, window and body part when the file itself does not say.

    options: convkit.dicom.series.ConvertOptions for DICOM (e.g. resample=True)."""
    if source.group is not None:
        return read_series(source.group, options)
    volume = read_volume(source.path)
    attach_sidecar(volume, source.path)
    return volume


def write_png(data: bytes, path: Path | str, force: bool = False) -> Path:
    """Write PNG bytes atomically (staged in the target folder, then renamed).

    Raises OutputError when path exists without force or cannot be written.
    """
    path = Path(path)
    check_targets([path], force)
    with staged_files(path.parent, force) as staging:
        (staging / path.name).write_bytes(data)
    return path


@dataclass
class BatchItem:
    source: str
    name: str
    status: Outcome
    output: str = ""
    reason: str = ""
    hint: str = ""
    report: dict[str, Any] = field(default_factory=dict)


@dataclass
class BatchReport:
    input: str
    output: str
    items: list[BatchItem] = field(default_factory=list)
    #: names of the items that failed because their PNG could not be written
    output_failed: list[str] = field(default_factory=list)
    #: names of the items not tried: the batch was interrupted (BatchInterrupted)
    not_tried: list[str] = field(default_factory=list)

    @property
    def exit_code(self) -> int:
        """0 all written, 6 partial, 4 all refused, 3 all failed, 5 none written and some
        could not be written (as dicom2nii); 130 when interrupted."""
        if self.not_tried:
            return 130
        code = batch_exit_code(item.status for item in self.items)
        return 5 if code in (3, 4) and self.output_failed else code

    def to_json(self) -> dict[str, Any]:
        document = {"input": self.input, "output": self.output, "exit_code": self.exit_code,
                    "files_written": [i.output for i in self.items
                                      if i.status == Outcome.WRITTEN],
                    "items": [vars(item) for item in self.items]}
        if self.not_tried:
            document["not_tried"] = list(self.not_tried)
        return document


def preview_folder(sources: list[PreviewSource], root: Path | str, out_dir: Path | str,
                   options, highlight: str | None = None, force: bool = False,
                   progress: Progress | None = None, read_options=None) -> BatchReport:
    """One PNG per source in out_dir (NAME.png); a failing source does not stop the others.

    Refuses (UsageError) an out_dir inside the input folder, (OutputError) an out_dir
    that is a file and existing targets without force, before drawing anything.
    KeyboardInterrupt becomes BatchInterrupted, with the report of what was done.
    """
    root, out_dir = Path(root), Path(out_dir)
    check_batch_folder(root, out_dir, "pass a folder, or a .png file name for one image")
    check_targets([out_dir / f"{s.name}.png" for s in sources], force)
    report = BatchReport(str(root), str(out_dir))
    before: dict = {}
    try:
        for done, source in enumerate(sources):
            before = file_states([out_dir / f"{source.name}.png"])
            if progress:
                progress("render", done, len(sources))
            report.items.append(_preview_item(source, out_dir, options, highlight, force,
                                              read_options, report))
            before = {}
    except KeyboardInterrupt:
        current = sources[len(report.items)] if len(report.items) < len(sources) else None
        if current is not None and before and file_states(list(before)) != before \
                and all(file_states(list(before)).values()):
            # interrupted after its PNG was written (atomically): it is done
            path = next(iter(before))
            report.items.append(BatchItem(current.label, current.name, Outcome.WRITTEN,
                                          str(path), report={"files_written": [str(path)]}))
        report.not_tried = [s.name for s in sources[len(report.items):]]
        raise BatchInterrupted(report) from None
    if progress:
        progress("render", len(sources), len(sources))
    return report


def _preview_item(source: PreviewSource, out_dir: Path, options, highlight: str | None,
                  force: bool, read_options, report: BatchReport) -> BatchItem:
    """One source of a batch drawn into out_dir/NAME.png, or why not."""
    item = BatchItem(source.label, source.name, Outcome.WRITTEN)
    try:
        volume = load_for_preview(source, read_options)
        overlays = highlight_overlays(volume, highlight, options.volume_index)
        plan = plan_preview(volume, options, source.name, overlays)
        drawing = draw_preview(plan)
        target = write_png(png_bytes(drawing), out_dir / f"{source.name}.png", force)
        item.output = str(target)
        item.report = {**drawing.to_json(), "files_written": [str(target)]}
    except RefusedError as exc:
        item.status, item.reason, item.hint = Outcome.REFUSED, exc.message, exc.hint
    except (ConvkitError, OSError) as exc:
        item.status = Outcome.FAILED
        item.reason = getattr(exc, "message", None) or str(exc)
        item.hint = getattr(exc, "hint", "")
        if isinstance(exc, OutputError):
            report.output_failed.append(source.name)
    return item


def highlight_overlays(volume: Volume, highlight: str | None, volume_index: int = 0) -> list:
    """The overlays a --highlight asks for ([] for None)."""
    if not highlight:
        return []

    if highlight != "ggo":
        raise UsageError(f"unknown --highlight {highlight!r}",
                         f"choose one of {', '.join(HIGHLIGHTS)}")

    if not hounsfield_reason(volume):
        raise UsageError("--highlight ggo needs a CT in Hounsfield units",
                         "the metadata say another modality, or the values do not look like HU")
    return [ggo_overlay(volume, volume_index)]
