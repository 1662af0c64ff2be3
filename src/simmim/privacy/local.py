"""Local DP: every record is randomised on its own, before it reaches whoever trains or counts.

Adjacency is replace-one: a unit's value changes into any other value (the usual local-DP
notion; adding or removing a unit changes how many reports there are, which local DP does not
hide). Hence the sensitivity of a clipped vector is twice the clip norm: two vectors of norm at
most C are at most 2C apart.

The guarantee is per privacy unit. When a unit owns several records (`units`), each record gets
the share of the budget that makes the unit's records together meet (epsilon, delta): epsilon
composes across one person's records. Each function returns the guarantee and the event to
record in the budget ledger.

Categorical randomised response draws exactly (`samplers`). Feature noise comes from numpy's
generator seeded from the OS CSPRNG: it is continuous floating-point noise, fine for features
fed to training, but statistics meant for publication belong in `mechanisms`, whose samplers
resist floating-point attacks.
"""

from __future__ import annotations

import math
import random
import secrets
from collections import Counter
from collections.abc import Hashable, Sequence
from dataclasses import dataclass
from fractions import Fraction
from typing import Generic, TypeVar

import numpy as np

from simmim.errors import PrivacyError
from simmim.privacy.accounting import PrivacyEvent, PureDp, SubsampledGaussian, check_positive
from simmim.privacy.mechanisms import analytic_gaussian_sigma, exact_positive
from simmim.privacy.samplers import bernoulli_exp, default_source

T = TypeVar("T")
H = TypeVar("H", bound=Hashable)


@dataclass(frozen=True)
class LocalRelease(Generic[T]):
    """Locally randomised records and their guarantee.

    Attributes:
        values: The randomised records, in input order.
        epsilon: Epsilon per privacy unit (all of a unit's records together), replace-one.
        delta: Delta per privacy unit (0 for pure DP).
        epsilon_per_record: The share of epsilon each record was randomised with (pure-DP
            mechanisms; None for the Gaussian, whose epsilon does not split linearly).
        records_per_unit: Most records any unit owns (the composition count).
        event: What to record in the budget ledger.
    """

    values: T
    epsilon: float
    delta: float
    epsilon_per_record: float | None
    records_per_unit: int
    event: PrivacyEvent


def randomized_response(values: Sequence[H], categories: Sequence[H], epsilon: float | Fraction, *,
                        units: Sequence[str] | None = None, rng: random.Random | None = None) -> LocalRelease[list[H]]:
    """k-ary randomised response: keep the value with probability e^e / (e^e + k - 1), else report
    one of the other k - 1 categories uniformly (e = the per-record epsilon).

    Drawn exactly: propose a uniform category and accept it at once if it is the true value,
    otherwise with probability exp(-e); the accepted report has exactly the k-RR distribution.

    Args:
        values: One category per record.
        categories: The k possible categories, fixed in advance.
        epsilon: Per privacy unit.
        units: The privacy unit of each record; default: each record is its own unit.
        rng: Random source; default the OS CSPRNG.

    Raises:
        PrivacyError: If a value is not a category or a parameter is invalid.
    """
    if len(set(categories)) < 2 or len(set(categories)) != len(categories):
        raise PrivacyError(f"randomised response needs at least 2 distinct categories, got {list(categories)}")
    known = set(categories)
    unknown = [v for v in values if v not in known]
    if unknown:
        raise PrivacyError(f"values {unknown[:5]} are not among the categories {list(categories)}")
    rng = rng or default_source()
    per_unit = _records_per_unit(units, len(values))
    exact_epsilon = exact_positive("epsilon", epsilon)
    per_record = exact_epsilon / per_unit
    reports = [_respond(value, categories, per_record, rng) for value in values]
    return LocalRelease(reports, float(exact_epsilon), 0.0, float(per_record), per_unit,
                        PureDp(float(per_record), per_unit))


def estimate_counts(reports: Sequence[H], categories: Sequence[H], epsilon_per_record: float) -> dict[H, float]:
    """Unbiased estimates of the true count of each category from k-RR reports.

    E[reported count of c] = n_c * p + (n - n_c) * q, with p = e^e / (e^e + k - 1) and
    q = 1 / (e^e + k - 1); solving for n_c gives (reported - n q) / (p - q).
    """
    k, n = len(categories), len(reports)
    keep = keep_probability(epsilon_per_record, k)
    flip = (1 - keep) / (k - 1)
    reported = Counter(reports)
    return {c: (reported[c] - n * flip) / (keep - flip) for c in categories}


def keep_probability(epsilon_per_record: float, k: int) -> float:
    """Probability that k-ary randomised response reports the true value."""
    return 1 / (1 + (k - 1) * math.exp(-epsilon_per_record))


def clip_l1(x: np.ndarray, clip_norm: float) -> np.ndarray:
    """Each row scaled down to L1 norm at most `clip_norm` (rows within it are unchanged)."""
    return _clip_rows(x, clip_norm, np.abs(np.asarray(x, dtype=np.float64)).sum(axis=-1))


def clip_l2(x: np.ndarray, clip_norm: float) -> np.ndarray:
    """Each row scaled down to L2 norm at most `clip_norm` (rows within it are unchanged)."""
    return _clip_rows(x, clip_norm, np.linalg.norm(np.asarray(x, dtype=np.float64), axis=-1))


def laplace_features(x: np.ndarray, *, clip_norm: float, epsilon: float, units: Sequence[str] | None = None,
                     rng: np.random.Generator | None = None) -> LocalRelease[np.ndarray]:
    """Rows L1-clipped to `clip_norm`, plus Laplace noise of scale 2 * clip_norm / e: e-DP per record.

    The L1 sensitivity under replace-one is 2 * clip_norm (an L2 clip would not do: its L1
    sensitivity grows with the square root of the dimension).

    Args:
        x: Features, one row per record.
        clip_norm: L1 bound C.
        epsilon: Per privacy unit; each record gets epsilon / (records per unit).
        units: The privacy unit of each row; default: each row is its own unit.
        rng: Noise generator; default one seeded from the OS CSPRNG.
    """
    check_positive("clip_norm", clip_norm)
    per_unit = _records_per_unit(units, len(x))
    per_record = float(exact_positive("epsilon", epsilon)) / per_unit
    clipped = clip_l1(x, clip_norm)
    noisy = clipped + _generator(rng).laplace(0.0, 2 * clip_norm / per_record, size=clipped.shape)
    return LocalRelease(noisy, float(epsilon), 0.0, per_record, per_unit, PureDp(per_record, per_unit))


def gaussian_features(x: np.ndarray, *, clip_norm: float, epsilon: float, delta: float,
                      units: Sequence[str] | None = None,
                      rng: np.random.Generator | None = None) -> LocalRelease[np.ndarray]:
    """Rows L2-clipped to `clip_norm`, plus Gaussian noise: (epsilon, delta)-DP per unit.

    The L2 sensitivity of one record under replace-one is 2 * clip_norm; m records of a unit with
    the same noise compose exactly into one Gaussian mechanism of sensitivity 2 * clip_norm *
    sqrt(m), so the noise std is the analytic Gaussian sigma for that sensitivity.

    Args:
        x: Features or embeddings, one row per record.
        clip_norm: L2 bound C.
        epsilon: Per privacy unit.
        delta: Per privacy unit.
        units: The privacy unit of each row; default: each row is its own unit.
        rng: Noise generator; default one seeded from the OS CSPRNG.
    """
    check_positive("clip_norm", clip_norm)
    per_unit = _records_per_unit(units, len(x))
    sigma = analytic_gaussian_sigma(epsilon, delta, 2 * clip_norm * math.sqrt(per_unit))
    clipped = clip_l2(x, clip_norm)
    noisy = clipped + _generator(rng).normal(0.0, sigma, size=clipped.shape)
    event = SubsampledGaussian(sample_rate=1.0, noise_multiplier=sigma / clip_norm, steps=per_unit, sensitivity=2.0)
    return LocalRelease(noisy, float(epsilon), float(delta), None, per_unit, event)


def _respond(value: H, categories: Sequence[H], epsilon: Fraction, rng: random.Random) -> H:
    while True:
        proposal = rng.choice(categories)
        if proposal == value or bernoulli_exp(epsilon, rng):
            return proposal


def _records_per_unit(units: Sequence[str] | None, n: int) -> int:
    if units is None:
        return 1
    if len(units) != n:
        raise PrivacyError(f"units has {len(units)} entries for {n} records; give one unit per record")
    return max(Counter(units).values(), default=1)


def _clip_rows(x: np.ndarray, clip_norm: float, norms: np.ndarray) -> np.ndarray:
    check_positive("clip_norm", clip_norm)
    x = np.asarray(x, dtype=np.float64)
    scale = np.minimum(1.0, clip_norm / np.maximum(norms, np.finfo(np.float64).tiny))
    return x * scale[..., None]


def _generator(rng: np.random.Generator | None) -> np.random.Generator:
    return rng if rng is not None else np.random.default_rng(secrets.randbits(128))
