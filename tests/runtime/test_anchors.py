"""Anchor generators: the TF OD API's own unit-test cases, ported, plus the zoo's counts."""
import numpy as np
import pytest

from ssdkit.runtime import anchors as ag
from ssdkit.runtime.spec import MultipleGridAnchors

H, W = np.sqrt(2), 1.0 / np.sqrt(2)  # height and width of an aspect-0.5 box of scale 1


def test_grid_single_anchor_matches_od_api():
    # grid_anchor_generator_test.test_construct_single_anchor
    corners = ag.grid_anchors((1, 1), [0.5, 1.0, 2.0], [0.25, 1.0, 4.0], anchor_offset=(7, -3))
    np.testing.assert_allclose(corners, [
        [-121, -35, 135, 29], [-249, -67, 263, 61], [-505, -131, 519, 125],
        [-57, -67, 71, 61], [-121, -131, 135, 125], [-249, -259, 263, 253],
        [-25, -131, 39, 125], [-57, -259, 71, 253], [-121, -515, 135, 509]])


GRID_2X2 = [[-2.5, -2.5, 2.5, 2.5], [-5., -5., 5., 5.], [-10., -10., 10., 10.],
            [-2.5, 16.5, 2.5, 21.5], [-5., 14., 5, 24], [-10., 9., 10, 29],
            [16.5, -2.5, 21.5, 2.5], [14., -5., 24, 5], [9., -10., 29, 10],
            [16.5, 16.5, 21.5, 21.5], [14., 14., 24, 24], [9., 9., 29, 29]]


def test_grid_anchor_grid_matches_od_api():
    # grid_anchor_generator_test.test_construct_anchor_grid
    corners = ag.grid_anchors((2, 2), [0.5, 1.0, 2.0], [1.0], (10, 10), (19, 19), (0, 0))
    np.testing.assert_allclose(corners, GRID_2X2)


def test_multiple_grid_single_anchor_grid_matches_od_api():
    # multiple_grid_anchor_generator_test.test_construct_single_anchor_grid
    specs = [[(.5, .25), (1.0, .25), (2.0, .25), (.5, 1.0), (1.0, 1.0), (2.0, 1.0), (.5, 4.0), (1.0, 4.0), (2.0, 4.0)]]
    corners = ag.multiple_grid_anchors(specs, [(1, 1)], (256, 256), [(16, 16)], [(7, -3)])
    np.testing.assert_allclose(corners, [
        [-121, -35, 135, 29], [-249, -67, 263, 61], [-505, -131, 519, 125],
        [-57, -67, 71, 61], [-121, -131, 135, 125], [-249, -259, 263, 253],
        [-25, -131, 39, 125], [-57, -259, 71, 253], [-121, -515, 135, 509]])


def test_multiple_grid_anchor_grid_matches_od_api():
    specs = [[(0.5, 1.0), (1.0, 1.0), (2.0, 1.0)]]
    corners = ag.multiple_grid_anchors(specs, [(2, 2)], (10, 10), [(19, 19)], [(0, 0)])
    np.testing.assert_allclose(corners, GRID_2X2)


def test_multiple_grid_non_square_matches_od_api():
    corners = ag.multiple_grid_anchors([[(1.0, 1.0)]], [(1, 2)], (1, 1))
    np.testing.assert_allclose(corners, [[0., -0.25, 1., 0.75], [0., 0.25, 1., 1.25]])


def test_multiple_grid_normalized_on_non_square_image_matches_od_api():
    corners = ag.multiple_grid_anchors([[(1.0, 1.0)]], [(1, 2)], (1, 1), im_height=320, im_width=640)
    np.testing.assert_allclose(corners, [[0., 0., 1., 0.5], [0., 0.5, 1., 1.]])


def test_multiple_grids_match_od_api():
    specs = [[(1.0, 1.0), (2.0, 1.0), (1.0, 0.5)], [(1.0, 1.0), (1.0, 0.5)]]
    corners = ag.multiple_grid_anchors(specs, [(4, 4), (2, 2)], (1.0, 1.0), [(.25, .25), (.5, .5)], [(.125, .125), (.25, .25)])
    assert corners.shape == (56, 4)
    np.testing.assert_allclose(corners[0:3], [
        [.125 - .5, .125 - .5, .125 + .5, .125 + .5],
        [.125 - 1.0, .125 - 1.0, .125 + 1.0, .125 + 1.0],
        [.125 - .5 * H, .125 - .5 * W, .125 + .5 * H, .125 + .5 * W]])
    np.testing.assert_allclose(corners[48:], [
        [-.25, -.25, .75, .75], [.25 - .5 * H, .25 - .5 * W, .25 + .5 * H, .25 + .5 * W],
        [-.25, .25, .75, 1.25], [.25 - .5 * H, .75 - .5 * W, .25 + .5 * H, .75 + .5 * W],
        [.25, -.25, 1.25, .75], [.75 - .5 * H, .25 - .5 * W, .75 + .5 * H, .25 + .5 * W],
        [.25, .25, 1.25, 1.25], [.75 - .5 * H, .75 - .5 * W, .75 + .5 * H, .75 + .5 * W]])


def test_multiple_grid_rejects_mismatched_lists():
    specs = [[(1.0, 1.0), (2.0, 1.0), (1.0, 0.5)], [(1.0, 1.0), (1.0, 0.5)]]
    with pytest.raises(ValueError, match="anchor_strides has 1 entries, expected 2"):
        ag.multiple_grid_anchors(specs, [(4, 4), (2, 2)], anchor_strides=[(.25, .25)], anchor_offsets=[(.125, .125), (.25, .25)])
    with pytest.raises(ValueError, match="3 feature maps given, expected 2"):
        ag.multiple_grid_anchors(specs, [(4, 4), (2, 2), (1, 1)])


@pytest.mark.parametrize("reduce_lowest, expected", [(True, 7308), (False, 11640)])
def test_create_ssd_anchors_shape_matches_od_api(reduce_lowest, expected):
    specs = ag.ssd_box_specs(6, 0.2, 0.95, aspect_ratios=(1.0, 2.0, 3.0, 1.0 / 2, 1.0 / 3),
                             reduce_boxes_in_lowest_layer=reduce_lowest)
    corners = ag.multiple_grid_anchors(specs, [(38, 38), (19, 19), (10, 10), (5, 5), (3, 3), (1, 1)])
    assert corners.shape == (expected, 4)


def test_ssd_box_specs_lowest_layer_and_interpolated_scale():
    specs = ag.ssd_box_specs()
    assert specs[0] == [(0.1, 1.0), (0.2, 2.0), (0.2, 0.5)]
    assert [len(s) for s in specs] == [3, 6, 6, 6, 6, 6]
    scales = [0.2 + 0.15 * i for i in range(6)]
    assert specs[1][-1] == pytest.approx((np.sqrt(scales[1] * scales[2]), 1.0))
    assert specs[5][-1] == pytest.approx((np.sqrt(0.95), 1.0))  # the last layer interpolates towards 1.0


def test_ssd_mnv2_anchor_count_and_first_anchors():
    corners = MultipleGridAnchors().generate([(19, 19), (10, 10), (5, 5), (3, 3), (2, 2), (1, 1)], 300, 300)
    assert corners.shape == (1917, 4)
    # First cell of the 19x19 grid: centre 0.5/19, boxes (0.1, 1), (0.2, 2), (0.2, 0.5).
    c = 0.5 / 19
    np.testing.assert_allclose(corners[0], [c - 0.05, c - 0.05, c + 0.05, c + 0.05], atol=1e-7)
    h, w = 0.2 / np.sqrt(2), 0.2 * np.sqrt(2)
    np.testing.assert_allclose(corners[1], [c - h / 2, c - w / 2, c + h / 2, c + w / 2], atol=1e-7)


class TestMultiscale:
    """multiscale_grid_anchor_generator_test, with normalize_coordinates=False unless stated."""

    def gen(self, shapes, im, levels=(5, 5), aspect=(1.0,), per_octave=1, normalize=False, im_w=None, scale=4.0):
        return ag.multiscale_grid_anchors(shapes, im, im_w or im, levels[0], levels[1], scale, aspect, per_octave, normalize)

    def test_single_anchor(self):
        np.testing.assert_allclose(self.gen([(2, 2)], 64), [[-48, -48, 80, 80], [-48, -16, 80, 112], [-16, -48, 112, 80], [-16, -16, 112, 112]])

    def test_unit_dimensions_get_offsets(self):
        np.testing.assert_allclose(self.gen([(2, 2)], 1, scale=1.0), [[0, 0, 32, 32], [0, 32, 32, 64], [32, 0, 64, 32], [32, 32, 64, 64]])

    def test_normalized_needs_image_size(self):
        with pytest.raises(ValueError, match="Normalized coordinates"):
            self.gen([(2, 2)], 1, normalize=True, scale=1.0)

    def test_single_anchor_normalized(self):
        out = self.gen([(2, 2)], 64, normalize=True, im_w=128)
        np.testing.assert_allclose(out, [[-48. / 64, -48. / 128, 80. / 64, 80. / 128], [-48. / 64, -16. / 128, 80. / 64, 112. / 128],
                                         [-16. / 64, -48. / 128, 112. / 64, 80. / 128], [-16. / 64, -16. / 128, 112. / 64, 112. / 128]])

    def test_odd_input_dimension_has_no_offset(self):
        np.testing.assert_allclose(self.gen([(3, 3)], 65), [
            [-64, -64, 64, 64], [-64, -32, 64, 96], [-64, 0, 64, 128], [-32, -64, 96, 64], [-32, -32, 96, 96],
            [-32, 0, 96, 128], [0, -64, 128, 64], [0, -32, 128, 96], [0, 0, 128, 128]])

    def test_two_feature_maps(self):
        np.testing.assert_allclose(self.gen([(2, 2), (1, 1)], 64, levels=(5, 6)), [
            [-48, -48, 80, 80], [-48, -16, 80, 112], [-16, -48, 112, 80], [-16, -16, 112, 112], [-96, -96, 160, 160]])

    def test_two_scales_per_octave_and_aspect(self):
        np.testing.assert_allclose(self.gen([(1, 1)], 64, levels=(6, 6), aspect=(1.0, 2.0), per_octave=2), [
            [-96., -96., 160., 160.], [-149.0193, -149.0193, 213.0193, 213.0193],
            [-58.50967, -149.0193, 122.50967, 213.0193], [-96., -224., 160., 288.]], rtol=1e-6)

    def test_fpnlite_320_count_and_unoffset_top_level(self):
        shapes = [(40, 40), (20, 20), (10, 10), (5, 5), (3, 3)]
        corners = ag.multiscale_grid_anchors(shapes, 320, 320)
        assert corners.shape == (12804, 4)
        # 320 is not a multiple of 2**7: the level-7 grid starts at 0, not 64.
        top = ag.corners_to_center_size(corners[-9 * 6:])
        assert top[0, 0] == pytest.approx(0.0) and top[-1, 0] == pytest.approx(256 / 320)
