"""Tiny numpy renderer shared by the environments: a grid of palette indices -> an RGB frame.

No pygame, no matplotlib: a frame is ``palette[cells]`` blown up to ``tile`` pixels per cell with a
one-pixel grid line, so rendering costs a few array operations.
"""

from __future__ import annotations

import numpy as np

# Palette indices used by every environment in envs/ (RGB, uint8).
PALETTE = np.array(
    [
        (30, 30, 30),  # 0 floor
        (110, 110, 110),  # 1 wall
        (220, 40, 40),  # 2 red
        (40, 180, 60),  # 3 green
        (50, 90, 230),  # 4 blue
        (235, 200, 30),  # 5 yellow
        (170, 60, 200),  # 6 purple
        (30, 200, 200),  # 7 cyan
        (255, 255, 255),  # 8 agent
        (255, 140, 0),  # 9 apple
        (0, 0, 0),  # 10 outside / void
        (60, 60, 90),  # 11 floor inside the agent's view
    ],
    dtype=np.uint8,
)
FLOOR, WALL, AGENT, APPLE, VOID, VIEW = 0, 1, 8, 9, 10, 11
COLOURS = (2, 3, 4, 5, 6, 7)  # palette index of colour c (1-based colour index c -> COLOURS[c - 1])


def draw_cells(cells: np.ndarray, tile: int = 12) -> np.ndarray:
    """Render a (H, W) array of palette indices as a uint8 frame of shape (H * tile, W * tile, 3)."""
    rgb = PALETTE[cells]  # (H, W, 3)
    frame = np.repeat(np.repeat(rgb, tile, axis=0), tile, axis=1)  # (H * tile, W * tile, 3)
    frame[::tile, :, :] //= 2  # grid lines
    frame[:, ::tile, :] //= 2
    return np.ascontiguousarray(frame)


def mark_agent(frame: np.ndarray, row: int, col: int, tile: int = 12) -> np.ndarray:
    """Draw the agent as a white square (inset by a quarter tile) in cell (row, col) of ``frame``, in place."""
    m = max(1, tile // 4)
    frame[row * tile + m : (row + 1) * tile - m, col * tile + m : (col + 1) * tile - m] = PALETTE[AGENT]
    return frame
