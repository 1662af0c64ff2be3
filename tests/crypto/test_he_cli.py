"""`simmim he keygen` and `simmim he classify` in their own processes, checked against the library."""

import subprocess
import sys

import numpy as np
import pytest
import torch
from PIL import Image

from simmim.crypto.commands import read_private_key
from simmim.data.formats import load_image
from simmim.data.tokenizer import WordTokenizer
from simmim.inference import classify_image
from simmim.models import create_model
from simmim.train.checkpoint import load_checkpoint, save_checkpoint

LABELS = "red circle,green square,blue triangle"


def simmim(*args):
    return subprocess.run([sys.executable, "-m", "simmim.cli", *map(str, args)], capture_output=True, text=True,
                          timeout=300)


@pytest.fixture(scope="module")
def checkpoint_and_image(tmp_path_factory):
    """An untrained tiny model (random weights still give distinct scores) and a random image."""
    root = tmp_path_factory.mktemp("he_cli")
    torch.manual_seed(0)
    tokenizer = WordTokenizer.fit(["a red circle", "a green square", "a blue triangle"])
    model_dir = save_checkpoint(root / "model", model=create_model("tiny"), tokenizer=tokenizer, meta={})
    pixels = np.random.default_rng(0).integers(0, 256, size=(32, 32, 3), dtype=np.uint8)
    image = root / "image.png"
    Image.fromarray(pixels).save(image)
    return model_dir, image


def test_keygen_then_encrypted_classify_matches_plaintext_classify(tmp_path, checkpoint_and_image):
    model_dir, image = checkpoint_and_image
    keys = tmp_path / "keys"
    made = simmim("he", "keygen", "--out", keys)
    assert made.returncode == 0, made.stderr
    assert (keys / "he_private.key").stat().st_mode & 0o077 == 0  # owner only
    assert read_private_key(keys).public_key.bits == 2048
    again = simmim("he", "keygen", "--out", keys)
    assert again.returncode == 2 and "refusing to overwrite" in again.stderr and "Traceback" not in again.stderr

    result = simmim("he", "classify", image, "--labels", LABELS, "--keys", keys, "--model", model_dir)
    assert result.returncode == 0, result.stderr
    encrypted = {line.split("  ", 1)[1]: float(line.split()[0]) for line in result.stdout.strip().splitlines()}
    net, tokenizer, _ = load_checkpoint(model_dir)
    plain = classify_image(net, tokenizer, load_image(image, net.cfg.image_size), LABELS.split(","))
    assert list(encrypted) == [label for label, _ in plain]  # same order, best first
    for label, prob in plain:
        assert encrypted[label] == pytest.approx(prob, abs=0.0015)  # printed with 3 decimals


def test_clear_errors_without_traceback(tmp_path, checkpoint_and_image):
    model_dir, image = checkpoint_and_image
    missing = simmim("he", "classify", image, "--labels", LABELS, "--keys", tmp_path / "none", "--model", model_dir)
    assert missing.returncode == 2 and "simmim he keygen" in missing.stderr and "Traceback" not in missing.stderr
    (tmp_path / "bad").mkdir()
    (tmp_path / "bad" / "he_private.key").write_bytes(b"SMHE\x01\x02\x08")
    bad = simmim("he", "classify", image, "--labels", LABELS, "--keys", tmp_path / "bad", "--model", model_dir)
    assert bad.returncode == 2 and "truncated" in bad.stderr and "Traceback" not in bad.stderr
    small = simmim("he", "keygen", "--out", tmp_path / "small", "--bits", "1024")
    assert small.returncode == 2 and "not supported" in small.stderr
