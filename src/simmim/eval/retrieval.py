"""Recall@k with multiple positives, and its exact chance level.

A query scores a hit at k if any of its positives (items with the same key, e.g. the same
canonical caption) is among the top k gallery items.
"""

from __future__ import annotations

import numpy as np


def positives_matrix(query_keys, gallery_keys) -> np.ndarray:
    q = np.asarray(query_keys, dtype=object)[:, None]
    g = np.asarray(gallery_keys, dtype=object)[None, :]
    return q == g


def recall_at_k(similarity: np.ndarray, positives: np.ndarray, ks=(1, 5, 10)) -> dict[int, float]:
    """Fraction of queries with a positive in their top k (queries without positives count as misses)."""
    order = np.argsort(-similarity, axis=1, kind="stable")
    hits = np.take_along_axis(positives, order, axis=1)
    first = np.where(hits.any(axis=1), hits.argmax(axis=1), similarity.shape[1])
    return {k: float(np.mean(first < k)) for k in ks}


def chance_recall_at_k(positives: np.ndarray, ks=(1, 5, 10)) -> dict[int, float]:
    """Expected recall@k of a uniformly random ranking: 1 - C(G-p, k) / C(G, k) per query."""
    gallery = positives.shape[1]
    p = positives.sum(axis=1).astype(float)
    result = {}
    for k in ks:
        miss = np.ones_like(p)
        for i in range(min(k, gallery)):
            miss *= np.clip(gallery - p - i, 0, None) / (gallery - i)
        result[k] = float(np.mean(1.0 - miss))
    return result


def retrieval_metrics(a: np.ndarray, b: np.ndarray, a_keys, b_keys, *, names=("image_to_text", "text_to_image"),
                      ks=(1, 5, 10)) -> dict[str, dict[str, float]]:
    """R@k both ways between embeddings `a` and `b` (rows L2-normalised)."""
    similarity = a @ b.T
    positives = positives_matrix(a_keys, b_keys)
    out = {}
    for name, sim, pos in ((names[0], similarity, positives), (names[1], similarity.T, positives.T)):
        values, chances = recall_at_k(sim, pos, ks), chance_recall_at_k(pos, ks)
        for k in ks:
            out[f"{name}_R@{k}"] = {"value": values[k], "chance": chances[k]}
    return out
