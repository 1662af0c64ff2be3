"""The archive a subject gets on an access request: everything stored about them, decrypted.

A zip file with ``subject.json`` (ids, consent history and current state, every record's ids,
captions, scene, source and dates, the snapshots and model checkpoints that included the
subject) and the pixels as PNG: ``records/<n>.png`` for images, ``records/<n>/frame-<t>.png``
for clips. File names are numbers, never ids, so no id can steer where a file goes. The archive
is written straight to its destination; nothing else touches the disk.
"""

from __future__ import annotations

import io
import json
import os
import zipfile
from pathlib import Path

import numpy as np
from PIL import Image

from simmim.data.records import Record
from simmim.errors import VaultError

ARCHIVE_FORMAT = "simmim-vault-subject-export/v1"


def _png(pixels: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format="PNG")
    return buffer.getvalue()


def write_archive(out: str | Path, manifest: dict, records: list[tuple[Record, dict]]) -> Path:
    """Writes the archive; ``records`` pairs each decrypted record with its stored metadata.

    Raises:
        VaultError: If ``out`` exists (an export is never overwritten) or cannot be written.
    """
    out = Path(out)
    entries = []
    try:
        fd = os.open(out, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        raise VaultError(f"{out} exists; an export is never written over another file") from None
    except OSError as exc:
        raise VaultError(f"cannot write the export to {out}: {exc.strerror or exc}") from None
    with os.fdopen(fd, "wb") as handle, zipfile.ZipFile(handle, "w", compression=zipfile.ZIP_DEFLATED) as archive:
        for number, (record, meta) in enumerate(records, start=1):
            if record.image is not None:
                files = [f"records/{number:05d}.png"]
                archive.writestr(files[0], _png(record.image))
            else:
                files = [f"records/{number:05d}/frame-{t:03d}.png" for t in range(len(record.frames))]
                for name, frame in zip(files, record.frames, strict=True):
                    archive.writestr(name, _png(frame))
            scene = None
            if record.scene is not None:
                scene = {"objects": [vars(o) for o in record.scene.objects], "motion": record.scene.motion}
            entries.append({**meta, "record_id": record.record_id, "captions": list(record.captions),
                            "source": record.source, "scene": scene, "extra": record.extra, "files": files})
        document = {"format": ARCHIVE_FORMAT, **manifest, "records": entries}
        archive.writestr("subject.json", json.dumps(document, indent=1, ensure_ascii=False, default=str) + "\n")
    return out
