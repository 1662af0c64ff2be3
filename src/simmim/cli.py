"""The `simmim` command: a thin shell over library functions.

Errors of our own (`SimMIMError`) are shown as one line on stderr with exit code 2, never a
traceback; usage errors are typer's (exit code 2 as well).
"""

from __future__ import annotations

import dataclasses
import json
import sys
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console

from simmim.crypto.commands import he_app
from simmim.errors import SimMIMError
from simmim.federated.commands import fed_app
from simmim.privacy.commands import budget_app, privacy_app, stats
from simmim.tee.commands import app as tee_app
from simmim.vault.commands import vault_app

app = typer.Typer(add_completion=False, no_args_is_help=True, pretty_exceptions_enable=False,
                  help="SimMIM: train and use a multimodal model on personal data, privately.")
data_app = typer.Typer(no_args_is_help=True, help="Generate, convert and check datasets.")
app.add_typer(data_app, name="data")
app.add_typer(privacy_app, name="privacy")
app.add_typer(budget_app, name="budget")
app.add_typer(vault_app, name="vault")
app.add_typer(he_app, name="he")
app.add_typer(fed_app, name="fed")
app.add_typer(tee_app, name="tee")
app.command("stats")(stats)
console = Console()
DEFAULT_MODEL = Path("runs/demo/model")
ModelOption = Annotated[Path, typer.Option("--model", "-m", help="checkpoint directory")]


def _load(model_dir: Path):
    from simmim.train.checkpoint import load_checkpoint

    return load_checkpoint(model_dir)


def _print_metrics(metrics: dict, baselines: dict | None = None) -> None:
    """The metrics beside chance, and beside other models' values when given (the run's own last)."""
    from rich.table import Table

    baselines = baselines or {}
    table = Table("metric", "chance", *baselines, "DP" if baselines else "value")
    for name, m in metrics.items():
        others = [f"{b[name]['value']:.3f}" if name in b else "-" for b in baselines.values()]
        table.add_row(name, f"{m['chance']:.3f}", *others, f"{m['value']:.3f}")
    console.print(table)


@app.command()
def train(config: Annotated[Path, typer.Option("--config", "-c", help="TOML, YAML or JSON config")],
          out: Annotated[Path, typer.Option(help="run directory")] = Path("runs/train"),
          resume: Annotated[bool, typer.Option(help="continue from the newest checkpoint in --out")] = False,
          dp: Annotated[bool, typer.Option("--dp", help="train with DP-SGD (overrides privacy.dp)")] = False,
          epsilon: Annotated[float | None, typer.Option(help="DP target epsilon")] = None,
          delta: Annotated[float | None, typer.Option(help="DP target delta")] = None,
          unit: Annotated[str | None, typer.Option(help="privacy unit: user, example or auto")] = None,
          max_grad_norm: Annotated[float | None, typer.Option(help="DP clipping bound C")] = None,
          progress: bool = True) -> None:
    """Train a model from a config file (with --dp: differentially private)."""
    from simmim.config import Config, load_config
    from simmim.report import plot_losses
    from simmim.train.loop import train as run_training

    cfg = load_config(config)
    flags = {"dp": dp or None, "epsilon": epsilon, "delta": delta, "unit": unit, "max_grad_norm": max_grad_norm}
    overrides = {k: v for k, v in flags.items() if v is not None}
    if overrides:
        values = cfg.to_dict()
        values["privacy"] = {**values["privacy"], **overrides}
        cfg = Config.from_dict(values)
    result = run_training(cfg, out, resume=resume, progress=progress)
    if result.privacy:
        p = result.privacy
        console.print(f"privacy: ({p['epsilon_spent']:.3f}, {p['delta']:g})-DP at {p['unit']} level "
                      f"({p['accountant']}; sigma {p['noise_multiplier']}, q {p['sample_rate']:.4g}, "
                      f"{p['steps']} steps, C {p['max_grad_norm']}); ledger job {p['ledger_job']}")
    plot_losses(result.history, out / "loss_curves.png")
    if result.splits.skipped:
        console.print(f"skipped {len(result.splits.skipped)} bad record(s):")
        for bad in result.splits.skipped:
            console.print(f"  {bad.source}: {bad.reason}")
    console.print(f"trained {result.history[-1]['step']} steps in {result.seconds:.0f} s; "
                  f"checkpoint: {result.checkpoint}")


@app.command("eval")
def evaluate_cmd(checkpoint: Path, as_json: Annotated[bool, typer.Option("--json")] = False) -> None:
    """Evaluate a checkpoint on the test split of the data it was trained on."""
    from simmim.config import Config
    from simmim.data.splits import build_splits
    from simmim.eval.evaluate import evaluate

    model, tokenizer, meta = _load(checkpoint)
    cfg = Config.from_dict(meta["config"])
    vault = dataclasses.replace(cfg.vault, purpose="evaluation")  # a vault releases test data for evaluation only
    metrics = evaluate(model, tokenizer, build_splits(cfg.data, vault), context_length=cfg.data.context_length).metrics
    if as_json:
        print(json.dumps(metrics))
    else:
        _print_metrics(metrics)


@app.command()
def demo(out: Annotated[Path, typer.Option(help="output directory")] = Path("runs/demo"),
         quick: Annotated[bool, typer.Option(help="the small version")] = False,
         non_private: Annotated[bool, typer.Option(
             "--non-private", help="train one model from scratch without differential privacy")] = False,
         progress: bool = True) -> None:
    """The main job: public pretraining, DP fine-tuning on people's records beside a non-private
    reference, evaluation, report (with --non-private: one model from scratch, no DP)."""
    from simmim.demo import run_demo

    summary = run_demo(out, quick=quick, private=not non_private, progress=progress)
    _print_metrics(summary["metrics"], summary.get("baselines"))
    if summary["privacy"]:
        p = summary["privacy"]
        console.print(f"guarantee: ({p['epsilon_spent']:.2f}, {p['delta']:g})-DP at {p['unit']} level "
                      f"({p['accountant'].upper()}), ledger job {p['ledger_job']}")
    console.print(f"report: {out / 'report.md'}  summary: {out / 'summary.json'}  "
                  f"({summary['timing']['total_seconds']:.0f} s)")


@app.command()
def caption(image: Path, model: ModelOption = DEFAULT_MODEL,
            beam: Annotated[int, typer.Option(help="beam size; 1 = greedy")] = 1) -> None:
    """Caption an image."""
    from simmim.data.formats import load_image
    from simmim.inference import caption_image

    net, tokenizer, _ = _load(model)
    print(caption_image(net, tokenizer, load_image(image, net.cfg.image_size), beam_size=beam))


@app.command()
def generate(text: str, out: Annotated[Path, typer.Option(help="PNG file to write")],
             model: ModelOption = DEFAULT_MODEL) -> None:
    """Generate an image from text."""
    from simmim.inference import generate_image, save_png

    net, tokenizer, _ = _load(model)
    print(save_png(generate_image(net, tokenizer, text), out))


@app.command()
def search(text: str, images: Annotated[Path, typer.Option(help="folder of images")],
           model: ModelOption = DEFAULT_MODEL, top: int = 5) -> None:
    """Rank a folder of images by similarity to a text."""
    from simmim.inference import search_images

    net, tokenizer, _ = _load(model)
    for path, score in search_images(net, tokenizer, text, images, top=top):
        print(f"{score:+.3f}  {path}")


@app.command()
def classify(image: Path, labels: Annotated[str, typer.Option(help="comma-separated class names")],
             model: ModelOption = DEFAULT_MODEL) -> None:
    """Zero-shot classification of an image among labels."""
    from simmim.data.formats import load_image
    from simmim.inference import classify_image

    net, tokenizer, _ = _load(model)
    for label, prob in classify_image(net, tokenizer, load_image(image, net.cfg.image_size), labels.split(",")):
        print(f"{prob:.3f}  {label}")


@data_app.command("write")
def data_write(out: Path, format: Annotated[str, typer.Option(help="csv, tsv, jsonl, coco, folder, webdataset")],
               n: int = 100, seed: int = 0, split: str = "train", image_size: int = 32) -> None:
    """Write synthetic records in one of the supported formats."""
    from simmim.data import formats, synthetic

    records = synthetic.generate(n, seed=seed, split=split, image_size=image_size)
    fmt = "csv" if format == "tsv" else format
    target = out / "data.tsv" if format == "tsv" else (out / "data.csv" if format == "csv" else out)
    formats.write_dataset(records, target, fmt)
    print(target)


@data_app.command("check")
def data_check(path: Path, format: str = "auto", image_size: int = 32, max_caption_words: int = 20,
               skip_bad: Annotated[bool, typer.Option("--skip-bad")] = False) -> None:
    """Validate a dataset: every record is read, decoded and checked."""
    from simmim.data.formats import read_dataset

    result = read_dataset(path, fmt=format, image_size=image_size, max_caption_words=max_caption_words,
                          skip_bad=skip_bad)
    for bad in result.skipped:
        print(f"skipped {bad.source}: {bad.reason}")
    print(f"{len(result.records)} good record(s), {len(result.skipped)} skipped")


def main() -> None:
    try:
        app()
    except SimMIMError as exc:
        print(f"error: {exc}", file=sys.stderr)
        sys.exit(2)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        sys.exit(130)


if __name__ == "__main__":
    main()
