"""The exported computation, as one small explicit module (rsl_rl style).

uint8 frames [B, K, H, W, 3] -> normalisation and frame differences -> encoder -> actor mean ->
action [B, A] in the env's bounds. Everything a robot would otherwise have to reimplement lives
inside the graph.
"""

from __future__ import annotations

import torch
from torch import nn

from training.checkpoint import Checkpoint
from training.config import RunConfig
from training.networks import Actor, make_actor, make_encoder, preprocess


class PolicyGraph(nn.Module):
    def __init__(
        self, encoder: nn.Module, actor: Actor, action_low: list[float], action_high: list[float]
    ) -> None:
        super().__init__()
        self.encoder, self.actor = encoder, actor
        low = torch.tensor(action_low, dtype=torch.float32)
        high = torch.tensor(action_high, dtype=torch.float32)
        self.register_buffer("action_scale", (high - low) / 2)
        self.register_buffer("action_offset", (high + low) / 2)

    def forward(self, frames: torch.Tensor) -> torch.Tensor:
        feature = self.encoder(preprocess(frames)).feature
        return self.actor.mean_action(feature) * self.action_scale + self.action_offset


def build_policy_graph(config: RunConfig, action_low: list[float], action_high: list[float]) -> PolicyGraph:
    """A policy graph with freshly initialised weights, shaped by the run config."""
    encoder = make_encoder(config.encoder, config.env.frame_stack, config.env.image_size)
    actor = make_actor(config.agent, config.encoder, encoder.feature_dim, len(action_low))
    return PolicyGraph(encoder, actor, action_low, action_high).eval()


def trained_policy_graph(checkpoint: Checkpoint) -> PolicyGraph:
    """The policy of a `semore-train` checkpoint, in eval mode."""
    graph = build_policy_graph(checkpoint.config, checkpoint.env.action_low, checkpoint.env.action_high)
    graph.encoder.load_state_dict(checkpoint.agent["encoder"])
    graph.actor.load_state_dict(checkpoint.agent["actor"])
    return graph
