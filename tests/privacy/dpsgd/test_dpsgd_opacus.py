"""Against an independent implementation: Opacus's per-sample gradients (GradSampleModule, hooks
mode) on a model of Linear, LayerNorm and Embedding give the same per-example norms as ours."""

from __future__ import annotations

import copy
import warnings

import pytest
import torch
from torch import nn

from simmim.privacy.dpsgd import PerExampleClipper

opacus = pytest.importorskip("opacus")


class TokenModel(nn.Module):
    def __init__(self):
        super().__init__()
        self.embedding = nn.Embedding(20, 8)
        self.hidden = nn.Linear(8, 16)
        self.norm = nn.LayerNorm(16)
        self.head = nn.Linear(16, 4)  # (N, T, 16) -> (N, T, 4)
        self.pooled = nn.Linear(16, 32)  # (N, 16) -> (N, 32): the T = 1 case

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        x = self.norm(torch.nn.functional.gelu(self.hidden(self.embedding(ids))))
        return self.head(x).square().mean((1, 2)) + self.pooled(x.mean(1)).sin().sum(1)


def test_per_example_norms_match_opacus_hooks():
    torch.manual_seed(0)
    ids = torch.randint(0, 20, (9, 11))
    ours_model = TokenModel().double()
    opacus_model = copy.deepcopy(ours_model)

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # Opacus warns about its own defaults
        sampled = opacus.GradSampleModule(opacus_model, batch_first=True, loss_reduction="sum")
        sampled(ids).sum().backward()
    opacus_norms = torch.stack(
        [p.grad_sample.flatten(1).norm(dim=1) for p in opacus_model.parameters()]).norm(dim=0)

    with PerExampleClipper(ours_model, max_grad_norm=1.0) as engine:
        engine.zero_grad()
        our_norms = engine.accumulate_clipped(ours_model(ids))

    torch.testing.assert_close(our_norms, opacus_norms, rtol=1e-10, atol=0.0)
