"""The compiled kernels. Ghost norms equal the Gram identity computed in float64, for any shape
(widths that are not multiples of its 16-float vectors, token counts that are not multiples of its
4 x 4 blocks, one token, many), with and without the bias's constant input, for one call with
itself and for two calls. Per-example LayerNorm gradients equal their definition in float64. The
engine's float32 results with the kernels equal plain autograd's and the torch path's."""

from __future__ import annotations

import ctypes
import os
import platform
import shutil
from collections.abc import Callable

import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

from simmim.privacy.dpsgd import kernels

N = 7


def _reference(a, b, g, h, bias: float) -> torch.Tensor:
    """sum_{t,s} (a_t.b_s + bias)(g_t.h_s) in float64, and the sum of its terms' magnitudes (the scale
    of float32 rounding in a sum that may cancel)."""
    a, b, g, h = (t.double() for t in (a, b, g, h))
    inputs = a @ b.transpose(1, 2) + bias
    grads = g @ h.transpose(1, 2)
    return (inputs * grads).sum((1, 2)), (inputs.abs() * grads.abs()).sum((1, 2))


def test_the_kernel_is_built_wherever_there_is_a_c_compiler():
    if os.environ.get(kernels.SWITCH) == "0":
        assert kernels.load() is None
    else:
        assert (kernels.load() is not None) == (shutil.which(os.environ.get("CC", "cc")) is not None)


@settings(max_examples=60, deadline=None)
@given(units=st.integers(1, 5), ta=st.integers(1, 72), tb=st.integers(1, 72), d_in=st.integers(1, 70),
       d_out=st.integers(1, 70), bias=st.sampled_from([0.0, 1.0]), same=st.booleans(), seed=st.integers(0, 2**16))
def test_kernel_equals_the_gram_identity(units, ta, tb, d_in, d_out, bias, same, seed):
    kernel = kernels.load()
    assert kernel is not None
    generator = torch.Generator().manual_seed(seed)
    a, g = torch.randn(units, ta, d_in, generator=generator), torch.randn(units, ta, d_out, generator=generator)
    if same:
        b, h = a, g
    else:
        b, h = torch.randn(units, tb, d_in, generator=generator), torch.randn(units, tb, d_out, generator=generator)
    expected, scale = _reference(a, b, g, h, bias)
    got = kernel.ghost_norms(a, b, g, h, bias, same=same).double()
    assert bool(((got - expected).abs() <= 1e-5 * scale + 1e-6).all()), (got - expected).abs().max()


def _layer_norm_inputs(n: int, t: int, d: int, seed: int) -> tuple[torch.Tensor, ...]:
    """x, the mean and 1/std autograd keeps for it (N, T, 1), and an output gradient."""
    generator = torch.Generator().manual_seed(seed)
    x = (torch.randn(n, t, d, generator=generator) * 3 + 1).requires_grad_()
    node = F.layer_norm(x, (d,)).grad_fn
    return x.detach(), node._saved_result1, node._saved_result2, torch.randn(n, t, d, generator=generator)


def _check_layer_norm_grads(kernel: kernels.CompiledKernels, n: int, t: int, d: int, seed: int) -> None:
    x, mean, rstd, g = _layer_norm_inputs(n, t, d, seed)
    weight, bias = kernel.layer_norm_grads(x, mean, rstd, g)
    x_hat = (x.double() - mean.double()) * rstd.double()
    torch.testing.assert_close(weight.double(), (g.double() * x_hat).sum(1), rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(bias.double(), g.double().sum(1), rtol=1e-5, atol=1e-5)


@settings(max_examples=30, deadline=None)
@given(n=st.integers(1, 5), t=st.integers(1, 40), d=st.integers(1, 70), seed=st.integers(0, 2**16))
def test_layer_norm_kernel_equals_its_definition(n, t, d, seed):
    kernel = kernels.load()
    assert kernel is not None
    _check_layer_norm_grads(kernel, n, t, d, seed)


def test_layer_norm_kernel_refuses_mismatched_shapes():
    kernel = kernels.load()
    x, mean, rstd, g = _layer_norm_inputs(2, 3, 4, 0)
    with pytest.raises(ValueError, match="mismatched shapes"):
        kernel.layer_norm_grads(x, mean, rstd, g[:, :2])


def test_the_portable_build_agrees_too(tmp_path):
    """The kernel's vectors are AVX-512 registers on this machine; built for a baseline CPU instead, the
    same source takes its portable path (memcpy loads, lane sums by halves), checked here."""
    compiler = shutil.which(os.environ.get("CC", "cc"))
    assert compiler is not None
    baseline = ["-march=x86-64-v2"] if platform.machine() == "x86_64" else []
    flags = tuple(f for f in kernels.FLAGS if not f.startswith("-march")) + tuple(baseline)
    target = tmp_path / "portable.so"
    kernels.build(compiler, target, flags)
    kernel = kernels.CompiledKernels(ctypes.CDLL(str(target)))
    generator = torch.Generator().manual_seed(0)
    for units, ta, tb, d_in, d_out in [(3, 17, 17, 96, 44), (2, 5, 23, 21, 64), (4, 1, 1, 3, 70)]:
        a, g = torch.randn(units, ta, d_in, generator=generator), torch.randn(units, ta, d_out, generator=generator)
        b, h = torch.randn(units, tb, d_in, generator=generator), torch.randn(units, tb, d_out, generator=generator)
        for same in (True, False):
            args = (a, a, g, g) if same else (a, b, g, h)
            expected, scale = _reference(*args, 1.0)
            got = kernel.ghost_norms(*args, 1.0, same=same).double()
            assert bool(((got - expected).abs() <= 1e-5 * scale + 1e-6).all())
    _check_layer_norm_grads(kernel, 3, 17, 44, seed=0)


def test_kernel_reads_views_and_refuses_mismatched_shapes():
    kernel = kernels.load()
    assert kernel is not None
    a, g = torch.randn(3, 20, 8).transpose(1, 2), torch.randn(3, 8, 5)  # a is a non-contiguous view
    expected, _ = _reference(a, a, g, g, 1.0)
    torch.testing.assert_close(kernel.ghost_norms(a, a, g, g, 1.0, same=True).double(), expected, rtol=1e-5, atol=1e-6)
    with pytest.raises(ValueError, match="mismatched shapes"):
        kernel.ghost_norms(a, a, torch.randn(3, 7, 5), torch.randn(3, 7, 5), 0.0, same=False)


@pytest.fixture(params=["examples", "users"])
def units(request, random_units):
    return None if request.param == "examples" else random_units(N, seed=1)


def _two_call_layer() -> tuple[nn.Module, Callable[[torch.Tensor], torch.Tensor]]:
    """A float32 Linear with a bias, called on a 17-token and a 5-token input (a pair of calls, the
    cross term included), wide enough for the ghost route, widths not multiples of 16."""
    torch.manual_seed(0)
    layer = nn.Linear(21, 18)
    x, y = torch.randn(N, 17, 21), torch.randn(N, 5, 21)
    readout = torch.randn(18)

    def loss_of(idx: torch.Tensor) -> torch.Tensor:
        return (torch.tanh(layer(x[idx])) @ readout).sum(1) + (torch.sin(layer(y[idx])) @ readout).sum(1)

    return layer, loss_of


def test_engine_with_the_kernel_matches_autograd_in_float32(units, clipping_matches_autograd):
    assert kernels.load() is not None
    layer, loss_of = _two_call_layer()
    clipping_matches_autograd(layer, loss_of, N, units, rtol=1e-4, linear_route="ghost")


def test_engine_with_and_without_the_kernel_agree(units, engine_clipping, monkeypatch):
    layer, loss_of = _two_call_layer()
    with_kernel = engine_clipping(layer, loss_of, N, units, 1.0, "ghost")
    monkeypatch.setattr(kernels, "load", lambda: None)
    without = engine_clipping(layer, loss_of, N, units, 1.0, "ghost")
    torch.testing.assert_close(with_kernel[0], without[0], rtol=1e-5, atol=0.0)
    for name in without[1]:
        torch.testing.assert_close(with_kernel[1][name], without[1][name], rtol=1e-5, atol=1e-6)


def _layer_norm_model() -> tuple[nn.Module, Callable[[torch.Tensor], torch.Tensor]]:
    """A float32 LayerNorm over 2 dimensions, on 9 tokens, between Linear layers (its input needs a
    gradient, so autograd keeps the mean and 1/std the kernel reads)."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(7, 7), nn.LayerNorm((3, 7)), nn.Flatten(-2), nn.Linear(21, 5))
    x = torch.randn(N, 9, 3, 7) * 2 + 0.5

    def loss_of(idx: torch.Tensor) -> torch.Tensor:
        return torch.tanh(model(x[idx])).sum((1, 2))

    return model, loss_of


def test_engine_layer_norm_with_the_kernel_matches_autograd(units, clipping_matches_autograd):
    assert kernels.load() is not None
    model, loss_of = _layer_norm_model()
    clipping_matches_autograd(model, loss_of, N, units, rtol=1e-4)


def test_engine_layer_norm_with_and_without_the_kernel_agree(units, engine_clipping, monkeypatch):
    model, loss_of = _layer_norm_model()
    calls = []
    original = kernels.CompiledKernels.layer_norm_grads
    monkeypatch.setattr(kernels.CompiledKernels, "layer_norm_grads",
                        lambda self, *args: calls.append(args[0].shape) or original(self, *args))
    with_kernel = engine_clipping(model, loss_of, N, units, 1.0, "auto")
    assert calls and all(shape == (N, 9, 21) for shape in calls)  # the kernel served, on (N, T, d) views
    monkeypatch.setattr(kernels, "load", lambda: None)
    without = engine_clipping(model, loss_of, N, units, 1.0, "auto")
    torch.testing.assert_close(with_kernel[0], without[0], rtol=1e-5, atol=0.0)
    for name in without[1]:
        torch.testing.assert_close(with_kernel[1][name], without[1][name], rtol=1e-5, atol=1e-6)


@pytest.fixture
def fresh_load():
    """`kernels.load` remembers its answer: forget it around a test that changes the environment."""
    kernels.load.cache_clear()
    yield kernels.load
    kernels.load.cache_clear()


def test_no_compiler_or_a_failed_build_leaves_the_torch_path(fresh_load, monkeypatch, caplog, tmp_path):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    monkeypatch.setenv("CC", "no-such-compiler")
    assert fresh_load() is None
    fresh_load.cache_clear()
    monkeypatch.setenv("CC", "false")  # found, but every build fails
    assert fresh_load() is None
    assert "compiled kernels unavailable" in caplog.text
    assert not list((tmp_path / "simmim").iterdir())  # no half-built library left behind


def test_a_cache_directory_others_may_write_to_is_refused(tmp_path):
    shared = tmp_path / "shared"
    shared.mkdir()
    shared.chmod(0o777)
    with pytest.raises(PermissionError, match="not private"):
        kernels._private_dir(shared)
    assert kernels._private_dir(tmp_path / "mine") == tmp_path / "mine"
