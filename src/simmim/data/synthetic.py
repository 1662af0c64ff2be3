"""Procedural scenes: coloured shapes on a 3x3 grid, as still images or short clips, with exact captions.

Rendering uses integer pixel masks only (no anti-aliasing), so a seed always gives the same bytes
and every pixel of an object has exactly its palette colour, which evaluation relies on.
"""

from __future__ import annotations

import functools

import numpy as np

from simmim.data.grammar import canonical_caption, paraphrases
from simmim.data.records import COLOURS, GRID, MOTIONS, SHAPES, SIZES, Record, Scene, SceneObject
from simmim.data.subjects import assign_subjects
from simmim.errors import DataError

PALETTE: dict[str, tuple[int, int, int]] = {
    "red": (220, 40, 40),
    "green": (40, 200, 60),
    "blue": (50, 80, 230),
    "yellow": (230, 220, 50),
    "purple": (160, 60, 200),
    "white": (240, 240, 240),
}
# (colour, shape) pairs kept out of train/val/test, to measure compositional generalisation.
HELD_OUT = frozenset({("red", "triangle"), ("blue", "circle"), ("yellow", "diamond")})
SPLITS = ("train", "val", "test", "test_unseen")
KINDS = ("image", "video")
PARAPHRASES_PER_RECORD = 4
MIN_IMAGE_SIZE = 16

# Object side as a fraction of a cell's side.
_SIDE_FRACTION = {"small": 0.45, "large": 0.85}
# Mix of object counts in still images, and how often a multi-object scene repeats one object.
_OBJECT_COUNT_P = (0.40, 0.35, 0.25)
_IDENTICAL_P = 0.2
_STEP_AT_32 = 3  # pixels per frame of a moving object at 32 px
_DIRECTIONS = {"left": (0, -1), "right": (0, 1), "up": (-1, 0), "down": (1, 0)}
_ALL_COMBOS = tuple((colour, shape) for colour in COLOURS for shape in SHAPES)
_SEEN_COMBOS = tuple(combo for combo in _ALL_COMBOS if combo not in HELD_OUT)
_HELD_OUT_COMBOS = tuple(sorted(HELD_OUT))


@functools.cache
def _bounds(image_size: int) -> tuple[int, ...]:
    return tuple(round(k * image_size / GRID) for k in range(GRID + 1))


def cell_bounds(cell: int, image_size: int) -> tuple[int, int, int, int]:
    """Pixel bounds (top, bottom, left, right) of a grid cell; bottom and right are exclusive."""
    if not 0 <= cell < GRID * GRID:
        raise DataError(f"cell {cell} is outside the {GRID}x{GRID} grid")
    bounds = _bounds(image_size)
    row, col = divmod(cell, GRID)
    return bounds[row], bounds[row + 1], bounds[col], bounds[col + 1]


def cell_of_pixel(y: int, x: int, image_size: int) -> int:
    """The grid cell (0..8, row-major) that contains pixel (y, x)."""
    if not (0 <= y < image_size and 0 <= x < image_size):
        raise DataError(f"pixel ({y}, {x}) is outside a {image_size}x{image_size} image")
    bounds = _bounds(image_size)
    row = next(k for k in range(GRID) if y < bounds[k + 1])
    col = next(k for k in range(GRID) if x < bounds[k + 1])
    return row * GRID + col


def object_side(size: str, image_size: int) -> int:
    """Side in pixels of the square an object of this size is drawn in; it fits the smallest cell."""
    bounds = _bounds(image_size)
    smallest_cell = min(stop - start for start, stop in zip(bounds[:-1], bounds[1:], strict=True))
    return min(int(_SIDE_FRACTION[size] * image_size / GRID + 0.5), smallest_cell)


@functools.cache
def shape_mask(shape: str, side: int) -> np.ndarray:
    """Boolean side x side mask of a shape, tested at pixel centres; the result is read-only."""
    centres = (np.arange(side) + 0.5) / side * 2 - 1  # pixel centres in (-1, 1)
    v, u = np.meshgrid(centres, centres, indexing="ij")  # v grows downwards, u to the right
    if shape == "square":
        mask = np.ones((side, side), dtype=bool)
    elif shape == "circle":
        mask = u**2 + v**2 <= 1
    elif shape == "diamond":
        mask = np.abs(u) + np.abs(v) <= 1
    elif shape == "triangle":
        mask = np.abs(u) <= (v + 1) / 2  # apex at the top centre, base along the bottom row
    else:
        raise DataError(f"unknown shape {shape!r}; shapes are {SHAPES}")
    mask.setflags(write=False)
    return mask


def _place(obj: SceneObject, image_size: int, rng: np.random.Generator | None) -> tuple[int, int, int]:
    """Top, left and side of an object: centred in its cell, shifted by up to ~10% of the cell by rng."""
    side = object_side(obj.size, image_size)
    top, bottom, left, right = cell_bounds(obj.cell, image_size)
    corner = []
    for start, stop in ((top, bottom), (left, right)):
        free = stop - start - side
        offset = free // 2
        if rng is not None:
            jitter = max(1, round(0.1 * (stop - start)))
            offset = min(max(offset + int(rng.integers(-jitter, jitter + 1)), 0), free)
        corner.append(start + offset)
    return corner[0], corner[1], side


def _draw(canvas: np.ndarray, obj: SceneObject, top: int, left: int, side: int) -> None:
    if obj.colour not in PALETTE:
        raise DataError(f"unknown colour {obj.colour!r}; colours are {COLOURS}")
    canvas[top : top + side, left : left + side][shape_mask(obj.shape, side)] = PALETTE[obj.colour]


def render_scene(scene: Scene, image_size: int = 32, *, rng: np.random.Generator | None = None) -> np.ndarray:
    """Draws a still scene on black.

    Args:
        scene: Objects in distinct cells.
        image_size: Side of the image in pixels; shapes are distinguishable from 32 px.
        rng: Jitters each object's position inside its cell; None centres them.

    Returns:
        An image_size x image_size x 3 uint8 array.
    """
    image = np.zeros((image_size, image_size, 3), dtype=np.uint8)
    for obj in scene.objects:
        _draw(image, obj, *_place(obj, image_size, rng))
    return image


def render_clip(
    scene: Scene, image_size: int = 32, frames: int = 4, *, rng: np.random.Generator | None = None
) -> np.ndarray:
    """Draws the single object of a clip moving in ``scene.motion``'s direction, ~3 px a frame at 32 px.

    The object starts in its cell (jittered by rng), moved back along the motion if needed so
    that it stays inside the image in every frame.

    Returns:
        A frames x image_size x image_size x 3 uint8 array.

    Raises:
        DataError: If the scene is not one object with a motion, or the image is too small for the
            object to move one pixel a frame.
    """
    if len(scene.objects) != 1 or scene.motion not in _DIRECTIONS:
        raise DataError(f"scene {scene}: a clip needs one object and a motion in {MOTIONS}")
    obj = scene.objects[0]
    top, left, side = _place(obj, image_size, rng)
    room = image_size - side  # largest top/left coordinate
    step = max(1, round(_STEP_AT_32 * image_size / 32))
    if frames > 1:
        step = min(step, room // (frames - 1))
    if step < 1:
        raise DataError(f"{frames} frames of a {obj.size} object do not fit in {image_size} px")
    travel = step * (frames - 1)
    dy, dx = _DIRECTIONS[scene.motion]
    # Pull the start back so that the end position is still inside the image.
    top = min(top, room - travel) if dy > 0 else max(top, travel) if dy < 0 else top
    left = min(left, room - travel) if dx > 0 else max(left, travel) if dx < 0 else left
    clip = np.zeros((frames, image_size, image_size, 3), dtype=np.uint8)
    for t in range(frames):
        _draw(clip[t], obj, top + dy * step * t, left + dx * step * t, side)
    return clip


def _random_object(rng: np.random.Generator, combos: tuple[tuple[str, str], ...], cell: int) -> SceneObject:
    colour, shape = combos[int(rng.integers(len(combos)))]
    return SceneObject(shape=shape, colour=colour, size=SIZES[int(rng.integers(len(SIZES)))], cell=cell)


def _random_scene(rng: np.random.Generator, split: str, kind: str, max_objects: int = 3) -> Scene:
    """A scene of the split: held-out combos never in train/val/test, at least one in test_unseen."""
    unseen = split == "test_unseen"
    first_combos = _HELD_OUT_COMBOS if unseen else _SEEN_COMBOS
    other_combos = _ALL_COMBOS if unseen else _SEEN_COMBOS
    if kind == "video":
        obj = _random_object(rng, first_combos, int(rng.integers(GRID * GRID)))
        return Scene(objects=(obj,), motion=MOTIONS[int(rng.integers(len(MOTIONS)))])
    draw = rng.random()
    n_objects = 1 if draw < _OBJECT_COUNT_P[0] else 2 if draw < _OBJECT_COUNT_P[0] + _OBJECT_COUNT_P[1] else 3
    n_objects = min(n_objects, max_objects)
    cells = rng.choice(GRID * GRID, size=n_objects, replace=False)
    first = _random_object(rng, first_combos, int(cells[0]))
    if n_objects > 1 and rng.random() < _IDENTICAL_P:
        others = [SceneObject(first.shape, first.colour, first.size, int(cell)) for cell in cells[1:]]
    else:
        others = [_random_object(rng, other_combos, int(cell)) for cell in cells[1:]]
    return Scene(objects=(first, *others))


def _check_arguments(n: int, seed: int, split: str, kind: str, image_size: int, frames: int,
                     max_objects: int) -> None:
    if not isinstance(n, int) or n < 0:
        raise DataError(f"generate: n must be a non-negative integer, got {n!r}")
    if not isinstance(seed, int) or seed < 0:
        raise DataError(f"generate: seed must be a non-negative integer, got {seed!r}")
    if split not in SPLITS:
        raise DataError(f"generate: split {split!r} is not one of {SPLITS}")
    if kind not in KINDS:
        raise DataError(f"generate: kind {kind!r} is not one of {KINDS}")
    if not isinstance(image_size, int) or image_size < MIN_IMAGE_SIZE:
        raise DataError(f"generate: image_size must be an integer >= {MIN_IMAGE_SIZE}, got {image_size!r}")
    if kind == "video" and (not isinstance(frames, int) or frames < 2):
        raise DataError(f"generate: a clip needs frames >= 2, got {frames!r}")
    if max_objects not in (1, 2, 3):
        raise DataError(f"generate: max_objects must be 1, 2 or 3, got {max_objects!r}")


def generate(
    n: int,
    *,
    seed: int,
    split: str = "train",
    image_size: int = 32,
    kind: str = "image",
    frames: int = 4,
    max_objects: int = 3,
) -> list[Record]:
    """Generates ``n`` captioned records of one split, byte-identical for equal arguments.

    Each (seed, split, kind) has its own random stream, so a split never depends on the size of
    another. Still images hold 1 object (40%), 2 (35%) or 3 (25%); a fifth of multi-object scenes
    repeat one object. Clips hold one moving object. Each record owns its canonical caption and four
    paraphrases, and belongs to a simulated subject ``subject-{split}-{k:05d}`` with 2 to 12 records;
    subjects never cross splits (the same id in the image and video data of a split is one person).

    Args:
        n: Number of records.
        seed: Base seed.
        split: "train", "val", "test", or "test_unseen" (every scene holds a held-out colour/shape pair).
        image_size: Side of images and frames in pixels.
        kind: "image" or "video".
        frames: Frames per clip (videos only).
        max_objects: Scenes that would hold more objects hold this many (1: single-object scenes only).

    Returns:
        Records with ids ``f"{split}-{kind}-{i:06d}"``, scenes set.

    Raises:
        DataError: If an argument is out of range.
    """
    _check_arguments(n, seed, split, kind, image_size, frames, max_objects)
    rng = np.random.default_rng(np.random.SeedSequence([seed, SPLITS.index(split), KINDS.index(kind)]))
    records = []
    for i in range(n):
        scene = _random_scene(rng, split, kind, max_objects)
        if kind == "video":
            media = {"frames": render_clip(scene, image_size, frames, rng=rng)}
        else:
            media = {"image": render_scene(scene, image_size, rng=rng)}
        captions = (canonical_caption(scene), *paraphrases(scene, PARAPHRASES_PER_RECORD, rng=rng))
        records.append(
            Record(
                record_id=f"{split}-{kind}-{i:06d}",
                subject_id="",
                captions=captions,
                scene=scene,
                source=f"synthetic seed={seed}",
                **media,
            )
        )
    for record, subject in zip(records, assign_subjects(n, rng, f"subject-{split}"), strict=True):
        record.subject_id = subject
    return records
