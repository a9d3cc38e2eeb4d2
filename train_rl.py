"""Train a memory PPO agent (MemoryPPO) from a preset and ``key=value`` overrides.

    python train_rl.py                                     # default: HQLT-PPO on the passive T-maze
    python train_rl.py --preset tmaze_lstm seed=1          # another preset, one field changed
    python train_rl.py --preset tmaze_hqlt memory.window=8 env.kwargs.memory_length=100 total_timesteps=2e5
    python train_rl.py --config runs/X/config.yaml         # repeat a run exactly (into a new run directory)
    python train_rl.py --resume runs/X                     # continue a run from its last checkpoint
    python train_rl.py --resume runs/X total_timesteps=4e5 # ... and extend it

Everything goes into one run directory (see agents/runs.py for the layout); TensorBoard:
``tensorboard --logdir runs``. Exit status: 0 done, 2 bad input (nothing written), 130 interrupted
(a checkpoint was saved first).
"""

from __future__ import annotations

import argparse
import datetime
import sys
import time
from collections import deque
from pathlib import Path
from typing import Any

import numpy as np
import torch
from gymnasium import spaces
from stable_baselines3.common.callbacks import BaseCallback, CallbackList
from stable_baselines3.common.logger import configure
from stable_baselines3.common.preprocessing import is_image_space
from stable_baselines3.common.utils import LinearSchedule
from stable_baselines3.common.vec_env import VecEnv, VecNormalize

from agents.config import (
    ConfigError,
    TrainConfig,
    apply_override,
    config_from_dict,
    config_to_dict,
    describe_fields,
    list_presets,
    load_config,
    resolve_config,
    save_config,
)
from agents.runs import (
    RunError,
    checkpoint_paths,
    list_checkpoints,
    load_model,
    load_pickle,
    machine_info,
    make_vec_env,
    register_envs,
    restore_rng_state,
    rng_state,
    run_episodes,
    save_pickle,
    summarize,
    write_json,
)

EXIT_OK, EXIT_BAD_INPUT, EXIT_INTERRUPTED = 0, 2, 130
RESUME_OVERRIDABLE = ("total_timesteps", "progress_bar", "device", "torch_threads", "vec_env", "checkpoint_freq",
                      "eval_freq", "log_interval")
EVAL_SEED_OFFSET = 1_000_003


# ---------------------------------------------------------------------------------------------------------------------
# Building the pieces from a config


def policy_name(cfg: TrainConfig, observation_space: spaces.Space) -> str:
    """The policy alias: the configured one, or by observation space (dict -> MultiInput, image / grid -> Cnn, else Mlp)."""
    if cfg.policy.name != "auto":
        return cfg.policy.name
    if isinstance(observation_space, spaces.Dict):
        return "MultiInputMemoryPolicy"
    from agents.extractors import default_extractor_for

    if default_extractor_for(observation_space) is not None:  # symbolic grids (MiniGrid, visual match)
        return "CnnMemoryPolicy"
    if isinstance(observation_space, spaces.Box) and is_image_space(observation_space, check_channels=False):
        return "CnnMemoryPolicy"
    return "MlpMemoryPolicy"


def policy_kwargs(cfg: TrainConfig) -> dict[str, Any]:
    return dict(
        memory=cfg.memory.name,
        memory_kwargs=cfg.memory.memory_kwargs(),
        net_arch=list(cfg.policy.net_arch),
        critic_memory=cfg.policy.critic_memory,
        prev_action_reward=cfg.policy.prev_action_reward,
        **cfg.policy.extra,
    )


def ppo_kwargs(cfg: TrainConfig) -> dict[str, Any]:
    p = cfg.ppo
    lr = LinearSchedule(p.learning_rate, 0.0, 1.0) if p.lr_schedule == "linear" else p.learning_rate
    ent = LinearSchedule(p.ent_coef, 0.0, 1.0) if p.ent_schedule == "linear" else p.ent_coef
    return dict(
        learning_rate=lr,
        n_steps=p.n_steps,
        seq_len=p.seq_len,
        batch_size=p.batch_size,
        n_epochs=p.n_epochs,
        gamma=p.gamma,
        gae_lambda=p.gae_lambda,
        clip_range=p.clip_range,
        ent_coef=ent,
        vf_coef=p.vf_coef,
        max_grad_norm=p.max_grad_norm,
        target_kl=p.target_kl,
        dual_clip=p.dual_clip,
        memory_reset_prob=p.memory_reset_prob,
        normalize_advantage=p.normalize_advantage,
    )


def build_model(cfg: TrainConfig, env: VecEnv):
    from agents import MemoryPPO

    try:
        return MemoryPPO(
            policy_name(cfg, env.observation_space),
            env,
            policy_kwargs=policy_kwargs(cfg),
            seed=cfg.seed,
            device=cfg.device,
            verbose=0,
            **ppo_kwargs(cfg),
        )
    except (ValueError, TypeError) as err:
        raise ConfigError(f"the agent could not be built from this config: {err}") from None


def build_envs(cfg: TrainConfig, seeded: bool = True) -> tuple[VecEnv, VecEnv]:
    """Training VecEnv (subproc or dummy) and a small in-process evaluation VecEnv."""
    seed = cfg.seed if seeded else None
    train_env = make_vec_env(cfg.env.id, cfg.env.kwargs, cfg.n_envs, seed, cfg.vec_env_kind())
    n_eval = min(cfg.eval_episodes, 8)
    eval_env = make_vec_env(cfg.env.id, cfg.env.kwargs, n_eval, None if seed is None else seed + EVAL_SEED_OFFSET)
    return train_env, eval_env


def default_run_dir(cfg: TrainConfig) -> Path:
    stamp = datetime.datetime.now().strftime("%Y%m%d-%H%M%S")
    base = Path("runs") / f"{cfg.name}-{stamp}"
    path, k = base, 1
    while path.exists():
        path, k = Path(f"{base}-{k}"), k + 1
    return path


def check_run_dir_free(run_dir: Path, cfg: TrainConfig) -> None:
    """A fresh run may only write into a missing or empty directory (never over another run)."""
    if run_dir.exists() and not run_dir.is_dir():
        raise RunError(f"run directory {str(run_dir)!r} exists and is not a directory")
    if run_dir.is_dir() and any(run_dir.iterdir()):
        held = run_dir / "config.yaml"
        if held.is_file():
            try:
                same = config_to_dict(load_config(held)) == config_to_dict(cfg)
            except ConfigError:
                same = False
            what = "this same run" if same else "a different run"
            raise RunError(
                f"run directory {str(run_dir)!r} already holds {what} (config.yaml); nothing was written. "
                f"Continue it with `python train_rl.py --resume {run_dir}` or pick another with run_dir=..."
            )
        raise RunError(f"run directory {str(run_dir)!r} is not empty; nothing was written. Pick another with run_dir=...")


# ---------------------------------------------------------------------------------------------------------------------
# Callbacks


class SuccessAndProgress(BaseCallback):
    """Success rate of recent episodes (``rollout/success_rate``), memory diagnostics (``memory/*``), progress bar."""

    def __init__(self, total_timesteps: int, show_bar: bool, window: int = 100) -> None:
        super().__init__()
        self.total_timesteps = total_timesteps
        self.show_bar = show_bar
        self.successes: deque[float] = deque(maxlen=window)
        self.returns: deque[float] = deque(maxlen=window)
        self.bar = None
        self._ep_return: np.ndarray | None = None

    def _on_training_start(self) -> None:
        if self.show_bar:
            from tqdm.auto import tqdm

            self.bar = tqdm(total=self.total_timesteps, initial=self.num_timesteps, unit="step", unit_scale=True,
                            dynamic_ncols=True, desc="train")

    def _on_step(self) -> bool:
        infos, dones = self.locals.get("infos", []), self.locals.get("dones", [])
        for info, done in zip(infos, dones):
            if done:
                success = info.get("success", info.get("is_success"))
                if success is not None:
                    self.successes.append(float(success))
                if "episode" in info:
                    self.returns.append(float(info["episode"]["r"]))
        if self.bar is not None:
            self.bar.update(self.num_timesteps - self.bar.n)
        return True

    def recent_success(self) -> float | None:
        return float(np.mean(self.successes)) if self.successes else None

    def _on_rollout_end(self) -> None:
        rate = self.recent_success()  # MemoryPPO itself logs rollout/success_rate from info["success"]
        diagnostics = getattr(self.model.policy, "memory_diagnostics", None)
        for key, value in (diagnostics() if callable(diagnostics) else {}).items():
            self.logger.record(key if "/" in key else f"memory/{key}", value)
        if self.bar is not None:
            post = {}
            if rate is not None:
                post["success"] = f"{rate:.2f}"
            if self.returns:
                post["return"] = f"{np.mean(self.returns):.3f}"
            self.bar.set_postfix(post, refresh=False)

    def _on_training_end(self) -> None:
        if self.bar is not None:
            self.bar.close()
            self.bar = None


class _Periodic(BaseCallback):
    """Calls ``fire()`` at the first rollout boundary after every ``freq`` steps (0 disables it)."""

    def __init__(self, freq: int) -> None:
        super().__init__()
        self.freq = freq
        self.last = 0

    def fire(self) -> Any:
        raise NotImplementedError

    def _on_training_start(self) -> None:
        self.last = self.num_timesteps

    def _on_step(self) -> bool:
        return True

    def _on_rollout_start(self) -> None:
        if self.freq and self.num_timesteps - self.last >= self.freq:
            self.fire()


class Checkpointer(_Periodic):
    """Save model + RNG states (+ VecNormalize stats) every ``freq`` steps, at rollout boundaries."""

    def __init__(self, run_dir: Path, freq: int, eval_env: VecEnv | None = None) -> None:
        super().__init__(freq)
        self.run_dir, self.eval_env = run_dir, eval_env

    def fire(self) -> Path:
        return self.save()

    def save(self) -> Path:
        self.last = self.num_timesteps
        return save_checkpoint(self.model, self.run_dir, self.eval_env)


def save_checkpoint(model: Any, run_dir: Path, eval_env: VecEnv | None = None) -> Path:
    """Write checkpoints/step_<N>.zip and its RNG / VecNormalize side files; returns the zip path."""
    zip_path, state_path, norm_path = checkpoint_paths(run_dir, model.num_timesteps)
    zip_path.parent.mkdir(parents=True, exist_ok=True)
    train_env = model.get_env()
    state = rng_state(train_env)
    if eval_env is not None:
        state["eval_env"] = rng_state(eval_env).get("env_np_random")
    save_pickle(state, state_path)
    vec_norm = model.get_vec_normalize_env()
    if vec_norm is not None:
        vec_norm.save(str(norm_path))
    model.save(zip_path)
    return zip_path


class Evaluator(_Periodic):
    """EvalCallback-style: every ``freq`` steps run ``n_episodes`` on ``eval_env``; write evaluations.npz/json.

    Logs ``eval/success_rate``, ``eval/mean_reward``, ``eval/mean_ep_length``; keeps ``best_model.zip``.
    """

    def __init__(self, run_dir: Path, eval_env: VecEnv, freq: int, n_episodes: int, deterministic: bool) -> None:
        super().__init__(freq)
        self.run_dir, self.eval_env = run_dir, eval_env
        self.n_episodes, self.deterministic = n_episodes, deterministic
        self.records: list[dict[str, Any]] = []
        self.arrays: dict[str, list[list[float]]] = {"results": [], "ep_lengths": [], "successes": []}
        self.best = -np.inf
        self._load_previous()

    def _load_previous(self) -> None:
        npz = self.run_dir / "evaluations.npz"
        js = self.run_dir / "evaluations.json"
        if npz.is_file() and js.is_file():
            import json

            self.records = json.loads(js.read_text())["evaluations"]
            with np.load(npz) as data:
                self.arrays = {k: data[k].tolist() for k in self.arrays}
            self.best = max((self._score(r) for r in self.records), default=-np.inf)

    @staticmethod
    def _score(record: dict[str, Any]) -> float:
        return record["success_rate"] if record["success_rate"] is not None else record["mean_reward"]

    def fire(self) -> dict[str, Any]:
        return self.evaluate()

    def _on_training_end(self) -> None:
        if not self.records or self.records[-1]["timesteps"] != self.num_timesteps:
            self.evaluate()

    def evaluate(self) -> dict[str, Any]:
        self.last = self.num_timesteps
        start = time.perf_counter()
        summary = summarize(run_episodes(self.model, self.eval_env, self.n_episodes, self.deterministic))
        success = summary["success"]
        record = {
            "timesteps": int(self.num_timesteps),
            "success_rate": None if success is None else success["rate"],
            "success_ci95": None if success is None else [success["ci95_low"], success["ci95_high"]],
            "mean_reward": summary["return"]["mean"],
            "reward_ci95": [summary["return"]["ci95_low"], summary["return"]["ci95_high"]],
            "mean_ep_length": summary["length"]["mean"],
            "episodes": summary["episodes"],
            "eval_seconds": time.perf_counter() - start,
        }
        self.records.append(record)
        per = summary["per_episode"]
        self.arrays["results"].append(per["returns"])
        self.arrays["ep_lengths"].append(per["lengths"])
        self.arrays["successes"].append([np.nan if s is None else s for s in per["successes"]])
        np.savez(
            self.run_dir / "evaluations.npz",
            timesteps=np.array([r["timesteps"] for r in self.records]),
            **{k: np.array(v, dtype=float) for k, v in self.arrays.items()},
        )
        write_json({"evaluations": self.records}, self.run_dir / "evaluations.json")
        if record["success_rate"] is not None:
            self.logger.record("eval/success_rate", record["success_rate"])
        self.logger.record("eval/mean_reward", record["mean_reward"])
        self.logger.record("eval/mean_ep_length", record["mean_ep_length"])
        if self._score(record) > self.best:
            self.best = self._score(record)
            self.model.save(self.run_dir / "best_model.zip")
        return record


# ---------------------------------------------------------------------------------------------------------------------
# Training


def _set_logger(model: Any, run_dir: Path, resumed_at: int | None) -> None:
    logs = run_dir / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    logger = configure(str(logs), ["tensorboard"])
    # SB3's CSV writer truncates its file: a resumed segment gets its own progress file, merged when plotting.
    from stable_baselines3.common.logger import CSVOutputFormat

    name = "progress.csv" if resumed_at is None else f"progress-resumed-{resumed_at:09d}.csv"
    logger.output_formats.append(CSVOutputFormat(str(logs / name)))
    model.set_logger(logger)


def _write_status(run_dir: Path, status: str, model: Any, cfg: TrainConfig, wall: float, evaluator: Evaluator | None) -> None:
    import json

    path = run_dir / "run.json"
    previous = json.loads(path.read_text()) if path.is_file() else {}
    segments = previous.get("segments", [])
    segments.append(
        {
            "status": status,
            "end_timesteps": int(model.num_timesteps),
            "wall_seconds": wall,
            "device": str(model.device),
            "machine": machine_info(),
        }
    )
    write_json(
        {
            "status": status,
            "num_timesteps": int(model.num_timesteps),
            "total_timesteps": cfg.total_timesteps,
            "wall_seconds": sum(s["wall_seconds"] for s in segments),
            "segments": segments,
            "last_evaluation": evaluator.records[-1] if evaluator and evaluator.records else None,
            # env step at which ppo.lr_schedule=decay_on_success started the decay (None: constant so far / other schedule)
            "lr_decay_start": getattr(model.learning_rate, "start_step", None),
            "ent_coef_decay_start": getattr(model.ent_coef, "start_step", None),  # likewise ppo.ent_schedule
        },
        path,
    )


def train(cfg: TrainConfig, resume_dir: Path | None = None) -> int:
    """Train (or resume) one run; returns the exit status. Raises ConfigError / RunError on bad input."""
    torch.set_num_threads(cfg.torch_threads)
    register_envs()
    if resume_dir is None:
        run_dir = Path(cfg.run_dir) if cfg.run_dir else default_run_dir(cfg)
        check_run_dir_free(run_dir, cfg)
        checkpoint = None
    else:
        run_dir = resume_dir
        found = list_checkpoints(run_dir)
        if not found:
            raise RunError(f"run directory {str(run_dir)!r} has no checkpoint in checkpoints/ to resume from")
        checkpoint = found[-1]
    train_env, eval_env = build_envs(cfg, seeded=checkpoint is None)  # validates env id / kwargs before writing
    try:
        if checkpoint is None:
            model = build_model(cfg, train_env)
            if cfg.normalize_reward:
                model.set_env(VecNormalize(train_env, norm_obs=False, norm_reward=True, gamma=cfg.ppo.gamma))
            run_dir.mkdir(parents=True, exist_ok=True)
            save_config(cfg, run_dir / "config.yaml")
            resumed_at = None
        else:
            steps, zip_path = checkpoint
            _, state_path, norm_path = checkpoint_paths(run_dir, steps)
            env_for_model: VecEnv = train_env
            if cfg.normalize_reward:
                if not norm_path.is_file():
                    raise RunError(f"checkpoint {str(zip_path)!r} lacks its VecNormalize statistics {norm_path.name}")
                env_for_model = VecNormalize.load(str(norm_path), train_env)
            model = load_model(zip_path, env=env_for_model, device=cfg.device)
            if state_path.is_file():
                state = load_pickle(state_path)
                restore_rng_state(state, train_env)
                if state.get("eval_env") is not None:
                    restore_rng_state({**rng_state(), "env_np_random": state["eval_env"]}, eval_env)
            model._last_obs = None  # the envs are fresh: make learn() reset them (and the memory states)
            save_config(cfg, run_dir / "config.yaml")  # total_timesteps may have been extended
            resumed_at = steps
            if model.num_timesteps >= cfg.total_timesteps:
                print(f"{run_dir}: already trained {model.num_timesteps} of total_timesteps={cfg.total_timesteps}; "
                      f"extend with `python train_rl.py --resume {run_dir} total_timesteps=N`")
                return EXIT_OK
        _set_logger(model, run_dir, resumed_at)
        progress = SuccessAndProgress(cfg.total_timesteps, cfg.progress_bar)
        checkpointer = Checkpointer(run_dir, cfg.checkpoint_freq, eval_env)
        evaluator = Evaluator(run_dir, eval_env, cfg.eval_freq, cfg.eval_episodes, cfg.eval_deterministic)
        callbacks = [progress, checkpointer] + ([evaluator] if cfg.eval_freq else [])
        decay_lr, decay_ent = (getattr(cfg.ppo, f) == "decay_on_success" for f in ("lr_schedule", "ent_schedule"))
        if decay_lr or decay_ent:
            from agents.callbacks import DecayOnSuccess

            callbacks.append(DecayOnSuccess(threshold=cfg.ppo.lr_decay_threshold, window=cfg.ppo.lr_decay_window,
                                            learning_rate=decay_lr, ent_coef=decay_ent))
        print(f"training {cfg.memory.name} on {cfg.env.id} for {cfg.total_timesteps} steps -> {run_dir}", flush=True)
        start = time.perf_counter()
        try:
            model.learn(
                total_timesteps=cfg.total_timesteps - model.num_timesteps,
                callback=CallbackList(callbacks),
                log_interval=cfg.log_interval,
                reset_num_timesteps=checkpoint is None,
            )
        except KeyboardInterrupt:
            progress._on_training_end()
            path = save_checkpoint(model, run_dir, eval_env)
            _write_status(run_dir, "interrupted", model, cfg, time.perf_counter() - start, evaluator)
            print(f"\ninterrupted at {model.num_timesteps} steps; checkpoint saved to {path}\n"
                  f"continue with: python train_rl.py --resume {run_dir}", file=sys.stderr)
            return EXIT_INTERRUPTED
        wall = time.perf_counter() - start
        save_checkpoint(model, run_dir, eval_env)
        model.save(run_dir / "model.zip")
        _write_status(run_dir, "finished", model, cfg, wall, evaluator if cfg.eval_freq else None)
        _report(run_dir, model, wall, progress, evaluator if cfg.eval_freq else None)
        return EXIT_OK
    finally:
        train_env.close()
        eval_env.close()


def _report(run_dir: Path, model: Any, wall: float, progress: SuccessAndProgress, evaluator: Evaluator | None) -> None:
    lines = [f"done: {model.num_timesteps} steps in {wall:.0f} s"]
    recent = progress.recent_success()
    if recent is not None:
        lines[0] += f"; training success (last {len(progress.successes)} episodes) {recent:.2f}"
    if evaluator is not None and evaluator.records:
        r = evaluator.records[-1]
        if r["success_rate"] is not None:
            lines.append(f"final evaluation: success {r['success_rate']:.2f} "
                         f"(95% CI {r['success_ci95'][0]:.2f}-{r['success_ci95'][1]:.2f}) over {r['episodes']} episodes, "
                         f"mean return {r['mean_reward']:.3f}")
    lines += [
        f"saved in {run_dir}/:",
        "  model.zip, best_model.zip, checkpoints/  (evaluate: python evaluate.py " + str(run_dir) + ")",
        "  config.yaml   (repeat: python train_rl.py --config " + str(run_dir / "config.yaml") + ")",
        "  logs/         (tensorboard --logdir " + str(run_dir / "logs") + ")",
        "  evaluations.json / .npz, run.json",
    ]
    print("\n".join(lines), flush=True)


def resume_config(run_dir: Path, overrides: list[str]) -> TrainConfig:
    """The run's saved config with the few overrides a resume may change (total_timesteps, progress_bar, ...)."""
    held = run_dir / "config.yaml"
    if not run_dir.is_dir() or not held.is_file():
        raise RunError(f"{str(run_dir)!r} is not a run directory (no config.yaml); nothing to resume")
    data = config_to_dict(load_config(held))
    for item in overrides:
        key = item.split("=", 1)[0].strip().removeprefix("--")
        if key not in RESUME_OVERRIDABLE:
            raise ConfigError(
                f"cannot change '{key}' when resuming (the run must stay the same run); "
                f"allowed on --resume: {', '.join(RESUME_OVERRIDABLE)}"
            )
        apply_override(data, item)
    return config_from_dict(data)


# ---------------------------------------------------------------------------------------------------------------------
# Command line


def build_parser() -> argparse.ArgumentParser:
    fields = "\n".join(describe_fields())
    parser = argparse.ArgumentParser(
        prog="train_rl.py",
        description="Train a PPO agent with a hybrid (KV window + fast weight) memory, or a baseline memory.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog=(
            "overrides: any config field as KEY=VALUE, dotted by section, applied after the preset, e.g.\n"
            "  memory.window=16 ppo.learning_rate=3e-4 env.kwargs.memory_length=100 total_timesteps=2e5\n"
            "  policy.net_arch=64,64 ppo.target_kl=none memory.name=lstm\n"
            "  env.id=CartPole-v1 env.kwargs={}   (a new env id: drop the preset's env kwargs)\n\n"
            f"config fields (defaults before the preset):\n{fields}\n\n"
            f"presets (configs/*.yaml): {', '.join(list_presets())}"
        ),
    )
    parser.add_argument("overrides", nargs="*", metavar="KEY=VALUE", help="config overrides (see the list below)")
    group = parser.add_mutually_exclusive_group()
    group.add_argument("--preset", help="preset name in configs/ or a YAML file with some fields (default: tmaze_hqlt)")
    group.add_argument("--config", help="a full config file, e.g. RUN_DIR/config.yaml to repeat a run")
    group.add_argument("--resume", metavar="RUN_DIR", help="continue RUN_DIR from its last checkpoint")
    parser.add_argument("--print-config", action="store_true", help="print the resolved config as YAML and exit")
    parser.add_argument("--list-presets", action="store_true", help="list the presets and exit")
    parser.add_argument("--list-envs", action="store_true", help="list the registered hqlt/ environment ids and exit")
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        if args.list_presets:
            print("\n".join(list_presets()))
            return EXIT_OK
        if args.list_envs:
            import gymnasium as gym

            register_envs()
            print("\n".join(sorted(i for i in gym.registry if i.startswith("hqlt/"))))
            return EXIT_OK
        if args.resume:
            run_dir = Path(args.resume)
            cfg = resume_config(run_dir, args.overrides)
        else:
            run_dir = None
            cfg = resolve_config(args.preset, args.config, args.overrides)
        if args.print_config:
            import yaml

            print(yaml.safe_dump(config_to_dict(cfg), sort_keys=False), end="")
            return EXIT_OK
        return train(cfg, resume_dir=run_dir)
    except (ConfigError, RunError) as err:
        print(f"train_rl.py: error: {err}", file=sys.stderr)
        return EXIT_BAD_INPUT


if __name__ == "__main__":
    sys.exit(main())
