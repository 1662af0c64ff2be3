"""nn.LayerNorm: y = x_hat * w + b, so an example's gradients are sum_t g_t * x_hat_t and sum_t g_t."""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from simmim.privacy.dpsgd import kernels
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
        weight = module.weight if trainable(module.weight) else None
        bias = module.bias if trainable(module.bias) else None
        x, mean, rstd = saved
        if mean is not None and self._add_compiled(x, mean, rstd, grad_output, dims, weight, bias, grads):
            return
        if weight is not None:
            # x_hat is not kept from the forward: it would be one more activation alive for the
            # whole forward and backward.
            if mean is None:
                normalised = F.layer_norm(x, module.normalized_shape, eps=module.eps)
            else:
                normalised = torch.sub(x, mean).mul_(rstd)
            grads.dense(weight).add(grads.per_example(normalised.mul_(grad_output), dims))
        if bias is not None:
            grads.dense(bias).add(grads.per_example(grad_output, dims))

    @staticmethod
    def _add_compiled(x: torch.Tensor, mean: torch.Tensor, rstd: torch.Tensor, grad_output: torch.Tensor, dims: int,
                      weight: nn.Parameter | None, bias: nn.Parameter | None, grads: MicroBatchGradients) -> bool:
        """Both per-example gradients in one pass of the compiled kernel, where it takes the tensors:
        (N, T, d) views of x and the output gradient, (N, T, 1) of the mean and 1/std."""
        compiled = kernels.load()
        if compiled is None:
            return False
        shape = x.shape[x.dim() - dims:]
        x3, g3 = (grads.tokens(t.flatten(-dims), feature_dims=1) for t in (x, grad_output))
        mean3, rstd3 = (grads.tokens(t.flatten(-dims), feature_dims=1) for t in (mean, rstd))
        if not compiled.accepts(x3, g3, mean3, rstd3):
            return False
        weight_grads, bias_grads = compiled.layer_norm_grads(x3, mean3, rstd3, g3)
        if weight is not None:
            grads.dense(weight).add(weight_grads.view(-1, *shape))
        if bias is not None:
            grads.dense(bias).add(bias_grads.view(-1, *shape))
        return True
