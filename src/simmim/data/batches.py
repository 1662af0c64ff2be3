"""Records encoded once into tensors, and batches drawn from them deterministically.

Every random choice of a training step (which records, which reference caption, which patches
are masked) is a function of (seed, step) alone, so a run resumed from a checkpoint at step k
continues exactly as if it had never stopped.
"""

from __future__ import annotations

import numpy as np
import torch

from simmim.data.records import Record


class EncodedSet:
    """Pixels as uint8 and every reference caption as token ids, ready to batch."""

    def __init__(self, records: list[Record], tokenizer, context_length: int):
        if not records:
            raise ValueError("EncodedSet needs at least one record")
        self.records = records
        self.is_video = records[0].is_video
        pixels = np.stack([r.frames if self.is_video else r.image for r in records])
        self.pixels = torch.from_numpy(pixels)  # (N, [T,] H, W, 3) uint8
        max_refs = max(len(r.captions) for r in records)
        self.n_refs = torch.tensor([len(r.captions) for r in records])
        refs = [list(r.captions) + [r.captions[0]] * (max_refs - len(r.captions)) for r in records]
        flat = tokenizer.encode_batch([c for row in refs for c in row], context_length)
        self.references = torch.from_numpy(flat).view(len(records), max_refs, context_length)
        canonical_ids: dict[str, int] = {}
        self.groups = torch.tensor([canonical_ids.setdefault(r.caption, len(canonical_ids)) for r in records])

    def __len__(self) -> int:
        return len(self.records)

    def pixels_float(self, indices) -> torch.Tensor:
        """(n, [T,] 3, H, W) float in [0, 1]."""
        x = self.pixels[indices].float().div_(255.0)
        return x.movedim(-1, -3)

    @property
    def canonical(self) -> torch.Tensor:
        return self.references[:, 0]

    def batch(self, indices: torch.Tensor, generator: torch.Generator, *, num_patches: int = 0,
              mask_ratio: float = 0.0) -> dict[str, torch.Tensor]:
        """A training batch: pixels, a random reference caption for alignment, the canonical one
        for captioning, group ids (same canonical caption = positives), and a patch mask."""
        choice = (torch.rand(len(indices), generator=generator) * self.n_refs[indices]).long()
        batch = {
            "text": self.references[indices, choice],
            "caption": self.references[indices, 0],
            "groups": self.groups[indices],
        }
        if self.is_video:
            batch["frames"] = self.pixels_float(indices)
        else:
            batch["images"] = self.pixels_float(indices)
            if num_patches and mask_ratio > 0:
                batch["mask"] = random_patch_mask(len(indices), num_patches, mask_ratio, generator)
        return batch


def random_patch_mask(n: int, num_patches: int, ratio: float, generator: torch.Generator) -> torch.Tensor:
    """SimMIM masking: square units of 2x2 patches on grids of 8x8 patches or more (single patches
    on coarser grids), a fixed fraction of units masked in every example.
    Returns (n, num_patches) bool, row-major patches."""
    side = int(round(num_patches**0.5))
    unit = 2 if side >= 8 and side % 2 == 0 else 1
    units_side = side // unit
    n_units = units_side**2
    n_masked = max(1, int(round(ratio * n_units)))
    order = torch.rand(n, n_units, generator=generator).argsort(dim=1)
    unit_mask = torch.zeros(n, n_units, dtype=torch.bool)
    unit_mask.scatter_(1, order[:, :n_masked], True)
    grid = unit_mask.view(n, units_side, 1, units_side, 1).expand(n, units_side, unit, units_side, unit)
    return grid.reshape(n, num_patches)


def step_generator(seed: int, step: int, stream: int = 0) -> torch.Generator:
    """The generator for one step's random choices, derived from (seed, step, stream) only."""
    return torch.Generator().manual_seed(int(np.random.SeedSequence([seed, step, stream]).generate_state(1)[0]))


def step_indices(n: int, batch_size: int, seed: int, step: int) -> torch.Tensor:
    """Record indices for a step: epochs are seeded permutations, walked batch by batch
    (the tail of an epoch that does not fill a batch is dropped)."""
    per_epoch = max(1, n // batch_size)
    epoch, position = divmod(step, per_epoch)
    order = torch.randperm(n, generator=step_generator(seed, epoch, stream=1))
    return order[position * batch_size: (position + 1) * batch_size]
