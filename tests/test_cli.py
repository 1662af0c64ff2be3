"""Smoke tests of the real `simmim` entry point, each in its own process."""

import json
import subprocess
import sys
from pathlib import Path

import pytest


def simmim(*args, cwd=None):
    return subprocess.run([sys.executable, "-m", "simmim.cli", *map(str, args)], capture_output=True, text=True,
                          cwd=cwd, timeout=600)


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    root = tmp_path_factory.mktemp("cli")
    config = root / "tiny.yaml"
    config.write_text("model: {size: tiny}\ndata: {train_size: 300, val_size: 40, test_size: 40}\n"
                      "train: {steps: 8, batch_size: 16, log_every: 4}\n")
    result = simmim("train", "--config", config, "--out", root / "run", "--no-progress")
    assert result.returncode == 0, result.stderr
    images = root / "images"
    written = simmim("data", "write", images, "--format", "folder", "--n", "6")
    assert written.returncode == 0, written.stderr
    return root, root / "run" / "model", images


def test_train_writes_checkpoint_and_loss_plot(trained):
    root, model, _ = trained
    assert (model / "model.safetensors").is_file() and (model / "meta.json").is_file()
    assert (root / "run" / "loss_curves.png").stat().st_size > 1000


def test_inference_commands(trained, tmp_path):
    _, model, images = trained
    image = sorted(images.glob("*.png"))[0]
    caption = simmim("caption", image, "--model", model, "--beam", "2")
    assert caption.returncode == 0, caption.stderr
    from simmim.data.formats import load_image
    from simmim.inference import caption_image
    from simmim.train.checkpoint import load_checkpoint

    net, tokenizer, _ = load_checkpoint(model)
    expected = caption_image(net, tokenizer, load_image(image, net.cfg.image_size), beam_size=2)
    assert caption.stdout == expected + "\n"  # the library's caption (8 training steps: maybe empty)
    out = tmp_path / "gen.png"
    generated = simmim("generate", "a small red circle at the top left", "--out", out, "--model", model)
    assert generated.returncode == 0 and out.stat().st_size > 100, generated.stderr
    search = simmim("search", "a large blue square", "--images", images, "--model", model, "--top", "3")
    assert search.returncode == 0 and len(search.stdout.strip().splitlines()) == 3, search.stderr
    classify = simmim("classify", image, "--labels", "red,green,blue", "--model", model)
    lines = classify.stdout.strip().splitlines()
    assert classify.returncode == 0 and len(lines) == 3, classify.stderr
    assert sum(float(line.split()[0]) for line in lines) == pytest.approx(1.0, abs=0.01)


def test_eval_json(trained):
    _, model, _ = trained
    result = simmim("eval", model, "--json")
    assert result.returncode == 0, result.stderr
    metrics = json.loads(result.stdout)
    assert {"text_to_image_R@1", "caption_attribute_accuracy", "zero_shot_colour"} <= set(metrics)
    assert all(set(m) == {"value", "chance"} for m in metrics.values())


def test_data_check_counts_bad_records(tmp_path):
    folder = tmp_path / "data"
    assert simmim("data", "write", folder, "--format", "folder", "--n", "4").returncode == 0
    victim = sorted(folder.glob("*.png"))[0]
    victim.write_bytes(b"not an image")
    strict = simmim("data", "check", folder)
    assert strict.returncode == 2 and victim.name in strict.stderr and "Traceback" not in strict.stderr
    lenient = simmim("data", "check", folder, "--skip-bad")
    assert lenient.returncode == 0 and "3 good record(s), 1 skipped" in lenient.stdout


@pytest.mark.parametrize("args, needle", [
    (["train", "--config", "missing.toml"], "does not exist"),
    (["caption", "missing.png", "--model", "missing-model"], "does not exist"),
    (["eval", "no-such-checkpoint"], "does not exist"),
    (["tee", "verify", "no-such-evidence", "--format", "nitro"], "no-such-evidence"),
    (["fed", "run", "--clients", "0"], "clients"),
])
def test_errors_are_one_line_without_traceback(tmp_path, args, needle):
    result = simmim(*args, cwd=tmp_path)
    assert result.returncode == 2
    assert "Traceback" not in result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error:") and needle in lines[0]


def test_tee_verify_runs_from_the_real_entry_point():
    vectors = Path(__file__).parent / "tee" / "vectors" / "nitro"
    result = simmim("tee", "verify", vectors / "nitro_attestation.b64", "--format", "nitro",
                    "--now", "2024-09-07T14:37:39Z")
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("verified: aws-nitro")


def test_private_training_prints_its_guarantee(tmp_path):
    config = tmp_path / "dp.toml"
    config.write_text('[model]\nsize = "tiny"\n[data]\ntrain_size = 200\nval_size = 20\ntest_size = 20\n'
                      f'[train]\nsteps = 3\nbatch_size = 32\n[privacy]\nledger = "sqlite:///{tmp_path}/l.db"\n')
    result = simmim("train", "--config", config, "--out", tmp_path / "run", "--dp", "--epsilon", "5",
                    "--unit", "example", "--no-progress")
    assert result.returncode == 0, result.stderr
    assert "-DP at example level" in result.stdout and "ledger job train-" in result.stdout
    again = simmim("train", "--config", config, "--out", tmp_path / "run2", "--dp", "--epsilon", "5",
                   "--unit", "example", "--no-progress")
    assert again.returncode == 2 and "refused" in again.stderr and "Traceback" not in again.stderr
