"""Properties over random unit assignments and bounds, on a model mixing every rule kind
(sparse embedding rows, dense small parameters, both Linear routes)."""

from __future__ import annotations

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from torch import nn

from simmim.models.layers import ClassToken, PositionEmbedding
from simmim.privacy.dpsgd import PerExampleClipper

N = 6


class MixedModel(nn.Module):
    def __init__(self):
        super().__init__()
        self.embedding = nn.Embedding(10, 12)
        self.cls = ClassToken(12)
        self.position = PositionEmbedding(8, 12)
        self.norm = nn.LayerNorm(12)
        self.narrow = nn.Linear(12, 3)  # T = 6 tokens: per-example gradients
        self.wide = nn.Linear(9, 40)  # T = 1: ghost norm

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        x = self.norm(self.position(self.cls(self.embedding(ids))))
        narrow = torch.tanh(self.narrow(x))
        return self.wide(narrow[:, :3].flatten(1)).sin().sum(1) + narrow.square().sum((1, 2))


@pytest.fixture(scope="module")
def setup():
    torch.manual_seed(0)
    model = MixedModel().double()
    ids = torch.randint(0, 10, (N, 5), generator=torch.Generator().manual_seed(1))
    params = [(name, p) for name, p in model.named_parameters()]
    # Per-example gradients by plain autograd, once; unit gradients are their sums.
    per_example = []
    for i in range(N):
        model.zero_grad(set_to_none=True)
        model(ids[i:i + 1]).sum().backward()
        per_example.append(torch.cat([p.grad.flatten() for _, p in params]))
    model.zero_grad(set_to_none=True)
    return model, ids, torch.stack(per_example)


def _engine_step(model, ids, units, max_grad_norm):
    with PerExampleClipper(model, max_grad_norm=max_grad_norm) as engine:
        engine.zero_grad()
        norms = engine.accumulate_clipped(model(ids), units)
    flat = torch.cat([p.grad.flatten() for p in model.parameters()])
    model.zero_grad(set_to_none=True)
    return norms, flat


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(assignment=st.lists(st.integers(-3, 40), min_size=N, max_size=N), log_bound=st.floats(-3.0, 3.0))
def test_random_units_match_summed_per_example_gradients(setup, assignment, log_bound):
    model, ids, per_example = setup
    units = torch.tensor(assignment)
    ids_sorted, example_unit = torch.unique(units, return_inverse=True)
    per_unit = torch.zeros(len(ids_sorted), per_example.shape[1], dtype=per_example.dtype)
    per_unit.index_add_(0, example_unit, per_example)
    max_grad_norm = 10.0**log_bound
    expected_norms = per_unit.norm(dim=1)
    expected_sum = ((max_grad_norm / expected_norms).clamp(max=1.0)[:, None] * per_unit).sum(0)

    norms, flat = _engine_step(model, ids, units, max_grad_norm)

    torch.testing.assert_close(norms, expected_norms, rtol=1e-9, atol=0.0)
    torch.testing.assert_close(flat, expected_sum, rtol=1e-9, atol=1e-12)


@settings(max_examples=15, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(assignment=st.lists(st.integers(0, 3), min_size=N, max_size=N))
def test_each_unit_contributes_at_most_the_bound(setup, assignment):
    """Removing one unit's examples changes the clipped sum by at most C (the sensitivity)."""
    model, ids, _ = setup
    units = torch.tensor(assignment)
    max_grad_norm = 0.05
    _, full = _engine_step(model, ids, units, max_grad_norm)
    for unit in torch.unique(units):
        keep = units != unit
        if not keep.any():
            continue
        _, without = _engine_step(model, ids[keep], units[keep], max_grad_norm)
        assert float((full - without).norm()) <= max_grad_norm * (1 + 1e-9)
