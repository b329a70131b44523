"""NIfTI (.nii / .nii.gz, NIfTI-1 and -2) -> Volume, with the header's ambiguities reported.

Which affine: the sform when its code is set (as ITK does since 2020), else the
qform, else the zooms (ANALYZE-like). A qform and an sform that disagree are
ambiguous: the sform wins and Volume.notes says so. A sheared sform (e.g. gantry
tilt written by another converter) cannot be represented by a qform; it is kept
as the affine and reported, never replaced by the qform silently.
"""

from __future__ import annotations

import io
import math
from pathlib import Path

import numpy as np

from convkit.errors import InputError, RefusedError, exception_reason
from convkit.formats.compressed import (
    data_read_errors,
    gzip_can_hold,
    read_decompressed,
    read_head,
)
from convkit.formats.nifti import HEADER_DTYPE, data_dtype
from convkit.geometry import affine_problem, is_sheared
from convkit.volume import RGB_DTYPE, Volume, check_volume_bytes

#: qform and sform closer than this (mm, on any affine entry) agree.
QFORM_SFORM_ATOL_MM = 1e-3
SHEARED_SFORM_NOTE = "the sform is sheared (not representable by a qform)"
#: Bytes of header and extensions (up to vox_offset) read at most.
MAX_HEADER_BYTES = 64 << 20
#: The header fields each affine comes from (named when they are not finite).
AFFINE_FIELDS = {
    "sform": ("srow_x", "srow_y", "srow_z"),
    "qform": ("quatern_b", "quatern_c", "quatern_d", "qoffset_x", "qoffset_y", "qoffset_z",
              "pixdim"),
    "pixdim": ("pixdim",),
}


class _Notes:
    """Collects what nibabel's header checks report (its log_raise calls .log): as notes,
    never on stderr (nibabel's own logger prints there)."""

    def __init__(self) -> None:
        self.notes: list[str] = []

    def log(self, level: int, message: str) -> None:
        if level >= 30 and message:
            self.notes.append(f"NIfTI header: {message}")


def read_nifti(path: Path, max_bytes: int | None = None) -> Volume:
    """Stored values, scaling and RAS affine of a .nii / .nii.gz (NIfTI-1 or -2).

    Everything in the header is checked before a voxel is read: the size (max_bytes,
    default volume.MAX_VOLUME_BYTES), dims, finite affine and scaling. A .nii.gz is
    decompressed to its end, so that its CRC is checked (nibabel never reads that far).
    """
    compressed = path.name.lower().endswith(".gz")
    header, offset, notes = read_nifti_header(path, compressed)
    shape = _data_shape(header, path)
    dtype = header.get_data_dtype()
    check_volume_bytes(math.prod(shape) * dtype.itemsize, str(path), max_bytes)
    affine, affine_notes = _checked_affine(header, path)
    slope, intercept = _scaling(header, path)
    array = _read_data(path, compressed, offset, shape, dtype)
    if array.ndim == 2:
        array = array[:, :, np.newaxis]  # one slice: a 3D volume of depth 1
    if array.dtype.names and array.dtype != RGB_DTYPE:
        array, colour_notes = _as_rgb(array, path)
        notes = notes + colour_notes
    volume = Volume(np.asfortranarray(array), affine, slope, intercept, nifti_fields(header),
                    notes + affine_notes)
    step = float(header["pixdim"][4])
    if len(shape) > 3 and math.isfinite(step) and step > 0:
        volume.repetition_time_s = step * _time_unit_seconds(header)
    return volume


def _as_rgb(array: np.ndarray, path: Path) -> tuple[np.ndarray, list[str]]:
    """RGB colour as convkit holds it (RGB_DTYPE); RGBA (NIfTI datatype 2304) loses its
    alpha channel, which a note reports with its values."""
    names = array.dtype.names or ()
    if names[:3] != ("R", "G", "B"):
        raise InputError(f"{path}: colour voxels of fields {', '.join(names)} are not supported",
                         "convert the image to RGB or to one value per voxel")
    rgb = np.empty(array.shape, dtype=RGB_DTYPE)
    for name in ("R", "G", "B"):
        rgb[name] = array[name]
    if "A" not in names:
        return rgb, []
    alpha = np.unique(array["A"])
    shown = f"always {alpha[0]}" if alpha.size == 1 else f"{alpha.min()} to {alpha.max()}"
    return rgb, [f"RGBA voxels: the alpha channel ({shown}) is not kept"]


def read_nifti_header(path: Path, compressed: bool):
    """(header, data offset, notes) with nibabel's own fixes (as nib.load makes them), its
    messages kept as notes. Raises InputError.

    The header is nibabel's, or a PlainNifti1Header when the file's is one nibabel would
    neither fix nor report on (plain_nifti1): importing nibabel imports pydicom, a fifth of
    a preview's time."""
    try:
        fixed = _head(path, compressed, 540)
    except Exception as exc:  # gzip, OSError: the same reasons as below
        raise InputError(f"{path}: cannot read NIfTI: {exception_reason(exc)}",
                         "the file may be truncated or not NIfTI") from exc
    plain = plain_nifti1(fixed)
    if plain is not None:
        return plain, _PLAIN_OFFSET, []
    return _nibabel_header(path, compressed, fixed)


def _nibabel_header(path: Path, compressed: bool, fixed: bytes):
    import nibabel as nib

    try:
        two = len(fixed) >= 540 and 540 in (int.from_bytes(fixed[:4], "little"),
                                             int.from_bytes(fixed[:4], "big"))
        klass = nib.Nifti2Header if two else nib.Nifti1Header
        probe = klass.from_fileobj(io.BytesIO(fixed[:klass.sizeof_hdr]), check=False)
        offset = int(probe["vox_offset"])
        if not klass.sizeof_hdr + 4 <= offset <= MAX_HEADER_BYTES:
            raise InputError(f"{path}: NIfTI vox_offset {offset} (from "
                             f"{klass.sizeof_hdr + 4} to {MAX_HEADER_BYTES} in a .nii)",
                             "the header is damaged")
        prefix = _head(path, compressed, offset) if offset > len(fixed) else fixed
        header = klass.from_fileobj(io.BytesIO(prefix[:offset]), check=False)
        collector = _Notes()
        header.check_fix(logger=collector, error_level=40)  # what nib.load does, quietly
    except InputError:
        raise
    except Exception as exc:  # nibabel, gzip and numpy raise many types for damaged files
        raise InputError(f"{path}: cannot read NIfTI: {exception_reason(exc)}",
                         "the file may be truncated or not NIfTI") from exc
    return header, offset, collector.notes


def _head(path: Path, compressed: bool, nbytes: int) -> bytes:
    """The first nbytes of the file's content (decompressed; its CRC is checked later, when
    the voxels are read to the end of the stream)."""
    with open(path, "rb") as handle:
        return read_head(handle, "gzip", nbytes) if compressed else handle.read(nbytes)


def _data_shape(header, path: Path) -> tuple[int, ...]:
    """The voxel grid from dim[]; InputError for a grid without voxels, RefusedError for
    one convkit does not read (1D, more than 4D)."""
    dims = [int(v) for v in header["dim"]]
    if not 1 <= dims[0] <= 7:
        raise InputError(f"{path}: NIfTI dim[0] is {dims[0]} (1 to 7)", "the header is damaged")
    shape = tuple(dims[1:dims[0] + 1])
    empty = [f"dim[{axis}] is {size}" for axis, size in enumerate(shape, 1) if size < 1]
    if empty:
        raise InputError(f"{path}: NIfTI {', '.join(empty)}: no voxels to read",
                         "every dimension must be 1 or more")
    if len(shape) > 4 or len(shape) < 2:
        raise RefusedError(f"{path}: a {len(shape)}D NIfTI is not supported",
                           "convkit handles 3D volumes and 4D time series")
    return shape


def _checked_affine(header, path: Path) -> tuple[np.ndarray, list[str]]:
    source = "sform" if header["sform_code"] > 0 else \
        "qform" if header["qform_code"] > 0 else "pixdim"
    try:
        affine, notes = choose_affine(header)
    except Exception as exc:  # nibabel: a quaternion that is not a rotation, bad pixdim
        raise RefusedError(f"{path}: the NIfTI {source} cannot be used "
                           f"({exception_reason(exc)})", f"fix {source} in the header") from exc
    why = affine_problem(affine)
    if why == "is not finite":
        fields = [name for name in AFFINE_FIELDS[source]
                  if not np.all(np.isfinite(np.asarray(header[name], float)))]
        why = f"is not finite ({', '.join(fields) or source})"
    if why:
        raise RefusedError(f"{path}: the NIfTI {source} {why}",
                           "set the affine from the image's source (real numbers, voxel axes "
                           "of non-zero length in three directions)")
    return np.asarray(affine, float), notes


def _scaling(header, path: Path) -> tuple[float, float]:
    """(slope, intercept): scl_slope 0 or NaN means unscaled (NIfTI, nibabel); inf is refused,
    as is an intercept that is not finite beside a valid slope."""
    slope, intercept = float(header["scl_slope"]), float(header["scl_inter"])
    if slope == 0 or math.isnan(slope):
        return 1.0, 0.0
    for name, value in (("scl_slope", slope), ("scl_inter", intercept)):
        if not math.isfinite(value):
            raise RefusedError(f"{path}: NIfTI {name} is {value}",
                               "set scl_slope and scl_inter to real numbers (or slope 0: none)")
    return slope, intercept


def _read_data(path: Path, compressed: bool, offset: int, shape: tuple[int, ...],
               dtype: np.dtype) -> np.ndarray:
    nbytes = math.prod(shape) * dtype.itemsize
    size = path.stat().st_size
    if not compressed:
        if size < offset + nbytes:
            raise InputError(f"{path}: cannot read NIfTI: truncated ({max(size - offset, 0)} of "
                             f"{nbytes} bytes of voxel data)", "the copy is incomplete: copy it "
                             "again")
        return np.asarray(np.memmap(path, dtype=dtype, mode="c", offset=offset, shape=shape,
                                    order="F"))
    if not gzip_can_hold(size, offset + nbytes):
        raise InputError(f"{path}: cannot read NIfTI: {size} bytes of gzip data cannot hold the "
                         f"{offset + nbytes} bytes its header describes", "the file is truncated "
                         "or its header damaged (dim, datatype)")
    with data_read_errors(path, "NIfTI"), open(path, "rb") as handle:
        raw = read_decompressed(handle, "gzip", nbytes, skip=offset, extra_ok=True)
    return np.ndarray(shape, dtype, buffer=raw, order="F")


def choose_affine(header) -> tuple[np.ndarray, list[str]]:
    """(affine, notes): the sform when set, else the qform, else the zooms.

    The qform is computed only when it is used or compared (nibabel raises for a
    quaternion that is not a rotation); nothing here warns on inf or NaN.
    """
    notes = []
    sform, scode = header.get_sform(coded=True)
    qcode = int(header["qform_code"])
    if scode and scode > 0:
        if qcode > 0:
            try:
                qform = header.get_qform()
            except Exception as exc:  # nibabel: not a rotation, bad pixdim
                notes.append(f"the qform cannot be computed ({exception_reason(exc)}): the "
                             "sform is used")
            else:
                finite = np.all(np.isfinite(qform)) and np.all(np.isfinite(sform))
                if not finite or not np.allclose(qform, sform, atol=QFORM_SFORM_ATOL_MM):
                    notes.append("qform and sform disagree: the sform is used")
                    notes += sheared_step_notes(sform, qform) if finite else []
        if is_sheared(sform):
            notes.append(SHEARED_SFORM_NOTE)
        return sform, notes
    if qcode > 0:
        return header.get_qform(), notes
    notes.append("neither qform nor sform is set: the affine is only the voxel sizes")
    return header.get_base_affine(), notes


def sheared_step_notes(sform: np.ndarray, qform: np.ndarray) -> list[str]:
    """A sheared sform whose slices lie another distance apart along their normal than the
    qform's: its slice step is likely not the step of the DICOM positions along the table
    (dcm2niix's uncorrected gantry-tilt file writes the spacing between slices as its
    length), and nothing in the file tells which is right."""
    if not is_sheared(sform):
        return []
    normal = np.cross(sform[:3, 0], sform[:3, 1])
    length = float(np.linalg.norm(normal))
    if length == 0:
        return []
    normal /= length
    s_step, q_step = abs(float(sform[:3, 2] @ normal)), abs(float(qform[:3, 2] @ normal))
    if np.isclose(s_step, q_step, rtol=1e-3, atol=1e-4):
        return []
    return [f"the sheared sform puts the slices {s_step:.4g} mm apart along their normal, the "
            f"qform {q_step:.4g} mm: the sform's slice step ({np.linalg.norm(sform[:3, 2]):.4g} "
            "mm) may not be the DICOM positions' step along the table (e.g. dcm2niix's "
            "uncorrected gantry-tilt file); the file cannot tell which is right: convert the "
            "DICOM with dicom2nii"]


def nifti_fields(header) -> dict:
    """Header fields worth reporting (descrip may carry identifying text: audit checks it)."""
    return {
        "Format": f"NIfTI-{2 if header.sizeof_hdr == 540 else 1}",
        "qform_code": int(header["qform_code"]),
        "sform_code": int(header["sform_code"]),
        "descrip": header["descrip"].item().decode(errors="replace").strip("\x00 "),
        "xyzt_units": list(xyzt_units(header)),
        "intent": intent_name(header),
    }


#: NIfTI-1 unit codes -> the names nibabel gives them (nibabel.nifti1.unit_codes).
UNIT_NAMES = {0: "unknown", 1: "meter", 2: "mm", 3: "micron", 8: "sec", 16: "msec",
              24: "usec", 32: "hz", 40: "ppm", 48: "rads"}


def xyzt_units(header) -> tuple[str, str]:
    """(spatial, temporal) unit names of xyzt_units; 'unknown' for a code NIfTI does not
    define (nibabel raises KeyError for those)."""
    code = int(header["xyzt_units"])
    spatial, temporal = code % 8, code - code % 8
    return UNIT_NAMES.get(spatial, "unknown"), UNIT_NAMES.get(temporal, "unknown")


def intent_name(header) -> str:
    """The intent's name, or 'code N' for one nibabel does not know."""
    try:
        return str(header.get_intent()[0])
    except (KeyError, ValueError):
        return f"code {int(header['intent_code'])}"


def _time_unit_seconds(header) -> float:
    return {"msec": 1e-3, "usec": 1e-6}.get(xyzt_units(header)[1], 1.0)


_PLAIN_OFFSET = 352  # a single-file NIfTI-1 without extensions
#: nibabel's threshold below which 1 - (b^2 + c^2 + d^2) is taken as 0 (float32 quaternions).
_QUATERNION_THRESHOLD = float(np.finfo(np.float32).eps * 3)
_XFORM_CODES = range(6)  # unknown, scanner, aligned, talairach, mni, template


class PlainNifti1Header:
    """A little-endian single-file NIfTI-1 header with nothing nibabel would fix or report,
    read without nibabel: the fields and the methods of nibabel's Nifti1Header this module
    uses, giving the same values (tests hold them equal on random headers)."""

    sizeof_hdr = 348

    def __init__(self, record: np.ndarray, dtype: np.dtype) -> None:
        self._record, self._dtype = record, dtype

    def __getitem__(self, name: str) -> np.ndarray:
        return self._record[name]

    def get_data_dtype(self) -> np.dtype:
        return self._dtype

    def get_intent(self) -> tuple[str, tuple, str]:
        return "none", (), ""  # plain_nifti1 takes only intent code 0

    def get_sform(self, coded: bool = False):
        code = int(self._record["sform_code"])
        if coded and code == 0:
            return None, 0
        affine = np.eye(4)
        affine[0, :], affine[1, :], affine[2, :] = (self._record["srow_x"],
                                                    self._record["srow_y"],
                                                    self._record["srow_z"])
        return (affine, code) if coded else affine

    def get_qform(self, coded: bool = False):
        """The qform as nibabel computes it (in long double, as its quaternion code does);
        ValueError for (b, c, d) longer than 1, as nibabel's."""
        code = int(self._record["qform_code"])
        if coded and code == 0:
            return None, 0
        rotation = _rotation(np.asarray([self._record[name] for name in
                                         ("quatern_b", "quatern_c", "quatern_d")],
                                        dtype=np.longdouble))
        steps = self._record["pixdim"][1:4].copy()
        steps[-1] *= self._record["pixdim"][0]
        affine = np.eye(4)
        affine[:3, :3] = np.dot(rotation, np.diag(steps))
        affine[:3, 3] = [self._record[name] for name in ("qoffset_x", "qoffset_y", "qoffset_z")]
        return (affine, code) if coded else affine


def _rotation(bcd: np.ndarray) -> np.ndarray:
    """The rotation of the unit quaternion (w, b, c, d), w >= 0 filled in from b, c, d."""
    w2 = 1.0 - bcd @ bcd
    if np.abs(w2) < _QUATERNION_THRESHOLD:
        w = np.longdouble(0)
    elif w2 < 0:
        raise ValueError(f"w2 should be positive, but is {w2:e}")
    else:
        w = np.sqrt(w2)
    x, y, z = bcd
    norm = w * w + x * x + y * y + z * z
    if norm < np.finfo(float).eps:
        return np.eye(3)
    scale = 2.0 / norm
    sx, sy, sz = x * scale, y * scale, z * scale
    return np.array([
        [1.0 - (y * sy + z * sz), x * sy - w * sz, x * sz + w * sy],
        [x * sy + w * sz, 1.0 - (x * sx + z * sz), y * sz - w * sx],
        [x * sz - w * sy, y * sz + w * sx, 1.0 - (x * sx + y * sy)]])


def plain_nifti1(block: bytes) -> PlainNifti1Header | None:
    """The header of a file starting with block, when it is a plain single-file NIfTI-1:
    little endian, magic n+1, voxels at 352 (no extensions), a known voxel type and its
    bitpix, positive voxel sizes, qfac 1 or -1, an sform or a qform of a known code, no
    intent. Those are the headers nibabel's checks (check_fix) leave as they are; for any
    other, None (nibabel reads it)."""
    if len(block) < _PLAIN_OFFSET or block[348:352] != b"\x00" * 4:
        return None
    record = np.frombuffer(block, dtype=HEADER_DTYPE, count=1)[0]
    dtype = data_dtype(int(record["datatype"]))
    if dtype is None:
        return None
    pixdim = record["pixdim"]
    codes = int(record["qform_code"]), int(record["sform_code"])
    plain = (record["sizeof_hdr"] == 348 and record["magic"] == b"n+1"
             and record["vox_offset"] == _PLAIN_OFFSET
             and record["bitpix"] == dtype.itemsize * 8 and not np.any(pixdim[1:4] <= 0)
             and pixdim[0] in (-1, 1) and all(code in _XFORM_CODES for code in codes)
             and max(codes) > 0 and record["intent_code"] == 0)
    return PlainNifti1Header(record, dtype) if plain else None
