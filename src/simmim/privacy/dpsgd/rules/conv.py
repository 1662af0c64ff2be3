"""nn.Conv2d as a Linear over unfolded patches: each output position is a token whose input is
the (C_in * kh * kw) patch it sees, so the Linear formulas apply unchanged."""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from simmim.privacy.dpsgd.micro_batch import MicroBatchGradients
from simmim.privacy.dpsgd.rules.base import LayerRule, argument, trainable
from simmim.privacy.dpsgd.rules.linear import add_token_linear


class Conv2dRule(LayerRule):
    def problem(self, module: nn.Conv2d) -> str | None:
        if module.groups != 1:
            return "a grouped convolution (groups != 1) has no rule: use groups=1"
        if module.padding_mode != "zeros":
            return f"padding_mode={module.padding_mode!r} has no rule: use padding_mode='zeros'"
        if module.padding == "same":
            return "padding='same' has no rule: give the padding as numbers"
        return None

    def capture(self, module: nn.Conv2d, args: tuple, kwargs: dict[str, Any],
                output: torch.Tensor) -> tuple[torch.Tensor]:
        return (argument(args, kwargs, 0, "input"),)

    def backward(self, module: nn.Conv2d, saved: tuple[torch.Tensor], grad_output: torch.Tensor,
                 grads: MicroBatchGradients) -> None:
        # (N, C_out, H', W') -> (N, H'W', C_out): one token per output position.
        output_grads = grads.tokens(grad_output.flatten(2).transpose(1, 2))
        weight = module.weight if trainable(module.weight) else None
        bias = module.bias if trainable(module.bias) else None
        patches = None
        if weight is not None:
            padding = 0 if module.padding == "valid" else module.padding
            unfolded = F.unfold(saved[0], module.kernel_size, module.dilation, padding, module.stride)
            patches = grads.tokens(unfolded.transpose(1, 2))
        shape = torch.Size((module.out_channels, module.weight[0].numel()))
        add_token_linear(grads, weight, bias, patches, output_grads, shape)
