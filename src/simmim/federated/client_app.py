"""The party's side of federated SimMIM, as a Flower ClientApp.

A SuperNode runs one fresh process per message, so what a party must remember between the messages
of a secure-aggregation round (its secret keys and the shares it holds) is kept in the SuperNode's
context state, on the party's own machine; it is erased when the round ends. The messages and
their pipelining are in `protocol` and `secure_rounds`.
"""

from __future__ import annotations

import logging

import numpy as np
from flwr.app import ConfigRecord, Context, Message
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

_CLIENTS = "secagg-clients"  # in the node's context state: round id -> that round's client state
_KEEP_ROUNDS = 3  # states of rounds the server abandoned are dropped beyond this many
log = logging.getLogger("simmim.federated")


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
        reply = _run_steps(context, content, update)
    reply["metrics"] = ConfigRecord({k: float(v) for k, v in metrics.items()})
    return Message(reply, reply_to=msg)


@app.train("step")
def step(msg: Message, context: Context) -> Message:
    """Secure-aggregation steps that need no training: advertise keys, share keys, unmask."""
    return Message(_run_steps(context, msg.content, None), reply_to=msg)


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




def _run_steps(context: Context, content, update: np.ndarray | None):
    """Runs each secure-aggregation step of the message on the state of its round.

    Rounds are told apart by their ids; each round's client state lives in the node's context
    between messages and is erased when its round ends or aborts. A step this client refuses aborts
    its own round only; the other round's step in the same message still runs.
    """
    saved = context.state.get(_CLIENTS)
    states = dict(saved) if saved is not None else {}
    answers, arrays, values = [], {}, {}
    for data, client_id in zip(protocol.value(content, "steps"), protocol.value(content, "ids")):
        key = None
        try:
            request = secagg_messages.decode(data)
            key = request.round_id.hex()
            if isinstance(request, secagg_messages.RoundConfig):
                client = SecAggClient(int(client_id))
            elif key in states:
                client = SecAggClient.restore(states[key])
            else:
                raise CryptoError("a step for a round this party holds no state for")
            try:
                if isinstance(request, secagg_messages.ShareDelivery):
                    if update is None:
                        raise CryptoError("a share delivery without training")
                    masked = client.mask_update(request, update)
                    arrays["masked"] = masked.words
                    values |= {"round-id": masked.round_id, "sender": masked.sender}
                else:
                    step_of = {secagg_messages.RoundConfig: client.advertise_keys,
                               secagg_messages.KeyDirectory: client.share_keys,
                               secagg_messages.UnmaskRequest: client.unmask}[type(request)]
                    answers.append(secagg_messages.encode(step_of(request)))
            finally:
                if client.stage in ("aborted", "done"):
                    states.pop(key, None)
                else:
                    states[key] = client.export_state()
        except (CryptoError, KeyError) as error:
            log.warning("secure-aggregation step refused (round %s): %s", key, error)
    for stale in list(states)[:-_KEEP_ROUNDS]:
        del states[stale]
    context.state[_CLIENTS] = ConfigRecord(states)
    if answers:
        values["answers"] = answers
    return protocol.records(arrays=arrays, values=values)
