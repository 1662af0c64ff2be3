"""Checks, before any training, that every trainable parameter of a model can be clipped per
example exactly; names every offending module with what to use instead."""

from __future__ import annotations

from torch import nn
from torch.nn.modules.batchnorm import _BatchNorm
from torch.nn.modules.instancenorm import _InstanceNorm

from simmim.privacy.dpsgd.errors import UnsupportedModuleError
from simmim.privacy.dpsgd.rules import rule_for

SUPPORTED = ("nn.Linear, nn.LayerNorm, nn.Embedding, nn.Conv2d and the leaf modules of simmim.models.layers "
             "(PositionEmbedding, ClassToken, MaskToken, LearnedQueries, LogitScale)")


def validate_module(module: nn.Module) -> None:
    """Raises `UnsupportedModuleError` listing every module the engine cannot clip exactly.

    Args:
        module: the model to train with per-example clipping.

    Raises:
        UnsupportedModuleError: one line per problem, each naming the module by its qualified name.
    """
    problems = unsupported_modules(module)
    if problems:
        raise UnsupportedModuleError(
            "this model cannot be trained with per-example clipping:\n" + "\n".join(f"  - {p}" for p in problems)
        )


def unsupported_modules(module: nn.Module) -> list[str]:
    """One message per problem found (empty if the model is supported)."""
    problems: list[str] = []
    replaced: list[str] = []  # modules reported whole: their insides are not reported again
    subtree_trainable = {name: any(p.requires_grad for p in m.parameters()) for name, m in module.named_modules()}
    for name, m in module.named_modules():
        if any(name.startswith(prefix + ".") for prefix in replaced):
            continue
        label = f"{name or '(root)'} ({type(m).__name__})"
        whole = _whole_module_problem(m)
        if whole:
            problems.append(f"{label}: {whole}")
            replaced.append(name)
            continue
        own = [pname for pname, p in m.named_parameters(recurse=False) if p.requires_grad]
        rule = rule_for(m)
        if own and rule is None:
            problems.append(
                f"{label} holds trainable parameters ({', '.join(own)}) of a module type with no per-example rule: "
                f"build it from {SUPPORTED}, or freeze them (requires_grad=False)"
            )
        elif own and rule.problem(m):
            problems.append(f"{label}: {rule.problem(m)}")
        buffers = [bname for bname, _ in m.named_buffers(recurse=False)]
        parent = name.rpartition(".")[0]
        if buffers and (subtree_trainable[name] or subtree_trainable.get(parent, False)):
            problems.append(
                f"{label} holds buffers ({', '.join(buffers)}) inside a trainable module: build masks and "
                "constants on the fly in forward (a buffer the forward updates mixes examples)"
            )
    problems += _shared_parameters(module)
    return problems


def _whole_module_problem(module: nn.Module) -> str | None:
    if isinstance(module, _BatchNorm):
        return "batch normalisation mixes the examples of a batch through its statistics: use nn.LayerNorm"
    if isinstance(module, (nn.GroupNorm, _InstanceNorm)):
        return "has no per-example rule: use nn.LayerNorm"
    if isinstance(module, nn.MultiheadAttention):
        return ("its fused in-projection has no per-example rule: use simmim.models.layers.Attention "
                "(separate q/k/v/out nn.Linear)")
    return None


def _shared_parameters(module: nn.Module) -> list[str]:
    """Parameters held by more than one module (tied weights): their per-example gradient would be
    the sum of two rules' gradients, whose cross terms no single rule sees."""
    owners: dict[int, list[str]] = {}
    for name, m in module.named_modules():
        for pname, p in m.named_parameters(recurse=False):
            if p.requires_grad:
                owners.setdefault(id(p), []).append(f"{name}.{pname}" if name else pname)
    return [
        f"one parameter is shared by {' and '.join(names)} (tied weights): untie them or freeze the parameter"
        for names in owners.values() if len(names) > 1
    ]
