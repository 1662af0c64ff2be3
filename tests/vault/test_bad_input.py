"""Bad input: each refused with a clear error naming the record or field, and nothing stored."""

import dataclasses
import json
import zipfile

import numpy as np
import pytest

from simmim.data.formats import write_dataset
from simmim.data.records import Record
from simmim.errors import DataError, VaultError
from simmim.vault.envelope import PayloadAuthenticationError

from .conftest import run_sql

INJECTIONS = ["'); DROP TABLE vault_records; --", "<script>alert('x')</script>", "\" OR 1=1 --",
              "<img src=x onerror=alert(1)>", "Robert'); DELETE FROM vault_subjects WHERE ('1'='1",
              "Zoë O'Brien-山田 ☃"]  # and a name outside ASCII


def _nothing_stored(db_url) -> bool:
    return all(run_sql(db_url, f"SELECT count(*) FROM {t}")[0][0] == 0 for t in
               ("vault_records", "vault_subjects", "vault_subject_keys"))


def test_non_image_bytes_in_a_dataset_are_refused_naming_the_file(vault, db_url, records, tmp_path):
    folder = write_dataset(records[:6], tmp_path / "data", "jsonl")
    victim = json.loads((folder / "metadata.jsonl").read_text().splitlines()[3])["file_name"]
    (folder / victim).write_bytes(b"%PDF-1.7 this is not an image at all")
    with pytest.raises(DataError, match=f"{victim}.*not a readable image"):
        vault.ingest_path(folder)
    assert _nothing_stored(db_url)
    report = vault.ingest_path(folder, skip_bad=True)
    assert report.records == 5 and len(report.skipped) == 1 and "not a readable image" in report.skipped[0].reason


def test_encoded_bytes_or_wrong_arrays_in_a_record_are_refused_naming_the_field(vault, db_url, records):
    record = records[0]
    with pytest.raises(VaultError, match=f"record '{record.record_id}': field image must be an H x W x 3 uint8 "
                                         f"array, got bytes"):
        vault.ingest([dataclasses.replace(record, image=b"\x89PNG\r\n\x1a\n...")])
    with pytest.raises(VaultError, match="field image must be an H x W x 3 uint8 array, got shape .* float64"):
        vault.ingest([dataclasses.replace(record, image=record.image.astype(np.float64))])
    with pytest.raises(VaultError, match="exactly one of fields image and frames"):
        vault.ingest([dataclasses.replace(record, frames=np.zeros((2, 8, 8, 3), np.uint8))])
    with pytest.raises(VaultError, match="field captions"):
        vault.ingest([dataclasses.replace(record, captions=())])
    with pytest.raises(VaultError, match="field extra must hold JSON values"):
        vault.ingest([dataclasses.replace(record, extra={"when": object()})])
    for hidden in ("alice\x00bob", "alice\u200bbob", "alice\nbob", "alice\u202ebob"):
        with pytest.raises(VaultError, match="subject_id .* control or format characters"):
            vault.ingest([dataclasses.replace(record, subject_id=hidden)])
    assert _nothing_stored(db_url)


def test_a_payload_over_the_size_cap_is_refused(vault, db_url, records):
    huge = Record("huge-1", "subject-x", ("a very large picture",), image=np.zeros((1024, 1024, 3), np.uint8))
    with pytest.raises(VaultError, match=r"record 'huge-1': payload is 3145\d\d\d bytes, over the vault's cap of "
                                         r"1048576 bytes"):
        vault.ingest([*records[:3], huge])
    assert _nothing_stored(db_url)


def test_unknown_subjects_are_named(vault, records):
    vault.ingest(records[:2])
    for request in (vault.delete_subject, vault.consents, lambda s: vault.export_subject(s, "x.zip")):
        with pytest.raises(VaultError, match="subject 'ghost-42' is not in the vault"):
            request("ghost-42")


def test_duplicate_record_ids_are_refused_and_the_batch_is_not_stored(vault, db_url, records):
    with pytest.raises(VaultError, match=f"record '{records[1].record_id}': record id appears more than once"):
        vault.ingest([records[0], records[1], records[1]])
    vault.ingest(records[:5])
    before = [run_sql(db_url, f"SELECT count(*) FROM {t}")[0][0] for t in ("vault_records", "vault_subjects",
                                                                             "vault_subject_keys")]
    newcomer = dataclasses.replace(records[20], subject_id="a-new-person")
    with pytest.raises(VaultError, match=f"record '{records[4].record_id}': record id is already in the vault"):
        vault.ingest([newcomer, records[4]])
    after = [run_sql(db_url, f"SELECT count(*) FROM {t}")[0][0] for t in ("vault_records", "vault_subjects",
                                                                            "vault_subject_keys")]
    assert after == before  # not even the new subject or its key


@pytest.mark.parametrize("fmt", ["csv", "jsonl", "coco"])
def test_path_traversal_in_an_import_is_refused_before_reading(vault, db_url, records, tmp_path, fmt):
    outside = tmp_path / "outside"
    write_dataset(records[:1], outside, "folder")  # a real image the import must not reach
    secret = next(outside.glob("*.png"))
    target = {"csv": tmp_path / "in" / "data.csv", "jsonl": tmp_path / "in", "coco": tmp_path / "in" / "data.json"}
    path = write_dataset(records[1:3], target[fmt], fmt)
    escape = f"../outside/{secret.name}"
    if fmt == "csv":
        header, first, *rest = path.read_text().splitlines()
        path.write_text("\n".join([header, escape + "," + first.split(",", 1)[1], *rest]) + "\n")
    elif fmt == "jsonl":
        lines = (path / "metadata.jsonl").read_text().splitlines()
        row = json.loads(lines[0])
        row["file_name"] = escape
        (path / "metadata.jsonl").write_text("\n".join([json.dumps(row), *lines[1:]]) + "\n")
    else:
        coco = json.loads(path.read_text())
        coco["images"][0]["file_name"] = str(secret)  # an absolute path
        path.write_text(json.dumps(coco))
    expected = {"csv": f"data.csv line 2: image path '{escape}' leads outside the dataset folder",
                "jsonl": f"metadata.jsonl line 1: image path '{escape}' leads outside the dataset folder",
                "coco": f"data.json image 1: image path '{secret}' is absolute"}
    with pytest.raises(VaultError, match=expected[fmt]):
        vault.ingest_path(path)
    assert _nothing_stored(db_url)


def test_a_symlink_out_of_a_folder_dataset_is_refused(vault, db_url, records, tmp_path):
    outside = write_dataset(records[:1], tmp_path / "outside", "folder")
    folder = write_dataset(records[1:3], tmp_path / "data", "folder")
    link = folder / "stolen.png"
    link.symlink_to(next(outside.glob("*.png")))
    (folder / "stolen.txt").write_text("a caption\n")
    with pytest.raises(VaultError, match="stolen.png.*leads outside the dataset folder"):
        vault.ingest_path(folder)
    assert _nothing_stored(db_url)


def test_injection_strings_are_stored_and_returned_as_plain_data(vault, db_url, records, tmp_path):
    image = records[0].image
    hostile = [Record(f"{text}-{i}", text, (text, f"caption {text}"), image=image) for i, text in
               enumerate(INJECTIONS)]
    vault.ingest(hostile)
    vault.grant_consent(INJECTIONS, "model-training", notice_version="<b>v1</b>", source="'; --")
    released = {r.record_id: r for r in vault.release("model-training").records}
    assert set(released) == {r.record_id for r in hostile}
    for record in hostile:
        assert released[record.record_id].subject_id == record.subject_id
        assert released[record.record_id].captions == record.captions
    tables = {row[0] for row in run_sql(db_url, "SELECT name FROM sqlite_master WHERE type = 'table'")} \
        if db_url.startswith("sqlite") else {row[0] for row in run_sql(db_url, "SELECT tablename FROM pg_tables")}
    assert {"vault_records", "vault_subjects"} <= tables
    archive = vault.export_subject(INJECTIONS[1], tmp_path / "export.zip")
    with zipfile.ZipFile(archive) as opened:
        assert all(not name.startswith(("/", "..")) and "<" not in name for name in opened.namelist())
        assert json.loads(opened.read("subject.json"))["subject_id"] == INJECTIONS[1]
    assert vault.delete_subject(INJECTIONS[0]).records_deleted == 1


def test_a_flipped_ciphertext_byte_is_an_authentication_error_naming_the_record(vault, db_url, records):
    vault.ingest(records[:4])
    vault.grant_consent(sorted({r.subject_id for r in records[:4]}), "model-training", notice_version="v1")
    row = run_sql(db_url, "SELECT id, ref, payload FROM vault_records ORDER BY id")[2]
    flipped = bytearray(row.payload)
    flipped[len(flipped) // 2] ^= 0x01
    run_sql(db_url, "UPDATE vault_records SET payload = :p WHERE id = :i", p=bytes(flipped), i=row.id)
    with pytest.raises(PayloadAuthenticationError, match=f"record {row.ref[:16]} .*chunk 1 of 1 fails "
                                                         f"authentication.*nothing of it was returned"):
        vault.release("model-training")
    run_sql(db_url, "UPDATE vault_records SET payload = :p WHERE id = :i", p=row.payload, i=row.id)
    assert len(vault.release("model-training").records) == 4  # restored: all authenticate again
    key = run_sql(db_url, "SELECT id, wrapped FROM vault_subject_keys ORDER BY id")[0]
    flipped_key = key.wrapped[:-1] + bytes([key.wrapped[-1] ^ 1])  # overwriting with 0 left it unchanged 1 in 256
    run_sql(db_url, "UPDATE vault_subject_keys SET wrapped = :w WHERE id = :i", w=flipped_key, i=key.id)
    with pytest.raises(VaultError, match="data key 1 of subject [0-9a-f]{16} does not unwrap"):
        vault.release("model-training")
