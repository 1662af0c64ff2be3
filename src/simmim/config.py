"""Typed run configuration, loaded from TOML, YAML or JSON with every field checked.

A file holds sections `model`, `data`, `train`, `loss`, `privacy`, `finetune` and `vault`; unknown or
mistyped fields are refused with the dotted name of the field (e.g. `train.lr`), never ignored.
"""

from __future__ import annotations

import dataclasses
import json
import tomllib
import typing
from dataclasses import asdict, dataclass, field
from importlib import resources
from pathlib import Path

import yaml

from simmim.errors import ConfigError
from simmim.losses import LossWeights


@dataclass(frozen=True)
class ModelSection:
    size: str = "tiny"
    overrides: dict = field(default_factory=dict)  # any ModelConfig field


@dataclass(frozen=True)
class DataConfig:
    source: str = "synthetic"  # "synthetic", "digits", "vault" (see [vault]), or a path to a dataset
    format: str = "auto"
    image_size: int = 32
    train_size: int = 4000  # synthetic only
    val_size: int = 500
    test_size: int = 500
    video_train_size: int = 0  # synthetic clips; 0 = no video
    video_test_size: int = 0
    frames: int = 4
    max_objects: int = 3  # synthetic only: at most this many objects per still scene
    context_length: int = 24
    max_caption_words: int = 20
    skip_bad: bool = False
    seed: int = 0


@dataclass(frozen=True)
class TrainConfig:
    steps: int = 300
    batch_size: int = 64
    video_batch_size: int = 16
    lr: float = 2e-3
    weight_decay: float = 0.05
    warmup_steps: int = 30
    mask_ratio: float = 0.5
    grad_clip: float = 1.0
    micro_batch_size: int = 0  # 0: each batch in one pass; N: passes of N examples, gradients accumulated
    checkpoint_every: int = 0  # 0: only at the end
    log_every: int = 10
    threads: int = 0  # 0: torch's default
    seed: int = 0


@dataclass(frozen=True)
class PrivacyConfig:
    """DP-SGD: off unless `dp` is true. The noise is calibrated so that `train.steps` steps spend
    exactly (at most) `epsilon` at `delta` for the chosen privacy unit."""

    dp: bool = False
    epsilon: float = 8.0
    delta: float = 1e-5
    unit: str = "auto"  # "user" (subject), "example" (record), or "auto": user when records carry subjects
    max_grad_norm: float = 1.0
    sample_rate: float = 0.0  # Poisson rate per unit; 0: train.batch_size records' worth of units
    micro_batch_size: int = 256  # records per backward pass (memory cap; the logical batch is unchanged)
    units_per_block: int = 4  # group clipping of the contrastive loss: units per block (negatives stay inside)
    video_norm_share: float = 0.5  # with clips: share of max_grad_norm for a unit's clips (its images get the rest)
    accountant: str = "pld"
    ledger: str = ""  # database URL of the budget ledger; "": SIMMIM_LEDGER_URL or runs/privacy-ledger.db


@dataclass(frozen=True)
class VaultSection:
    """Where training reads people's records when `data.source = "vault"`: only what the vault
    releases for `purpose` (consenting, not deleted subjects), decrypted in memory."""

    url: str = ""  # "": $SIMMIM_VAULT_URL or sqlite:///runs/vault.db
    principal: str = "trainer"
    key_file: str = ""  # "": the key or passphrase from $SIMMIM_VAULT_KEY / $SIMMIM_VAULT_PASSPHRASE
    audit_key: str = ""  # the audit log's signing key file, if the vault has one
    purpose: str = "model-training"


@dataclass(frozen=True)
class FinetuneConfig:
    """Start from a trained model instead of random weights, optionally training only low-rank
    adapters (LoRA). Under DP this is the usual recipe: pretrain on public data, fine-tune privately."""

    init: str = ""  # a model directory (e.g. `runs/public/model`): weights and tokenizer to start from
    lora_rank: int = 0  # 0: train every parameter; r > 0: freeze the model, train rank-r adapters
    lora_alpha: float = 0.0  # adapters are scaled by alpha / r; 0: alpha = 2r
    lora_targets: tuple[str, ...] = ("q_proj", "v_proj")  # names of the nn.Linear layers to adapt
    train_modules: tuple[str, ...] = ()  # modules trained in full beside the adapters (e.g. "logit_scale")


@dataclass(frozen=True)
class Config:
    model: ModelSection = ModelSection()
    data: DataConfig = DataConfig()
    train: TrainConfig = TrainConfig()
    loss: LossWeights = LossWeights()
    privacy: PrivacyConfig = PrivacyConfig()
    finetune: FinetuneConfig = FinetuneConfig()
    vault: VaultSection = VaultSection()

    def to_dict(self) -> dict:
        """Plain JSON types (tuples become lists), so a dict read back from a checkpoint compares equal."""
        return json.loads(json.dumps(asdict(self)))

    @classmethod
    def from_dict(cls, values: dict) -> Config:
        return _build(cls, values, "")


def _build(cls, values, prefix: str):
    if not isinstance(values, dict):
        raise ConfigError(f"{prefix.rstrip('.') or 'config'} must be a table/mapping, got {type(values).__name__}")
    hints = typing.get_type_hints(cls)
    known = {f.name: f for f in dataclasses.fields(cls)}
    unknown = sorted(set(values) - set(known))
    if unknown:
        raise ConfigError(f"unknown field {prefix}{unknown[0]} (known: {', '.join(known)})")
    kwargs = {}
    for name, value in values.items():
        hint = hints[name]
        if dataclasses.is_dataclass(hint):
            kwargs[name] = _build(hint, value, f"{prefix}{name}.")
        else:
            kwargs[name] = _check_type(value, hint, f"{prefix}{name}")
    return cls(**kwargs)


def _check_type(value, hint, name: str):
    if hint is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if typing.get_origin(hint) is tuple:
        if not (isinstance(value, (list, tuple)) and all(isinstance(v, str) for v in value)):
            raise ConfigError(f"{name} must be a list of strings, got {value!r}")
        return tuple(value)
    expected = typing.get_origin(hint) or hint
    ok = isinstance(value, expected) and not (expected is int and isinstance(value, bool))
    if not ok:
        raise ConfigError(f"{name} must be {getattr(expected, '__name__', expected)}, got {value!r}")
    return value


def load_config(path: str | Path) -> Config:
    """Read a config file (.toml, .yaml/.yml or .json)."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"config file {path} does not exist")
    text = path.read_text()
    try:
        if path.suffix == ".toml":
            values = tomllib.loads(text)
        elif path.suffix in (".yaml", ".yml"):
            values = yaml.safe_load(text) or {}
        elif path.suffix == ".json":
            values = json.loads(text)
        else:
            raise ConfigError(f"config file {path}: use .toml, .yaml or .json")
    except (tomllib.TOMLDecodeError, yaml.YAMLError, json.JSONDecodeError) as exc:
        raise ConfigError(f"config file {path} is not valid {path.suffix[1:].upper()}: {exc}") from None
    return Config.from_dict(values)


def packaged_config(name: str) -> Config:
    """One of the configs shipped in `simmim/configs/` (`demo`, `demo-public`, `demo-private`, `quick`, ...)."""
    with resources.as_file(resources.files("simmim") / "configs" / f"{name}.toml") as path:
        return load_config(path)
