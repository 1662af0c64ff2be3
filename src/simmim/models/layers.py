"""Building blocks made only of layers a per-example-gradient engine can handle.

Every trainable parameter lives either in `nn.Linear`, `nn.LayerNorm`, `nn.Embedding`, or in one
of the small leaf modules below, each of which uses its parameter in one simple way (added,
prepended, substituted, or scaling). No buffers, no BatchNorm, no fused attention weights:
masks are built on the fly, so the DP engine can clip every example's contribution exactly.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn


class PositionEmbedding(nn.Module):
    """Adds a learned embedding per position: `x + weight[:L]`."""

    def __init__(self, length: int, dim: int):
        super().__init__()
        self.weight = nn.Parameter(torch.randn(length, dim) * 0.02)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.weight[: x.shape[1]]


def sincos_2d(side: int, dim: int) -> torch.Tensor:
    """Fixed 2-D sine-cosine position codes for a side x side grid, (side*side, dim), row-major.

    Used to initialise the (still learned) patch position embedding, so that where a patch lies
    is legible from the first step: object positions are part of every caption.
    """
    quarter = dim // 4
    freqs = 1.0 / (10000 ** (torch.arange(quarter, dtype=torch.float32) / max(1, quarter)))
    ys, xs = torch.meshgrid(torch.arange(side, dtype=torch.float32), torch.arange(side, dtype=torch.float32),
                            indexing="ij")
    parts = []
    for coord in (ys.flatten(), xs.flatten()):
        angles = coord[:, None] * freqs[None]
        parts += [angles.sin(), angles.cos()]
    codes = torch.cat(parts, dim=1)
    return torch.nn.functional.pad(codes, (0, dim - codes.shape[1]))


class ClassToken(nn.Module):
    """Prepends one learned token to a sequence."""

    def __init__(self, dim: int):
        super().__init__()
        self.weight = nn.Parameter(torch.randn(dim) * 0.02)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        token = self.weight.expand(x.shape[0], 1, -1)
        return torch.cat([token, x], dim=1)


class MaskToken(nn.Module):
    """Replaces the tokens where `mask` is true by one learned token (SimMIM: masked, not dropped)."""

    def __init__(self, dim: int):
        super().__init__()
        self.weight = nn.Parameter(torch.zeros(dim))

    def forward(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        return torch.where(mask.unsqueeze(-1), self.weight.to(x.dtype), x)


class LearnedQueries(nn.Module):
    """A fixed set of learned query tokens, the same for every example."""

    def __init__(self, count: int, dim: int):
        super().__init__()
        self.weight = nn.Parameter(torch.randn(count, dim) * 0.02)

    def forward(self, batch_size: int) -> torch.Tensor:
        return self.weight.expand(batch_size, -1, -1)


class LogitScale(nn.Module):
    """The learned temperature of the contrastive loss: `x * exp(s)`, with exp(s) clamped to 100."""

    def __init__(self, init: float):
        super().__init__()
        self.weight = nn.Parameter(torch.tensor(float(init)))

    def forward(self, logits: torch.Tensor) -> torch.Tensor:
        return logits * self.weight.clamp(max=math.log(100.0)).exp()


def _activation(name: str):
    if name == "quick_gelu":
        return lambda x: x * torch.sigmoid(1.702 * x)
    return F.gelu


class Attention(nn.Module):
    """Multi-head attention with separate q/k/v/out projections (no fused in-projection)."""

    def __init__(self, dim: int, heads: int, context_dim: int | None = None):
        super().__init__()
        context_dim = context_dim or dim
        self.heads = heads
        self.q_proj = nn.Linear(dim, dim)
        self.k_proj = nn.Linear(context_dim, dim)
        self.v_proj = nn.Linear(context_dim, dim)
        self.out_proj = nn.Linear(dim, dim)

    def _split(self, x: torch.Tensor) -> torch.Tensor:
        n, length, dim = x.shape
        return x.view(n, length, self.heads, dim // self.heads).transpose(1, 2)

    def forward(self, x: torch.Tensor, context: torch.Tensor | None = None, causal: bool = False,
                context_mask: torch.Tensor | None = None) -> torch.Tensor:
        """`context_mask` (N, M) bool: which context tokens may be attended to (padding excluded)."""
        context = x if context is None else context
        q, k, v = self._split(self.q_proj(x)), self._split(self.k_proj(context)), self._split(self.v_proj(context))
        attn_mask = None if context_mask is None else context_mask[:, None, None, :]
        y = F.scaled_dot_product_attention(q, k, v, attn_mask=attn_mask, is_causal=causal)
        return self.out_proj(y.transpose(1, 2).reshape(x.shape))


class MLP(nn.Module):
    def __init__(self, dim: int, hidden: int, activation: str = "gelu"):
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden)
        self.fc2 = nn.Linear(hidden, dim)
        self.act = _activation(activation)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(self.act(self.fc1(x)))


class Block(nn.Module):
    """Pre-norm transformer block; with `context_dim` it also cross-attends to a memory."""

    def __init__(self, dim: int, heads: int, mlp_ratio: float = 2.0, activation: str = "gelu",
                 context_dim: int | None = None):
        super().__init__()
        self.ln_1 = nn.LayerNorm(dim)
        self.attn = Attention(dim, heads)
        self.cross = context_dim is not None
        if self.cross:
            self.ln_cross = nn.LayerNorm(dim)
            self.cross_attn = Attention(dim, heads, context_dim)
        self.ln_2 = nn.LayerNorm(dim)
        self.mlp = MLP(dim, int(dim * mlp_ratio), activation)

    def forward(self, x: torch.Tensor, context: torch.Tensor | None = None, causal: bool = False,
                context_mask: torch.Tensor | None = None) -> torch.Tensor:
        x = x + self.attn(self.ln_1(x), causal=causal)
        if self.cross:
            x = x + self.cross_attn(self.ln_cross(x), context, context_mask=context_mask)
        return x + self.mlp(self.ln_2(x))


def patchify(images: torch.Tensor, patch_size: int) -> torch.Tensor:
    """(N, C, H, W) -> (N, P, C*p*p), each patch flattened in (C, p, p) order like a Conv2d kernel."""
    n, c, h, w = images.shape
    p = patch_size
    x = images.reshape(n, c, h // p, p, w // p, p).permute(0, 2, 4, 1, 3, 5)
    return x.reshape(n, (h // p) * (w // p), c * p * p)


def unpatchify(patches: torch.Tensor, patch_size: int, channels: int = 3) -> torch.Tensor:
    """Inverse of `patchify` for square images."""
    n, count, _ = patches.shape
    side = int(math.isqrt(count))
    p = patch_size
    x = patches.reshape(n, side, side, channels, p, p).permute(0, 3, 1, 4, 2, 5)
    return x.reshape(n, channels, side * p, side * p)
