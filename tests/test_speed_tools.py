"""Speed work on the tools (issue 12) keeps every result: the shortcuts give what the long
way gives.

- The scan's duplicate check takes hard links to one file as byte-identical without reading
  them, and decodes each encoding of an instance once: a tree of hard links must be
  accounted for exactly as the same tree of real copies, and as one replica of it.
- Big DICOM folders given to compare and preview are scanned in worker processes, as the
  audit scans them: the volume must be the one the serial scan gives.
- `convkit --help` / `--version` import no numpy, pydicom or nibabel, nor importlib.metadata
  (the version is looked up when asked for).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from convkit.dicom import scan as scan_module
from convkit.dicom.scan import scan_folder
from convkit.inputs import load_volume
from convkit.testing.synthetic import regular_positions, write_series

RLE = "1.2.840.10008.1.2.5"


def _ct(folder: Path, n: int = 4, offset: int = 100, **kwargs) -> list[Path]:
    stored = (np.arange(n * 6 * 8).reshape(n, 6, 8) + offset).astype(np.int16)
    return write_series(folder, stored, regular_positions(n, spacing=2.0), seed=0,
                        series_number=1, shuffle_names=False, **kwargs)


def _same_uid(path: Path, original: Path) -> None:
    from pydicom import dcmread

    ds, uid = dcmread(path), dcmread(original).SOPInstanceUID
    ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID = uid
    ds.save_as(path)


def _sources(folder: Path) -> list[Path]:
    """A CT series; the same instances re-encoded in RLE (duplicates: same decoded pixels);
    one instance again with other pixel values (a conflict)."""
    first = _ct(folder / "plain")
    for copy, original in zip(_ct(folder / "rle", transfer_syntax=RLE), first, strict=True):
        _same_uid(copy, original)
    other = _ct(folder / "other", n=1, offset=101)[0]
    _same_uid(other, first[0])
    return sorted(p for p in folder.rglob("*") if p.is_file())


def _replicate(sources: list[Path], root: Path, tree: Path, copies: int, link: bool) -> None:
    for replica in range(copies):
        for source in sources:
            target = tree / f"replica{replica}" / source.relative_to(root)
            target.parent.mkdir(parents=True, exist_ok=True)
            (os.link if link else shutil.copy2)(source, target)


def _accounting(tree: Path) -> tuple[list[tuple], list[tuple]]:
    """Every file's fate and every series' headers and problems, paths relative to tree."""
    result = scan_folder(tree)
    files = [(record.path.relative_to(tree).as_posix(), str(record.status), record.reason,
              record.series) for record in result.files]
    series = [(group.label, [(h.path.relative_to(tree).as_posix(), h.problem)
                             for h in group.headers]) for group in result.series]
    return files, series


def test_hard_linked_replicas_are_accounted_for_as_real_copies(tmp_path: Path,
                                                               monkeypatch) -> None:
    """Hard links (read as one file) give the same fates, reasons and series as real copies
    of the same files (read and compared byte by byte), and neither decodes more pixel data
    than one replica alone: each encoding of an instance is decoded once per scan."""
    sources = _sources(tmp_path / "src")
    _replicate(sources, tmp_path / "src", tmp_path / "links", 3, link=True)
    _replicate(sources, tmp_path / "src", tmp_path / "copies", 3, link=False)
    decoded: list[tuple[str, str]] = []
    compare = scan_module._pixel_difference

    def counted(first, second):
        decoded.append((first.path.name, second.path.name))
        return compare(first, second)

    monkeypatch.setattr(scan_module, "_pixel_difference", counted)
    counts = {}
    results = {}
    for tree in ("src", "links", "copies"):
        decoded.clear()
        results[tree] = _accounting(tmp_path / tree)
        counts[tree] = len(decoded)
    assert results["links"] == results["copies"]
    statuses = [status for _, status, _, _ in results["links"][0]]
    # 3 replicas x (4 plain + 4 RLE + 1 other): 2 conflicts (replica0's plain slice 0 and
    # its other version), 3 used slices, everything else a duplicate
    assert statuses.count("conflict") == 2 and statuses.count("used") == 3
    assert statuses.count("duplicate") == 27 - 5
    assert counts["src"] >= 4  # the RLE slices are compared by their pixels
    assert counts["links"] == counts["copies"] == counts["src"]


def test_a_big_dicom_folder_loads_the_same_volume_in_workers(tmp_path: Path,
                                                             monkeypatch) -> None:
    """compare and preview read a DICOM folder's headers in worker processes above the
    audit's threshold: the same volume (voxels, affine, metadata) as the serial scan."""
    stored = (np.arange(12 * 16 * 20).reshape(12, 16, 20) % 997).astype(np.int16)
    write_series(tmp_path / "ct", stored, regular_positions(12, spacing=1.5), seed=3)
    serial = load_volume(tmp_path / "ct")
    monkeypatch.setattr(scan_module, "PARALLEL_MIN_FILES", 4)  # 12 files: in workers
    monkeypatch.setattr(scan_module, "_CHUNK", 3)
    monkeypatch.setattr(scan_module, "_read_chunk", _marking_chunk)
    (tmp_path / "marks").mkdir()
    parallel = load_volume(tmp_path / "ct")
    workers = {int(p.name) for p in (tmp_path / "marks").iterdir()}
    assert workers and os.getpid() not in workers  # headers were read in other processes
    np.testing.assert_array_equal(parallel.array, serial.array)
    np.testing.assert_array_equal(parallel.affine, serial.affine)
    assert parallel.metadata == serial.metadata
    np.testing.assert_array_equal(parallel.array[:, :, 0].T, stored[0])


def test_dicom2nii_of_a_big_folder_writes_the_same_files_from_workers(tmp_path: Path,
                                                                      monkeypatch) -> None:
    """dicom2nii reads a big folder's headers in worker processes too: the same image,
    byte for byte, and the same sidecar as the serial scan."""
    from convkit.dicom2nii import convert_folder

    stored = (np.arange(12 * 16 * 20).reshape(12, 16, 20) % 997).astype(np.int16)
    write_series(tmp_path / "ct", stored, regular_positions(12, spacing=1.5), seed=4)
    convert_folder(tmp_path / "ct", tmp_path / "serial")
    monkeypatch.setattr(scan_module, "PARALLEL_MIN_FILES", 4)
    monkeypatch.setattr(scan_module, "_CHUNK", 3)
    monkeypatch.setattr(scan_module, "_read_chunk", _marking_chunk)
    (tmp_path / "marks").mkdir()
    convert_folder(tmp_path / "ct", tmp_path / "parallel")
    workers = {int(p.name) for p in (tmp_path / "marks").iterdir()}
    assert workers and os.getpid() not in workers
    serial = sorted(p.name for p in (tmp_path / "serial").iterdir() if p.is_file())
    assert serial == sorted(p.name for p in (tmp_path / "parallel").iterdir() if p.is_file())
    assert any(name.endswith(".nii.gz") for name in serial)
    for name in serial:
        assert (tmp_path / "serial" / name).read_bytes() == \
            (tmp_path / "parallel" / name).read_bytes(), name


_READ_CHUNK = scan_module._read_chunk


def _marking_chunk(texts: list[str]):
    """scan._read_chunk, leaving the reading process's id in the folder `marks` beside the
    series folder (found from the paths: a worker started by the forkserver imports this
    module afresh, without anything the test set in it)."""
    (Path(texts[0]).parents[1] / "marks" / str(os.getpid())).touch()
    return _READ_CHUNK(texts)


def run_and_look(argv: list[str], look: str) -> subprocess.CompletedProcess:
    """The real CLI (`python -m convkit *argv`) in a fresh interpreter, then `look` (code that
    prints a finding about sys.modules, or the exit `code`, on stderr's last line) in that
    same process."""
    probe = ("import runpy, sys\n"
             f"sys.argv = ['convkit', *{[str(a) for a in argv]!r}]\n"
             "code = None\n"
             "try:\n    runpy.run_module('convkit', run_name='__main__')\n"
             "except SystemExit as done:\n    code = done.code\n" + look)
    return subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True,
                          timeout=60)


@pytest.mark.subprocess
@pytest.mark.parametrize("argv", [["--version"], ["--help"], ["audit", "--help"]])
def test_help_and_version_import_no_heavy_library(argv: list[str]) -> None:
    """Start-up: the CLI imports numpy, pydicom, nibabel only inside a command, and never
    importlib.metadata (the version is a constant, convkit/_version.py)."""
    done = run_and_look(argv, "heavy = ['numpy', 'pydicom', 'nibabel', 'nrrd', 'SimpleITK', "
                              "'importlib.metadata']\n"
                              "print(sorted(m for m in heavy if m in sys.modules), "
                              "file=sys.stderr)\n")
    assert done.stderr.strip().splitlines()[-1] == "[]", done.stderr
    if argv == ["--version"]:
        import convkit

        assert done.stdout.strip() == f"convkit {convkit.__version__}"


@pytest.mark.parametrize("argv, loaded", [
    (["audit", "--help"], ["audit"]),
    (["--max-memory", "2G", "compare", "--help"], ["compare"]),
    (["--help"], ["dicom2nii", "nii2dicom", "convert", "compare", "preview", "audit", "report",
                  "index"]),
    (["dicom2nix", "x"], ["dicom2nii", "nii2dicom", "convert", "compare", "preview", "audit",
                          "report", "index"]),
])
@pytest.mark.subprocess
def test_a_command_line_loads_only_its_command(argv: list[str], loaded: list[str]) -> None:
    """Start-up: the command a line names is the only command module imported (root --help
    and an unknown name, which click suggests a name for, load them all)."""
    done = run_and_look(argv, "from convkit.cli.app import COMMANDS\n"
                              "print(sorted(n for n in COMMANDS if f'convkit.cli.{n}' in "
                              "sys.modules), file=sys.stderr)\n")
    assert done.stderr.strip().splitlines()[-1] == str(sorted(loaded)), done.stderr


@pytest.mark.subprocess
@pytest.mark.skipif(not Path("/proc/self/task").is_dir(), reason="threads counted in /proc")
@pytest.mark.parametrize("user", [{}, {"OMP_NUM_THREADS": "2"}, {"OPENBLAS_NUM_THREADS": "2"}])
def test_the_command_line_asks_for_one_blas_thread(tmp_path: Path, monkeypatch,
                                                   user: dict[str, str]) -> None:
    """numpy's OpenBLAS would start a spinning thread per core in every convkit process: the
    command line asks for one (the process runs no other thread once numpy is loaded),
    unless the user chose a count (theirs is kept)."""
    write_series(tmp_path / "s", np.zeros((3, 8, 8), np.int16), regular_positions(3, spacing=1.0))
    for name in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
        monkeypatch.delenv(name, raising=False)
    for name, value in user.items():
        monkeypatch.setenv(name, value)
    done = run_and_look(["dicom2nii", "--list", str(tmp_path / "s")],
                        "import os\nprint(code, 'numpy' in sys.modules, "
                        "os.environ.get('OPENBLAS_NUM_THREADS'), "
                        "len(os.listdir('/proc/self/task')), file=sys.stderr)\n")
    code, numpy_loaded, asked, tasks = done.stderr.strip().splitlines()[-1].split()
    assert (code, numpy_loaded) == ("0", "True"), done.stderr
    if user:
        assert asked == user.get("OPENBLAS_NUM_THREADS", "None")
        if len(os.sched_getaffinity(0)) >= 2:  # the user's two threads, as OpenBLAS reads them
            assert int(tasks) == 2
    else:
        assert (asked, tasks) == ("1", "1")


# --- isal reads .nii.gz and gzip .nrrd: bit-exact, and damage found as zlib finds it -------

def _nifti_cases(folder: Path) -> list[Path]:
    """.nii.gz files written by nibabel (stdlib gzip): several types, both byte orders,
    NIfTI-2, a header extension (vox_offset past 352), 4D."""
    import nibabel as nib

    rng = np.random.default_rng(7)
    affine = np.diag([0.7, 0.8, 1.5, 1.0])
    cases = {
        "int16": (rng.integers(-1024, 3000, (40, 30, 20)).astype(np.int16), nib.Nifti1Image),
        "float32_4d": (rng.normal(size=(12, 10, 8, 3)).astype(np.float32), nib.Nifti1Image),
        "uint8": (rng.integers(0, 255, (33, 17, 9)).astype(np.uint8), nib.Nifti1Image),
        "big_endian": (rng.integers(0, 4000, (16, 16, 16)).astype(">u2"), nib.Nifti1Image),
        "nifti2": (rng.integers(-5, 5, (20, 21, 22)).astype(np.int32), nib.Nifti2Image),
    }
    paths = []
    for name, (data, klass) in cases.items():
        image = klass(data, affine)
        if name == "int16":
            image.header.extensions.append(nib.nifti1.Nifti1Extension(6, b"a comment " * 50))
        path = folder / f"{name}.nii.gz"
        nib.save(image, path)
        paths.append(path)
    return paths


def test_nifti_gz_read_with_isal_is_bit_exact_to_nibabel(tmp_path: Path) -> None:
    """The voxels convkit reads through isal are those nibabel reads through stdlib gzip."""
    import nibabel as nib

    from convkit.formats import read_volume

    for path in _nifti_cases(tmp_path):
        ours = read_volume(path).array
        theirs = np.asanyarray(nib.load(path).dataobj.get_unscaled())
        assert ours.shape == theirs.shape, path.name
        assert ours.dtype.newbyteorder("=") == theirs.dtype.newbyteorder("="), path.name
        np.testing.assert_array_equal(ours, theirs, err_msg=path.name)


def test_gzip_nrrd_read_with_isal_is_bit_exact_to_pynrrd(tmp_path: Path) -> None:
    """A gzip NRRD written by pynrrd (zlib) reads as pynrrd reads it."""
    import nrrd

    from convkit.formats import read_volume

    data = np.random.default_rng(3).integers(-1000, 1000, (30, 20, 10)).astype(np.int16)
    path = tmp_path / "ct.nrrd"
    nrrd.write(str(path), data, {"encoding": "gzip", "space": "left-posterior-superior",
                                 "space directions": np.diag([0.5, 0.6, 2.0]),
                                 "space origin": np.zeros(3)})
    theirs, _ = nrrd.read(str(path))
    np.testing.assert_array_equal(read_volume(path).array, theirs)


def _damaged(path: Path, where: str) -> Path:
    raw = bytearray(path.read_bytes())
    if where == "crc":
        raw[-8] ^= 0xFF  # the CRC-32 of the trailer
    elif where == "length":
        raw[-3] ^= 0x01  # ISIZE
    elif where == "deflate":
        middle = len(raw) // 2
        raw[middle:middle + 16] = bytes(16)
    else:  # truncated
        raw = raw[: len(raw) * 2 // 3]
    target = path.with_name(f"{where}-{path.name}")
    target.write_bytes(bytes(raw))
    return target


@pytest.mark.parametrize("where", ["crc", "length", "deflate", "truncated"])
def test_damaged_gzip_fails_with_isal_as_with_zlib(tmp_path: Path, monkeypatch,
                                                   where: str) -> None:
    """A damaged .nii.gz is an InputError (exit 3) with the same message whether isal or
    the standard library's zlib inflates it."""
    from convkit.errors import InputError
    from convkit.formats import read_volume

    damaged = _damaged(_nifti_cases(tmp_path)[0], where)
    with pytest.raises(InputError) as with_isal:
        read_volume(damaged)
    monkeypatch.setitem(sys.modules, "isal", None)  # `from isal import ...` now fails: zlib
    with pytest.raises(InputError) as with_zlib:
        read_volume(damaged)
    assert with_isal.value.message == with_zlib.value.message
    expected = {"crc": "CRC mismatch", "length": "length mismatch", "deflate": "corrupt gzip",
                "truncated": "truncated gzip stream"}[where]
    assert expected in with_isal.value.message


@pytest.mark.parametrize("command", ["dicom2nii", "dicom2nii nii", "preview", "compare",
                                     "convert"])
@pytest.mark.subprocess
def test_plain_files_need_neither_pydicom_nor_nibabel(tmp_path: Path, command: str,
                                                       cli) -> None:
    """A plain native series converts, and its NIfTI previews, compares and converts back to
    NIfTI, without importing pydicom or nibabel (a fifth of a small job's time): the sidecar
    comes from the tag walker, the NIfTI header from convkit's own codec."""
    rng = np.random.default_rng(2)
    write_series(tmp_path / "ct", rng.integers(0, 2000, (30, 16, 16)).astype(np.int16),
                 regular_positions(30))
    nifti = tmp_path / "out" / "1_synthetic.nii.gz"
    if command != "dicom2nii":
        cli("dicom2nii", tmp_path / "ct", tmp_path / "out", check_code=0)
    args = {"dicom2nii": ["dicom2nii", tmp_path / "ct", tmp_path / "new"],
            "dicom2nii nii": ["dicom2nii", tmp_path / "ct", tmp_path / "new", "-f", "nii"],
            "preview": ["preview", nifti, "-o", tmp_path / "p.png", "--mosaic", "3x3"],
            "compare": ["compare", nifti, nifti],
            "convert": ["convert", nifti, tmp_path / "copy.nii"]}[command]
    done = run_and_look(args, "print(code, sorted(m for m in ('pydicom', 'nibabel', "
                              "'SimpleITK', 'nrrd') if m in sys.modules), file=sys.stderr)\n")
    assert done.stderr.strip().splitlines()[-1] == "0 []", done.stderr
