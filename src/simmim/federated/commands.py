"""`simmim fed run`: a federated training run on a real Flower deployment on this machine."""

from __future__ import annotations

import json
import tempfile
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console

from simmim.federated.settings import FedSettings

fed_app = typer.Typer(no_args_is_help=True, help="Federated training on Flower (SuperLink + SuperNodes on loopback).")
console = Console(stderr=True)


@fed_app.command("run")
def run(
    clients: Annotated[int, typer.Option("--clients", help="parties: one SuperNode process each")] = 3,
    rounds: Annotated[int, typer.Option("--rounds", help="federated rounds")] = 3,
    secure_agg: Annotated[bool, typer.Option("--secure-agg", help="secure aggregation: the server sees only the "
                                                                  "sum of the updates")] = False,
    paillier: Annotated[bool, typer.Option("--paillier", help="Paillier aggregation to a key-holding party "
                                                              "(partition 0) instead")] = False,
    epsilon: Annotated[float, typer.Option("--epsilon", help="client-level DP budget; the noise is calibrated "
                                                             "so that all rounds fit (0: no DP)")] = 0.0,
    delta: Annotated[float, typer.Option("--delta", help="DP delta")] = 1e-5,
    noise_multiplier: Annotated[float, typer.Option("--noise-multiplier", help="DP noise over the clip, "
                                                                               "instead of calibrating")] = 0.0,
    sample_rate: Annotated[float, typer.Option("--sample-rate", help="chance a party joins a round")] = 1.0,
    local_steps: Annotated[int, typer.Option("--local-steps", help="local steps per round")] = 20,
    update_clip: Annotated[float, typer.Option("--update-clip", help="L2 bound of a party's update")] = 5.0,
    config: Annotated[str, typer.Option("--config", help="packaged config name or config file")] = "tiny",
    round_timeout: Annotated[float, typer.Option("--round-timeout", help="seconds to wait for replies")] = 120.0,
    out: Annotated[Path | None, typer.Option("--out", help="where the run's files go (default: a temporary "
                                                           "directory)")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="print one JSON object")] = False,
) -> None:
    """Start a SuperLink and CLIENTS SuperNodes, run ROUNDS rounds of federated SimMIM, stop them."""
    from simmim.federated.deployment import LoopbackDeployment

    if secure_agg and paillier:
        raise typer.BadParameter("choose --secure-agg or --paillier, not both")
    aggregation = "secagg" if secure_agg else "paillier" if paillier else "plain"
    settings = FedSettings(config=config, clients=clients, rounds=rounds, aggregation=aggregation, epsilon=epsilon,
                           delta=delta, noise_multiplier=noise_multiplier, sample_rate=sample_rate,
                           local_steps=local_steps, update_clip=update_clip, round_timeout=round_timeout)

    def report(record: dict) -> None:
        if as_json:
            return
        m = record["metrics"]
        outcome = (f"refused ({record['refused']})" if "refused" in record
                   else f"{record['contributors']}/{record['sampled']} parties")
        console.print(f"round {record['round']}: {outcome}, test loss {m['test_loss']:.3f}, "
                      f"text->image R@1 {m['text_to_image_R@1']:.3f}, epsilon {_fmt(record['epsilon'])}, "
                      f"{record['seconds']:.1f} s")

    with tempfile.TemporaryDirectory(prefix="simmim-fed-") as scratch:
        workdir = Path(out) if out else Path(scratch)
        if not as_json:
            console.print(f"starting a SuperLink and {clients} SuperNodes on loopback ({aggregation} aggregation)")
        with LoopbackDeployment(clients, workdir) as deployment:
            result = deployment.run(settings, out=workdir / "run", on_round=report)
    summary = {key: result[key] for key in ("rounds_completed", "rounds_run", "stopped", "epsilon", "delta",
                                            "noise_multiplier", "aggregation", "initial_metrics", "metrics")}
    summary["rounds"] = result["rounds"]
    if as_json:
        print(json.dumps(summary, default=_json_default, allow_nan=False))
        return
    console.print(f"done: {summary['rounds_completed']} of {rounds} rounds completed"
                  + (f" (stopped: {summary['stopped']})" if summary["stopped"] else "")
                  + f"; epsilon {_fmt(summary['epsilon'])}" + (f" at delta {delta:g}" if summary["delta"] else ""))


def _fmt(value: float | None) -> str:
    return "none (no DP)" if value is None else f"{value:.3f}"


def _json_default(value):
    raise TypeError(f"cannot write {type(value).__name__} as JSON")
