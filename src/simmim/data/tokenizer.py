"""A word-level tokenizer: small closed vocabularies (synthetic captions, digits) need nothing more."""

from __future__ import annotations

import json
import re
from collections import Counter
from collections.abc import Iterable, Sequence
from pathlib import Path

import numpy as np

from simmim.errors import DataError

PAD, BOS, EOS, UNK = "<pad>", "<bos>", "<eos>", "<unk>"
SPECIALS = (PAD, BOS, EOS, UNK)

_TOKEN = re.compile(r"\w+|[^\w\s]")
_PUNCTUATION = re.compile(r"[^\w\s]")
_FORMAT_NAME = "simmim-word-tokenizer"
_FORMAT_VERSION = 1


def split_words(text: str) -> list[str]:
    """Lowercases ``text`` and splits it into words and single punctuation marks.

    Args:
        text: Any string.

    Returns:
        The tokens, e.g. ``"A red circle, small"`` -> ``["a", "red", "circle", ",", "small"]``.
    """
    return _TOKEN.findall(text.lower())


class WordTokenizer:
    """Maps words and punctuation marks to ids; ids 0-3 are ``<pad>``, ``<bos>``, ``<eos>``, ``<unk>``.

    Args:
        words: The vocabulary without the special tokens, in id order (ids start at 4).

    Raises:
        DataError: If a word repeats, is a special token, or is not a single token of ``split_words``.
    """

    pad_id = 0
    bos_id = 1
    eos_id = 2
    unk_id = 3

    def __init__(self, words: Iterable[str]) -> None:
        self._words: list[str] = list(SPECIALS)
        self._ids: dict[str, int] = {word: i for i, word in enumerate(SPECIALS)}
        for word in words:
            if word in self._ids:
                raise DataError(f"tokenizer vocabulary: word {word!r} appears twice or is a special token")
            if split_words(word) != [word]:
                raise DataError(f"tokenizer vocabulary: {word!r} is not a single lowercase word or mark")
            self._ids[word] = len(self._words)
            self._words.append(word)

    @classmethod
    def fit(cls, texts: Iterable[str], min_count: int = 1) -> WordTokenizer:
        """Builds the vocabulary from ``texts``.

        Args:
            texts: Training captions.
            min_count: Words seen fewer times map to ``<unk>``.

        Returns:
            A tokenizer whose words are sorted alphabetically, so equal inputs give equal ids
            whatever their order.
        """
        counts = Counter(word for text in texts for word in split_words(text))
        return cls(sorted(word for word, count in counts.items() if count >= min_count))

    @property
    def vocab_size(self) -> int:
        """Number of ids, special tokens included."""
        return len(self._words)

    @property
    def words(self) -> list[str]:
        """Every token in id order, special tokens first."""
        return list(self._words)

    def encode(self, text: str) -> list[int]:
        """Returns the ids of the words of ``text``, without special tokens; unknown words give ``unk_id``."""
        return [self._ids.get(word, self.unk_id) for word in split_words(text)]

    def decode(self, ids: Iterable[int]) -> str:
        """Turns ids back into text: stops at ``<eos>``, skips ``<pad>`` and ``<bos>``.

        Punctuation is attached to the preceding word, so ``decode(encode(t))`` gives back ``t``
        (lowercased, whitespace normalised) when every word of ``t`` is known.
        """
        text = ""
        for token_id in ids:
            token_id = int(token_id)
            if token_id == self.eos_id:
                break
            if token_id in (self.pad_id, self.bos_id):
                continue
            word = self._words[token_id] if 0 <= token_id < len(self._words) else UNK
            separator = "" if not text or _PUNCTUATION.fullmatch(word) else " "
            text += separator + word
        return text

    def encode_batch(self, texts: Sequence[str], context_length: int) -> np.ndarray:
        """Encodes texts as ``<bos> words <eos> <pad>...`` rows.

        Args:
            texts: The captions.
            context_length: Length of every row.

        Returns:
            An int64 array of shape (len(texts), context_length).

        Raises:
            DataError: If a text needs more than ``context_length`` tokens; the message names it.
        """
        batch = np.full((len(texts), context_length), self.pad_id, dtype=np.int64)
        for row, text in enumerate(texts):
            ids = [self.bos_id, *self.encode(text), self.eos_id]
            if len(ids) > context_length:
                raise DataError(
                    f"caption {text!r} needs {len(ids)} tokens with <bos> and <eos>, "
                    f"more than context_length={context_length}"
                )
            batch[row, : len(ids)] = ids
        return batch

    def to_dict(self) -> dict:
        """A JSON-ready description from which ``from_dict`` rebuilds the same tokenizer."""
        return {"format": _FORMAT_NAME, "version": _FORMAT_VERSION, "words": self._words[len(SPECIALS) :]}

    @classmethod
    def from_dict(cls, data: dict) -> WordTokenizer:
        """Rebuilds a tokenizer from ``to_dict`` output.

        Raises:
            DataError: If ``data`` is not a tokenizer description of a known version.
        """
        if not isinstance(data, dict) or data.get("format") != _FORMAT_NAME:
            raise DataError("tokenizer description: not a simmim word tokenizer")
        if data.get("version") != _FORMAT_VERSION:
            version = data.get("version")
            raise DataError(f"tokenizer description: version {version!r} is not {_FORMAT_VERSION}")
        words = data.get("words")
        if not isinstance(words, list) or not all(isinstance(word, str) for word in words):
            raise DataError("tokenizer description: 'words' must be a list of strings")
        return cls(words)

    def save(self, path: str | Path) -> None:
        """Writes the tokenizer as JSON to ``path``."""
        Path(path).write_text(json.dumps(self.to_dict(), indent=1) + "\n", encoding="utf-8")

    @classmethod
    def load(cls, path: str | Path) -> WordTokenizer:
        """Reads a tokenizer written by ``save``.

        Raises:
            DataError: If the file is missing, not JSON or not a tokenizer; the message names the file.
        """
        try:
            data = json.loads(Path(path).read_text(encoding="utf-8"))
            return cls.from_dict(data)
        except (OSError, UnicodeDecodeError, json.JSONDecodeError, DataError) as error:
            raise DataError(f"{path}: cannot load tokenizer ({error})") from None
