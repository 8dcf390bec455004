import pytest

from tests.helpers.training import ROOT
from training.config import ConfigError, load_config


def test_every_shipped_config_validates():
    paths = sorted((ROOT / "configs").rglob("*.yaml"))
    assert len(paths) >= 7
    for path in paths:
        load_config(path)


def test_overrides_apply_with_yaml_types():
    config = load_config(ROOT / "configs/quickstart.yaml", ["agent.lr=3e-4", "train.video=false"])
    assert config.agent.lr == pytest.approx(3e-4)
    assert config.train.video is False


@pytest.mark.parametrize(
    ("override", "path"),
    [
        ("agent.lrr=1", "agent.lrr"),
        ("agent.lr=fast", "agent.lr"),
        ("env.frame_stack=1", "env.frame_stack"),
        ("encoder.kind=resnet", "encoder.kind"),
        ("agent.loss_weights.contrastive=-1", "agent.loss_weights.contrastive"),
        ("teacher.objects=[]", "teacher.objects"),
        ("teacher.kind=clip", "teacher.phrases"),
        ("teacher.vlm.every=0", "teacher.vlm.every"),
        ("teacher.vlm.every=weekly", "teacher.vlm.every"),
        ("teacher.clip.precision=int8", "teacher.clip.precision"),
        ("teacher.vlm.generation.top_p=2", "teacher.vlm.generation.top_p"),
    ],
)
def test_a_bad_field_is_named_by_its_path(override, path):
    with pytest.raises(ConfigError) as info:
        load_config(ROOT / "configs/quickstart.yaml", [override])
    assert f"{path}:" in str(info.value)


def test_unknown_section_in_a_file_is_named(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("trainer:\n  frames: 10\n")
    with pytest.raises(ConfigError, match="trainer: Extra inputs"):
        load_config(bad)


def test_cli_reports_the_field_and_exits_2_before_any_work(tmp_path, capsys):
    from training.cli import main

    code = main(
        [
            "--config",
            str(ROOT / "configs/quickstart.yaml"),
            "--set",
            "agent.gamma=2",
            "--out",
            str(tmp_path / "r"),
        ]
    )
    assert code == 2
    assert "agent.gamma" in capsys.readouterr().err
    assert not (tmp_path / "r").exists()


@pytest.mark.parametrize(
    ("overrides", "path"),
    [
        (["encoder.kind=pixel"], "encoder.gate"),  # the quickstart gates; a pixel encoder has no gate
        (["teacher.kind=none"], "encoder.gate"),
        (["teacher.kind=none", "encoder.gate=false"], "augment.composite"),
        (["encoder.gate=false", "encoder.gate_at=input"], "encoder.gate_at"),
    ],
)
def test_a_switch_that_needs_the_teacher_mask_or_the_semore_encoder_is_named(overrides, path):
    with pytest.raises(ConfigError) as info:
        load_config(ROOT / "configs/quickstart.yaml", overrides)
    assert f"{path}:" in str(info.value)


@pytest.mark.parametrize(
    ("overrides", "teacher", "foreground"),
    [
        ([], True, True),
        (["augment.composite=0"], True, True),
        (["encoder.gate=false", "augment.composite=0"], True, False),
        (["encoder.kind=pixel", "encoder.gate=false"], True, True),  # pixel+composite
        (["encoder.kind=pixel", "encoder.gate=false", "augment.composite=0"], False, False),
    ],
)
def test_the_teacher_runs_only_where_something_reads_it(overrides, teacher, foreground):
    config = load_config(ROOT / "configs/quickstart.yaml", overrides)
    assert (config.uses_teacher, config.uses_foreground) == (teacher, foreground)
