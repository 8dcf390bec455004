"""Semore's auxiliary objectives, each supervising its own path.

- motion: a latent transition model predicts the motion latent n steps ahead from the current
  motion latent and the n actions taken. As in SPR, the prediction goes through a projection and
  a prediction head and meets the target encoder's projected latent in a cosine loss: a constant
  latent cannot drive a normalised loss to its minimum the way it drives a plain MSE to zero;
- fused: reward prediction from the fused feature and the action;
- semantic, knowledge map: the knowledge head's map against the teacher's, cell-aligned map;
- semantic, foreground (with the gate): the gate's head against the teacher's foreground mask,
  on composited views too, so the gate learns to close on backgrounds it has never seen;
- semantic, contrastive: InfoNCE between the semantic latent of one augmented view (query) and a
  knowledge key from the teacher: the target encoder's semantic map of next_obs (the pass the TD
  target already made, so the key costs no extra encoder pass), pooled under the teacher's map of
  it, or the teacher's global embedding (CLIP's image embedding) when it gives one. The other
  samples of the batch are the negatives; samples whose teacher map is empty have no positive
  and are left out.

Every loss reads every view of the update, composited ones included: their targets all come from
clean data (the teacher's maps of the frame, the target pass over next_obs, the rewards).

With the pixel encoder (the "pixel + aux" arm) the transition and reward losses run on its single
feature, so a gain can be told apart from the extra losses.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from training.networks import Encoding, mlp
from training.replay import Batch

PROJECTION_DIM = 128


def info_nce(queries: torch.Tensor, keys: torch.Tensor, temperature: float) -> torch.Tensor:
    """Symmetric InfoNCE (NT-Xent) with in-batch negatives: row i of each side is the positive pair."""
    logits = F.normalize(queries, dim=-1) @ F.normalize(keys, dim=-1).T / temperature
    labels = torch.arange(len(queries), device=queries.device)
    return 0.5 * (F.cross_entropy(logits, labels) + F.cross_entropy(logits.T, labels))


def masked_mean(feature_map: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
    """[B, C, h, w] averaged under cell weights [B, 1, h, w] -> [B, C] (zero where weights are)."""
    # One batched matmul instead of a full-size product and a reduction (forward and backward).
    summed = torch.bmm(feature_map.flatten(2), weights.flatten(1).unsqueeze(-1)).squeeze(-1)
    return summed / weights.flatten(1).sum(1, keepdim=True).clamp_min(1e-3)


def latent_spread(latent: torch.Tensor) -> torch.Tensor:
    """Mean over dimensions of the batch std: near 0 when a latent has collapsed to a constant."""
    return latent.detach().std(0).mean()


@dataclass
class AuxTargets:
    """What the auxiliary losses compare against, computed without gradients."""

    next_latent: torch.Tensor | None = None  # [B, F]: the target encoder's transition latent of next_obs
    teacher_cells: torch.Tensor | None = None  # [B, 1, h, w]: the teacher's map, cell-aligned
    foreground_cells: torch.Tensor | None = None  # [B, 1, h', w']: its foreground, at the gate's cells
    knowledge: torch.Tensor | None = None  # [B, C or D]: the contrastive positives' source
    knowledge_valid: torch.Tensor | None = None  # [B] bool: samples that have a positive


class AuxiliaryHeads(nn.Module):
    """Train-time heads; none of them is exported.

    ema_target: the transition target's projection is an EMA copy of the online one (with the
    SAC learner's target encoder); without it (DrQ-v2, no target encoder) the online projection
    is used under stop-gradient, as in SimSiam.
    """

    def __init__(
        self,
        losses: list[str],
        feature_dim: int,
        latent_dim: int,
        action_dim: int,
        n_step: int,
        ema_target: bool,
        knowledge_dim: int | None = None,
    ) -> None:
        """losses: the names this run trains (a subset of transition, reward, knowledge_map, contrastive)."""
        super().__init__()
        self.names = list(losses)
        self.target_projection = None
        if "transition" in losses:
            self.transition = mlp(latent_dim + n_step * action_dim, 256, latent_dim)
            self.projection = nn.Linear(latent_dim, PROJECTION_DIM)
            self.prediction = nn.Sequential(
                nn.Linear(PROJECTION_DIM, PROJECTION_DIM),
                nn.ReLU(),
                nn.Linear(PROJECTION_DIM, PROJECTION_DIM),
            )
            if ema_target:
                self.target_projection = copy.deepcopy(self.projection).requires_grad_(False)
        if "reward" in losses:
            self.reward = mlp(feature_dim + action_dim, 256, 1)
        if "contrastive" in losses:
            self.semantic_query = nn.Linear(latent_dim, latent_dim)
            self.knowledge_key = nn.Linear(knowledge_dim, latent_dim)

    def trained_parameters(self) -> list[nn.Parameter]:
        return [p for p in self.parameters() if p.requires_grad]

    @torch.no_grad()
    def project_target(self, latent: torch.Tensor) -> torch.Tensor:
        return (self.target_projection or self.projection)(latent)

    def predict(self, latent: torch.Tensor, actions: torch.Tensor) -> torch.Tensor:
        """The projected prediction of the latent n steps ahead."""
        predicted = self.transition(torch.cat([latent, actions.flatten(1)], dim=-1))
        return self.prediction(self.projection(predicted))

    def transition_loss(
        self, latent: torch.Tensor, actions: torch.Tensor, target: torch.Tensor
    ) -> torch.Tensor:
        """1 - cos(prediction, target projection), in [0, 2], whatever the scale of either."""
        cosine = F.cosine_similarity(self.predict(latent, actions), target, dim=-1)
        return (1.0 - cosine).mean()

    def losses(
        self, encoding: Encoding, batch: Batch, targets: AuxTargets, contrastive_temperature: float
    ) -> dict[str, torch.Tensor]:
        """batch: the update's batch on the device (action, actions, step_reward).

        The encoding may hold composited views after the batch's rows. The map losses read all of
        them (the map targets move with the views), so the heads learn the foreground in front
        of any background; the other losses have one target per clean row and read those rows.
        """
        losses = {}
        if "transition" in self.names:
            latent = encoding.motion if encoding.motion is not None else encoding.feature
            target = self.project_target(targets.next_latent)
            losses["transition"] = self.transition_loss(latent[: len(target)], batch.actions, target)
        if "reward" in self.names:
            reward = self.reward(
                torch.cat([encoding.feature[: len(batch.action)], batch.action], -1)
            ).squeeze(-1)
            losses["reward"] = F.mse_loss(reward, batch.step_reward)
        if "knowledge_map" in self.names:
            losses["knowledge_map"] = F.binary_cross_entropy_with_logits(
                encoding.knowledge_logits, targets.teacher_cells
            )
        if "foreground" in self.names:
            losses["foreground"] = F.binary_cross_entropy_with_logits(
                encoding.foreground_logits, targets.foreground_cells
            )
        if "contrastive" in self.names:
            valid = targets.knowledge_valid
            queries = self.semantic_query(encoding.semantic[: len(valid)])[valid]
            keys = self.knowledge_key(targets.knowledge[valid])
            losses["contrastive"] = (
                info_nce(queries, keys, contrastive_temperature)
                if len(queries) >= 2
                else queries.sum() * 0.0  # no pair to contrast in this batch
            )
        return losses
