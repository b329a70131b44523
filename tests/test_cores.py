"""--jobs N: the cores a run may use in all (convkit.cores), and outputs that do not depend on it.

The oracles: the thread counts each part is given (deflate threads, worker processes), and
the stored synthetic pixels read back with nibabel; the outputs of different thread counts
are compared byte for byte.
"""

from __future__ import annotations

from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from convkit import cores
from convkit.batch.run import choose_executor
from convkit.batch.work import Item, Why
from convkit.dicom.plan import ConvertOptions
from convkit.dicom.scan import scan_folder
from convkit.formats import deflate
from convkit.testing.synthetic import regular_positions, write_series


def visible(folder: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(folder.iterdir()) if not p.name.startswith(".")}


def test_the_thread_budget_reaches_the_deflate_threads():
    with cores.limited(1):
        assert deflate.DeflatingStream()._threads == 1
        with cores.limited(3):  # nested: the inner budget holds inside it
            assert deflate.DeflatingStream()._threads == 3
        assert deflate.worker_count() == 1
    assert deflate.DeflatingStream()._threads == cores.available()
    assert cores.for_jobs(0) == cores.available() and cores.for_jobs(5) == 5


def test_share_gives_each_series_its_part_of_the_cores():
    assert cores.share(2, 2) == 1
    assert cores.share(8, 3) == 2
    assert cores.share(2, 5) == 1  # never below one thread
    assert cores.share(4, 1) == 4


def big_series(folder: Path, slices: int = 90, size: int = 160) -> np.ndarray:
    """One CT series several deflate pieces long (the test checks that it is)."""
    pixels = np.random.default_rng(7).integers(0, 4000, (slices, size, size), dtype=np.int16)
    write_series(folder, pixels, regular_positions(slices, spacing=1.5), rescale_intercept=-1024,
                 series_number=3, series_description="big")
    return pixels


def test_jobs_1_writes_the_bytes_of_every_other_thread_count(cli, tmp_path):
    pixels = big_series(tmp_path / "in")
    assert pixels.nbytes >= 4 * deflate.PIECE_BYTES  # cut into pieces, deflated in parallel
    for jobs in ("1", "3"):
        cli("dicom2nii", tmp_path / "in", tmp_path / f"jobs{jobs}", "--jobs", jobs, check_code=0)
    cli("dicom2nii", tmp_path / "in", tmp_path / "default", check_code=0)
    one = visible(tmp_path / "jobs1")
    assert sorted(one) == ["3_big.json", "3_big.nii.gz"]
    assert one == visible(tmp_path / "jobs3") == visible(tmp_path / "default")
    data = np.asarray(nib.load(tmp_path / "jobs1" / "3_big.nii.gz").dataobj)
    assert np.array_equal(data, pixels.transpose(2, 1, 0) - 1024)


@pytest.fixture(scope="module")
def three_series(tmp_path_factory) -> list[Item]:
    root = tmp_path_factory.mktemp("three")
    for number in (1, 2, 3):
        write_series(root / f"s{number}", np.zeros((4, 8, 8), np.int16),
                     regular_positions(4, spacing=1.0), series_number=number)
    scan = scan_folder(root, jobs=1)
    return [Item(group, Why.NEW, "", None, False) for group in scan.series]


@pytest.mark.parametrize(("jobs", "todo", "workers", "threads"), [
    (2, 3, 2, 1),  # more series than cores: one thread each
    (4, 2, 2, 2),  # fewer series than cores: they share all of them
    (3, 3, 3, 1),
])
def test_workers_share_the_cores_of_the_run(three_series, jobs, todo, workers, threads):
    items = [Item(i.group, Why.NEW if n < todo else Why.UP_TO_DATE, "", None, False)
             for n, i in enumerate(three_series)]
    executor = choose_executor(items, jobs, None, ConvertOptions(), [])
    assert executor is not None
    assert (executor.workers, executor.threads) == (workers, threads)


def test_one_series_to_convert_is_converted_here_on_every_core_of_the_run(three_series):
    items = [Item(i.group, Why.NEW if n == 0 else Why.UP_TO_DATE, "", None, False)
             for n, i in enumerate(three_series)]
    assert choose_executor(items, 2, None, ConvertOptions(), []) is None  # serial: 2 threads
    assert choose_executor(three_series, 1, None, ConvertOptions(), []) is None


def test_a_compressed_series_is_decoded_in_worker_processes_only_with_cores_to_spare(tmp_path):
    from pydicom.uid import RLELossless

    from convkit.dicom import pixels

    stored = np.random.default_rng(3).integers(0, 3000, (30, 8, 8), dtype=np.int16)
    write_series(tmp_path / "in", stored, regular_positions(30), transfer_syntax=RLELossless)
    headers = scan_folder(tmp_path / "in", jobs=1).series[0].headers
    assert len(headers) >= pixels.PARALLEL_DECODE_MIN_FILES
    to_decode = [[(header, (0, 0, k))] for k, header in enumerate(headers)]
    pools = {}
    for budget in (1, 2):
        with cores.limited(budget):
            decoded, pool = pixels._decoded_files(to_decode, [])
            images = [image for file in decoded for image in file]
        pools[budget] = pool
        if pool is not None:
            pool.shutdown()
        assert np.array_equal(np.stack(images), stored)  # the same pixels either way
    assert pools[1] is None  # --jobs 1: in this process
    assert pools[2] is not None and pools[2]._max_workers == 2
