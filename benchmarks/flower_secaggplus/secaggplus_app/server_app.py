"""The server's side: FedAvg of SimMIM updates through Flower's legacy DefaultWorkflow.

aggregation = "secagg": `DefaultWorkflow(fit_workflow=SecAggPlusWorkflow(...))`, the complete graph
(num_shares = 1.0: every party shares with every other, as SimMIM's secure aggregation does) with
threshold `threshold` or a majority, clipping range `update_clip`, weights 1 (max_weight 1).
aggregation = "plain": Flower's default fit workflow (every update in the clear).

Like SimMIM's server app it writes `out/rounds.jsonl` (one record per round, with `seconds`: the
fit workflow, from configuring the round to the new global weights; evaluation is not timed) and
`out/result.json` at the end, also when the run fails, so that LoopbackDeployment.run can read it.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np
from flwr.app import Context, Message
from flwr.common import ndarrays_to_parameters, parameters_to_ndarrays
from flwr.common.secure_aggregation.secaggplus_constants import RECORD_KEY_CONFIGS
from flwr.common.secure_aggregation.secaggplus_constants import Key as SecAggKey
from flwr.server import LegacyContext, ServerConfig
from flwr.server.strategy import FedAvg
from flwr.server.workflow import DefaultWorkflow, SecAggPlusWorkflow
from flwr.server.workflow.default_workflows import default_fit_workflow
from flwr.serverapp import Grid, ServerApp

from simmim.federated.deployment import record_result
from simmim.federated.local import Federation, evaluate_global, parameter_vector
from simmim.federated.settings import FedSettings

app = ServerApp()


@app.main()
def main(grid: Grid, context: Context) -> None:
    settings = FedSettings.from_run_config(context.run_config)
    out = Path(settings.out)
    out.mkdir(parents=True, exist_ok=True)
    record_result(out, lambda: run(grid, context, settings, float(context.run_config.get("poll-seconds", 3.0)), out))


class UploadCounter:
    """Stands in for the grid's send_and_receive: the same push/pull loop, with a chosen poll interval,
    counting the bytes of the replies (the parties' uploads)."""

    def __init__(self, grid: Grid, poll_seconds: float):
        self.grid, self.poll_seconds = grid, poll_seconds
        self.update_bytes = 0  # masked vectors (SecAgg+) or updates (plain)
        self.reply_bytes = 0  # everything the parties sent, keys and shares included
        self.exchanges = 0

    def send_and_receive(self, messages, *, timeout: float | None = None) -> list[Message]:
        # As flwr.superlink.grid.http_grid.HttpGrid.send_and_receive, with poll_seconds for its 3 s.
        pending = set(self.grid.push_messages(messages))
        end = time.time() + (timeout or 0.0)
        replies: list[Message] = []
        while timeout is None or time.time() < end:
            arrived = list(self.grid.pull_messages(pending))
            replies.extend(arrived)
            pending.difference_update(m.metadata.reply_to_message_id for m in arrived)
            if not pending:
                break
            time.sleep(self.poll_seconds)
        self.exchanges += 1
        for reply in replies:
            if reply.has_content():
                self._count(reply)
        return replies

    def _count(self, reply: Message) -> None:
        content = reply.content
        arrays = sum(len(array.data) for record in content.array_records.values() for array in record.values())
        configs = 0
        for name, record in content.config_records.items():
            for key, value in record.items():
                size = _size(value)
                configs += size
                if name == RECORD_KEY_CONFIGS and key == SecAggKey.MASKED_PARAMETERS:
                    self.update_bytes += size
        if RECORD_KEY_CONFIGS not in content.config_records:
            self.update_bytes += arrays
        self.reply_bytes += arrays + configs


def _size(value) -> int:
    if isinstance(value, bytes | str):
        return len(value)
    if isinstance(value, list):
        return sum(_size(v) for v in value)
    return 8


class MeanUpdateFedAvg(FedAvg):
    """FedAvg over clipped updates: the new global weights are the old ones plus the mean update."""

    def __init__(self, settings: FedSettings, weights: np.ndarray, secure: bool):
        super().__init__(fraction_fit=1.0, fraction_evaluate=0.0, min_fit_clients=settings.clients,
                         min_available_clients=settings.clients,
                         on_fit_config_fn=lambda server_round: {"round": server_round - 1},
                         initial_parameters=ndarrays_to_parameters([weights]))
        self.weights, self.secure = weights, secure
        self.contributors, self.train_loss = 0, None

    def aggregate_fit(self, server_round, results, failures):
        if not results:
            self.contributors, self.train_loss = 0, None
            return None, {}
        if self.secure:  # SecAggPlusWorkflow put the unmasked mean (weights 1) in every result
            mean = parameters_to_ndarrays(results[0][1].parameters)[0]
        else:
            mean = np.mean([parameters_to_ndarrays(fit.parameters)[0] for _, fit in results], axis=0)
        self.weights = (self.weights + mean).astype(np.float32)
        self.contributors = len(results)
        losses = [fit.metrics["loss"] for _, fit in results if "loss" in fit.metrics]
        self.train_loss = float(np.mean(losses)) if losses else None
        return ndarrays_to_parameters([self.weights]), {}


class TimedFit:
    """The fit workflow of one round, timed, with its record appended to `out/rounds.jsonl`."""

    def __init__(self, fit, strategy: MeanUpdateFedAvg, counter: UploadCounter, out: Path):
        self.fit, self.strategy, self.counter, self.out = fit, strategy, counter, out
        self.history: list[dict] = []

    def __call__(self, grid, context) -> None:
        before_update, before_all = self.counter.update_bytes, self.counter.reply_bytes
        before_exchanges = self.counter.exchanges
        started = time.perf_counter()
        self.fit(grid, context)
        seconds = time.perf_counter() - started
        size = self.strategy.weights.size
        parties = max(1, self.strategy.contributors)
        record = {"round": len(self.history) + 1, "contributors": self.strategy.contributors,
                  "exchanges": self.counter.exchanges - before_exchanges,
                  "upload_bytes_per_parameter": (self.counter.update_bytes - before_update) / parties / size,
                  "all_upload_bytes_per_parameter": (self.counter.reply_bytes - before_all) / parties / size,
                  "train_loss": self.strategy.train_loss, "seconds": seconds}
        self.history.append(record)
        with (self.out / "rounds.jsonl").open("a") as f:
            f.write(json.dumps(record) + "\n")


def run(grid: Grid, context: Context, settings: FedSettings, poll_seconds: float, out: Path) -> dict:
    if settings.aggregation not in ("plain", "secagg"):
        raise ValueError(f"this app runs aggregation 'plain' or 'secagg' (Flower's SecAgg+), not "
                         f"{settings.aggregation!r}")
    if settings.private:
        raise ValueError("this benchmark app has no DP")
    federation = Federation.from_settings(settings)
    weights = parameter_vector(federation.initial_model())
    test = federation.test_records()
    initial = evaluate_global(federation, weights, test)
    secure = settings.aggregation == "secagg"
    strategy = MeanUpdateFedAvg(settings, weights, secure)
    metrics: dict[int, dict] = {}

    def evaluate(server_round, parameters, config):  # centralized, after each round, not timed
        if server_round == 0:
            return None
        metrics[server_round] = evaluate_global(federation, strategy.weights, test)
        return metrics[server_round]["test_loss"], {}

    strategy.evaluate_fn = evaluate
    counter = UploadCounter(grid, poll_seconds)
    grid.send_and_receive = counter.send_and_receive  # this grid object only; Flower's code is untouched
    if secure:
        threshold = settings.threshold or settings.clients // 2 + 1
        fit = SecAggPlusWorkflow(num_shares=1.0, reconstruction_threshold=threshold, max_weight=1.0,
                                 clipping_range=settings.update_clip, timeout=settings.round_timeout)
    else:
        fit = default_fit_workflow
    timed = TimedFit(fit, strategy, counter, out)
    legacy = LegacyContext(context, config=ServerConfig(num_rounds=settings.rounds), strategy=strategy)
    DefaultWorkflow(fit_workflow=timed)(grid, legacy)
    history = [record | {"metrics": metrics.get(record["round"])} for record in timed.history]
    return {"rounds_completed": sum(1 for r in history if r["contributors"]), "rounds_run": len(history),
            "aggregation": f"flower-{'secaggplus' if secure else 'plain'}", "poll_seconds": poll_seconds,
            "epsilon": None, "delta": None, "initial_metrics": initial,
            "metrics": history[-1]["metrics"] if history else initial, "rounds": history,
            "settings": settings.to_run_config()}
