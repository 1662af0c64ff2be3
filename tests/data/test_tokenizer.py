"""The word tokenizer: ids, round trips, batches and persistence."""

import json

import numpy as np
import pytest

from simmim.data.digits import digit_captions
from simmim.data.synthetic import generate
from simmim.data.tokenizer import WordTokenizer, split_words
from simmim.errors import DataError

CAPTIONS = [
    "a small red circle at the top left",
    "a red circle, small, at the top left",
    "two large blue squares",
]


@pytest.fixture
def tokenizer() -> WordTokenizer:
    return WordTokenizer.fit(CAPTIONS)


def test_split_words_separates_punctuation_and_lowercases():
    assert split_words("A Red circle, small.") == ["a", "red", "circle", ",", "small", "."]


def test_special_tokens_have_fixed_ids(tokenizer):
    assert (tokenizer.pad_id, tokenizer.bos_id, tokenizer.eos_id, tokenizer.unk_id) == (0, 1, 2, 3)
    assert tokenizer.words[:4] == ["<pad>", "<bos>", "<eos>", "<unk>"]
    expected_words = {word for caption in CAPTIONS for word in split_words(caption)}
    assert tokenizer.vocab_size == 4 + len(expected_words)


def test_fit_is_independent_of_text_order():
    assert WordTokenizer.fit(CAPTIONS).words == WordTokenizer.fit(CAPTIONS[::-1]).words


def test_encode_decode_round_trip(tokenizer):
    for caption in CAPTIONS:
        ids = tokenizer.encode(caption)
        assert min(ids) >= 4
        assert tokenizer.decode(ids) == caption


def test_unknown_words_map_to_unk(tokenizer):
    assert tokenizer.encode("a purple circle") == [
        tokenizer.encode("a")[0],
        tokenizer.unk_id,
        tokenizer.encode("circle")[0],
    ]
    assert tokenizer.decode(tokenizer.encode("a purple circle")) == "a <unk> circle"


def test_min_count_drops_rare_words():
    rare = WordTokenizer.fit(CAPTIONS, min_count=2)
    assert "red" in rare.words and "two" not in rare.words


def test_decode_stops_at_eos_and_skips_pad_and_bos(tokenizer):
    words = tokenizer.encode("a small red circle")
    ids = [tokenizer.bos_id, *words[:2], tokenizer.pad_id, *words[2:], tokenizer.eos_id, *words]
    assert tokenizer.decode(ids) == "a small red circle"


def test_encode_batch_layout(tokenizer):
    batch = tokenizer.encode_batch(["two large blue squares", "a small red circle at the top left"], 12)
    assert batch.dtype == np.int64 and batch.shape == (2, 12)
    first = [tokenizer.bos_id, *tokenizer.encode("two large blue squares"), tokenizer.eos_id]
    assert batch[0, :6].tolist() == first
    assert (batch[0, 6:] == tokenizer.pad_id).all()
    assert tokenizer.decode(batch[1]) == "a small red circle at the top left"


def test_encode_batch_overflow_names_the_text(tokenizer):
    with pytest.raises(DataError, match="a small red circle at the top left.*context_length=9"):
        tokenizer.encode_batch(["two large blue squares", "a small red circle at the top left"], 9)
    assert tokenizer.encode_batch(["a small red circle at the top left"], 10).shape == (1, 10)


def test_save_load_round_trip(tokenizer, tmp_path):
    path = tmp_path / "tokenizer.json"
    tokenizer.save(path)
    loaded = WordTokenizer.load(path)
    assert loaded.words == tokenizer.words
    assert loaded.encode(CAPTIONS[1]) == tokenizer.encode(CAPTIONS[1])
    assert WordTokenizer.from_dict(tokenizer.to_dict()).words == tokenizer.words


@pytest.mark.parametrize(
    "content",
    [
        "not json",
        json.dumps({"format": "other"}),
        json.dumps({"format": "simmim-word-tokenizer", "version": 1}),
    ],
)
def test_load_rejects_bad_files_naming_them(tmp_path, content):
    path = tmp_path / "broken.json"
    path.write_text(content)
    with pytest.raises(DataError, match="broken.json"):
        WordTokenizer.load(path)


def test_load_missing_file(tmp_path):
    with pytest.raises(DataError, match="missing.json"):
        WordTokenizer.load(tmp_path / "missing.json")


def test_vocabulary_rejects_duplicates_and_specials():
    with pytest.raises(DataError):
        WordTokenizer(["red", "red"])
    with pytest.raises(DataError):
        WordTokenizer(["<pad>"])


def test_generated_captions_survive_a_round_trip():
    captions = [c for r in generate(200, seed=0) + generate(20, seed=0, kind="video") for c in r.captions]
    captions += list(digit_captions(7, np.random.default_rng(0)))
    tokenizer = WordTokenizer.fit(captions)
    assert all(tokenizer.decode(tokenizer.encode(caption)) == caption for caption in captions)
