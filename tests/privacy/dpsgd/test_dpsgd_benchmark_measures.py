"""The two measures `benchmarks/dpsgd.py` reports beside its medians: the live-bytes peak (heap
fragmentation told apart from the tensors' own memory) and the round-by-round time ratio."""

from __future__ import annotations

import importlib.util
import platform
import sys
import time
from pathlib import Path

import pytest
import torch

SCRIPT = Path(__file__).resolve().parents[3] / "benchmarks" / "dpsgd.py"


@pytest.fixture(scope="module")
def bench():
    spec = importlib.util.spec_from_file_location("dpsgd_benchmark", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # its dataclasses look their module up there
    try:
        spec.loader.exec_module(module)
        yield module
    finally:
        del sys.modules[spec.name]


def test_live_peak_catches_a_tensor_freed_inside_the_block(bench):
    on_glibc = platform.libc_ver()[0] == "glibc"
    with bench.LiveHeapPeak() as live:
        before = live.in_use_mib()
        if not on_glibc:
            assert before is None  # no glibc malloc to ask: the benchmark prints "-", not a number
            return
        block = torch.ones(64 * 2**20 // 4)  # 64 MiB, alive until the sampler has seen it (or 5 s)
        deadline = time.monotonic() + 5
        while live.peak_mib - before < 64 and time.monotonic() < deadline:
            time.sleep(0.001)
        del block
        after_free = live.in_use_mib()
    assert live.peak_mib - before >= 64
    assert after_free - before < 8  # and the bytes in use drop again once it is freed


def test_round_by_round_ratio_pairs_each_round_with_its_own_baseline(bench):
    # The machine's speed moves from round to round (baseline 2.0, 1.0, 4.0, ...); each round's
    # ratio is taken against its own baseline: 1.2, 1.5, 1.1, 1.3, 1.4.
    base = [2.0, 1.0, 4.0, 1.0, 0.5]
    ours = [2.4, 1.5, 4.4, 1.3, 0.7]
    paired = bench._paired_ratio(ours, base)
    assert paired["median"] == pytest.approx(1.3)
    assert paired["iqr"] == pytest.approx([1.15, 1.45])  # quartiles of the five ratios
