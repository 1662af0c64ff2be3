"""Zero-shot classification with prompt ensembles, and a linear probe on frozen embeddings.

Zero-shot: each class is the re-normalised mean of the text embeddings of its prompts (for
synthetic scenes the prompts are the grammar's captions of scenes showing that class).
Linear probe: scikit-learn's L-BFGS logistic regression, C chosen on a validation split.
"""

from __future__ import annotations

from collections import Counter

import numpy as np
from sklearn.linear_model import LogisticRegression


def class_prototypes(embed_texts, prompts: dict[str, list[str]]) -> tuple[list[str], np.ndarray]:
    labels = list(prompts)
    protos = []
    for label in labels:
        emb = embed_texts(prompts[label]).mean(axis=0)
        protos.append(emb / np.linalg.norm(emb))
    return labels, np.stack(protos)


def majority_rate(labels) -> float:
    """The accuracy of always guessing the most frequent class: the chance level we report."""
    return Counter(labels).most_common(1)[0][1] / len(labels) if len(labels) else 0.0


def zero_shot_accuracy(image_emb: np.ndarray, true_labels: list[str], labels: list[str],
                       prototypes: np.ndarray) -> dict[str, float]:
    predicted = np.asarray(labels)[(image_emb @ prototypes.T).argmax(axis=1)]
    value = float(np.mean(predicted == np.asarray(true_labels))) if len(true_labels) else 0.0
    return {"value": value, "chance": max(1.0 / len(labels), majority_rate(true_labels))}


class LinearProbe:
    """Logistic regression on frozen features, C swept on the validation split."""

    def __init__(self, cs=(0.01, 0.1, 1.0, 10.0), max_iter: int = 1000):
        self.cs = cs
        self.max_iter = max_iter

    def fit(self, x_train, y_train, x_val, y_val) -> LinearProbe:
        best = None
        for c in self.cs:
            clf = LogisticRegression(C=c, max_iter=self.max_iter).fit(x_train, y_train)
            score = clf.score(x_val, y_val)
            if best is None or score > best[0]:
                best = (score, c, clf)
        self.val_score_, self.c_, self.classifier_ = best
        return self

    def score(self, x, y) -> float:
        return float(self.classifier_.score(x, y))
