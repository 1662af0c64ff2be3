"""The SimMIM model: one module holding the encoders, the fusion and the decoders.

Images, clips and captions meet in one L2-normalised embedding space (`encode_*`); the decoders
generate captions from images or clips, images from text, and masked patches from context.
"""

from __future__ import annotations

import torch
from torch import nn

from simmim.models.config import ModelConfig, model_config
from simmim.models.decoders import CaptionDecoder, ImageGenerator, MaskedPatchHead
from simmim.models.encoders import ImageEncoder, TemporalEncoder, TextEncoder
from simmim.models.fusion import Fusion


class SimMIM(nn.Module):
    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.cfg = cfg
        self.visual = ImageEncoder(cfg)
        self.temporal = TemporalEncoder(cfg)
        self.text = TextEncoder(cfg)
        self.fusion = Fusion(cfg)
        self.patch_head = MaskedPatchHead(cfg)
        self.captioner = CaptionDecoder(cfg)
        self.generator = ImageGenerator(cfg)
        self.apply(_init_weights)

    # Token-level views, used by the losses and the decoders.
    def image_tokens(self, images: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        return self.visual(images, mask)

    def video_tokens(self, frames: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Frames (N, T, C, H, W) -> (frame tokens (N, T, width), pooled (N, width))."""
        n, t = frames.shape[:2]
        cls = self.visual(frames.flatten(0, 1))[:, 0]
        return self.temporal(cls.view(n, t, -1))

    # The shared embedding space.
    def encode_image(self, images: torch.Tensor) -> torch.Tensor:
        return self.fusion.embed(self.visual(images)[:, 0], "image")

    def encode_video(self, frames: torch.Tensor) -> torch.Tensor:
        return self.fusion.embed(self.video_tokens(frames)[1], "video")

    def encode_text(self, tokens: torch.Tensor) -> torch.Tensor:
        return self.fusion.embed(self.text(tokens)[1], "text")

    # Generation.
    @torch.no_grad()
    def caption_tokens(self, images: torch.Tensor | None = None, frames: torch.Tensor | None = None, *,
                       bos_id: int, eos_id: int, beam_size: int = 1) -> list[list[int]]:
        memory = self.visual(images) if frames is None else self.video_tokens(frames)[0]
        if beam_size > 1:
            return self.captioner.beam(memory, bos_id, eos_id, beam_size)
        return [row.tolist() for row in self.captioner.greedy(memory, bos_id, eos_id)]

    @torch.no_grad()
    def generate_images(self, tokens: torch.Tensor, pad_id: int = 0) -> torch.Tensor:
        hidden, pooled = self.text(tokens)
        return self.generator(hidden, pooled, tokens != pad_id).clamp(0.0, 1.0)


def _init_weights(module: nn.Module) -> None:
    if isinstance(module, nn.Linear):
        nn.init.trunc_normal_(module.weight, std=0.02)
        if module.bias is not None:
            nn.init.zeros_(module.bias)
    elif isinstance(module, nn.Embedding):
        nn.init.normal_(module.weight, std=0.02)


def create_model(size: str | ModelConfig = "tiny", **overrides) -> SimMIM:
    """The one factory: a named size (`tiny`, `demo`, `small`, `base`) or a full config."""
    cfg = size if isinstance(size, ModelConfig) else model_config(size, **overrides)
    return SimMIM(cfg)
