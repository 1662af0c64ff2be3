"""The settings of a federated run, and their trip through Flower's run config (flat, scalar values)."""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass

from simmim.errors import ConfigError

AGGREGATIONS = ("plain", "secagg", "paillier")


@dataclass(frozen=True)
class FedSettings:
    """What the server app runs; every party builds the same model from `config`.

    Attributes:
        config: A packaged config name (`tiny`, `quick`, ...) or a config file: model and data.
        clients: Parties (SuperNodes); party i holds partition i of the training records.
        rounds: Federated rounds.
        local_steps: Optimiser steps each sampled party takes on its partition per round.
        batch_size: Records per local step.
        local_lr: AdamW learning rate of the local steps.
        sample_rate: Each party takes part in a round with this probability (Poisson sampling).
        update_clip: Each party's update (new weights - global weights) is clipped to this L2 norm.
        noise_multiplier: Gaussian noise on the sum, std = noise_multiplier * update_clip; 0 without DP.
        epsilon: When > 0: the budget. Without a noise multiplier, the noise is calibrated so that all
            rounds fit; in any case the run stops before a round that would exceed it.
        delta: The DP delta (parties are the privacy unit).
        aggregation: 'plain' (the server sees each update), 'secagg' (it sees only the sum) or
            'paillier' (updates encrypted to a key-holding party; the server sums ciphertexts).
        threshold: Secure aggregation's Shamir threshold; 0 means a majority of the round's parties.
        round_timeout: Seconds the server waits for the replies of one exchange; late parties drop.
        min_clients: A round needs this many updates (more for secure aggregation's threshold).
        eval_items: Test records the server evaluates the global model on after every round.
        seed: Seeds the initial model and the local batches.
        threads: Torch threads of each party's training process (parties on one machine share its cores;
            with the same thread count a party's update is reproducible bit for bit).
        out: Directory where the server app writes `rounds.jsonl` and `result.json`.
    """

    config: str = "tiny"
    clients: int = 3
    rounds: int = 3
    local_steps: int = 20
    batch_size: int = 32
    local_lr: float = 3e-3
    sample_rate: float = 1.0
    update_clip: float = 5.0
    noise_multiplier: float = 0.0
    epsilon: float = 0.0
    delta: float = 1e-5
    aggregation: str = "plain"
    threshold: int = 0
    round_timeout: float = 120.0
    min_clients: int = 2
    eval_items: int = 150
    seed: int = 0
    threads: int = 1
    out: str = ""

    def __post_init__(self):
        for name in ("clients", "rounds", "local_steps", "batch_size", "min_clients", "eval_items", "threads"):
            if getattr(self, name) < 1:
                raise ConfigError(f"fed.{name} must be at least 1, got {getattr(self, name)}")
        if self.aggregation not in AGGREGATIONS:
            raise ConfigError(f"fed.aggregation must be one of {AGGREGATIONS}, got {self.aggregation!r}")
        if not 0 < self.sample_rate <= 1:
            raise ConfigError(f"fed.sample_rate must be in (0, 1], got {self.sample_rate}")
        for name in ("update_clip", "local_lr", "round_timeout", "delta"):
            value = getattr(self, name)
            if not (math.isfinite(value) and value > 0):
                raise ConfigError(f"fed.{name} must be a positive number, got {value}")
        if self.noise_multiplier < 0 or self.epsilon < 0:
            raise ConfigError("fed.noise_multiplier and fed.epsilon cannot be negative")
        if self.delta >= 1:
            raise ConfigError(f"fed.delta must be below 1, got {self.delta}")
        if self.aggregation == "secagg" and self.clients < 2:
            raise ConfigError("secure aggregation needs at least 2 parties")

    def to_run_config(self) -> dict:
        """Flower's run config: flat scalars, keys in kebab case."""
        return {field.name.replace("_", "-"): getattr(self, field.name) for field in dataclasses.fields(self)}

    @classmethod
    def from_run_config(cls, values) -> FedSettings:
        known = {field.name: field.type for field in dataclasses.fields(cls)}
        kwargs = {}
        for key, value in dict(values).items():
            name = key.replace("-", "_")
            if name in known:
                default = getattr(cls, name)
                kwargs[name] = type(default)(value) if not isinstance(default, bool) else bool(value)
        return cls(**kwargs)
