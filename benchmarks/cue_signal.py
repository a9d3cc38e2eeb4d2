"""How much of the Visual Match cue reaches the recall room through a freshly initialised agent's memory? (issue 6)

A diagnostic for the Visual Match results in docs/results.md: before any training, does the choice step see the cue
at all, and how loud is it against what the distractor room writes? For each agent (the same policies as
``memory_length.py``) we roll out episodes with random actions and feed each episode's observations twice through
the policy (extractor -> memory), once as recorded and once with the cue's colour swapped; the recall-room view is the
same in every episode, so only the history differs. At the first recall step we measure

- **retention**: ||y(cue) - y(swapped cue)|| there over the same at the last cue step (0: the cue is gone);
- **signal / spread**: that cue difference over the mean distance of each episode's (cue-averaged) output from the
  mean over episodes: how far apart two cues put the output, relative to how far apart two distractor-room histories
  put it.

KV-only with window 16 and 2 layers reaches 30 steps back, so its retention must be exactly 0 once the recall step
lies further than that from the cue (distractor >= 30); fast weights have no such horizon.

    python benchmarks/cue_signal.py --quick      # seconds
    python benchmarks/cue_signal.py              # distractor 1 / 30 / 60, with and without apples, 3 inits each
    python benchmarks/cue_signal.py --tmaze 16 64 256 1024   # the passive T-Maze's cue at the junction instead

With ``--tmaze L ...`` it measures the retention of the passive T-Maze's cue at the junction (the agents of
``memory_length.py``'s T-Maze sweep; the corridor's observations are identical in every episode, so retention is the
whole story there).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _rl import RESULTS_DIR, build_model  # noqa: E402  (puts the project root on sys.path)
from memory_length import check_window, tmaze_specs, visual_match_specs  # noqa: E402

from envs.visual_match import CUE_PHASE, RECALL_PHASE, T_SQUARE  # noqa: E402  (importing envs registers hqlt/*)


def random_episode(env_kwargs: dict, seed: int) -> tuple[np.ndarray, np.ndarray, int, int]:
    """Observations (T, V, V, 2) up to and including the first recall step, phases (T,), cue colour, colours."""
    import gymnasium as gym

    env = gym.make("hqlt/PassiveVisualMatch-v0", **env_kwargs)
    obs, _ = env.reset(seed=seed)
    rng = np.random.default_rng(seed)
    base = env.unwrapped
    frames, phases = [obs], [base.phase]
    while base.phase != RECALL_PHASE:
        obs, *_ = env.step(int(rng.integers(4)))  # cue and distractor phases have fixed lengths: nothing ends early
        frames.append(obs)
        phases.append(base.phase)
    env.close()
    return np.stack(frames), np.array(phases), int(base.cue_colour), int(base.n_colours)


@torch.no_grad()
def memory_outputs(policy, obs: np.ndarray) -> torch.Tensor:
    """obs (B, T, ...) of B whole episodes from their first step -> the policy's memory outputs (B, T, d_model)."""
    x = torch.as_tensor(obs, dtype=torch.float32)
    batch, steps = x.shape[:2]
    features = policy.extract_features(x.reshape(batch * steps, *x.shape[2:]))
    if not policy.share_features_extractor:
        features = features[0]
    starts = torch.zeros(batch, steps, dtype=torch.bool)
    starts[:, 0] = True
    prev_actions = torch.zeros(batch, steps, 1)
    prev_rewards = torch.zeros(batch, steps, 1)
    inputs = policy._memory_input(policy.memory_proj, features, prev_actions, prev_rewards, starts)
    y, _ = policy.memory(inputs, policy.memory.initial_state(batch), starts)
    return y


def cue_signal(policy, env_kwargs: dict, n_episodes: int, first_seed: int = 1000) -> dict[str, float]:
    """Retention and signal / spread of the cue at the first recall step (see the module doc)."""
    pairs, last_cue = [], None
    recall_view = None
    for i in range(n_episodes):
        obs, phases, cue, n_colours = random_episode(env_kwargs, first_seed + i)
        if recall_view is None:
            recall_view = obs[-1].copy()
        obs[-1] = recall_view  # the same recall room for every episode: only the history differs
        swapped = obs.copy()
        on_cue = (phases == CUE_PHASE)[:, None, None] & (swapped[..., 0] == T_SQUARE)
        swapped[..., 1][on_cue] = cue % n_colours + 1
        pairs += [obs, swapped]
        last_cue = int(np.flatnonzero(phases == CUE_PHASE)[-1])
    y = memory_outputs(policy, np.stack(pairs)).reshape(n_episodes, 2, -1, policy.d_model)  # (N, 2, T, D)
    diff = (y[:, 0] - y[:, 1]).norm(dim=-1)  # (N, T)
    at_recall = diff[:, -1]
    retention = float((at_recall / diff[:, last_cue].clamp_min(1e-12)).mean())
    centre = y[:, :, -1].mean(dim=1)  # (N, D): the output without the cue's contribution
    spread = float((centre - centre.mean(dim=0)).norm(dim=-1).mean())
    return {"retention": retention, "signal_over_spread": float(at_recall.mean()) / max(spread, 1e-12)}


def untrained_policy(spec: Any) -> Any:
    """The freshly initialised policy of ``spec``'s agent (the model is built on a throwaway vector env)."""
    from stable_baselines3.common.env_util import make_vec_env

    env = make_vec_env(spec.env_id, n_envs=spec.n_envs, env_kwargs=spec.env_kwargs)
    try:
        return build_model(spec, env).policy
    finally:
        env.close()


def measure(
    agent: str,
    distractor: int,
    n_apples: int | None,
    seed: int,
    n_episodes: int,
    kv_window: int | None = None,
    hqlt_window: int | None = None,
) -> dict[str, float]:
    """Retention and signal / spread of one untrained agent of ``memory_length.py``'s Visual Match runs
    (``kv_window`` / ``hqlt_window``: the KV-only / HQLT agent's window, as ``memory_length.py --kv-window`` /
    ``--hqlt-window``)."""
    spec = visual_match_specs(
        distractor, [agent], [seed], quick=False, budget=1, n_apples=n_apples, kv_window=kv_window, hqlt_window=hqlt_window
    )[0]
    return cue_signal(untrained_policy(spec), spec.env_kwargs, n_episodes)


def tmaze_retention(agent: str, length: int, seed: int, mixer_bias: float = 0.0) -> float:
    """||y(cue up) - y(cue down)|| at the junction over the same at the cue step, for a freshly initialised agent of
    the T-Maze sweep (cue at step 0, ``length`` corridor steps, the junction at step ``length``); ``mixer_bias``
    starts HQLT's blend leaning on the fast weights."""
    policy = untrained_policy(tmaze_specs([length], [agent], [seed], quick=False, mixer_bias=mixer_bias)[0])
    obs = np.zeros((2, length + 1, 3), np.float32)  # [cue_up, cue_down, at_junction] per step
    obs[0, 0, 0] = obs[1, 0, 1] = 1.0
    obs[:, -1, 2] = 1.0
    y = memory_outputs(policy, obs)  # (2, L + 1, D)
    diff = (y[0] - y[1]).norm(dim=-1)
    return float(diff[-1] / diff[0].clamp_min(1e-12))


def tmaze_main(lengths: list[int], agents: list[str], seeds: list[int], out: Path, mixer_biases: list[float]) -> None:
    rows = []
    for length in lengths:
        for agent in agents:
            for bias in mixer_biases if agent == "hqlt" else [0.0]:
                vals = [tmaze_retention(agent, length, seed, bias) for seed in seeds]
                name = f"{agent} (mixer_bias {bias:g})" if bias else agent
                rows.append({"agent": name, "length": length, "retention": vals})
                print(f"T-Maze L {length:5d}  {name:9s} retention " + " ".join(f"{v:.3g}" for v in vals), flush=True)
    lines = ["| T-Maze L | agent | retention at the junction, per init | mean |", "|---|---|---|---|"]
    for r in rows:
        per = " / ".join(f"{v:.2g}" for v in r["retention"])
        lines.append(f"| {r['length']} | {r['agent']} | {per} | {np.mean(r['retention']):.3g} |")
    print("\n".join(lines))
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"seeds": seeds, "rows": rows}, indent=1) + "\n")
    out.with_suffix(".md").write_text("\n".join(lines) + "\n")
    print(f"wrote {out}")


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--quick", action="store_true", help="distractor 1 and 30, with apples, 1 init, 8 episodes")
    p.add_argument("--agents", nargs="+", default=["hqlt", "deltanet", "kv", "lstm"])
    p.add_argument("--distractors", nargs="+", type=int, default=None, help="full: 1 30 60")
    p.add_argument("--apples", nargs="+", type=int, default=None, help="apples in the distractor room (full: 10 0)")
    p.add_argument("--seeds", nargs="+", type=int, default=None, help="model initialisations (full: 0 1 2)")
    p.add_argument("--episodes", type=int, default=None, help="episode pairs per measurement (full: 32)")
    p.add_argument(
        "--tmaze",
        nargs="+",
        type=int,
        default=None,
        metavar="L",
        help="measure the passive T-Maze's cue at the junction for these corridor lengths instead",
    )
    p.add_argument(
        "--mixer-bias",
        nargs="+",
        type=float,
        default=[0.0],
        help="with --tmaze: HQLT rows for each of these initial mixer gate biases (0: the default init)",
    )
    p.add_argument(
        "--kv-window",
        type=int,
        default=None,
        help="the KV-only agent's window S (default 16; e.g. 128: the whole episode, a full-context Transformer)",
    )
    p.add_argument("--hqlt-window", type=int, default=None, help="HQLT's window S (default 16; 128: the whole episode)")
    p.add_argument(
        "--json",
        type=Path,
        default=None,
        help="default: benchmarks/results/cue_signal.json (cue_signal_tmaze.json with --tmaze)",
    )
    args = p.parse_args(argv)
    torch.set_num_threads(1)
    check_window(args.kv_window)
    check_window(args.hqlt_window, "--hqlt-window")
    windows = {"kv": args.kv_window, "hqlt": args.hqlt_window}
    if args.tmaze:
        if args.kv_window is not None or args.hqlt_window is not None:
            raise SystemExit("--kv-window / --hqlt-window change the Visual Match agents; leave them out with --tmaze")
        seeds = args.seeds or ([0] if args.quick else [0, 1, 2])
        tmaze_main(args.tmaze, args.agents, seeds, args.json or RESULTS_DIR / "cue_signal_tmaze.json", args.mixer_bias)
        return
    distractors = args.distractors or ([1, 30] if args.quick else [1, 30, 60])
    apples = args.apples or ([10] if args.quick else [10, 0])
    seeds = args.seeds or ([0] if args.quick else [0, 1, 2])
    n_episodes = args.episodes or (8 if args.quick else 32)
    out = args.json or RESULTS_DIR / ("quick" if args.quick else "") / "cue_signal.json"

    rows = []
    for n_apples in apples:
        for distractor in distractors:
            for agent in args.agents:
                vals = [
                    measure(agent, distractor, n_apples, seed, n_episodes, args.kv_window, args.hqlt_window) for seed in seeds
                ]
                name = f"{agent} (S = {windows[agent]})" if windows.get(agent) is not None else agent
                row = {
                    "agent": name,
                    "distractor": distractor,
                    "n_apples": n_apples,
                    "retention": [v["retention"] for v in vals],
                    "signal_over_spread": [v["signal_over_spread"] for v in vals],
                }
                rows.append(row)
                print(
                    f"apples {n_apples:2d}  distractor {distractor:3d}  {name:9s} retention "
                    + " ".join(f"{v:.3g}" for v in row["retention"])
                    + "   signal/spread "
                    + " ".join(f"{v:.2f}" for v in row["signal_over_spread"]),
                    flush=True,
                )
    lines = [
        "| apples | distractor | agent | retention (mean over inits) | signal / spread (mean over inits) |",
        "|---|---|---|---|---|",
    ]
    for r in rows:
        lines.append(
            f"| {r['n_apples']} | {r['distractor']} | {r['agent']} | {np.mean(r['retention']):.3g} | "
            f"{np.mean(r['signal_over_spread']):.2f} |"
        )
    print("\n".join(lines))
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"episodes": n_episodes, "seeds": seeds, "rows": rows}, indent=1) + "\n")
    out.with_suffix(".md").write_text("\n".join(lines) + "\n")
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
