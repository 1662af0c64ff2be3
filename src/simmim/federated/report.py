"""The federated run of the demo: a secure-aggregation run on a loopback Flower deployment, for the report."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from simmim.federated.deployment import LoopbackDeployment  # noqa: E402
from simmim.federated.settings import FedSettings  # noqa: E402

DEMO_SETTINGS = FedSettings(config="tiny", clients=3, rounds=3, local_steps=20, update_clip=10.0,
                            aggregation="secagg")


def federated_demo(out: Path, *, quick: bool = False, settings: FedSettings | None = None) -> dict:
    """Runs the demo's federated run (or `settings`) into `out`; the result of `LoopbackDeployment.run`."""
    settings = settings or dataclasses.replace(DEMO_SETTINGS, rounds=2 if quick else DEMO_SETTINGS.rounds)
    with LoopbackDeployment(settings.clients, out) as deployment:
        return deployment.run(settings, out=out / "run")


def federated_section(result: dict, out: Path) -> tuple[list[str], Path]:
    """Markdown lines describing the run, and a plot of the global model's test loss by round."""
    settings = result["settings"]
    chance = result["initial_metrics"]["chance_R@1"]
    rows = [f"| round | parties in the sum | test loss | text->image R@1 (chance {chance:.3f}) | "
            "upload (bytes/parameter) | seconds |",
            "|---|---|---|---|---|---|",
            f"| 0 (initial) | - | {result['initial_metrics']['test_loss']:.3f} | "
            f"{result['initial_metrics']['text_to_image_R@1']:.3f} | - | - |"]
    for r in result["rounds"]:
        m = r["metrics"]
        parties = f"refused: {r['refused']}" if "refused" in r else f"{r['contributors']} of {r['sampled']}"
        rows.append(f"| {r['round']} | {parties} | {m['test_loss']:.3f} | {m['text_to_image_R@1']:.3f} | "
                    f"{r.get('upload_bytes_per_parameter', 0):.1f} | {r['seconds']:.1f} |")
    lines = [
        f"A separate run on a real Flower deployment on this machine: a SuperLink and {settings['clients']} "
        f"SuperNodes, each its own process. Each party trains the `{settings['config']}` model from scratch on its "
        f"own third of the synthetic training records, {settings['local-steps']} local steps a round. The server "
        "learns only the sum of the clipped updates (secure aggregation, two Flower messages per round).",
        f"{result['rounds_completed']} of {settings['rounds']} rounds completed. No DP noise in this run (epsilon: "
        "none): with three parties, client-level DP noise would swamp the update. The demo's DP guarantee is the "
        "fine-tuning's, above. `simmim fed run --epsilon E` adds it; see docs/federated.md.",
        "", *rows]
    rounds = [0] + [r["round"] for r in result["rounds"]]
    losses = [result["initial_metrics"]["test_loss"]] + [r["metrics"]["test_loss"] for r in result["rounds"]]
    figure, axis = plt.subplots(figsize=(5, 3.2))
    axis.plot(rounds, losses, marker="o")
    axis.set_xlabel("round")
    axis.set_ylabel("held-out loss of the global model")
    axis.set_title("Federated SimMIM, secure aggregation")
    axis.set_xticks(rounds)
    figure.tight_layout()
    path = out / "federated.png"
    figure.savefig(path, dpi=120)
    plt.close(figure)
    return lines, path
