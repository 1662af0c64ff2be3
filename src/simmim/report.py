"""The run report: plots people would rather see than read, `report.md` and `summary.json`."""

from __future__ import annotations

import json
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from simmim import allocator  # noqa: E402

LOSS_KEYS = ("loss", "contrastive", "caption", "masked_patch", "generation", "video_contrastive", "video_caption")


def plot_losses(history: list[dict], path: Path) -> Path:
    steps = [h["step"] for h in history]
    fig, ax = plt.subplots(figsize=(7, 4))
    for key in LOSS_KEYS:
        if history and key in history[0]:
            ax.plot(steps, [h.get(key, np.nan) for h in history], label=key, linewidth=2 if key == "loss" else 1)
    ax.set_xlabel("step")
    ax.set_ylabel("loss")
    ax.set_yscale("log")
    ax.set_title("Training losses")
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def plot_privacy(privacy: dict, path: Path, points: int = 20) -> Path:
    """Epsilon spent (at the run's delta) against training steps."""
    from simmim.privacy.accounting import epsilon

    steps = sorted({max(1, round(privacy["steps"] * i / points)) for i in range(1, points + 1)})
    spent = [epsilon(sample_rate=privacy["sample_rate"], noise_multiplier=privacy["noise_multiplier"], steps=t,
                     delta=privacy["delta"], accountant=privacy["accountant"], sensitivity=privacy["sensitivity"])
             for t in steps]
    fig, ax = plt.subplots(figsize=(6, 3.5))
    ax.plot([0, *steps], [0.0, *spent], marker="o", markersize=3)
    ax.axhline(privacy["epsilon"], color="red", linestyle="--", label=f"target {privacy['epsilon']:g}")
    ax.set_xlabel("step")
    ax.set_ylabel(f"epsilon (delta={privacy['delta']:g})")
    ax.set_title(f"Privacy spent ({privacy['unit']} level, {privacy['accountant'].upper()})")
    ax.legend()
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def _image_grid(rows: list[tuple[str, list[np.ndarray]]], path: Path, title: str) -> Path:
    cols = max(len(images) for _, images in rows)
    fig, axes = plt.subplots(len(rows), cols, figsize=(1.6 * cols, 1.9 * len(rows)), squeeze=False)
    for r, (label, images) in enumerate(rows):
        for c in range(cols):
            ax = axes[r][c]
            ax.axis("off")
            if c < len(images):
                ax.imshow(images[c], interpolation="nearest")
        axes[r][0].set_title(label, fontsize=8, loc="left")
    fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def plot_captions(samples: list[tuple[np.ndarray, str, str]], path: Path) -> Path:
    fig, axes = plt.subplots(2, (len(samples) + 1) // 2, figsize=(14, 6), squeeze=False)
    for ax in axes.flat:
        ax.axis("off")
    for ax, (image, truth, predicted) in zip(axes.flat, samples):
        ax.imshow(image, interpolation="nearest")
        colour = "green" if truth == predicted else "red"
        ax.set_title(f"true: {truth}\npred: {predicted}", fontsize=7, color=colour, wrap=True)
    fig.suptitle("Captions generated for test images (green: exact match)")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def plot_generated(samples: list[tuple[str, np.ndarray]], path: Path) -> Path:
    fig, axes = plt.subplots(1, len(samples), figsize=(2.0 * len(samples), 2.6), squeeze=False)
    for ax, (caption, image) in zip(axes[0], samples):
        # Squared-error decoders draw dim means: stretch each image to its brightest pixel to show them.
        ax.imshow((image.astype(float) / max(1, int(image.max()))), interpolation="nearest")
        ax.set_title(caption.replace(" at the ", "\nat the "), fontsize=7)
        ax.axis("off")
    fig.suptitle("Images generated from test captions (each scaled to its brightest pixel)")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def metrics_table(metrics: dict[str, dict[str, float]]) -> str:
    lines = ["| metric | value | chance | ratio |", "|---|---:|---:|---:|"]
    for name, m in metrics.items():
        ratio = f"{m['value'] / m['chance']:.1f}x" if m["chance"] > 0 else "-"
        lines.append(f"| {name} | {m['value']:.3f} | {m['chance']:.3f} | {ratio} |")
    return "\n".join(lines)


def relative_to(metrics: dict, reference: dict) -> dict[str, float]:
    """Each metric as a fraction of the reference model's value (metrics both models have)."""
    return {name: m["value"] / reference[name]["value"] for name, m in metrics.items()
            if name in reference and reference[name]["value"] > 0}


def comparison_table(metrics: dict, name: str, baselines: dict[str, dict], reference: str) -> str:
    """One column per model, the run's own model (`name`) last, then its value relative to `reference`."""
    columns = [*baselines, name]
    lines = ["| metric | chance | " + " | ".join(columns) + f" | {name} / {reference} |",
             "|---|---:|" + "---:|" * (len(columns) + 1)]
    ratios = relative_to(metrics, baselines[reference])
    for metric, m in metrics.items():
        values = [baselines[c].get(metric, {}).get("value") for c in baselines] + [m["value"]]
        cells = " | ".join("-" if v is None else f"{v:.3f}" for v in values)
        ratio = f"{ratios[metric]:.0%}" if metric in ratios else "-"
        lines.append(f"| {metric} | {m['chance']:.3f} | {cells} | {ratio} |")
    return "\n".join(lines)


def plot_comparison(models: dict[str, dict], keys: list[str], path: Path) -> Path:
    """Grouped bars: the chosen metrics of each model, with chance as a dashed tick."""
    keys = [k for k in keys if all(k in m for m in models.values())]
    fig, ax = plt.subplots(figsize=(1.3 * len(keys) + 2, 4))
    width = 0.8 / len(models)
    for i, (label, metrics) in enumerate(models.items()):
        x = np.arange(len(keys)) + (i - (len(models) - 1) / 2) * width
        ax.bar(x, [metrics[k]["value"] for k in keys], width, label=label)
    first = next(iter(models.values()))
    for j, key in enumerate(keys):
        ax.hlines(first[key]["chance"], j - 0.45, j + 0.45, colors="black", linestyles="dashed", linewidth=1)
    ax.set_xticks(np.arange(len(keys)), [k.replace("_", " ") for k in keys], rotation=25, ha="right", fontsize=8)
    ax.set_ylim(0, 1.05)
    ax.set_title("Held-out test metrics (dashed: chance)")
    ax.legend(fontsize=8)
    ax.grid(axis="y", alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


COMPARED = ["text_to_image_R@1", "image_to_text_R@1", "caption_attribute_accuracy", "zero_shot_colour",
            "zero_shot_shape", "generation_colour_accuracy"]


def write_report(out: Path, *, title: str, metrics: dict, samples: dict, history: list[dict], timing: dict,
                 privacy: dict | None, notes: list[str] = (), baselines: dict[str, dict] | None = None,
                 reference: str | None = None, extra: dict | None = None,
                 sections: list[tuple[str, list[str], Path | None]] = ()) -> dict:
    """Write `report.md`, its PNGs and `summary.json` into `out`; returns the summary as written (the
    timing with the malloc the run used added).

    With `baselines` (model name -> metrics of other models on the same test split), the report shows
    them beside this run's and each metric relative to the `reference` baseline (`summary.json` keys
    `baselines` and `relative_to_reference`). `extra` goes into `summary.json` as it is. `sections` are
    (heading, markdown lines, figure or None) for other runs the report shows.
    """
    out.mkdir(parents=True, exist_ok=True)
    figures = [("Loss curves", plot_losses(history, out / "loss_curves.png"))]
    own = "DP" if privacy else "this run"
    if baselines:
        figures.append(("Models compared", plot_comparison({**baselines, own: metrics}, COMPARED,
                                                           out / "comparison.png")))
    if privacy:
        figures.append(("Privacy spent", plot_privacy(privacy, out / "privacy_epsilon.png")))
    if samples.get("retrieval"):
        figures.append(("Text -> image retrieval (top 5 test images per caption)",
                        _image_grid(samples["retrieval"], out / "retrieval_grid.png", "Retrieval")))
    if samples.get("captions"):
        figures.append(("Captions", plot_captions(samples["captions"], out / "captions.png")))
    if samples.get("generated"):
        figures.append(("Text -> image", plot_generated(samples["generated"], out / "generated.png")))
    timing = {**timing, "malloc": allocator.active()}  # peak memory, and with it speed, depend on it
    summary = {"metrics": metrics, "privacy": privacy, "timing": timing}
    if baselines:
        summary.update(baselines=baselines, reference=reference,
                       relative_to_reference=relative_to(metrics, baselines[reference]))
    summary.update(extra or {})
    (out / "summary.json").write_text(json.dumps(summary, indent=2))
    table = comparison_table(metrics, own, baselines, reference) if baselines else metrics_table(metrics)
    parts = [f"# {title}", "", *notes, "", "## Metrics (held-out test split)", "", table, "",
             "## Timing", "", *(f"- {k}: {v:.1f}" if isinstance(v, float) else f"- {k}: {v}" for k, v in
                                timing.items()), ""]
    parts += ["## Privacy", "", "No differential privacy in this run." if privacy is None else
              "\n".join(f"- {k}: {v}" for k, v in privacy.items()), ""]
    for caption, path in figures:
        parts += [f"## {caption}", "", f"![{caption}]({path.name})", ""]
    for heading, lines, figure in sections:
        parts += [f"## {heading}", "", *lines, ""]
        if figure is not None:
            parts += [f"![{heading}]({figure.relative_to(out)})", ""]
    (out / "report.md").write_text("\n".join(parts))
    return summary
