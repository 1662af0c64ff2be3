"""The engine's contract around the clipping itself: what sits in p.grad, and the misuses it
refuses instead of clipping wrongly."""

from __future__ import annotations

import copy

import pytest
import torch
from torch import nn

from simmim.privacy.dpsgd import ClippingUsageError, PerExampleClipper


def _model() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(3, 4), nn.Tanh(), nn.Linear(4, 2))


def _losses(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
    return model(x).square().sum(1)


def test_grad_holds_the_clipped_sum_and_zeros_where_no_unit_reaches():
    model = nn.ModuleDict({"used": nn.Linear(3, 2), "unused": nn.Linear(3, 2)})
    x = torch.randn(5, 3)
    with PerExampleClipper(model, max_grad_norm=1e6) as engine:  # nothing clipped: the plain sum
        engine.zero_grad()
        engine.accumulate_clipped(model["used"](x).square().sum(1))
    expected = torch.autograd.grad(model["used"](x).square().sum(), model["used"].weight)[0]
    torch.testing.assert_close(model["used"].weight.grad, expected)
    assert torch.equal(model["unused"].weight.grad, torch.zeros(2, 3))


def test_norms_order_follows_sorted_unit_ids():
    model, x = _model(), torch.randn(4, 3)
    with PerExampleClipper(model, max_grad_norm=1.0) as engine:
        engine.zero_grad()
        by_example = engine.accumulate_clipped(_losses(model, x))
        engine.zero_grad()
        by_unit = engine.accumulate_clipped(_losses(model, x), torch.tensor([30, 10, 20, 0]))
    torch.testing.assert_close(by_unit, by_example[[3, 1, 2, 0]])


def test_a_unit_may_not_span_micro_batches_of_one_step():
    model, x = _model(), torch.randn(4, 3)
    with PerExampleClipper(model, max_grad_norm=1.0) as engine:
        engine.zero_grad()
        engine.accumulate_clipped(_losses(model, x[:2]), torch.tensor([1, 2]))
        with pytest.raises(ClippingUsageError, match=r"units \[2\] already appeared"):
            engine.accumulate_clipped(_losses(model, x[2:]), torch.tensor([2, 3]))
        engine.zero_grad()  # a new step: unit 2 may come back
        engine.accumulate_clipped(_losses(model, x[2:]), torch.tensor([2, 3]))
        model.zero_grad(set_to_none=True)  # so may it after the optimiser cleared the gradients
        engine.accumulate_clipped(_losses(model, x[2:]), torch.tensor([2, 3]))


def test_plain_backward_is_refused_while_attached_and_works_after_detach():
    model, x = _model(), torch.randn(4, 3)
    engine = PerExampleClipper(model, max_grad_norm=1.0)
    with pytest.raises(ClippingUsageError, match="outside accumulate_clipped"):
        _losses(model, x).sum().backward()
    engine.detach()
    model.zero_grad(set_to_none=True)
    _losses(model, x).sum().backward()
    assert all(p.grad is not None for p in model.parameters())


def test_forward_run_before_the_engine_is_refused():
    model, x = _model(), torch.randn(4, 3)
    losses = _losses(model, x)
    with PerExampleClipper(model, max_grad_norm=1.0) as engine, pytest.raises(ClippingUsageError, match="0.weight"):
        engine.accumulate_clipped(losses)


def test_input_changed_in_place_after_forward_is_refused():
    model, x = nn.Linear(3, 2), torch.randn(4, 3)
    with PerExampleClipper(model, max_grad_norm=1.0) as engine:
        losses = model(x).square().sum(1)
        x.mul_(2.0)
        with pytest.raises(ClippingUsageError, match="modified in place"):
            engine.accumulate_clipped(losses)


def test_layer_batch_must_be_the_loss_batch():
    model = nn.Linear(3, 2)
    with PerExampleClipper(model, max_grad_norm=1.0) as engine:
        losses = model(torch.randn(5, 3)).sum()[None].expand(3)  # 3 losses from a 5-row layer call
        with pytest.raises(ClippingUsageError, match=r"\(root\) \(Linear\): .* 3 examples of the loss.*\(5, 2\)"):
            engine.accumulate_clipped(losses)


@pytest.mark.parametrize(
    ("losses", "units", "match"),
    [
        (torch.ones(3, 2, requires_grad=True), None, "a \\(N,\\) vector"),
        (torch.ones(3), None, "requires grad"),
        (torch.ones(3, requires_grad=True), torch.tensor([1.0, 2.0, 3.0]), "integer tensor"),
        (torch.ones(3, requires_grad=True), torch.tensor([1, 2]), "shape \\(3,\\)"),
    ],
)
def test_bad_arguments_are_explained(losses, units, match):
    engine = PerExampleClipper(nn.Linear(2, 2), max_grad_norm=1.0)
    with pytest.raises(ClippingUsageError, match=match):
        engine.accumulate_clipped(losses, units)


def test_bound_must_be_positive_and_route_known():
    with pytest.raises(ClippingUsageError, match="positive"):
        PerExampleClipper(nn.Linear(2, 2), max_grad_norm=0.0)
    with pytest.raises(ClippingUsageError, match="linear_route must be one of auto, ghost, per_example"):
        PerExampleClipper(nn.Linear(2, 2), max_grad_norm=1.0, linear_route="fast")


@pytest.mark.parametrize("route", ["ghost", "per_example"])
def test_one_engine_over_steps_of_varying_size_stays_exact(route):
    """State that lives across micro-batches (call counts, units seen) never leaks into a result,
    including after a forward whose loss was never used."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(6, 8), nn.GELU(), nn.LayerNorm(8), nn.Linear(8, 3))
    reference = copy.deepcopy(model)  # before the engine attaches its hooks
    x = torch.randn(12, 4, 6)

    def losses(net, rows):
        return net(x[rows]).sin().sum((1, 2))

    engine = PerExampleClipper(model, max_grad_norm=0.7, linear_route=route)
    losses(model, torch.arange(3))  # a forward whose loss is dropped
    for rows, units in [(torch.arange(5), torch.tensor([0, 0, 1, 2, 2])), (torch.arange(5, 12), None)]:
        engine.zero_grad()
        engine.accumulate_clipped(losses(model, rows), units)
        ids = units if units is not None else torch.arange(len(rows))
        per_unit = []
        for unit in torch.unique(ids):
            reference.zero_grad(set_to_none=True)
            losses(reference, rows[ids == unit]).sum().backward()
            per_unit.append([p.grad.clone() for p in reference.parameters()])
        norms = torch.stack([torch.sqrt(sum(g.square().sum() for g in grads)) for grads in per_unit])
        factors = (0.7 / norms).clamp(max=1.0)
        for i, param in enumerate(model.parameters()):
            expected = sum(f * grads[i] for f, grads in zip(factors, per_unit))
            torch.testing.assert_close(param.grad, expected, rtol=1e-5, atol=1e-6)
