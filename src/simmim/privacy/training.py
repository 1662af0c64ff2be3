"""DP-SGD training: Poisson sampling of privacy units, per-unit clipping, Gaussian noise, and the
accounting that turns them into an (epsilon, delta) guarantee.

One step: every privacy unit (a person under `user`, a record under `example`) joins the
logical batch independently with probability q, bringing all its records; the batch is cut into
micro-batches of whole clipping units; the engine adds each clipping unit's clipped gradient
(norm at most C) into `p.grad`; Gaussian noise N(0, sigma^2 C^2) is added once to every
parameter; the sum is divided by the expected number of clipping units. Sampling, masks and
noise come from a generator seeded from the OS CSPRNG, never from the run's seed.

The in-batch contrastive loss couples examples, so per-unit clipping alone bounds nothing for
it. When its weight is non-zero, units are put in blocks by a keyed hash of the unit id (fixed
for the run, so adding or removing a unit changes only its own block), negatives come only from
the same block, and the clipping unit is the block. A block's clipped gradient moves by at most
2C when one unit joins or leaves it: the accountant is told sensitivity 2. docs/privacy.md
states the argument for every loss.
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import asdict, dataclass

import torch

from simmim.config import Config
from simmim.data.batches import EncodedSet
from simmim.errors import ConfigError
from simmim.privacy.accounting import SubsampledGaussian, calibrate_noise, epsilon
from simmim.privacy.dpsgd.engine import PerExampleClipper


@dataclass(frozen=True)
class PrivacyPlan:
    """What a private run does and the guarantee it buys, fixed before training starts."""

    unit: str
    units: int
    sample_rate: float
    steps: int
    noise_multiplier: float
    max_grad_norm: float
    sensitivity: float
    blocks: int  # 0: no blocks (each unit is clipped alone)
    epsilon: float
    delta: float
    accountant: str

    def event(self, steps: int | None = None) -> SubsampledGaussian:
        return SubsampledGaussian(sample_rate=self.sample_rate, noise_multiplier=self.noise_multiplier,
                                  steps=self.steps if steps is None else steps, sensitivity=self.sensitivity)

    def spent(self, steps: int) -> float:
        """Epsilon at `delta` after `steps` steps (0 before the first)."""
        if steps <= 0:
            return 0.0
        return epsilon(sample_rate=self.sample_rate, noise_multiplier=self.noise_multiplier, steps=steps,
                       delta=self.delta, accountant=self.accountant, sensitivity=self.sensitivity)

    def to_dict(self) -> dict:
        return asdict(self)


def unit_ids(records, unit: str) -> list[str]:
    return [r.subject_id if unit == "user" else r.record_id for r in records]


def resolve_unit(cfg: Config, records) -> str:
    unit = cfg.privacy.unit
    if unit == "auto":
        has_subjects = all(r.subject_id and not r.subject_id.startswith("record:") for r in records)
        return "user" if has_subjects else "example"
    if unit not in ("user", "example"):
        raise ConfigError(f"privacy.unit must be 'user', 'example' or 'auto', got {unit!r}")
    return unit


def plan_privacy(cfg: Config, records) -> PrivacyPlan:
    """Sampling rate, blocks and the noise multiplier that spends exactly the target budget."""
    pc = cfg.privacy
    if not (pc.epsilon > 0 and 0 < pc.delta < 1 and pc.max_grad_norm > 0):
        raise ConfigError("privacy.epsilon and privacy.max_grad_norm must be positive and privacy.delta in (0, 1)")
    unit = resolve_unit(cfg, records)
    n_units = len(set(unit_ids(records, unit)))
    q = pc.sample_rate or min(1.0, cfg.train.batch_size / len(records))
    if not 0 < q <= 1:
        raise ConfigError(f"privacy.sample_rate must be in (0, 1], got {q}")
    coupled = cfg.loss.contrastive > 0
    blocks = max(1, round(q * n_units / max(1, pc.units_per_block))) if coupled else 0
    sensitivity = 2.0 if coupled else 1.0
    sigma = calibrate_noise(epsilon=pc.epsilon, delta=pc.delta, sample_rate=q, steps=cfg.train.steps,
                            accountant=pc.accountant, sensitivity=sensitivity)
    return PrivacyPlan(unit=unit, units=n_units, sample_rate=q, steps=cfg.train.steps, noise_multiplier=sigma,
                       max_grad_norm=pc.max_grad_norm, sensitivity=sensitivity, blocks=blocks,
                       epsilon=pc.epsilon, delta=pc.delta, accountant=pc.accountant)


def _keyed_bucket(name: str, key: bytes, buckets: int) -> int:
    digest = hashlib.blake2b(name.encode(), key=key, digest_size=8).digest()
    return int.from_bytes(digest, "little") % buckets


class PrivateStep:
    """The `step_fn` of the training loop under DP-SGD (it draws its own Poisson batch)."""

    def __init__(self, model, train_set: EncodedSet, plan: PrivacyPlan, *, micro_batch_size: int,
                 mask_ratio: float):
        self.plan = plan
        self.train_set = train_set
        self.micro_batch_size = micro_batch_size
        self.mask_ratio = mask_ratio
        self.num_patches = model.cfg.num_patches
        self.engine = PerExampleClipper(model, max_grad_norm=plan.max_grad_norm)
        self.parameters = [p for p in model.parameters() if p.requires_grad]
        self.generator = torch.Generator().manual_seed(int.from_bytes(os.urandom(8), "little"))
        names = unit_ids(train_set.records, plan.unit)
        unit_names = sorted(set(names))
        index = {name: i for i, name in enumerate(unit_names)}
        self.unit_of_record = torch.tensor([index[name] for name in names])
        order = torch.argsort(self.unit_of_record, stable=True)
        counts = torch.bincount(self.unit_of_record, minlength=len(unit_names))
        self.records_of_unit = list(torch.split(order, counts.tolist()))
        key = os.urandom(16)  # fixed for the run: a unit always falls in the same block
        self.block_of_unit = (torch.tensor([_keyed_bucket(n, key, plan.blocks) for n in unit_names])
                              if plan.blocks else None)
        self.normaliser = plan.blocks or plan.sample_rate * plan.units

    def _micro_batches(self, sampled_units: torch.Tensor) -> list[tuple[torch.Tensor, torch.Tensor]]:
        """(record indices, clipping unit per record) in micro-batches of whole clipping units."""
        clip_of_unit = self.block_of_unit if self.block_of_unit is not None else torch.arange(self.plan.units)
        clip_ids = clip_of_unit[sampled_units]
        batches, current, size = [], [], 0
        for clip_id in torch.unique(clip_ids).tolist():
            records = torch.cat([self.records_of_unit[u] for u in sampled_units[clip_ids == clip_id].tolist()])
            if current and size + len(records) > self.micro_batch_size:
                batches.append(current)
                current, size = [], 0
            current.append((records, clip_id))
            size += len(records)
        if current:
            batches.append(current)
        return [(torch.cat([r for r, _ in mb]), torch.cat([torch.full((len(r),), c) for r, c in mb]))
                for mb in batches]

    def __call__(self, model, objective, _batches) -> dict:
        sampled = torch.nonzero(torch.rand(self.plan.units, generator=self.generator) < self.plan.sample_rate)[:, 0]
        self.engine.zero_grad()
        totals, parts = [], {}
        for records, clip_units in self._micro_batches(sampled):
            batch = self.train_set.batch(records, self.generator, num_patches=self.num_patches,
                                         mask_ratio=self.mask_ratio)
            if self.block_of_unit is not None:
                batch["blocks"] = clip_units
            losses = objective.per_example(model, batch)
            total = objective.weighted(losses)
            self.engine.accumulate_clipped(loss_per_example=total, units=clip_units)
            totals.append(total.detach())
            for name, value in losses.items():
                parts.setdefault(name, []).append(value.detach())
        std = self.plan.noise_multiplier * self.plan.max_grad_norm
        for p in self.parameters:
            noise = torch.normal(0.0, std, size=p.shape, generator=self.generator)
            clipped_sum = p.grad if p.grad is not None else torch.zeros_like(p)  # None: nobody was sampled
            p.grad = (clipped_sum + noise) / self.normaliser
        record = {"loss": float(torch.cat(totals).mean()) if totals else float("nan"),
                  "sampled_units": int(len(sampled)), "examples": int(sum(len(t) for t in totals))}
        record.update({name: float(torch.cat(values).mean()) for name, values in parts.items()})
        return record

    def close(self) -> None:
        self.engine.detach()

