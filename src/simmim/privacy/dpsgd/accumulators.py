"""What the engine keeps of one parameter during a backward pass, and how it turns that into
per-unit squared norms and, once every unit's clipping factor is known, the clipped sum.

Three forms, each chosen because it is the smallest exact one for its kind of parameter:

- `DenseUnitGradient`: the per-unit gradients themselves, (U, *shape). For small parameters
  (biases, norms, tokens) and for Linear weights whose per-example gradient is smaller than
  the layer's activations and output gradients.
- `GhostLinearGradient`: a Linear layer's inputs a (N, T, d_in) and output gradients g (N, T, d_out)
  ("book-keeping"). Norms by the ghost identity ||sum_t g_t a_t^T||^2 = sum_{t,s} (a_t.a_s)(g_t.g_s);
  the clipped sum as one matmul of the factor-weighted g with a. Per-example gradients never exist.
- `SparseRowGradient`: an embedding's per-(unit, token id) gradient sums, the only rows a unit touches.
"""

from __future__ import annotations

import torch

from simmim.privacy.dpsgd.units import UnitIndex


class DenseUnitGradient:
    """Explicit per-unit gradients (U, *shape) of one parameter, summed over calls of its module."""

    def __init__(self, units: UnitIndex, shape: torch.Size):
        self.units = units
        self.shape = shape
        self.per_unit: torch.Tensor | None = None
        self._squared_norms: torch.Tensor | None = None

    def add_outer_products(self, output_grads: torch.Tensor, inputs: torch.Tensor) -> None:
        """Adds sum_t g_t a_t^T per example, from output gradients (N, T, d_out) and inputs (N, T, d_in);
        a second call of the layer accumulates in place when every example is its own unit."""
        products_t = output_grads.transpose(1, 2)
        if self.per_unit is not None and self.units.is_identity:
            self.per_unit.baddbmm_(products_t, inputs)
        else:
            self.add(torch.bmm(products_t, inputs))

    def add(self, per_example: torch.Tensor, leading_rows: int | None = None) -> None:
        """Adds (N, *shape) per-example gradients, or (N, leading_rows, ...) ones that cover only the
        first `leading_rows` rows of the parameter (a position table used up to length L)."""
        per_unit = self.units.sum_into_units(per_example)
        if leading_rows is None or leading_rows == self.shape[0]:
            if self.per_unit is None:
                self.per_unit = per_unit
            else:
                self.per_unit += per_unit
            return
        if self.per_unit is None:
            self.per_unit = per_unit.new_zeros((self.units.num_units, *self.shape))
        self.per_unit[:, :leading_rows] += per_unit

    def finish(self) -> None:
        """Called once the last call of the module has been added: the norms are taken now, while
        the freshly written per-unit gradients are still in cache, rather than after the backward."""
        self._squared_norms = self.squared_norms()

    def squared_norms(self) -> torch.Tensor:
        if self._squared_norms is not None:
            return self._squared_norms
        # vector_norm reads the (U, numel) block once without a same-sized temporary.
        return torch.linalg.vector_norm(self.rows(), dim=1).square()

    @property
    def per_unit_numel(self) -> int:
        return self.shape.numel()

    def rows(self) -> torch.Tensor:
        """The per-unit gradients as (U, numel): also right for a scalar parameter."""
        return self.per_unit.reshape(len(self.per_unit), -1)

    def clipped_sum(self, factors: torch.Tensor) -> torch.Tensor:
        return (factors.to(self.per_unit.dtype) @ self.rows()).view(self.shape)


class TokenGrams:
    """Per-unit Gram matrices X X^T of token tensors: the calls of a layer concatenated along the
    tokens (their gradients add up in an example's gradient), then packed by unit (`UnitIndex.pack`).

    Inputs' Grams are kept for the micro-batch and shared: the q, k and v projections of a block
    read one normalised sequence, the key and value projections one context, so one Gram serves
    all of them. Output-gradient Grams are never shared and not kept.
    """

    def __init__(self, units: UnitIndex):
        self.units = units
        self._kept: dict[tuple, torch.Tensor] = {}

    def of(self, calls: list[torch.Tensor], *, keep: bool) -> torch.Tensor:
        """(U, T, T) for the calls' (N, T_c, d) tensors, T = sum_c T_c times the largest unit size."""
        if not keep:
            return self._compute(calls)
        key = tuple(_identity(t) for t in calls)
        gram = self._kept.get(key)
        if gram is None:
            gram = self._kept[key] = self._compute(calls)
        return gram

    def _compute(self, calls: list[torch.Tensor]) -> torch.Tensor:
        # One batched product over all calls' tokens beats one per pair of calls: the matrices are
        # small (tens of tokens), so the per-matrix cost of the batched GEMM dominates.
        tokens = self.units.pack(torch.cat(calls, dim=1) if len(calls) > 1 else calls[0])
        return torch.bmm(tokens, tokens.transpose(1, 2))


def _identity(t: torch.Tensor) -> tuple:
    """Same memory, same view: the same tensor for as long as the micro-batch keeps it alive."""
    return t.data_ptr(), tuple(t.shape), tuple(t.stride()), t.dtype


class GhostLinearGradient:
    """A Linear weight's (input, output gradient) pairs, one per call of the layer."""

    def __init__(self, units: UnitIndex, shape: torch.Size, grams: TokenGrams):
        self.units = units
        self.shape = shape
        self.grams = grams
        self.inputs: list[torch.Tensor] = []
        self.output_grads: list[torch.Tensor] = []

    def add(self, inputs: torch.Tensor, output_grads: torch.Tensor) -> None:
        """inputs (N, T, d_in) and output gradients (N, T, d_out) of one call."""
        self.inputs.append(inputs)
        self.output_grads.append(output_grads)

    def squared_norms(self) -> torch.Tensor:
        gram_a = self.grams.of(self.inputs, keep=True)
        gram_g = self.grams.of(self.output_grads, keep=False)
        return (gram_a * gram_g).flatten(1).sum(1).clamp_min(0.0)

    def clipped_sum(self, factors: torch.Tensor) -> torch.Tensor:
        per_example = self.units.spread_to_examples(factors).to(self.inputs[0].dtype)[:, None, None]
        total = None
        for a, g in zip(self.inputs, self.output_grads):
            # The factor goes on the narrower of a and g: fewer multiplications, a smaller temporary.
            if g.shape[-1] <= a.shape[-1]:
                left, right = (g * per_example).flatten(0, 1), a.flatten(0, 1)
            else:
                left, right = g.flatten(0, 1), (a * per_example).flatten(0, 1)
            if total is None:
                total = left.t() @ right
            else:
                total.addmm_(left.t(), right)
        return total.view(self.shape)


class SparseRowGradient:
    """An embedding table's gradient per (unit, row): sum of the output gradients of the unit's
    tokens with that id. A unit's squared norm is the sum over its rows; nothing is (U, V, d)."""

    def __init__(self, units: UnitIndex, shape: torch.Size):
        self.units = units
        self.shape = shape
        self.keys: list[torch.Tensor] = []
        self.sums: list[torch.Tensor] = []

    def add(self, token_units: torch.Tensor, rows: torch.Tensor, grads: torch.Tensor) -> None:
        """One call's tokens: their unit numbers (M,), table rows (M,) and output gradients (M, d)."""
        keys, sums = self._sum_by_key(token_units * self.shape[0] + rows, grads)
        self.keys.append(keys)
        self.sums.append(sums)

    @staticmethod
    def _sum_by_key(keys: torch.Tensor, values: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        unique, inverse = torch.unique(keys, return_inverse=True)
        return unique, values.new_zeros((len(unique), values.shape[1])).index_add_(0, inverse, values)

    def _merged(self) -> tuple[torch.Tensor, torch.Tensor]:
        if len(self.keys) > 1:  # several calls: the same (unit, row) may appear in more than one
            keys, sums = self._sum_by_key(torch.cat(self.keys), torch.cat(self.sums))
            self.keys, self.sums = [keys], [sums]
        return self.keys[0], self.sums[0]

    def squared_norms(self) -> torch.Tensor:
        keys, sums = self._merged()
        out = sums.new_zeros(self.units.num_units)
        return out.index_add_(0, torch.div(keys, self.shape[0], rounding_mode="floor"), sums.square().sum(1))

    def clipped_sum(self, factors: torch.Tensor) -> torch.Tensor:
        keys, sums = self._merged()
        unit = torch.div(keys, self.shape[0], rounding_mode="floor")
        weighted = sums * factors.to(sums.dtype)[unit, None]
        return sums.new_zeros(self.shape).index_add_(0, keys % self.shape[0], weighted)
