"""Analytic check of text->image generations for single-object scenes: the colour of the
foreground (nearest palette colour by direction in RGB space, so a dim or blurred object still
counts by its hue) and the grid cell of its brightness-weighted centroid."""

from __future__ import annotations

import numpy as np

from simmim.data.records import COLOURS, GRID
from simmim.data.synthetic import PALETTE

MIN_PEAK = 8  # an image whose brightest channel stays below this (3% of full scale) is empty


def analyse_image(image: np.ndarray) -> tuple[str | None, int | None]:
    """(colour, cell) of an H x W x 3 uint8 image with one object on black; (None, None) if empty.

    Foreground: pixels at least half as bright as the brightest one.
    """
    pixels = image.astype(np.float32)
    brightness = pixels.max(axis=-1)
    peak = brightness.max()
    if peak < MIN_PEAK:
        return None, None
    foreground = brightness >= 0.5 * peak
    mean = pixels[foreground].mean(axis=0)
    palette = np.array([PALETTE[c] for c in COLOURS], dtype=np.float32)
    cosine = palette @ mean / (np.linalg.norm(palette, axis=1) * np.linalg.norm(mean) + 1e-9)
    colour = COLOURS[int(cosine.argmax())]
    ys, xs = np.nonzero(foreground)
    weights = brightness[foreground]
    side = image.shape[0]
    row = min(GRID - 1, int(np.average(ys, weights=weights) * GRID / side))
    col = min(GRID - 1, int(np.average(xs, weights=weights) * GRID / side))
    return colour, row * GRID + col
