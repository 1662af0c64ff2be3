"""Fusion into one shared space: a bias-free projection per modality, L2-normalised,
and the learned temperature that scales their similarities."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from simmim.models.config import ModelConfig
from simmim.models.layers import LogitScale


class Fusion(nn.Module):
    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.image_proj = nn.Linear(cfg.width, cfg.embed_dim, bias=False)
        self.video_proj = nn.Linear(cfg.width, cfg.embed_dim, bias=False)
        self.text_proj = nn.Linear(cfg.text_width, cfg.embed_dim, bias=False)
        self.logit_scale = LogitScale(cfg.init_logit_scale)

    def embed(self, pooled: torch.Tensor, modality: str) -> torch.Tensor:
        projection = {"image": self.image_proj, "video": self.video_proj, "text": self.text_proj}[modality]
        return F.normalize(projection(pooled), dim=-1)

    def logits(self, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        """Scaled cosine similarities of normalised embeddings, (len(a), len(b))."""
        return self.logit_scale(a @ b.t())
