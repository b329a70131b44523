"""Quick-look previews: a slice, a mosaic or three planes, as a PNG or in the terminal.

Library first (no typer, no rich here)::

    from convkit.inputs import load_volume
    from convkit.preview import PreviewOptions, plan_preview, draw_preview, png_bytes

    volume = load_volume("ct.nii.gz")
    plan = plan_preview(volume, PreviewOptions(view="mosaic", grid=(5, 5), step=10))
    drawing = draw_preview(plan)             # or draw_preview(plan, terminal_columns=120)
    data = png_bytes(drawing)                # PNG file content
    drawing.to_json()                        # slices, positions, window, tile boxes

Conventions: images are shown in patient orientation whatever the array layout on
disk (radiological by default: patient left on the image right), with square
millimetre pixels and orientation letters; windows are documented in
convkit.preview.window.WINDOW_PRESETS. Modules: display (canonical frame, planes,
resampling), window, overlay (label volumes in world space, GGO highlight),
canvas (layout, text, terminal cells), font (Pillow's scalable font in cells), png, render
(options -> plan -> drawing), files (inputs, atomic PNG output, batches).
"""

from __future__ import annotations

from convkit.preview.canvas import Picture, rasterise, terminal_runs
from convkit.preview.display import PLANES, display_frame, extract_plane
from convkit.preview.files import (
    BatchReport,
    PreviewSource,
    find_sources,
    load_for_preview,
    preview_folder,
    write_png,
)
from convkit.preview.overlay import GGO_HU_RANGE, Overlay, ggo_overlay, label_overlay
from convkit.preview.png import encode_png
from convkit.preview.render import (
    Drawing,
    PreviewOptions,
    PreviewPlan,
    draw_preview,
    plan_preview,
    png_bytes,
)
from convkit.preview.window import WINDOW_PRESETS, Window, apply_window, choose_window

__all__ = [
    "GGO_HU_RANGE", "PLANES", "WINDOW_PRESETS", "BatchReport", "Drawing", "Overlay", "Picture",
    "PreviewOptions", "PreviewPlan", "PreviewSource", "Window", "apply_window", "choose_window",
    "display_frame", "draw_preview", "encode_png", "extract_plane", "find_sources",
    "ggo_overlay", "label_overlay", "load_for_preview", "plan_preview", "png_bytes",
    "preview_folder", "rasterise", "terminal_runs", "write_png",
]
