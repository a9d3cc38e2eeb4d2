"""Trials: K consecutive episodes that share one hidden task, to test memory carried across episodes.

``TrialsWrapper`` works for any environment whose hidden task is drawn from its ``np_random`` at reset: every
episode of a trial resets the inner env with the same seed (the *trial seed*), so it draws the same task; after K
episodes a new trial seed is drawn from the wrapper's own generator. ``info["trial_episode"]`` (0 .. K - 1) and
``info["trial"]`` (a counter since the last seeded reset) come with every reset and step.

Note that the whole episode is replayed with the same seed, not only the task: everything the inner env draws at
reset is the same across the trial (and so is anything it draws during the episode, given the same actions).

With ``mark_trial_start=True`` (1-D Box observations only) one element is appended to the observation: 1 in the
first observation of a trial, 0 elsewhere, so an agent whose memory spans episodes knows when to forget.

``hqlt/TMazeTrials-v0`` = ``TrialsWrapper(HiddenGoalTMaze, K=4, mark_trial_start=True)``: the goal arm is hidden and
fixed for the trial; a memory reset at every episode is at chance (50 %) on every episode, a memory carried across
episodes can reach ~50 % on the first and 100 % on the next K - 1.
"""

from __future__ import annotations

from typing import Any

import gymnasium as gym
import numpy as np
from gymnasium import spaces
from gymnasium.utils import seeding

from envs._validate import check_int
from envs.tmaze import HiddenGoalTMaze


class TrialsWrapper(gym.Wrapper):
    """Group episodes into trials of ``episodes_per_trial`` that share a hidden task (see module docstring).

    ``reset(seed=s)`` reseeds the trial generator and starts a new trial; ``reset(options={"new_trial": True})``
    starts a new trial without reseeding (other options are passed to the inner env).

    Args:
        env: any gymnasium env whose task is drawn from its ``np_random`` at reset.
        episodes_per_trial: K >= 1.
        mark_trial_start: append a trial-start flag to 1-D Box observations.
    """

    def __init__(self, env: gym.Env, episodes_per_trial: int = 4, mark_trial_start: bool = False) -> None:
        super().__init__(env)
        self.episodes_per_trial = check_int("TrialsWrapper", "episodes_per_trial", episodes_per_trial, 1)
        self.mark_trial_start = bool(mark_trial_start)
        if self.mark_trial_start:
            space = env.observation_space
            if not isinstance(space, spaces.Box) or len(space.shape) != 1 or not np.issubdtype(space.dtype, np.floating):
                raise ValueError(
                    "TrialsWrapper: mark_trial_start=True needs a 1-D float Box observation space, "
                    f"got {space}; use mark_trial_start=False"
                )
            low = np.append(space.low, 0.0).astype(space.dtype)
            high = np.append(space.high, 1.0).astype(space.dtype)
            self.observation_space = spaces.Box(low, high, dtype=space.dtype)
        self._trial_rng: np.random.Generator | None = None
        self._trial_seed = 0
        self.trial = -1
        self.trial_episode = self.episodes_per_trial - 1  # so that the first reset starts a trial

    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None) -> tuple[Any, dict]:
        options = dict(options) if options else {}
        new_trial = bool(options.pop("new_trial", False))
        if seed is not None:
            self._trial_rng, _ = seeding.np_random(seed)
            self.trial, new_trial = -1, True
        elif self._trial_rng is None:
            self._trial_rng, _ = seeding.np_random()
        if new_trial or self.trial_episode + 1 >= self.episodes_per_trial:
            self._trial_seed = int(self._trial_rng.integers(2**31 - 1))
            self.trial += 1
            self.trial_episode = 0
        else:
            self.trial_episode += 1
        obs, info = self.env.reset(seed=self._trial_seed, options=options or None)
        return self._mark(obs, self.trial_episode == 0), self._info(info)

    def step(self, action: Any) -> tuple[Any, float, bool, bool, dict]:
        obs, reward, terminated, truncated, info = self.env.step(action)
        return self._mark(obs, False), reward, terminated, truncated, self._info(info)

    def _mark(self, obs: Any, flag: bool) -> Any:
        if not self.mark_trial_start:
            return obs
        return np.append(obs, np.float32(flag)).astype(self.observation_space.dtype, copy=False)

    def _info(self, info: dict) -> dict:
        info = dict(info)
        info["trial_episode"] = self.trial_episode
        info["trial"] = self.trial
        return info


def make_tmaze_trials(
    memory_length: int = 4, episodes_per_trial: int = 4, time_limit: int | None = None, render_mode: str | None = None
) -> TrialsWrapper:
    """``hqlt/TMazeTrials-v0``: a hidden-goal T-Maze whose goal side is fixed for trials of ``episodes_per_trial``."""
    env = HiddenGoalTMaze(memory_length=memory_length, time_limit=time_limit, render_mode=render_mode)
    return TrialsWrapper(env, episodes_per_trial=episodes_per_trial, mark_trial_start=True)
