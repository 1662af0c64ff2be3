"""One rule per module type that may hold trainable parameters under per-example clipping.

Types are matched exactly (not by subclass): a subclass may use its parameters differently.
"""

from __future__ import annotations

from torch import nn

from simmim.models.layers import ClassToken, LearnedQueries, LogitScale, MaskToken, PositionEmbedding
from simmim.privacy.dpsgd.rules.base import LayerRule
from simmim.privacy.dpsgd.rules.conv import Conv2dRule
from simmim.privacy.dpsgd.rules.embedding import EmbeddingRule
from simmim.privacy.dpsgd.rules.layer_norm import LayerNormRule
from simmim.privacy.dpsgd.rules.leaves import (
    ClassTokenRule,
    LearnedQueriesRule,
    LogitScaleRule,
    MaskTokenRule,
    PositionEmbeddingRule,
)
from simmim.privacy.dpsgd.rules.linear import LinearRule

RULES: dict[type[nn.Module], LayerRule] = {
    nn.Linear: LinearRule(),
    nn.Conv2d: Conv2dRule(),
    nn.LayerNorm: LayerNormRule(),
    nn.Embedding: EmbeddingRule(),
    PositionEmbedding: PositionEmbeddingRule(),
    ClassToken: ClassTokenRule(),
    MaskToken: MaskTokenRule(),
    LearnedQueries: LearnedQueriesRule(),
    LogitScale: LogitScaleRule(),
}


def rule_for(module: nn.Module) -> LayerRule | None:
    return RULES.get(type(module))
