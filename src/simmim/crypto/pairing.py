"""The pairing groups of BLS12-381 (G1, G2, GT of prime order r) behind one small interface.

BGN (`bgn`) needs only: points added, negated and multiplied by integers, GT elements multiplied
and raised to integers, canonical bytes that are checked on load, and one operation that matters
for speed, `pairing_product` (prod_i e(a_i, b_i)). Everything here goes through this module, so
swapping the binding (e.g. for py-arkworks) touches no other file.

The binding is herumi/mcl as shipped in the `pymcl` wheel. pymcl's Python classes expose the
pairing only as a whole (Miller loop plus final exponentiation, 0.4-0.6 ms each). The same shared
library also exports mcl's documented C API (`mclBn_*`), which has `mclBn_millerLoopVec` and
`mclBn_finalExp`: a product of n pairings then costs n shared-squaring Miller loops and a single
final exponentiation (about 3x less for n = 512). So elements live in mcl's own C structs, driven
through ctypes; `mclBn_init` checks that the struct sizes we declare match the library's build and
refuses otherwise, so a mismatched wheel fails at import, never by corrupting memory.

Security-relevant choices:
- Scalars that may be secret (plaintexts, randomness, key shares) are multiplied with mcl's
  constant-time `mulCT`; `mul` is used only where the scalar is public. GT exponentiation has no
  constant-time variant in mcl's C API, so GT powers (decryption with the secret key, the random
  exponents of re-randomisation) are variable-time.
- Loading bytes: G1/G2 points must decode canonically (re-encoding gives the same bytes), lie on
  the curve and in the order-r subgroup (mcl checks both while `verifyOrder` is on, which this
  module sets); GT elements must satisfy x^r = 1, checked with a generic exponentiation that does
  not assume the element is already in GT.
"""

from __future__ import annotations

import ctypes
import secrets
from collections.abc import Sequence

import pymcl

from simmim.errors import CryptoError

ORDER = int(pymcl.r)  # r, the prime order of G1, G2 and GT (255 bits)
_CURVE_BLS12_381 = 5
_FP_UNITS, _FR_UNITS = 6, 4  # 64-bit limbs of Fp (381 bits) and Fr (255 bits) in this build
_COMPILED_TIME_VAR = _FR_UNITS * 10 + _FP_UNITS  # what mclBn_init compares with the library's build
_FP_BYTES = 8 * _FP_UNITS
_FR_BYTES = 8 * _FR_UNITS

_lib = ctypes.CDLL(pymcl._pymcl.__file__)
if _lib.mclBn_init(_CURVE_BLS12_381, _COMPILED_TIME_VAR) != 0:
    raise ImportError("the mcl library in pymcl was built with other field sizes; BGN needs pymcl==1.0.2")
_lib.mclBn_verifyOrderG1(1)
_lib.mclBn_verifyOrderG2(1)

_Fr = ctypes.c_ubyte * _FR_BYTES
_size_t = ctypes.c_size_t
for _group in ("G1", "G2", "GT"):
    _serialize, _deserialize = getattr(_lib, f"mclBn{_group}_serialize"), getattr(_lib, f"mclBn{_group}_deserialize")
    _serialize.restype = _deserialize.restype = _size_t
    _serialize.argtypes = [ctypes.c_void_p, _size_t, ctypes.c_void_p]  # (buffer, capacity, element)
    _deserialize.argtypes = [ctypes.c_void_p, ctypes.c_void_p, _size_t]  # (element, buffer, length)
_lib.mclBn_millerLoopVec.argtypes = [ctypes.c_void_p, ctypes.c_void_p, ctypes.c_void_p, _size_t]
_lib.mclBn_millerLoopVec.restype = None


def scalar(k: int) -> ctypes.Array:
    """k mod r as mcl's Fr struct (pymcl's Fr(int) would take only int64)."""
    fr = _Fr()
    if _lib.mclBnFr_setLittleEndianMod(fr, (int(k) % ORDER).to_bytes(_FR_BYTES, "little"), _FR_BYTES) != 0:
        raise CryptoError("could not convert a scalar for the pairing library")
    return fr


def random_scalar() -> int:
    """A uniform non-zero scalar mod r from the OS CSPRNG."""
    return secrets.randbelow(ORDER - 1) + 1


class _Element:
    """An element held in an mcl C struct. Subclasses name the struct size, the C prefix and the wire size."""

    __slots__ = ("_c",)
    _STRUCT_BYTES = 0
    WIRE_BYTES = 0
    _PREFIX = ""
    _NAME = ""

    def __init__(self, c: ctypes.Array | None = None):
        self._c = (ctypes.c_ubyte * self._STRUCT_BYTES)() if c is None else c

    def _call(self, operation: str, *arguments):
        result = type(self)()
        getattr(_lib, f"{self._PREFIX}_{operation}")(result._c, *arguments)
        return result

    def __eq__(self, other: object) -> bool:
        return type(other) is type(self) and bool(getattr(_lib, f"{self._PREFIX}_isEqual")(self._c, other._c))

    def __hash__(self) -> int:
        return hash(self.to_bytes())

    def to_bytes(self) -> bytes:
        buffer = (ctypes.c_ubyte * self.WIRE_BYTES)()
        if getattr(_lib, f"{self._PREFIX}_serialize")(buffer, self.WIRE_BYTES, self._c) != self.WIRE_BYTES:
            raise CryptoError(f"could not serialise a {self._NAME} element")
        return bytes(buffer)

    @classmethod
    def from_bytes(cls, data: bytes):
        """The element encoded by `data`; CryptoError unless it is a canonical encoding of a group element."""
        if not isinstance(data, bytes | bytearray) or len(data) != cls.WIRE_BYTES:
            raise CryptoError(f"a {cls._NAME} element takes {cls.WIRE_BYTES} bytes")
        element = cls()
        read = getattr(_lib, f"{cls._PREFIX}_deserialize")(element._c, bytes(data), len(data))
        if read != len(data) or element.to_bytes() != bytes(data) or not element._in_subgroup():
            raise CryptoError(f"not a {cls._NAME} element of order r (off the curve, outside the subgroup "
                              "or not canonically encoded)")
        return element

    def _in_subgroup(self) -> bool:
        return True  # mcl checks curve and subgroup membership of points while deserialising

    def __repr__(self) -> str:
        return f"{self._NAME}({self.to_bytes()[:8].hex()}...)"


class _Point(_Element):
    """A point of G1 or G2 (additive notation)."""

    __slots__ = ()

    def __add__(self, other):
        return self._call("add", self._c, other._c)

    def __sub__(self, other):
        return self._call("sub", self._c, other._c)

    def __neg__(self):
        return self._call("neg", self._c)

    def times(self, k: int):
        """k * self in constant time: use for secret scalars (plaintexts, randomness, keys)."""
        return self._call("mulCT", self._c, scalar(k))

    def times_public(self, k: int):
        """k * self, faster and variable-time: only for public scalars."""
        return self._call("mul", self._c, scalar(k))

    def is_zero(self) -> bool:
        return bool(getattr(_lib, f"{self._PREFIX}_isZero")(self._c))


class G1(_Point):
    __slots__ = ()
    _STRUCT_BYTES, WIRE_BYTES, _PREFIX, _NAME = 3 * _FP_BYTES, _FP_BYTES, "mclBnG1", "G1"


class G2(_Point):
    __slots__ = ()
    _STRUCT_BYTES, WIRE_BYTES, _PREFIX, _NAME = 6 * _FP_BYTES, 2 * _FP_BYTES, "mclBnG2", "G2"


class GT(_Element):
    """An element of GT, the order-r subgroup of Fp12* (multiplicative notation)."""

    __slots__ = ()
    _STRUCT_BYTES = WIRE_BYTES = 12 * _FP_BYTES
    _PREFIX, _NAME = "mclBnGT", "GT"

    @classmethod
    def one(cls) -> GT:
        element = cls()
        _lib.mclBnGT_setInt(element._c, ctypes.c_int64(1))
        return element

    def __mul__(self, other: GT) -> GT:
        return self._call("mul", self._c, other._c)

    def __truediv__(self, other: GT) -> GT:
        return self._call("div", self._c, other._c)

    def inverse(self) -> GT:
        return self._call("inv", self._c)  # conjugation: valid because every GT here has order r

    def __pow__(self, k: int) -> GT:
        return self._call("pow", self._c, scalar(k))

    def is_one(self) -> bool:
        return bool(_lib.mclBnGT_isOne(self._c))

    def _in_subgroup(self) -> bool:
        # x^(r-1) * x == 1 <=> x^r == 1; powGeneric does not assume x is already in GT, as pow does.
        power = self._call("powGeneric", self._c, scalar(ORDER - 1))
        return (power * self).is_one()

    def raw_key(self) -> int:
        """64 bits of mcl's internal (reduced Montgomery) form: a cheap hash for dlog tables.

        Equal elements have equal keys; a key match is only a candidate, checked by the caller."""
        return ctypes.c_uint64.from_buffer(self._c).value


G1_GENERATOR = G1.from_bytes(pymcl.g1.serialize())
G2_GENERATOR = G2.from_bytes(pymcl.g2.serialize())


def pairing(a: G1, b: G2) -> GT:
    result = GT()
    _lib.mclBn_pairing(result._c, a._c, b._c)
    return result


def pairing_product(left: Sequence[G1], right: Sequence[G2]) -> GT:
    """prod_i e(left_i, right_i): n Miller loops sharing their squarings, then one final exponentiation."""
    if len(left) != len(right):
        raise CryptoError(f"a pairing product needs as many G1 as G2 points, got {len(left)} and {len(right)}")
    count = len(left)
    if count == 0:
        return GT.one()
    g1s = (ctypes.c_ubyte * (G1._STRUCT_BYTES * count))()
    g2s = (ctypes.c_ubyte * (G2._STRUCT_BYTES * count))()
    base1, base2 = ctypes.addressof(g1s), ctypes.addressof(g2s)
    for i, (a, b) in enumerate(zip(left, right)):
        ctypes.memmove(base1 + i * G1._STRUCT_BYTES, a._c, G1._STRUCT_BYTES)
        ctypes.memmove(base2 + i * G2._STRUCT_BYTES, b._c, G2._STRUCT_BYTES)
    miller, result = GT(), GT()
    _lib.mclBn_millerLoopVec(miller._c, g1s, g2s, count)
    _lib.mclBn_finalExp(result._c, miller._c)
    return result


def gt_powers(base: GT, start: GT, count: int) -> list[int]:
    """raw_key() of start * base^i for i in [0, count): the inner loop of baby-step giant-step."""
    keys = []
    current = GT()
    ctypes.memmove(current._c, start._c, GT._STRUCT_BYTES)
    mul, raw, step = _lib.mclBnGT_mul, current._c, base._c
    low_word = ctypes.c_uint64.from_buffer(raw)
    for _ in range(count):
        keys.append(low_word.value)
        mul(raw, raw, step)
    return keys
