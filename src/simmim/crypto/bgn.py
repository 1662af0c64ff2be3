"""BGN-style encryption with one multiplication of two ciphertexts, on BLS12-381 (prime order).

Boneh-Goh-Nissim (2005) needs a composite-order group; Freeman (2010) showed how to get the same
functionality in prime-order groups with an asymmetric pairing. This is that conversion for lifted
ElGamal (as in Attrapadung et al., AsiaCCS 2018), with P, Q the generators of G1, G2 and
g = e(P, Q):

    keys        secret x, y in Z_r*; public X = x P (in G1) and Y = y Q (in G2)
    level 1     Enc_G1(m) = (S, T) = (m P + a X, a P);   Enc_G2(m) = (m Q + b Y, b Q)
                fresh a, b; additively homomorphic; scaling by public integers
    product     (S, T) x (S', T') = (e(S, S'), e(S, T'), e(T, S'), e(T, T')) in GT^4
                an encryption of m * m' in GT: 4 pairings, additively homomorphic again
    decryption  level 1: e(S - x T, Q) = g^m;   GT: c1 c2^-y c3^-x c4^(xy) = g^(m m')
                then m from g^m by baby-step giant-step over a signed window (`bgn_dlog`)

Security: IND-CPA under SXDH (DDH in G1 and in G2), as ElGamal; BLS12-381 gives about 117-120
bits. Level-1 ciphertexts are the inputs (one party's vector in G1, the other's in G2); there is no
second multiplication.

Inner products: sum_i m_i m'_i needs, per GT component, a product of n pairings, e.g.
prod_i e(S_i, S'_i). `pairing.pairing_product` does each with n Miller loops and one final
exponentiation, so a 512-dim product costs 4 multi-pairings of 512 pairs instead of 2048 pairings.

Circuit privacy: a product ciphertext depends on the inputs' randomness and on how it was computed.
`rerandomise` multiplies it by a fresh, uniform encryption of 0, which makes it a uniform
encryption of its plaintext: the key holder who decrypts learns the result and nothing about the
vectors beyond it. Results of `inner_product` are re-randomised unless asked not to be.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass
from functools import cached_property

from simmim.crypto.bgn_dlog import discrete_log, gt_generator
from simmim.crypto.pairing import G1, G1_GENERATOR, G2, G2_GENERATOR, GT, ORDER, pairing, pairing_product, random_scalar
from simmim.errors import CryptoError

DEFAULT_BOUND = 2**31


@dataclass(frozen=True)
class Ciphertext:
    """A level-1 ciphertext (S, T): both points in G1 (a left operand) or both in G2 (a right operand)."""

    s: G1 | G2
    t: G1 | G2

    def __post_init__(self):
        if type(self.s) is not type(self.t) or type(self.s) not in (G1, G2):
            raise CryptoError("a BGN ciphertext is two points of the same group, G1 or G2")

    @property
    def group(self) -> type:
        return type(self.s)

    def _check(self, other: object) -> Ciphertext:
        if not isinstance(other, Ciphertext) or other.group is not self.group:
            raise CryptoError(f"cannot combine a {self.group.__name__} ciphertext with {type(other).__name__}")
        return other

    def __add__(self, other: Ciphertext) -> Ciphertext:
        other = self._check(other)
        return Ciphertext(self.s + other.s, self.t + other.t)

    def __sub__(self, other: Ciphertext) -> Ciphertext:
        other = self._check(other)
        return Ciphertext(self.s - other.s, self.t - other.t)

    def __neg__(self) -> Ciphertext:
        return Ciphertext(-self.s, -self.t)

    def scale(self, k: int) -> Ciphertext:
        """Enc(m) -> Enc(k m) for a public integer k; re-randomise before passing it on."""
        return Ciphertext(self.s.times_public(k), self.t.times_public(k))


@dataclass(frozen=True)
class ProductCiphertext:
    """A level-2 ciphertext: four GT elements encrypting a sum of products."""

    parts: tuple[GT, GT, GT, GT]

    def __post_init__(self):
        if len(self.parts) != 4 or not all(isinstance(p, GT) for p in self.parts):
            raise CryptoError("a BGN product ciphertext is four GT elements")

    def __add__(self, other: ProductCiphertext) -> ProductCiphertext:
        if not isinstance(other, ProductCiphertext):
            raise CryptoError(f"cannot add a product ciphertext and {type(other).__name__}")
        return ProductCiphertext(tuple(a * b for a, b in zip(self.parts, other.parts)))

    def __neg__(self) -> ProductCiphertext:
        return ProductCiphertext(tuple(p.inverse() for p in self.parts))

    def __sub__(self, other: ProductCiphertext) -> ProductCiphertext:
        return self + (-other)

    def scale(self, k: int) -> ProductCiphertext:
        """Enc(m) -> Enc(k m) for a public integer k; re-randomise before passing it on."""
        return ProductCiphertext(tuple(p**k for p in self.parts))


@dataclass(frozen=True, eq=False)
class PublicKey:
    """X = x P in G1 and Y = y Q in G2: enough to encrypt, compute on ciphertexts and re-randomise."""

    x_g1: G1
    y_g2: G2

    def __post_init__(self):
        if not isinstance(self.x_g1, G1) or not isinstance(self.y_g2, G2) or self.x_g1.is_zero() \
                or self.y_g2.is_zero():
            raise CryptoError("invalid BGN public key: need non-zero points X in G1 and Y in G2")

    def to_bytes(self) -> bytes:
        return self.x_g1.to_bytes() + self.y_g2.to_bytes()

    @cached_property
    def fingerprint(self) -> bytes:
        """16 bytes that identify the key (SHA-256 of X and Y), stored with ciphertexts."""
        return hashlib.sha256(b"SimMIM BGN public key" + self.to_bytes()).digest()[:16]

    def __eq__(self, other: object) -> bool:
        return isinstance(other, PublicKey) and self.to_bytes() == other.to_bytes()

    def __hash__(self) -> int:
        return hash(self.to_bytes())

    @cached_property
    def _gt_bases(self) -> tuple[GT, GT, GT]:
        """g^x, g^y, g^(xy) as e(X, Q), e(P, Y), e(X, Y): what a fresh encryption of 0 in GT needs."""
        return pairing(self.x_g1, G2_GENERATOR), pairing(G1_GENERATOR, self.y_g2), pairing(self.x_g1, self.y_g2)

    def encrypt_g1(self, m: int) -> Ciphertext:
        """Enc(m) in G1, the left operand of a product: (m P + a X, a P)."""
        a = random_scalar()
        return Ciphertext(G1_GENERATOR.times(m) + self.x_g1.times(a), G1_GENERATOR.times(a))

    def encrypt_g2(self, m: int) -> Ciphertext:
        """Enc(m) in G2, the right operand of a product: (m Q + b Y, b Q)."""
        b = random_scalar()
        return Ciphertext(G2_GENERATOR.times(m) + self.y_g2.times(b), G2_GENERATOR.times(b))

    def encrypt_zero_gt(self) -> ProductCiphertext:
        """A uniform encryption of 0 in GT: (g^(yv + xu - xyw), g^v, g^u, g^w) for fresh u, v, w.

        The encryptions of m in GT form the 3-dimensional set {c : c1 c2^-y c3^-x c4^(xy) = g^m};
        (u, v, w) runs over it uniformly, which is what makes `rerandomise` hide everything else."""
        g = gt_generator()
        gx, gy, gxy = self._gt_bases
        u, v, w = random_scalar(), random_scalar(), random_scalar()
        return ProductCiphertext((gy**v * gx**u * (gxy**w).inverse(), g**v, g**u, g**w))

    def rerandomise(self, c: ProductCiphertext | Ciphertext) -> ProductCiphertext | Ciphertext:
        """The same plaintext under fresh, uniform randomness: unlinkable to how c was computed."""
        if isinstance(c, ProductCiphertext):
            return c + self.encrypt_zero_gt()
        if isinstance(c, Ciphertext):
            return c + (self.encrypt_g1(0) if c.group is G1 else self.encrypt_g2(0))
        raise CryptoError(f"cannot re-randomise {type(c).__name__}")


@dataclass(frozen=True, eq=False)
class PrivateKey:
    """The secrets x and y behind a public key; decryption."""

    public_key: PublicKey
    x: int
    y: int

    def __post_init__(self):
        if not (0 < self.x < ORDER and 0 < self.y < ORDER):
            raise CryptoError("invalid BGN private key: x and y must be in [1, r)")
        if G1_GENERATOR.times(self.x) != self.public_key.x_g1 or G2_GENERATOR.times(self.y) != self.public_key.y_g2:
            raise CryptoError("invalid BGN key pair: the private key does not match the public key")

    def decrypt(self, c: Ciphertext | ProductCiphertext, bound: int = DEFAULT_BOUND,
                table_bits: int | None = None) -> int:
        """The integer m in [-bound, bound] that c encrypts; CryptoError if it lies outside.

        Decryption time grows with the window (see `bgn_dlog`): +-2^31 takes milliseconds once the
        table for it exists (built on first use, about a second)."""
        return discrete_log(self.decrypt_to_gt(c), bound, table_bits)

    def decrypt_to_gt(self, c: Ciphertext | ProductCiphertext) -> GT:
        """g^m for the plaintext m of c (no discrete logarithm yet)."""
        if isinstance(c, ProductCiphertext):
            c1, c2, c3, c4 = c.parts
            return c1 * (c2**self.y).inverse() * (c3**self.x).inverse() * c4 ** (self.x * self.y % ORDER)
        if isinstance(c, Ciphertext):
            if c.group is G1:
                return pairing(c.s - c.t.times(self.x), G2_GENERATOR)
            return pairing(G1_GENERATOR, c.s - c.t.times(self.y))
        raise CryptoError(f"cannot decrypt {type(c).__name__}")


def generate_keypair() -> tuple[PublicKey, PrivateKey]:
    """A fresh key pair; x and y from the OS CSPRNG."""
    x, y = random_scalar(), random_scalar()
    public = PublicKey(x_g1=G1_GENERATOR.times(x), y_g2=G2_GENERATOR.times(y))
    return public, PrivateKey(public_key=public, x=x, y=y)


def multiply(left: Ciphertext, right: Ciphertext, public_key: PublicKey, *,
             rerandomise: bool = True) -> ProductCiphertext:
    """Enc_G1(m) x Enc_G2(m') -> Enc_GT(m m')."""
    return inner_product([left], [right], public_key, rerandomise=rerandomise)


def inner_product(left: Sequence[Ciphertext], right: Sequence[Ciphertext], public_key: PublicKey, *,
                  plus_left: Sequence[Ciphertext] = (), plus_right: Sequence[Ciphertext] = (),
                  rerandomise: bool = True) -> ProductCiphertext:
    """Enc_GT(sum_i l_i r_i + sum plus_left + sum plus_right) from G1 ciphertexts l_i and G2 ciphertexts r_i.

    `plus_left` (G1) and `plus_right` (G2) are level-1 ciphertexts added to the result: each is
    lifted to GT by pairing it with the trivial encryption of 1 on the other side, (Q, 0) or (P, 0),
    inside the same pairing products, so they cost one extra pair per component at most.
    """
    left, right = list(left), list(right)
    if len(left) != len(right) or not left:
        raise CryptoError(f"an inner product needs two non-empty vectors of equal length, got {len(left)} "
                          f"and {len(right)}")
    _expect(left + list(plus_left), G1, "left")
    _expect(right + list(plus_right), G2, "right")
    s_left, t_left = [c.s for c in left], [c.t for c in left]
    s_right, t_right = [c.s for c in right], [c.t for c in right]
    # Lifted terms: sum_j e(S_j, Q) joins c1 and sum_j e(T_j, Q) joins c3 (one pair each, points summed
    # first by bilinearity); the right-hand terms join c1 and c2 through e(P, S'_k) and e(P, T'_k).
    extra_1 = ([_sum(c.s for c in plus_left)], [G2_GENERATOR]) if plus_left else ([], [])
    extra_3 = ([_sum(c.t for c in plus_left)], [G2_GENERATOR]) if plus_left else ([], [])
    extra_1r = ([G1_GENERATOR], [_sum(c.s for c in plus_right)]) if plus_right else ([], [])
    extra_2 = ([G1_GENERATOR], [_sum(c.t for c in plus_right)]) if plus_right else ([], [])
    result = ProductCiphertext((
        pairing_product(s_left + extra_1[0] + extra_1r[0], s_right + extra_1[1] + extra_1r[1]),
        pairing_product(s_left + extra_2[0], t_right + extra_2[1]),
        pairing_product(t_left + extra_3[0], s_right + extra_3[1]),
        pairing_product(t_left, t_right),
    ))
    return public_key.rerandomise(result) if rerandomise else result


def _expect(ciphertexts: Sequence[Ciphertext], group: type, side: str) -> None:
    for c in ciphertexts:
        if not isinstance(c, Ciphertext) or c.group is not group:
            raise CryptoError(f"the {side} operands of a product must be {group.__name__} ciphertexts "
                              f"(encrypt them with encrypt_{group.__name__.lower()})")


def _sum(points):
    points = iter(points)
    total = next(points)
    for point in points:
        total = total + point
    return total
