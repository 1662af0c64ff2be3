"""Where a run's tokenizer and first weights come from, and which parameters it trains.

A run starts from random weights, or from a trained model (`finetune.init`), whose tokenizer it
then keeps. Under DP the vocabulary is part of what the model releases, so it must not be
fitted on the private captions: it comes from the starting model, or from the generator's
public grammar for synthetic data; otherwise DP training is refused.
"""

from __future__ import annotations

from pathlib import Path

from safetensors.torch import load_file
from torch import nn

from simmim.config import Config
from simmim.data import grammar
from simmim.data.splits import Splits
from simmim.data.tokenizer import WordTokenizer
from simmim.errors import CheckpointError, ConfigError
from simmim.models import ModelConfig
from simmim.models.lora import add_lora, train_only
from simmim.train.checkpoint import read_meta


def starting_tokenizer(cfg: Config, splits: Splits) -> tuple[WordTokenizer, dict | None]:
    """The tokenizer of a fresh run, and the metadata of its starting model (None from scratch)."""
    if cfg.finetune.init:
        meta = read_meta(cfg.finetune.init)
        return WordTokenizer.from_dict(meta["tokenizer"]), meta
    if cfg.privacy.dp:
        if cfg.data.source == "synthetic":  # every word the generator's (public) grammar can produce
            return WordTokenizer(grammar.vocabulary()), None
        raise ConfigError(
            "DP training from scratch would fit the vocabulary on the private captions, which the model "
            "then reveals: start from a model trained on public data (finetune.init = 'DIR/model')")
    return WordTokenizer.fit(splits.all_captions()), None


def load_initial_weights(model: nn.Module, cfg: Config, meta: dict) -> None:
    """Loads `finetune.init`'s weights; its architecture must be the one this run builds."""
    path = Path(cfg.finetune.init)
    if ModelConfig.from_dict(meta["model_config"]) != model.cfg:
        raise CheckpointError(f"finetune.init {path} holds a different architecture than model.size "
                              f"{cfg.model.size!r} with the run's overrides and data")
    model.load_state_dict(load_file(path / "model.safetensors"))


def choose_trained_parameters(model: nn.Module, cfg: Config) -> None:
    """LoRA adapters (and `train_modules`) when `finetune.lora_rank` > 0; only `train_modules` when
    they are named without LoRA; otherwise every parameter."""
    ft = cfg.finetune
    if ft.lora_rank < 0:
        raise ConfigError(f"finetune.lora_rank must be >= 0, got {ft.lora_rank}")
    if ft.lora_rank:
        add_lora(model, rank=ft.lora_rank, alpha=ft.lora_alpha, targets=ft.lora_targets,
                 train_modules=ft.train_modules)
    elif ft.train_modules:
        train_only(model, ft.train_modules)
