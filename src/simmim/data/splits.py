"""From a data config to train/val/test splits of records, whatever the source.

Synthetic data comes with its own splits (including `test_unseen`, attribute combinations never
seen in training). Data a user brings is split by subject, with a keyed hash of the subject id,
so that all of one person's records fall in the same split; clips (a vault may hold them) go to
the clip splits of their person's split.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field

from simmim.config import DataConfig, VaultSection
from simmim.data import digits, formats, synthetic
from simmim.data.records import Record


@dataclass
class Splits:
    train: list[Record]
    val: list[Record]
    test: list[Record]
    test_unseen: list[Record] = field(default_factory=list)
    video_train: list[Record] = field(default_factory=list)
    video_test: list[Record] = field(default_factory=list)
    skipped: list = field(default_factory=list)  # formats.BadRecord, when skip_bad is set
    vault: dict | None = None  # the vault release the records came from (snapshot id, subjects hash, ...)

    def fingerprint(self) -> str:
        """SHA-256 over the training records (ids, captions, pixels): names the data a model saw."""
        digest = hashlib.sha256()
        for record in self.train + self.video_train:
            digest.update(record.record_id.encode())
            digest.update("\x1f".join(record.captions).encode())
            pixels = record.image if record.image is not None else record.frames
            digest.update(pixels.tobytes())
        return digest.hexdigest()

    def all_captions(self) -> list[str]:
        return [c for part in (self.train, self.video_train) for record in part for c in record.captions]


def subject_split(subject_id: str, key: bytes = b"simmim-split") -> str:
    """80/10/10 train/val/test by a keyed hash of the subject id (stable across runs and machines)."""
    bucket = hashlib.blake2b(subject_id.encode(), key=key, digest_size=8).digest()[0] % 10
    return "train" if bucket < 8 else ("val" if bucket == 8 else "test")


def build_splits(cfg: DataConfig, vault: VaultSection | None = None) -> Splits:
    """Train/val/test records for a data config; `vault` says where `source = "vault"` reads."""
    if cfg.source == "synthetic":
        def make(n, split, kind="image"):
            return synthetic.generate(n, seed=cfg.seed, split=split, image_size=cfg.image_size, kind=kind,
                                      frames=cfg.frames, max_objects=cfg.max_objects) if n else []
        return Splits(
            train=make(cfg.train_size, "train"), val=make(cfg.val_size, "val"), test=make(cfg.test_size, "test"),
            test_unseen=make(cfg.test_size, "test_unseen"),
            video_train=make(cfg.video_train_size, "train", "video"),
            video_test=make(cfg.video_test_size, "test", "video"),
        )
    lineage = None
    if cfg.source == "digits":
        records, skipped = digits.load_digits_records(image_size=cfg.image_size, seed=cfg.seed), []
    elif cfg.source == "vault":
        from simmim.vault.training import release_for_training

        released = release_for_training(vault or VaultSection())
        records, skipped, lineage = released.records, [], released.lineage
    else:
        result = formats.read_dataset(cfg.source, fmt=cfg.format, image_size=cfg.image_size,
                                      max_caption_words=cfg.max_caption_words, skip_bad=cfg.skip_bad)
        records, skipped = result.records, result.skipped
    parts: dict[str, list[Record]] = {"train": [], "val": [], "test": [], "video_train": [], "video_test": []}
    for record in records:
        split = subject_split(record.subject_id)
        if record.is_video:  # there is no clip validation set: held-out people's clips are all test clips
            split = "video_train" if split == "train" else "video_test"
        parts[split].append(record)
    return Splits(**parts, skipped=skipped, vault=lineage)
