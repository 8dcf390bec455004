"""The learners' wiring: what each target reads, which loss trains which path, the switches."""

from dataclasses import replace

import numpy as np
import pytest
import torch

from devkit.batches import synthetic_batch
from tests.helpers.training import TINY
from training.agent import DrQV2Agent, SacAgent, enabled_losses, make_agent
from training.config import load_config
from training.losses import AuxiliaryHeads, AuxTargets, info_nce
from training.networks import Encoding

CPU = torch.device("cpu")


def config_with(*overrides):
    return load_config(overrides=[*TINY, "teacher.objects=[cart]", "agent.augment_pad=0", *overrides])


def record_inputs(module: torch.nn.Module) -> list:
    seen = []
    module.register_forward_hook(lambda _m, args, _out: seen.append(args))
    return seen


def test_sac_target_acts_on_the_online_feature_and_values_the_target_feature():
    """SAC-AE / DrQ-v2 convention: the actor never sees the target encoder's feature."""
    torch.manual_seed(0)
    config = config_with()
    agent = make_agent(config, 1, CPU)
    assert isinstance(agent, SacAgent)
    with torch.no_grad():  # make the target encoder clearly different from the online one
        for p in agent.encoder_target.parameters():
            p.add_(torch.randn_like(p) * 0.5)
    batch = synthetic_batch(config, 1, np.random.default_rng(0)).to(CPU)
    views = agent.augment(batch, frames=0)
    actor_inputs, target_critic_inputs = record_inputs(agent.actor), record_inputs(agent.critic_target)
    with torch.no_grad():
        agent.targets(views, batch, frames=0)
        online = agent.encoder(views.next_obs).feature
        target = agent.encoder_target(views.next_obs).feature
    assert not torch.allclose(online, target)
    torch.testing.assert_close(actor_inputs[0][0], online)
    torch.testing.assert_close(target_critic_inputs[0][0], target)


def test_drqv2_has_no_target_encoder_and_one_online_pass_serves_the_target():
    torch.manual_seed(0)
    config = config_with("agent.kind=drqv2")
    agent = make_agent(config, 1, CPU)
    assert isinstance(agent, DrQV2Agent) and not hasattr(agent, "encoder_target")
    batch = synthetic_batch(config, 1, np.random.default_rng(0)).to(CPU)
    views = agent.augment(batch, frames=0)
    critic_inputs = record_inputs(agent.critic_target)
    with torch.no_grad():
        agent.targets(views, batch, frames=0)
        online = agent.encoder(views.next_obs).feature
    torch.testing.assert_close(critic_inputs[0][0], online)
    assert "encoder_target" not in agent.state_dict() and "log_alpha" not in agent.state_dict()


def test_drqv2_exploration_std_falls_linearly_in_frames_then_stays():
    agent = make_agent(config_with("agent.kind=drqv2", "agent.noise_frames=1000"), 1, CPU)
    assert agent.noise_std(0) == pytest.approx(1.0)
    assert agent.noise_std(500) == pytest.approx(0.55)
    assert agent.noise_std(1000) == agent.noise_std(10**6) == pytest.approx(0.1)


def test_drqv2_logs_how_far_past_tanh_the_actor_mean_is():
    """A saturated actor (tanh's gradient near 0) shows in the update log, not only in flat returns."""
    torch.manual_seed(0)
    config = config_with("agent.kind=drqv2", "agent.actor_update_every=1")
    agent = make_agent(config, 1, CPU)
    batch = synthetic_batch(config, 1, np.random.default_rng(0))
    fresh = agent.update(batch, frames=1000)["actor_pre_tanh"]
    with torch.no_grad():
        agent.actor.net[-1].bias.fill_(-30.0)
    saturated = agent.update(batch, frames=1000)["actor_pre_tanh"]
    assert fresh < 3 < 25 < saturated
    np.testing.assert_array_equal(agent.act(batch.obs[0], explore=False), [-1.0])


@pytest.mark.parametrize("kind", ["sac", "drqv2"])
def test_both_learners_update_and_round_trip_their_state(kind):
    torch.manual_seed(0)
    config = config_with(f"agent.kind={kind}")
    agent = make_agent(config, 1, CPU)
    batch = synthetic_batch(config, 1, np.random.default_rng(0))
    metrics = [agent.update(batch, frames=1000) for _ in range(3)][-1]
    assert all(np.isfinite(v) for v in metrics.values()), metrics
    torch.manual_seed(1)
    restored = make_agent(config, 1, CPU)
    restored.load_state_dict(agent.state_dict())
    stack = batch.obs[0]
    np.testing.assert_array_equal(agent.act(stack, explore=False), restored.act(stack, explore=False))


@pytest.mark.parametrize(
    ("overrides", "losses"),
    [
        (["encoder.kind=pixel", "teacher.kind=none"], []),
        (["encoder.kind=pixel", "teacher.kind=none", "agent.auxiliary=true"], ["transition", "reward"]),
        (["teacher.kind=none"], ["transition", "reward"]),
        ([], ["transition", "reward", "knowledge_map", "contrastive"]),
        (["agent.auxiliary=false"], ["knowledge_map", "contrastive"]),
        (["agent.loss_weights.contrastive=0"], ["transition", "reward", "knowledge_map"]),
    ],
    ids=["pixel", "pixel+aux", "semore-none", "semore-sim", "semore-sim-no-aux", "no-contrastive"],
)
def test_each_switch_turns_its_losses_on_and_off(overrides, losses):
    config = config_with(*overrides)
    assert enabled_losses(config) == losses
    agent = make_agent(config, 1, CPU)
    metrics = agent.update(synthetic_batch(config, 1, np.random.default_rng(0)), frames=0)
    assert {"transition", "reward", "knowledge_map", "contrastive"} & set(metrics) == set(losses)
    spreads = {"spread_feature"} | (
        {"spread_semantic", "spread_motion"} if "pixel" not in str(overrides) else set()
    )
    assert spreads <= set(metrics)


def grads_of(module: torch.nn.Module) -> float:
    return sum(float(p.grad.abs().sum()) for p in module.parameters() if p.grad is not None)


def test_the_transition_loss_trains_the_motion_path_only():
    torch.manual_seed(0)
    config = config_with()
    agent = make_agent(config, 1, CPU)
    batch = synthetic_batch(config, 1, np.random.default_rng(0)).to(CPU)
    views = agent.augment(batch, frames=0)
    with torch.no_grad():
        _, targets = agent.targets(views, batch, frames=0)
    encoding = agent.encoder(views.obs)
    agent.aux.losses(encoding, batch, targets, 0.1)["transition"].backward()
    encoder = agent.encoder
    assert grads_of(encoder.motion_convs) > 0 and grads_of(encoder.motion_latent) > 0
    for semantic in (encoder.semantic_convs, encoder.knowledge_head, encoder.semantic_latent):
        assert grads_of(semantic) == 0


def test_the_transition_loss_is_a_cosine_in_a_projected_space():
    """A plain MSE shrinks with the latents' scale (a collapsing latent wins); this loss does not."""
    torch.manual_seed(0)
    heads = AuxiliaryHeads(["transition"], 16, 8, 1, n_step=3, ema_target=True)
    latent, actions = torch.randn(32, 8), torch.randn(32, 3, 1)
    target = heads.project_target(torch.randn(32, 8))
    loss = heads.transition_loss(latent, actions, target)
    assert 0.0 <= float(loss.detach()) <= 2.0
    torch.testing.assert_close(loss, heads.transition_loss(latent, actions, 0.01 * target))
    perfect = heads.predict(latent, actions).detach()
    assert float(heads.transition_loss(latent, actions, 5 * perfect).detach()) == pytest.approx(0.0, abs=1e-6)
    assert heads.target_projection is not None and not heads.target_projection.weight.requires_grad


def test_the_contrastive_loss_leaves_out_samples_with_an_empty_teacher_map():
    torch.manual_seed(0)
    heads = AuxiliaryHeads(["contrastive"], 16, 8, 1, n_step=3, ema_target=True, knowledge_dim=4)
    semantic, knowledge = torch.randn(6, 8), torch.randn(6, 4)
    valid = torch.tensor([True, True, False, True, False, True])
    encoding = Encoding(feature=torch.zeros(6, 16), semantic=semantic)
    targets = AuxTargets(knowledge=knowledge, knowledge_valid=valid)
    loss = heads.losses(encoding, None, targets, 0.1)["contrastive"]
    expected = info_nce(heads.semantic_query(semantic[valid]), heads.knowledge_key(knowledge[valid]), 0.1)
    torch.testing.assert_close(loss, expected)


def test_the_contrastive_key_is_the_target_pass_over_next_obs_under_its_teacher_map():
    torch.manual_seed(0)
    config = config_with("agent.augment_pad=4")
    agent = make_agent(config, 1, CPU)
    batch = synthetic_batch(config, 1, np.random.default_rng(0)).to(CPU)
    views = agent.augment(batch, frames=0)
    with torch.no_grad():
        _, targets = agent.targets(views, batch, frames=0)
        cells = agent.encoder.map_to_cells(views.next_teacher_map)
        semantic = agent.encoder_target(views.next_obs).semantic_map
    pooled = (semantic * cells).sum((2, 3)) / cells.sum((2, 3)).clamp_min(1e-3)
    torch.testing.assert_close(targets.knowledge, pooled)
    torch.testing.assert_close(targets.knowledge_valid, cells.sum((1, 2, 3)) > 0)


def test_the_contrastive_key_costs_no_encoder_pass_of_its_own():
    config = config_with()
    agent = make_agent(config, 1, CPU)
    online = record_inputs(agent.encoder.semantic_convs)
    target = record_inputs(agent.encoder_target.semantic_convs)
    agent.update(synthetic_batch(config, 1, np.random.default_rng(0)), frames=0)
    # One online pass over obs and one over next_obs (the actor's next action), one target pass.
    assert (len(online), len(target)) == (2, 1)


def test_composited_views_are_added_to_the_clean_ones_and_every_target_stays_clean():
    torch.manual_seed(0)
    config = config_with("encoder.gate=true", "augment.composite=0.25")
    agent = make_agent(config, 1, CPU)
    batch = synthetic_batch(config, 1, np.random.default_rng(0)).to(CPU)
    clean = agent._frames(batch.obs)  # pad 0: the shift moves nothing
    views = agent.augment(batch, frames=0)
    n, m = len(batch.obs), len(batch.obs) // 4
    assert len(views.obs) == n + m
    assert torch.equal(views.obs[:n], clean)  # every clean view stays in the batch
    keep = batch.foreground[:m].repeat_interleave(3, dim=1)  # every frame's own mask, per channel
    composited = views.obs[n:]
    assert torch.equal(composited[keep], clean[:m][keep])
    assert (composited[~keep] != clean[:m][~keep]).float().mean() > 0.9
    # The maps move with their views: a composited view has its clean row's foreground.
    assert torch.equal(views.foreground[n:], views.foreground[:m])
    # The TD target and the auxiliary targets read next_obs and the teacher only.
    with torch.no_grad():
        torch.manual_seed(1)
        target, aux = agent.targets(views, batch, frames=0)
        torch.manual_seed(1)
        plain, plain_aux = agent.targets(replace(views, obs=clean), batch, frames=0)
    torch.testing.assert_close(target, plain)
    torch.testing.assert_close(aux.next_latent, plain_aux.next_latent)
    assert len(target) == n


def test_composited_views_join_the_critic_batch_from_composite_from_frames_on():
    torch.manual_seed(0)
    config = config_with("encoder.gate=true", "augment.composite=0.5", "augment.composite_from_frames=1000")
    agent = make_agent(config, 1, CPU)
    batch = synthetic_batch(config, 1, np.random.default_rng(0))
    critic_rows = []
    agent.critic.register_forward_pre_hook(lambda module, args: critic_rows.append(len(args[0])))
    before = agent.update(batch, frames=999)
    first = len(critic_rows)
    after = agent.update(batch, frames=1000)
    n = len(batch.obs)
    assert critic_rows[0] == n and "critic_composited" not in before
    assert critic_rows[first] == n + n // 2 and float(after["critic_composited"]) > 0


def test_composite_weight_sets_the_composited_views_share_of_the_td_loss():
    def first_update(weight):
        torch.manual_seed(0)
        config = config_with("augment.composite=0.5", f"augment.composite_weight={weight}")
        agent = make_agent(config, 1, CPU)
        metrics = agent.update(synthetic_batch(config, 1, np.random.default_rng(0)), frames=0)
        return float(metrics["critic"]), float(metrics["critic_composited"])

    n = config_with().agent.batch_size
    m = n // 2
    clean_only, composited = first_update(0.0)  # the same views and the same TD errors each time
    for weight in (0.25, 1.0):
        critic, _ = first_update(weight)
        assert critic == pytest.approx(
            (n * clean_only + weight * m * composited) / (n + weight * m), rel=1e-5
        )
    assert composited != pytest.approx(clean_only)


def test_the_actor_learns_on_the_clean_views_only():
    torch.manual_seed(0)
    config = config_with("encoder.gate=true", "augment.composite=0.5")
    agent = make_agent(config, 1, CPU)
    batch = synthetic_batch(config, 1, np.random.default_rng(0))
    seen = []  # the rows of every actor pass: the TD target's and the actor update's
    agent.actor.register_forward_pre_hook(lambda module, args: seen.append(len(args[0])))
    for _ in range(config.agent.actor_update_every):
        agent.update(batch, frames=0)
    assert len(seen) == config.agent.actor_update_every + 1
    assert set(seen) == {len(batch.obs)}


def test_with_the_consistency_loss_the_critic_reads_clean_views_and_composited_features_follow_them():
    torch.manual_seed(0)
    config = config_with("augment.composite=0.5", "augment.composite_loss=consistency")
    agent = make_agent(config, 1, CPU)
    batch = synthetic_batch(config, 1, np.random.default_rng(0))
    critic_rows = []
    agent.critic.register_forward_pre_hook(lambda module, args: critic_rows.append(len(args[0])))
    metrics = agent.update(batch, frames=0, diagnose=True)
    assert critic_rows == [len(batch.obs)]
    assert float(metrics["consistency"]) > 0 and float(metrics["grad_consistency"]) > 0


def test_the_input_gates_masker_learns_the_teachers_foreground_from_the_foreground_loss_alone():
    torch.manual_seed(0)
    config = config_with("encoder.gate=true", "encoder.gate_at=input", "augment.composite=0.5")
    agent = make_agent(config, 1, CPU)
    batch = synthetic_batch(config, 1, np.random.default_rng(0))
    masker = [p.detach().clone() for p in agent.encoder.masker.parameters()]
    metrics = agent.update(batch, frames=0)
    assert torch.isfinite(metrics["foreground"]) and metrics["foreground"] > 0
    assert any(not torch.equal(p, q) for p, q in zip(agent.encoder.masker.parameters(), masker, strict=True))
    # Detached from the critic: with the foreground loss off, nothing moves the masker.
    config = config_with(
        "encoder.gate=true",
        "encoder.gate_at=input",
        "augment.composite=0.5",
        "agent.loss_weights.foreground=0",
    )
    agent = make_agent(config, 1, CPU)
    masker = [p.detach().clone() for p in agent.encoder.masker.parameters()]
    agent.update(batch, frames=0)
    assert all(torch.equal(p, q) for p, q in zip(agent.encoder.masker.parameters(), masker, strict=True))


def test_a_logged_update_gives_each_loss_gradient_norm_on_the_encoder_trunk():
    config = config_with("encoder.gate=true", "augment.composite=0.5")
    agent = make_agent(config, 1, CPU)
    batch = synthetic_batch(config, 1, np.random.default_rng(0))
    quiet = agent.update(batch, frames=0)
    logged = agent.update(batch, frames=0, diagnose=True)
    assert not any(k.startswith("grad_") for k in quiet)
    names = ["critic", "transition", "reward", "knowledge_map", "foreground", "contrastive"]
    assert {f"grad_{n}" for n in names} == {k for k in logged if k.startswith("grad_")}
    assert all(float(logged[f"grad_{n}"]) > 0 for n in names)


@pytest.mark.parametrize(("gate", "trained"), [("predicted", True), ("detached", False)])
def test_with_a_detached_gate_only_the_map_loss_trains_the_knowledge_head(gate, trained):
    torch.manual_seed(0)
    config = config_with(f"encoder.knowledge_gate={gate}")
    agent = make_agent(config, 1, CPU)
    # As after some training: the attention branches have grown from their zero start.
    torch.nn.init.normal_(agent.encoder.semantic_attention.out.weight)
    x = agent._frames(synthetic_batch(config, 1, np.random.default_rng(0)).obs)
    agent.encoder(x).feature.sum().backward()  # what the critic's gradient reaches
    assert (grads_of(agent.encoder.knowledge_head) > 0) == trained
