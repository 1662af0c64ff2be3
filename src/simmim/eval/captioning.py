"""Caption quality: exact match, per-attribute accuracy (the caption parsed back through the
grammar), and corpus BLEU-4 (sacrebleu) against every reference caption.

Chance level: the same metric for the same predictions paired with a random other record
(a fixed derangement), i.e. what a captioner that ignores the image would score.
"""

from __future__ import annotations

import numpy as np
import sacrebleu

from simmim.data.grammar import attribute_matches, parse_caption
from simmim.data.records import Record

ATTRIBUTES = ("count", "colour", "shape", "size", "position", "relation", "motion")


def _scores(predictions: list[str], records: list[Record]) -> dict[str, float]:
    scores = {"caption_exact_match": float(np.mean([p == r.caption for p, r in zip(predictions, records)]))}
    max_refs = max(len(r.captions) for r in records)
    refs = [[r.captions[i] if i < len(r.captions) else r.caption for r in records] for i in range(max_refs)]
    scores["caption_bleu4"] = sacrebleu.corpus_bleu(predictions, refs, tokenize="13a").score / 100.0
    if all(r.scene is not None for r in records):
        per_attribute: dict[str, list[bool]] = {a: [] for a in ATTRIBUTES}
        for prediction, record in zip(predictions, records):
            for attribute, ok in attribute_matches(parse_caption(prediction), record.scene).items():
                if ok is not None:
                    per_attribute[attribute].append(bool(ok))
        accuracies = {a: float(np.mean(v)) for a, v in per_attribute.items() if v}
        scores.update({f"caption_{a}_accuracy": v for a, v in accuracies.items()})
        scores["caption_attribute_accuracy"] = float(np.mean(list(accuracies.values())))
        scores["caption_parse_rate"] = float(np.mean([parse_caption(p) is not None for p in predictions]))
    return scores


def caption_metrics(predictions: list[str], records: list[Record], seed: int = 0) -> dict[str, dict[str, float]]:
    """Each metric as {"value", "chance"}."""
    if len(predictions) != len(records) or not records:
        raise ValueError("need one prediction per record, and at least one record")
    values = _scores(predictions, records)
    if len(records) > 1:
        rng = np.random.default_rng(seed)
        shift = rng.permutation(len(records))
        # A derangement: each prediction goes to the record after it in a random cycle.
        mismatched = [None] * len(records)
        for i, j in zip(shift, np.roll(shift, 1)):
            mismatched[j] = predictions[i]
        chances = _scores(mismatched, records)
    else:
        chances = {k: 0.0 for k in values}
    return {k: {"value": values[k], "chance": chances[k]} for k in values}
