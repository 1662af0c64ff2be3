"""Secure aggregation: exact sums under dropouts, refusals, masking quality and rejected messages."""

import dataclasses
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy.stats import chisquare

from simmim.crypto import secagg_keys
from simmim.crypto import secagg_messages as messages
from simmim.crypto.secagg import (
    BOX_BYTES,
    SecAggClient,
    SecAggServer,
    check_config,
    dequantise,
    max_fraction_bits,
    new_round,
    quantise,
)
from simmim.crypto.secagg_graph import neighbourhoods
from simmim.crypto.secagg_local import DROP_STEPS, run_in_process
from simmim.errors import CryptoError

N, T, LENGTH, CLIP = 7, 4, 64, 1.0


def make_updates(n=N, length=LENGTH, seed=0, ids=None):
    rng = np.random.default_rng(seed)
    return {cid: rng.uniform(-1.5 * CLIP, 1.5 * CLIP, length) for cid in (ids or range(1, n + 1))}


def expected_words(updates, config, contributors):
    """The sum mod 2^32 of the contributors' quantised updates, computed without any masking."""
    total = sum(quantise(updates[c], config).view(np.int32).astype(np.int64) for c in contributors)
    return (total % 2**32).astype(np.uint32)


def assert_exact(outcome, updates, contributors):
    result = outcome.result
    assert result.contributors == tuple(sorted(contributors))
    assert np.array_equal(result.words, expected_words(updates, result.config, contributors))
    clipped_sum = sum(np.clip(updates[c], -CLIP, CLIP) for c in contributors)
    step = 2.0 ** -result.config.fraction_bits
    assert np.abs(result.dequantise() - clipped_sum).max() <= len(contributors) * step / 2


class Round:
    """A round driven step by step, so tests can meddle with the messages."""

    def __init__(self, n=N, threshold=T, length=LENGTH, ids=None, neighbours=0):
        self.updates = make_updates(n, length, ids=ids)
        self.config = new_round(self.updates, threshold=threshold, vector_length=length, clip=CLIP,
                                neighbours=neighbours)
        self.server = SecAggServer(self.config)
        self.clients = {cid: SecAggClient(cid) for cid in self.config.clients}

    def advertise(self, ids=None):
        for cid in ids or self.clients:
            self.server.receive_keys(self.clients[cid].advertise_keys(self.config))
        self.directory = self.server.key_directory()

    def share(self, ids=None):
        senders = ids or self.directory.mask_keys
        self.sent_shares = {cid: self.clients[cid].share_keys(self.directory) for cid in senders}
        for message in self.sent_shares.values():
            self.server.receive_shares(message)
        self.deliveries = self.server.share_deliveries()

    def mask(self, ids=None):
        self.masked = {cid: self.clients[cid].mask_update(self.deliveries[cid], self.updates[cid])
                       for cid in ids or self.deliveries}
        for message in self.masked.values():
            self.server.receive_masked_input(message)
        self.request = self.server.unmask_request()

    def unmask(self, ids=None):
        self.unmask_shares = {cid: self.clients[cid].unmask(self.request) for cid in ids or self.request.survivors}
        for message in self.unmask_shares.values():
            self.server.receive_unmask_shares(message)
        return self.server.result()


# --- exact sums with dropouts ------------------------------------------------------------------


@pytest.mark.parametrize("step", DROP_STEPS)
@pytest.mark.parametrize("dropouts", range(N - T + 1))
def test_exact_sum_with_dropouts_at_each_step(step, dropouts):
    updates = make_updates(seed=dropouts)
    dropped = set(range(N, N - dropouts, -1))  # the highest ids: their masks carry the minus sign
    outcome = run_in_process(updates, threshold=T, clip=CLIP, drop={step: dropped})
    # Clients dropping before the unmask step are left out of the sum; later ones are in it.
    contributors = set(updates) if step == "unmask" else set(updates) - dropped
    assert_exact(outcome, updates, contributors)


@settings(max_examples=25, deadline=None)
@given(st.data())
def test_exact_sum_with_dropouts_spread_over_steps(data):
    ids = sorted(data.draw(st.sets(st.integers(1, 2**31 - 1), min_size=3, max_size=8)))
    threshold = data.draw(st.integers(len(ids) // 2 + 1, len(ids)))
    leaving = data.draw(st.lists(st.sampled_from(ids), unique=True, max_size=len(ids) - threshold))
    steps = data.draw(st.lists(st.sampled_from(DROP_STEPS), min_size=len(leaving), max_size=len(leaving)))
    drop = {}
    for cid, step in zip(leaving, steps):
        drop.setdefault(step, set()).add(cid)
    updates = make_updates(ids=ids, length=17, seed=len(leaving))
    outcome = run_in_process(updates, threshold=threshold, clip=CLIP, drop=drop)
    gone_before_upload = set().union(*(drop.get(s, set()) for s in ("keys", "shares", "masked")))
    assert_exact(outcome, updates, set(ids) - gone_before_upload)


def test_over_the_wire_round_is_exact_and_uploads_four_bytes_per_parameter():
    length = 4096
    updates = make_updates(length=length)
    outcome = run_in_process(updates, threshold=T, clip=CLIP, over_wire=True, drop={"masked": {3}})
    assert_exact(outcome, updates, set(updates) - {3})
    # Masked words (4 bytes each) plus fixed costs: two public keys, one box per other client, headers.
    fixed = 2 * 32 + (N - 1) * (BOX_BYTES + 12) + 6 * 64 + N * (8 + 4 + 2 * 40 + 24)
    for cid, sent in outcome.upload_bytes.items():
        if cid != 3:
            assert 4 * length < sent <= 4 * length + fixed


def test_the_server_learns_the_sum_and_dequantise_gives_it_back():
    updates = {1: np.full(10, 0.25), 2: np.full(10, -0.5), 3: np.full(10, 2.0)}  # 2.0 is clipped to 1.0
    result = run_in_process(updates, threshold=2, clip=CLIP).result
    assert np.allclose(dequantise(result.words, result.config), 0.75)
    assert np.allclose(result.dequantise(), 0.75)


# --- refusals ----------------------------------------------------------------------------------


@pytest.mark.parametrize("step", DROP_STEPS)
def test_fewer_than_threshold_survivors_refuse_the_round(step):
    with pytest.raises(CryptoError, match="refused"):
        run_in_process(make_updates(), threshold=T, clip=CLIP, drop={step: set(range(1, N - T + 2))})


def test_a_refused_round_unmasks_nothing():
    game = Round()
    game.advertise()
    game.share()
    game.mask()
    game.unmask_shares = {cid: game.clients[cid].unmask(game.request) for cid in game.request.survivors[:T - 1]}
    for message in game.unmask_shares.values():
        game.server.receive_unmask_shares(message)
    with pytest.raises(CryptoError, match=f"only {T - 1} clients sent unmask shares"):
        game.server.result()
    assert game.server.stage == "refused"
    with pytest.raises(CryptoError):
        game.server.result()


def test_clients_refuse_to_continue_with_fewer_than_threshold_peers():
    game = Round()
    game.advertise()
    game.share()
    small = dataclasses.replace(game.deliveries[1], ciphertexts=dict(list(game.deliveries[1].ciphertexts.items())[:1]))
    with pytest.raises(CryptoError, match="threshold"):
        game.clients[1].mask_update(small, game.updates[1])


@pytest.mark.parametrize("kwargs, message", [
    (dict(clients=[1], threshold=1), "at least 2 clients"),
    (dict(threshold=3), "more than half"),
    (dict(threshold=7), "at most all"),
    (dict(clients=[0, 1, 2]), r"\[1, 2\^31\)"),
    (dict(vector_length=0), "vector_length"),
    (dict(fraction_bits=30), "could wrap"),
    (dict(clip=-1.0), "positive clip"),
])
def test_bad_round_configurations_are_refused(kwargs, message):
    arguments = dict(clients=range(1, 7), threshold=4, vector_length=8, clip=1.0) | kwargs
    with pytest.raises(CryptoError, match=message):
        new_round(arguments.pop("clients"), **arguments)


def test_configurations_built_by_hand_are_checked_too():
    config = new_round(range(1, 5), threshold=3, vector_length=8, clip=CLIP)
    for bad in (dict(clients=(1, np.int64(2), 3, 4)), dict(threshold=3.0), dict(round_id=b"short"),
                dict(clients=(2, 1, 3, 4)), dict(clients=None), dict(clip="1"), dict(round_id=None)):
        with pytest.raises(CryptoError):
            SecAggServer(dataclasses.replace(config, **bad))
        with pytest.raises(CryptoError):
            SecAggClient(1).advertise_keys(dataclasses.replace(config, **bad))


def test_arguments_and_messages_of_the_wrong_types_are_refused_without_a_traceback():
    for bad in (dict(threshold=2.5), dict(clip="1"), dict(vector_length=None), dict(neighbours=1.0)):
        with pytest.raises(CryptoError):
            new_round(range(1, 5), **(dict(threshold=3, vector_length=8, clip=CLIP) | bad))
    game = Round()
    message = game.clients[1].advertise_keys(game.config)
    for bad in (dict(encryption_key="not bytes"), dict(sender=True), dict(sender="1"), dict(mask_key=None)):
        with pytest.raises(CryptoError):
            game.server.receive_keys(dataclasses.replace(message, **bad))
    game.server.receive_keys(message)
    with pytest.raises(CryptoError, match="expected a PublicKeys"):
        game.server.receive_keys(object())
    with pytest.raises(CryptoError):
        SecAggClient(True)


def test_default_quantisation_is_the_finest_that_cannot_wrap():
    bits = max_fraction_bits(1.0, 50)
    assert 50 * 2**bits <= 2**31 - 1 < 50 * 2 ** (bits + 1)
    config = new_round(range(1, 51), threshold=26, vector_length=4, clip=1.0)
    assert config.fraction_bits == bits
    worst = sum(quantise(np.full(4, 1.0), config).view(np.int32).astype(np.int64) for _ in range(50))
    assert worst.max() <= 2**31 - 1  # fifty clients at the clip bound still fit
    assert check_config(config).max_summands >= 50


def test_non_finite_updates_are_refused():
    game = Round()
    game.advertise()
    game.share()
    with pytest.raises(CryptoError, match="NaN"):
        game.clients[1].mask_update(game.deliveries[1], np.full(LENGTH, np.nan))
    with pytest.raises(CryptoError, match="parameters"):
        game.clients[2].mask_update(game.deliveries[2], np.zeros(LENGTH + 1))


# --- what the masked upload reveals ------------------------------------------------------------


def test_a_masked_upload_is_indistinguishable_from_uniform():
    length = 1 << 17
    # A maximally structured update: every coordinate the same.
    updates = {cid: np.full(length, 0.5) for cid in (1, 2, 3)}
    config = new_round(updates, threshold=2, vector_length=length, clip=CLIP)
    server = SecAggServer(config)
    clients = {cid: SecAggClient(cid) for cid in config.clients}
    for client in clients.values():
        server.receive_keys(client.advertise_keys(config))
    directory = server.key_directory()
    for client in clients.values():
        server.receive_shares(client.share_keys(directory))
    deliveries = server.share_deliveries()
    uploads = [clients[cid].mask_update(deliveries[cid], updates[cid]).words for cid in clients]
    for words in uploads:
        byte_counts = np.bincount(words.view(np.uint8), minlength=256)
        assert chisquare(byte_counts).pvalue > 1e-6
        top_half_counts = np.bincount((words >> 16).astype(np.int64), minlength=2**16)
        assert chisquare(top_half_counts).pvalue > 1e-6
    # The same test does see the structure of an unmasked quantised update.
    plain = quantise(updates[1], config)
    assert chisquare(np.bincount(plain.view(np.uint8), minlength=256)).pvalue < 1e-6


# --- the server never gets both secrets of a client --------------------------------------------


def test_the_server_never_receives_both_secrets_of_one_client():
    for drop in ({}, {"masked": {2, 5}}, {"shares": {1}, "masked": {7}, "unmask": {4}}):
        outcome = run_in_process(make_updates(), threshold=T, clip=CLIP, drop=drop)
        revealed = outcome.server.revealed_owners()
        assert revealed["self_mask"].isdisjoint(revealed["mask_key"])
        assert revealed["self_mask"] == set(outcome.result.contributors)
        assert revealed["mask_key"] == drop.get("masked", set())


def test_clients_refuse_requests_for_both_secrets_of_a_client():
    game = Round()
    game.advertise()
    game.share()
    game.mask(ids=[1, 2, 3, 4, 5, 6])
    assert game.request.dropped == (7,)
    greedy = dataclasses.replace(game.request, dropped=(6, 7))  # 6 uploaded: its key would unmask x_6
    with pytest.raises(CryptoError, match="both secrets"):
        game.clients[1].unmask(greedy)
    assert game.clients[1].stage == "aborted"
    missing = dataclasses.replace(game.request, dropped=())
    with pytest.raises(CryptoError, match="whether it survived"):
        game.clients[2].unmask(missing)
    game.clients[3].unmask(game.request)
    swapped = dataclasses.replace(game.request, survivors=(1, 2, 3, 4, 5, 7), dropped=(6,))
    with pytest.raises(CryptoError, match="stage 'done'"):  # one unmask request per client, ever
        game.clients[3].unmask(swapped)


def test_inconsistent_unmask_shares_refuse_the_round_instead_of_a_wrong_sum():
    game = Round()
    game.advertise()
    game.share()
    game.mask()
    shares = {cid: game.clients[cid].unmask(game.request) for cid in game.request.survivors}
    bad = bytearray(shares[2].self_mask_shares[5])
    bad[0] ^= 1
    shares[2] = dataclasses.replace(shares[2], self_mask_shares={**shares[2].self_mask_shares, 5: bytes(bad)})
    for message in shares.values():
        game.server.receive_unmask_shares(message)
    with pytest.raises(CryptoError, match="inconsistent"):
        game.server.result()


# --- tampered, replayed, misaddressed and out-of-order messages --------------------------------


def test_a_tampered_share_box_is_rejected():
    game = Round()
    game.advertise()
    game.share()
    delivery = game.deliveries[1]
    box = bytearray(delivery.ciphertexts[2])
    box[20] ^= 0x01
    tampered = dataclasses.replace(delivery, ciphertexts={**delivery.ciphertexts, 2: bytes(box)})
    with pytest.raises(CryptoError, match="failed authentication"):
        game.clients[1].mask_update(tampered, game.updates[1])
    assert game.clients[1].stage == "aborted"


def test_a_box_redirected_to_another_client_or_relabelled_is_rejected():
    game = Round()
    game.advertise()
    game.share()
    delivery = game.deliveries[1]
    box_for_3 = game.sent_shares[2].ciphertexts[3]
    redirected = dataclasses.replace(delivery, ciphertexts={**delivery.ciphertexts, 2: box_for_3})
    with pytest.raises(CryptoError, match="failed authentication"):
        game.clients[1].mask_update(redirected, game.updates[1])
    swapped = dataclasses.replace(game.deliveries[4], ciphertexts={**game.deliveries[4].ciphertexts,
                                                                    2: game.deliveries[4].ciphertexts[3]})
    with pytest.raises(CryptoError, match="failed authentication"):
        game.clients[4].mask_update(swapped, game.updates[4])


def test_messages_from_another_round_are_rejected():
    old, new = Round(), Round()
    old.advertise()
    old.share()
    new.advertise()
    new.share()
    # Replayed client messages reach the new round's server.
    with pytest.raises(CryptoError, match="another round"):
        new.server.receive_masked_input(old.clients[1].mask_update(old.deliveries[1], old.updates[1]))
    # An old round's delivery reaches a client of the new round, as it was or relabelled.
    with pytest.raises(CryptoError, match="another round"):
        new.clients[2].mask_update(old.deliveries[2], new.updates[2])
    new = Round()
    new.advertise()
    new.share()
    relabelled = dataclasses.replace(old.deliveries[2], round_id=new.config.round_id)
    with pytest.raises(CryptoError, match="failed authentication"):
        new.clients[2].mask_update(relabelled, new.updates[2])
    old_box = dataclasses.replace(new.deliveries[3], ciphertexts={**new.deliveries[3].ciphertexts,
                                                                  1: old.deliveries[3].ciphertexts[1]})
    with pytest.raises(CryptoError, match="failed authentication"):
        new.clients[3].mask_update(old_box, new.updates[3])


def test_replayed_and_late_client_messages_are_rejected_and_the_round_goes_on():
    game = Round()
    keys = {cid: client.advertise_keys(game.config) for cid, client in game.clients.items()}
    for message in keys.values():
        game.server.receive_keys(message)
    with pytest.raises(CryptoError, match="replay"):
        game.server.receive_keys(keys[1])
    game.directory = game.server.key_directory()
    with pytest.raises(CryptoError, match="too late"):
        game.server.receive_keys(keys[1])
    game.share()
    with pytest.raises(CryptoError, match="too late"):
        game.server.receive_shares(game.sent_shares[2])
    game.masked = {cid: game.clients[cid].mask_update(game.deliveries[cid], game.updates[cid])
                   for cid in (1, 2, 3, 4, 5)}
    for message in game.masked.values():
        game.server.receive_masked_input(message)
    with pytest.raises(CryptoError, match="replay"):
        game.server.receive_masked_input(game.masked[1])
    forged = messages.MaskedInput(round_id=game.config.round_id, sender=99, words=game.masked[1].words)
    with pytest.raises(CryptoError, match="client 99 may not"):
        game.server.receive_masked_input(forged)
    short = messages.MaskedInput(round_id=game.config.round_id, sender=6, words=np.zeros(3, np.uint32))
    with pytest.raises(CryptoError, match="not 64 uint32 words"):
        game.server.receive_masked_input(short)
    game.request = game.server.unmask_request()
    late = game.clients[6].mask_update(game.deliveries[6], game.updates[6])
    with pytest.raises(CryptoError, match="too late"):
        game.server.receive_masked_input(late)
    result = game.unmask()
    assert np.array_equal(result.words, expected_words(game.updates, game.config, [1, 2, 3, 4, 5]))


def test_clients_refuse_out_of_order_or_repeated_steps():
    game = Round()
    game.advertise()
    with pytest.raises(CryptoError, match="stage 'advertised'"):
        game.clients[1].advertise_keys(game.config)
    assert game.clients[1].stage == "aborted"
    with pytest.raises(CryptoError, match="stage 'aborted'"):
        game.clients[1].share_keys(game.directory)
    with pytest.raises(CryptoError, match="stage 'new'"):
        SecAggClient(1).share_keys(game.directory)
    with pytest.raises(CryptoError, match="not a participant"):
        SecAggClient(99).advertise_keys(game.config)


def test_clients_refuse_a_key_directory_that_is_not_theirs():
    game = Round()
    game.advertise()
    impostor = SecAggClient(1).advertise_keys(game.config)
    swapped = dataclasses.replace(game.directory, encryption_keys={**game.directory.encryption_keys,
                                                                   1: impostor.encryption_key})
    with pytest.raises(CryptoError, match="own keys"):
        game.clients[1].share_keys(swapped)
    repeated = dataclasses.replace(game.directory, mask_keys={**game.directory.mask_keys,
                                                              3: game.directory.mask_keys[4]})
    with pytest.raises(CryptoError, match="repeats a public key"):
        game.clients[2].share_keys(repeated)
    outsider = dataclasses.replace(game.directory, mask_keys={**game.directory.mask_keys, 42: bytes(32)},
                                   encryption_keys={**game.directory.encryption_keys, 42: bytes(range(32))})
    with pytest.raises(CryptoError, match="not participants"):
        game.clients[3].share_keys(outsider)


def test_server_refuses_malformed_share_uploads():
    game = Round()
    game.advertise()
    upload = game.clients[1].share_keys(game.directory)
    missing = dataclasses.replace(upload, ciphertexts=dict(list(upload.ciphertexts.items())[1:]))
    with pytest.raises(CryptoError, match="one bundle to each"):
        game.server.receive_shares(missing)
    short = dataclasses.replace(upload, ciphertexts={k: v[:-1] for k, v in upload.ciphertexts.items()})
    with pytest.raises(CryptoError, match="wrong length"):
        game.server.receive_shares(short)
    game.server.receive_shares(upload)  # the genuine message is still accepted


# --- SecAgg+: sparse neighbourhoods ------------------------------------------------------------


def test_the_sparse_graph_is_regular_symmetric_and_drawn_from_the_round():
    config = new_round(range(1, 21), threshold=4, vector_length=4, clip=CLIP, neighbours=6)
    graph = neighbourhoods(config)
    assert all(len(peers) == 6 and cid not in peers for cid, peers in graph.items())
    assert all(cid in graph[peer] for cid, peers in graph.items() for peer in peers)
    assert neighbourhoods(config) == graph
    assert neighbourhoods(dataclasses.replace(config, round_id=bytes(16))) != graph
    complete = neighbourhoods(dataclasses.replace(config, neighbours=0, threshold=11))
    assert all(peers == set(range(1, 21)) - {cid} for cid, peers in complete.items())


@pytest.mark.parametrize("neighbours, threshold, message", [
    (3, 3, "even"), (1, 2, "even"), (10, 6, "even"), (6, 3, "more than half of the 7"), (6, 8, "at most all"),
])
def test_bad_sparse_graphs_are_refused(neighbours, threshold, message):
    with pytest.raises(CryptoError, match=message):
        new_round(range(1, 11), threshold=threshold, vector_length=4, clip=CLIP, neighbours=neighbours)


def test_secagg_plus_clients_exchange_shares_and_masks_with_their_neighbours_only():
    game = Round(n=12, threshold=4, neighbours=6)
    game.advertise()
    game.share()
    graph = neighbourhoods(game.config)
    assert all(set(message.ciphertexts) == graph[cid] for cid, message in game.sent_shares.items())
    assert all(set(delivery.ciphertexts) == graph[cid] for cid, delivery in game.deliveries.items())
    game.mask()
    assert all(len(message.self_mask_shares) == 7 for message in (game.clients[c].unmask(game.request)
                                                                  for c in game.request.survivors[:1]))


@pytest.mark.parametrize("step", DROP_STEPS)
def test_secagg_plus_exact_sum_with_dropouts_at_each_step(step):
    updates = make_updates(n=12, seed=3)
    dropped = {2, 7, 11}  # each neighbourhood of 7 keeps at least 4 = threshold
    outcome = run_in_process(updates, threshold=4, clip=CLIP, neighbours=6, drop={step: dropped}, over_wire=True)
    assert_exact(outcome, updates, set(updates) if step == "unmask" else set(updates) - dropped)
    revealed = outcome.server.revealed_owners()
    assert revealed["self_mask"].isdisjoint(revealed["mask_key"])


def test_secagg_plus_refuses_when_one_neighbourhood_falls_below_threshold():
    game = Round(n=12, threshold=3, neighbours=4)
    game.advertise()
    game.share()
    victim = 5
    gone = {victim, *sorted(neighbourhoods(game.config)[victim])[:2]}  # 2 of its 4 neighbours stay
    game.mask(ids=[cid for cid in game.clients if cid not in gone])
    assert len(game.request.survivors) == 9  # well above the threshold overall
    with pytest.raises(CryptoError, match=r"only [0-2] clients returned shares of client \d+"):
        game.unmask()
    assert game.server.stage == "refused"


# --- the byte form -----------------------------------------------------------------------------


def test_every_message_survives_its_byte_form_and_garbage_is_refused():
    game = Round()
    game.advertise()
    game.share()
    game.mask()
    game.unmask()
    sent = [game.config, game.directory, game.deliveries[1], game.request, game.sent_shares[1],
            game.masked[2], game.unmask_shares[3], game.clients[4]._config]
    for message in sent:
        data = messages.encode(message)
        again = messages.decode(data)
        assert type(again) is type(message) and messages.encode(again) == data
        for broken in (data[:-1], data + b"\x00", b"XXXX" + data[4:], data[:4] + b"\xff" + data[5:]):
            with pytest.raises(CryptoError):
                messages.decode(broken)
    assert np.array_equal(messages.decode(messages.encode(game.masked[2])).words, game.masked[2].words)
    with pytest.raises(CryptoError, match="cannot encode"):
        messages.encode("hello")
    with pytest.raises(CryptoError, match="uint32"):
        messages.encode(dataclasses.replace(game.masked[2], words=np.zeros(3, np.int64)))


def test_key_agreement_with_a_low_order_point_is_refused():
    with pytest.raises(CryptoError, match="key agreement between clients 1 and 2 failed"):
        secagg_keys.agreed_key(secagg_keys.new_private_key(), bytes(32), purpose=secagg_keys.PURPOSE_PAIRWISE_MASK,
                               round_id=bytes(16), first=1, second=2)


def test_the_benchmark_script_runs_and_checks_its_results():
    script = Path(__file__).resolve().parents[2] / "benchmarks" / "secagg.py"
    run = subprocess.run([sys.executable, str(script), "--quick", "--json"], capture_output=True, text=True,
                         timeout=300)
    assert run.returncode == 0, run.stderr
    result = json.loads(run.stdout)
    assert {row["graph"].split()[0] for row in result["aggregation"]} == {"complete", "sparse"}
    assert all(4.0 < row["upload_bytes_per_param"] < 4.5 for row in result["aggregation"])
    assert [row["dropouts"] for row in result["dropouts"] if row["graph"] == "complete"] == [0, 2, 4]
    assert all(row["ours_batched_recover_s_per_secret"] > 0 for row in result["shamir"])
