"""The per-example clipping engine: one backward pass per micro-batch gives every privacy unit's
gradient norm and adds the clipped sum of their gradients into `p.grad`.

How: while attached, the engine runs each parameter-holding module's forward with that module's
parameters detached from autograd, and wraps the output in an identity node (`_OutputGradientTap`)
whose backward hands the output gradient to the module's rule. Autograd therefore computes only
input gradients, never the unclipped parameter gradients; the rules turn (what the forward kept,
output gradient) into per-unit gradient information, layer by layer, during the same backward,
and each module's contribution to the per-unit squared norms is taken as soon as its last call is
in (its tensors are then still in cache). Once the backward ends, every unit's norm over all
parameters is known, the clipping factors follow, and each accumulator forms its clipped sum (a
weighted sum, or for ghost layers one matmul of the factor-weighted output gradients with the
inputs) and lets go of what it kept.
"""

from __future__ import annotations

from collections import Counter
from typing import Any

import torch
from torch import nn
from torch.utils.hooks import RemovableHandle

from simmim.privacy.dpsgd.errors import ClippingUsageError
from simmim.privacy.dpsgd.micro_batch import MicroBatchGradients
from simmim.privacy.dpsgd.rules import rule_for
from simmim.privacy.dpsgd.units import UnitIndex
from simmim.privacy.dpsgd.validator import validate_module

LINEAR_ROUTES = ("auto", "ghost", "per_example")


class PerExampleClipper:
    """Per-unit gradient clipping for DP-SGD, in one backward pass per micro-batch.

    Usage, for one optimiser step over a logical batch split into micro-batches:

        engine = PerExampleClipper(model, max_grad_norm=C)
        engine.zero_grad()
        for batch, units in micro_batches:       # a unit never spans two micro-batches
            losses = objective.per_example(model, batch)   # forward while the engine is attached
            norms = engine.accumulate_clipped(loss_per_example=total(losses), units=units)
        # p.grad = sum over all units u of the step of clip(g_u); add noise, divide, step.

    After `zero_grad()` and k calls of `accumulate_clipped`, every trainable parameter's `.grad` is
    exactly sum_u g_u[p] * min(1, C / ||g_u||) over the units of those k micro-batches: the clipped
    SUM, without noise and not averaged, where g_u is the gradient of the sum of unit u's example
    losses and ||g_u|| its norm over ALL trainable parameters (flat clipping). Parameters no unit
    reaches hold exact zeros, so noise can be added to every parameter alike.

    While attached, a plain `loss.backward()` through the model is refused (it would leave the
    parameters without gradients); `detach()` (or leaving a `with` block) restores the model.

    Every layer tensor's first dimension must index examples (or k consecutive rows per example),
    and row n may depend on no example outside n's unit: true for per-example losses, and for an
    in-block contrastive loss with units = blocks. Code that mixes units (batch statistics) cannot
    be detected here; the validator refuses the modules known to do it.
    """

    def __init__(self, model: nn.Module, *, max_grad_norm: float, linear_route: str = "auto"):
        """
        Args:
            model: the model; every module holding trainable parameters must have a rule
                (checked by `validate_module`, which names every one that has not).
            max_grad_norm: the clipping bound C > 0 on each unit's gradient norm.
            linear_route: how Linear and Conv2d weights get their per-unit norms: "auto" picks, per
                layer and micro-batch, the cheaper of "ghost" (Gram matrices of inputs and output
                gradients, clipped sum by one matmul) and "per_example" (explicit per-unit
                gradients); forcing one is for measurements and tests. Results are the same.

        Raises:
            UnsupportedModuleError: from `validate_module`.
            ClippingUsageError: C is not positive, an unknown route, or no trainable parameter.
        """
        if not max_grad_norm > 0:
            raise ClippingUsageError(f"max_grad_norm must be positive, got {max_grad_norm}")
        if linear_route not in LINEAR_ROUTES:
            raise ClippingUsageError(f"linear_route must be one of {', '.join(LINEAR_ROUTES)}, got {linear_route!r}")
        self.linear_route = linear_route
        validate_module(model)
        self.model = model
        self.max_grad_norm = float(max_grad_norm)
        self._named_parameters = [(name, p) for name, p in model.named_parameters() if p.requires_grad]
        if not self._named_parameters:
            raise ClippingUsageError("the model has no trainable parameter to clip")
        self._module_names: dict[nn.Module, str] = {}
        self._trainable_of: dict[nn.Module, list[nn.Parameter]] = {}
        self._handles: list[RemovableHandle] = []
        for name, module in model.named_modules():
            own = [p for p in module.parameters(recurse=False) if p.requires_grad]
            if own:
                self._module_names[module] = f"{name or '(root)'} ({type(module).__name__})"
                self._trainable_of[module] = own
                self._handles.append(module.register_forward_pre_hook(self._before_forward, with_kwargs=True))
                self._handles.append(
                    module.register_forward_hook(self._after_forward, with_kwargs=True, always_call=True))
        self._detached_forwards: set[nn.Module] = set()
        self._micro_batch: MicroBatchGradients | None = None
        self._units_this_step: set[int] = set()
        self._recorded_calls: Counter[nn.Module] = Counter()
        self._readers: Counter[tuple[int, int]] = Counter()  # recorded calls reading each tensor (by memory)

    # Step boundaries.

    def zero_grad(self) -> None:
        """Starts a step: every trainable parameter's `.grad` becomes None (the next
        `accumulate_clipped` sets it, zeros where no unit reaches the parameter), and the units seen
        so far are forgotten (a unit may come back in the next step, not in this one)."""
        for _, param in self._named_parameters:
            param.grad = None
        self._units_this_step.clear()

    def start_part(self, max_grad_norm: float) -> None:
        """Starts a new part of the step, clipped to its own bound: from here the units already seen
        in this step may come back once more, and each unit's gradient in this part is clipped to
        ``max_grad_norm`` on its own. Gradients keep adding up into `p.grad`.

        A unit's contribution to the step is then the sum of its clipped parts, of norm at most the
        sum of the parts' bounds, which is what the noise must be scaled to (per-modality clipping
        splits one bound C between an image part and a clip part, so the sensitivity stays C).
        """
        if not max_grad_norm > 0:
            raise ClippingUsageError(f"max_grad_norm must be positive, got {max_grad_norm}")
        self.max_grad_norm = float(max_grad_norm)
        self._units_this_step.clear()

    def accumulate_clipped(self, loss_per_example: torch.Tensor, units: torch.Tensor | None = None) -> torch.Tensor:
        """Runs one backward pass and adds sum_u clip(g_u) into each trainable parameter's `.grad`.

        Args:
            loss_per_example: (N,) the per-example losses of one micro-batch, computed by a forward
                pass while this engine is attached (no reduction: the engine sums them per unit).
            units: (N,) integer privacy-unit ids (subject ids for user-level DP, group ids for group
                clipping), or None for each example its own unit. A unit's examples must all be in
                this micro-batch: ids seen earlier in the same step are refused.

        Returns:
            (U,) each unit's gradient norm before clipping; for `units=None` in example order,
            otherwise in ascending order of unit id (`torch.unique(units)`).

        Raises:
            ClippingUsageError: on a misuse that would make the clipping wrong (see the message).
        """
        if loss_per_example.dim() != 1 or not loss_per_example.requires_grad:
            raise ClippingUsageError(
                "loss_per_example must be a (N,) vector of per-example losses that requires grad, "
                f"got shape {tuple(loss_per_example.shape)} (requires_grad={loss_per_example.requires_grad})"
            )
        unit_index = UnitIndex(len(loss_per_example), units)
        self._claim_units(unit_index)
        # Gradients accumulated before stay aside, so anything autograd writes during this backward
        # can be recognised as a parameter used outside the engine's rules.
        kept = [param.grad for _, param in self._named_parameters]
        for _, param in self._named_parameters:
            param.grad = None
        self._micro_batch = MicroBatchGradients(unit_index, self._recorded_calls, self.linear_route, self._readers)
        self._recorded_calls, self._readers = Counter(), Counter()
        try:
            loss_per_example.sum().backward()
            leaked = [name for name, param in self._named_parameters if param.grad is not None]
        finally:
            grads, self._micro_batch = self._micro_batch, None
            for (_, param), grad in zip(self._named_parameters, kept):
                param.grad = grad
        if leaked:
            raise ClippingUsageError(
                f"parameters got gradients outside the engine: {', '.join(leaked)}. Run the forward pass "
                "after creating the engine, and use each parameter only inside its own module's forward"
            )
        with torch.no_grad():
            norms = grads.squared_norms(like=loss_per_example).sqrt()
            factors = (self.max_grad_norm / norms.clamp_min(torch.finfo(norms.dtype).tiny)).clamp(max=1.0)
            for param, clipped in grads.clipped_sums(factors):
                if param.grad is None:
                    param.grad = clipped.to(param.dtype)
                else:
                    param.grad.add_(clipped)
            for _, param in self._named_parameters:
                if param.grad is None:  # no unit reached it: an exact zero, so noise can go on every parameter
                    param.grad = torch.zeros_like(param)
        return norms

    def detach(self) -> None:
        """Removes the engine's hooks: the model trains and infers as if the engine never existed."""
        for handle in self._handles:
            handle.remove()
        self._handles.clear()

    def __enter__(self) -> PerExampleClipper:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.detach()

    # Internals.

    def _claim_units(self, unit_index: UnitIndex) -> None:
        if all(param.grad is None for _, param in self._named_parameters):
            self._units_this_step.clear()  # the optimiser zeroed the gradients: a new step began
        if unit_index.ids is None:
            return
        ids = unit_index.ids.tolist()
        repeated = self._units_this_step.intersection(ids)
        if repeated:
            raise ClippingUsageError(
                f"units {sorted(repeated)[:5]} already appeared in an earlier micro-batch of this step: a "
                "unit's examples must all be in one micro-batch, or its gradient would be clipped in pieces "
                "(call zero_grad() to start a new step)"
            )
        self._units_this_step.update(ids)

    def _before_forward(self, module: nn.Module, args: tuple, kwargs: dict[str, Any]) -> None:
        if not torch.is_grad_enabled():
            return
        # Detached from autograd for this call only, so no unclipped parameter gradient is formed.
        for param in self._trainable_of[module]:
            param.requires_grad_(False)
        self._detached_forwards.add(module)

    def _after_forward(self, module: nn.Module, args: tuple, kwargs: dict[str, Any], output: Any) -> Any:
        if module not in self._detached_forwards:
            return None
        self._detached_forwards.discard(module)
        params = self._trainable_of[module]
        for param in params:
            param.requires_grad_(True)
        if not isinstance(output, torch.Tensor):  # the forward raised: restoring was all there was to do
            return None
        # Detached references: the rules read values only, and must not keep the graph alive.
        captured = rule_for(module).capture(module, args, kwargs, output)
        saved = tuple(t.detach() if t is not None else None for t in captured)
        call = _ModuleCall(self, module, saved)
        self._recorded_calls[module] += 1
        for t in saved:
            if t is not None:
                self._readers[t.data_ptr(), t.numel()] += 1
        return _OutputGradientTap.apply(output, call, *params)

    def _receive_output_gradient(self, call: _ModuleCall, grad_output: torch.Tensor) -> None:
        name = self._module_names[call.module]
        if self._micro_batch is None:
            raise ClippingUsageError(
                f"a backward pass reached {name} outside accumulate_clipped: while a PerExampleClipper is "
                "attached, call engine.accumulate_clipped(loss_per_example) instead of loss.backward() "
                "(or detach() the engine to train without privacy)"
            )
        if any(t is not None and t._version != v for t, v in zip(call.saved, call.versions)):
            raise ClippingUsageError(f"an input of {name} was modified in place after its forward")
        try:
            rule_for(call.module).backward(call.module, call.saved, grad_output, self._micro_batch)
        except ClippingUsageError as error:
            raise ClippingUsageError(f"{name}: {error}") from None
        call.saved = ()  # what the forward kept is no longer needed
        self._micro_batch.call_added(call.module, self._trainable_of[call.module])


class _ModuleCall:
    """One forward call of a parameter-holding module: what its rule kept, with the tensors'
    versions so that a later in-place change is caught instead of silently used."""

    def __init__(self, engine: PerExampleClipper, module: nn.Module, saved: tuple[torch.Tensor | None, ...]):
        self.engine = engine
        self.module = module
        self.saved = saved
        self.versions = tuple(t._version if t is not None else 0 for t in saved)


class _OutputGradientTap(torch.autograd.Function):
    """Identity on a module's output; its backward hands the output gradient to the engine.

    The module's trainable parameters are inputs so that autograd calls this backward even when
    nothing before the module needs a gradient (the first layer); it returns no gradient for them,
    so autograd never accumulates unclipped parameter gradients.
    """

    @staticmethod
    def forward(ctx: Any, output: torch.Tensor, call: _ModuleCall, *params: nn.Parameter) -> torch.Tensor:
        ctx.call = call
        ctx.num_params = len(params)
        return output.view_as(output)

    @staticmethod
    def backward(ctx: Any, grad_output: torch.Tensor) -> tuple[torch.Tensor | None, ...]:
        ctx.call.engine._receive_output_gradient(ctx.call, grad_output)
        return (grad_output, None, *([None] * ctx.num_params))
