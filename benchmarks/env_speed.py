"""Single-core environment speed: steps per second of every ``hqlt/`` id under random actions with auto reset.

Two figures per id: through ``gymnasium.make`` (with its checker/order wrappers, what a user gets) and on the env the
entry point builds (no ``make`` wrappers). Actions are drawn in advance so the figure measures the environment.

    python benchmarks/env_speed.py                 # every id, ~1 s each
    python benchmarks/env_speed.py --seconds 3 --ids hqlt/PassiveTMaze-v0
"""

from __future__ import annotations

import argparse
import os
import sys
import time

import gymnasium as gym
import numpy as np
from gymnasium.envs.registration import load_env_creator

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
import envs  # noqa: E402  (registers the ids)

TARGETS = {"hqlt/PassiveTMaze-v0": 20_000, "hqlt/PassiveVisualMatch-v0": 5_000}


def steps_per_second(env: gym.Env, seconds: float, seed: int = 0) -> tuple[float, int]:
    """Run random actions with auto reset for about ``seconds``; return (steps/s, episodes finished)."""
    n = env.action_space.n if isinstance(env.action_space, gym.spaces.Discrete) else None
    rng = np.random.default_rng(seed)
    actions = rng.integers(n, size=65536).tolist() if n else [env.action_space.sample() for _ in range(4096)]
    env.reset(seed=seed)
    steps = episodes = 0
    start = time.perf_counter()
    deadline = start + seconds
    chunks = [actions[i : i + 1024] for i in range(0, len(actions), 1024)]
    while time.perf_counter() < deadline:  # check the clock once per chunk of 1024 steps
        for a in chunks[(steps // 1024) % len(chunks)]:
            _, _, terminated, truncated, _ = env.step(a)
            if terminated or truncated:
                env.reset()
                episodes += 1
        steps += 1024
    return steps / (time.perf_counter() - start), episodes


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=1.0, help="time per id and mode")
    parser.add_argument("--ids", nargs="*", default=list(envs.ENV_IDS), help="env ids (default: all hqlt/ ids)")
    args = parser.parse_args()
    try:
        os.sched_setaffinity(0, {sorted(os.sched_getaffinity(0))[0]})  # one core
    except (AttributeError, OSError):
        pass
    print(f"{'env id':36s} {'make steps/s':>13s} {'raw steps/s':>12s} {'episodes':>9s} {'target':>8s}")
    for env_id in args.ids:
        made = gym.make(env_id)
        spec = gym.spec(env_id)
        raw = load_env_creator(spec.entry_point)(**spec.kwargs)
        sps_made, _ = steps_per_second(made, args.seconds)
        sps_raw, episodes = steps_per_second(raw, args.seconds)
        target = TARGETS.get(env_id)
        flag = "" if target is None else (f"{target:>8d}" + ("  ok" if sps_made >= target else "  BELOW"))
        print(f"{env_id:36s} {sps_made:13,.0f} {sps_raw:12,.0f} {episodes:9d} {flag}")


if __name__ == "__main__":
    main()
