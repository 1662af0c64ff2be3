"""Each supported layer alone: the engine's per-unit norms and clipped sums equal plain autograd's,
per example and per user (units of 1-3 examples), with most units clipped and with none."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from simmim.models.layers import Attention, Block, ClassToken, LearnedQueries, LogitScale, MaskToken, PositionEmbedding
from simmim.privacy.dpsgd.accumulators import DenseUnitGradient, GhostLinearGradient
from simmim.privacy.dpsgd.micro_batch import MicroBatchGradients

N = 7


def _data(*shape: int, seed: int = 0) -> torch.Tensor:
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed))


def _readout(out: torch.Tensor, seed: int = 99) -> torch.Tensor:
    """A per-example loss of a layer output: a fixed random projection through a nonlinearity."""
    weights = _data(*out.shape[1:], seed=seed)
    return (torch.sin(out) * weights).flatten(1).sum(1)


@pytest.fixture(params=["examples", "users"])
def units(request, random_units):
    return None if request.param == "examples" else random_units(N, seed=1)


@pytest.fixture(autouse=True)
def _float64_and_seeded():
    """float64 makes the comparison exact to rounding; layers are built inside tests for that reason."""
    previous = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)
    torch.manual_seed(0)
    yield
    torch.set_default_dtype(previous)


def _spy_routes(monkeypatch) -> list[str]:
    """Records which accumulator each weight call of a Linear or Conv2d got ('ghost' or 'dense')."""
    routes: list[str] = []
    original = MicroBatchGradients.linear_weight

    def linear_weight(self, *args, **kwargs):
        accumulator = original(self, *args, **kwargs)
        routes.append({GhostLinearGradient: "ghost", DenseUnitGradient: "dense"}[type(accumulator)])
        return accumulator

    monkeypatch.setattr(MicroBatchGradients, "linear_weight", linear_weight)
    return routes


@pytest.mark.parametrize(
    ("shape", "make", "route"),
    [
        ((N, 6), lambda: nn.Linear(6, 5), "ghost"),  # (N, d): T = 1, the ghost norm is ||a|| ||g||
        ((N, 9, 3), lambda: nn.Linear(3, 4), "dense"),  # long sequence, small layer: per-example gradients
        ((N, 3, 16), lambda: nn.Linear(16, 12), "ghost"),  # short sequence, wide layer: ghost norm
        ((N, 2, 3, 5), lambda: nn.Linear(5, 4, bias=False), "dense"),  # any leading dimensions
    ],
)
def test_linear(shape, make, route, units, clipping_matches_autograd, monkeypatch):
    routes = _spy_routes(monkeypatch)
    layer, x = make(), _data(*shape)
    clipping_matches_autograd(layer, lambda idx: _readout(layer(x[idx])), N, units)
    assert set(routes) == {route}


@pytest.mark.parametrize("width", [3, 16])  # dense and ghost routes
def test_linear_called_twice_sums_both_calls(width, units, clipping_matches_autograd):
    """Calls of one layer add up in an example's gradient (cross-call terms in the norm)."""
    layer = nn.Linear(width, width)
    x, y = _data(N, 5, width), _data(N, 2, width, seed=1)
    clipping_matches_autograd(layer, lambda idx: _readout(layer(x[idx])) + _readout(layer(y[idx]), seed=5), N, units)


def test_linear_with_frozen_weight_clips_bias_only(units, clipping_matches_autograd):
    layer = nn.Linear(4, 3)
    layer.weight.requires_grad_(False)
    x = _data(N, 5, 4)
    clipping_matches_autograd(layer, lambda idx: _readout(layer(x[idx])), N, units)


@pytest.mark.parametrize(
    ("make", "route"),
    [
        (lambda: nn.Conv2d(3, 4, 3, stride=2, padding=1), "dense"),
        (lambda: nn.Conv2d(2, 3, (3, 2), dilation=(1, 2), bias=False), "dense"),
        (lambda: nn.Conv2d(8, 16, 3, stride=3, padding="valid"), "ghost"),  # 4 positions, wide patches
    ],
)
def test_conv2d(make, route, units, clipping_matches_autograd, monkeypatch):
    routes = _spy_routes(monkeypatch)
    layer = make()
    x = _data(N, layer.in_channels, 7, 6)
    clipping_matches_autograd(layer, lambda idx: _readout(layer(x[idx])), N, units)
    assert set(routes) == {route}


@pytest.mark.parametrize(
    ("shape", "make"),
    [
        ((N, 5, 6), lambda: nn.LayerNorm(6)),
        ((N, 6), lambda: nn.LayerNorm(6, bias=False)),
        ((N, 3, 4, 5), lambda: nn.LayerNorm((4, 5))),
    ],
)
def test_layer_norm(shape, make, units, clipping_matches_autograd):
    layer = make()
    with torch.no_grad():  # away from the identity init, so the weight and bias gradients differ
        for p in layer.parameters():
            p.normal_()
    x = _data(*shape)
    clipping_matches_autograd(layer, lambda idx: _readout(layer(x[idx])), N, units)


@pytest.mark.parametrize("padding_idx", [None, 0])
def test_embedding_with_repeated_tokens(padding_idx, units, clipping_matches_autograd):
    layer = nn.Embedding(6, 4, padding_idx=padding_idx)
    ids = torch.randint(0, 6, (N, 9), generator=torch.Generator().manual_seed(3))  # repeats within examples
    ids[0, :] = 1  # an example using one token everywhere
    single = torch.randint(0, 6, (N,), generator=torch.Generator().manual_seed(4))
    clipping_matches_autograd(
        layer, lambda idx: _readout(layer(ids[idx])) + _readout(layer(single[idx]), seed=7), N, units)


def test_position_embedding_at_two_lengths(units, clipping_matches_autograd):
    layer = PositionEmbedding(8, 4)
    x, y = _data(N, 5, 4), _data(N, 8, 4, seed=1)
    clipping_matches_autograd(layer, lambda idx: _readout(layer(x[idx])) + _readout(layer(y[idx]), seed=3), N, units)


def test_class_token(units, clipping_matches_autograd):
    layer = ClassToken(4)
    x = _data(N, 3, 4)
    clipping_matches_autograd(layer, lambda idx: _readout(layer(x[idx])), N, units)


def test_mask_token(units, clipping_matches_autograd):
    layer = MaskToken(4)
    x = _data(N, 6, 4)
    mask = torch.rand(N, 6, generator=torch.Generator().manual_seed(2)) < 0.5
    mask[:, 0] = True  # every example masks something
    clipping_matches_autograd(layer, lambda idx: _readout(layer(x[idx], mask[idx])), N, units)


def test_learned_queries(units, clipping_matches_autograd):
    layer = LearnedQueries(3, 4)
    targets = _data(N, 3, 4)
    clipping_matches_autograd(layer, lambda idx: _readout(layer(len(idx)) * targets[idx]), N, units)


@pytest.mark.parametrize("init", [1.0, math.log(100.0) + 0.5])  # below the cap, and above it (clamped)
def test_logit_scale(init, units, clipping_matches_autograd):
    layer = LogitScale(init)
    x = _data(N, 5) * 0.1
    bias = nn.Linear(5, 5)  # keeps every unit's gradient nonzero when the clamp stops the scale's
    loss_of = lambda idx: _readout(layer(x[idx]) + bias(x[idx]))  # noqa: E731
    model = nn.ModuleDict({"scale": layer, "bias": bias})
    clipping_matches_autograd(model, loss_of, N, units)


ROUTES = ["ghost", "per_example"]


@pytest.mark.parametrize("route", ROUTES)
@pytest.mark.parametrize("causal", [False, True])
def test_attention(causal, route, units, clipping_matches_autograd):
    """Also checks the q, k and v projections sharing one input Gram on the ghost route."""
    layer = Attention(8, 2)
    x = _data(N, 5, 8)
    clipping_matches_autograd(layer, lambda idx: _readout(layer(x[idx], causal=causal)), N, units,
                              linear_route=route)


@pytest.mark.parametrize("route", ROUTES)
def test_cross_attention_with_context_mask(route, units, clipping_matches_autograd):
    layer = Attention(8, 2, context_dim=6)
    x, context = _data(N, 4, 8), _data(N, 5, 6, seed=1)
    context_mask = torch.ones(N, 5, dtype=torch.bool)
    context_mask[::2, 3:] = False
    loss_of = lambda idx: _readout(layer(x[idx], context[idx], context_mask=context_mask[idx]))  # noqa: E731
    clipping_matches_autograd(layer, loss_of, N, units, linear_route=route)


@pytest.mark.parametrize("route", ROUTES)
def test_block_with_cross_attention_called_twice(route, units, clipping_matches_autograd):
    """One block run on two sequences (as the image encoder runs on the masked and unmasked view)."""
    block = Block(8, 2, context_dim=6)
    x, y, context = _data(N, 4, 8), _data(N, 3, 8, seed=2), _data(N, 3, 6, seed=1)
    loss_of = lambda idx: (_readout(block(x[idx], context[idx], causal=True))  # noqa: E731
                           + _readout(block(y[idx], context[idx]), seed=4))
    clipping_matches_autograd(block, loss_of, N, units, linear_route=route)


@pytest.mark.parametrize("lengths", [(17,), (9, 23)])  # Gram widths past a multiple of 8: split in two blocks
def test_ghost_norm_over_token_counts_split_for_blas(lengths, units, clipping_matches_autograd, monkeypatch):
    """Ghost norms whose Gram matrices are taken in two column blocks (16 + 1, 8 + 1, 16 + 7 tokens),
    within one call and across two calls of the layer."""
    routes = _spy_routes(monkeypatch)
    layer = nn.Linear(12, 10)
    xs = [_data(N, length, 12, seed=k) for k, length in enumerate(lengths)]
    clipping_matches_autograd(
        layer, lambda idx: sum(_readout(layer(x[idx]), seed=k) for k, x in enumerate(xs)), N, units,
        linear_route="ghost")
    assert set(routes) == {"ghost"}


@pytest.mark.parametrize("input_needs_grad", [False, True])
def test_layer_norm_from_saved_statistics_or_recomputed(input_needs_grad, units, clipping_matches_autograd):
    """x_hat comes from the mean and 1/std autograd saved when the input needs a gradient (a layer
    before it), and is recomputed when it does not (no autograd node to read them from)."""
    before, layer = nn.Linear(5, 6), nn.LayerNorm(6)
    before.requires_grad_(input_needs_grad)
    with torch.no_grad():
        for p in layer.parameters():
            p.normal_()
    x = _data(N, 4, 5)
    model = nn.Sequential(before, layer)
    clipping_matches_autograd(model, lambda idx: _readout(model(x[idx])), N, units)


def test_auto_route_counts_an_input_shared_by_several_projections(clipping_matches_autograd, monkeypatch):
    """q, k and v read one input, kept (and Gram'ed) once for the three: at 5 tokens of width 8 that
    makes the ghost route the cheaper for them (5 * (8/3 + 8) < 8 * 8), while out_proj, whose input
    only it reads, keeps explicit per-example gradients (5 * (8 + 8) > 8 * 8). Per example: units
    of several examples make both routes dearer, and move the balance."""
    routes = _spy_routes(monkeypatch)
    layer = Attention(8, 2)
    x = _data(N, 5, 8)
    clipping_matches_autograd(layer, lambda idx: _readout(layer(x[idx])), N)
    assert sorted(routes) == sorted(["dense", "ghost", "ghost", "ghost"] * 2)  # two engine steps (two bounds)


def test_ghost_layers_sharing_an_input_with_and_without_bias(units, clipping_matches_autograd, monkeypatch):
    """A ghost layer's bias is the weight of a constant input 1, folded into its cached input Gram:
    a layer without bias reading the same input must not see those 1s."""
    routes = _spy_routes(monkeypatch)
    with_bias, without_bias = nn.Linear(16, 12), nn.Linear(16, 12, bias=False)
    x = _data(N, 3, 16)

    def loss_of(idx: torch.Tensor) -> torch.Tensor:
        shared = x[idx]  # one tensor read by both layers
        return _readout(with_bias(shared)) + _readout(without_bias(shared), seed=5)

    clipping_matches_autograd(nn.ModuleList([with_bias, without_bias]), loss_of, N, units, linear_route="ghost")
    assert set(routes) == {"ghost"}
