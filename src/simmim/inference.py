"""Inference on a trained checkpoint: caption, generate, search, classify.

Library functions that the CLI (and later the server) call; each takes the loaded model and
tokenizer, so loading happens once per process.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from PIL import Image

from simmim.data.formats import IMAGE_SUFFIXES, load_image
from simmim.errors import DataError


def _pixels(images: list[np.ndarray]) -> torch.Tensor:
    return torch.from_numpy(np.stack(images)).float().div(255).permute(0, 3, 1, 2)


def caption_image(model, tokenizer, image: np.ndarray, beam_size: int = 1) -> str:
    ids = model.caption_tokens(_pixels([image]), bos_id=tokenizer.bos_id, eos_id=tokenizer.eos_id,
                               beam_size=beam_size)[0]
    return tokenizer.decode(ids)


def generate_image(model, tokenizer, text: str) -> np.ndarray:
    tokens = torch.from_numpy(tokenizer.encode_batch([text], model.cfg.context_length))
    image = model.generate_images(tokens, tokenizer.pad_id)[0]
    return (image.clamp(0, 1) * 255).round().byte().permute(1, 2, 0).numpy()


def save_png(image: np.ndarray, path: str | Path, scale: int = 4) -> Path:
    """Save an H x W x 3 uint8 image, enlarged by `scale` with nearest neighbours so it stays crisp."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    picture = Image.fromarray(image)
    picture.resize((image.shape[1] * scale, image.shape[0] * scale), Image.NEAREST).save(path)
    return path


@torch.no_grad()
def search_images(model, tokenizer, text: str, image_dir: str | Path, top: int = 5) -> list[tuple[Path, float]]:
    """Rank the images of a folder by cosine similarity to `text` in the shared space."""
    folder = Path(image_dir)
    if not folder.is_dir():
        raise DataError(f"{folder}: not a directory of images")
    paths = sorted(p for p in folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
    if not paths:
        raise DataError(f"{folder}: contains no images ({', '.join(sorted(IMAGE_SUFFIXES))})")
    images = [load_image(p, model.cfg.image_size) for p in paths]
    image_emb = model.encode_image(_pixels(images))
    tokens = torch.from_numpy(tokenizer.encode_batch([text], model.cfg.context_length))
    scores = (image_emb @ model.encode_text(tokens).T)[:, 0]
    order = scores.argsort(descending=True)[:top]
    return [(paths[i], float(scores[i])) for i in order]


@torch.no_grad()
def classify_image(model, tokenizer, image: np.ndarray, labels: list[str]) -> list[tuple[str, float]]:
    """Zero-shot: probabilities over `labels` (each label used as its own prompt), best first."""
    labels = [label.strip() for label in labels if label.strip()]
    if len(labels) < 2:
        raise DataError("--labels needs at least two comma-separated labels")
    tokens = torch.from_numpy(tokenizer.encode_batch(labels, model.cfg.context_length))
    logits = model.fusion.logits(model.encode_image(_pixels([image])), model.encode_text(tokens))[0]
    probs = logits.softmax(dim=0)
    return sorted(zip(labels, probs.tolist()), key=lambda x: -x[1])
