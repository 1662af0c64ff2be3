"""Encrypted embeddings under BGN: inner products and squared distances of two encrypted vectors.

A query embedding is encrypted in G1 (by the key holder, say) and gallery embeddings in G2 (by
anyone with the public key); whoever holds both computes encrypted scores without seeing either
vector, and only the key holder can read the scores.

Fixed point (`ProductEncoding`). Each value becomes X_i = round(x_i 2^s). Nothing rescales inside
the exponent, so a product carries scale 2^(2s): sum_i X_i Y_i ~ 2^(2s) <x, y>. Decryption finds it
only inside its window +-2^w, hence the bit budget

    2 s + log2 max|result| <= w

e.g. unit vectors (|<x, y>| <= 1): s = 15 at w = 31; squared distances (<= 4): s = 14 at w = 31 or
s = 15 at w = 33. The encoder enforces it from a declared bound on the vectors' norms (`max_norm`):
|<x, y>| <= max_norm^2 and ||x - y||^2 <= 4 max_norm^2, with a little slack for rounding.
Precision: each rounded value is off by at most 2^-(s+1), so an inner product is off by at most
2^-(s+1) (||x||_1 + ||y||_1) + d 2^-(2s+2) (the bound the tests check); for random unit vectors
the errors mostly cancel and the error is nearer 2^-s (docs/crypto.md has measured figures).

Squared distances use ||x - y||^2 = ||x||^2 + ||y||^2 - 2 <x, y>: each side encrypts its own
integer ||X||^2 next to its values, and `bgn.inner_product` adds both norms inside the same pairing
products, so a distance costs the same as an inner product.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from simmim.crypto.bgn import Ciphertext, PrivateKey, ProductCiphertext, PublicKey, inner_product
from simmim.crypto.encoding import FixedPoint
from simmim.crypto.pairing import G1, G2
from simmim.errors import CryptoError

METRICS = ("inner-product", "squared-distance")
QUERY, GALLERY = "query", "gallery"  # encrypted in G1 (left operand) and in G2 (right operand)
_ROUNDING_SLACK = 1 + 2**-8  # encoded norms may exceed 2^s max_norm by rounding; this much is allowed


@dataclass(frozen=True)
class ProductEncoding:
    """Fixed point for products of two encrypted vectors, with the bit budget 2s + log2|result| <= w.

    Attributes:
        fraction_bits: s, bits after the point of each value; products carry 2s.
        max_norm: Largest Euclidean norm of an encrypted vector (1.0 for unit embeddings).
        window_bits: w, decryption finds results in [-2^w, 2^w] (+-2^31: milliseconds).
    """

    fraction_bits: int = 15
    max_norm: float = 1.0
    window_bits: int = 31

    def __post_init__(self):
        if not 0 <= self.fraction_bits <= 26:
            raise CryptoError(f"fraction_bits must be in [0, 26], got {self.fraction_bits}")
        if not 0 <= self.window_bits <= 46:
            raise CryptoError(f"window_bits must be in [0, 46] (larger windows take minutes to decrypt), "
                              f"got {self.window_bits}")
        if not (math.isfinite(self.max_norm) and self.max_norm > 0):
            raise CryptoError(f"max_norm must be a positive number, got {self.max_norm}")

    @property
    def codec(self) -> FixedPoint:
        return FixedPoint(fraction_bits=self.fraction_bits, max_abs=self.max_norm)

    @property
    def norm_limit(self) -> int:
        """The largest ||X||^2 accepted for an encoded vector X (integers)."""
        return math.floor((self.max_norm * 2**self.fraction_bits * _ROUNDING_SLACK) ** 2)

    def result_bound(self, metric: str) -> int:
        """The largest |integer result| a metric can reach on vectors within `max_norm`."""
        if metric == "inner-product":
            return self.norm_limit  # Cauchy-Schwarz: |<X, Y>| <= ||X|| ||Y||
        if metric == "squared-distance":
            return 4 * self.norm_limit
        raise CryptoError(f"unknown metric {metric!r}; expected one of {', '.join(METRICS)}")

    def check_budget(self, metric: str) -> None:
        """CryptoError unless every result of `metric` fits the decryption window."""
        bound = self.result_bound(metric)
        if bound > 2**self.window_bits:
            raise CryptoError(
                f"{metric} results need {bound.bit_length()} bits (2 x {self.fraction_bits} fraction bits, norms up "
                f"to {self.max_norm}) but the window has {self.window_bits}: lower fraction_bits or raise "
                "window_bits (2s + log2 max|result| <= w)")

    def encode(self, values: np.ndarray) -> np.ndarray:
        """int64 values round(x 2^s); CryptoError for a non-1-D or empty vector, or a norm above max_norm."""
        array = np.asarray(values)
        if array.ndim != 1 or array.size == 0:
            raise CryptoError(f"expected a non-empty 1-D vector, got shape {array.shape}")
        encoded = self.codec.encode(array)
        squared = int(np.dot(encoded.astype(object), encoded.astype(object)))
        if squared > self.norm_limit:
            raise CryptoError(f"vector norm {math.sqrt(squared) / 2**self.fraction_bits:.4g} exceeds max_norm "
                              f"{self.max_norm}: normalise it or raise max_norm")
        return encoded

    def decode(self, value: int) -> float:
        return value / 2 ** (2 * self.fraction_bits)


@dataclass(frozen=True)
class EncryptedEmbedding:
    """An embedding encrypted for products: a query (G1) or a gallery item (G2), with its squared norm."""

    public_key: PublicKey
    side: str
    values: tuple[Ciphertext, ...]
    squared_norm: Ciphertext
    encoding: ProductEncoding

    def __post_init__(self):
        if self.side not in (QUERY, GALLERY):
            raise CryptoError(f"side must be {QUERY!r} or {GALLERY!r}, got {self.side!r}")
        expected = G1 if self.side == QUERY else G2
        if not self.values or not all(isinstance(c, Ciphertext) and c.group is expected
                                      for c in (*self.values, self.squared_norm)):
            raise CryptoError(f"a {self.side} embedding needs non-empty ciphertexts in {expected.__name__}")

    def __len__(self) -> int:
        return len(self.values)


@dataclass(frozen=True)
class EncryptedScore:
    """An encrypted inner product or squared distance: a GT ciphertext with scale 2^(2s)."""

    ciphertext: ProductCiphertext
    encoding: ProductEncoding
    metric: str


def encrypt_embedding(public_key: PublicKey, values: np.ndarray, *, side: str = QUERY,
                      encoding: ProductEncoding | None = None) -> EncryptedEmbedding:
    """Encrypt a vector as a query (in G1) or a gallery item (in G2); the squared norm is encrypted too."""
    encoding = encoding or ProductEncoding()
    encoded = encoding.encode(values)
    if side == QUERY:
        encrypt = public_key.encrypt_g1
    elif side == GALLERY:
        encrypt = public_key.encrypt_g2
    else:
        raise CryptoError(f"side must be {QUERY!r} or {GALLERY!r}, got {side!r}")
    squared_norm = int(np.dot(encoded.astype(object), encoded.astype(object)))
    return EncryptedEmbedding(public_key, side, tuple(encrypt(int(v)) for v in encoded), encrypt(squared_norm),
                              encoding)


def encrypted_score(query: EncryptedEmbedding, item: EncryptedEmbedding, metric: str = "inner-product", *,
                    rerandomise: bool = True) -> EncryptedScore:
    """Enc(<x, y>) or Enc(||x - y||^2) from an encrypted query and an encrypted gallery item.

    Checks first that the result fits the decryption window (`ProductEncoding.check_budget`)."""
    if query.side != QUERY or item.side != GALLERY:
        raise CryptoError("scores need a query embedding (G1) and a gallery embedding (G2), in that order")
    if query.public_key != item.public_key or query.encoding != item.encoding or len(query) != len(item):
        raise CryptoError(f"query and gallery item do not match: same key, encoding and length needed "
                          f"(lengths {len(query)} and {len(item)})")
    encoding = query.encoding
    encoding.check_budget(metric)
    if metric == "inner-product":
        result = inner_product(query.values, item.values, query.public_key, rerandomise=rerandomise)
    else:
        # -2 <X, Y> + ||X||^2 + ||Y||^2: the factor -2 goes on the query's points before the pairings,
        # as -(c + c): a point addition and a negation, far cheaper than a scalar multiplication.
        doubled = [-(c + c) for c in query.values]
        result = inner_product(doubled, item.values, query.public_key, plus_left=[query.squared_norm],
                               plus_right=[item.squared_norm], rerandomise=rerandomise)
    return EncryptedScore(result, encoding, metric)


def match(query: EncryptedEmbedding, gallery: Sequence[EncryptedEmbedding],
          metric: str = "inner-product") -> list[EncryptedScore]:
    """Encrypted scores of one query against every gallery item, each re-randomised."""
    return [encrypted_score(query, item, metric) for item in gallery]


def decrypt_score(private_key: PrivateKey, score: EncryptedScore) -> float:
    """The score as a float (the integer result over 2^(2s)); CryptoError outside the window."""
    bound = 2**score.encoding.window_bits
    return score.encoding.decode(private_key.decrypt(score.ciphertext, bound=bound))
