"""BGN formats: round trips, version and validation errors, tampered and off-subgroup points refused."""

import secrets
import struct

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from simmim.crypto import bgn_serialization as wire
from simmim.crypto import pairing
from simmim.crypto.bgn import generate_keypair
from simmim.crypto.bgn_vectors import GALLERY, ProductEncoding, decrypt_score, encrypt_embedding, match
from simmim.crypto.pairing import G1, G2, GT
from simmim.errors import CryptoError

ENCODING = ProductEncoding(fraction_bits=10, max_norm=1.0, window_bits=23)
HEADER = 6  # magic, version, kind
EMBEDDING_PREFIX = HEADER + 16 + 1 + 10 + 4  # fingerprint, side, encoding, count
SCORES_PREFIX = EMBEDDING_PREFIX


@pytest.fixture(scope="module")
def keys():
    return generate_keypair()


@pytest.fixture(scope="module")
def blobs(keys):
    public, _ = keys
    x, y = np.array([0.6, -0.8, 0.0]), np.array([0.0, 0.6, 0.8])
    query = encrypt_embedding(public, x, encoding=ENCODING)
    items = [encrypt_embedding(public, y, side=GALLERY, encoding=ENCODING),
             encrypt_embedding(public, x, side=GALLERY, encoding=ENCODING)]
    return {"query": wire.embedding_to_bytes(query), "item": wire.embedding_to_bytes(items[0]),
            "scores": wire.scores_to_bytes(match(query, items), public), "expected": [x @ y, 1.0]}


def off_subgroup_point(group: type) -> bytes:
    """Bytes of a point on the curve but outside the order-r subgroup (found with mcl's check turned off)."""
    lib, prefix = pairing._lib, group._PREFIX
    set_verify = getattr(lib, f"mclBn_verifyOrder{group._NAME}")
    set_verify(0)
    try:
        while True:
            candidate = bytearray(secrets.token_bytes(group.WIRE_BYTES))
            for flags in range(pairing._FP_BYTES - 1, group.WIRE_BYTES, pairing._FP_BYTES):
                candidate[flags] &= 0x9F  # keep the y-sign flag, clear the infinity/other flags
            point = group()
            decoded = getattr(lib, f"{prefix}_deserialize")(point._c, bytes(candidate), len(candidate))
            if decoded == len(candidate) and not getattr(lib, f"{prefix}_isValidOrder")(point._c):
                return bytes(candidate)
    finally:
        set_verify(1)


def non_gt_element() -> bytes:
    """A valid Fp12 encoding (every coefficient below p) that is not in the order-r subgroup GT."""
    data = bytearray(secrets.token_bytes(GT.WIRE_BYTES))
    for top in range(pairing._FP_BYTES - 1, GT.WIRE_BYTES, pairing._FP_BYTES):
        data[top] &= 0x0F  # p starts with 0x1a, so each coefficient is a field element
    probe = GT()
    assert pairing._lib.mclBnGT_deserialize(probe._c, bytes(data), len(data)) == len(data)
    return bytes(data)


def test_keys_round_trip_and_a_mismatched_private_key_is_refused(keys):
    public, private = keys
    assert wire.public_key_from_bytes(wire.public_key_to_bytes(public)) == public
    loaded = wire.private_key_from_bytes(wire.private_key_to_bytes(private))
    assert (loaded.x, loaded.y, loaded.public_key) == (private.x, private.y, public)
    blob = bytearray(wire.private_key_to_bytes(private))
    blob[-1] ^= 1
    with pytest.raises(CryptoError, match="does not match"):
        wire.private_key_from_bytes(bytes(blob))


def test_embeddings_and_scores_round_trip(keys, blobs):
    public, private = keys
    query = wire.embedding_from_bytes(blobs["query"], public)
    item = wire.embedding_from_bytes(blobs["item"], public)
    assert (query.side, item.side, len(query), query.encoding) == ("query", "gallery", 3, ENCODING)
    assert wire.embedding_to_bytes(query) == blobs["query"]
    assert len(blobs["query"]) == EMBEDDING_PREFIX + 4 * 2 * G1.WIRE_BYTES
    assert len(blobs["item"]) == EMBEDDING_PREFIX + 4 * 2 * G2.WIRE_BYTES
    scores = wire.scores_from_bytes(blobs["scores"], public)
    assert len(blobs["scores"]) == SCORES_PREFIX + 2 * 4 * GT.WIRE_BYTES
    np.testing.assert_allclose([decrypt_score(private, s) for s in scores], blobs["expected"], atol=2e-3)
    decoded = [decrypt_score(private, s) for s in match(query, [item])]
    np.testing.assert_allclose(decoded, blobs["expected"][:1], atol=2e-3)


@pytest.mark.parametrize("name", ["query", "item", "scores"])
def test_envelope_errors(keys, blobs, name):
    public, _ = keys
    load = wire.scores_from_bytes if name == "scores" else wire.embedding_from_bytes
    blob = blobs[name]
    with pytest.raises(CryptoError, match="bad magic"):
        load(b"XXXX" + blob[4:], public)
    with pytest.raises(CryptoError, match="unsupported HE format version 2"):
        load(blob[:4] + b"\x02" + blob[5:], public)
    with pytest.raises(CryptoError, match="expected a BGN"):
        load(wire.public_key_to_bytes(public), public)
    with pytest.raises(CryptoError, match="truncated|malformed"):
        load(blob[:-1], public)
    with pytest.raises(CryptoError, match="truncated"):
        load(blob[:HEADER + 3], public)
    with pytest.raises(CryptoError, match="malformed"):
        load(blob + b"\x00", public)
    with pytest.raises(CryptoError, match="different public key"):
        load(blob, generate_keypair()[0])
    with pytest.raises(CryptoError, match="expected bytes"):
        load("not bytes", public)


def test_bad_header_fields_are_refused(keys, blobs):
    public, _ = keys
    with pytest.raises(CryptoError, match="unknown side 3"):
        wire.embedding_from_bytes(blobs["query"][:HEADER + 16] + b"\x03" + blobs["query"][HEADER + 17:], public)
    with pytest.raises(CryptoError, match="unknown metric 9"):
        wire.scores_from_bytes(blobs["scores"][:HEADER + 16] + b"\x09" + blobs["scores"][HEADER + 17:], public)
    empty = bytearray(blobs["scores"][:SCORES_PREFIX])
    empty[SCORES_PREFIX - 4:] = struct.pack(">I", 0)
    with pytest.raises(CryptoError, match="malformed"):
        wire.scores_from_bytes(bytes(empty), public)
    oversized = bytearray(blobs["query"])
    oversized[HEADER + 17: HEADER + 27] = struct.pack(">BBd", 10, 60, 1.0)  # a 2^60 window
    with pytest.raises(CryptoError, match="window_bits"):
        wire.embedding_from_bytes(bytes(oversized), public)


@pytest.mark.parametrize("group,name", [(G1, "query"), (G2, "item")])
def test_off_subgroup_points_are_refused_on_load(keys, blobs, group, name):
    public, _ = keys
    bad = off_subgroup_point(group)
    with pytest.raises(CryptoError, match="order r"):
        group.from_bytes(bad)
    blob = bytearray(blobs[name])
    blob[EMBEDDING_PREFIX: EMBEDDING_PREFIX + group.WIRE_BYTES] = bad
    with pytest.raises(CryptoError, match=f"not a {group.__name__} element of order r"):
        wire.embedding_from_bytes(bytes(blob), public)
    key = bytearray(wire.public_key_to_bytes(public))
    start = HEADER if group is G1 else HEADER + G1.WIRE_BYTES
    key[start: start + group.WIRE_BYTES] = bad
    with pytest.raises(CryptoError, match="order r"):
        wire.public_key_from_bytes(bytes(key))


def test_fp12_elements_outside_gt_are_refused(keys, blobs):
    public, _ = keys
    bad = non_gt_element()
    with pytest.raises(CryptoError, match="not a GT element"):
        GT.from_bytes(bad)
    blob = bytearray(blobs["scores"])
    blob[-GT.WIRE_BYTES:] = bad
    with pytest.raises(CryptoError, match="not a GT element"):
        wire.scores_from_bytes(bytes(blob), public)


@given(point=st.integers(0, 3 * 2 - 1), offset=st.integers(0, G1.WIRE_BYTES - 2), flip=st.integers(1, 255))
@settings(max_examples=30, deadline=None)
def test_tampered_coordinates_are_refused(keys, blobs, point, offset, flip):
    """Changing a byte of an x coordinate leaves the curve or the subgroup (all but ~2^-120 of the time).

    The last byte of each coordinate is left alone: it carries the sign of y, and flipping it gives
    -P, a valid point; that is malleability (any HE ciphertext can be changed into another valid
    one), not a format error."""
    public, _ = keys
    blob = bytearray(blobs["query"])
    blob[EMBEDDING_PREFIX + point * G1.WIRE_BYTES + offset] ^= flip
    with pytest.raises(CryptoError):
        wire.embedding_from_bytes(bytes(blob), public)


def test_non_canonical_and_wrong_length_elements_are_refused():
    with pytest.raises(CryptoError, match="48 bytes"):
        G1.from_bytes(bytes(47))
    with pytest.raises(CryptoError, match="order r"):
        G1.from_bytes(b"\xff" * 48)
    with pytest.raises(CryptoError, match="not a GT element"):
        GT.from_bytes(bytes(GT.WIRE_BYTES))
    assert G1.from_bytes(G1().to_bytes()).is_zero()  # the identity is a group element
