"""The robot's path end to end: an exported Semore policy served by semore-serve, evaluated in
simulation through the server, gives what the in-process evaluation gives."""

import json
import re
import threading
import time

from devkit.tiny_policy import build_tiny_policy
from export.onnx_export import export_checkpoint
from serve.server import build_server
from tests.helpers.training import make_checkpoint
from training.evaluate import main as semore_eval


def test_semore_eval_through_the_server_matches_in_process(tmp_path):
    make_checkpoint(tmp_path / "checkpoint.pt", "semore")
    policy = export_checkpoint(
        tmp_path / "checkpoint.pt", tmp_path / "policy.onnx", use_env_frames=False
    ).path
    server = build_server(model=policy, port=0, device="cpu").start()
    try:
        common = ["--episodes", "2", "--seed", "3"]
        assert (
            semore_eval(["--server", server.address, *common, "--json", str(tmp_path / "served.json")]) == 0
        )
    finally:
        server.stop(grace=0)
    assert semore_eval(["--model", str(policy), *common, "--json", str(tmp_path / "local.json")]) == 0
    served = json.loads((tmp_path / "served.json").read_text())
    local = json.loads((tmp_path / "local.json").read_text())
    assert served["env"] == local["env"] == "dmc:cartpole-balance"
    # Same file, same stacks (the server's FrameStack), same seeded episodes: the same first steps.
    # Thread counts differ, so actions may differ in the last float bits and episodes may drift.
    assert abs(served["mean_return"] - local["mean_return"]) < 0.15 * local["mean_return"]
    assert served["latency_ms_p50"] > 0


def test_semore_eval_names_a_server_lost_mid_episode(tmp_path, capsys):
    policy = build_tiny_policy(
        tmp_path / "policy.onnx", action_dim=1, spec_overrides={"env_id": "dmc:cartpole-balance"}
    )
    server = build_server(model=policy, port=0, device="cpu").start()

    def stop_once_streaming() -> None:
        deadline = time.monotonic() + 60
        while server.active_streams == 0 and time.monotonic() < deadline:
            time.sleep(0.01)
        time.sleep(0.2)  # some steps into the first episode
        server.stop(grace=0)

    stopper = threading.Thread(target=stop_once_streaming)
    stopper.start()
    try:
        code = semore_eval(["--server", server.address, "--episodes", "50"])
    finally:
        stopper.join()
    assert code == 1
    err = capsys.readouterr().err
    # UNAVAILABLE when the GOAWAY arrives first; on a loaded machine the client's reconnect may
    # outlive its step deadline first. Either way the user reads what stopped the evaluation.
    assert re.search(r"semore-eval: the evaluation stopped mid-episode: (UNAVAILABLE|DEADLINE_EXCEEDED)", err)
    assert "Traceback" not in err
