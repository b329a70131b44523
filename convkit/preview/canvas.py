"""Composing a picture: tiles with titles and orientation letters, a header and a legend.

Layout is computed in pixels for a Typeset: the PNG typeset draws text with the
built-in scalable font in cells of CELL_WIDTH x CELL_HEIGHT pixels per character (times a
scale); the terminal typeset has one character per 1 x 2 pixels (a half-block
cell), and text is printed as characters. Text never covers image pixels: the
letters sit in margins around each image.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from convkit.preview import font

TEXT_COLOR = (230, 230, 230)
LETTER_COLOR = (255, 210, 80)
BACKGROUND = (0, 0, 0)


@dataclass(frozen=True)
class Typeset:
    """Text metrics: pixels per character, font scale (0: text as terminal characters)."""

    char_width: int
    char_height: int
    scale: int
    pad: int  # pixels between an image and its letters
    gap: int  # pixels between tiles

    @property
    def terminal(self) -> bool:
        return self.scale == 0


def png_typeset(scale: int = 1) -> Typeset:
    return Typeset(font.CELL_WIDTH * scale, font.CELL_HEIGHT * scale, scale, 2 * scale,
                   font.CELL_WIDTH * scale)


#: One character per terminal cell; a cell shows two pixels stacked (upper half block).
TERMINAL_TYPESET = Typeset(1, 2, 0, 0, 1)


@dataclass
class TextLabel:
    x: int
    y: int
    text: str
    color: tuple[int, int, int] = TEXT_COLOR


@dataclass
class Block:
    """One tile as laid out: its image (RGB) and texts, placed at (x, y) on the canvas."""

    image: np.ndarray  # (h, w, 3) uint8
    titles: tuple[str, ...]  # the title, then shorter forms: the first that fits is drawn
    letters: tuple[str, str, str, str]  # left, right, top, bottom
    x: int = 0
    y: int = 0
    title: str = ""  # the title drawn (set by compose)

    def size(self, ts: Typeset) -> tuple[int, int]:
        h, w = self.image.shape[:2]
        if ts.terminal:
            h += h % 2
        return w + 2 * (ts.char_width + ts.pad), h + 3 * ts.char_height + ts.pad

    def image_origin(self, ts: Typeset) -> tuple[int, int]:
        return self.x + ts.char_width + ts.pad, self.y + 2 * ts.char_height


@dataclass
class Picture:
    """The composed picture: pixels without text, the texts, and where each tile went."""

    rgb: np.ndarray  # (H, W, 3) uint8
    labels: list[TextLabel]
    typeset: Typeset
    boxes: list[tuple[int, int, int, int]] = field(default_factory=list)  # x, y, w, h per block

    @property
    def size(self) -> tuple[int, int]:
        return self.rgb.shape[1], self.rgb.shape[0]


def compose(blocks: list[Block | None], columns: int, ts: Typeset, header: str,
            legend: list[tuple[str, tuple[int, int, int]]],
            max_width: int | None = None) -> Picture:
    """Lay blocks out row by row (None leaves an empty cell), a header above, a legend below.

    Cells of a row share the row's height; cells of a column share the column's width.
    max_width (terminal columns) truncates texts and the canvas.
    """
    rows = [blocks[i:i + columns] for i in range(0, len(blocks), columns)]
    sizes = [[b.size(ts) if b else (0, 0) for b in row] for row in rows]
    col_widths = [max((r[c][0] for r in sizes if c < len(r)), default=0) for c in range(columns)]
    row_heights = [max((s[1] for s in r), default=0) for r in sizes]
    top = ts.char_height + (ts.pad if not ts.terminal else 0)
    grid_w = sum(col_widths) + ts.gap * (columns - 1)
    grid_h = sum(row_heights) + ts.gap * (len(rows) - 1) * (0 if ts.terminal else 1)
    text_w = max([len(header)] + [len(text) + 3 for text, _ in legend]) * ts.char_width
    width = max(grid_w, text_w)
    if max_width:
        width = min(width, max_width)
    legend_top = top + grid_h + ts.char_height // 2 * (0 if ts.terminal else 1)
    height = legend_top + len(legend) * ts.char_height
    if ts.terminal:
        height += height % 2
    rgb = np.zeros((height, width, 3), dtype=np.uint8)
    labels = [TextLabel(0, 0, _fit(header, width, ts))]
    boxes = []
    y = top
    for row, row_h in zip(rows, row_heights, strict=True):
        x = 0
        for block, col_w in zip(row, col_widths, strict=False):
            if block is not None:
                block.x, block.y = x, y
                _place(rgb, labels, block, ts)
                boxes.append((x, y, *block.size(ts)))
            x += col_w + ts.gap
        y += row_h + (0 if ts.terminal else ts.gap)
    for index, (text, color) in enumerate(legend):
        line_y = legend_top + index * ts.char_height
        swatch = 2 * ts.char_width
        inset = ts.scale
        rgb[line_y + inset:line_y + ts.char_height - 2 * inset, inset:swatch - inset] = color
        labels.append(TextLabel(swatch + ts.char_width, line_y,
                                _fit(text, width - swatch - ts.char_width, ts)))
    return Picture(rgb, labels, ts, boxes)


def _place(rgb: np.ndarray, labels: list[TextLabel], block: Block, ts: Typeset) -> None:
    h, w = block.image.shape[:2]
    ix, iy = block.image_origin(ts)
    canvas_h, canvas_w = rgb.shape[:2]
    visible_w = max(0, min(w, canvas_w - ix))
    rgb[iy:iy + h, ix:ix + visible_w] = block.image[:, :visible_w]
    block_w, _ = block.size(ts)
    fitting = [t for t in block.titles if len(t) * ts.char_width <= block_w]
    block.title = fitting[0] if fitting else _fit(block.titles[-1], block_w, ts)
    labels.append(TextLabel(block.x, block.y, block.title))
    left, right, top, bottom = block.letters
    middle_y = iy + (h - ts.char_height) // 2
    if ts.terminal:
        middle_y -= middle_y % 2
    centre_x = ix + (w - ts.char_width) // 2
    h_even = h + (h % 2 if ts.terminal else 0)
    for text, x, y in ((top, centre_x, block.y + ts.char_height),
                       (bottom, centre_x, iy + h_even + ts.pad),
                       (left, block.x, middle_y),
                       (right, ix + w + ts.pad, middle_y)):
        labels.append(TextLabel(x, y, text, LETTER_COLOR))


def _fit(text: str, width_px: int, ts: Typeset) -> str:
    limit = max(0, width_px // ts.char_width)
    return text if len(text) <= limit else text[:max(0, limit - 1)] + "~"


def rasterise(picture: Picture) -> np.ndarray:
    """The picture's pixels with its texts drawn (Pillow's scalable font; PNG typeset)."""
    rgb = picture.rgb.copy()
    scale = max(picture.typeset.scale, 1)
    for label in picture.labels:
        font.draw_text(rgb, label.text, label.x, label.y, label.color, scale)
    return rgb


Run = tuple[str, tuple[int, int, int], tuple[int, int, int]]  # text, foreground, background


def terminal_runs(picture: Picture) -> list[list[Run]]:
    """Lines of (text, fg, bg) runs: upper half blocks '▀' for pixel pairs, texts as characters.

    Each character cell shows pixel (2r, c) in its foreground and (2r + 1, c) in its
    background (a space when both are the same colour); adjacent cells with the same
    colours are merged into one run.
    """
    rgb = picture.rgb
    if rgb.shape[0] % 2:
        rgb = np.concatenate([rgb, np.zeros((1, *rgb.shape[1:]), np.uint8)])
    n_lines, n_cols = rgb.shape[0] // 2, rgb.shape[1]
    fg = rgb[0::2].copy()
    bg = rgb[1::2].copy()
    chars = np.where(np.all(fg == bg, axis=-1), " ", "▀").astype("<U1")
    for label in picture.labels:
        line = label.y // 2
        if not 0 <= line < n_lines:
            continue
        for offset, char in enumerate(label.text):
            col = label.x + offset
            if 0 <= col < n_cols:
                chars[line, col] = char
                fg[line, col] = label.color
                bg[line, col] = BACKGROUND
    lines = []
    for line in range(n_lines):
        runs: list[Run] = []
        fg_line, bg_line, char_line = fg[line].tolist(), bg[line].tolist(), chars[line]
        for col in range(n_cols):
            f, b = tuple(fg_line[col]), tuple(bg_line[col])
            if runs and runs[-1][1] == f and runs[-1][2] == b:
                runs[-1] = (runs[-1][0] + char_line[col], f, b)
            else:
                runs.append((str(char_line[col]), f, b))
        lines.append(runs)
    return lines
