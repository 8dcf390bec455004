"""The CLIP grounding: MaskCLIP dense features against a hand computation, maps, embeddings, loading."""

from __future__ import annotations

import math
import time

import huggingface_hub.constants
import numpy as np
import pytest
import torch

from devkit.random_models import TINY_CLIP, save_random_clip
from training.config import ClipConfig, TeacherConfig
from training.teachers import Observation, make_teacher
from training.teachers.clip import ClipGrounder, phrase_relevance
from training.teachers.loading import ModelMissingError

CPU = torch.device("cpu")


def grounder(model: str, **clip) -> ClipGrounder:
    return ClipGrounder(ClipConfig(model=model, pretrained=None, **clip), 8, CPU)


def frames(n: int = 3, size: int = 40) -> np.ndarray:
    return np.random.default_rng(0).integers(0, 256, (n, size, size, 3), dtype=np.uint8)


def test_relevance_is_the_phrases_share_of_a_softmax_over_all_prompts():
    # Patch 0 is the phrase's direction, patch 1 the background's; at scale ln 3 the softmax
    # over (phrase, background) gives exactly 3/4 and 1/4.
    dense = torch.tensor([[[2.0, 0.0], [0.0, 5.0]]])
    text = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    relevance = phrase_relevance(dense, text, n_phrases=1, scale=math.log(3))
    torch.testing.assert_close(relevance, torch.tensor([[0.75, 0.25]]))
    # Two phrases share the patch: their shares add up.
    three = torch.tensor([[1.0, 0.0], [1.0, 0.0], [0.0, 1.0]])
    torch.testing.assert_close(phrase_relevance(dense, three, 2, math.log(3)), torch.tensor([[6 / 7, 2 / 5]]))


def _layer_norm(x: np.ndarray, norm: torch.nn.LayerNorm) -> np.ndarray:
    mean, var = x.mean(-1, keepdims=True), x.var(-1, keepdims=True)
    return (x - mean) / np.sqrt(var + norm.eps) * norm.weight.double().numpy() + norm.bias.double().numpy()


def test_dense_features_are_the_last_blocks_value_path(tmp_path):
    """One block, so every step is written out here in numpy: patchify, embed, value, project."""
    one_block = TINY_CLIP | {"vision_cfg": TINY_CLIP["vision_cfg"] | {"layers": 1}}
    g = grounder(save_random_clip(tmp_path / "one-block", one_block))
    visual = g.visual
    image = g.preprocess(frames(1, 32)).double()[0].numpy()  # [3, 32, 32]
    p = visual.patch_size[0]
    w = lambda t: t.detach().double().numpy()  # noqa: E731
    patches = image.reshape(3, 4, p, 4, p).transpose(1, 3, 0, 2, 4).reshape(16, -1)  # row-major grid
    tokens = patches @ w(visual.conv1.weight).reshape(len(w(visual.class_embedding)), -1).T
    x = np.concatenate([w(visual.class_embedding)[None], tokens]) + w(visual.positional_embedding)
    x = _layer_norm(x, visual.ln_pre)
    block = visual.transformer.resblocks[0]
    width = x.shape[-1]
    v = _layer_norm(x[1:], block.ln_1) @ w(block.attn.in_proj_weight)[2 * width :].T
    v = v + w(block.attn.in_proj_bias)[2 * width :]
    out = v @ w(block.attn.out_proj.weight).T + w(block.attn.out_proj.bias)
    expected = _layer_norm(out, visual.ln_post) @ w(visual.proj)

    with torch.inference_mode():
        dense, _ = g.image_features(g.preprocess(frames(1, 32)), pooled=False)
    np.testing.assert_allclose(dense[0].numpy(), expected, atol=1e-4)


def test_maps_and_embeddings(tiny_clip):
    g = grounder(tiny_clip, global_target=True)
    labels = g.ground(frames(), ["cart", "pole"])
    assert labels.maps.shape == (3, 8, 8) and labels.maps.dtype == np.uint8
    assert labels.maps.max() <= 255 and len(np.unique(labels.maps)) > 4  # a map, not a constant
    assert labels.embeddings.shape == (3, g.embedding_dim) and labels.embeddings.dtype == np.float16
    np.testing.assert_allclose(np.linalg.norm(labels.embeddings.astype(np.float32), axis=1), 1, atol=1e-2)
    with torch.inference_mode():
        expected = torch.nn.functional.normalize(g.model.encode_image(g.preprocess(frames())), dim=-1)
    np.testing.assert_allclose(labels.embeddings, expected.numpy(), atol=2e-3)


def test_phrases_win_more_of_the_map_than_fewer_phrases(tiny_clip):
    g = grounder(tiny_clip)
    one = g.ground(frames(), ["cart"]).maps.astype(int)
    more = g.ground(frames(), ["cart", "pole", "ball", "cup"]).maps.astype(int)
    assert (more >= one - 1).all() and more.mean() > one.mean()


def test_a_phrase_that_is_also_a_background_prompt_counts_once(tiny_clip):
    g = grounder(tiny_clip, background=["floor", "wall"])
    both = g.ground(frames(), ["floor"]).maps
    alone = ClipGrounder(ClipConfig(model=tiny_clip, pretrained=None, background=["wall"]), 8, CPU)
    np.testing.assert_array_equal(both, alone.ground(frames(), ["floor"]).maps)


def test_clip_teacher_labels_observations_with_the_configured_phrases(tiny_clip):
    config = TeacherConfig(kind="clip", phrases=["cart", "pole"], map_size=8)
    config.clip.model, config.clip.pretrained = tiny_clip, None
    teacher = make_teacher(config, "dmc:cartpole-balance", CPU)
    labels = teacher.label([Observation(f, i) for i, f in enumerate(frames())])
    np.testing.assert_array_equal(labels.maps, teacher.grounder.ground(frames(), ["cart", "pole"]).maps)
    assert labels.embeddings is None and teacher.embedding_dim is None


@pytest.mark.parametrize("offline", [True, False], ids=["HF_HUB_OFFLINE", "local_files_only"])
def test_missing_weights_fail_fast_with_the_fetch_command(monkeypatch, offline):
    if not offline:
        monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
        monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", False)
    tic = time.perf_counter()
    with pytest.raises(ModelMissingError) as error:
        ClipGrounder(ClipConfig(local_files_only=not offline), 8, CPU)
    assert time.perf_counter() - tic < 5
    message = str(error.value)
    assert "ViT-B-32 (laion2b_s34b_b79k)" in message
    assert "laion/CLIP-ViT-B-32-laion2B-s34B-b79K" in message  # where it looked
    assert "open_clip.create_model('ViT-B-32', pretrained='laion2b_s34b_b79k')" in message


def test_bad_model_names_name_the_field():
    with pytest.raises(ValueError, match="teacher.clip.model: 'ViT-Nope'"):
        ClipGrounder(ClipConfig(model="ViT-Nope"), 8, CPU)
    with pytest.raises(ValueError, match="teacher.clip.pretrained: 'laion9'.*laion2b_s34b_b79k"):
        ClipGrounder(ClipConfig(pretrained="laion9"), 8, CPU)
