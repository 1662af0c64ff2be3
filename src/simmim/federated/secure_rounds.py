"""Secure aggregation over Flower in two messages per round, by preparing round r+1 during round r.

A round of `simmim.crypto.secagg` has four client steps: advertise keys (K), share keys (S), upload the
masked update (M) and answer the unmask request (U). Sent one step per message, a round costs four
Flower round trips, and each costs seconds on any transport that polls. The steps of two consecutive
rounds are independent (fresh keys, seeds and round ids each round), so they can share messages:

    setup (once)  K(1)            then  S(1)
    round r       train + M(r) + K(r+1)    then  U(r) + S(r+1)

A party gets the global weights together with its share delivery of round r, trains, masks and
uploads, and in the same reply advertises its keys for round r+1; the next message carries round r's
unmask request and round r+1's key directory. Parties of round r+1 are sampled while round r runs
(sampling does not depend on anyone's data), and a party sampled for r+1 but not for r gets only
the r+1 steps. If round r+1's preparation fails (too few parties advertised or shared), it is set up
again with the two setup messages before it runs. The security argument is unchanged: each round
is the protocol of `simmim.crypto.secagg` on its own keys; only the transport is shared.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
from flwr.app import RecordDict

from simmim.crypto import secagg_messages as messages
from simmim.crypto.secagg import SecAggServer, new_round
from simmim.errors import CryptoError
from simmim.federated import protocol

log = logging.getLogger("simmim.federated")

# exchange(outgoing: node -> (message type, content)) -> node -> reply content
Exchange = Callable[[dict[int, tuple[str, RecordDict]]], dict[int, RecordDict]]


@dataclass
class SecureRound:
    """One round's server state: its SecAggServer and which node is which client id."""

    server: SecAggServer
    ids: dict[int, int]  # node -> secure-aggregation client id
    deliveries: dict[int, messages.ShareDelivery] | None = None  # set once S closed
    refused: str | None = None

    @property
    def nodes(self) -> dict[int, int]:
        return {cid: node for node, cid in self.ids.items()}

    def refuse(self, error: CryptoError) -> None:
        self.refused = self.refused or str(error)

    @property
    def ready(self) -> bool:
        return self.refused is None and self.deliveries is not None


@dataclass
class RoundOutcome:
    total: np.ndarray
    contributors: list[int]
    metrics: list[dict] = field(default_factory=list)
    upload_per_party: float = 0.0


class SecureRounds:
    """Drives pipelined secure-aggregation rounds over `exchange`; `run` is called once per round."""

    def __init__(self, exchange: Exchange, *, threshold: int, vector_length: int, clip: float):
        self.exchange, self.threshold = exchange, threshold
        self.vector_length, self.clip = vector_length, clip
        self.prepared: SecureRound | None = None

    def new(self, sampled: list[int]) -> SecureRound:
        ids = {node: index + 1 for index, node in enumerate(sorted(sampled))}
        config = new_round(ids.values(), threshold=self.threshold or len(ids) // 2 + 1,
                           vector_length=self.vector_length, clip=self.clip)
        return SecureRound(SecAggServer(config), ids)

    def setup(self, sampled: list[int]) -> SecureRound:
        """K then S for a round on its own: two exchanges."""
        current = self.new(sampled)
        config = messages.encode(current.server.config)
        replies = self.exchange({n: (protocol.STEP, _steps([(config, current.ids[n])])) for n in current.ids})
        self._receive(replies, {current.server.config.round_id: current})
        self._send_directory({}, None, current)
        return current

    def run(self, sampled: list[int], weights: np.ndarray, round_index: int,
            next_sampled: list[int] | None) -> RoundOutcome:
        """Round `round_index` over `sampled` (or the round prepared for it), preparing the next one
        over `next_sampled` (None: there is no next round). CryptoError if this round is refused."""
        current = self.prepared if self.prepared is not None and self.prepared.ready else None
        if current is None:
            current = self.setup(sampled)
        self.prepared = None
        if current.refused:
            raise CryptoError(current.refused)
        following = self.new(next_sampled) if next_sampled and len(next_sampled) >= 2 else None
        rounds = {current.server.config.round_id: current}
        if following is not None:
            rounds[following.server.config.round_id] = following
        # Message A: train and mask for this round, advertise keys for the next.
        next_config = messages.encode(following.server.config) if following else None
        outgoing = {}
        for node in set(current.deliveries) | set(following.ids if following else ()):
            steps = []
            if node in current.deliveries:
                steps.append((messages.encode(current.deliveries[node]), 0))
            if following is not None and node in following.ids:
                steps.append((next_config, following.ids[node]))
            values = {"round": round_index}
            if node in current.deliveries:
                content = _steps(steps, values)
                content["global"] = protocol.records(arrays={"global": weights})["global"]
                outgoing[node] = (protocol.TRAIN, content)
            else:
                outgoing[node] = (protocol.STEP, _steps(steps, values))
        replies = self.exchange(outgoing)
        upload = 0
        for node, reply in replies.items():
            if "masked" in reply.array_records:
                words = protocol.array(reply, "masked")
                upload += words.nbytes
                try:
                    current.server.receive_masked_input(messages.MaskedInput(
                        round_id=protocol.value(reply, "round-id"), sender=int(protocol.value(reply, "sender")),
                        words=words))
                except CryptoError as error:
                    log.warning("party %s: %s", node, error)
        self._receive(replies, rounds)
        metrics = [dict(r.config_records["metrics"]) for n, r in replies.items()
                   if "metrics" in r.config_records and n in current.deliveries]
        # Message B: unmask this round, share keys for the next.
        request = None
        try:
            request = current.server.unmask_request()
        except CryptoError as error:
            current.refuse(error)
        self._send_directory({c: request for c in request.survivors} if request else {}, current, following)
        self.prepared = following
        if current.refused:
            raise CryptoError(current.refused)
        try:
            result = current.server.result()
        except CryptoError as error:
            raise CryptoError(str(error)) from None
        survivors = len(result.contributors)
        return RoundOutcome(result.dequantise(), [current.nodes[c] for c in result.contributors], metrics,
                            upload / max(1, survivors))

    def _send_directory(self, unmask: dict[int, messages.UnmaskRequest], current: SecureRound | None,
                        following: SecureRound | None) -> None:
        """One exchange: `current`'s unmask request to its survivors, `following`'s key directory to U1."""
        directory, members = None, set()
        if following is not None:
            try:
                keys = following.server.key_directory()
                directory, members = messages.encode(keys), set(keys.encryption_keys)
            except CryptoError as error:
                following.refuse(error)
        outgoing = {}
        rounds = {}
        if current is not None:
            rounds[current.server.config.round_id] = current
        if following is not None:
            rounds[following.server.config.round_id] = following
        encoded_request = messages.encode(next(iter(unmask.values()))) if unmask else None
        for node in {current.nodes[c] for c in unmask} if current else set():
            outgoing.setdefault(node, []).append((encoded_request, 0))
        for cid in members:
            outgoing.setdefault(following.nodes[cid], []).append((directory, 0))
        replies = self.exchange({node: (protocol.STEP, _steps(steps)) for node, steps in outgoing.items()})
        self._receive(replies, rounds)
        if following is not None and directory is not None:
            try:
                following.deliveries = {following.nodes[c]: d for c, d in following.server.share_deliveries().items()}
            except CryptoError as error:
                following.refuse(error)

    def _receive(self, replies: dict[int, RecordDict], rounds: dict[bytes, SecureRound]) -> None:
        """Hands each answer to the server of its round; a bad answer is refused alone."""
        for node, reply in replies.items():
            if "values" not in reply.config_records or "answers" not in reply.config_records["values"]:
                continue
            for data in protocol.value(reply, "answers"):
                try:
                    answer = messages.decode(data)
                    target = rounds.get(answer.round_id)
                    if target is None:
                        raise CryptoError("an answer for a round that is not open")
                    receive = {messages.PublicKeys: target.server.receive_keys,
                               messages.EncryptedShares: target.server.receive_shares,
                               messages.UnmaskShares: target.server.receive_unmask_shares}.get(type(answer))
                    if receive is None:
                        raise CryptoError(f"a {type(answer).__name__} is not an answer a party sends")
                    receive(answer)
                except CryptoError as error:
                    log.warning("party %s: %s", node, error)


def _steps(steps: list[tuple[bytes, int]], values: dict | None = None) -> RecordDict:
    """A message carrying secure-aggregation steps: encoded server messages, and the client id each
    RoundConfig gives the recipient (0 for the other steps)."""
    return protocol.records(values={**(values or {}), "steps": [s for s, _ in steps], "ids": [i for _, i in steps]})
