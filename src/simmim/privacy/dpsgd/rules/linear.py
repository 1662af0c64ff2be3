"""nn.Linear over any leading dimensions: weight by ghost norm or explicit per-example gradients
(whichever is cheaper for the layer's shape), bias explicitly."""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from simmim.privacy.dpsgd.accumulators import GhostLinearGradient
from simmim.privacy.dpsgd.micro_batch import MicroBatchGradients
from simmim.privacy.dpsgd.rules.base import LayerRule, argument, trainable


def add_token_linear(grads: MicroBatchGradients, weight: nn.Parameter, inputs: torch.Tensor,
                     output_grads: torch.Tensor, shape: torch.Size) -> None:
    """One call's contribution to a weight used as out_t = W a_t: inputs (N, T, d_in), output
    gradients (N, T, d_out), W viewed as `shape` (d_out, d_in). Shared by Linear and Conv2d."""
    accumulator = grads.linear_weight(weight, inputs.shape[1], shape)
    if isinstance(accumulator, GhostLinearGradient):
        accumulator.add(inputs, output_grads)
    else:
        accumulator.add_outer_products(output_grads, inputs)


class LinearRule(LayerRule):
    def capture(self, module: nn.Linear, args: tuple, kwargs: dict[str, Any]) -> tuple[torch.Tensor]:
        return (argument(args, kwargs, 0, "input"),)

    def backward(self, module: nn.Linear, saved: tuple[torch.Tensor], grad_output: torch.Tensor,
                 grads: MicroBatchGradients) -> None:
        output_grads = grads.tokens(grad_output)
        if trainable(module.weight):
            add_token_linear(grads, module.weight, grads.tokens(saved[0]), output_grads, module.weight.shape)
        if trainable(module.bias):
            grads.dense(module.bias).add(output_grads.sum(1))
