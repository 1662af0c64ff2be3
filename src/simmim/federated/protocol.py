"""The messages between the server app and the client app: names, and how values ride in Flower records.

One round of each aggregation, as (message type: what the server sends -> what the party answers):

    plain     train: global weights -> clipped update (float32)
    paillier  train: global weights + the key holder's public key -> the update encrypted to it
              query.decrypt (key holder only): the encrypted sum -> the sum
              (once per run) query.keygen (key holder only): -> a fresh public key
    secagg    train: global weights + this round's ShareDelivery (+ next round's RoundConfig)
                     -> the masked update (uint32 words) (+ PublicKeys for the next round)
              train.step: this round's UnmaskRequest (+ next round's KeyDirectory)
                     -> UnmaskShares (+ EncryptedShares for the next round)
              (`secure_rounds` explains the pipelining; the first round is set up by two train.step
              messages carrying the RoundConfig, then the KeyDirectory)

Secure-aggregation steps travel as a list of server messages in their own versioned byte form
(`secagg_messages.encode`) under "steps", answered under "answers"; a masked update travels as a
uint32 array so Flower chunks it like any tensor (4 bytes per parameter).
"""

from __future__ import annotations

import numpy as np
from flwr.app import Array, ArrayRecord, ConfigRecord, RecordDict

TRAIN = "train"
STEP = "train.step"
KEYGEN = "query.keygen"
DECRYPT = "query.decrypt"

KEY_HOLDER_PARTITION = 0  # the party that holds the Paillier private key


def records(*, arrays: dict[str, np.ndarray] | None = None, values: dict | None = None) -> RecordDict:
    """A RecordDict with one ArrayRecord per named array and the scalars/bytes in 'values'."""
    content = RecordDict()
    for name, array in (arrays or {}).items():
        content[name] = ArrayRecord({"data": Array(np.ascontiguousarray(array))})
    if values:
        content["values"] = ConfigRecord(values)
    return content


def array(content: RecordDict, name: str) -> np.ndarray:
    return content.array_records[name]["data"].numpy()


def value(content: RecordDict, name: str):
    return content.config_records["values"][name]
