"""MiniGrid memory tasks (``MiniGrid-MemoryS*-v0`` from the minigrid package) in the form our agents take.

``MiniGridMemory`` wraps any MiniGrid env:

- observation: the symbolic egocentric view only (the ``"image"`` entry), ``Box(uint8, (V, V, 3))`` indexed
  ``[x, y, channel]`` as MiniGrid lays it out (the agent at ``[V // 2, V - 1]``, looking toward ``y = 0``), channels
  (object index, colour index, state). The upper bounds are the largest index of each channel (10, 5, 2), not 255:
  these are categories, not pixels, and SB3 must not rescale or transpose them as an image. Use
  ``agents.extractors.SymbolicGridExtractor``. The mission string and direction are dropped (constant / not needed);
- ``view_size``: a smaller egocentric view (odd, >= 3), as memory studies use (3 x 3 hides the cue from far away);
- ``n_actions=3`` keeps only left / right / forward (the only actions that matter in Memory); 7 keeps them all;
- ``info["success"]`` on the last step of each episode: the agent reached the matching object (for envs without a
  ``success_pos``: the episode terminated with positive reward).

``make_minigrid_memory`` builds ``minigrid.envs.MemoryEnv`` directly and wraps it; ``hqlt/MiniGridMemoryS*-v0`` ids
use it. ``minigrid_memory_optimal_action`` is a scripted solver that reads the unwrapped env's state.
"""

from __future__ import annotations

from collections import deque
from typing import Any

import gymnasium as gym
import numpy as np
from gymnasium import spaces
from minigrid.core.constants import COLOR_TO_IDX, DIR_TO_VEC, OBJECT_TO_IDX, STATE_TO_IDX
from minigrid.envs import MemoryEnv

from envs._validate import check_int

LEFT, RIGHT, FORWARD = 0, 1, 2
_CHANNEL_HIGH = (max(OBJECT_TO_IDX.values()), max(COLOR_TO_IDX.values()), max(STATE_TO_IDX.values()))


class MiniGridMemory(gym.Wrapper):
    """Symbolic-view, small-action-set wrapper with ``info["success"]`` for MiniGrid envs (see module docstring).

    Args:
        env: a MiniGrid env (its ``unwrapped`` must be a ``MiniGridEnv``).
        view_size: None to keep the env's view, else an odd size >= 3 (sets the env's ``agent_view_size``).
        n_actions: 3 (left, right, forward) or 7 (MiniGrid's full action set).
    """

    def __init__(self, env: gym.Env, view_size: int | None = None, n_actions: int = 3) -> None:
        super().__init__(env)
        base = env.unwrapped
        if not hasattr(base, "agent_view_size") or not hasattr(base, "grid"):
            raise ValueError(f"MiniGridMemory: env must be a MiniGrid env (MiniGridEnv underneath), got {type(base).__name__}")
        if n_actions not in (3, 7):
            raise ValueError(f"MiniGridMemory: n_actions must be 3 (left, right, forward) or 7 (all), got {n_actions!r}")
        if view_size is not None:
            base.agent_view_size = check_int("MiniGridMemory", "view_size", view_size, 3, odd=True)
        v = base.agent_view_size
        high = np.broadcast_to(np.asarray(_CHANNEL_HIGH, np.uint8), (v, v, 3)).copy()
        self.observation_space = spaces.Box(np.zeros_like(high), high, dtype=np.uint8)
        if isinstance(base.observation_space, spaces.Dict):  # keep the inner env's own space truthful
            base.observation_space = spaces.Dict({**base.observation_space.spaces, "image": self.observation_space})
        self.action_space = spaces.Discrete(n_actions)
        self.metadata = {**env.metadata, "render_modes": ["rgb_array"]}  # frames only; no pygame window

    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None) -> tuple[np.ndarray, dict]:
        obs, info = self.env.reset(seed=seed, options=options)
        return obs["image"], info

    def step(self, action: int) -> tuple[np.ndarray, float, bool, bool, dict]:
        obs, reward, terminated, truncated, info = self.env.step(int(action))
        if terminated or truncated:
            base = self.env.unwrapped
            success_pos = getattr(base, "success_pos", None)
            if success_pos is not None:
                success = bool(terminated) and tuple(int(p) for p in base.agent_pos) == tuple(success_pos)
            else:
                success = bool(terminated) and reward > 0
            info = {**info, "success": success}
        return obs["image"], float(reward), bool(terminated), bool(truncated), info


def make_minigrid_memory(
    size: int = 7,
    view_size: int = 7,
    random_length: bool = False,
    n_actions: int = 3,
    max_steps: int | None = None,
    render_mode: str | None = None,
) -> MiniGridMemory:
    """Build ``MiniGridMemory(MemoryEnv(size, ...))``.

    Args:
        size: grid side (odd, >= 7; MiniGrid registers 7, 9, 11, 13, 17).
        view_size: egocentric view side (odd, >= 3).
        random_length: random hallway length (MiniGrid's ``*Random`` variants).
        n_actions: 3 or 7, see ``MiniGridMemory``.
        max_steps: episode limit (None: MiniGrid's 5 * size**2); reaching it gives ``truncated=True``.
        render_mode: None or "rgb_array".
    """
    size = check_int("make_minigrid_memory", "size", size, 7, odd=True)
    view_size = check_int("make_minigrid_memory", "view_size", view_size, 3, odd=True)
    if max_steps is not None:
        max_steps = check_int("make_minigrid_memory", "max_steps (or None)", max_steps, 1)
    if render_mode not in (None, "rgb_array"):
        raise ValueError(f"make_minigrid_memory: render_mode must be 'rgb_array' or None, got {render_mode!r}")
    env = MemoryEnv(
        size=size, random_length=bool(random_length), max_steps=max_steps, agent_view_size=view_size, render_mode=render_mode
    )
    return MiniGridMemory(env, n_actions=n_actions)


def minigrid_memory_optimal_action(env: gym.Env) -> int:
    """Scripted solver for MiniGrid Memory: the first action of a shortest path to the matching object.

    Reads the unwrapped ``MemoryEnv``'s grid, position, direction and ``success_pos`` (it cheats: it knows the answer),
    searches breadth-first over (x, y, direction) with left / right / forward, never entering ``failure_pos``.
    Returns 0 left, 1 right or 2 forward (the same indices in the 3- and 7-action sets).
    """
    base = env.unwrapped
    goal = tuple(base.success_pos)
    bad = tuple(base.failure_pos)
    grid = base.grid

    def free(x: int, y: int) -> bool:
        if not (0 <= x < grid.width and 0 <= y < grid.height) or (x, y) == bad:
            return False
        cell = grid.get(x, y)
        return cell is None or cell.can_overlap()

    start = (int(base.agent_pos[0]), int(base.agent_pos[1]), int(base.agent_dir))
    if start[:2] == goal:
        return FORWARD
    first: dict[tuple[int, int, int], int] = {start: -1}
    queue = deque([start])
    while queue:
        x, y, d = queue.popleft()
        dx, dy = DIR_TO_VEC[d]
        moves = ((FORWARD, (x + int(dx), y + int(dy), d)), (LEFT, (x, y, (d - 1) % 4)), (RIGHT, (x, y, (d + 1) % 4)))
        for action, nxt in moves:
            if nxt in first or (action == FORWARD and not free(nxt[0], nxt[1])):
                continue
            first[nxt] = action if first[(x, y, d)] < 0 else first[(x, y, d)]
            if nxt[:2] == goal:
                return first[nxt]
            queue.append(nxt)
    raise RuntimeError("minigrid_memory_optimal_action: no path to success_pos (is this a MiniGrid MemoryEnv?)")
