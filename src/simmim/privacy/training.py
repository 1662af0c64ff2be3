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

Clips train beside images in a second part of each step, with the bound C split between the two
(see `PrivateStep`): a unit's image and clip gradients are clipped separately to bounds that add
up to C, so everything above holds with the same C.
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
    video_norm_share: float  # share of max_grad_norm for a unit's clips (0: no clips; images get the rest)
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


def plan_privacy(cfg: Config, records, clips=()) -> PrivacyPlan:
    """Sampling rate, blocks and the noise multiplier that spends exactly the target budget, for the
    image ``records`` and the ``clips`` trained beside them (a unit brings both)."""
    pc = cfg.privacy
    if not (pc.epsilon > 0 and 0 < pc.delta < 1 and pc.max_grad_norm > 0):
        raise ConfigError("privacy.epsilon and privacy.max_grad_norm must be positive and privacy.delta in (0, 1)")
    everything = [*records, *clips]
    unit = resolve_unit(cfg, everything)
    n_units = len(set(unit_ids(everything, unit)))
    q = pc.sample_rate or min(1.0, cfg.train.batch_size / len(everything))
    if not 0 < q <= 1:
        raise ConfigError(f"privacy.sample_rate must be in (0, 1], got {q}")
    if clips and not 0 < pc.video_norm_share < 1:
        raise ConfigError(f"privacy.video_norm_share must be in (0, 1), got {pc.video_norm_share}")
    coupled = cfg.loss.contrastive > 0
    blocks = max(1, round(q * n_units / max(1, pc.units_per_block))) if coupled else 0
    sensitivity = 2.0 if coupled else 1.0
    sigma = calibrate_noise(epsilon=pc.epsilon, delta=pc.delta, sample_rate=q, steps=cfg.train.steps,
                            accountant=pc.accountant, sensitivity=sensitivity)
    return PrivacyPlan(unit=unit, units=n_units, sample_rate=q, steps=cfg.train.steps, noise_multiplier=sigma,
                       max_grad_norm=pc.max_grad_norm, sensitivity=sensitivity, blocks=blocks,
                       video_norm_share=pc.video_norm_share if clips else 0.0,
                       epsilon=pc.epsilon, delta=pc.delta, accountant=pc.accountant)


def _keyed_bucket(name: str, key: bytes, buckets: int) -> int:
    digest = hashlib.blake2b(name.encode(), key=key, digest_size=8).digest()
    return int.from_bytes(digest, "little") % buckets


@dataclass
class _Part:
    """The records of one kind (images or clips) in a step, clipped per unit to their own bound."""

    name: str
    records: EncodedSet
    max_grad_norm: float
    records_of_unit: list[torch.Tensor]  # by unit index; empty where the unit has none of this kind


class PrivateStep:
    """The `step_fn` of the training loop under DP-SGD (it draws its own Poisson batch).

    With clips beside the images, a sampled unit brings both, and the step has two parts: each
    unit's image gradient is clipped to (1 - s) C and its clip gradient to s C (s =
    `privacy.video_norm_share`), so the unit's whole contribution has norm at most C and the noise
    and the accounting are those of a single bound C. (One backward over images and clips together
    is not possible: their forward passes run different encoders on different numbers of rows.)
    """

    def __init__(self, model, train_set: EncodedSet, plan: PrivacyPlan, *, micro_batch_size: int,
                 mask_ratio: float, video_set: EncodedSet | None = None):
        self.plan = plan
        self.micro_batch_size = micro_batch_size
        self.mask_ratio = mask_ratio
        self.num_patches = model.cfg.num_patches
        self.engine = PerExampleClipper(model, max_grad_norm=plan.max_grad_norm)
        self.parameters = [p for p in model.parameters() if p.requires_grad]
        self.generator = torch.Generator().manual_seed(int.from_bytes(os.urandom(8), "little"))
        kinds = [("images", train_set)] + ([("clips", video_set)] if video_set is not None and len(video_set) else [])
        names = {kind: unit_ids(records.records, plan.unit) for kind, records in kinds}
        unit_names = sorted({name for kind_names in names.values() for name in kind_names})
        if len(unit_names) != plan.units:
            raise ConfigError(f"the privacy plan counts {plan.units} units but the records hold {len(unit_names)}: "
                              f"plan with the images and clips together")
        index = {name: i for i, name in enumerate(unit_names)}
        if (len(kinds) == 2) != (plan.video_norm_share > 0):
            raise ConfigError("the privacy plan and the step disagree on whether clips are trained: plan with "
                              "the images and clips together")
        share = plan.video_norm_share
        shares = {"images": 1.0} if len(kinds) == 1 else {"images": 1 - share, "clips": share}
        self.parts = []
        for kind, records in kinds:
            unit_of_record = torch.tensor([index[name] for name in names[kind]])
            order = torch.argsort(unit_of_record, stable=True)
            counts = torch.bincount(unit_of_record, minlength=len(unit_names))
            self.parts.append(_Part(kind, records, plan.max_grad_norm * shares[kind],
                                    list(torch.split(order, counts.tolist()))))
        key = os.urandom(16)  # fixed for the run: a unit always falls in the same block
        self.block_of_unit = (torch.tensor([_keyed_bucket(n, key, plan.blocks) for n in unit_names])
                              if plan.blocks else None)
        self.normaliser = plan.blocks or plan.sample_rate * plan.units

    def _micro_batches(self, sampled_units: torch.Tensor, part: int = 0) -> list[tuple[torch.Tensor, torch.Tensor]]:
        """(record indices, clipping unit per record) of one part, in micro-batches of whole clipping units."""
        records_of_unit = self.parts[part].records_of_unit
        clip_of_unit = self.block_of_unit if self.block_of_unit is not None else torch.arange(self.plan.units)
        clip_ids = clip_of_unit[sampled_units]
        batches, current, size = [], [], 0
        for clip_id in torch.unique(clip_ids).tolist():
            records = torch.cat([records_of_unit[u] for u in sampled_units[clip_ids == clip_id].tolist()])
            if not len(records):
                continue  # the units of this clipping unit have no records of this kind
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
        for number, part in enumerate(self.parts):
            self.engine.start_part(part.max_grad_norm)
            prefix = "video_" if part.name == "clips" else ""
            for records, clip_units in self._micro_batches(sampled, number):
                batch = part.records.batch(records, self.generator, num_patches=self.num_patches,
                                           mask_ratio=self.mask_ratio)
                if self.block_of_unit is not None:
                    batch["blocks"] = clip_units
                losses = objective.per_example(model, batch)
                total = objective.weighted(losses)
                self.engine.accumulate_clipped(loss_per_example=total, units=clip_units)
                totals.append(total.detach())
                for name, value in losses.items():
                    parts.setdefault(prefix + name, []).append(value.detach())
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

