"""Passive Visual Match (Hung et al. 2019, as used by Ni et al. 2023 and the HQLT paper), on a small symbolic grid.

Three rooms, one after the other (the agent is moved from one to the next when a phase ends):

1. **Cue** (``cue_length`` steps, paper 15): a room with one coloured square right in front of the agent's start, so
   the colour is in view at the first step whatever the agent does (the *passive* variant). The square blocks.
2. **Distractor** (``distractor_length`` steps, paper 750; 0 skips the room): ``n_apples`` apples at random cells;
   stepping on one gives ``apple_reward`` and it comes back at the same cell ``apple_respawn`` steps later
   (paper 20). Nothing here depends on the cue.
3. **Recall** (at most ``final_time_limit`` steps): three squares on the top row, the cue's colour and two other
   colours in random order. Stepping onto the cue's colour gives ``final_reward`` (paper 100) and ends the episode
   with success; another colour ends it with nothing. Running out of time ends it with nothing too, as a
   *terminal* failure (``terminated=True``): the deadline is a rule of the task, which a memory agent can count to,
   not a cut of an endless episode. (Reported as ``truncated``, PPO would bootstrap the value of the recall room
   there, and stalling until the deadline would earn as much as choosing: agents learned to never choose.)

Grid and observations. Each room is 7 x 11 cells including its wall (5 x 9 inside). The agent sees a square
``view_size`` x ``view_size`` window (default 5) centred on itself, north up (allocentric orientation, no turning),
cells outside the room read as wall. Observation: ``Box(uint8, (view_size, view_size, 2))``, channels
(object type, colour): types 0 floor, 1 wall, 2 apple, 3 coloured square; colours 0 none, 1 .. ``n_colours``.
The bounds are the largest index of each channel (not 255), so SB3 does not mistake it for an image; use
``agents.extractors.SymbolicGridExtractor``. Actions ``Discrete(4)``: 0 north, 1 east, 2 south, 3 west.

In the recall room nothing tells which colour was the cue, so a policy without memory picks the right square with
probability 1/3 at best. ``info["success"]`` is set on the last step of the episode.
"""

from __future__ import annotations

from typing import Any

import gymnasium as gym
import numpy as np
from gymnasium import spaces

from envs._validate import check_int
from envs.render import APPLE, COLOURS, FLOOR, VIEW, WALL, draw_cells, mark_agent

T_FLOOR, T_WALL, T_APPLE, T_SQUARE = 0, 1, 2, 3
ROOM_H, ROOM_W = 5, 9  # inside the walls
CUE_PHASE, DISTRACTOR_PHASE, RECALL_PHASE = 0, 1, 2
_MOVES = ((-1, 0), (0, 1), (1, 0), (0, -1))  # N, E, S, W as (d_row, d_col)
_SQUARE_COLS = (1, 4, 7)  # recall squares on inside row 0
_RECALL_START = (4, 4)  # bottom centre
_CUE_CELL, _CUE_START = (2, 4), (3, 4)
_DISTRACTOR_START = (2, 4)
_MAX_COLOURS = len(COLOURS)
_TILE = 12


class PassiveVisualMatch(gym.Env):
    """Passive Visual Match on a symbolic grid (see the module docstring for the task).

    Args:
        cue_length: steps in the cue room (>= 1; paper 15).
        distractor_length: steps in the apple room (>= 0; paper 750; 0 skips it).
        final_time_limit: most steps in the recall room (>= 7, the walk to the farthest square).
        n_colours: size of the colour palette the cue is drawn from (3 .. 6); the recall room shows the cue colour and
            two others from the palette.
        n_apples: apples in the distractor room (0 .. 40).
        apple_respawn: steps before an eaten apple comes back (>= 1; paper 20).
        apple_reward: reward per apple.
        final_reward: reward for the right square (paper 100).
        view_size: side of the square view centred on the agent (odd, 3 .. 11).
        render_mode: None or "rgb_array" (the current room, the agent's view shaded).
    """

    metadata = {"render_modes": ["rgb_array"], "render_fps": 10}

    def __init__(
        self,
        cue_length: int = 15,
        distractor_length: int = 750,
        final_time_limit: int = 20,
        n_colours: int = 3,
        n_apples: int = 10,
        apple_respawn: int = 20,
        apple_reward: float = 1.0,
        final_reward: float = 100.0,
        view_size: int = 5,
        render_mode: str | None = None,
    ) -> None:
        cls = type(self).__name__
        self.cue_length = check_int(cls, "cue_length", cue_length, 1)
        self.distractor_length = check_int(cls, "distractor_length", distractor_length, 0)
        self.final_time_limit = check_int(cls, "final_time_limit", final_time_limit, 7)
        self.n_colours = check_int(cls, "n_colours", n_colours, 3, _MAX_COLOURS)
        self.n_apples = check_int(cls, "n_apples", n_apples, 0, ROOM_H * ROOM_W - 1)
        self.apple_respawn = check_int(cls, "apple_respawn", apple_respawn, 1)
        self.apple_reward = float(apple_reward)
        self.final_reward = float(final_reward)
        self.view_size = check_int(cls, "view_size", view_size, 3, 11, odd=True)
        if render_mode is not None and render_mode not in self.metadata["render_modes"]:
            raise ValueError(f"{cls}: render_mode must be one of {self.metadata['render_modes']} or None, got {render_mode!r}")
        self.render_mode = render_mode

        h = self.view_size // 2
        self._off = h + 1  # inside cell (i, j) is grid cell (i + off, j + off)
        high = np.empty((self.view_size, self.view_size, 2), np.uint8)
        high[..., 0], high[..., 1] = T_SQUARE, self.n_colours
        self.observation_space = spaces.Box(np.zeros_like(high), high, dtype=np.uint8)
        self.action_space = spaces.Discrete(4)
        # An empty room padded by h wall cells beyond its own wall, so every view is a plain slice.
        self._empty_room = np.zeros((ROOM_H + 2 * self._off, ROOM_W + 2 * self._off, 2), np.uint8)  # (H_pad, W_pad, 2)
        self._empty_room[..., 0] = T_WALL
        self._empty_room[self._off : self._off + ROOM_H, self._off : self._off + ROOM_W, 0] = T_FLOOR
        self._grid = self._empty_room.copy()
        self._apple_rc = np.zeros((self.n_apples, 2), np.int64)  # grid coordinates of each apple's cell
        self._apple_due = np.full(self.n_apples, -1, np.int64)  # phase step when an eaten apple returns, -1 = present
        self._next_due = -1
        self.cue_colour = 1
        self.square_colours = (1, 2, 3)
        self.phase = CUE_PHASE
        self.phase_t = 0
        self.r = self.c = 0

    # -- gymnasium API -------------------------------------------------------------------------------------------------
    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None) -> tuple[np.ndarray, dict]:
        super().reset(seed=seed)
        rng = self.np_random
        colours = rng.permutation(self.n_colours)[:3] + 1  # cue first, then two distractor colours
        self.cue_colour = int(colours[0])
        self.square_colours = tuple(int(c) for c in rng.permutation(colours))
        # Apple cells: distinct inside cells other than the distractor start.
        start = _DISTRACTOR_START[0] * ROOM_W + _DISTRACTOR_START[1]
        cells = rng.choice(ROOM_H * ROOM_W - 1, size=self.n_apples, replace=False)
        cells = cells + (cells >= start)  # skip the start cell
        self._apple_rc[:, 0] = cells // ROOM_W + self._off
        self._apple_rc[:, 1] = cells % ROOM_W + self._off
        self._enter(CUE_PHASE)
        return self._view(), {}

    def step(self, action: int) -> tuple[np.ndarray, float, bool, bool, dict]:
        dr, dc = _MOVES[int(action)]
        nr, nc = self.r + dr, self.c + dc
        target = self._grid[nr, nc, 0]
        self.phase_t += 1
        reward, terminated, truncated = 0.0, False, False
        info: dict[str, Any] = {}
        if self.phase == RECALL_PHASE:
            if target == T_SQUARE:
                success = int(self._grid[nr, nc, 1]) == self.cue_colour
                reward, terminated = (self.final_reward if success else 0.0), True
                info["success"] = success
                self.r, self.c = nr, nc
            else:
                if target != T_WALL:
                    self.r, self.c = nr, nc
                if self.phase_t >= self.final_time_limit:
                    terminated = True  # a failure of the task, not a time-limit cut (see the module docstring)
                    info["success"] = False
        elif self.phase == DISTRACTOR_PHASE:
            if target != T_WALL:
                self.r, self.c = nr, nc
                if target == T_APPLE:
                    reward = self.apple_reward
                    self._grid[nr, nc, 0] = T_FLOOR
                    i = int(np.flatnonzero((self._apple_rc[:, 0] == nr) & (self._apple_rc[:, 1] == nc))[0])
                    self._apple_due[i] = self.phase_t + self.apple_respawn
                    if self._next_due < 0 or self._apple_due[i] < self._next_due:
                        self._next_due = int(self._apple_due[i])
            if 0 <= self._next_due <= self.phase_t:
                self._respawn()
            if self.phase_t >= self.distractor_length:
                self._enter(RECALL_PHASE)
        else:  # cue room: the square blocks like a wall
            if target == T_FLOOR:
                self.r, self.c = nr, nc
            if self.phase_t >= self.cue_length:
                self._enter(DISTRACTOR_PHASE if self.distractor_length > 0 else RECALL_PHASE)
        return self._view(), reward, terminated, truncated, info

    def render(self) -> np.ndarray | None:
        if self.render_mode != "rgb_array":
            return None
        o, h = self._off, self.view_size // 2
        g = self._grid[o - 1 : o + ROOM_H + 1, o - 1 : o + ROOM_W + 1]  # the room and its wall  (7, 11, 2)
        cells = np.full(g.shape[:2], FLOOR, np.int64)
        vr, vc = self.r - (o - 1), self.c - (o - 1)
        cells[max(vr - h, 0) : vr + h + 1, max(vc - h, 0) : vc + h + 1] = VIEW
        cells[g[..., 0] == T_WALL] = WALL
        cells[g[..., 0] == T_APPLE] = APPLE
        sq = g[..., 0] == T_SQUARE
        cells[sq] = np.asarray(COLOURS)[g[..., 1][sq].astype(np.int64) - 1]
        return mark_agent(draw_cells(cells, _TILE), vr, vc, _TILE)

    # -- internals -----------------------------------------------------------------------------------------------------
    def _view(self) -> np.ndarray:
        h = self.view_size // 2
        return self._grid[self.r - h : self.r + h + 1, self.c - h : self.c + h + 1].copy()  # (V, V, 2)

    def _enter(self, phase: int) -> None:
        """Build the room of ``phase`` in place and put the agent at its start."""
        o = self._off
        np.copyto(self._grid, self._empty_room)
        self.phase, self.phase_t = phase, 0
        if phase == CUE_PHASE:
            self._grid[_CUE_CELL[0] + o, _CUE_CELL[1] + o] = (T_SQUARE, self.cue_colour)
            start = _CUE_START
        elif phase == DISTRACTOR_PHASE:
            self._grid[self._apple_rc[:, 0], self._apple_rc[:, 1], 0] = T_APPLE
            self._apple_due.fill(-1)
            self._next_due = -1
            start = _DISTRACTOR_START
        else:
            for col, colour in zip(_SQUARE_COLS, self.square_colours):
                self._grid[o, col + o] = (T_SQUARE, colour)
            start = _RECALL_START
        self.r, self.c = start[0] + o, start[1] + o

    def _respawn(self) -> None:
        """Put back the apples whose time has come (not under the agent: those wait a step)."""
        due = self._apple_due
        for i in np.flatnonzero((due >= 0) & (due <= self.phase_t)):
            r, c = self._apple_rc[i]
            if r == self.r and c == self.c:
                due[i] = self.phase_t + 1
            else:
                self._grid[r, c, 0] = T_APPLE
                due[i] = -1
        pending = due[due >= 0]
        self._next_due = int(pending.min()) if pending.size else -1

    # -- helpers -------------------------------------------------------------------------------------------------------
    def optimal_action(self) -> int:
        """An oracle action (reads the hidden cue): in the recall room walk to the cue's square, elsewhere go north.

        Only the recall phase matters for success; in the apple room it does not try to collect apples.
        """
        if self.phase != RECALL_PHASE:
            return 0
        o = self._off
        col = _SQUARE_COLS[self.square_colours.index(self.cue_colour)] + o
        if self.c < col:
            return 1
        if self.c > col:
            return 3
        return 0
