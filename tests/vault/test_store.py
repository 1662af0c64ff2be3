"""The store: migrations, opening, the round trip of every record kind, and no plaintext at rest."""

import numpy as np
import pytest
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import text

from simmim.data.records import Record
from simmim.errors import VaultError
from simmim.vault import Vault
from simmim.vault.database import VERSION_TABLE, head_revision, make_engine, parse_url, schema_revision
from simmim.vault.schema import Base

from .conftest import run_sql, subjects_of


def test_migrations_build_exactly_the_models_schema(vault, db_url):
    engine = make_engine(parse_url(db_url))
    try:
        assert schema_revision(engine) == head_revision()
        with engine.connect() as connection:
            context = MigrationContext.configure(connection, opts={"version_table": VERSION_TABLE})
            differences = compare_metadata(context, Base.metadata)
    finally:
        engine.dispose()
    assert differences == []


def test_open_without_a_vault_says_how_to_create_one(db_url, key_source):
    with pytest.raises(VaultError, match="no vault at .*simmim vault init"):
        Vault.open(db_url, key_source, principal="admin")


def test_a_database_holds_one_vault(vault, db_url, key_source):
    with pytest.raises(VaultError, match="already holds a vault"):
        Vault.create(db_url, key_source)


def test_release_gives_back_every_field_of_images_and_clips(vault, records):
    vault.ingest(records)
    vault.grant_consent(subjects_of(records), "model-training", notice_version="v1")
    released = {r.record_id: r for r in vault.release("model-training").records}
    assert set(released) == {r.record_id for r in records}
    for original in records:
        back = released[original.record_id]
        assert back.subject_id == original.subject_id
        assert back.captions == original.captions
        assert back.scene == original.scene
        if original.image is not None:
            np.testing.assert_array_equal(back.image, original.image)
            assert back.frames is None
        else:
            np.testing.assert_array_equal(back.frames, original.frames)
            assert back.frames.shape == original.frames.shape
    assert released[records[0].record_id].image.flags.writeable


def test_no_id_caption_or_pixels_in_the_database(vault, db_url, records, tmp_path):
    noise = np.random.default_rng(0).integers(0, 256, size=(32, 32, 3), dtype=np.uint8)
    records = [*records, Record("noise-1", records[0].subject_id, ("a noisy picture",), image=noise)]
    vault.ingest(records)
    vault.grant_consent(subjects_of(records), "model-training", notice_version="v1")
    vault.release("model-training")
    secrets = [records[0].record_id, records[0].subject_id, records[0].caption, records[5].captions[2]]
    pixels = noise.tobytes()[1000:1064]
    if db_url.startswith("sqlite"):
        vault.close()
        dump = b"".join(p.read_bytes() for p in tmp_path.glob("vault.db*"))
    else:
        engine = make_engine(parse_url(db_url))
        with engine.connect() as connection:
            tables = [name for (name,) in connection.execute(text(
                "SELECT tablename FROM pg_tables WHERE schemaname = 'public'"))]
            dump = b"".join(str(row).encode() + b"".join(v for v in row if isinstance(v, bytes))
                            for table in tables for row in connection.execute(text(f"SELECT * FROM {table}")))
        engine.dispose()
    assert len(dump) > 100_000  # the payloads are there, encrypted
    for secret in secrets:
        assert secret.encode() not in dump, secret
    assert pixels not in dump


def test_the_migration_downgrades_and_upgrades_cleanly(db_url):
    from alembic import command
    from sqlalchemy import inspect

    from simmim.vault.database import _alembic_config, upgrade_schema

    engine = make_engine(parse_url(db_url))
    try:
        upgrade_schema(engine)
        with engine.begin() as connection:
            command.downgrade(_alembic_config(connection), "base")
        with engine.connect() as connection:
            assert not [t for t in inspect(connection).get_table_names() if t.startswith("vault_") and
                        t != VERSION_TABLE]
        upgrade_schema(engine)
        assert schema_revision(engine) == head_revision()
        with engine.connect() as connection:
            assert set(Base.metadata.tables) <= set(inspect(connection).get_table_names())
    finally:
        engine.dispose()


def test_bulk_inserted_timestamps_are_stored_as_the_orm_stores_them(vault, db_url, records):
    """Records go in through one driver-level executemany; their timestamps must be the DateTime type's form."""
    from datetime import UTC, datetime

    from sqlalchemy import select

    from simmim.vault.database import aware, transaction
    from simmim.vault.schema import RecordRow, SubjectRow

    before = datetime.now(UTC)
    vault.ingest(records[:3])
    with transaction(make_engine(parse_url(db_url))) as session:
        stamps = session.execute(select(RecordRow.created_at, RecordRow.updated_at, SubjectRow.created_at)
                                 .join(SubjectRow, SubjectRow.id == RecordRow.subject_pk)).all()
    for created, updated, subject_created in stamps:
        assert created == updated and before <= aware(created) <= datetime.now(UTC)
        assert abs((aware(created) - aware(subject_created)).total_seconds()) < 5
    if db_url.startswith("sqlite"):  # text: the record's is the same form as the ORM-written subject's
        raw = run_sql(db_url, "SELECT r.created_at, s.created_at FROM vault_records r JOIN vault_subjects s "
                              "ON s.id = r.subject_pk")
        assert all(len(record) == len(subject) and record[10] == subject[10] for record, subject in raw)
