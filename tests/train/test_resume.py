import json

import pytest
from safetensors.torch import load_file

from simmim.errors import CheckpointError
from simmim.train.checkpoint import latest_checkpoint, load_checkpoint
from simmim.train.loop import train


def test_resume_continues_exactly_where_it_stopped(tiny_config, tmp_path, crash_at):
    full = train(tiny_config, tmp_path / "full", progress=False)
    with pytest.raises(crash_at.error):
        train(tiny_config, tmp_path / "crashed", progress=False, on_log=crash_at(5))
    assert latest_checkpoint(tmp_path / "crashed").name == "step-0000003"
    assert not (tmp_path / "crashed" / "model").exists()
    resumed = train(tiny_config, tmp_path / "crashed", resume=True, progress=False)
    a = load_file(full.checkpoint / "model.safetensors")
    b = load_file(resumed.checkpoint / "model.safetensors")
    assert a.keys() == b.keys()
    for key in a:
        assert a[key].equal(b[key]), key
    strip = [{k: v for k, v in h.items() if k != "seconds"} for h in resumed.history]
    assert strip == [{k: v for k, v in h.items() if k != "seconds"} for h in full.history]


def test_checkpoint_holds_config_tokenizer_fingerprint_and_seed(tiny_config, tmp_path):
    result = train(tiny_config, tmp_path, progress=False)
    model, tokenizer, meta = load_checkpoint(result.checkpoint)
    assert meta["config"] == tiny_config.to_dict()
    assert meta["data_fingerprint"] == result.splits.fingerprint()
    assert meta["seed"] == tiny_config.train.seed and meta["step"] == tiny_config.train.steps
    assert tokenizer.to_dict() == result.tokenizer.to_dict()
    for key, value in model.state_dict().items():
        assert value.equal(result.model.state_dict()[key])


def test_resume_refuses_a_different_config(tiny_config, tmp_path, crash_at):
    with pytest.raises(crash_at.error):
        train(tiny_config, tmp_path, progress=False, on_log=crash_at(4))
    changed = type(tiny_config).from_dict({**tiny_config.to_dict(), "train": {**tiny_config.to_dict()["train"],
                                                                                 "lr": 0.5}})
    with pytest.raises(CheckpointError, match="different config"):
        train(changed, tmp_path, resume=True, progress=False)


def test_incomplete_checkpoint_is_a_clear_error(tmp_path):
    (tmp_path / "ckpt").mkdir()
    (tmp_path / "ckpt" / "meta.json").write_text(json.dumps({}))
    with pytest.raises(CheckpointError, match="incomplete"):
        load_checkpoint(tmp_path / "ckpt")
    with pytest.raises(CheckpointError, match="does not exist"):
        load_checkpoint(tmp_path / "missing")


def test_micro_batches_add_up_to_the_batch_gradient(tiny_config):
    """Without the (batch-coupled) contrastive loss, passes of a few examples give the gradient of
    one pass over the whole batch."""
    import torch

    from simmim.data.batches import EncodedSet
    from simmim.data.splits import build_splits
    from simmim.losses import LossWeights, SimMIMObjective
    from simmim.train.finetune import starting_tokenizer
    from simmim.train.loop import build_model, standard_step

    splits = build_splits(tiny_config.data)
    tokenizer, _ = starting_tokenizer(tiny_config, splits)
    model = build_model(tiny_config, tokenizer).double()
    encoded = EncodedSet(splits.train, tokenizer, tiny_config.data.context_length)
    batch = encoded.batch(torch.arange(10), torch.Generator().manual_seed(0), num_patches=model.cfg.num_patches,
                          mask_ratio=0.5)
    batch = {k: v.double() if v.is_floating_point() else v for k, v in batch.items()}
    objective = SimMIMObjective(LossWeights(contrastive=0.0))
    grads = []
    for size in (0, 3):
        model.zero_grad(set_to_none=True)
        record = standard_step(model, objective, [batch], grad_clip=0.0, micro_batch_size=size)
        grads.append([p.grad.clone() for p in model.parameters() if p.grad is not None])
        assert record["examples"] == 10
    assert len(grads[0]) == len(grads[1]) > 0
    for whole, parts in zip(*grads):
        torch.testing.assert_close(parts, whole, rtol=1e-9, atol=1e-12)


def test_lora_fine_tuning_resumes_exactly(tiny_config, tmp_path, crash_at):
    """Step checkpoints keep the adapters apart from the frozen weights, so a killed LoRA run
    resumes bit for bit; the finished model has them merged."""
    from simmim.config import Config

    public = train(tiny_config, tmp_path / "public", progress=False)
    values = tiny_config.to_dict()
    values["data"]["seed"] = 3
    values["finetune"] = {"init": str(public.checkpoint), "lora_rank": 2, "train_modules": ["fusion"]}
    cfg = Config.from_dict(values)
    full = train(cfg, tmp_path / "full", progress=False)
    with pytest.raises(crash_at.error):
        train(cfg, tmp_path / "crashed", progress=False, on_log=crash_at(5))
    step_meta = json.loads((latest_checkpoint(tmp_path / "crashed") / "meta.json").read_text())
    assert step_meta["adapters"] == "separate"
    resumed = train(cfg, tmp_path / "crashed", resume=True, progress=False)
    a = load_file(full.checkpoint / "model.safetensors")
    b = load_file(resumed.checkpoint / "model.safetensors")
    assert a.keys() == load_file(public.checkpoint / "model.safetensors").keys()
    for key in a:
        assert a[key].equal(b[key]), key
