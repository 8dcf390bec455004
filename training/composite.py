"""Teacher-guided compositing: background pixels of a view replaced by a texture that moves
across the K stacked frames, the foreground kept where the teacher's mask says it is.

In the SVEA form the critic learns from these views beside the clean ones, with the TD target
from clean data only, so the policy learns that background does not matter without training on
an environment that looks different all the time (which, as plain domain randomisation, stopped
the pixel baseline from learning at all in a probe).
"""

from __future__ import annotations

import numpy as np
import torch


class Compositor:
    """Draws, per view, one texture of the bank and a velocity; frame k shows the texture's window
    shifted by k times that velocity, so a composited background moves as a video would."""

    def __init__(self, textures: np.ndarray, image_size: int, speed: int, device: torch.device) -> None:
        """textures: uint8 [N, T, T, 3], T at least image_size + speed * (K - 1)."""
        # Kept in the preprocessed range ([-0.5, 0.5], channels first), as the views are.
        self.bank = torch.as_tensor(textures, device=device).permute(0, 3, 1, 2).float() / 255.0 - 0.5
        self.size, self.speed = image_size, speed
        self.pixels = torch.arange(image_size, device=device)

    def __call__(self, views: torch.Tensor, foreground: torch.Tensor) -> torch.Tensor:
        """views: [m, 3K, S, S] preprocessed frames; foreground: [m, K, S, S] in [0, 1] (1 = keep)."""
        m, k = len(views), foreground.shape[1]
        device, side = views.device, self.bank.shape[-1]
        texture = torch.randint(len(self.bank), (m,), device=device)
        velocity = torch.randint(-self.speed, self.speed + 1, (m, 2), device=device)
        travel = velocity * (k - 1)
        low = (-travel).clamp_min(0)
        room = side - self.size - travel.abs()
        if (room < 0).any():
            raise ValueError(
                f"textures of {side} px cannot hold a {self.size} px window moving {self.speed} px a frame"
            )
        start = low + (torch.rand(m, 2, device=device) * (room + 1)).long()
        offsets = (
            start[:, None] + velocity[:, None] * torch.arange(k, device=device)[None, :, None]
        )  # [m, K, 2]
        rows = offsets[..., 0, None] + self.pixels  # [m, K, S]
        cols = offsets[..., 1, None] + self.pixels
        # Advanced indices around a slice put their dimensions first: [m, K, S, S, 3].
        crops = self.bank[texture[:, None, None, None], :, rows[..., None], cols[:, :, None, :]]
        crops = crops.permute(0, 1, 4, 2, 3).reshape(views.shape)
        keep = foreground.repeat_interleave(3, dim=1)
        return views * keep + crops * (1.0 - keep)
