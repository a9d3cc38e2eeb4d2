"""Training throughput (env steps / s) of MemoryPPO vs sb3-contrib RecurrentPPO vs SB3 PPO.

All three run MiniGrid-MemoryS7-v0 (symbolic 7x7 view, ``hqlt/MiniGridMemoryS7-v0``) with the same n_envs,
n_steps (128), minibatch size (128, RecurrentPPO's default), n_epochs (10, both libraries' default) and features
extractor (``SymbolicGridExtractor``, 128 features); only the core differs:

- MemoryPPO: HQLT synchronous blend, 2 layers, d_model 64, window 32 (seq_len 32), eager, and the same with
  ``compile_memory=True`` (MemoryPPO+compile: the training replay and the rollout steps through ``torch.compile``;
  its warm-up iteration includes the compilation, reported apart);
- RecurrentPPO: LSTM 128 (its defaults otherwise: separate critic LSTM);
- PPO: no memory.

Each model is warmed up for one rollout + update; then the three are timed one ``learn`` iteration at a time in turn
(so load from other processes hits them alike) and the median iteration gives steps/s; the time inside
``collect_rollouts`` and ``train`` is reported separately. Targets: MemoryPPO >= 4x RecurrentPPO and >= 0.5x PPO.

    python benchmarks/ppo_speed.py            # 8 iterations each
    python benchmarks/ppo_speed.py --quick    # 2 iterations each
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable
from typing import Any

import torch
from stable_baselines3 import PPO
from stable_baselines3.common.base_class import BaseAlgorithm
from stable_baselines3.common.env_util import make_vec_env

import envs  # noqa: F401  (registers hqlt/ ids)
from agents import MemoryPPO
from agents.extractors import SymbolicGridExtractor

ENV_ID = "hqlt/MiniGridMemoryS7-v0"  # MiniGrid-MemoryS7-v0, symbolic view
COMPILED = "MemoryPPO+compile"  # MemoryPPO with policy_kwargs compile_memory=True (replay and rollout compiled)


def _timed(model: BaseAlgorithm, name: str, totals: dict[str, float]) -> None:
    """Accumulate the wall time of ``model.<name>`` calls into ``totals[name]``."""
    inner: Callable[..., Any] = getattr(model, name)

    def wrapper(*args: Any, **kwargs: Any) -> Any:
        start = time.perf_counter()
        try:
            return inner(*args, **kwargs)
        finally:
            totals[name] += time.perf_counter() - start

    setattr(model, name, wrapper)


def build(kind: str, args: argparse.Namespace) -> BaseAlgorithm:
    env = make_vec_env(ENV_ID, n_envs=args.n_envs, seed=0)
    common: dict[str, Any] = dict(
        n_steps=args.n_steps, batch_size=args.batch_size, n_epochs=args.n_epochs, seed=0, device=args.device, verbose=0
    )
    extractor = dict(features_extractor_class=SymbolicGridExtractor, features_extractor_kwargs=dict(features_dim=128))
    if kind.startswith("MemoryPPO"):
        memory_kwargs = dict(d_model=64, n_layers=2, n_heads=4, window=32, blend="synchronous")
        return MemoryPPO(
            "MlpMemoryPolicy",
            env,
            seq_len=args.seq_len,
            policy_kwargs=dict(
                memory="hqlt", memory_kwargs=memory_kwargs, compile_memory=kind == COMPILED, **extractor
            ),
            **common,
        )
    if kind == "RecurrentPPO":
        from sb3_contrib import RecurrentPPO

        return RecurrentPPO("MlpLstmPolicy", env, policy_kwargs=dict(lstm_hidden_size=128, **extractor), **common)
    return PPO("MlpPolicy", env, policy_kwargs=extractor, **common)


def measure(kinds: list[str], args: argparse.Namespace) -> dict[str, dict[str, float]]:
    """Interleave the algorithms one iteration at a time (so load from other processes hits all alike); medians."""
    per_iteration = args.n_envs * args.n_steps
    models = {kind: build(kind, args) for kind in kinds}
    totals = {kind: {"collect_rollouts": 0.0, "train": 0.0} for kind in kinds}
    walls: dict[str, list[float]] = {kind: [] for kind in kinds}
    warmup: dict[str, float] = {}
    for kind, model in models.items():
        start = time.perf_counter()
        model.learn(per_iteration)  # warm-up: one rollout and one update (and, compiled, the compilation)
        warmup[kind] = time.perf_counter() - start
        _timed(model, "collect_rollouts", totals[kind])
        _timed(model, "train", totals[kind])
    for _ in range(args.iterations):
        for kind, model in models.items():
            start = time.perf_counter()
            model.learn(per_iteration, reset_num_timesteps=False)
            walls[kind].append(time.perf_counter() - start)
    results = {}
    for kind, model in models.items():
        model.env.close()
        results[kind] = dict(
            steps_per_s=per_iteration / statistics.median(walls[kind]),
            rollout_steps_per_s=per_iteration * args.iterations / totals[kind]["collect_rollouts"],
            train_s_per_iter=totals[kind]["train"] / args.iterations,
            wall_s=sum(walls[kind]),
            warmup_s=warmup[kind],
        )
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="2 timed iterations per algorithm instead of 8")
    parser.add_argument("--n-envs", type=int, default=8)
    parser.add_argument("--n-steps", type=int, default=128)
    parser.add_argument("--seq-len", type=int, default=32)
    parser.add_argument("--batch-size", type=int, default=128, help="minibatch size in steps (RecurrentPPO's default)")
    parser.add_argument("--n-epochs", type=int, default=10, help="epochs per update (PPO's and RecurrentPPO's default)")
    parser.add_argument("--iterations", type=int, default=None, help="timed iterations (default 8, --quick 2)")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--threads", type=int, default=1, help="torch.set_num_threads")
    parser.add_argument(
        "--only",
        nargs="*",
        default=["MemoryPPO", COMPILED, "RecurrentPPO", "PPO"],
        help=f"algorithms to time ({COMPILED}: needs a C++ compiler for torch.compile on a CPU)",
    )
    args = parser.parse_args()
    args.iterations = args.iterations or (2 if args.quick else 8)
    torch.set_num_threads(args.threads)

    print(
        f"{ENV_ID}: n_envs={args.n_envs} n_steps={args.n_steps} batch_size={args.batch_size} n_epochs={args.n_epochs} "
        f"iterations={args.iterations} device={args.device} threads={args.threads}"
    )
    results = measure(args.only, args)
    for kind, r in results.items():
        print(
            f"{kind:>13}: {r['steps_per_s']:8.0f} steps/s  (median over iterations; rollout {r['rollout_steps_per_s']:7.0f} "
            f"steps/s, train {r['train_s_per_iter']:6.2f} s/iteration, total {r['wall_s']:.1f} s, "
            f"warm-up {r['warmup_s']:.1f} s)"
        )
    for ours_kind in ("MemoryPPO", COMPILED):
        if ours_kind not in results:
            continue
        ours = results[ours_kind]["steps_per_s"]
        for kind, target in (("RecurrentPPO", 4.0), ("PPO", 0.5)):
            if kind in results:
                ratio = ours / results[kind]["steps_per_s"]
                verdict = "meets" if ratio >= target else "BELOW"
                print(f"{ours_kind} / {kind}: {ratio:.2f}x  (target >= {target}x: {verdict})")


if __name__ == "__main__":
    main()
