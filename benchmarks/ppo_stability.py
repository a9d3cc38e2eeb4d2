"""Why do some T-Maze runs collapse after solving the task? Per-update diagnostics over many seeds (issue 6).

Several HQLT runs of ``memory_length.py`` reached success ~1.0 on the passive T-Maze and then fell back to chance
within one or two PPO updates. This script reruns that setting (the same ``tmaze_specs``: 8 envs, lr 1e-3, 4 epochs,
...) for several memories, seeds and training variants, and records after every PPO update: approx KL, clip fraction,
entropy, the success rate over the last 50 training episodes, and the largest parameter change of the update in
units of the learning rate (with the parameter's name). A run *collapses* when its success, once at 0.9 or more,
later falls below 0.8.

Variants (each changes one thing from the benchmark setting):
- ``default``: as ``memory_length.py`` (Adam eps 1e-5, SB3's default);
- ``adam-eps-1e-8``: torch's Adam eps, which MemoryPPO used by mistake before (see docs/results.md);
- ``lr-decay``: learning rate decayed linearly to 0 over the budget (a callable ``learning_rate``, as in SB3);
- ``lr-decay-on-success``: constant until the success rate of the last 100 training episodes reaches 0.9, then decayed
  linearly to 0 at the budget (``agents.callbacks.DecayLROnSuccess``);
- ``critic-memory``: the critic gets its own memory (no value gradient through the actor's memory);
- ``ent-0.03``: entropy coefficient 0.03 instead of 0.01.

    python benchmarks/ppo_stability.py --quick                     # about a minute
    python benchmarks/ppo_stability.py --agents hqlt kv deltanet --variants default lr-decay --seeds 0 1 2 3 4 5 6 7

Results: ``benchmarks/results/stability/ppo_stability.json`` (+ ``.md``); ``--quick`` writes to
``benchmarks/results/quick/`` unless ``--out`` is given.
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from multiprocessing import get_context
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _rl import AGENT_LABELS, RESULTS_DIR, build_model, load_results, save_results, schedule_callbacks  # noqa: E402
from memory_length import tmaze_specs  # noqa: E402

VARIANTS = ("default", "adam-eps-1e-8", "lr-decay", "lr-decay-on-success", "critic-memory", "ent-0.03")
AGENTS = ("hqlt", "kv", "deltanet", "linear", "lstm", "gru")
TRAILING = 50  # episodes in the success rate recorded at each update
REACHED, FELL = 0.9, 0.8
LATE_ENTROPY = 0.1


def _reach_and_drop(successes: list[float | None]) -> tuple[int | None, int | None]:
    """Index of the first update at >= 0.9, and of the first one after it below 0.8 (None when there is none)."""
    first = next((i for i, s in enumerate(successes) if s is not None and s >= REACHED), None)
    if first is None:
        return None, None
    return first, next((i for i in range(first, len(successes)) if successes[i] is not None and successes[i] < FELL), None)


def collapsed(successes: list[float | None]) -> tuple[bool, bool]:
    """(reached, collapsed) for a run's per-update success rates: reached 0.9, then later fell below 0.8."""
    first, drop = _reach_and_drop(successes)
    return first is not None, drop is not None


def collapse_kind(record: dict[str, Any]) -> str | None:
    """None (no collapse), ``"late"`` (the policy was nearly deterministic: entropy < LATE_ENTROPY nats per step two
    updates before success fell below 0.8) or ``"early"`` (a dip while the policy was still exploring)."""
    updates = record["updates"]
    _, drop = _reach_and_drop([u["success"] for u in updates])
    if drop is None:
        return None
    return "late" if updates[max(0, drop - 2)]["entropy"] < LATE_ENTROPY else "early"


def _apply_variant(spec: Any, variant: str) -> tuple[Any, dict[str, Any]]:
    """The run spec and extra policy kwargs of ``variant``."""
    ppo, policy = dict(spec.ppo), {}
    if variant == "adam-eps-1e-8":
        policy["optimizer_kwargs"] = {"eps": 1e-8}
    elif variant == "lr-decay":
        ppo["lr_schedule"] = "linear"  # build_model turns it into SB3's callable learning rate
    elif variant == "lr-decay-on-success":
        ppo["lr_schedule"] = "decay_on_success"  # schedule_callbacks adds the callback that starts the decay
    elif variant == "critic-memory":
        policy["critic_memory"] = True
    elif variant == "ent-0.03":
        ppo["ent_coef"] = 0.03
    elif variant != "default":
        raise ValueError(f"unknown variant {variant!r}; allowed: {', '.join(VARIANTS)}")
    return dataclasses.replace(spec, ppo=ppo), policy


def run_one(agent: str, length: int, seed: int, variant: str, budget: int | None) -> dict[str, Any]:
    """Train one run in this process; return its record with per-update diagnostics."""
    import torch
    from stable_baselines3.common.callbacks import BaseCallback
    from stable_baselines3.common.env_util import make_vec_env
    from stable_baselines3.common.vec_env import DummyVecEnv

    import envs  # noqa: F401  (registers the hqlt/ ids)

    torch.set_num_threads(1)
    spec = tmaze_specs([length], [agent], [seed], quick=False)[0]
    if budget:
        spec = dataclasses.replace(spec, total_timesteps=budget)
    spec, policy_extra = _apply_variant(spec, variant)
    env = make_vec_env(spec.env_id, n_envs=spec.n_envs, seed=spec.seed, env_kwargs=spec.env_kwargs, vec_env_cls=DummyVecEnv)
    model = build_model(spec, env, policy_extra)

    class Diagnostics(BaseCallback):
        def __init__(self) -> None:
            super().__init__()
            self.successes: list[int] = []
            self.rows: list[dict[str, Any]] = []

        def _snapshot(self) -> None:
            self.before = {n: p.detach().clone() for n, p in self.model.policy.named_parameters()}

        def _on_training_start(self) -> None:
            self._snapshot()

        def _on_step(self) -> bool:
            for info, done in zip(self.locals["infos"], self.locals["dones"]):
                if done:
                    self.successes.append(int(bool(info.get("success", False))))
            return True

        def _on_rollout_start(self) -> None:  # right after an update (and once before the first rollout)
            logged = self.model.logger.name_to_value
            if "train/approx_kl" not in logged:
                return
            lr = self.model.policy.optimizer.param_groups[0]["lr"]
            steps = {n: float((p.detach() - self.before[n]).abs().max()) / lr for n, p in self.model.policy.named_parameters()}
            worst = max(steps, key=steps.get)
            self.rows.append(
                {
                    "step": int(self.num_timesteps),
                    "approx_kl": float(logged["train/approx_kl"]),
                    "clip_fraction": float(logged["train/clip_fraction"]),
                    "entropy": -float(logged["train/entropy_loss"]),
                    "success": float(np.mean(self.successes[-TRAILING:])) if self.successes else None,
                    "max_step_over_lr": steps[worst],
                    "max_step_param": worst,
                }
            )
            self._snapshot()

    diag, decay = Diagnostics(), schedule_callbacks(spec)
    start = time.perf_counter()
    model.learn(spec.total_timesteps, callback=[diag, *decay])
    reached, fell = collapsed([r["success"] for r in diag.rows])
    return {
        "key": f"L{length}/{agent}/{variant}/seed{seed}",
        "agent": agent,
        "length": length,
        "variant": variant,
        "seed": seed,
        "total_timesteps": spec.total_timesteps,
        "adam_eps": model.policy.optimizer.defaults.get("eps"),
        "reached": reached,
        "collapsed": fell,
        "final_success": float(np.mean(diag.successes[-TRAILING:])) if diag.successes else 0.0,
        "updates": diag.rows,
        "lr_decay_start": decay[0].triggered_at if decay else None,
        "train_seconds": time.perf_counter() - start,
    }


def _worker(job: tuple) -> dict[str, Any]:
    return run_one(*job)


def table(records: dict[str, dict[str, Any]]) -> str:
    groups: dict[tuple, list[dict[str, Any]]] = {}
    for rec in records.values():
        groups.setdefault((rec["length"], rec["agent"], rec["variant"]), []).append(rec)
    lines = [
        f"A run collapses when its success over the last {TRAILING} training episodes, once >= {REACHED}, later falls "
        f"below {FELL}; *late* when the policy was nearly deterministic then (entropy < {LATE_ENTROPY} nats per step), "
        "*early* when it was a dip while still exploring.",
        "",
        "| T-Maze L | agent | variant | seeds | reached 0.9 | collapsed (late + early) | final < 0.6 | final success (mean) |",
        "|---|---|---|---|---|---|---|---|",
    ]
    def order(item: tuple) -> tuple:
        (length, agent, variant), _ = item
        return length, AGENTS.index(agent), VARIANTS.index(variant)

    for (length, agent, variant), recs in sorted(groups.items(), key=order):
        finals = [r["final_success"] for r in recs]
        kinds = [collapse_kind(r) for r in recs]
        late, early = kinds.count("late"), kinds.count("early")
        lines.append(
            f"| {length} | {AGENT_LABELS.get(agent, agent)} | {variant} | {len(recs)} | {sum(r['reached'] for r in recs)} | "
            f"{late + early} ({late} + {early}) | {sum(f < 0.6 for f in finals)} | {np.mean(finals):.2f} |"
        )
    wall = sum(r["train_seconds"] for r in records.values())
    lines += ["", f"Sum of per-run wall times: {wall / 60:.1f} min over {len(records)} runs (1 torch thread each)."]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--quick", action="store_true", help="about a minute: HQLT, L = 16, 1 seed, 16k steps, 2 variants")
    p.add_argument("--agents", nargs="+", default=None, choices=AGENTS, help="default: hqlt kv deltanet")
    p.add_argument("--variants", nargs="+", default=None, choices=VARIANTS, help="default: default lr-decay")
    p.add_argument("--lengths", nargs="+", type=int, default=None, help="T-Maze memory lengths (default: 16)")
    p.add_argument("--seeds", nargs="+", type=int, default=None, help="default: 0..7")
    p.add_argument("--budget", type=int, default=None, help="env steps per run (default: memory_length.py's)")
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--out", type=Path, default=None)
    p.add_argument("--force", action="store_true", help="rerun runs already in the results file")
    p.add_argument("--report-only", action="store_true")
    args = p.parse_args(argv)
    quick = args.quick
    agents = args.agents or (["hqlt"] if quick else ["hqlt", "kv", "deltanet"])
    variants = args.variants or ["default", "lr-decay"]
    lengths = args.lengths or [16]
    seeds = args.seeds if args.seeds is not None else ([0] if quick else list(range(8)))
    budget = args.budget or (16_384 if quick else None)
    out = args.out or (RESULTS_DIR / "quick" if quick else RESULTS_DIR / "stability")
    path = out / "ppo_stability.json"

    jobs = [(a, n, s, v, budget) for n in lengths for a in agents for v in variants for s in seeds]
    records = load_results(path)
    keys = {f"L{n}/{a}/{v}/seed{s}" for a, n, s, v, _ in jobs}
    present = sum(key in records for key in keys)
    todo = [] if args.report_only else [j for j in jobs if args.force or f"L{j[1]}/{j[0]}/{j[3]}/seed{j[2]}" not in records]
    print(f"{present} of {len(jobs)} runs in {path}; running {len(todo)}", flush=True)
    meta = {"reached": REACHED, "fell": FELL, "trailing_episodes": TRAILING}
    if todo:
        with ProcessPoolExecutor(max_workers=max(1, args.workers), mp_context=get_context("spawn")) as pool:
            for rec in pool.map(_worker, todo):
                records[rec["key"]] = rec
                save_results(path, records, meta)
                print(
                    f"{rec['key']:32s} reached {rec['reached']!s:5s} collapsed {rec['collapsed']!s:5s} "
                    f"final {rec['final_success']:.2f} ({rec['train_seconds']:.0f} s)",
                    flush=True,
                )
    text = table({k: r for k, r in records.items() if k in keys})
    out.mkdir(parents=True, exist_ok=True)
    (out / "ppo_stability.md").write_text(text + "\n")
    print(text)


if __name__ == "__main__":
    main()
