"""nn.LayerNorm: y = x_hat * w + b, so an example's gradients are sum_t g_t * x_hat_t and sum_t g_t."""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from simmim.privacy.dpsgd.micro_batch import MicroBatchGradients
from simmim.privacy.dpsgd.rules.base import LayerRule, argument, trainable


class LayerNormRule(LayerRule):
    def capture(self, module: nn.LayerNorm, args: tuple, kwargs: dict[str, Any]) -> tuple[torch.Tensor]:
        return (argument(args, kwargs, 0, "input"),)

    def backward(self, module: nn.LayerNorm, saved: tuple[torch.Tensor], grad_output: torch.Tensor,
                 grads: MicroBatchGradients) -> None:
        dims = len(module.normalized_shape)
        if trainable(module.weight):
            # x_hat is recomputed here (one cheap pass) rather than kept from the forward: it would
            # otherwise be one more activation alive for the whole forward and backward.
            normalised = F.layer_norm(saved[0], module.normalized_shape, eps=module.eps)
            grads.dense(module.weight).add(grads.per_example(grad_output * normalised, dims))
        if trainable(module.bias):
            grads.dense(module.bias).add(grads.per_example(grad_output, dims))
