"""SAC from pixels with the Semore auxiliary losses (or the DrQ-v2 style baseline encoder).

One update = one encoder pass with gradients on augmented observations, one target-encoder pass
without, shared by the critic target and the motion-transition target. The critic loss and the
auxiliary losses train the encoder together; the actor reads a detached feature.
"""

from __future__ import annotations

import copy

import numpy as np
import torch
import torch.nn.functional as F

from training.augment import random_shift
from training.config import RunConfig
from training.losses import AuxiliaryHeads
from training.networks import Actor, Critic, make_encoder, preprocess
from training.replay import Batch


def soft_update(target: torch.nn.Module, source: torch.nn.Module, tau: float) -> None:
    with torch.no_grad():
        for t, s in zip(target.parameters(), source.parameters(), strict=True):
            t.lerp_(s, tau)


class Agent:
    def __init__(
        self, config: RunConfig, action_dim: int, device: torch.device, embedding_dim: int | None = None
    ) -> None:
        """embedding_dim: the teacher's global embedding, when it gives one (CLIP's image embedding)."""
        self.config, self.device, self.action_dim = config, device, action_dim
        agent, enc = config.agent, config.encoder
        self.encoder = make_encoder(enc, config.env.frame_stack, config.env.image_size).to(device)
        if enc.channels_last:
            self.encoder = self.encoder.to(memory_format=torch.channels_last)
        self.encoder_target = copy.deepcopy(self.encoder).requires_grad_(False)
        feature_dim = self.encoder.feature_dim
        self.actor = Actor(feature_dim, action_dim, agent.hidden_dim).to(device)
        self.critic = Critic(feature_dim, action_dim, agent.hidden_dim).to(device)
        self.critic_target = copy.deepcopy(self.critic).requires_grad_(False)
        self.semore = enc.kind == "semore"
        self.uses_teacher = self.semore and config.teacher.kind != "none"
        self.aux = (
            AuxiliaryHeads(
                feature_dim,
                enc.feature_dim,
                self.encoder.semantic_channels,
                action_dim,
                agent.n_step,
                embedding_dim,
            ).to(device)
            if self.semore
            else None
        )
        self.log_alpha = torch.tensor(np.log(agent.init_temperature), device=device, requires_grad=True)
        self.target_entropy = -float(action_dim)

        learned = [*self.encoder.parameters(), *self.critic.parameters()]
        if self.aux is not None:
            learned += list(self.aux.parameters())
        self.critic_optimizer = torch.optim.Adam(learned, lr=agent.lr)
        self.actor_optimizer = torch.optim.Adam(self.actor.parameters(), lr=agent.lr)
        self.alpha_optimizer = torch.optim.Adam([self.log_alpha], lr=agent.lr)
        self.encode = torch.compile(self.encoder) if enc.compile else self.encoder
        self.encode_target = torch.compile(self.encoder_target) if enc.compile else self.encoder_target
        self.updates = 0
        self.actor_metrics = {"actor": float("nan"), "alpha": float("nan"), "entropy": float("nan")}

    @property
    def alpha(self) -> torch.Tensor:
        return self.log_alpha.exp()

    def _frames(self, frames: np.ndarray | torch.Tensor) -> torch.Tensor:
        x = preprocess(torch.as_tensor(frames, device=self.device))
        return x.contiguous(memory_format=torch.channels_last) if self.config.encoder.channels_last else x

    @torch.no_grad()
    def act(self, stack: np.ndarray, explore: bool) -> np.ndarray:
        """One action in [-1, 1]^A for a [K, H, W, 3] stack: sampled when exploring, else the mean."""
        feature = self.encoder(self._frames(stack[None])).feature
        action = self.actor.sample(feature)[0] if explore else self.actor.mean_action(feature)
        return action[0].cpu().numpy()

    def update(self, batch: Batch) -> dict[str, float]:
        cfg = self.config.agent
        t = {k: torch.as_tensor(v, device=self.device) for k, v in vars(batch).items() if v is not None}
        pad = cfg.augment_pad
        obs, teacher_map = self._frames(t["obs"]), None
        if self.uses_teacher:
            maps = F.interpolate(
                t["knowledge_map"][:, None].float() / 255.0, size=obs.shape[-2:], mode="nearest"
            )
            obs, teacher_map = random_shift(obs, maps, pad=pad)  # the map moves with its frame
        else:
            (obs,) = random_shift(obs, pad=pad)
        (next_obs,) = random_shift(self._frames(t["next_obs"]), pad=pad)

        with torch.no_grad():
            target_next = self.encode_target(next_obs)
            next_action, next_log_prob = self.actor.sample(target_next.feature)
            target_q = torch.min(*self.critic_target(target_next.feature, next_action))
            target = t["reward"] + t["discount"] * (target_q - self.alpha.detach() * next_log_prob)

        encoding = self.encode(obs)
        q1, q2 = self.critic(encoding.feature, t["action"])
        metrics = {"critic": F.mse_loss(q1, target) + F.mse_loss(q2, target)}
        total = metrics["critic"]
        if self.aux is not None:
            aux = self.aux.losses(
                encoding,
                target_next.motion,
                t["action"],
                t["actions"],
                t["step_reward"],
                teacher_map,
                t.get("knowledge_embedding"),
                cfg.contrastive_temperature,
            )
            weights = cfg.loss_weights.model_dump()
            for name, loss in aux.items():
                metrics[name] = loss
                total = total + weights[name] * loss
        self.critic_optimizer.zero_grad(set_to_none=True)
        total.backward()
        self.critic_optimizer.step()

        self.updates += 1
        if self.updates % cfg.actor_update_every == 0:
            self.actor_metrics = {
                k: float(v.detach()) for k, v in self._update_actor(encoding.feature.detach()).items()
            }
        if self.updates % cfg.target_update_every == 0:
            soft_update(self.critic_target, self.critic, cfg.critic_tau)
            soft_update(self.encoder_target, self.encoder, cfg.encoder_tau)
        metrics["q"] = q1.mean()
        # The actor's figures are the latest ones, so every row of the update log has every column.
        return {k: float(v.detach()) for k, v in metrics.items()} | self.actor_metrics

    def _update_actor(self, feature: torch.Tensor) -> dict[str, torch.Tensor]:
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
        return {"actor": actor_loss, "alpha": self.alpha.detach(), "entropy": -log_prob.mean()}

    def state_dict(self) -> dict:
        modules = {
            "encoder": self.encoder,
            "encoder_target": self.encoder_target,
            "actor": self.actor,
            "critic": self.critic,
            "critic_target": self.critic_target,
            "critic_optimizer": self.critic_optimizer,
            "actor_optimizer": self.actor_optimizer,
            "alpha_optimizer": self.alpha_optimizer,
        }
        if self.aux is not None:
            modules["aux"] = self.aux
        state = {name: m.state_dict() for name, m in modules.items()}
        return state | {"log_alpha": self.log_alpha.detach().clone(), "updates": self.updates}

    def load_state_dict(self, state: dict) -> None:
        for name in ("encoder", "encoder_target", "actor", "critic", "critic_target"):
            getattr(self, name).load_state_dict(state[name])
        for name in ("critic_optimizer", "actor_optimizer", "alpha_optimizer"):
            getattr(self, name).load_state_dict(state[name])
        if self.aux is not None:
            self.aux.load_state_dict(state["aux"])
        with torch.no_grad():
            self.log_alpha.copy_(state["log_alpha"])
        self.updates = state["updates"]
