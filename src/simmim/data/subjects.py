"""Simulated data owners: privacy accounting works per person, so generated data needs people too."""

from __future__ import annotations

import numpy as np

MIN_RECORDS_PER_SUBJECT = 2
MAX_RECORDS_PER_SUBJECT = 12


def assign_subjects(n: int, rng: np.random.Generator, prefix: str) -> list[str]:
    """Gives each of ``n`` records an owner, every owner holding 2 to 12 records.

    Owners' records are spread over the whole list rather than kept together, as in real data.

    Args:
        n: Number of records.
        rng: Source of the group sizes and of the shuffle.
        prefix: Subject ids are ``f"{prefix}-{k:05d}"``.

    Returns:
        The subject id of each record, in record order. Only when ``n`` is 1 does a subject own a
        single record.
    """
    sizes: list[int] = []
    remaining = n
    while remaining > 0:
        size = min(int(rng.integers(MIN_RECORDS_PER_SUBJECT, MAX_RECORDS_PER_SUBJECT + 1)), remaining)
        if 0 < remaining - size < MIN_RECORDS_PER_SUBJECT:
            # The rest would be too few for one more subject: leave exactly the minimum, or take all.
            shrunk = remaining - MIN_RECORDS_PER_SUBJECT
            size = shrunk if shrunk >= MIN_RECORDS_PER_SUBJECT else remaining
        sizes.append(size)
        remaining -= size
    owners = [f"{prefix}-{k:05d}" for k, size in enumerate(sizes) for _ in range(size)]
    return [owners[i] for i in rng.permutation(n)]
