"""semore-eval: run an exported policy in simulation, in-process (OnnxPolicy) or through semore-serve.

No torch in the loop: the policy is the ONNX file (or the server), the env is the same pixel env
the policy was trained in, driven as the spec says (image size, frame stack, action repeat).
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import numpy as np
from pydantic import Field, model_validator

from semore_runtime.options import CommandOptions, parse_command
from semore_runtime.policy import Device
from training.perturb import CHOICES, make_perturbation


def env_config_for(spec, env_id: str | None):
    from training.config import EnvConfig

    return EnvConfig(
        id=env_id or spec.env_id,
        image_size=spec.height,
        frame_stack=spec.frame_stack,
        action_repeat=spec.action_repeat,
        camera=spec.camera,
        render_quality=spec.render_quality,
    )


class EvalOptions(CommandOptions):
    """Everything semore-eval can be told; each field is one option."""

    model: Path | None = Field(None, description="policy.onnx, run in-process")
    server: str | None = Field(
        None, description="host:port of a running semore-serve", json_schema_extra={"metavar": "HOST:PORT"}
    )
    env: str | None = Field(None, description="env id (default: the one in the policy spec)")
    episodes: int = Field(10, ge=1, description="episodes to run")
    seed: int = Field(0, description="seed of the env, and of a perturbation's randomness")
    device: Device = Field("auto", description="where an in-process policy runs (auto: CUDA when available)")
    perturb: str | None = Field(
        None,
        description=f"one of: {', '.join(CHOICES)} (video=DIR: the videos and images in DIR over the sky "
        "and floor)",
    )
    perturb_level: float = Field(1.0, description="strength in (0, 1]; 1 is the strongest")
    video: Path | None = Field(None, description="write the first episode as mp4 (or gif)")
    json_path: Path | None = Field(
        None, description="write the figures as JSON", json_schema_extra={"flag": "--json"}
    )
    token_file: Path | None = Field(None, description="bearer token for --server")
    version: str | None = Field(None, description="policy version to ask a semore-fleet --server for")

    @model_validator(mode="after")
    def _one_policy(self) -> EvalOptions:
        if (self.model is None) == (self.server is None):
            raise ValueError("give exactly one of --model and --server")
        return self


def main(argv: list[str] | None = None) -> int:
    args = parse_command(EvalOptions, "semore-eval", __doc__.splitlines()[0], argv)
    os.environ.setdefault("MUJOCO_GL", "egl")

    from training.envs import make_env
    from training.rollout import run_episodes, write_video

    try:
        perturb = make_perturbation(args.perturb, args.seed, args.perturb_level) if args.perturb else None
        if args.model is not None:
            from semore_runtime.policy import OnnxPolicy

            policy = OnnxPolicy(args.model, device=args.device)
            spec, where = policy.spec, f"in-process on {policy.provider}"
            act, on_reset, close = policy.act, None, lambda: None
        else:
            from semore_runtime.client import PolicyClient

            client = PolicyClient(args.server, token_file=args.token_file, version=args.version)
            spec, where = client.spec(), f"through semore-serve at {args.server}"
            session = client.session()
            act, on_reset = (lambda stack: session.step(stack[-1])), session.reset

            def close() -> None:
                session.close()
                client.close()

        env = make_env(env_config_for(spec, args.env), args.seed)
        if perturb is not None:
            env.perturb(perturb)
    except (OSError, ValueError, RuntimeError) as exc:
        print(f"semore-eval: {exc}", file=sys.stderr)
        return 2

    video: list[np.ndarray] | None = [] if args.video else None
    try:
        # The policy's actions are in the env's bounds, which is what the env takes: no conversion.
        stats = run_episodes(env, act, args.episodes, video, on_reset=on_reset)
    except RuntimeError as exc:  # NonFiniteActionError, or a PolicyServerError after the retries
        print(f"semore-eval: the evaluation stopped mid-episode: {exc}", file=sys.stderr)
        return 1
    finally:
        close()
    latency_ms = 1000 * np.asarray(stats.policy_seconds)
    result = {
        "model": str(args.model) if args.model else None,
        "server": args.server,
        "env": env.config.id,
        "episodes": args.episodes,
        "seed": args.seed,
        "perturb": args.perturb,
        "perturb_level": args.perturb_level if args.perturb else None,
        "returns": [round(r, 3) for r in stats.returns],
        "mean_return": round(stats.mean, 3),
        "std_return": round(stats.std, 3),
        "env_steps_per_s": round(stats.steps / stats.seconds, 1),
        "latency_ms_p50": round(float(np.percentile(latency_ms, 50)), 3),
        "latency_ms_p99": round(float(np.percentile(latency_ms, 99)), 3),
    }
    print(
        f"{env.config.id}, {args.episodes} episodes, policy {where}"
        + (f", perturbed: {args.perturb}" if perturb else "")
    )
    print(f"return          {stats.mean:.1f} ± {stats.std:.1f}")
    print(f"env steps/s     {result['env_steps_per_s']:.1f}")
    print(f"policy latency  p50 {result['latency_ms_p50']:.2f} ms, p99 {result['latency_ms_p99']:.2f} ms")
    if video:
        print(f"video           {write_video(video, args.video)}")
    if args.json_path:
        args.json_path.write_text(json.dumps(result, indent=2) + "\n")
        print(f"json            {args.json_path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
