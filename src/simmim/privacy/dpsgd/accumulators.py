"""What the engine keeps of one parameter during a backward pass, and how it turns that into
per-unit squared norms and, once every unit's clipping factor is known, the clipped sum.

Three forms, each chosen because it is the smallest exact one for its kind of parameter:

- `DenseUnitGradient`: the per-unit gradients themselves, (U, *shape). For small parameters
  (biases, norms, tokens) and for Linear weights whose per-example gradient is smaller than
  the layer's activations and output gradients.
- `GhostLinearGradient`: a Linear layer's inputs a (N, T, d_in) and output gradients g (N, T, d_out)
  ("book-keeping"). Norms by the ghost identity ||sum_t g_t a_t^T||^2 = sum_{t,s} (a_t.a_s)(g_t.g_s);
  the clipped sum as one matmul of the factor-weighted g with a. Per-example gradients never exist.
  The layer's bias rides along: it is the weight of a constant input 1, so its share of the norm is
  the same identity with a_t.a_s = 1. For float32 on the CPU the identity is evaluated by a compiled
  kernel (`kernels`), without storing either Gram matrix; elsewhere by torch's batched products.
- `SparseRowGradient`: an embedding's per-(unit, token id) gradient sums, the only rows a unit touches.

Each takes its units' squared norms once its module's last call has been added (`squared_norms`,
called during the backward while its tensors are still in cache) and yields its clipped sums with
`clipped_sums`, after which it holds nothing.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable, Iterator
from typing import Any

import torch
from torch import nn

from simmim.privacy.dpsgd import kernels
from simmim.privacy.dpsgd.units import UnitIndex

ClippedSums = Iterator[tuple[nn.Parameter, torch.Tensor]]


class DenseUnitGradient:
    """Explicit per-unit gradients (U, *shape) of one parameter, summed over calls of its module."""

    def __init__(self, units: UnitIndex, param: nn.Parameter):
        self.units = units
        self.param = param
        self.shape = param.shape
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

    def squared_norms(self) -> torch.Tensor:
        if self._squared_norms is None:
            # vector_norm reads the (U, numel) block once without a same-sized temporary.
            self._squared_norms = torch.linalg.vector_norm(self._rows(), dim=1).square()
        return self._squared_norms

    def _rows(self) -> torch.Tensor:
        """The per-unit gradients as (U, numel): also right for a scalar parameter."""
        return self.per_unit.reshape(len(self.per_unit), -1)

    def clipped_sums(self, factors: torch.Tensor, cache: TensorCache) -> ClippedSums:
        clipped = (factors.to(self.per_unit.dtype) @ self._rows()).view(self.shape)
        self.per_unit = None
        yield self.param, clipped


class TensorCache:
    """A few recent results derived from the micro-batch's layer tensors, by the tensors' identity.

    Layers that read one tensor share what is derived from it: the q, k and v projections of a
    block read one normalised sequence, the key and value projections of every cross-attention one
    context. Their backward (and clipped sums) come one after the other, so a handful of entries
    catches the sharing without keeping every layer's derived tensors for the whole micro-batch.
    """

    def __init__(self, size: int = 4):
        self.size = size
        self._entries: OrderedDict[tuple, Any] = OrderedDict()

    def __contains__(self, key: tuple) -> bool:
        return key in self._entries

    def get(self, key: tuple, make: Callable[[], Any]) -> Any:
        value = self._entries.get(key)
        if value is None:
            value = self._entries[key] = make()
            if len(self._entries) > self.size:
                self._entries.popitem(last=False)
        else:
            self._entries.move_to_end(key)
        return value


def gram_blocks(x: torch.Tensor, y: torch.Tensor) -> list[torch.Tensor]:
    """X Y^T for (U, T_x, d) and (U, T_y, d), as column blocks whose widths are multiples of 8 but
    the last: BLAS is up to twice slower per product on a width just past one (17 tokens = 16 + 1,
    23 = 16 + 7), so the bulk is taken alone and the remainder apart."""
    width = y.shape[1]
    bulk = width - width % 8
    if bulk in (0, width):
        return [torch.bmm(x, y.transpose(1, 2))]
    return [torch.bmm(x, y[:, :bulk].transpose(1, 2)), torch.bmm(x, y[:, bulk:].transpose(1, 2))]


def identity(t: torch.Tensor) -> tuple:
    """Same memory, same view: the same tensor for as long as the micro-batch keeps it alive."""
    return t.data_ptr(), tuple(t.shape), tuple(t.stride()), t.dtype


class GhostLinearGradient:
    """A Linear weight's (input, output gradient) pairs, one per call of the layer, and the layer's
    bias when it is trained (None otherwise)."""

    def __init__(self, units: UnitIndex, weight: nn.Parameter, shape: torch.Size, cache: TensorCache,
                 bias: nn.Parameter | None = None):
        self.units = units
        self.weight = weight
        self.shape = shape
        self.cache = cache
        self.bias = bias
        self.inputs: list[torch.Tensor] = []
        self.output_grads: list[torch.Tensor] = []
        self._squared_norms: torch.Tensor | None = None

    def add(self, inputs: torch.Tensor, output_grads: torch.Tensor) -> None:
        """inputs (N, T, d_in) and output gradients (N, T, d_out) of one call."""
        self.inputs.append(inputs)
        self.output_grads.append(output_grads)

    def squared_norms(self) -> torch.Tensor:
        """Sum over pairs of calls (i, j) of <A_i A_j^T, G_i G_j^T>, each unit's examples packed
        together (`UnitIndex.pack`): the Gram matrix of all calls' tokens, block by block, so that
        no concatenated copy of the calls is made. With a bias, every entry of A_i A_j^T is one
        larger (the constant input), which adds the bias gradient's squared norm."""
        if self._squared_norms is not None:
            return self._squared_norms
        grads = [self.units.pack(g) for g in self.output_grads]
        pair = self._pair_term(grads)
        total = None
        for i in range(len(grads)):
            for j in range(i + 1):
                part = pair(i, j)
                if i != j:  # the (j, i) block is the transpose: same inner product
                    part.mul_(2.0)
                total = part if total is None else total.add_(part)
        self._squared_norms = total.clamp_min_(0.0)
        return self._squared_norms

    def _pair_term(self, grads: list[torch.Tensor]) -> Callable[[int, int], torch.Tensor]:
        """(i, j) -> <A_i A_j^T, G_i G_j^T> per unit: by the compiled kernel where it takes the tensors
        (each unit's token pairs reduced in registers, no Gram matrix stored, half of them when i == j), else from
        torch's Gram blocks (the input's shared by the layers that read it)."""
        compiled = kernels.load()
        if compiled is not None and compiled.accepts(*self.inputs, *grads):
            inputs = [self.units.pack(a) for a in self.inputs]
            bias = 0.0 if self.bias is None else 1.0
            return lambda i, j: compiled.ghost_norms(inputs[i], inputs[j], grads[i], grads[j], bias, same=i == j)

        def from_blocks(i: int, j: int) -> torch.Tensor:
            blocks = zip(self._input_gram(i, j), gram_blocks(grads[i], grads[j]))
            return sum(torch.linalg.vecdot(gram_a.flatten(1), gram_g.flatten(1)) for gram_a, gram_g in blocks)

        return from_blocks

    def _input_gram(self, i: int, j: int) -> list[torch.Tensor]:
        a_i, a_j = self.inputs[i], self.inputs[j]

        def make() -> list[torch.Tensor]:
            packed_i = self.units.pack(a_i)
            blocks = gram_blocks(packed_i, packed_i if j == i else self.units.pack(a_j))
            if self.bias is not None:  # padding slots of a packed unit have g = 0: their 1s add nothing
                for block in blocks:
                    block.add_(1.0)
            return blocks

        key = ("gram", identity(a_i), identity(a_j), self.bias is not None)
        return self.cache.get(key, make)

    def clipped_sums(self, factors: torch.Tensor, cache: TensorCache) -> ClippedSums:
        """sum_n f_n g_n^T a_n: the factor goes on the narrower of a and g (fewer multiplications, a
        smaller temporary), or on a when a factor-weighted a is at hand (q, k and v share theirs).
        The bias's is sum_n f_n sum_t g_nt."""
        per_example = self.units.spread_to_examples(factors).to(self.inputs[0].dtype)
        weight_sum = bias_sum = None
        for a, g in zip(self.inputs, self.output_grads):
            key = ("scaled", identity(a))
            scale_input = a.shape[-1] <= g.shape[-1] or key in cache
            if scale_input:
                right = cache.get(key, lambda a=a: (a * per_example[:, None, None]).flatten(0, 1))
                left = g.flatten(0, 1)
            else:
                right = a.flatten(0, 1)
                left = (g * per_example[:, None, None]).flatten(0, 1)
            if weight_sum is None:
                weight_sum = left.t() @ right
            else:
                weight_sum.addmm_(left.t(), right)
            if self.bias is not None:
                # Where g is unweighted (scale_input), its tokens are weighed by their example's factor.
                call_sum = left.t() @ per_example.repeat_interleave(g.shape[1]) if scale_input else left.sum(0)
                bias_sum = call_sum if bias_sum is None else bias_sum.add_(call_sum)
        self.inputs, self.output_grads = [], []
        yield self.weight, weight_sum.view(self.shape)
        if self.bias is not None:
            yield self.bias, bias_sum


class SparseRowGradient:
    """An embedding table's gradient per (unit, row): sum of the output gradients of the unit's
    tokens with that id. A unit's squared norm is the sum over its rows; nothing is (U, V, d)."""

    def __init__(self, units: UnitIndex, param: nn.Parameter):
        self.units = units
        self.param = param
        self.shape = param.shape
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

    def clipped_sums(self, factors: torch.Tensor, cache: TensorCache) -> ClippedSums:
        keys, sums = self._merged()
        self.keys, self.sums = [], []
        unit = torch.div(keys, self.shape[0], rounding_mode="floor")
        weighted = sums * factors.to(sums.dtype)[unit, None]
        yield self.param, sums.new_zeros(self.shape).index_add_(0, keys % self.shape[0], weighted)
