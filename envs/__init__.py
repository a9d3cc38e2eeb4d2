"""Partially observable environments that measure memory, registered with gymnasium.

Importing ``envs`` registers these ids (``gymnasium.make("hqlt/PassiveTMaze-v0", memory_length=50)`` etc.;
keyword arguments override the defaults):

- ``hqlt/PassiveTMaze-v0``: Ni et al.'s passive T-Maze, memory_length 10 (``envs.tmaze.PassiveTMaze``).
- ``hqlt/PassiveTMazeL50-v0``, ``hqlt/PassiveTMazeL100-v0``: longer corridors.
- ``hqlt/HiddenGoalTMaze-v0``: T-Maze whose goal arm is found by going there (``envs.tmaze.HiddenGoalTMaze``).
- ``hqlt/TMazeTrials-v0``: HiddenGoalTMaze in trials of 4 episodes sharing the goal side (``envs.trials``).
- ``hqlt/PassiveVisualMatch-v0``: the paper's RL task, 750-step distractor (``envs.visual_match``).
- ``hqlt/PassiveVisualMatchShort-v0``: the same with a 50-step distractor, for quick runs.
- ``hqlt/MiniGridMemoryS{7,9,11,13}-v0``: MiniGrid Memory, 7x7 view; ``...View3-v0``: 3x3 view;
  ``hqlt/MiniGridMemoryS13Random-v0``: random hallway length (``envs.minigrid_memory``).
"""

from __future__ import annotations

import gymnasium as gym

from envs.minigrid_memory import MiniGridMemory, make_minigrid_memory, minigrid_memory_optimal_action
from envs.tmaze import HiddenGoalTMaze, PassiveTMaze
from envs.trials import TrialsWrapper, make_tmaze_trials
from envs.visual_match import PassiveVisualMatch

__all__ = [
    "ENV_IDS",
    "HiddenGoalTMaze",
    "MiniGridMemory",
    "PassiveTMaze",
    "PassiveVisualMatch",
    "TrialsWrapper",
    "make_minigrid_memory",
    "make_tmaze_trials",
    "minigrid_memory_optimal_action",
]

_SPECS: dict[str, tuple[str, dict]] = {
    "hqlt/PassiveTMaze-v0": ("envs.tmaze:PassiveTMaze", {"memory_length": 10}),
    "hqlt/PassiveTMazeL50-v0": ("envs.tmaze:PassiveTMaze", {"memory_length": 50}),
    "hqlt/PassiveTMazeL100-v0": ("envs.tmaze:PassiveTMaze", {"memory_length": 100}),
    "hqlt/HiddenGoalTMaze-v0": ("envs.tmaze:HiddenGoalTMaze", {"memory_length": 4}),
    "hqlt/TMazeTrials-v0": ("envs.trials:make_tmaze_trials", {"memory_length": 4, "episodes_per_trial": 4}),
    "hqlt/PassiveVisualMatch-v0": ("envs.visual_match:PassiveVisualMatch", {"distractor_length": 750}),
    "hqlt/PassiveVisualMatchShort-v0": ("envs.visual_match:PassiveVisualMatch", {"distractor_length": 50}),
}
for _size in (7, 9, 11, 13):
    _SPECS[f"hqlt/MiniGridMemoryS{_size}-v0"] = ("envs.minigrid_memory:make_minigrid_memory", {"size": _size, "view_size": 7})
    _SPECS[f"hqlt/MiniGridMemoryS{_size}View3-v0"] = (
        "envs.minigrid_memory:make_minigrid_memory",
        {"size": _size, "view_size": 3},
    )
_SPECS["hqlt/MiniGridMemoryS13Random-v0"] = (
    "envs.minigrid_memory:make_minigrid_memory",
    {"size": 13, "view_size": 7, "random_length": True},
)

ENV_IDS: tuple[str, ...] = tuple(_SPECS)
"""Every id this package registers."""

for _id, (_entry_point, _kwargs) in _SPECS.items():
    if _id not in gym.registry:
        gym.register(id=_id, entry_point=_entry_point, kwargs=_kwargs)
