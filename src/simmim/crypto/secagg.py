"""Secure aggregation (Bonawitz et al., CCS 2017): the server learns the sum of the clients' updates only.

Client and server are explicit state machines; each protocol step is one method that takes one message
(`secagg_messages`) and returns the next, so the same objects run in-process (`secagg_local`) or over
any transport that carries the messages' bytes (`secagg_messages.encode` / `decode`).

    server                                   client u
    new_round(...) -> RoundConfig  ------->  advertise_keys(config) -> PublicKeys
    receive_keys(...); key_directory() --->  share_keys(directory) -> EncryptedShares
    receive_shares(...); share_deliveries()  mask_update(delivery, update) -> MaskedInput
    receive_masked_input(...); unmask_request() -> unmask(request) -> UnmaskShares
    receive_unmask_shares(...); result() -> AggregateResult (the sum, as 32-bit words)

Client u quantises its update to signed 32-bit words x_u (each coordinate clipped to [-clip, clip] and
rounded to a multiple of 2^-fraction_bits), and uploads

    y_u = x_u + PRG(b_u) + sum_{v > u} PRG(s_uv) - sum_{v < u} PRG(s_uv)   (mod 2^32)

where b_u is a fresh 32-byte self-mask seed and s_uv is the key that u and v agree by X25519 on their
mask keys (HKDF-bound to the round and the pair); PRG is AES-256-CTR (`prg`). Before that, u
Shamir-shares b_u and its mask private key with threshold t among the clients that advertised keys,
and sends each of them its shares in an AES-GCM box through the server (`secagg_keys`). Pairwise
masks cancel in the sum of everyone who uploaded; for each survivor the server recovers b_u from t
shares and removes PRG(b_u); for each client that shared but did not upload it recovers the mask key
and removes that client's pairwise masks with the survivors. Its cost is one PRG expansion per
survivor plus one per (dropped client, survivor) pair: linear in the number of dropouts.

Guarantees (honest-but-curious server, up to n - t dropouts at any steps):
  * The sum is exact (mod 2^32, and exactly the sum of the quantised updates while
    clients * clip * 2^fraction_bits < 2^31, which `new_round` and `check_config` enforce).
  * Each client reveals, for every other client, either the self-mask share or the mask-key share,
    never both, and answers one unmask request only; with t > n/2 (enforced) no two disjoint groups
    of clients can each hand over t shares, so even a server that sends different requests to
    different clients cannot recover both secrets of one client.
  * Fewer than t clients left at any step -> the round is refused with CryptoError; nothing is unmasked.
  * A message from another round, a repeated message, a message out of order, an altered share box or
    a malformed message is refused with CryptoError. A client that refuses a message aborts the round
    on its side; the server refuses only the message (the round continues without it).
What a malicious server could still do is in docs/secure_aggregation.md.
"""

from __future__ import annotations

import functools
import json
import math
import numbers
import operator
import secrets
from collections.abc import Iterable
from dataclasses import dataclass

import numpy as np

from simmim.crypto import secagg_keys as keys
from simmim.crypto import shamir
from simmim.crypto.additive import RingEncoding
from simmim.crypto.prg import SEED_BYTES, expand_seed, random_seed
from simmim.crypto.secagg_graph import check_graph, neighbourhoods
from simmim.crypto.secagg_messages import (
    EncryptedShares,
    KeyDirectory,
    MaskedInput,
    PublicKeys,
    RoundConfig,
    ShareDelivery,
    UnmaskRequest,
    UnmaskShares,
    decode,
    encode,
)
from simmim.errors import CryptoError

ROUND_ID_BYTES = 16
MAX_CLIENT_ID = 2**31 - 1
WORD_BITS = 32
# A share bundle holds one share of the self-mask seed and one of the mask private key, each 5 elements.
SECRET_ELEMENTS = -(-SEED_BYTES // shamir.BYTES_PER_ELEMENT)
SHARE_BYTES = SECRET_ELEMENTS * 8
BUNDLE_BYTES = 2 * SHARE_BYTES
BOX_BYTES = keys.NONCE_BYTES + BUNDLE_BYTES + keys.TAG_BYTES
_STATE_VERSION = 1
_CLIENT_STAGES = ("new", "advertised", "shared", "masked", "done", "aborted")


@dataclass(frozen=True, eq=False)
class AggregateResult:
    """What the server learns: the sum of the survivors' quantised updates, as uint32 words.

    Attributes:
        words: The sum mod 2^32; `dequantise(words, config)` gives the float sum.
        contributors: The clients whose updates are in the sum (U3).
        config: The round it came from.
    """

    words: np.ndarray
    contributors: tuple[int, ...]
    config: RoundConfig

    def dequantise(self) -> np.ndarray:
        """The float64 sum of the contributors' clipped updates."""
        return dequantise(self.words, self.config)


def max_fraction_bits(clip: float, clients: int) -> int:
    """The finest quantisation for which a sum of `clients` updates clipped to `clip` cannot wrap."""
    if not (math.isfinite(clip) and clip > 0) or clients < 1:
        raise CryptoError(f"need a positive clip and at least one client, got clip={clip}, clients={clients}")
    bits = 0
    while bits < WORD_BITS - 2 and clients * math.floor(clip * 2 ** (bits + 1) + 0.5) <= 2 ** (WORD_BITS - 1) - 1:
        bits += 1
    if clients * math.floor(clip * 2**bits + 0.5) > 2 ** (WORD_BITS - 1) - 1:
        raise CryptoError(f"{clients} updates clipped to {clip} do not fit 32-bit words; lower clip")
    return bits


def new_round(clients: Iterable[int], *, threshold: int, vector_length: int, clip: float,
              fraction_bits: int | None = None, neighbours: int = 0) -> RoundConfig:
    """A checked configuration for a new round with a fresh random round id.

    Args:
        clients: The participants' ids, distinct integers in [1, 2^31).
        threshold: Shares needed to recover a client's secrets: more than half of the clients holding them
            (all clients, or a client's neighbours and itself), and at least that many clients at every step.
        vector_length: Parameters per update.
        clip: Coordinates are clipped to [-clip, clip].
        fraction_bits: Quantisation step 2^-fraction_bits; by default the finest that cannot overflow.
        neighbours: 0 for the complete graph (SecAgg); an even k for a k-regular graph (SecAgg+, `secagg_graph`).
    """
    try:
        ids = tuple(sorted(operator.index(c) for c in clients))
        threshold, vector_length = operator.index(threshold), operator.index(vector_length)
        neighbours = operator.index(neighbours)
    except TypeError:
        raise CryptoError("client ids, threshold, vector_length and neighbours must be integers") from None
    if not isinstance(clip, numbers.Real) or isinstance(clip, bool):
        raise CryptoError(f"clip must be a number, got {clip!r}")
    if fraction_bits is None:
        fraction_bits = max_fraction_bits(clip, len(ids))
    config = RoundConfig(round_id=secrets.token_bytes(ROUND_ID_BYTES), clients=ids, threshold=threshold,
                         vector_length=vector_length, clip=float(clip), fraction_bits=fraction_bits,
                         neighbours=neighbours)
    check_config(config)
    return config


def check_config(config: RoundConfig) -> RingEncoding:
    """The quantisation of a valid configuration; CryptoError naming the first problem otherwise."""
    if not isinstance(config, RoundConfig):
        raise CryptoError(f"expected a RoundConfig, got {type(config).__name__}")
    if not isinstance(config.clients, tuple):
        raise CryptoError("the clients of a round are a tuple of ids")
    numbers = (config.threshold, config.vector_length, config.fraction_bits, config.neighbours, *config.clients)
    if not all(isinstance(v, int) and not isinstance(v, bool) for v in numbers):
        raise CryptoError("client ids, threshold, vector_length, fraction_bits and neighbours must be Python ints")
    if not isinstance(config.clip, float | int) or isinstance(config.clip, bool):
        raise CryptoError(f"clip must be a number, got {config.clip!r}")
    if not isinstance(config.round_id, bytes) or len(config.round_id) != ROUND_ID_BYTES:
        raise CryptoError(f"a round id is {ROUND_ID_BYTES} bytes")
    ids = config.clients
    if len(ids) < 2:
        raise CryptoError(f"secure aggregation needs at least 2 clients, got {len(ids)}")
    if list(ids) != sorted(set(ids)) or not all(1 <= c <= MAX_CLIENT_ID for c in ids):
        raise CryptoError("client ids must be distinct, sorted integers in [1, 2^31)")
    check_graph(len(ids), config.neighbours, config.threshold)
    if config.vector_length < 1:
        raise CryptoError(f"vector_length must be at least 1, got {config.vector_length}")
    encoding = RingEncoding(word_bits=WORD_BITS, fraction_bits=config.fraction_bits, max_abs=config.clip)
    if encoding.max_summands < len(ids):
        raise CryptoError(f"a sum of {len(ids)} updates clipped to {config.clip} with {config.fraction_bits} "
                          f"fraction bits could wrap around 2^32; use at most "
                          f"{max_fraction_bits(config.clip, len(ids))} fraction bits")
    return encoding


def quantise(update: np.ndarray, config: RoundConfig) -> np.ndarray:
    """The update as uint32 words: flattened, clipped to [-clip, clip], rounded to 2^-fraction_bits."""
    encoding = check_config(config)
    flat = np.asarray(update).reshape(-1)
    if flat.size != config.vector_length:
        raise CryptoError(f"the update has {flat.size} parameters, the round expects {config.vector_length}")
    return encoding.encode(encoding.clip(flat))


def dequantise(words: np.ndarray, config: RoundConfig) -> np.ndarray:
    """float64 values of a sum of quantised updates (client side, or whoever receives the sum)."""
    return check_config(config).decode(words)


class SecAggClient:
    """One client's side of one round. Call the four steps once each, in order.

    Any refused message (CryptoError) aborts the round for this client: later calls are refused too,
    so a server cannot probe a client with variations of a message.
    """

    def __init__(self, client_id: int):
        if not isinstance(client_id, int) or isinstance(client_id, bool) or not 1 <= client_id <= MAX_CLIENT_ID:
            raise CryptoError(f"client ids are integers in [1, 2^31), got {client_id!r}")
        self.client_id = client_id
        self._stage = "new"
        self._config: RoundConfig | None = None

    @property
    def stage(self) -> str:
        """'new', 'advertised', 'shared', 'masked', 'done' or 'aborted'."""
        return self._stage

    def advertise_keys(self, config: RoundConfig) -> PublicKeys:
        """Step 1: accept the round's configuration and make this round's two key pairs."""
        with self._step("new", "advertised"):
            check_config(config)
            if self.client_id not in config.clients:
                raise CryptoError(f"client {self.client_id} is not a participant of this round")
            self._config = config
            self._peers = neighbourhoods(config)[self.client_id]
            self._encryption_key = keys.new_private_key()
            self._mask_key = keys.new_private_key()
            return PublicKeys(round_id=config.round_id, sender=self.client_id,
                              encryption_key=keys.public_bytes(self._encryption_key),
                              mask_key=keys.public_bytes(self._mask_key))

    def share_keys(self, directory: KeyDirectory) -> EncryptedShares:
        """Step 2: Shamir-share the self-mask seed and the mask key among the neighbours in U1 and itself."""
        with self._step("advertised", "shared"):
            config = self._check_round(directory)
            me = self.client_id
            if not isinstance(directory, KeyDirectory) or set(directory.encryption_keys) != set(directory.mask_keys):
                raise CryptoError("the key directory must list both keys of every client")
            if not set(directory.encryption_keys) <= set(config.clients):
                raise CryptoError("the key directory lists clients that are not participants of this round")
            members = sorted((set(directory.encryption_keys) & self._peers) | {me})
            if (directory.encryption_keys.get(me) != keys.public_bytes(self._encryption_key)
                    or directory.mask_keys.get(me) != keys.public_bytes(self._mask_key)):
                raise CryptoError(f"the key directory does not hold client {me}'s own keys; refused")
            all_keys = list(directory.encryption_keys.values()) + list(directory.mask_keys.values())
            if len(set(all_keys)) != len(all_keys):
                raise CryptoError("the key directory repeats a public key; refused")
            for key in all_keys:
                keys.check_public_key(key)
            _require_threshold(len(members), config, "of this client's group advertised keys")
            self._mask_keys = dict(directory.mask_keys)
            self._self_mask_seed = random_seed()
            secret = np.concatenate([shamir.bytes_to_elements(self._self_mask_seed),
                                     shamir.bytes_to_elements(keys.private_bytes(self._mask_key))])
            bundles = shamir.split(secret, config.threshold, members)
            self._held = {me: bundles[members.index(me)]}
            boxes = {}
            for row, member in zip(bundles, members):
                if member != me:
                    box_key = keys.agreed_key(self._encryption_key, directory.encryption_keys[member],
                                              purpose=keys.PURPOSE_SHARE_BOX, round_id=config.round_id,
                                              first=me, second=member)
                    boxes[member] = keys.seal(box_key, row.astype("<u8").tobytes(), round_id=config.round_id,
                                              sender=me, recipient=member)
            self._encryption_keys = dict(directory.encryption_keys)
            return EncryptedShares(round_id=config.round_id, sender=me, ciphertexts=boxes)

    def mask_update(self, delivery: ShareDelivery, update: np.ndarray) -> MaskedInput:
        """Step 3: open the bundles from U2, then upload the masked, quantised update."""
        with self._step("shared", "masked"):
            config = self._check_round(delivery)
            me = self.client_id
            if not isinstance(delivery, ShareDelivery) or delivery.recipient != me:
                raise CryptoError(f"a share delivery for client {getattr(delivery, 'recipient', None)} reached "
                                  f"client {me}; refused")
            senders = set(delivery.ciphertexts)
            if not senders <= set(self._encryption_keys) & self._peers:
                raise CryptoError("the share delivery holds bundles from clients that are not this client's "
                                  "neighbours in the key directory; refused")
            _require_threshold(len(senders) + 1, config, "of this client's group shared their keys")
            for sender, box in delivery.ciphertexts.items():
                box_key = keys.agreed_key(self._encryption_key, self._encryption_keys[sender],
                                          purpose=keys.PURPOSE_SHARE_BOX, round_id=config.round_id,
                                          first=sender, second=me)
                bundle = keys.open_sealed(box_key, box, round_id=config.round_id, sender=sender, recipient=me)
                if len(bundle) != BUNDLE_BYTES:
                    raise CryptoError(f"the share bundle from client {sender} has the wrong length")
                self._held[sender] = np.frombuffer(bundle, dtype="<u8").astype(np.uint64)
            self._u2 = frozenset(senders | {me})
            words = quantise(update, config)
            words += expand_seed(self._self_mask_seed, config.vector_length)
            for peer in sorted(senders):
                seed = keys.agreed_key(self._mask_key, self._mask_keys[peer], purpose=keys.PURPOSE_PAIRWISE_MASK,
                                       round_id=config.round_id, first=min(me, peer), second=max(me, peer))
                mask = expand_seed(seed, config.vector_length)
                if me < peer:
                    words += mask
                else:
                    words -= mask
            return MaskedInput(round_id=config.round_id, sender=me, words=words)

    def unmask(self, request: UnmaskRequest) -> UnmaskShares:
        """Step 4: reveal self-mask shares of survivors and mask-key shares of dropped clients, never both."""
        with self._step("masked", "done"):
            config = self._check_round(request)
            me = self.client_id
            survivors, dropped = set(request.survivors), set(request.dropped)
            if len(survivors) != len(request.survivors) or len(dropped) != len(request.dropped):
                raise CryptoError("the unmask request repeats a client; refused")
            if survivors & dropped:
                raise CryptoError(f"the unmask request asks for both secrets of clients {sorted(survivors & dropped)}"
                                  "; refused")
            if not self._u2 <= survivors | dropped or not survivors | dropped <= set(config.clients):
                raise CryptoError("the unmask request does not say of every client that shared keys whether it "
                                  "survived; refused")
            if me not in survivors:
                raise CryptoError(f"the unmask request lists client {me} as dropped; refused")
            _require_threshold(len(survivors), config, "uploaded masked updates")
            self_mask = {owner: self._held[owner][:SECRET_ELEMENTS].astype("<u8").tobytes()
                         for owner in survivors & self._u2}
            mask_key = {owner: self._held[owner][SECRET_ELEMENTS:].astype("<u8").tobytes()
                        for owner in dropped & self._u2}
            return UnmaskShares(round_id=config.round_id, sender=me, self_mask_shares=self_mask,
                                mask_key_shares=mask_key)

    def export_state(self) -> bytes:
        """This client's whole state, secrets included, as bytes; `SecAggClient.restore` reads it back.

        For a client whose steps run in separate processes (the Flower app keeps it in the client's
        own SuperNode between messages). It holds the round's private keys and seeds: keep it only
        where the client's secrets may be.
        """
        state: dict = {"version": _STATE_VERSION, "client": self.client_id, "stage": self._stage}
        if self._config is not None:
            state["config"] = encode(self._config).hex()
            state["peers"] = sorted(self._peers)
        for name in ("_encryption_key", "_mask_key"):
            if name in self.__dict__:
                state[name] = keys.private_bytes(self.__dict__[name]).hex()
        if "_self_mask_seed" in self.__dict__:
            state["_self_mask_seed"] = self._self_mask_seed.hex()
        for name in ("_mask_keys", "_encryption_keys"):
            if name in self.__dict__:
                state[name] = {str(k): v.hex() for k, v in self.__dict__[name].items()}
        if "_held" in self.__dict__:
            state["_held"] = {str(k): v.astype("<u8").tobytes().hex() for k, v in self._held.items()}
        if "_u2" in self.__dict__:
            state["_u2"] = sorted(self._u2)
        return json.dumps(state, sort_keys=True).encode()

    @classmethod
    def restore(cls, data: bytes) -> SecAggClient:
        """The client `export_state` wrote; CryptoError for anything else."""
        try:
            state = json.loads(data)
            if state.get("version") != _STATE_VERSION:
                raise CryptoError(f"secure-aggregation client state of version {state.get('version')!r}, "
                                  f"expected {_STATE_VERSION}")
            client = cls(state["client"])
            client._stage = state["stage"]
            if "config" in state:
                config = decode(bytes.fromhex(state["config"]))
                if not isinstance(config, RoundConfig):
                    raise CryptoError("the saved client state holds no round configuration")
                client._config = config
                client._peers = set(state["peers"])
            for name in ("_encryption_key", "_mask_key"):
                if name in state:
                    client.__dict__[name] = keys.private_key_from_bytes(bytes.fromhex(state[name]))
            if "_self_mask_seed" in state:
                client._self_mask_seed = bytes.fromhex(state["_self_mask_seed"])
            for name in ("_mask_keys", "_encryption_keys"):
                if name in state:
                    client.__dict__[name] = {int(k): bytes.fromhex(v) for k, v in state[name].items()}
            if "_held" in state:
                client._held = {int(k): np.frombuffer(bytes.fromhex(v), dtype="<u8").astype(np.uint64)
                                for k, v in state["_held"].items()}
            if "_u2" in state:
                client._u2 = frozenset(state["_u2"])
        except CryptoError:
            raise
        except (ValueError, KeyError, TypeError, AttributeError) as error:
            raise CryptoError(f"unreadable secure-aggregation client state ({type(error).__name__}: {error})") from None
        if client._stage not in _CLIENT_STAGES:
            raise CryptoError(f"unknown secure-aggregation client stage {client._stage!r}")
        return client

    def _check_round(self, message) -> RoundConfig:
        config = self._config
        if getattr(message, "round_id", None) != config.round_id:
            raise CryptoError(f"client {self.client_id} got a message from another round; refused")
        return config

    def _step(self, expected: str, following: str):
        return _Step(self, expected, following)

    def _forget_secrets(self):
        for name in ("_encryption_key", "_mask_key", "_self_mask_seed", "_held"):
            self.__dict__.pop(name, None)


class _Step:
    """Runs one client step: checks the stage, and on CryptoError aborts the client's round."""

    def __init__(self, client: SecAggClient, expected: str, following: str):
        self.client, self.expected, self.following = client, expected, following

    def __enter__(self):
        if self.client._stage != self.expected:
            stage = self.client._stage
            self.client._stage = "aborted"
            self.client._forget_secrets()
            raise CryptoError(f"client {self.client.client_id} is at stage '{stage}', not '{self.expected}': "
                              "messages must come once each, in order; round aborted")

    def __exit__(self, kind, error, traceback):
        if error is None:
            self.client._stage = self.following
            if self.following == "done":
                self.client._forget_secrets()
        else:
            self.client._stage = "aborted"
            self.client._forget_secrets()
            if not isinstance(error, CryptoError):
                raise CryptoError(f"client {self.client.client_id}: malformed message ({error}); "
                                  "round aborted") from None
        return False


def _refuse_malformed(method):
    """Server steps: a message with fields of the wrong types is refused with CryptoError, not a traceback."""

    @functools.wraps(method)
    def guarded(self, *arguments):
        try:
            return method(self, *arguments)
        except (TypeError, ValueError, AttributeError, KeyError, IndexError) as error:
            raise CryptoError(f"malformed message ({type(error).__name__}: {error}); refused") from None

    return guarded


class SecAggServer:
    """The server's side of one round: collects each step's messages, then closes the step.

    `receive_*` refuses a bad message with CryptoError and keeps the round going without it; closing
    a step (`key_directory`, `share_deliveries`, `unmask_request`, `result`) refuses the round if fewer
    than `threshold` clients answered. Messages for a step that is already closed are refused.
    """

    def __init__(self, config: RoundConfig):
        check_config(config)
        self.config = config
        self._peers = neighbourhoods(config)
        self._stage = "keys"
        self._encryption_keys: dict[int, bytes] = {}
        self._mask_keys: dict[int, bytes] = {}
        self._boxes: dict[int, dict[int, bytes]] = {}
        self._sum = np.zeros(config.vector_length, dtype=np.uint32)
        self._uploaded: list[int] = []
        self._self_mask_shares: dict[int, dict[int, np.ndarray]] = {}  # holder -> owner -> share
        self._mask_key_shares: dict[int, dict[int, np.ndarray]] = {}

    @property
    def stage(self) -> str:
        """'keys', 'shares', 'masked', 'unmask', 'done' or 'refused'."""
        return self._stage

    def revealed_owners(self) -> dict[str, set[int]]:
        """Whose secrets the server has received shares of, by kind ('self_mask', 'mask_key')."""
        return {"self_mask": {o for shares in self._self_mask_shares.values() for o in shares},
                "mask_key": {o for shares in self._mask_key_shares.values() for o in shares}}

    @_refuse_malformed
    def receive_keys(self, message: PublicKeys) -> None:
        """Step 1 in: a client's public keys."""
        self._accept(message, PublicKeys, "keys", self.config.clients, self._encryption_keys)
        keys.check_public_key(message.encryption_key)
        keys.check_public_key(message.mask_key)
        self._encryption_keys[message.sender] = message.encryption_key
        self._mask_keys[message.sender] = message.mask_key

    def key_directory(self) -> KeyDirectory:
        """Step 1 out: the keys of U1, for every client in U1."""
        self._close("keys", "shares", len(self._encryption_keys), "advertised keys")
        return KeyDirectory(round_id=self.config.round_id, encryption_keys=dict(self._encryption_keys),
                            mask_keys=dict(self._mask_keys))

    @_refuse_malformed
    def receive_shares(self, message: EncryptedShares) -> None:
        """Step 2 in: a client's sealed share bundles, one for each of its neighbours in U1."""
        self._accept(message, EncryptedShares, "shares", self._encryption_keys, self._boxes)
        if set(message.ciphertexts) != set(self._encryption_keys) & self._peers[message.sender]:
            raise CryptoError(f"client {message.sender} did not address one bundle to each other client; refused")
        if any(len(box) != BOX_BYTES for box in message.ciphertexts.values()):
            raise CryptoError(f"a share box from client {message.sender} has the wrong length; refused")
        self._boxes[message.sender] = dict(message.ciphertexts)

    def share_deliveries(self) -> dict[int, ShareDelivery]:
        """Step 2 out: for each client in U2, the bundles the other members of U2 addressed to it."""
        self._close("shares", "masked", len(self._boxes), "shared their keys")
        return {recipient: ShareDelivery(round_id=self.config.round_id, recipient=recipient,
                                         ciphertexts={sender: boxes[recipient] for sender, boxes in self._boxes.items()
                                                      if recipient in boxes})
                for recipient in sorted(self._boxes)}

    @_refuse_malformed
    def receive_masked_input(self, message: MaskedInput) -> None:
        """Step 3 in: a client's masked update, added to the running sum at once (memory O(vector))."""
        self._accept(message, MaskedInput, "masked", self._boxes, self._uploaded)
        words = np.asarray(message.words)
        if words.shape != (self.config.vector_length,) or words.dtype.kind != "u" or words.dtype.itemsize != 4:
            raise CryptoError(f"the masked update of client {message.sender} is not {self.config.vector_length} "
                              "uint32 words; refused")
        self._sum += words
        self._uploaded.append(message.sender)

    def unmask_request(self) -> UnmaskRequest:
        """Step 3 out: the survivors U3 and the dropped U2 - U3, the same for every client."""
        self._close("masked", "unmask", len(self._uploaded), "uploaded masked updates")
        survivors = tuple(sorted(self._uploaded))
        self._request = UnmaskRequest(round_id=self.config.round_id, survivors=survivors,
                                      dropped=tuple(sorted(set(self._boxes) - set(survivors))))
        return self._request

    @_refuse_malformed
    def receive_unmask_shares(self, message: UnmaskShares) -> None:
        """Step 4 in: a survivor's shares, exactly one kind per owner, for the owners in its group."""
        self._accept(message, UnmaskShares, "unmask", self._request.survivors, self._self_mask_shares)
        group = (self._peers[message.sender] & set(self._boxes)) | {message.sender}
        if (set(message.self_mask_shares) != group & set(self._request.survivors)
                or set(message.mask_key_shares) != group & set(self._request.dropped)):
            raise CryptoError(f"client {message.sender} did not answer the unmask request as asked; refused")
        self._self_mask_shares[message.sender] = _share_elements(message.self_mask_shares, message.sender)
        self._mask_key_shares[message.sender] = _share_elements(message.mask_key_shares, message.sender)

    def result(self) -> AggregateResult:
        """Step 4 out: recover the self-mask seeds of U3 and the mask keys of the dropped, unmask the sum."""
        self._close("unmask", "done", len(self._self_mask_shares), "sent unmask shares")
        config, request = self.config, self._request
        total = self._sum.copy()
        for secret in self._recover(self._self_mask_shares, request.survivors).values():
            total -= expand_seed(secret, config.vector_length)
        for owner, secret in self._recover(self._mask_key_shares, request.dropped).items():
            mask_key = keys.private_key_from_bytes(secret)
            for survivor in sorted(self._peers[owner] & set(request.survivors)):
                seed = keys.agreed_key(mask_key, self._mask_keys[survivor], purpose=keys.PURPOSE_PAIRWISE_MASK,
                                       round_id=config.round_id, first=min(owner, survivor),
                                       second=max(owner, survivor))
                mask = expand_seed(seed, config.vector_length)
                if survivor < owner:  # the survivor added this mask; take it out
                    total -= mask
                else:
                    total += mask
        return AggregateResult(words=total, contributors=request.survivors, config=config)

    def _recover(self, shares: dict[int, dict[int, np.ndarray]], owners: tuple[int, ...]) -> dict[int, bytes]:
        """Every owner's 32-byte secret from all shares received; one interpolation per set of holders.

        With the complete graph every owner has the same holders, so all secrets come from one
        interpolation; with a sparse graph, owners are grouped by their holders.
        """
        by_holders: dict[tuple[int, ...], list[int]] = {}
        for owner in owners:
            holders = tuple(holder for holder in sorted(shares) if owner in shares[holder])
            if len(holders) < self.config.threshold:
                self._stage = "refused"
                raise CryptoError(f"secure aggregation refused: only {len(holders)} clients returned shares of "
                                  f"client {owner}'s secret, the threshold is {self.config.threshold}")
            by_holders.setdefault(holders, []).append(owner)
        secrets_by_owner = {}
        for holders, group in by_holders.items():
            stacked = np.stack([np.concatenate([shares[holder][owner] for owner in group]) for holder in holders])
            try:
                elements = shamir.recover(holders, stacked, self.config.threshold).reshape(len(group), SECRET_ELEMENTS)
                secrets_by_owner.update({owner: shamir.elements_to_bytes(row, SEED_BYTES)
                                         for owner, row in zip(group, elements)})
            except CryptoError as error:
                self._stage = "refused"
                raise CryptoError(f"secure aggregation refused: the unmask shares are inconsistent ({error})") from None
        return secrets_by_owner

    def _accept(self, message, kind: type, stage: str, allowed, seen) -> None:
        if not isinstance(message, kind):
            raise CryptoError(f"expected a {kind.__name__}, got {type(message).__name__}; refused")
        if message.round_id != self.config.round_id:
            raise CryptoError(f"a {kind.__name__} from another round; refused")
        if self._stage != stage:
            raise CryptoError(f"a {kind.__name__} from client {message.sender} arrived while the round is at "
                              f"'{self._stage}' (too late or out of order); refused")
        if not isinstance(message.sender, int) or isinstance(message.sender, bool) or message.sender not in allowed:
            raise CryptoError(f"client {message.sender} may not send a {kind.__name__} at this step; refused")
        if message.sender in seen:
            raise CryptoError(f"client {message.sender} already sent a {kind.__name__} (replay); refused")

    def _close(self, stage: str, following: str, answered: int, what: str) -> None:
        if self._stage != stage:
            raise CryptoError(f"the round is at '{self._stage}', cannot close '{stage}'")
        if answered < self.config.threshold:
            self._stage = "refused"
            raise CryptoError(f"secure aggregation refused: only {answered} clients {what}, the threshold is "
                              f"{self.config.threshold}")
        self._stage = following


def _require_threshold(count: int, config: RoundConfig, what: str) -> None:
    if count < config.threshold:
        raise CryptoError(f"only {count} clients {what}, the threshold is {config.threshold}; round refused")


def _share_elements(shares: dict[int, bytes], sender: int) -> dict[int, np.ndarray]:
    if any(len(share) != SHARE_BYTES for share in shares.values()):
        raise CryptoError(f"a share from client {sender} has the wrong length; refused")
    return {owner: np.frombuffer(share, dtype="<u8").astype(np.uint64) for owner, share in shares.items()}
