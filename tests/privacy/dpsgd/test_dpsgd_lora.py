"""LoRA fine-tuning under DP: the engine clips the adapters of a frozen SimMIM exactly (they are
plain nn.Linear layers), and only the adapters and the modules named to train get gradients."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from simmim.losses import LossWeights, SimMIMObjective
from simmim.models import create_model
from simmim.models.lora import LoRALinear, add_lora

N = 6
VOCAB = 40


def _lora_model(train_modules=()):
    torch.manual_seed(0)
    model = create_model("tiny", vocab_size=VOCAB).to(torch.float64)
    add_lora(model, rank=2, targets=("q_proj", "v_proj", "fc1"), train_modules=train_modules)
    with torch.no_grad():  # as after some fine-tuning: B = 0 would leave every A without a gradient
        for m in model.modules():
            if isinstance(m, LoRALinear):
                m.up.weight.normal_(0.0, 0.1)
    return model


def _loss_of(model, objective, blocks=None):
    generator = torch.Generator().manual_seed(1)
    size, length = model.cfg.image_size, model.cfg.context_length
    text = torch.randint(3, VOCAB, (N, length), generator=generator)
    text[:, -1] = 2
    batch = {"images": torch.rand(N, 3, size, size, generator=generator, dtype=torch.float64),
             "mask": torch.rand(N, model.cfg.num_patches, generator=generator) < 0.5,
             "text": text, "caption": text.clone(), "groups": torch.arange(N)}
    if blocks is not None:
        batch["blocks"] = blocks

    def loss_of(idx: torch.Tensor) -> torch.Tensor:
        return objective.weighted(objective.per_example(model, {k: v[idx] for k, v in batch.items()}))

    return loss_of


@pytest.mark.parametrize("route", ["auto", "ghost", "per_example"])
def test_lora_adapters_are_clipped_exactly_per_user(route, clipping_matches_autograd, random_units):
    model = _lora_model(train_modules=("fusion",))
    objective = SimMIMObjective(LossWeights(contrastive=0.0))
    clipping_matches_autograd(model, _loss_of(model, objective), N, random_units(N, seed=4), linear_route=route)


def test_lora_with_group_clipped_contrastive_loss(clipping_matches_autograd):
    model = _lora_model(train_modules=("fusion.logit_scale",))
    blocks = torch.tensor([3, 1, 3, 1, 1, 0])
    clipping_matches_autograd(model, _loss_of(model, SimMIMObjective(), blocks), N, blocks)


def test_only_adapters_and_named_modules_are_trained():
    model = _lora_model(train_modules=("fusion",))
    trained = {name for name, p in model.named_parameters() if p.requires_grad}
    assert trained and all(".down." in n or ".up." in n or n.startswith("fusion.") for n in trained)
    assert any(n.startswith("fusion.") for n in trained)
    frozen_bases = [m.base for m in model.modules() if isinstance(m, LoRALinear)]
    assert frozen_bases and not any(p.requires_grad for base in frozen_bases for p in base.parameters())
    assert all(isinstance(m, nn.Linear) for m in frozen_bases)
