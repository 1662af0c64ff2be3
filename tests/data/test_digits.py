"""scikit-learn's digits as captioned records."""

from collections import Counter

import numpy as np
import pytest

from simmim.data.digits import DIGIT_WORDS, load_digits_records


@pytest.fixture(scope="module")
def records():
    return load_digits_records(image_size=16, seed=0)


def test_all_digits_as_rgb_images(records):
    assert len(records) == 1797
    for record in records[:50]:
        assert record.image.shape == (16, 16, 3) and record.image.dtype == np.uint8
        assert (record.image[..., 0] == record.image[..., 2]).all()
        assert record.scene is None and record.frames is None
    assert max(r.image.max() for r in records[:50]) == 255


def test_captions_name_the_label(records):
    assert Counter(r.extra["label"] for r in records).keys() == set(range(10))
    for record in records[:200]:
        label = record.extra["label"]
        assert record.caption == f"a handwritten {DIGIT_WORDS[label]}"
        assert len(record.captions) == len(set(record.captions)) == 5
        assert all(DIGIT_WORDS[label] in caption or str(label) in caption for caption in record.captions)


def test_simulated_subjects(records):
    counts = Counter(r.subject_id for r in records)
    assert all(2 <= n <= 12 for n in counts.values())
    assert len({r.record_id for r in records}) == len(records)


def test_deterministic_per_seed(records):
    again = load_digits_records(image_size=16, seed=0)
    assert [(r.captions, r.subject_id) for r in again] == [(r.captions, r.subject_id) for r in records]
    other = load_digits_records(image_size=16, seed=1)
    assert [r.subject_id for r in other] != [r.subject_id for r in records]
    assert load_digits_records(image_size=32)[0].image.shape == (32, 32, 3)
