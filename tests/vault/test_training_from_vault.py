"""Training reads people's records only through the vault: exactly the consenting, not-deleted
subjects' records; the checkpoint records the snapshot; a later deletion names the model."""

import base64
import json

import pytest

from simmim.config import Config
from simmim.data import synthetic
from simmim.errors import VaultError
from simmim.train.loop import train
from simmim.vault import Vault

from .conftest import TEST_KEY, subjects_of


def _config(db_url, tmp_path, **vault):
    return Config.from_dict({
        "model": {"size": "tiny"},
        "data": {"source": "vault"},
        "train": {"steps": 2, "batch_size": 16, "log_every": 1, "warmup_steps": 1},
        "vault": {"url": db_url, "key_file": str(tmp_path / "vault.key"), **vault},
    })


@pytest.fixture
def key_file(tmp_path):
    path = tmp_path / "vault.key"
    path.write_text(base64.b64encode(TEST_KEY).decode())
    return path


def test_training_uses_only_released_records_and_records_lineage(db_url, key_source, key_file, tmp_path):
    records = synthetic.generate(400, seed=11)
    subjects = subjects_of(records)
    with Vault.create(db_url, key_source) as vault:
        vault.add_principal("trainer", "trainer")
        vault.ingest(records)
        consenting, withdrawn, deleted = subjects[:-6], subjects[-6], subjects[-5]
        vault.grant_consent([*consenting, withdrawn, deleted], "model-training", notice_version="v1")
        vault.withdraw_consent(withdrawn, "model-training")
        vault.delete_subject(deleted)  # the last 4 subjects never consented
    result = train(_config(db_url, tmp_path), tmp_path / "run", progress=False)
    used = {r.subject_id for part in (result.splits.train, result.splits.val, result.splits.test) for r in part}
    assert used == set(consenting)
    lineage = json.loads((result.checkpoint / "meta.json").read_text())["vault"]
    assert lineage["subjects"] == len(consenting)
    assert lineage["excluded"] == {"no_consent": 4, "withdrawn": 1, "deleted": 1}
    with Vault.open(db_url, key_source, principal="admin") as vault:
        assert [m["checkpoint"] for m in vault.models()] == [lineage["checkpoint_id"]]
        report = vault.delete_subject(consenting[0])
    assert report.checkpoints == (lineage["checkpoint_id"],)
    assert report.snapshots == (lineage["snapshot_id"],)


def test_a_vault_with_photos_and_clips_trains_on_both(db_url, key_source, key_file, tmp_path):
    """Released clips go to the clip splits of their person's split, never among the photos."""
    photos = synthetic.generate(200, seed=11)
    clips = synthetic.generate(40, seed=11, kind="video", frames=4)
    with Vault.create(db_url, key_source) as vault:
        vault.add_principal("trainer", "trainer")
        vault.ingest(photos + clips)
        vault.grant_consent(subjects_of(photos + clips), "model-training", notice_version="v1")
    result = train(_config(db_url, tmp_path), tmp_path / "run", progress=False)
    splits = result.splits
    assert not any(r.is_video for part in (splits.train, splits.val, splits.test) for r in part)
    assert splits.video_train and all(r.is_video for r in splits.video_train + splits.video_test)
    assert len(splits.video_train) + len(splits.video_test) == len(clips)
    assert "video_caption" in result.history[-1]  # the clips were trained on


def test_a_principal_without_the_training_role_cannot_release(db_url, key_source, key_file, tmp_path):
    with Vault.create(db_url, key_source) as vault:
        vault.add_principal("someone", "analyst")
        vault.ingest(synthetic.generate(20, seed=2))
    with pytest.raises(VaultError):
        train(_config(db_url, tmp_path, principal="someone"), tmp_path / "run", progress=False)
