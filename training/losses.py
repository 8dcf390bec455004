"""Semore's auxiliary objectives, each supervising its own path (DESIGN.md section 1).

- motion: a latent transition model predicts the motion latent n steps ahead from the current
  motion latent and the n actions taken, against the target encoder's (stop-gradient) latent;
- fused: reward prediction from the fused feature and the action;
- semantic, knowledge map: the knowledge head's map against the teacher's map;
- semantic, contrastive: InfoNCE between the semantic latent and knowledge features: the
  semantic map pooled under the teacher's map, or the teacher's global embedding (CLIP's image
  embedding) when it gives one.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from training.networks import Encoding, mlp


def info_nce(queries: torch.Tensor, keys: torch.Tensor, temperature: float) -> torch.Tensor:
    """Symmetric InfoNCE (NT-Xent) with in-batch negatives: row i of each side is the positive pair."""
    logits = F.normalize(queries, dim=-1) @ F.normalize(keys, dim=-1).T / temperature
    labels = torch.arange(len(queries), device=queries.device)
    return 0.5 * (F.cross_entropy(logits, labels) + F.cross_entropy(logits.T, labels))


def knowledge_map_loss(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Per-pixel BCE of predicted [B, 1, h, w] logits against a teacher map in [0, 1] at any size."""
    target = F.interpolate(target, size=logits.shape[-2:], mode="area")
    return F.binary_cross_entropy_with_logits(logits, target)


def masked_mean(feature_map: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
    """[B, C, h, w] averaged under weights [B, 1, H, W] (resized to h x w) -> [B, C]."""
    weights = F.interpolate(weights, size=feature_map.shape[-2:], mode="area").flatten(1)  # [B, hw]
    # One batched matmul instead of a full-size product and a reduction (forward and backward).
    summed = torch.bmm(feature_map.flatten(2), weights.unsqueeze(-1)).squeeze(-1)
    return summed / weights.sum(1, keepdim=True).clamp_min(1e-3)


class AuxiliaryHeads(nn.Module):
    """Train-time heads; none of them is exported."""

    def __init__(
        self,
        feature_dim: int,
        latent_dim: int,
        semantic_channels: int,
        action_dim: int,
        n_step: int,
        embedding_dim: int | None = None,
    ):
        super().__init__()
        self.transition = mlp(latent_dim + n_step * action_dim, 256, latent_dim)
        self.reward = mlp(feature_dim + action_dim, 256, 1)
        self.semantic_query = nn.Linear(latent_dim, latent_dim)
        self.knowledge_key = nn.Linear(embedding_dim or semantic_channels, latent_dim)

    def losses(
        self,
        encoding: Encoding,
        next_motion: torch.Tensor,
        action: torch.Tensor,
        actions: torch.Tensor,
        step_reward: torch.Tensor,
        teacher_map: torch.Tensor | None,
        teacher_embedding: torch.Tensor | None,
        contrastive_temperature: float,
    ) -> dict[str, torch.Tensor]:
        predicted = self.transition(torch.cat([encoding.motion, actions.flatten(1)], dim=-1))
        losses = {
            "transition": F.mse_loss(predicted, next_motion),
            "reward": F.mse_loss(
                self.reward(torch.cat([encoding.feature, action], -1)).squeeze(-1), step_reward
            ),
        }
        if teacher_map is not None:
            losses["knowledge_map"] = knowledge_map_loss(encoding.knowledge_logits, teacher_map)
            if teacher_embedding is None:
                knowledge = self.knowledge_key(masked_mean(encoding.semantic_map, teacher_map))
            else:
                knowledge = self.knowledge_key(teacher_embedding.float())
            losses["contrastive"] = info_nce(
                self.semantic_query(encoding.semantic), knowledge, contrastive_temperature
            )
        return losses
