"""The tiny model, trained for a few hundred steps, must learn: metrics far above chance."""

import pytest

from simmim.config import Config
from simmim.eval.evaluate import evaluate
from simmim.train.loop import train


@pytest.mark.slow
def test_tiny_model_learns_far_above_chance(tmp_path):
    cfg = Config.from_dict({
        "model": {"size": "tiny"},
        "data": {"train_size": 6000, "val_size": 200, "test_size": 300, "video_train_size": 0},
        "train": {"steps": 400, "batch_size": 64, "warmup_steps": 30, "lr": 3e-3, "log_every": 50},
    })
    result = train(cfg, tmp_path, progress=False)
    metrics = evaluate(result.model, result.tokenizer, result.splits, context_length=cfg.data.context_length,
                       probe_train_items=500).metrics
    summary = {k: (round(v["value"], 3), round(v["chance"], 3)) for k, v in metrics.items()}

    def ratio(name):
        return metrics[name]["value"] / metrics[name]["chance"]

    assert ratio("text_to_image_R@1") > 8, summary
    assert ratio("image_to_text_R@5") > 5, summary
    assert metrics["zero_shot_colour"]["value"] > 0.6, summary
    assert metrics["caption_colour_accuracy"]["value"] > 0.5, summary
    assert metrics["caption_position_accuracy"]["value"] > 0.5, summary
    assert result.history[-1]["loss"] < 0.6 * result.history[0]["loss"], summary
