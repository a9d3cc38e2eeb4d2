"""T-Maze memory tasks.

``PassiveTMaze`` follows the passive T-Maze of Ni et al. 2023 ("When do transformers shine in RL? Decoupling
memory from credit assignment"): a cue at the first step, a corridor of ``memory_length`` cells, a junction
where the agent must turn the way the cue said.

``HiddenGoalTMaze`` is the same corridor without a cue: the goal arm is hidden and only revealed by going
there (the agent sees whether the arm it entered holds the goal). Inside one episode nothing tells the agent
which side is right before it chooses, so a policy that forgets between episodes is at chance on every
episode; wrapped in ``TrialsWrapper`` (the goal side is fixed for a trial of K episodes) an agent whose memory
survives episode boundaries can go to the right side on episodes 2..K.

Layout (both): positions x = 0 .. L along the corridor, L = ``memory_length``; the agent starts at x = 0 and
the junction is x = L. Actions ``Discrete(4)``: 0 up, 1 right (toward the junction), 2 down, 3 left.
Up/down do nothing in the corridor, right does nothing at the junction, left is clipped at x = 0.
"""

from __future__ import annotations

from typing import Any

import gymnasium as gym
import numpy as np
from gymnasium import spaces

from envs._validate import check_int
from envs.render import COLOURS, FLOOR, VOID, WALL, draw_cells, mark_agent

UP, RIGHT, DOWN, LEFT = 0, 1, 2, 3
_TILE = 12


def _check_lengths(cls: str, memory_length: int, time_limit: int | None, min_steps: int) -> int:
    """Validate ``memory_length`` / ``time_limit``; return the time limit (default: the fewest steps that succeed)."""
    check_int(cls, "memory_length", memory_length, 1)
    if time_limit is None:
        return min_steps
    if isinstance(time_limit, bool) or not isinstance(time_limit, (int, np.integer)) or time_limit < min_steps:
        raise ValueError(
            f"{cls}: time_limit must be None or an integer >= {min_steps} (memory_length + {min_steps - memory_length}, "
            f"the fewest steps that can succeed), got {time_limit!r}"
        )
    return int(time_limit)


def _check_render_mode(cls: str, render_mode: str | None, allowed: list[str]) -> None:
    if render_mode is not None and render_mode not in allowed:
        raise ValueError(f"{cls}: render_mode must be one of {allowed} or None, got {render_mode!r}")


class PassiveTMaze(gym.Env):
    """Passive T-Maze (Ni et al. 2023): remember a cue shown only at step 0 until the junction.

    Observation: ``Box(0, 1, (3,), float32)`` = [cue_up, cue_down, at_junction]. The cue entries are non-zero only
    in the first observation of the episode; ``at_junction`` is 1 at x = L. So at the junction a memoryless policy
    sees the same vector whatever the cue was and is at chance (50 %).

    Reward: 1 for turning (up/down at the junction) the way the cue said, 0 for the wrong way; both end the episode
    (``terminated``). Every step that does not move the agent toward the junction (including a wasted move at the
    junction other than a turn) costs ``1 / (T - 1)``, as in Ni et al., so the best return is exactly 1 and an agent
    that dawdles pays for it. ``T`` is the time limit (default ``memory_length + 1``: L moves right and one turn,
    Ni et al.'s choice); reaching it without a turn ends the episode with ``truncated=True``.

    ``info["success"]`` (bool) is set on the last step of an episode (terminated or truncated).

    Args:
        memory_length: corridor length L >= 1: the number of steps between the cue and the junction.
        time_limit: episode step limit T >= L + 1, or None for L + 1.
        render_mode: None or "rgb_array" (uint8 frames, the cue drawn blue = up / yellow = down at the start cell
            while it is visible, the correct arm drawn in the cue's colour).
    """

    metadata = {"render_modes": ["rgb_array"], "render_fps": 8}

    def __init__(self, memory_length: int = 10, time_limit: int | None = None, render_mode: str | None = None) -> None:
        self.time_limit = _check_lengths(type(self).__name__, memory_length, time_limit, memory_length + 1)
        _check_render_mode(type(self).__name__, render_mode, self.metadata["render_modes"])
        self.memory_length = int(memory_length)
        self.render_mode = render_mode
        self.penalty = -1.0 / (self.time_limit - 1) if self.time_limit > 1 else 0.0
        self.observation_space = spaces.Box(0.0, 1.0, (3,), np.float32)
        self.action_space = spaces.Discrete(4)
        # The four observations the task can produce, built once (copied out on each step).
        self._obs_cue = (np.array([1, 0, 0], np.float32), np.array([0, 1, 0], np.float32))
        self._obs_corridor = np.zeros(3, np.float32)
        self._obs_junction = np.array([0, 0, 1], np.float32)
        self.cue = 0  # 0 = up, 1 = down
        self.x = 0
        self.t = 0

    # -- gymnasium API -------------------------------------------------------------------------------------------------
    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None) -> tuple[np.ndarray, dict]:
        super().reset(seed=seed)
        self.cue = int(self.np_random.integers(2))
        self.x = 0
        self.t = 0
        return self._obs_cue[self.cue].copy(), {}

    def step(self, action: int) -> tuple[np.ndarray, float, bool, bool, dict]:
        a = int(action)
        self.t += 1
        L = self.memory_length
        info: dict[str, Any] = {}
        if self.x == L and (a == UP or a == DOWN):
            success = (a == UP) == (self.cue == 0)
            info["success"] = success
            return self._obs_junction.copy(), float(success), True, False, info
        if a == RIGHT and self.x < L:
            self.x += 1
            reward = 0.0
        else:
            if a == LEFT and self.x > 0:
                self.x -= 1
            reward = self.penalty
        truncated = self.t >= self.time_limit
        if truncated:
            info["success"] = False
        obs = self._obs_junction if self.x == L else self._obs_corridor
        return obs.copy(), reward, False, truncated, info

    def render(self) -> np.ndarray | None:
        if self.render_mode != "rgb_array":
            return None
        L = self.memory_length
        cells = np.full((3, L + 3), WALL, np.int64)  # rows: up arm, corridor, down arm; one wall column each side
        cells[1, 1 : L + 2] = FLOOR
        cells[0, L + 1] = cells[2, L + 1] = FLOOR
        colour = COLOURS[2] if self.cue == 0 else COLOURS[3]  # blue = up, yellow = down
        cells[0 if self.cue == 0 else 2, L + 1] = colour
        if self.t == 0:
            cells[1, 1] = colour
        frame = draw_cells(cells, _TILE)
        return mark_agent(frame, 1, self.x + 1, _TILE)

    # -- helpers -------------------------------------------------------------------------------------------------------
    def optimal_action(self) -> int:
        """The action of the optimal policy, read from the hidden state (an oracle for tests and baselines)."""
        if self.x < self.memory_length:
            return RIGHT
        return UP if self.cue == 0 else DOWN


class HiddenGoalTMaze(gym.Env):
    """T-Maze whose goal arm is never shown: the agent finds out by going there.

    Observation: ``Box(0, 1, (4,), float32)`` = [at_junction, in_up_arm, in_down_arm, goal_here]. Turning up or down
    at the junction moves the agent into that arm and gives reward 1 if the goal is there (else 0); the agent then
    sees where it is and whether the goal was there, and the episode ends (``terminated``) on the next step, whatever
    the action. That extra step exists so the outcome is *observed* (a policy never sees the terminal observation
    of an episode under SB3's auto-reset): an agent that carries memory across episodes can use it in the next
    episode of a trial (see ``TrialsWrapper`` and ``hqlt/TMazeTrials-v0``).

    Steps in the corridor that do not move toward the junction cost ``1 / (T - 1)``; the time limit ``T`` defaults to
    ``memory_length + 2`` (L moves, the turn, the step in the arm); reaching it ends with ``truncated=True``.
    ``info["success"]`` on the last step: whether the goal arm was entered. The goal side is drawn at reset from the
    env's ``np_random`` (so resetting with the same seed gives the same side).

    Args:
        memory_length: corridor length L >= 1.
        time_limit: episode step limit T >= L + 2, or None for L + 2.
        render_mode: None or "rgb_array" (goal arm drawn green).
    """

    metadata = {"render_modes": ["rgb_array"], "render_fps": 8}

    def __init__(self, memory_length: int = 4, time_limit: int | None = None, render_mode: str | None = None) -> None:
        self.time_limit = _check_lengths(type(self).__name__, memory_length, time_limit, memory_length + 2)
        _check_render_mode(type(self).__name__, render_mode, self.metadata["render_modes"])
        self.memory_length = int(memory_length)
        self.render_mode = render_mode
        self.penalty = -1.0 / (self.time_limit - 1)
        self.observation_space = spaces.Box(0.0, 1.0, (4,), np.float32)
        self.action_space = spaces.Discrete(4)
        self._obs_corridor = np.zeros(4, np.float32)
        self._obs_junction = np.array([1, 0, 0, 0], np.float32)
        # [arm][goal found] -> observation
        self._obs_arm = tuple(
            tuple(np.array([0, arm == 0, arm == 1, found], np.float32) for found in (0, 1)) for arm in (0, 1)
        )
        self.goal_side = 0  # 0 = up, 1 = down
        self.arm = -1  # -1 = not in an arm, else 0 (up) / 1 (down)
        self.x = 0
        self.t = 0

    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None) -> tuple[np.ndarray, dict]:
        super().reset(seed=seed)
        self.goal_side = int(self.np_random.integers(2))
        self.arm = -1
        self.x = 0
        self.t = 0
        return self._obs_corridor.copy(), {}

    def step(self, action: int) -> tuple[np.ndarray, float, bool, bool, dict]:
        a = int(action)
        self.t += 1
        L = self.memory_length
        info: dict[str, Any] = {}
        if self.arm >= 0:  # the step after the turn: the episode ends
            info["success"] = self.arm == self.goal_side
            return self._obs_arm[self.arm][int(self.arm == self.goal_side)].copy(), 0.0, True, False, info
        if self.x == L and (a == UP or a == DOWN):
            self.arm = 0 if a == UP else 1
            found = self.arm == self.goal_side
            obs, reward = self._obs_arm[self.arm][int(found)], float(found)
        else:
            if a == RIGHT and self.x < L:
                self.x += 1
                reward = 0.0
            else:
                if a == LEFT and self.x > 0:
                    self.x -= 1
                reward = self.penalty
            obs = self._obs_junction if self.x == L else self._obs_corridor
        truncated = self.t >= self.time_limit
        if truncated:
            info["success"] = self.arm >= 0 and self.arm == self.goal_side
        return obs.copy(), reward, False, truncated, info

    def render(self) -> np.ndarray | None:
        if self.render_mode != "rgb_array":
            return None
        L = self.memory_length
        cells = np.full((3, L + 3), WALL, np.int64)
        cells[1, 1 : L + 2] = FLOOR
        cells[0, L + 1] = cells[2, L + 1] = VOID
        cells[0 if self.goal_side == 0 else 2, L + 1] = COLOURS[1]  # green goal
        frame = draw_cells(cells, _TILE)
        row, col = (1, self.x + 1) if self.arm < 0 else (0 if self.arm == 0 else 2, L + 1)
        return mark_agent(frame, row, col, _TILE)

    def optimal_action(self) -> int:
        """The oracle's action (knows the hidden goal side): walk right, turn to the goal, then anything."""
        if self.arm >= 0:
            return RIGHT
        if self.x < self.memory_length:
            return RIGHT
        return UP if self.goal_side == 0 else DOWN
