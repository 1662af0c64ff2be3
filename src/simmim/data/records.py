"""The record: one unit of (personal) data as every reader, writer and dataset sees it."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

SHAPES = ("circle", "square", "triangle", "diamond")
COLOURS = ("red", "green", "blue", "yellow", "purple", "white")
SIZES = ("small", "large")
# Cells of the 3x3 grid, row-major: (row, col) -> index row * 3 + col.
GRID = 3
MOTIONS = ("left", "right", "up", "down")


@dataclass(frozen=True)
class SceneObject:
    """One object of a synthetic scene."""

    shape: str
    colour: str
    size: str
    cell: int  # 0..8, row-major in the 3x3 grid


@dataclass(frozen=True)
class Scene:
    """Ground truth of a synthetic image or clip; None for real data."""

    objects: tuple[SceneObject, ...]
    motion: str | None = None  # clips only: direction of movement of the single object


@dataclass
class Record:
    """One example.

    Exactly one of ``image`` (H x W x 3 uint8) and ``frames`` (T x H x W x 3 uint8) is set.
    ``captions`` holds every reference caption; the first is the canonical one.
    ``subject_id`` names the person who owns the record (the privacy unit later).
    """

    record_id: str
    subject_id: str
    captions: tuple[str, ...]
    image: np.ndarray | None = None
    frames: np.ndarray | None = None
    scene: Scene | None = None
    source: str = ""  # where it came from (file, shard member), for error messages
    extra: dict = field(default_factory=dict)

    @property
    def caption(self) -> str:
        return self.captions[0]

    @property
    def is_video(self) -> bool:
        return self.frames is not None
