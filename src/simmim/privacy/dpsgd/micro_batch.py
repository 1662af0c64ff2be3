"""The gradient book of one micro-batch: each parameter's accumulator, filled layer by layer
during the single backward pass, then read for per-unit norms and the clipped sums."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator

import torch
from torch import nn

from simmim.privacy.dpsgd.accumulators import DenseUnitGradient, GhostLinearGradient, SparseRowGradient, TokenGrams
from simmim.privacy.dpsgd.errors import ClippingUsageError
from simmim.privacy.dpsgd.units import UnitIndex

Accumulator = DenseUnitGradient | GhostLinearGradient | SparseRowGradient
SMALL_NUMEL = 4096  # per unit: biases, norms, tokens; their norms and sums are taken all at once


class MicroBatchGradients:
    """Per-parameter accumulators for the N examples (U units) of one micro-batch."""

    def __init__(self, units: UnitIndex, recorded_calls: Counter[nn.Module] | None = None,
                 linear_route: str = "auto"):
        """
        Args:
            units: the micro-batch's examples and units.
            recorded_calls: how many forward calls of each module were recorded for this backward;
                when the last one has been added, its dense accumulators take their norms early.
            linear_route: "auto" (by cost, per layer), "ghost" or "per_example" (see `linear_weight`).
        """
        self.units = units
        self.linear_route = linear_route
        self._grams = TokenGrams(units)
        self._small: tuple[list[nn.Parameter], torch.Tensor | None] | None = None
        self._accumulators: dict[nn.Parameter, Accumulator] = {}
        self._calls_left = Counter(recorded_calls or {})

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
        return self._get(param, lambda: DenseUnitGradient(self.units, param.shape))

    def sparse_rows(self, param: nn.Parameter) -> SparseRowGradient:
        return self._get(param, lambda: SparseRowGradient(self.units, param.shape))

    def linear_weight(self, param: nn.Parameter, tokens: int,
                      shape: torch.Size) -> DenseUnitGradient | GhostLinearGradient:
        """The accumulator of a weight used as `a @ W^T` over `tokens` tokens per example, W of `shape`
        (d_out, d_in); decided once per micro-batch, by the first call to reach the backward pass.

        Keeping per-example gradients costs N * d_out * d_in numbers and as many multiply-adds per
        token; the ghost route keeps a and g, N * T * (d_in + d_out) numbers, and its Gram matrices
        cost T * (d_in + d_out) per token and per example of the unit (sum_u m_u^2 / N on average).
        Both comparisons reduce to the same inequality, so the cheaper route is also the smaller.
        """
        d_out, d_in = shape

        def choose() -> DenseUnitGradient | GhostLinearGradient:
            if self.linear_route == "auto":
                ghost = self.units.mean_unit_size_per_example() * tokens * (d_in + d_out) < d_in * d_out
            else:
                ghost = self.linear_route == "ghost"
            if ghost:
                return GhostLinearGradient(self.units, shape, self._grams)
            return DenseUnitGradient(self.units, shape)

        return self._get(param, choose)

    def call_added(self, module: nn.Module, params: list[nn.Parameter]) -> None:
        """One recorded call of `module` has been added; after its last, its accumulators are final."""
        self._calls_left[module] -= 1
        if self._calls_left[module] == 0:
            for param in params:
                accumulator = self._accumulators.get(param)
                if isinstance(accumulator, DenseUnitGradient) and accumulator.per_unit_numel > SMALL_NUMEL:
                    accumulator.finish()

    def _get(self, param: nn.Parameter, make) -> Accumulator:
        accumulator = self._accumulators.get(param)
        if accumulator is None:
            accumulator = self._accumulators[param] = make()
        return accumulator

    def _small_dense(self) -> tuple[list[nn.Parameter], torch.Tensor | None]:
        """The small dense accumulators' parameters, and their per-unit gradients side by side
        (U, total numel): one norm and one weighted sum for all of them instead of two each."""
        if self._small is None:
            params = [p for p, a in self._accumulators.items()
                      if isinstance(a, DenseUnitGradient) and a.per_unit_numel <= SMALL_NUMEL]
            rows = torch.cat([self._accumulators[p].rows() for p in params], dim=1) if params else None
            self._small = (params, rows)
        return self._small

    def squared_norms(self, like: torch.Tensor) -> torch.Tensor:
        """(U,) squared norm of each unit's gradient over all parameters (flat clipping), starting
        from zeros of `like`'s dtype and device (a loss that reaches no parameter has norm 0)."""
        total = like.new_zeros(self.units.num_units)
        small, rows = self._small_dense()
        if rows is not None:
            total = total + torch.linalg.vector_norm(rows, dim=1).square()
        small_ids = {id(p) for p in small}  # by identity: `in` on a list of tensors compares values
        for param, accumulator in self._accumulators.items():
            if id(param) not in small_ids:
                total = total + accumulator.squared_norms()
        return total

    def clipped_sums(self, factors: torch.Tensor) -> Iterator[tuple[nn.Parameter, torch.Tensor]]:
        """(parameter, sum_u factors[u] * gradient of unit u) for every parameter the backward reached."""
        small, rows = self._small_dense()
        if rows is not None:
            summed = factors.to(rows.dtype) @ rows
            for param, part in zip(small, summed.split([p.numel() for p in small])):
                yield param, part.view_as(param)
        small_ids = {id(p) for p in small}
        for param, accumulator in self._accumulators.items():
            if id(param) not in small_ids:
                yield param, accumulator.clipped_sum(factors).view_as(param)
