"""Encoders (Semore dual path, DrQ-v2 single path), actor and critics.

Every encoder maps preprocessed frames [B, 3K, H, W] to one feature vector, so the learner and
the export wrapper treat both kinds alike. `preprocess` is the uint8 -> float step that the
exported ONNX graph bakes in.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from training.config import AgentConfig, EncoderConfig
from training.geometry import ReceptiveField, conv_output_size, receptive_field, token_cells

LOG_STD_MIN, LOG_STD_MAX = -10.0, 2.0


def preprocess(frames: torch.Tensor) -> torch.Tensor:
    """uint8 [B, K, H, W, 3] (camera layout) -> float [B, 3K, H, W] in [-0.5, 0.5], oldest first."""
    b, k, h, w, c = frames.shape
    x = frames.permute(0, 1, 4, 2, 3).reshape(b, k * c, h, w)
    return x.float() / 255.0 - 0.5


def conv_stack(in_channels: int, channels: int, layers: int, strided: int = 1) -> nn.Sequential:
    """DrQ-v2's trunk: 3x3 convs with ReLU, the first `strided` of them with stride 2 (DrQ-v2: 1)."""
    modules: list[nn.Module] = []
    for i in range(layers):
        modules += [
            nn.Conv2d(in_channels if i == 0 else channels, channels, 3, stride=2 if i < strided else 1),
            nn.ReLU(),
        ]
    return nn.Sequential(*modules)


def orthogonal_init(module: nn.Module) -> None:
    if isinstance(module, nn.Linear):
        nn.init.orthogonal_(module.weight.data)
        if module.bias is not None:
            module.bias.data.fill_(0.0)
    elif isinstance(module, nn.Conv2d):
        nn.init.orthogonal_(module.weight.data, nn.init.calculate_gain("relu"))
        if module.bias is not None:
            module.bias.data.fill_(0.0)


@dataclass
class Encoding:
    feature: torch.Tensor  # [B, D]: what the actor and critics read
    semantic: torch.Tensor | None = None  # [B, F] semantic latent
    motion: torch.Tensor | None = None  # [B, F] motion latent
    knowledge_logits: torch.Tensor | None = None  # [B, 1, h, w] predicted knowledge map
    semantic_map: torch.Tensor | None = None  # [B, C, h, w] before interaction
    # [B, 1, h', w']: the gate's map, a layer before the last (or the newest frame's pixels at the input)
    foreground_logits: torch.Tensor | None = None


class PixelEncoder(nn.Module):
    """The DrQ-v2 baseline: all K frames through one conv stack, then Linear + LayerNorm + tanh."""

    def __init__(self, config: EncoderConfig, frame_stack: int, image_size: int) -> None:
        super().__init__()
        side = conv_output_size(image_size, config.layers)
        self.convs = conv_stack(3 * frame_stack, config.channels, config.layers)
        self.project = nn.Sequential(
            nn.Linear(config.channels * side * side, 2 * config.feature_dim),
            nn.LayerNorm(2 * config.feature_dim),
            nn.Tanh(),
        )
        self.feature_dim = 2 * config.feature_dim

    def forward(self, x: torch.Tensor) -> Encoding:
        return Encoding(self.project(self.convs(x).flatten(1)))

    def trunk_parameters(self) -> list[nn.Parameter]:
        """The conv trunk, which the critic and every auxiliary loss train together."""
        return list(self.convs.parameters())


class TokenGrid(nn.Module):
    """A side x side map <-> grid^2 tokens, over cells that tile the map exactly (no padding).

    Both directions are matmuls with fixed matrices, so the graph exports to ONNX for any side and
    grid (adaptive pooling with uneven cells does not export), and no token is ever made of zero
    padding: a padded token would still take attention weight and carry nothing.
    """

    def __init__(self, side: int, grid: int) -> None:
        super().__init__()
        cells = token_cells(side, grid)
        member = torch.zeros(side, grid)
        for i, (start, end) in enumerate(cells):
            member[start:end, i] = 1.0
        member = torch.kron(member, member)  # [side^2, grid^2]: pixel (y, x) belongs to token (i, j)
        self.register_buffer("member", member, persistent=False)
        self.register_buffer("average", member / member.sum(0), persistent=False)
        self.side, self.grid = side, grid

    def pool(self, x: torch.Tensor) -> torch.Tensor:
        """[B, C, side, side] -> [B, grid^2, C]: the mean of each cell."""
        return (x.flatten(2) @ self.average).transpose(1, 2)

    def sum_cells(self, x: torch.Tensor) -> torch.Tensor:
        """[..., C, side, side] -> [..., C, grid^2]: the sum over each cell."""
        return x.flatten(-2) @ self.member


class KnowledgeAttention(nn.Module):
    """Knowledge tokens query one path's tokens (single-head cross-attention).

    Attention runs on pooled tokens (grid^2 of them), not on every pixel: at 84 px a pixel-level
    attention would be 1225 x 1225 per sample, more costly than the whole conv stack. The result,
    one vector per grid cell, is added back onto its cell of the path's map inside `PathLatent`.
    """

    def __init__(self, query_channels: int, path_channels: int, dim: int = 32) -> None:
        super().__init__()
        self.query = nn.Linear(query_channels, dim)
        self.key = nn.Linear(path_channels, dim)
        self.value = nn.Linear(path_channels, dim)
        self.out = nn.Linear(dim, path_channels)
        self.scale = dim**-0.5

    def forward(self, knowledge: torch.Tensor, path_tokens: torch.Tensor) -> torch.Tensor:
        weights = torch.softmax(
            self.query(knowledge) @ self.key(path_tokens).transpose(1, 2) * self.scale, -1
        )
        return self.out(weights @ self.value(path_tokens))


class PathLatent(nn.Module):
    """Linear(flatten(map + upsample(attended))), then LayerNorm if `normalize`: a path's latent
    after the residual add.

    The projection is linear, so the upsampled residual is folded into it: each attended token
    meets the sum of the weights over its cell. Same function, but the full-resolution residual
    map is never built, forward or backward (it was a tenth of a CPU update).

    The motion latent is not normalised: a LayerNorm rescales it to a fixed norm, so frame
    differences scaled by 0.3 and by 1.0 gave the same latent, slow motion looked like fast motion,
    and a near-still stack became amplified noise. Unnormalised, with ReLU convs, it grows with the
    motion's amplitude and is zero for a still stack at initialisation.
    """

    def __init__(self, channels: int, side: int, grid: int, dim: int, normalize: bool = True) -> None:
        super().__init__()
        self.tokens = TokenGrid(side, grid)
        self.side = side
        self.linear = nn.Linear(channels * side * side, dim)
        self.norm = nn.LayerNorm(dim) if normalize else nn.Identity()

    def token_weights(self) -> torch.Tensor:
        """[dim, grid^2 * C]: the linear weights summed over each token's cell, in (token, channel) order."""
        dim = self.linear.out_features
        weight = self.linear.weight.view(dim, -1, self.side, self.side)
        return self.tokens.sum_cells(weight).transpose(1, 2).reshape(dim, -1)

    def forward(self, feature_map: torch.Tensor, attended: torch.Tensor | None = None) -> torch.Tensor:
        """attended: [B, grid^2, C], or None without knowledge attention."""
        projected = self.linear(feature_map.flatten(1))
        if attended is not None:
            projected = projected + attended.flatten(1) @ self.token_weights().T
        return self.norm(projected)


class BilinearFusion(nn.Module):
    """out = z1^T W_o z2 + b_o for every output o, as one matmul over the outer product.

    Same function as nn.Bilinear, whose CPU kernel runs a batched matmul per output and cost a
    third of a whole training update; this form is a single GEMM and exports as a plain MatMul.

    affine: a constant 1 is appended to both latents first (as Tensor Fusion Networks do), so the
    output also holds every linear term of z1 and of z2. Without it each output is a pure product,
    and the LayerNormed latents (zero mean over their dimensions) carry no constant that could let
    a term of one path through on its own.
    """

    def __init__(self, in1: int, in2: int, out: int, affine: bool = False) -> None:
        super().__init__()
        self.affine = affine
        in1, in2 = in1 + affine, in2 + affine
        bound = in1**-0.5
        self.weight = nn.Parameter(torch.empty(in1 * in2, out).uniform_(-bound, bound))
        self.bias = nn.Parameter(torch.empty(out).uniform_(-bound, bound))

    def forward(self, z1: torch.Tensor, z2: torch.Tensor) -> torch.Tensor:
        if self.affine:
            z1, z2 = F.pad(z1, (0, 1), value=1.0), F.pad(z2, (0, 1), value=1.0)
        outer = (z1.unsqueeze(2) * z2.unsqueeze(1)).flatten(1)
        return outer @ self.weight + self.bias


class ConcatFusion(nn.Module):
    """The default fusion: the two latents side by side, each dimension as it is.

    At the quickstart settings the bilinear fusion learned slower than this (docs/results.md, learner check):
    its outputs are pure products of two LayerNormed latents, so neither path reaches the critic on
    its own.
    """

    def forward(self, z1: torch.Tensor, z2: torch.Tensor) -> torch.Tensor:
        return torch.cat([z1, z2], dim=-1)


def cells_of(image_map: torch.Tensor, field: ReceptiveField, side: int) -> torch.Tensor:
    """An image-resolution map [B, 1, S, S] -> [B, 1, side, side], aligned with a conv map's cells.

    Unpadded convs centre cell j on pixel `first_centre + jump * j` (2j + 7 for 4 layers), so
    each cell takes the mean of the `jump` x `jump` pixels at its own centre. An area resize of
    the whole map would centre cell j elsewhere, several pixels off near the borders.
    """
    jump = field.jump
    start = field.first_centre - (jump - 1) // 2
    window = image_map[..., start : start + jump * side, start : start + jump * side]
    return F.avg_pool2d(window, jump) if jump > 1 else window


def cell_spread(image_size: int, field: ReceptiveField, side: int, reach: int) -> torch.Tensor:
    """[S, side]: 1 where a pixel row (or column) lies within `reach` cells of a cell's centre.

    `clamp(U @ cells @ U.T, max=1)` then spreads a cell map in [0, 1] back over the image, each
    open cell widened by `reach` cells: one exportable pair of matmuls, where a max pool over the
    cells and an upsampling cost a twentieth of a CPU update.
    """
    pixels = torch.arange(image_size, dtype=torch.float32)
    nearest = ((pixels - field.first_centre) / field.jump).round().clamp(0, side - 1)
    return ((nearest[:, None] - torch.arange(side)[None, :]).abs() <= reach).float()


# Cells of the gate map by which the motion path's gate is widened: the frame differences of a
# moving body lie where it was in older frames too, not only where the newest frame shows it.
MOTION_GATE_DILATION = 2
# The input gate's masker: two 3x3 convs at half resolution, its map upsampled to the pixels (each
# 2x2 block of pixels shares a value): full-resolution convs cost several times a whole pixel
# update on a CPU. Measured at this size: benchmarks/results/gate_update_time.json.
MASKER_CHANNELS = 8


class SemoreEncoder(nn.Module):
    """The dual-path encoder (docs/design.md, "The method").

    The semantic path reads the newest frame, the motion path the K-1 frame differences. A
    knowledge head predicts the teacher's map from semantic features; the *predicted* map,
    pooled to the token grid, gates the semantic tokens into knowledge tokens, so inference needs
    no teacher. The motion path is light, as SlowFast's fast pathway: half the channels and one
    more stride-2 layer (frame differences are sparse and coarse), which keeps the dual path
    within a single path's compute.

    With `gate`, a foreground head on the semantic map one layer before the last predicts what
    the teacher calls not background. Detached, so that only its own loss trains it, its map
    multiplies that layer's features before the last conv, and a dilated copy spread over the
    image multiplies the frame differences: background, still or moving, reaches neither latent.
    It gates on everything that is not sky or floor (every body, rails and walls), not on the
    teacher's object list, so that a partial list cannot hide state.

    With `gate_at="input"` the same mask is applied before any conv instead: a small masker
    (MaDi's place for a mask, with the teacher's supervision instead of the critic's) predicts
    each frame's foreground (at half resolution, upsampled to the pixels), and the frames are
    multiplied by it. Gated
    features still carry the background that their receptive field saw, which for a body a pixel
    or two wide (a cartpole's pole at 48 px) is most of what they saw.
    """

    def __init__(self, config: EncoderConfig, frame_stack: int, image_size: int) -> None:
        super().__init__()
        light = config.motion_path == "light"
        sem_ch, mot_ch = config.channels, max(config.channels // 2, 4) if light else config.channels
        self.side = conv_output_size(image_size, config.layers)
        motion_side = conv_output_size(image_size, config.layers, strided=1 + light)
        self.grid = config.attention_grid
        self.field = receptive_field(config.layers)
        self.detach_gate = config.knowledge_gate == "detached"
        self.semantic_frames = frame_stack if config.semantic_input == "stack" else 1
        self.semantic_convs = conv_stack(3 * self.semantic_frames, sem_ch, config.layers)
        self.motion_convs = conv_stack(3 * (frame_stack - 1), mot_ch, config.layers, strided=1 + light)
        self.knowledge_head = nn.Sequential(
            nn.Conv2d(sem_ch, sem_ch // 2, 1), nn.ReLU(), nn.Conv2d(sem_ch // 2, 1, 1)
        )
        self.gate = config.gate_at if config.gate else None
        if self.gate == "input":
            self.masker = nn.Sequential(
                nn.Conv2d(3, MASKER_CHANNELS, 3, stride=2, padding=1),
                nn.ReLU(),
                nn.Conv2d(MASKER_CHANNELS, MASKER_CHANNELS, 3, padding=1),
                nn.ReLU(),
                nn.Conv2d(MASKER_CHANNELS, 1, 1),
            )
        if self.gate == "features":
            self.gate_side = conv_output_size(image_size, config.layers - 1)
            self.gate_field = receptive_field(config.layers - 1)
            self.foreground_head = nn.Sequential(
                nn.Conv2d(sem_ch, sem_ch // 2, 1), nn.ReLU(), nn.Conv2d(sem_ch // 2, 1, 1)
            )
            spread = cell_spread(image_size, self.gate_field, self.gate_side, MOTION_GATE_DILATION)
            self.register_buffer("gate_spread", spread, persistent=False)
        self.attention = config.knowledge_attention
        if self.attention:
            self.position = nn.Parameter(torch.zeros(1, self.grid * self.grid, sem_ch))
            self.semantic_attention = KnowledgeAttention(sem_ch, sem_ch)
            self.motion_attention = KnowledgeAttention(sem_ch, mot_ch)
        fdim = config.feature_dim
        self.semantic_latent = PathLatent(sem_ch, self.side, self.grid, fdim)
        self.motion_latent = PathLatent(mot_ch, motion_side, self.grid, fdim, normalize=False)
        self.fuse = (
            ConcatFusion()
            if config.fusion == "concat"
            else BilinearFusion(fdim, fdim, 2 * fdim, affine=config.fusion == "affine-bilinear")
        )
        # One LayerNorm over both latents divides each sample's semantic latent by a spread that
        # the unnormalised motion latent dominates (in cpu_evidence_v2 its batch spread grew to
        # 4-6x the semantic one's), so how well the cart's position reads depended on the motion.
        self.fuse_norm = nn.LayerNorm(2 * fdim) if config.fusion_norm == "joint" else nn.Identity()
        self.feature_dim = 2 * fdim
        self.semantic_channels = sem_ch

    def semantic_features(self, x: torch.Tensor) -> torch.Tensor:
        """The semantic path's map of its frames (the newest, or all K), [B, C, side, side]."""
        if self.gate == "input":
            x = self._masked(x)[0]
        return self._semantic(x)[0]

    def _masked(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The K frames times their predicted foreground, and the newest frame's logits [B, 1, S, S]."""
        b, k, size = x.shape[0], x.shape[1] // 3, x.shape[-1]
        logits = self.masker(x.reshape(b * k, 3, size, size))
        logits = F.interpolate(logits, size=(size, size), mode="nearest").reshape(b, k, size, size)
        keep = torch.sigmoid(logits).detach().repeat_interleave(3, dim=1)
        return x * keep, logits[:, -1:]

    def _semantic(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        """The semantic map, and with the feature gate the foreground logits it was gated by."""
        h = x[:, -3 * self.semantic_frames :]
        if self.gate != "features":
            return self.semantic_convs(h), None
        last = len(self.semantic_convs) - 2  # each layer is a conv and its ReLU
        for layer in self.semantic_convs[:last]:
            h = layer(h)
        foreground_logits = self.foreground_head(h)
        h = h * torch.sigmoid(foreground_logits).detach()
        for layer in self.semantic_convs[last:]:
            h = layer(h)
        return h, foreground_logits

    def trunk_parameters(self) -> list[nn.Parameter]:
        """Both conv trunks, which the critic and every auxiliary loss train together."""
        return [*self.semantic_convs.parameters(), *self.motion_convs.parameters()]

    def _motion_gate(self, foreground_logits: torch.Tensor) -> torch.Tensor:
        """[B, 1, S, S]: the gate map, dilated and spread over the image."""
        gate = torch.sigmoid(foreground_logits).detach()
        return (self.gate_spread @ gate @ self.gate_spread.T).clamp(max=1.0)

    def forward(self, x: torch.Tensor) -> Encoding:
        if self.gate == "input":
            x, foreground_logits = self._masked(x)
            semantic = self._semantic(x)[0]
        else:
            semantic, foreground_logits = self._semantic(x)
        differences = x[:, 3:] - x[:, :-3]
        if self.gate == "features":
            differences = differences * self._motion_gate(foreground_logits)
        motion = self.motion_convs(differences)
        knowledge_logits = self.knowledge_head(semantic)
        attended_semantic = attended_motion = None  # without knowledge attention: each map alone
        if self.attention:
            gate = torch.sigmoid(knowledge_logits)
            if self.detach_gate:  # only the knowledge-map loss trains the head: it stays the teacher's
                gate = gate.detach()
            semantic_tokens = self.semantic_latent.tokens
            knowledge = semantic_tokens.pool(semantic * gate) + self.position
            attended_semantic = self.semantic_attention(knowledge, semantic_tokens.pool(semantic))
            # The motion path's queries are a stop-gradient copy of the knowledge tokens, so the
            # transition loss (and the critic, through z_mot) trains the motion path and the query
            # projection, never the semantic convs: each auxiliary loss stays on its own path.
            motion_tokens = self.motion_latent.tokens.pool(motion)
            attended_motion = self.motion_attention(knowledge.detach(), motion_tokens)
        z_sem = self.semantic_latent(semantic, attended_semantic)
        z_mot = self.motion_latent(motion, attended_motion)
        fused = torch.tanh(self.fuse_norm(self.fuse(z_sem, z_mot)))
        return Encoding(fused, z_sem, z_mot, knowledge_logits, semantic, foreground_logits)

    def map_to_cells(self, teacher_map: torch.Tensor) -> torch.Tensor:
        """A teacher map at image resolution [B, 1, S, S] -> the semantic map's cells [B, 1, side, side]."""
        return cells_of(teacher_map, self.field, self.side)

    def foreground_to_cells(self, foreground: torch.Tensor) -> torch.Tensor:
        """A foreground mask at image resolution [B, 1, S, S] -> the gate map's cells (the input
        gate's are the pixels themselves)."""
        if self.gate == "input":
            return foreground
        return cells_of(foreground, self.gate_field, self.gate_side)


def make_encoder(config: EncoderConfig, frame_stack: int, image_size: int) -> PixelEncoder | SemoreEncoder:
    cls = SemoreEncoder if config.dual_path else PixelEncoder
    encoder = cls(config, frame_stack, image_size)
    encoder.apply(orthogonal_init)
    if isinstance(encoder, SemoreEncoder) and encoder.attention:
        # Each attention branch starts at zero, as residual branches do in Fixup and ReZero, so a
        # fresh encoder's latents are its maps' own and the attention grows in as it helps.
        # Initialised orthogonal, it added a near-uniform mix of all tokens to every cell: in the
        # supervised state probe (benchmarks/encoder_probe.py) the cart position's R^2 after
        # 1000 steps was 0.83 with it and 0.96 without the attention.
        for attention in (encoder.semantic_attention, encoder.motion_attention):
            nn.init.zeros_(attention.out.weight)
            nn.init.zeros_(attention.out.bias)
    return encoder


def mlp(in_dim: int, hidden: int, out_dim: int) -> nn.Sequential:
    return nn.Sequential(
        nn.Linear(in_dim, hidden), nn.ReLU(), nn.Linear(hidden, hidden), nn.ReLU(), nn.Linear(hidden, out_dim)
    )


class GaussianActor(nn.Module):
    """SAC's tanh-Gaussian policy; `mean_action` is the deterministic action that gets exported."""

    def __init__(self, feature_dim: int, action_dim: int, hidden: int) -> None:
        super().__init__()
        self.net = mlp(feature_dim, hidden, 2 * action_dim)
        self.apply(orthogonal_init)

    def forward(self, feature: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        mu, log_std = self.net(feature).chunk(2, dim=-1)
        log_std = LOG_STD_MIN + 0.5 * (LOG_STD_MAX - LOG_STD_MIN) * (torch.tanh(log_std) + 1)
        return mu, log_std

    def mean_action(self, feature: torch.Tensor) -> torch.Tensor:
        return torch.tanh(self(feature)[0])

    def sample(self, feature: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """A reparameterised action in [-1, 1] and its log-probability (with the tanh correction)."""
        mu, log_std = self(feature)
        std = log_std.exp()
        noise = torch.randn_like(mu)
        pre_tanh = mu + std * noise
        action = torch.tanh(pre_tanh)
        log_prob = (-0.5 * noise.pow(2) - log_std - 0.5 * math.log(2 * math.pi)).sum(-1)
        log_prob = log_prob - (2 * (math.log(2) - pre_tanh - F.softplus(-2 * pre_tanh))).sum(-1)
        return action, log_prob


class DeterministicActor(nn.Module):
    """DrQ-v2's actor: its own trunk (Linear + LayerNorm + tanh) on the detached feature, then an
    MLP to tanh(mu). Exploration adds Gaussian noise of a scheduled std; `mean_action` is exported.
    """

    def __init__(self, feature_dim: int, action_dim: int, hidden: int, trunk_dim: int) -> None:
        super().__init__()
        self.trunk = nn.Sequential(nn.Linear(feature_dim, trunk_dim), nn.LayerNorm(trunk_dim), nn.Tanh())
        self.net = mlp(trunk_dim, hidden, action_dim)
        self.apply(orthogonal_init)

    def pre_tanh(self, feature: torch.Tensor) -> torch.Tensor:
        return self.net(self.trunk(feature))

    def mean_action(self, feature: torch.Tensor) -> torch.Tensor:
        return torch.tanh(self.pre_tanh(feature))

    def sample(self, feature: torch.Tensor, std: float, clip: float | None = None) -> torch.Tensor:
        return self.perturb(self.mean_action(feature), std, clip)

    @staticmethod
    def perturb(mu: torch.Tensor, std: float, clip: float | None = None) -> torch.Tensor:
        """mu + N(0, std), the noise clipped to +-clip when given, the action clamped to [-1, 1].

        The clamp passes gradients straight through (as DrQ-v2's truncated normal), so an action
        at a bound still tells the actor which way its mean should move.
        """
        noise = torch.randn_like(mu) * std
        if clip is not None:
            noise = noise.clamp(-clip, clip)
        action = mu + noise
        return action + (action.clamp(-1.0, 1.0) - action).detach()


Actor = GaussianActor | DeterministicActor


def make_actor(agent: AgentConfig, encoder: EncoderConfig, feature_dim: int, action_dim: int) -> Actor:
    if agent.kind == "drqv2":
        return DeterministicActor(feature_dim, action_dim, agent.hidden_dim, encoder.feature_dim)
    return GaussianActor(feature_dim, action_dim, agent.hidden_dim)


class Critic(nn.Module):
    """Twin Q-networks on (feature, action)."""

    def __init__(self, feature_dim: int, action_dim: int, hidden: int) -> None:
        super().__init__()
        self.q1 = mlp(feature_dim + action_dim, hidden, 1)
        self.q2 = mlp(feature_dim + action_dim, hidden, 1)
        self.apply(orthogonal_init)

    def forward(self, feature: torch.Tensor, action: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        x = torch.cat([feature, action], dim=-1)
        return self.q1(x).squeeze(-1), self.q2(x).squeeze(-1)
