"""Random-shift augmentation (DrQ): pad by replication, then shift each sample by whole pixels."""

from __future__ import annotations

import torch
import torch.nn.functional as F


def random_shift(*images: torch.Tensor, pad: int) -> tuple[torch.Tensor, ...]:
    """Each [B, C, S, S] float tensor moves by the same random (dx, dy) per sample.

    Passing a frame stack and its teacher map together keeps them aligned without concatenating
    them into one tensor (a copy per update, then a strided split).
    """
    if pad == 0:
        return images
    b, _, s, _ = images[0].shape
    device, dtype = images[0].device, images[0].dtype
    # Sampling grid in normalised coordinates of the padded image; one pixel = 2 / (s + 2 pad).
    step = 2.0 / (s + 2 * pad)
    base = torch.linspace(-1.0 + step / 2, -1.0 + step / 2 + step * (s - 1), s, device=device, dtype=dtype)
    grid_y, grid_x = torch.meshgrid(base, base, indexing="ij")
    grid = torch.stack([grid_x, grid_y], dim=-1).unsqueeze(0).expand(b, s, s, 2)
    grid = grid + torch.randint(0, 2 * pad + 1, (b, 1, 1, 2), device=device).to(dtype) * step
    return tuple(
        F.grid_sample(
            F.pad(x, (pad, pad, pad, pad), mode="replicate"), grid, mode="nearest", align_corners=False
        )
        for x in images
    )
