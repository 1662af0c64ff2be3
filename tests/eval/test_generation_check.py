import itertools

import numpy as np

from simmim.data.records import COLOURS, SHAPES, SIZES, Scene, SceneObject
from simmim.data.synthetic import render_scene
from simmim.eval.generation import analyse_image


def test_analysis_reads_colour_and_cell_of_every_rendered_object_even_dimmed_and_blurred():
    rng = np.random.default_rng(0)
    for shape, colour, size, cell in itertools.product(SHAPES, COLOURS, SIZES, range(9)):
        image = render_scene(Scene((SceneObject(shape, colour, size, cell),)), 32, rng=rng)
        assert analyse_image(image) == (colour, cell)
        dim = (image.astype(float) * 0.4).astype(np.uint8)
        blurred = (dim.astype(float) + np.roll(dim, 1, axis=0) + np.roll(dim, 1, axis=1)) / 3
        assert analyse_image(blurred.astype(np.uint8)) == (colour, cell)


def test_empty_image_has_no_colour_or_cell():
    assert analyse_image(np.zeros((32, 32, 3), np.uint8)) == (None, None)
    assert analyse_image(np.full((32, 32, 3), 5, np.uint8)) == (None, None)
