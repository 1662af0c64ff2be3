"""Primes for Paillier keys, drawn from the operating system's CSPRNG.

Every candidate comes from `secrets` (os.urandom); gmpy2 only tests primality, so no
deterministic generator ever decides what the secret primes are.
"""

from __future__ import annotations

import secrets

import gmpy2

# gmpy2.is_prime(x, r) runs trial division, Baillie-PSW and r - 24 Miller-Rabin rounds with
# random bases: 40 extra rounds put the chance of a composite below 2^-80 even for adversarial
# inputs, and random candidates of this size are far safer than that.
PRIMALITY_ROUNDS = 64


def random_prime(bits: int) -> gmpy2.mpz:
    """A uniformly chosen prime of exactly `bits` bits whose two top bits are set.

    The two top bits make the product of two such primes exactly 2 * bits long.
    """
    if bits < 16:
        raise ValueError("primes for Paillier need at least 16 bits")
    top = 0b11 << (bits - 2)
    while True:
        candidate = gmpy2.mpz(secrets.randbits(bits) | top | 1)
        if gmpy2.is_prime(candidate, PRIMALITY_ROUNDS):
            return candidate
