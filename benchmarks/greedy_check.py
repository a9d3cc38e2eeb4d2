"""Why does a policy that succeeds when it samples its actions fail when it takes the most likely one?

Some T-Maze runs end training at success 1.00 (sampled actions) and score at chance greedily (the most likely
action at every step), and the cross-episode trials show the same with the fast-weight start. This script trains one
run exactly as the sweep that showed it (or loads a saved model), then plays the same fresh episodes four ways,
choosing each action by sampling or greedily, separately in the corridor and at the junction:

- sampled everywhere (as in training), greedy everywhere (the sweeps' greedy evaluation),
- greedy in the corridor and sampled at the junction, and the reverse,

and reports for each how episodes end (success, the wrong arm, or the time limit without a turn), how many steps
the corridor and the junction took, and what the policy's probabilities were: in the corridor, of stepping right
(the move the task needs); at the first junction step, of the correct turn, the wrong one and staying. Which of the
mixed ways fails tells which part of the episode the greedy policy gets wrong.

    python benchmarks/greedy_check.py --task trials --variant hqlt-carry-mixbias2 --seed 3
    python benchmarks/greedy_check.py --task tmaze --length 1024 --mixer-bias 2 --seed 6
    python benchmarks/greedy_check.py --task tmaze --length 16 --model run.zip    # a saved model: no training
    python benchmarks/greedy_check.py --quick                                     # trials, short, a few minutes

Runs are the sweeps' own (``memory_length.py`` for ``tmaze``, ``cross_episode.py`` for ``trials``, same spec and
seed), trained in this process with one torch thread; the trained model is saved beside the JSON and Markdown report
in ``--out``. Episodes use the sweeps' evaluation seeds (``seed + 10000``); sampling draws from its own generator
(``--sample-seed``), so a report is reproducible. Our MemoryPPO agents only (sb3-contrib's RecurrentPPO has another
policy interface).
"""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _rl import ENT_VARIANTS, LR_VARIANTS, OUR_AGENTS, RESULTS_DIR, RunSpec, memory_state_file, run_one  # noqa: E402

from envs.tmaze import DOWN, LEFT, RIGHT, UP  # noqa: E402  (the T-Mazes' actions)

WAYS = (
    ("fresh", "sample", "sample"), ("fresh", "greedy", "greedy"), ("fresh", "greedy", "sample"),
    ("fresh", "sample", "greedy"), ("trained", "sample", "sample"), ("trained", "greedy", "greedy"),
)
"""(start, corridor, junction): the memory state the envs start from (``fresh``: the initial state, as the sweeps'
greedy evaluation; ``trained``: the training envs' state at the end of training, for a memory that carries state
across episodes) and how actions are chosen in each part of an episode."""
OUTCOMES = ("success", "wrong arm", "time-out")


def _phase(env: Any) -> str:
    """Where a T-Maze env's agent is now: ``corridor``, ``junction`` (must turn) or ``arm`` (turned; hidden goal)."""
    maze = env.unwrapped
    if getattr(maze, "arm", -1) >= 0:
        return "arm"
    return "junction" if maze.x == maze.memory_length else "corridor"


def play(model: Any, spec: RunSpec, n_episodes: int, seed: int, corridor: str, junction: str,
         sample_seed: int = 0, start_state: Any = None) -> dict[str, Any]:
    """Play ``n_episodes`` fresh episodes of ``spec``'s T-Maze task with ``model``, choosing actions by ``corridor``
    and ``junction`` ("sample" or "greedy") in those parts; return outcome rates, step counts and probabilities.

    The envs, their seeds and the per-env episode quota are those of ``_rl.evaluate_greedy``, and the memory state
    is carried as in training (``episode_start`` at each reset; the reward fed back where the policy takes it), so
    greedy everywhere gives the sweeps' greedy success. ``start_state``: a memory state to start from (its batch
    sets the number of envs; e.g. the training envs' last state) instead of the initial one.
    """
    import torch
    from stable_baselines3.common.env_util import make_vec_env
    from stable_baselines3.common.vec_env import DummyVecEnv

    import envs  # noqa: F401  (registers the hqlt/ ids)
    from agents.policies import MemoryPolicyState

    for mode in (corridor, junction):
        if mode not in ("sample", "greedy"):
            raise ValueError(f"play: a way of choosing actions must be 'sample' or 'greedy', got {mode!r}")
    policy = model.policy
    policy.set_training_mode(False)
    n_envs = min(10, n_episodes) if start_state is None else int(start_state.prev_action.shape[0])
    env = make_vec_env(spec.env_id, n_envs=n_envs, seed=seed, env_kwargs=spec.env_kwargs, vec_env_cls=DummyVecEnv)
    if not all(hasattr(e.unwrapped, "x") and hasattr(e.unwrapped, "optimal_action") for e in env.envs):
        raise ValueError(f"play: {spec.env_id} is not a T-Maze task (its env has no corridor position 'x')")
    generator = torch.Generator().manual_seed(sample_seed)
    obs = env.reset()
    state = policy.initial_state(n_envs) if start_state is None else start_state
    starts = torch.ones(n_envs, dtype=torch.bool)
    quota = np.full(n_envs, -(-n_episodes // n_envs))
    fresh = lambda: {"corridor_steps": 0, "junction_steps": 0, "turned": False, "first_junction": None}  # noqa: E731
    current = [fresh() for _ in range(n_envs)]
    episodes: list[dict[str, Any]] = []
    p_right: list[tuple[float, bool]] = []  # at each corridor step: p(step right), and whether it is the argmax
    while (quota > 0).any():
        phases = [_phase(e) for e in env.envs]
        optimal = [int(e.unwrapped.optimal_action()) for e in env.envs]
        with torch.no_grad():
            obs_tensor, _ = policy.obs_to_tensor(obs)
            distribution, state = policy.get_distribution(obs_tensor, state, starts)
            probs = distribution.distribution.probs  # (n_envs, 4)
            sampled = torch.multinomial(probs, 1, generator=generator).squeeze(-1)
        greedy = probs.argmax(dim=-1)
        actions = torch.stack([
            greedy[i] if (junction if phases[i] == "junction" else corridor) == "greedy" else sampled[i]
            for i in range(n_envs)
        ])
        if policy.prev_action_reward:  # as MemoryPolicy.forward: the action taken is the next step's input
            state = MemoryPolicyState(state.actor, state.critic, actions.reshape(n_envs, -1).float(),
                                      torch.zeros_like(state.prev_reward))
        for i in range(n_envs):
            episode, p = current[i], probs[i].tolist()
            if phases[i] == "corridor":
                episode["corridor_steps"] += 1
                if quota[i] > 0:
                    p_right.append((p[RIGHT], int(greedy[i]) == RIGHT))
            elif phases[i] == "junction":
                episode["junction_steps"] += 1
                turn = int(actions[i]) in (UP, DOWN)
                episode["turned"] = episode["turned"] or turn
                if episode["first_junction"] is None:
                    right_turn = optimal[i]
                    episode["first_junction"] = {
                        "p_correct": p[right_turn],
                        "p_wrong": p[DOWN if right_turn == UP else UP],
                        "p_stay": p[RIGHT] + p[LEFT],
                        "argmax_correct": int(greedy[i]) == right_turn,
                    }
        obs, rewards, dones, infos = env.step(actions.numpy())
        state = policy.with_reward(state, rewards)
        starts = torch.as_tensor(dones, dtype=torch.bool)
        for i, (info, done) in enumerate(zip(infos, dones)):
            if not done:
                continue
            episode = current[i]
            current[i] = fresh()
            if quota[i] <= 0:
                continue
            quota[i] -= 1
            success = bool(info.get("success", False))
            episode["outcome"] = "success" if success else ("wrong arm" if episode["turned"] else "time-out")
            episode["trial_episode"] = int(info.get("trial_episode", -1))
            episodes.append(episode)
    env.close()
    return summarise_episodes(episodes, p_right, corridor, junction)


def summarise_episodes(episodes: list[dict[str, Any]], p_right: list[tuple[float, bool]], corridor: str,
                       junction: str) -> dict:
    """Rates and means of ``play``'s episodes (each: outcome, corridor/junction steps, first junction step's
    probabilities or None, trial episode) and of the corridor steps' (probability of stepping right, whether that
    is the most likely action)."""
    n = len(episodes)
    out: dict[str, Any] = {"corridor": corridor, "junction": junction, "episodes": n}
    for outcome in OUTCOMES:
        out[outcome.replace(" ", "_").replace("-", "_")] = sum(e["outcome"] == outcome for e in episodes) / n
    reached = [e for e in episodes if e["first_junction"] is not None]
    out["reached_junction"] = len(reached) / n
    out["corridor_steps"] = float(np.mean([e["corridor_steps"] for e in reached])) if reached else None
    out["junction_steps"] = float(np.mean([e["junction_steps"] for e in reached])) if reached else None
    out["first_junction"] = {
        key: float(np.mean([e["first_junction"][key] for e in reached])) if reached else None
        for key in ("p_correct", "p_wrong", "p_stay", "argmax_correct")
    }
    p = np.asarray([x for x, _ in p_right], dtype=np.float64)
    out["corridor_p_right"] = {
        "mean": float(p.mean()) if p.size else None,
        "min": float(p.min()) if p.size else None,
        "argmax_not_right": float(np.mean([not top for _, top in p_right])) if p_right else None,
        "steps": len(p_right),
    }
    trial_eps = np.asarray([e["trial_episode"] for e in episodes])
    if trial_eps.size and trial_eps.max() >= 0:
        ok = np.asarray([e["outcome"] == "success" for e in episodes], dtype=np.float64)
        out["success_by_trial_episode"] = [float(ok[trial_eps == k].mean()) for k in range(int(trial_eps.max()) + 1)]
    # Per episode, for the link between arrival time and the turn (kept short: three numbers each).
    out["per_episode"] = [
        [e["corridor_steps"], None if e["first_junction"] is None else round(e["first_junction"]["p_correct"], 4),
         OUTCOMES.index(e["outcome"])]
        for e in episodes
    ]
    return out


def _fmt(value: float | None, digits: int = 2) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


def report(record: dict[str, Any]) -> str:
    """Markdown: the training record's figures, then one row per way of choosing actions."""
    train = record.get("train", {})
    lines = [f"# Greedy check: {record['key']}", ""]
    if train:
        lines.append(
            f"Training: final success {_fmt(train.get('final_train_success'))} over the last 100 episodes; "
            f"the sweep's greedy evaluation {_fmt((train.get('eval') or {}).get('success'))}"
            + (f"; model saved to `{train['model_file']}`" if train.get("model_file") else "") + "."
        )
    else:
        lines.append(f"Model loaded from `{record['model_file']}`.")
    if record.get("continued"):
        c = record["continued"]
        lines.append(f"Then trained {c['steps']:,} more env steps with entropy coefficient {c['ent_coef']:g} (env seed "
                     f"{c['env_seed']}): success {_fmt(c['final_train_success'])} over its last 100 episodes.")
    lines += [
        "",
        f"{record['episodes']} fresh episodes per row (seed {record['eval_seed']}), sampling seed {record['sample_seed']}.",
        "",
        "| start | corridor | junction | success | wrong arm | time-out | corridor steps | junction steps | "
        "first junction step: p(correct) / p(wrong) / p(stay) | argmax correct there | corridor p(right): mean / min | "
        "corridor steps whose argmax is not right |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for way in record["ways"]:
        fj, cr = way["first_junction"], way["corridor_p_right"]
        lines.append(
            f"| {way['start']} | {way['corridor']} | {way['junction']} | {_fmt(way['success'])} | {_fmt(way['wrong_arm'])} | "
            f"{_fmt(way['time_out'])} | {_fmt(way['corridor_steps'], 1)} | {_fmt(way['junction_steps'], 1)} | "
            f"{_fmt(fj['p_correct'])} / {_fmt(fj['p_wrong'])} / {_fmt(fj['p_stay'])} | {_fmt(fj['argmax_correct'])} | "
            f"{_fmt(cr['mean'], 3)} / {_fmt(cr['min'], 3)} | {_fmt(cr['argmax_not_right'], 3)} |"
        )
    by_trial = [w for w in record["ways"] if "success_by_trial_episode" in w]
    if by_trial:
        lines += ["", "Success by episode of the trial:", ""]
        lines += [f"- {w['start']}, {w['corridor']} / {w['junction']}: "
                  + " / ".join(_fmt(v) for v in w["success_by_trial_episode"]) for w in by_trial]
    return "\n".join(lines) + "\n"


def continue_training(model_file: Path, spec: RunSpec, steps: int, ent_coef: float | None) -> tuple[Any, Any, dict]:
    """Load ``model_file`` and train it ``steps`` more env steps on fresh envs of ``spec`` (env seed ``seed + 20000``),
    with PPO's entropy coefficient ``ent_coef`` (None: the spec's); return the model, the training envs' last memory
    state, and what was done (steps, coefficient, success over the last 100 episodes of the continuation)."""
    from stable_baselines3.common.env_util import make_vec_env
    from stable_baselines3.common.vec_env import DummyVecEnv

    import envs  # noqa: F401
    from agents import MemoryPPO

    coef = float(spec.ppo.get("ent_coef", 0.0) if ent_coef is None else ent_coef)
    env = make_vec_env(spec.env_id, n_envs=spec.n_envs, seed=spec.seed + 20_000, env_kwargs=spec.env_kwargs,
                       vec_env_cls=DummyVecEnv)
    model = MemoryPPO.load(model_file, env=env, device="cpu", ent_coef=coef)
    model.set_random_seed(spec.seed + 20_000)
    model.learn(steps, reset_num_timesteps=False)
    success = [float(s) for s in model.ep_success_buffer]
    done = {"steps": steps, "ent_coef": coef, "env_seed": spec.seed + 20_000,
            "final_train_success": float(np.mean(success)) if success else None}
    return model, model._last_memory_state, done


def _shown(path: Path) -> str:
    """``path`` as the records keep it: relative to the repository where it lies inside it."""
    try:
        return str(path.resolve().relative_to(RESULTS_DIR.parents[1]))
    except ValueError:
        return str(path)


def build_spec(args: argparse.Namespace) -> RunSpec:
    """The sweep's own spec for the run asked for."""
    if args.task == "trials":
        from cross_episode import VARIANTS, specs_for

        if args.variant not in VARIANTS:
            raise SystemExit(f"--variant {args.variant!r} is unknown; allowed: {', '.join(VARIANTS)}")
        (spec,) = specs_for([args.variant], [args.seed], args.quick)
        return spec
    from memory_length import tmaze_specs

    if args.agent not in OUR_AGENTS:
        raise SystemExit(f"--agent {args.agent!r}: only our MemoryPPO agents can be checked ({', '.join(OUR_AGENTS)})")
    (spec,) = tmaze_specs([args.length], [args.agent], [args.seed], args.quick, budget_scale=args.budget_scale,
                          mixer_bias=args.mixer_bias, lr_schedule=args.lr_schedule, ent_schedule=args.ent_schedule)
    return spec


def main(argv: list[str] | None = None) -> dict[str, Any]:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--task", choices=("tmaze", "trials"), default="trials")
    p.add_argument("--variant", default="hqlt-carry", help="trials: a cross_episode.py variant")
    p.add_argument("--length", type=int, default=16, help="tmaze: memory length L")
    p.add_argument("--agent", default="hqlt", help="tmaze: one of our agents")
    p.add_argument("--mixer-bias", type=float, default=0.0, help="tmaze: HQLT's mixer_bias (as memory_length.py)")
    p.add_argument("--lr-schedule", default="constant", choices=tuple(LR_VARIANTS))
    p.add_argument("--ent-schedule", default="constant", choices=tuple(ENT_VARIANTS),
                   help="tmaze: the entropy coefficient's schedule (as memory_length.py)")
    p.add_argument("--budget-scale", type=float, default=1.0, help="tmaze: the budget times this")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--episodes", type=int, default=None, help="episodes per way (default: the sweep's evaluation's)")
    p.add_argument("--sample-seed", type=int, default=0, help="seed of the sampled actions")
    p.add_argument("--model", type=Path, default=None, help="a model saved by this script: no training")
    p.add_argument("--quick", action="store_true", help="the sweep's quick spec (trials: 24k steps, 40 episodes)")
    p.add_argument("--continue-steps", type=int, default=0,
                   help="train the (trained or loaded) model this many more env steps before playing (0: none)")
    p.add_argument("--continue-ent-coef", type=float, default=None,
                   help="PPO's entropy coefficient for --continue-steps (default: the run's own)")
    p.add_argument("--out", type=Path, default=RESULTS_DIR / "greedy_check")
    args = p.parse_args(argv)
    if args.length < 1:
        p.error(f"--length must be at least 1, got {args.length}")
    if args.continue_steps < 0 or (args.continue_ent_coef is not None and args.continue_ent_coef < 0):
        p.error(f"--continue-steps ({args.continue_steps}) and --continue-ent-coef ({args.continue_ent_coef}) must not "
                "be negative")
    spec = build_spec(args)
    name = spec.key.replace("/", "_")
    if args.task == "tmaze" and args.budget_scale != 1.0:  # the key does not say the budget
        name += f"_steps{spec.total_timesteps}"
    args.out.mkdir(parents=True, exist_ok=True)
    record: dict[str, Any] = {"key": spec.key, "spec": asdict(spec)}
    if args.model is None:
        import os

        os.environ.setdefault("OMP_NUM_THREADS", "1")
        train = run_one(spec, save_to=args.out / f"{name}.zip")
        record["train"] = {k: v for k, v in train.items() if k not in ("curve_steps", "curve_success")}
        for key in ("model_file", "memory_state_file"):
            record["train"][key] = _shown(Path(train[key]))
        record["model_file"] = str(args.out / f"{name}.zip")
        print(f"{spec.key}: trained, final success {train['final_train_success']:.2f}, "
              f"greedy {train.get('eval', {}).get('success')}", flush=True)
    else:
        if not args.model.is_file():
            raise SystemExit(f"--model {args.model}: no such file; pass a .zip saved by this script (or train one)")
        record["model_file"] = str(args.model)
    import torch

    torch.set_num_threads(1)
    from agents import MemoryPPO

    try:
        model = MemoryPPO.load(record["model_file"], device="cpu")
    except Exception as err:  # a model of another agent class or a damaged file
        raise SystemExit(f"--model {record['model_file']}: not a MemoryPPO model saved by this script ({err})") from None
    episodes = args.episodes or spec.eval_episodes
    record.update(episodes=episodes, eval_seed=spec.seed + 10_000, sample_seed=args.sample_seed, ways=[])
    model_file = Path(record["model_file"])
    record["model_file"] = _shown(model_file)
    state_file = memory_state_file(model_file)
    trained_state = torch.load(state_file, weights_only=False) if state_file.is_file() else None  # our own file
    if args.continue_steps:
        model, trained_state, record["continued"] = continue_training(model_file, spec, args.continue_steps,
                                                                      args.continue_ent_coef)
        name += f"_cont{args.continue_steps}_ent{record['continued']['ent_coef']:g}"
        print(f"  continued {args.continue_steps} steps with ent_coef {record['continued']['ent_coef']:g}: "
              f"success {record['continued']['final_train_success']:.2f} over its last 100 episodes", flush=True)
    for start, corridor, junction in WAYS:
        if start == "trained" and trained_state is None:
            print(f"  no {state_file.name} beside the model: the rows that start from the trained state are left out")
            continue
        way = play(model, spec, episodes, spec.seed + 10_000, corridor, junction, args.sample_seed,
                   start_state=trained_state if start == "trained" else None)
        record["ways"].append({"start": start, **way})
        print(f"  start {start:7s} corridor {corridor:6s} junction {junction:6s}: success {way['success']:.2f}, "
              f"wrong arm {way['wrong_arm']:.2f}, time-out {way['time_out']:.2f}", flush=True)
    (args.out / f"{name}.json").write_text(json.dumps(record, indent=1))
    (args.out / f"{name}.md").write_text(report(record))
    print(report(record))
    return record


if __name__ == "__main__":
    main()
