"""Analytic check of text->image generations for single-object scenes: the dominant colour of
the foreground (nearest palette colour, by pixel majority) and the grid cell of its centroid."""

from __future__ import annotations

import numpy as np

from simmim.data.records import COLOURS, GRID
from simmim.data.synthetic import PALETTE

FOREGROUND = 60  # a pixel whose brightest channel exceeds this is object, not background


def analyse_image(image: np.ndarray) -> tuple[str | None, int | None]:
    """(colour, cell) of an H x W x 3 uint8 image with one object on black; (None, None) if empty."""
    pixels = image.astype(np.float32)
    foreground = pixels.max(axis=-1) > FOREGROUND
    if foreground.sum() < 2:
        return None, None
    palette = np.array([PALETTE[c] for c in COLOURS], dtype=np.float32)
    nearest = ((pixels[foreground][:, None, :] - palette[None]) ** 2).sum(-1).argmin(axis=1)
    colour = COLOURS[int(np.bincount(nearest, minlength=len(COLOURS)).argmax())]
    ys, xs = np.nonzero(foreground)
    side = image.shape[0]
    row = min(GRID - 1, int(ys.mean() * GRID / side))
    col = min(GRID - 1, int(xs.mean() * GRID / side))
    return colour, row * GRID + col
