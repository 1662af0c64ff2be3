"""Decoders that generate one modality from another.

- `MaskedPatchHead`: SimMIM's linear head predicting the pixels of every patch (loss on masked ones).
- `CaptionDecoder`: image or video -> text, causal self-attention + cross-attention to the
  visual tokens (CoCa style), decoded greedily or by beam search.
- `ImageGenerator`: text -> image, one learned query per patch cross-attending to the text tokens,
  a linear pixel head per patch.
"""

from __future__ import annotations

import torch
from torch import nn

from simmim.models.config import ModelConfig
from simmim.models.layers import Block, LearnedQueries, PositionEmbedding, sincos_2d, unpatchify


class MaskedPatchHead(nn.Module):
    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.proj = nn.Linear(cfg.width, cfg.patch_dim)

    def forward(self, patch_tokens: torch.Tensor) -> torch.Tensor:
        """(N, P, width) -> predicted patches (N, P, C*p*p) in [0, 1] pixel units."""
        return self.proj(patch_tokens)


class CaptionDecoder(nn.Module):
    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.cfg = cfg
        self.token_embedding = nn.Embedding(cfg.vocab_size, cfg.decoder_width)
        self.position = PositionEmbedding(cfg.context_length, cfg.decoder_width)
        self.blocks = nn.ModuleList(
            Block(cfg.decoder_width, cfg.heads, cfg.mlp_ratio, cfg.activation, context_dim=cfg.width)
            for _ in range(cfg.decoder_depth)
        )
        self.ln = nn.LayerNorm(cfg.decoder_width)
        self.lm_head = nn.Linear(cfg.decoder_width, cfg.vocab_size)

    def forward(self, tokens: torch.Tensor, memory: torch.Tensor) -> torch.Tensor:
        """Next-token logits (N, L, vocab) for input tokens (N, L) given visual memory (N, M, width)."""
        x = self.position(self.token_embedding(tokens))
        for block in self.blocks:
            x = block(x, context=memory, causal=True)
        return self.lm_head(self.ln(x))

    @torch.no_grad()
    def greedy(self, memory: torch.Tensor, bos_id: int, eos_id: int, max_len: int | None = None) -> torch.Tensor:
        """Token ids (N, <=max_len) after bos; rows end at their first eos (later ids are eos)."""
        max_len = max_len or self.cfg.context_length - 1
        tokens = torch.full((memory.shape[0], 1), bos_id, dtype=torch.long)
        done = torch.zeros(memory.shape[0], dtype=torch.bool)
        for _ in range(max_len):
            next_id = self(tokens, memory)[:, -1].argmax(dim=-1)
            next_id = torch.where(done, torch.full_like(next_id, eos_id), next_id)
            tokens = torch.cat([tokens, next_id[:, None]], dim=1)
            done |= next_id == eos_id
            if done.all():
                break
        return tokens[:, 1:]

    @torch.no_grad()
    def beam(self, memory: torch.Tensor, bos_id: int, eos_id: int, beam_size: int = 4,
             max_len: int | None = None) -> list[list[int]]:
        """Beam search, one example at a time; returns the best finished sequence per example
        (by total log-probability divided by length, so short captions get no free advantage)."""
        max_len = max_len or self.cfg.context_length - 1
        results = []
        for row in memory:
            beams: list[tuple[list[int], float]] = [([bos_id], 0.0)]
            finished: list[tuple[list[int], float]] = []
            for _ in range(max_len):
                batch = torch.tensor([seq for seq, _ in beams])
                log_probs = self(batch, row.expand(len(beams), -1, -1))[:, -1].log_softmax(dim=-1)
                candidates = []
                for (seq, score), lp in zip(beams, log_probs):
                    top = lp.topk(beam_size)
                    candidates += [(seq + [int(i)], score + float(v)) for v, i in zip(top.values, top.indices)]
                candidates.sort(key=lambda c: c[1], reverse=True)
                beams = []
                for seq, score in candidates:
                    (finished if seq[-1] == eos_id else beams).append((seq, score))
                    if len(beams) == beam_size:
                        break
                if len(finished) >= beam_size or not beams:
                    break
            finished += beams
            best = max(finished, key=lambda c: c[1] / (len(c[0]) - 1))
            results.append(best[0][1:])
        return results


class ImageGenerator(nn.Module):
    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.cfg = cfg
        self.queries = LearnedQueries(cfg.num_patches, cfg.decoder_width)
        # The pooled text embedding is added to every query: a short path from "red, top left" to
        # every patch, which cross-attention alone learns too slowly (the L1 optimum starts all black).
        self.condition = nn.Linear(cfg.text_width, cfg.decoder_width)
        self.blocks = nn.ModuleList(
            Block(cfg.decoder_width, cfg.heads, cfg.mlp_ratio, cfg.activation, context_dim=cfg.text_width)
            for _ in range(cfg.generator_depth)
        )
        self.ln = nn.LayerNorm(cfg.decoder_width)
        self.pixel_head = nn.Linear(cfg.decoder_width, cfg.patch_dim)
        with torch.no_grad():  # each query starts out knowing which patch it draws
            self.queries.weight.copy_(sincos_2d(cfg.image_size // cfg.patch_size, cfg.decoder_width))

    def forward(self, text_hidden: torch.Tensor, text_pooled: torch.Tensor,
                text_mask: torch.Tensor | None = None) -> torch.Tensor:
        """Text tokens (N, L, text_width), their pooled vector (N, text_width) and `text_mask` (N, L),
        true on real tokens -> image (N, C, H, W).

        The output is linear (pixel units, [0, 1] when trained): a sigmoid here saturates under the
        L1 loss on the mostly black background and stops all gradient (seen: all-black images).
        """
        x = self.queries(text_hidden.shape[0]) + self.condition(text_pooled)[:, None]
        for block in self.blocks:
            x = block(x, context=text_hidden, context_mask=text_mask)
        return unpatchify(self.pixel_head(self.ln(x)), self.cfg.patch_size, self.cfg.channels)
