import json

import pytest

from simmim.config import Config, load_config
from simmim.errors import ConfigError


def test_toml_yaml_and_json_give_the_same_config(tmp_path):
    (tmp_path / "a.toml").write_text('[model]\nsize = "demo"\n[train]\nsteps = 7\nlr = 1\n')
    (tmp_path / "a.yaml").write_text("model:\n  size: demo\ntrain:\n  steps: 7\n  lr: 1.0\n")
    (tmp_path / "a.json").write_text(json.dumps({"model": {"size": "demo"}, "train": {"steps": 7, "lr": 1.0}}))
    configs = [load_config(tmp_path / f"a.{ext}") for ext in ("toml", "yaml", "json")]
    assert configs[0] == configs[1] == configs[2]
    assert configs[0].train.steps == 7 and configs[0].train.lr == 1.0 and configs[0].model.size == "demo"


def test_round_trip_through_dict():
    cfg = Config.from_dict({"data": {"train_size": 10}, "loss": {"caption": 0.5}})
    assert Config.from_dict(cfg.to_dict()) == cfg


@pytest.mark.parametrize("text, message", [
    ("[train]\nstep = 3\n", "unknown field train.step"),
    ("[train]\nsteps = 'many'\n", "train.steps must be int"),
    ("[train]\nsteps = true\n", "train.steps must be int"),
    ("[nonsense]\n", "unknown field nonsense"),
    ("train = 3\n", "train must be a table"),
    ("[train\n", "not valid TOML"),
])
def test_bad_fields_are_named(tmp_path, text, message):
    path = tmp_path / "bad.toml"
    path.write_text(text)
    with pytest.raises(ConfigError, match=message):
        load_config(path)


def test_missing_file_and_unknown_suffix(tmp_path):
    with pytest.raises(ConfigError, match="does not exist"):
        load_config(tmp_path / "nope.toml")
    (tmp_path / "x.ini").write_text("")
    with pytest.raises(ConfigError, match="use .toml"):
        load_config(tmp_path / "x.ini")
