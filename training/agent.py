"""Learners from pixels, with Semore's auxiliary losses: SAC (`agent.kind: sac`) and DrQ-v2 (`drqv2`).

One update reads as DrQ-v2's: augment, encode, `update_critic` (the critic loss and the auxiliary
losses train the encoder together), `update_actor` on the detached feature, then move the targets.

The critic target follows SAC-AE and DrQ-v2:
- sac: the next action comes from the actor on the *online* encoder's feature of next_obs (no
  gradients), the feature the actor is trained on; the target critic reads the *target*
  (EMA) encoder's feature of the same frames.
- drqv2: there is no target encoder: one online pass over next_obs without gradients serves the
  actor and the target critic, and exploration noise follows a linear schedule in frames.
"""

from __future__ import annotations

import copy
from abc import ABC, abstractmethod
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from training.augment import random_shift
from training.backgrounds import training_backgrounds
from training.composite import Compositor
from training.config import RunConfig
from training.losses import AuxiliaryHeads, AuxTargets, latent_spread, masked_mean
from training.networks import Critic, Encoding, make_actor, make_encoder, preprocess
from training.replay import Batch


def soft_update(target: torch.nn.Module, source: torch.nn.Module, tau: float) -> None:
    with torch.no_grad():
        for t, s in zip(target.parameters(), source.parameters(), strict=True):
            t.lerp_(s, tau)


def enabled_losses(config: RunConfig) -> list[str]:
    """The auxiliary losses this run trains: one place decides, from the config's switches."""
    auxiliary = config.agent.auxiliary
    if auxiliary is None:
        auxiliary = config.encoder.dual_path
    teacher = config.encoder.dual_path and config.teacher.kind != "none"
    wanted = {
        "transition": auxiliary,
        "reward": auxiliary,
        "knowledge_map": teacher,
        "foreground": teacher and config.encoder.gate,
        "contrastive": teacher,
    }
    weights = config.agent.loss_weights.model_dump()
    return [name for name, on in wanted.items() if on and weights[name] > 0]


def with_views(x: torch.Tensor, rows: int) -> torch.Tensor:
    """x's B rows, then for each composited view the row it was made from: [rows, ...]."""
    return torch.cat([x, x[: rows - len(x)]])


@dataclass
class Views:
    """The augmented tensors of one update (obs and next_obs shifted independently).

    With compositing, obs has more rows than the batch: after the B clean views come composited
    views of the first rows, each row's targets copied to it (`with_views`). next_obs is never
    composited, so the TD target and every auxiliary target come from clean data (SVEA).
    """

    obs: torch.Tensor
    next_obs: torch.Tensor
    teacher_map: torch.Tensor | None = None  # [B, 1, S, S], moves with obs
    next_teacher_map: torch.Tensor | None = None  # moves with next_obs: where the contrastive key pools
    foreground: torch.Tensor | None = None  # [B, 1, S, S]: obs's newest frame, moves with obs


class Agent(ABC):
    """What both learners share: encoder, twin critics, auxiliary heads and the critic update."""

    uses_target_encoder = False

    def __init__(
        self, config: RunConfig, action_dim: int, device: torch.device, embedding_dim: int | None = None
    ) -> None:
        """embedding_dim: the teacher's global embedding, when it gives one (CLIP's image embedding)."""
        self.config, self.device, self.action_dim = config, device, action_dim
        agent, enc = config.agent, config.encoder
        self.encoder = make_encoder(enc, config.env.frame_stack, config.env.image_size).to(device)
        if enc.channels_last:
            self.encoder = self.encoder.to(memory_format=torch.channels_last)
        feature_dim = self.encoder.feature_dim
        self.actor = make_actor(agent, enc, feature_dim, action_dim).to(device)
        self.critic = Critic(feature_dim, action_dim, agent.hidden_dim).to(device)
        self.critic_target = copy.deepcopy(self.critic).requires_grad_(False)
        self.losses = enabled_losses(config)
        self.aux = None
        if self.losses:
            self.aux = AuxiliaryHeads(
                self.losses,
                feature_dim,
                enc.feature_dim if enc.dual_path else feature_dim,
                action_dim,
                agent.n_step,
                ema_target=self.uses_target_encoder,
                knowledge_dim=(embedding_dim or self.encoder.semantic_channels)
                if "contrastive" in self.losses
                else None,
            ).to(device)
        self.embedding_key = embedding_dim is not None
        self.compositor = None
        if config.augment.composite > 0:
            size, augment = config.env.image_size, config.augment
            textures = training_backgrounds(augment.backgrounds, 2 * size, augment.textures, config.seed)
            self.compositor = Compositor(textures, size, augment.texture_speed, device)
        learned = [*self.encoder.parameters(), *self.critic.parameters()]
        if self.aux is not None:
            learned += self.aux.trained_parameters()
        self.critic_optimizer = torch.optim.Adam(learned, lr=agent.lr)
        self.actor_optimizer = torch.optim.Adam(self.actor.parameters(), lr=agent.lr)
        # The compiled encoder runs the updates; the plain one acts (batch 1) and holds the weights.
        self.compiled_encoder = torch.compile(self.encoder) if enc.compile else self.encoder
        self.updates = 0
        self.actor_metrics: dict[str, float] = {}

    def _frames(self, frames: np.ndarray | torch.Tensor) -> torch.Tensor:
        x = preprocess(torch.as_tensor(frames, device=self.device))
        return x.contiguous(memory_format=torch.channels_last) if self.config.encoder.channels_last else x

    @torch.no_grad()
    def act(self, stack: np.ndarray, explore: bool, frames: int = 0) -> np.ndarray:
        """One action in [-1, 1]^A for a [K, H, W, 3] stack: explored at `frames`, else the mean."""
        feature = self.encoder(self._frames(stack[None])).feature
        action = self.explore(feature, frames) if explore else self.actor.mean_action(feature)
        return action[0].cpu().numpy()

    def _map(self, knowledge_map: torch.Tensor, size: int) -> torch.Tensor:
        """A teacher map [B, m, m] uint8 -> [B, 1, S, S] in [0, 1], to move with its frame."""
        return F.interpolate(knowledge_map[:, None].float() / 255.0, size=size, mode="nearest")

    def augment(self, batch: Batch, frames: int) -> Views:
        """Random shifts (the maps and masks move with their frames), then compositing from
        `augment.composite_from_frames` environment frames on."""
        pad = self.config.agent.augment_pad
        obs, next_obs = self._frames(batch.obs), self._frames(batch.next_obs)
        size, k = obs.shape[-1], self.config.env.frame_stack
        # What moves with obs: the teacher's map for the map losses, the K foreground masks.
        moving = []
        maps = "knowledge_map" in self.losses or "contrastive" in self.losses
        if maps:
            moving.append(self._map(batch.knowledge_map, size))
        if batch.foreground is not None:
            moving.append(batch.foreground.float())
        obs_aug, *moved = random_shift(obs, *moving, pad=pad)
        teacher_map = moved.pop(0) if maps else None
        foreground = moved.pop(0) if batch.foreground is not None else None
        if "contrastive" in self.losses and not self.embedding_key:
            next_aug, next_map = random_shift(next_obs, self._map(batch.next_knowledge_map, size), pad=pad)
        else:
            (next_aug,), next_map = random_shift(next_obs, pad=pad), None
        if self.compositor is not None and frames >= self.config.augment.composite_from_frames:
            # Added views, not replaced ones: the critic keeps every clean view, as SVEA does.
            # Replacing half of each batch slowed learning (docs/results.md, CPU evidence v2).
            m = max(1, round(self.config.augment.composite * len(obs_aug)))
            rows = len(obs_aug) + m
            obs_aug = torch.cat([obs_aug, self.compositor(obs_aug[:m], foreground[:m])])
            foreground = with_views(foreground, rows)
            teacher_map = with_views(teacher_map, rows) if maps else None
        newest_foreground = foreground[:, k - 1 :] if foreground is not None else None
        return Views(obs_aug, next_aug, teacher_map, next_map, newest_foreground)

    def update(self, batch: Batch, frames: int, diagnose: bool = False) -> dict[str, torch.Tensor]:
        """One update; `diagnose` adds each loss's gradient norm on the encoder's conv trunk.

        Metrics stay tensors: turning them into Python floats waits for the device, and the
        trainer only reads them on the updates it logs.
        """
        cfg = self.config.agent
        batch = batch.to(self.device)
        views = self.augment(batch, frames)
        encoding = self.compiled_encoder(views.obs)
        with torch.no_grad():
            target_q, aux_targets = self.targets(views, batch, frames)
        metrics = self.update_critic(encoding, batch, target_q, aux_targets, diagnose)
        self.updates += 1
        if self.updates % cfg.actor_update_every == 0:
            clean = encoding.feature[: len(batch.action)]  # the actor learns on clean views (SVEA)
            self.actor_metrics = self.update_actor(clean.detach(), frames)
        if self.updates % cfg.target_update_every == 0:
            self.update_targets()
        # The actor's figures are the latest ones, so every row of the update log has every column.
        return metrics | self.actor_metrics

    def targets(self, views: Views, batch: Batch, frames: int) -> tuple[torch.Tensor, AuxTargets | None]:
        """The critic's TD target and the auxiliary losses' targets, from one pass per encoder."""
        next_online = self.compiled_encoder(views.next_obs)
        next_target = self.target_encoding(views.next_obs, next_online)
        target_q = batch.reward + batch.discount * self.next_value(next_online, next_target, frames)
        if self.aux is None:
            return target_q, None
        latent = next_target.motion if next_target.motion is not None else next_target.feature
        aux = AuxTargets(next_latent=latent)
        if views.teacher_map is not None:
            aux.teacher_cells = self.encoder.map_to_cells(views.teacher_map)
        if "foreground" in self.losses:
            aux.foreground_cells = self.encoder.foreground_to_cells(views.foreground)
        if "contrastive" in self.losses:
            if views.next_teacher_map is not None:
                # A temporal key from the pass that the TD target already made: the target
                # encoder's semantic map of next_obs, pooled under the teacher's map of it.
                next_cells = self.encoder.map_to_cells(views.next_teacher_map)
                aux.knowledge = masked_mean(next_target.semantic_map, next_cells)
                aux.knowledge_valid = next_cells.flatten(1).sum(1) > 0
            else:
                aux.knowledge = batch.knowledge_embedding.float()
                aux.knowledge_valid = torch.ones(len(aux.knowledge), dtype=torch.bool, device=self.device)
        return target_q, aux

    def update_critic(
        self,
        encoding: Encoding,
        batch: Batch,
        target_q: torch.Tensor,
        aux_targets: AuxTargets | None,
        diagnose: bool = False,
    ) -> dict[str, torch.Tensor]:
        cfg = self.config.agent
        feature, clean = encoding.feature, len(batch.action)  # clean views, then any composited ones
        consistency = self.config.augment.composite_loss == "consistency" and len(feature) > clean
        rows = clean if consistency else len(feature)
        q1, q2 = self.critic(feature[:rows], with_views(batch.action, rows))
        target_q = with_views(target_q, rows)
        # A weighted mean over rows: the composited ones count composite_weight each.
        errors = (q1 - target_q) ** 2 + (q2 - target_q) ** 2
        weight = self.config.augment.composite_weight
        metrics = {
            "critic": (errors[:clean].sum() + weight * errors[clean:].sum())
            / (clean + weight * (rows - clean))
        }
        terms = {"critic": metrics["critic"]}
        if rows > clean:
            # The composited views' share of the TD error, on its own: whether the critic reads
            # them as well as the clean ones, or fights them.
            metrics["critic_composited"] = errors[clean:].detach().mean()
        if consistency:
            # The encoder alone learns that background does not matter; the critic's own data
            # stays the clean replay, so its pace is the clean learner's.
            metrics["consistency"] = F.mse_loss(feature[clean:], feature[: len(feature) - clean].detach())
            terms["consistency"] = cfg.loss_weights.consistency * metrics["consistency"]
        if self.aux is not None:
            weights = cfg.loss_weights.model_dump()
            aux = self.aux.losses(encoding, batch, aux_targets, cfg.contrastive_temperature)
            for name in self.losses:
                metrics[name] = aux[name]
                terms[name] = weights[name] * aux[name]
        if diagnose:
            metrics |= self.gradient_norms(terms)
        self.critic_optimizer.zero_grad(set_to_none=True)
        sum(terms.values()).backward()
        self.critic_optimizer.step()
        metrics["q"] = q1.mean()
        metrics["spread_feature"] = latent_spread(encoding.feature)
        if encoding.semantic is not None:
            metrics["spread_semantic"] = latent_spread(encoding.semantic)
            metrics["spread_motion"] = latent_spread(encoding.motion)
        return {k: v.detach() for k, v in metrics.items()}

    def gradient_norms(self, terms: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """`grad_<loss>`: the norm of each weighted loss's gradient on the encoder's conv trunk, the
        parameters that the critic and every auxiliary loss share; shows which loss drives it."""
        trunk = self.encoder.trunk_parameters()
        norms = {}
        for name, term in terms.items():
            grads = torch.autograd.grad(term, trunk, retain_graph=True, allow_unused=True)
            squares = [g.pow(2).sum() for g in grads if g is not None]
            norms[f"grad_{name}"] = torch.stack(squares).sum().sqrt() if squares else torch.zeros(())
        return norms

    def update_targets(self) -> None:
        cfg = self.config.agent
        soft_update(self.critic_target, self.critic, cfg.critic_tau)
        if self.aux is not None and self.aux.target_projection is not None:
            soft_update(self.aux.target_projection, self.aux.projection, cfg.encoder_tau)

    # What each learner defines.
    @abstractmethod
    def explore(self, feature: torch.Tensor, frames: int) -> torch.Tensor:
        """An exploratory action for `feature` at `frames` environment frames."""

    @abstractmethod
    def next_value(self, next_online: Encoding, next_target: Encoding, frames: int) -> torch.Tensor:
        """The bootstrapped value of next_obs, before discounting."""

    @abstractmethod
    def update_actor(self, feature: torch.Tensor, frames: int) -> dict[str, torch.Tensor]:
        """One actor step on the detached feature; returns its metrics."""

    def target_encoding(self, next_obs: torch.Tensor, next_online: Encoding) -> Encoding:
        """What the target critic and the transition target read: the online pass, without a target encoder."""
        return next_online

    def modules(self) -> dict[str, torch.nn.Module | torch.optim.Optimizer]:
        modules = {
            "encoder": self.encoder,
            "actor": self.actor,
            "critic": self.critic,
            "critic_target": self.critic_target,
            "critic_optimizer": self.critic_optimizer,
            "actor_optimizer": self.actor_optimizer,
        }
        return modules | ({"aux": self.aux} if self.aux is not None else {})

    def state_dict(self) -> dict:
        return {name: m.state_dict() for name, m in self.modules().items()} | {"updates": self.updates}

    def load_state_dict(self, state: dict) -> None:
        for name, module in self.modules().items():
            module.load_state_dict(state[name])
        self.updates = state["updates"]


class SacAgent(Agent):
    """SAC from pixels: tanh-Gaussian actor, learned temperature (target entropy -|A|), EMA target
    encoder (encoder_tau) and target critic (critic_tau)."""

    uses_target_encoder = True

    def __init__(
        self, config: RunConfig, action_dim: int, device: torch.device, embedding_dim: int | None = None
    ) -> None:
        super().__init__(config, action_dim, device, embedding_dim)
        self.encoder_target = copy.deepcopy(self.encoder).requires_grad_(False)
        self.compiled_encoder_target = (
            torch.compile(self.encoder_target) if config.encoder.compile else self.encoder_target
        )
        self.log_alpha = torch.tensor(
            np.log(config.agent.init_temperature), device=device, requires_grad=True
        )
        self.alpha_optimizer = torch.optim.Adam([self.log_alpha], lr=config.agent.lr)
        self.target_entropy = -float(action_dim)
        self.actor_metrics = {name: torch.tensor(float("nan")) for name in ("actor", "alpha", "entropy")}

    @property
    def alpha(self) -> torch.Tensor:
        return self.log_alpha.exp()

    def explore(self, feature: torch.Tensor, frames: int) -> torch.Tensor:
        return self.actor.sample(feature)[0]

    def target_encoding(self, next_obs: torch.Tensor, next_online: Encoding) -> Encoding:
        return self.compiled_encoder_target(next_obs)

    def next_value(self, next_online: Encoding, next_target: Encoding, frames: int) -> torch.Tensor:
        next_action, next_log_prob = self.actor.sample(next_online.feature)
        target_q = torch.min(*self.critic_target(next_target.feature, next_action))
        return target_q - self.alpha.detach() * next_log_prob

    def update_actor(self, feature: torch.Tensor, frames: int) -> dict[str, torch.Tensor]:
        action, log_prob = self.actor.sample(feature)
        q = torch.min(*self.critic(feature, action))
        actor_loss = (self.alpha.detach() * log_prob - q).mean()
        self.actor_optimizer.zero_grad(set_to_none=True)
        actor_loss.backward()
        self.actor_optimizer.step()

        alpha_loss = -(self.log_alpha * (log_prob.detach() + self.target_entropy)).mean()
        self.alpha_optimizer.zero_grad(set_to_none=True)
        alpha_loss.backward()
        self.alpha_optimizer.step()
        return {
            "actor": actor_loss.detach(),
            "alpha": self.alpha.detach(),
            "entropy": -log_prob.detach().mean(),
        }

    def update_targets(self) -> None:
        super().update_targets()
        soft_update(self.encoder_target, self.encoder, self.config.agent.encoder_tau)

    def modules(self) -> dict[str, torch.nn.Module | torch.optim.Optimizer]:
        return super().modules() | {
            "encoder_target": self.encoder_target,
            "alpha_optimizer": self.alpha_optimizer,
        }

    def state_dict(self) -> dict:
        return super().state_dict() | {"log_alpha": self.log_alpha.detach().clone()}

    def load_state_dict(self, state: dict) -> None:
        super().load_state_dict(state)
        with torch.no_grad():
            self.log_alpha.copy_(state["log_alpha"])


class DrQV2Agent(Agent):
    """DrQ-v2: DDPG with clipped double Q, exploration std linear in frames (agent.noise_std over
    agent.noise_frames), noise clipped to agent.noise_clip in the target and the actor update.

    `actor_pre_tanh` (the update log's mean |pre-tanh action|) shows a saturated actor. The action
    clamp passes gradients straight through, and Adam's steps stay lr-sized as the gradient
    shrinks, so once the critic favours a bound the mean runs past it until tanh's gradient falls
    under Adam's eps, and then it stays there when the critic changes its mind. Measured: at the
    quickstart settings (lr 1e-3) the pixel DrQ-v2 actor's mean sat near -27.6 and acted -1 in
    every state for 30k frames while its critic favoured +0.75 (docs/results.md, "DrQ-v2 learner at
    the reference settings").
    """

    def __init__(
        self, config: RunConfig, action_dim: int, device: torch.device, embedding_dim: int | None = None
    ) -> None:
        super().__init__(config, action_dim, device, embedding_dim)
        self.actor_metrics = {
            name: torch.tensor(float("nan")) for name in ("actor", "noise_std", "actor_pre_tanh")
        }

    def noise_std(self, frames: int) -> float:
        start, end = self.config.agent.noise_std
        progress = min(frames / self.config.agent.noise_frames, 1.0)
        return start + progress * (end - start)

    def explore(self, feature: torch.Tensor, frames: int) -> torch.Tensor:
        return self.actor.sample(feature, self.noise_std(frames))

    def next_value(self, next_online: Encoding, next_target: Encoding, frames: int) -> torch.Tensor:
        next_action = self.actor.sample(
            next_online.feature, self.noise_std(frames), self.config.agent.noise_clip
        )
        return torch.min(*self.critic_target(next_target.feature, next_action))

    def update_actor(self, feature: torch.Tensor, frames: int) -> dict[str, torch.Tensor]:
        std = self.noise_std(frames)
        pre_tanh = self.actor.pre_tanh(feature)  # one pass serves the action and the saturation figure
        action = self.actor.perturb(torch.tanh(pre_tanh), std, self.config.agent.noise_clip)
        actor_loss = -torch.min(*self.critic(feature, action)).mean()
        self.actor_optimizer.zero_grad(set_to_none=True)
        actor_loss.backward()
        self.actor_optimizer.step()
        return {
            "actor": actor_loss.detach(),
            "noise_std": torch.tensor(std),
            "actor_pre_tanh": pre_tanh.detach().abs().mean(),
        }


def make_agent(
    config: RunConfig, action_dim: int, device: torch.device, embedding_dim: int | None = None
) -> Agent:
    cls = DrQV2Agent if config.agent.kind == "drqv2" else SacAgent
    return cls(config, action_dim, device, embedding_dim)
