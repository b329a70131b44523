"""convkit preview: orientation, aspect, windows, mosaics, overlays, GGO, terminal, CLI.

Every test that draws opens the written PNG (decoded by SimpleITK, an independent
decoder) and checks pixels; the mapping from PNG pixels to the patient comes from
the --json report (each tile's box and its RAS origin and steps).
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import SimpleITK as sitk

from convkit.formats import write_volume
from convkit.preview import (
    WINDOW_PRESETS,
    PreviewOptions,
    apply_window,
    choose_window,
    draw_preview,
    find_sources,
    label_overlay,
    load_for_preview,
    plan_preview,
    png_bytes,
)
from convkit.preview.canvas import LETTER_COLOR, TEXT_COLOR
from convkit.preview.font import text_mask
from convkit.preview.window import preset_window
from convkit.volume import Volume

REPO = Path(__file__).resolve().parents[1]
CHEST = REPO / "sample_data" / "dicom" / "chest_ct"

# --- helpers -------------------------------------------------------------------------------


def read_png(path: Path) -> np.ndarray:
    """(H, W, 3) uint8, decoded by SimpleITK (not by convkit)."""
    return sitk.GetArrayFromImage(sitk.ReadImage(str(path)))


def crop(png: np.ndarray, box) -> np.ndarray:
    x, y, w, h = box
    return png[y:y + h, x:x + w]


def canonical_volume(data: np.ndarray, spacing, origin=(0.0, 0.0, 0.0)) -> Volume:
    """A Volume whose array axes are already RAS+ (x to Right, y Anterior, z Superior)."""
    affine = np.diag([*map(float, spacing), 1.0])
    affine[:3, 3] = origin
    return Volume(np.asfortranarray(data), affine)


def relayout(volume: Volume, codes: str) -> Volume:
    """The same image stored with axis codes `codes` (e.g. 'LPS', 'PIR'): transposed and
    flipped on disk, the affine adjusted so that every voxel keeps its world position."""
    image = nib.Nifti1Image(np.asarray(volume.array), volume.affine)
    ornt = nib.orientations.ornt_transform(nib.orientations.io_orientation(volume.affine),
                                           nib.orientations.axcodes2ornt(tuple(codes)))
    moved = image.as_reoriented(ornt)
    assert "".join(nib.aff2axcodes(moved.affine)) == codes
    return Volume(np.asfortranarray(np.asarray(moved.dataobj)), moved.affine)


def save(volume: Volume, path: Path) -> Path:
    write_volume(volume, path)
    return path


def draw_to_png(volume: Volume, path: Path, **options) -> dict:
    """Library path: plan, draw, encode, write; returns the JSON report."""
    drawing = draw_preview(plan_preview(volume, PreviewOptions(**options), "test"))
    path.write_bytes(png_bytes(drawing))
    return drawing.to_json()


def run_preview(cli, *args, code=0):
    """The CLI with --json: (report, completed process)."""
    done = cli("preview", *args, "--json", check_code=code)
    return (json.loads(done.stdout) if code == 0 else None), done


def centroid(mask: np.ndarray) -> tuple[float, float]:
    """(row, column) centre of mass as a fraction of the height and width."""
    rows, cols = np.nonzero(mask)
    assert rows.size, "nothing found"
    return rows.mean() / mask.shape[0], cols.mean() / mask.shape[1]


def pixel_world(tile: dict) -> np.ndarray:
    """(h, w, 3) RAS position of each pixel centre of a tile, from the JSON report."""
    _, _, w, h = tile["box"]
    r = np.arange(h)[:, None, None]
    c = np.arange(w)[None, :, None]
    return (np.asarray(tile["origin_ras"]) + c * np.asarray(tile["column_step_ras"])
            + r * np.asarray(tile["row_step_ras"]))


def tinted(rgb: np.ndarray) -> np.ndarray:
    """Pixels that are not grey (an overlay colour was mixed in)."""
    return (rgb[..., 0] != rgb[..., 1]) | (rgb[..., 1] != rgb[..., 2])


# --- orientation ---------------------------------------------------------------------------

# Markers on the patient's left, anterior and superior sides; values -> greys 85, 170, 255
# through the window below. Each sits on the centre lines of the two planes that show it.
MARKERS = {"left": 100, "anterior": 200, "superior": 300}
MARKER_WL = "150,300"
GREY = {name: round(value * 255 / 300) for name, value in MARKERS.items()}


def marker_volume() -> Volume:
    shape = (40, 48, 36)  # x (R), y (A), z (S)
    data = np.zeros(shape, dtype=np.int16)
    cx, cy, cz = (n // 2 for n in shape)
    data[3:9, cy - 3:cy + 3, cz - 3:cz + 3] = MARKERS["left"]  # low x = patient left
    data[cx - 3:cx + 3, 39:45, cz - 3:cz + 3] = MARKERS["anterior"]  # high y
    data[cx - 3:cx + 3, cy - 3:cy + 3, 28:34] = MARKERS["superior"]  # high z
    return canonical_volume(data, (2.0, 2.5, 3.0), origin=(-40, -60, -50))


#: Where each marker must appear: plane -> marker -> (axis, side); axis 0 = rows (top/bottom),
#: 1 = columns (left/right). Radiological: patient left on the image right.
EXPECTED = {
    "axial": {"left": (1, "high"), "anterior": (0, "low")},
    "coronal": {"left": (1, "high"), "superior": (0, "low")},
    "sagittal": {"anterior": (1, "low"), "superior": (0, "low")},
}


def check_markers(png: np.ndarray, report: dict, neurological: bool = False) -> None:
    for tile in report["tiles"]:
        image = crop(png, tile["box"])[..., 0].astype(int)
        for marker, (axis, side) in EXPECTED[tile["plane"]].items():
            if neurological and marker == "left":
                side = "low"
            where = centroid(np.abs(image - GREY[marker]) <= 12)[axis]
            assert (where > 0.6) if side == "high" else (where < 0.4), (
                f"{tile['plane']}: {marker} marker at {where:.2f} of axis {axis}")


@pytest.mark.parametrize("codes", ["RAS", "LPS", "PIR", "ILA", "SAL"])
@pytest.mark.parametrize("suffix", [".nii.gz", ".nrrd"])
def test_markers_land_on_the_patients_side_whatever_the_layout(tmp_path, codes, suffix):
    """NIfTI (RAS world) and NRRD (written in LPS space) files, transposed and flipped on
    disk: after reading, every plane shows left, anterior and superior where they belong."""
    path = save(relayout(marker_volume(), codes), tmp_path / f"m{suffix}")
    volume = load_for_preview(find_sources(path)[0])
    out = tmp_path / "ortho.png"
    report = draw_to_png(volume, out, view="ortho", wl=MARKER_WL)
    check_markers(read_png(out), report)
    assert report["orientation_on_disk"] == codes


def test_markers_from_a_dicom_series_in_lps(tmp_path, cli):
    """A DICOM series (LPS, sagittal slices stored right to left) through the real CLI."""
    from convkit.testing.synthetic import write_series

    volume = relayout(marker_volume(), "PIR")  # i: posterior, j: inferior, k: right
    lps = np.diag([-1.0, -1.0, 1.0, 1.0]) @ volume.affine
    stored = np.ascontiguousarray(np.asarray(volume.array).transpose(2, 1, 0))  # (k, rows, cols)
    positions = np.array([lps[:3, :3] @ [0, 0, k] + lps[:3, 3] for k in range(stored.shape[0])])
    orientation = np.concatenate([lps[:3, 0] / 2.5, lps[:3, 1] / 3.0])
    write_series(tmp_path / "dicom", stored, positions, orientation=orientation,
                 pixel_spacing=(3.0, 2.5), modality="MR", seed=3)
    out = tmp_path / "dicom.png"
    report, _ = run_preview(cli, tmp_path / "dicom", "-o", out, "--ortho", "--wl", MARKER_WL)
    check_markers(read_png(out), report)
    out_neuro = tmp_path / "neuro.png"
    report, _ = run_preview(cli, tmp_path / "dicom", "-o", out_neuro, "--ortho", "--wl",
                            MARKER_WL, "--neurological")
    check_markers(read_png(out_neuro), report, neurological=True)
    assert report["convention"] == "neurological"


def test_orientation_letters_are_drawn_at_the_edges(tmp_path):
    out = tmp_path / "axial.png"
    report = draw_to_png(marker_volume(), out, wl=MARKER_WL)
    png = read_png(out)
    x, y, w, h = report["tiles"][0]["box"]
    letter = np.all(png == LETTER_COLOR, axis=-1)
    for text, (lx, ly) in {"R": (x - 8, y + (h - 11) // 2), "L": (x + w + 2, y + (h - 11) // 2),
                           "A": (x + (w - 6) // 2, y - 11), "P": (x + (w - 6) // 2, y + h + 2)
                           }.items():
        assert text_mask(text).sum() >= 8, "a letter paints pixels in exactly its colour"
        np.testing.assert_array_equal(letter[ly:ly + 11, lx:lx + 6], text_mask(text), text)


# --- aspect ratio --------------------------------------------------------------------------

def test_anisotropic_voxels_keep_the_physical_aspect_ratio(tmp_path, cli):
    """0.5 x 0.5 x 5 mm voxels: 40 x 30 x 100 mm; coronal 40 wide x 100 high, sagittal 30 x 100."""
    data = np.full((80, 60, 20), 1000, dtype=np.int16)
    path = save(canonical_volume(data, (0.5, 0.5, 5.0)), tmp_path / "aniso.nii.gz")
    out = tmp_path / "aniso.png"
    report, _ = run_preview(cli, path, "-o", out, "--ortho", "--wl", "500,1000")
    png = read_png(out)
    extent = {"axial": (40, 30), "coronal": (40, 100), "sagittal": (30, 100)}
    for tile in report["tiles"]:
        bright = np.all(crop(png, tile["box"]) == 255, axis=-1)
        rows, cols = np.nonzero(bright)
        height, width = np.ptp(rows) + 1, np.ptp(cols) + 1
        assert (width, height) == tuple(tile["box"][2:])  # the slice fills its tile
        expected = extent[tile["plane"]][1] / extent[tile["plane"]][0]
        assert abs(height / width - expected) <= 0.02 * expected, tile["plane"]
        # one pixel size (mm) for all three planes
        assert tile["pixel_mm"] == pytest.approx(report["tiles"][0]["pixel_mm"])


# --- windows -------------------------------------------------------------------------------

@pytest.mark.parametrize("name", sorted(WINDOW_PRESETS))
def test_window_presets_map_their_bounds_to_0_and_255(name):
    center, width = WINDOW_PRESETS[name]
    window = preset_window(name)
    values = np.array([center - width / 2, center + width / 2, center - width, center + width,
                       center])
    assert apply_window(values, window).tolist() == [0, 255, 0, 255, 128]


def test_documented_preset_values():
    assert WINDOW_PRESETS == {"lung": (-600, 1500), "mediastinum": (50, 350),
                              "bone": (400, 2000), "brain": (40, 80),
                              "soft-tissue": (40, 400)}


def test_lung_window_in_the_png(tmp_path, cli):
    """Blocks at -1350, 150 and -600 HU (stored with an intercept) -> 0, 255, 128."""
    data = np.zeros((60, 20, 3), dtype=np.int16)
    for block, hu in enumerate((-1350, 150, -600)):
        data[block * 20:(block + 1) * 20] = hu + 1024
    volume = canonical_volume(data, (1, 1, 1))
    volume.intercept = -1024.0
    path = save(volume, tmp_path / "blocks.nii.gz")
    out = tmp_path / "lung.png"
    report, _ = run_preview(cli, path, "-o", out, "--window", "lung")
    assert report["window"]["low"] == -1350 and report["window"]["high"] == 150
    image = crop(read_png(out), report["tiles"][0]["box"])[..., 0]
    w = image.shape[1]
    # radiological: patient right (high x, the last block) on the image left
    assert [image[image.shape[0] // 2, int(w * f)] for f in (5 / 6, 1 / 2, 1 / 6)] == [0, 255, 128]


def test_default_window_choices():
    ct = np.full((20, 20, 20), -1000.0)
    ct[5:15, 5:15, 5:15] = 40
    assert choose_window(ct, {"WindowCenter": [40, -600], "WindowWidth": [400, 1500]}).source \
        == "dicom"
    assert choose_window(ct, {"Modality": "CT", "BodyPartExamined": "HEAD"}).name == "brain"
    assert choose_window(ct, {"Modality": "CT", "BodyPartExamined": "CHEST"}).name == "lung"
    by_values = choose_window(ct, {})
    assert (by_values.source, by_values.name) == ("ct-default", "soft-tissue")
    assert "look like Hounsfield" in by_values.reason
    mr = np.arange(1000, dtype=float).reshape(10, 10, 10)
    window = choose_window(mr, {"Modality": "MR"})
    assert window.source == "percentile"
    assert (window.low, window.high) == pytest.approx(tuple(np.percentile(mr, [1, 99])))


def test_sidecar_window_is_used_for_a_nifti(tmp_path, cli):
    """dicom2nii's output: the JSON sidecar's DICOM window chooses the default."""
    out = tmp_path / "out"
    cli("dicom2nii", CHEST, out, check_code=0)
    nifti = next(out.glob("*.nii.gz"))
    report, _ = run_preview(cli, nifti, "-o", tmp_path / "c.png")
    assert (report["window"]["source"], report["window"]["center"],
            report["window"]["width"]) == ("dicom", -600, 1500)


# --- mosaic --------------------------------------------------------------------------------

def test_mosaic_grid_step_and_titles(tmp_path, cli):
    """--mosaic 5x5 --step 10 on 250 slices: slices 0, 10, ... 240, each tile shows its slice
    (values = slice index) and carries its title (drawn in the built-in font)."""
    k = np.arange(250, dtype=np.int16)
    data = np.broadcast_to(k, (16, 16, 250)).copy()
    path = save(canonical_volume(data, (1, 1, 1), origin=(0, 0, -100)), tmp_path / "k.nii.gz")
    out = tmp_path / "mosaic.png"
    report, _ = run_preview(cli, path, "-o", out, "--mosaic", "5x5", "--step", "10",
                            "--wl", "127.5,255", "--size", "64")
    png = read_png(out)
    tiles = report["tiles"]
    assert report["grid"] == [5, 5]
    assert [t["slice"] for t in tiles] == list(range(0, 250, 10))
    assert len({t["box"][0] for t in tiles}) == 5 and len({t["box"][1] for t in tiles}) == 5
    text = np.all(png == TEXT_COLOR, axis=-1)
    for tile in tiles:
        position = tile["slice"] - 100  # z of slice k (RAS mm)
        assert tile["position_mm"] == position
        # 64-pixel tiles: the short form of "k=10  I 90.0 mm"
        assert tile["title"] == f"k={tile['slice']} {'I' if position < 0 else 'S'} " \
                                f"{abs(position):.1f}"
        tx, ty = tile["title_xy"]
        mask = text_mask(tile["title"])
        assert mask.sum() > 5 * len(tile["title"].replace(" ", ""))
        np.testing.assert_array_equal(text[ty:ty + mask.shape[0], tx:tx + mask.shape[1]], mask)
        image = crop(png, tile["box"])[..., 0]
        assert np.all(image == tile["slice"])  # grey = value with this window


def test_evenly_spaced_mosaic(tmp_path):
    data = np.zeros((8, 8, 100), dtype=np.int16)
    report = draw_to_png(canonical_volume(data, (1, 1, 1)), tmp_path / "m.png", view="mosaic",
                         grid=(2, 5))
    assert [t["slice"] for t in report["tiles"]] == [5, 15, 25, 35, 45, 55, 65, 75, 85, 95]


# --- overlays ------------------------------------------------------------------------------

def test_overlay_lands_on_the_right_voxels_in_world_space(tmp_path, cli):
    """Image: 1 mm, stored LPS. Mask: 2 mm voxels, another origin, stored PIR, a box of
    label 1 at x 10..30, y -20..0, z 0..20 mm (RAS) and label 2 at x -30..-10."""
    image = relayout(canonical_volume(np.zeros((80, 80, 40), np.int16), (1, 1, 1),
                                      origin=(-40, -40, -10)), "LPS")
    mask_data = np.zeros((40, 40, 30), np.uint8)
    origin = np.array([-39.0, -39.0, -19.0])  # voxel centres at origin + 2 * index
    centres = [origin[a] + 2 * np.arange(mask_data.shape[a]) for a in range(3)]
    inside = [(centres[0] > 10) & (centres[0] < 30), (centres[1] > -20) & (centres[1] < 0),
              (centres[2] > 0) & (centres[2] < 20)]
    mask_data[np.ix_(*inside)] = 1
    inside[0] = (centres[0] > -30) & (centres[0] < -10)
    mask_data[np.ix_(*inside)] = 2
    mask = relayout(canonical_volume(mask_data, (2, 2, 2), origin=origin), "PIR")
    image_path = save(image, tmp_path / "image.nii.gz")
    mask_path = save(mask, tmp_path / "mask.nrrd")
    out = tmp_path / "overlay.png"
    report, _ = run_preview(cli, image_path, "-o", out, "--overlay", mask_path, "--at",
                            "0,0,10", "--wl", "0,100", "--alpha", "0.5")
    tile = report["tiles"][0]
    world = pixel_world(tile)
    rgb = crop(read_png(out), tile["box"])
    x, y = world[..., 0], world[..., 1]
    assert tile["position_mm"] == pytest.approx(10, abs=0.5)
    margin = 1.5  # mm: mask voxels are 2 mm
    in_y = (y > -20 + margin) & (y < 0 - margin)
    one = (x > 10 + margin) & (x < 30 - margin) & in_y
    two = (x > -30 + margin) & (x < -10 - margin) & in_y
    near = ((x > 10 - margin) & (x < 30 + margin) | (x > -30 - margin) & (x < -10 + margin)) \
        & (y > -20 - margin) & (y < margin)
    assert one.sum() > 50 and two.sum() > 50
    colours = {tuple(label["color"]) for label in report["overlays"][0]["labels"]}
    grey = rgb[~near][0]
    for region, label in ((one, 1), (two, 2)):
        color = np.array(report["overlays"][0]["labels"][label - 1]["color"])
        expected = np.rint(0.5 * grey + 0.5 * color)
        assert np.all(np.abs(rgb[region] - expected) <= 1), label
    assert not tinted(rgb[~near]).any()
    assert len(colours) == 2
    # label 1 is on the patient's right (x > 0): the image's left half (radiological)
    assert centroid(tinted(rgb) & one)[1] < 0.5


def test_overlay_contour(tmp_path):
    data = np.zeros((40, 40, 10), np.int16)
    mask = np.zeros((40, 40, 10), np.uint8)
    mask[10:30, 10:30, :] = 3
    volume = canonical_volume(data, (1, 1, 1))
    overlay = label_overlay(canonical_volume(mask, (1, 1, 1)), "m", contour=True)
    drawing = draw_preview(plan_preview(volume, PreviewOptions(wl="0,100", size=40), "c",
                                        [overlay]))
    path = tmp_path / "contour.png"
    path.write_bytes(png_bytes(drawing))
    rgb = crop(read_png(path), drawing.tiles[0].box)
    ring = tinted(rgb)
    assert ring[10, 10:30].all() and ring[29, 10:30].all() and not ring[11:29, 11:29].any()
    assert not ring[:10].any() and not ring[30:].any()


@pytest.fixture(scope="module")
def chest_masks():
    from convkit.testing.phantoms import chest_ct_masks

    return chest_ct_masks()  # (k, rows, cols), on the grid of sample_data's chest CT


def test_ggo_highlight_tints_ground_glass_not_vessels_or_air(tmp_path, cli, chest_masks):
    """Slices 28..55 of the sample chest CT at its own resolution (nearest, 128 px): the
    tinted pixels are exactly the phantom's ground-glass voxels."""
    out = tmp_path / "ggo.png"
    report, done = run_preview(cli, CHEST, "-o", out, "--highlight", "ggo", "--mosaic", "4x7",
                               "--step", "1", "--slice", "28", "--size", "128",
                               "--interpolation", "nearest")
    png = read_png(out)
    volume = load_for_preview(find_sources(CHEST)[0])
    inverse = np.linalg.inv(volume.affine)
    ggo, vessels = chest_masks["ggo"], chest_masks["vessels"]
    air = ~chest_masks["body"]
    seen_ggo = 0
    for tile in report["tiles"]:
        voxel = np.rint(pixel_world(tile) @ inverse[:3, :3].T + inverse[:3, 3]).astype(int)
        i, j, k = voxel[..., 0], voxel[..., 1], voxel[..., 2]
        assert np.all(k == tile["slice"])
        shown = tinted(crop(png, tile["box"]))
        expected = ggo[k, j, i]
        np.testing.assert_array_equal(shown, expected, f"slice {tile['slice']}")
        assert not (shown & (vessels[k, j, i] | air[k, j, i])).any()
        seen_ggo += int(expected.sum())
    assert seen_ggo > 300
    highlight = report["overlays"][0]
    assert highlight["range_hu"] == [-750, -300]
    assert highlight["ggo_voxels"] == int(ggo.sum())
    phantom_fraction = ggo.sum() / chest_masks["lungs"].sum()
    assert highlight["fraction_of_lung"] == pytest.approx(phantom_fraction, rel=0.05)
    assert any("% of lung" in text for text in highlight["legend"])


# --- terminal ------------------------------------------------------------------------------

_SGR = re.compile(r"\x1b\[([0-9;]*)m")


def parse_ansi(text: str) -> list[list[tuple[str, tuple, tuple]]]:
    """Lines of cells (char, fg, bg) from true-colour SGR output."""
    lines, cells = [], []
    fg = bg = None
    position = 0
    for match in list(_SGR.finditer(text)) + [None]:
        end = match.start() if match else len(text)
        for char in text[position:end]:
            if char == "\n":
                lines.append(cells)
                cells = []
            else:
                cells.append((char, fg, bg))
        if match is None:
            break
        position = match.end()
        codes = [int(c) for c in match.group(1).split(";") if c] or [0]
        index = 0
        while index < len(codes):
            if codes[index] == 0:
                fg = bg = None
            elif codes[index] in (38, 48) and codes[index + 1] == 2:
                color = tuple(codes[index + 2:index + 5])
                fg, bg = (color, bg) if codes[index] == 38 else (fg, color)
                index += 4
            index += 1
    if cells:
        lines.append(cells)
    return lines


def test_terminal_view_size_and_colours(tmp_path, cli):
    """8 x 4 voxels of distinct values, window 0..255 (grey = value): each cell's upper half
    (foreground) and lower half (background) are two pixels of the radiological view."""
    x, y = np.meshgrid(np.arange(8), np.arange(4), indexing="ij")
    values = (10 + 20 * x + 50 * y).astype(np.int16)  # 10 .. 300 -> clip at 255
    path = save(canonical_volume(values[:, :, None], (1, 1, 1)), tmp_path / "tiny.nii.gz")
    done = cli("preview", path, "--terminal", "--size", "8", "--wl", "127.5,255", check_code=0)
    lines = parse_ansi(done.stdout)
    rows = ["".join(c for c, _, _ in line) for line in lines]
    top = next(n for n, row in enumerate(rows) if row.strip() == "A")
    image_lines = lines[top + 1:top + 3]
    assert (rows[top + 1][0], rows[top + 1][9], rows[top + 2][0]) == ("R", "L", " ")
    assert rows[top + 3].strip() == "P"
    expected = np.clip(values, 0, 255)
    for line_number, line in enumerate(image_lines):
        for column in range(8):
            char, fg, bg = line[1 + column]
            if char == " ":  # both halves of the cell have the background colour
                fg = bg
            else:
                assert char == "▀"
            # display row r, column c shows voxel x = 7 - c (R on the left), y = 3 - r (A on top)
            top_value = expected[7 - column, 3 - 2 * line_number]
            bottom_value = expected[7 - column, 3 - (2 * line_number + 1)]
            assert fg == (top_value,) * 3 and bg == (bottom_value,) * 3
    # header, title, top letter, 2 image lines, bottom letter; then the summary line
    assert top == 2 and rows[0].startswith("tiny  W 255 L 127.5")
    assert rows[top + 4].startswith(f"{len(lines[0])}x12, axial k=0")
    assert len({len(line) for line in lines[:top + 4]}) == 1  # a rectangle of cells


# --- CLI: views, errors, batch, output safety --------------------------------------------

def test_default_is_the_middle_axial_slice_and_json_lists_the_file(tmp_path, cli):
    out = tmp_path / "c.png"
    report, done = run_preview(cli, CHEST, "-o", out)
    tile = report["tiles"][0]
    assert (report["view"], tile["plane"], tile["axis"], tile["slice"]) == ("slice", "axial",
                                                                            "k", 35)
    assert tile["position_mm"] == pytest.approx(2.5)
    assert report["files_written"] == [str(out)] and out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert report["window"]["source"] == "dicom"


def test_4d_volume_index(tmp_path, cli):
    data = np.stack([np.full((6, 6, 4), t * 50, np.int16) for t in range(3)], axis=-1)
    path = save(canonical_volume(data, (1, 1, 1)), tmp_path / "t.nii.gz")
    report, _ = run_preview(cli, path, "-o", tmp_path / "t.png", "--volume", "2", "--wl",
                            "127.5,255", "--size", "12")
    assert report["volume_index"] == 2
    assert np.all(crop(read_png(tmp_path / "t.png"), report["tiles"][0]["box"]) == 100)
    done = cli("preview", path, "-o", tmp_path / "u.png", "--volume", "3", check_code=2)
    assert "0..2" in done.stderr


def test_usage_and_output_errors(tmp_path, cli):
    path = save(marker_volume(), tmp_path / "m.nii.gz")
    out = tmp_path / "m.png"
    cli("preview", path, "-o", out, check_code=0)
    done = cli("preview", path, "-o", out, check_code=5)
    assert "--force" in done.stderr
    cli("preview", path, "-o", out, "--force", check_code=0)
    for args, message in ((("--slice", "99"), "outside 0..35"),
                          (("--at", "0,0,999"), "outside the volume"),
                          (("--mosaic", "5by5"), "ROWSxCOLS"),
                          (("--window", "liver"), "unknown window preset"),
                          (("--ortho", "--mosaic", "2x2"), "choose one view"),
                          (("--terminal", "--json"), "both write to stdout")):
        done = cli("preview", path, "-o", tmp_path / "x.png", *args, check_code=2)
        assert message in done.stderr and "Traceback" not in done.stderr
    assert not (tmp_path / "x.png").exists()
    done = cli("preview", tmp_path / "missing.nii.gz", "-o", tmp_path / "y.png", check_code=3)
    assert "does not exist" in done.stderr


def test_folder_batch_writes_one_png_per_volume(tmp_path, cli):
    inputs = tmp_path / "in"
    inputs.mkdir()
    save(marker_volume(), inputs / "a.nii.gz")
    save(relayout(marker_volume(), "PIR"), inputs / "b.nrrd")
    (inputs / "broken.nii.gz").write_bytes(b"\x1f\x8b" + bytes(100))
    done = cli("preview", inputs, "-o", tmp_path / "out", "--ortho", "--json", check_code=6)
    report = json.loads(done.stdout)
    status = {item["name"]: item["status"] for item in report["items"]}
    assert status == {"a": "written", "b": "written", "broken": "failed"}
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["a.png", "b.png"]
    # the same image twice: the same pixels whatever the layout on disk
    reports = {item["name"]: item["report"] for item in report["items"] if item["report"]}
    for tile_a, tile_b in zip(reports["a"]["tiles"], reports["b"]["tiles"], strict=True):
        np.testing.assert_array_equal(crop(read_png(tmp_path / "out" / "a.png"), tile_a["box"]),
                                      crop(read_png(tmp_path / "out" / "b.png"), tile_b["box"]))
    cli("preview", inputs, "-o", tmp_path / "out", check_code=5)
    cli("preview", inputs, "-o", inputs / "inside", check_code=2)
    done = cli("preview", inputs, "-o", tmp_path / "one.png", check_code=2)
    assert "holds 3 series/volumes" in done.stderr


@pytest.mark.parametrize("intercept", [0.0, 3.4e38])
def test_flat_image_gets_a_usable_window(intercept):
    """A flat image (every value equal, even at float32's limit, where low + 0.5 == low) gets
    a window of positive width centred on its value (was ZeroDivisionError, exit 70)."""
    from convkit.preview.window import choose_window

    flat = np.zeros((4, 4, 2), np.int16)
    window = choose_window(flat, {}, 1.0, intercept)
    assert window.width > 0 and window.center == pytest.approx(np.float32(intercept), rel=1e-6)
    grey = apply_window(flat.astype(np.float32) + np.float32(intercept), window)
    assert grey.dtype == np.uint8 and np.all(grey == grey.flat[0])
