"""Errors of the per-example clipping engine, each saying what went wrong and what to do instead.

They are `PrivacyError`s (hence `SimMIMError`s), so the CLI shows them as one line.
"""

from __future__ import annotations

from simmim.errors import PrivacyError


class UnsupportedModuleError(PrivacyError):
    """The model holds modules the engine cannot clip per example; the message names every one."""


class CoupledLossError(PrivacyError):
    """A loss couples the examples of a batch, so clipping each example's gradient bounds nothing."""


class ClippingUsageError(PrivacyError):
    """The engine was used in a way that would make its clipping wrong (e.g. a unit split across
    micro-batches, a backward pass outside the engine, a layer whose first dimension is not the batch)."""
