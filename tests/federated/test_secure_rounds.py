"""Pipelined secure aggregation, in one process: the real ClientApp handlers behind an in-memory exchange.

Each party is a Flower Context whose state persists between messages, as a SuperNode keeps it; every
message goes through the client app as Flower would deliver it. The Flower deployment itself is
tested in tests/integration/test_federated_loopback.py.
"""

import numpy as np
import pytest
from flwr.app import Context, Message, RecordDict
from flwr.supercore.task_identity import TaskIdentity

from simmim.errors import CryptoError
from simmim.federated import client_app, protocol
from simmim.federated.secure_rounds import SecureRounds
from simmim.federated.settings import FedSettings

SIZE = 64


class Parties:
    """Contexts of n parties; `train` messages get a fixed, known update instead of SimMIM training."""

    def __init__(self, n: int, monkeypatch):
        settings = FedSettings(clients=n, aggregation="secagg", update_clip=1.0)
        self.contexts = {node: Context(run_id=1, node_id=node, node_config={"partition-id": node - 100},
                                       state=RecordDict(), run_config=settings.to_run_config())
                         for node in range(100, 100 + n)}
        self.updates: dict[tuple[int, int], np.ndarray] = {}
        self.down: set[int] = set()
        self.messages: list[dict[int, str]] = []
        rng = np.random.default_rng(0)

        def fake_update(federation, weights, records, *, round_index, party):
            update = rng.uniform(-1, 1, SIZE).astype(np.float32)
            self.updates[(round_index, party + 100)] = update
            return update, {"loss": 1.0, "update_norm": 1.0, "examples": 1}

        for name, value in (("_task_id", 1), ("_run_id", 1), ("_node_id", 0)):  # what a task process has set
            monkeypatch.setattr(TaskIdentity, name, value)
        monkeypatch.setattr("simmim.federated.local.local_update", fake_update)
        monkeypatch.setattr("simmim.federated.local.Federation.from_settings",
                            classmethod(lambda cls, s: type("F", (), {"partition": lambda self, p: []})()))

    def exchange(self, outgoing):
        self.messages.append({node: kind for node, (kind, _) in outgoing.items()})
        replies = {}
        for node, (kind, content) in outgoing.items():
            if node in self.down:
                continue
            TaskIdentity.node_id = node
            message = Message(content, dst_node_id=node, message_type=kind)
            replies[node] = client_app.app(message, self.contexts[node]).content
        return replies


def test_two_messages_per_round_after_a_two_message_setup_and_exact_sums(monkeypatch):
    parties = Parties(4, monkeypatch)
    rounds = SecureRounds(parties.exchange, threshold=3, vector_length=SIZE, clip=1.0)
    nodes = sorted(parties.contexts)
    for r in range(3):
        outcome = rounds.run(nodes, np.zeros(SIZE, np.float32), r, nodes if r < 2 else None)
        assert sorted(outcome.contributors) == nodes and outcome.upload_per_party == 4 * SIZE
        expected = sum(np.float64(parties.updates[(r, n)]) for n in nodes)
        np.testing.assert_allclose(outcome.total, expected, atol=4 * 2.0**-28)
    kinds = [sorted(set(m.values())) for m in parties.messages]
    assert len(parties.messages) == 2 + 2 * 3
    assert kinds[:2] == [[protocol.STEP], [protocol.STEP]] and kinds[2] == [protocol.TRAIN]
    assert all(not state.get("secagg-clients") for c in parties.contexts.values() for state in [c.state])


def test_a_party_lost_mid_round_is_recovered_and_left_out_of_the_next(monkeypatch):
    parties = Parties(4, monkeypatch)
    rounds = SecureRounds(parties.exchange, threshold=3, vector_length=SIZE, clip=1.0)
    nodes = sorted(parties.contexts)
    first = rounds.run(nodes, np.zeros(SIZE, np.float32), 0, nodes)
    assert len(first.contributors) == 4
    original = parties.exchange

    def drop_after_first_message(outgoing):
        replies = original(outgoing)
        parties.down.add(103)  # 103 trained and uploaded in message A, then died before unmasking
        return replies

    parties.exchange = drop_after_first_message
    rounds.exchange = parties.exchange
    second = rounds.run(nodes, np.zeros(SIZE, np.float32), 1, nodes)
    assert sorted(second.contributors) == nodes  # its masked update arrived: it counts
    parties.exchange = original
    rounds.exchange = original
    third = rounds.run(nodes, np.zeros(SIZE, np.float32), 2, None)  # 103 never shared keys for round 3
    assert sorted(third.contributors) == [100, 101, 102]
    np.testing.assert_allclose(third.total, sum(np.float64(parties.updates[(2, n)]) for n in (100, 101, 102)),
                               atol=3 * 2.0**-28)


def test_too_few_parties_refuse_the_round_and_the_next_is_set_up_afresh(monkeypatch):
    parties = Parties(3, monkeypatch)
    rounds = SecureRounds(parties.exchange, threshold=3, vector_length=SIZE, clip=1.0)
    nodes = sorted(parties.contexts)
    rounds.run(nodes, np.zeros(SIZE, np.float32), 0, nodes)
    parties.down.add(102)
    with pytest.raises(CryptoError, match="threshold"):
        rounds.run(nodes, np.zeros(SIZE, np.float32), 1, nodes)
    parties.down.clear()
    third = rounds.run(nodes, np.zeros(SIZE, np.float32), 2, None)
    assert sorted(third.contributors) == nodes
