"""Run every evaluation that fits the data on a trained model.

Synthetic data (records with scenes) gets the full set: retrieval both ways, zero-shot shape,
colour and count, captioning with per-attribute accuracy, text->image analytic checks and
retrieval, linear probes, and the same on clips and on unseen attribute combinations. Data a
user brings gets what needs no ground-truth scene: retrieval, caption BLEU/exact match, and
a linear probe when records carry a `label`.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass, field

import numpy as np
import torch

from simmim.data.batches import EncodedSet
from simmim.data.grammar import canonical_caption
from simmim.data.records import COLOURS, GRID, MOTIONS, SHAPES, SIZES, Record, Scene, SceneObject
from simmim.eval.captioning import caption_metrics
from simmim.eval.classify import LinearProbe, class_prototypes, majority_rate, zero_shot_accuracy
from simmim.eval.generation import analyse_image
from simmim.eval.retrieval import retrieval_metrics

BATCH = 256


@dataclass
class Evaluation:
    metrics: dict[str, dict[str, float]]
    samples: dict = field(default_factory=dict)  # pictures and texts for the report


class Embedder:
    """Batched, gradient-free access to a model's encoders and decoders."""

    def __init__(self, model, tokenizer, context_length: int):
        self.model, self.tokenizer, self.context_length = model.eval(), tokenizer, context_length

    @torch.no_grad()
    def _batched(self, fn, items) -> np.ndarray:
        return np.concatenate([fn(items[i:i + BATCH]).numpy() for i in range(0, len(items), BATCH)])

    def tokens(self, texts: list[str]) -> torch.Tensor:
        return torch.from_numpy(self.tokenizer.encode_batch(texts, self.context_length))

    def texts(self, texts: list[str]) -> np.ndarray:
        return self._batched(lambda t: self.model.encode_text(self.tokens(t)), list(texts))

    def visuals(self, encoded: EncodedSet) -> np.ndarray:
        encode = self.model.encode_video if encoded.is_video else self.model.encode_image
        return self._batched(lambda idx: encode(encoded.pixels_float(idx)), np.arange(len(encoded)))

    def captions(self, encoded: EncodedSet, beam_size: int = 1) -> list[str]:
        tok, out = self.tokenizer, []
        for i in range(0, len(encoded), BATCH):
            pixels = encoded.pixels_float(np.arange(i, min(i + BATCH, len(encoded))))
            kwargs = {"frames": pixels} if encoded.is_video else {"images": pixels}
            ids = self.model.caption_tokens(**kwargs, bos_id=tok.bos_id, eos_id=tok.eos_id, beam_size=beam_size)
            out += [tok.decode(row) for row in ids]
        return out

    @torch.no_grad()
    def generate(self, texts: list[str]) -> np.ndarray:
        """Text -> images as (N, H, W, 3) uint8."""
        images = self._batched(lambda t: self.model.generate_images(self.tokens(t), self.tokenizer.pad_id),
                               list(texts))
        return (np.clip(images, 0, 1) * 255).round().astype(np.uint8).transpose(0, 2, 3, 1)


def _prompts_for(attribute: str) -> dict[str, list[str]]:
    """Grammar captions of scenes that show each class of `attribute` (the prompt ensemble)."""
    rng = np.random.default_rng(1234)
    if attribute in ("colour", "shape"):
        values = COLOURS if attribute == "colour" else SHAPES
        return {v: [canonical_caption(Scene((SceneObject(shape, colour, size, cell),)))
                    for shape, colour, size, cell in itertools.product(SHAPES, COLOURS, SIZES, range(GRID * GRID))
                    if (colour if attribute == "colour" else shape) == v] for v in values}
    if attribute == "count":
        prompts = {}
        for n in (1, 2, 3):
            scenes = []
            for _ in range(60):
                cells = rng.choice(GRID * GRID, size=n, replace=False)
                scenes.append(Scene(tuple(SceneObject(str(rng.choice(SHAPES)), str(rng.choice(COLOURS)),
                                                      str(rng.choice(SIZES)), int(c)) for c in sorted(cells))))
            prompts[str(n)] = [canonical_caption(s) for s in scenes]
        return prompts
    if attribute == "motion":
        return {m: [canonical_caption(Scene((SceneObject(shape, colour, size, 4),), motion=m))
                    for shape, colour, size in itertools.product(SHAPES, COLOURS, SIZES)] for m in MOTIONS}
    raise ValueError(attribute)


def _label(record: Record, attribute: str) -> str | None:
    """The record's class for `attribute`, or None when its scene has no single answer."""
    objects = record.scene.objects
    if attribute == "count":
        return str(len(objects))
    if attribute == "motion":
        return record.scene.motion
    values = {getattr(o, attribute) for o in objects}
    return values.pop() if len(values) == 1 else None


def _zero_shot(emb: Embedder, visual_emb: np.ndarray, records: list[Record], attribute: str) -> dict:
    labels, prototypes = class_prototypes(emb.texts, _prompts_for(attribute))
    keep = [i for i, r in enumerate(records) if _label(r, attribute) is not None]
    truth = [_label(records[i], attribute) for i in keep]
    return zero_shot_accuracy(visual_emb[keep], truth, labels, prototypes)


def evaluate(model, tokenizer, splits, *, context_length: int, max_items: int = 500,
             probe_train_items: int = 2000) -> Evaluation:
    emb = Embedder(model, tokenizer, context_length)
    metrics: dict[str, dict[str, float]] = {}
    samples: dict = {}
    test = splits.test[:max_items]
    test_set = EncodedSet(test, tokenizer, context_length)
    image_emb = emb.visuals(test_set)
    keys = [r.caption for r in test]
    metrics.update(retrieval_metrics(image_emb, emb.texts(keys), keys, keys))
    captions = emb.captions(test_set)
    metrics.update(caption_metrics(captions, test))
    samples["captions"] = [(r.image, r.caption, c) for r, c in list(zip(test, captions))[:8]]
    query_order = np.argsort(-(emb.texts(keys[:4]) @ image_emb.T), axis=1)[:, :5]
    samples["retrieval"] = [(keys[q], [test[i].image for i in row]) for q, row in enumerate(query_order)]
    synthetic = all(r.scene is not None for r in test)
    if synthetic:
        for attribute in ("shape", "colour", "count"):
            metrics[f"zero_shot_{attribute}"] = _zero_shot(emb, image_emb, test, attribute)
        metrics.update(_generation(emb, test, image_emb, samples))
        if splits.test_unseen:
            unseen = splits.test_unseen[:max_items]
            unseen_set = EncodedSet(unseen, tokenizer, context_length)
            unseen_emb = emb.visuals(unseen_set)
            for attribute in ("shape", "colour"):
                metrics[f"unseen_zero_shot_{attribute}"] = _zero_shot(emb, unseen_emb, unseen, attribute)
            unseen_captions = caption_metrics(emb.captions(unseen_set), unseen)
            metrics["unseen_caption_attribute_accuracy"] = unseen_captions["caption_attribute_accuracy"]
    metrics.update(_probes(emb, splits, tokenizer, context_length, max_items, probe_train_items, synthetic))
    if splits.video_test:
        metrics.update(_video(emb, splits.video_test[:max_items], tokenizer, context_length))
    return Evaluation(metrics=metrics, samples=samples)


def _generation(emb: Embedder, test: list[Record], image_emb: np.ndarray, samples: dict) -> dict:
    """Text -> image on single-object scenes: analytic colour/position, and retrieval of the
    generated image among the real test images (a hit: the nearest real image has the caption)."""
    singles = [r for r in test if len(r.scene.objects) == 1]
    generated = emb.generate([r.caption for r in singles])
    analysed = [analyse_image(img) for img in generated]
    colours = [r.scene.objects[0].colour for r in singles]
    cells = [r.scene.objects[0].cell for r in singles]
    samples["generated"] = [(r.caption, img) for r, img in list(zip(singles, generated))[:8]]
    gen_set_emb = emb.model.encode_image(torch.from_numpy(generated).float().div(255).permute(0, 3, 1, 2))
    gen_metrics = retrieval_metrics(gen_set_emb.detach().numpy(), image_emb, [r.caption for r in singles],
                                    [r.caption for r in test], names=("generated_to_real", "real_to_generated"),
                                    ks=(1, 5))
    return {
        "generation_colour_accuracy": {"value": float(np.mean([a[0] == c for a, c in zip(analysed, colours)])),
                                       "chance": max(1 / len(COLOURS), majority_rate(colours))},
        "generation_position_accuracy": {"value": float(np.mean([a[1] == c for a, c in zip(analysed, cells)])),
                                         "chance": max(1 / GRID**2, majority_rate(cells))},
        **{k: v for k, v in gen_metrics.items() if k.startswith("generated_to_real")},
    }


def _probes(emb, splits, tokenizer, context_length, max_items, train_items, synthetic) -> dict:
    parts = {"train": splits.train[:train_items], "val": splits.val[:max_items], "test": splits.test[:max_items]}
    if not all(parts.values()):
        return {}
    if synthetic:
        targets = {"count": lambda r: len(r.scene.objects), "first_shape": lambda r: r.scene.objects[0].shape}
    elif all("label" in r.extra for part in parts.values() for r in part):
        targets = {"label": lambda r: r.extra["label"]}
    else:
        return {}
    features = {name: emb.visuals(EncodedSet(recs, tokenizer, context_length)) for name, recs in parts.items()}
    out = {}
    for target, get in targets.items():
        y = {name: [get(r) for r in recs] for name, recs in parts.items()}
        probe = LinearProbe().fit(features["train"], y["train"], features["val"], y["val"])
        out[f"linear_probe_{target}"] = {"value": probe.score(features["test"], y["test"]),
                                         "chance": majority_rate(y["test"])}
    return out


def _video(emb: Embedder, clips: list[Record], tokenizer, context_length) -> dict:
    clip_set = EncodedSet(clips, tokenizer, context_length)
    video_emb = emb.visuals(clip_set)
    keys = [r.caption for r in clips]
    out = retrieval_metrics(video_emb, emb.texts(keys), keys, keys, names=("video_to_text", "text_to_video"),
                            ks=(1, 5))
    out["zero_shot_motion"] = _zero_shot(emb, video_emb, clips, "motion")
    captions = caption_metrics(emb.captions(clip_set), clips)
    out["video_caption_attribute_accuracy"] = captions["caption_attribute_accuracy"]
    return out
