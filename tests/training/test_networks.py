import pytest
import torch

from tests.helpers.training import ROOT
from training.config import ConfigError, EncoderConfig, load_config
from training.geometry import conv_output_size, receptive_field
from training.networks import (
    BilinearFusion,
    Critic,
    DeterministicActor,
    GaussianActor,
    PathLatent,
    SemoreEncoder,
    TokenGrid,
    conv_stack,
    make_encoder,
    preprocess,
)


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
    encoder = make_encoder(EncoderConfig(kind="semore", channels=8, feature_dim=8, attention_grid=3), 3, 32)
    assert isinstance(encoder, SemoreEncoder)
    assert encoder.semantic_convs[0].in_channels == 3
    assert encoder.motion_convs[0].in_channels == 6
    # A static scene has zero differences: the motion path sees only its biases.
    still = preprocess(frames(1, 1, 32).repeat(1, 3, 1, 1, 1))
    motion_input = still[:, 3:] - still[:, :-3]
    assert motion_input.abs().max() == 0


def test_token_pooling_averages_each_cell_of_an_exact_tiling():
    x = torch.arange(2 * 3 * 9 * 9, dtype=torch.float32).reshape(2, 3, 9, 9)
    tokens = TokenGrid(9, 3).pool(x)
    assert tokens.shape == (2, 9, 3)
    torch.testing.assert_close(tokens[:, 0], x[:, :, :3, :3].mean((2, 3)))
    # 5 rows in 2 cells: rows 0-1 and 2-4, no padding; a constant map pools to itself everywhere.
    uneven = TokenGrid(5, 2).pool(torch.ones(1, 1, 5, 5))
    torch.testing.assert_close(uneven[0, :, 0], torch.ones(4))
    torch.testing.assert_close(TokenGrid(5, 2).pool(x[:1, :1, :5, :5])[0, 3, 0], x[0, 0, 2:5, 2:5].mean())


@pytest.mark.parametrize("setting", ["quickstart", "reference/cartpole_swingup"])
def test_every_token_of_both_paths_covers_map_pixels_and_no_pixel_is_left_out(setting):
    """At the reference settings (84 px, grid 7) the old padded pooling gave motion tokens of pure padding."""
    config = load_config(ROOT / f"configs/{setting}.yaml", ["device=cpu"])
    encoder = make_encoder(config.encoder, config.env.frame_stack, config.env.image_size)
    for latent in (encoder.semantic_latent, encoder.motion_latent):
        member = latent.tokens.member  # [side^2, grid^2]
        assert (member.sum(0) >= 1).all(), "a token holds no pixel"
        assert (member.sum(1) == 1).all(), "a pixel belongs to no token, or to two"


def test_a_grid_larger_than_the_motion_map_is_refused_naming_the_field():
    motion_side = conv_output_size(48, 3, strided=2)
    with pytest.raises(ConfigError, match="encoder.attention_grid"):
        load_config(ROOT / "configs/quickstart.yaml", [f"encoder.attention_grid={motion_side + 1}"])


@pytest.mark.parametrize(("layers", "strided"), [(2, 1), (3, 1), (4, 1), (3, 2)])
def test_receptive_field_arithmetic_matches_the_convs(layers, strided):
    """The input pixels that move feature cell (j, j) are centred where geometry says."""
    torch.manual_seed(0)
    convs = torch.nn.Sequential(
        *[m for m in conv_stack(3, 4, layers, strided) if isinstance(m, torch.nn.Conv2d)]
    )
    field = receptive_field(layers, strided)
    x = torch.randn(1, 3, 40, 40, requires_grad=True)
    j = 1
    convs(x)[0, :, j, j].abs().sum().backward()
    rows = x.grad[0].abs().sum(0).nonzero()[:, 0]
    assert rows.min() + rows.max() == 2 * (field.first_centre + field.jump * j)
    assert rows.max() - rows.min() + 1 == field.size


def test_a_small_object_near_a_border_lights_only_the_cell_centred_on_it():
    """At 48 px and 3 layers cell j is centred on pixel 2j + 5 and owns pixels 2j + 5 and 2j + 6."""
    encoder = make_encoder(EncoderConfig(kind="semore", channels=8, layers=3, attention_grid=3), 3, 48)
    teacher_map = torch.zeros(1, 1, 48, 48)
    teacher_map[0, 0, 41:43, 7:9] = 1.0  # a 2 x 2 px object, 5 px from the bottom border
    cells = encoder.map_to_cells(teacher_map)[0, 0]
    assert cells.shape == (encoder.side, encoder.side) == (19, 19)
    assert cells[18, 1] == 1.0
    cells[18, 1] = 0
    assert cells.abs().sum() == 0, "the object lit a cell whose receptive field is not centred on it"


@pytest.mark.parametrize(("side", "grid"), [(9, 3), (11, 5), (25, 5)])
def test_path_latent_equals_residual_add_then_projection(side, grid):
    """The folded form matches adding the upsampled attended tokens to the map, then projecting."""
    torch.manual_seed(0)
    latent = PathLatent(4, side, grid, 6)
    feature_map, attended = torch.randn(3, 4, side, side), torch.randn(3, grid * grid, 4)
    # Upsample explicitly: every pixel takes its own cell's token.
    upsampled = (attended.transpose(1, 2) @ latent.tokens.member.T).reshape(3, 4, side, side)
    explicit = latent.norm(latent.linear((feature_map + upsampled).flatten(1)))
    torch.testing.assert_close(latent(feature_map, attended), explicit, atol=1e-5, rtol=1e-5)


def test_actor_and_critic_shapes():
    actor, critic = GaussianActor(40, 6, 32), Critic(40, 6, 32)
    feature = torch.randn(5, 40)
    action, log_prob = actor.sample(feature)
    assert action.shape == (5, 6) and log_prob.shape == (5,)
    assert action.abs().max() <= 1.0
    assert actor.mean_action(feature).shape == (5, 6)
    q1, q2 = critic(feature, action)
    assert q1.shape == q2.shape == (5,)


def test_drqv2_actor_clips_its_noise_and_passes_gradients_through_the_bounds():
    torch.manual_seed(0)
    actor = DeterministicActor(40, 3, 32, trunk_dim=16)
    feature = torch.randn(256, 40)
    mean = actor.mean_action(feature)
    clipped = actor.sample(feature, std=5.0, clip=0.3)
    assert (clipped - mean).abs().max() <= 0.3 + 1e-6
    wild = actor.sample(feature, std=5.0)
    assert wild.abs().max() <= 1.0 and (wild.abs() == 1.0).any()
    wild.sum().backward()
    assert actor.net[-1].weight.grad.abs().sum() > 0


def test_affine_bilinear_fusion_lets_one_path_through_on_its_own():
    """With the other latent at zero a plain bilinear form is constant; the affine one is not."""
    torch.manual_seed(0)
    z1, zero = torch.randn(4, 8), torch.zeros(4, 8)
    plain, affine = BilinearFusion(8, 8, 6), BilinearFusion(8, 8, 6, affine=True)
    assert torch.allclose(plain(z1, zero), plain.bias.expand(4, 6))
    assert not torch.allclose(affine(z1, zero)[0], affine(z1, zero)[1])


@pytest.mark.parametrize("fusion", ["bilinear", "affine-bilinear", "concat"])
@pytest.mark.parametrize("motion_path", ["light", "full"])
def test_fusion_and_motion_path_switches_keep_the_feature_contract(fusion, motion_path):
    config = EncoderConfig(
        kind="semore", channels=8, feature_dim=10, attention_grid=3, fusion=fusion, motion_path=motion_path
    )
    encoder = make_encoder(config, frame_stack=3, image_size=48)
    out = encoder(preprocess(frames(2, 3, 48)))
    assert out.feature.shape == (2, 20) and out.motion.shape == (2, 10)
    assert encoder.motion_convs[0].out_channels == (4 if motion_path == "light" else 8)


@pytest.mark.parametrize("attention", [True, False])
def test_knowledge_attention_switch_decides_whether_the_knowledge_head_shapes_the_latents(attention):
    config = EncoderConfig(
        kind="semore", channels=8, feature_dim=10, attention_grid=3, knowledge_attention=attention
    )
    encoder = make_encoder(config, frame_stack=3, image_size=48)
    names = {name for name, _ in encoder.named_parameters()}
    assert ("position" in names) == attention and any("attention" in n for n in names) == attention
    x = preprocess(frames(2, 3, 48))
    if attention:  # as after some training: the attention branch has grown from its zero start
        torch.nn.init.normal_(encoder.semantic_attention.out.weight)
    before = encoder(x)
    with torch.no_grad():
        encoder.knowledge_head[-1].bias.add_(5.0)  # a different predicted map
    after = encoder(x)
    assert before.feature.shape == (2, 20)
    assert torch.equal(after.semantic, before.semantic) != attention
    assert not torch.equal(after.knowledge_logits, before.knowledge_logits)


def test_a_fresh_encoder_starts_with_its_attention_branches_at_zero():
    """Each path's latent starts as its map's own; the attention grows in with training."""
    config = EncoderConfig(kind="semore", channels=8, feature_dim=10, attention_grid=3)
    encoder = make_encoder(config, frame_stack=3, image_size=48)
    x = preprocess(frames(2, 3, 48))
    out = encoder(x)
    assert torch.equal(out.semantic, encoder.semantic_latent(encoder.semantic_features(x)))
    motion = encoder.motion_convs(x[:, 3:] - x[:, :-3])
    assert torch.equal(out.motion, encoder.motion_latent(motion))
    # Zero at the start, but trained: the branch's output layer gets gradients from the first step.
    out.feature.sum().backward()
    assert encoder.semantic_attention.out.weight.grad.abs().sum() > 0


@pytest.mark.parametrize("semantic_input, frames_read", [("newest", 1), ("stack", 3)])
def test_semantic_input_switch_sets_which_frames_the_semantic_path_reads(semantic_input, frames_read):
    config = EncoderConfig(
        kind="semore", channels=8, feature_dim=10, attention_grid=3, semantic_input=semantic_input
    )
    encoder = make_encoder(config, frame_stack=3, image_size=48)
    x = preprocess(frames(2, 3, 48))
    older = x.clone()
    older[:, :3] = 0.0  # change only the oldest frame
    changed = not torch.equal(encoder.semantic_features(x), encoder.semantic_features(older))
    assert encoder.semantic_convs[0].in_channels == 3 * frames_read
    assert changed == (frames_read == 3)
    assert encoder(x).feature.shape == (2, 20)


def moving_stack(amplitude: float, size: int = 32) -> torch.Tensor:
    """A preprocessed stack whose frames differ by `amplitude` times a fixed pattern."""
    torch.manual_seed(0)
    base, step = torch.rand(1, 3, size, size) - 0.5, torch.rand(1, 3, size, size) - 0.5
    return torch.cat([base, base + amplitude * step, base + 2 * amplitude * step], dim=1)


def test_the_motion_latent_grows_with_the_motion_and_is_zero_for_a_still_stack():
    encoder = make_encoder(EncoderConfig(kind="semore", channels=8, feature_dim=8, attention_grid=3), 3, 32)
    with torch.no_grad():
        norms = [float(encoder(moving_stack(a)).motion.norm()) for a in (0.0, 0.01, 0.3, 1.0)]
    assert norms[0] == 0.0  # a still stack is no motion, not amplified noise
    assert norms[1] < norms[2] < norms[3]
    assert norms[3] / norms[2] == pytest.approx(1.0 / 0.3, rel=1e-3)  # graded, not an on/off code


@pytest.mark.parametrize(("norm", "independent"), [("per-path", True), ("joint", False)])
def test_with_per_path_norm_the_motions_size_leaves_the_semantic_half_of_the_feature_alone(norm, independent):
    """The newest frame is the same in every stack, so the semantic latent is too; only the
    per-path norm keeps the feature's semantic half from moving with the motion's amplitude."""
    config = EncoderConfig(kind="semore", channels=8, feature_dim=8, attention_grid=3, fusion_norm=norm)
    encoder = make_encoder(config, 3, 32)
    slow, fast = moving_stack(0.05), moving_stack(0.5)
    fast[:, 6:] = slow[:, 6:]  # the same newest frame, reached by a larger motion
    with torch.no_grad():
        a, b = encoder(slow), encoder(fast)
    torch.testing.assert_close(a.semantic, b.semantic)
    assert not torch.allclose(a.motion, b.motion)
    assert torch.allclose(a.feature[:, :8], b.feature[:, :8]) == independent


def test_per_path_norm_with_a_mixing_fusion_is_refused_naming_the_field():
    with pytest.raises(ConfigError, match="encoder.fusion_norm:"):
        load_config(
            ROOT / "configs/quickstart.yaml", ["encoder.fusion=bilinear", "encoder.fusion_norm=per-path"]
        )


def gated_encoder(foreground_bias: float) -> SemoreEncoder:
    """A gated encoder whose foreground head says `foreground_bias` (in logits) everywhere."""
    config = EncoderConfig(kind="semore", channels=8, feature_dim=8, attention_grid=3, gate=True)
    encoder = make_encoder(config, 3, 32)
    torch.nn.init.zeros_(encoder.foreground_head[-1].weight)
    torch.nn.init.constant_(encoder.foreground_head[-1].bias, foreground_bias)
    return encoder


def test_a_closed_gate_keeps_every_pixel_from_both_latents_and_an_open_one_lets_them_through():
    x, other = moving_stack(0.3), moving_stack(0.3) + 0.2 * torch.rand(1, 9, 32, 32)
    closed, open_ = gated_encoder(-30.0), gated_encoder(30.0)
    for path in ("semantic", "motion"):
        assert torch.allclose(getattr(closed(x), path), getattr(closed(other), path), atol=1e-6)
        assert not torch.allclose(getattr(open_(x), path), getattr(open_(other), path), atol=1e-3)


def test_the_gate_map_sits_one_layer_before_the_last_and_spreads_over_the_image_cell_by_cell():
    encoder = gated_encoder(0.0)
    out = encoder(moving_stack(0.3))
    field, side = receptive_field(3), conv_output_size(32, 3)  # 4 layers: the gate reads the 3rd
    assert out.foreground_logits.shape == (1, 1, side, side)
    # One open cell of the gate map lights the pixels around that cell's centre, widened by
    # the dilation, and no pixel far from it.
    cells = torch.full((1, 1, side, side), -30.0)
    cells[0, 0, 7, 7] = 30.0
    spread = encoder._motion_gate(cells)[0, 0]
    centre = field.first_centre + field.jump * 7
    assert spread[centre, centre] > 0.99 and spread[0, 0] < 1e-6 and spread[centre, 31] < 1e-6


def input_gated_encoder(foreground_bias: float) -> SemoreEncoder:
    """An input-gated encoder whose masker says `foreground_bias` (in logits) at every pixel."""
    config = EncoderConfig(
        kind="semore", channels=8, feature_dim=8, attention_grid=3, gate=True, gate_at="input"
    )
    encoder = make_encoder(config, 3, 32)
    torch.nn.init.zeros_(encoder.masker[-1].weight)
    torch.nn.init.constant_(encoder.masker[-1].bias, foreground_bias)
    return encoder


def test_the_input_gate_masks_every_frame_before_any_conv_at_pixel_resolution():
    x = moving_stack(0.3)
    other = x.clone()
    other[:, :, :, :16] += 0.2 * torch.rand(1, 9, 32, 16)  # another left half in all 3 frames
    closed, open_ = input_gated_encoder(-30.0), input_gated_encoder(30.0)
    assert open_(x).foreground_logits.shape == (1, 1, 32, 32)  # the newest frame's, pixel by pixel
    target = torch.rand(1, 1, 32, 32)
    assert torch.equal(open_.foreground_to_cells(target), target)  # the loss reads pixels too
    # What the masker calls background reaches no conv: both paths get the same frames, so both
    # latents are the same; what it calls foreground goes through.
    for path in ("semantic", "motion"):
        assert torch.allclose(getattr(closed(x), path), getattr(closed(other), path), atol=1e-6)
        assert not torch.allclose(getattr(open_(x), path), getattr(open_(other), path), atol=1e-3)
    assert torch.allclose(closed.semantic_features(x), closed.semantic_features(other), atol=1e-6)
