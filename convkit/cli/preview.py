"""convkit preview: a slice, a mosaic or three planes of a volume, as PNG or in the terminal."""

from __future__ import annotations

import os
import shutil
import sys
from pathlib import Path

import typer

from convkit.cli import render
from convkit.cli.progress import progress_bar
from convkit.errors import UsageError


def preview(
    input_path: Path = typer.Argument(..., metavar="INPUT",
                                      help="NIfTI / NRRD / MetaImage file, DICOM folder, or a "
                                           "folder of them (with -o OUT_DIR)."),
    output: Path = typer.Option(None, "--output", "-o",
                                help="OUT.png, or a folder: one PNG per series/volume."),
    slice_index: int = typer.Option(None, "--slice",
                                    help="Slice index (the file's own, 0-based); with --step: "
                                         "the first slice."),
    at: str = typer.Option(None, "--at", metavar="X,Y,Z",
                           help="A point in RAS mm: the slice (or --ortho centre) through it."),
    plane: str = typer.Option("axial", "--plane", "-p", help="axial | coronal | sagittal"),
    mosaic: str = typer.Option(None, "--mosaic", metavar="ROWSxCOLS",
                               help="A grid of evenly spaced slices, e.g. 5x5."),
    step: int = typer.Option(None, "--step", metavar="K",
                             help="Mosaic of every K-th slice (0, K, 2K, ...)."),
    ortho: bool = typer.Option(False, "--ortho",
                               help="Axial, coronal and sagittal through one point."),
    volume_index: int = typer.Option(0, "--volume", metavar="T", help="4D: the time point."),
    neurological: bool = typer.Option(False, "--neurological",
                                      help="Patient left on the image left (default: "
                                           "radiological, patient left on the image right)."),
    window: str = typer.Option(None, "--window", "-w",
                               help="lung | mediastinum | bone | brain | soft-tissue"),
    wl: str = typer.Option(None, "--wl", metavar="CENTER,WIDTH", help="Window centre and width."),
    overlay: Path = typer.Option(None, "--overlay",
                                 help="Label volume (any grid), DICOM SEG or RTSTRUCT file, "
                                      "drawn over the image."),
    alpha: float = typer.Option(0.4, "--alpha", help="Overlay opacity, 0..1."),
    contour: bool = typer.Option(False, "--contour", help="Overlay outlines instead of fills."),
    highlight: str = typer.Option(None, "--highlight",
                                  help="ggo: tint -750..-300 HU inside the lungs (visual aid)."),
    size: int = typer.Option(None, "--size", metavar="PX",
                             help="Longest side of each tile's image (PNG pixels; terminal "
                                  "columns)."),
    interpolation: str = typer.Option("linear", "--interpolation",
                                      help="linear | nearest (image values)."),
    series: list[str] = typer.Option(None, "--series", "-s",
                                     help="DICOM series (number, label or UID); repeatable."),
    resample: bool = typer.Option(False, "--resample",
                                  help="DICOM with uneven spacing / missing slices: interpolate "
                                       "onto a regular grid instead of refusing."),
    terminal: bool = typer.Option(False, "--terminal", "-t",
                                  help="Show the picture in the terminal (true colour)."),
    force: bool = typer.Option(False, "--force", help="Overwrite existing outputs."),
    allow_external_data: bool = typer.Option(
        False, "--allow-external-data",
        help="Read NRRD/MetaImage data files outside the header's folder (only for headers "
             "you trust)."),
    as_json: bool = typer.Option(False, "--json", help="Print what was drawn as JSON."),
) -> None:
    """Quick-look PNG of a volume: a slice, a mosaic or three planes, in patient orientation."""
    from convkit.dicom.plan import ConvertOptions
    from convkit.formats.detached import allowing_external_data
    from convkit.formats.output import check_targets
    from convkit.preview import find_sources
    from convkit.preview.render import PreviewOptions

    if output is None and not terminal:
        raise UsageError("no output given", "pass -o OUT.png (or -o OUT_DIR), or --terminal")
    if terminal and as_json:
        raise UsageError("--terminal and --json both write to stdout", "choose one")
    options = PreviewOptions(
        view=_view(mosaic, step, ortho), plane=plane, slice_index=slice_index,
        at_mm=_parse_point(at), grid=_parse_grid(mosaic), step=step, volume_index=volume_index,
        neurological=neurological, window=window, wl=wl, interpolation=interpolation, size=size)
    read_options = ConvertOptions(resample=resample)
    batch = output is not None and output.suffix.lower() != ".png"
    if output is not None and not batch:
        check_targets([output], force)
    with progress_bar(enabled=not as_json, labels={"render": "Rendering previews"}) as progress:
        sources = find_sources(input_path, series, progress)
        if batch:
            if overlay is not None or terminal:
                raise UsageError("--overlay and --terminal take one image, not a folder of them",
                                 "pass -o OUT.png and one series (--series)")
            from convkit.preview import preview_folder

            with allowing_external_data(allow_external_data):
                report = preview_folder(sources, input_path, output, options, highlight, force,
                                        progress, read_options)
    if batch:
        _print_batch(report, as_json)
        raise typer.Exit(report.exit_code)
    if len(sources) > 1:
        names = ", ".join(s.name for s in sources[:6]) + (" ..." if len(sources) > 6 else "")
        raise UsageError(f"{input_path} holds {len(sources)} series/volumes ({names})",
                         "choose one with --series, or pass -o OUT_DIR for one PNG each")
    with allowing_external_data(allow_external_data):
        _preview_one(sources[0], options, read_options, output, overlay, alpha, contour,
                     highlight, terminal, force, as_json)


def _preview_one(source, options, read_options, output: Path | None, overlay: Path | None,
                 alpha: float, contour: bool, highlight: str | None, terminal: bool, force: bool,
                 as_json: bool) -> None:
    from convkit.preview import (
        draw_preview,
        label_overlay,
        load_for_preview,
        plan_preview,
        png_bytes,
        write_png,
    )
    from convkit.preview.files import highlight_overlays

    volume = load_for_preview(source, read_options)
    overlays = highlight_overlays(volume, highlight, options.volume_index)
    if overlay is not None:
        from convkit.inputs import load_volume
        from convkit.seg.objects import segmentation_on_grid
        from convkit.seg.sopclass import segmentation_file_kind

        name = overlay.name.split(".")[0]
        labels = segmentation_on_grid(overlay, volume.affine, volume.shape[:3]) \
            if segmentation_file_kind(overlay) else load_volume(overlay)  # SEG, RTSTRUCT
        overlays.append(label_overlay(labels, name, alpha, contour))
    plan = plan_preview(volume, options, source.name, overlays)
    written = []
    drawing = None
    if output is not None:
        drawing = draw_preview(plan)
        written.append(str(write_png(png_bytes(drawing), output, force)))
    if terminal:
        columns, lines = _terminal_size()
        text_drawing = draw_preview(plan, terminal_columns=columns, terminal_lines=lines)
        _print_terminal(text_drawing)
        drawing = drawing or text_drawing
    if drawing is None:  # preview() refuses a call with neither -o nor --terminal
        raise UsageError("no output given", "pass -o OUT.png, or --terminal")
    _report_one(plan, drawing, written, as_json)


def _report_one(plan, drawing, written: list[str], as_json: bool) -> None:
    """The JSON report, or the tile note and the 'wrote' line."""
    tiles = tile_note(plan)
    out = render.console()
    if as_json:
        report = drawing.to_json()
        if tiles:
            report["notes"] = [*report["notes"], tiles]
        render.print_json({**report, "files_written": written})
        return
    if tiles:
        render.error_console().print(f"[yellow]Note:[/] {tiles}", highlight=False,
                                     soft_wrap=True)
    if written:
        out.print(f"wrote {written[0]}  {_summary(drawing)}", soft_wrap=True)
    else:  # --terminal alone
        out.print(_summary(drawing), soft_wrap=True)
    for note in plan.notes:
        out.print(f"[cyan]note[/]: {note}", soft_wrap=True)
    for overlay_ in plan.overlays:
        for entry in overlay_.legend:
            out.print(entry.text, soft_wrap=True)
        if overlay_.name == "ggo":
            out.print("the GGO highlight is a visual aid, not a diagnosis", soft_wrap=True)


def tile_note(plan) -> str | None:
    """'7 of 25 tiles: --step 10 over 70 slices' when a mosaic grid is not filled (None when
    it is): the grid asked for more slices than the stack gives."""
    from convkit.preview.display import plane_layout

    options = plan.options
    if options.view != "mosaic" or options.grid is None:
        return None
    wanted = options.grid[0] * options.grid[1]
    drawn = sum(1 for tile in plan.tiles if tile is not None)
    if drawn >= wanted:
        return None
    count = plan.frame.shape[plane_layout(options.plane).normal]
    if options.step is None:
        why = f"the {options.plane} stack has {count} slices"
    elif options.slice_index:
        why = f"--step {options.step} from --slice {options.slice_index} over {count} slices"
    else:
        why = f"--step {options.step} over {count} slices"
    return f"{drawn} of {wanted} tiles: {why}"


def _summary(drawing) -> str:
    """'1280x1330, axial mosaic 5x5 (k=0..240), lung W 1500 L -600'."""
    plan = drawing.plan
    width, height = drawing.picture.size
    tiles = drawing.tiles
    if plan.options.view == "ortho":
        what = "ortho " + ", ".join(f"{t.file_axis}={t.file_index}" for t in tiles)
    elif plan.options.view == "mosaic":
        rows, columns = plan.grid
        what = (f"{plan.options.plane} mosaic {rows}x{columns} ({tiles[0].file_axis}="
                f"{tiles[0].file_index}..{tiles[-1].file_index})")
    else:
        what = f"{plan.options.plane} {tiles[0].title.strip()}"
    window = "RGB" if plan.frame.is_rgb else plan.window.describe()
    return f"{width}x{height}, {what}, {window}"


def _view(mosaic: str | None, step: int | None, ortho: bool) -> str:
    if ortho and (mosaic or step):
        raise UsageError("--ortho and --mosaic/--step both set", "choose one view")
    if ortho:
        return "ortho"
    return "mosaic" if mosaic or step else "slice"


def _parse_grid(text: str | None) -> tuple[int, int] | None:
    if text is None:
        return None
    try:
        rows, columns = (int(part) for part in text.lower().split("x"))
    except ValueError:
        raise UsageError(f"--mosaic {text!r}: expected ROWSxCOLS, e.g. 5x5") from None
    return rows, columns


def _parse_point(text: str | None) -> tuple[float, float, float] | None:
    if text is None:
        return None
    try:
        x, y, z = (float(part) for part in text.split(","))
    except ValueError:
        raise UsageError(f"--at {text!r}: expected X,Y,Z in RAS mm, e.g. --at 0,-20,35") from None
    return x, y, z


def _terminal_size() -> tuple[int, int | None]:
    """(columns, lines): COLUMNS or the terminal's width; the terminal's height only when
    stdout is a terminal (the picture then fits the screen; piped, it may be taller)."""
    from convkit.preview.render import DEFAULT_TERMINAL_COLUMNS

    size = shutil.get_terminal_size((DEFAULT_TERMINAL_COLUMNS, 40))
    columns = os.environ.get("COLUMNS")
    width = int(columns) if columns and columns.isdigit() else size.columns
    return width, (size.lines if sys.stdout.isatty() else None)


def terminal_text(drawing):
    """A rich Text of a terminal drawing: true-colour upper half blocks and text cells."""
    from rich.color import Color
    from rich.style import Style
    from rich.text import Text

    from convkit.preview import terminal_runs

    styles: dict = {}
    text = Text(no_wrap=True, overflow="ignore")
    lines = terminal_runs(drawing.picture)
    for number, runs in enumerate(lines):
        for chars, fg, bg in runs:
            style = styles.get((fg, bg))
            if style is None:
                style = styles[(fg, bg)] = Style(color=Color.from_rgb(*fg),
                                                 bgcolor=Color.from_rgb(*bg))
            text.append(chars, style)
        if number < len(lines) - 1:
            text.append("\n")
    return text


def _print_terminal(drawing) -> None:
    """Always in true colour: the picture is the colours (NO_COLOR aims at decoration)."""
    from rich.console import Console

    width = drawing.picture.size[0]
    console = Console(force_terminal=True, color_system="truecolor", no_color=False,
                      width=width + 1, highlight=False, emoji=False, legacy_windows=False)
    console.print(terminal_text(drawing), crop=False)


#: Batch table. Narrow terminals lose Output first (SOURCE.png by default, cut in the middle
#: before it goes), then Window, then Drawn; Source and Status always stay.
BATCH_COLUMNS = (render.Col("Source", "name", key=True), render.Col("Status"),
                 render.Col("Output", "name", drop=1), render.Col("Drawn", drop=3),
                 render.Col("Window", drop=2))


def _print_batch(report, as_json: bool) -> None:
    if as_json:
        render.print_json(report.to_json())
    else:
        from rich.text import Text

        rows = []
        for item in report.items:
            drawn = window = ""
            if item.report:
                drawn = _drawn(item.report)
                shown = item.report["window"]
                window = f"W {shown['width']:g} L {shown['center']:g}"
            style = render.STATUS_STYLE.get(item.status, "white")
            rows.append([Text(item.name), f"[{style}]{item.status}[/]",
                         Text(Path(item.output).name if item.output else ""), drawn, window])
        out = render.console()
        out.print(render.fit_table(f"{len(report.items)} previews from {report.input}",
                                   list(BATCH_COLUMNS), rows, out.width))
    err = render.error_console()
    for item in report.items:
        if item.status != "written":
            err.print(f"[bold yellow]{item.status.capitalize()}:[/] {item.name}: {item.reason}",
                      highlight=False, soft_wrap=True)
            if item.hint:
                err.print(f"[yellow]Hint:[/] {item.hint}", highlight=False, soft_wrap=True)


def _drawn(report: dict) -> str:
    """'ortho k=35 j=64 i=64', 'axial mosaic k=0..240 (25)', 'axial k=35'."""
    tiles = report["tiles"]
    if report["view"] == "ortho":
        return "ortho " + " ".join(f"{t['axis']}={t['slice']}" for t in tiles)
    first, last = tiles[0], tiles[-1]
    if report["view"] == "mosaic":
        return (f"{report['plane']} mosaic {first['axis']}={first['slice']}..{last['slice']} "
                f"({len(tiles)})")
    return f"{report['plane']} {first['axis']}={first['slice']}"
