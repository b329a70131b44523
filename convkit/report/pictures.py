"""The report's pictures: a thumbnail and a full-size picture per card, in worker processes.

Each picture is a convkit preview (convkit.preview: the display frame, the window the
preview would choose, orientation letters), three planes through the centre, or the
one plane a single-slice image has. They are encoded by Pillow as WebP: a 1,000-series
archive stays a page that opens quickly. A card whose image cannot be read gets a
placeholder picture saying why, so that every card shows something that loaded.
"""

from __future__ import annotations

import dataclasses
import io
from collections.abc import Callable
from concurrent.futures import as_completed
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from convkit import cores
from convkit.dicom.plan import ConvertOptions
from convkit.errors import ConvkitError, RefusedError, exception_reason
from convkit.geometry import io_orientation
from convkit.preview import PreviewOptions, PreviewSource, draw_preview, load_for_preview
from convkit.preview import canvas as preview_canvas
from convkit.preview.display import PLANES, plane_layout
from convkit.preview.render import PreviewPlan, plan_preview
from convkit.processes import process_pool
from convkit.volume import Volume

#: Longest side of each plane in a thumbnail (pixels); the full-size picture uses the
#: preview's default size.
THUMB_TILE_PX = 112
#: WebP quality (0-100) of thumbnails and full-size pictures; method: Pillow's speed/size
#: trade-off (0 fastest .. 6 smallest): 4 (Pillow's default) costs twice the time of 2 for
#: files about 3% smaller.
THUMB_QUALITY = 75
FULL_QUALITY = 90
WEBP_METHOD = 2
#: Below this many cards a process pool costs more (start-up) than it saves.
PARALLEL_MIN_CARDS = 4
PLACEHOLDER_SIZE = (360, 130)
#: Stacks thinner than this are shown as a mosaic of all their slices, not three planes.
MOSAIC_BELOW_SLICES = 8

#: progress(stage, done, total); the stage is 'pictures'.
Progress = Callable[[str, int, int], None]


@dataclass
class Pictures:
    """One card's pictures: WebP bytes and sizes, and a note (placeholder: why)."""

    thumb: bytes
    full: bytes
    thumb_size: tuple[int, int]
    full_size: tuple[int, int]
    note: str = ""
    placeholder: bool = False


def draw_all(sources: list[tuple[str, Any]], jobs: int = 0,
             progress: Progress | None = None) -> dict[str, Pictures]:
    """Pictures of (key, source) pairs (source: a SeriesGroup or a volume Path), by key.

    jobs: worker processes (0: one per core).
    """
    workers = cores.for_jobs(jobs)
    done: dict[str, Pictures] = {}
    if progress:
        progress("pictures", 0, len(sources))
    if workers == 1 or len(sources) < PARALLEL_MIN_CARDS:
        for key, source in sources:
            done[key] = card_pictures(source)
            if progress:
                progress("pictures", len(done), len(sources))
        return done
    with process_pool(min(workers, len(sources))) as pool:
        futures = {pool.submit(card_pictures, source): key for key, source in sources}
        for future in as_completed(futures):
            done[futures[future]] = future.result()
            if progress:
                progress("pictures", len(done), len(sources))
    return done


def card_pictures(source: Any) -> Pictures:
    """The thumbnail and full-size picture of a series group or volume file."""
    try:
        volume, note = _load(source)
        plan = plan_preview(volume, PreviewOptions(**_view(volume)))
        full = _drawn(plan)
        # the same slices and window, smaller (planning again would recompute the window)
        thumb = _drawn(dataclasses.replace(
            plan, options=dataclasses.replace(plan.options, size=THUMB_TILE_PX)))
    except (ConvkitError, OSError, MemoryError) as exc:
        return placeholder(f"no picture: {getattr(exc, 'message', None) or exception_reason(exc)}")
    except Exception as exc:  # a bug drawing one card must not cost the page of the archive
        return placeholder(f"no picture: internal error ({type(exc).__name__}: "
                           f"{exception_reason(exc)}); please report it")
    return Pictures(encode_webp(thumb, THUMB_QUALITY), encode_webp(full, FULL_QUALITY),
                    (thumb.shape[1], thumb.shape[0]), (full.shape[1], full.shape[0]), note)


def _load(source: Any) -> tuple[Volume, str]:
    """The volume to show; a series dicom2nii refuses for uneven spacing is shown
    resampled (and the note says so)."""
    if isinstance(source, Path):
        return load_for_preview(PreviewSource(source.name, source)), ""
    preview_source = PreviewSource(source.label, Path(source.first.path).parent, source)
    try:
        return load_for_preview(preview_source), ""
    except RefusedError as exc:
        if exc.code != "series.gap":
            raise
    return (load_for_preview(preview_source, ConvertOptions(resample=True)),
            "shown resampled onto a regular grid (dicom2nii refuses it without --resample)")


def _view(volume: Volume) -> dict[str, Any]:
    """Three planes through the centre; for a thin stack (under MOSAIC_BELOW_SLICES) its
    slices as a mosaic of the acquisition plane; for a single slice, that slice."""
    shape = volume.array.shape[:3] if volume.array.ndim >= 3 else (*volume.array.shape, 1)
    thinnest = int(np.argmin(shape))
    if shape[thinnest] >= MOSAIC_BELOW_SLICES:
        return {"view": "ortho"}
    canonical = int(io_orientation(np.asarray(volume.affine, float))[thinnest, 0])
    plane = next(p for p in PLANES if plane_layout(p).normal == canonical)
    if shape[thinnest] == 1:
        return {"view": "slice", "plane": plane}
    return {"view": "mosaic", "plane": plane}


def _drawn(plan: PreviewPlan) -> np.ndarray:
    return preview_canvas.rasterise(draw_preview(plan).picture)


def encode_webp(rgb: np.ndarray, quality: int) -> bytes:
    from PIL import Image

    buffer = io.BytesIO()
    Image.fromarray(np.ascontiguousarray(rgb), "RGB").save(
        buffer, "WEBP", quality=quality, method=WEBP_METHOD)
    return buffer.getvalue()


def placeholder(text: str) -> Pictures:
    """A dark picture with text (wrapped), for a card whose image cannot be shown."""
    from PIL import Image, ImageDraw, ImageFont

    image = Image.new("RGB", PLACEHOLDER_SIZE, (40, 40, 40))
    draw = ImageDraw.Draw(image)
    font = ImageFont.load_default(size=14)
    lines, line = [], ""
    for word in text.split():
        trial = f"{line} {word}".strip()
        if line and draw.textlength(trial, font=font) > PLACEHOLDER_SIZE[0] - 20:
            lines.append(line)
            trial = word
        line = trial
    lines.append(line)
    draw.multiline_text((10, 10), "\n".join(lines[:6]), fill=(230, 230, 230), font=font)
    rgb = np.asarray(image)
    data = encode_webp(rgb, THUMB_QUALITY)
    return Pictures(data, data, PLACEHOLDER_SIZE, PLACEHOLDER_SIZE, text, placeholder=True)
