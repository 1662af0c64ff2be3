"""Encoders: a ViT for images (with SimMIM patch masking), a causal text transformer, and a
video encoder that runs the image encoder per frame and a temporal transformer over frames."""

from __future__ import annotations

import torch
from torch import nn

from simmim.models.config import ModelConfig
from simmim.models.layers import Block, ClassToken, MaskToken, PositionEmbedding, patchify, sincos_2d


class ImageEncoder(nn.Module):
    """ViT: linear patch embedding, CLS token, learned positions, pre-norm blocks.

    Input: images (N, C, H, W) in [0, 1]. Output: tokens (N, 1 + P, width), CLS first, after `ln_post`.
    With `mask` (N, P) bool, masked patch embeddings are replaced by the mask token.
    """

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.cfg = cfg
        self.patch_embed = nn.Linear(cfg.patch_dim, cfg.width, bias=False)
        self.mask_token = MaskToken(cfg.width)
        self.class_token = ClassToken(cfg.width)
        self.position = PositionEmbedding(cfg.num_patches + 1, cfg.width)
        self.ln_pre = nn.LayerNorm(cfg.width) if cfg.pre_norm else nn.Identity()
        self.blocks = nn.ModuleList(
            Block(cfg.width, cfg.heads, cfg.mlp_ratio, cfg.activation) for _ in range(cfg.depth)
        )
        self.ln_post = nn.LayerNorm(cfg.width)
        with torch.no_grad():
            side = cfg.image_size // cfg.patch_size
            self.position.weight[1:] = 0.1 * sincos_2d(side, cfg.width)

    def normalise(self, images: torch.Tensor) -> torch.Tensor:
        mean = torch.tensor(self.cfg.pixel_mean, dtype=images.dtype).view(1, -1, 1, 1)
        std = torch.tensor(self.cfg.pixel_std, dtype=images.dtype).view(1, -1, 1, 1)
        return (images - mean) / std

    def forward(self, images: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        x = self.patch_embed(patchify(self.normalise(images), self.cfg.patch_size))
        if mask is not None:
            x = self.mask_token(x, mask)
        x = self.ln_pre(self.position(self.class_token(x)))
        for block in self.blocks:
            x = block(x)
        return self.ln_post(x)


class TextEncoder(nn.Module):
    """Causal transformer over word tokens, pooled at the first end-of-text token (as in CLIP).

    Output: (hidden (N, L, text_width), pooled (N, text_width)).
    """

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.eos_id = cfg.eos_id
        self.token_embedding = nn.Embedding(cfg.vocab_size, cfg.text_width)
        self.position = PositionEmbedding(cfg.context_length, cfg.text_width)
        self.blocks = nn.ModuleList(
            Block(cfg.text_width, cfg.text_heads, cfg.mlp_ratio, cfg.activation) for _ in range(cfg.text_depth)
        )
        self.ln_final = nn.LayerNorm(cfg.text_width)

    def forward(self, tokens: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        x = self.position(self.token_embedding(tokens))
        for block in self.blocks:
            x = block(x, causal=True)
        x = self.ln_final(x)
        # First eos per row; a row without one pools at its last position.
        is_eos = tokens == self.eos_id
        last = torch.full((tokens.shape[0],), tokens.shape[1] - 1, dtype=torch.long)
        index = torch.where(is_eos.any(dim=1), is_eos.int().argmax(dim=1), last)
        return x, x[torch.arange(x.shape[0]), index]


class TemporalEncoder(nn.Module):
    """Runs over the per-frame CLS embeddings of a clip: learned frame positions + blocks.

    Input: frame embeddings (N, T, width). Output: (frame tokens (N, T, width), pooled (N, width)).
    """

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.position = PositionEmbedding(cfg.max_frames, cfg.width)
        self.blocks = nn.ModuleList(
            Block(cfg.width, cfg.heads, cfg.mlp_ratio, cfg.activation) for _ in range(cfg.temporal_depth)
        )
        self.ln = nn.LayerNorm(cfg.width)

    def forward(self, frame_embeddings: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        x = self.position(frame_embeddings)
        for block in self.blocks:
            x = block(x)
        x = self.ln(x)
        return x, x.mean(dim=1)
