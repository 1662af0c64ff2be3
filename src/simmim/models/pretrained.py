"""Import of pretrained CLIP weights from a local Hugging Face-format folder.

`load_clip(folder)` reads `config.json` and `model.safetensors` (or a sharded
`model.safetensors.index.json`) directly with `safetensors`, builds the `ModelConfig` that
reproduces the checkpoint's architecture, creates our model with `create_model` and copies the
image encoder, text encoder, both projections and the logit scale through one explicit key
table (`weight_table`). Nothing of SimMIM's own (decoders, temporal encoder, video projection,
mask token) exists in CLIP, so those keep their fresh initialisation; `ClipImport` says which
parameters were loaded, which are new, and which checkpoint keys went unused.

Parity with Hugging Face's `CLIPModel` (checked in tests/models/test_pretrained.py):

- Images: our encoder takes pixels in [0, 1] and normalises them itself with `cfg.pixel_mean`
  / `cfg.pixel_std` (the folder's `preprocessor_config.json` values, else OpenAI's), so
  `encode_image(x)` equals HF's normalised `get_image_features((x - mean) / std)`. Resizing and
  cropping to `image_size` stay the caller's job, as in the rest of SimMIM.
- Text pooling: HF pools at the first `text_config.eos_token_id`, except for legacy configs
  whose `eos_token_id` is 2 (written before transformers PR #24773), where it pools at the
  argmax of the input ids, i.e. at the highest token id in the row. CLIP's `<|endoftext|>` is
  the last id of its vocabulary, so for legacy configs we set `eos_id = vocab_size - 1`. Both
  agree whenever every row contains that token, which the CLIP tokenizer guarantees (it keeps
  the end-of-text token when it truncates). Rows without any end token are malformed for both
  models: HF then pools at position 0 (or at the highest id), ours at the last position.

`clip_tokenizer(folder)` (needs the `[hf]` extra) wraps HF's CLIP tokenizer for the same folder
and pads to the model's context length.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterator, Sequence
from contextlib import ExitStack, closing
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError, safe_open

from simmim.errors import CheckpointError, ConfigError
from simmim.models.config import ModelConfig
from simmim.models.simmim import SimMIM, create_model

__all__ = [
    "DECODER_FIELDS",
    "OPENAI_CLIP_MEAN",
    "OPENAI_CLIP_STD",
    "ClipImport",
    "ClipTokenizer",
    "clip_model_config",
    "clip_tokenizer",
    "load_clip",
    "weight_table",
]

# The normalisation every OpenAI CLIP checkpoint was trained with (also HF's CLIP defaults).
OPENAI_CLIP_MEAN: tuple[float, float, float] = (0.48145466, 0.4578275, 0.40821073)
OPENAI_CLIP_STD: tuple[float, float, float] = (0.26862954, 0.26130258, 0.27577711)

# HF's CLIPTextConfig / CLIPVisionConfig / CLIPConfig defaults. Older config.json files were
# written as a diff against these, so a key that is absent means "the default".
_TEXT_DEFAULTS: dict[str, Any] = {
    "vocab_size": 49408, "hidden_size": 512, "intermediate_size": 2048, "num_hidden_layers": 12,
    "num_attention_heads": 8, "max_position_embeddings": 77, "hidden_act": "quick_gelu",
    "layer_norm_eps": 1e-5, "eos_token_id": 49407,
}
_VISION_DEFAULTS: dict[str, Any] = {
    "hidden_size": 768, "intermediate_size": 3072, "num_hidden_layers": 12, "num_attention_heads": 12,
    "num_channels": 3, "image_size": 224, "patch_size": 32, "hidden_act": "quick_gelu",
    "layer_norm_eps": 1e-5,
}
_PROJECTION_DIM_DEFAULT = 512

# HF's `CLIPTextModel` pools by argmax of the ids when its config says eos_token_id == 2.
_LEGACY_EOS_TOKEN_ID = 2
# Our nn.LayerNorm layers use PyTorch's default epsilon, which is also CLIP's.
_LAYER_NORM_EPS = 1e-5
_ACTIVATIONS = ("quick_gelu", "gelu")  # HF's names; ours are the same functions

# The only ModelConfig fields a caller may choose: they size parts CLIP does not have.
DECODER_FIELDS = frozenset(
    {"temporal_depth", "max_frames", "decoder_width", "decoder_depth", "generator_depth"}
)

_WEIGHTS_FILE = "model.safetensors"
_WEIGHTS_INDEX = "model.safetensors.index.json"
# HF checkpoints may carry these non-persistent buffers (arange position ids); they hold no weights.
_IGNORED_SUFFIX = "position_ids"

# Our block <- HF encoder layer, relative to the block prefixes below.
_BLOCK_TABLE: tuple[tuple[str, str], ...] = tuple(
    (f"{ours}.{p}", f"{theirs}.{p}")
    for ours, theirs in (
        ("ln_1", "layer_norm1"),
        ("attn.q_proj", "self_attn.q_proj"),
        ("attn.k_proj", "self_attn.k_proj"),
        ("attn.v_proj", "self_attn.v_proj"),
        ("attn.out_proj", "self_attn.out_proj"),
        ("ln_2", "layer_norm2"),
        ("mlp.fc1", "mlp.fc1"),
        ("mlp.fc2", "mlp.fc2"),
    )
    for p in ("weight", "bias")
)

# HF's Conv2d patch embedding (width, C, p, p) flattened row-wise is exactly our bias-free
# Linear over patches flattened in (C, p, p) order (see `layers.patchify`).
_PATCH_EMBED = "vision_model.embeddings.patch_embedding.weight"


@dataclass(frozen=True)
class ClipImport:
    """What `load_clip` did.

    Attributes:
        folder: The checkpoint folder.
        config: The model configuration built from `config.json`.
        loaded: Our parameter names whose values came from the checkpoint.
        new: Our parameter names left at their fresh initialisation (SimMIM-only parts).
        unused: Checkpoint keys that were not copied (`position_ids` buffers are not listed).
        eos_pooling: How the text encoder's pooling token was chosen, in words.
    """

    folder: Path
    config: ModelConfig
    loaded: tuple[str, ...]
    new: tuple[str, ...]
    unused: tuple[str, ...]
    eos_pooling: str

    def summary(self) -> str:
        """One line for logs: counts of loaded, new and unused tensors."""
        return (
            f"imported CLIP from {self.folder}: {len(self.loaded)} tensors loaded, "
            f"{len(self.new)} new (SimMIM-only), {len(self.unused)} checkpoint keys unused"
        )


def weight_table(cfg: ModelConfig) -> list[tuple[str, str]]:
    """The explicit map from our parameter names to HF CLIP checkpoint keys for `cfg`.

    Args:
        cfg: A configuration with `pre_norm=True` (CLIP's `pre_layrnorm` needs `ln_pre`).

    Returns:
        `(our_name, hf_key)` pairs covering both encoders, both projections and the logit scale.
    """
    table = [
        ("visual.patch_embed.weight", _PATCH_EMBED),
        ("visual.class_token.weight", "vision_model.embeddings.class_embedding"),
        ("visual.position.weight", "vision_model.embeddings.position_embedding.weight"),
        # "layrnorm" is HF's spelling of the key, kept for checkpoint compatibility.
        ("visual.ln_pre.weight", "vision_model.pre_layrnorm.weight"),
        ("visual.ln_pre.bias", "vision_model.pre_layrnorm.bias"),
    ]
    table += _blocks("visual.blocks", "vision_model.encoder.layers", cfg.depth)
    table += [
        ("visual.ln_post.weight", "vision_model.post_layernorm.weight"),
        ("visual.ln_post.bias", "vision_model.post_layernorm.bias"),
        ("text.token_embedding.weight", "text_model.embeddings.token_embedding.weight"),
        ("text.position.weight", "text_model.embeddings.position_embedding.weight"),
    ]
    table += _blocks("text.blocks", "text_model.encoder.layers", cfg.text_depth)
    table += [
        ("text.ln_final.weight", "text_model.final_layer_norm.weight"),
        ("text.ln_final.bias", "text_model.final_layer_norm.bias"),
        ("fusion.image_proj.weight", "visual_projection.weight"),
        ("fusion.text_proj.weight", "text_projection.weight"),
        ("fusion.logit_scale.weight", "logit_scale"),
    ]
    return table


def _blocks(ours: str, theirs: str, depth: int) -> list[tuple[str, str]]:
    return [(f"{ours}.{i}.{a}", f"{theirs}.{i}.{b}") for i in range(depth) for a, b in _BLOCK_TABLE]


def clip_model_config(folder: str | Path, **overrides: int) -> tuple[ModelConfig, str]:
    """The `ModelConfig` reproducing a HF CLIP folder's architecture, without reading weights.

    `init_logit_scale` is CLIPConfig's `logit_scale_init_value` here; `load_clip` replaces it
    with the trained value from the checkpoint.

    Args:
        folder: A Hugging Face-format CLIP folder.
        **overrides: Sizes of the SimMIM-only parts (`DECODER_FIELDS`). `decoder_width`
            defaults to the image width, because the decoders use the image encoder's head count
            and CLIP's text width need not be divisible by it (ViT-B/32: 512 vs 12 heads).

    Returns:
        The configuration and a sentence describing the text pooling token.

    Raises:
        CheckpointError: The folder or its config is missing, not CLIP, or not representable.
        ConfigError: An override names a field that comes from the checkpoint.
    """
    folder = _existing_folder(folder)
    return _build_config(folder, _read_clip_json(folder), overrides, logit_scale=None)


def load_clip(folder: str | Path, **overrides: int) -> tuple[SimMIM, ClipImport]:
    """Build our model from a local HF CLIP folder and copy its encoder weights in.

    Args:
        folder: A folder holding `config.json` (model_type "clip") and `model.safetensors`
            (or `model.safetensors.index.json` with its shards); `preprocessor_config.json` is
            optional and supplies the pixel mean/std.
        **overrides: Sizes of the SimMIM-only parts, see `clip_model_config`.

    Returns:
        The model (float32, training mode) and a `ClipImport` report.

    Raises:
        CheckpointError: One line naming the file, key or field at fault: a missing folder,
            config or weights file, a config that is not CLIP or uses an unsupported
            activation / LayerNorm epsilon / geometry, a missing key, or a shape mismatch.
        ConfigError: An override names a field that comes from the checkpoint.
    """
    folder = _existing_folder(folder)
    cfg, eos_pooling = _build_config(folder, _read_clip_json(folder), overrides, logit_scale=None)
    with closing(_Checkpoint(folder)) as checkpoint:
        if "logit_scale" in checkpoint:  # the trained temperature, not the config's initial value
            cfg = replace(cfg, init_logit_scale=float(checkpoint.tensor("logit_scale")))
        model = create_model(cfg)
        params = dict(model.named_parameters())
        table = weight_table(cfg)
        _check_keys(checkpoint, table)
        with torch.no_grad():
            for ours, theirs in table:
                param = params[ours]  # a KeyError here means the table drifted from the model
                tensor = checkpoint.tensor(theirs)
                expected = _checkpoint_shape(theirs, param, cfg)
                if tuple(tensor.shape) != expected:
                    raise CheckpointError(
                        f"{checkpoint.name}: key {theirs} has shape {tuple(tensor.shape)} but config.json "
                        f"implies {expected} (for our {ours})"
                    )
                param.copy_(tensor.reshape(param.shape))  # also casts fp16/bf16 checkpoints to float32
        used = {theirs for _, theirs in table}
        unused = tuple(
            key for key in sorted(checkpoint.keys()) if key not in used and not key.endswith(_IGNORED_SUFFIX)
        )
    loaded = tuple(ours for ours, _ in table)
    loaded_set = set(loaded)
    new = tuple(name for name in params if name not in loaded_set)
    return model, ClipImport(folder, cfg, loaded, new, unused, eos_pooling)


def _checkpoint_shape(key: str, param: torch.Tensor, cfg: ModelConfig) -> tuple[int, ...]:
    """The shape HF stores for `key`, given the shape of our parameter it maps to."""
    if key == _PATCH_EMBED:
        return (cfg.width, cfg.channels, cfg.patch_size, cfg.patch_size)
    return tuple(param.shape)


def _check_keys(checkpoint: _Checkpoint, table: list[tuple[str, str]]) -> None:
    missing = [theirs for _, theirs in table if theirs not in checkpoint]
    if missing:
        more = f" (and {len(missing) - 1} more)" if len(missing) > 1 else ""
        raise CheckpointError(
            f"{checkpoint.name} lacks key {missing[0]}{more}; expected a full CLIPModel checkpoint"
        )


# Configuration.


def _existing_folder(folder: str | Path) -> Path:
    path = Path(folder).expanduser()
    if not path.is_dir():
        raise CheckpointError(f"CLIP folder {path} does not exist (expected config.json + model.safetensors)")
    return path


def _read_json(path: Path) -> dict:
    try:
        value = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise CheckpointError(f"cannot read {path}: {exc}") from None
    if not isinstance(value, dict):
        raise CheckpointError(f"{path} must hold a JSON object")
    return value


def _read_clip_json(folder: Path) -> dict:
    path = folder / "config.json"
    if not path.is_file():
        raise CheckpointError(f"{folder} has no config.json; expected a Hugging Face CLIP folder")
    raw = _read_json(path)
    if raw.get("model_type") != "clip":
        raise CheckpointError(f"{path} has model_type {raw.get('model_type')!r}, not 'clip'")
    return raw


def _sub_config(raw: dict, name: str, defaults: dict[str, Any]) -> dict[str, Any]:
    """One of text_config / vision_config, with HF's defaults and legacy `*_config_dict` applied."""
    values = dict(defaults)
    for key in (name, f"{name}_dict"):  # HF lets the legacy `*_config_dict` win, so it comes last
        part = raw.get(key)
        if part is not None:
            if not isinstance(part, dict):
                raise CheckpointError(f"config.json: {key} must be a JSON object")
            values.update(part)
    return values


def _square(value: Any, field: str, where: Path) -> int:
    """HF allows image/patch sizes as [h, w]; we only model square ones."""
    if isinstance(value, (list, tuple)):
        if len(value) != 2 or value[0] != value[1]:
            raise CheckpointError(f"{where}: vision_config.{field} {value} is not square (unsupported)")
        value = value[0]
    if not isinstance(value, int) or value <= 0:
        raise CheckpointError(f"{where}: vision_config.{field} must be a positive integer, got {value!r}")
    return value


def _mlp_ratio(width: int, hidden: int, text_width: int, text_hidden: int, where: Path) -> float:
    """One ratio r with int(width * r) == hidden for both encoders (ModelConfig has one mlp_ratio)."""
    if hidden * text_width != text_hidden * width:
        raise CheckpointError(
            f"{where}: MLP ratios differ (vision {hidden}/{width}, text {text_hidden}/{text_width}); "
            "SimMIM has one mlp_ratio for both encoders"
        )
    ratio = hidden / width
    # hidden / width may round just below the true ratio, and Block sizes its MLP with int(dim * ratio).
    for _ in range(4):
        if int(width * ratio) == hidden and int(text_width * ratio) == text_hidden:
            return ratio
        ratio = math.nextafter(ratio, math.inf)
    raise CheckpointError(f"{where}: cannot express MLP width {hidden} as int({width} * mlp_ratio)")


def _activation(text: dict, vision: dict, where: Path) -> str:
    for part, values in (("vision_config", vision), ("text_config", text)):
        if values["hidden_act"] not in _ACTIVATIONS:
            raise CheckpointError(
                f"{where}: unsupported {part}.hidden_act {values['hidden_act']!r} "
                "(supported: quick_gelu, gelu)"
            )
    if text["hidden_act"] != vision["hidden_act"]:
        raise CheckpointError(
            f"{where}: text hidden_act {text['hidden_act']!r} differs from vision {vision['hidden_act']!r}; "
            "SimMIM uses one activation for both encoders"
        )
    return vision["hidden_act"]


def _eos(text: dict, vocab_size: int, where: Path) -> tuple[int, str]:
    """Our `eos_id` and a sentence saying how it reproduces HF's text pooling."""
    eos = text["eos_token_id"]
    if isinstance(eos, list) and len(eos) == 1:
        eos = eos[0]
    if not isinstance(eos, int) or isinstance(eos, bool):
        raise CheckpointError(f"{where}: text_config.eos_token_id must be one integer, got {eos!r}")
    if eos == _LEGACY_EOS_TOKEN_ID:
        return vocab_size - 1, (
            f"legacy eos_token_id 2: HF pools at the argmax of the ids, i.e. at CLIP's end-of-text token, "
            f"the highest id; pooling at the first id {vocab_size - 1}"
        )
    return eos, f"pooling at the first eos_token_id {eos}"


def _pixel_stats(folder: Path) -> tuple[tuple[float, float, float], tuple[float, float, float]]:
    path = folder / "preprocessor_config.json"
    if not path.is_file():
        return OPENAI_CLIP_MEAN, OPENAI_CLIP_STD
    raw = _read_json(path)
    stats = []
    for key, default in (("image_mean", OPENAI_CLIP_MEAN), ("image_std", OPENAI_CLIP_STD)):
        value = raw.get(key, default)
        ok = isinstance(value, (list, tuple)) and len(value) == 3
        ok = ok and all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in value)
        if not ok or (key == "image_std" and min(value) <= 0):
            raise CheckpointError(f"{path}: {key} must be 3 numbers (std > 0), got {value!r}")
        stats.append(tuple(float(v) for v in value))
    return stats[0], stats[1]


def _build_config(folder: Path, raw: dict, overrides: dict[str, int],
                  logit_scale: float | None) -> tuple[ModelConfig, str]:
    bad = sorted(set(overrides) - DECODER_FIELDS)
    if bad:
        raise ConfigError(
            f"load_clip cannot override {', '.join(bad)}: it comes from the checkpoint "
            f"(overridable: {', '.join(sorted(DECODER_FIELDS))})"
        )
    where = folder / "config.json"
    text = _sub_config(raw, "text_config", _TEXT_DEFAULTS)
    vision = _sub_config(raw, "vision_config", _VISION_DEFAULTS)
    image_size = _square(vision["image_size"], "image_size", where)
    patch_size = _square(vision["patch_size"], "patch_size", where)
    if image_size % patch_size:
        raise CheckpointError(
            f"{where}: vision_config.image_size ({image_size}) is not a multiple of patch_size ({patch_size})"
        )
    if vision["num_channels"] != 3:
        raise CheckpointError(
            f"{where}: vision_config.num_channels is {vision['num_channels']}; only 3 is supported"
        )
    for part, values in (("vision_config", vision), ("text_config", text)):
        eps = values["layer_norm_eps"]
        if not isinstance(eps, (int, float)) or not math.isclose(eps, _LAYER_NORM_EPS, rel_tol=1e-6):
            raise CheckpointError(f"{where}: {part}.layer_norm_eps {eps!r} is unsupported (SimMIM uses 1e-5)")
    activation = _activation(text, vision, where)
    eos_id, eos_pooling = _eos(text, text["vocab_size"], where)
    pixel_mean, pixel_std = _pixel_stats(folder)
    init_logit_scale = raw.get("logit_scale_init_value", 2.6592) if logit_scale is None else logit_scale
    try:
        cfg = ModelConfig(
            image_size=image_size,
            patch_size=patch_size,
            channels=3,
            width=vision["hidden_size"],
            depth=vision["num_hidden_layers"],
            heads=vision["num_attention_heads"],
            mlp_ratio=_mlp_ratio(vision["hidden_size"], vision["intermediate_size"], text["hidden_size"],
                                 text["intermediate_size"], where),
            pre_norm=True,  # CLIP's pre_layrnorm
            activation=activation,
            text_width=text["hidden_size"],
            text_depth=text["num_hidden_layers"],
            text_heads=text["num_attention_heads"],
            context_length=text["max_position_embeddings"],
            vocab_size=text["vocab_size"],
            eos_id=eos_id,
            embed_dim=raw.get("projection_dim", _PROJECTION_DIM_DEFAULT),
            init_logit_scale=float(init_logit_scale),
            pixel_mean=pixel_mean,
            pixel_std=pixel_std,
            decoder_width=overrides.get("decoder_width", vision["hidden_size"]),
            **{k: v for k, v in overrides.items() if k != "decoder_width"},
        )
    except (ConfigError, TypeError) as exc:
        raise CheckpointError(f"{where}: cannot build a SimMIM config: {exc}") from None
    return cfg, eos_pooling


# Weights.


class _Checkpoint:
    """Lazy read access to `model.safetensors` or a sharded `model.safetensors.index.json`."""

    def __init__(self, folder: Path):
        single, index = folder / _WEIGHTS_FILE, folder / _WEIGHTS_INDEX
        if single.is_file():
            self.name = str(single)
            files = {key: single for key in self._keys_of(single)}
        elif index.is_file():
            self.name = str(index)
            weight_map = _read_json(index).get("weight_map")
            if not isinstance(weight_map, dict):
                raise CheckpointError(f"{index} has no weight_map")
            files = {key: folder / shard for key, shard in weight_map.items()}
            for shard in set(files.values()):
                if not shard.is_file():
                    raise CheckpointError(f"{index} names shard {shard.name}, which is missing")
        else:
            hint = "; convert it with save_pretrained(..., safe_serialization=True)" if (
                (folder / "pytorch_model.bin").is_file()) else ""
            raise CheckpointError(f"{folder} has no {_WEIGHTS_FILE}{hint}")
        self._files = files
        self._stack = ExitStack()
        self._handles: dict[Path, Any] = {}

    @staticmethod
    def _keys_of(path: Path) -> list[str]:
        try:
            with safe_open(str(path), framework="pt") as handle:
                return list(handle.keys())
        except (SafetensorError, OSError) as exc:
            raise CheckpointError(f"cannot read {path}: {exc}") from None

    def close(self) -> None:
        self._stack.close()

    def __contains__(self, key: str) -> bool:
        return key in self._files

    def keys(self) -> Iterator[str]:
        return iter(self._files)

    def tensor(self, key: str) -> torch.Tensor:
        path = self._files[key]
        try:
            if path not in self._handles:
                self._handles[path] = self._stack.enter_context(safe_open(str(path), framework="pt"))
            return self._handles[path].get_tensor(key)
        except (SafetensorError, OSError) as exc:
            raise CheckpointError(f"cannot read {key} from {path}: {exc}") from None


# Tokenizer.


class ClipTokenizer:
    """Text -> token ids for an imported CLIP model, padded to its context length.

    Attributes:
        context_length: Length of every returned row (the text encoder's positions).
        bos_id: Id of `<|startoftext|>`.
        eos_id: Id of `<|endoftext|>` (the token the text encoder pools at).
        pad_id: Id used for padding.
    """

    def __init__(self, tokenizer: Any, context_length: int):
        self._tokenizer = tokenizer
        self.context_length = context_length
        self.bos_id = int(tokenizer.bos_token_id)
        self.eos_id = int(tokenizer.eos_token_id)
        self.pad_id = int(tokenizer.pad_token_id)

    def __call__(self, texts: str | Sequence[str]) -> torch.Tensor:
        """Tokenize one text or a batch.

        Args:
            texts: A string or a sequence of strings.

        Returns:
            Long tensor (N, context_length), N = 1 for a single string; long texts are truncated
            with their end-of-text token kept, so the pooling token is always present.
        """
        batch = [texts] if isinstance(texts, str) else list(texts)
        encoded = self._tokenizer(
            batch, padding="max_length", truncation=True, max_length=self.context_length, return_tensors="pt"
        )
        return encoded["input_ids"].long()


def clip_tokenizer(folder: str | Path) -> ClipTokenizer:
    """HF's CLIP tokenizer for a CLIP folder (`vocab.json` + `merges.txt`); needs `simmim[hf]`.

    Args:
        folder: The same folder `load_clip` reads; its config.json gives the context length.

    Returns:
        A callable mapping text(s) to a (N, context_length) long tensor.

    Raises:
        CheckpointError: The folder, config or vocabulary files are missing, or transformers
            is not installed.
    """
    folder = _existing_folder(folder)
    raw = _read_clip_json(folder)
    missing = [name for name in ("vocab.json", "merges.txt") if not (folder / name).is_file()]
    if missing:
        raise CheckpointError(f"{folder} has no {' or '.join(missing)}; the CLIP tokenizer needs both")
    context_length = _sub_config(raw, "text_config", _TEXT_DEFAULTS)["max_position_embeddings"]
    try:
        import transformers
    except ImportError:
        raise CheckpointError("clip_tokenizer needs Hugging Face transformers: install simmim[hf]") from None
    # transformers 4 has a slow and a fast class; in 5 CLIPTokenizer is the fast one (Fast is an alias).
    tokenizer_class = getattr(transformers, "CLIPTokenizerFast", None) or transformers.CLIPTokenizer
    try:
        # from_pretrained (local only) also honours the folder's tokenizer_config / special tokens.
        tokenizer = tokenizer_class.from_pretrained(str(folder), local_files_only=True)
    except (OSError, ValueError) as exc:
        raise CheckpointError(f"cannot load the CLIP tokenizer from {folder}: {exc}") from None
    return ClipTokenizer(tokenizer, context_length)
