"""The training loop, top to bottom: collect, update, evaluate, checkpoint; resumable at any point."""

from __future__ import annotations

import json
import random
import time
from pathlib import Path

import numpy as np
import torch

from training import checkpoint
from training.agent import make_agent
from training.config import RunConfig, save_config
from training.envs import make_env
from training.logger import RunLogger, plot_curve
from training.progress import Progress
from training.replay import ReplayBuffer
from training.rollout import run_episodes, write_video
from training.teachers import LabelPipeline, make_teacher

EVAL_SEED_OFFSET = 10_000
UPDATE_LOG_EVERY = 100


def resolve_device(name: str) -> torch.device:
    if name == "cuda" and not torch.cuda.is_available():
        raise RuntimeError("device: 'cuda' was asked for but torch sees no CUDA device")
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    return torch.device(name)


class Trainer:
    def __init__(self, config: RunConfig, out_dir: Path, resume: bool = False) -> None:
        self.config, self.out_dir = config, out_dir
        out_dir.mkdir(parents=True, exist_ok=True)
        self.checkpoint_path = out_dir / checkpoint.CHECKPOINT_NAME
        self.replay_path = out_dir / checkpoint.REPLAY_NAME
        if self.checkpoint_path.exists() and not resume:
            raise FileExistsError(
                f"{out_dir} already holds a run: pass --resume to continue it, or pick --out"
            )
        save_config(config, out_dir / "config.yaml")

        random.seed(config.seed)
        torch.manual_seed(config.seed)
        self.rng = np.random.default_rng(config.seed)
        self.device = resolve_device(config.device)
        self.env = make_env(config.env, config.seed)
        self.eval_env = make_env(config.env, config.seed + EVAL_SEED_OFFSET)
        self.teacher = (
            make_teacher(config.teacher, config.env.id, self.device) if config.uses_teacher else None
        )
        embedding_dim = self.teacher.embedding_dim if self.teacher is not None else None
        self.agent = make_agent(config, self.env.action_dim, self.device, embedding_dim)
        self.replay = ReplayBuffer(
            capacity=min(config.train.replay_capacity, config.train.frames // config.env.action_repeat + 10),
            frame_shape=self.env.frame_shape,
            action_dim=self.env.action_dim,
            frame_stack=config.env.frame_stack,
            n_step=config.agent.n_step,
            gamma=config.agent.gamma,
            map_size=config.teacher.map_size if self.teacher is not None else None,
            embedding_dim=embedding_dim,
            foreground=config.uses_foreground,
        )
        self.labels = None
        if self.teacher is not None:
            worker = config.teacher.worker
            background = worker == "thread" or (worker == "auto" and self.device.type == "cuda")
            self.labels = LabelPipeline(self.teacher, self.replay, config.teacher.batch_size, background)
        self.logger = RunLogger(out_dir)
        self.step = 0  # agent steps; see `frames`
        self.episode = 0
        self.elapsed = 0.0  # wall seconds of training, summed over resumed sessions
        self.eval_seconds = 0.0  # the part of elapsed spent evaluating
        self.curve: list[dict] = []
        self.finished = False  # reached train.frames or train.stop_at_return
        self.progress: Progress | None = None  # while run() runs
        if resume:
            if self.checkpoint_path.exists():
                self._restore()
            # What was logged past the checkpoint (everything, without one) is logged again.
            self.logger.drop_rows_after(self.frames)

    @property
    def frames(self) -> int:
        return checkpoint.frames_after(self.step, self.config.env)

    def run(self) -> dict:
        cfg = self.config.train
        repeat = self.config.env.action_repeat
        started = time.perf_counter() - self.elapsed
        self.progress = progress = Progress(cfg.frames, self.frames)
        logged_bucket = -1
        done = self.finished or self.frames >= cfg.frames
        while not done:
            step = self.env.reset()
            self._label(self.replay.add_first(step.frame), step.frame, 0)
            episode_return = 0.0
            episode_steps = 0
            while not step.last and not done:
                if self.frames < cfg.seed_frames:
                    action = self.rng.uniform(-1.0, 1.0, self.env.action_dim).astype(np.float32)
                else:
                    action = self.agent.act(step.stack, explore=True, frames=self.frames)
                step = self.env.step(self.env.from_unit(action))  # the replay keeps the agent's unit
                t = self.replay.add(action, step.reward, step.frame, step.terminal)
                episode_steps += 1
                self._label(t, step.frame, episode_steps)
                episode_return += step.reward
                self.step += 1
                progress.update(repeat)

                if self.frames >= cfg.seed_frames and self.step % cfg.update_every_steps == 0:
                    if self.agent.updates == 0 and self.labels is not None:
                        self.labels.drain()  # the first update needs labelled transitions
                    for i in range(cfg.updates_per_step):
                        batch = self.replay.sample(self.config.agent.batch_size, self.rng)
                        # The last update of the step is logged: the first, then one every 100.
                        logged = i == cfg.updates_per_step - 1 and (
                            (self.agent.updates + 1) // UPDATE_LOG_EVERY != logged_bucket
                        )
                        metrics = self.agent.update(batch, self.frames, diagnose=logged)
                    if logged:
                        logged_bucket = self.agent.updates // UPDATE_LOG_EVERY
                        self.logger.log("update", self.frames, {k: float(v) for k, v in metrics.items()})

                self.elapsed = time.perf_counter() - started
                if self.frames % cfg.eval_every_frames < repeat:
                    reached = self.evaluate()
                    done = done or reached
                if self.frames % cfg.checkpoint_every_frames < repeat:
                    self.save()
                done = done or self.frames >= cfg.frames
            if step.last:
                self.episode += 1
                self.logger.log("train", self.frames, {"return": episode_return, "episode": self.episode})
                progress.note_train(episode_return)
        progress.close()
        if self.labels is not None:
            self.labels.close()
        if not self.curve or self.curve[-1]["frames"] != self.frames:
            self.evaluate()
        self.finished = True
        self.save()
        self.logger.close()
        return self.summary()

    def _label(self, t: int, frame: np.ndarray, index: int) -> None:
        if self.labels is not None:
            self.labels.submit(t, self.env, frame, index)

    def evaluate(self) -> bool:
        """Mean return of the deterministic policy; True when it reaches train.stop_at_return."""
        cfg = self.config.train
        video: list[np.ndarray] | None = [] if cfg.video else None
        tic = time.perf_counter()
        stats = run_episodes(
            self.eval_env,
            lambda s: self.eval_env.from_unit(self.agent.act(s, explore=False)),
            cfg.eval_episodes,
            video,
        )
        eval_seconds = time.perf_counter() - tic
        point = {
            "frames": self.frames,
            "seconds": round(self.elapsed + eval_seconds, 1),
            "return": round(stats.mean, 2),
            "std": round(stats.std, 2),
        }
        self.elapsed += eval_seconds
        self.eval_seconds += eval_seconds
        self.curve.append(point)
        if self.progress is not None:
            self.progress.note_eval(point)
        self.logger.log(
            "eval", self.frames, {"return": stats.mean, "std": stats.std, "seconds": point["seconds"]}
        )
        if video:
            write_video(video, self.out_dir / "eval.mp4")
        plot_curve(self.curve, self.out_dir / "curve.png", self.config.env.id)
        (self.out_dir / "summary.json").write_text(json.dumps(self.summary(), indent=2))
        return cfg.stop_at_return is not None and stats.mean >= cfg.stop_at_return

    def summary(self) -> dict:
        best = max((p["return"] for p in self.curve), default=None)
        return {
            "env": self.config.env.id,
            "encoder": self.config.encoder.kind,
            "teacher": self.teacher.kind if self.teacher is not None else "none",
            "frames": self.frames,
            "seconds": round(self.elapsed, 1),
            "eval_seconds": round(self.eval_seconds, 1),
            "best_return": best,
            "curve": self.curve,
        } | self._teacher_cost()

    def _teacher_cost(self) -> dict:
        """Where the teacher's time went: labelling, and the part of it the trainer waited for."""
        if self.labels is None:
            return {}
        cost = {
            "teacher_seconds": round(self.labels.label_seconds, 1),
            "teacher_wait_seconds": round(self.labels.wait_seconds, 1),
            "teacher_share": round(self.labels.wait_seconds / max(self.elapsed, 1e-9), 4),
        }
        return cost | self.teacher.stats()

    def save(self) -> None:
        if self.labels is not None:
            self.labels.drain()  # the checkpoint's replay holds every label
        if self.config.train.save_replay:
            self.replay.save(self.replay_path)
        checkpoint.Checkpoint(
            config=self.config,
            agent=self.agent.state_dict(),
            step=self.step,
            episode=self.episode,
            elapsed=self.elapsed,
            eval_seconds=self.eval_seconds,
            finished=self.finished,
            curve=self.curve,
            rng=checkpoint.rng_state(self.rng),
            teacher_seconds=(self.labels.label_seconds, self.labels.wait_seconds) if self.labels else None,
            replay_size=self.replay.size,
            env=checkpoint.TrainedEnv(
                id=self.config.env.id,
                action_low=self.env.action_low.tolist(),
                action_high=self.env.action_high.tolist(),
            ),
        ).save(self.checkpoint_path)

    def _restore(self) -> None:
        saved = checkpoint.Checkpoint.load(self.checkpoint_path, self.device)
        self.agent.load_state_dict(saved.agent)
        self.step, self.episode = saved.step, saved.episode
        self.elapsed, self.curve, self.finished = saved.elapsed, saved.curve, saved.finished
        self.eval_seconds = saved.eval_seconds
        checkpoint.restore_rng(saved.rng, self.rng)
        if self.labels is not None and saved.teacher_seconds is not None:
            self.labels.label_seconds, self.labels.wait_seconds = saved.teacher_seconds
        if self.replay_path.exists():
            self.replay.load(self.replay_path)
        if self.finished:
            print(f"{self.out_dir} already finished at {self.frames} frames: nothing to resume")
        else:
            print(
                f"resumed {self.out_dir} at {self.frames} frames (replay: {len(self.replay)} transitions); "
                "the interrupted episode restarts"
            )
