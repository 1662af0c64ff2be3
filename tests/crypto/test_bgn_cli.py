"""`simmim he keygen --scheme bgn` and `simmim he match` in their own processes, checked against numpy."""

import subprocess
import sys

import numpy as np
import pytest

from simmim.crypto.commands import read_bgn_private_key


def simmim(*args):
    return subprocess.run([sys.executable, "-m", "simmim.cli", *map(str, args)], capture_output=True, text=True,
                          timeout=300)


def printed_scores(stdout: str) -> dict[int, float]:
    rows = [line.split() for line in stdout.splitlines()[2:]]
    return {int(index): float(score) for _, index, score in rows}


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    root = tmp_path_factory.mktemp("bgn_cli")
    rng = np.random.default_rng(3)
    gallery = rng.normal(size=(4, 16))
    gallery /= np.linalg.norm(gallery, axis=1, keepdims=True)
    query = gallery[2] + 0.3 * rng.normal(size=16)
    query /= np.linalg.norm(query)
    np.save(root / "query.npy", query)
    np.save(root / "gallery.npy", gallery)
    keys = root / "keys"
    made = simmim("he", "keygen", "--scheme", "bgn", "--out", keys)
    assert made.returncode == 0, made.stderr
    return root, keys, query, gallery


def test_keygen_writes_a_private_key_only_its_owner_reads(files):
    _, keys, _, _ = files
    assert (keys / "bgn_private.key").stat().st_mode & 0o777 == 0o600
    assert read_bgn_private_key(keys).public_key is not None
    again = simmim("he", "keygen", "--scheme", "bgn", "--out", keys)
    assert again.returncode == 2 and "refusing to overwrite" in again.stderr


@pytest.mark.parametrize("metric", ["inner-product", "squared-distance"])
def test_match_round_trip_gives_the_plaintext_scores_and_ranking(files, metric):
    root, keys, query, gallery = files
    result = simmim("he", "match", root / "query.npy", root / "gallery.npy", "--keys", keys, "--metric", metric,
                    "--fraction-bits", "12", "--window-bits", "27", "--top", "4")
    assert result.returncode == 0, result.stderr
    scores = printed_scores(result.stdout)
    expected = gallery @ query if metric == "inner-product" else np.sum((gallery - query) ** 2, axis=1)
    for index, score in scores.items():
        assert score == pytest.approx(expected[index], abs=5e-3)
    assert list(scores) == list(np.argsort(-expected if metric == "inner-product" else expected))
    assert next(iter(scores)) == 2  # the query was made near gallery row 2
    assert "bytes: query" in result.stdout


def test_clear_errors_without_traceback(files, tmp_path):
    root, keys, _, _ = files
    missing = simmim("he", "match", root / "query.npy", root / "gallery.npy", "--keys", tmp_path / "none")
    assert missing.returncode == 2 and "simmim he keygen --scheme bgn" in missing.stderr
    budget = simmim("he", "match", root / "query.npy", root / "gallery.npy", "--keys", keys, "--metric",
                    "squared-distance", "--fraction-bits", "15", "--window-bits", "31")
    assert budget.returncode == 2 and "lower fraction_bits or raise window_bits" in budget.stderr
    np.save(tmp_path / "short.npy", np.ones((2, 3)) / 2)
    shape = simmim("he", "match", root / "query.npy", tmp_path / "short.npy", "--keys", keys)
    assert shape.returncode == 2 and "gallery rows have 3 values, the query 16" in shape.stderr
    scheme = simmim("he", "keygen", "--scheme", "rsa", "--out", tmp_path / "k")
    assert scheme.returncode == 2 and "unknown scheme" in scheme.stderr
    for result in (missing, budget, shape, scheme):
        assert "Traceback" not in result.stderr
