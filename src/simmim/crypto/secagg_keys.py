"""Key agreement, key derivation and sealed share transport for secure aggregation.

Every client makes two fresh X25519 key pairs per round: an encryption pair, whose agreed secrets key
the AES-256-GCM boxes that carry Shamir shares between clients through the server, and a mask pair,
whose agreed secrets seed the pairwise masks. Keys never serve two rounds or two purposes: each 32-byte
key is HKDF-SHA256 of the X25519 secret with an info string naming the protocol version, the purpose,
the round id and the two client ids, so a ciphertext or mask from another round, another pair of
clients or another purpose is useless.

Share boxes are AES-256-GCM under a key for the ordered pair (sender, recipient), with a random nonce
and the associated data (version, round id, sender, recipient): a box that was altered, replayed from
another round or redirected to another recipient fails authentication and is refused with CryptoError.

Only an honest-but-curious server is assumed: the public keys are not signed, so a server that
substitutes keys could read the shares (docs/secure_aggregation.md).
"""

from __future__ import annotations

import secrets
import struct

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey, X25519PublicKey
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from simmim.errors import CryptoError

PROTOCOL_LABEL = b"simmim-secagg-v1"
KEY_BYTES = 32
NONCE_BYTES = 12
TAG_BYTES = 16
PURPOSE_SHARE_BOX = b"share-box"
PURPOSE_PAIRWISE_MASK = b"pairwise-mask"


def new_private_key() -> X25519PrivateKey:
    """A fresh X25519 private key (the `cryptography` package draws it from the OS CSPRNG)."""
    return X25519PrivateKey.generate()


def public_bytes(private_key: X25519PrivateKey) -> bytes:
    """The raw 32-byte public key."""
    return private_key.public_key().public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)


def private_bytes(private_key: X25519PrivateKey) -> bytes:
    """The raw 32-byte private key (what is Shamir-shared for dropout recovery)."""
    return private_key.private_bytes(serialization.Encoding.Raw, serialization.PrivateFormat.Raw,
                                     serialization.NoEncryption())


def private_key_from_bytes(data: bytes) -> X25519PrivateKey:
    """The private key from its 32 raw bytes; CryptoError otherwise."""
    if len(data) != KEY_BYTES:
        raise CryptoError(f"an X25519 private key has {KEY_BYTES} bytes, got {len(data)}")
    return X25519PrivateKey.from_private_bytes(data)


def check_public_key(data: bytes) -> X25519PublicKey:
    """The public key from its 32 raw bytes; CryptoError if it is not 32 bytes."""
    if not isinstance(data, bytes) or len(data) != KEY_BYTES:
        raise CryptoError(f"an X25519 public key has {KEY_BYTES} bytes")
    return X25519PublicKey.from_public_bytes(data)


def agreed_key(private_key: X25519PrivateKey, peer_public: bytes, *, purpose: bytes, round_id: bytes,
               first: int, second: int) -> bytes:
    """A 32-byte key both ends derive: HKDF of the X25519 secret, bound to purpose, round and the id pair.

    (first, second) is ordered as the caller needs: (sender, recipient) for share boxes, (smaller,
    larger) for pairwise masks. CryptoError if the peer key gives the all-zero secret (a low-order point).
    """
    try:
        secret = private_key.exchange(check_public_key(peer_public))
    except ValueError as error:
        raise CryptoError(f"key agreement between clients {first} and {second} failed: {error}") from None
    info = b"|".join([PROTOCOL_LABEL, purpose, round_id, struct.pack("<QQ", first, second)])
    return HKDF(algorithm=hashes.SHA256(), length=KEY_BYTES, salt=None, info=info).derive(secret)


def _associated_data(round_id: bytes, sender: int, recipient: int) -> bytes:
    return b"|".join([PROTOCOL_LABEL, PURPOSE_SHARE_BOX, round_id, struct.pack("<QQ", sender, recipient)])


def seal(key: bytes, plaintext: bytes, *, round_id: bytes, sender: int, recipient: int) -> bytes:
    """nonce || AES-256-GCM(plaintext), authenticated together with round id, sender and recipient."""
    nonce = secrets.token_bytes(NONCE_BYTES)
    return nonce + AESGCM(key).encrypt(nonce, plaintext, _associated_data(round_id, sender, recipient))


def open_sealed(key: bytes, box: bytes, *, round_id: bytes, sender: int, recipient: int) -> bytes:
    """The plaintext of a `seal`ed box; CryptoError if it was altered, replayed or misaddressed."""
    if len(box) < NONCE_BYTES + TAG_BYTES:
        raise CryptoError(f"the share box from client {sender} is too short")
    try:
        return AESGCM(key).decrypt(box[:NONCE_BYTES], box[NONCE_BYTES:],
                                   _associated_data(round_id, sender, recipient))
    except InvalidTag:
        raise CryptoError(f"the share box from client {sender} to client {recipient} failed authentication "
                          "(altered, replayed from another round or misaddressed); refused") from None
