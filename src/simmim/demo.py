"""The main job: generate data, train the demo model, evaluate it, write the run report."""

from __future__ import annotations

import time
from importlib import resources
from pathlib import Path

from simmim.config import Config, load_config
from simmim.data.splits import build_splits
from simmim.eval.evaluate import evaluate
from simmim.report import write_report
from simmim.train.checkpoint import update_metrics
from simmim.train.loop import train


def packaged_config(name: str) -> Config:
    """One of the configs shipped in `simmim/configs/` (`demo`, `quick`, `tiny`)."""
    with resources.as_file(resources.files("simmim") / "configs" / f"{name}.toml") as path:
        return load_config(path)


def run_demo(out: str | Path, *, quick: bool = False, progress: bool = True, config: Config | None = None) -> dict:
    out = Path(out)
    cfg = config or packaged_config("quick" if quick else "demo")
    t0 = time.perf_counter()
    splits = build_splits(cfg.data)
    t_data = time.perf_counter()
    result = train(cfg, out, splits=splits, progress=progress)
    t_train = time.perf_counter()
    evaluation = evaluate(result.model, result.tokenizer, splits, context_length=cfg.data.context_length)
    t_eval = time.perf_counter()
    update_metrics(result.checkpoint, evaluation.metrics)
    timing = {
        "data_seconds": round(t_data - t0, 1), "train_seconds": round(t_train - t_data, 1),
        "eval_seconds": round(t_eval - t_train, 1), "total_seconds": round(t_eval - t0, 1),
        "steps": cfg.train.steps, "train_examples_per_second": round(result.examples_per_second, 1),
    }
    n_params = sum(p.numel() for p in result.model.parameters())
    notes = [f"Model `{cfg.model.size}` ({n_params / 1e6:.2f}M parameters), {len(splits.train)} training images"
             f" and {len(splits.video_train)} clips, {cfg.train.steps} steps of batch {cfg.train.batch_size}.",
             f"Checkpoint: `{result.checkpoint}`. Chance: a random ranking (retrieval), the majority class"
             " (classification), or predictions paired with the wrong record (captions)."]
    write_report(out, title="SimMIM demo" + (" (quick)" if quick else ""), metrics=evaluation.metrics,
                 samples=evaluation.samples, history=result.history, timing=timing, privacy=result.privacy,
                 notes=notes)
    return {"metrics": evaluation.metrics, "privacy": result.privacy, "timing": timing}
