"""Evaluate saved memory-PPO agents: success rate and return with 95% CIs, a GIF, a JSON file, learning curves.

    python evaluate.py runs/X                                  # 100 greedy episodes on the run's own env
    python evaluate.py runs/X --episodes 200 --gif x.gif --json x.json
    python evaluate.py runs/X --env hqlt/PassiveTMaze-v0 --env-kwarg memory_length=100   # a longer corridor
    python evaluate.py runs/X runs/Y --plot curves.png         # comparison table + learning curves
    python evaluate.py runs/X/checkpoints/step_000050000.zip   # a single checkpoint (config read from its run)

A target is a run directory (its model.zip, or --model best / latest) or a model zip; a model outside a run
directory needs --env. Exit status: 0 done, 2 bad input (missing, corrupt or incompatible model, unknown env).
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path
from typing import Any

import numpy as np
import torch

from agents.config import ConfigError, TrainConfig, apply_override, load_config
from agents.runs import (
    RunError,
    list_checkpoints,
    load_model,
    make_env,
    make_vec_env,
    run_episodes,
    summarize,
    write_json,
)

EXIT_OK, EXIT_BAD_INPUT = 0, 2


# ---------------------------------------------------------------------------------------------------------------------
# Finding models and their configs


def find_config(model_path: Path) -> TrainConfig | None:
    """The config.yaml of the run a model belongs to (next to it, or one level up for checkpoints/)."""
    for folder in (model_path.parent, model_path.parent.parent):
        if (folder / "config.yaml").is_file():
            return load_config(folder / "config.yaml")
    return None


def resolve_target(target: str, which: str = "final") -> tuple[Path, TrainConfig | None]:
    """(model zip, run config or None) for a run directory or a model file.

    ``which``: final (model.zip; the latest checkpoint when the run was interrupted), best (best_model.zip),
    latest (the newest checkpoint).
    """
    path = Path(target)
    if path.is_dir():
        if not (path / "config.yaml").is_file():
            raise RunError(f"{target!r} is a directory but not a run directory (no config.yaml)")
        cfg = load_config(path / "config.yaml")
        checkpoints = list_checkpoints(path)
        candidates = {
            "final": [path / "model.zip"] + [p for _, p in checkpoints[-1:]],
            "best": [path / "best_model.zip"],
            "latest": [p for _, p in checkpoints[-1:]] + [path / "model.zip"],
        }[which]
        for candidate in candidates:
            if candidate.is_file():
                return candidate, cfg
        tried = ", ".join(c.name for c in candidates) or "no checkpoints"
        raise RunError(f"run directory {target!r} holds no {which} model ({tried})")
    if not path.exists():
        raise RunError(f"{target!r} does not exist (expected a run directory or a model .zip)")
    return path, find_config(path)


# ---------------------------------------------------------------------------------------------------------------------
# Evaluating


def check_spaces(model: Any, env: Any, model_path: Path, env_id: str) -> None:
    if model.observation_space != env.observation_space or model.action_space != env.action_space:
        raise RunError(
            f"model {str(model_path)!r} is incompatible with {env_id}: it was trained on observations "
            f"{model.observation_space} / actions {model.action_space}, the env gives {env.observation_space} / "
            f"{env.action_space}. Evaluate it on its own env (drop --env) or a variant with the same spaces."
        )


def record_gif(model: Any, env_id: str, env_kwargs: dict[str, Any], path: Path, deterministic: bool, seed: int) -> dict:
    """Play one episode with render_mode="rgb_array" and write its frames as an animated GIF."""
    import imageio.v3 as iio

    env = make_env(env_id, env_kwargs, render_mode="rgb_array")
    try:
        obs, _ = env.reset(seed=seed)
        frames = [env.render()]
        if frames[0] is None:
            raise RunError(f"environment {env_id} returns no frame in render_mode='rgb_array'; it cannot be recorded as a GIF")
        state, start, total, done, info = None, np.ones(1, dtype=bool), 0.0, False, {}
        while not done:
            action, state = model.predict(obs, state=state, episode_start=start, deterministic=deterministic)
            obs, reward, terminated, truncated, info = env.step(action)
            total += float(reward)
            done = terminated or truncated
            start = np.zeros(1, dtype=bool)
            frames.append(env.render())
    finally:
        env.close()
    fps = env.metadata.get("render_fps") or 8
    path.parent.mkdir(parents=True, exist_ok=True)
    iio.imwrite(path, np.stack(frames), duration=1000.0 / fps, loop=0)
    success = info.get("success", info.get("is_success"))
    return {"path": str(path), "frames": len(frames), "return": total, "success": None if success is None else bool(success)}


def evaluate_target(target: str, args: argparse.Namespace, gif_path: Path | None) -> dict[str, Any]:
    model_path, cfg = resolve_target(target, args.model)
    if args.env is None and cfg is None:
        raise RunError(f"model {str(model_path)!r} is not inside a run directory (no config.yaml): pass --env ID")
    env_id = args.env or cfg.env.id
    env_kwargs: dict[str, Any] = dict(cfg.env.kwargs) if cfg is not None and env_id == cfg.env.id else {}
    if args.env_kwarg:
        holder: dict[str, Any] = {"env": {"kwargs": env_kwargs}}
        for item in args.env_kwarg:
            apply_override(holder, f"env.kwargs.{item}")
        env_kwargs = holder["env"]["kwargs"]
    n_envs = max(1, min(args.n_envs, args.episodes))
    vec_env = make_vec_env(env_id, env_kwargs, n_envs, args.seed)
    try:
        model = load_model(model_path, device=args.device)
        check_spaces(model, vec_env, model_path, env_id)
        results = run_episodes(model, vec_env, args.episodes, deterministic=args.deterministic)
    finally:
        vec_env.close()
    summary = summarize(results)
    out: dict[str, Any] = {
        "target": target,
        "model": str(model_path),
        "run_name": cfg.name if cfg is not None else model_path.stem,
        "env": {"id": env_id, "kwargs": env_kwargs},
        "memory": cfg.memory.name if cfg is not None else getattr(model.policy, "memory_name", None),
        "trained_timesteps": int(model.num_timesteps),
        "deterministic": args.deterministic,
        "seed": args.seed,
        **summary,
    }
    if gif_path is not None:
        out["gif"] = record_gif(model, env_id, env_kwargs, gif_path, args.deterministic, args.seed)
    return out


# ---------------------------------------------------------------------------------------------------------------------
# Reporting


def _fmt_ci(stats: dict[str, float] | None, key: str = "mean", digits: int = 2) -> str:
    if stats is None:
        return "n/a"
    low, high = stats["ci95_low"], stats["ci95_high"]
    ci = f" [{low:.{digits}f}, {high:.{digits}f}]" if not (math.isnan(low) or math.isnan(high)) else ""
    return f"{stats[key]:.{digits}f}{ci}"


def format_table(results: list[dict[str, Any]]) -> str:
    header = ["run", "env", "memory", "steps", "episodes", "success [95% CI]", "return [95% CI]", "length"]
    rows = [
        [
            r["target"],
            r["env"]["id"] + (f" {r['env']['kwargs']}" if r["env"]["kwargs"] else ""),
            str(r["memory"]),
            str(r["trained_timesteps"]),
            str(r["episodes"]),
            _fmt_ci(r["success"], "rate"),
            _fmt_ci(r["return"], "mean", 3),
            f"{r['length']['mean']:.1f}",
        ]
        for r in results
    ]
    widths = [max(len(row[i]) for row in [header, *rows]) for i in range(len(header))]
    lines = ["  ".join(cell.ljust(w) for cell, w in zip(row, widths)).rstrip() for row in [header, *rows]]
    lines.insert(1, "  ".join("-" * w for w in widths))
    for r in results:  # trials tasks: the 1st episode of a trial is a guess, the later ones show the memory
        if r.get("success_by_trial_episode"):
            places = ", ".join(_fmt_ci(p, "rate") for p in r["success_by_trial_episode"])
            lines.append(f"{r['target']}: success by episode of the trial (1st, 2nd, ...): {places}")
    return "\n".join(lines)


def learning_curve(run_dir: Path) -> dict[str, np.ndarray]:
    """Training curves of a run from its logs/progress*.csv (resumed segments merged; later rows win)."""
    import csv

    rows: dict[int, dict[str, str]] = {}
    files = sorted((run_dir / "logs").glob("progress*.csv"), key=lambda p: (p.name != "progress.csv", p.name))
    for path in files:
        with open(path, newline="") as fh:
            for row in csv.DictReader(fh):
                steps = row.get("time/total_timesteps")
                if steps:
                    rows[int(float(steps))] = row
    steps = np.array(sorted(rows))
    curves: dict[str, np.ndarray] = {"steps": steps}
    for key in ("rollout/success_rate", "rollout/ep_rew_mean"):
        curves[key] = np.array([float(rows[s].get(key) or "nan") for s in steps])
    evals = run_dir / "evaluations.json"
    if evals.is_file():
        records = json.loads(evals.read_text())["evaluations"]
        curves["eval/steps"] = np.array([r["timesteps"] for r in records])
        curves["eval/success_rate"] = np.array([np.nan if r["success_rate"] is None else r["success_rate"] for r in records])
        curves["eval/mean_reward"] = np.array([r["mean_reward"] for r in records])
    return curves


def plot_curves(run_dirs: list[Path], labels: list[str], path: Path) -> None:
    """One PNG: training success rate (or return) and evaluation success, one line per run."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (ax_train, ax_eval) = plt.subplots(1, 2, figsize=(11, 4), constrained_layout=True)
    use_success = True
    curves = [learning_curve(d) for d in run_dirs]
    if all(np.all(np.isnan(c["rollout/success_rate"])) for c in curves):
        use_success = False
    for label, c in zip(labels, curves):
        key = "rollout/success_rate" if use_success else "rollout/ep_rew_mean"
        if len(c["steps"]):
            ax_train.plot(c["steps"], c[key], label=label)
        if "eval/steps" in c:
            y = c["eval/success_rate"] if use_success else c["eval/mean_reward"]
            ax_eval.plot(c["eval/steps"], y, marker="o", markersize=3, label=label)
    if use_success:
        for ax in (ax_train, ax_eval):
            ax.set_ylim(-0.03, 1.03)
    ax_train.set_title("training: " + ("success rate (last 100 episodes)" if use_success else "mean return"))
    ax_eval.set_title("evaluation: " + ("success rate" if use_success else "mean return"))
    for ax in (ax_train, ax_eval):
        ax.set_xlabel("environment steps")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100)
    plt.close(fig)


# ---------------------------------------------------------------------------------------------------------------------
# Command line


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="evaluate.py",
        description="Evaluate saved memory-PPO agents (run directories or model zips).",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog=__doc__.split("\n\n", 1)[1],
    )
    parser.add_argument("targets", nargs="+", metavar="RUN_DIR_OR_MODEL", help="run directories or model .zip files")
    parser.add_argument(
        "--episodes", type=int, default=100, help="episodes per target (default 100; 0: no evaluation, e.g. --plot only)"
    )
    parser.add_argument("--deterministic", action=argparse.BooleanOptionalAction, default=True,
                        help="greedy actions (default) or, with --no-deterministic, sampled ones")
    parser.add_argument("--model", choices=("final", "best", "latest"), default="final",
                        help="which model of a run directory: model.zip (default), best_model.zip, newest checkpoint")
    parser.add_argument("--env", metavar="ID", help="evaluate on this gymnasium id instead of the run's own env")
    parser.add_argument("--env-kwarg", action="append", default=[], metavar="KEY=VALUE",
                        help="env keyword argument (repeatable), e.g. --env-kwarg memory_length=100")
    parser.add_argument("--n-envs", type=int, default=8, help="environments stepped together (default 8)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the evaluation envs (env i gets seed + i)")
    parser.add_argument("--device", default="cpu", help="torch device (default cpu)")
    parser.add_argument("--gif", metavar="PATH", help="write one episode as a GIF (several targets: PATH-<i>.gif)")
    parser.add_argument("--json", metavar="PATH", help="write every figure (and per-episode values) as JSON")
    parser.add_argument("--plot", metavar="PATH", help="PNG of the learning curves of the run directories, one line each")
    return parser


def _gif_path(base: str | None, index: int, count: int) -> Path | None:
    if base is None:
        return None
    path = Path(base)
    return path if count == 1 else path.with_name(f"{path.stem}-{index}{path.suffix or '.gif'}")


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    torch.set_num_threads(1)
    try:
        if args.episodes < 0 or args.n_envs < 1:
            raise ConfigError(f"--episodes must be >= 0 and --n-envs >= 1, got {args.episodes} and {args.n_envs}")
        if args.episodes == 0 and (args.gif or args.json):
            raise ConfigError("--gif and --json need episodes: pass --episodes N with N >= 1")
        results = []
        if args.episodes:
            for i, target in enumerate(args.targets):
                results.append(evaluate_target(target, args, _gif_path(args.gif, i, len(args.targets))))
            print(format_table(results))
            for r in results:
                if "gif" in r:
                    print(f"gif: {r['gif']['path']} ({r['gif']['frames']} frames, return {r['gif']['return']:.3f})")
        if args.json:
            write_json({"episodes": args.episodes, "deterministic": args.deterministic, "results": results}, Path(args.json))
            print(f"json: {args.json}")
        if args.plot:
            run_dirs = [Path(t) for t in args.targets]
            not_runs = [str(d) for d in run_dirs if not (d / "logs").is_dir()]
            if not_runs:
                raise RunError(f"--plot needs run directories with logs/; these are not: {', '.join(not_runs)}")
            labels = [d.name for d in run_dirs]
            plot_curves(run_dirs, labels, Path(args.plot))
            print(f"plot: {args.plot}")
        return EXIT_OK
    except (ConfigError, RunError) as err:
        print(f"evaluate.py: error: {err}", file=sys.stderr)
        return EXIT_BAD_INPUT


if __name__ == "__main__":
    sys.exit(main())
