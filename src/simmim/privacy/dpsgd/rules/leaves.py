"""The leaf modules of `simmim.models.layers`, each using its parameter in one simple way, so an
example's gradient is read straight off the output gradient."""

from __future__ import annotations

from typing import Any

import torch

from simmim.models.layers import ClassToken, LearnedQueries, LogitScale, MaskToken, PositionEmbedding
from simmim.privacy.dpsgd.micro_batch import MicroBatchGradients
from simmim.privacy.dpsgd.rules.base import LayerRule, argument


class PositionEmbeddingRule(LayerRule):
    """y = x + weight[:L]: the example's gradient is its (L, d) output gradient, in rows [:L]."""

    def backward(self, module: PositionEmbedding, saved: tuple, grad_output: torch.Tensor,
                 grads: MicroBatchGradients) -> None:
        per_example = grads.per_example(grad_output, feature_dims=2)
        grads.dense(module.weight).add(per_example, leading_rows=per_example.shape[1])


class ClassTokenRule(LayerRule):
    """The token is prepended at position 0: its gradient is the output gradient there."""

    def backward(self, module: ClassToken, saved: tuple, grad_output: torch.Tensor,
                 grads: MicroBatchGradients) -> None:
        grads.dense(module.weight).add(grads.per_example(grad_output[:, 0], feature_dims=1))


class MaskTokenRule(LayerRule):
    """The token replaces masked positions: its gradient is the output gradient summed over them."""

    def capture(self, module: MaskToken, args: tuple, kwargs: dict[str, Any],
                output: torch.Tensor) -> tuple[torch.Tensor]:
        return (argument(args, kwargs, 1, "mask"),)

    def backward(self, module: MaskToken, saved: tuple[torch.Tensor], grad_output: torch.Tensor,
                 grads: MicroBatchGradients) -> None:
        masked = grad_output.masked_fill(~saved[0].unsqueeze(-1), 0.0)
        grads.dense(module.weight).add(grads.per_example(masked, feature_dims=1))


class LearnedQueriesRule(LayerRule):
    """The queries are the output itself, one copy per example: the gradient is the output gradient."""

    def backward(self, module: LearnedQueries, saved: tuple, grad_output: torch.Tensor,
                 grads: MicroBatchGradients) -> None:
        grads.dense(module.weight).add(grads.per_example(grad_output, feature_dims=2))


class LogitScaleRule(LayerRule):
    """y = x * s(w): the example's gradient is s'(w) * sum(g * x) over its entries."""

    def capture(self, module: LogitScale, args: tuple, kwargs: dict[str, Any],
                output: torch.Tensor) -> tuple[torch.Tensor]:
        return (argument(args, kwargs, 0, "logits"),)

    def backward(self, module: LogitScale, saved: tuple[torch.Tensor], grad_output: torch.Tensor,
                 grads: MicroBatchGradients) -> None:
        # s'(w) is taken from the module's own forward at x = 1 (which returns s(w)), so the clamp
        # and its zero slope above the cap stay defined in one place.
        with torch.enable_grad():
            scale = type(module).forward(module, grad_output.new_ones(()))
            (slope,) = torch.autograd.grad(scale, module.weight)
        grads.dense(module.weight).add(grads.per_example(grad_output * saved[0], feature_dims=0) * slope)
