"""Dataset formats: round trips through every writer and reader, conversions, and every kind of bad input."""

import io
import json
import struct
import tarfile
import zlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from simmim.data.formats import FORMATS, detect_format, load_image, read_dataset, write_dataset
from simmim.data.synthetic import generate
from simmim.errors import DataError

TARGETS = {
    "csv": "data.csv",
    "jsonl": "imagefolder",
    "coco": "captions.json",
    "folder": "folder",
    "webdataset": "shards",
}


@pytest.fixture(scope="module")
def records():
    return generate(10, seed=11, split="val")


def save_png(path: Path, pixels) -> Path:
    image = pixels if isinstance(pixels, Image.Image) else Image.fromarray(np.asarray(pixels, dtype=np.uint8))
    path.parent.mkdir(parents=True, exist_ok=True)
    image.save(path)
    return path


def png_bytes(pixels) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(np.asarray(pixels, dtype=np.uint8)).save(buffer, format="PNG")
    return buffer.getvalue()


def grey(size: int = 16, value: int = 128, width: int | None = None) -> np.ndarray:
    return np.full((size, width or size, 3), value, dtype=np.uint8)


def write_csv(path: Path, rows: list[str], header: str = "filepath,title,subject_id") -> Path:
    path.write_text("\n".join([header, *rows]) + "\n")
    return path


# ------------------------------------------------------------------------------------------ round trips


@pytest.mark.parametrize("fmt", FORMATS)
def test_round_trip(records, tmp_path, fmt):
    path = write_dataset(records, tmp_path / TARGETS[fmt], fmt, records_per_shard=4)
    assert detect_format(path) == fmt
    result = read_dataset(path)
    assert result.skipped == []
    assert len(result.records) == len(records)
    for original, read in zip(records, result.records, strict=True):
        np.testing.assert_array_equal(read.image, original.image)
        assert read.subject_id == original.subject_id
        expected_captions = original.captions[:1] if fmt == "csv" else original.captions
        assert read.captions == expected_captions
        assert read.scene is None and read.source
        if fmt != "coco":  # COCO numbers its images
            assert read.record_id == original.record_id
    assert read_dataset(path, fmt=fmt).records[0].caption == records[0].caption


def test_tsv_and_explicit_formats(records, tmp_path):
    path = write_dataset(records[:3], tmp_path / "data.tsv", "csv")
    assert "\t" in path.read_text().splitlines()[0]
    assert [r.caption for r in read_dataset(path).records] == [r.caption for r in records[:3]]
    jsonl = write_dataset(records[:3], tmp_path / "hf", "jsonl")
    assert len(read_dataset(jsonl / "metadata.jsonl").records) == 3


def test_webdataset_shards_and_sizes(records, tmp_path):
    out = write_dataset(records, tmp_path / "shards", "webdataset", records_per_shard=4)
    assert sorted(p.name for p in out.glob("*.tar")) == [
        "shard-00000.tar",
        "shard-00001.tar",
        "shard-00002.tar",
    ]
    assert json.loads((out / "sizes.json").read_text()) == {
        "shard-00000.tar": 4, "shard-00001.tar": 4, "shard-00002.tar": 2,
    }  # fmt: skip
    single = read_dataset(out / "shard-00001.tar")
    assert [r.record_id for r in single.records] == [r.record_id for r in records[4:8]]


def test_writers_are_deterministic(records, tmp_path):
    first = write_dataset(records, tmp_path / "a", "webdataset")
    second = write_dataset(records, tmp_path / "b", "webdataset")
    assert (first / "shard-00000.tar").read_bytes() == (second / "shard-00000.tar").read_bytes()


def test_writing_video_is_refused(tmp_path):
    clips = generate(2, seed=0, kind="video")
    with pytest.raises(DataError, match="clip"):
        write_dataset(clips, tmp_path / "out", "folder")
    assert not (tmp_path / "out").exists()


def test_unknown_format(records, tmp_path):
    with pytest.raises(DataError, match="parquet"):
        write_dataset(records, tmp_path / "x", "parquet")
    with pytest.raises(DataError, match="parquet"):
        read_dataset(tmp_path, fmt="parquet")


def test_missing_subject_makes_each_record_its_own_subject(tmp_path):
    save_png(tmp_path / "a.png", grey())
    save_png(tmp_path / "b.png", grey())
    path = write_csv(
        tmp_path / "d.csv", ["a.png,a grey square", "b.png,another grey square"], "filepath,title"
    )
    result = read_dataset(path)
    assert [r.subject_id for r in result.records] == ["record:a.png", "record:b.png"]


def test_folder_reads_nested_images_and_ignores_hidden_ones(tmp_path):
    save_png(tmp_path / "people" / "ann" / "x.png", grey())
    (tmp_path / "people" / "ann" / "x.txt").write_text("first caption\n\nsecond caption\n")
    save_png(tmp_path / ".cache" / "y.png", grey())
    result = read_dataset(tmp_path)
    assert [r.record_id for r in result.records] == ["people/ann/x"]
    assert result.records[0].captions == ("first caption", "second caption")


def test_coco_file_names_beside_the_json(tmp_path):
    save_png(tmp_path / "pic.png", grey())
    coco = {
        "images": [{"id": 7, "file_name": "pic.png"}],
        "annotations": [{"id": 1, "image_id": 7, "caption": "a grey square"}],
    }
    (tmp_path / "c.json").write_text(json.dumps(coco))
    record = read_dataset(tmp_path / "c.json").records[0]
    assert (record.record_id, record.subject_id, record.captions) == ("7", "record:7", ("a grey square",))


# ------------------------------------------------------------------------------------- image conversion


def rgb_of(tmp_path: Path, image: Image.Image, name: str = "x.png", size: int = 16) -> np.ndarray:
    path = tmp_path / name
    image.save(path)
    return load_image(path, size)


def test_modes_are_converted_to_rgb(tmp_path):
    assert (rgb_of(tmp_path, Image.new("L", (16, 16), 100)) == 100).all()
    assert (rgb_of(tmp_path, Image.new("1", (16, 16), 1)) == 255).all()
    assert (rgb_of(tmp_path, Image.new("RGBA", (16, 16), (200, 100, 50, 0))) == 0).all()
    half = rgb_of(tmp_path, Image.new("RGBA", (16, 16), (200, 100, 50, 128)))
    assert tuple(half[0, 0]) == (100, 50, 25)
    assert tuple(rgb_of(tmp_path, Image.new("LA", (16, 16), (200, 255)))[3, 3]) == (200, 200, 200)
    palette = Image.new("P", (16, 16), 1)
    palette.putpalette([0, 0, 0, 10, 20, 30] + [0] * 762)
    assert tuple(rgb_of(tmp_path, palette)[5, 5]) == (10, 20, 30)
    deep = Image.fromarray(np.full((16, 16), 65535, dtype=np.uint16))
    assert (rgb_of(tmp_path, deep) == 255).all()
    cmyk = rgb_of(tmp_path, Image.new("CMYK", (16, 16), (0, 255, 255, 0)), "x.tif")
    assert tuple(cmyk[0, 0]) == (255, 0, 0)


def test_images_are_centre_cropped_and_resized(tmp_path):
    wide = np.zeros((32, 64, 3), dtype=np.uint8)
    wide[:, :16] = (255, 0, 0)
    wide[:, 16:48] = (0, 255, 0)
    wide[:, 48:] = (0, 0, 255)
    result = load_image(save_png(tmp_path / "wide.png", wide), 8)
    assert result.shape == (8, 8, 3) and (result == (0, 255, 0)).all()
    assert load_image(save_png(tmp_path / "big.png", grey(100, 40)), 32).shape == (32, 32, 3)


# ------------------------------------------------------------------------------------------- bad input


@pytest.fixture
def csv_dataset(tmp_path) -> Path:
    """A CSV dataset with three good rows; tests append bad rows to it."""
    for name in ("a", "b", "c"):
        save_png(tmp_path / "img" / f"{name}.png", grey())
    return write_csv(tmp_path / "data.csv", [f"img/{n}.png,a grey square,person-{n}" for n in "abc"])


BAD_ROWS = {
    "missing image": ("img/nope.png,a caption,p", "image file not found"),
    "not an image": ("img/text.png,a caption,p", "not a readable image"),
    "truncated": ("img/cut.png,a caption,p", "truncated"),
    "empty caption": ("img/a2.png,   ,p", "caption is empty"),
    "long caption": ("img/a3.png," + " ".join(["word"] * 21) + ",p", "21 words"),
    "tiny image": ("img/tiny.png,a caption,p", "4x4 pixels, smaller than 8"),
    "huge image": ("img/huge.png,a caption,p", "8200x8 pixels, larger than 8192"),
    "wrong field count": ("img/a4.png,a caption", "2 fields"),
    "bad quoting": ('img/a5.png,"a caption"x,p', "malformed CSV row"),
    "empty filepath": (",a caption,p", "filepath is empty"),
    "duplicate": ("img/a.png,a grey square,person-a", "appears more than once"),
}


def add_bad_files(folder: Path) -> None:
    (folder / "img" / "text.png").write_text("this is not a picture")
    full = png_bytes(np.random.default_rng(0).integers(0, 255, (64, 64, 3)))
    (folder / "img" / "cut.png").write_bytes(full[: len(full) // 2])
    save_png(folder / "img" / "tiny.png", grey(4))
    save_png(folder / "img" / "huge.png", grey(8, width=8200))
    for name in ("a2", "a3", "a4", "a5"):
        save_png(folder / "img" / f"{name}.png", grey())


@pytest.mark.parametrize("case", sorted(BAD_ROWS))
def test_each_bad_row_raises_naming_file_line_and_problem(csv_dataset, case):
    add_bad_files(csv_dataset.parent)
    row, problem = BAD_ROWS[case]
    with csv_dataset.open("a") as file:
        file.write(row + "\n")
    with pytest.raises(DataError) as error:
        read_dataset(csv_dataset)
    message = str(error.value)
    assert message.startswith(f"{csv_dataset} line 5")
    assert problem in message
    assert "\n" not in message


def test_skip_bad_keeps_the_good_and_lists_every_bad_one(csv_dataset):
    add_bad_files(csv_dataset.parent)
    with csv_dataset.open("a") as file:
        for row, _ in BAD_ROWS.values():
            file.write(row + "\n")
        file.write("img/d.png,a good row after the bad ones,person-d\n")
    save_png(csv_dataset.parent / "img" / "d.png", grey())
    result = read_dataset(csv_dataset, skip_bad=True)
    assert [r.record_id for r in result.records] == ["img/a.png", "img/b.png", "img/c.png", "img/d.png"]
    assert len(result.skipped) == len(BAD_ROWS)
    for bad, (_, problem) in zip(result.skipped, BAD_ROWS.values(), strict=True):
        assert problem in bad.reason and str(csv_dataset) in bad.source


def test_skip_bad_with_only_bad_records_still_raises(tmp_path):
    path = write_csv(tmp_path / "d.csv", ["nope.png,a caption,p"])
    with pytest.raises(DataError, match="no usable records; 1 skipped"):
        read_dataset(path, skip_bad=True)


def test_missing_path_and_unknown_layouts(tmp_path):
    with pytest.raises(DataError, match="nowhere"):
        read_dataset(tmp_path / "nowhere")
    (tmp_path / "notes.md").write_text("hello")
    with pytest.raises(DataError, match="notes.md"):
        read_dataset(tmp_path / "notes.md")
    with pytest.raises(DataError, match="cannot tell the format"):
        read_dataset(tmp_path)
    with pytest.raises(DataError, match="no such file"):
        read_dataset(tmp_path, fmt="csv")


def test_csv_file_level_problems(tmp_path):
    with pytest.raises(DataError, match="missing column.*title"):
        read_dataset(write_csv(tmp_path / "a.csv", ["x.png"], "filepath"))
    (tmp_path / "empty.csv").write_text("")
    with pytest.raises(DataError, match="empty.csv: file is empty"):
        read_dataset(tmp_path / "empty.csv")
    (tmp_path / "latin.csv").write_bytes("filepath,title\nx.png,caf\xe9\n".encode("latin-1"))
    with pytest.raises(DataError, match="latin.csv: not UTF-8"):
        read_dataset(tmp_path / "latin.csv", skip_bad=True)


def test_jsonl_bad_lines(records, tmp_path):
    out = write_dataset(records[:3], tmp_path / "hf", "jsonl")
    metadata = out / "metadata.jsonl"
    lines = metadata.read_text().splitlines()
    lines[1] = lines[1][:-5]
    lines.append(json.dumps({"file_name": records[0].record_id + ".png"}))
    lines.append(json.dumps(["not", "an", "object"]))
    metadata.write_text("\n".join(lines) + "\n")
    with pytest.raises(DataError, match=r"metadata.jsonl line 2: malformed JSON"):
        read_dataset(out)
    result = read_dataset(out, skip_bad=True)
    assert len(result.records) == 2
    assert [bad.source.split(" line ")[1][:1] for bad in result.skipped] == ["2", "4", "5"]
    assert "neither 'text' nor 'captions'" in result.skipped[1].reason


def test_coco_problems(records, tmp_path):
    path = write_dataset(records[:3], tmp_path / "c.json", "coco")
    coco = json.loads(path.read_text())
    coco["annotations"].append({"id": 99, "image_id": 1234, "caption": "orphan"})
    coco["annotations"] = [a for a in coco["annotations"] if a["image_id"] != 2]
    coco["images"].append({"id": [1], "file_name": "x.png"})
    path.write_text(json.dumps(coco))
    result = read_dataset(path, skip_bad=True)
    assert len(result.records) == 2
    reasons = [str(bad) for bad in result.skipped]
    assert "annotations[" in reasons[0] and "image 2 (" in reasons[1] and "caption is empty" in reasons[1]
    assert "images[3]" in reasons[2]
    path.write_text("{\n  broken")
    with pytest.raises(DataError, match=r"c.json: malformed JSON .* line 2"):
        read_dataset(path, skip_bad=True)
    path.write_text("[]")
    with pytest.raises(DataError, match="not a COCO captions file|JSON object"):
        read_dataset(path)


def test_folder_problems(records, tmp_path):
    out = write_dataset(records[:4], tmp_path / "f", "folder")
    (out / f"{records[0].record_id}.txt").unlink()
    (out / f"{records[1].record_id}.json").write_text("{oops")
    (out / f"{records[2].record_id}.txt").write_text("\n  \n")
    with pytest.raises(DataError, match=f"{records[0].record_id}.png: no caption file"):
        read_dataset(out)
    result = read_dataset(out, skip_bad=True)
    assert [r.record_id for r in result.records] == [records[3].record_id]
    assert "malformed JSON" in result.skipped[1].reason and "caption is empty" in result.skipped[2].reason


def shard_layout(shard: Path) -> list[tarfile.TarInfo]:
    with tarfile.open(shard) as tar:
        return tar.getmembers()


@pytest.mark.parametrize("cut_in", ["data", "header", "end marker"])
def test_truncated_shard_keeps_samples_before_the_damage(records, tmp_path, cut_in):
    out = write_dataset(records, tmp_path / "shards", "webdataset", records_per_shard=6)
    shard = out / "shard-00000.tar"
    members = shard_layout(shard)
    image_of_fifth = members[3 * 4]  # members come in (png, txt, json) triples
    cut = {
        "data": image_of_fifth.offset_data + 10,
        "header": image_of_fifth.offset + 100,
        "end marker": members[-1].offset_data + 512,
    }[cut_in]
    shard.write_bytes(shard.read_bytes()[:cut])
    with pytest.raises(DataError, match="shard-00000.tar: tar shard is"):
        read_dataset(out)
    result = read_dataset(out, skip_bad=True)
    # The sample being read when the damage shows may lack members, so it goes too: a cut header
    # may have belonged to the fourth sample, and a missing end marker leaves the sixth in doubt.
    kept = {"data": 4, "header": 3, "end marker": 5}[cut_in]
    assert [r.record_id for r in result.records] == [r.record_id for r in records[:kept] + records[6:]]
    assert len(result.skipped) == 1 and result.skipped[0].source == str(shard)


def test_unreadable_shard(records, tmp_path):
    out = write_dataset(records, tmp_path / "shards", "webdataset", records_per_shard=5)
    (out / "shard-00001.tar").write_bytes(b"definitely not a tar archive" * 40)
    with pytest.raises(DataError, match="shard-00001.tar: tar shard is unreadable"):
        read_dataset(out)
    assert len(read_dataset(out, skip_bad=True).records) == 5


def test_shard_samples_missing_members(tmp_path):
    shard = tmp_path / "one.tar"
    with tarfile.open(shard, "w") as tar:
        for name, data in [
            ("a.png", png_bytes(grey())),
            ("b.txt", b"a caption"),
            ("c.png", png_bytes(grey())),
        ]:
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
        info = tarfile.TarInfo("c.txt")
        info.size = 9
        tar.addfile(info, io.BytesIO(b"a caption"))
    result = read_dataset(shard, skip_bad=True)
    assert [r.record_id for r in result.records] == ["c"]
    assert [bad.reason for bad in result.skipped] == ["has no .txt caption member", "has no image member"]
    assert result.skipped[0].source == f"{shard} sample a"


def test_bad_options(tmp_path, csv_dataset):
    with pytest.raises(DataError, match="max_caption_words"):
        read_dataset(csv_dataset, max_caption_words=0)
    assert len(read_dataset(csv_dataset, max_caption_words=3).records) == 3
    with pytest.raises(DataError, match="3 words"):
        read_dataset(csv_dataset, max_caption_words=2)


def test_load_image_errors_name_the_file(tmp_path):
    with pytest.raises(DataError, match="gone.png: image file not found"):
        load_image(tmp_path / "gone.png")
    (tmp_path / "fake.jpg").write_bytes(b"\xff\xd8\xff\xe0 not really")
    with pytest.raises(DataError, match="fake.jpg: not a readable image"):
        load_image(tmp_path / "fake.jpg")


def png_claiming_size(width: int, height: int) -> bytes:
    """A PNG whose header claims a size its (tiny) data does not have."""
    data = bytearray(png_bytes(grey(8)))
    header = struct.pack(">II", width, height) + bytes(data[24:29])
    data[16:29] = header
    data[29:33] = struct.pack(">I", zlib.crc32(b"IHDR" + header))
    return bytes(data)


def test_oversized_headers_are_refused_before_decoding(tmp_path):
    (tmp_path / "bomb.png").write_bytes(png_claiming_size(30_000, 30_000))
    with pytest.raises(DataError, match="bomb.png: image is larger than 8192"):
        load_image(tmp_path / "bomb.png")
    (tmp_path / "tall.png").write_bytes(png_claiming_size(16, 9000))
    with pytest.raises(DataError, match="tall.png: image is 16x9000 pixels, larger than 8192"):
        load_image(tmp_path / "tall.png")


@pytest.mark.parametrize("fmt", ["PNG", "JPEG", "GIF", "WEBP"])
def test_every_truncation_of_an_image_is_a_data_error(tmp_path, fmt):
    buffer = io.BytesIO()
    Image.fromarray(np.random.default_rng(1).integers(0, 255, (24, 24, 3), dtype=np.uint8)).save(buffer, fmt)
    data = buffer.getvalue()
    path = tmp_path / f"x.{fmt.lower()}"
    # Up to the last 24 bytes: PNG's IEND chunk and GIF's trailer only end a file whose pixels are all there.
    for cut in range(0, len(data) - 24, max(1, len(data) // 40)):
        path.write_bytes(data[:cut])
        with pytest.raises(DataError, match=f"x.{fmt.lower()}: "):
            load_image(path)
