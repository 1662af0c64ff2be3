"""The main job: generate data, train, evaluate, write the run report.

By default the demo is private, as SimMIM's users' runs would be: a model is pretrained on a
public corpus (synthetic scenes from another seed, with no people in it), then fine-tuned with
DP-SGD at user level on the people's records (LoRA adapters, epsilon = 8, delta = 1e-5 unless the
config says otherwise). The same fine-tuning without privacy runs beside it, so the report shows
what the guarantee costs, and the public model alone, so it shows what the private data added.
`private=False` runs the non-private demo: one model trained from scratch on the records.
"""

from __future__ import annotations

import dataclasses
import shutil
import time
from pathlib import Path

from simmim.config import Config, packaged_config
from simmim.data.splits import Splits, build_splits
from simmim.eval.evaluate import Evaluation, evaluate
from simmim.federated.report import federated_demo, federated_section
from simmim.federated.settings import FedSettings
from simmim.report import write_report
from simmim.train.checkpoint import update_metrics
from simmim.train.loop import TrainResult, train
from simmim.vault.demo_people import DemoVault, vault_of_people

REFERENCE = "non-private"
LEDGER_FILE = "privacy-ledger.db"


def run_demo(out: str | Path, *, quick: bool = False, private: bool = True, progress: bool = True,
             config: Config | None = None, public_config: Config | None = None, federated: bool = True,
             federated_settings: FedSettings | None = None) -> dict:
    """Runs the demo into `out` (`report.md`, `summary.json`, PNGs, the model in `out/model`).

    Args:
        quick: the small configs (`quick-*`) instead of the full ones (`demo-*`).
        private: pretrain on public data then fine-tune under DP (default), or train one
            non-private model from scratch.
        config: replaces the packaged config of the (private) run.
        public_config: replaces the packaged config of the public pretraining (private demo only).
        federated: also run federated training on a loopback Flower deployment (private demo only).
        federated_settings: replaces the demo's federated run settings.

    Returns:
        The summary written to `summary.json`.
    """
    out = Path(out)
    name = "quick" if quick else "demo"
    if not private:
        return _non_private_demo(out, config or packaged_config(name), quick=quick, progress=progress)
    return _private_demo(out, config or packaged_config(f"{name}-private"),
                         public_config or packaged_config(f"{name}-public"), quick=quick, progress=progress,
                         federated=federated_settings or federated)


def _trained_and_evaluated(cfg: Config, out: Path, splits: Splits, eval_splits: Splits,
                           progress: bool) -> tuple[TrainResult, Evaluation]:
    result = train(cfg, out, splits=splits, progress=progress)
    evaluation = evaluate(result.model, result.tokenizer, eval_splits, context_length=cfg.data.context_length)
    update_metrics(result.checkpoint, evaluation.metrics)
    return result, evaluation


def _non_private_demo(out: Path, cfg: Config, *, quick: bool, progress: bool) -> dict:
    t0 = time.perf_counter()
    splits = build_splits(cfg.data)
    result, evaluation = _trained_and_evaluated(cfg, out, splits, splits, progress)
    timing = {"total_seconds": round(time.perf_counter() - t0, 1), "train_seconds": round(result.seconds, 1),
              "steps": cfg.train.steps, "train_examples_per_second": round(result.examples_per_second, 1)}
    notes = [_model_line(result, cfg, splits), _chance_line(result)]
    return write_report(out, title="SimMIM demo, non-private" + (" (quick)" if quick else ""),
                        metrics=evaluation.metrics, samples=evaluation.samples, history=result.history,
                        timing=timing, privacy=result.privacy, notes=notes)


def _private_demo(out: Path, cfg: Config, public_cfg: Config, *, quick: bool, progress: bool,
                  federated: FedSettings | bool) -> dict:
    t0 = time.perf_counter()
    if not cfg.privacy.ledger:
        # The demo's people are simulated and regenerated each run: a run replaces the previous demo in
        # `out`, its models and its budget ledger together (a real dataset's ledger is never reset).
        # (vault_of_people replaces vault/; the federated run replaces its own folder's run/)
        for previous in ("model", "checkpoints", "public", "non-private", "federated"):
            shutil.rmtree(out / previous, ignore_errors=True)
        (out / LEDGER_FILE).unlink(missing_ok=True)
        out.mkdir(parents=True, exist_ok=True)
        cfg = dataclasses.replace(cfg, privacy=dataclasses.replace(
            cfg.privacy, ledger=f"sqlite:///{(out / LEDGER_FILE).resolve()}"))
    public_splits = build_splits(public_cfg.data)
    splits = build_splits(cfg.data)
    # The people's training records live in a vault; training sees only what it releases.
    people = vault_of_people(splits.train + splits.video_train, out / "vault", seed=cfg.data.seed)
    released = people.released.records
    splits = dataclasses.replace(splits, train=[r for r in released if not r.is_video],
                                 video_train=[r for r in released if r.is_video], vault=people.released.lineage)
    cfg = dataclasses.replace(cfg, vault=people.section)
    # Public pretraining, evaluated on the people's test split: what the model knows without them.
    public, public_eval = _trained_and_evaluated(public_cfg, out / "public", public_splits, splits, progress)
    tuned = dataclasses.replace(cfg, finetune=dataclasses.replace(cfg.finetune, init=str(public.checkpoint)))
    non_private_cfg = dataclasses.replace(tuned, privacy=dataclasses.replace(tuned.privacy, dp=False))
    non_private, non_private_eval = _trained_and_evaluated(non_private_cfg, out / "non-private", splits, splits,
                                                           progress)
    dp = dataclasses.replace(tuned, privacy=dataclasses.replace(tuned.privacy, dp=True))
    result, evaluation = _trained_and_evaluated(dp, out, splits, splits, progress)
    federated_started = time.perf_counter()
    sections, federated_result = [], None
    if federated:
        federated_result = federated_demo(out / "federated", quick=quick,
                                          settings=federated if isinstance(federated, FedSettings) else None)
        federated_lines, federated_plot = federated_section(federated_result, out)
        sections.append(("Federated run (Flower, secure aggregation)", federated_lines, federated_plot))
    timing = {"total_seconds": round(time.perf_counter() - t0, 1),
              "public_pretraining_seconds": round(public.seconds, 1),
              "non_private_fine_tuning_seconds": round(non_private.seconds, 1),
              "dp_fine_tuning_seconds": round(result.seconds, 1), "dp_steps": cfg.train.steps,
              "federated_run_seconds": round(time.perf_counter() - federated_started, 1),
              "dp_examples_per_second": round(result.examples_per_second, 1)}
    privacy = result.privacy
    notes = [
        f"Pretrained without privacy on a public corpus of {len(public_splits.train)} synthetic scenes and "
        f"{len(public_splits.video_train)} clips (seed {public_cfg.data.seed}, no people in it; "
        f"{public_cfg.train.steps} steps), then fine-tuned on {len(splits.train)} photos"
        + (f" and {len(splits.video_train)} clips" if splits.video_train else "")
        + f" of {privacy['units']} people with DP-SGD: {privacy['unit']}-level "
        f"(epsilon = {privacy['epsilon_spent']:.2f}, "
        f"delta = {privacy['delta']:g}, "
        f"{privacy['accountant'].upper()} accountant), sigma = {privacy['noise_multiplier']}, "
        f"q = {privacy['sample_rate']:.4f}, {privacy['steps']} steps, C = {privacy['max_grad_norm']}"
        + (f", LoRA rank {cfg.finetune.lora_rank} on {', '.join(cfg.finetune.lora_targets)}"
           if cfg.finetune.lora_rank else "")
        + (f"; a person's photos and clips are clipped apart, to {1 - privacy['video_norm_share']:g} C and "
           f"{privacy['video_norm_share']:g} C, so that together they stay within C" if splits.video_train else "")
        + ".",
        f"Columns: `public only` is the pretrained model before fine-tuning; `{REFERENCE}` is the same fine-tuning "
        "without clipping or noise; `DP` is the released model. The last column is DP as a fraction of "
        f"{REFERENCE}.",
        _added_line(public_eval.metrics, non_private_eval.metrics, evaluation.metrics),
        _vault_line(people), _model_line(result, cfg, splits), _chance_line(result),
    ]
    baselines = {"public only": public_eval.metrics, REFERENCE: non_private_eval.metrics}
    vault = {"people": people.people, "choices": people.choices, "release": people.released.lineage}
    return write_report(out, title="SimMIM demo, differentially private" + (" (quick)" if quick else ""),
                        metrics=evaluation.metrics, samples=evaluation.samples, history=result.history,
                        timing=timing, privacy=privacy, notes=notes, baselines=baselines, reference=REFERENCE,
                        extra={"vault": vault, "federated": federated_result}, sections=sections)


HEADLINE = ("text_to_image_R@1", "caption_attribute_accuracy", "zero_shot_colour")


def _added_line(public: dict, non_private: dict, dp: dict) -> str:
    """What fine-tuning on the people's records changed, with and without DP, over the public model."""
    changes = "; ".join(f"{k} {public[k]['value']:.3f} -> {non_private[k]['value']:.3f} without DP, "
                        f"{dp[k]['value']:.3f} with DP" for k in HEADLINE if k in dp)
    return ("The public corpus comes from the same generator as the people's records, so most of what the "
            f"models know comes from public pretraining. Fine-tuning on the people's records moved {changes}.")


def _vault_line(people: DemoVault) -> str:
    lineage, choices = people.released.lineage, people.choices
    return (f"The people's {lineage['records']} training records (photos and clips) were read from the vault "
            f"(`vault/`, encrypted per person): of {people.people} people, {choices['consented']} consented to model "
            f"training, {choices['never_answered']} never answered, {choices['withdrawn']} withdrew and "
            f"{choices['deleted']} asked to be deleted; the release (snapshot `{lineage['snapshot_id'][:16]}`) held "
            f"{lineage['subjects']} people and excluded {lineage['excluded']}. Both fine-tuned models are recorded "
            "in the vault's model lineage.")


def _model_line(result: TrainResult, cfg: Config, splits: Splits) -> str:
    n_params = sum(p.numel() for p in result.model.parameters())
    return (f"Model `{cfg.model.size}` ({n_params / 1e6:.2f}M parameters), {len(splits.train)} training images and "
            f"{len(splits.video_train)} clips, {cfg.train.steps} steps.")


def _chance_line(result: TrainResult) -> str:
    return (f"Checkpoint: `{result.checkpoint}`. Chance: a random ranking (retrieval), the majority class "
            "(classification), or predictions paired with the wrong record (captions).")
