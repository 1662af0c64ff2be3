"""The gradient book of one micro-batch: each parameter's accumulator, filled layer by layer
during the single backward pass, then read for per-unit norms and the clipped sums."""

from __future__ import annotations

import functools
from collections import Counter
from collections.abc import Iterator

import torch
from torch import nn

from simmim.privacy.dpsgd.accumulators import DenseUnitGradient, GhostLinearGradient, SparseRowGradient, TensorCache
from simmim.privacy.dpsgd.errors import ClippingUsageError
from simmim.privacy.dpsgd.units import UnitIndex

Accumulator = DenseUnitGradient | GhostLinearGradient | SparseRowGradient


class MicroBatchGradients:
    """Per-parameter accumulators for the N examples (U units) of one micro-batch."""

    def __init__(self, units: UnitIndex, recorded_calls: Counter[nn.Module] | None = None,
                 linear_route: str = "auto", readers: Counter[tuple[int, int]] | None = None):
        """
        Args:
            units: the micro-batch's examples and units.
            recorded_calls: how many forward calls of each module were recorded for this backward;
                when the last one has been added, its accumulators take their norms at once (their
                tensors are still in cache, and what served only the norm can go).
            linear_route: "auto" (by cost, per layer), "ghost" or "per_example" (see `linear_weight`).
            readers: how many recorded calls kept each tensor, by (data_ptr, numel): a layer input
                that several layers read (the q, k and v projections) is kept and Gram'ed once.
        """
        self.units = units
        self.linear_route = linear_route
        self._cache = TensorCache()
        self._accumulators: dict[nn.Parameter, Accumulator] = {}
        self._calls_left = Counter(recorded_calls or {})
        self._readers = readers or Counter()
        self._norms_taken: dict[int, torch.Tensor] = {}  # by id() of the accumulator

    @property
    def num_examples(self) -> int:
        return self.units.num_examples

    def tokens(self, tensor: torch.Tensor, feature_dims: int = 1) -> torch.Tensor:
        """Regroups a layer tensor (N * k, ..., *features) as (N, tokens, *features).

        The first dimension must index examples. A multiple of N is read as example-major rows
        (k consecutive rows per example, as `frames.flatten(0, 1)` makes for a video's frames).
        """
        n = self.num_examples
        if tensor.dim() <= feature_dims or tensor.shape[0] % n:
            raise ClippingUsageError(
                f"its first dimension must index the {n} examples of the loss (or k consecutive rows per "
                f"example), but it saw shape {tuple(tensor.shape)}"
            )
        features = tensor.shape[tensor.dim() - feature_dims:]
        return tensor.reshape(n, -1, *features)

    def per_example(self, tensor: torch.Tensor, feature_dims: int) -> torch.Tensor:
        """Sums a layer tensor over everything but examples and the trailing `feature_dims`: (N, *features)."""
        return self.tokens(tensor, feature_dims).sum(1)

    def dense(self, param: nn.Parameter) -> DenseUnitGradient:
        return self._get(param, lambda: DenseUnitGradient(self.units, param))

    def sparse_rows(self, param: nn.Parameter) -> SparseRowGradient:
        return self._get(param, lambda: SparseRowGradient(self.units, param))

    def readers(self, tensor: torch.Tensor) -> int:
        """How many recorded calls of this micro-batch kept `tensor` (or a view of all of it); at least 1."""
        return max(1, self._readers[tensor.data_ptr(), tensor.numel()])

    def linear_weight(self, param: nn.Parameter, tokens: int, shape: torch.Size, readers: int = 1,
                      bias: nn.Parameter | None = None) -> DenseUnitGradient | GhostLinearGradient:
        """The accumulator of a weight used as `a @ W^T (+ bias)` over `tokens` tokens per example, W of
        `shape` (d_out, d_in), its input a read by `readers` layers; decided once per micro-batch, by the
        first call to reach the backward pass. A ghost accumulator takes the layer's trained bias too
        (None: frozen, or none); a dense one does not.

        Keeping per-example gradients costs N * d_out * d_in numbers and as many multiply-adds per
        token; the ghost route keeps a and g, N * T * (d_in / readers + d_out) numbers (an input read
        by several layers is kept, and its Gram taken, once for all of them), and its Gram matrices
        cost T * (d_in / readers + d_out) per token and per example of the unit (sum_u m_u^2 / N on
        average). Both comparisons reduce to the same inequality, so the cheaper route is also the
        smaller.
        """
        d_out, d_in = shape

        def choose() -> DenseUnitGradient | GhostLinearGradient:
            if self.linear_route == "auto":
                per_token = d_in / readers + d_out
                ghost = self.units.mean_unit_size_per_example() * tokens * per_token < d_in * d_out
            else:
                ghost = self.linear_route == "ghost"
            if ghost:
                return GhostLinearGradient(self.units, param, shape, self._cache, bias)
            return DenseUnitGradient(self.units, param)

        return self._get(param, choose)

    def call_added(self, module: nn.Module, params: list[nn.Parameter]) -> None:
        """One recorded call of `module` has been added; after its last, its accumulators are final
        and their norms are taken (and added up) now."""
        self._calls_left[module] -= 1
        if self._calls_left[module] == 0:
            for param in params:
                accumulator = self._accumulators.get(param)
                if accumulator is not None:
                    self._take_norms(accumulator)

    def _take_norms(self, accumulator: Accumulator) -> None:
        if id(accumulator) not in self._norms_taken:
            self._norms_taken[id(accumulator)] = accumulator.squared_norms()

    def _get(self, param: nn.Parameter, make) -> Accumulator:
        accumulator = self._accumulators.get(param)
        if accumulator is None:
            accumulator = self._accumulators[param] = make()
        return accumulator

    def squared_norms(self, like: torch.Tensor) -> torch.Tensor:
        """(U,) squared norm of each unit's gradient over all parameters (flat clipping), starting
        from zeros of `like`'s dtype and device (a loss that reaches no parameter has norm 0)."""
        for accumulator in self._accumulators.values():  # modules whose last call never came back
            self._take_norms(accumulator)
        total = like.new_zeros(self.units.num_units)
        if not self._norms_taken:
            return total
        # One sum over the stacked (U,) vectors rather than an addition per parameter.
        norms = list(self._norms_taken.values())
        dtype = functools.reduce(torch.promote_types, (n.dtype for n in norms), total.dtype)
        return total + torch.stack([n.to(dtype) for n in norms]).sum(0)

    def clipped_sums(self, factors: torch.Tensor) -> Iterator[tuple[nn.Parameter, torch.Tensor]]:
        """(parameter, sum_u factors[u] * gradient of unit u) for every parameter the backward reached.
        Each accumulator lets go of its tensors once its sums are out, so later ones reuse the memory."""
        accumulators = list(self._accumulators.values())[::-1]
        self._accumulators.clear()
        while accumulators:
            for param, clipped in accumulators.pop().clipped_sums(factors, self._cache):
                yield param, clipped.view_as(param)
