"""Replay buffer storing each frame once and rebuilding K-frame stacks and n-step returns at sampling.

Storing stacked observations would keep every frame K times (and twice more for next
observations); here slot t holds frame t, the action taken from it and the reward that
followed. Slots are addressed by absolute step index t (stored at t % capacity), which makes the
"still in the buffer?" and "same episode?" checks plain integer comparisons.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch

if TYPE_CHECKING:
    from training.teachers.base import Labels


@dataclass
class Batch:
    obs: np.ndarray  # [B, K, H, W, 3] uint8
    action: np.ndarray  # [B, A]: the action taken from obs
    reward: np.ndarray  # [B]: n-step discounted return
    discount: np.ndarray  # [B]: gamma^n for bootstrapping, 0 past a terminal state
    next_obs: np.ndarray  # [B, K, H, W, 3] uint8, n steps later (fewer at an episode's end)
    step_reward: np.ndarray  # [B]: the one-step reward, target of the reward-prediction head
    actions: np.ndarray  # [B, n, A]: the actions between obs and next_obs (zeros past the end)
    knowledge_map: np.ndarray | None  # [B, m, m] uint8 teacher map of obs's newest frame
    knowledge_embedding: np.ndarray | None = None  # [B, D] float16 global teacher embedding of it
    next_knowledge_map: np.ndarray | None = None  # [B, m, m] uint8 teacher map of next_obs's newest frame
    foreground: np.ndarray | None = None  # [B, K, H, W] bool: the teacher's foreground of each obs frame

    def to(self, device: torch.device) -> Batch:
        """The same batch as tensors on `device`; absent fields stay None."""
        return Batch(
            **{k: None if v is None else torch.as_tensor(v, device=device) for k, v in vars(self).items()}
        )


ARRAYS = (
    "frames",
    "maps",
    "foreground",
    "embeddings",
    "labelled",
    "actions",
    "rewards",
    "has_action",
    "terminal",
    "episode_start",
)


class ReplayBuffer:
    def __init__(
        self,
        capacity: int,
        frame_shape: tuple[int, int, int],
        action_dim: int,
        frame_stack: int,
        n_step: int,
        gamma: float,
        map_size: int | None,
        embedding_dim: int | None = None,
        foreground: bool = False,
    ) -> None:
        """foreground: keep the teacher's per-frame foreground mask, one bit a pixel."""
        self.capacity, self.k, self.n, self.gamma = capacity, frame_stack, n_step, gamma
        self.frames = np.zeros((capacity, *frame_shape), dtype=np.uint8)
        self.maps = np.zeros((capacity, map_size, map_size), dtype=np.uint8) if map_size else None
        pixels = frame_shape[0] * frame_shape[1]
        self.foreground = np.zeros((capacity, (pixels + 7) // 8), np.uint8) if foreground else None
        self.embeddings = np.zeros((capacity, embedding_dim), np.float16) if embedding_dim else None
        # Teachers label in batches, after the fact: only labelled frames are sampled as obs.
        self.labelled = np.zeros(capacity, dtype=bool)
        self.actions = np.zeros((capacity, action_dim), dtype=np.float32)
        self.rewards = np.zeros(capacity, dtype=np.float32)
        self.has_action = np.zeros(capacity, dtype=bool)  # slot t has a transition t -> t + 1
        self.terminal = np.zeros(capacity, dtype=bool)  # frame t is a terminal state
        self.episode_start = np.zeros(capacity, dtype=np.int64)  # absolute index of t's first frame
        self.size = 0  # absolute index of the next slot to write
        self._episode_start = 0

    @property
    def nbytes(self) -> int:
        arrays = (getattr(self, name) for name in ARRAYS)
        return sum(a.nbytes for a in arrays if a is not None)

    def __len__(self) -> int:
        return min(self.size, self.capacity)

    def add_first(self, frame: np.ndarray) -> int:
        """The first frame of an episode; returns its absolute index, the key for set_labels."""
        self._episode_start = self.size
        return self._write(frame, terminal=False)

    def add(
        self,
        action: np.ndarray,
        reward: float,
        frame: np.ndarray,
        terminal: bool,
    ) -> int:
        """The action taken from the last frame, the reward it earned, and the frame it led to."""
        last = (self.size - 1) % self.capacity
        self.actions[last] = action
        self.rewards[last] = reward
        self.has_action[last] = True
        return self._write(frame, terminal)

    def _write(self, frame: np.ndarray, terminal: bool) -> int:
        slot = self.size % self.capacity
        self.frames[slot] = frame
        self.labelled[slot] = self.maps is None
        self.has_action[slot] = False
        self.terminal[slot] = terminal
        self.episode_start[slot] = self._episode_start
        self.size += 1
        return self.size - 1

    def set_labels(self, t: np.ndarray, labels: Labels) -> None:
        """The teacher's labels for frames t (absolute indices); frames already overwritten are skipped."""
        kept = t >= self.size - self.capacity
        slots = t[kept] % self.capacity
        self.maps[slots] = labels.maps[kept]
        if self.foreground is not None:
            self.foreground[slots] = np.packbits(labels.foreground[kept].reshape(kept.sum(), -1), axis=1)
        if self.embeddings is not None:
            self.embeddings[slots] = labels.embeddings[kept]
        self.labelled[slots] = True

    def _valid(self, t: np.ndarray) -> np.ndarray:
        oldest_kept = self.size - self.capacity
        stack_start = np.maximum(t - self.k + 1, self.episode_start[t % self.capacity])
        return (
            self.has_action[t % self.capacity]
            & self.labelled[t % self.capacity]
            & (stack_start >= oldest_kept)
        )

    def sample(self, batch_size: int, rng: np.random.Generator) -> Batch:
        low = max(0, self.size - self.capacity)
        if self.size - low < 2:
            raise ValueError("the replay buffer holds no transition yet")
        t = np.empty(0, dtype=np.int64)
        for _ in range(1000):
            draw = rng.integers(low, self.size - 1, size=2 * batch_size)
            t = np.concatenate([t, draw[self._valid(draw)]])
            if len(t) >= batch_size:
                break
        else:
            raise ValueError("the replay buffer holds (almost) no labelled transition yet")
        t = t[:batch_size]

        # n-step window: steps t .. t+n-1 count while each slot still has an action.
        offsets = t[:, None] + np.arange(self.n)[None, :]
        has_action = self.has_action[offsets % self.capacity] & (offsets < self.size)
        alive = np.cumprod(has_action, axis=1).astype(bool)
        n_eff = alive.sum(axis=1)
        rewards = np.where(alive, self.rewards[offsets % self.capacity], 0.0)
        discounts = self.gamma ** np.arange(self.n)
        next_t = t + n_eff
        not_terminal = ~self.terminal[next_t % self.capacity]
        actions = np.where(alive[..., None], self.actions[offsets % self.capacity], 0.0).astype(np.float32)
        return Batch(
            obs=self.stack(t),
            action=self.actions[t % self.capacity],
            reward=(rewards * discounts).sum(axis=1).astype(np.float32),
            discount=(self.gamma**n_eff * not_terminal).astype(np.float32),
            next_obs=self.stack(next_t),
            step_reward=self.rewards[t % self.capacity],
            actions=actions,
            knowledge_map=self.maps[t % self.capacity] if self.maps is not None else None,
            knowledge_embedding=self.embeddings[t % self.capacity] if self.embeddings is not None else None,
            next_knowledge_map=self.maps[next_t % self.capacity] if self.maps is not None else None,
            foreground=self.foreground_stack(t) if self.foreground is not None else None,
        )

    def _stack_slots(self, t: np.ndarray) -> np.ndarray:
        """[B, K] slots of the stacks ending at frames t; the episode's first frame fills the gaps."""
        idx = t[:, None] - np.arange(self.k - 1, -1, -1)[None, :]
        idx = np.maximum(idx, self.episode_start[t % self.capacity][:, None])
        return idx % self.capacity

    def stack(self, t: np.ndarray) -> np.ndarray:
        """[B, K, H, W, 3] stacks ending at frames t."""
        return self.frames[self._stack_slots(t)]

    def foreground_stack(self, t: np.ndarray) -> np.ndarray:
        """[B, K, H, W] bool: the foreground of every frame of the stacks ending at t."""
        h, w = self.frames.shape[1:3]
        packed = self.foreground[self._stack_slots(t)]
        return np.unpackbits(packed, axis=-1, count=h * w).reshape(*packed.shape[:2], h, w).astype(bool)

    def state_dict(self) -> dict[str, np.ndarray | int]:
        n = len(self)
        state: dict[str, np.ndarray | int] = {"size": self.size, "episode_start_now": self._episode_start}
        for name in ARRAYS:
            array = getattr(self, name)
            if array is not None:
                state[name] = array[:n]
        return state

    def load_state_dict(self, state: dict[str, np.ndarray | int]) -> None:
        self.size = int(state["size"])
        self._episode_start = int(state["episode_start_now"])
        for name in ARRAYS:
            if name in state:
                array = np.asarray(state[name])
                getattr(self, name)[: len(array)] = array
        if "labelled" not in state:  # saved before teachers labelled in batches: all were labelled
            self.labelled[: len(self)] = True

    def save(self, path: Path) -> None:
        tmp = path.with_suffix(".tmp.npz")
        np.savez(tmp, **self.state_dict())
        tmp.replace(path)

    def load(self, path: Path) -> None:
        with np.load(path) as data:
            self.load_state_dict({k: data[k] for k in data.files})
