"""Client-level DP-FedAvg (McMahan et al., ICLR 2018): the party is the privacy unit.

Every sampled party clips its update to L2 norm C; the server adds N(0, (sigma C)^2 I) to the sum of
the clipped updates (after secure aggregation, to the only thing it sees) and divides by the
*expected* number of parties, q N, not by how many answered, so one party changes the average by at
most C / (q N) whatever the others do. Parties join each round by Poisson sampling with rate q, so
the rounds compose as the Poisson-subsampled Gaussian mechanism, accounted by `simmim.privacy.accounting`
(PLD, checked against dp-accounting's reference in the privacy tests).

Trust: the noise is added by the server. Secure aggregation hides each party's update from it; the
DP guarantee protects against everyone who sees the released model, and against the server only if
it adds the noise as told (docs/federated.md).
"""

from __future__ import annotations

import functools
import secrets
from dataclasses import dataclass

import numpy as np

from simmim.errors import PrivacyError
from simmim.federated.settings import FedSettings
from simmim.privacy import accounting


@dataclass(frozen=True)
class ClientLevelDp:
    """The noise and accounting of one run; `noise_multiplier` 0 means no DP (epsilon infinite)."""

    noise_multiplier: float
    sample_rate: float
    delta: float
    budget: float  # epsilon the run may not exceed; 0 for none

    @classmethod
    def for_run(cls, settings: FedSettings) -> ClientLevelDp:
        """Calibrates the noise when only a budget is given, so that all rounds fit within it."""
        sigma = settings.noise_multiplier
        if settings.epsilon > 0 and sigma == 0:
            sigma = accounting.calibrate_noise(epsilon=settings.epsilon, delta=settings.delta,
                                               sample_rate=settings.sample_rate, steps=settings.rounds)
        return cls(sigma, settings.sample_rate, settings.delta, settings.epsilon)

    @property
    def private(self) -> bool:
        return self.noise_multiplier > 0

    @functools.cache  # noqa: B019 - a frozen, hashable value; each round asks for the next two counts again
    def epsilon(self, rounds: int) -> float | None:
        """Epsilon after `rounds` rounds (0 rounds: 0; None without noise: no guarantee)."""
        if not self.private:
            return None
        if rounds == 0:
            return 0.0
        return accounting.epsilon(sample_rate=self.sample_rate, noise_multiplier=self.noise_multiplier,
                                  steps=rounds, delta=self.delta)

    def allows(self, rounds: int) -> bool:
        """Whether `rounds` rounds stay within the budget (always, without one)."""
        return not self.budget or self.epsilon(rounds) <= self.budget

    def noisy_average(self, total: np.ndarray, clip: float, parties: int) -> np.ndarray:
        """(sum + N(0, (sigma clip)^2)) / (q parties), in float64; the plain mean over `parties` without DP."""
        expected = self.sample_rate * parties
        if expected <= 0:
            raise PrivacyError("no parties to average over")
        total = np.asarray(total, dtype=np.float64)
        if self.private:
            total = total + gaussian_noise(total.shape, self.noise_multiplier * clip)
        return total / expected


def gaussian_noise(shape: tuple[int, ...], std: float) -> np.ndarray:
    """Gaussian noise from a generator seeded by the OS CSPRNG (fresh 256 bits per call)."""
    generator = np.random.Generator(np.random.PCG64(secrets.randbits(256)))
    return generator.normal(0.0, std, size=shape)


def sample_parties(nodes: list[int], rate: float) -> list[int]:
    """Poisson sampling: each node independently with probability `rate` (all of them at rate 1)."""
    if rate >= 1:
        return list(nodes)
    draw = secrets.SystemRandom()
    return [node for node in nodes if draw.random() < rate]
