"""nn.Embedding: an example's gradient has a row per distinct token id it uses, the sum of the
output gradients of its tokens with that id (tokens equal to `padding_idx` get none)."""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from simmim.privacy.dpsgd.micro_batch import MicroBatchGradients
from simmim.privacy.dpsgd.rules.base import LayerRule, argument, trainable


class EmbeddingRule(LayerRule):
    def problem(self, module: nn.Embedding) -> str | None:
        if module.scale_grad_by_freq:
            return "scale_grad_by_freq=True scales by token counts over the whole batch: set it to False"
        if module.max_norm is not None:
            return "max_norm renormalises rows in place during the forward: set max_norm=None"
        if module.sparse:
            return "sparse=True gradients have no rule: use sparse=False"
        return None

    def capture(self, module: nn.Embedding, args: tuple, kwargs: dict[str, Any],
                output: torch.Tensor) -> tuple[torch.Tensor]:
        return (argument(args, kwargs, 0, "input"),)

    def backward(self, module: nn.Embedding, saved: tuple[torch.Tensor], grad_output: torch.Tensor,
                 grads: MicroBatchGradients) -> None:
        if not trainable(module.weight):
            return
        ids = grads.tokens(saved[0], feature_dims=0)
        token_units = grads.units.unit_of_examples(ids.device)[:, None].expand_as(ids).reshape(-1)
        ids = ids.reshape(-1)
        output_grads = grads.tokens(grad_output).reshape(len(ids), -1)
        if module.padding_idx is not None:
            used = ids != module.padding_idx
            token_units, ids, output_grads = token_units[used], ids[used], output_grads[used]
        grads.sparse_rows(module.weight).add(token_units, ids, output_grads)
