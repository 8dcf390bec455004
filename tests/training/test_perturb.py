import numpy as np
import pytest

from training.perturb import PERTURBATIONS, make_perturbation


@pytest.fixture
def stack():
    rng = np.random.default_rng(0)
    return rng.integers(60, 200, (3, 32, 32, 3), dtype=np.uint8)


@pytest.mark.parametrize("name", list(PERTURBATIONS))
def test_shape_and_dtype_are_kept_and_frames_change(name, stack):
    out = make_perturbation(name, seed=1)(stack)
    assert out.shape == stack.shape and out.dtype == np.uint8
    assert (out != stack).any()


def test_brightness_contrast_moves_the_mean_and_shrinks_the_spread(stack):
    out = make_perturbation("brightness", 1)(stack).astype(float)
    assert abs(out.mean() - stack.mean()) > 20
    assert out.std() < stack.std()


def test_color_jitter_scales_each_channel_differently(stack):
    out = make_perturbation("color-jitter", 2)(stack).astype(float)
    ratios = out.mean(axis=(0, 1, 2)) / stack.mean(axis=(0, 1, 2))
    assert np.ptp(ratios) > 0.01


def test_noise_is_zero_mean_and_fresh_each_call(stack):
    noise = make_perturbation("noise", 3)
    a, b = noise(stack), noise(stack)
    assert abs(a.astype(float).mean() - stack.mean()) < 1.0
    assert (a != b).any()


def test_occlusion_is_one_fixed_grey_patch(stack):
    occlude = make_perturbation("occlusion", 4)
    a, b = occlude(stack), occlude(stack)
    np.testing.assert_array_equal(a, b)
    changed = (a != stack).any(axis=(0, 3))
    rows, cols = np.nonzero(changed)
    assert 0 < changed.sum() <= 8 * 8
    assert (a[:, rows.min() : rows.max() + 1, cols.min() : cols.max() + 1] == 127).all()


def test_unknown_perturbation_lists_the_choices():
    with pytest.raises(ValueError, match="occlusion"):
        make_perturbation("rain", 0)
