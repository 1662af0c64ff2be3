"""Ingest reads every dataset format through the project's loader, and stores exactly what it read."""

import numpy as np
import pytest

from simmim.data.formats import FORMATS, read_dataset, write_dataset
from simmim.errors import VaultError
from simmim.vault import Vault

from .conftest import subjects_of

TARGETS = {"csv": "data.csv", "jsonl": "data", "coco": "data.json", "folder": "data", "webdataset": "shards"}


@pytest.fixture
def sqlite_vault(tmp_path, key_source):
    """The format readers do not depend on the database, so SQLite alone is enough here."""
    with Vault.create(f"sqlite:///{tmp_path / 'vault.db'}", key_source) as vault:
        yield vault


@pytest.mark.parametrize("fmt", FORMATS)
def test_every_loader_format_is_ingested_as_the_loader_reads_it(sqlite_vault, records, tmp_path, fmt):
    images = [r for r in records if r.image is not None][:8]
    path = write_dataset(images, tmp_path / TARGETS[fmt], fmt)
    expected = read_dataset(path).records
    prefix = {r.record_id for r in expected}
    report = sqlite_vault.ingest_path(path)
    assert report.records == len(images) and not report.skipped
    purpose = f"import-{fmt}"
    sqlite_vault.declare_purpose(purpose, "checking one import")
    sqlite_vault.grant_consent(subjects_of(expected), purpose, notice_version="v1")
    released = {r.record_id: r for r in sqlite_vault.release(purpose).records if r.record_id in prefix}
    assert set(released) == prefix
    for record in expected:
        back = released[record.record_id]
        assert (back.subject_id, back.captions) == (record.subject_id, record.captions)
        np.testing.assert_array_equal(back.image, record.image)
    with pytest.raises(VaultError, match="already in the vault"):
        sqlite_vault.ingest_path(path)  # the same files again: refused whole
