"""The dataset formats users bring, read through one interface, and writers that produce each of them.

Formats (``fmt``) and their layout:

* ``csv``: a .csv (comma) or .tsv (tab) file with columns ``filepath`` and ``title`` and optionally
  ``subject_id`` and ``record_id``; image paths are relative to the file's folder.
* ``jsonl``: an image folder with ``metadata.jsonl`` (Hugging Face imagefolder style): one JSON object
  a line with ``file_name`` and ``text`` and optionally ``captions`` (every reference caption),
  ``subject_id`` and ``id``.
* ``coco``: a COCO captions .json, ``images[{id, file_name, subject_id?}]`` and
  ``annotations[{id, image_id, caption}]``; ``file_name`` is looked up beside the .json, then in
  an ``images/`` folder beside it.
* ``folder``: image files (any depth) with same-stem ``.txt`` sidecars, one caption a line, and
  optional same-stem ``.json`` sidecars holding ``subject_id``.
* ``webdataset``: a .tar shard or a folder of them; samples are same-key members ``key.png`` (or
  another image type), ``key.txt`` (captions, one a line) and optional ``key.json`` (``subject_id``).

A record without a subject id is its own subject: it gets ``"record:" + record_id``.
Every problem with the input is found while reading, before training starts, and reported as a
``DataError`` naming the file (and line, shard or record) and the problem.
"""

from __future__ import annotations

import csv
import io
import json
import posixpath
import re
import tarfile
import warnings
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps

from simmim.data.records import Record
from simmim.data.tokenizer import split_words
from simmim.errors import DataError

FORMATS = ("csv", "jsonl", "coco", "folder", "webdataset")
IMAGE_SUFFIXES = frozenset({".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp", ".tif", ".tiff"})
MIN_IMAGE_SIDE = 8
MAX_IMAGE_SIDE = 8192
METADATA_JSONL = "metadata.jsonl"
SIZES_JSON = "sizes.json"
# A POSIX tar ends with two zero blocks; without them the shard was cut short.
_TAR_END_MARKER = 2 * tarfile.BLOCKSIZE
_SIXTEEN_BIT_MODES = frozenset({"I;16", "I;16L", "I;16B", "I;16N"})


@dataclass(frozen=True)
class BadRecord:
    """An input record that cannot be used: where it is and why."""

    source: str
    reason: str

    def __str__(self) -> str:
        return f"{self.source}: {self.reason}"


@dataclass
class ReadResult:
    """The usable records of a dataset and, when reading with ``skip_bad``, the skipped ones."""

    records: list[Record]
    skipped: list[BadRecord] = field(default_factory=list)


class _Bad(Exception):
    """A problem with one record; the reader adds where it is."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


@dataclass
class _Entry:
    """A record as found in its source, before its image is decoded and its captions checked."""

    source: str
    record_id: str
    subject_id: str | None
    captions: list
    image: Path | bytes


# --------------------------------------------------------------------------------------------- images


def _to_rgb(image: Image.Image) -> np.ndarray:
    """Any PIL mode as H x W x 3 uint8; transparent pixels are composed on black, like the synthetic data."""
    if image.mode in _SIXTEEN_BIT_MODES or image.mode in ("I", "F"):
        values = np.asarray(image, dtype=np.float64)
        if image.mode in _SIXTEEN_BIT_MODES or values.max(initial=0) > 255:
            values = values / 257  # 16-bit range to 8-bit
        grey = np.clip(np.rint(values), 0, 255).astype(np.uint8)
        return np.repeat(grey[..., None], 3, axis=2)
    bands = image.getbands()
    if "A" in bands or "a" in bands or "transparency" in image.info:
        rgba = np.asarray(image.convert("RGBA"), dtype=np.uint16)
        return ((rgba[..., :3] * rgba[..., 3:] + 127) // 255).astype(np.uint8)
    return np.asarray(image.convert("RGB"), dtype=np.uint8)


def _square(rgb: np.ndarray, image_size: int) -> np.ndarray:
    """Centre-crops to a square and resizes to image_size x image_size."""
    height, width = rgb.shape[:2]
    side = min(height, width)
    top, left = (height - side) // 2, (width - side) // 2
    rgb = rgb[top : top + side, left : left + side]
    if side != image_size:
        rgb = np.asarray(Image.fromarray(rgb).resize((image_size, image_size), Image.Resampling.BICUBIC))
    return np.array(rgb, dtype=np.uint8)  # a fresh writable array, independent of PIL's buffer


def _decode(data: bytes, image_size: int) -> np.ndarray:
    """Decodes and fully loads an image (so truncation shows now), then squares and resizes it."""
    with warnings.catch_warnings():
        # PIL warns about oversized images (refused below, before any pixel is decoded) and about
        # damage it can read past (bad EXIF, short TIFF tags); errors are what decide here.
        warnings.simplefilter("ignore")
        rgb = _decode_rgb(data)
    return _square(rgb, image_size)


def _decode_rgb(data: bytes) -> np.ndarray:
    try:
        image = Image.open(io.BytesIO(data))
    except Image.DecompressionBombError:
        raise _Bad(f"image is larger than {MAX_IMAGE_SIDE} pixels on a side") from None
    except Exception as error:  # PIL signals unreadable files with many exception types
        raise _Bad(f"not a readable image ({type(error).__name__}: {error})") from None
    with image:
        width, height = image.size
        if min(width, height) < MIN_IMAGE_SIDE:
            raise _Bad(f"image is {width}x{height} pixels, smaller than {MIN_IMAGE_SIDE} on a side")
        if max(width, height) > MAX_IMAGE_SIDE:
            raise _Bad(f"image is {width}x{height} pixels, larger than {MAX_IMAGE_SIDE} on a side")
        try:
            image.load()
            return _to_rgb(ImageOps.exif_transpose(image))
        except Exception as error:  # truncated data, bad EXIF, unsupported modes: all unreadable
            raise _Bad(f"not a readable image or truncated ({type(error).__name__}: {error})") from None


def _read_bytes(path: Path) -> bytes:
    try:
        return path.read_bytes()
    except FileNotFoundError:
        raise _Bad(f"image file not found: {path}") from None
    except OSError as error:
        raise _Bad(f"cannot read image file {path} ({error.strerror or error})") from None


def load_image(path: str | Path, image_size: int = 32) -> np.ndarray:
    """Loads one image as the readers do: RGB, centre-cropped and resized to image_size x image_size.

    Raises:
        DataError: If the file is missing, not an image, truncated, or too small or large.
    """
    try:
        return _decode(_read_bytes(Path(path)), image_size)
    except _Bad as bad:
        raise DataError(f"{path}: {bad.reason}") from None


# --------------------------------------------------------------------------------------- shared checks


def _optional_id(value: object, what: str) -> str | None:
    """An id field: a non-empty string or an integer; missing or blank gives None."""
    if value is None or (isinstance(value, str) and not value.strip()):
        return None
    if isinstance(value, bool) or not isinstance(value, (str, int)):
        raise _Bad(f"{what} must be a string or an integer, got {value!r}")
    return str(value).strip()


def _json_object(text: str, what: str) -> dict:
    try:
        value = json.loads(text)
    except json.JSONDecodeError as error:
        where = f"line {error.lineno} column {error.colno}"
        raise _Bad(f"malformed JSON in {what} ({error.msg} at {where})") from None
    if not isinstance(value, dict):
        raise _Bad(f"{what} must hold a JSON object")
    return value


def _read_text(path: Path) -> str:
    """A whole UTF-8 text file; a problem here concerns every record, so it is never skipped."""
    try:
        return path.read_text(encoding="utf-8-sig")
    except UnicodeDecodeError as error:
        raise DataError(f"{path}: not UTF-8 text (byte {error.start})") from None
    except OSError as error:
        raise DataError(f"{path}: cannot read ({error.strerror or error})") from None


def _check_captions(captions: list, max_words: int) -> tuple[str, ...]:
    if not captions:
        raise _Bad("caption is empty")
    checked = []
    for caption in captions:
        if not isinstance(caption, str):
            raise _Bad(f"caption {caption!r} is not text")
        caption = " ".join(caption.split())
        if not caption:
            raise _Bad("caption is empty")
        words = len(split_words(caption))
        if words > max_words:
            raise _Bad(
                f"caption has {words} words (punctuation marks count as words), "
                f"more than max_caption_words={max_words}: {caption[:60]!r}"
            )
        checked.append(caption)
    return tuple(checked)


def _build(entry: _Entry, image_size: int, max_words: int, seen_ids: set[str]) -> Record:
    if entry.record_id in seen_ids:
        raise _Bad(f"record id {entry.record_id!r} appears more than once")
    seen_ids.add(entry.record_id)
    captions = _check_captions(entry.captions, max_words)
    data = _read_bytes(entry.image) if isinstance(entry.image, Path) else entry.image
    return Record(
        record_id=entry.record_id,
        subject_id=entry.subject_id or f"record:{entry.record_id}",
        captions=captions,
        image=_decode(data, image_size),
        source=entry.source,
    )


# -------------------------------------------------------------------------------------------- readers


def _read_csv(path: Path) -> Iterator[_Entry | BadRecord]:
    delimiter = "\t" if path.suffix.lower() == ".tsv" else ","
    reader = csv.reader(io.StringIO(_read_text(path), newline=""), delimiter=delimiter, strict=True)
    try:
        header = [name.strip() for name in next(reader)]
    except StopIteration:
        raise DataError(f"{path}: file is empty, expected a header with 'filepath' and 'title'") from None
    except csv.Error as error:
        raise DataError(f"{path} line 1: malformed header ({error})") from None
    missing = [name for name in ("filepath", "title") if name not in header]
    if missing:
        raise DataError(f"{path}: missing column(s) {', '.join(missing)}; the header has {', '.join(header)}")
    columns = ("filepath", "title", "subject_id", "record_id")
    column = {name: header.index(name) for name in columns if name in header}
    while True:
        try:
            row = next(reader)
        except StopIteration:
            return
        except csv.Error as error:
            yield BadRecord(f"{path} line {reader.line_num}", f"malformed CSV row ({error})")
            continue
        if not any(cell.strip() for cell in row):
            continue  # blank lines separate nothing
        source = f"{path} line {reader.line_num}"
        try:
            if len(row) != len(header):
                raise _Bad(f"row has {len(row)} fields, the header has {len(header)}")
            filepath = row[column["filepath"]].strip()
            if not filepath:
                raise _Bad("filepath is empty")
            source += f" ({filepath})"
            ids = {name: _optional_id(row[i], name) for name, i in column.items() if name.endswith("_id")}
            record_id = ids.get("record_id") or filepath
            captions = [row[column["title"]]]
            entry = _Entry(source, record_id, ids.get("subject_id"), captions, path.parent / filepath)
        except _Bad as bad:
            yield BadRecord(source, bad.reason)
            continue
        yield entry


def _jsonl_captions(row: dict) -> list:
    text, captions = row.get("text"), row.get("captions")
    if text is None and captions is None:
        raise _Bad("has neither 'text' nor 'captions'")
    if captions is not None and not isinstance(captions, list):
        raise _Bad("'captions' must be a list of strings")
    captions = list(captions or [])
    if text is None:
        return captions
    # The canonical caption comes first, whatever order 'captions' has.
    return [text, *(caption for caption in captions if caption != text)]


def _read_jsonl(path: Path) -> Iterator[_Entry | BadRecord]:
    for number, line in enumerate(_read_text(path).splitlines(), start=1):
        if not line.strip():
            continue
        source = f"{path} line {number}"
        try:
            row = _json_object(line, "the line")
            file_name = row.get("file_name")
            if not isinstance(file_name, str) or not file_name.strip():
                raise _Bad("'file_name' is missing or not a string")
            source += f" ({file_name})"
            entry = _Entry(
                source,
                _optional_id(row.get("id"), "id") or file_name,
                _optional_id(row.get("subject_id"), "subject_id"),
                _jsonl_captions(row),
                path.parent / file_name,
            )
        except _Bad as bad:
            yield BadRecord(source, bad.reason)
            continue
        yield entry


def _hashable(value: object) -> object:
    """An id usable as a dict key; malformed ids (lists, objects) become None."""
    return value if isinstance(value, (str, int)) else None


def _read_coco(path: Path) -> Iterator[_Entry | BadRecord]:
    try:
        data = _json_object(_read_text(path), "the file")
    except _Bad as bad:
        raise DataError(f"{path}: {bad.reason}") from None
    images, annotations = data.get("images"), data.get("annotations")
    if not isinstance(images, list) or not isinstance(annotations, list):
        raise DataError(f"{path}: not a COCO captions file, expected 'images' and 'annotations' lists")
    image_ids = {_hashable(image.get("id")) for image in images if isinstance(image, dict)}
    captions: dict[object, list] = {}
    for k, annotation in enumerate(annotations):
        image_id = _hashable(annotation.get("image_id")) if isinstance(annotation, dict) else None
        if image_id is None or image_id not in image_ids:
            yield BadRecord(f"{path} annotations[{k}]", "needs an 'image_id' that is listed in 'images'")
            continue
        captions.setdefault(image_id, []).append(annotation.get("caption"))
    for k, image in enumerate(images):
        source = f"{path} images[{k}]"
        try:
            if not isinstance(image, dict):
                raise _Bad("must be a JSON object")
            image_id, file_name = _optional_id(image.get("id"), "id"), image.get("file_name")
            if image_id is None or not isinstance(file_name, str) or not file_name.strip():
                raise _Bad("needs an 'id' and a 'file_name'")
            source = f"{path} image {image_id} ({file_name})"
            image_path = path.parent / file_name
            if not image_path.exists() and (path.parent / "images" / file_name).exists():
                image_path = path.parent / "images" / file_name
            entry = _Entry(
                source,
                image_id,
                _optional_id(image.get("subject_id"), "subject_id"),
                captions.get(_hashable(image["id"]), []),
                image_path,
            )
        except _Bad as bad:
            yield BadRecord(source, bad.reason)
            continue
        yield entry


def _is_hidden(path: Path, root: Path) -> bool:
    return any(part.startswith(".") for part in path.relative_to(root).parts)


def _image_files(root: Path) -> list[Path]:
    candidates = (p for p in root.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file())
    return sorted(p for p in candidates if not _is_hidden(p, root))


def _caption_lines(text: str) -> list[str]:
    return [line for line in text.splitlines() if line.strip()]


def _subject_from_json(text: str, what: str) -> str | None:
    return _optional_id(_json_object(text, what).get("subject_id"), "subject_id")


def _read_folder(root: Path) -> Iterator[_Entry | BadRecord]:
    for image_path in _image_files(root):
        source = str(image_path)
        caption_path, meta_path = image_path.with_suffix(".txt"), image_path.with_suffix(".json")
        try:
            if not caption_path.is_file():
                raise _Bad(f"no caption file {caption_path.name} beside it")
            captions = _caption_lines(_read_text(caption_path))
            subject_id = None
            if meta_path.is_file():
                subject_id = _subject_from_json(_read_text(meta_path), meta_path.name)
            record_id = image_path.relative_to(root).with_suffix("").as_posix()
            entry = _Entry(source, record_id, subject_id, captions, image_path)
        except _Bad as bad:
            yield BadRecord(source, bad.reason)
            continue
        except DataError as error:  # an undecodable sidecar concerns only this record
            yield BadRecord(source, str(error))
            continue
        yield entry


def _sample(shard: Path, key: str, members: dict[str, bytes]) -> _Entry | BadRecord:
    source = f"{shard} sample {key}"
    image = next((data for ext, data in members.items() if "." + ext in IMAGE_SUFFIXES), None)
    if image is None:
        return BadRecord(source, "has no image member")
    if "txt" not in members:
        return BadRecord(source, "has no .txt caption member")
    try:
        captions = _caption_lines(members["txt"].decode("utf-8-sig"))
        subject_id = None
        if "json" in members:
            subject_id = _subject_from_json(members["json"].decode("utf-8-sig"), f"{key}.json")
    except UnicodeDecodeError:
        return BadRecord(source, "a text member is not UTF-8")
    except _Bad as bad:
        return BadRecord(source, bad.reason)
    return _Entry(source, key, subject_id, captions, image)


def _split_member_name(name: str) -> tuple[str, str]:
    """(key, extension) the webdataset way: the key ends at the first dot of the base name."""
    folder, base = posixpath.split(name)
    stem, _, extension = base.partition(".")
    return posixpath.join(folder, stem), extension.lower()


def _read_shard(shard: Path) -> Iterator[_Entry | BadRecord]:
    """Streams a shard's samples; damage ends the shard and drops the sample being read when it shows.

    That sample may be missing members (its subject sidecar, say), so it is not trusted.
    """
    key, members, read = None, {}, 0
    try:
        with tarfile.open(shard, mode="r:") as tar:
            for member in tar:
                if not member.isfile():
                    continue
                member_key, extension = _split_member_name(member.name)
                if member_key != key:
                    if key is not None:
                        yield _sample(shard, key, members)
                        read += 1
                    key, members = member_key, {}
                members[extension] = tar.extractfile(member).read()
            # tarfile takes a cut at a member boundary, or inside a header, for the end of the archive.
            damage = None
            if shard.stat().st_size < tar.offset + _TAR_END_MARKER:
                damage = "truncated: the end-of-archive marker is missing"
    except (tarfile.TarError, OSError, EOFError) as error:
        damage = f"unreadable or truncated ({error})"
    if damage is not None:
        yield BadRecord(str(shard), f"tar shard is {damage}; kept the {read} samples before the damage")
    elif key is not None:
        yield _sample(shard, key, members)


def _read_webdataset(path: Path) -> Iterator[_Entry | BadRecord]:
    shards = [path] if path.is_file() else sorted(path.glob("*.tar"))
    for shard in shards:
        yield from _read_shard(shard)


_READERS = {
    "csv": _read_csv,
    "jsonl": _read_jsonl,
    "coco": _read_coco,
    "folder": _read_folder,
    "webdataset": _read_webdataset,
}
_SUFFIX_FORMATS = {".csv": "csv", ".tsv": "csv", ".jsonl": "jsonl", ".json": "coco", ".tar": "webdataset"}


def detect_format(path: str | Path) -> str:
    """Tells the format of a dataset from its path (see the module docstring).

    Raises:
        DataError: If the path is missing or matches no format.
    """
    path = Path(path)
    if path.is_file():
        fmt = _SUFFIX_FORMATS.get(path.suffix.lower())
        if fmt is None:
            raise DataError(
                f"{path}: cannot tell the format from suffix {path.suffix!r}; give fmt, one of {FORMATS}"
            )
        return fmt
    if not path.is_dir():
        raise DataError(f"{path}: no such file or folder")
    if (path / METADATA_JSONL).is_file():
        return "jsonl"
    if any(path.glob("*.tar")):
        return "webdataset"
    if _image_files(path):
        return "folder"
    raise DataError(f"{path}: found no {METADATA_JSONL}, .tar shards or image files; cannot tell the format")


def _source_path(path: Path, fmt: str) -> Path:
    """The file or folder the reader of ``fmt`` starts from, checked to be the right kind."""
    if fmt == "jsonl" and path.is_dir():
        path = path / METADATA_JSONL
    wants_file = fmt in ("csv", "jsonl", "coco")
    if wants_file and not path.is_file():
        raise DataError(f"{path}: no such file (format {fmt} reads a file)")
    if fmt == "folder" and not path.is_dir():
        raise DataError(f"{path}: no such folder (format folder reads a folder)")
    if fmt == "webdataset" and not path.exists():
        raise DataError(f"{path}: no such shard or folder of shards")
    return path


def read_dataset(
    path: str | Path,
    *,
    fmt: str = "auto",
    image_size: int = 32,
    max_caption_words: int = 20,
    skip_bad: bool = False,
) -> ReadResult:
    """Reads a dataset in any supported format, checking every record before returning.

    Args:
        path: The dataset file or folder.
        fmt: One of ``FORMATS``, or "auto" to tell it from ``path``.
        image_size: Images are converted to RGB, centre-cropped and resized to this side.
        max_caption_words: Longest caption allowed, in ``split_words`` tokens.
        skip_bad: If False, the first bad record raises. If True, bad records are skipped and
            listed in ``ReadResult.skipped``; a damaged tar shard keeps the samples before the damage.

    Returns:
        The records in source order (subjects as in the module docstring) and the skipped ones.

    Raises:
        DataError: On a bad record (unless ``skip_bad``), on a problem with the whole dataset (missing,
            unreadable or malformed file, missing columns), or when no usable record is left.
    """
    path = Path(path)
    if fmt != "auto" and fmt not in FORMATS:
        raise DataError(f"dataset format {fmt!r} is not one of auto, {', '.join(FORMATS)}")
    if not isinstance(max_caption_words, int) or max_caption_words < 1:
        raise DataError(f"max_caption_words must be a positive integer, got {max_caption_words!r}")
    if not isinstance(image_size, int) or image_size < 1:
        raise DataError(f"image_size must be a positive integer, got {image_size!r}")
    fmt = detect_format(path) if fmt == "auto" else fmt
    records: list[Record] = []
    skipped: list[BadRecord] = []
    seen_ids: set[str] = set()
    for item in _READERS[fmt](_source_path(path, fmt)):
        if isinstance(item, _Entry):
            try:
                item = _build(item, image_size, max_caption_words, seen_ids)
            except _Bad as bad:
                item = BadRecord(item.source, bad.reason)
        if isinstance(item, BadRecord):
            if not skip_bad:
                raise DataError(str(item))
            skipped.append(item)
        else:
            records.append(item)
    if not records:
        detail = f"; {len(skipped)} skipped, the first: {skipped[0]}" if skipped else ""
        raise DataError(f"{path}: no usable records{detail}")
    return ReadResult(records=records, skipped=skipped)


# -------------------------------------------------------------------------------------------- writers


def _png(image: np.ndarray | None, record_id: str) -> bytes:
    if image is None or image.dtype != np.uint8 or image.ndim != 3 or image.shape[2] != 3:
        raise DataError(f"record {record_id}: only still H x W x 3 uint8 images can be written")
    buffer = io.BytesIO()
    Image.fromarray(image).save(buffer, format="PNG")
    return buffer.getvalue()


def _file_stems(records: list[Record]) -> list[str]:
    """Checks the records can be written, before anything is, and names their files.

    File names are record ids restricted to characters every format and file system accepts.
    """
    stems: dict[str, str] = {}
    for record in records:
        if record.image is None:
            raise DataError(f"record {record.record_id}: is a clip; only still images can be written")
        stem = re.sub(r"[^A-Za-z0-9_-]+", "_", record.record_id)
        if stem in stems:
            first = stems[stem]
            raise DataError(f"records {first!r} and {record.record_id!r} would share the file name {stem!r}")
        stems[stem] = record.record_id
        for caption in record.captions:
            if not caption.strip() or "\n" in caption:
                raise DataError(f"record {record.record_id}: caption {caption!r} is empty or spans lines")
    return list(stems)


def _write_csv(records: list[Record], stems: list[str], out: Path) -> Path:
    if out.suffix.lower() not in (".csv", ".tsv"):
        raise DataError(f"{out}: a csv dataset is written to a .csv or .tsv file")
    (out.parent / "images").mkdir(parents=True, exist_ok=True)
    buffer = io.StringIO()
    writer = csv.writer(buffer, delimiter="\t" if out.suffix.lower() == ".tsv" else ",", lineterminator="\n")
    writer.writerow(["filepath", "title", "subject_id", "record_id"])
    for record, stem in zip(records, stems, strict=True):
        (out.parent / "images" / f"{stem}.png").write_bytes(_png(record.image, record.record_id))
        writer.writerow([f"images/{stem}.png", record.caption, record.subject_id, record.record_id])
    out.write_text(buffer.getvalue(), encoding="utf-8")
    return out


def _write_jsonl(records: list[Record], stems: list[str], out: Path) -> Path:
    out.mkdir(parents=True, exist_ok=True)
    lines = []
    for record, stem in zip(records, stems, strict=True):
        (out / f"{stem}.png").write_bytes(_png(record.image, record.record_id))
        row = {
            "file_name": f"{stem}.png",
            "text": record.caption,
            "captions": list(record.captions),
            "subject_id": record.subject_id,
            "id": record.record_id,
        }
        lines.append(json.dumps(row) + "\n")
    (out / METADATA_JSONL).write_text("".join(lines), encoding="utf-8")
    return out


def _write_coco(records: list[Record], stems: list[str], out: Path) -> Path:
    if out.suffix.lower() != ".json":
        raise DataError(f"{out}: a coco dataset is written to a .json file")
    (out.parent / "images").mkdir(parents=True, exist_ok=True)
    images, annotations = [], []
    for image_id, (record, stem) in enumerate(zip(records, stems, strict=True), start=1):
        (out.parent / "images" / f"{stem}.png").write_bytes(_png(record.image, record.record_id))
        height, width = record.image.shape[:2]
        entry = {"id": image_id, "file_name": f"{stem}.png", "width": width, "height": height}
        images.append({**entry, "subject_id": record.subject_id})
        for caption in record.captions:
            annotations.append({"id": len(annotations) + 1, "image_id": image_id, "caption": caption})
    coco = {"images": images, "annotations": annotations}
    out.write_text(json.dumps(coco, indent=1) + "\n", encoding="utf-8")
    return out


def _write_folder(records: list[Record], stems: list[str], out: Path) -> Path:
    out.mkdir(parents=True, exist_ok=True)
    for record, stem in zip(records, stems, strict=True):
        (out / f"{stem}.png").write_bytes(_png(record.image, record.record_id))
        (out / f"{stem}.txt").write_text("\n".join(record.captions) + "\n", encoding="utf-8")
        meta = json.dumps({"subject_id": record.subject_id})
        (out / f"{stem}.json").write_text(meta + "\n", encoding="utf-8")
    return out


def _add_member(tar: tarfile.TarFile, name: str, data: bytes) -> None:
    info = tarfile.TarInfo(name)
    info.size, info.mode, info.mtime = len(data), 0o644, 0  # fixed metadata keeps shards byte-identical
    tar.addfile(info, io.BytesIO(data))


def _write_webdataset(records: list[Record], stems: list[str], out: Path, records_per_shard: int) -> Path:
    if records_per_shard < 1:
        raise DataError(f"records_per_shard must be at least 1, got {records_per_shard}")
    out.mkdir(parents=True, exist_ok=True)
    sizes = {}
    for start in range(0, len(records), records_per_shard):
        name = f"shard-{start // records_per_shard:05d}.tar"
        stop = start + records_per_shard
        chunk = list(zip(records[start:stop], stems[start:stop], strict=True))
        with tarfile.open(out / name, mode="w", format=tarfile.USTAR_FORMAT) as tar:
            for record, stem in chunk:
                _add_member(tar, f"{stem}.png", _png(record.image, record.record_id))
                _add_member(tar, f"{stem}.txt", ("\n".join(record.captions) + "\n").encode("utf-8"))
                meta = {"subject_id": record.subject_id, "id": record.record_id}
                _add_member(tar, f"{stem}.json", json.dumps(meta).encode("utf-8"))
        sizes[name] = len(chunk)
    (out / SIZES_JSON).write_text(json.dumps(sizes, indent=1) + "\n", encoding="utf-8")
    return out


def write_dataset(
    records: Iterable[Record], out: str | Path, fmt: str, *, records_per_shard: int = 1000
) -> Path:
    """Writes still-image records in one of ``FORMATS`` (layouts in the module docstring).

    Images are written as PNG, named after the record ids. ``csv`` keeps only the canonical caption;
    ``coco`` numbers images from 1 and so does not keep record ids.

    Args:
        records: Records with ``image`` set.
        out: A .csv/.tsv file for csv, a .json file for coco (images go to ``images/`` beside either),
            a folder for jsonl, folder and webdataset.
        fmt: The format.
        records_per_shard: Samples per tar shard (webdataset only).

    Returns:
        The path to give ``read_dataset``.

    Raises:
        DataError: For clips, malformed images, record ids that collide as file names, captions
            that are empty or span lines, an unknown format, or a file that cannot be written.
    """
    records = list(records)
    stems = _file_stems(records)
    out = Path(out)
    try:
        if fmt == "webdataset":
            return _write_webdataset(records, stems, out, records_per_shard)
        writers = {"csv": _write_csv, "jsonl": _write_jsonl, "coco": _write_coco, "folder": _write_folder}
        if fmt not in writers:
            raise DataError(f"dataset format {fmt!r} is not one of {', '.join(FORMATS)}")
        return writers[fmt](records, stems, out)
    except OSError as error:
        raise DataError(f"{out}: cannot write the dataset ({error})") from None
