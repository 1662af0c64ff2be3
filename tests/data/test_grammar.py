"""The caption grammar: canonical forms, paraphrases, the parser and attribute scoring."""

import math
from dataclasses import replace

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from simmim.data.grammar import (
    POSITIONS,
    ParsedCaption,
    attribute_matches,
    canonical_caption,
    count_distinct_scenes,
    paraphrases,
    parse_caption,
    vocabulary,
)
from simmim.data.records import COLOURS, MOTIONS, SHAPES, SIZES, Scene, SceneObject
from simmim.data.tokenizer import split_words
from simmim.errors import DataError


def obj(size: str, colour: str, shape: str, cell: int) -> SceneObject:
    return SceneObject(shape=shape, colour=colour, size=size, cell=cell)


RED_CIRCLE_TOP_LEFT = Scene((obj("small", "red", "circle", 0),))
PAIR = Scene((obj("small", "green", "triangle", 2), obj("small", "green", "triangle", 7)))
CIRCLE, SQUARE, DIAMOND = (
    ("small", "red", "circle"),
    ("large", "blue", "square"),
    ("large", "white", "diamond"),
)
# The circle is above the square (same column); beside it on the same row.
ABOVE = Scene((obj(*SQUARE, 7), obj(*CIRCLE, 1)))
BESIDE = Scene((obj(*SQUARE, 5), obj(*CIRCLE, 3)))
TRIPLE = Scene((obj(*CIRCLE, 8), obj(*DIAMOND, 0), obj(*CIRCLE, 4)))
CLIP = Scene((obj("large", "yellow", "square", 4),), motion="left")

attributes = st.tuples(st.sampled_from(SIZES), st.sampled_from(COLOURS), st.sampled_from(SHAPES))


@st.composite
def scenes(draw) -> Scene:
    if draw(st.booleans()):
        size, colour, shape = draw(attributes)
        return Scene(
            (obj(size, colour, shape, draw(st.integers(0, 8))),), motion=draw(st.sampled_from(MOTIONS))
        )
    cells = draw(st.lists(st.integers(0, 8), min_size=1, max_size=3, unique=True))
    if len(cells) > 1 and draw(st.booleans()):
        specs = [draw(attributes)] * len(cells)  # identical objects: the counting captions
    else:
        specs = [draw(attributes) for _ in cells]
    return Scene(tuple(obj(*spec, cell) for spec, cell in zip(specs, cells, strict=True)))


def test_canonical_forms():
    assert canonical_caption(RED_CIRCLE_TOP_LEFT) == "a small red circle at the top left"
    assert canonical_caption(CLIP) == "a large yellow square moving left"
    assert canonical_caption(PAIR) == "two small green triangles"
    assert canonical_caption(ABOVE) == "a small red circle above a large blue square"
    assert canonical_caption(BESIDE) == "a small red circle left of a large blue square"
    assert canonical_caption(TRIPLE) == "a large white diamond, a small red circle and a small red circle"
    three = Scene(tuple(obj("large", "red", "square", cell) for cell in (0, 4, 8)))
    assert canonical_caption(three) == "three large red squares"


def test_every_position_has_a_name():
    captions = [canonical_caption(Scene((obj("small", "red", "circle", cell),))) for cell in range(9)]
    assert [parse_caption(c).position for c in captions] == list(POSITIONS)


@settings(max_examples=150, deadline=None)
@given(scene=scenes(), seed=st.integers(0, 2**32 - 1))
def test_paraphrases_parse_to_the_canonical_meaning(scene, seed):
    canonical = canonical_caption(scene)
    meaning = parse_caption(canonical)
    assert meaning is not None
    alternatives = paraphrases(scene, 4, rng=np.random.default_rng(seed))
    assert len(set(alternatives)) == 4 and canonical not in alternatives
    for caption in alternatives:
        assert parse_caption(caption) == meaning, caption
    assert all(value is not False for value in attribute_matches(meaning, scene).values())


@settings(max_examples=100, deadline=None)
@given(scene=scenes())
def test_grammar_uses_only_its_vocabulary(scene):
    words = set(vocabulary())
    for caption in [canonical_caption(scene), *paraphrases(scene, 5)]:
        assert set(split_words(caption)) <= words, caption


def test_vocabulary_is_small():
    assert 35 <= len(vocabulary()) <= 60
    assert {"circles", "above", "below", "moving", ",", "centre"} <= set(vocabulary())


def test_paraphrases_are_deterministic_given_the_rng():
    first = paraphrases(TRIPLE, 4, rng=np.random.default_rng(7))
    assert first == paraphrases(TRIPLE, 4, rng=np.random.default_rng(7))
    assert paraphrases(TRIPLE, 4) == paraphrases(TRIPLE, 4)


def test_too_many_paraphrases_or_bad_scenes_raise():
    with pytest.raises(DataError, match="paraphrases"):
        paraphrases(ABOVE, 50)
    with pytest.raises(DataError):
        canonical_caption(Scene(()))
    with pytest.raises(DataError):
        canonical_caption(Scene(tuple(obj("small", "red", "circle", cell) for cell in range(4))))
    with pytest.raises(DataError, match="distinct cells"):
        canonical_caption(Scene((obj("small", "red", "circle", 1), obj("large", "red", "circle", 1))))
    with pytest.raises(DataError):
        canonical_caption(Scene((obj("small", "orange", "circle", 1),)))


def test_relations_are_normalised():
    above = parse_caption("a small red circle above a large blue square")
    assert above.relation == (CIRCLE, "above", SQUARE)
    assert parse_caption("a large blue square below a small red circle") == above
    assert parse_caption("there is a large blue square below a small red circle") == above
    left = parse_caption("a small red circle left of a large blue square")
    assert parse_caption("a large blue square is right of a small red circle") == left
    assert left != above


def test_parser_accepts_the_documented_paraphrases():
    assert parse_caption("there is a small red circle in the top left") == parse_caption(
        "a small red circle at the top left"
    )
    assert parse_caption("A red circle, small, at the top left.") == parse_caption(
        "a small red circle at the top left"
    )
    assert parse_caption("2 green triangles, both small") == parse_caption("two small green triangles")
    assert parse_caption("a pair of small green triangles").count == 2
    triple = parse_caption("a small red circle, a large white diamond and a small red circle")
    assert triple == parse_caption(canonical_caption(TRIPLE))
    assert triple.objects == (DIAMOND, CIRCLE, CIRCLE)


@pytest.mark.parametrize(
    "text",
    [
        "",
        "hello world",
        "a small red circle at the top middle",
        "a tiny red circle at the top left",
        "a small red circle at the top left and more",
        "two small green triangles, all small",  # quantifier disagrees with the count
        "a small red circle above a small red circle",  # identical objects are counted, not related
        "a red circle, a red circle and a red circle",
        "three small red circles, all small!!",
        "moving left",
    ],
)
def test_junk_does_not_parse(text):
    assert parse_caption(text) is None


@settings(max_examples=300, deadline=None)
@given(st.text())
def test_parser_never_raises(text):
    result = parse_caption(text)
    assert result is None or isinstance(result, ParsedCaption)


def test_parse_of_non_text_is_none():
    assert parse_caption(None) is None  # type: ignore[arg-type]


def matches(caption: str, scene: Scene) -> dict:
    return attribute_matches(parse_caption(caption), scene)


def test_attribute_matches_single_object():
    right = matches("a small red circle at the top left", RED_CIRCLE_TOP_LEFT)
    assert right == {
        "count": True, "colour": True, "shape": True, "size": True,
        "position": True, "relation": None, "motion": None,
    }  # fmt: skip
    wrong = matches("a large red square at the centre", RED_CIRCLE_TOP_LEFT)
    assert wrong == {
        "count": True, "colour": True, "shape": False, "size": False,
        "position": False, "relation": None, "motion": None,
    }  # fmt: skip
    assert matches("two small red circles", RED_CIRCLE_TOP_LEFT)["count"] is False


def test_attribute_matches_relation():
    assert matches("a large blue square below a small red circle", ABOVE)["relation"] is True
    assert matches("a small red circle below a large blue square", ABOVE)["relation"] is False
    assert matches("a small red circle left of a large blue square", ABOVE)["relation"] is False
    assert matches("a small red circle left of a large blue square", BESIDE)["relation"] is True
    wrong_colour = matches("a small green circle above a large blue square", ABOVE)
    assert (
        wrong_colour["colour"] is False
        and wrong_colour["relation"] is False
        and wrong_colour["shape"] is True
    )


def test_attribute_matches_counts_and_lists():
    assert set(matches("two small green triangles", PAIR).values()) == {True, None}
    assert matches("three small green triangles", PAIR)["count"] is False
    assert matches("two small green circles", PAIR)["shape"] is False
    reordered = "a small red circle, a small red circle and a large white diamond"
    assert set(matches(reordered, TRIPLE).values()) == {True, None}
    assert (
        matches("a small red circle, a large red circle and a large white diamond", TRIPLE)["size"] is False
    )


def test_attribute_matches_motion():
    assert matches("the large yellow square moves left", CLIP)["motion"] is True
    wrong = matches("a large yellow square moving up", CLIP)
    assert wrong["motion"] is False and wrong["position"] is None and wrong["colour"] is True
    assert matches("a large yellow square at the centre", CLIP)["motion"] is False


def test_unparseable_caption_is_wrong_on_every_applicable_attribute():
    assert attribute_matches(None, ABOVE) == {
        "count": False, "colour": False, "shape": False, "size": False,
        "position": None, "relation": False, "motion": None,
    }  # fmt: skip
    assert attribute_matches(None, CLIP)["motion"] is False
    assert attribute_matches(None, RED_CIRCLE_TOP_LEFT)["position"] is False


def test_count_distinct_scenes():
    per_object = len(SHAPES) * len(COLOURS) * len(SIZES)
    expected = sum(math.comb(9, k) * per_object**k for k in (1, 2, 3))
    assert count_distinct_scenes() == expected > 100_000


def test_moved_object_changes_only_position():
    moved = Scene((replace(RED_CIRCLE_TOP_LEFT.objects[0], cell=8),))
    result = attribute_matches(parse_caption(canonical_caption(RED_CIRCLE_TOP_LEFT)), moved)
    assert result["position"] is False and result["colour"] and result["shape"] and result["size"]
