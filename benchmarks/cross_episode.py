"""Cross-episode memory: HQLT with fast weights carried across episodes vs reset at each episode (issue 6).

Task: ``hqlt/TMazeTrials-v0``, a T-Maze whose goal arm is hidden (no cue: the agent only learns where the goal was
by entering an arm) and stays on the same side for a trial of K = 4 consecutive episodes; the first observation of
each trial carries a trial-start flag. Inside one episode nothing reveals the goal before the turn, so an agent whose
memory is reset at every episode start is at chance (0.5) on every episode. An agent that carries its fast weights
across episodes (``carry_fw_across_episodes=True``; the KV window still resets) can remember the outcome of the
previous episode: at best 0.5 on the 1st episode of a trial (a guess) and 1.0 on the 2nd..Kth.

Agents: HQLT synchronous with carried fast weights, the same with fast weights reset at each episode, and (full
mode) our LSTM, which resets at episode starts like every SB3 recurrent policy. Equal step budgets, same PPO
hyper-parameters. Reported per trial episode k = 1..K: training success (last 100 episodes with that k) and greedy
success on fresh trials.

    python benchmarks/cross_episode.py --quick     # a few minutes, 1 seed
    python benchmarks/cross_episode.py             # 3 seeds, 100k steps each (~13 min of runs, 2 at a time on 2 cores)
    python benchmarks/cross_episode.py --seeds 0 1 2 3 4 5 6 7   # 8 seeds (runs already saved are not repeated)
    python benchmarks/cross_episode.py --variants hqlt-carry-mixbias2 --seeds 0 1 2 3 4 5 6 7  # the FW-lean start

Results: ``benchmarks/results/cross_episode.json`` (+ ``.md``), figure ``docs/img/cross_episode.png``; ``--quick``
writes to ``benchmarks/results/quick/`` unless ``--out`` is given.
"""

from __future__ import annotations

import argparse
import sys
import warnings
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _rl import (  # noqa: E402
    IMG_DIR,
    RESULTS_DIR,
    RunSpec,
    fmt_pm,
    group,
    load_results,
    permutation_p,
    run_all,
    wall_time_line,
)

K = 4
CORRIDOR = 4
# name: (agent, variant, FW carried across episodes, other memory fields)
VARIANTS = {
    "hqlt-carry": ("hqlt", "carry", True, {}),
    "hqlt-reset": ("hqlt", "reset", False, {}),
    "lstm": ("lstm", "", False, {}),
    # opt-in: the carried agent with its blend started leaning on the fast weights (FW share sigmoid(2) = 0.88)
    "hqlt-carry-mixbias2": ("hqlt", "carry-mixbias2", True, {"mixer_bias": 2.0}),
    # opt-in: the carried agent whose memory is set to its initial state at 20% of the stored sequences' starts, so
    # that it also learns to act from a fresh memory (MemoryPPO's memory_reset_prob)
    "hqlt-carry-memreset0.2": ("hqlt", "carry-memreset0.2", True, {}),
    "hqlt-carry-memreset0.05": ("hqlt", "carry-memreset0.05", True, {}),  # the same at a quarter of the rate
}
VARIANT_PPO = {"hqlt-carry-memreset0.2": {"memory_reset_prob": 0.2}, "hqlt-carry-memreset0.05": {"memory_reset_prob": 0.05}}
"""PPO settings of a variant beyond the common ones."""
DEFAULT_VARIANTS = ("hqlt-carry", "hqlt-reset", "lstm")
LABELS = {
    "hqlt-carry": "HQLT, FW carried across episodes",
    "hqlt-reset": "HQLT, FW reset each episode",
    "lstm": "LSTM (reset each episode)",
    "hqlt-carry-mixbias2": "HQLT, FW carried, mixer_bias 2",
    "hqlt-carry-memreset0.2": "HQLT, FW carried, memory reset 0.2",
    "hqlt-carry-memreset0.05": "HQLT, FW carried, memory reset 0.05",
}


def specs_for(variants: list[str], seeds: list[int], quick: bool) -> list[RunSpec]:
    ppo = dict(n_steps=128, seq_len=64, batch_size=256, n_epochs=4, learning_rate=1e-3, ent_coef=0.01, gamma=0.99)
    out = []
    for name in variants:
        agent, variant, carry, extra = VARIANTS[name]
        mk = dict(d_model=32, n_layers=1 if agent == "lstm" else 2, n_heads=2, window=8, **extra)
        if agent == "hqlt":
            mk["carry_fw_across_episodes"] = carry
        for seed in seeds:
            out.append(
                RunSpec(
                    task=f"trials-L{CORRIDOR}-K{K}",
                    env_id="hqlt/TMazeTrials-v0",
                    env_kwargs={"memory_length": CORRIDOR, "episodes_per_trial": K},
                    agent=agent,
                    seed=seed,
                    total_timesteps=24_576 if quick else 102_400,
                    n_envs=8,
                    ppo={**ppo, **VARIANT_PPO.get(name, {})},
                    memory_kwargs=mk,
                    net_arch=[32],
                    variant=variant,
                    eval_episodes=40 if quick else 400,
                )
            )
    return out


def tables(records: dict) -> str:
    groups = group(records)
    lines = [
        f"Hidden-goal T-Maze (corridor {CORRIDOR}), trials of K = {K} episodes sharing the goal side; chance 0.5 on every "
        "episode; a perfect cross-episode learner gets 0.5 on episode 1 and 1.0 on episodes 2..K. Mean ± std over seeds.",
        "",
        "| agent | seeds | " + " | ".join(f"train ep {k + 1}" for k in range(K)) + " | "
        + " | ".join(f"greedy ep {k + 1}" for k in range(K)) + " | greedy ep 2..K |",
        "|---" * (2 * K + 3) + "|",
    ]
    for name, label in LABELS.items():
        recs = next((v for (t, a), v in groups.items() if a == name), None)
        if not recs:
            continue
        train = [fmt_pm([r["final_train_success_by_trial_episode"][k] for r in recs]) for k in range(K)]
        greedy = [fmt_pm([r["eval"]["by_trial_episode"][k] for r in recs]) for k in range(K)]
        later = fmt_pm([later_episodes(r)["greedy"] for r in recs])
        lines.append(f"| {label} | {len(recs)} | " + " | ".join(train + greedy) + f" | {later} |")
    trained = [(LABELS[name], recs) for name in LABELS for (t, a), recs in groups.items()
               if a == name and all("eval_from_trained_state" in r for r in recs)]
    if trained:
        lines += [
            "",
            "Greedy success of the agents that carry memory across episodes, starting from the training envs' memory "
            "state at the end of training (the table above starts from a fresh state, which such an agent never saw "
            "in training; the same env seeds, with the training's 8 envs in place of 10):",
            "",
            "| agent | seeds | " + " | ".join(f"greedy ep {k + 1}" for k in range(K)) + " | greedy ep 2..K |",
            "|---" * (K + 3) + "|",
        ]
        for label, recs in trained:
            greedy = [fmt_pm([r["eval_from_trained_state"]["by_trial_episode"][k] for r in recs]) for k in range(K)]
            later = fmt_pm([later_episodes(r)["greedy_trained"] for r in recs])
            lines.append(f"| {label} | {len(recs)} | " + " | ".join(greedy) + f" | {later} |")
    lines += carried_tests(groups)
    budgets = sorted({r["spec"]["total_timesteps"] for r in records.values()})
    lines += ["", f"Budget: {', '.join(f'{b:,}' for b in budgets)} env steps per run. " + wall_time_line(records)]
    return "\n".join(lines)


def later_episodes(rec: dict) -> dict[str, float]:
    """One run's success on episodes 2..K of the trials: training (last 100 episodes of each), greedy from a fresh
    state and, where recorded (memory carried across episodes), greedy from the training envs' last state."""
    out = {
        "train": float(np.mean(rec["final_train_success_by_trial_episode"][1:])),
        "greedy": float(np.mean(rec["eval"]["by_trial_episode"][1:])),
    }
    if "eval_from_trained_state" in rec:
        out["greedy_trained"] = float(np.mean(rec["eval_from_trained_state"]["by_trial_episode"][1:]))
    return out


def carried_tests(groups: dict) -> list[str]:
    """The issue's requirement as a test over seeds: is the carried agent higher on episodes 2..K than each agent
    that resets its memory? Exact one-sided permutation tests, training and greedy success (two seeds or more each)."""
    later = {a: [later_episodes(r) for r in recs] for (_, a), recs in groups.items()}
    carried = later.get("hqlt-carry", [])
    lines = []
    for name in ("hqlt-reset", "lstm"):
        other = later.get(name, [])
        if min(len(carried), len(other)) < 2:
            continue
        ps = {what: permutation_p([x[what] for x in carried], [x[what] for x in other]) for what in ("train", "greedy")}
        from_trained = ""
        if all("greedy_trained" in x for x in carried):  # the reset agent's own greedy success is its only one
            p_trained = permutation_p([x["greedy_trained"] for x in carried], [x["greedy"] for x in other])
            from_trained = f", greedy from the trained state p = {p_trained:.2g}"
        lines.append(f"- carried above {LABELS[name]} on episodes 2..{K} ({len(carried)} and {len(other)} seeds): "
                     f"training p = {ps['train']:.2g}, greedy p = {ps['greedy']:.2g}{from_trained}")
    if lines:
        lines = ["", "Exact one-sided permutation tests over seeds:", *lines]
    for setting in (name for name in VARIANTS if name.startswith("hqlt-carry-")):  # the opt-in carried settings
        lines += _setting_test(setting, later.get(setting, []), carried)
    return lines


def _setting_test(setting: str, runs: list[dict], carried: list[dict]) -> list[str]:
    """A setting of the carried agent against the plain one on episodes 2..K, either way (two seeds or more each)."""
    lines: list[str] = []
    if min(len(carried), len(runs)) >= 2:
        measures = ["train", "greedy"] + (["greedy_trained"] if all("greedy_trained" in x for x in runs + carried)
                                          else [])
        ps = {what: permutation_p([x[what] for x in runs], [x[what] for x in carried], alternative="two-sided")
              for what in measures}
        means = {what: (np.mean([x[what] for x in runs]), np.mean([x[what] for x in carried])) for what in measures}
        names = {"train": "train", "greedy": "greedy", "greedy_trained": "greedy from the trained state"}
        lines += ["", f"Exact two-sided permutation test, {LABELS[setting]} ({len(runs)} seeds) "
                  f"against {LABELS['hqlt-carry']} ({len(carried)}) on episodes 2..{K}: "
                  + ", ".join(f"{names[what]} {means[what][0]:.2f} vs {means[what][1]:.2f}, p = {ps[what]:.2g}"
                              for what in measures)]
    return lines


def _trial_curve(record: dict, ks: list[int]) -> np.ndarray:
    """Training success curve averaged over the trial episodes ``ks`` (nan where none had ended yet): (points,)."""
    curves = np.array(
        [[np.nan if v is None else v for v in record["curve_by_trial_episode"][k]] for k in ks], dtype=np.float64
    )  # (len(ks), points)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        return np.nanmean(curves, axis=0)


def plot(records: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    groups = group(records)
    fig, axes = plt.subplots(1, 2, figsize=(10, 3.8))
    for colour, (name, label) in zip((f"C{i}" for i in range(len(LABELS))), LABELS.items()):  # a colour per agent
        recs = next((v for (t, a), v in groups.items() if a == name), None)
        if not recs:
            continue
        x = np.asarray(recs[0]["curve_steps"])
        for ks, ls, what in (([0], ":", "episode 1"), (list(range(1, K)), "-", "episodes 2..K")):
            ys = np.array([_trial_curve(r, ks) for r in recs])  # (seeds, points)
            with warnings.catch_warnings():  # points before any episode ended are nan
                warnings.simplefilter("ignore", RuntimeWarning)
                axes[0].plot(x, np.nanmean(ys, axis=0), ls=ls, color=colour, label=f"{label}, {what}")
        greedy = np.array([r["eval"]["by_trial_episode"] for r in recs])
        ks = np.arange(1, K + 1)
        axes[1].errorbar(ks, greedy.mean(0), yerr=greedy.std(0), marker="o", capsize=3, color=colour, label=label)
    for ax in axes:
        ax.axhline(0.5, color="grey", ls=":", lw=1)
        ax.set_ylim(-0.02, 1.02)
        ax.grid(alpha=0.3)
    axes[0].set_xlabel("env steps")
    axes[0].set_ylabel("training success (last 100 episodes)")
    axes[0].legend(fontsize=6)
    axes[1].set_xlabel("episode within the trial")
    axes[1].set_ylabel("greedy success at the budget\n(from a fresh memory state)")
    axes[1].set_xticks(range(1, K + 1))
    axes[1].legend(fontsize=7)
    fig.suptitle(f"Trials of {K} episodes with a hidden, fixed goal side", fontsize=10)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--quick", action="store_true", help="minutes: HQLT carried vs reset, 1 seed, 24k steps")
    p.add_argument("--variants", nargs="+", default=None, choices=tuple(VARIANTS),
                   help=f"full: {' '.join(DEFAULT_VARIANTS)}; the others run only when named")
    p.add_argument("--seeds", nargs="+", type=int, default=None, help="full: 0 1 2")
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--out", type=Path, default=None)
    p.add_argument("--force", action="store_true")
    p.add_argument("--report-only", action="store_true")
    args = p.parse_args(argv)
    quick = args.quick
    variants = args.variants or (["hqlt-carry", "hqlt-reset"] if quick else list(DEFAULT_VARIANTS))
    seeds = args.seeds if args.seeds is not None else ([0] if quick else [0, 1, 2])
    out = args.out or (RESULTS_DIR / "quick" if quick else RESULTS_DIR)
    img = (args.out or (RESULTS_DIR / "quick" if quick else IMG_DIR)) / "cross_episode.png"
    results = out / "cross_episode.json"
    specs = specs_for(variants, seeds, quick)
    if args.report_only:
        all_records = load_results(results)
        records = {s.key: all_records[s.key] for s in specs if s.key in all_records}
        if not records:
            raise SystemExit(f"--report-only: {results} holds no run of {', '.join(variants)} with seeds {seeds}; "
                             "run them first (without --report-only) or pass the --out, --variants and --seeds used")
    else:
        records = run_all(specs, results, workers=args.workers, force=args.force)
    text = tables(records)
    (out / "cross_episode.md").write_text(text + "\n")
    print(text)
    plot(records, img)
    print(f"wrote {img}")


if __name__ == "__main__":
    main()
