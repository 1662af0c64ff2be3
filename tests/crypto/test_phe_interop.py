"""Cross-checks with `phe` (python-paillier), an independent implementation of the same scheme."""

import numpy as np
import pytest

phe = pytest.importorskip("phe")

from simmim.crypto.encoding import FixedPoint  # noqa: E402
from simmim.crypto.paillier import keypair_from_primes  # noqa: E402
from simmim.crypto.vector import decrypt_integers, encrypt_vector  # noqa: E402

VALUES = [0, 1, -1, 123456789, -(2**60), 2**200]


@pytest.fixture(scope="module")
def shared_keys():
    """One key in both libraries: phe's primes imported into ours (phe's g is also n + 1)."""
    phe_public, phe_private = phe.generate_paillier_keypair(n_length=1024)
    public, private = keypair_from_primes(phe_private.p, phe_private.q)
    assert public.n == phe_public.n and phe_public.g == public.n + 1
    return phe_public, phe_private, public, private


@pytest.mark.parametrize("mode", ["djn", "djn-short", "classic"])
def test_phe_decrypts_our_ciphertexts(shared_keys, mode):
    phe_public, phe_private, public, private = shared_keys
    for m in VALUES:
        for c in (public.encrypt(m, mode), private.encrypt(m, mode)):
            assert phe_private.decrypt(phe.EncryptedNumber(phe_public, int(c))) == m


def test_we_decrypt_phes_ciphertexts_and_results_of_mixed_operations(shared_keys):
    phe_public, phe_private, public, private = shared_keys
    for m in VALUES:
        theirs = phe_public.encrypt(m)
        assert theirs.exponent == 0
        assert private.decrypt(theirs.ciphertext()) == m
        mixed = public.multiply(public.add(theirs.ciphertext(), public.encrypt(5)), -3)
        assert private.decrypt(mixed) == (m + 5) * -3
        assert phe_private.decrypt(phe.EncryptedNumber(phe_public, int(mixed))) == (m + 5) * -3


def test_phe_reads_our_unpacked_integer_vectors(shared_keys):
    phe_public, phe_private, public, private = shared_keys
    ints = np.array([5, -7, 0, 2**40, -(2**40)], dtype=np.int64)
    vector = encrypt_vector(public, ints, codec=FixedPoint(fraction_bits=0, max_abs=2.0**41), packed=False)
    assert [phe_private.decrypt(phe.EncryptedNumber(phe_public, int(c))) for c in vector.ciphertexts] == ints.tolist()
    assert decrypt_integers(private, vector).tolist() == ints.tolist()
