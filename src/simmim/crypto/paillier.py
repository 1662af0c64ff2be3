"""Paillier encryption on gmpy2: keys, encryption, decryption and homomorphic operations on integers.

The scheme (Paillier 1999) with g = n + 1, so g^m = 1 + m*n mod n^2 costs one multiplication.
A ciphertext is c = (1 + m*n) * R mod n^2 where R is a random n-th residue; everything that
makes encryption slow or fast is how R is drawn (`RANDOMNESS_MODES`):

- "djn" (default): Damgard-Jurik-Nielsen fast randomisation. The public key carries
  h_s = h^n mod n^2 for h = -x^2 mod n with secret random x, and R = h_s^a for a uniform
  a of ceil(bits / 2) bits, computed with a fixed-base table (`fixed_base`). Security rests on
  the decisional composite residuosity (DCR) assumption, as for Paillier itself, plus the
  hardness of factoring n: Hastad, Schrift and Shamir (1993) showed that exponents with only
  their lower half random are indistinguishable from full ones modulo a composite, under
  factoring. No short-exponent assumption.
- "djn-short" (opt-in, never the default): the same with a of 2 * `security_bits` bits
  (224 for 2048-bit keys). About 4x faster, and it relies on the *short-exponent assumption*
  (that h_s^a with such short a is indistinguishable from h_s^a with a of full length), which is
  stronger than DCR and factoring. Use it only where that is acceptable.
- "classic": R = r^n for r uniform in Z*_n, textbook Paillier; slowest, no extra assumption.

The key holder can encrypt with the Chinese remainder theorem (`PrivateKey.encrypt`): R is
computed mod p^2 and q^2 (half-size numbers) and combined; the ciphertexts have the same
distribution as public-key ones. Decryption always uses CRT.

Plaintexts are integers mod n; this module reads them as signed, in (-n/2, n/2). Fixed-point
encoding and packing live in `encoding`, vectors in `vector`.
"""

from __future__ import annotations

import hashlib
import secrets
from collections.abc import Sequence
from dataclasses import dataclass
from functools import cached_property

import gmpy2

from simmim.crypto.fixed_base import shared_table
from simmim.crypto.primes import random_prime
from simmim.errors import CryptoError

RANDOMNESS_MODES = ("djn", "djn-short", "classic")
DEFAULT_MODE = "djn"
SECURE_KEY_BITS = (2048, 3072, 4096)
MIN_TEST_KEY_BITS = 256


def security_bits(key_bits: int) -> int:
    """Symmetric-equivalent strength of an RSA/Paillier modulus (NIST SP 800-57 Part 1, table 2)."""
    if key_bits >= 15360:
        return 256
    if key_bits >= 7680:
        return 192
    if key_bits >= 3072:
        return 128
    if key_bits >= 2048:
        return 112
    return 80 if key_bits >= 1024 else 0


def randomness_exponent_bits(key_bits: int, mode: str) -> int:
    """Length of the DJN exponent a for a mode: half the key, or twice the security level."""
    if mode == "djn":
        return -(-key_bits // 2)
    if mode == "djn-short":
        return 2 * max(security_bits(key_bits), 64)
    raise CryptoError(f"unknown randomness mode {mode!r}; expected one of {', '.join(RANDOMNESS_MODES)}")


def check_mode(mode: str) -> str:
    if mode not in RANDOMNESS_MODES:
        raise CryptoError(f"unknown randomness mode {mode!r}; expected one of {', '.join(RANDOMNESS_MODES)}")
    return mode


@dataclass(frozen=True, eq=False)
class PublicKey:
    """A Paillier public key: the modulus n (g = n + 1) and the DJN randomiser base h_s.

    Attributes:
        n: The modulus, a product of two primes of equal size.
        h_s: h^n mod n^2 for h = -x^2 mod n: the fixed base of DJN randomisation.
    """

    n: gmpy2.mpz
    h_s: gmpy2.mpz

    def __post_init__(self):
        if self.n < 2**(MIN_TEST_KEY_BITS - 1) or self.n % 2 == 0:
            raise CryptoError(f"invalid Paillier modulus: need an odd n of at least {MIN_TEST_KEY_BITS} bits")
        if not 1 < self.h_s < self.n_square or gmpy2.gcd(self.h_s, self.n) != 1:
            raise CryptoError("invalid public key: the randomiser base h_s is not a unit mod n^2")

    @property
    def bits(self) -> int:
        return int(self.n.bit_length())

    @cached_property
    def n_square(self) -> gmpy2.mpz:
        return self.n * self.n

    @cached_property
    def max_plaintext(self) -> int:
        """Largest |m| of a signed plaintext: (n - 1) // 2."""
        return int((self.n - 1) // 2)

    @cached_property
    def fingerprint(self) -> bytes:
        """16 bytes that identify the key (SHA-256 of n and h_s), stored with ciphertexts."""
        size = (self.bits + 7) // 8
        digest = hashlib.sha256(int(self.n).to_bytes(size, "big") + int(self.h_s).to_bytes(2 * size, "big"))
        return digest.digest()[:16]

    def __eq__(self, other: object) -> bool:
        return isinstance(other, PublicKey) and self.n == other.n and self.h_s == other.h_s

    def __hash__(self) -> int:
        return hash((self.n, self.h_s))

    # Encryption.
    def randomiser(self, mode: str = DEFAULT_MODE) -> gmpy2.mpz:
        """A fresh random n-th residue R mod n^2 drawn as `mode` says (see the module docstring)."""
        if check_mode(mode) == "classic":
            return gmpy2.powmod(_random_unit(self.n), self.n, self.n_square)
        bits = randomness_exponent_bits(self.bits, mode)
        return shared_table(self.h_s, self.n_square, bits).power(secrets.randbits(bits))

    def encode_plaintext(self, m: int) -> gmpy2.mpz:
        """g^m mod n^2 = 1 + (m mod n) * n for a signed m with |m| <= max_plaintext."""
        if abs(m) > self.max_plaintext:
            raise CryptoError(f"plaintext of {int(m).bit_length()} bits does not fit a {self.bits}-bit key")
        return 1 + (gmpy2.mpz(m) % self.n) * self.n

    def encrypt(self, m: int, mode: str = DEFAULT_MODE) -> gmpy2.mpz:
        """Encrypt a signed integer |m| <= max_plaintext."""
        return self.encode_plaintext(m) * self.randomiser(mode) % self.n_square

    # Homomorphic operations on ciphertexts under this key.
    def add(self, c1: gmpy2.mpz, c2: gmpy2.mpz) -> gmpy2.mpz:
        """Enc(m1) , Enc(m2) -> Enc(m1 + m2)."""
        return c1 * c2 % self.n_square

    def add_plain(self, c: gmpy2.mpz, m: int) -> gmpy2.mpz:
        """Enc(m1), m -> Enc(m1 + m); deterministic, so re-randomise before sending it on."""
        return c * self.encode_plaintext(m) % self.n_square

    def multiply(self, c: gmpy2.mpz, k: int) -> gmpy2.mpz:
        """Enc(m), k -> Enc(k * m) for any integer k (a negative k inverts c first)."""
        if k < 0:
            return gmpy2.powmod(self.negate(c), -k, self.n_square)
        return gmpy2.powmod(c, k, self.n_square)

    def negate(self, c: gmpy2.mpz) -> gmpy2.mpz:
        """Enc(m) -> Enc(-m)."""
        return gmpy2.invert(c, self.n_square)

    def rerandomise(self, c: gmpy2.mpz, mode: str = DEFAULT_MODE) -> gmpy2.mpz:
        """The same plaintext under fresh randomness: unlinkable to c for anyone without the key."""
        return c * self.randomiser(mode) % self.n_square

    def check_ciphertext(self, c: int) -> gmpy2.mpz:
        """c as an mpz if it can be a ciphertext under this key (0 < c < n^2), else CryptoError."""
        c = gmpy2.mpz(c)
        if not 0 < c < self.n_square:
            raise CryptoError(f"not a ciphertext of this {self.bits}-bit key: value outside (0, n^2)")
        return c


@dataclass(frozen=True, eq=False)
class PrivateKey:
    """The factors of n: decryption (CRT) and faster CRT encryption for the key holder.

    Attributes:
        public_key: The matching public key.
        p, q: The prime factors of n.
    """

    public_key: PublicKey
    p: gmpy2.mpz
    q: gmpy2.mpz

    def __post_init__(self):
        if self.p * self.q != self.public_key.n or self.p == self.q or min(self.p, self.q) < 3:
            raise CryptoError("invalid private key: p * q is not the public modulus n")
        # The n-th residues are exactly the units whose order divides phi(n); a base outside them
        # would add a plaintext to every DJN encryption.
        if gmpy2.powmod(self.public_key.h_s, (self.p - 1) * (self.q - 1), self.public_key.n_square) != 1:
            raise CryptoError("invalid key pair: the public randomiser base h_s is not an n-th residue")

    @cached_property
    def _crt(self) -> dict:
        p, q = self.p, self.q
        p2, q2 = p * p, q * q
        n = self.public_key.n
        return {
            "p2": p2, "q2": q2,
            # h_p = L_p(g^(p-1) mod p^2)^-1 mod p with L_p(x) = (x - 1) / p; g = n + 1.
            "hp": gmpy2.invert((gmpy2.powmod(n + 1, p - 1, p2) - 1) // p, p),
            "hq": gmpy2.invert((gmpy2.powmod(n + 1, q - 1, q2) - 1) // q, q),
            "q_inv_p": gmpy2.invert(q, p),
            "q2_inv_p2": gmpy2.invert(q2, p2),
            "hs_p2": self.public_key.h_s % p2, "hs_q2": self.public_key.h_s % q2,
        }

    def decrypt(self, c: int) -> int:
        """The signed plaintext of c, in (-n/2, n/2]."""
        c = self.public_key.check_ciphertext(c)
        crt = self._crt
        return self._combine(gmpy2.powmod(c % crt["p2"], self.p - 1, crt["p2"]),
                             gmpy2.powmod(c % crt["q2"], self.q - 1, crt["q2"]))

    def decrypt_many(self, ciphertexts: Sequence[int]) -> list[int]:
        """Signed plaintexts of many ciphertexts (gmpy2 runs the exponentiations in one C loop)."""
        crt = self._crt
        checked = [self.public_key.check_ciphertext(c) for c in ciphertexts]
        up = gmpy2.powmod_base_list([c % crt["p2"] for c in checked], self.p - 1, crt["p2"])
        uq = gmpy2.powmod_base_list([c % crt["q2"] for c in checked], self.q - 1, crt["q2"])
        return [self._combine(a, b) for a, b in zip(up, uq)]

    def _combine(self, up: gmpy2.mpz, uq: gmpy2.mpz) -> int:
        crt, p, q = self._crt, self.p, self.q
        mp = (up - 1) // p * crt["hp"] % p
        mq = (uq - 1) // q * crt["hq"] % q
        m = mq + q * ((mp - mq) * crt["q_inv_p"] % p)
        return int(m - self.public_key.n) if m > self.public_key.max_plaintext else int(m)

    def randomiser(self, mode: str = DEFAULT_MODE) -> gmpy2.mpz:
        """A random n-th residue mod n^2 with the public-key distribution, computed mod p^2 and q^2."""
        crt = self._crt
        p2, q2 = crt["p2"], crt["q2"]
        if check_mode(mode) == "classic":
            # x -> x^p mod p^2 maps Z*_p one-to-one onto the n-th residues mod p^2 (order p - 1),
            # so a uniform x gives a uniform residue, as r^n does for uniform r in Z*_n.
            rp = gmpy2.powmod(_random_unit(self.p), self.p, p2)
            rq = gmpy2.powmod(_random_unit(self.q), self.q, q2)
        else:
            bits = randomness_exponent_bits(self.public_key.bits, mode)
            a = secrets.randbits(bits)
            rp = shared_table(crt["hs_p2"], p2, bits).power(a)
            rq = shared_table(crt["hs_q2"], q2, bits).power(a)
        return rq + q2 * ((rp - rq) * crt["q2_inv_p2"] % p2)

    def encrypt(self, m: int, mode: str = DEFAULT_MODE) -> gmpy2.mpz:
        """Key-holder encryption: same ciphertext distribution as `PublicKey.encrypt`, faster."""
        pub = self.public_key
        return pub.encode_plaintext(m) * self.randomiser(mode) % pub.n_square


def _random_unit(modulus: gmpy2.mpz) -> gmpy2.mpz:
    while True:
        r = gmpy2.mpz(secrets.randbelow(int(modulus) - 1) + 1)
        if gmpy2.gcd(r, modulus) == 1:
            return r


def keypair_from_primes(p: int, q: int) -> tuple[PublicKey, PrivateKey]:
    """Keys for given primes (the DJN base is drawn fresh); for importing keys, e.g. from `phe`."""
    p, q = gmpy2.mpz(p), gmpy2.mpz(q)
    if not (gmpy2.is_prime(p) and gmpy2.is_prime(q)) or p == q:
        raise CryptoError("a Paillier key needs two distinct primes")
    n = p * q
    if gmpy2.gcd(n, (p - 1) * (q - 1)) != 1:
        raise CryptoError("gcd(n, phi(n)) != 1: these primes cannot make a Paillier key")
    x = _random_unit(n)
    h = (-(x * x)) % n
    public = PublicKey(n=n, h_s=gmpy2.powmod(h, n, n * n))
    return public, PrivateKey(public_key=public, p=p, q=q)


def generate_keypair(bits: int = 2048, *, allow_insecure: bool = False) -> tuple[PublicKey, PrivateKey]:
    """A fresh key pair whose modulus n has exactly `bits` bits, primes from the OS CSPRNG.

    Args:
        bits: 2048 (112-bit security), 3072 (128-bit) or 4096. Smaller even sizes down to
            256 only with `allow_insecure` (for tests: such keys protect nothing).
    """
    if bits not in SECURE_KEY_BITS and not (allow_insecure and bits >= MIN_TEST_KEY_BITS and bits % 2 == 0):
        raise CryptoError(f"key size {bits} bits is not supported; use one of "
                          f"{', '.join(map(str, SECURE_KEY_BITS))}")
    half = bits // 2
    while True:
        p, q = random_prime(half), random_prime(half)
        # Factors far apart (Fermat's method needs |p - q| small); equal-size primes make
        # gcd(n, phi(n)) = 1 automatic, checked again in keypair_from_primes.
        if abs(p - q).bit_length() > half - 64:
            break
    public, private = keypair_from_primes(p, q)
    if public.bits != bits:  # cannot happen: each prime has its two top bits set
        raise CryptoError(f"key generation produced a {public.bits}-bit modulus instead of {bits}")
    return public, private
