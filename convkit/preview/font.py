"""Text in PNG pictures: Pillow's built-in scalable font, anti-aliased, in character cells.

Layout stays in cells of CELL_WIDTH x CELL_HEIGHT pixels per character (times a scale), as
the canvas computes it; a text is drawn proportionally from the left of its cells, with its
baseline BASELINE pixels (times the scale) below their top, and never outside them: a text
that would be wider is drawn at a smaller size. The font (Aileron, shipped inside Pillow
10.1 and newer: nothing to install, the same on every machine) is drawn with FreeType's
anti-aliasing, with coverage above FULL_INK painted in exactly the text's colour.
"""

from __future__ import annotations

from functools import lru_cache

import numpy as np

#: Pixels per character at scale 1 (the layout's unit; the old bitmap font's cell).
CELL_WIDTH = 6
CELL_HEIGHT = 11
#: Font size (pixels per em) and baseline (pixels below the cell's top) at scale 1.
FONT_SIZE = 10
BASELINE = 8
#: Smallest size a too-wide text is shrunk to (at scale 1) before it is clipped.
MIN_FONT_SIZE = 7
#: Coverage (of 255) from which a pixel is painted in the full colour: FreeType's coverage of
#: a 1-pixel stem at 10 px peaks near 246, never 255; this keeps small text crisp.
FULL_INK = 160


@lru_cache(maxsize=16)
def _font(size: int):
    from PIL import ImageFont

    return ImageFont.load_default(size=size)


@lru_cache(maxsize=4096)
def _glyph(char: str, size: int, height: int, baseline: int) -> tuple[np.ndarray, float]:
    """One character's coverage (height rows, from its origin) and its advance in pixels.
    Drawing glyph by glyph from a cache is ~30x faster than Pillow laying out each text
    (titles change with every tile); kerning is lost, which small labels do not show."""
    from PIL import Image, ImageDraw

    font = _font(size)
    advance = font.getlength(char)
    image = Image.new("L", (int(advance) + size, height), 0)
    ImageDraw.Draw(image).text((0, baseline), char, fill=255, font=font, anchor="ls")
    return np.asarray(image), advance


def text_coverage(text: str, scale: int = 1) -> np.ndarray:
    """Ink coverage (uint8, 255 = fully covered) of one line of text in its cells:
    (CELL_HEIGHT, CELL_WIDTH * len(text)) pixels, times scale, as FreeType draws it."""
    width, height = CELL_WIDTH * len(text) * scale, CELL_HEIGHT * scale
    coverage = np.zeros((height, width), dtype=np.uint8)
    size = FONT_SIZE * scale
    while size > MIN_FONT_SIZE * scale and sum(_glyph(c, size, height, BASELINE * scale)[1]
                                               for c in text) > width:
        size -= 1
    x = 0.0
    for char in text:
        glyph, advance = _glyph(char, size, height, BASELINE * scale)
        left = round(x)
        visible = glyph[:, :max(0, width - left)]
        target = coverage[:, left:left + visible.shape[1]]
        np.maximum(target, visible, out=target)
        x += advance
    return coverage


def text_alpha(text: str, scale: int = 1) -> np.ndarray:
    """Opacity (uint8) with which each pixel of the text's cells is painted."""
    coverage = text_coverage(text, scale).astype(np.uint16)
    return np.minimum(coverage * 255 // FULL_INK, 255).astype(np.uint8)


def text_mask(text: str, scale: int = 1) -> np.ndarray:
    """The pixels a text paints in exactly its colour, as booleans."""
    return text_alpha(text, scale) == 255


def draw_text(rgb: np.ndarray, text: str, x: int, y: int, color: tuple[int, int, int],
              scale: int = 1, shadow: tuple[int, int, int] | None = None) -> None:
    """Draw text into an (H, W, 3) uint8 image with its first cell's top-left corner at
    (x, y), blended by coverage. Ink outside the image is clipped. shadow: a colour drawn
    one pixel (times scale) below and to the right first, for legibility on images."""
    alpha = text_alpha(text, scale)
    if shadow is not None:
        _paint(rgb, alpha, x + scale, y + scale, shadow)
    _paint(rgb, alpha, x, y, color)


def _paint(rgb: np.ndarray, opacity: np.ndarray, x: int, y: int,
           color: tuple[int, int, int]) -> None:
    height, width = rgb.shape[:2]
    top, left = max(y, 0), max(x, 0)
    bottom, right = min(y + opacity.shape[0], height), min(x + opacity.shape[1], width)
    if bottom <= top or right <= left:
        return
    alpha = opacity[top - y:bottom - y, left - x:right - x, None].astype(np.uint16)
    inked = alpha[..., 0] > 0
    region = rgb[top:bottom, left:right]
    blended = (region * (255 - alpha) + np.asarray(color, np.uint16) * alpha + 127) // 255
    region[inked] = blended[inked].astype(np.uint8)
