"""Random batches with the replay's shapes and dtypes: the fixed input of the pinned-update test
and of the update-time benchmarks."""

from __future__ import annotations

import numpy as np

from training.config import RunConfig
from training.replay import Batch


def synthetic_batch(
    config: RunConfig, action_dim: int, rng: np.random.Generator, batch_size: int | None = None
) -> Batch:
    """A batch of random content with the replay's shapes and dtypes, for speed benchmarks and tests."""
    b = batch_size or config.agent.batch_size
    k, s, n, m = config.env.frame_stack, config.env.image_size, config.agent.n_step, config.teacher.map_size
    # Sparse binary masks, like a teacher's: a few cells of key objects on an empty background.
    sparse_masks = (255 * (rng.random((b, m, m)) < 0.1)).astype(np.uint8)
    teacher = config.teacher.kind != "none"
    return Batch(
        obs=rng.integers(0, 256, (b, k, s, s, 3), dtype=np.uint8),
        action=rng.uniform(-1, 1, (b, action_dim)).astype(np.float32),
        reward=rng.uniform(0, 1, b).astype(np.float32),
        discount=np.full(b, config.agent.gamma**n, np.float32),
        next_obs=rng.integers(0, 256, (b, k, s, s, 3), dtype=np.uint8),
        step_reward=rng.uniform(0, 1, b).astype(np.float32),
        actions=rng.uniform(-1, 1, (b, n, action_dim)).astype(np.float32),
        knowledge_map=sparse_masks if teacher else None,
        next_knowledge_map=sparse_masks[::-1].copy() if teacher else None,
        # A foreground block in the middle of every frame: the bodies in front of sky and floor.
        foreground=np.pad(
            np.ones((b, k, s // 2, s // 2), bool), ((0, 0), (0, 0), (s // 4,) * 2, (s // 4,) * 2)
        )
        if config.uses_foreground
        else None,
    )


def synthetic_batches(configs: dict[str, RunConfig], action_dim: int) -> dict[str, Batch]:
    """One synthetic batch per config, each from the same seed, for agents timed side by side."""
    return {name: synthetic_batch(c, action_dim, np.random.default_rng(0)) for name, c in configs.items()}
