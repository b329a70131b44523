"""Volume file readers and the audit's volume checks against hostile inputs (issue 18).

Nothing a NIfTI, NRRD or MetaImage file says may make convkit read outside the input's
folder, hang, allocate without limit, exit 0 with other voxels than the file holds, or
crash (exit 70). Exit codes (DESIGN.md): 3 input unreadable, 4 refused (the message names
the option that would allow it, when there is one). Each case gives one 'Error:' line,
never a traceback.
"""

from __future__ import annotations

import gzip
import io
import json
import os
import subprocess
import sys
import threading
import time
import tracemalloc
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from convkit.audit import audit_path
from convkit.audit.findings import CODES, Severity
from convkit.audit.identifiers import text_identifiers
from convkit.errors import InputError, RefusedError
from convkit.formats import read_volume
from convkit.formats.detached import MAX_DATA_FILES, allowing_external_data
from convkit.inputs import load_volume
from convkit.volume import MAX_VOLUME_BYTES

#: The voxels every synthetic file holds: (i, j, k) int16.
DATA = np.arange(4 * 5 * 6, dtype=np.int16).reshape((4, 5, 6), order="F")
#: The four commands that read a volume file, with their output argument(s).
READERS = {"convert": lambda out: [out / "x.nii.gz"], "compare": lambda out: [],
           "preview": lambda out: ["-o", out / "x.png"], "nii2dicom": lambda out: [out / "dcm"]}
#: Seconds a command may take on a file that used to hang it (a generous bound: it now
#: returns at once).
HANG_SECONDS = 30


# ------------------------------------------------------------------------------- helpers


def nhdr_text(data_file: str, extra: str = "", encoding: str = "raw") -> str:
    return ("NRRD0004\ntype: int16\ndimension: 3\nspace: left-posterior-superior\n"
            "sizes: 4 5 6\nspace directions: (1,0,0) (0,1,0) (0,0,1)\nspace origin: (0,0,0)\n"
            f"endian: little\nencoding: {encoding}\n{extra}data file: {data_file}\n")


def write_nrrd(path: Path, extra: str = "", data: bytes | None = None, sizes: str = "4 5 6",
               directions: str = "(1,0,0) (0,1,0) (0,0,1)", origin: str = "(0,0,0)") -> Path:
    """An attached NRRD of DATA (or of data) with extra header lines."""
    header = ("NRRD0004\ntype: int16\ndimension: 3\nspace: left-posterior-superior\n"
              f"sizes: {sizes}\nspace directions: {directions}\nspace origin: {origin}\n"
              f"endian: little\nencoding: raw\n{extra}\n")
    raw = DATA.astype("<i2").tobytes(order="F") if data is None else data
    path.write_bytes(header.encode() + raw)
    return path


def mhd_text(data_file: str, extra: str = "") -> str:
    return ("ObjectType = Image\nNDims = 3\nDimSize = 4 5 6\nElementType = MET_SHORT\n"
            f"ElementSpacing = 1 1 1\nOffset = 0 0 0\n{extra}ElementDataFile = {data_file}\n")


def raw_bytes() -> bytes:
    return DATA.astype("<i2").tobytes(order="F")


def nifti_bytes(**fields) -> bytes:
    """A single-file NIfTI-1 of DATA (sform and qform set), header fields then replaced."""
    affine = np.diag([1.0, 2.0, 3.0, 1.0])
    image = nib.Nifti1Image(DATA, affine)
    image.set_sform(affine, 1)
    image.set_qform(affine, 1)
    raw = image.to_bytes()
    header = nib.Nifti1Header.from_fileobj(io.BytesIO(raw), check=False)
    for name, value in fields.items():
        if "__" in name:  # dim__3=0 sets header['dim'][3]
            name, index = name.split("__")
            header[name][int(index)] = value
        else:
            header[name] = value
    return header.binaryblock + raw[348:]


def error_line(done, *words: str) -> str:
    """The one 'Error:' line of a failed command; it holds every word; no traceback."""
    assert "Traceback" not in done.stderr, done.stderr
    errors = [line for line in done.stderr.splitlines() if line.startswith("Error: ")]
    assert len(errors) == 1, done.stderr
    for word in words:
        assert word in errors[0], done.stderr
    return errors[0]


def within(seconds: float, call, unblock=None):
    """call() in a thread; fail (after unblock(), to free the thread) when it takes longer."""
    result: dict = {}

    def run():
        try:
            result["value"] = call()
        except BaseException as exc:  # re-raised in the test's thread
            result["error"] = exc

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    thread.join(seconds)
    if thread.is_alive():
        if unblock is not None:
            unblock()
        thread.join(5)
        pytest.fail(f"still running after {seconds} s")
    if "error" in result:
        raise result["error"]
    return result["value"]


def reader_args(command: str, source: Path, out: Path) -> list:
    out.mkdir(exist_ok=True)
    if command == "compare":
        return [command, source, source]
    return [command, source, *READERS[command](out)]


def finding_codes(report) -> dict[str, list[str]]:
    codes: dict[str, list[str]] = {}
    for item in report.findings:
        codes.setdefault(item.code, []).append(item.message)
    return codes


# -------------------------------------------------- 1. data files outside the header's folder


@pytest.fixture
def outside(tmp_path) -> dict[str, Path]:
    """A secret file beside (not inside) the input folder, and the input folder."""
    secret = tmp_path / "secret.bin"
    secret.write_bytes(b"S" * len(raw_bytes()))  # exactly the size the headers describe
    folder = tmp_path / "in"
    folder.mkdir()
    (folder / "good.raw").write_bytes(raw_bytes())
    return {"secret": secret, "folder": folder, "out": tmp_path / "out"}


ESCAPES = ["../secret.bin", "ABSOLUTE", "link.raw", "sub/../../secret.bin"]


def _escape_name(name: str, outside: dict[str, Path]) -> str:
    if name == "ABSOLUTE":
        return str(outside["secret"])
    if name == "link.raw":
        (outside["folder"] / "link.raw").symlink_to(outside["secret"])
    if name.startswith("sub/"):
        (outside["folder"] / "sub").mkdir()
    return name


@pytest.mark.parametrize("escape", ESCAPES)
@pytest.mark.parametrize("suffix", [".nhdr", ".mhd"])
def test_data_file_outside_the_folder_is_refused(cli, outside, escape, suffix):
    name = _escape_name(escape, outside)
    header = outside["folder"] / f"x{suffix}"
    header.write_text(nhdr_text(name) if suffix == ".nhdr" else mhd_text(name))
    target = outside["out"] / "x.nii.gz"
    outside["out"].mkdir()
    done = cli("convert", header, target, check_code=4)
    error_line(done, str(header), "is outside the header's folder", "--allow-external-data",
               repr(name))
    assert not target.exists()


@pytest.mark.parametrize("command", list(READERS))
def test_every_reading_command_refuses_external_data(cli, outside, command):
    header = outside["folder"] / "x.mhd"
    header.write_text(mhd_text("../secret.bin"))
    done = cli(*reader_args(command, header, outside["out"]), check_code=4)
    error_line(done, "outside the header's folder", "--allow-external-data")
    assert not list(outside["out"].iterdir())


def test_allow_external_data_reads_it(cli, outside):
    (outside["secret"]).write_bytes(raw_bytes())
    header = outside["folder"] / "x.nhdr"
    header.write_text(nhdr_text("../secret.bin"))
    outside["out"].mkdir()
    target = outside["out"] / "x.nii"
    cli("convert", header, target, "--allow-external-data", check_code=0)
    np.testing.assert_array_equal(np.asarray(nib.load(target).dataobj), DATA)
    with allowing_external_data():
        np.testing.assert_array_equal(read_volume(header).array, DATA)
    np.testing.assert_array_equal(load_volume(header, allow_external_data=True).array, DATA)
    with pytest.raises(RefusedError, match="outside the header's folder"):
        read_volume(header)


def test_a_data_file_back_inside_the_folder_is_read(outside):
    folder = outside["folder"]
    (folder / "x.nhdr").write_text(nhdr_text(f"../{folder.name}/good.raw"))
    np.testing.assert_array_equal(read_volume(folder / "x.nhdr").array, DATA)


@pytest.mark.parametrize("kind", ["fifo", "folder"])
@pytest.mark.parametrize("suffix", [".nhdr", ".mhd"])
def test_special_data_files_are_refused_even_when_allowed(cli, tmp_path, kind, suffix):
    special = tmp_path / "data.raw"
    if kind == "fifo":
        os.mkfifo(special)
    else:
        special.mkdir()
    header = tmp_path / f"x{suffix}"
    header.write_text(nhdr_text("data.raw") if suffix == ".nhdr" else mhd_text("data.raw"))

    def unblock():  # a reader blocked in open() on the FIFO gets a writer, then EOF
        fd = os.open(special, os.O_WRONLY | os.O_NONBLOCK)
        os.close(fd)

    for extra in ([], ["--allow-external-data"]):
        done = within(HANG_SECONDS, lambda extra=extra: cli(
            "convert", header, tmp_path / "x.nii", *extra, check_code=4),
            unblock if kind == "fifo" else None)
        expected = "a FIFO (named pipe)" if kind == "fifo" else "a folder"
        error_line(done, f"is {expected}, not a regular file")
    assert not (tmp_path / "x.nii").exists()


def test_metaimage_list_and_pattern_are_checked_file_by_file(tmp_path):
    folder = tmp_path / "in"
    folder.mkdir()
    for k in range(6):
        (folder / f"s{k + 1:03d}.raw").write_bytes(DATA[:, :, k].astype("<i2").tobytes("F"))
    listed = "\n".join(f"s{k + 1:03d}.raw" for k in range(6))
    (folder / "list.mhd").write_text(mhd_text("LIST") + listed + "\n")
    (folder / "pattern.mhd").write_text(mhd_text("s%03d.raw 1 6 1"))
    for name in ("list.mhd", "pattern.mhd"):
        np.testing.assert_array_equal(read_volume(folder / name).array, DATA)
    (tmp_path / "s007.raw").write_bytes(b"\0" * 40)
    (folder / "list_out.mhd").write_text(mhd_text("LIST") + listed.replace("s006", "../s007")
                                         + "\n")
    with pytest.raises(RefusedError, match="'../s007.raw' is outside"):
        read_volume(folder / "list_out.mhd")
    (folder / "many.mhd").write_text(mhd_text(f"s%03d.raw 1 {MAX_DATA_FILES + 1} 1"))
    with pytest.raises(InputError, match=f"at most {MAX_DATA_FILES}"):
        read_volume(folder / "many.mhd")


def test_audit_reports_external_data_and_never_stats_it(cli, outside, monkeypatch):
    folder = outside["folder"]
    (folder / "x.nhdr").write_text(nhdr_text("../secret.bin"))
    (folder / "y.mhd").write_text(mhd_text("LIST") + "good.raw\n../secret.bin\n")
    touched: list[str] = []
    for name in ("stat", "lstat"):
        original = getattr(os, name)

        def spy(path, *args, _original=original, **kwargs):
            touched.append(os.fspath(path) if not isinstance(path, int) else "")
            return _original(path, *args, **kwargs)

        monkeypatch.setattr(os, name, spy)
    report = audit_path(folder)
    monkeypatch.undo()
    assert not [p for p in touched if "secret" in p], touched
    codes = finding_codes(report)
    assert len(codes["volume.external-data"]) == 2, codes
    assert CODES["volume.external-data"].severity == Severity.ERROR
    assert all(str(len(raw_bytes())) not in text for text in codes["volume.external-data"])
    done = cli("audit", folder, "--fail-on", "error", "--json", check_code=1)
    rows = {Path(row["path"]).name: row for row in json.loads(done.stdout)["volumes"]}
    assert rows["x.nhdr"]["found_bytes"] is None and rows["x.nhdr"]["status"] == "unreadable"


# ----------------------------------------------------------------------------- 2. hangs


def test_absurd_nrrd_line_skip_is_refused_at_once(cli, tmp_path):
    source = write_nrrd(tmp_path / "x.nrrd", extra=f"line skip: {10 ** 12}\n")
    done = within(HANG_SECONDS, lambda: cli("convert", source, tmp_path / "x.nii", check_code=3))
    error_line(done, "line skip 1000000000000 is more than the file holds")
    report = within(HANG_SECONDS, lambda: audit_path(tmp_path))
    assert "volume.truncated" in finding_codes(report)


def test_nrrd_line_skip_that_fits_still_works(tmp_path):
    raw = b"first line\nsecond\n" + raw_bytes()
    source = write_nrrd(tmp_path / "x.nrrd", extra="line skip: 2\n", data=raw)
    np.testing.assert_array_equal(read_volume(source).array, DATA)


#: Texts that took the identifying-data patterns minutes (quadratic backtracking): 1 MiB each.
SLOW_TEXTS = {
    "letters": "'a' * (1 << 20)",  # one name-like run: the pattern used to try every start
    "carets": "'^' * (1 << 20) + 'a'",
    "caret-pairs": "('A^' * (1 << 19))[::-1]",
    "quotes": "\"-'\" * (1 << 19) + 'x'",
}


@pytest.mark.subprocess
def test_identifying_text_check_is_linear():
    """Timed in a child process: a regular expression holds the GIL, so a runaway one could
    not be stopped from this process."""
    code = ("import time; from convkit.audit.identifiers import text_identifiers\n"
            f"for text in ({', '.join(SLOW_TEXTS.values())}):\n"
            "    start = time.perf_counter(); text_identifiers(text)\n"
            "    print(time.perf_counter() - start)")
    try:
        done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                              timeout=HANG_SECONDS, check=True)
    except subprocess.TimeoutExpired:
        pytest.fail(f"text_identifiers on 1 MiB still running after {HANG_SECONDS} s")
    seconds = dict(zip(SLOW_TEXTS, map(float, done.stdout.split()), strict=True))
    assert max(seconds.values()) < 5, seconds


def test_identifying_text_still_found():
    assert text_identifiers("scanned for Doe^John") == ["a person name (Family^Given)"]
    assert text_identifiers("O'Brien-Smith^Mary") == ["a person name (Family^Given)"]
    assert text_identifiers("-^x '^y ^^") == []


@pytest.mark.subprocess
def test_audit_of_a_header_with_a_long_field_is_quick(tmp_path):
    write_nrrd(tmp_path / "x.nrrd", extra=f"note:={'b' * 300_000}\n# {'c' * 300_000}\n")
    try:
        subprocess.run([sys.executable, "-m", "convkit", "audit", str(tmp_path), "--json"],
                       capture_output=True, timeout=HANG_SECONDS, check=True)
    except subprocess.TimeoutExpired:
        pytest.fail(f"audit still running after {HANG_SECONDS} s")


# ------------------------------------------------- 3. exit 0 with other voxels: now refused


def _corrupt_same_length(path: Path, also_trailer: bool = False) -> Path:
    """A .nii.gz in stored (uncompressed) deflate blocks with one voxel byte flipped: a valid
    stream of the same length whose CRC no longer matches (and its ISIZE too, if asked)."""
    raw = bytearray(gzip.compress(nifti_bytes(), compresslevel=0))
    raw[10 + 5 + 352 + 101] ^= 0x40  # gzip header, stored-block header, NIfTI header
    if also_trailer:
        raw[-1] ^= 0x01
    path.write_bytes(bytes(raw))
    return path


def test_corrupt_gzip_stream_is_unreadable(cli, tmp_path):
    source = _corrupt_same_length(tmp_path / "x.nii.gz")
    target = tmp_path / "out.nrrd"
    done = cli("convert", source, target, check_code=3)
    error_line(done, str(source), "corrupt gzip stream (CRC mismatch)")
    assert not target.exists()


CASES_NIFTI = {
    "dim0": ({"dim__3": 0}, 3, "NIfTI dim[3] is 0: no voxels to read"),
    "dim0-count": ({"dim__0": 0}, 3, "NIfTI dim[0] is 0"),
    "srow-inf": ({"srow_x": [-np.inf, 0, 0, 0]}, 4, "the NIfTI sform is not finite (srow_x)"),
    "srow-nan": ({"srow_z": [0, 0, np.nan, 0]}, 4, "the NIfTI sform is not finite (srow_z)"),
    "quatern-nan": ({"sform_code": 0, "quatern_b": np.nan}, 4,
                    "the NIfTI qform is not finite (quatern_b)"),
    "qoffset-inf": ({"sform_code": 0, "qoffset_x": np.inf}, 4,
                    "the NIfTI qform is not finite (qoffset_x)"),
    "pixdim-inf": ({"sform_code": 0, "qform_code": 0, "pixdim__1": np.inf}, 4,
                   "the NIfTI pixdim is not finite (pixdim)"),
    "sform-zero-axis": ({"srow_x": [1, 0, 0, 0], "srow_y": [0, 0, 0, 0], "srow_z": [0, 0, 0, 0]},
                        4, "the NIfTI sform is degenerate (voxel axes 1, 2 have length 0)"),
    "sform-flat": ({"srow_x": [1, 1, 0, 0], "srow_y": [1, 1, 0, 0], "srow_z": [0, 0, 1, 0]},
                   4, "the NIfTI sform is degenerate (its voxel axes are linearly dependent)"),
    "inter-inf": ({"scl_slope": 2.0, "scl_inter": np.inf}, 4, "NIfTI scl_inter is inf"),
    "slope-inf": ({"scl_slope": np.inf, "scl_inter": 0.0}, 4, "NIfTI scl_slope is inf"),
    "vox-offset-0": ({"vox_offset": 0}, 3, "NIfTI vox_offset 0"),
    "vox-offset-inf": ({"vox_offset": np.inf}, 3, "cannot read NIfTI"),
    "datatype": ({"datatype": 999}, 3, "cannot read NIfTI"),
}


@pytest.mark.parametrize("target", ["out.nii", "out.nrrd"])
@pytest.mark.parametrize("case", list(CASES_NIFTI))
def test_nifti_header_damage_is_never_written(cli, tmp_path, case, target):
    fields, code, words = CASES_NIFTI[case]
    source = tmp_path / "x.nii"
    source.write_bytes(nifti_bytes(**fields))
    done = cli("convert", source, tmp_path / target, check_code=code)
    error_line(done, str(source), words)
    assert not (tmp_path / target).exists()


NRRD_CASES = {
    "origin-inf": ({"origin": "(inf,-inf,0)"}, 4, "the NRRD's space origin is not finite"),
    "direction-nan": ({"directions": "(1,0,0) (0,1,NaN) (0,0,1)"}, 4,
                      "the NRRD's space directions is not finite"),
    "direction-inf": ({"directions": "(inf,0,0) (0,1,0) (0,0,1)"}, 4,
                      "the NRRD's space directions is not finite"),
    "direction-zero": ({"directions": "(0,0,0) (0,1,0) (0,0,1)"}, 4,
                       "the NRRD's space directions is degenerate (voxel axis 0 has length 0)"),
    "size-zero": ({"sizes": "4 0 6", "data": b""}, 3, "no voxels to read"),
    "truncated": ({"data": raw_bytes()[:100]}, 3, "Size of the data does not equal"),
}


@pytest.mark.parametrize("command", ["convert", "preview"])
@pytest.mark.parametrize("case", list(NRRD_CASES))
def test_nrrd_header_damage_is_never_written(cli, tmp_path, case, command):
    fields, code, words = NRRD_CASES[case]
    source = write_nrrd(tmp_path / "x.nrrd", **fields)
    done = cli(*reader_args(command, source, tmp_path / "out"), check_code=code)
    error_line(done, str(source), words)
    assert not list((tmp_path / "out").iterdir())


MHA_CASES = {
    "offset-inf": ("Offset = inf 0 0\n", 4, "the MetaImage Offset is not finite"),
    "spacing-nan": ("ElementSpacing = 1 nan 1\n", 4, "the MetaImage ElementSpacing is not finite"),
    "matrix-zero": ("TransformMatrix = 0 0 0 0 1 0 0 0 1\n", 4, "is degenerate"),
    "header-size": ("HeaderSize = 1000000000000\n", 3, "HeaderSize 1000000000000"),
    "dims-zero": ("DimSize = 4 0 6\n", 3, "no voxels to read"),
    # Finite here, infinite in NIfTI's float32 fields: was written with an inf sform, exit 0.
    "offset-beyond-float32": ("Offset = 0 0 1e308\n", 4, "is not finite in NIfTI's float32"),
}


@pytest.mark.parametrize("case", list(MHA_CASES))
def test_metaimage_header_damage_is_never_written(cli, tmp_path, case):
    line, code, words = MHA_CASES[case]
    key = line.split("=")[0].strip()
    text = "".join(row + "\n" for row in mhd_text("x.raw").splitlines()
                   if not row.startswith(key + " "))
    (tmp_path / "x.raw").write_bytes(raw_bytes())
    source = tmp_path / "x.mhd"
    source.write_text(line + text)
    done = cli("convert", source, tmp_path / "out.nii", check_code=code)
    error_line(done, str(source), words)
    assert not (tmp_path / "out.nii").exists()


def test_corrupt_metaimage_zlib_stream_is_unreadable(cli, tmp_path):
    import zlib

    raw = bytearray(zlib.compress(raw_bytes(), 0))  # stored blocks: still a valid stream
    raw[2 + 5 + 40] ^= 0x10
    source = tmp_path / "x.mha"
    source.write_bytes(mhd_text("LOCAL", f"CompressedData = True\nCompressedDataSize = "
                                         f"{len(raw)}\n").encode() + bytes(raw))
    done = cli("convert", source, tmp_path / "out.nii", check_code=3)
    error_line(done, "corrupt zlib stream (CRC mismatch)")
    assert "Uncompress" not in done.stderr  # nothing from the C library either


# ---------------------------------------------------------------- 5. memory: size limits


def test_a_header_beyond_the_limit_is_refused_before_reading(cli, tmp_path):
    source = tmp_path / "x.nii.gz"
    source.write_bytes(gzip.compress(nifti_bytes(dim__1=4096, dim__2=4096, dim__3=1024)))
    done = cli("convert", source, tmp_path / "out.nii", check_code=3)
    error_line(done, "the image needs 32 GiB, limit 16 GiB")
    assert MAX_VOLUME_BYTES == 16 * 1024**3


def test_max_bytes_overrides_the_limit(tmp_path):
    source = tmp_path / "x.nii"
    source.write_bytes(nifti_bytes())
    with pytest.raises(InputError, match="needs 240 bytes, limit 239 bytes"):
        read_volume(source, max_bytes=239)
    with pytest.raises(InputError, match="limit 100 bytes"):
        load_volume(write_nrrd(tmp_path / "x.nrrd"), max_bytes=100)
    (tmp_path / "x.raw").write_bytes(raw_bytes())
    (tmp_path / "x.mhd").write_text(mhd_text("x.raw"))
    with pytest.raises(InputError, match="limit 100 bytes"):
        read_volume(tmp_path / "x.mhd", max_bytes=100)
    assert read_volume(source, max_bytes=240).shape == (4, 5, 6)


def test_gzip_bomb_is_refused_without_decompressing(tmp_path):
    """A header of 2 GiB over 512 MiB of zeros in 1 MiB gzip members (half a MiB on disk):
    the file cannot hold what its header says; nothing is allocated or decompressed."""
    header = nifti_bytes(dim__1=1024, dim__2=1024, dim__3=1024, datatype=4, bitpix=16)
    member = gzip.compress(b"\0" * (1 << 20), compresslevel=9)
    source = tmp_path / "bomb.nii.gz"
    with open(source, "wb") as out:
        out.write(gzip.compress(header[:352]))
        for _ in range(512):
            out.write(member)
    tracemalloc.start()
    try:
        start = time.perf_counter()
        with pytest.raises(InputError, match="gzip data cannot hold the 2147484000 bytes"):
            read_volume(source)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 64 << 20, peak
    assert time.perf_counter() - start < 5


# ------------------------------------------------ 6. the audit: unreadable means an error


@pytest.mark.parametrize("name, content", [
    ("x.nii.gz", gzip.compress(bytes(range(256)) * 12)),  # gzip, not NIfTI
    ("x.nii.gz", b"\x1f\x8b\x08\x00" + bytes(range(200))),  # broken gzip
    ("x.nii", bytes(range(256)) * 2),
    ("x.nrrd", b"this is no NRRD\n"),
    ("x.mha", b"just some text\n"),
])
def test_audit_fails_on_a_tree_whose_only_file_is_a_corrupt_volume(cli, tmp_path, name,
                                                                   content):
    (tmp_path / name).write_bytes(content)
    done = cli("audit", tmp_path, "--fail-on", "error", "--json", check_code=1)
    findings = json.loads(done.stdout)["findings"]
    assert [f["code"] for f in findings] == ["volume.unreadable"], findings
    assert "Traceback" not in done.stderr


def test_audit_sees_a_crc_mismatch_when_it_decompresses(tmp_path):
    _corrupt_same_length(tmp_path / "x.nii.gz", also_trailer=True)
    codes = finding_codes(audit_path(tmp_path))
    assert any("corrupt stream" in text for text in codes["volume.truncated"]), codes


@pytest.mark.parametrize("make, words", [
    (lambda d: (d / "x.nii").write_bytes(nifti_bytes(srow_x=[np.nan, 0, 0, 0])),
     "the sform is not finite"),
    (lambda d: (d / "x.nii").write_bytes(nifti_bytes(sform_code=0, qform_code=0, pixdim__1=0)),
     None),
    (lambda d: write_nrrd(d / "x.nrrd", directions="(1,0,0) (0,0.8,NaN) (0,0,2)"),
     "the space directions is not finite"),
    (lambda d: write_nrrd(d / "x.nrrd", directions="(0,0,0) (0,0.9,0) (0,0,2)"),
     "the space directions is degenerate"),
    (lambda d: (d / "x.mha").write_bytes(mhd_text("LOCAL", "TransformMatrix = 0 0 0 0 0 0 0 0 "
                                                           "0\n").encode() + raw_bytes()),
     "the TransformMatrix is degenerate"),
    (lambda d: (d / "x.mha").write_bytes(mhd_text("LOCAL").replace(
        "Offset = 0 0 0", "Position = 0 inf 0").encode() + raw_bytes()),
     "Position is not finite"),
    (lambda d: write_nrrd(d / "x.nrrd", sizes="4 1e400 6"), "no voxels"),
    (lambda d: (d / "x.nii").write_bytes(nifti_bytes(dim__3=0)), "no voxels"),
])
def test_audit_reports_bad_geometry_and_does_not_crash(cli, tmp_path, make, words):
    make(tmp_path)
    done = cli("audit", tmp_path, "--json")
    assert done.returncode in (0, 1) and "Traceback" not in done.stderr, done.stderr
    findings = json.loads(done.stdout)["findings"]
    if words is not None:
        assert any(f["code"] == "volume.unreadable" and words in f["message"]
                   for f in findings), findings


# ------------------------------------------------------------ warnings stay off stderr


def test_nibabel_header_fixes_are_notes_not_stderr(cli, tmp_path):
    source = tmp_path / "x.nii"
    source.write_bytes(nifti_bytes(pixdim__1=-1.0))  # nibabel: 'setting to abs of pixdim'
    done = cli("convert", source, tmp_path / "out.nii", "--json", check_code=0)
    assert "pixdim" in " ".join(json.loads(done.stdout)["notes"])
    assert all(line.startswith("Note: ") for line in done.stderr.splitlines()), done.stderr


def test_ascii_nrrd_with_text_that_is_no_number_is_unreadable(cli, tmp_path):
    source = tmp_path / "x.nrrd"
    values = " ".join(str(v) for v in DATA.ravel(order="F"))
    header = write_nrrd(tmp_path / "h.nrrd", data=b"").read_text()
    source.write_text(header.replace("encoding: raw", "encoding: ascii") + values[:50] + " x")
    done = cli("convert", source, tmp_path / "out.nii", check_code=3)
    error_line(done, "cannot read NRRD: ASCII data that are not numbers")
    assert "DeprecationWarning" not in done.stderr


def test_max_memory_sets_the_size_limit_for_one_run(cli, tmp_path):
    """--max-memory SIZE (before the command) sets the limit that headers are checked against,
    for that run only; a bad SIZE is a usage error."""
    source = tmp_path / "a.nii.gz"
    nib.Nifti1Image(np.zeros((64, 64, 64), np.int16), np.eye(4)).to_filename(str(source))
    done = cli("--max-memory", "100K", "convert", source, tmp_path / "b.nrrd", check_code=3)
    assert "needs 524288 bytes, limit 102400 bytes" in done.stderr
    assert "--max-memory" in done.stderr and not (tmp_path / "b.nrrd").exists()
    cli("convert", source, tmp_path / "b.nrrd", check_code=0)  # the default is back
    cli("--max-memory", "1M", "convert", source, tmp_path / "c.nrrd", check_code=0)
    done = cli("--max-memory", "lots", "convert", source, tmp_path / "d.nrrd", check_code=2)
    assert "--max-memory 'lots' is not a size" in done.stderr


def test_max_memory_applies_to_dicom_series(cli, tmp_path):
    from convkit.testing.synthetic import regular_positions, write_series

    write_series(tmp_path / "in", np.zeros((8, 32, 32), np.int16), regular_positions(8))
    done = cli("--max-memory", "8K", "dicom2nii", tmp_path / "in", tmp_path / "out",
               check_code=3)
    assert "limit 8192 bytes" in done.stderr
    cli("dicom2nii", tmp_path / "in", tmp_path / "out", check_code=0)
