"""Binary formats for BGN keys, encrypted embeddings and encrypted scores, versioned and validated.

Same envelope as `serialization` (b"SMHE", its format version, a kind byte; numbers big-endian),
with kinds 5-8. Points use mcl's compressed encodings: G1 48 bytes, G2 96, GT 576.

    public key   X:G1  Y:G2
    private key  <public key body>  x:32  y:32
    embedding    key fingerprint:16  side:u8 (1 query/G1, 2 gallery/G2)  fraction_bits:u8
                 window_bits:u8  max_norm:f64  length:u32  squared norm:(S, T)  length x (S, T)
    scores       key fingerprint:16  metric:u8 (1 inner product, 2 squared distance)
                 fraction_bits:u8  window_bits:u8  max_norm:f64  count:u32  count x 4 GT

A 512-value query is 49 KB, a gallery item 98 KB, a score 2.3 KB. Loading checks every length, the
key fingerprint, and that every point is a canonically encoded element of its order-r group
(`pairing`), so a truncated, tampered or off-subgroup blob raises `CryptoError` with one line.
Validity is not authenticity: a well-formed ciphertext swapped for another is not detected.
"""

from __future__ import annotations

import struct

from simmim.crypto import serialization as envelope
from simmim.crypto.bgn import Ciphertext, PrivateKey, ProductCiphertext, PublicKey
from simmim.crypto.bgn_vectors import GALLERY, METRICS, QUERY, EncryptedEmbedding, EncryptedScore, ProductEncoding
from simmim.crypto.pairing import G1, G2, GT
from simmim.crypto.serialization import _HEADER, MAGIC, VERSION, _Reader
from simmim.errors import CryptoError

KIND_PUBLIC_KEY, KIND_PRIVATE_KEY, KIND_EMBEDDING, KIND_SCORES = 5, 6, 7, 8
_SCALAR_BYTES = 32
_SIDES = {QUERY: 1, GALLERY: 2}
_ENCODING = struct.Struct(">BBd")
_EMBEDDING = struct.Struct(">16sB")
_COUNT = struct.Struct(">I")

# One envelope, one reader: BGN's kinds join the SMHE kind table, so `serialization` checks their
# magic, version and kind and names them in its errors (and a BGN blob given to a Paillier loader is
# named as such).
_BGN_KINDS = {KIND_PUBLIC_KEY: "BGN public key", KIND_PRIVATE_KEY: "BGN private key",
              KIND_EMBEDDING: "BGN encrypted embedding", KIND_SCORES: "BGN encrypted scores"}
if any(envelope._KIND_NAMES.get(kind, name) != name for kind, name in _BGN_KINDS.items()):
    raise ImportError("BGN blob kinds 5-8 collide with kinds defined in simmim.crypto.serialization")
envelope._KIND_NAMES.update(_BGN_KINDS)
_open = envelope._open


def _element(reader: _Reader, group: type, field: str):
    return group.from_bytes(reader.take(group.WIRE_BYTES, field))


def _read_public(reader: _Reader) -> PublicKey:
    return PublicKey(x_g1=_element(reader, G1, "X"), y_g2=_element(reader, G2, "Y"))


def public_key_to_bytes(key: PublicKey) -> bytes:
    return _HEADER.pack(MAGIC, VERSION, KIND_PUBLIC_KEY) + key.to_bytes()


def public_key_from_bytes(data: bytes) -> PublicKey:
    reader = _open(data, KIND_PUBLIC_KEY)
    key = _read_public(reader)
    reader.finish()
    return key


def private_key_to_bytes(key: PrivateKey) -> bytes:
    return (_HEADER.pack(MAGIC, VERSION, KIND_PRIVATE_KEY) + key.public_key.to_bytes()
            + key.x.to_bytes(_SCALAR_BYTES, "big") + key.y.to_bytes(_SCALAR_BYTES, "big"))


def private_key_from_bytes(data: bytes) -> PrivateKey:
    """A private key, checked to match its public key."""
    reader = _open(data, KIND_PRIVATE_KEY)
    public = _read_public(reader)
    x = int.from_bytes(reader.take(_SCALAR_BYTES, "x"), "big")
    y = int.from_bytes(reader.take(_SCALAR_BYTES, "y"), "big")
    reader.finish()
    return PrivateKey(public_key=public, x=x, y=y)


def _encoding_bytes(encoding: ProductEncoding) -> bytes:
    return _ENCODING.pack(encoding.fraction_bits, encoding.window_bits, encoding.max_norm)


def _read_encoding(reader: _Reader) -> ProductEncoding:
    fraction_bits, window_bits, max_norm = reader.unpack(_ENCODING, "the encoding")
    return ProductEncoding(fraction_bits=fraction_bits, max_norm=max_norm, window_bits=window_bits)


def _read_count(reader: _Reader, item_bytes: int, what: str, extra: int = 0) -> int:
    """The stored count, checked against the bytes left: count + extra items of item_bytes each."""
    (count,) = reader.unpack(_COUNT, f"the {what} count")
    expected = reader.offset + (count + extra) * item_bytes
    if count == 0 or len(reader.data) != expected:
        raise CryptoError(f"malformed {reader.what}: {count} {what}s need {expected} bytes, got {len(reader.data)}")
    return count


def _check_key(fingerprint: bytes, public_key: PublicKey, what: str) -> None:
    if fingerprint != public_key.fingerprint:
        raise CryptoError(f"{what} was made under a different public key")


def embedding_to_bytes(embedding: EncryptedEmbedding) -> bytes:
    parts = [_HEADER.pack(MAGIC, VERSION, KIND_EMBEDDING),
             _EMBEDDING.pack(embedding.public_key.fingerprint, _SIDES[embedding.side]),
             _encoding_bytes(embedding.encoding), _COUNT.pack(len(embedding.values)),
             embedding.squared_norm.s.to_bytes(), embedding.squared_norm.t.to_bytes()]
    for c in embedding.values:
        parts += [c.s.to_bytes(), c.t.to_bytes()]
    return b"".join(parts)


def embedding_from_bytes(data: bytes, public_key: PublicKey) -> EncryptedEmbedding:
    """An encrypted embedding, checked to be under `public_key` with every point in its subgroup."""
    reader = _open(data, KIND_EMBEDDING)
    fingerprint, side_code = reader.unpack(_EMBEDDING, "the embedding header")
    _check_key(fingerprint, public_key, "this encrypted embedding")
    sides = {code: side for side, code in _SIDES.items()}
    if side_code not in sides:
        raise CryptoError(f"malformed BGN encrypted embedding: unknown side {side_code}")
    encoding = _read_encoding(reader)
    group = G1 if sides[side_code] == QUERY else G2
    count = _read_count(reader, 2 * group.WIRE_BYTES, "ciphertext", extra=1)  # the squared norm comes first
    ciphertexts = [Ciphertext(_element(reader, group, "S"), _element(reader, group, "T")) for _ in range(count + 1)]
    reader.finish()
    return EncryptedEmbedding(public_key, sides[side_code], tuple(ciphertexts[1:]), ciphertexts[0], encoding)


def scores_to_bytes(scores: list[EncryptedScore], public_key: PublicKey) -> bytes:
    """Encrypted scores that share one metric and encoding (e.g. a query against a gallery)."""
    if not scores or any((s.metric, s.encoding) != (scores[0].metric, scores[0].encoding) for s in scores):
        raise CryptoError("scores to serialise together need one metric and one encoding")
    head = [_HEADER.pack(MAGIC, VERSION, KIND_SCORES),
            _EMBEDDING.pack(public_key.fingerprint, METRICS.index(scores[0].metric) + 1),
            _encoding_bytes(scores[0].encoding), _COUNT.pack(len(scores))]
    return b"".join(head + [part.to_bytes() for score in scores for part in score.ciphertext.parts])


def scores_from_bytes(data: bytes, public_key: PublicKey) -> list[EncryptedScore]:
    """Encrypted scores, checked to be under `public_key` with every element in GT."""
    reader = _open(data, KIND_SCORES)
    fingerprint, metric_code = reader.unpack(_EMBEDDING, "the scores header")
    _check_key(fingerprint, public_key, "these encrypted scores")
    if not 1 <= metric_code <= len(METRICS):
        raise CryptoError(f"malformed BGN encrypted scores: unknown metric {metric_code}")
    encoding = _read_encoding(reader)
    count = _read_count(reader, 4 * GT.WIRE_BYTES, "score")
    scores = [EncryptedScore(ProductCiphertext(tuple(_element(reader, GT, "a GT element") for _ in range(4))),
                             encoding, METRICS[metric_code - 1]) for _ in range(count)]
    reader.finish()
    return scores
