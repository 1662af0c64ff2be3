"""Encrypted inference: the server scores an embedding it cannot read.

    client                                   server
    embedding -> Enc(embedding)  --bytes-->  Enc(W e + b) = head.apply(...)
    scores = Dec(...)            <--bytes--

The client holds the key pair (it encrypts with CRT as the key holder); the server holds only
the public key and a linear head: class embeddings times the model's logit scale for zero-shot
classification, or any trained linear layer. The server learns nothing about the embedding
(semantic security of Paillier); the client learns the scores, which is what it asked for.
Scores are exact for the head's weights rounded to `weight_fraction_bits` and the embedding
rounded to the codec's precision (2^-25 by default).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from simmim.crypto.encoding import FixedPoint
from simmim.crypto.linear import encrypted_linear
from simmim.crypto.paillier import DEFAULT_MODE, PrivateKey, PublicKey
from simmim.crypto.serialization import vector_from_bytes, vector_to_bytes
from simmim.crypto.vector import EncryptedVector, decrypt_vector, encrypt_vector
from simmim.errors import CryptoError

# L2-normalised embeddings have |x| <= 1; 24 fraction bits keep the rounding below 3e-8.
EMBEDDING_CODEC = FixedPoint(fraction_bits=24, max_abs=1.0)


@dataclass(frozen=True)
class LinearHead:
    """Server side: y = weights @ x + bias, applied to encrypted inputs.

    Attributes:
        weights: (outputs, inputs) floats.
        bias: (outputs,) floats or None.
        weight_fraction_bits: Weights are rounded to multiples of 2^-weight_fraction_bits.
    """

    weights: np.ndarray
    bias: np.ndarray | None = None
    weight_fraction_bits: int = 16

    def __post_init__(self):
        if np.asarray(self.weights).ndim != 2:
            raise CryptoError(f"a linear head needs 2-D weights, got shape {np.asarray(self.weights).shape}")

    @property
    def input_size(self) -> int:
        return int(np.asarray(self.weights).shape[1])

    def apply(self, embedding: EncryptedVector, *, mode: str = DEFAULT_MODE) -> EncryptedVector:
        """Encrypted scores for an encrypted embedding; the inputs stay unreadable here."""
        return encrypted_linear(embedding, self.weights, self.bias, weight_fraction_bits=self.weight_fraction_bits,
                                mode=mode)

    def apply_bytes(self, request: bytes, public_key: PublicKey) -> bytes:
        """The wire form: an encrypted embedding in, encrypted scores out."""
        return vector_to_bytes(self.apply(vector_from_bytes(request, public_key)))


def zero_shot_head(class_embeddings: np.ndarray, logit_scale: float = 1.0) -> LinearHead:
    """A head whose scores are the model's zero-shot logits: logit_scale * <embedding, class embedding>."""
    weights = np.asarray(class_embeddings, dtype=np.float64) * float(logit_scale)
    return LinearHead(weights=weights, weight_fraction_bits=16 if abs(logit_scale) <= 128 else 12)


class InferenceClient:
    """Client side: encrypts embeddings and decrypts the scores that come back."""

    def __init__(self, private_key: PrivateKey, codec: FixedPoint = EMBEDDING_CODEC):
        self.private_key = private_key
        self.codec = codec

    @property
    def public_key(self) -> PublicKey:
        return self.private_key.public_key

    def encrypt_embedding(self, embedding: np.ndarray) -> EncryptedVector:
        """One ciphertext per value (linear maps need that), encrypted with CRT by the key holder."""
        return encrypt_vector(self.private_key, np.asarray(embedding, dtype=np.float64).reshape(-1),
                              codec=self.codec, packed=False)

    def request(self, embedding: np.ndarray) -> bytes:
        return vector_to_bytes(self.encrypt_embedding(embedding))

    def decrypt_scores(self, scores: EncryptedVector | bytes) -> np.ndarray:
        if isinstance(scores, bytes | bytearray):
            scores = vector_from_bytes(scores, self.public_key)
        return decrypt_vector(self.private_key, scores)


def softmax(logits: np.ndarray) -> np.ndarray:
    shifted = np.exp(logits - logits.max())
    return shifted / shifted.sum()


def encrypted_zero_shot(model, tokenizer, image: np.ndarray, labels: list[str],
                        private_key: PrivateKey) -> list[tuple[str, float]]:
    """`simmim.inference.classify_image` with the image embedding encrypted while it is scored.

    Runs both sides in this process and passes bytes between them, as a deployment would.
    Returns (label, probability) pairs, best first.
    """
    import torch

    from simmim.errors import DataError
    from simmim.inference import _pixels

    labels = [label.strip() for label in labels if label.strip()]
    if len(labels) < 2:
        raise DataError("--labels needs at least two comma-separated labels")
    client = InferenceClient(private_key)
    with torch.no_grad():
        embedding = model.encode_image(_pixels([image]))[0].double().numpy()
        request = client.request(embedding)
        # Server: text embeddings of the labels, scaled like the model's zero-shot logits.
        tokens = torch.from_numpy(tokenizer.encode_batch(labels, model.cfg.context_length))
        class_embeddings = model.encode_text(tokens).double().numpy()
        logit_scale = float(model.fusion.logit_scale(torch.ones((), dtype=torch.float32)))
    response = zero_shot_head(class_embeddings, logit_scale).apply_bytes(request, client.public_key)
    probabilities = softmax(client.decrypt_scores(response))
    return sorted(zip(labels, probabilities.tolist()), key=lambda pair: -pair[1])
