"""The inputs convert.py times, each built once and cached under --work.

- ct: the 512 x 512 x 300 int16 chest CT of phantom.py, one file per slice, explicit VR
  little endian (shuffled file names).
- jpegls, jpeg, j2k, rle: the same files transcoded to JPEG-LS lossless, JPEG lossless
  process 14 selection value 1 (dcmtk's dcmcjpeg: pydicom cannot encode it), JPEG 2000
  lossless and RLE lossless; every other attribute unchanged.
- enhanced: the same CT as one Enhanced MR Image Storage file of 300 frames
  (convkit.testing.synthetic.write_enhanced).
- mosaic: a 300-volume fMRI series of Siemens mosaics (64 x 64 x 36 per volume), made from
  the first file of the corpus's dcm_qa/axasc36 series: each volume is that image plus
  seeded noise, with its own SOPInstanceUID, InstanceNumber, AcquisitionNumber and
  AcquisitionTime (TR apart). Needs the real corpus (../shared/data); skipped without it.

A cache is rebuilt when its recipe changes (the source of this file, the phantom, the
DICOM writer); it is written beside its final place and renamed, so an interrupted build
is never reused.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import subprocess
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
from phantom import PIXEL_SPACING_MM, RESCALE_INTERCEPT, SEED, SHAPE, SLICE_SPACING_MM

#: The corpus series whose first mosaic is the template of the fMRI input.
MOSAIC_TEMPLATE = Path("dicom/dcm_qa/axasc36/series")
MOSAIC_VOLUMES = 300
#: Transfer syntaxes of the compressed copies of the CT.
SYNTAXES = {
    "jpegls": "1.2.840.10008.1.2.4.80",  # JPEG-LS lossless
    "jpeg": "1.2.840.10008.1.2.4.70",  # JPEG lossless, process 14, selection value 1
    "j2k": "1.2.840.10008.1.2.4.90",  # JPEG 2000 lossless
    "rle": "1.2.840.10008.1.2.5",  # RLE lossless
}
CASES = ("ct", *SYNTAXES, "enhanced", "mosaic")
DESCRIPTIONS = {
    "ct": "512x512x300 int16 CT, 300 files, explicit VR little endian",
    "jpegls": "the same CT in JPEG-LS lossless",
    "jpeg": "the same CT in JPEG lossless (process 14, SV1)",
    "j2k": "the same CT in JPEG 2000 lossless",
    "rle": "the same CT in RLE lossless",
    "enhanced": "the same CT as one enhanced multi-frame file (300 frames)",
    "mosaic": f"fMRI, {MOSAIC_VOLUMES} Siemens mosaics of 64x64x36 (4D)",
}


def corpus_root() -> Path:
    """../shared/data relative to the project root (the corpus README's convention)."""
    return Path(__file__).resolve().parents[1].parent / "shared" / "data"


def available(case: str) -> str:
    """'' when the case can be built here, else why not."""
    if case == "mosaic" and not (corpus_root() / MOSAIC_TEMPLATE).is_dir():
        return f"needs the corpus ({corpus_root() / MOSAIC_TEMPLATE})"
    if case == "jpeg" and shutil.which("dcmcjpeg") is None:
        return "needs dcmtk's dcmcjpeg to encode JPEG lossless (apt-get install dcmtk)"
    return ""


def build(case: str, work: Path) -> Path:
    """The cached input folder of a case, (re)built when missing or when its recipe changed."""
    from convkit.testing import phantoms, synthetic

    sources = b"".join(Path(module.__file__).read_bytes()  # type: ignore[arg-type]
                       for module in (phantoms, synthetic))
    recipe = {"case": case, "shape": list(SHAPE), "seed": SEED,
              "source_sha256": hashlib.sha256(sources + Path(__file__).read_bytes()
                                              + Path(__file__).with_name("phantom.py")
                                              .read_bytes()).hexdigest()}
    folder, stamp = work / f"{case}_series", work / f"{case}_series.json"
    if folder.is_dir() and stamp.exists() and json.loads(stamp.read_text()) == recipe:
        return folder
    print(f"Building the {case} input in {folder} ...", flush=True)
    started = time.perf_counter()
    staging = work / f"{case}_series.partial"
    shutil.rmtree(staging, ignore_errors=True)
    stamp.unlink(missing_ok=True)
    staging.mkdir(parents=True)
    BUILDERS.get(case, _transcoded)(case, work, staging)
    shutil.rmtree(folder, ignore_errors=True)
    staging.rename(folder)
    stamp.write_text(json.dumps(recipe))
    print(f"  built in {time.perf_counter() - started:.1f} s", flush=True)
    return folder


def _ct(case: str, work: Path, staging: Path) -> None:
    from convkit.testing import synthetic

    n, rows, cols = SHAPE
    synthetic.write_series(staging, _stored(), _positions(), pixel_spacing=PIXEL_SPACING_MM,
                           modality="CT", rescale_slope=1, rescale_intercept=RESCALE_INTERCEPT,
                           series_description="bench chest CT", seed=SEED, shuffle_names=True,
                           extra={"PatientPosition": "HFS"})


def _stored() -> np.ndarray:
    from phantom import stored_values

    return stored_values()  # (k, rows, cols)


def _positions() -> np.ndarray:
    """Centred on the isocentre, so that the phantom's millimetres are patient millimetres."""
    from convkit.testing import synthetic

    n, rows, cols = SHAPE
    origin = (-(cols - 1) / 2 * PIXEL_SPACING_MM[1], -(rows - 1) / 2 * PIXEL_SPACING_MM[0],
              -(n - 1) / 2 * SLICE_SPACING_MM)
    return synthetic.regular_positions(n, origin=origin, spacing=SLICE_SPACING_MM)


def _transcoded(case: str, work: Path, staging: Path) -> None:
    """The CT's files in another transfer syntax, names and other attributes kept."""
    import pydicom

    source = build("ct", work)
    for path in sorted(source.iterdir()):
        if case == "jpeg":
            subprocess.run(["dcmcjpeg", "+e1", str(path), str(staging / path.name)], check=True)
            continue
        ds = pydicom.dcmread(path)
        ds.compress(SYNTAXES[case])
        ds.save_as(staging / path.name, enforce_file_format=True)


def _enhanced(case: str, work: Path, staging: Path) -> None:
    from convkit.testing import synthetic

    n = SHAPE[0]
    synthetic.write_enhanced(staging / "enhanced.dcm", _stored(), _positions(),
                             np.tile([1.0, 0, 0, 0, 1, 0], (n, 1)),
                             pixel_spacing=PIXEL_SPACING_MM, rescale_intercept=RESCALE_INTERCEPT,
                             seed=SEED)


def _mosaic(case: str, work: Path, staging: Path) -> None:
    import pydicom
    from pydicom.uid import generate_uid

    template = pydicom.dcmread(sorted((corpus_root() / MOSAIC_TEMPLATE).iterdir())[0])
    image = template.pixel_array.astype(np.int32)
    tr_s = float(template.RepetitionTime) / 1000
    start = _seconds(str(template.AcquisitionTime))
    rng = np.random.default_rng(SEED)
    series = generate_uid(entropy_srcs=["bench mosaic series"])
    for volume in range(MOSAIC_VOLUMES):
        noise = rng.integers(-20, 21, size=image.shape)
        pixels = np.clip(image + np.where(image > 0, noise, 0), 0, 4095).astype(np.uint16)
        template.PixelData = pixels.tobytes()
        template.SeriesInstanceUID = series
        template.SOPInstanceUID = generate_uid(entropy_srcs=["bench mosaic", str(volume)])
        template.file_meta.MediaStorageSOPInstanceUID = template.SOPInstanceUID
        template.InstanceNumber = template.AcquisitionNumber = volume + 1
        template.AcquisitionTime = _dicom_time(start + volume * tr_s)
        template.save_as(staging / f"MR{volume:04d}.dcm", enforce_file_format=True)


def _seconds(text: str) -> float:
    return int(text[:2]) * 3600 + int(text[2:4]) * 60 + float(text[4:])


def _dicom_time(seconds: float) -> str:
    hours, rest = divmod(seconds, 3600)
    minutes, secs = divmod(rest, 60)
    return f"{int(hours):02d}{int(minutes):02d}{secs:09.6f}"


BUILDERS: dict[str, Callable[[str, Path, Path], None]] = {
    "ct": _ct, "enhanced": _enhanced, "mosaic": _mosaic}
