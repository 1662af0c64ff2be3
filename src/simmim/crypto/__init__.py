"""Homomorphic encryption: Paillier on gmpy2, encrypted inference and encrypted aggregation.

    paillier.py              keys, encryption modes, CRT decryption, operations on integers
    primes.py, fixed_base.py prime generation from the OS CSPRNG; fixed-base power tables
    encoding.py              fixed-point encoding and slot packing
    vector.py                encrypted numpy vectors with overflow-checked arithmetic
    parallel.py              process pool for long vectors
    serialization.py         versioned binary formats for keys and vectors
    linear.py                plaintext-weight linear maps on encrypted vectors
    encrypted_inference.py   client/server scoring of encrypted embeddings
    aggregation.py           sums of many parties' encrypted updates

docs/crypto.md states the parameters, the assumptions behind each option and the measured speed.
"""

from simmim.crypto.encoding import FixedPoint, SlotLayout
from simmim.crypto.paillier import PrivateKey, PublicKey, generate_keypair
from simmim.crypto.vector import EncryptedVector, decrypt_vector, encrypt_vector, sum_vectors

__all__ = ["EncryptedVector", "FixedPoint", "PrivateKey", "PublicKey", "SlotLayout", "decrypt_vector",
           "encrypt_vector", "generate_keypair", "sum_vectors"]
