"""`simmim he ...`: key generation and encrypted zero-shot classification on this machine."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated

import typer

from simmim.errors import CryptoError

he_app = typer.Typer(no_args_is_help=True, help="Homomorphic encryption: keys and encrypted inference.")
PUBLIC_KEY_FILE, PRIVATE_KEY_FILE = "he_public.key", "he_private.key"
KeysOption = Annotated[Path, typer.Option("--keys", help="directory with he_public.key and he_private.key")]
ModelOption = Annotated[Path, typer.Option("--model", "-m", help="checkpoint directory")]


def write_keypair(directory: Path, bits: int) -> tuple[Path, Path]:
    """A new key pair in `directory`; the private key file is readable by its owner only."""
    from simmim.crypto.paillier import generate_keypair
    from simmim.crypto.serialization import private_key_to_bytes, public_key_to_bytes

    public, private = generate_keypair(bits)
    directory.mkdir(parents=True, exist_ok=True)
    public_path, private_path = directory / PUBLIC_KEY_FILE, directory / PRIVATE_KEY_FILE
    if private_path.exists():
        raise CryptoError(f"{private_path} exists; refusing to overwrite a private key (choose another --out)")
    descriptor = os.open(private_path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(descriptor, "wb") as handle:
        handle.write(private_key_to_bytes(private))
    public_path.write_bytes(public_key_to_bytes(public))
    return public_path, private_path


def read_private_key(directory: Path):
    from simmim.crypto.serialization import private_key_from_bytes

    path = directory / PRIVATE_KEY_FILE
    if not path.is_file():
        raise CryptoError(f"{path} not found; create keys with `simmim he keygen --out {directory}`")
    return private_key_from_bytes(path.read_bytes())


@he_app.command("keygen")
def keygen(out: Annotated[Path, typer.Option(help="directory for the key files")] = Path("keys"),
           bits: Annotated[int, typer.Option(help="modulus size: 2048 (112-bit security) or 3072 (128-bit)")] = 2048
           ) -> None:
    """Generate a Paillier key pair."""
    public_path, private_path = write_keypair(out, bits)
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
