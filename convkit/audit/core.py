"""audit_path: every file under a path accounted for, every series and volume checked.

Order of work, each step cheap on top of the header scan:

1. scan_folder (the same discovery and grouping as dicom2nii; parallel with jobs);
2. files that are not DICOM are identified by content: NIfTI, NRRD, MetaImage
   volumes (headers read, data size checked without decoding), their sidecars
   (NAME.json, .bval/.bvec, detached data files), or not an image;
3. per series: the dicom2nii dry run and the series checks (O(files)); identifying
   attributes read from one file per SeriesInstanceUID;
4. per volume: header checks, then the pairing with its DICOM series;
5. per file and per folder: what is left (junk, duplicates, several series in a folder).
"""

from __future__ import annotations

import functools
import heapq
import json
import math
import operator
import os
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol, TypeVar

from convkit import cores, geometry
from convkit.audit import sniff
from convkit.audit.findings import Finding, finding, sort_key
from convkit.audit.identifiers import (
    DICOM_IDENTIFIERS,
    IdentifiersUnchecked,
    dicom_identifiers,
    real_value,
)
from convkit.audit.info import describe_file
from convkit.audit.pairing import (
    Pairing,
    nearby_series,
    pair_finding,
    pair_volume,
    sidecar_finding,
)
from convkit.audit.report import AuditReport
from convkit.audit.segmentations import check_segmentations, mask_off_grid
from convkit.audit.series import SeriesAudit, audit_series, check_splits, series_row
from convkit.audit.volumes import VolumeHeader, read_volume_header
from convkit.dicom.header import NOT_PATIENT_IMAGE, SliceHeader
from convkit.dicom.scan import HeaderCache, scan_folder
from convkit.errors import InputError, UsageError
from convkit.formats import VOLUME_SUFFIXES
from convkit.geometry import axis_codes

#: progress(stage, done, total); stages: 'scan' (files), 'volumes' (volume headers).
Progress = Callable[[str, int, int], None]
#: Sidecar suffixes found beside a volume NAME.ext as NAME.suffix.
SIDECAR_SUFFIXES = (".json", ".bval", ".bvec")
#: Volume kinds whose header read_volume_header gives from the file alone (no data file).
SINGLE_FILE_KINDS = ("nifti1", "nifti2")
T = TypeVar("T")


class Facts(HeaderCache, Protocol):
    """What files gave before (convkit.index.FileFacts): the audit reads only the others."""

    def fact(self, path: Path, name: str, compute: Callable[[], T],
             valid: Callable[[T], bool] | None = None) -> T:
        """The fact `name` of the file at path: known and valid, or compute()d now."""

    def folder_key(self, path: Path) -> str | None:
        """A digest of the files in path's folder (None: unknown): what a volume's
        detached data files can change."""

    def settled_copies(self) -> list[tuple[str, str, int | None]]:
        """Duplicates the scan left out, settled as before: (path as text, reason, bytes),
        in path order (copies of instances whose files are all unchanged)."""


def _fact(facts: Facts | None, path: Path, name: str, compute: Callable[[], T],
          valid: Callable[[T], bool] | None = None) -> T:
    return compute() if facts is None else facts.fact(path, name, compute, valid)


@dataclass
class VolumeAudit:
    """One volume file: its header, its sidecar, the series it was checked against."""

    header: VolumeHeader
    sidecar: Path | None = None
    sidecar_data: dict[str, Any] = field(default_factory=dict)
    pairing: Pairing | None = None
    findings: list[Finding] = field(default_factory=list)

    @property
    def path(self) -> Path:
        return self.header.path

    @property
    def status(self) -> str:
        """The file's status: volume, unreadable (damaged, truncated) or skipped (not 3D)."""
        if self.header.problem or self.header.size.status in ("truncated", "missing",
                                                              "external"):
            return "unreadable"
        if self.header.unsupported:
            return "skipped"
        return "volume"

    @property
    def reason(self) -> str:
        header = self.header
        if header.problem:
            return f"header: {header.problem}"
        if header.size.status in ("truncated", "missing", "external"):
            return header.size.text
        return header.unsupported


def audit_path(
    path: Path | str,
    *,
    jobs: int = 0,
    progress: Progress | None = None,
    show_identifiers: bool = False,
    facts: Facts | None = None,
) -> AuditReport:
    """Audit a folder (recursively) or a single file; headers only.

    jobs: worker processes for the header scan (0: one per core). show_identifiers:
    put patient names, IDs and UIDs into the series rows (otherwise null). facts: what
    the files gave before (an index): files are read only where it does not know. Raises
    InputError when path does not exist or holds no file.
    """
    root = Path(path)
    if not root.exists():
        raise InputError(f"{root} does not exist", "check the path")
    if jobs < 0:
        raise UsageError(f"--jobs must be 0 (all cores) or more, not {jobs}")

    scan = scan_folder(root, (lambda d, t: progress("scan", d, t)) if progress else None,
                       jobs=jobs, while_waiting=_import_volume_readers, cache=facts)
    copies = facts.settled_copies() if facts is not None else []
    if not scan.files and not copies:
        raise InputError(f"nothing to audit: {root} holds no files",
                         "point convkit at a folder with DICOM or volume files")
    records = {record.path: record for record in scan.files}  # in scan order: by path
    kinds = {p: ("dicom" if r.status != "not-dicom"
                 else _fact(facts, p, "kind", functools.partial(sniff.sniff, p)))
             for p, r in records.items()}
    volumes = _read_volumes([p for p, k in kinds.items() if k in sniff.VOLUME_KINDS],
                            kinds, jobs, progress, facts)
    existing = set(records) | {Path(text) for text, _, _ in copies
                               if text.endswith(SIDECAR_SUFFIXES)}
    sidecars = _assign_sidecars(volumes, existing, facts)
    series = _audit_series(scan, facts)
    _check_volumes(volumes, series, root)
    splits = check_splits(series)
    findings = [item for audit in series for item in audit.findings]
    findings += [item for volume in volumes for item in volume.findings]
    findings += splits + check_folders(scan) + check_duplicates(scan, copies)
    findings += check_segmentations(scan.files, scan.series)
    findings += [item for p, record in records.items() for item in check_file(record, kinds[p])]
    for item in splits:  # a split finding belongs to every series it names
        for audit in series:
            if audit.label in item.series.split(", "):
                audit.findings.append(item)
    report = AuditReport(str(root), "file" if root.is_file() else "folder")
    by_path = {volume.path: volume for volume in volumes}
    report.files = _with_copies([_file_row(record, kinds[p], by_path.get(p), sidecars)
                                 for p, record in records.items()], copies)
    report.series = [_clean(series_row(audit, show_identifiers)) for audit in series]
    report.groups = {audit.label: audit.group for audit in series}
    report.volumes = [_clean(_volume_row(volume, show_identifiers)) for volume in volumes]
    report.findings = sorted(findings, key=sort_key)
    if root.is_file():
        report.header = describe_file(root, kinds[root], show_identifiers,
                                      volumes[0].header if volumes else None)
    return report


def _import_volume_readers(paths: list[Path]) -> None:
    """Import nibabel and pynrrd (0.3 s) while the header workers run, if the names
    suggest volume files (identity is decided by content later; this only saves time)."""
    suffixes = (*VOLUME_SUFFIXES, ".hdr")  # and NIfTI/Analyze pairs
    if any(path.name.endswith(suffixes) for path in paths):
        import nibabel  # noqa: F401
        import nrrd  # noqa: F401


def _check_volumes(volumes: list[VolumeAudit], series: list[SeriesAudit], root: Path) -> None:
    """Run the volume checks, then pair every volume with its DICOM series (if any)."""
    by_uid: dict[str, list[SeriesAudit]] = {}
    folders: dict[str, list[SeriesAudit]] = {}
    for audit in series:
        by_uid.setdefault(audit.group.series_uid, []).append(audit)
        for folder in _folders(audit.group.headers):
            folders.setdefault(folder, []).append(audit)
    top = root if root.is_dir() else root.parent
    near: dict[Path, list[SeriesAudit]] = {}  # by the volume's folder (all it depends on)

    def nearby(path: Path) -> list[SeriesAudit]:
        if path.parent not in near:
            near[path.parent] = nearby_series(path, top, folders)
        return near[path.parent]

    for volume in volumes:
        volume.findings = [item for check in VOLUME_CHECKS for item in check(volume)]
        _pair(volume, by_uid, nearby)


# ------------------------------------------------------------------------------------------
# Reading


def _read_volumes(paths: list[Path], kinds: dict[Path, str], jobs: int,
                  progress: Progress | None, facts: Facts | None = None) -> list[VolumeAudit]:
    """Volume headers, read in threads (gzip and file I/O release the GIL)."""
    workers = max(1, min(len(paths), cores.for_jobs(jobs), 8))
    results: list[VolumeAudit] = []
    with ThreadPoolExecutor(max_workers=workers) as pool:
        for done, header in enumerate(pool.map(lambda p: _volume_header(p, kinds[p], facts),
                                               paths), 1):
            results.append(VolumeAudit(header))
            if progress:
                progress("volumes", done, len(paths))
    return results


def _volume_header(path: Path, kind: str, facts: Facts | None) -> VolumeHeader:
    """read_volume_header, or what it gave before: for the same path as given (the header
    holds it) while no file in its folder (its detached data) has changed; a NIfTI file
    (not a pair) is read from its own bytes only, whatever its folder holds."""
    if facts is None:
        return read_volume_header(path, kind)
    folder = "" if kind in SINGLE_FILE_KINDS else facts.folder_key(path)
    known = facts.fact(path, "volume", lambda: (str(path), kind, folder,
                                                read_volume_header(path, kind)),
                       lambda value: folder is not None and value[:3] == (str(path), kind, folder))
    return known[3]


def _assign_sidecars(volumes: list[VolumeAudit], existing: set[Path],
                     facts: Facts | None = None) -> dict[Path, str]:
    """{sidecar path: reason} for JSON/bval/bvec beside a volume and detached data files."""
    sidecars: dict[Path, str] = {}
    for volume in volumes:
        header = volume.header
        for data in header.data_files:
            sidecars.setdefault(data, f"data of {header.path.name}")
        stem = sniff.volume_stem(header.path)
        for suffix in SIDECAR_SUFFIXES:
            candidate = header.path.with_name(stem + suffix)
            if candidate in existing and candidate != header.path:
                sidecars.setdefault(candidate, f"sidecar of {header.path.name}")
                if suffix == ".json":
                    volume.sidecar = candidate
                    volume.sidecar_data = _fact(facts, candidate, "json",
                                                functools.partial(_read_json, candidate))
    return sidecars


def _read_json(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text(encoding="utf-8", errors="replace"))
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def _audit_series(scan, facts: Facts | None = None) -> list[SeriesAudit]:
    unreadable: dict[str, list] = {}
    for record in scan.files:
        if record.status == "unreadable" and record.series_uid:
            unreadable.setdefault(record.series_uid, []).append(record)
    identifiers: dict[str, dict[str, str] | IdentifiersUnchecked] = {}
    audits = []
    for group in scan.series:
        uid = group.series_uid
        if uid not in identifiers:  # one file per SeriesInstanceUID (see report: SliceHeader)
            identifiers[uid] = _fact(facts, group.first.path, "identifiers",
                                     functools.partial(_identifiers, group.first.path))
        audits.append(audit_series(group, unreadable.get(uid, []), identifiers[uid]))
    return audits


def _identifiers(path: Path) -> dict[str, str] | IdentifiersUnchecked:
    try:
        return dicom_identifiers(path)
    except IdentifiersUnchecked as unchecked:
        return unchecked


def _pair(volume: VolumeAudit, by_uid: dict[str, list[SeriesAudit]],
          nearby_of: Callable[[Path], list[SeriesAudit]]) -> None:
    header = volume.header
    if header.affine is None or header.problem or len(header.shape) < 3:
        return
    uid = str(volume.sidecar_data.get("SeriesInstanceUID", "") or "")
    named = by_uid.get(uid, []) if uid else []
    nearby = [] if named else nearby_of(header.path)
    if not named and not nearby:
        return
    volume.pairing = pair_volume(header.affine, header.shape, header.n_times, named, nearby)
    if volume.pairing is not None:
        volume.findings += pair_finding(header.path, volume.pairing)
    else:  # a mask beside a series must lie on its grid (cropped is fine)
        volume.findings += mask_off_grid(header, volume.sidecar_data, nearby)


# ------------------------------------------------------------------------------------------
# Volume checks: each returns the findings of one volume file.


def check_volume_header(volume: VolumeAudit) -> list[Finding]:
    header = volume.header
    if header.problem:
        return [finding("volume.unreadable", f"{header.format} header cannot be read: "
                                             f"{header.problem}",
                        "the file is damaged or not what its content claims; re-export it",
                        path=header.path)]
    if header.unsupported:
        return [finding("volume.unsupported", f"{header.unsupported}: not a 3D volume convkit "
                                              "reads", "nothing to do unless you expected an "
                                              "image volume", path=header.path)]
    return []


def check_volume_size(volume: VolumeAudit) -> list[Finding]:
    size = volume.header.size
    if size.status == "truncated":
        return [finding("volume.truncated", f"{volume.header.format}: {size.text}"
                        + (f"; {size.detail}" if size.detail else ""),
                        "the copy is incomplete: copy or export it again (readers zero-fill or "
                        "fail)", path=volume.path)]
    if size.status == "missing":
        return [finding("volume.data-missing", f"{volume.header.format}: {size.detail}",
                        "copy the data file beside the header", path=volume.path)]
    if size.status == "external":
        return [finding("volume.external-data", f"{volume.header.format}: {size.detail}",
                        "copy the data file beside the header (convert, compare, preview and "
                        "nii2dicom refuse it without --allow-external-data)", path=volume.path)]
    return []


def check_volume_geometry(volume: VolumeAudit) -> list[Finding]:
    header = volume.header
    if header.problem or header.unsupported:
        return []
    if header.affine is None:
        what = ("qform_code and sform_code are 0" if header.kind == "nifti"
                else "no 'space' and 'space directions'")
        return [finding("volume.no-geometry", f"no world geometry ({what}): only voxel sizes",
                        "readers place it differently; set the affine from its source",
                        path=header.path)]
    spacing = header.spacing
    if any(not math.isfinite(s) or s <= 0 for s in spacing):
        return [finding("volume.bad-spacing", f"voxel size {spacing} mm",
                        "fix pixdim / space directions from the source", path=header.path)]
    return []


def check_nifti(volume: VolumeAudit) -> list[Finding]:
    header = volume.header
    if header.kind != "nifti" or header.problem:
        return []
    found = []
    if header.qform_sform_mm:
        found.append(finding(
            "nifti.qform-sform-mismatch",
            f"qform (code {header.qform_code}) and sform (code {header.sform_code}) differ by up "
            f"to {header.qform_sform_mm:.3g} mm: convkit, nibabel and ITK use the sform, some "
            "tools the qform", "rewrite it with one affine in both (convkit convert keeps the "
            "sform), after checking which one is right", path=header.path))
    if header.sheared:
        found.append(finding(
            "nifti.sheared", "the sform is sheared (e.g. gantry tilt kept by the converter): a "
            "qform cannot hold it and qform-only readers place the slices elsewhere",
            "convkit convert --resample puts it on a grid along the slice normal",
            path=header.path))
    for level, message, fix in header.checks:
        found.append(finding("nifti.header-check", f"nibabel (level {level}): {message}",
                             fix or "rewrite the header", path=header.path))
    if header.spatial_unit == "unknown" and header.affine is not None:
        found.append(finding("nifti.units-unknown", "xyzt_units gives no spatial unit: readers "
                                                    "assume millimetres",
                             "nothing to do if mm is right", path=header.path))
    return found


def check_volume_identifiers(volume: VolumeAudit) -> list[Finding]:
    found = []
    header = volume.header
    if header.identifying:
        what = "; ".join(f"{name}: {', '.join(kinds)}" for name, kinds in
                         header.identifying.items())
        found.append(finding("identifiers.in-volume", f"header fields look identifying ({what})",
                             "clear them before sharing (descrip, aux_file, extensions, "
                             "key-value fields)", path=header.path))
    if header.identifiers_unchecked:
        found.append(finding("identifiers.unchecked",
                             f"could not be checked for identifying data: "
                             f"{'; '.join(header.identifiers_unchecked)}",
                             "treat the file as identifying until it is checked",
                             path=header.path))
    keys = [key for key in DICOM_IDENTIFIERS if real_value(volume.sidecar_data.get(key))]
    if keys and volume.sidecar is not None:
        found.append(finding("identifiers.in-volume",
                             f"sidecar {volume.sidecar.name} carries {', '.join(keys)}",
                             "remove those keys before sharing", path=volume.sidecar))
    return found


def check_volume_sidecar(volume: VolumeAudit) -> list[Finding]:
    header = volume.header
    if volume.sidecar is None or header.affine is None or header.problem:
        return []
    return sidecar_finding(header.path, volume.sidecar, header.affine, volume.sidecar_data)


VOLUME_CHECKS: tuple[Callable[[VolumeAudit], list[Finding]], ...] = (
    check_volume_header, check_volume_size, check_volume_geometry, check_nifti,
    check_volume_identifiers, check_volume_sidecar,
)


# ------------------------------------------------------------------------------------------
# File and folder checks.


def check_file(record, kind: str) -> list[Finding]:
    """Findings about one file from its scan record and content kind."""
    status, path = record.status, record.path
    if status == "unreadable":
        truncated = record.reason.startswith("truncated")
        return [finding("file.truncated" if truncated else "file.unreadable",
                        f"{path.name}: {record.reason}",
                        "copy or export the file again; dicom2nii fails its series" if truncated
                        else "remove it, or export it again", path=path)]
    if status == "skipped" and record.segmentation:  # checked by check_segmentations
        return []
    if status == "skipped" and record.reason.startswith(NOT_PATIENT_IMAGE):
        return [finding("file.not-patient-image", f"{path.name}: {record.reason}",
                        "nothing to convert; check the picture for names or IDs before sharing "
                        "it", path=path, series=record.series)]
    if status == "skipped":
        return [finding("file.skipped", f"{path.name}: {record.reason}",
                        "nothing to do: not an image", path=path)]
    if status == "conflict":
        return [finding("file.conflict", f"{path.name}: {record.reason}",
                        "find out which version is right and remove the other; dicom2nii "
                        "refuses the series until then", path=path, series=record.series)]
    if status == "not-dicom" and kind == "unreadable":
        what = "a broken symbolic link" if path.is_symlink() else "cannot be opened"
        return [finding("file.unreadable", f"{path.name}: {what}",
                        "fix the link or the permissions, or remove it", path=path)]
    if status == "not-dicom" and kind == "special":
        return [finding("file.special", f"{path.name}: {record.reason}",
                        "nothing to do unless it should be a file: copy the real data", path=path)]
    if status == "not-dicom" and kind == "empty":
        return [finding("file.empty", f"{path.name} is empty (0 bytes)",
                        "remove it, or copy the file again", path=path)]
    if status == "not-dicom" and sniff.named_like_dicom(path) and kind not in \
            sniff.VOLUME_KINDS:
        return [finding("file.not-dicom", f"{path.name} is named like DICOM but is not DICOM "
                                          "(no DICM preamble, no DICOM tags)",
                        "remove it, or find out what wrote it", path=path)]
    return []


def check_duplicates(scan, copies: Sequence[tuple[str, str, int | None]] = ()) -> list[Finding]:
    """Duplicate files (same SOPInstanceUID), one finding per folder that holds them.

    Per folder, not per file: an export copied twice gives one line per folder, not
    thousands; every duplicate and the file it copies are in the files table. copies: the
    duplicates the scan left out (Facts.settled_copies), counted with its own.
    """
    found = [(str(record.path), record.reason) for record in scan.files
             if record.status == "duplicate"]
    by_folder: dict[str, list[tuple[str, str]]] = {}
    for text, reason in heapq.merge(found, [(text, reason) for text, reason, _ in copies]):
        by_folder.setdefault(_parent(text), []).append((text, reason))
    findings = []
    for folder, records in by_folder.items():
        example, reason = records[0]
        others = f", and {len(records) - 1} more" if len(records) > 1 else ""
        findings.append(finding(
            "file.duplicate",
            f"{len(records)} duplicate file(s): {os.path.basename(example)} has the {reason}"
            f"{others}",
            "dicom2nii reads the first copy and ignores these; remove them (the files table "
            "lists each one with its original)", path=folder))
    return findings


def _parent(text: str) -> str:
    """str(Path(text).parent) of a path as str(Path) writes it, without making the Path."""
    cut = text.rfind("/")
    return "." if cut < 0 else text[:cut] or "/"


def _folders(headers: list[SliceHeader]) -> set[str]:
    """The folders (str(path.parent)) of the images' files."""
    return {_parent(text) for text in {str(header.path) for header in headers}}


def check_folders(scan) -> list[Finding]:
    """Folders whose own files belong to more than one SeriesInstanceUID."""
    uids: dict[str, dict[str, set[str]]] = {}
    for group in scan.series:  # one SeriesInstanceUID and label per group
        for folder in _folders(group.headers):
            uids.setdefault(folder, {}).setdefault(group.series_uid, set()).add(group.label)
    found = []
    for folder, members in sorted(uids.items()):
        if len(members) > 1:
            labels = sorted({label for names in members.values() for label in names})
            found.append(finding(
                "folder.multiple-series",
                f"{len(members)} series in one folder ({', '.join(labels)})",
                "nothing to do for convkit (it groups by content); folder-based tools mix them",
                path=folder))
    return found


# ------------------------------------------------------------------------------------------
# Rows.


def _file_row(record, kind: str, volume: VolumeAudit | None, sidecars: dict[Path, str],
              ) -> dict[str, Any]:
    path = record.path
    status, reason = record.status, record.reason
    if status == "not-dicom":
        if volume is not None:
            status, reason = volume.status, volume.reason
        elif path in sidecars:
            status, reason = "sidecar", sidecars[path]
        elif kind == "unreadable":
            status = "unreadable"
            reason = "broken symbolic link" if path.is_symlink() else "cannot be opened"
        elif kind == "analyze":
            status, reason = "skipped", "ANALYZE 7.5 header (no NIfTI magic): not read"
        elif kind == "special":
            status, reason = "skipped", record.reason
        else:
            status, reason = "not-image", {"empty": "empty file"}.get(kind, "")
    size = record.size  # known for every file the scan read; stat the others
    if size is None and kind != "special":
        try:
            size = os.stat(path).st_size
        except OSError:
            size = None
    return {"path": str(path), "kind": _kind_name(kind), "status": status, "reason": reason,
            "series": record.series, "bytes": size}


def _with_copies(rows: list[dict[str, Any]], copies: list[tuple[str, str, int | None]],
                 ) -> list[dict[str, Any]]:
    """The files table with the settled duplicates' rows (as _file_row gives a duplicate's)
    merged in, in path order."""
    if not copies:
        return rows
    settled = [{"path": text, "kind": "dicom", "status": "duplicate", "reason": reason,
                "series": "", "bytes": size} for text, reason, size in copies]
    return list(heapq.merge(rows, settled, key=operator.itemgetter("path")))


def _kind_name(kind: str) -> str:
    if kind.startswith("nifti"):
        return "nifti"
    return kind if kind in ("dicom", "nrrd", "metaimage", "analyze", "empty") else "other"


def _volume_row(volume: VolumeAudit, show_identifiers: bool) -> dict[str, Any]:
    header = volume.header
    codes, oblique = "", None
    if header.affine is not None:
        codes = axis_codes(header.affine)
        oblique = round(geometry.obliquity_degrees(header.affine), 3)
    fields = header.fields
    descrip, aux = fields.get("descrip"), fields.get("aux_file")
    if not show_identifiers:
        descrip = "(hidden: looks identifying)" if "descrip" in header.identifying else descrip
        aux = "(hidden: looks identifying)" if "aux_file" in header.identifying else aux
    pairing = volume.pairing
    identifying = list(header.identifying)
    keys = [key for key in DICOM_IDENTIFIERS if real_value(volume.sidecar_data.get(key))]
    if keys and volume.sidecar is not None:
        identifying.append(f"{volume.sidecar.name}: {', '.join(keys)}")
    return {
        "path": str(header.path),
        "format": header.format,
        "status": volume.status,
        "shape": "x".join(map(str, header.shape)),
        "dtype": header.dtype,
        "spacing": "x".join(f"{s:.6g}" for s in header.spacing),
        "orientation": codes,
        "oblique_degrees": oblique,
        "affine_source": header.affine_source,
        "qform_code": header.qform_code,
        "sform_code": header.sform_code,
        "slope": header.slope,
        "intercept": header.intercept,
        "spatial_unit": header.spatial_unit,
        "time_unit": header.time_unit,
        "size_check": header.size.text,
        "expected_bytes": header.size.expected,
        "found_bytes": header.size.found,
        "intent": fields.get("intent"),
        "descrip": descrip,
        "aux_file": aux,
        "extensions": fields.get("extensions"),
        "nrrd_space": fields.get("space"),
        "nrrd_encoding": fields.get("encoding"),
        "nrrd_kinds": fields.get("kinds"),
        "sidecar": str(volume.sidecar) if volume.sidecar else None,
        "paired_series": pairing.series if pairing else None,
        "pair_method": pairing.method if pairing else None,
        "pair_result": pairing.result if pairing else None,
        "identifiers": "; ".join(identifying),
        "findings": ", ".join(sorted({f.code for f in volume.findings})),
    }


def _clean(row: dict[str, Any]) -> dict[str, Any]:
    """JSON-safe scalars: non-finite floats become null, numpy numbers Python numbers."""
    clean = {}
    for key, value in row.items():
        if hasattr(value, "item") and not isinstance(value, (str, bytes)):
            value = value.item()
        if isinstance(value, float) and not math.isfinite(value):
            value = None
        clean[key] = value
    return clean
