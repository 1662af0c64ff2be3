"""Privacy units of one micro-batch: which examples belong together when clipping.

A unit is a person (user-level DP), a group (group clipping of a contrastive loss) or a single
example. Its gradient is the gradient of the sum of its examples' losses, so every per-example
quantity is first summed within units; the ghost norm of a unit is the ghost norm of the
concatenation of its examples' tokens (see `pack`).
"""

from __future__ import annotations

import torch

from simmim.privacy.dpsgd.errors import ClippingUsageError


class UnitIndex:
    """Maps the N examples of a micro-batch to U units, numbered 0..U-1 in ascending id order.

    Attributes:
        num_examples: N.
        num_units: U.
        ids: the unit ids in the order of the per-unit results (`None`: unit k is example k).
        example_unit: (N,) long, the unit number of each example (`None` when every example is
            its own unit, so the identity mapping costs nothing).
    """

    def __init__(self, num_examples: int, units: torch.Tensor | None = None):
        self.num_examples = num_examples
        if units is None:
            self.ids = None
            self.example_unit = None
            self.num_units = num_examples
            self._mean_unit_size = 1.0
            return
        if units.shape != (num_examples,) or units.dtype not in (torch.int32, torch.int64):
            raise ClippingUsageError(
                f"units must be an integer tensor of shape ({num_examples},), one id per example; "
                f"got dtype {units.dtype} and shape {tuple(units.shape)}"
            )
        self.ids, self.example_unit, counts = torch.unique(units, return_inverse=True, return_counts=True)
        self.num_units = len(self.ids)
        self._mean_unit_size = float((counts.double() ** 2).sum()) / num_examples
        # Each example's slot inside its unit (0 .. m_u - 1), for `pack`.
        order = torch.argsort(self.example_unit, stable=True)
        first_of_unit = torch.cumsum(counts, 0) - counts
        self._slot = torch.empty_like(order)
        self._slot[order] = torch.arange(num_examples, device=order.device) - first_of_unit[self.example_unit[order]]
        self._largest = int(counts.max())

    @property
    def is_identity(self) -> bool:
        """Whether unit k is example k (no units given), so per-unit results need no regrouping."""
        return self.example_unit is None

    def sum_into_units(self, per_example: torch.Tensor) -> torch.Tensor:
        """(N, ...) per-example values -> (U, ...) sums over each unit's examples."""
        if self.example_unit is None:
            return per_example
        out = per_example.new_zeros((self.num_units, *per_example.shape[1:]))
        return out.index_add_(0, self.example_unit, per_example)

    def spread_to_examples(self, per_unit: torch.Tensor) -> torch.Tensor:
        """(U,) per-unit values -> (N,) the value of each example's unit."""
        return per_unit if self.example_unit is None else per_unit[self.example_unit]

    def unit_of_examples(self, device: torch.device) -> torch.Tensor:
        """(N,) long: the unit number of each example."""
        if self.example_unit is None:
            return torch.arange(self.num_examples, device=device)
        return self.example_unit

    def mean_unit_size_per_example(self) -> float:
        """sum_u m_u^2 / N: the size of an example's unit, averaged over examples (1 when each example
        is its own unit). A unit's ghost Gram matrices hold m_u^2 T^2 token pairs."""
        return self._mean_unit_size

    def pack(self, tokens: torch.Tensor) -> torch.Tensor:
        """(N, T, d) per-example token rows -> (U, m_max * T, d), each unit's examples concatenated.

        Slots of units smaller than the largest are zero, and zero rows add nothing to a Gram
        matrix, so the example-level ghost norm of the packed tensor is the unit-level one.
        """
        if self.is_identity:
            return tokens
        _, length, dim = tokens.shape
        packed = tokens.new_zeros((self.num_units, self._largest, length, dim))
        packed[self.example_unit, self._slot] = tokens
        return packed.view(self.num_units, -1, dim)
