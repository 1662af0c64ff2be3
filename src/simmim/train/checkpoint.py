"""Checkpoints: weights as safetensors, everything else as JSON, optimizer state for resume.

A checkpoint is a directory written under a temporary name and renamed into place, so a crash
while saving leaves the previous checkpoint intact and never a half-written one.

    model.safetensors   weights
    meta.json           config, model config, tokenizer, data fingerprint, metrics, seed, step, history
    trainer.pt          optimizer and scheduler state (needed only to resume)
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

import simmim
from simmim.data.tokenizer import WordTokenizer
from simmim.errors import CheckpointError
from simmim.models import ModelConfig, SimMIM, create_model

FORMAT = "simmim-checkpoint"
VERSION = 1


def save_checkpoint(path: str | Path, *, model: SimMIM, tokenizer: WordTokenizer, meta: dict,
                    trainer_state: dict | None = None) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.", dir=path.parent))
    try:
        state = {k: v.detach().contiguous() for k, v in model.state_dict().items()}
        save_file(state, tmp / "model.safetensors")
        full_meta = {
            "format": FORMAT, "version": VERSION, "simmim_version": simmim.__version__,
            "torch_version": torch.__version__, "model_config": model.cfg.to_dict(),
            "tokenizer": tokenizer.to_dict(), **meta,
        }
        (tmp / "meta.json").write_text(json.dumps(full_meta, indent=2))
        if trainer_state is not None:
            torch.save(trainer_state, tmp / "trainer.pt")
        old = None
        if path.exists():
            old = path.with_name(f".{path.name}.old")
            shutil.rmtree(old, ignore_errors=True)
            os.replace(path, old)
        os.replace(tmp, path)
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return path


def read_meta(path: str | Path) -> dict:
    path = Path(path)
    meta_file = path / "meta.json"
    if not path.is_dir():
        raise CheckpointError(f"checkpoint {path} does not exist (expected a directory with model.safetensors)")
    if not meta_file.is_file() or not (path / "model.safetensors").is_file():
        raise CheckpointError(f"checkpoint {path} is incomplete: meta.json or model.safetensors is missing")
    try:
        meta = json.loads(meta_file.read_text())
    except json.JSONDecodeError as exc:
        raise CheckpointError(f"checkpoint {path}: meta.json is not valid JSON ({exc})") from None
    if meta.get("format") != FORMAT or meta.get("version") != VERSION:
        raise CheckpointError(f"checkpoint {path}: not a SimMIM v{VERSION} checkpoint")
    return meta


def load_checkpoint(path: str | Path) -> tuple[SimMIM, WordTokenizer, dict]:
    """The model (in eval mode), its tokenizer and the metadata."""
    path = Path(path)
    meta = read_meta(path)
    model = create_model(ModelConfig.from_dict(meta["model_config"]))
    try:
        model.load_state_dict(load_file(path / "model.safetensors"))
    except (RuntimeError, OSError) as exc:
        raise CheckpointError(f"checkpoint {path}: weights do not match the model config ({exc})") from None
    model.eval()
    return model, WordTokenizer.from_dict(meta["tokenizer"]), meta


def load_trainer_state(path: str | Path) -> dict:
    file = Path(path) / "trainer.pt"
    if not file.is_file():
        raise CheckpointError(f"checkpoint {path} has no trainer.pt, so training cannot resume from it")
    return torch.load(file, weights_only=True)


def latest_checkpoint(run_dir: str | Path) -> Path | None:
    """The newest complete step checkpoint of a run directory, if any."""
    root = Path(run_dir) / "checkpoints"
    steps = sorted(p for p in root.glob("step-*") if (p / "meta.json").is_file()) if root.is_dir() else []
    return steps[-1] if steps else None


def update_metrics(path: str | Path, metrics: dict) -> None:
    """Record evaluation metrics in a checkpoint's meta.json (atomically replaced)."""
    path = Path(path)
    meta = read_meta(path)
    meta["metrics"] = metrics
    tmp = path / ".meta.json.tmp"
    tmp.write_text(json.dumps(meta, indent=2))
    os.replace(tmp, path / "meta.json")
