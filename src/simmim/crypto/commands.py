"""`simmim he ...`: key generation, encrypted zero-shot classification (Paillier) and encrypted
matching of two encrypted embeddings (BGN), each a round trip on this machine through bytes."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated

import numpy as np
import typer

from simmim.errors import CryptoError, DataError

he_app = typer.Typer(no_args_is_help=True, help="Homomorphic encryption: keys, encrypted inference and matching.")
PUBLIC_KEY_FILE, PRIVATE_KEY_FILE = "he_public.key", "he_private.key"
BGN_PUBLIC_KEY_FILE, BGN_PRIVATE_KEY_FILE = "bgn_public.key", "bgn_private.key"
SCHEMES = ("paillier", "bgn")
KeysOption = Annotated[Path, typer.Option("--keys", help="directory with the key files from `simmim he keygen`")]
ModelOption = Annotated[Path, typer.Option("--model", "-m", help="checkpoint directory")]


def _write_key_files(directory: Path, names: tuple[str, str], public: bytes, private: bytes) -> tuple[Path, Path]:
    """Writes a key pair's files; the private one is readable by its owner only and never overwritten."""
    directory.mkdir(parents=True, exist_ok=True)
    public_path, private_path = directory / names[0], directory / names[1]
    if private_path.exists():
        raise CryptoError(f"{private_path} exists; refusing to overwrite a private key (choose another --out)")
    descriptor = os.open(private_path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(descriptor, "wb") as handle:
        handle.write(private)
    public_path.write_bytes(public)
    return public_path, private_path


def write_keypair(directory: Path, bits: int) -> tuple[Path, Path]:
    """A new Paillier key pair in `directory`."""
    from simmim.crypto.paillier import generate_keypair
    from simmim.crypto.serialization import private_key_to_bytes, public_key_to_bytes

    public, private = generate_keypair(bits)
    return _write_key_files(directory, (PUBLIC_KEY_FILE, PRIVATE_KEY_FILE), public_key_to_bytes(public),
                            private_key_to_bytes(private))


def write_bgn_keypair(directory: Path) -> tuple[Path, Path]:
    """A new BGN key pair (BLS12-381) in `directory`."""
    from simmim.crypto.bgn import generate_keypair
    from simmim.crypto.bgn_serialization import private_key_to_bytes, public_key_to_bytes

    public, private = generate_keypair()
    return _write_key_files(directory, (BGN_PUBLIC_KEY_FILE, BGN_PRIVATE_KEY_FILE), public_key_to_bytes(public),
                            private_key_to_bytes(private))


def _read_key_file(directory: Path, name: str, scheme: str) -> bytes:
    path = directory / name
    if not path.is_file():
        raise CryptoError(f"{path} not found; create keys with `simmim he keygen --scheme {scheme} --out {directory}`")
    return path.read_bytes()


def read_private_key(directory: Path):
    from simmim.crypto.serialization import private_key_from_bytes

    return private_key_from_bytes(_read_key_file(directory, PRIVATE_KEY_FILE, "paillier"))


def read_bgn_private_key(directory: Path):
    from simmim.crypto.bgn_serialization import private_key_from_bytes

    return private_key_from_bytes(_read_key_file(directory, BGN_PRIVATE_KEY_FILE, "bgn"))


@he_app.command("keygen")
def keygen(out: Annotated[Path, typer.Option(help="directory for the key files")] = Path("keys"),
           bits: Annotated[int, typer.Option(help="Paillier modulus size: 2048 (112-bit security) or 3072 (128-bit)")
                           ] = 2048,
           scheme: Annotated[str, typer.Option(help="paillier (encrypted inference) or bgn (encrypted matching)")
                             ] = "paillier") -> None:
    """Generate a Paillier or BGN key pair."""
    if scheme not in SCHEMES:
        raise CryptoError(f"unknown scheme {scheme!r}; expected one of {', '.join(SCHEMES)}")
    public_path, private_path = write_keypair(out, bits) if scheme == "paillier" else write_bgn_keypair(out)
    print(f"public key: {public_path}\nprivate key: {private_path} (keep it secret)")


@he_app.command("classify")
def classify(image: Path, labels: Annotated[str, typer.Option(help="comma-separated class names")],
             keys: KeysOption = Path("keys"),
             model: ModelOption = Path("runs/demo/model")) -> None:
    """Zero-shot classification with the image embedding encrypted while the labels score it."""
    from simmim.crypto.encrypted_inference import encrypted_zero_shot
    from simmim.data.formats import load_image
    from simmim.train.checkpoint import load_checkpoint

    private_key = read_private_key(keys)
    net, tokenizer, _ = load_checkpoint(model)
    for label, prob in encrypted_zero_shot(net, tokenizer, load_image(image, net.cfg.image_size), labels.split(","),
                                           private_key):
        print(f"{prob:.3f}  {label}")


def _load_vectors(path: Path, ndim: int, what: str) -> np.ndarray:
    try:
        array = np.load(path, allow_pickle=False)
    except (OSError, ValueError) as exc:
        raise DataError(f"cannot read the {what} {path} as a .npy array: {exc}") from None
    if array.ndim != ndim or array.size == 0 or array.dtype.kind not in "iuf":
        raise DataError(f"the {what} {path} must be a non-empty {ndim}-D numeric array, got shape {array.shape} "
                        f"of {array.dtype}")
    return array


@he_app.command("match")
def match(query: Annotated[Path, typer.Argument(help="query embedding: a 1-D .npy array")],
          gallery: Annotated[Path, typer.Argument(help="gallery embeddings: a 2-D .npy array, one row per item")],
          keys: KeysOption = Path("keys"),
          metric: Annotated[str, typer.Option(help="inner-product or squared-distance")] = "inner-product",
          fraction_bits: Annotated[int, typer.Option(help="fixed-point bits per value; products carry twice")] = 15,
          max_norm: Annotated[float, typer.Option(help="largest norm of a query or gallery vector")] = 1.0,
          window_bits: Annotated[int, typer.Option(help="decrypt results in +-2^w (2s + log2|result| <= w)")] = 31,
          top: Annotated[int, typer.Option(help="how many best matches to print")] = 5) -> None:
    """Score a query against a gallery with both encrypted (BGN): only the key holder sees the scores.

    The round trip runs here, passing bytes between the roles: the key holder encrypts the query,
    the gallery owner encrypts the gallery with the public key, the matcher computes encrypted
    scores from the public key and the two blobs alone, and the key holder decrypts them."""
    from simmim.crypto import bgn_serialization as wire
    from simmim.crypto.bgn_vectors import GALLERY, ProductEncoding, decrypt_score, encrypt_embedding
    from simmim.crypto.bgn_vectors import match as match_encrypted

    private_key = read_bgn_private_key(keys)
    encoding = ProductEncoding(fraction_bits=fraction_bits, max_norm=max_norm, window_bits=window_bits)
    encoding.check_budget(metric)
    query_values, gallery_values = _load_vectors(query, 1, "query"), _load_vectors(gallery, 2, "gallery")
    if gallery_values.shape[1] != query_values.size:
        raise DataError(f"gallery rows have {gallery_values.shape[1]} values, the query {query_values.size}")
    # Key holder and gallery owner: encrypt. The matcher gets bytes and the public key only.
    public_bytes = wire.public_key_to_bytes(private_key.public_key)
    query_blob = wire.embedding_to_bytes(encrypt_embedding(private_key.public_key, query_values, encoding=encoding))
    gallery_blobs = [wire.embedding_to_bytes(encrypt_embedding(private_key.public_key, row, side=GALLERY,
                                                               encoding=encoding)) for row in gallery_values]
    # Matcher.
    public_key = wire.public_key_from_bytes(public_bytes)
    scores_blob = wire.scores_to_bytes(
        match_encrypted(wire.embedding_from_bytes(query_blob, public_key),
                        [wire.embedding_from_bytes(blob, public_key) for blob in gallery_blobs], metric), public_key)
    # Key holder.
    scores = [decrypt_score(private_key, s) for s in wire.scores_from_bytes(scores_blob, private_key.public_key)]
    order = sorted(range(len(scores)), key=lambda i: -scores[i] if metric == "inner-product" else scores[i])
    print(f"bytes: query {len(query_blob):,}, gallery {sum(map(len, gallery_blobs)):,}, scores {len(scores_blob):,}")
    print(f"{'rank':>4}  {'index':>5}  {metric}")
    for rank, index in enumerate(order[:top], start=1):
        print(f"{rank:>4}  {index:>5}  {scores[index]:.6f}")
