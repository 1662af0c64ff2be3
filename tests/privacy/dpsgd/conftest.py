"""The reference every engine test compares against: plain autograd, one privacy unit at a time."""

from __future__ import annotations

from collections.abc import Callable

import pytest
import torch
from torch import nn

from simmim.privacy.dpsgd import PerExampleClipper

LossOf = Callable[[torch.Tensor], torch.Tensor]  # example indices (k,) -> their per-example losses (k,)


def reference_unit_gradients(model: nn.Module, loss_of: LossOf, units: torch.Tensor) -> list[dict[str, torch.Tensor]]:
    """Each unit's gradient (in ascending unit id order) from its own forward and backward pass."""
    params = [(name, p) for name, p in model.named_parameters() if p.requires_grad]
    out = []
    for unit in torch.unique(units):
        model.zero_grad(set_to_none=True)
        loss_of(torch.nonzero(units == unit).flatten()).sum().backward()
        out.append({name: p.grad.clone() if p.grad is not None else torch.zeros_like(p) for name, p in params})
    model.zero_grad(set_to_none=True)
    return out


def flat_norms(per_unit: list[dict[str, torch.Tensor]]) -> torch.Tensor:
    return torch.stack([torch.sqrt(sum(g.square().sum() for g in grads.values())) for grads in per_unit])


def expected_clipped_sum(per_unit: list[dict[str, torch.Tensor]], max_grad_norm: float) -> dict[str, torch.Tensor]:
    factors = (max_grad_norm / flat_norms(per_unit)).clamp(max=1.0)
    return {name: sum(f * grads[name] for f, grads in zip(factors, per_unit)) for name in per_unit[0]}


def engine_result(model: nn.Module, loss_of: LossOf, n: int, units: torch.Tensor | None, max_grad_norm: float,
                  linear_route: str = "auto") -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """(norms, p.grad by name) after one engine step over all n examples."""
    with PerExampleClipper(model, max_grad_norm=max_grad_norm, linear_route=linear_route) as engine:
        engine.zero_grad()
        norms = engine.accumulate_clipped(loss_of(torch.arange(n)), units)
    grads = {name: p.grad.clone() for name, p in model.named_parameters() if p.requires_grad}
    model.zero_grad(set_to_none=True)
    return norms, grads


def assert_close_grads(got: dict[str, torch.Tensor], expected: dict[str, torch.Tensor], rtol: float) -> None:
    assert got.keys() == expected.keys()
    scale = max(float(g.abs().max()) for g in expected.values())
    for name in expected:
        torch.testing.assert_close(got[name], expected[name], rtol=rtol, atol=rtol * scale,
                                   msg=lambda m, n=name: f"{n}: {m}")


def check_clipping(model: nn.Module, loss_of: LossOf, n: int, units: torch.Tensor | None = None,
                   rtol: float = 1e-6, linear_route: str = "auto") -> torch.Tensor:
    """Asserts the engine's per-unit norms and clipped sums equal plain autograd's, for a bound C
    that clips every unit and for one that clips none. Returns the reference norms."""
    reference_units = torch.arange(n) if units is None else units
    per_unit = reference_unit_gradients(model, loss_of, reference_units)
    norms = flat_norms(per_unit)
    assert bool((norms > 0).all()), "every unit must have a gradient for the check to mean anything"
    for max_grad_norm in (0.5 * float(norms.min()), 2.0 * float(norms.max())):
        got_norms, got_grads = engine_result(model, loss_of, n, units, max_grad_norm, linear_route)
        torch.testing.assert_close(got_norms, norms, rtol=rtol, atol=0.0)
        assert_close_grads(got_grads, expected_clipped_sum(per_unit, max_grad_norm), rtol)
    return norms


@pytest.fixture(autouse=True)
def _one_thread():
    """These models are tiny: one thread is faster, and immune to oversubscription on a shared machine."""
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


@pytest.fixture
def clipping_matches_autograd() -> Callable[..., torch.Tensor]:
    """`check_clipping(model, loss_of, n, units=None, rtol=1e-6, linear_route="auto")`: see `check_clipping`."""
    return check_clipping


@pytest.fixture
def engine_clipping() -> Callable[..., tuple[torch.Tensor, dict[str, torch.Tensor]]]:
    """`engine_result(model, loss_of, n, units, max_grad_norm, linear_route)`: the engine's norms and clipped
    sums alone, for comparing two engine settings with each other."""
    return engine_result


@pytest.fixture
def random_units() -> Callable[[int, int], torch.Tensor]:
    """`make(n, seed)`: shuffled unit ids, each unit holding 1 to 3 examples, ids not contiguous."""

    def make(n: int, seed: int = 0) -> torch.Tensor:
        generator = torch.Generator().manual_seed(seed)
        sizes: list[int] = []
        while sum(sizes) < n:
            sizes.append(min(int(torch.randint(1, 4, (), generator=generator)), n - sum(sizes)))
        ids = torch.cat([torch.full((size,), 7 * k + 3) for k, size in enumerate(sizes)])
        return ids[torch.randperm(n, generator=generator)]

    return make


@pytest.fixture
def expected_clipped_gradients() -> Callable[..., dict[str, torch.Tensor]]:
    """`expected(model, loss_of, units, max_grad_norm)`: sum_u clip(g_u) by parameter name, from autograd."""

    def expected(model: nn.Module, loss_of: LossOf, units: torch.Tensor,
                 max_grad_norm: float) -> dict[str, torch.Tensor]:
        return expected_clipped_sum(reference_unit_gradients(model, loss_of, units), max_grad_norm)

    return expected
