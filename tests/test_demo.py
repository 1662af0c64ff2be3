import json

from simmim.config import Config
from simmim.demo import packaged_config, run_demo


def _tiny(**extra):
    return Config.from_dict({
        "model": {"size": "tiny"},
        "data": {"train_size": 300, "val_size": 40, "test_size": 60, "video_train_size": 30, "video_test_size": 20},
        "train": {"steps": 5, "batch_size": 16, "video_batch_size": 4, "log_every": 1},
        **extra,
    })


def test_demo_writes_report_summary_and_plots(tmp_path):
    summary = run_demo(tmp_path, config=_tiny(), progress=False)
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


def test_private_demo_records_and_plots_its_guarantee(tmp_path):
    values = _tiny().to_dict()
    values["data"]["video_train_size"] = values["data"]["video_test_size"] = 0
    values["privacy"] = {"dp": True, "epsilon": 8.0, "delta": 1e-5, "ledger": f"sqlite:///{tmp_path}/ledger.db"}
    summary = run_demo(tmp_path / "out", config=Config.from_dict(values), progress=False)
    privacy = summary["privacy"]
    assert privacy["unit"] == "user" and privacy["epsilon_spent"] <= 8.0 and privacy["steps"] == 5
    assert {"delta", "accountant", "noise_multiplier", "sample_rate", "max_grad_norm", "ledger_job"} <= set(privacy)
    assert (tmp_path / "out" / "privacy_epsilon.png").stat().st_size > 1000


def test_packaged_configs_load():
    assert packaged_config("demo").model.size == "demo"
    assert packaged_config("quick").train.steps < packaged_config("demo").train.steps
