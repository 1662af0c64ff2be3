"""The procedural generator: determinism, splits, subjects, and what the renderer draws."""

import itertools
import time
from collections import Counter

import numpy as np
import pytest

from simmim.data.grammar import canonical_caption, parse_caption
from simmim.data.records import SHAPES, SIZES, Scene, SceneObject
from simmim.data.synthetic import (
    HELD_OUT,
    PALETTE,
    SPLITS,
    cell_bounds,
    cell_of_pixel,
    generate,
    object_side,
    render_clip,
    render_scene,
    shape_mask,
)
from simmim.errors import DataError


def fingerprint(records) -> list:
    return [
        (r.record_id, r.subject_id, r.captions, (r.image if r.image is not None else r.frames).tobytes())
        for r in records
    ]


@pytest.fixture(scope="module")
def splits() -> dict:
    return {split: generate(400, seed=5, split=split) for split in SPLITS}


def test_same_seed_gives_identical_bytes():
    assert fingerprint(generate(40, seed=3)) == fingerprint(generate(40, seed=3))
    clips = generate(10, seed=3, kind="video", frames=5)
    assert fingerprint(clips) == fingerprint(generate(10, seed=3, kind="video", frames=5))


def test_different_seed_differs():
    assert fingerprint(generate(40, seed=3)) != fingerprint(generate(40, seed=4))


def test_streams_are_independent_per_split_and_kind():
    longer = generate(30, seed=1, split="val")
    shorter = generate(10, seed=1, split="val")
    # Contents are drawn record by record, so a split's records do not depend on its length either.
    assert [r.image.tobytes() for r in shorter] == [r.image.tobytes() for r in longer[:10]]
    test = generate(10, seed=1, split="test")
    assert [r.image.tobytes() for r in test] != [r.image.tobytes() for r in shorter]


def test_record_ids_are_unique_across_splits_and_kinds(splits):
    clips = generate(5, seed=5, kind="video")
    ids = [r.record_id for records in splits.values() for r in records] + [r.record_id for r in clips]
    assert len(ids) == len(set(ids))
    assert splits["val"][3].record_id == "val-image-000003"


def test_held_out_combinations(splits):
    for split in ("train", "val", "test"):
        for record in splits[split]:
            assert not {(o.colour, o.shape) for o in record.scene.objects} & HELD_OUT
    for record in splits["test_unseen"]:
        assert {(o.colour, o.shape) for o in record.scene.objects} & HELD_OUT
    for record in generate(50, seed=5, split="test_unseen", kind="video"):
        assert (record.scene.objects[0].colour, record.scene.objects[0].shape) in HELD_OUT


def test_scene_mix(splits):
    records = splits["train"] + splits["val"] + splits["test"]
    counts = Counter(len(r.scene.objects) for r in records)
    assert abs(counts[1] / len(records) - 0.40) < 0.06
    assert abs(counts[2] / len(records) - 0.35) < 0.06
    multi = [r for r in records if len(r.scene.objects) > 1]
    identical = [r for r in multi if len({(o.shape, o.colour, o.size) for o in r.scene.objects}) == 1]
    assert abs(len(identical) / len(multi) - 0.20) < 0.06
    for record in records:
        cells = [o.cell for o in record.scene.objects]
        assert len(set(cells)) == len(cells) and all(0 <= c < 9 for c in cells)


def test_captions(splits):
    for record in splits["train"][:100]:
        assert len(record.captions) == 5 and len(set(record.captions)) == 5
        assert record.caption == canonical_caption(record.scene)
        meaning = parse_caption(record.caption)
        assert all(parse_caption(c) == meaning for c in record.captions)


def test_subjects_own_several_records_and_stay_in_their_split(splits):
    owners = {split: Counter(r.subject_id for r in records) for split, records in splits.items()}
    for split, counts in owners.items():
        assert all(2 <= n <= 12 for n in counts.values())
        assert len(counts) >= 400 // 12
        assert all(subject.startswith(f"subject-{split}-") for subject in counts)
    for a, b in itertools.combinations(owners, 2):
        assert not set(owners[a]) & set(owners[b])


def test_cells_cover_the_image_exactly():
    for size in (32, 40, 64):
        for y in range(size):
            for x in range(size):
                top, bottom, left, right = cell_bounds(cell_of_pixel(y, x, size), size)
                assert top <= y < bottom and left <= x < right
    assert cell_bounds(4, 32) == (11, 21, 11, 21)
    with pytest.raises(DataError):
        cell_bounds(9, 32)
    with pytest.raises(DataError):
        cell_of_pixel(32, 0, 32)


def test_shapes_are_distinct_at_32_px():
    for size in SIZES:
        side = object_side(size, 32)
        masks = [shape_mask(shape, side) for shape in SHAPES]
        for a, b in itertools.combinations(masks, 2):
            assert (a != b).sum() >= 4
    assert object_side("small", 32) < object_side("large", 32) <= 10


def test_renderer_draws_each_object_in_its_cell_in_its_colour(splits):
    for record in splits["train"][:150] + splits["test_unseen"][:50]:
        image = record.image
        covered = np.zeros(image.shape[:2], dtype=bool)
        for o in record.scene.objects:
            top, bottom, left, right = cell_bounds(o.cell, 32)
            covered[top:bottom, left:right] = True
            region = image[top:bottom, left:right]
            lit = region.any(axis=2)
            assert (region[lit] == PALETTE[o.colour]).all()
            ys, xs = np.nonzero(lit)
            height, width = ys.max() - ys.min() + 1, xs.max() - xs.min() + 1
            assert height == width == object_side(o.size, 32)
            centre = region[(ys.min() + ys.max()) // 2, (xs.min() + xs.max()) // 2]
            assert tuple(centre) == PALETTE[o.colour]
        assert not image[~covered].any()


def test_render_without_rng_centres_objects():
    scene = Scene((SceneObject("square", "green", "small", 4),))
    image = render_scene(scene, 32)
    ys, xs = np.nonzero(image.any(axis=2))
    assert (ys.min(), xs.min()) == (13, 13) and image.dtype == np.uint8 and image.shape == (32, 32, 3)


@pytest.mark.parametrize(
    "motion, direction", [("left", (0, -3)), ("right", (0, 3)), ("up", (-3, 0)), ("down", (3, 0))]
)
def test_clip_moves_three_pixels_a_frame(motion, direction):
    for cell in range(9):
        scene = Scene((SceneObject("diamond", "white", "large", cell),), motion=motion)
        clip = render_clip(scene, 32, frames=4, rng=np.random.default_rng(cell))
        assert clip.shape == (4, 32, 32, 3)
        counts = [frame.any(axis=2).sum() for frame in clip]
        assert len(set(counts)) == 1  # whole object inside the image in every frame
        centres = [np.argwhere(frame.any(axis=2)).mean(axis=0) for frame in clip]
        for before, after in itertools.pairwise(centres):
            assert tuple(after - before) == direction


def test_video_records():
    clips = generate(20, seed=2, kind="video", frames=6)
    for record in clips:
        assert record.image is None and record.frames.shape == (6, 32, 32, 3) and record.is_video
        assert record.scene.motion is not None and len(record.scene.objects) == 1
        assert "moving" in record.caption


def test_other_image_sizes():
    record = generate(1, seed=0, image_size=64)[0]
    assert record.image.shape == (64, 64, 3)


@pytest.mark.parametrize(
    "kwargs",
    [
        {"n": -1},
        {"split": "holdout"},
        {"kind": "audio"},
        {"image_size": 8},
        {"kind": "video", "frames": 1},
        {"kind": "video", "frames": 40},
        {"max_objects": 0},
        {"max_objects": 4},
    ],
)
def test_bad_arguments_raise_data_error(kwargs):
    arguments = {"n": 2, "seed": 0} | kwargs
    with pytest.raises(DataError):
        generate(arguments.pop("n"), **arguments)


def test_max_objects_caps_scenes():
    """A corpus of single-object scenes (the private demo's public pretraining data)."""
    full, single = generate(300, seed=4), generate(300, seed=4, max_objects=1)
    assert all(len(r.scene.objects) == 1 for r in single)
    assert Counter(len(r.scene.objects) for r in full).keys() == {1, 2, 3}
    assert Counter(len(r.scene.objects) for r in generate(300, seed=4, max_objects=2)).keys() == {1, 2}
    assert all(parse_caption(r.caption) is not None for r in single)


def test_ten_thousand_images_are_fast():
    start = time.perf_counter()
    records = generate(10_000, seed=0)
    assert time.perf_counter() - start < 5
    assert len(records) == 10_000
