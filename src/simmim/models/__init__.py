"""The SimMIM model: encoders, fusion into one embedding space, decoders, and one factory."""

from simmim.models.config import MODEL_SIZES, ModelConfig, model_config
from simmim.models.simmim import SimMIM, create_model

__all__ = ["MODEL_SIZES", "ModelConfig", "SimMIM", "create_model", "model_config"]
