"""Low-rank adapters (LoRA, Hu et al. 2021) for fine-tuning a trained model with few parameters.

`add_lora` freezes a model and wraps chosen `nn.Linear` layers as W x + (alpha / r) B A x, with
A (r x d_in) and B (d_out x r) trainable and B starting at zero, so the wrapped model computes
exactly what the original did until the first update. Under DP-SGD this matters twice: the noise
added per step grows with the square root of the number of trained parameters, and A and B are
plain `nn.Linear` layers, so the per-example clipping engine handles them with its Linear rule
(sequences included) and needs nothing new. `merge_lora` folds the adapters back into the
weights, so a fine-tuned model is saved and served as an ordinary one.
"""

from __future__ import annotations

import math
from collections.abc import Iterable

import torch
from torch import nn

from simmim.errors import ConfigError


class LoRALinear(nn.Module):
    """A frozen `nn.Linear` plus a trainable rank-`rank` update scaled by `alpha / rank`."""

    def __init__(self, base: nn.Linear, rank: int, alpha: float):
        super().__init__()
        if rank <= 0:
            raise ConfigError(f"LoRA rank must be positive, got {rank}")
        self.base = base
        base.requires_grad_(False)
        self.down = nn.Linear(base.in_features, rank, bias=False, device=base.weight.device, dtype=base.weight.dtype)
        self.up = nn.Linear(rank, base.out_features, bias=False, device=base.weight.device, dtype=base.weight.dtype)
        nn.init.kaiming_uniform_(self.down.weight, a=math.sqrt(5))
        nn.init.zeros_(self.up.weight)
        self.scale = alpha / rank

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.base(x) + self.up(self.down(x)) * self.scale

    def merged(self) -> nn.Linear:
        """A plain `nn.Linear` computing the same function (weights W + scale * B A)."""
        merged = nn.Linear(self.base.in_features, self.base.out_features, bias=self.base.bias is not None,
                           device=self.base.weight.device, dtype=self.base.weight.dtype)
        with torch.no_grad():
            merged.weight.copy_(self.base.weight + self.scale * self.up.weight @ self.down.weight)
            if self.base.bias is not None:
                merged.bias.copy_(self.base.bias)
        return merged


def add_lora(model: nn.Module, *, rank: int, alpha: float = 0.0, targets: Iterable[str] = ("q_proj", "v_proj"),
             train_modules: Iterable[str] = ()) -> list[str]:
    """Freezes `model`, then wraps every `nn.Linear` whose name ends with one of `targets` in a
    `LoRALinear`, and unfreezes the modules whose qualified name starts with one of `train_modules`.

    Args:
        model: a trained model (modified in place).
        rank: the adapters' rank r.
        alpha: the update is scaled by alpha / r; 0 means alpha = 2r.
        targets: last components of the names of the Linear layers to adapt (e.g. "q_proj").
        train_modules: name prefixes of modules trained in full (e.g. a task head).

    Returns:
        The qualified names of the wrapped layers.

    Raises:
        ConfigError: a target or train module matches nothing (a typo would silently train nothing).
    """
    targets = tuple(targets)
    train_modules = train_only(model, train_modules)

    def fully_trained(name: str) -> bool:
        return any(name == p or name.startswith(p + ".") for p in train_modules)

    linears = [name for name, m in model.named_modules() if isinstance(m, nn.Linear)]
    missing = [t for t in targets if not any(n.rpartition(".")[2] == t for n in linears)]
    if missing:
        raise ConfigError(f"LoRA target(s) {', '.join(missing)} match no nn.Linear layer of the model")
    # Layers inside a fully trained module are trained as they are, not adapted.
    names = [n for n in linears if n.rpartition(".")[2] in targets and not fully_trained(n)]
    for name in names:
        parent_name, _, child = name.rpartition(".")
        parent = model.get_submodule(parent_name)
        setattr(parent, child, LoRALinear(getattr(parent, child), rank, alpha or 2.0 * rank))
    return names


def train_only(model: nn.Module, modules: Iterable[str]) -> tuple[str, ...]:
    """Freezes every parameter of `model` except those of the named modules (qualified names).

    Raises:
        ConfigError: a name matches no module (a typo would silently train nothing).
    """
    modules = tuple(modules)
    known = {name for name, _ in model.named_modules()}
    unknown = [m for m in modules if m not in known]
    if unknown:
        raise ConfigError(f"finetune.train_modules: {', '.join(map(repr, unknown))} name no module of the model")
    model.requires_grad_(False)
    for name in modules:
        model.get_submodule(name).requires_grad_(True)
    return modules


def merge_lora(model: nn.Module) -> nn.Module:
    """Replaces every `LoRALinear` by its merged `nn.Linear` and makes every parameter trainable
    again (in place; returns the model)."""
    wrapped = [name for name, m in model.named_modules() if isinstance(m, LoRALinear)]
    for name in wrapped:
        parent_name, _, child = name.rpartition(".")
        parent = model.get_submodule(parent_name)
        setattr(parent, child, getattr(parent, child).merged())
    model.requires_grad_(True)
    return model


def trainable_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters() if p.requires_grad)
