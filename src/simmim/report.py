"""The run report: plots people would rather see than read, `report.md` and `summary.json`."""

from __future__ import annotations

import json
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

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


def write_report(out: Path, *, title: str, metrics: dict, samples: dict, history: list[dict], timing: dict,
                 privacy: dict | None, notes: list[str] = ()) -> tuple[Path, Path]:
    """Write `report.md`, its PNGs and `summary.json` into `out`."""
    out.mkdir(parents=True, exist_ok=True)
    figures = [("Loss curves", plot_losses(history, out / "loss_curves.png"))]
    if privacy:
        figures.append(("Privacy spent", plot_privacy(privacy, out / "privacy_epsilon.png")))
    if samples.get("retrieval"):
        figures.append(("Text -> image retrieval (top 5 test images per caption)",
                        _image_grid(samples["retrieval"], out / "retrieval_grid.png", "Retrieval")))
    if samples.get("captions"):
        figures.append(("Captions", plot_captions(samples["captions"], out / "captions.png")))
    if samples.get("generated"):
        figures.append(("Text -> image", plot_generated(samples["generated"], out / "generated.png")))
    summary = {"metrics": metrics, "privacy": privacy, "timing": timing}
    summary_path = out / "summary.json"
    summary_path.write_text(json.dumps(summary, indent=2))
    parts = [f"# {title}", "", *notes, "", "## Metrics (held-out test split)", "", metrics_table(metrics), "",
             "## Timing", "", *(f"- {k}: {v:.1f}" if isinstance(v, float) else f"- {k}: {v}" for k, v in
                                timing.items()), ""]
    parts += ["## Privacy", "", "No differential privacy in this run." if privacy is None else
              "\n".join(f"- {k}: {v}" for k, v in privacy.items()), ""]
    for caption, path in figures:
        parts += [f"## {caption}", "", f"![{caption}]({path.name})", ""]
    report_path = out / "report.md"
    report_path.write_text("\n".join(parts))
    return report_path, summary_path
