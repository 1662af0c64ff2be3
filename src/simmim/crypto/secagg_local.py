"""One secure-aggregation round run in-process: every client and the server in this Python process.

For tests, benchmarks and single-machine simulations. Dropouts are simulated by step: a client listed
under a step sends nothing from that step on. With `over_wire=True` every message goes through its
byte form (`secagg_messages.encode` / `decode`), as it would over a network, and the bytes each client
uploads are counted. The time spent in each client's and in the server's methods is recorded (the
conversions of a client's message to bytes and back count as that client's time).
"""

from __future__ import annotations

import time
from collections.abc import Collection, Mapping
from dataclasses import dataclass, field

import numpy as np

from simmim.crypto.secagg import AggregateResult, SecAggClient, SecAggServer, check_config, new_round
from simmim.crypto.secagg_messages import RoundConfig, decode, encode
from simmim.errors import CryptoError

# A client listed under a step stops before sending that step's message.
DROP_STEPS = ("keys", "shares", "masked", "unmask")


@dataclass
class LocalRound:
    """The outcome of `run_in_process`.

    Attributes:
        result: What the server learned (the sum and who is in it).
        upload_bytes: Bytes each client sent, by client (counted only with over_wire=True).
        server: The server object, for inspecting what it received.
        client_seconds: Time spent in each client's steps, by client.
        server_seconds: Time spent in the server's steps, all of them.
        unmask_seconds: The part of server_seconds spent recovering secrets and unmasking the sum.
    """

    result: AggregateResult
    server: SecAggServer
    upload_bytes: dict[int, int] = field(default_factory=dict)
    client_seconds: dict[int, float] = field(default_factory=dict)
    server_seconds: float = 0.0
    unmask_seconds: float = 0.0


def run_in_process(updates: Mapping[int, np.ndarray], *, threshold: int = 0, clip: float = 0.0,
                   fraction_bits: int | None = None, neighbours: int = 0,
                   drop: Mapping[str, Collection[int]] | None = None, over_wire: bool = False,
                   config: RoundConfig | None = None) -> LocalRound:
    """Aggregate `updates` (client id -> update) securely; CryptoError if the round is refused.

    Args:
        updates: Each client's update; all of the same size.
        threshold: Shares needed to recover a secret (`secagg.new_round`).
        clip: Coordinates are clipped to [-clip, clip].
        fraction_bits: Quantisation; by default the finest that cannot overflow.
        neighbours: 0 for the complete graph (SecAgg), an even k for SecAgg+ (`secagg_graph`).
        drop: Step name (one of DROP_STEPS) -> clients that drop before sending that step's message.
        over_wire: Send every message as bytes and count each client's upload.
        config: A ready configuration (from `secagg.new_round`) instead of threshold, clip, fraction_bits
            and neighbours, e.g. to choose dropouts knowing the graph.
    """
    drop = {step: set(clients) for step, clients in (drop or {}).items()}
    if set(drop) - set(DROP_STEPS):
        raise CryptoError(f"unknown dropout steps {sorted(set(drop) - set(DROP_STEPS))}; use {DROP_STEPS}")
    sizes = {np.asarray(u).size for u in updates.values()}
    if len(sizes) != 1:
        raise CryptoError("all updates must have the same number of parameters")
    if config is None:
        config = new_round(updates, threshold=threshold, vector_length=sizes.pop(), clip=clip,
                           fraction_bits=fraction_bits, neighbours=neighbours)
    else:
        check_config(config)
        if set(config.clients) != set(updates) or config.vector_length != sizes.pop():
            raise CryptoError("the configuration does not match the updates' clients or size")
    server = SecAggServer(config)
    clients = {cid: SecAggClient(cid) for cid in config.clients}
    outcome = LocalRound(result=None, server=server, client_seconds=dict.fromkeys(clients, 0.0))
    dropped: set[int] = set()

    def carry(message, sender=None):
        if not over_wire:
            return message
        data = encode(message)
        if sender is not None:
            outcome.upload_bytes[sender] = outcome.upload_bytes.get(sender, 0) + len(data)
        return decode(data)

    def on_client(cid, step, *arguments):
        start = time.perf_counter()
        message = carry(step(*arguments), cid)
        outcome.client_seconds[cid] += time.perf_counter() - start
        return message

    def on_server(step, *arguments):
        start = time.perf_counter()
        reply = step(*arguments)
        outcome.server_seconds += time.perf_counter() - start
        return reply

    def active(step: str) -> list[int]:
        dropped.update(drop.get(step, ()))
        return [cid for cid in clients if cid not in dropped]

    broadcast = carry(config)
    for cid in active("keys"):
        on_server(server.receive_keys, on_client(cid, clients[cid].advertise_keys, broadcast))
    directory = carry(on_server(server.key_directory))
    for cid in active("shares"):
        on_server(server.receive_shares, on_client(cid, clients[cid].share_keys, directory))
    deliveries = {cid: carry(delivery) for cid, delivery in on_server(server.share_deliveries).items()}
    for cid in active("masked"):
        on_server(server.receive_masked_input, on_client(cid, clients[cid].mask_update, deliveries[cid], updates[cid]))
    request = carry(on_server(server.unmask_request))
    for cid in active("unmask"):
        on_server(server.receive_unmask_shares, on_client(cid, clients[cid].unmask, request))
    before = outcome.server_seconds
    outcome.result = on_server(server.result)
    outcome.unmask_seconds = outcome.server_seconds - before
    return outcome
