"""The server's side of federated SimMIM, as a Flower ServerApp: sampling, aggregation, DP, accounting.

Per round: Poisson-sample the parties, send them the global weights, aggregate their clipped updates
(plain, secure aggregation or Paillier), add DP-FedAvg noise to the sum, step the global model,
evaluate it, and append the round to `out/rounds.jsonl`; before a round that would exceed the
budget, stop. `out/result.json` is written at the end, also when the run fails.
"""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path

import numpy as np
from flwr.app import Context, Message, RecordDict
from flwr.serverapp import Grid, ServerApp

from simmim.crypto.aggregation import aggregate
from simmim.crypto.paillier import PublicKey
from simmim.crypto.serialization import public_key_from_bytes, public_key_to_bytes, vector_to_bytes
from simmim.errors import CryptoError, SimMIMError
from simmim.federated import protocol
from simmim.federated.deployment import record_result
from simmim.federated.dp import ClientLevelDp, sample_parties
from simmim.federated.local import Federation, evaluate_global, parameter_vector
from simmim.federated.secure_rounds import SecureRounds
from simmim.federated.settings import FedSettings

app = ServerApp()
log = logging.getLogger("simmim.federated")

POLL_SECONDS = 0.05
PAILLIER_BITS = 2048


class RoundRefused(SimMIMError):
    """A round that produced no update (too few parties, or secure aggregation refused it)."""


@app.main()
def main(grid: Grid, context: Context) -> None:
    settings = FedSettings.from_run_config(context.run_config)
    out = Path(settings.out)
    out.mkdir(parents=True, exist_ok=True)
    record_result(out, lambda: run_federation(grid, settings, out))


def run_federation(grid: Grid, settings: FedSettings, out: Path) -> dict:
    federation = Federation.from_settings(settings)
    dp = ClientLevelDp.for_run(settings)
    nodes = _wait_for_nodes(grid, settings)
    weights = parameter_vector(federation.initial_model())
    test = federation.test_records()
    initial = evaluate_global(federation, weights, test)
    _save_weights(out / "global" / "round-0000.npy", weights)
    history: list[dict] = []
    key = _paillier_key(grid, nodes, settings.round_timeout) if settings.aggregation == "paillier" else None
    secure = (SecureRounds(lambda outgoing: exchange(grid, outgoing, settings.round_timeout),
                           threshold=settings.threshold, vector_length=weights.size, clip=settings.update_clip)
              if settings.aggregation == "secagg" else None)
    stopped = None
    sampled = sample_parties(sorted(grid.get_node_ids()), settings.sample_rate)
    for round_index in range(settings.rounds):
        if not dp.allows(round_index + 1):
            stopped = f"budget: round {round_index + 1} would take epsilon to {dp.epsilon(round_index + 1):.3f}"
            break
        started = time.perf_counter()
        # Secure aggregation prepares the next round during this one, so its parties are drawn now.
        has_next = round_index + 1 < settings.rounds and dp.allows(round_index + 2)
        next_sampled = sample_parties(sorted(grid.get_node_ids()), settings.sample_rate) if has_next else None
        record: dict = {"round": round_index + 1, "sampled": len(sampled)}
        try:
            if secure is not None:
                _require(len(sampled), max(settings.min_clients, 2), "sampled")
                outcome = secure.run(sampled, weights, round_index, next_sampled)
                total, contributors = outcome.total, outcome.contributors
                metrics, upload = outcome.metrics, outcome.upload_per_party
            else:
                total, contributors, metrics, upload = _aggregate(grid, settings, sampled, round_index, weights,
                                                                  key)
            parties = settings.clients if dp.private else len(contributors)
            weights = (weights + dp.noisy_average(total, settings.update_clip, parties)).astype(np.float32)
            record |= {"contributors": len(contributors), "upload_bytes_per_parameter": upload / weights.size,
                       "train_loss": float(np.mean([m["loss"] for m in metrics])) if metrics else None}
        except (RoundRefused, CryptoError) as error:
            record |= {"contributors": 0, "refused": str(error)}
        record |= {"epsilon": dp.epsilon(round_index + 1), "seconds": time.perf_counter() - started,
                   "metrics": evaluate_global(federation, weights, test)}
        _save_weights(out / "global" / f"round-{round_index + 1:04d}.npy", weights)
        history.append(record)
        with (out / "rounds.jsonl").open("a") as f:
            f.write(json.dumps(record) + "\n")
        log.info("round %d: %s", round_index + 1, record)
        sampled = next_sampled or []
    completed = sum(1 for r in history if "refused" not in r)
    return {"rounds_completed": completed, "rounds_run": len(history), "stopped": stopped,
            "epsilon": dp.epsilon(len(history)), "delta": settings.delta if dp.private else None,
            "noise_multiplier": dp.noise_multiplier, "aggregation": settings.aggregation,
            "initial_metrics": initial, "metrics": history[-1]["metrics"] if history else initial,
            "rounds": history, "settings": settings.to_run_config()}


def _aggregate(grid: Grid, settings: FedSettings, sampled: list[int], round_index: int, weights: np.ndarray,
               key: tuple[int, PublicKey] | None):
    """(sum of the clipped updates, contributing nodes, their metrics, bytes uploaded) for one round."""
    needed = max(settings.min_clients, 2 if settings.aggregation != "plain" else 1)
    if len(sampled) < needed:
        raise RoundRefused(f"only {len(sampled)} parties sampled, the round needs {needed}")
    base = {"round": round_index}
    global_weights = {"global": weights}
    if settings.aggregation == "plain":
        replies = exchange(grid, {n: (protocol.TRAIN, protocol.records(arrays=global_weights, values=base))
                                  for n in sampled}, settings.round_timeout)
        _require(len(replies), needed, "returned updates")
        updates = [protocol.array(r, "update") for r in replies.values()]
        return (np.sum(updates, axis=0), list(replies), _metrics(replies),
                sum(u.nbytes for u in updates) / len(updates))
    if settings.aggregation == "paillier":
        holder, public_key = key
        values = base | {"public-key": public_key_to_bytes(public_key)}
        replies = exchange(grid, {n: (protocol.TRAIN, protocol.records(arrays=global_weights, values=values))
                                  for n in sampled}, settings.round_timeout)
        _require(len(replies), needed, "returned encrypted updates")
        ciphertexts = [protocol.value(r, "ciphertext") for r in replies.values()]
        total = aggregate(ciphertexts, public_key)
        answer = exchange(grid, {holder: (protocol.DECRYPT, protocol.records(values={
            "sum": vector_to_bytes(total), "summands": len(ciphertexts)}))}, settings.round_timeout)
        if holder not in answer:
            raise RoundRefused("the key holder did not decrypt the sum")
        return (protocol.array(answer[holder], "sum"), list(replies), _metrics(replies),
                sum(len(c) for c in ciphertexts) / len(ciphertexts))
    raise RoundRefused(f"unknown aggregation {settings.aggregation!r}")


def exchange(grid: Grid, outgoing: dict[int, tuple[str, RecordDict]], timeout: float) -> dict[int, RecordDict]:
    """Sends one message to each node and collects the replies that arrive within `timeout` seconds.

    A node that does not answer in time, or answers with an error, is left out (it dropped).
    Polls every POLL_SECONDS (Flower's own send_and_receive polls every 3 s).
    """
    if not outgoing:
        return {}
    messages = [Message(content, dst_node_id=node, message_type=kind) for node, (kind, content) in outgoing.items()]
    pending = {mid: node for mid, node in zip(grid.push_messages(messages), outgoing) if mid}
    replies: dict[int, RecordDict] = {}
    deadline = time.monotonic() + timeout
    while pending and time.monotonic() < deadline:
        for reply in grid.pull_messages(list(pending)):
            node = pending.pop(reply.metadata.reply_to_message_id, None)
            if node is None:
                continue
            if reply.has_error():
                log.warning("party %s answered with an error: %s", node, reply.error.reason)
            else:
                replies[node] = reply.content
        if pending:
            time.sleep(POLL_SECONDS)
    return replies


def _wait_for_nodes(grid: Grid, settings: FedSettings) -> list[int]:
    """Waits (up to round_timeout) for all parties to connect; at least min_clients must."""
    deadline = time.monotonic() + settings.round_timeout
    while len(list(grid.get_node_ids())) < settings.clients and time.monotonic() < deadline:
        time.sleep(0.2)
    nodes = sorted(grid.get_node_ids())
    if len(nodes) < settings.min_clients:
        raise RoundRefused(f"only {len(nodes)} SuperNodes connected, the run needs {settings.min_clients}")
    return nodes


def _paillier_key(grid: Grid, nodes: list[int], timeout: float) -> tuple[int, PublicKey]:
    """Asks every node for a key; only the key-holding party (partition 0) makes one. (node, public key)."""
    replies = exchange(grid, {n: (protocol.KEYGEN, protocol.records(values={"bits": PAILLIER_BITS}))
                              for n in nodes}, timeout)
    if len(replies) != 1:
        raise RoundRefused(f"expected exactly one key-holding party, {len(replies)} answered")
    (holder, reply), = replies.items()
    return holder, public_key_from_bytes(protocol.value(reply, "public-key"))


def _save_weights(path: Path, weights: np.ndarray) -> None:
    """The global model after a round, written whole or not at all."""
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_suffix(".partial")
    with partial.open("wb") as f:
        np.save(f, weights)
    partial.replace(path)


def _metrics(replies: dict[int, RecordDict]) -> list[dict]:
    return [dict(reply.config_records["metrics"]) for reply in replies.values() if "metrics" in reply.config_records]


def _require(count: int, needed: int, what: str) -> None:
    if count < needed:
        raise RoundRefused(f"only {count} parties {what}, the round needs {needed}")
