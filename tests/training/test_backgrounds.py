"""Background textures for training: the generated families, and a folder of images and a video
that the test writes."""

import re

import imageio.v2 as imageio
import numpy as np
import pytest

from training.backgrounds import FAMILIES, load_backgrounds, procedural_backgrounds, training_backgrounds


def colours(texture: np.ndarray) -> int:
    return len(np.unique(texture.reshape(-1, 3), axis=0))


def test_procedural_textures_have_the_asked_shape_and_follow_the_seed():
    textures = procedural_backgrounds(12, 80, seed=0)
    assert textures.shape == (12, 80, 80, 3) and textures.dtype == np.uint8
    np.testing.assert_array_equal(textures, procedural_backgrounds(12, 80, seed=0))
    other = procedural_backgrounds(12, 80, seed=1)
    assert np.abs(textures.astype(int) - other).mean() > 20
    np.testing.assert_array_equal(training_backgrounds("procedural", 80, 12, 0), textures)


@pytest.mark.parametrize("family", FAMILIES)
def test_every_family_varies_within_a_texture_and_between_seeds(family):
    textures = [np.clip(FAMILIES[family](np.random.default_rng(s), 64), 0, 255) for s in range(4)]
    assert all(t.std(axis=(0, 1)).max() > 15 for t in textures)  # never one flat colour
    assert all(np.abs(a - b).mean() > 15 for i, a in enumerate(textures) for b in textures[i + 1 :])


def test_the_families_are_drawn_in_equal_shares():
    textures = procedural_backgrounds(9, 64, seed=3)
    # Shapes paint a few flat colours; blobs and mosaics blend or shade into thousands.
    few = [colours(t) <= 16 for t in textures]
    assert sum(few) == 3
    assert all(colours(t) > 500 for t, f in zip(textures, few, strict=True) if not f)


@pytest.fixture
def media(tmp_path):
    """A folder with two images (one in a subfolder) and a 12-frame video, its frames flat greys
    0, 20, ..., 220 so that where a frame came from can be read off it."""
    rng = np.random.default_rng(0)
    (tmp_path / "places").mkdir()
    imageio.imwrite(tmp_path / "wide.png", rng.integers(0, 256, (40, 100, 3), dtype=np.uint8))
    imageio.imwrite(tmp_path / "places" / "grey.jpg", rng.integers(0, 256, (50, 50), dtype=np.uint8))
    frames = [np.full((32, 32, 3), 20 * i, np.uint8) for i in range(12)]
    imageio.mimsave(tmp_path / "clip.mp4", frames, fps=10, macro_block_size=1)
    (tmp_path / "notes.txt").write_text("not an image")
    return tmp_path


def test_a_folder_of_images_and_a_video_gives_square_textures_of_the_asked_size(media):
    textures = load_backgrounds(media, size=24, count=6, seed=0)
    assert textures.shape == (6, 24, 24, 3) and textures.dtype == np.uint8
    # The images give one texture each; the video the other four, spread across its frames.
    greys = sorted(int(round(t.mean())) for t in textures if np.ptp(t) < 8)
    assert len(greys) == 4 and greys[0] < 20 and greys[-1] > 200
    np.testing.assert_array_equal(training_backgrounds(str(media), 24, 6, 0), textures)


def test_count_caps_the_textures(media):
    assert len(load_backgrounds(media, size=16, count=2, seed=1)) == 2


def test_a_missing_or_empty_folder_is_a_clear_error(tmp_path):
    with pytest.raises(
        ValueError, match=re.escape(f"augment.backgrounds: no folder at {tmp_path / 'nowhere'}")
    ):
        load_backgrounds(tmp_path / "nowhere", 16, 4, 0)
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / "readme.txt").write_text("no pictures")
    with pytest.raises(ValueError, match="augment.backgrounds: .*empty holds no image or video .*png"):
        load_backgrounds(tmp_path / "empty", 16, 4, 0)


def test_a_folder_whose_files_do_not_decode_is_a_clear_error(tmp_path):
    (tmp_path / "broken.png").write_bytes(b"not a png")
    with pytest.raises(ValueError, match="holds no readable image or video"):
        load_backgrounds(tmp_path, 16, 4, 0)
