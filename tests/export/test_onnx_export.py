"""Export: parity with torch, the spec inside the file, clear errors, agreement in simulation."""

import numpy as np
import onnx
import pytest
import torch

from export.onnx_export import FP32_TOLERANCE, ParityError, export_checkpoint, policy_spec
from semore_runtime.policy import OnnxPolicy, PolicyLoadError
from semore_runtime.spec import SPEC_METADATA_KEY, PolicySpec
from tests.helpers.training import CARTPOLE, TINY, make_checkpoint, run_module, save_checkpoint
from training.agent import make_agent
from training.checkpoint import Checkpoint
from training.config import load_config
from training.envs import make_env
from training.evaluate import env_config_for


@pytest.fixture(scope="module", params=["semore-sac", "pixel-sac", "semore-drqv2"])
def exported(request, tmp_path_factory):
    folder = tmp_path_factory.mktemp(request.param)
    encoder, learner = request.param.split("-")
    config, agent = make_checkpoint(folder / "checkpoint.pt", encoder, learner=learner)
    report = export_checkpoint(folder / "checkpoint.pt", folder / "policy.onnx")
    return config, agent, report


def test_parity_for_both_encoders_on_real_and_random_frames(exported):
    _, _, report = exported
    assert set(report.max_abs_diff) == {"random_b1", "random_b32", "real_b1", "real_b32"}
    assert report.worst <= FP32_TOLERANCE
    print(f"{report.spec.encoder_kind}: max |onnx - torch| = {report.worst:.2e}")


def test_the_attention_ablation_exports_with_parity_and_names_its_switch_in_the_spec(tmp_path):
    make_checkpoint(tmp_path / "checkpoint.pt", "semore", extra=("encoder.knowledge_attention=false",))
    report = export_checkpoint(tmp_path / "checkpoint.pt", tmp_path / "policy.onnx")
    assert report.worst <= FP32_TOLERANCE
    assert report.spec.encoder_options["knowledge_attention"] is False


@pytest.mark.parametrize("place", ["features", "input"])
def test_both_gate_places_export_with_parity_and_name_it_in_the_spec(tmp_path, place):
    make_checkpoint(
        tmp_path / "checkpoint.pt", "semore", extra=("encoder.gate=true", f"encoder.gate_at={place}")
    )
    report = export_checkpoint(tmp_path / "checkpoint.pt", tmp_path / "policy.onnx")
    assert report.worst <= FP32_TOLERANCE
    assert report.spec.encoder_options["gate"] is True
    assert report.spec.encoder_options["gate_at"] == place


def test_file_is_valid_self_describing_and_batch_dynamic(exported):
    config, _, report = exported
    model = onnx.load(str(report.path))
    onnx.checker.check_model(model, full_check=True)
    assert [i.name for i in model.graph.input] == ["frames"] and [o.name for o in model.graph.output] == [
        "action"
    ]
    assert not any(t.data_location == onnx.TensorProto.EXTERNAL for t in model.graph.initializer)
    policy = OnnxPolicy(report.path, device="cpu")
    assert policy.spec == report.spec
    assert policy.spec.encoder_kind == config.encoder.kind and policy.spec.training_frames == 123 * 8
    assert policy.spec.agent_kind == config.agent.kind
    assert policy.spec.encoder_options["fusion"] == config.encoder.fusion
    assert "knowledge_gate" not in policy.spec.encoder_options  # trains differently, same graph
    assert policy.spec.action_repeat == 8 and policy.spec.stack_shape == (3, 48, 48, 3)
    frames = np.random.default_rng(0).integers(0, 256, (7, 3, 48, 48, 3), dtype=np.uint8)
    actions = policy.act(frames)
    assert actions.shape == (7, 1) and actions.dtype == np.float32
    np.testing.assert_allclose(policy.act(frames[0]), actions[0], atol=1e-6)
    assert (actions >= -1).all() and (actions <= 1).all()


def test_actions_land_in_the_env_bounds(tmp_path):
    config = load_config(
        overrides=[*TINY, "env.id=gym:CarRacing-v3", "teacher.objects=[road, car]", "env.image_size=48"]
    )
    torch.manual_seed(0)
    agent = make_agent(config, 3, torch.device("cpu"))
    low, high = [-1.0, 0.0, 0.0], [1.0, 1.0, 1.0]
    save_checkpoint(tmp_path / "checkpoint.pt", config, agent, low, high, step=1)
    report = export_checkpoint(tmp_path / "checkpoint.pt", tmp_path / "policy.onnx", use_env_frames=False)
    frames = np.random.default_rng(1).integers(0, 256, (32, 3, 48, 48, 3), dtype=np.uint8)
    actions = OnnxPolicy(report.path, device="cpu").act(frames)
    assert (actions[:, 0] >= -1).all() and (actions[:, 1:] >= 0).all() and (actions <= 1).all()
    with torch.no_grad():
        unit = agent.actor.mean_action(
            agent.encoder(
                torch.as_tensor(frames).permute(0, 1, 4, 2, 3).reshape(32, 9, 48, 48).float() / 255 - 0.5
            ).feature
        ).numpy()
    # The agent's [-1, 1] mapped linearly onto the bounds: -1 to low, 1 to high.
    np.testing.assert_allclose(
        actions, np.array(low) + (unit + 1) / 2 * (np.array(high) - np.array(low)), atol=1e-4
    )


def test_the_spec_keeps_exactly_the_encoder_settings_that_shape_the_graph():
    """A field added to EncoderConfig fails here until it is sorted: into the spec's encoder_options
    (it changes the graph, as encoder.gate does), or marked TRAIN_ONLY in training/config.py."""
    config = load_config(overrides=[*TINY, *CARTPOLE])
    options = policy_spec(config, [-1.0], [1.0]).encoder_options
    assert options == {
        "channels": 8,
        "layers": 2,
        "feature_dim": 16,
        "attention_grid": 3,
        "semantic_input": "newest",
        "knowledge_attention": True,
        "motion_path": "light",
        "fusion": "concat",
        "fusion_norm": "joint",
        "gate": False,
        "gate_at": "features",
    }


def test_checkpoint_and_onnx_evaluations_agree_on_seeded_episodes(exported):
    """Lockstep on two identically seeded envs, one driven by the checkpoint, one by the ONNX file.

    Their actions differ by ~1e-7, which after tens of steps can flip one pixel, after which the
    (chaotic) dynamics drift apart; so returns are compared over the first 30 steps, and actions
    on every step of whole episodes, on the ONNX run's own observations.
    """
    config, agent, report = exported
    policy = OnnxPolicy(report.path, device="cpu")
    spec = policy.spec
    onnx_env, torch_env = make_env(env_config_for(spec, None), seed=7), make_env(config.env, seed=7)
    for _ in range(2):
        onnx_step, torch_step = onnx_env.reset(), torch_env.reset()
        onnx_return = torch_return = 0.0
        steps = 0
        while not onnx_step.last:
            # Both in the env's bounds: the file's action as it comes, the agent's through the trainer's boundary.
            onnx_action = policy.act(onnx_step.stack)
            agent_action = onnx_env.from_unit(agent.act(onnx_step.stack, explore=False))
            np.testing.assert_allclose(onnx_action, agent_action, atol=1e-4)
            onnx_step = onnx_env.step(onnx_action)
            if steps < 30:
                torch_step = torch_env.step(torch_env.from_unit(agent.act(torch_step.stack, explore=False)))
                onnx_return, torch_return = onnx_return + onnx_step.reward, torch_return + torch_step.reward
            steps += 1
        assert steps == 1000 // config.env.action_repeat
        assert onnx_return == pytest.approx(torch_return, rel=1e-2)


def test_spec_validation_errors_name_the_field():
    fields = dict(
        height=8,
        width=8,
        frame_stack=3,
        action_dim=2,
        action_low=[-1, -1],
        action_high=[1, 1],
        env_id="x",
        encoder_kind="semore",
        teacher_kind="sim",
        training_frames=0,
    )
    PolicySpec(**fields)
    with pytest.raises(ValueError, match="action_low: the spec says .*action_dim is 2"):
        PolicySpec(**{**fields, "action_low": [-1]})
    with pytest.raises(ValueError, match="encoder_kind"):
        PolicySpec(**{**fields, "encoder_kind": "resnet"})
    with pytest.raises(ValueError, match="below"):
        PolicySpec(**{**fields, "action_low": [1, 1]})


def test_unusable_files_give_clear_errors(tmp_path, exported):
    _, _, report = exported
    with pytest.raises(FileNotFoundError, match="not found"):
        OnnxPolicy(tmp_path / "missing.onnx")
    text = tmp_path / "notes.onnx"
    text.write_text("this is not a model")
    with pytest.raises(PolicyLoadError, match="not a loadable ONNX model"):
        OnnxPolicy(text)
    corrupted = tmp_path / "corrupted.onnx"
    data = report.path.read_bytes()
    corrupted.write_bytes(data[: len(data) // 2])
    with pytest.raises(PolicyLoadError):
        OnnxPolicy(corrupted)
    model = onnx.load(str(report.path))
    del model.metadata_props[:]
    bare = tmp_path / "bare.onnx"
    onnx.save(model, str(bare))
    with pytest.raises(PolicyLoadError, match=SPEC_METADATA_KEY):
        OnnxPolicy(bare)


def test_a_diverged_checkpoint_is_refused_and_nothing_is_written(tmp_path):
    path = tmp_path / "checkpoint.pt"
    make_checkpoint(path, "pixel")
    diverged = Checkpoint.load(path)
    actor = diverged.agent["actor"]
    last_bias = [k for k in actor if k.endswith("bias")][-1]
    actor[last_bias].fill_(float("nan"))  # what a diverged run leaves: NaN actions everywhere
    diverged.save(path)
    with pytest.raises(ParityError, match="non-finite actions"):
        export_checkpoint(path, tmp_path / "policy.onnx", use_env_frames=False)
    assert not (tmp_path / "policy.onnx").exists()


def test_bad_frames_are_rejected(exported):
    policy = OnnxPolicy(exported[2].path, device="cpu")
    with pytest.raises(ValueError, match="shape"):
        policy.act(np.zeros((3, 32, 32, 3), np.uint8))
    with pytest.raises(ValueError, match="uint8"):
        policy.act(np.zeros((3, 48, 48, 3), np.float32))


def test_cuda_without_a_gpu_is_an_error_not_a_fallback(exported):
    import onnxruntime as ort

    from semore_runtime.policy import DeviceUnavailableError, _cuda_driver_present

    if _cuda_driver_present():
        pytest.skip("a GPU is present")
    with pytest.raises(DeviceUnavailableError, match="cuda"):
        OnnxPolicy(exported[2].path, device="cuda")
    assert OnnxPolicy(exported[2].path, device="auto").provider == "CPUExecutionProvider"
    assert ort.get_available_providers()


def test_export_and_eval_commands(tmp_path):
    make_checkpoint(tmp_path / "checkpoint.pt", "semore")
    out = run_module("export.cli", "--checkpoint", tmp_path / "checkpoint.pt", "--out", tmp_path / "p.onnx")
    assert out.returncode == 0, out.stderr
    assert "parity vs torch" in out.stdout
    result = run_module(
        "training.evaluate", "--model", tmp_path / "p.onnx", "--episodes", 1,
        "--json", tmp_path / "e.json", "--perturb", "occlusion",
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert "return" in result.stdout and "p99" in result.stdout
    missing = run_module("export.cli", "--checkpoint", tmp_path / "none.pt", "--out", tmp_path / "x.onnx")
    assert missing.returncode == 1 and "no checkpoint" in missing.stderr
    assert not (tmp_path / "x.onnx").exists()
