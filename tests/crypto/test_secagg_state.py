"""A client whose steps run in separate processes: its state goes through bytes between every step."""

import json

import numpy as np
import pytest

from simmim.crypto.secagg import SecAggClient, SecAggServer, new_round, quantise
from simmim.errors import CryptoError


def _round_with_restores(updates, threshold, drop_before_mask=()):
    config = new_round(updates, threshold=threshold, vector_length=next(iter(updates.values())).size, clip=1.0)
    server = SecAggServer(config)
    states = {cid: SecAggClient(cid).export_state() for cid in config.clients}

    def step(cid, name, *arguments):
        client = SecAggClient.restore(states[cid])
        reply = getattr(client, name)(*arguments)
        states[cid] = client.export_state()
        return reply

    for cid in config.clients:
        server.receive_keys(step(cid, "advertise_keys", config))
    directory = server.key_directory()
    for cid in config.clients:
        server.receive_shares(step(cid, "share_keys", directory))
    deliveries = server.share_deliveries()
    for cid in config.clients:
        if cid not in drop_before_mask:
            server.receive_masked_input(step(cid, "mask_update", deliveries[cid], updates[cid]))
    request = server.unmask_request()
    for cid in request.survivors:
        server.receive_unmask_shares(step(cid, "unmask", request))
    return config, server.result(), states


@pytest.mark.parametrize("dropped", [(), (2,)])
def test_a_round_is_exact_when_every_client_step_restarts_from_exported_state(dropped):
    rng = np.random.default_rng(0)
    updates = {cid: rng.uniform(-1, 1, 257) for cid in (1, 2, 3, 4)}
    config, result, _ = _round_with_restores(updates, threshold=3, drop_before_mask=dropped)
    expected = sum(quantise(updates[c], config) for c in updates if c not in dropped)
    assert np.array_equal(result.words, expected.astype(np.uint32))
    assert result.contributors == tuple(c for c in updates if c not in dropped)


def test_a_finished_client_state_holds_no_secrets_and_takes_no_more_steps():
    updates = {cid: np.full(8, 0.25) for cid in (1, 2, 3)}
    config, _, states = _round_with_restores(updates, threshold=2)
    saved = json.loads(states[1])
    assert not {"_encryption_key", "_mask_key", "_self_mask_seed", "_held"} & set(saved)
    client = SecAggClient.restore(states[1])
    assert client.stage == "done"
    with pytest.raises(CryptoError, match="stage 'done'"):
        client.advertise_keys(config)


@pytest.mark.parametrize("data", [b"", b"{}", b'{"version": 2}', b"not json", b'{"version": 1, "client": 0}',
                                  b'{"version": 1, "client": 3, "stage": "flying"}'])
def test_unreadable_state_is_refused_with_a_clear_error(data):
    with pytest.raises(CryptoError, match="state|client ids|stage"):
        SecAggClient.restore(data)
