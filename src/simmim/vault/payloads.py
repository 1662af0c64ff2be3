"""A record as the bytes the vault encrypts, and back; every field checked before anything is stored.

Layout: 4-byte big-endian header length, a UTF-8 JSON header (ids, captions, kind, pixel shape,
source, scene, extra), then the raw uint8 pixels (image: H x W x 3, video: T x H x W x 3).
Everything personal (ids included) is inside, so it is all encrypted and all shredded together.
"""

from __future__ import annotations

import json
import struct
import unicodedata

import numpy as np

from simmim.data.records import Record, Scene, SceneObject
from simmim.errors import VaultError

FORMAT_VERSION = 1
MAX_ID_CHARS = 200
MAX_CAPTION_CHARS = 2000
MAX_CAPTIONS = 64
_HEADER = struct.Struct(">I")


def check_id(value: object, field: str, where: str) -> str:
    """A record or subject id: non-empty text of at most 200 characters, without control characters."""
    if not isinstance(value, str):
        raise VaultError(f"{where}: {field} must be text, got {type(value).__name__}")
    if not value or value != value.strip():
        raise VaultError(f"{where}: {field} {value!r} is empty or has surrounding spaces")
    if len(value) > MAX_ID_CHARS:
        raise VaultError(f"{where}: {field} has {len(value)} characters, more than {MAX_ID_CHARS}")
    # isprintable() is False for every control, format or surrogate character (and for some harmless
    # ones, like a no-break space), so only those ids need the character-by-character check.
    if not value.isprintable() and any(unicodedata.category(char) in ("Cc", "Cf", "Cs") for char in value):
        raise VaultError(f"{where}: {field} {value!r} holds control or format characters")
    return value


def _check_captions(record: Record, where: str) -> list[str]:
    captions = record.captions
    if isinstance(captions, str) or not isinstance(captions, (tuple, list)) or not captions:
        raise VaultError(f"{where}: field captions must be a non-empty list of texts")
    if len(captions) > MAX_CAPTIONS:
        raise VaultError(f"{where}: field captions has {len(captions)} entries, more than {MAX_CAPTIONS}")
    for caption in captions:
        if not isinstance(caption, str) or not caption.strip():
            raise VaultError(f"{where}: field captions holds {caption!r}, not a non-empty text")
        if len(caption) > MAX_CAPTION_CHARS:
            raise VaultError(f"{where}: a caption has {len(caption)} characters, more than {MAX_CAPTION_CHARS}")
        if "\x00" in caption:
            raise VaultError(f"{where}: a caption holds a NUL character")
    return list(captions)


def _pixels(record: Record, where: str) -> tuple[str, np.ndarray]:
    if (record.image is None) == (record.frames is None):
        raise VaultError(f"{where}: exactly one of fields image and frames must be set")
    field, value, rank = ("image", record.image, 3) if record.image is not None else ("frames", record.frames, 4)
    expected = "an H x W x 3" if rank == 3 else "a T x H x W x 3"
    if not isinstance(value, np.ndarray):
        raise VaultError(f"{where}: field {field} must be {expected} uint8 array, got {type(value).__name__} "
                         f"(encoded image bytes are read with `ingest PATH`, which decodes them)")
    if value.dtype != np.uint8 or value.ndim != rank or value.shape[-1] != 3 or 0 in value.shape:
        raise VaultError(f"{where}: field {field} must be {expected} uint8 array, got shape {value.shape} "
                         f"dtype {value.dtype}")
    return ("image" if rank == 3 else "video"), value


def _scene_to_json(scene: Scene | None) -> dict | None:
    if scene is None:
        return None
    objects = [{"shape": o.shape, "colour": o.colour, "size": o.size, "cell": o.cell} for o in scene.objects]
    return {"objects": objects, "motion": scene.motion}


def _scene_from_json(data: dict | None) -> Scene | None:
    if data is None:
        return None
    return Scene(objects=tuple(SceneObject(**o) for o in data["objects"]), motion=data["motion"])


def encode_record(record: Record, *, max_bytes: int) -> tuple[str, bytes]:
    """Checks a record and returns its kind ("image" or "video") and payload bytes.

    Raises:
        VaultError: Naming the record and the field that is wrong, or the size over ``max_bytes``.
    """
    where = f"record {getattr(record, 'record_id', '?')!r}"
    if not isinstance(record, Record):
        raise VaultError(f"expected a Record, got {type(record).__name__}")
    check_id(record.record_id, "record_id", "a record")
    check_id(record.subject_id, "subject_id", where)
    captions = _check_captions(record, where)
    kind, pixels = _pixels(record, where)
    header = {"v": FORMAT_VERSION, "record_id": record.record_id, "subject_id": record.subject_id,
              "captions": captions, "kind": kind, "shape": list(pixels.shape), "source": str(record.source or ""),
              "scene": _scene_to_json(record.scene), "extra": record.extra or {}}
    try:
        head = json.dumps(header, ensure_ascii=False, allow_nan=False).encode("utf-8")
    except (TypeError, ValueError) as exc:
        raise VaultError(f"{where}: field extra must hold JSON values only ({exc})") from None
    size = _HEADER.size + len(head) + pixels.nbytes
    if size > max_bytes:
        raise VaultError(f"{where}: payload is {size} bytes, over the vault's cap of {max_bytes} bytes")
    return kind, _HEADER.pack(len(head)) + head + np.ascontiguousarray(pixels).tobytes()


def decode_record(payload: bytes, what: str) -> Record:
    """The record a payload holds (pixels in a fresh writable array)."""
    try:
        (length,) = _HEADER.unpack_from(payload)
        header = json.loads(payload[_HEADER.size:_HEADER.size + length].decode("utf-8"))
        shape = tuple(header["shape"])
        pixels = np.frombuffer(payload, dtype=np.uint8, offset=_HEADER.size + length).reshape(shape).copy()
    except (struct.error, ValueError, KeyError, UnicodeDecodeError) as exc:
        raise VaultError(f"{what}: decrypted payload is malformed ({exc})") from None
    media = {"image": pixels} if header["kind"] == "image" else {"frames": pixels}
    return Record(record_id=header["record_id"], subject_id=header["subject_id"], captions=tuple(header["captions"]),
                  scene=_scene_from_json(header["scene"]), source=header["source"], extra=header["extra"], **media)
