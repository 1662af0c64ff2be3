"""Refuses losses that couple the examples of a batch before they reach per-example clipping."""

from __future__ import annotations

from collections.abc import Callable

from simmim.privacy.dpsgd.errors import CoupledLossError


def check_loss_is_per_example(loss_fn: Callable) -> None:
    """Raises `CoupledLossError` if `loss_fn` is marked `coupled` (e.g. `simmim.losses.contrastive_loss`).

    Args:
        loss_fn: a loss function; those whose value for one example depends on other examples of
            the batch carry the attribute `coupled = True`.

    Raises:
        CoupledLossError: the loss couples examples, with what to do instead.
    """
    if getattr(loss_fn, "coupled", False):
        name = getattr(loss_fn, "__qualname__", repr(loss_fn))
        raise CoupledLossError(
            f"{name} couples the examples of a batch (in-batch contrastive negatives): each example's "
            "loss depends on every other example, so clipping each example's gradient bounds no one's "
            "influence on the update. Use group clipping instead: pass units = group ids to "
            "accumulate_clipped, compute the loss with negatives only inside each group, and account "
            "with sensitivity 2C (replacing one record changes one group's clipped gradient)."
        )
