"""The contract of a layer rule: what to keep from a module's forward call, and how to turn the
gradient of its output into per-unit gradient information for each of its parameters."""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import Any

import torch
from torch import nn

from simmim.privacy.dpsgd.micro_batch import MicroBatchGradients


class LayerRule(ABC):
    """Per-example gradients of one module type's own parameters, from one forward call each.

    The engine runs the module's forward with its parameters detached from autograd (so no
    unclipped parameter gradient is ever formed), keeps what `capture` returns, and calls
    `backward` with the gradient of the module's output during the single backward pass.
    """

    def problem(self, module: nn.Module) -> str | None:
        """Why this particular module cannot be clipped exactly (a setting the rule does not cover)."""
        return None

    def capture(self, module: nn.Module, args: tuple, kwargs: dict[str, Any],
                output: torch.Tensor) -> tuple[torch.Tensor | None, ...]:
        """The tensors of a forward call (its arguments, its output) that `backward` needs (references,
        not copies)."""
        return ()

    @abstractmethod
    def backward(self, module: nn.Module, saved: tuple[torch.Tensor | None, ...], grad_output: torch.Tensor,
                 grads: MicroBatchGradients) -> None:
        """Adds this call's per-example contributions to `grads`, one accumulator per trainable parameter."""


def argument(args: tuple, kwargs: dict[str, Any], position: int, name: str) -> Any:
    """A forward argument passed either by position or by name."""
    return args[position] if len(args) > position else kwargs[name]


def trainable(param: nn.Parameter | None) -> bool:
    return param is not None and param.requires_grad
