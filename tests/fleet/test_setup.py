"""What semore-fleet checks before Ray starts: its options (typed in fleet.config, made into
options by fleet.cli) and that the messages survive the pickling Ray Serve's proxy applies."""

from __future__ import annotations

import pickle

import pytest

from fleet.cli import main
from fleet.config import ReplicaConfig, UpConfig
from semore_runtime.proto_gen.semore.v1 import policy_pb2


def test_every_setting_is_an_option_with_its_default(capsys):
    with pytest.raises(SystemExit):
        main(["up", "--help"])
    shown = capsys.readouterr().out
    for name in UpConfig.model_fields:
        assert "--" + name.replace("_", "-") in shown
    assert "--autoscale MIN:MAX" in shown and "(default: 9000)" in shown


@pytest.mark.parametrize(
    ("options", "message"),
    [
        (["--replicas", "2", "--autoscale", "1:3"], "--replicas and --autoscale exclude each other"),
        (["--autoscale", "3"], "--autoscale: --autoscale takes MIN:MAX"),
        (["--autoscale", "4:2"], "0 <= MIN <= MAX"),
        (["--version", "no spaces"], "--version: String should match pattern"),
        (["--max-batch", "0"], "--max-batch: Input should be greater than or equal to 1"),
    ],
)
def test_bad_options_stop_the_command(options, message, capsys):
    with pytest.raises(SystemExit) as stopped:
        main(["up", "--model", "policy.onnx", *options])
    assert stopped.value.code == 2
    assert message in capsys.readouterr().err


def test_a_file_that_is_no_policy_stops_up_before_ray_starts(tmp_path, capsys):
    (tmp_path / "notes.onnx").write_text("not a model")
    assert main(["up", "--model", str(tmp_path / "missing.onnx")]) == 2
    assert "policy file not found" in capsys.readouterr().err
    assert main(["up", "--model", str(tmp_path / "notes.onnx")]) == 2
    assert "is not a loadable ONNX model" in capsys.readouterr().err


def test_replicas_get_only_what_they_run_with(tmp_path):
    """A replica is built from its own settings, not from the replica count or the cluster's address."""
    up = UpConfig(model=tmp_path / "p.onnx", replicas=3, address="auto", num_cpus=0.5)
    assert up.replica_config() == ReplicaConfig(model=tmp_path / "p.onnx", num_cpus=0.5)
    assert UpConfig(model="relative.onnx").model.is_absolute()
    assert (up.device, UpConfig(model="p.onnx", num_gpus=0.5).device) == ("cpu", "cuda")


def test_messages_pickle_by_their_package_path():
    """Ray Serve's gRPC proxy pickles each request to a replica: the class must be importable."""
    request = policy_pb2.ActRequest(seq=7, frames=[policy_pb2.Frame(data=b"\x01\x02", height=1)])
    assert type(request).__module__ == policy_pb2.__name__
    assert pickle.loads(pickle.dumps(request)) == request
