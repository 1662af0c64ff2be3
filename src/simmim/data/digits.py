"""A small real dataset that needs no download: scikit-learn's bundled 8x8 handwritten digits."""

from __future__ import annotations

import numpy as np
from PIL import Image

from simmim.data.records import Record
from simmim.data.subjects import assign_subjects

DIGIT_WORDS = ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine")
# The first template is the canonical caption; the others are its paraphrases.
_TEMPLATES = (
    "a handwritten {word}",
    "the digit {word}",
    "a handwritten {digit}",
    "the digit {digit}",
    "a handwritten digit {word}",
    "the number {word}",
    "a picture of the digit {digit}",
)
PARAPHRASES_PER_RECORD = 4
# Keeps this stream apart from the synthetic generator's streams for the same seed.
_STREAM_TAG = 0x646967697473  # "digits"
_MAX_PIXEL = 16  # the bundled images count ink from 0 to 16


def digit_captions(label: int, rng: np.random.Generator) -> tuple[str, ...]:
    """The canonical caption of a digit ("a handwritten seven") and paraphrases picked by rng."""
    captions = [template.format(word=DIGIT_WORDS[label], digit=label) for template in _TEMPLATES]
    picked = rng.choice(len(captions) - 1, size=PARAPHRASES_PER_RECORD, replace=False) + 1
    return (captions[0], *(captions[i] for i in picked))


def load_digits_records(image_size: int = 32, seed: int = 0) -> list[Record]:
    """The 1,797 digits as captioned records.

    Images are upscaled (bilinear) to image_size and repeated over RGB; white ink on black, like
    the synthetic scenes. Simulated subjects own 2 to 12 records each (``subject-digits-{k:05d}``).

    Args:
        image_size: Side of the output images.
        seed: Picks the paraphrases and the subjects.

    Returns:
        Records ``digits-{i:04d}`` with ``scene=None`` and ``extra={"label": digit}``.
    """
    from sklearn.datasets import load_digits  # scikit-learn takes ~1 s to import; only this needs it

    digits = load_digits()
    rng = np.random.default_rng(np.random.SeedSequence([seed, _STREAM_TAG]))
    grey = np.rint(digits.images * (255 / _MAX_PIXEL)).astype(np.uint8)
    records = []
    for i, (pixels, label) in enumerate(zip(grey, digits.target, strict=True)):
        resized = np.asarray(
            Image.fromarray(pixels).resize((image_size, image_size), Image.Resampling.BILINEAR)
        )
        records.append(
            Record(
                record_id=f"digits-{i:04d}",
                subject_id="",
                captions=digit_captions(int(label), rng),
                image=np.repeat(resized[..., None], 3, axis=2),
                source="sklearn digits",
                extra={"label": int(label)},
            )
        )
    for record, subject in zip(records, assign_subjects(len(records), rng, "subject-digits"), strict=True):
        record.subject_id = subject
    return records
