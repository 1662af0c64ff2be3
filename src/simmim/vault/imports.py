"""Reading a dataset for ingest: every format of `simmim.data.formats`, confined to the dataset's folder.

A manifest (csv, jsonl, coco) names image files; a name that is absolute or leads out of the
manifest's folder (``../``, or a symbolic link pointing elsewhere) is refused before any file is
read, so an import cannot pull arbitrary files of the machine into the vault. Folder datasets are
checked the same way (symbolic links out of the folder). Tar shards are read in memory, never
extracted, so member names cannot write anywhere.
"""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path

from simmim.data.formats import IMAGE_SUFFIXES, METADATA_JSONL, ReadResult, detect_format, read_dataset
from simmim.errors import DataError, VaultError


def _inside(root: Path, name: str, where: str) -> None:
    if not name:
        return  # the loader reports empty names itself
    candidate = Path(name)
    if candidate.is_absolute():
        raise VaultError(f"{where}: image path {name!r} is absolute; an import reads only files inside {root}")
    resolved = (root / candidate).resolve()
    if not resolved.is_relative_to(root.resolve()):
        raise VaultError(f"{where}: image path {name!r} leads outside the dataset folder {root}; refused")


def _manifest_names(path: Path, fmt: str) -> list[tuple[str, str]]:
    """(where, referenced file name) for each image a manifest names."""
    text = path.read_text(encoding="utf-8-sig", errors="replace")
    names: list[tuple[str, str]] = []
    if fmt == "csv":
        rows = csv.reader(io.StringIO(text, newline=""), delimiter="\t" if path.suffix.lower() == ".tsv" else ",")
        header = [name.strip() for name in next(rows, [])]
        if "filepath" in header:
            column = header.index("filepath")
            for number, row in enumerate(rows, start=2):
                if len(row) > column:
                    names.append((f"{path} line {number}", row[column].strip()))
    elif fmt == "jsonl":
        for number, line in enumerate(text.splitlines(), start=1):
            try:
                row = json.loads(line) if line.strip() else None
            except json.JSONDecodeError:
                continue  # the loader reports malformed lines
            if isinstance(row, dict) and isinstance(row.get("file_name"), str):
                names.append((f"{path} line {number}", row["file_name"]))
    elif fmt == "coco":
        try:
            images = json.loads(text).get("images", [])
        except (json.JSONDecodeError, AttributeError):
            return []
        for image in images if isinstance(images, list) else []:
            if isinstance(image, dict) and isinstance(image.get("file_name"), str):
                names.append((f"{path} image {image.get('id')}", image["file_name"]))
                names.append((f"{path} image {image.get('id')}", str(Path("images") / image["file_name"])))
    return names


def check_confined(path: str | Path, fmt: str = "auto") -> str:
    """Checks that a dataset references only files inside its own folder; returns its format.

    Raises:
        VaultError: Naming the manifest line and the offending path.
        DataError: If the dataset is missing or its format cannot be told.
    """
    path = Path(path)
    fmt = detect_format(path) if fmt == "auto" else fmt
    if fmt in ("csv", "coco") and path.is_file():
        for where, name in _manifest_names(path, fmt):
            _inside(path.parent, name, where)
    elif fmt == "jsonl":
        manifest = path / METADATA_JSONL if path.is_dir() else path
        if manifest.is_file():
            for where, name in _manifest_names(manifest, fmt):
                _inside(manifest.parent, name, where)
    elif fmt == "folder" and path.is_dir():
        for image in path.rglob("*"):
            if image.suffix.lower() in IMAGE_SUFFIXES or image.suffix.lower() in (".txt", ".json"):
                _inside(path, str(image.relative_to(path)), str(image))
    return fmt


def read_for_ingest(path: str | Path, *, fmt: str = "auto", image_size: int = 32, max_caption_words: int = 20,
                    skip_bad: bool = False) -> ReadResult:
    """The records of a dataset, read by the project's loader after `check_confined` passed.

    Raises:
        VaultError: On a path leading out of the dataset.
        DataError: On anything the loader refuses (non-image bytes, bad captions, duplicate ids...).
    """
    try:
        fmt = check_confined(path, fmt)
    except OSError as exc:
        raise DataError(f"{path}: cannot read ({exc.strerror or exc})") from None
    return read_dataset(path, fmt=fmt, image_size=image_size, max_caption_words=max_caption_words,
                        skip_bad=skip_bad)
