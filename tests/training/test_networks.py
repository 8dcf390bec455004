import pytest
import torch

from training.config import EncoderConfig
from training.networks import Actor, Critic, PathLatent, SemoreEncoder, make_encoder, pool_tokens, preprocess


def frames(batch=4, k=3, size=64):
    return torch.randint(0, 256, (batch, k, size, size, 3), dtype=torch.uint8)


def test_preprocess_puts_frames_oldest_first_as_channels():
    x = frames(2, 3, 8)
    out = preprocess(x)
    assert out.shape == (2, 9, 8, 8) and out.dtype == torch.float32
    assert out.min() >= -0.5 and out.max() <= 0.5
    assert torch.allclose(out[:, 3:6], x[:, 1].permute(0, 3, 1, 2).float() / 255 - 0.5)


@pytest.mark.parametrize("kind", ["semore", "pixel"])
@pytest.mark.parametrize("size", [64, 84])
def test_encoder_output_shapes_and_dtypes(kind, size):
    config = EncoderConfig(kind=kind, channels=16, feature_dim=20)
    encoder = make_encoder(config, frame_stack=3, image_size=size)
    out = encoder(preprocess(frames(4, 3, size)))
    assert out.feature.shape == (4, 40) and out.feature.dtype == torch.float32
    assert out.feature.abs().max() <= 1.0
    if kind == "semore":
        side = encoder.side
        assert out.semantic.shape == out.motion.shape == (4, 20)
        assert out.knowledge_logits.shape == (4, 1, side, side)
        assert out.semantic_map.shape == (4, 16, side, side)
    else:
        assert out.semantic is None and out.knowledge_logits is None


def test_semore_paths_read_the_newest_frame_and_the_differences():
    encoder = make_encoder(EncoderConfig(kind="semore", channels=8, feature_dim=8), 3, 32)
    assert isinstance(encoder, SemoreEncoder)
    assert encoder.semantic_convs[0].in_channels == 3
    assert encoder.motion_convs[0].in_channels == 6
    # A static scene has zero differences: the motion path sees only its biases.
    still = preprocess(frames(1, 1, 32).repeat(1, 3, 1, 1, 1))
    motion_input = still[:, 3:] - still[:, :-3]
    assert motion_input.abs().max() == 0


def test_token_pooling_averages_each_cell_with_zero_padding():
    x = torch.arange(2 * 3 * 9 * 9, dtype=torch.float32).reshape(2, 3, 9, 9)
    tokens = pool_tokens(x, 3)
    assert tokens.shape == (2, 9, 3)
    torch.testing.assert_close(tokens[:, 0], x[:, :, :3, :3].mean((2, 3)))
    uneven = pool_tokens(torch.ones(1, 1, 5, 5), 2)  # cells of 3, the last row/column padded
    torch.testing.assert_close(uneven[0, :, 0], torch.tensor([1.0, 6 / 9, 6 / 9, 4 / 9]))


@pytest.mark.parametrize(("side", "grid"), [(9, 3), (11, 5), (25, 5)])
def test_path_latent_equals_residual_add_then_projection(side, grid):
    """The folded form matches adding the upsampled attended tokens to the map, then projecting."""
    torch.manual_seed(0)
    latent = PathLatent(4, side, grid, 6)
    feature_map, attended = torch.randn(3, 4, side, side), torch.randn(3, grid * grid, 4)
    cell = -(-side // grid)
    upsampled = attended.transpose(1, 2).reshape(3, 4, grid, grid)
    upsampled = upsampled.repeat_interleave(cell, 2).repeat_interleave(cell, 3)[:, :, :side, :side]
    explicit = latent.norm(latent.linear((feature_map + upsampled).flatten(1)))
    torch.testing.assert_close(latent(feature_map, attended), explicit, atol=1e-5, rtol=1e-5)


def test_actor_and_critic_shapes():
    actor, critic = Actor(40, 6, 32), Critic(40, 6, 32)
    feature = torch.randn(5, 40)
    action, log_prob = actor.sample(feature)
    assert action.shape == (5, 6) and log_prob.shape == (5,)
    assert action.abs().max() <= 1.0
    assert actor.mean_action(feature).shape == (5, 6)
    q1, q2 = critic(feature, action)
    assert q1.shape == q2.shape == (5,)
