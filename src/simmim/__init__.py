"""SimMIM: a Siamese Modality-Invariant Multimodal model and the tools to train it privately."""

__version__ = "0.1.0"
