"""nn.Linear over any leading dimensions: weight by ghost norm or explicit per-example gradients
(whichever is cheaper for the layer's shape); bias with the ghost weight, or explicitly."""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from simmim.privacy.dpsgd.accumulators import GhostLinearGradient
from simmim.privacy.dpsgd.micro_batch import MicroBatchGradients
from simmim.privacy.dpsgd.rules.base import LayerRule, argument, trainable


def add_token_linear(grads: MicroBatchGradients, weight: nn.Parameter | None, bias: nn.Parameter | None,
                     inputs: torch.Tensor | None, output_grads: torch.Tensor, shape: torch.Size) -> None:
    """One call's contribution to a layer out_t = W a_t + b: inputs (N, T, d_in), output gradients
    (N, T, d_out), W viewed as `shape` (d_out, d_in); `weight` and `bias` are None where frozen.
    Shared by Linear and Conv2d."""
    if weight is not None:
        accumulator = grads.linear_weight(weight, inputs.shape[1], shape, grads.readers(inputs), bias)
        if isinstance(accumulator, GhostLinearGradient):
            accumulator.add(inputs, output_grads)
            if accumulator.bias is not None:  # it takes the bias as the weight of a constant input
                return
        else:
            accumulator.add_outer_products(output_grads, inputs)
    if bias is not None:
        grads.dense(bias).add(output_grads.sum(1))


class LinearRule(LayerRule):
    def capture(self, module: nn.Linear, args: tuple, kwargs: dict[str, Any],
                output: torch.Tensor) -> tuple[torch.Tensor]:
        return (argument(args, kwargs, 0, "input"),)

    def backward(self, module: nn.Linear, saved: tuple[torch.Tensor], grad_output: torch.Tensor,
                 grads: MicroBatchGradients) -> None:
        output_grads = grads.tokens(grad_output)
        weight = module.weight if trainable(module.weight) else None
        bias = module.bias if trainable(module.bias) else None
        add_token_linear(grads, weight, bias, grads.tokens(saved[0]), output_grads, module.weight.shape)
