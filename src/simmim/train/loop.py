"""The training loop, shared by every objective.

`train` builds data, tokenizer and model from a `Config`, runs AdamW with warmup + cosine, logs
losses, writes checkpoints, and resumes exactly from the newest one when asked. How the gradient
of a step is formed is the `step_fn`'s business, so a differentially private step (per-example
clipping and noise) plugs into this same loop.
"""

from __future__ import annotations

import shutil
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import torch
from safetensors.torch import load_file
from torch import nn

from simmim.config import Config
from simmim.data.batches import EncodedSet, step_generator, step_indices
from simmim.data.splits import Splits, build_splits
from simmim.data.tokenizer import WordTokenizer
from simmim.errors import CheckpointError, ConfigError
from simmim.losses import SimMIMObjective
from simmim.models import SimMIM, create_model
from simmim.models.lora import LoRALinear, merge_lora
from simmim.progress import progress_bar
from simmim.train.checkpoint import latest_checkpoint, load_trainer_state, read_meta, save_checkpoint
from simmim.train.finetune import choose_trained_parameters, load_initial_weights, starting_tokenizer
from simmim.train.schedule import warmup_cosine
from simmim.vault.training import record_lineage

KEEP_STEP_CHECKPOINTS = 2


@dataclass
class TrainResult:
    model: SimMIM
    tokenizer: WordTokenizer
    splits: Splits
    checkpoint: Path
    history: list[dict] = field(default_factory=list)
    seconds: float = 0.0
    examples_per_second: float = 0.0
    privacy: dict | None = None  # the guarantee of a DP run: epsilon spent, delta, unit, sigma, q, ...


def build_model(cfg: Config, tokenizer: WordTokenizer) -> SimMIM:
    torch.manual_seed(cfg.train.seed)
    return create_model(
        cfg.model.size, vocab_size=tokenizer.vocab_size, eos_id=tokenizer.eos_id, image_size=cfg.data.image_size,
        context_length=cfg.data.context_length, max_frames=max(8, cfg.data.frames), **cfg.model.overrides,
    )


def make_optimizer(model: nn.Module, cfg: Config) -> torch.optim.AdamW:
    """AdamW with weight decay on Linear and Embedding weights only (not norms, biases or tokens)."""
    decay = {id(m.weight) for m in model.modules() if isinstance(m, (nn.Linear, nn.Embedding))}
    params = [p for p in model.parameters() if p.requires_grad]
    groups = [
        {"params": [p for p in params if id(p) in decay], "weight_decay": cfg.train.weight_decay},
        {"params": [p for p in params if id(p) not in decay], "weight_decay": 0.0},
    ]
    return torch.optim.AdamW(groups, lr=cfg.train.lr, betas=(0.9, 0.98), eps=1e-6)


def standard_step(model: SimMIM, objective: SimMIMObjective, batches: list[dict], grad_clip: float,
                  micro_batch_size: int = 0) -> dict:
    """Non-private step: mean loss over each batch of the step (summed over batches), backward,
    global-norm clipping. With `micro_batch_size`, a larger batch is processed in passes of that
    many examples whose gradients add up to the batch's (contrastive negatives come from the pass)."""
    sums: dict[str, float] = {}
    for batch in batches:
        n = len(batch["groups"])
        size = micro_batch_size or n
        prefix = "video_" if "frames" in batch else ""
        for start in range(0, n, size):
            part = {key: value[start:start + size] for key, value in batch.items()}
            weight = len(part["groups"]) / n
            part_loss, part_parts = objective(model, part)
            (part_loss * weight).backward()
            sums["loss"] = sums.get("loss", 0.0) + float(part_loss.detach()) * weight
            for key, value in part_parts.items():
                sums[prefix + key] = sums.get(prefix + key, 0.0) + value * weight
    if grad_clip:
        nn.utils.clip_grad_norm_(model.parameters(), grad_clip)
    return {**sums, "examples": sum(len(b["groups"]) for b in batches)}


def train(cfg: Config, out_dir: str | Path, *, resume: bool = False, progress: bool = True,
          splits: Splits | None = None, step_fn: Callable | None = None,
          on_log: Callable[[dict], None] | None = None) -> TrainResult:
    """Train to `cfg.train.steps`, writing `out_dir/checkpoints/step-*` and `out_dir/model`."""
    out_dir = Path(out_dir)
    tc = cfg.train
    if tc.steps <= 0 or tc.batch_size <= 0:
        raise ConfigError("train.steps and train.batch_size must be positive")
    if tc.threads:
        torch.set_num_threads(tc.threads)
    splits = splits if splits is not None else build_splits(cfg.data, cfg.vault)
    if not splits.train:
        raise ConfigError("the training split is empty: check data.source / data.train_size")
    resume_from = latest_checkpoint(out_dir) if resume else None
    if resume and resume_from is None and (out_dir / "model").is_dir():
        resume_from = out_dir / "model"
    if resume_from is not None:
        meta = read_meta(resume_from)
        tokenizer = WordTokenizer.from_dict(meta["tokenizer"])
        if meta.get("config") != cfg.to_dict():
            raise CheckpointError(f"cannot resume from {resume_from}: it was trained with a different config")
        if meta.get("data_fingerprint") != splits.fingerprint():
            raise CheckpointError(f"cannot resume from {resume_from}: the training data changed since")
        init_meta = None
    else:
        tokenizer, init_meta = starting_tokenizer(cfg, splits)
    # Encoding validates every caption against the context length before any training.
    train_set = EncodedSet(splits.train, tokenizer, cfg.data.context_length)
    video_set = EncodedSet(splits.video_train, tokenizer, cfg.data.context_length) if splits.video_train else None
    model = build_model(cfg, tokenizer)
    resume_merged = resume_from is not None and meta.get("adapters") == "merged"
    if init_meta is not None:
        load_initial_weights(model, cfg, init_meta)
    if resume_merged:  # the finished model of this run: adapters already folded into the weights
        model.load_state_dict(load_file(resume_from / "model.safetensors"))
    choose_trained_parameters(model, cfg)
    adapters = "separate" if any(isinstance(m, LoRALinear) for m in model.modules()) else None
    objective = SimMIMObjective(cfg.loss, pad_id=tokenizer.pad_id)
    optimizer = make_optimizer(model, cfg)
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda s: warmup_cosine(s, warmup=tc.warmup_steps, total=tc.steps))
    start, history, elapsed = 0, [], 0.0
    if resume_from is not None:
        if not resume_merged:
            model.load_state_dict(load_file(resume_from / "model.safetensors"))
            state = load_trainer_state(resume_from)
            optimizer.load_state_dict(state["optimizer"])
            scheduler.load_state_dict(state["scheduler"])
        start, history, elapsed = meta["step"], meta["history"], meta.get("seconds", 0.0)
        init_lineage = meta.get("init")
    else:
        init_lineage = ({"path": str(cfg.finetune.init), "data_fingerprint": init_meta.get("data_fingerprint")}
                        if init_meta is not None else None)
    fingerprint = splits.fingerprint()
    vault_lineage = ({**splits.vault, "checkpoint_id": f"{out_dir.resolve().name}/model@{uuid.uuid4().hex[:12]}"}
                     if splits.vault else None)
    private = None
    if cfg.privacy.dp:
        from simmim.privacy.session import PrivateTraining  # the ledger and accountant: DP runs only

        previous_job = (meta.get("privacy") or {}).get("ledger_job") if resume_from is not None else None
        private = PrivateTraining(cfg, model, train_set, fingerprint, out_dir, previous_job, video_set)
        step_fn = private.step
    step_fn = step_fn or (lambda m, o, b: standard_step(m, o, b, tc.grad_clip, tc.micro_batch_size))

    def save(path: Path, step: int, seconds: float, adapters: str | None = adapters) -> Path:
        meta = {"config": cfg.to_dict(), "data_fingerprint": fingerprint, "seed": tc.seed, "step": step,
                "history": history, "seconds": seconds, "metrics": {}, "init": init_lineage, "vault": vault_lineage,
                "adapters": adapters, "privacy": private.report(step) if private else None}
        trainer_state = {"optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict()}
        return save_checkpoint(path, model=model, tokenizer=tokenizer, meta=meta, trainer_state=trainer_state)

    model.train()
    t0 = time.perf_counter()
    examples = 0
    step = start
    try:
        with progress_bar(total=tc.steps, description="training" + (" (DP)" if private else ""),
                          enabled=progress) as bar:
            bar.advance(start)
            for step in range(start, tc.steps):
                batches = [] if private else _batches_for_step(step, train_set, video_set, tc, model)
                optimizer.zero_grad(set_to_none=True)
                record = step_fn(model, objective, batches)
                optimizer.step()
                scheduler.step()
                examples += record.pop("examples", 0)
                if (step + 1) % tc.log_every == 0 or step + 1 == tc.steps:
                    record = {"step": step + 1, "lr": scheduler.get_last_lr()[0],
                              "seconds": elapsed + time.perf_counter() - t0, **record}
                    history.append(record)
                    if on_log:
                        on_log(record)
                    bar.set_postfix(f"loss {record['loss']:.3f}")
                if tc.checkpoint_every and (step + 1) % tc.checkpoint_every == 0 and step + 1 < tc.steps:
                    save(out_dir / "checkpoints" / f"step-{step + 1:07d}", step + 1,
                         elapsed + time.perf_counter() - t0)
                    _prune(out_dir / "checkpoints")
                bar.advance(1)
    finally:
        if private:
            private.close()
    run_seconds = time.perf_counter() - t0
    model.eval()
    if adapters:  # the finished model is saved and served as an ordinary one
        merge_lora(model)
    final = save(out_dir / "model", tc.steps, elapsed + run_seconds, "merged" if adapters else None)
    if vault_lineage:  # deleting one of these people later names this model
        record_lineage(cfg.vault, vault_lineage["checkpoint_id"], vault_lineage["snapshot_id"], description=str(final))
    if private:
        private.commit(tc.steps)
    return TrainResult(model=model, tokenizer=tokenizer, splits=splits, checkpoint=final, history=history,
                       seconds=elapsed + run_seconds, examples_per_second=examples / max(run_seconds, 1e-9),
                       privacy=private.report(tc.steps) if private else None)


def _batches_for_step(step: int, train_set: EncodedSet, video_set: EncodedSet | None, tc, model) -> list[dict]:
    """The non-private batches of a step: a function of (seed, step) only."""
    generator = step_generator(tc.seed, step)
    batches = [train_set.batch(step_indices(len(train_set), tc.batch_size, tc.seed, step), generator,
                               num_patches=model.cfg.num_patches, mask_ratio=tc.mask_ratio)]
    if video_set is not None:
        batches.append(video_set.batch(step_indices(len(video_set), tc.video_batch_size, tc.seed + 1, step),
                                       generator))
    return batches


def _prune(root: Path) -> None:
    for old in sorted(root.glob("step-*"))[:-KEEP_STEP_CHECKPOINTS]:
        shutil.rmtree(old, ignore_errors=True)
