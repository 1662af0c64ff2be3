"""What both sides of a federated run compute without Flower: the model, a party's partition, a local
update, its clipping, and the server's evaluation.

The vocabulary is the synthetic generator's public grammar, never fitted on a party's captions, so
the model every party receives reveals nothing about anyone's words (the same rule as DP training,
`simmim.train.finetune`).
"""

from __future__ import annotations

import hashlib
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from simmim.config import Config, load_config, packaged_config
from simmim.data import grammar
from simmim.data.batches import EncodedSet, step_generator, step_indices
from simmim.data.records import Record
from simmim.data.splits import build_splits
from simmim.data.tokenizer import WordTokenizer
from simmim.errors import ConfigError
from simmim.federated.settings import FedSettings
from simmim.losses import SimMIMObjective
from simmim.models import SimMIM
from simmim.train.loop import build_model, make_optimizer


@dataclass
class Federation:
    """The model configuration, tokenizer and data every party derives from the same settings."""

    settings: FedSettings
    cfg: Config
    tokenizer: WordTokenizer

    @classmethod
    def from_settings(cls, settings: FedSettings) -> Federation:
        name = settings.config
        cfg = load_config(name) if Path(name).suffix else packaged_config(name)
        if cfg.data.source != "synthetic":
            raise ConfigError("federated runs take the synthetic generator's data for now (data.source = "
                              f"'synthetic'), got {cfg.data.source!r}")
        return cls(settings, cfg, WordTokenizer(grammar.vocabulary()))

    def initial_model(self) -> SimMIM:
        return build_model(self.cfg, self.tokenizer)

    def partition(self, index: int) -> list[Record]:
        """Party `index`'s records: every `clients`-th training record from `index` on."""
        if not 0 <= index < self.settings.clients:
            raise ConfigError(f"partition {index} does not exist: there are {self.settings.clients} parties")
        return build_splits(self.cfg.data).train[index::self.settings.clients]

    def test_records(self) -> list[Record]:
        return build_splits(self.cfg.data).test[:self.settings.eval_items]


def parameter_vector(model: torch.nn.Module) -> np.ndarray:
    """The trainable parameters, flattened in `named_parameters` order, as float32."""
    with torch.no_grad():
        return torch.cat([p.detach().reshape(-1) for p in model.parameters() if p.requires_grad]).numpy().astype(
            np.float32)


def load_parameter_vector(model: torch.nn.Module, vector: np.ndarray) -> None:
    """Writes `parameter_vector`'s layout back into the model."""
    params = [p for p in model.parameters() if p.requires_grad]
    expected = sum(p.numel() for p in params)
    if vector.shape != (expected,):
        raise ConfigError(f"a parameter vector of shape {vector.shape} does not fit this model ({expected} values)")
    offset = 0
    with torch.no_grad():
        for p in params:
            p.copy_(torch.from_numpy(np.asarray(vector[offset:offset + p.numel()], dtype=np.float32)).view_as(p))
            offset += p.numel()


def clip_update(update: np.ndarray, bound: float) -> tuple[np.ndarray, float]:
    """The update scaled to L2 norm at most `bound`, and its norm before clipping."""
    norm = float(np.linalg.norm(update.astype(np.float64)))
    if not math.isfinite(norm):
        raise ConfigError("the local update is not finite (diverged local training)")
    scale = min(1.0, bound / norm) if norm > 0 else 1.0
    return (update * scale).astype(np.float32), norm


def local_update(federation: Federation, global_vector: np.ndarray, records: list[Record], *, round_index: int,
                 party: int) -> tuple[np.ndarray, dict]:
    """`local_steps` AdamW steps on the party's records from the global weights; the clipped difference."""
    settings, cfg = federation.settings, federation.cfg
    torch.set_num_threads(settings.threads)
    model = federation.initial_model()
    load_parameter_vector(model, global_vector)
    model.train()
    objective = SimMIMObjective(cfg.loss, pad_id=federation.tokenizer.pad_id)
    optimizer = make_optimizer(model, cfg)
    for group in optimizer.param_groups:
        group["lr"] = settings.local_lr
    encoded = EncodedSet(records, federation.tokenizer, cfg.data.context_length)
    seed = _party_seed(settings.seed, party)
    losses = []
    for step in range(settings.local_steps):
        position = round_index * settings.local_steps + step
        batch = encoded.batch(step_indices(len(encoded), min(settings.batch_size, len(encoded)), seed, position),
                              step_generator(seed, position), num_patches=model.cfg.num_patches,
                              mask_ratio=cfg.train.mask_ratio)
        optimizer.zero_grad(set_to_none=True)
        loss, _ = objective(model, batch)
        loss.backward()
        if cfg.train.grad_clip:
            torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.train.grad_clip)
        optimizer.step()
        losses.append(float(loss.detach()))
    update, norm = clip_update(parameter_vector(model) - global_vector, settings.update_clip)
    return update, {"loss": float(np.mean(losses)), "update_norm": norm, "examples": len(records)}


def evaluate_global(federation: Federation, vector: np.ndarray, records: list[Record]) -> dict[str, float]:
    """The training objective and retrieval R@1 both ways on held-out records, and R@1's chance level."""
    from simmim.eval.evaluate import Embedder  # the server's only: parties need not import evaluation
    from simmim.eval.retrieval import retrieval_metrics

    model = federation.initial_model()
    load_parameter_vector(model, vector)
    embedder = Embedder(model, federation.tokenizer, federation.cfg.data.context_length)
    keys = [r.caption for r in records]
    encoded = EncodedSet(records, federation.tokenizer, federation.cfg.data.context_length)
    metrics = retrieval_metrics(embedder.visuals(encoded), embedder.texts(keys), keys, keys, ks=(1,))
    objective = SimMIMObjective(federation.cfg.loss, pad_id=federation.tokenizer.pad_id)
    with torch.no_grad():
        batch = encoded.batch(torch.arange(len(encoded)), step_generator(0, 0), num_patches=model.cfg.num_patches,
                              mask_ratio=federation.cfg.train.mask_ratio)
        loss, _ = objective(model, batch)
    return {"test_loss": float(loss),
            "text_to_image_R@1": metrics["text_to_image_R@1"]["value"],
            "image_to_text_R@1": metrics["image_to_text_R@1"]["value"],
            "chance_R@1": metrics["text_to_image_R@1"]["chance"]}


def _party_seed(seed: int, party: int) -> int:
    return int.from_bytes(hashlib.sha256(f"simmim-fed:{seed}:{party}".encode()).digest()[:4], "little")
