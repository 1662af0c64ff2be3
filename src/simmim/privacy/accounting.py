"""Privacy accounting through Google's `dp-accounting`: epsilon of DP-SGD, noise calibration, composition.

We never write an accountant: every number here comes from `dp_accounting`'s privacy loss
distributions (PLD, the default: tight, pessimistic rounding) or its RDP accountant (an upper
bound, available for comparison). The neighbouring relation is add-or-remove one privacy unit;
dp_accounting builds both directions (add and remove) of a Poisson-subsampled mechanism and
reports the larger epsilon, so one accountant per computation is enough.

The privacy events the budget ledger stores are the small frozen dataclasses below, each with a
JSON form, so that a ledger written today can be re-accounted tomorrow.
"""

from __future__ import annotations

import functools
import logging
import math
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass

import dp_accounting
from dp_accounting.pld import common as pld_common
from dp_accounting.pld import pld_privacy_accountant
from dp_accounting.pld import privacy_loss_distribution as pld
from dp_accounting.rdp import rdp_privacy_accountant

from simmim.errors import PrivacyError

# dp-accounting's RDP logs a warning for every order it cannot compute near its failure region;
# those orders are excluded and the bound stays valid, so the warnings would only flood the output.
logging.getLogger("absl").setLevel(logging.ERROR)

ACCOUNTANTS = ("pld", "rdp")
# dp_accounting's default grid for privacy losses; epsilon() and the ledger must use the same one.
PLD_DISCRETIZATION = 1e-4
# Calibration searches on a coarser grid first (about 10x faster, epsilon a few 1e-3 higher),
# then settles the answer on the fine grid.
_COARSE_DISCRETIZATION = 1e-3
NOISE_RESOLUTION = 1000  # calibrated noise multipliers are multiples of 1/1000
# Below this the PLD of a subsampled Gaussian needs an enormous loss grid; above it, noise drowns
# any signal. A target outside this range is refused rather than searched for minutes.
MIN_NOISE_MULTIPLIER = 0.05
MAX_NOISE_MULTIPLIER = 10_000.0


@dataclass(frozen=True)
class SubsampledGaussian:
    """DP-SGD, or any Gaussian sum: `steps` rounds of Poisson sampling, clipped sum, Gaussian noise.

    Attributes:
        sample_rate: Probability that a unit is in a round's batch (1.0: no subsampling).
        noise_multiplier: Noise standard deviation divided by the clip norm C.
        steps: Number of rounds.
        sensitivity: How far one unit moves the clipped sum, in units of C: 1 for per-example
            clipping (add/remove), 2 for group clipping or a replaced record.
    """

    sample_rate: float
    noise_multiplier: float
    steps: int
    sensitivity: float = 1.0

    def __post_init__(self) -> None:
        _check_rate("sample_rate", self.sample_rate)
        check_positive("noise_multiplier", self.noise_multiplier)
        _check_count("steps", self.steps)
        check_positive("sensitivity", self.sensitivity)


@dataclass(frozen=True)
class DiscreteLaplace:
    """Integer noise with pmf proportional to exp(-|z| / scale) on a query of integer `sensitivity`.

    `count` is how many such coordinates one unit can move (a histogram where a unit adds 1 to
    at most k bins is k coordinates of sensitivity 1) or how many times the release repeats.
    Pure DP: epsilon = count * sensitivity / scale.
    """

    scale: float
    sensitivity: int = 1
    count: int = 1

    def __post_init__(self) -> None:
        check_positive("scale", self.scale)
        _check_count("sensitivity", self.sensitivity, minimum=1)
        _check_count("count", self.count)


@dataclass(frozen=True)
class DiscreteGaussian:
    """Integer noise with pmf proportional to exp(-z^2 / (2 sigma^2)); `count` as for DiscreteLaplace."""

    sigma: float
    sensitivity: int = 1
    count: int = 1

    def __post_init__(self) -> None:
        check_positive("sigma", self.sigma)
        _check_count("sensitivity", self.sensitivity, minimum=1)
        _check_count("count", self.count)


@dataclass(frozen=True)
class PureDp:
    """Any epsilon-DP mechanism (randomised response, permute-and-flip, local Laplace), `count` times.

    Accounted as the worst epsilon-DP mechanism there is (binary randomised response), which
    dominates every other one, so the accounting holds whatever the mechanism.
    """

    epsilon: float
    count: int = 1

    def __post_init__(self) -> None:
        check_positive("epsilon", self.epsilon)
        _check_count("count", self.count)


PrivacyEvent = SubsampledGaussian | DiscreteLaplace | DiscreteGaussian | PureDp
_EVENT_KINDS: dict[str, type] = {
    "subsampled_gaussian": SubsampledGaussian,
    "discrete_laplace": DiscreteLaplace,
    "discrete_gaussian": DiscreteGaussian,
    "pure_dp": PureDp,
}


def event_to_dict(event: PrivacyEvent) -> dict:
    """The JSON form of an event: its fields plus ``"kind"``."""
    kind = next(name for name, cls in _EVENT_KINDS.items() if isinstance(event, cls))
    return {"kind": kind, **asdict(event)}


def event_from_dict(data: dict) -> PrivacyEvent:
    """Inverse of `event_to_dict`.

    Raises:
        PrivacyError: If the kind is unknown or a field is missing or invalid.
    """
    fields = dict(data)
    kind = fields.pop("kind", None)
    if kind not in _EVENT_KINDS:
        raise PrivacyError(f"unknown privacy event kind {kind!r}; expected one of {sorted(_EVENT_KINDS)}")
    try:
        return _EVENT_KINDS[kind](**fields)
    except TypeError as exc:
        raise PrivacyError(f"bad {kind} privacy event {data}: {exc}") from None


def epsilon(*, sample_rate: float, noise_multiplier: float, steps: int, delta: float, accountant: str = "pld",
            sensitivity: float = 1.0) -> float:
    """Epsilon of the Poisson-subsampled Gaussian mechanism composed `steps` times (DP-SGD).

    Args:
        sample_rate: Poisson sampling probability q of a unit per step.
        noise_multiplier: Noise standard deviation over the clip norm.
        steps: Number of steps.
        delta: Target delta.
        accountant: ``"pld"`` (tight; default) or ``"rdp"`` (an upper bound).
        sensitivity: Sensitivity in clip norms (2.0 for group clipping): the effective noise
            multiplier is ``noise_multiplier / sensitivity``.

    Returns:
        The smallest epsilon the accountant certifies at `delta` (``inf`` if none).

    Raises:
        PrivacyError: If a parameter is out of range.
    """
    event = SubsampledGaussian(sample_rate, noise_multiplier, steps, sensitivity)
    check_delta(delta)
    _check_accountant(accountant)
    return _dp_sgd_epsilon(accountant, event.sample_rate, event.noise_multiplier / event.sensitivity, event.steps,
                           delta, PLD_DISCRETIZATION)


def calibrate_noise(*, epsilon: float, delta: float, sample_rate: float, steps: int, accountant: str = "pld",
                    sensitivity: float = 1.0) -> float:
    """The smallest noise multiplier, a multiple of 1/1000, whose epsilon is at most the target.

    Rounding is upward, so the guarantee holds: ``epsilon(calibrate_noise(e)) <= e`` and one
    step of 0.001 less would exceed ``e``.

    Args:
        epsilon: Target epsilon.
        delta: Target delta.
        sample_rate: Poisson sampling probability per step.
        steps: Number of steps.
        accountant: ``"pld"`` or ``"rdp"``.
        sensitivity: Sensitivity in clip norms, as for `epsilon`.

    Returns:
        The noise multiplier.

    Raises:
        PrivacyError: If a parameter is out of range or the target needs a noise multiplier
            outside [0.05, 10000].
    """
    check_positive("epsilon", epsilon)
    check_delta(delta)
    _check_accountant(accountant)
    _check_rate("sample_rate", sample_rate)
    _check_count("steps", steps, minimum=1)
    check_positive("sensitivity", sensitivity)

    def epsilon_at(accountant_name: str, discretization: float) -> Callable[[int], float]:
        return lambda k: _dp_sgd_epsilon(accountant_name, sample_rate, k / NOISE_RESOLUTION / sensitivity, steps,
                                         delta, discretization)

    lowest, highest = round(MIN_NOISE_MULTIPLIER * NOISE_RESOLUTION), round(MAX_NOISE_MULTIPLIER * NOISE_RESOLUTION)
    if epsilon_at(accountant, PLD_DISCRETIZATION)(highest) > epsilon:
        raise PrivacyError(f"epsilon={epsilon} at delta={delta} needs a noise multiplier above "
                           f"{MAX_NOISE_MULTIPLIER:g}: allow a larger epsilon, fewer steps or a lower sample rate")
    # RDP is cheap even for tiny noise and bounds the PLD epsilon from above, so its answer brackets
    # the PLD search, which is slow for small noise multipliers (never evaluated at `lowest`).
    rdp = epsilon_at("rdp", PLD_DISCRETIZATION)
    if rdp(lowest) <= epsilon:
        raise PrivacyError(f"epsilon={epsilon} is reached with noise multiplier {MIN_NOISE_MULTIPLIER}, "
                           f"the smallest we calibrate: a target this weak protects nothing, choose a smaller epsilon")
    rdp_answer = _smallest_meeting(rdp, epsilon, lowest, highest, start=NOISE_RESOLUTION,
                                   first_step=NOISE_RESOLUTION // 2)
    if accountant == "rdp":
        return rdp_answer / NOISE_RESOLUTION
    # A coarse PLD grid (~10x faster, epsilon a little larger) finds the answer to within a step or
    # two of the fine grid, which then settles it with a few evaluations.
    guess = _smallest_meeting(epsilon_at("pld", _COARSE_DISCRETIZATION), epsilon, lowest, highest,
                              start=rdp_answer, first_step=max(1, rdp_answer // 20))
    answer = _smallest_meeting(epsilon_at("pld", PLD_DISCRETIZATION), epsilon, lowest, highest, start=guess,
                               first_step=1)
    return answer / NOISE_RESOLUTION


def steps_for_epochs(epochs: float, sample_rate: float) -> int:
    """Steps whose expected number of sampled units covers `epochs` passes over the data."""
    check_positive("epochs", epochs)
    _check_rate("sample_rate", sample_rate)
    # The small slack keeps 3 / 0.1 = 30.000000000000004 from becoming 31 steps.
    return max(1, math.ceil(epochs / sample_rate - 1e-9))


def composed_epsilon(events: Iterable[PrivacyEvent], delta: float) -> float:
    """Epsilon at `delta` of all `events` applied to one dataset, composed through one PLD.

    The PLD of each event is built exactly as dp_accounting's PLDAccountant builds it, so a
    single DP-SGD job composes to the same epsilon as `epsilon(...)`.

    Args:
        events: The mechanisms run (or planned) on the dataset.
        delta: Target delta; 0 is allowed (finite only for pure-DP events).

    Returns:
        The composed epsilon; 0.0 for no events.
    """
    if not 0 <= delta < 1:
        raise PrivacyError(f"delta must be in [0, 1), got {delta}")
    plds = [_event_pld(event) for event in events]
    if not plds:
        return 0.0
    total = functools.reduce(lambda a, b: a.compose(b), plds)
    return float(total.get_epsilon_for_delta(delta))


def _smallest_meeting(epsilon_at: Callable[[int], float], target: float, lowest: int, highest: int, *, start: int,
                      first_step: int) -> int:
    """The smallest grid point k in (lowest, highest] with epsilon_at(k) <= target.

    `epsilon_at` decreases in k; it is taken to exceed the target at `lowest` (never evaluated
    there) and must meet it at `highest`. The search gallops from `start` in doubling steps until
    the answer is bracketed, then interpolates log(epsilon) linearly in log(k) (epsilon is close
    to a power of the noise), probing each estimate and its neighbour across the boundary, so a
    good estimate closes the bracket at once; bisection steps in when interpolation stalls.
    """
    seen: dict[int, float] = {}

    def meets(k: int) -> bool:
        if k not in seen:
            seen[k] = epsilon_at(k)
        return seen[k] <= target

    low, high, step = lowest, highest, first_step
    k = min(max(start, lowest + 1), highest)
    if meets(k):
        high = k
        while high - low > 1:
            k = max(high - step, low + 1)
            if not meets(k):
                low = k
                break
            high, step = k, step * 2
    else:
        low = k
        while high - low > 1:
            k = min(low + step, high)
            if meets(k):
                high = k
                break
            low, step = k, step * 2
    while high - low > 1:
        width = high - low
        probe = _interpolate(low, high, seen, target)
        # The neighbour across the boundary closes the bracket when the estimate was right.
        neighbour = probe - 1 if meets(probe) else probe + 1
        low, high = (low, probe) if neighbour < probe else (probe, high)
        if low < neighbour < high:
            low, high = (low, neighbour) if meets(neighbour) else (neighbour, high)
        if high - low > 1 and high - low > width // 2:
            middle = min(max(round(math.sqrt(low * high)), low + 1), high - 1)
            low, high = (low, middle) if meets(middle) else (middle, high)
    return high


def _interpolate(low: int, high: int, seen: dict[int, float], target: float) -> int:
    """Where log-log interpolation between the bracket's ends puts the target, strictly inside it."""
    estimate = math.sqrt(low * high)
    low_epsilon, high_epsilon = seen.get(low), seen.get(high)
    if low_epsilon is not None and high_epsilon is not None and math.isfinite(low_epsilon) and high_epsilon > 0 \
            and high_epsilon < low_epsilon:
        fraction = math.log(low_epsilon / target) / math.log(low_epsilon / high_epsilon)
        estimate = math.exp(math.log(low) + fraction * math.log(high / low))
    return min(max(round(estimate), low + 1), high - 1)


@functools.lru_cache(maxsize=512)
def _dp_sgd_epsilon(accountant: str, sample_rate: float, effective_noise: float, steps: int, delta: float,
                    discretization: float) -> float:
    if steps == 0:
        return 0.0
    event = dp_accounting.SelfComposedDpEvent(
        dp_accounting.PoissonSampledDpEvent(sample_rate, dp_accounting.GaussianDpEvent(effective_noise)), steps)
    if accountant == "rdp":
        tracker = rdp_privacy_accountant.RdpAccountant()
    else:
        tracker = pld_privacy_accountant.PLDAccountant(value_discretization_interval=discretization)
    return float(tracker.compose(event).get_epsilon(delta))


@functools.lru_cache(maxsize=256)
def _event_pld(event: PrivacyEvent) -> pld.PrivacyLossDistribution:
    """The PLD of one event (dp_accounting PLDs are immutable, so caching them is safe)."""
    grid = PLD_DISCRETIZATION
    if isinstance(event, SubsampledGaussian):
        if event.steps == 0:
            return pld.identity(value_discretization_interval=grid)
        single = pld.from_gaussian_mechanism(standard_deviation=event.noise_multiplier / event.sensitivity,
                                             sampling_prob=event.sample_rate, value_discretization_interval=grid)
        return single.self_compose(event.steps)
    if event.count == 0:
        return pld.identity(value_discretization_interval=grid)
    if isinstance(event, DiscreteLaplace):
        single = pld.from_discrete_laplace_mechanism(parameter=1 / event.scale, sensitivity=event.sensitivity,
                                                     value_discretization_interval=grid)
    elif isinstance(event, DiscreteGaussian):
        single = pld.from_discrete_gaussian_mechanism(sigma=event.sigma, sensitivity=event.sensitivity,
                                                      value_discretization_interval=grid)
    else:
        single = pld.from_privacy_parameters(pld_common.DifferentialPrivacyParameters(event.epsilon, 0.0),
                                             value_discretization_interval=grid)
    return single.self_compose(event.count)


def check_delta(delta: float) -> None:
    """Raises PrivacyError unless 0 < delta < 1."""
    if not 0 < delta < 1:
        raise PrivacyError(f"delta must be in (0, 1), got {delta}")


def _check_rate(name: str, value: float) -> None:
    if not 0 < value <= 1:
        raise PrivacyError(f"{name} must be in (0, 1], got {value}")


def check_positive(name: str, value: float) -> None:
    """Raises PrivacyError naming `name` unless `value` is a finite positive number."""
    if not (value > 0 and math.isfinite(value)):
        raise PrivacyError(f"{name} must be a positive number, got {value}")


def _check_count(name: str, value: int, minimum: int = 0) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise PrivacyError(f"{name} must be an integer >= {minimum}, got {value!r}")


def _check_accountant(accountant: str) -> None:
    if accountant not in ACCOUNTANTS:
        raise PrivacyError(f"accountant must be one of {', '.join(ACCOUNTANTS)}, got {accountant!r}")
