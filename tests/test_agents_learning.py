"""Slow: MemoryPPO with an HQLT memory solves a memory task that a memoryless PPO cannot.

Passive T-Maze (corridor 10): the cue is visible only at step 0 and the turn at the junction must match it. A policy
without memory sees the same junction observation whatever the cue and succeeds at most half the time (mean return
<= 0.5); with memory the return approaches 1. Run with ``pytest -m slow tests/test_agents_learning.py``.
"""

from __future__ import annotations

import numpy as np
import pytest
from stable_baselines3.common.env_util import make_vec_env
from stable_baselines3.common.evaluation import evaluate_policy

from agents import MemoryPPO

envs = pytest.importorskip("envs")  # registers hqlt/PassiveTMaze-v0

THRESHOLD = 0.9  # mean return; a memoryless policy's ceiling is 0.5


def train_and_evaluate(memory: str, total_timesteps: int = 32_768, seed: int = 0) -> tuple[float, float]:
    env = make_vec_env("hqlt/PassiveTMaze-v0", n_envs=8, seed=seed)
    model = MemoryPPO(
        "MlpMemoryPolicy",
        env,
        n_steps=32,
        seq_len=16,
        batch_size=128,
        n_epochs=4,
        learning_rate=1e-3,
        ent_coef=0.01,
        seed=seed,
        device="cpu",
        policy_kwargs=dict(
            memory=memory,
            memory_kwargs=dict(d_model=32, n_layers=1, n_heads=2, window=16),
            net_arch=[32],
        ),
    )
    model.learn(total_timesteps)
    eval_env = make_vec_env("hqlt/PassiveTMaze-v0", n_envs=4, seed=seed + 100)
    mean_return, _ = evaluate_policy(model, eval_env, n_eval_episodes=100, deterministic=True)
    success = float(np.mean(model.ep_success_buffer)) if model.ep_success_buffer else 0.0
    return float(mean_return), success


@pytest.mark.slow
def test_hqlt_ppo_solves_passive_tmaze_memoryless_cannot() -> None:
    hqlt_return, hqlt_success = train_and_evaluate("hqlt")
    none_return, _ = train_and_evaluate("none")
    assert hqlt_return >= THRESHOLD, f"HQLT-PPO mean return {hqlt_return:.3f} < {THRESHOLD}"
    assert hqlt_success >= THRESHOLD, f"HQLT-PPO training success rate {hqlt_success:.3f} < {THRESHOLD}"
    assert none_return < 0.75, f"memoryless PPO reached {none_return:.3f}: the task does not need memory"
