"""A process pool for long vectors: Paillier work is pure CPU, so threads would not help.

Each worker builds its own fixed-base tables on first use (0.2-0.4 s at 2048 bits) and the
pool itself takes time to start, so it pays off only for long vectors: below
`MIN_ITEMS_PER_WORKER` ciphertexts per worker the work stays in this process. Workers default
to the cores this process may use (its CPU affinity), so a process pinned to one core never
starts a pool.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from concurrent.futures import ProcessPoolExecutor
from typing import TypeVar

T = TypeVar("T")
R = TypeVar("R")

MIN_ITEMS_PER_WORKER = 1024


def resolve_workers(workers: int | None) -> int:
    """`workers` as a count: None means every core this process may use."""
    if workers is None:
        return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    return max(1, int(workers))


def map_chunks(function: Callable[..., list[R]], items: Sequence[T], *args, workers: int | None = None) -> list[R]:
    """function(chunk, *args) over contiguous chunks of items, results concatenated in order.

    `function` must be a module-level function (it is pickled to the workers) that returns a
    list with one result per item of its chunk.
    """
    workers = min(resolve_workers(workers), max(1, len(items) // MIN_ITEMS_PER_WORKER))
    if workers == 1:
        return function(list(items), *args)
    chunk_count = workers * 4
    size = -(-len(items) // chunk_count)
    chunks = [list(items[i: i + size]) for i in range(0, len(items), size)]
    with ProcessPoolExecutor(max_workers=workers) as pool:
        results = pool.map(function, chunks, *([arg] * len(chunks) for arg in args))
        return [result for chunk_result in results for result in chunk_result]
