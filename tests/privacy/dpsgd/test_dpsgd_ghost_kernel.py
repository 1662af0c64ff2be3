"""The compiled ghost-norm kernel: equal to the Gram identity computed in float64, for any shape
(widths that are not multiples of its 16-float vectors, one token, many), with and without the
bias's constant input, for one call with itself and for two calls; and the engine's float32
results with it equal plain autograd's and the torch path's."""

from __future__ import annotations

import ctypes
import os
import platform
import shutil
from collections.abc import Callable

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

from simmim.privacy.dpsgd import ghost_kernel

N = 7


def _reference(a, b, g, h, bias: float) -> torch.Tensor:
    """sum_{t,s} (a_t.b_s + bias)(g_t.h_s) in float64, and the sum of its terms' magnitudes (the scale
    of float32 rounding in a sum that may cancel)."""
    a, b, g, h = (t.double() for t in (a, b, g, h))
    inputs = a @ b.transpose(1, 2) + bias
    grads = g @ h.transpose(1, 2)
    return (inputs * grads).sum((1, 2)), (inputs.abs() * grads.abs()).sum((1, 2))


def test_the_kernel_is_built_wherever_there_is_a_c_compiler():
    if os.environ.get(ghost_kernel.SWITCH) == "0":
        assert ghost_kernel.load() is None
    else:
        assert (ghost_kernel.load() is not None) == (shutil.which(os.environ.get("CC", "cc")) is not None)


@settings(max_examples=60, deadline=None)
@given(units=st.integers(1, 5), ta=st.integers(1, 72), tb=st.integers(1, 72), d_in=st.integers(1, 70),
       d_out=st.integers(1, 70), bias=st.sampled_from([0.0, 1.0]), same=st.booleans(), seed=st.integers(0, 2**16))
def test_kernel_equals_the_gram_identity(units, ta, tb, d_in, d_out, bias, same, seed):
    kernel = ghost_kernel.load()
    assert kernel is not None
    generator = torch.Generator().manual_seed(seed)
    a, g = torch.randn(units, ta, d_in, generator=generator), torch.randn(units, ta, d_out, generator=generator)
    if same:
        b, h = a, g
    else:
        b, h = torch.randn(units, tb, d_in, generator=generator), torch.randn(units, tb, d_out, generator=generator)
    expected, scale = _reference(a, b, g, h, bias)
    got = kernel(a, b, g, h, bias, same=same).double()
    assert bool(((got - expected).abs() <= 1e-5 * scale + 1e-6).all()), (got - expected).abs().max()


def test_the_portable_build_agrees_too(tmp_path):
    """The kernel's vectors are AVX-512 registers on this machine; built for a baseline CPU instead, the
    same source takes its portable path (memcpy loads, lane sums by halves), checked here."""
    compiler = shutil.which(os.environ.get("CC", "cc"))
    assert compiler is not None
    baseline = ["-march=x86-64-v2"] if platform.machine() == "x86_64" else []
    flags = tuple(f for f in ghost_kernel.FLAGS if not f.startswith("-march")) + tuple(baseline)
    target = tmp_path / "portable.so"
    ghost_kernel.build(compiler, target, flags)
    kernel = ghost_kernel.GhostNormKernel(ctypes.CDLL(str(target)))
    generator = torch.Generator().manual_seed(0)
    for units, ta, tb, d_in, d_out in [(3, 17, 17, 96, 44), (2, 5, 23, 21, 64), (4, 1, 1, 3, 70)]:
        a, g = torch.randn(units, ta, d_in, generator=generator), torch.randn(units, ta, d_out, generator=generator)
        b, h = torch.randn(units, tb, d_in, generator=generator), torch.randn(units, tb, d_out, generator=generator)
        for same in (True, False):
            args = (a, a, g, g) if same else (a, b, g, h)
            expected, scale = _reference(*args, 1.0)
            got = kernel(*args, 1.0, same=same).double()
            assert bool(((got - expected).abs() <= 1e-5 * scale + 1e-6).all())


def test_kernel_reads_views_and_refuses_mismatched_shapes():
    kernel = ghost_kernel.load()
    assert kernel is not None
    a, g = torch.randn(3, 20, 8).transpose(1, 2), torch.randn(3, 8, 5)  # a is a non-contiguous view
    expected, _ = _reference(a, a, g, g, 1.0)
    torch.testing.assert_close(kernel(a, a, g, g, 1.0, same=True).double(), expected, rtol=1e-5, atol=1e-6)
    with pytest.raises(ValueError, match="mismatched shapes"):
        kernel(a, a, torch.randn(3, 7, 5), torch.randn(3, 7, 5), 0.0, same=False)


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
    assert ghost_kernel.load() is not None
    layer, loss_of = _two_call_layer()
    clipping_matches_autograd(layer, loss_of, N, units, rtol=1e-4, linear_route="ghost")


def test_engine_with_and_without_the_kernel_agree(units, engine_clipping, monkeypatch):
    layer, loss_of = _two_call_layer()
    with_kernel = engine_clipping(layer, loss_of, N, units, 1.0, "ghost")
    monkeypatch.setattr(ghost_kernel, "load", lambda: None)
    without = engine_clipping(layer, loss_of, N, units, 1.0, "ghost")
    torch.testing.assert_close(with_kernel[0], without[0], rtol=1e-5, atol=0.0)
    for name in without[1]:
        torch.testing.assert_close(with_kernel[1][name], without[1][name], rtol=1e-5, atol=1e-6)


@pytest.fixture
def fresh_load():
    """`ghost_kernel.load` remembers its answer: forget it around a test that changes the environment."""
    ghost_kernel.load.cache_clear()
    yield ghost_kernel.load
    ghost_kernel.load.cache_clear()


def test_no_compiler_or_a_failed_build_leaves_the_torch_path(fresh_load, monkeypatch, caplog, tmp_path):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    monkeypatch.setenv("CC", "no-such-compiler")
    assert fresh_load() is None
    fresh_load.cache_clear()
    monkeypatch.setenv("CC", "false")  # found, but every build fails
    assert fresh_load() is None
    assert "ghost-norm kernel unavailable" in caplog.text
    assert not list((tmp_path / "simmim").iterdir())  # no half-built library left behind


def test_a_cache_directory_others_may_write_to_is_refused(tmp_path):
    shared = tmp_path / "shared"
    shared.mkdir()
    shared.chmod(0o777)
    with pytest.raises(PermissionError, match="not private"):
        ghost_kernel._private_dir(shared)
    assert ghost_kernel._private_dir(tmp_path / "mine") == tmp_path / "mine"
