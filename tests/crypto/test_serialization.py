import struct

import numpy as np
import pytest

from simmim.crypto.serialization import (
    MAGIC,
    private_key_from_bytes,
    private_key_to_bytes,
    public_key_from_bytes,
    public_key_to_bytes,
    vector_from_bytes,
    vector_to_bytes,
)
from simmim.crypto.vector import decrypt_vector, encrypt_vector
from simmim.errors import CryptoError


@pytest.fixture(scope="module")
def blob(keys_1024):
    public, _ = keys_1024
    vector = encrypt_vector(public, np.linspace(-3, 3, 100), max_additions=8)
    return vector, vector_to_bytes(vector)


def test_keys_round_trip(keys_1024):
    public, private = keys_1024
    assert public_key_from_bytes(public_key_to_bytes(public)) == public
    loaded = private_key_from_bytes(private_key_to_bytes(private))
    assert (loaded.p, loaded.q, loaded.public_key) == (private.p, private.q, public)
    assert len(public_key_to_bytes(public)) == 6 + 2 + 128 + 256


def test_vector_round_trip_is_compact(keys_1024, blob):
    public, private = keys_1024
    vector, data = blob
    loaded = vector_from_bytes(data, public)
    assert (loaded.ciphertexts, loaded.layout, loaded.length, loaded.bound) == (
        vector.ciphertexts, vector.layout, vector.length, vector.bound)
    np.testing.assert_allclose(decrypt_vector(private, loaded), np.linspace(-3, 3, 100), atol=2.0**-25)
    assert len(data) == len(vector.ciphertexts) * 256 + 6 + 34 + 5 + 4  # ciphertexts plus a 49-byte header


def test_every_truncation_is_a_clear_error(keys_1024, blob):
    public, _ = keys_1024
    _, data = blob
    for cut in [*range(0, 60), *range(60, len(data), 97), len(data) - 1]:
        with pytest.raises(CryptoError, match="truncated|malformed"):
            vector_from_bytes(data[:cut], public)
    with pytest.raises(CryptoError, match="trailing"):
        vector_from_bytes(data + b"\0", public)


def test_malformed_headers_and_values(keys_1024, keys_512, blob):
    public, _ = keys_1024
    _, data = blob
    with pytest.raises(CryptoError, match="magic"):
        vector_from_bytes(b"XXXX" + data[4:], public)
    with pytest.raises(CryptoError, match="version 9"):
        vector_from_bytes(MAGIC + b"\x09" + data[5:], public)
    with pytest.raises(CryptoError, match="expected a encrypted vector|found a public key"):
        vector_from_bytes(public_key_to_bytes(public), public)
    with pytest.raises(CryptoError, match="different public key"):
        vector_from_bytes(data, keys_512[0])
    with pytest.raises(CryptoError, match="expected bytes"):
        vector_from_bytes("text", public)
    # A ciphertext of all 0xff bytes is >= n^2: not a ciphertext.
    with pytest.raises(CryptoError, match="not a ciphertext"):
        vector_from_bytes(data[:-256] + b"\xff" * 256, public)
    # A length that disagrees with the ciphertext count.
    header = bytearray(data)
    struct.pack_into(">Q", header, 6 + 16 + 2, 10_000)
    with pytest.raises(CryptoError, match="malformed encrypted vector"):
        vector_from_bytes(bytes(header), public)


def test_malformed_keys(keys_1024):
    public, private = keys_1024
    data = private_key_to_bytes(private)
    with pytest.raises(CryptoError, match="truncated"):
        private_key_from_bytes(data[:-1])
    tampered = bytearray(data)
    tampered[-1] ^= 2  # q changes: p * q != n
    with pytest.raises(CryptoError, match="p \\* q"):
        private_key_from_bytes(bytes(tampered))
    with pytest.raises(CryptoError, match="found a private key"):
        public_key_from_bytes(data)
    zero_hs = public_key_to_bytes(public)[: 6 + 2 + 128] + b"\0" * 256
    with pytest.raises(CryptoError, match="h_s"):
        public_key_from_bytes(zero_hs)
