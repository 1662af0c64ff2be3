"""The whole SimMIM model with its non-contrastive per-example losses: the engine's per-unit norms
and clipped sums equal plain autograd's one unit at a time, for image batches (masked and
unmasked views of the image encoder, generation, captioning) and video batches (frames flattened
into the image encoder's batch)."""

from __future__ import annotations

import pytest
import torch

from simmim.data.batches import random_patch_mask
from simmim.losses import LossWeights, SimMIMObjective
from simmim.models import create_model
from simmim.privacy.dpsgd import PerExampleClipper
from simmim.privacy.dpsgd.errors import ClippingUsageError

N = 6
VOCAB = 40
OBJECTIVE = SimMIMObjective(LossWeights(contrastive=0.0))


def _text(n: int, length: int, generator: torch.Generator) -> torch.Tensor:
    tokens = torch.randint(3, VOCAB, (n, length), generator=generator)
    ends = torch.randint(4, length, (n,), generator=generator)
    tokens[torch.arange(length)[None] > ends[:, None]] = 0  # padding after the end token
    tokens[torch.arange(n), ends] = 2
    return tokens


def _batch(model, n: int, *, video: bool, dtype: torch.dtype) -> dict[str, torch.Tensor]:
    generator = torch.Generator().manual_seed(5)
    size, length = model.cfg.image_size, model.cfg.context_length
    batch = {"text": _text(n, length, generator), "caption": _text(n, length, generator), "groups": torch.arange(n)}
    if video:
        batch["frames"] = torch.rand(n, 3, 3, size, size, generator=generator, dtype=dtype)
    else:
        batch["images"] = torch.rand(n, 3, size, size, generator=generator, dtype=dtype)
        batch["mask"] = random_patch_mask(n, model.cfg.num_patches, 0.5, generator)
    return batch


def _model_and_losses(*, video: bool, dtype: torch.dtype = torch.float64, objective: SimMIMObjective = OBJECTIVE,
                      blocks: torch.Tensor | None = None):
    torch.manual_seed(0)
    model = create_model("tiny", vocab_size=VOCAB).to(dtype)
    batch = _batch(model, N, video=video, dtype=dtype)
    if blocks is not None:
        batch["blocks"] = blocks

    def loss_of(idx: torch.Tensor) -> torch.Tensor:
        return objective.weighted(objective.per_example(model, {k: v[idx] for k, v in batch.items()}))

    return model, loss_of


ROUTES = ["auto", "ghost", "per_example"]  # every Linear by cost, all by Gram matrices, all explicitly


@pytest.mark.parametrize("route", ROUTES)
@pytest.mark.parametrize("video", [False, True])
def test_full_model_per_example(video, route, clipping_matches_autograd):
    model, loss_of = _model_and_losses(video=video)
    clipping_matches_autograd(model, loss_of, N, linear_route=route)


@pytest.mark.parametrize("route", ROUTES)
@pytest.mark.parametrize("video", [False, True])
def test_full_model_per_user(video, route, clipping_matches_autograd, random_units):
    model, loss_of = _model_and_losses(video=video)
    clipping_matches_autograd(model, loss_of, N, random_units(N, seed=2), linear_route=route)


@pytest.mark.parametrize("route", ROUTES)
def test_group_clipping_of_the_contrastive_loss(route, clipping_matches_autograd):
    """Units = blocks with in-block negatives: a block's gradient is that of its own examples'
    losses (the learned temperature included), so the same engine clips it exactly."""
    blocks = torch.tensor([5, 2, 5, 2, 2, 8])
    model, loss_of = _model_and_losses(video=False, objective=SimMIMObjective(), blocks=blocks)
    clipping_matches_autograd(model, loss_of, N, blocks, linear_route=route)


def test_full_model_float32_within_1e4(clipping_matches_autograd, random_units):
    model, loss_of = _model_and_losses(video=False, dtype=torch.float32)
    clipping_matches_autograd(model, loss_of, N, random_units(N, seed=3), rtol=1e-4)


def test_micro_batches_add_up_to_the_logical_batch(expected_clipped_gradients):
    """Two micro-batches accumulated = the clipped sum over all units of the step."""
    model, loss_of = _model_and_losses(video=False)
    units = torch.tensor([4, 4, 9, 1, 1, 1])
    expected = expected_clipped_gradients(model, loss_of, units, 1.0)
    with PerExampleClipper(model, max_grad_norm=1.0) as engine:
        engine.zero_grad()
        first, second = torch.tensor([0, 1, 2]), torch.tensor([3, 4, 5])
        norms_first = engine.accumulate_clipped(loss_of(first), units[first])
        norms_second = engine.accumulate_clipped(loss_of(second), units[second])
    assert norms_first.shape == (2,) and norms_second.shape == (1,)
    for name, p in model.named_parameters():
        torch.testing.assert_close(p.grad, expected[name], rtol=1e-6, atol=1e-9)


def test_parts_clip_a_units_images_and_clips_to_their_own_bounds(expected_clipped_gradients):
    """Per-modality clipping: a person's image gradient clipped to C1 in one part, their clip gradient to C2
    in the next; p.grad is the sum of both parts' clipped sums, each unit's contribution at most C1 + C2."""
    torch.manual_seed(0)
    model = create_model("tiny", vocab_size=VOCAB).to(torch.float64)
    images, clips = _batch(model, N, video=False, dtype=torch.float64), _batch(model, N, video=True,
                                                                                 dtype=torch.float64)
    image_units = torch.tensor([0, 0, 1, 2, 3, 3])
    clip_units = torch.tensor([1, 1, 3, 4, 5, 5])  # units 1 and 3 have both; 0, 2 only images; 4, 5 only clips

    def loss_of(batch):
        return lambda idx: OBJECTIVE.weighted(OBJECTIVE.per_example(model, {k: v[idx] for k, v in batch.items()}))

    c_images, c_clips = 0.6, 0.4
    expected_images = expected_clipped_gradients(model, loss_of(images), image_units, c_images)
    expected_clips = expected_clipped_gradients(model, loss_of(clips), clip_units, c_clips)
    with PerExampleClipper(model, max_grad_norm=1.0) as engine:
        engine.zero_grad()
        engine.start_part(c_images)
        engine.accumulate_clipped(loss_of(images)(torch.arange(N)), image_units)
        engine.start_part(c_clips)
        norms = engine.accumulate_clipped(loss_of(clips)(torch.arange(N)), clip_units)
        assert bool((norms > c_clips).all()), "every unit must be clipped for the check to mean anything"
        with pytest.raises(ClippingUsageError, match="already appeared"):  # within a part the rule stands
            engine.accumulate_clipped(loss_of(clips)(torch.arange(2)), clip_units[:2])
    for name, p in model.named_parameters():
        torch.testing.assert_close(p.grad, expected_images[name] + expected_clips[name], rtol=1e-6, atol=1e-9)
