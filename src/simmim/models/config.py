"""Named model sizes: one dataclass, one registry, from `tiny` (tests) to `base`."""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields, replace

from simmim.errors import ConfigError


@dataclass(frozen=True)
class ModelConfig:
    """Every hyperparameter of the model; `vocab_size` is set from the fitted tokenizer."""

    image_size: int = 32
    # 8-px patches on 32-px scenes: 16 tokens, 3x cheaper than 4-px patches, and object positions
    # are learned within a few hundred steps (with 4-px patches captions stayed at chance on position).
    patch_size: int = 8
    channels: int = 3
    width: int = 64  # image encoder width
    depth: int = 2
    heads: int = 4
    mlp_ratio: float = 2.0
    pre_norm: bool = False  # CLIP's extra LayerNorm before the image transformer
    activation: str = "gelu"  # or "quick_gelu" (CLIP)
    text_width: int = 64
    text_depth: int = 2
    text_heads: int = 4
    context_length: int = 24
    vocab_size: int = 128
    eos_id: int = 2  # the text encoder pools at the first token equal to this id
    embed_dim: int = 64  # the shared embedding space
    temporal_depth: int = 1  # video: blocks over per-frame embeddings
    max_frames: int = 8
    decoder_width: int = 64
    decoder_depth: int = 2
    generator_depth: int = 2  # text -> image decoder
    init_logit_scale: float = 2.6593  # ln(1/0.07), as in CLIP
    # Input normalisation applied inside the image encoder (CLIP checkpoints use OpenAI's values).
    pixel_mean: tuple[float, float, float] = (0.5, 0.5, 0.5)
    pixel_std: tuple[float, float, float] = (0.5, 0.5, 0.5)

    @property
    def num_patches(self) -> int:
        return (self.image_size // self.patch_size) ** 2

    @property
    def patch_dim(self) -> int:
        """Pixels per patch (what the masked-patch and generation heads predict)."""
        return self.channels * self.patch_size**2

    def __post_init__(self) -> None:
        if self.image_size % self.patch_size:
            raise ConfigError(
                f"model.image_size ({self.image_size}) must be a multiple of model.patch_size ({self.patch_size})"
            )
        for name, width, heads in (
            ("width", self.width, self.heads),
            ("text_width", self.text_width, self.text_heads),
            ("decoder_width", self.decoder_width, self.heads),
        ):
            if width % heads:
                raise ConfigError(f"model.{name} ({width}) must be divisible by the number of heads ({heads})")
        if self.activation not in ("gelu", "quick_gelu"):
            raise ConfigError(f"model.activation must be 'gelu' or 'quick_gelu', got {self.activation!r}")

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, values: dict) -> ModelConfig:
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise ConfigError(f"unknown model field(s): {', '.join(unknown)}")
        values = {k: tuple(v) if isinstance(v, list) else v for k, v in values.items()}
        return cls(**values)


MODEL_SIZES: dict[str, ModelConfig] = {
    "tiny": ModelConfig(width=32, depth=1, heads=2, text_width=32, text_depth=1, text_heads=2, embed_dim=32,
                        decoder_width=32, decoder_depth=1, generator_depth=1),
    "demo": ModelConfig(width=96, depth=3, heads=4, text_width=64, text_depth=2, text_heads=4, embed_dim=64,
                        decoder_width=64, decoder_depth=2, generator_depth=2),
    "small": ModelConfig(width=192, depth=6, heads=4, text_width=128, text_depth=4, text_heads=4, embed_dim=128,
                         decoder_width=128, decoder_depth=3, generator_depth=3, mlp_ratio=4.0),
    "base": ModelConfig(image_size=64, patch_size=8, width=384, depth=8, heads=8, text_width=256, text_depth=6,
                        text_heads=8, embed_dim=256, decoder_width=256, decoder_depth=4, generator_depth=4,
                        mlp_ratio=4.0),
}


def model_config(name: str, **overrides) -> ModelConfig:
    """The named size, with fields overridden (e.g. `vocab_size` from the tokenizer)."""
    if name not in MODEL_SIZES:
        raise ConfigError(f"unknown model size {name!r}; choose one of {', '.join(MODEL_SIZES)}")
    try:
        return replace(MODEL_SIZES[name], **overrides)
    except TypeError as exc:
        raise ConfigError(f"bad model override: {exc}") from None
