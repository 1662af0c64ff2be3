"""DP-SGD's per-example clipping engine: per-unit gradient norms and clipped sums in one backward pass.

- `PerExampleClipper`: attach to a model, then `accumulate_clipped(losses, units)` per micro-batch.
- `validate_module`: names every module the engine cannot clip exactly, with what to use instead.
- `check_loss_is_per_example`: refuses losses that couple the examples of a batch.
"""

from simmim.privacy.dpsgd.engine import PerExampleClipper
from simmim.privacy.dpsgd.errors import ClippingUsageError, CoupledLossError, UnsupportedModuleError
from simmim.privacy.dpsgd.loss_check import check_loss_is_per_example
from simmim.privacy.dpsgd.validator import unsupported_modules, validate_module

__all__ = [
    "ClippingUsageError",
    "CoupledLossError",
    "PerExampleClipper",
    "UnsupportedModuleError",
    "check_loss_is_per_example",
    "unsupported_modules",
    "validate_module",
]
