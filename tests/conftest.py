import pytest

from simmim.config import Config


@pytest.fixture
def tiny_config() -> Config:
    """The tiny model on a small synthetic set: a few seconds per run."""
    return Config.from_dict({
        "model": {"size": "tiny"},
        "data": {"train_size": 400, "val_size": 60, "test_size": 80, "video_train_size": 40, "video_test_size": 20},
        "train": {"steps": 6, "batch_size": 16, "video_batch_size": 4, "log_every": 1, "checkpoint_every": 3,
                  "warmup_steps": 2},
    })


class SimulatedCrash(Exception):
    """Raised from a training run's `on_log` callback: the run dies as a killed job would."""


@pytest.fixture
def crash_at():
    """`crash_at(step)`: an `on_log` callback that kills the run when it logs `step`
    (`crash_at.error` is the exception to expect)."""

    def make(step: int):
        def on_log(record: dict) -> None:
            if record["step"] == step:
                raise SimulatedCrash

        return on_log

    make.error = SimulatedCrash
    return make
