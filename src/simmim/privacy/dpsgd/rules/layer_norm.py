"""nn.LayerNorm: y = x_hat * w + b, so an example's gradients are sum_t g_t * x_hat_t and sum_t g_t."""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from simmim.privacy.dpsgd.micro_batch import MicroBatchGradients
from simmim.privacy.dpsgd.rules.base import LayerRule, argument, trainable


class LayerNormRule(LayerRule):
    def capture(self, module: nn.LayerNorm, args: tuple, kwargs: dict[str, Any],
                output: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None, torch.Tensor | None]:
        # The mean and 1/std autograd keeps for the input gradient (N * T numbers each) give x_hat
        # back in one elementwise pass, instead of a second layer norm. Without them (an input that
        # needs no gradient has no such node), x_hat is recomputed.
        node = output.grad_fn
        if type(node).__name__ == "NativeLayerNormBackward0":
            return argument(args, kwargs, 0, "input"), node._saved_result1, node._saved_result2
        return argument(args, kwargs, 0, "input"), None, None

    def backward(self, module: nn.LayerNorm, saved: tuple[torch.Tensor, torch.Tensor | None, torch.Tensor | None],
                 grad_output: torch.Tensor, grads: MicroBatchGradients) -> None:
        dims = len(module.normalized_shape)
        if trainable(module.weight):
            x, mean, rstd = saved
            # x_hat is not kept from the forward: it would be one more activation alive for the
            # whole forward and backward.
            if mean is None:
                normalised = F.layer_norm(x, module.normalized_shape, eps=module.eps)
            else:
                normalised = torch.sub(x, mean).mul_(rstd)
            grads.dense(module.weight).add(grads.per_example(normalised.mul_(grad_output), dims))
        if trainable(module.bias):
            grads.dense(module.bias).add(grads.per_example(grad_output, dims))
