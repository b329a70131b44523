"""Output safety, names, batches and the process (issue 18): what convkit writes, where, under
which name, what a batch does when one item cannot be written, and what signals and warnings do.

Exit codes (DESIGN.md): 2 for an output path that is not a regular file (a FIFO, a device, a
link), 5 for an output that exists or cannot be written, 6 for a partial batch, 130 after
SIGINT (Ctrl-C) and 143 after SIGTERM (128 + the signal's number, as shells report it).
"""

from __future__ import annotations

import json
import os
import signal
import stat
import subprocess
import sys
import threading
import time
import warnings
from pathlib import Path

import nibabel as nib
import numpy as np
import pydicom
import pytest
from hypothesis import given
from hypothesis import strategies as st

from convkit.dicom.naming import LABEL_MAX_BYTES, OUTPUT_SUFFIXES, safe_name
from convkit.dicom2nii import BatchInterrupted, convert_folder
from convkit.errors import ConvkitError
from convkit.formats import FORMATS
from convkit.nii2dicom import volume_to_dicom
from convkit.preview import find_sources
from convkit.preview.files import preview_folder
from convkit.preview.render import PreviewOptions
from convkit.testing.synthetic import regular_positions, write_series

#: The environment of the CLI in a subprocess (as tests/conftest.py pins it).
ENV = {**os.environ, "COLUMNS": "200", "NO_COLOR": "1", "PYTHONDONTWRITEBYTECODE": "1"}
#: Seconds a subprocess of these tests may take before it is killed (and the test fails).
TIMEOUT = 120

linux_only = pytest.mark.skipif(not sys.platform.startswith("linux"),
                                reason="uses /proc and POSIX signals")


def make_ct(folder, n=5, rows=6, cols=7, seed=0, series_number=3, description="CT test",
            noise=False, extra=None):
    if noise:  # incompressible: the written volume is about as big as its voxels
        stored = np.random.default_rng(seed).integers(0, 4000, (n, rows, cols), dtype=np.int16)
    else:
        stored = (np.arange(n * rows * cols, dtype=np.int16).reshape(n, rows, cols) * 3) + 100
    with warnings.catch_warnings():  # pydicom: a SeriesDescription longer than 64 characters
        warnings.simplefilter("ignore", UserWarning)
        return write_series(folder, stored, regular_positions(n, spacing=2.0),
                            rescale_intercept=-1024, seed=seed, series_number=series_number,
                            series_description=description, pixel_spacing=(0.5, 0.8),
                            extra=extra)


def listing(folder: Path) -> list[str]:
    """Every path under folder (hidden ones too, but dicom2nii's manifest, .convkit/),
    relative, sorted; [] for a missing folder."""
    return sorted(p.relative_to(folder).as_posix() for p in folder.rglob("*")
                  if ".convkit" not in p.relative_to(folder).parts) if folder.exists() else []


def hidden(folder: Path) -> list[str]:
    """Staging files and folders, lock files: anything hidden left under folder."""
    return [p for p in listing(folder) if any(part.startswith(".") for part in p.split("/"))]


def write_nifti(path: Path, shape=(6, 6, 3), seed=7) -> Path:
    data = np.random.default_rng(seed).integers(0, 4000, shape).astype(np.int16)
    nib.save(nib.Nifti1Image(data, np.diag([1.2, 1.2, 3.0, 1.0])), str(path))
    return path


# ================================================================== 1. security

SPECIAL_KINDS = ("fifo", "device", "link")


def make_special(path: Path, kind: str) -> None:
    """A FIFO, a character device like /dev/null (1, 3), or a symbolic link to /dev/null."""
    if kind == "fifo":
        os.mkfifo(path)
    elif kind == "device":
        try:
            os.mknod(path, stat.S_IFCHR | 0o666, os.makedev(1, 3))
        except (PermissionError, AttributeError):
            pytest.skip("cannot create a device node here (needs CAP_MKNOD); the link "
                        "to /dev/null stands in for it")
    else:
        path.symlink_to("/dev/null")


def still_special(path: Path, kind: str) -> bool:
    mode = os.lstat(path).st_mode
    if kind == "fifo":
        return stat.S_ISFIFO(mode)
    if kind == "device":
        return stat.S_ISCHR(mode)
    return stat.S_ISLNK(mode) and os.readlink(path) == "/dev/null"


def refused_as_usage(done, path: Path) -> None:
    assert done.returncode == 2, f"exit {done.returncode}\n{done.stderr}"
    assert str(path) in done.stderr, done.stderr
    assert "not a regular file" in done.stderr or "not a folder" in done.stderr, done.stderr
    assert "Traceback" not in done.stderr


@pytest.mark.parametrize("kind", SPECIAL_KINDS)
def test_dicom2nii_never_replaces_a_special_file(cli, tmp_path, kind):
    make_ct(tmp_path / "in")
    out = tmp_path / "out"
    out.mkdir()
    target = out / "3_CT_test.nii.gz"
    make_special(target, kind)
    for force in ([], ["--force"]):
        refused_as_usage(cli("dicom2nii", tmp_path / "in", out, *force), target)
        assert still_special(target, kind)
        assert listing(out) == ["3_CT_test.nii.gz"]  # nothing else written, no staging


@pytest.mark.parametrize("kind", SPECIAL_KINDS)
def test_convert_never_replaces_a_special_file(cli, tmp_path, kind):
    source = write_nifti(tmp_path / "source.nii.gz")
    target = tmp_path / "out" / "copy.nii.gz"
    target.parent.mkdir()
    make_special(target, kind)
    for force in ([], ["--force"]):
        refused_as_usage(cli("convert", source, target, *force), target)
        assert still_special(target, kind)
        assert listing(target.parent) == ["copy.nii.gz"]


@pytest.mark.parametrize("kind", SPECIAL_KINDS)
def test_preview_and_audit_csv_never_replace_a_special_file(cli, tmp_path, kind):
    source = write_nifti(tmp_path / "source.nii.gz", (16, 16, 4))
    png = tmp_path / "out" / "look.png"
    png.parent.mkdir()
    make_special(png, kind)
    tables = tmp_path / "tables"
    tables.mkdir()
    make_special(tables / "files.csv", kind)
    for force in ([], ["--force"]):
        refused_as_usage(cli("preview", source, "-o", png, *force), png)
        refused_as_usage(cli("audit", source, "--csv", tables, *force), tables / "files.csv")
    assert still_special(png, kind) and still_special(tables / "files.csv", kind)
    assert listing(png.parent) == ["look.png"] and listing(tables) == ["files.csv"]


@pytest.mark.parametrize("kind", SPECIAL_KINDS)
def test_nii2dicom_never_replaces_a_special_output_folder(cli, tmp_path, kind):
    source = write_nifti(tmp_path / "source.nii.gz")
    out = tmp_path / "out"
    out.mkdir()
    target = out / "dicom"
    make_special(target, kind)
    for force in ([], ["--force"]):
        refused_as_usage(cli("nii2dicom", source, target, *force), target)
        assert still_special(target, kind)
        assert listing(out) == ["dicom"]


def _race(run, count=2) -> list:
    """run(i) in count threads released together; their results (or exceptions)."""
    barrier = threading.Barrier(count)
    results: list = [None] * count

    def body(i: int) -> None:
        barrier.wait()
        try:
            results[i] = run(i)
        except ConvkitError as exc:
            results[i] = exc

    threads = [threading.Thread(target=body, args=(i,)) for i in range(count)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(TIMEOUT)
    assert not any(thread.is_alive() for thread in threads), "a racing run hangs"
    return results


def series_uids(folder: Path) -> set[str]:
    return {pydicom.dcmread(p, stop_before_pixels=True).SeriesInstanceUID
            for p in folder.rglob("*.dcm")}


def test_two_nii2dicom_runs_into_one_new_out_never_both_succeed(tmp_path):
    source = write_nifti(tmp_path / "source.nii.gz", (128, 128, 60))
    out = tmp_path / "dicom"
    results = _race(lambda i: volume_to_dicom(source, out))
    written = [r for r in results if isinstance(r, list)]
    failed = [r for r in results if isinstance(r, ConvkitError)]
    assert len(written) == 1 and len(failed) == 1, results
    assert failed[0].exit_code == 5
    assert "another convkit process" in failed[0].message or "exists" in failed[0].message
    assert series_uids(out) == {written[0][0].series_uid}
    assert hidden(tmp_path) == []


@pytest.mark.subprocess
def test_two_nii2dicom_processes_into_one_new_out_never_both_succeed(tmp_path):
    source = write_nifti(tmp_path / "source.nii.gz", (128, 128, 200))
    out = tmp_path / "dicom"
    command = [sys.executable, "-m", "convkit", "nii2dicom", str(source), str(out), "--json"]
    results = _race(lambda i: subprocess.run(command, capture_output=True, text=True, env=ENV,
                                             timeout=TIMEOUT))
    codes = sorted(done.returncode for done in results)
    assert codes == [0, 5], [(d.returncode, d.stderr) for d in results]
    winner = next(done for done in results if done.returncode == 0)
    loser = next(done for done in results if done.returncode == 5)
    assert "another convkit process" in loser.stderr or "output exists" in loser.stderr
    assert series_uids(out) == {json.loads(winner.stdout)["series"][0]["series_uid"]}
    assert hidden(tmp_path) == []


def test_two_runs_into_one_folder_publish_files_exclusively(tmp_path):
    """dicom2nii into one OUT at the same moment: each name is written once, by one run."""
    make_ct(tmp_path / "in", n=120, rows=128, cols=128, noise=True)
    out = tmp_path / "out"
    results = _race(lambda i: convert_folder(tmp_path / "in", out))
    statuses = sorted(r.series[0].status if not isinstance(r, ConvkitError) else "error"
                      for r in results)
    # one run holds the output folder (its manifest's lock): the other fails at once, or,
    # started after it, finds the series up to date
    assert statuses in (["error", "written"], ["failed", "written"],
                        ["up to date", "written"]), results
    assert listing(out) == ["3_CT_test.json", "3_CT_test.nii.gz"]


NASTY = ["../../../escaped", "..", "/etc/passwd", ".hidden", "a/../../b", "..\\..\\win",
         "~/x", " ", "./.", "...."]


def test_names_from_content_never_escape_out(cli, tmp_path):
    for number, description in enumerate(NASTY, start=1):
        make_ct(tmp_path / "in" / f"s{number}", seed=number, series_number=number,
                description=description)
    out = tmp_path / "deep" / "out"
    cli("dicom2nii", tmp_path / "in", out, check_code=0)
    names = listing(out)
    assert "1_escaped.nii.gz" in names and "2.nii.gz" in names
    assert "3_etc_passwd.nii.gz" in names and "4_hidden.nii.gz" in names
    assert len(names) == 2 * len(NASTY) and not hidden(out)
    assert all("/" not in name and ".." not in name for name in names)
    assert listing(tmp_path / "deep") == ["out"] + [f"out/{n}" for n in names]

    # The --name template: a field alone is the whole name.
    cli("dicom2nii", tmp_path / "in", tmp_path / "named", "--name", "{SeriesDescription}",
        check_code=0)
    names = listing(tmp_path / "named")
    assert "escaped.nii.gz" in names and "series.nii.gz" in names
    assert all(".." not in n and not n.startswith(".") for n in names)

    # preview batch -o DIR: one PNG per series, named after its label.
    cli("preview", tmp_path / "in", "-o", tmp_path / "png", check_code=0)
    names = listing(tmp_path / "png")
    assert "1_escaped.png" in names and len(names) == len(NASTY)
    assert all(".." not in n and not n.startswith(".") for n in names)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["deep", "in", "named", "png"]


@given(st.text() | st.text(alphabet=st.sampled_from("a1./\\_- \x00é~")))
def test_safe_name_is_one_plain_path_component(text):
    name = safe_name(text)
    assert name and ".." not in name and not name.startswith(".")
    assert "/" not in name and "\\" not in name and "\x00" not in name
    assert os.path.normpath(os.path.join("out", name)) == os.path.join("out", name)


# ================================================================== 2. names

def test_output_suffixes_cover_every_format():
    assert set(FORMATS.values()) <= set(OUTPUT_SUFFIXES)
    assert LABEL_MAX_BYTES + max(map(len, OUTPUT_SUFFIXES)) <= 255


@pytest.mark.parametrize("fmt", ["nii.gz", "nhdr"])
def test_long_descriptions_give_short_unique_deterministic_names(cli, tmp_path, fmt):
    long = "x" * 406
    make_ct(tmp_path / "in" / "a", seed=1, series_number=4, description=long)
    make_ct(tmp_path / "in" / "b", seed=2, series_number=4, description=long)
    if fmt == "nhdr":  # (a non-ASCII name breaks the NRRD writer's 'data file' line)
        make_ct(tmp_path / "in" / "c", seed=3, series_number=5, description="y" * 300)
    else:  # two bytes per character: cut by bytes, never inside a character
        make_ct(tmp_path / "in" / "c", seed=3, series_number=5, description="é" * 300,
                extra={"SpecificCharacterSet": "ISO_IR 192"})
    cli("dicom2nii", tmp_path / "in", tmp_path / "out", "--format", fmt, check_code=0)
    names = listing(tmp_path / "out")
    assert len(names) == 3 * (3 if fmt == "nhdr" else 2)
    assert all(len(name.encode()) <= 255 for name in names), names
    stems = {name.split(".")[0] for name in names}
    assert len(stems) == 3 and any(stem.endswith("_2") for stem in stems)
    cli("dicom2nii", tmp_path / "in", tmp_path / "again", "--format", fmt, check_code=0)
    assert listing(tmp_path / "again") == names

    cli("preview", tmp_path / "in", "-o", tmp_path / "png", check_code=0)
    pngs = listing(tmp_path / "png")
    assert len(pngs) == 3 and all(len(name.encode()) <= 255 for name in pngs)


@pytest.mark.parametrize("template", ["{SeriesNumber.real.x}", "{SeriesNumber.real}",
                                      "{SeriesDescription[0]}", "{SeriesDescription:>999999}",
                                      "{SeriesNumber!r}", "{}", "{0}", "{Series", "x}",
                                      "{PatientName}", "{SeriesNumber:{Modality}}"])
def test_name_template_takes_plain_fields_only(cli, tmp_path, template):
    make_ct(tmp_path / "in")
    done = cli("dicom2nii", tmp_path / "in", tmp_path / "out", "--name", template)
    assert done.returncode == 2, done.stderr
    assert "bad --name template" in done.stderr and "Traceback" not in done.stderr
    assert "SeriesDescription" in done.stderr and "StudyInstanceUID" in done.stderr
    assert not (tmp_path / "out").exists()


def test_name_template_plain_fields_and_braces_still_work(cli, tmp_path):
    make_ct(tmp_path / "in")
    cli("dicom2nii", tmp_path / "in", tmp_path / "out", "--name",
        "{{x}}{Modality}-{SeriesNumber}", check_code=0)
    assert listing(tmp_path / "out") == ["x_CT-3.json", "x_CT-3.nii.gz"]


# ================================================================== 3. batches

def _limit_file_size(limit: int):
    def preexec() -> None:
        import resource

        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))
    return preexec


@linux_only
@pytest.mark.subprocess
def test_a_series_that_cannot_be_written_does_not_stop_the_batch(tmp_path):
    """RLIMIT_FSIZE: files above 100 kB fail with EFBIG ('File too large'), as on a full disk
    (Python ignores SIGXFSZ, so the write fails instead of killing the process)."""
    make_ct(tmp_path / "in" / "a", seed=1, series_number=1, description="small")
    make_ct(tmp_path / "in" / "b", n=40, rows=64, cols=64, seed=2, series_number=2,
            description="big", noise=True)
    make_ct(tmp_path / "in" / "c", seed=3, series_number=3, description="after")
    out = tmp_path / "out"
    done = subprocess.run([sys.executable, "-m", "convkit", "dicom2nii", str(tmp_path / "in"),
                           str(out), "--json"], capture_output=True, text=True, env=ENV,
                          timeout=TIMEOUT, preexec_fn=_limit_file_size(100_000))
    assert done.returncode == 6, done.stderr
    report = json.loads(done.stdout)
    statuses = {s["label"]: s["status"] for s in report["series"]}
    assert statuses == {"1_small": "written", "2_big": "failed", "3_after": "written"}
    failed = report["series"][1]
    assert "2_big" in failed["reason"] and "File too large" in failed["reason"]
    assert "Failed: series 2_big" in done.stderr and "File too large" in done.stderr
    assert listing(out) == ["1_small.json", "1_small.nii.gz", "3_after.json", "3_after.nii.gz"]


def test_out_that_is_a_file_is_an_output_error(cli, tmp_path):
    make_ct(tmp_path / "in")
    source = write_nifti(tmp_path / "source.nii.gz")
    taken = tmp_path / "taken"
    taken.write_text("a file\n")
    for args in (("dicom2nii", tmp_path / "in", taken), ("preview", tmp_path / "in", "-o", taken),
                 ("nii2dicom", source, taken), ("nii2dicom", source, taken, "--force")):
        done = cli(*args)
        assert done.returncode == 5, (args, done.stderr)
        assert str(taken) in done.stderr and "not a folder" in done.stderr
    assert taken.read_text() == "a file\n"


def test_interrupted_dicom2nii_batch_reports_what_was_done(tmp_path):
    for number in (1, 2, 3):
        make_ct(tmp_path / "in" / f"s{number}", seed=number, series_number=number,
                description=f"s{number}")

    def progress(stage: str, done: int, total: int) -> None:
        if stage == "3_s3":  # Ctrl-C while the third series is read
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt) as caught:
        convert_folder(tmp_path / "in", tmp_path / "out", progress=progress)
    assert isinstance(caught.value, BatchInterrupted)
    report = caught.value.report
    assert [(s.label, s.status) for s in report.series] == [("1_s1", "written"),
                                                           ("2_s2", "written")]
    assert report.not_tried == ["3_s3"] and report.exit_code == 130
    document = report.to_json()
    assert document["not_tried"] == ["3_s3"] and document["exit_code"] == 130
    assert {r["status"] for r in document["files"] if "s3" in r["path"]} == {"skipped"}
    assert listing(tmp_path / "out") == ["1_s1.json", "1_s1.nii.gz", "2_s2.json", "2_s2.nii.gz"]


def test_interrupted_preview_batch_reports_what_was_done(tmp_path):
    for number in (1, 2, 3):
        make_ct(tmp_path / "in" / f"s{number}", seed=number, series_number=number,
                description=f"s{number}")
    sources = find_sources(tmp_path / "in")

    def progress(stage: str, done: int, total: int) -> None:
        if stage == "render" and done == 1:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt) as caught:
        preview_folder(sources, tmp_path / "in", tmp_path / "png", PreviewOptions(),
                       progress=progress)
    report = caught.value.report
    assert [item.name for item in report.items] == ["1_s1"]
    assert report.not_tried == ["2_s2", "3_s3"] and report.to_json()["exit_code"] == 130
    assert listing(tmp_path / "png") == ["1_s1.png"]


# ================================================================== 4. signals

@pytest.fixture(scope="module")
def big_series(tmp_path_factory) -> Path:
    """One series big enough that writing it takes a while (~0.4 s as NRRD)."""
    folder = tmp_path_factory.mktemp("big") / "in"
    make_ct(folder, n=120, rows=256, cols=256, seed=5, series_number=5, description="big",
            noise=True)
    return folder


def _default_signals() -> None:
    """The child starts with Ctrl-C's default action, even when the tests run in a background
    job (which ignores SIGINT, and an ignored signal stays ignored)."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def start(*args, new_session: bool = False) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "convkit", *map(str, args)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=ENV,
                            preexec_fn=_default_signals, start_new_session=new_session)


def wait_for(predicate, process: subprocess.Popen, timeout: float = TIMEOUT) -> bool:
    """Poll predicate() until it holds (True), the process ends or the time is up (False)."""
    end = time.monotonic() + timeout
    while time.monotonic() < end and process.poll() is None:
        if predicate():
            return True
        time.sleep(0.001)
    return False


def finish(process: subprocess.Popen) -> tuple[str, str]:
    """The process's output once it has exited; killed (and the test failed) after TIMEOUT."""
    try:
        return process.communicate(timeout=TIMEOUT)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()


SIGNALS = [(signal.SIGTERM, 143, "Terminated."), (signal.SIGINT, 130, "Interrupted.")]


@linux_only
@pytest.mark.subprocess
@pytest.mark.parametrize("signum, code, message", SIGNALS, ids=["SIGTERM", "SIGINT"])
def test_dicom2nii_signal_while_writing_leaves_no_staging(big_series, tmp_path, signum, code,
                                                          message):
    out = tmp_path / "out"
    process = start("dicom2nii", big_series, out, "--format", "nrrd")
    try:
        writing = wait_for(lambda: any(out.glob(".convkit-*")), process)
        process.send_signal(signum)
    finally:
        _, stderr = finish(process)
    assert writing, f"never saw the staging folder; exit {process.returncode}\n{stderr}"
    assert process.returncode == code, stderr
    assert message in stderr and "Traceback" not in stderr
    assert listing(out) == []  # no staging folder, no half-written output
    done = subprocess.run([sys.executable, "-m", "convkit", "dicom2nii", str(big_series),
                           str(out), "--format", "nrrd"], capture_output=True, text=True,
                          env=ENV, timeout=TIMEOUT)
    assert done.returncode == 0, done.stderr
    assert listing(out) == ["5_big.json", "5_big.nrrd"]


@linux_only
@pytest.mark.subprocess
def test_preview_batch_sigterm_cleans_up_and_reports(tmp_path):
    numbers = range(1, 9)  # enough that the batch is still running when the first PNG is there
    for number in numbers:
        make_ct(tmp_path / "in" / f"s{number}", n=60, rows=256, cols=256, seed=number,
                series_number=number, description=f"s{number}", noise=True)
    out = tmp_path / "png"
    process = start("preview", tmp_path / "in", "-o", out)
    try:
        started = wait_for(lambda: any(out.glob("*.png")), process)
        process.send_signal(signal.SIGTERM)
    finally:
        _, stderr = finish(process)
    assert started, f"no PNG written; exit {process.returncode}\n{stderr}"
    assert process.returncode == 143, stderr
    assert "Terminated." in stderr and "Traceback" not in stderr
    assert "written 1_s1" in stderr and "not tried" in stderr
    assert hidden(out) == [] and "1_s1.png" in listing(out)
    done = subprocess.run([sys.executable, "-m", "convkit", "preview", str(tmp_path / "in"),
                           "-o", str(out), "--force"], capture_output=True, text=True,
                          env=ENV, timeout=TIMEOUT)
    assert done.returncode == 0, done.stderr
    assert listing(out) == [f"{n}_s{n}.png" for n in numbers]


def _children(pid: int) -> list[int]:
    """Processes whose parent is pid (Linux /proc)."""
    found = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                text = Path(f"/proc/{entry}/stat").read_text()
            except OSError:
                continue
            if int(text.rsplit(")", 1)[1].split()[1]) == pid:
                found.append(int(entry))
    return found


@pytest.fixture(scope="module")
def wide_tree(tmp_path_factory) -> Path:
    """Enough files (2,100) that the header reading runs in a pool of worker processes."""
    from convkit.dicom.scan import PARALLEL_MIN_FILES

    tree = tmp_path_factory.mktemp("wide") / "tree"
    paths = make_ct(tree / "a", n=1, rows=2, cols=2)
    data = paths[0].read_bytes()
    for index in range(PARALLEL_MIN_FILES + 100):
        (tree / "a" / f"copy{index:05d}.dcm").write_bytes(data)
    return tree


@linux_only
@pytest.mark.subprocess
@pytest.mark.parametrize("signum, code, message", SIGNALS, ids=["SIGTERM", "SIGINT"])
def test_audit_signal_during_the_scan(wide_tree, signum, code, message):
    """SIGINT to the process group (Ctrl-C in a terminal: the workers get it too), SIGTERM
    to convkit alone (`kill`): both stop the audit at once, with no traceback."""
    process = start("audit", wide_tree, "--jobs", "2", new_session=True)
    try:
        pool = wait_for(lambda: len(_children(process.pid)) > 0, process)
        if signum == signal.SIGINT:
            os.killpg(process.pid, signum)
        else:
            process.send_signal(signum)
        _, stderr = finish(process)
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()
    assert pool, f"the worker pool never started; exit {process.returncode}\n{stderr}"
    assert process.returncode == code, stderr
    assert message in stderr and "Traceback" not in stderr


# ================================================================== 5. warnings

def test_warnings_become_one_line_notes(cli, tmp_path):
    # pydicom warns about a SeriesDescription (LO) longer than 64 characters.
    make_ct(tmp_path / "in", description="y" * 406)
    done = cli("dicom2nii", tmp_path / "in", tmp_path / "out", check_code=0)
    assert "Warning:" not in done.stderr and "warn(" not in done.stderr, done.stderr
    for line in done.stderr.splitlines():
        if "exceeds the maximum length" in line:
            assert line.startswith("Note: "), line
    assert done.stderr.count("exceeds the maximum length") <= 1


def test_notes_from_warnings_one_line_each_once(capsys):
    from convkit.cli.app import _warnings_as_notes

    with warnings.catch_warnings():
        warnings.simplefilter("always")
        with _warnings_as_notes(debug=False):
            for _ in range(3):
                warnings.warn("first line\nsecond line", UserWarning, stacklevel=1)
            warnings.warn("another", RuntimeWarning, stacklevel=1)
    assert capsys.readouterr().err == "Note: first line\nNote: another\n"


# ================================================================== 6. audit --fail-on

@pytest.mark.parametrize("corrupt", ["truncated-dicom", "truncated-nifti", "random-gzip-nifti"])
def test_audit_fail_on_error_with_only_a_corrupt_file(cli, tmp_path, corrupt):
    tree = tmp_path / "tree"
    tree.mkdir()
    if corrupt == "truncated-dicom":
        path = make_ct(tmp_path / "ct", n=1, rows=64, cols=64)[0]
        (tree / "x.dcm").write_bytes(path.read_bytes()[:2000])
    elif corrupt == "truncated-nifti":
        full = write_nifti(tmp_path / "full.nii", (20, 20, 20))
        (tree / "x.nii").write_bytes(full.read_bytes()[:1000])
    else:
        import gzip

        (tree / "x.nii.gz").write_bytes(gzip.compress(np.random.default_rng(3).bytes(3000)))
    done = cli("audit", tree, "--fail-on", "error")
    assert done.returncode == 1, done.stdout + done.stderr
    done = cli("audit", tree, "--fail-on", "error", "--json")
    assert done.returncode == 1 and json.loads(done.stdout)["exit_code"] == 1
    assert cli("audit", tree).returncode == 0


def test_nhdr_with_a_name_that_is_not_ascii_is_refused(cli, tmp_path):
    """A detached NRRD header names its data file in ASCII: a non-ASCII label crashed the
    writer (UnicodeEncodeError, exit 70). Refused with the way out; .nrrd still works."""
    write_series(tmp_path / "in", np.zeros((3, 8, 8), np.int16), regular_positions(3),
                 series_description="Kopf Übersicht")
    done = cli("dicom2nii", tmp_path / "in", tmp_path / "out", "--format", "nhdr", check_code=4)
    assert "Traceback" not in done.stderr and "is not ASCII" in done.stderr
    assert "--format nrrd" in done.stderr
    assert not (tmp_path / "out").exists() or list((tmp_path / "out").iterdir()) == []
    cli("dicom2nii", tmp_path / "in", tmp_path / "out", "--format", "nrrd", check_code=0)
    assert (tmp_path / "out" / "1_Kopf_Übersicht.nrrd").is_file()
