import json

from simmim.config import Config
from simmim.demo import packaged_config, run_demo
from simmim.federated.settings import FedSettings


def _tiny(**extra):
    return Config.from_dict({
        "model": {"size": "tiny"},
        "data": {"train_size": 300, "val_size": 40, "test_size": 60, "video_train_size": 30, "video_test_size": 20},
        "train": {"steps": 5, "batch_size": 16, "video_batch_size": 4, "log_every": 1},
        **extra,
    })


def test_non_private_demo_writes_report_summary_and_plots(tmp_path):
    summary = run_demo(tmp_path, config=_tiny(), private=False, progress=False)
    on_disk = json.loads((tmp_path / "summary.json").read_text())
    assert on_disk == json.loads(json.dumps(summary))
    assert set(on_disk) == {"metrics", "privacy", "timing"} and on_disk["privacy"] is None
    for name, metric in on_disk["metrics"].items():
        assert set(metric) == {"value", "chance"}, name
    assert {"text_to_image_R@1", "caption_attribute_accuracy", "zero_shot_colour", "video_to_text_R@1",
            "generation_colour_accuracy", "linear_probe_count"} <= set(on_disk["metrics"])
    report = (tmp_path / "report.md").read_text()
    for png in ("loss_curves.png", "retrieval_grid.png", "captions.png", "generated.png"):
        assert (tmp_path / png).stat().st_size > 1000 and png in report
    assert (tmp_path / "model" / "meta.json").is_file()
    assert json.loads((tmp_path / "model" / "meta.json").read_text())["metrics"] == on_disk["metrics"]


def test_private_demo_reports_dp_beside_non_private_and_public_models(tmp_path):
    """The default demo: public pretraining, then the same LoRA fine-tuning with and without DP, on
    the people's photos and clips."""
    values = _tiny().to_dict()
    values["privacy"] = {"epsilon": 8.0, "delta": 1e-5}
    values["finetune"] = {"lora_rank": 2, "train_modules": ["fusion"]}
    public = _tiny(data={"train_size": 200, "val_size": 20, "test_size": 20, "video_train_size": 20, "seed": 5,
                         "max_objects": 1})
    first = run_demo(tmp_path / "out", config=Config.from_dict(values), public_config=public, progress=False,
                     federated=False)
    # A second run into the same directory replaces the first, ledger included (the people are simulated).
    small = FedSettings(clients=2, rounds=1, local_steps=2, update_clip=10.0, aggregation="secagg", eval_items=20)
    summary = run_demo(tmp_path / "out", config=Config.from_dict(values), public_config=public, progress=False,
                       federated_settings=small)
    assert summary["privacy"]["ledger_job"] != first["privacy"]["ledger_job"]
    privacy = summary["privacy"]
    assert privacy["unit"] == "user" and privacy["epsilon_spent"] <= 8.0 and privacy["steps"] == 5
    assert {"delta", "accountant", "noise_multiplier", "sample_rate", "max_grad_norm", "ledger_job"} <= set(privacy)
    out = tmp_path / "out"
    assert set(summary["baselines"]) == {"public only", "non-private"} and summary["reference"] == "non-private"
    for name, ratio in summary["relative_to_reference"].items():
        assert ratio == summary["metrics"][name]["value"] / summary["baselines"]["non-private"][name]["value"]
    for png in ("privacy_epsilon.png", "comparison.png"):
        assert (out / png).stat().st_size > 1000 and png in (out / "report.md").read_text()
    meta = json.loads((out / "model" / "meta.json").read_text())
    assert meta["privacy"]["ledger_job"] == privacy["ledger_job"] and meta["adapters"] == "merged"
    # The people's clips were released by the vault and planned for under DP, clipped apart from their
    # photos (whether a step samples a person with clips is random: the history may have no clip loss).
    assert privacy["video_norm_share"] == 0.5
    assert meta["init"]["path"] == str(out / "public" / "model")
    reference = json.loads((out / "non-private" / "model" / "meta.json").read_text())
    assert reference["privacy"] is None and reference["metrics"] == summary["baselines"]["non-private"]
    # Training read the people's records from the vault: the ones who did not consent were left out.
    vault = summary["vault"]
    choices, release = vault["choices"], vault["release"]
    assert choices["never_answered"] >= 1 and choices["withdrawn"] >= 1 and choices["deleted"] == 1
    assert release["excluded"] == {"no_consent": choices["never_answered"], "withdrawn": choices["withdrawn"],
                                   "deleted": 1}
    assert release["subjects"] == choices["consented"] == privacy["units"]
    assert "clipped apart, to 0.5 C and 0.5 C" in (out / "report.md").read_text()
    assert meta["vault"]["snapshot_id"] == reference["vault"]["snapshot_id"] == release["snapshot_id"]
    assert "never answered" in (out / "report.md").read_text()
    # The report shows a federated run on a real loopback Flower deployment.
    assert summary["federated"]["rounds_completed"] == 1 and summary["federated"]["rounds"][0]["contributors"] == 2
    assert "federated.png" in (out / "report.md").read_text() and (out / "federated.png").stat().st_size > 1000


def test_packaged_configs_load():
    assert packaged_config("demo").model.size == "demo"
    assert packaged_config("quick").train.steps < packaged_config("demo").train.steps
    for size in ("demo", "quick"):
        private, public = packaged_config(f"{size}-private"), packaged_config(f"{size}-public")
        assert private.privacy.epsilon == 8.0 and private.privacy.delta == 1e-5 and private.privacy.unit == "user"
        assert private.data.seed != public.data.seed  # the public corpus holds none of the people's records
        assert private.model == public.model
