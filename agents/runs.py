"""Run-directory IO shared by ``train_rl.py`` and ``evaluate.py``: envs, checkpoints, RNG states, episodes, statistics.

Layout of a run directory::

    RUN_DIR/
      config.yaml                     resolved TrainConfig (repeat with: train_rl.py --config RUN_DIR/config.yaml)
      model.zip                       final model (MemoryPPO.save)
      best_model.zip                  model with the best evaluation success so far
      checkpoints/step_<N>.zip        periodic checkpoints, N = environment steps
      checkpoints/step_<N>.state.pkl  RNG states (python, numpy, torch, envs, action space) at that checkpoint
      checkpoints/step_<N>.vecnormalize.pkl   VecNormalize statistics (only with normalize_reward)
      logs/                           TensorBoard event files and progress*.csv (SB3 keys, success rate, memory/*)
      evaluations.npz / .json         evaluations during training: timesteps, returns, lengths, successes
      run.json                        status (running / finished / interrupted), steps, wall time, last evaluation,
                                      and per segment its device and machine (CPU model, torch kernel level)
"""

from __future__ import annotations

import difflib
import json
import math
import multiprocessing
import os
import pickle
import platform
import random
import re
import signal
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import gymnasium as gym
import numpy as np
import torch
from stable_baselines3.common.monitor import Monitor
from stable_baselines3.common.vec_env import DummyVecEnv, SubprocVecEnv, VecEnv, VecNormalize

from agents.config import ConfigError

CKPT_RE = re.compile(r"^step_(\d+)\.zip$")


class RunError(RuntimeError):
    """A run directory or model file that cannot be used (missing, corrupt, incompatible, already taken)."""


# ---------------------------------------------------------------------------------------------------------------------
# Environments


def register_envs() -> None:
    """Import ``envs`` so that the ``hqlt/`` ids are registered with gymnasium."""
    import envs  # noqa: F401


def check_env_id(env_id: str) -> None:
    """Raise ConfigError naming close matches and the hqlt/ ids when ``env_id`` is not registered."""
    register_envs()
    if env_id in gym.registry:
        return
    ids = list(gym.registry)
    close = difflib.get_close_matches(env_id, ids, n=3)
    ours = sorted(i for i in ids if i.startswith("hqlt/"))
    hint = f" Did you mean {', '.join(close)}?" if close else ""
    raise ConfigError(
        f"unknown environment id {env_id!r} (config field 'env.id').{hint} Registered hqlt ids: {', '.join(ours)}"
    )


def make_env(env_id: str, kwargs: dict[str, Any], render_mode: str | None = None) -> gym.Env:
    """``gymnasium.make(env_id, **kwargs)`` with errors that name the config field."""
    check_env_id(env_id)
    try:
        return gym.make(env_id, render_mode=render_mode, **kwargs)
    except TypeError as err:
        raise ConfigError(
            f"environment {env_id!r} rejected its keyword arguments {kwargs} (config field 'env.kwargs'): {err}. "
            "After changing env.id, drop the preset's kwargs with env.kwargs={} (or pick a preset for that env)"
        ) from None
    except (ValueError, AssertionError) as err:
        raise ConfigError(
            f"environment {env_id!r} could not be built with env.kwargs={kwargs}: {err}"
        ) from None


def _env_fn(env_id: str, kwargs: dict[str, Any], rank: int, seed: int | None) -> Callable[[], gym.Env]:
    def init() -> gym.Env:
        if multiprocessing.current_process().name != "MainProcess":
            # Ctrl-C goes to the whole process group: let the main process save a checkpoint and close us.
            signal.signal(signal.SIGINT, signal.SIG_IGN)
        env = Monitor(make_env(env_id, kwargs))
        if seed is not None:
            env.action_space.seed(seed + rank)
        return env

    return init


def make_vec_env(env_id: str, kwargs: dict[str, Any], n_envs: int, seed: int | None, kind: str = "dummy") -> VecEnv:
    """``n_envs`` Monitor-wrapped copies in a DummyVecEnv or SubprocVecEnv; env i is seeded seed + i at its first reset."""
    make_env(env_id, kwargs).close()  # fail here, in the main process, with a readable error
    fns = [_env_fn(env_id, kwargs, i, seed) for i in range(n_envs)]
    vec: VecEnv = SubprocVecEnv(fns) if kind == "subproc" else DummyVecEnv(fns)
    if seed is not None:
        vec.seed(seed)
    return vec


# ---------------------------------------------------------------------------------------------------------------------
# Checkpoints and RNG states


def checkpoint_dir(run_dir: Path) -> Path:
    return Path(run_dir) / "checkpoints"


def list_checkpoints(run_dir: Path) -> list[tuple[int, Path]]:
    """(steps, path) of every checkpoint zip in RUN_DIR/checkpoints, oldest first."""
    folder = checkpoint_dir(run_dir)
    found = []
    for path in folder.glob("step_*.zip") if folder.is_dir() else []:
        match = CKPT_RE.match(path.name)
        if match:
            found.append((int(match.group(1)), path))
    return sorted(found)


def checkpoint_paths(run_dir: Path, steps: int) -> tuple[Path, Path, Path]:
    """(model zip, RNG state pickle, VecNormalize pickle) of the checkpoint at ``steps``."""
    stem = checkpoint_dir(run_dir) / f"step_{steps:09d}"
    return stem.with_suffix(".zip"), stem.with_suffix(".state.pkl"), stem.with_suffix(".vecnormalize.pkl")


def rng_state(vec_env: VecEnv | None = None) -> dict[str, Any]:
    """Every RNG a run draws from: python, numpy, torch (and CUDA), each environment's np_random.

    (PPO never samples the action spaces, so their RNGs are left alone.)
    """
    state: dict[str, Any] = {
        "python": random.getstate(),
        "numpy": np.random.get_state(),
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else None,
    }
    if vec_env is not None:
        try:
            state["env_np_random"] = vec_env.get_attr("np_random")
        except Exception:  # noqa: BLE001 - an env without np_random simply is not restored
            state["env_np_random"] = None
    return state


def restore_rng_state(state: dict[str, Any], vec_env: VecEnv | None = None) -> None:
    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    torch.set_rng_state(state["torch"])
    if state.get("cuda") is not None and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])
    gens = state.get("env_np_random")
    if vec_env is not None and gens is not None and len(gens) == vec_env.num_envs:
        for i, gen in enumerate(gens):
            vec_env.set_attr("np_random", gen, indices=[i])


def save_pickle(obj: Any, path: Path) -> None:
    tmp = Path(str(path) + ".tmp")
    with open(tmp, "wb") as fh:
        pickle.dump(obj, fh)
    tmp.replace(path)


def load_pickle(path: Path) -> Any:
    with open(path, "rb") as fh:
        return pickle.load(fh)


def machine_info() -> dict[str, Any]:
    """Where a run ran: CPU model (Linux: ``/proc/cpuinfo``), the vector instruction set torch's CPU kernels dispatch to
    (``cpu_kernels``, e.g. AVX2 or AVX512), core count, Python and torch versions, CUDA device if any. Float rounding
    differs between CPU kinds and kernel levels, so a seed repeats a run bit for bit only where these agree."""
    model = ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return {
        "cpu": model or platform.processor() or platform.machine(),
        "cpu_kernels": torch.backends.cpu.get_cpu_capability(),
        "cores": os.cpu_count(),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "cuda_device": torch.cuda.get_device_name() if torch.cuda.is_available() else None,
    }


def write_json(obj: Any, path: Path) -> None:
    tmp = Path(str(path) + ".tmp")
    tmp.write_text(json.dumps(obj, indent=2, default=_json_default, allow_nan=True) + "\n")
    tmp.replace(path)


def _json_default(obj: Any) -> Any:
    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    if isinstance(obj, Path):
        return str(obj)
    raise TypeError(f"not JSON serialisable: {type(obj).__name__}")


def load_model(path: str | Path, env: VecEnv | None = None, device: str = "auto"):
    """MemoryPPO.load with errors that say what is wrong with the file."""
    from agents import MemoryPPO

    path = Path(path)
    if not path.is_file():
        raise RunError(f"model file {str(path)!r} does not exist")
    try:
        import zipfile

        with zipfile.ZipFile(path) as archive:
            names = set(archive.namelist())
    except (zipfile.BadZipFile, OSError) as err:
        raise RunError(
            f"model file {str(path)!r} is not a Stable-Baselines3 zip archive (corrupt or wrong file): {err}"
        ) from None
    if "data" not in names or "policy.pth" not in names:
        raise RunError(f"model file {str(path)!r} is a zip but not a saved model (no 'data' / 'policy.pth' inside)")
    try:
        return MemoryPPO.load(path, env=env, device=device)
    except ValueError as err:  # SB3: observation/action space mismatch
        raise RunError(f"model {str(path)!r} does not fit this environment: {err}") from None
    except Exception as err:  # noqa: BLE001 - anything else while unpickling means a corrupt / foreign model
        raise RunError(
            f"model file {str(path)!r} could not be loaded as a MemoryPPO model ({type(err).__name__}: {err})"
        ) from None


def load_vecnormalize(path: Path, venv: VecEnv) -> VecNormalize:
    return VecNormalize.load(str(path), venv)


# ---------------------------------------------------------------------------------------------------------------------
# Episodes and statistics


@dataclass
class EpisodeResults:
    """Per-episode figures of an evaluation, in the order episodes finished."""

    returns: list[float]
    lengths: list[int]
    successes: list[float | None]
    trial_episodes: list[int | None] = field(default_factory=list)
    """``info["trial_episode"]`` at each episode's end (0-based index within a trial of a trials task; None: none)."""


def run_episodes(model: Any, vec_env: VecEnv, n_episodes: int, deterministic: bool = True) -> EpisodeResults:
    """Run exactly ``n_episodes`` episodes with ``model.predict(obs, state, episode_start, deterministic)``.

    Episodes are spread evenly over the envs (env i runs (n + i) // n_envs of them) so short episodes are not
    over-represented. Success is read from ``info["success"]`` (or ``info["is_success"]``) at the episode end, and
    the episode's place in its trial from ``info["trial_episode"]`` (trials tasks such as hqlt/TMazeTrials-v0).
    """
    n_envs = vec_env.num_envs
    targets = np.array([(n_episodes + i) // n_envs for i in range(n_envs)])
    counts = np.zeros(n_envs, dtype=int)
    current_return = np.zeros(n_envs)
    current_length = np.zeros(n_envs, dtype=int)
    results = EpisodeResults([], [], [])
    obs = vec_env.reset()
    state = None
    starts = np.ones(n_envs, dtype=bool)
    while (counts < targets).any():
        actions, state = model.predict(obs, state=state, episode_start=starts, deterministic=deterministic)
        obs, rewards, dones, infos = vec_env.step(actions)
        current_return += rewards
        current_length += 1
        for i in np.flatnonzero(dones):
            if counts[i] < targets[i]:
                success = infos[i].get("success", infos[i].get("is_success"))
                results.returns.append(float(current_return[i]))
                results.lengths.append(int(current_length[i]))
                results.successes.append(None if success is None else float(success))
                trial_episode = infos[i].get("trial_episode")
                results.trial_episodes.append(None if trial_episode is None else int(trial_episode))
                counts[i] += 1
            current_return[i] = 0.0
            current_length[i] = 0
        starts = np.asarray(dones, dtype=bool)
    return results


# 0.975 quantiles of Student's t for 1..30 degrees of freedom (standard table values).
_T975 = (12.706, 4.303, 3.182, 2.776, 2.571, 2.447, 2.365, 2.306, 2.262, 2.228, 2.201, 2.179, 2.160, 2.145, 2.131,
         2.120, 2.110, 2.101, 2.093, 2.086, 2.080, 2.074, 2.069, 2.064, 2.060, 2.056, 2.052, 2.048, 2.045, 2.042)


def t_quantile_975(dof: int) -> float:
    """0.975 quantile of Student's t with ``dof`` degrees of freedom (table to 30, then a Cornish-Fisher series)."""
    if dof < 1:
        return math.nan
    if dof <= len(_T975):
        return _T975[dof - 1]
    z, v = 1.959963984540054, float(dof)
    return z + (z**3 + z) / (4 * v) + (5 * z**5 + 16 * z**3 + 3 * z) / (96 * v**2)


def mean_ci(values: list[float]) -> dict[str, float]:
    """Mean, sample std and 95% t confidence interval."""
    x = np.asarray(values, dtype=float)
    n = len(x)
    mean = float(x.mean()) if n else math.nan
    std = float(x.std(ddof=1)) if n > 1 else 0.0
    half = t_quantile_975(n - 1) * std / math.sqrt(n) if n > 1 else math.nan
    return {"mean": mean, "std": std, "ci95_low": mean - half, "ci95_high": mean + half}


def wilson_ci(successes: float, n: int) -> tuple[float, float]:
    """95% Wilson score interval of a success rate (well behaved at 0 and 1)."""
    if n == 0:
        return math.nan, math.nan
    z = 1.959963984540054
    p = successes / n
    denom = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / denom
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denom
    return max(0.0, centre - half), min(1.0, centre + half)


def summarize(results: EpisodeResults) -> dict[str, Any]:
    """Success rate (Wilson 95% CI), mean return and length (t 95% CI) of a set of episodes."""
    n = len(results.returns)
    known = [s for s in results.successes if s is not None]
    summary: dict[str, Any] = {"episodes": n}
    if known:
        rate = float(np.mean(known))
        low, high = wilson_ci(float(np.sum(known)), len(known))
        summary["success"] = {"rate": rate, "ci95_low": low, "ci95_high": high, "n": len(known)}
    else:
        summary["success"] = None
    summary["return"] = mean_ci(results.returns)
    summary["length"] = mean_ci([float(v) for v in results.lengths])
    summary["length"].update({"min": int(min(results.lengths)) if n else 0, "max": int(max(results.lengths)) if n else 0})
    by_trial = _success_by_trial_episode(results)
    if by_trial:
        summary["success_by_trial_episode"] = by_trial
    summary["per_episode"] = asdict(results)
    return summary


def _success_by_trial_episode(results: EpisodeResults) -> list[dict[str, Any]]:
    """Success rate (Wilson 95% CI) of the 1st, 2nd, ... episode of a trial, where the env reports its place in the
    trial: on a trials task the 1st is a guess and the later ones show what the memory kept. [] otherwise."""
    places: dict[int, list[float]] = {}
    for k, success in zip(results.trial_episodes, results.successes):
        if k is not None and success is not None:
            places.setdefault(k, []).append(success)
    out = []
    for k in sorted(places):
        low, high = wilson_ci(float(np.sum(places[k])), len(places[k]))
        out.append({"trial_episode": k + 1, "rate": float(np.mean(places[k])), "ci95_low": low, "ci95_high": high,
                    "n": len(places[k])})
    return out
