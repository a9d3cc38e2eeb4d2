"""Shared machinery of the RL benchmarks: run specs, one training run, success curves, a resumable process pool, plots.

Each benchmark script builds a list of :class:`RunSpec` (one agent, one task, one seed, one step budget) and hands
it to :func:`run_all`, which trains them in a pool of worker processes (one torch thread each) and appends every
finished run to a JSON file as soon as it ends, so an interrupted sweep resumes where it stopped.

A run records every finished training episode's (env step, success, trial episode) from the ``infos`` of the
vector env (``info["success"]`` at episode ends, ``info["trial_episode"]`` for trial tasks); from those come
the success-vs-steps curve (trailing window of episodes) and steps-to-success (the env step at which the trailing
success rate first reaches a threshold). At the end of training the greedy policy is evaluated on fresh
environments.

Agents: ``hqlt``, ``kv``, ``deltanet``, ``linear``, ``lstm``, ``gru``, ``none`` are our ``MemoryPPO`` with that
memory; ``rppo`` is sb3-contrib's ``RecurrentPPO`` (LSTM policy), with the same PPO hyper-parameters.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import sys
import time
import warnings
from collections.abc import Callable, Sequence
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import dataclass, field
from multiprocessing import get_context
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

RESULTS_DIR = ROOT / "benchmarks" / "results"
IMG_DIR = ROOT / "docs" / "img"
OUR_AGENTS = ("hqlt", "kv", "deltanet", "linear", "lstm", "gru", "none")
AGENTS = (*OUR_AGENTS, "rppo")
AGENT_LABELS = {
    "hqlt": "HQLT (sync)",
    "kv": "KV-only",
    "deltanet": "DeltaNet",
    "linear": "Linear attn",
    "lstm": "LSTM (ours)",
    "gru": "GRU (ours)",
    "none": "No memory",
    "rppo": "RecurrentPPO",
}
AGENT_COLOURS = {label: f"C{i}" for i, label in enumerate(AGENT_LABELS.values())}
"""A fixed colour per agent label, so that every figure draws an agent the same way."""


@dataclass(frozen=True)
class RunSpec:
    """One training run: an agent on a task with a seed and a step budget (JSON-serialisable)."""

    task: str
    """Label of the task setting, e.g. ``tmaze-L64``."""
    env_id: str
    """Gymnasium id (``hqlt/...``, registered by importing ``envs``)."""
    agent: str
    """One of AGENTS: our MemoryPPO with that memory, or ``rppo`` (sb3-contrib RecurrentPPO)."""
    seed: int
    total_timesteps: int
    env_kwargs: dict[str, Any] = field(default_factory=dict)
    n_envs: int = 8
    ppo: dict[str, Any] = field(default_factory=dict)
    """PPO keyword arguments (SB3 names; ``seq_len`` is dropped for rppo)."""
    memory_kwargs: dict[str, Any] = field(default_factory=dict)
    """MemoryConfig fields; for rppo only ``d_model`` (LSTM hidden size) and ``n_layers`` are used."""
    net_arch: list[int] = field(default_factory=lambda: [64])
    policy: dict[str, Any] = field(default_factory=dict)
    """More policy kwargs for our MemoryPPO agents (e.g. ``critic_memory``); unused for rppo."""
    variant: str = ""
    """Free label that distinguishes runs of the same agent on the same task (e.g. ``carry`` / ``reset``)."""
    eval_episodes: int = 100
    """Greedy evaluation episodes at the end (0: skip)."""

    def __post_init__(self) -> None:
        if self.agent not in AGENTS:
            raise ValueError(f"RunSpec field 'agent'={self.agent!r} is unknown; allowed: {', '.join(AGENTS)}")
        if self.total_timesteps <= 0 or self.n_envs <= 0:
            raise ValueError(
                f"RunSpec fields 'total_timesteps'={self.total_timesteps} and 'n_envs'={self.n_envs} must be positive"
            )

    @property
    def key(self) -> str:
        name = f"{self.agent}-{self.variant}" if self.variant else self.agent
        return f"{self.task}/{name}/seed{self.seed}"

    @property
    def label(self) -> str:
        base = AGENT_LABELS.get(self.agent, self.agent)
        return f"{base} [{self.variant}]" if self.variant else base


# ---------------------------------------------------------------------------------------------------------------------
# Pure helpers (unit-tested in tests/test_benchmarks.py)


def trailing_success(successes: Sequence[float], window: int) -> np.ndarray:
    """Success rate over the last ``window`` episodes (fewer at the start), one value per episode: (N,)."""
    x = np.asarray(successes, dtype=np.float64)
    if window <= 0:
        raise ValueError(f"window must be a positive number of episodes, got {window!r}")
    if x.size == 0:
        return x
    csum = np.concatenate([[0.0], np.cumsum(x)])  # (N + 1,)
    idx = np.arange(1, x.size + 1)
    lo = np.maximum(0, idx - window)
    return (csum[idx] - csum[lo]) / (idx - lo)


def steps_to_success(
    steps: Sequence[int], successes: Sequence[float], window: int = 100, threshold: float = 0.9
) -> int | None:
    """Env step at which the success rate over the last ``window`` episodes first reaches ``threshold``.

    ``steps[i]`` is the env step (all envs counted) at which episode i ended, in order of completion. The rate only
    counts once ``window`` episodes have ended. None if it never reaches the threshold.
    """
    if len(steps) != len(successes):
        raise ValueError(f"steps and successes must have the same length, got {len(steps)} and {len(successes)}")
    if not 0.0 < threshold <= 1.0:
        raise ValueError(f"threshold must be in (0, 1], got {threshold!r}")
    rate = trailing_success(successes, window)
    ok = np.nonzero(rate[window - 1 :] >= threshold - 1e-12)[0]
    return int(steps[window - 1 + ok[0]]) if ok.size else None


def success_curve(
    steps: Sequence[int], successes: Sequence[float], total_steps: int, window: int = 100, n_points: int = 100
) -> tuple[list[int], list[float | None]]:
    """Trailing-window success rate sampled at ``n_points`` evenly spaced env steps up to ``total_steps``.

    Each point is the rate over the last ``window`` episodes that ended at or before that step (None before the
    first episode ends).
    """
    grid = np.linspace(total_steps / n_points, total_steps, n_points).astype(np.int64)
    rate = trailing_success(successes, window)
    ends = np.asarray(steps, dtype=np.int64)
    pos = np.searchsorted(ends, grid, side="right") - 1  # index of the last episode ended by each grid step
    values = [None if p < 0 else float(rate[p]) for p in pos]
    return grid.tolist(), values


def mean_std(values: Sequence[float | None]) -> tuple[float, float]:
    """Mean and standard deviation of the non-None values (nan, nan if none)."""
    xs = np.array([v for v in values if v is not None], dtype=np.float64)
    if xs.size == 0:
        return float("nan"), float("nan")
    return float(xs.mean()), float(xs.std())


def kv_reach(n_layers: int, window: int) -> int:
    """Farthest step back a stack of ``n_layers`` sliding-window attention layers (window S, current step included)
    can move information: each layer looks S - 1 steps back, so L * (S - 1)."""
    return n_layers * (window - 1)


# ---------------------------------------------------------------------------------------------------------------------
# One run


def _episode_recorder():
    from stable_baselines3.common.callbacks import BaseCallback

    class EpisodeRecorder(BaseCallback):
        """Records (env step, success, trial episode) of every training episode that ends, from the rollout's infos."""

        def __init__(self) -> None:
            super().__init__()
            self.steps: list[int] = []
            self.successes: list[int] = []
            self.trial_episodes: list[int] = []
            self.truncated: list[int] = []

        def _on_step(self) -> bool:
            infos, dones = self.locals["infos"], self.locals["dones"]
            for info, done in zip(infos, dones):
                if done:
                    self.steps.append(int(self.num_timesteps))
                    self.successes.append(int(bool(info.get("success", info.get("is_success", False)))))
                    self.trial_episodes.append(int(info.get("trial_episode", -1)))
                    self.truncated.append(int(bool(info.get("TimeLimit.truncated", False))))
            return True

    return EpisodeRecorder()


def build_model(spec: RunSpec, env: Any, policy_extra: dict[str, Any] | None = None) -> Any:
    """MemoryPPO (our agents) or RecurrentPPO (``rppo``) for ``spec`` on the vector env ``env``; ``policy_extra``:
    more policy kwargs (e.g. ``optimizer_kwargs``)."""
    from agents.config import LR_SCHEDULES
    from agents.extractors import default_extractor_for

    found = default_extractor_for(env.observation_space)
    extractor = {} if found is None else dict(features_extractor_class=found[0], features_extractor_kwargs=found[1])
    ppo = dict(spec.ppo)
    schedule = ppo.pop("lr_schedule", "constant")  # a string in the spec (JSON); SB3 wants a callable or a float
    if schedule not in LR_SCHEDULES:
        raise ValueError(f"spec field 'ppo.lr_schedule'={schedule!r} is unknown; allowed: {', '.join(LR_SCHEDULES)}")
    if schedule == "linear":
        lr0 = float(ppo["learning_rate"])
        ppo["learning_rate"] = lambda progress_remaining: lr0 * progress_remaining
    ent_schedule = ppo.pop("ent_schedule", "constant")  # likewise for the entropy coefficient (MemoryPPO only)
    if ent_schedule not in LR_SCHEDULES or (ent_schedule != "constant" and spec.agent == "rppo"):
        raise ValueError(
            f"spec field 'ppo.ent_schedule'={ent_schedule!r} is unknown or not for agent {spec.agent!r}; allowed: "
            f"{', '.join(LR_SCHEDULES)} (RecurrentPPO: constant only, it takes a float entropy coefficient)"
        )
    if ent_schedule == "linear":
        ent0 = float(ppo.get("ent_coef", 0.0))
        ppo["ent_coef"] = lambda progress_remaining: ent0 * progress_remaining
    if spec.agent == "rppo":
        from sb3_contrib import RecurrentPPO

        ppo = {k: v for k, v in ppo.items() if k != "seq_len"}
        policy_kwargs = dict(
            lstm_hidden_size=int(spec.memory_kwargs.get("d_model", 64)),
            n_lstm_layers=int(spec.memory_kwargs.get("n_layers", 1)),
            net_arch=list(spec.net_arch),
            **extractor,
        )
        policy_kwargs.update(policy_extra or {})
        return RecurrentPPO("MlpLstmPolicy", env, seed=spec.seed, device="cpu", policy_kwargs=policy_kwargs, **ppo)
    from agents import MemoryPPO

    policy_kwargs = dict(memory=spec.agent, memory_kwargs=dict(spec.memory_kwargs), net_arch=list(spec.net_arch), **extractor)
    policy_kwargs.update(spec.policy)
    policy_kwargs.update(policy_extra or {})
    return MemoryPPO("MlpMemoryPolicy", env, seed=spec.seed, device="cpu", policy_kwargs=policy_kwargs, **ppo)


# the run label (variant) of each learning-rate schedule a sweep may ask for in ``spec.ppo["lr_schedule"]``
LR_VARIANTS = {"constant": "", "linear": "lrdecay", "decay_on_success": "lrdecay-success"}
# likewise for the entropy coefficient's schedule, ``spec.ppo["ent_schedule"]``
ENT_VARIANTS = {"constant": "", "linear": "entdecay", "decay_on_success": "entdecay-success"}


def schedule_callbacks(spec: RunSpec, window: int = 100, threshold: float = 0.9) -> list[Any]:
    """Callbacks the spec's schedules need: ``decay_on_success`` (of the learning rate, ``ppo.lr_schedule``, and / or
    of the entropy coefficient, ``ppo.ent_schedule``) keeps the value constant until the success rate of the last
    ``window`` training episodes reaches ``threshold``, then decays it linearly to 0 at the budget
    (``agents.callbacks.DecayOnSuccess``); the other schedules need none."""
    decay_lr, decay_ent = (spec.ppo.get(k, "constant") == "decay_on_success" for k in ("lr_schedule", "ent_schedule"))
    if not (decay_lr or decay_ent):
        return []
    from agents.callbacks import DecayOnSuccess

    return [DecayOnSuccess(threshold=threshold, window=window, learning_rate=decay_lr, ent_coef=decay_ent)]


def evaluate_greedy(model: Any, spec: RunSpec, n_episodes: int, seed: int, start_state: Any = None,
                    deterministic: bool = True) -> dict[str, Any]:
    """Greedy (deterministic) success of ``model`` over ``n_episodes`` fresh episodes, overall and per trial episode;
    with ``deterministic=False``, the success of actions sampled from the policy (torch seeded with ``seed``).

    The state returned by ``predict`` is passed back at every step with ``episode_start`` flags, so a memory that
    carries fast weights across episodes keeps them, exactly as in training. The envs start from the policy's initial
    memory state, or from ``start_state`` (a state for as many envs as its batch, e.g. the training envs' last one).
    """
    from stable_baselines3.common.env_util import make_vec_env
    from stable_baselines3.common.vec_env import DummyVecEnv

    n_envs = min(10, n_episodes) if start_state is None else int(start_state.prev_action.shape[0])
    env = make_vec_env(spec.env_id, n_envs=n_envs, seed=seed, env_kwargs=spec.env_kwargs, vec_env_cls=DummyVecEnv)
    if not deterministic:
        import torch

        torch.manual_seed(seed)
    obs = env.reset()
    state = start_state
    starts = np.ones(n_envs, dtype=bool)
    successes: list[int] = []
    trial_eps: list[int] = []
    # Stop counting an env once it has n_episodes / n_envs episodes, so that short episodes are not over-sampled.
    quota = np.full(n_envs, -(-n_episodes // n_envs))
    while (quota > 0).any():
        actions, state = model.predict(obs, state=state, episode_start=starts, deterministic=deterministic)
        obs, _, dones, infos = env.step(actions)
        starts = dones
        for i, (info, done) in enumerate(zip(infos, dones)):
            if done and quota[i] > 0:
                quota[i] -= 1
                successes.append(int(bool(info.get("success", False))))
                trial_eps.append(int(info.get("trial_episode", -1)))
    env.close()
    out: dict[str, Any] = {"success": float(np.mean(successes)), "episodes": len(successes)}
    if max(trial_eps) >= 0:
        te = np.asarray(trial_eps)
        out["by_trial_episode"] = [float(np.mean(np.asarray(successes)[te == k])) for k in range(te.max() + 1)]
    return out


def memory_state_file(model_file: Path) -> Path:
    """Where ``run_one(..., save_to=model_file)`` keeps the training envs' last memory state (``torch.save``)."""
    return model_file.with_name(model_file.name.removesuffix(".zip") + "_memory_state.pt")


def run_one(spec: RunSpec, window: int = 100, threshold: float = 0.9, save_to: Path | None = None) -> dict[str, Any]:
    """Train one run in this process and return its record (JSON-serialisable); ``save_to``: also save the trained
    model there (an SB3 ``.zip``, loaded with the agent class's ``load``), before its greedy evaluation, and (our
    agents) the training envs' memory state at the end beside it (``memory_state_file``)."""
    import torch

    torch.set_num_threads(1)
    from stable_baselines3.common.env_util import make_vec_env
    from stable_baselines3.common.vec_env import DummyVecEnv

    import envs  # noqa: F401  (registers the hqlt/ ids)

    env = make_vec_env(spec.env_id, n_envs=spec.n_envs, seed=spec.seed, env_kwargs=spec.env_kwargs, vec_env_cls=DummyVecEnv)
    model = build_model(spec, env)
    recorder = _episode_recorder()
    start = time.perf_counter()
    decay = schedule_callbacks(spec, window, threshold)
    model.learn(spec.total_timesteps, callback=[recorder, *decay])
    train_s = time.perf_counter() - start
    steps, succ, trial_eps = recorder.steps, recorder.successes, recorder.trial_episodes
    grid, curve = success_curve(steps, succ, spec.total_timesteps, window=window, n_points=100)
    record: dict[str, Any] = {
        "key": spec.key,
        "spec": dataclasses.asdict(spec),
        "episodes": len(steps),
        "final_train_success": float(np.mean(succ[-window:])) if succ else 0.0,
        # Episodes of the last window that ended by the task (not the time limit): e.g. a T-Maze turn was taken.
        "final_train_ended_by_task": float(1.0 - np.mean(recorder.truncated[-window:])) if succ else 0.0,
        "steps_to_success": steps_to_success(steps, succ, window, threshold) if len(succ) >= window else None,
        "curve_steps": grid,
        "curve_success": curve,
        "train_seconds": round(train_s, 1),
        "fps": round(model.num_timesteps / train_s, 1),
        "window": window,
        "threshold": threshold,
        "machine": machine_info(),
    }
    for cb in decay:  # the env step where the decay started (None: never triggered)
        if cb.decay_lr:
            record["lr_decay_start"] = cb.triggered_at
        if cb.decay_ent:
            record["ent_decay_start"] = cb.triggered_at
    if max(trial_eps, default=-1) >= 0:
        te, s = np.asarray(trial_eps), np.asarray(succ, dtype=np.float64)
        n_k = int(te.max()) + 1
        record["curve_by_trial_episode"] = []
        record["final_train_success_by_trial_episode"] = []
        for k in range(n_k):
            mask = te == k
            k_steps, k_succ = np.asarray(steps)[mask].tolist(), s[mask].tolist()
            record["curve_by_trial_episode"].append(success_curve(k_steps, k_succ, spec.total_timesteps, window, 100)[1])
            record["final_train_success_by_trial_episode"].append(float(np.mean(k_succ[-window:])) if k_succ else 0.0)
    if save_to is not None:
        Path(save_to).parent.mkdir(parents=True, exist_ok=True)
        model.save(save_to)
        record["model_file"] = str(save_to)
        if spec.agent != "rppo":  # the envs' memory state at the end of training, which the model file leaves out
            state_file = memory_state_file(Path(save_to))
            torch.save(model._last_memory_state, state_file)
            record["memory_state_file"] = str(state_file)
    if spec.eval_episodes > 0:
        start = time.perf_counter()
        record["eval"] = evaluate_greedy(model, spec, spec.eval_episodes, seed=spec.seed + 10_000)
        # Sampled actions on the same episodes: training success is measured before the last update, so a policy
        # that the last update broke fails here too, while one that only fails greedily does not (greedy_check.py).
        record["eval_sampled"] = evaluate_greedy(model, spec, spec.eval_episodes, seed=spec.seed + 10_000,
                                                 deterministic=False)
        if spec.agent != "rppo" and spec.memory_kwargs.get("carry_fw_across_episodes"):
            # A memory carried across episodes was never reset in training: evaluate it also from where training
            # left it (the fresh start above can be a state the policy never saw; see greedy_check.py).
            record["eval_from_trained_state"] = evaluate_greedy(
                model, spec, spec.eval_episodes, seed=spec.seed + 10_000, start_state=model._last_memory_state
            )
        record["eval_seconds"] = round(time.perf_counter() - start, 1)
    env.close()
    return record


def _worker(spec_dict: dict[str, Any], window: int, threshold: float) -> dict[str, Any]:
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    return run_one(RunSpec(**spec_dict), window, threshold)


# ---------------------------------------------------------------------------------------------------------------------
# Many runs


def load_results(path: Path) -> dict[str, dict[str, Any]]:
    """Records by key from a results JSON (empty if the file does not exist)."""
    if not path.is_file():
        return {}
    data = json.loads(path.read_text())
    return {r["key"]: r for r in data.get("runs", [])}


def save_results(path: Path, records: dict[str, dict[str, Any]], meta: dict[str, Any]) -> None:
    """Write ``records`` to ``path``, keeping the records other processes saved there meanwhile (ours win on a key),
    so that two sweeps may share one results file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    merged = {**load_results(path), **records}
    tmp = path.with_suffix(f".{os.getpid()}.tmp")
    tmp.write_text(json.dumps({"meta": meta, "runs": sorted(merged.values(), key=lambda r: r["key"])}, indent=1))
    tmp.replace(path)


def machine_info() -> dict[str, Any]:
    """Where a run ran (``agents.runs.machine_info``: CPU model, torch's kernel level, versions), with our one torch
    thread per run: a seed repeats a run bit for bit only where these agree."""
    from agents.runs import machine_info as _machine

    return {**_machine(), "torch_threads_per_run": 1}


def run_all(
    specs: Sequence[RunSpec],
    path: Path,
    workers: int = 2,
    window: int = 100,
    threshold: float = 0.9,
    force: bool = False,
    log: Callable[[str], None] = print,
) -> dict[str, dict[str, Any]]:
    """Run every spec not already in ``path`` (unless ``force``), ``workers`` at a time; save after each run.

    Returns all records in the file for the given specs' keys (old and new).
    """
    records = load_results(path)
    todo = [s for s in specs if force or s.key not in records]
    meta = {"machine": machine_info(), "window": window, "threshold": threshold}
    log(f"{len(specs) - len(todo)} of {len(specs)} runs already in {path}; running {len(todo)} with {workers} worker(s)")
    start = time.perf_counter()
    if todo and workers <= 1:
        for spec in todo:
            rec = run_one(spec, window, threshold)
            records[spec.key] = rec
            save_results(path, records, meta)
            log(_line(rec))
    elif todo:
        with ProcessPoolExecutor(max_workers=workers, mp_context=get_context("spawn")) as pool:
            futures = {pool.submit(_worker, dataclasses.asdict(s), window, threshold): s for s in todo}
            for fut in as_completed(futures):
                rec = fut.result()
                records[rec["key"]] = rec
                save_results(path, records, meta)
                log(_line(rec))
    log(f"sweep wall time {time.perf_counter() - start:.0f} s")
    return {s.key: records[s.key] for s in specs if s.key in records}


def _line(rec: dict[str, Any]) -> str:
    ev = rec.get("eval", {}).get("success")
    sampled = rec.get("eval_sampled", {}).get("success")
    return (
        f"{rec['key']:<40} train success {rec['final_train_success']:.2f}  greedy {ev if ev is None else round(ev, 2)}  "
        + ("" if sampled is None else f"sampled {sampled:.2f}  ")
        + f"steps-to-success {rec['steps_to_success']}  {rec['train_seconds']:.0f} s ({rec['fps']:.0f} steps/s)"
    )


def group_label(name: str) -> str:
    """Display label of a :func:`group` name: ``hqlt`` -> ``HQLT (sync)``, ``hqlt-lrdecay`` -> ``HQLT (sync) [lrdecay]``."""
    agent, _, variant = name.partition("-")
    base = AGENT_LABELS.get(agent, agent)
    return f"{base} [{variant}]" if variant else base


def group(records: dict[str, dict[str, Any]]) -> dict[tuple[str, str], list[dict[str, Any]]]:
    """Records grouped by (task, agent[-variant]) over seeds."""
    out: dict[tuple[str, str], list[dict[str, Any]]] = {}
    for rec in records.values():
        s = rec["spec"]
        name = f"{s['agent']}-{s['variant']}" if s.get("variant") else s["agent"]
        out.setdefault((s["task"], name), []).append(rec)
    return out


def wall_time_line(records: dict[str, dict[str, Any]], note: str = "") -> str:
    """``Sum of per-run wall times: X min over N runs<note>.`` (training + greedy evaluation of each record)."""
    wall = sum(r["train_seconds"] + r.get("eval_seconds", 0.0) for r in records.values())
    return f"Sum of per-run wall times: {wall / 60:.1f} min over {len(records)} runs{note}."


def fmt_steps(values: Sequence[int | None]) -> str:
    """Steps-to-success over seeds: median of those that got there, and how many did (e.g. ``42k (2/3)``)."""
    got = [v for v in values if v is not None]
    if not got:
        return f"- (0/{len(values)})"
    return f"{np.median(got) / 1000:.0f}k ({len(got)}/{len(values)})"


# permutation_p: largest subset-sum table it counts (cells) and most splits it enumerates off a decimal grid
COUNT_CELLS_MAX = 20_000_000
ENUMERATE_MAX = 2_000_000


def _decimal_grid(values: np.ndarray, max_places: int = 6) -> np.ndarray | None:
    """``values`` as integers on the coarsest decimal grid (10^-d, d <= max_places) that holds them all, or None."""
    for places in range(max_places + 1):
        scaled = values * 10**places
        if np.abs(scaled).max() > 1e12:  # beyond int64 sums of many values
            return None
        ints = np.round(scaled)
        if np.all(np.abs(scaled - ints) <= 1e-9 * np.maximum(1.0, np.abs(scaled))):
            return ints.astype(np.int64)
    return None


def _subset_sum_counts(ints: np.ndarray, size: int) -> np.ndarray:
    """``counts[s]``: how many ``size``-element subsets of ``ints`` (shifted to start at 0) sum to ``s``."""
    shifted = ints - ints.min()
    top = int(np.sort(shifted)[::-1][:size].sum())
    dtype = np.int64 if math.comb(len(ints), size) < 2**62 else object
    counts = np.zeros((size + 1, top + 1), dtype=dtype)
    counts[0, 0] = 1
    for i, x in enumerate(int(v) for v in shifted):
        for k in range(min(i + 1, size), 0, -1):  # downwards: each value joins a subset at most once
            counts[k, x:] += counts[k - 1, : top + 1 - x]
    return counts[size]


def permutation_p(a: Sequence[float], b: Sequence[float], alternative: str = "greater") -> float:
    """Exact permutation test over seeds: the share of all ways to split ``a + b`` into groups of ``len(a)`` and
    ``len(b)`` whose difference of means is at least the observed one (ties count). ``alternative="greater"``
    (one-sided): small p says ``a`` is higher than relabelling seeds at random explains; ``"two-sided"``: small p
    says the two differ, either way (the difference is compared in absolute value).

    The difference of means is a function of the first group's sum alone, so where the values lie on a decimal grid
    (success rates k/100, accuracies to a few places) the splits are counted by their sums (subset-sum counting,
    exact for any number of seeds); other values are enumerated split by split, up to ENUMERATE_MAX splits."""
    import itertools

    if alternative not in ("greater", "two-sided"):
        raise ValueError(f"permutation_p: alternative must be 'greater' or 'two-sided', got {alternative!r}")
    values = np.asarray(list(a) + list(b), dtype=float)
    n, m = len(a), len(b)
    if n == 0 or m == 0:
        raise ValueError(f"permutation_p needs values in both groups, got {n} and {m}")
    ints = _decimal_grid(values)
    if ints is not None and (n + 1) * (int((ints - ints.min()).sum()) + 1) <= COUNT_CELLS_MAX:
        counts = _subset_sum_counts(ints, n)
        # n * m * (mean(first) - mean(rest)) = (n + m) * sum(first) - n * total, in grid units: exact integers
        sums = np.arange(len(counts)) + n * int(ints.min())
        stat = (n + m) * sums - n * int(ints.sum())
        observed = (n + m) * int(ints[:n].sum()) - n * int(ints.sum())
        if alternative == "two-sided":
            stat, observed = np.abs(stat), abs(observed)
        hits = counts[stat >= observed].sum()
        return float(hits / math.comb(n + m, n))
    if math.comb(n + m, n) > ENUMERATE_MAX:
        raise ValueError(
            f"permutation_p: {n} + {m} values off a decimal grid make {math.comb(n + m, n):,} splits to enumerate "
            f"(at most {ENUMERATE_MAX:,}); round the values (e.g. to 4 places) to count the splits by their sums"
        )
    total = values.sum()
    # mean(first) - mean(rest) = sum(first) * (1/n + 1/m) - total/m: a function of the first group's sum alone
    sums = np.array([values[list(idx)].sum() for idx in itertools.combinations(range(n + m), n)])
    diffs = sums / n - (total - sums) / m
    observed = values[:n].sum() / n - values[n:].sum() / m
    tol = 1e-9 * max(1.0, float(np.abs(values).max()))
    if alternative == "two-sided":
        diffs, observed = np.abs(diffs), abs(observed)
    return float(np.mean(diffs >= observed - tol))


def sign_test_p(wins: int, losses: int) -> float:
    """Exact two-sided sign test (ties dropped): the chance under fair coins of a split at least as uneven."""
    n = wins + losses
    if n == 0:
        return 1.0
    tail = sum(math.comb(n, k) for k in range(max(wins, losses), n + 1)) / 2**n
    return min(1.0, 2 * tail)


def fmt_pm(values: Sequence[float | None]) -> str:
    m, s = mean_std(values)
    return "-" if np.isnan(m) else f"{m:.2f} ± {s:.2f}"


# ---------------------------------------------------------------------------------------------------------------------
# Plots


VARIANT_STYLES = ("--", ":", "-.", (0, (5, 1, 1, 1, 1, 1)))


def plot_curves(
    groups: dict[str, list[dict[str, Any]]], title: str, path: Path, ax: Any = None, chance: float | None = None
) -> None:
    """Mean (line) and min-max over seeds (band) of the trailing success rate vs env steps, one line per label."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    own = ax is None
    if own:
        fig, ax = plt.subplots(figsize=(6, 4))
    variant_styles: dict[str, Any] = {}  # each variant of an agent its own dash pattern, in order of appearance
    for label, recs in groups.items():
        x = np.asarray(recs[0]["curve_steps"], dtype=np.float64)
        ys = np.array([[np.nan if v is None else v for v in r["curve_success"]] for r in recs], dtype=np.float64)
        with warnings.catch_warnings():  # points before any episode ended are nan for every seed
            warnings.simplefilter("ignore", RuntimeWarning)
            base, _, variant = label.partition(" [")  # a variant keeps its agent's colour, with a dash pattern
            colour = AGENT_COLOURS.get(base)
            style = variant_styles.setdefault(variant, VARIANT_STYLES[len(variant_styles) % len(VARIANT_STYLES)]) \
                if variant else "-"
            (line,) = ax.plot(x, np.nanmean(ys, axis=0), color=colour, ls=style, label=f"{label} (n={len(recs)})")
            # the band in its line's colour (a label that is no agent's gets the next colour of the cycle)
            ax.fill_between(x, np.nanmin(ys, axis=0), np.nanmax(ys, axis=0), color=line.get_color(), alpha=0.2)
    if chance is not None:
        ax.axhline(chance, color="grey", ls=":", lw=1, label="chance")
    ax.set_ylim(-0.02, 1.02)
    ax.set_xlabel("env steps")
    ax.set_ylabel("success (last 100 episodes)")
    ax.set_title(title, fontsize=10)
    ax.grid(alpha=0.3)
    if own:
        ax.legend(fontsize=7)
        fig.tight_layout()
        path.parent.mkdir(parents=True, exist_ok=True)
        fig.savefig(path, dpi=110)
        plt.close(fig)
