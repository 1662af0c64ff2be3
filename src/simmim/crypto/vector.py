"""Encrypted vectors: numpy arrays encrypted value by value or packed, with homomorphic arithmetic.

An `EncryptedVector` knows its layout, its fixed-point scale and a bound on the magnitude of
every slot. Each operation computes the bound its result would have and refuses, before doing
any work, when that could exceed the slot capacity: a result is exact or it is an error,
never silently wrong. A fresh vector's bound is the codec's declared `value_bound`, never the
largest actual input (the bound travels with the ciphertexts and must not leak anything about
the plaintext). `max_additions` at encryption time buys headroom: a sum of vectors times
integers w_i fits when the sum of |w_i| is at most max_additions.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, replace

import gmpy2
import numpy as np

from simmim.crypto.encoding import FixedPoint, SlotLayout, decode
from simmim.crypto.paillier import DEFAULT_MODE, PrivateKey, PublicKey, check_mode
from simmim.crypto.parallel import map_chunks
from simmim.errors import CryptoError


@dataclass(frozen=True, eq=False)
class EncryptedVector:
    """A vector of `length` fixed-point values encrypted under `public_key`.

    Attributes:
        public_key: The key the ciphertexts are under.
        ciphertexts: One ciphertext per `layout.slots` values.
        length: Number of values.
        layout: Slot width and slots per ciphertext.
        fraction_bits: Fixed-point scale of the values (grows when multiplied by a scaled scalar).
        bound: Upper bound on |slot value|, kept <= layout.capacity by every operation.
    """

    public_key: PublicKey
    ciphertexts: tuple[gmpy2.mpz, ...]
    length: int
    layout: SlotLayout
    fraction_bits: int
    bound: int

    def __post_init__(self):
        if len(self.ciphertexts) != self.layout.plaintext_count(self.length):
            raise CryptoError(f"{len(self.ciphertexts)} ciphertexts cannot hold {self.length} values "
                              f"at {self.layout.slots} per ciphertext")
        if not 0 <= self.bound <= self.layout.capacity:
            raise CryptoError(f"slot bound {self.bound} exceeds the slot capacity {self.layout.capacity}")

    def __len__(self) -> int:
        return self.length

    @property
    def headroom(self) -> int:
        """How many more additions of a vector with the same bound are certain to fit."""
        return (self.layout.capacity - self.bound) // max(self.bound, 1)

    def _result(self, ciphertexts: list, bound: int, fraction_bits: int | None = None) -> EncryptedVector:
        return replace(self, ciphertexts=tuple(ciphertexts), bound=bound,
                       fraction_bits=self.fraction_bits if fraction_bits is None else fraction_bits)

    def _check_bound(self, bound: int, what: str) -> int:
        if bound > self.layout.capacity:
            raise CryptoError(f"{what} could overflow a {self.layout.slot_bits}-bit slot (bound {bound} > "
                              f"capacity {self.layout.capacity}); refused. Encrypt with a larger "
                              "max_additions, a smaller max_abs or fewer fraction_bits")
        return bound

    def _check_compatible(self, other: EncryptedVector) -> None:
        if other.public_key != self.public_key:
            raise CryptoError("cannot combine vectors encrypted under different keys")
        if (other.layout, other.length) != (self.layout, self.length):
            raise CryptoError(f"cannot add vectors of different shapes or layouts: {self.length} values in "
                              f"{self.layout} vs {other.length} in {other.layout}")
        if other.fraction_bits != self.fraction_bits:
            raise CryptoError(f"cannot add vectors of different fixed-point scales ({self.fraction_bits} vs "
                              f"{other.fraction_bits} fraction bits)")

    def __add__(self, other: EncryptedVector | np.ndarray | float | int) -> EncryptedVector:
        if isinstance(other, EncryptedVector):
            self._check_compatible(other)
            bound = self._check_bound(self.bound + other.bound, "this addition")
            n2 = self.public_key.n_square
            return self._result([a * b % n2 for a, b in zip(self.ciphertexts, other.ciphertexts)], bound)
        return self.add_plain(other)

    def __radd__(self, other):
        if isinstance(other, int) and other == 0:  # sum() starts from 0
            return self
        return self.__add__(other)

    def __neg__(self) -> EncryptedVector:
        n2 = self.public_key.n_square
        return self._result([gmpy2.invert(c, n2) for c in self.ciphertexts], self.bound)

    def __sub__(self, other: EncryptedVector | np.ndarray | float | int) -> EncryptedVector:
        if isinstance(other, EncryptedVector):
            return self + (-other)
        return self.add_plain(-np.asarray(other, dtype=np.float64))

    def add_plain(self, values: np.ndarray | float | int) -> EncryptedVector:
        """Add plaintext values (broadcast to the vector's length) at the vector's scale."""
        plain = np.broadcast_to(np.asarray(values, dtype=np.float64), (self.length,))
        encoded = FixedPoint(self.fraction_bits, float(np.abs(plain).max(initial=0.0)) + 1.0).encode(plain)
        bound = self._check_bound(self.bound + int(np.abs(encoded).max(initial=0)), "adding these values")
        pub = self.public_key
        n2 = pub.n_square
        return self._result([c * pub.encode_plaintext(m) % n2
                             for c, m in zip(self.ciphertexts, self.layout.pack(encoded))], bound)

    def __mul__(self, scalar: int) -> EncryptedVector:
        """Multiply every value by an integer (use `scale` for a fractional factor)."""
        if isinstance(scalar, bool) or not isinstance(scalar, int | np.integer):
            return NotImplemented
        scalar = int(scalar)
        bound = self._check_bound(self.bound * abs(scalar), f"multiplying by {scalar}")
        pub = self.public_key
        return self._result([pub.multiply(c, scalar) for c in self.ciphertexts], bound)

    __rmul__ = __mul__

    def scale(self, factor: float, fraction_bits: int = 16) -> EncryptedVector:
        """Multiply by round(factor * 2^fraction_bits); the result has fraction_bits more precision."""
        if not np.isfinite(factor):
            raise CryptoError(f"cannot scale by {factor}")
        integer = int(round(factor * 2**fraction_bits))
        result = self * integer
        return replace(result, fraction_bits=self.fraction_bits + fraction_bits)

    def rerandomise(self, mode: str = DEFAULT_MODE) -> EncryptedVector:
        """Fresh randomness for every ciphertext: do this before passing on a result of add_plain."""
        pub = self.public_key
        return self._result(map_chunks(_rerandomise_chunk, self.ciphertexts, pub, check_mode(mode)), self.bound)


def encrypt_vector(key: PublicKey | PrivateKey, values: np.ndarray, *, codec: FixedPoint | None = None,
                   max_additions: int = 1, packed: bool = True, mode: str = DEFAULT_MODE,
                   workers: int | None = None) -> EncryptedVector:
    """Encrypt a 1-D array.

    Args:
        key: A public key, or the private key for faster CRT encryption by the key holder.
        values: Floats (or integers) with |x| <= codec.max_abs.
        codec: Fixed-point encoding; default 24 fraction bits, |x| <= 256.
        max_additions: How many vectors like this one the result must be able to absorb in sums
            (packing leaves that much headroom per slot); a multiplication by k counts as |k|.
        packed: Many values per ciphertext (aggregation); False for one value per ciphertext
            (needed for linear layers and dot products).
        mode: Randomness: "djn" (default), "djn-short" (opt-in, short-exponent assumption) or
            "classic"; see `paillier`.
        workers: Processes to use; None: the cores this process may use, for vectors long enough
            to gain from them (`parallel`).
    """
    codec = codec or FixedPoint()
    array = np.asarray(values)
    if array.ndim != 1:
        raise CryptoError(f"expected a 1-D vector, got shape {array.shape}")
    if array.size == 0:
        raise CryptoError("cannot encrypt an empty vector")
    public = key.public_key if isinstance(key, PrivateKey) else key
    encoded = codec.encode(array)
    layout = (SlotLayout.packed(public.bits, codec.value_bound, max_additions) if packed
              else SlotLayout.unpacked(public.bits))
    ciphertexts = map_chunks(_encrypt_chunk, layout.pack(encoded), key, check_mode(mode), workers=workers)
    return EncryptedVector(public_key=public, ciphertexts=tuple(ciphertexts), length=int(array.size),
                           layout=layout, fraction_bits=codec.fraction_bits,
                           bound=codec.value_bound)


def decrypt_vector(private_key: PrivateKey, vector: EncryptedVector, *, workers: int | None = None) -> np.ndarray:
    """The float64 values of `vector`, exact up to the fixed-point rounding of its inputs."""
    return decode(decrypt_integers(private_key, vector, workers=workers), vector.fraction_bits)


def decrypt_integers(private_key: PrivateKey, vector: EncryptedVector, *, workers: int | None = None) -> np.ndarray:
    """The fixed-point integers of `vector` (value * 2^fraction_bits), exactly."""
    if private_key.public_key != vector.public_key:
        raise CryptoError("this private key does not match the key the vector was encrypted under")
    plaintexts = map_chunks(_decrypt_chunk, vector.ciphertexts, private_key, workers=workers)
    return vector.layout.unpack(plaintexts, vector.length)


def sum_vectors(vectors: Iterable[EncryptedVector]) -> EncryptedVector:
    """The homomorphic sum of several vectors; the overflow check covers the whole sum up front."""
    vectors = list(vectors)
    if not vectors:
        raise CryptoError("nothing to sum")
    first = vectors[0]
    for other in vectors[1:]:
        first._check_compatible(other)
    bound = first._check_bound(sum(v.bound for v in vectors), f"summing these {len(vectors)} vectors")
    n2 = first.public_key.n_square
    columns = list(zip(*(v.ciphertexts for v in vectors)))
    summed = []
    for column in columns:
        acc = column[0]
        for c in column[1:]:
            acc = acc * c % n2
        summed.append(acc)
    return first._result(summed, bound)


def _encrypt_chunk(plaintexts: list[int], key: PublicKey | PrivateKey, mode: str) -> list[gmpy2.mpz]:
    return [key.encrypt(m, mode) for m in plaintexts]


def _decrypt_chunk(ciphertexts: list[gmpy2.mpz], private_key: PrivateKey) -> list[int]:
    return private_key.decrypt_many(ciphertexts)


def _rerandomise_chunk(ciphertexts: list[gmpy2.mpz], public_key: PublicKey, mode: str) -> list[gmpy2.mpz]:
    return [public_key.rerandomise(c, mode) for c in ciphertexts]
