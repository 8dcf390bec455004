"""Conv-stack arithmetic: feature-map sides and where each feature cell looks in the image.

Pure Python, so the config can refuse an impossible encoder before torch builds anything, and the
networks and losses agree with it by construction.
"""

from __future__ import annotations

from dataclasses import dataclass


def conv_output_size(image_size: int, layers: int, strided: int = 1) -> int:
    """Side of the map after `layers` unpadded 3x3 convs, the first `strided` of them with stride 2."""
    size = image_size
    for i in range(layers):
        size = (size - 3) // (2 if i < strided else 1) + 1
    return size


@dataclass(frozen=True)
class ReceptiveField:
    """Feature cell j is centred on input pixel `first_centre + jump * j` and sees `size` pixels."""

    first_centre: int
    jump: int
    size: int


def receptive_field(layers: int, strided: int = 1) -> ReceptiveField:
    """For unpadded 3x3 convs: each layer moves the centre by one cell of the layer below."""
    centre, jump, size = 1, 2 if strided >= 1 else 1, 3
    for i in range(1, layers):
        centre += jump
        size += 2 * jump
        jump *= 2 if i < strided else 1
    return ReceptiveField(centre, jump, size)


def token_cells(side: int, grid: int) -> list[tuple[int, int]]:
    """[start, end) of each of `grid` cells that tile `side` exactly (sizes differ by at most one)."""
    if not 1 <= grid <= side:
        raise ValueError(f"a grid of {grid} cannot tile a side of {side}")
    return [(i * side // grid, (i + 1) * side // grid) for i in range(grid)]
