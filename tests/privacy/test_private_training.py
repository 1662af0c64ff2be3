"""DP-SGD inside the training loop: the plan, the ledger, the step, the report."""

import pytest
import torch

from simmim.config import Config
from simmim.errors import BudgetExceededError, ConfigError
from simmim.privacy.accounting import epsilon
from simmim.privacy.ledger import Ledger
from simmim.privacy.training import PrivateStep, plan_privacy
from simmim.train.loop import train


def _config(tmp_path, **privacy):
    return Config.from_dict({
        "model": {"size": "tiny"},
        "data": {"train_size": 300, "val_size": 40, "test_size": 40},
        "train": {"steps": 4, "batch_size": 32, "log_every": 1, "warmup_steps": 1},
        "privacy": {"dp": True, "epsilon": 4.0, "delta": 1e-5, "ledger": f"sqlite:///{tmp_path}/ledger.db",
                    "micro_batch_size": 24, **privacy},
    })


def test_private_run_spends_its_budget_and_commits_it(tmp_path):
    cfg = _config(tmp_path)
    result = train(cfg, tmp_path / "run", progress=False)
    report = result.privacy
    assert report["unit"] == "user" and report["sensitivity"] == 2.0 and report["blocks"] >= 1
    assert report["epsilon_spent"] <= 4.0
    # Calibrated to 3 decimals of sigma: the full run spends almost exactly the target.
    assert report["epsilon_spent"] == pytest.approx(4.0, rel=0.02)
    assert report["epsilon_spent"] == pytest.approx(epsilon(
        sample_rate=report["sample_rate"], noise_multiplier=report["noise_multiplier"], steps=4, delta=1e-5,
        sensitivity=2.0))
    with Ledger(cfg.privacy.ledger) as ledger:
        job = ledger.job(report["ledger_job"])
        assert job.status == "committed"
        # The dataset's cap is now used up: a second job on the same data is refused before training.
        with pytest.raises(BudgetExceededError):
            train(cfg, tmp_path / "second", progress=False)
    assert all(torch.isfinite(p).all() for p in result.model.parameters())


def test_micro_batches_hold_whole_clipping_units(tmp_path):
    cfg = _config(tmp_path)
    from simmim.data.batches import EncodedSet
    from simmim.data.splits import build_splits
    from simmim.data.tokenizer import WordTokenizer
    from simmim.train.loop import build_model

    splits = build_splits(cfg.data)
    tokenizer = WordTokenizer.fit(splits.all_captions())
    train_set = EncodedSet(splits.train, tokenizer, cfg.data.context_length)
    plan = plan_privacy(cfg, splits.train)
    step = PrivateStep(build_model(cfg, tokenizer), train_set, plan, micro_batch_size=24, mask_ratio=0.5)
    try:
        sampled = torch.arange(plan.units)
        seen = {}
        for records, clip_units in step._micro_batches(sampled):
            for unit in clip_units.unique().tolist():
                assert unit not in seen, "a clipping unit spans two micro-batches"
                seen[unit] = True
            # Every record of a sampled person is in the batch of its block.
            subjects = {train_set.records[i].subject_id for i in records.tolist()}
            assert sum(r.subject_id in subjects for r in train_set.records) == len(records)
        assert sum(len(r) for r, _ in step._micro_batches(sampled)) == len(train_set)
    finally:
        step.close()


def test_example_level_without_contrastive_has_sensitivity_one(tmp_path):
    cfg = Config.from_dict({**_config(tmp_path, unit="example").to_dict(), "loss": {"contrastive": 0.0}})
    plan = plan_privacy(cfg, __import__("simmim.data.splits", fromlist=["x"]).build_splits(cfg.data).train)
    assert plan.unit == "example" and plan.sensitivity == 1.0 and plan.blocks == 0


def test_private_training_with_clips_clips_each_kind_to_its_share(tmp_path):
    cfg = Config.from_dict({**_config(tmp_path).to_dict(), "data": {"train_size": 100, "video_train_size": 30},
                            "privacy": {**_config(tmp_path).to_dict()["privacy"], "video_norm_share": 0.25}})
    result = train(cfg, tmp_path / "run", progress=False)
    report = result.privacy
    people = {r.subject_id for r in result.splits.train + result.splits.video_train}
    assert report["units"] == len(people) and report["video_norm_share"] == 0.25
    assert report["epsilon_spent"] == pytest.approx(4.0, rel=0.02)  # the same accounting as images alone
    assert any("video_caption" in row for row in result.history)  # the clips trained


def test_clip_micro_batches_hold_whole_clipping_units_of_clips(tmp_path):
    cfg = Config.from_dict({**_config(tmp_path).to_dict(), "data": {"train_size": 100, "video_train_size": 30}})
    from simmim.data.batches import EncodedSet
    from simmim.data.splits import build_splits
    from simmim.data.tokenizer import WordTokenizer
    from simmim.train.loop import build_model

    splits = build_splits(cfg.data)
    tokenizer = WordTokenizer.fit(splits.all_captions())
    images = EncodedSet(splits.train, tokenizer, cfg.data.context_length)
    clips = EncodedSet(splits.video_train, tokenizer, cfg.data.context_length)
    plan = plan_privacy(cfg, splits.train, splits.video_train)
    step = PrivateStep(build_model(cfg, tokenizer), images, plan, micro_batch_size=24, mask_ratio=0.5, video_set=clips)
    try:
        assert [(p.name, p.max_grad_norm) for p in step.parts] == [("images", 0.5), ("clips", 0.5)]
        sampled = torch.arange(plan.units)
        for number, records in enumerate((splits.train, splits.video_train)):
            batches = step._micro_batches(sampled, number)
            clip_ids = [c for _, units in batches for c in units.unique().tolist()]
            assert len(clip_ids) == len(set(clip_ids)), "a clipping unit spans two micro-batches"
            assert sorted(i for r, _ in batches for i in r.tolist()) == list(range(len(records)))
    finally:
        step.close()


def test_resumed_private_run_reuses_its_reservation(tmp_path, crash_at):
    """A run killed mid-training keeps its reservation counted; resuming it spends that same
    reservation (no second one, which the cap would refuse) and commits it at the end."""
    cfg = Config.from_dict({**_config(tmp_path).to_dict(), "train": {**_config(tmp_path).to_dict()["train"],
                                                                      "checkpoint_every": 2}})
    with pytest.raises(crash_at.error):
        train(cfg, tmp_path / "run", progress=False, on_log=crash_at(3))
    with Ledger(cfg.privacy.ledger) as ledger:
        (dataset,) = ledger.datasets()
        reserved = [job for job in ledger.show(dataset).jobs if job.status == "reserved"]
        assert len(reserved) == 1
    result = train(cfg, tmp_path / "run", resume=True, progress=False)
    assert result.privacy["ledger_job"] == reserved[0].job_id
    with Ledger(cfg.privacy.ledger) as ledger:
        jobs = ledger.show(dataset).jobs
        assert [(j.job_id, j.status) for j in jobs] == [(reserved[0].job_id, "committed")]


def test_dp_fine_tuning_of_lora_adapters_from_a_public_model(tmp_path):
    """Pretrain (non-private) on public data, fine-tune LoRA adapters under DP on the private data:
    only the adapters and the named modules change, and the saved model is a plain SimMIM."""
    public = Config.from_dict({
        "model": {"size": "tiny"}, "data": {"train_size": 200, "val_size": 20, "test_size": 20, "seed": 9},
        "train": {"steps": 3, "batch_size": 16, "log_every": 1, "warmup_steps": 1},
    })
    pretrained = train(public, tmp_path / "public", progress=False)
    cfg = Config.from_dict({**_config(tmp_path).to_dict(), "finetune": {
        "init": str(pretrained.checkpoint), "lora_rank": 2, "train_modules": ["fusion.logit_scale"]}})
    result = train(cfg, tmp_path / "private", progress=False)
    assert result.privacy["epsilon_spent"] == pytest.approx(4.0, rel=0.02)
    assert result.tokenizer.to_dict() == pretrained.tokenizer.to_dict()
    before, after = pretrained.model.state_dict(), result.model.state_dict()
    assert before.keys() == after.keys()  # adapters merged: the same plain architecture
    changed = {k for k in before if not before[k].equal(after[k])}
    assert "fusion.logit_scale.weight" in changed
    assert all(k.endswith(("q_proj.weight", "v_proj.weight")) or "logit_scale" in k for k in changed)
    assert any(k.endswith("q_proj.weight") for k in changed)
    meta = __import__("json").loads((result.checkpoint / "meta.json").read_text())
    assert meta["adapters"] == "merged"
    assert meta["init"]["data_fingerprint"] == pretrained.splits.fingerprint()


def test_dp_from_scratch_on_user_data_needs_a_public_vocabulary(tmp_path):
    from simmim.data.formats import write_dataset
    from simmim.data.synthetic import generate

    source = write_dataset(generate(40, seed=1), tmp_path / "data", "jsonl")
    cfg = Config.from_dict({**_config(tmp_path).to_dict(), "data": {"source": str(source)}})
    with pytest.raises(ConfigError, match="vocabulary"):
        train(cfg, tmp_path / "run", progress=False)
