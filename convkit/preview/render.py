"""From a Volume and options to a picture: which slices, which window, what overlays.

plan_preview decides what to draw (slices, window, overlays) without drawing;
draw_preview lays it out as a Picture for a PNG or for the terminal. Both are
pure: no I/O, no printing.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from convkit.errors import UsageError
from convkit.preview import canvas
from convkit.preview.display import (
    INTERPOLATIONS,
    OBLIQUE_NOTE_DEGREES,
    PLANES,
    Frame,
    PlaneImage,
    display_frame,
    extract_plane,
    pixel_world,
    plane_extent_mm,
    plane_layout,
)
from convkit.preview.overlay import Overlay, blend, sample_labels
from convkit.preview.png import encode_png
from convkit.preview.window import Window, apply_window, choose_window, parse_wl, preset_window
from convkit.volume import Volume

VIEWS = ("slice", "mosaic", "ortho")
#: Default longest side of each tile's image in PNG pixels: (smallest, largest). Within the
#: range a tile is drawn at the volume's finest in-plane voxel size.
TILE_SIZE_PX = {"slice": (256, 512), "mosaic": (160, 256), "ortho": (192, 384)}
#: Tiles at least this large (pixels) get text at font scale 2.
LARGE_TEXT_TILE_PX = 384
#: Mosaic with neither a grid nor a step: this many tiles.
DEFAULT_MOSAIC = (4, 4)
MAX_TILES = 400
#: Terminal pictures are this many columns wide when the terminal's width is unknown.
DEFAULT_TERMINAL_COLUMNS = 100


@dataclass
class PreviewOptions:
    """What to draw. Slice indices are the file's own (its array axis closest to the plane
    normal, 0-based); positions are RAS millimetres."""

    view: str = "slice"  # slice | mosaic | ortho
    plane: str = "axial"
    slice_index: int | None = None  # slice view: the slice; mosaic with step: the first one
    at_mm: tuple[float, float, float] | None = None  # slice or ortho view: a RAS point
    grid: tuple[int, int] | None = None  # mosaic rows, columns
    step: int | None = None  # mosaic: every step-th slice
    volume_index: int = 0  # 4D: the time point
    neurological: bool = False
    window: str | None = None  # preset name
    wl: str | None = None  # 'CENTER,WIDTH'
    interpolation: str = "linear"
    size: int | None = None  # longest side of a tile image (PNG pixels / terminal columns)

    def __post_init__(self) -> None:
        self._check_names()
        self._check_ranges()
        self._check_combinations()

    def _check_names(self) -> None:
        for value, known, what in ((self.view, VIEWS, "view"), (self.plane, PLANES, "--plane"),
                                   (self.interpolation, INTERPOLATIONS, "interpolation")):
            if value not in known:
                raise UsageError(f"unknown {what} {value!r}", f"choose one of {', '.join(known)}")
        if self.window:
            preset_window(self.window)  # validates the name
        if self.wl:
            parse_wl(self.wl)

    def _check_ranges(self) -> None:
        if self.step is not None and self.step < 1:
            raise UsageError(f"--step {self.step}: must be at least 1")
        if self.grid is not None and (min(self.grid) < 1 or self.grid[0] * self.grid[1] >
                                      MAX_TILES):
            raise UsageError(f"--mosaic {self.grid[0]}x{self.grid[1]}: between 1x1 and "
                             f"{MAX_TILES} tiles")
        if self.size is not None and not 8 <= self.size <= 4096:
            raise UsageError(f"--size {self.size}: between 8 and 4096 pixels")

    def _check_combinations(self) -> None:
        if self.window and self.wl:
            raise UsageError("--window and --wl both set", "give one of them")
        if self.view != "mosaic" and (self.grid or self.step):
            raise UsageError("--step needs --mosaic (or use --mosaic alone)")
        if self.view == "mosaic" and self.at_mm is not None:
            raise UsageError("--at does not apply to a mosaic", "use --slice with --step")
        if self.view == "mosaic" and self.slice_index is not None and self.step is None:
            raise UsageError("--slice with --mosaic sets the first slice of --step",
                             "add --step K, or drop --slice")
        if self.view == "ortho" and self.slice_index is not None:
            raise UsageError("--ortho takes a point (--at X,Y,Z), not --slice")
        if self.slice_index is not None and self.at_mm is not None:
            raise UsageError("--slice and --at both set", "give one of them")


@dataclass(frozen=True)
class TileSpec:
    plane: str
    index: int  # canonical slice index


@dataclass
class PreviewPlan:
    """What will be drawn: the frame, the window, the tiles (None = empty cell), overlays."""

    name: str
    options: PreviewOptions
    frame: Frame
    window: Window
    tiles: list[TileSpec | None]
    columns: int
    overlays: list[Overlay] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    orientation: str = ""  # the file's axis codes, e.g. 'LPS'

    @property
    def grid(self) -> tuple[int, int]:
        return math.ceil(len(self.tiles) / self.columns), self.columns

    def header(self) -> str:
        parts = [self.name] if self.name else []
        if self.frame.is_rgb:
            parts.append("RGB")
        else:
            parts.append(self.window.describe())
        if self.options.volume_index:
            parts.append(f"t={self.options.volume_index}")
        return "  ".join(parts)


def plan_preview(volume: Volume, options: PreviewOptions | None = None, name: str = "",
                 overlays: list[Overlay] | None = None) -> PreviewPlan:
    """Decide the slices and the window of a preview (UsageError for impossible choices)."""
    options = options or PreviewOptions()
    frame = display_frame(volume, options.volume_index)
    window = _window(frame, volume, options)
    tiles, columns = _tiles(frame, options)
    notes = []
    if frame.obliquity_degrees > OBLIQUE_NOTE_DEGREES:
        notes.append(f"oblique volume ({frame.obliquity_degrees:.1f} degrees): shown on the "
                     "closest canonical axes, not resampled; letters and positions are "
                     "approximate")
    if volume.array.ndim == 4 and volume.array.shape[3] > 1 and not options.volume_index:
        notes.append(f"4D volume: showing time point 0 of {volume.array.shape[3]} (--volume T)")
    return PreviewPlan(name, options, frame, window, tiles, columns, list(overlays or []), notes,
                       volume.orientation)


def _window(frame: Frame, volume: Volume, options: PreviewOptions) -> Window:
    if frame.is_rgb:
        return Window(127.5, 255.0, "rgb", reason="colour image: shown as stored")
    if options.window:
        return preset_window(options.window)
    if options.wl:
        return parse_wl(options.wl)
    return choose_window(frame.array, volume.metadata, frame.slope, frame.intercept)


def _tiles(frame: Frame, options: PreviewOptions) -> tuple[list[TileSpec | None], int]:
    if options.view == "ortho":
        point = (frame.index_of_point(options.at_mm) if options.at_mm is not None
                 else _file_centre(frame))
        return [TileSpec(plane, int(point[plane_layout(plane).normal])) for plane in PLANES], 3
    normal = plane_layout(options.plane).normal
    count = frame.shape[normal]
    file_axis = "ijk"[frame.file_axis(normal)]
    if options.view == "slice":
        if options.at_mm is not None:
            return [TileSpec(options.plane, int(frame.index_of_point(options.at_mm)[normal]))], 1
        file_index = count // 2 if options.slice_index is None else options.slice_index
        _check_index(file_index, count, file_axis, options.plane)
        return [TileSpec(options.plane, frame.to_canonical_index(normal, file_index))], 1
    indices = _mosaic_indices(count, options, file_axis)
    rows, columns = options.grid or _grid_for(len(indices))
    specs: list[TileSpec | None] = [
        TileSpec(options.plane, frame.to_canonical_index(normal, i)) for i in indices]
    specs += [None] * (rows * columns - len(specs))
    return specs, columns


def _file_centre(frame: Frame) -> np.ndarray:
    """Canonical index of the file's centre voxel (n // 2 along each file axis)."""
    point = np.zeros(3, dtype=int)
    for axis in range(3):
        point[axis] = frame.to_canonical_index(axis, frame.file_shape[frame.file_axis(axis)] // 2)
    return point


def _check_index(index: int, count: int, axis: str, plane: str) -> None:
    if not 0 <= index < count:
        raise UsageError(f"--slice {index} is outside 0..{count - 1} (the {plane} slices run "
                         f"along the file's {axis} axis)")


def _mosaic_indices(count: int, options: PreviewOptions, axis: str) -> list[int]:
    """File slice indices of a mosaic, ascending."""
    if options.step is not None:
        start = options.slice_index or 0
        _check_index(start, count, axis, options.plane)
        indices = list(range(start, count, options.step))
        if options.grid:
            indices = indices[:options.grid[0] * options.grid[1]]
        return indices[:MAX_TILES]
    rows, columns = options.grid or DEFAULT_MOSAIC
    wanted = rows * columns
    if wanted >= count:
        return list(range(count))
    # Centres of `wanted` equal parts of the stack: evenly spaced, clear of both ends.
    return [int((i + 0.5) * count / wanted) for i in range(wanted)]


def _grid_for(count: int) -> tuple[int, int]:
    columns = max(1, math.ceil(math.sqrt(count)))
    return max(1, math.ceil(count / columns)), columns


# --- drawing -------------------------------------------------------------------------------

@dataclass
class Tile:
    """A drawn tile: what it shows and where (JSON-ready through to_json)."""

    spec: TileSpec
    image: PlaneImage
    title: str
    file_axis: str
    file_index: int
    position_mm: float
    position: str
    pixel_mm: float
    box: tuple[int, int, int, int] = (0, 0, 0, 0)  # the image on the canvas: x, y, w, h
    title_xy: tuple[int, int] = (0, 0)  # top-left corner of the title's first character
    world: tuple[list[float], list[float], list[float]] = ([], [], [])

    def to_json(self) -> dict[str, Any]:
        origin, col, row = self.world
        return {"plane": self.spec.plane, "axis": self.file_axis, "slice": self.file_index,
                "position_mm": round(self.position_mm, 4), "position": self.position,
                "title": self.title, "title_xy": list(self.title_xy), "box": list(self.box),
                "pixel_mm": round(self.pixel_mm, 6),
                "origin_ras": origin, "column_step_ras": col, "row_step_ras": row}


@dataclass
class Drawing:
    """A plan drawn: the picture and its tiles."""

    plan: PreviewPlan
    picture: canvas.Picture
    tiles: list[Tile]

    def to_json(self) -> dict[str, Any]:
        plan, options = self.plan, self.plan.options
        rows, columns = plan.grid
        return {
            "input": plan.name, "view": options.view,
            "plane": None if options.view == "ortho" else options.plane,
            "grid": [rows, columns], "volume_index": options.volume_index,
            "convention": "neurological" if options.neurological else "radiological",
            "orientation_on_disk": plan.orientation, "window": plan.window.to_json(),
            "size": list(self.picture.size), "tiles": [t.to_json() for t in self.tiles],
            "overlays": [o.to_json() for o in plan.overlays], "notes": plan.notes,
        }


def draw_preview(plan: PreviewPlan, terminal_columns: int | None = None,
                 terminal_lines: int | None = None) -> Drawing:
    """Draw a plan as a PNG picture, or (terminal_columns) as a terminal picture that wide
    and, when terminal_lines is given, no taller than that many lines."""
    options, frame = plan.options, plan.frame
    specs = [s for s in plan.tiles if s is not None]
    extents = {s.plane: plane_extent_mm(frame, s.plane) for s in specs}
    longest = max(max(extent) for extent in extents.values())
    if terminal_columns is not None:
        ts = canvas.TERMINAL_TYPESET
        if options.size:
            pixel_mm = longest / options.size
        else:
            per_tile = 2 * (ts.char_width + ts.pad) + ts.gap
            row_mm = sum(extents[s.plane][0] for s in specs[:plan.columns])
            if options.view == "mosaic":
                row_mm = extents[specs[0].plane][0] * plan.columns
            available = max(plan.columns, terminal_columns - plan.columns * per_tile)
            pixel_mm = row_mm / available
            if terminal_lines:
                rows = plan.grid[0]
                column_mm = rows * max(extents[s.plane][1] for s in specs)
                legend_lines = sum(len(o.legend) for o in plan.overlays)
                text_lines = 1 + 3 * rows + legend_lines + 2  # header, tile texts, legend, summary
                available_px = 2 * max(rows, terminal_lines - text_lines)
                pixel_mm = max(pixel_mm, column_mm / available_px)
    else:
        size = options.size or _default_size(frame, options.view, extents, longest)
        pixel_mm = longest / size
        ts = canvas.png_typeset(2 if size >= LARGE_TEXT_TILE_PX else 1)
    tiles: list[Tile] = []
    blocks: list[canvas.Block | None] = []
    for spec in plan.tiles:
        if spec is None:
            blocks.append(None)
            continue
        tile = _draw_tile(plan, spec, pixel_mm)
        tiles.append(tile)
        blocks.append(canvas.Block(_tile_rgb(plan, tile), _short_titles(tile),
                                   tile.image.layout.letters))
    legend = [(entry.text, entry.color) for o in plan.overlays for entry in o.legend]
    picture = canvas.compose(blocks, plan.columns, ts, plan.header(), legend,
                             max_width=terminal_columns)
    placed = [b for b in blocks if b is not None]
    for tile, block in zip(tiles, placed, strict=True):
        x, y = block.image_origin(ts)
        h, w = block.image.shape[:2]
        tile.box = (x, y, w, h)
        tile.title_xy = (block.x, block.y)
        tile.title = block.title
    return Drawing(plan, picture, tiles)


def _short_titles(tile: Tile) -> tuple[str, ...]:
    """The tile's title and shorter forms for narrow tiles."""
    index = f"{tile.file_axis}={tile.file_index}"
    position = tile.position.removesuffix(" mm")
    plane = f"{tile.spec.plane} " if tile.title.startswith(tile.spec.plane) else ""
    return (tile.title, f"{plane}{index} {position}", f"{index} {position}",
            f"{index} {position.replace(' ', '')}", index)


def _default_size(frame: Frame, view: str, extents: dict[str, tuple[float, float]],
                  longest: float) -> int:
    smallest, largest = TILE_SIZE_PX[view]
    finest = float(min(min(np.delete(frame.spacing, plane_layout(p).normal)) for p in extents))
    native = longest / finest if finest > 0 else largest
    return int(min(max(native, smallest), largest))


def _draw_tile(plan: PreviewPlan, spec: TileSpec, pixel_mm: float) -> Tile:
    frame, options = plan.frame, plan.options
    image = extract_plane(frame, spec.plane, spec.index, pixel_mm, options.neurological,
                          options.interpolation)
    normal = image.layout.normal
    file_axis = "ijk"[frame.file_axis(normal)]
    file_index = frame.to_file_index(normal, spec.index)
    position = frame.slice_position(normal, spec.index)
    letter = ("RAS" if position >= 0 else "LPI")[normal]
    position_text = f"{letter} {abs(position):.1f} mm"
    prefix = f"{spec.plane} " if options.view == "ortho" else ""
    title = f"{prefix}{file_axis}={file_index}  {position_text}"
    affine = frame.affine
    world = ([round(float(v), 4) for v in affine[:3, :3] @ image.voxel_origin + affine[:3, 3]],
             [round(float(v), 6) for v in affine[:3, :3] @ image.voxel_col],
             [round(float(v), 6) for v in affine[:3, :3] @ image.voxel_row])
    return Tile(spec, image, title, file_axis, file_index, position, position_text, pixel_mm,
                world=world)


def _tile_rgb(plan: PreviewPlan, tile: Tile) -> np.ndarray:
    values = tile.image.values
    if plan.frame.is_rgb:
        rgb = np.clip(np.rint(values), 0, 255).astype(np.uint8)
    else:
        grey = apply_window(values, plan.window)
        rgb = np.repeat(grey[:, :, None], 3, axis=2)
    if plan.overlays:
        world = pixel_world(plan.frame, tile.image)
        for overlay in plan.overlays:
            blend(rgb, sample_labels(overlay, world), overlay)
    return rgb


def png_bytes(drawing: Drawing) -> bytes:
    """The PNG file content of a drawing (texts drawn in Pillow's built-in scalable font)."""
    return encode_png(canvas.rasterise(drawing.picture), {"Software": "convkit preview"})
