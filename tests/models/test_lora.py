"""LoRA adapters: the wrapped model starts as the original, merging keeps the function, and
misnamed targets are refused instead of silently training nothing."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from simmim.errors import ConfigError
from simmim.models import create_model
from simmim.models.lora import LoRALinear, add_lora, merge_lora, train_only, trainable_parameters


def _embed(model, images, text):
    with torch.no_grad():
        return model.encode_image(images), model.encode_text(text)


def _inputs(model):
    generator = torch.Generator().manual_seed(0)
    images = torch.rand(3, 3, model.cfg.image_size, model.cfg.image_size, generator=generator)
    text = torch.randint(3, 30, (3, model.cfg.context_length), generator=generator)
    text[:, -1] = 2
    return images, text


def test_wrapped_model_starts_as_the_original_and_trains_few_parameters():
    torch.manual_seed(0)
    model = create_model("tiny", vocab_size=30).eval()
    images, text = _inputs(model)
    before = _embed(model, images, text)
    total = trainable_parameters(model)
    names = add_lora(model, rank=2)
    assert names and all(n.endswith(("q_proj", "v_proj")) for n in names)
    after = _embed(model, images, text)
    for b, a in zip(before, after):
        torch.testing.assert_close(a, b)
    adapters = sum(m.down.weight.numel() + m.up.weight.numel() for m in model.modules() if isinstance(m, LoRALinear))
    assert trainable_parameters(model) == adapters < total / 10


def test_merge_keeps_the_function_and_gives_plain_linear_layers():
    torch.manual_seed(0)
    model = create_model("tiny", vocab_size=30).eval()
    add_lora(model, rank=3, alpha=5.0, targets=("q_proj", "out_proj", "fc2"))
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, LoRALinear):
                m.up.weight.normal_(0.0, 0.2)
    images, text = _inputs(model)
    adapted = _embed(model, images, text)
    merge_lora(model)
    assert not any(isinstance(m, LoRALinear) for m in model.modules())
    assert all(p.requires_grad for p in model.parameters())
    for got, want in zip(_embed(model, images, text), adapted):
        torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-6)
    fresh = create_model("tiny", vocab_size=30)
    fresh.load_state_dict(model.state_dict())  # the merged model saves and loads as an ordinary one


def test_train_modules_are_trained_whole_and_not_adapted():
    model = create_model("tiny", vocab_size=30)
    names = add_lora(model, rank=2, train_modules=("text",))
    assert not any(n.startswith("text.") for n in names)
    text_params = [p for n, p in model.named_parameters() if n.startswith("text.")]
    assert text_params and all(p.requires_grad for p in text_params)


@pytest.mark.parametrize("call", [
    lambda m: add_lora(m, rank=2, targets=("qproj",)),
    lambda m: add_lora(m, rank=2, train_modules=("no_such_module",)),
    lambda m: train_only(m, ("decoder.heads",)),
    lambda m: add_lora(m, rank=0),
])
def test_misnamed_targets_and_bad_rank_are_refused(call):
    model = create_model("tiny", vocab_size=30)
    with pytest.raises(ConfigError):
        call(model)


def test_lora_linear_is_a_sum_of_base_and_scaled_update():
    base = nn.Linear(5, 4)
    layer = LoRALinear(base, rank=2, alpha=6.0)
    with torch.no_grad():
        layer.up.weight.normal_()
    x = torch.randn(7, 3, 5)
    expected = base(x) + 3.0 * (x @ layer.down.weight.T @ layer.up.weight.T)
    torch.testing.assert_close(layer(x), expected)
