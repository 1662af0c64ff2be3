"""The caption grammar of synthetic scenes: canonical captions, paraphrases, and the parser that reads both.

Captions come in five families, each a list of templates whose first entry is the canonical form:

* one object in a still image: ``a small red circle at the top left``
* one moving object in a clip: ``a small red circle moving up``
* two or three identical objects: ``two small green triangles``
* two different objects: ``a small red circle above a large blue square``
* three objects, not all identical: ``a small red circle, a large blue square and a small white diamond``

Generation and parsing share the same templates, so every caption the generator writes parses back
to the meaning of its scene.
"""

from __future__ import annotations

import itertools
import math
import re
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from simmim.data.records import COLOURS, GRID, MOTIONS, SHAPES, SIZES, Scene, SceneObject
from simmim.data.tokenizer import split_words
from simmim.errors import DataError

POSITIONS = (
    "top left", "top", "top right",
    "left", "centre", "right",
    "bottom left", "bottom", "bottom right",
)  # fmt: skip
MAX_OBJECTS = 3
ABOVE, LEFT_OF = "above", "left of"
# Swapping the two objects of a relation turns it into its inverse.
_INVERSE = {"above": "below", "left of": "right of"}
_NUMBERS = {2: ("two", "2", "a pair of"), 3: ("three", "3")}
_QUANTIFIERS = {2: "both", 3: "all"}

ObjectSpec = tuple[str, str, str]  # (size, colour, shape)

# Template fields and the words each can take; a field's kind is its name after the last "_".
_FIELD_VALUES = {
    "size": SIZES,
    "colour": COLOURS,
    "shape": SHAPES,
    "shapes": tuple(shape + "s" for shape in SHAPES),
    "pos": POSITIONS,
    "motion": MOTIONS,
    "num": tuple(word for words in _NUMBERS.values() for word in words),
    "quant": tuple(_QUANTIFIERS.values()),
    "rel": (*_INVERSE, *_INVERSE.values()),
}


def _expand(template: str) -> str:
    """Replaces the object macros {A}, {B}, {C} by ``a {x_size} {x_colour} {x_shape}``."""
    for name in "ABC":
        x = name.lower()
        template = template.replace(f"{{{name}}}", f"a {{{x}_size}} {{{x}_colour}} {{{x}_shape}}")
    return template


_STILL = (
    "a {size} {colour} {shape} at the {pos}",
    "there is a {size} {colour} {shape} at the {pos}",
    "a {size} {colour} {shape} in the {pos}",
    "there is a {size} {colour} {shape} in the {pos}",
    "a {colour} {shape}, {size}, at the {pos}",
    "the {size} {colour} {shape} is at the {pos}",
    "the {size} {colour} {shape} is in the {pos}",
    "at the {pos} there is a {size} {colour} {shape}",
    "in the {pos} there is a {size} {colour} {shape}",
)
_MOVING = (
    "a {size} {colour} {shape} moving {motion}",
    "there is a {size} {colour} {shape} moving {motion}",
    "a {colour} {shape}, {size}, moving {motion}",
    "the {size} {colour} {shape} is moving {motion}",
    "a {size} {colour} {shape} moves {motion}",
    "the {size} {colour} {shape} moves {motion}",
    "there is a {colour} {shape}, {size}, moving {motion}",
)
_COUNT = (
    "{num} {size} {colour} {shapes}",
    "there are {num} {size} {colour} {shapes}",
    "{num} {colour} {shapes}, {quant} {size}",
)
_RELATION = tuple(_expand(t) for t in ("{A} {rel} {B}", "{A} is {rel} {B}", "there is {A} {rel} {B}"))
_LIST = tuple(_expand(t) for t in ("{A}, {B} and {C}", "there are {A}, {B} and {C}"))


@dataclass(frozen=True)
class ParsedCaption:
    """The meaning of a caption.

    Attributes:
        objects: (size, colour, shape) of every object, sorted, so equal multisets compare equal.
        count: Number of objects.
        position: Position name of the single object of a still caption, else None.
        relation: (a, "above" | "left of", b) for two different objects, with "b below a" and
            "b right of a" normalised to this form; else None.
        motion: Direction of a clip caption, else None.
    """

    objects: tuple[ObjectSpec, ...]
    count: int
    position: str | None = None
    relation: tuple[ObjectSpec, str, ObjectSpec] | None = None
    motion: str | None = None


def _object(fields: dict[str, str], prefix: str = "") -> ObjectSpec:
    return fields[prefix + "size"], fields[prefix + "colour"], fields[prefix + "shape"]


def _meaning_still(fields: dict[str, str]) -> ParsedCaption:
    return ParsedCaption(objects=(_object(fields),), count=1, position=fields["pos"])


def _meaning_moving(fields: dict[str, str]) -> ParsedCaption:
    return ParsedCaption(objects=(_object(fields),), count=1, motion=fields["motion"])


def _meaning_count(fields: dict[str, str]) -> ParsedCaption | None:
    count = next(n for n, words in _NUMBERS.items() if fields["num"] in words)
    if "quant" in fields and fields["quant"] != _QUANTIFIERS[count]:
        return None  # "two ..., all small" is not a sentence of the grammar
    obj = (fields["size"], fields["colour"], fields["shapes"][:-1])
    return ParsedCaption(objects=(obj,) * count, count=count)


def _meaning_relation(fields: dict[str, str]) -> ParsedCaption | None:
    a, b, rel = _object(fields, "a_"), _object(fields, "b_"), fields["rel"]
    if a == b:
        return None  # identical objects are described by counting, not by a relation
    if rel not in _INVERSE:
        a, b = b, a
        rel = next(forward for forward, inverse in _INVERSE.items() if inverse == rel)
    return ParsedCaption(objects=tuple(sorted((a, b))), count=2, relation=(a, rel, b))


def _meaning_list(fields: dict[str, str]) -> ParsedCaption | None:
    objects = tuple(sorted(_object(fields, prefix) for prefix in ("a_", "b_", "c_")))
    if objects[0] == objects[-1]:
        return None  # three identical objects are described by counting
    return ParsedCaption(objects=objects, count=3)


_FIELD = re.compile(r"\{(\w+)\}")


def _compile(template: str) -> re.Pattern[str]:
    """A regex over space-joined ``split_words`` tokens that matches the template's sentences."""
    pieces = []
    for token in re.findall(r"\{\w+\}|\w+|[^\w\s]", template):
        field = _FIELD.fullmatch(token)
        if field:
            words = _FIELD_VALUES[field.group(1).rsplit("_", 1)[-1]]
            alternatives = "|".join(re.escape(" ".join(split_words(word))) for word in words)
            pieces.append(f"(?P<{field.group(1)}>{alternatives})")
        else:
            pieces.append(re.escape(token))
    return re.compile(" ".join(pieces))


_Meaning = Callable[[dict[str, str]], ParsedCaption | None]
_PARSERS: tuple[tuple[re.Pattern[str], _Meaning], ...] = tuple(
    (_compile(template), meaning)
    for templates, meaning in (
        (_STILL, _meaning_still),
        (_MOVING, _meaning_moving),
        (_COUNT, _meaning_count),
        (_RELATION, _meaning_relation),
        (_LIST, _meaning_list),
    )
    for template in templates
)


def position_name(cell: int) -> str:
    """The position name of grid cell ``cell`` (0..8, row-major)."""
    return POSITIONS[cell]


def _ordered(scene: Scene) -> list[SceneObject]:
    return sorted(scene.objects, key=lambda o: (o.cell, o.shape, o.colour, o.size))


def _check(scene: Scene) -> None:
    n = len(scene.objects)
    if scene.motion is not None and (n != 1 or scene.motion not in MOTIONS):
        raise DataError(f"scene {scene}: a clip needs exactly one object and a motion in {MOTIONS}")
    if not 1 <= n <= MAX_OBJECTS:
        raise DataError(f"scene {scene}: has {n} objects, the grammar describes 1 to {MAX_OBJECTS}")
    for obj in scene.objects:
        if obj.shape not in SHAPES or obj.colour not in COLOURS or obj.size not in SIZES:
            raise DataError(f"scene {scene}: object {obj} has an attribute outside the grammar")
    cells = [obj.cell for obj in scene.objects]
    if len(set(cells)) != n or not all(0 <= cell < GRID * GRID for cell in cells):
        raise DataError(f"scene {scene}: objects need distinct cells in 0..{GRID * GRID - 1}")


def _fields(obj: SceneObject, prefix: str = "") -> dict[str, str]:
    return {prefix + "size": obj.size, prefix + "colour": obj.colour, prefix + "shape": obj.shape}


def _variants(scene: Scene) -> list[str]:
    """Every caption of the scene's family, canonical first, without duplicates."""
    objects = _ordered(scene)
    first = objects[0]
    if scene.motion is not None:
        captions = [t.format(**_fields(first), motion=scene.motion) for t in _MOVING]
    elif len(objects) == 1:
        captions = [t.format(**_fields(first), pos=position_name(first.cell)) for t in _STILL]
    elif all(_spec(o) == _spec(first) for o in objects):
        n = len(objects)
        plural = {"size": first.size, "colour": first.colour, "shapes": first.shape + "s"}
        captions = [
            t.format(num=num, quant=_QUANTIFIERS[n], **plural)
            for t in _COUNT
            for num in _NUMBERS[n]
            if not (t.startswith("there are") and num.startswith("a "))  # "there are a pair of" reads badly
        ]
    elif len(objects) == 2:
        a, b = objects
        rel = ABOVE if a.cell // GRID < b.cell // GRID else LEFT_OF
        captions = [
            t.format(**_fields(x, "a_"), **_fields(y, "b_"), rel=r)
            for t in _RELATION
            for x, r, y in ((a, rel, b), (b, _INVERSE[rel], a))
        ]
    else:
        captions = [
            t.format(**_fields(x, "a_"), **_fields(y, "b_"), **_fields(z, "c_"))
            for t in _LIST
            for x, y, z in itertools.permutations(objects)
        ]
    return list(dict.fromkeys(captions))


def _spec(obj: SceneObject) -> ObjectSpec:
    return obj.size, obj.colour, obj.shape


def canonical_caption(scene: Scene) -> str:
    """The canonical caption of a scene (see the module docstring for the forms).

    Raises:
        DataError: If the scene has no objects, more than three, or is a clip without exactly one.
    """
    _check(scene)
    return _variants(scene)[0]


def paraphrases(scene: Scene, n: int = 4, *, rng: np.random.Generator | None = None) -> list[str]:
    """``n`` distinct captions, all different from the canonical one, that parse to the same meaning.

    Args:
        scene: The scene to describe.
        n: How many; every scene has at least five paraphrases.
        rng: Picks which; None takes the first ``n`` in template order.

    Raises:
        DataError: If the scene is not describable or has fewer than ``n`` paraphrases.
    """
    _check(scene)
    others = _variants(scene)[1:]
    if n > len(others):
        raise DataError(f"scene {scene}: asked for {n} paraphrases, the grammar has {len(others)}")
    if rng is None:
        return others[:n]
    return [others[i] for i in rng.choice(len(others), size=n, replace=False)]


def parse_caption(text: str) -> ParsedCaption | None:
    """Reads a caption of the grammar; case, spacing and a final full stop do not matter.

    Returns:
        Its meaning, or None if ``text`` is not a sentence of the grammar (never raises).
    """
    if not isinstance(text, str):
        return None
    tokens = split_words(text)
    if tokens and tokens[-1] == ".":
        tokens.pop()
    joined = " ".join(tokens)
    for pattern, meaning in _PARSERS:
        match = pattern.fullmatch(joined)
        if match:
            parsed = meaning(match.groupdict())
            if parsed is not None:
                return parsed
    return None


def _relation_holds(scene: Scene, relation: tuple[ObjectSpec, str, ObjectSpec]) -> bool:
    """Whether ``a rel b`` is true of the scene: "above" means a smaller row, "left of" a smaller column."""
    a_spec, rel, b_spec = relation
    by_spec = {_spec(o): o for o in scene.objects}
    if a_spec not in by_spec or b_spec not in by_spec:
        return False
    a, b = by_spec[a_spec], by_spec[b_spec]
    if rel == ABOVE:
        return a.cell // GRID < b.cell // GRID
    return a.cell % GRID < b.cell % GRID


def attribute_matches(parsed: ParsedCaption | None, scene: Scene) -> dict[str, bool | None]:
    """Which attributes of ``scene`` a parsed caption gets right.

    Colours, shapes and sizes are compared as multisets over all objects. "position" applies to
    one-object stills, "relation" to two different objects (true if the stated relation holds,
    e.g. "left of" needs a smaller column), "motion" to clips.

    Args:
        parsed: ``parse_caption`` output; None (unparseable) is wrong on every applicable key.
        scene: The ground truth.

    Returns:
        For each of "count", "colour", "shape", "size", "position", "relation", "motion": True or
        False, or None where the attribute does not apply to the scene.
    """
    objects = scene.objects
    still = scene.motion is None
    two_different = still and len(objects) == 2 and _spec(objects[0]) != _spec(objects[1])
    applicable = {
        "count": True,
        "colour": True,
        "shape": True,
        "size": True,
        "position": still and len(objects) == 1,
        "relation": two_different,
        "motion": not still,
    }
    if parsed is None:
        return {key: False if is_applicable else None for key, is_applicable in applicable.items()}

    def same_multiset(index: int, attribute: str) -> bool:
        return sorted(o[index] for o in parsed.objects) == sorted(getattr(o, attribute) for o in objects)

    result: dict[str, bool | None] = {
        "count": parsed.count == len(objects),
        "size": same_multiset(0, "size"),
        "colour": same_multiset(1, "colour"),
        "shape": same_multiset(2, "shape"),
        "position": parsed.position == position_name(objects[0].cell) if applicable["position"] else None,
        "relation": (
            parsed.relation is not None and _relation_holds(scene, parsed.relation)
            if applicable["relation"]
            else None
        ),
        "motion": parsed.motion == scene.motion if applicable["motion"] else None,
    }
    return result


def vocabulary() -> list[str]:
    """Every token (words and ",") that canonical captions and paraphrases can contain, sorted."""
    words: set[str] = set()
    for template in (*_STILL, *_MOVING, *_COUNT, *_RELATION, *_LIST):
        words.update(split_words(_FIELD.sub(" ", template)))
    for values in _FIELD_VALUES.values():
        words.update(word for value in values for word in split_words(value))
    return sorted(words)


def count_distinct_scenes() -> int:
    """Exact number of distinct still scenes the generator can produce (over all splits).

    A scene is a set of 1 to 3 objects in distinct cells, each with any shape, colour and size.
    """
    per_object = len(SHAPES) * len(COLOURS) * len(SIZES)
    cells = GRID * GRID
    return sum(math.comb(cells, k) * per_object**k for k in range(1, MAX_OBJECTS + 1))
