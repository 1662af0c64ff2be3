import numpy as np
import pytest

from simmim.eval.retrieval import chance_recall_at_k, positives_matrix, recall_at_k, retrieval_metrics


def test_recall_counts_any_positive_in_top_k():
    sim = np.array([[0.9, 0.8, 0.1], [0.1, 0.2, 0.3]])
    positives = np.array([[False, True, False], [True, False, False]])
    assert recall_at_k(sim, positives, ks=(1, 2, 3)) == {1: 0.0, 2: 0.5, 3: 1.0}


def test_chance_matches_simulated_random_rankings():
    rng = np.random.default_rng(0)
    keys = rng.integers(0, 15, size=40)
    positives = positives_matrix(keys, keys)
    exact = chance_recall_at_k(positives, ks=(1, 5))
    simulated = np.mean([list(recall_at_k(rng.random(positives.shape), positives, ks=(1, 5)).values())
                         for _ in range(400)], axis=0)
    assert exact[1] == pytest.approx(simulated[0], abs=0.01)
    assert exact[5] == pytest.approx(simulated[1], abs=0.015)


def test_perfect_embeddings_score_one_in_both_directions():
    emb = np.eye(6)
    keys = list("abcdef")
    metrics = retrieval_metrics(emb, emb, keys, keys, ks=(1,))
    assert metrics["image_to_text_R@1"]["value"] == 1.0
    assert metrics["text_to_image_R@1"]["chance"] == pytest.approx(1 / 6)
