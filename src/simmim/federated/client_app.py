"""The party's side of federated SimMIM, as a Flower ClientApp.

A SuperNode runs one fresh process per message, so what a party must remember between the messages
of a secure-aggregation round (its secret keys, shares and its clipped update) is kept in the
SuperNode's context state, on the party's own machine; it is erased when the round ends.
"""

from __future__ import annotations

import numpy as np
from flwr.app import ArrayRecord, ConfigRecord, Context, Message
from flwr.clientapp import ClientApp

from simmim.crypto import secagg_messages
from simmim.crypto.aggregation import decrypt_sum, encrypt_update
from simmim.crypto.paillier import generate_keypair
from simmim.crypto.secagg import SecAggClient
from simmim.crypto.serialization import (
    private_key_from_bytes,
    private_key_to_bytes,
    public_key_from_bytes,
    public_key_to_bytes,
    vector_from_bytes,
)
from simmim.errors import CryptoError
from simmim.federated import protocol
from simmim.federated.settings import FedSettings

app = ClientApp()

_CLIENT, _UPDATE = "secagg-client", "secagg-update"  # keys in the node's context state


@app.train()
def train(msg: Message, context: Context) -> Message:
    """Local training from the global weights; the reply depends on the aggregation."""
    from simmim.federated.local import Federation, local_update  # torch: only the training message needs it

    settings = FedSettings.from_run_config(context.run_config)
    party = _partition(context, settings)
    federation = Federation.from_settings(settings)
    content = msg.content
    round_index = int(protocol.value(content, "round"))
    update, metrics = local_update(federation, protocol.array(content, "global"), federation.partition(party),
                                   round_index=round_index, party=party)
    metrics["partition"] = party
    if settings.aggregation == "plain":
        reply = protocol.records(arrays={"update": update})
    elif settings.aggregation == "paillier":
        public_key = public_key_from_bytes(protocol.value(content, "public-key"))
        reply = protocol.records(values={"ciphertext": encrypt_update(public_key, update, parties=settings.clients)})
    else:
        config = secagg_messages.decode(protocol.value(content, "secagg"))
        client = SecAggClient(int(protocol.value(content, "secagg-id")))
        keys = client.advertise_keys(config)
        _save(context, client, update)
        reply = protocol.records(values={"secagg": secagg_messages.encode(keys)})
    reply["metrics"] = ConfigRecord({k: float(v) for k, v in metrics.items()})
    return Message(reply, reply_to=msg)


@app.train("share")
def share(msg: Message, context: Context) -> Message:
    client, _ = _restore(context)
    shares = _step(context, client, lambda: client.share_keys(_secagg(msg)))
    return Message(protocol.records(values={"secagg": secagg_messages.encode(shares)}), reply_to=msg)


@app.train("mask")
def mask(msg: Message, context: Context) -> Message:
    client, update = _restore(context)
    masked = _step(context, client, lambda: client.mask_update(_secagg(msg), update))
    return Message(protocol.records(arrays={"masked": masked.words},
                                    values={"round-id": masked.round_id, "sender": masked.sender}), reply_to=msg)


@app.train("unmask")
def unmask(msg: Message, context: Context) -> Message:
    client, _ = _restore(context)
    shares = _step(context, client, lambda: client.unmask(_secagg(msg)))
    return Message(protocol.records(values={"secagg": secagg_messages.encode(shares)}), reply_to=msg)


@app.query("keygen")
def keygen(msg: Message, context: Context) -> Message:
    """The key holder makes the run's Paillier key pair and keeps the private key on its node."""
    settings = FedSettings.from_run_config(context.run_config)
    if _partition(context, settings) != protocol.KEY_HOLDER_PARTITION:
        raise CryptoError("only the key-holding party makes the Paillier key")
    public_key, private_key = generate_keypair(int(protocol.value(msg.content, "bits")))
    context.state["paillier"] = ConfigRecord({"private-key": private_key_to_bytes(private_key)})
    return Message(protocol.records(values={"public-key": public_key_to_bytes(public_key)}), reply_to=msg)


@app.query("decrypt")
def decrypt(msg: Message, context: Context) -> Message:
    """The key holder decrypts the encrypted sum, and only a sum: the server says how many it holds."""
    if "paillier" not in context.state.config_records:
        raise CryptoError("this node holds no Paillier private key")
    private_key = private_key_from_bytes(context.state.config_records["paillier"]["private-key"])
    total = vector_from_bytes(protocol.value(msg.content, "sum"), private_key.public_key)
    if int(protocol.value(msg.content, "summands")) < 2:
        raise CryptoError("refusing to decrypt a sum of fewer than 2 updates: it would reveal one party's update")
    return Message(protocol.records(arrays={"sum": decrypt_sum(private_key, total)}), reply_to=msg)


def _partition(context: Context, settings: FedSettings) -> int:
    if "partition-id" not in context.node_config:
        raise CryptoError("this SuperNode was started without --node-config partition-id=<i>")
    party = int(context.node_config["partition-id"])
    if not 0 <= party < settings.clients:
        raise CryptoError(f"partition-id {party} is outside the run's {settings.clients} parties")
    return party


def _secagg(msg: Message):
    return secagg_messages.decode(protocol.value(msg.content, "secagg"))


def _save(context: Context, client: SecAggClient, update: np.ndarray | None = None) -> None:
    context.state[_CLIENT] = ConfigRecord({"client": client.export_state()})
    if update is not None:
        context.state[_UPDATE] = protocol.records(arrays={"update": update})["update"]


def _restore(context: Context) -> tuple[SecAggClient, np.ndarray | None]:
    if _CLIENT not in context.state:
        raise CryptoError("no secure-aggregation round is open on this node")
    client = SecAggClient.restore(context.state[_CLIENT]["client"])
    stored: ArrayRecord | None = context.state.get(_UPDATE)
    return client, (stored["data"].numpy() if stored is not None else None)


def _step(context: Context, client: SecAggClient, step):
    """Runs one protocol step; the client's state is saved whether it succeeds or aborts the round."""
    try:
        return step()
    finally:
        if client.stage in ("aborted", "done"):
            _forget(context)
        else:
            _save(context, client)


def _forget(context: Context) -> None:
    for key in (_CLIENT, _UPDATE):
        context.state.pop(key, None)
