"""The validator names every module the engine cannot clip exactly, with what to use instead;
coupled losses are refused with the reason and the alternative."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from simmim.errors import SimMIMError
from simmim.losses import caption_loss, contrastive_loss, generation_loss, masked_patch_loss
from simmim.models import create_model
from simmim.privacy.dpsgd import (
    CoupledLossError,
    PerExampleClipper,
    UnsupportedModuleError,
    check_loss_is_per_example,
    unsupported_modules,
    validate_module,
)


class BareParameter(nn.Module):
    def __init__(self):
        super().__init__()
        self.gain = nn.Parameter(torch.ones(4))

    def forward(self, x):
        return x * self.gain


class MaskedAttention(nn.Module):
    def __init__(self):
        super().__init__()
        self.proj = nn.Linear(4, 4)
        self.register_buffer("causal", torch.ones(3, 3).tril())


def _bad_model() -> nn.Module:
    model = nn.Module()
    model.stem = nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4))
    model.attention = nn.MultiheadAttention(4, 2)
    model.scale = BareParameter()
    model.masked = MaskedAttention()
    model.grouped = nn.Conv2d(4, 4, 3, groups=2)
    model.freq = nn.Embedding(5, 4, scale_grad_by_freq=True)
    model.norm = nn.GroupNorm(2, 4)
    model.fine = nn.Linear(4, 4)
    return model


def test_validator_names_every_unsupported_module():
    with pytest.raises(UnsupportedModuleError) as info:
        validate_module(_bad_model())
    message = str(info.value)
    assert isinstance(info.value, SimMIMError)
    expected = {
        "stem.1 (BatchNorm2d)": "use nn.LayerNorm",
        "attention (MultiheadAttention)": "use simmim.models.layers.Attention",
        "scale (BareParameter)": "gain",
        "masked (MaskedAttention)": "build masks and constants on the fly",
        "grouped (Conv2d)": "groups=1",
        "freq (Embedding)": "scale_grad_by_freq",
        "norm (GroupNorm)": "use nn.LayerNorm",
    }
    for label, advice in expected.items():
        line = next((line for line in message.splitlines() if label in line), None)
        assert line is not None, f"{label} not named in:\n{message}"
        assert advice in line
    assert "fine" not in message and "stem.0" not in message
    assert "attention.out_proj" not in message  # the whole attention module is reported once
    assert len(unsupported_modules(_bad_model())) == len(expected)


def test_tied_parameters_are_named():
    model = nn.Module()
    model.embedding = nn.Embedding(10, 4)
    model.head = nn.Linear(4, 10, bias=False)
    model.head.weight = model.embedding.weight
    assert unsupported_modules(model) == [
        "one parameter is shared by embedding.weight and head.weight (tied weights): untie them or freeze the parameter"
    ]


def test_frozen_unknown_modules_are_accepted():
    model = nn.Sequential(BareParameter(), nn.Linear(4, 4))
    model[0].gain.requires_grad_(False)
    validate_module(model)


def test_every_simmim_model_size_is_supported():
    for size in ("tiny", "demo"):
        validate_module(create_model(size, vocab_size=32))


def test_engine_validates_on_construction():
    with pytest.raises(UnsupportedModuleError, match="BatchNorm"):
        PerExampleClipper(nn.Sequential(nn.Linear(3, 3), nn.BatchNorm1d(3)), max_grad_norm=1.0)


def test_coupled_loss_is_refused_with_the_alternative():
    with pytest.raises(CoupledLossError) as info:
        check_loss_is_per_example(contrastive_loss)
    message = str(info.value)
    assert "contrastive_loss" in message and "couples" in message
    assert "group clipping" in message and "2C" in message


@pytest.mark.parametrize("loss_fn", [masked_patch_loss, caption_loss, generation_loss])
def test_per_example_losses_pass(loss_fn):
    check_loss_is_per_example(loss_fn)
