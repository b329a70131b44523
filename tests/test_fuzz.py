"""Fuzz test (issue 18): seeded mutations of valid inputs through every command (tests/fuzz.py).

The default run is a fixed set of about 420 cases (base seed 18): every mutator, spread over
the seeds it applies to, through every command that applies (`make test`; marked slow, so
`make test-fast` runs only the harness's own tests below). Each case runs in a forked child
with a time and memory limit; a failing case prints its mutation, its command line, where
its input is kept and how to replay it. A summary grouped by problem and mutator (with the
commands) is printed at the end of the module and written to
<pytest basetemp>/fuzz-summary.txt; every case's exit, time and problems go to
<pytest basetemp>/fuzz-results.jsonl.

    CONVKIT_FUZZ_CASES=5000 .venv/bin/python -m pytest -m fuzz tests/test_fuzz.py   # extended
    CONVKIT_FUZZ_SEED=7 ...  another base seed;  CONVKIT_FUZZ_TIMEOUT=5 ...  seconds per case
"""

from __future__ import annotations

import gzip
import json
import os
import signal
import time
import zlib

import fuzz
import pytest

pytestmark = pytest.mark.fuzz

#: CONVKIT_FUZZ_CASES=N: about N cases (every mutator's variants scaled) instead of the default.
EXTENDED = int(os.environ.get("CONVKIT_FUZZ_CASES") or 0) or None
CASES = fuzz.cases(EXTENDED)


@pytest.fixture(scope="module")
def seed_folders(tmp_path_factory) -> dict:
    fuzz.preload()
    return fuzz.write_seeds(tmp_path_factory.mktemp("fuzz-seeds"))


@pytest.fixture(scope="module")
def fuzz_results(request, tmp_path_factory):
    """Every case's result; the grouped summary is written and shown when the module ends."""
    results: list[fuzz.CaseResult] = []
    yield results
    if not results:
        return
    summary = fuzz.summarise(results)
    base = tmp_path_factory.getbasetemp()
    (base / "fuzz-summary.txt").write_text(summary + "\n")
    with open(base / "fuzz-results.jsonl", "w") as log:
        log.writelines(json.dumps(fuzz.as_record(r)) + "\n" for r in results)
    reporter = request.config.pluginmanager.get_plugin("terminalreporter")
    if reporter is not None and any(r.problems for r in results):
        reporter.write_line("")
        for line in summary.splitlines():
            reporter.write_line(line)


@pytest.mark.slow  # the cases: in `make test`, not in the fast lane
@pytest.mark.parametrize("case", CASES, ids=[case.id for case in CASES])
def test_fuzz_case(case, seed_folders, cli, tmp_path, fuzz_results):
    result = fuzz.run_case(case, seed_folders[case.seed], tmp_path, cli)
    fuzz_results.append(result)
    if result.problems:
        pytest.fail(result.describe(), pytrace=False)


#: Cases that extended runs found broken, with their base seeds: replayed in every run so
#: that each stays fixed (add a line for every failure an extended run finds).
FOUND = [
    (2026, "dicom2nii-flip_bytes-dicom_bigendian-29"),  # pydicom NotImplementedError (no VR)
    (777, "dicom2nii-truncate-dicom_bigendian-2"),  # struct.error in the file meta
    (777, "audit-truncate-dicom_rle-21"),  # struct.error in the file meta
    (99, "convert-mha_data_file_list-mha_zlib-1"),  # ITK's native stderr
    (7, "convert-mha_nonfinite-mhd-3"),  # Offset 1e308: an inf sform written with exit 0
    (18, "preview-nifti_nonfinite-nifti-2"),  # scl_inter 3.4e38: a zero-width window
]


@pytest.mark.slow
@pytest.mark.parametrize("base,case_id", FOUND, ids=[f"{b}/{c}" for b, c in FOUND])
def test_found_case_stays_fixed(base, case_id, seed_folders, cli, tmp_path):
    result = fuzz.run_case(fuzz.Case.from_id(case_id), seed_folders[case_id.split("-")[2]],
                           tmp_path, cli, base=base)
    if result.problems:
        pytest.fail(result.describe(), pytrace=False)


def test_every_class_reaches_every_command():
    """The default run covers each mutator class with each command it can apply to."""
    pairs = {(fuzz.MUTATORS[c.mutator].cls, c.command) for c in fuzz.cases()}
    for mutator in fuzz.MUTATORS.values():
        kinds = {seed.kind for seed in fuzz.SEEDS.values() if mutator.applies_to(seed)}
        for command in fuzz.COMMANDS.values():
            if kinds & command.kinds:
                assert (mutator.cls, command.name) in pairs, (mutator.name, command.name)


def test_mutations_are_reproducible(tmp_path):
    """The same case id gives the same input, byte for byte (the replay depends on it)."""
    seeds = fuzz.write_seeds(tmp_path / "seeds")
    for case in fuzz.cases()[::37]:
        inputs = []
        for attempt in ("a", "b"):
            prepared = fuzz.prepare(case, seeds[case.seed], tmp_path / attempt / case.id)
            folder = prepared.paths.input
            inputs.append((prepared.note, prepared.must_fail,
                           {p.relative_to(folder): p.read_bytes()
                            for p in sorted(folder.rglob("*")) if p.is_file()}))
        assert inputs[0] == inputs[1], case.id


def test_corrupt_gzip_is_always_detectable(tmp_path):
    """Every corrupt_gzip input fails its checksum (checked here with the standard library),
    so exit 0 on one is a real bug, never bad luck."""
    seeds = fuzz.write_seeds(tmp_path / "seeds")
    for case in fuzz.cases(2000):
        if case.mutator != "corrupt_gzip" or case.command != "audit":
            continue
        prepared = fuzz.prepare(case, seeds[case.seed], tmp_path / case.id)
        folder = prepared.paths.input
        if case.seed == "nhdr_gzip":
            stream, check = (folder / "image.raw.gz").read_bytes(), gzip.decompress
        elif case.seed == "nrrd_gzip":
            stream, check = (folder / "image.nrrd").read_bytes().split(b"\n\n", 1)[1], \
                gzip.decompress
        elif case.seed == "mha_zlib":
            data = (folder / "image.mha").read_bytes()
            stream, check = data[data.index(b"\n", data.index(b"ElementDataFile")) + 1:], \
                zlib.decompress
        else:
            stream, check = (folder / "image.nii.gz").read_bytes(), gzip.decompress
        assert prepared.must_fail, case.id
        with pytest.raises((OSError, EOFError, zlib.error)):
            check(stream)


# The harness itself: a fuzz test that cannot fail finds nothing.

def _child_result(**fields) -> dict:
    return {"returncode": 0, "stdout": "", "stderr": "", "problems": [], **fields}


def test_the_runner_reports_hangs_crashes_memory_and_stray_output():
    def hang():
        time.sleep(60)

    def crash():
        os.kill(os.getpid(), signal.SIGSEGV)

    def stray():
        os.write(2, b"WARNING: In itkMetaImageIO.cxx\n")
        return _child_result()

    assert fuzz.run_forked(hang, timeout=0.5).hang
    assert fuzz.run_forked(crash).signal == signal.SIGSEGV
    assert "MemoryError" in fuzz.run_forked(lambda: bytearray(8 << 30)).harness_error
    assert fuzz.run_forked(stray).stray.startswith("WARNING: In itk")
    assert fuzz.run_forked(lambda: _child_result(returncode=4)).returncode == 4


def test_the_oracle_flags_each_kind_of_failure(tmp_path):
    paths = fuzz.CasePaths(tmp_path)
    paths.out.mkdir(parents=True)
    convert, compare = fuzz.COMMANDS["convert"], fuzz.COMMANDS["compare"]

    def kinds(command=convert, must_fail="", before=None, after=None, **fields):
        result = fuzz.ChildResult(**{"returncode": 0, **fields})
        return {kind for kind, _ in fuzz.check(result, command, must_fail, paths,
                                               before or {}, after or {})}

    assert kinds(returncode=70, stderr="Error: internal error: OverflowError: too big\n") \
        == {"exit 70 OverflowError"}
    assert kinds(returncode=1, stderr="Traceback (most recent call last):\n  ...\n"
                 "ValueError: bad\n") == {"exit 1", "traceback ValueError"}
    assert kinds(returncode=1, stderr="", command=compare) == set()
    assert kinds(stderr="/x/geometry.py:12: RuntimeWarning: overflow encountered\n") \
        == {"warning leaked: RuntimeWarning"}
    assert kinds(stray="WARNING: In ITK\n") == {"output past the CLI's streams (C library)"}
    assert kinds(hang=True) == {"hang"}
    assert kinds(must_fail="checksum", command=compare, returncode=1) \
        == {"exit 1 on unreadable voxels"}
    assert kinds(must_fail="checksum", returncode=3) == set()
    assert kinds(after={"a/escape.nii.gz": (1,)}) == {"wrote outside the output folder"}
    assert kinds(after={"a/b/out/x.nii.gz": (1,)}) == set()
    assert kinds(after={"a/b/out/.convkit-1/x": (1,)}) == {"staging left behind"}
    (paths.out / "result.nii.gz").write_bytes(b"partial")
    assert kinds(returncode=3) == {"output left on exit 3"}
    assert kinds(harness_error="boom") == {"harness error"}


def test_the_output_checks_reject_non_finite_geometry(tmp_path):
    import nibabel as nib
    import numpy as np

    affine = np.diag([1.0, 1.0, 1.0, 1.0])
    affine[0, 3] = np.nan
    path = tmp_path / "x.nii"
    nib.save(nib.Nifti1Image(np.zeros((2, 2, 2), np.int16), affine), path)
    assert "non-finite affine" in {kind for kind, _ in fuzz.check_nifti(path)}
    (tmp_path / "r.json").write_text('{"a": NaN}')
    assert {kind for kind, _ in fuzz.check_json(tmp_path / "r.json")} \
        == {"invalid JSON (NaN/Infinity)"}
