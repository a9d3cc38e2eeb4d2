"""MiniGrid Memory: success vs env steps for HQLT-PPO and sb3-contrib RecurrentPPO (issue 6).

``hqlt/MiniGridMemoryS7-v0`` and ``hqlt/MiniGridMemoryS11-v0`` (MiniGrid-MemoryS*-v0 with the symbolic 7x7 egocentric
view and 3 actions, see ``envs/minigrid_memory.py``): the agent sees an object in the start room, walks down a
hallway and must enter the side of the fork that holds the same object; chance 0.5 once the agent learns to reach
the fork. Both agents use the project's ``SymbolicGridExtractor``, the same PPO hyper-parameters and step budget.

    python benchmarks/minigrid_curves.py --quick     # a few minutes: S7, 1 seed, a short budget (plumbing only)
    python benchmarks/minigrid_curves.py             # S7 (500k steps) and S11 (1M steps), 3 seeds (many CPU-hours)

Results: ``benchmarks/results/minigrid_curves.json`` (+ ``.md``), figure ``docs/img/minigrid_curves.png``;
``--quick`` writes to ``benchmarks/results/quick/`` unless ``--out`` is given.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _rl import (  # noqa: E402
    AGENT_LABELS,
    IMG_DIR,
    LR_VARIANTS,
    RESULTS_DIR,
    RunSpec,
    fmt_pm,
    fmt_steps,
    group,
    group_label,
    load_results,
    plot_curves,
    run_all,
    wall_time_line,
)

FULL_BUDGETS = {7: 500_000, 11: 1_000_000}


def specs_for(
    sizes: list[int], agents: list[str], seeds: list[int], quick: bool, budget: int | None, lr_schedule: str = "constant"
) -> list[RunSpec]:
    """Runs; ``lr_schedule="linear"`` (learning rate decayed to 0 over the budget) makes the variant ``lrdecay``,
    ``"decay_on_success"`` (constant until 0.9 success over the last 100 episodes, then decayed to 0 at the budget)
    the variant ``lrdecay-success``."""
    ppo = dict(n_steps=128, seq_len=64, batch_size=256, n_epochs=4, learning_rate=3e-4, ent_coef=0.01, gamma=0.99)
    variant = ""
    if lr_schedule != "constant":
        ppo["lr_schedule"], variant = lr_schedule, LR_VARIANTS[lr_schedule]
    return [
        RunSpec(
            task=f"minigrid-S{size}",
            env_id=f"hqlt/MiniGridMemoryS{size}-v0",
            agent=agent,
            seed=seed,
            total_timesteps=budget or (8_192 if quick else FULL_BUDGETS.get(size, 1_000_000)),
            n_envs=8,
            ppo=ppo,
            memory_kwargs=dict(d_model=64, n_layers=1 if agent in ("lstm", "rppo") else 2, n_heads=4, window=16),
            net_arch=[64],
            variant=variant,
            eval_episodes=10 if quick else 100,
        )
        for size in sizes
        for agent in agents
        for seed in seeds
    ]


def tables(records: dict, sizes: list[int]) -> str:
    groups = group(records)
    lines = [
        "| task | agent | seeds | budget | train success (last 100) | greedy success | steps-to-success | steps/s |",
        "|---|---|---|---|---|---|---|---|",
    ]
    order = {agent: i for i, agent in enumerate(AGENT_LABELS)}
    for size in sizes:
        names = sorted((n for t, n in groups if t == f"minigrid-S{size}"), key=lambda n: (order.get(n.split("-")[0], 99), n))
        for name in names:
            recs = groups[(f"minigrid-S{size}", name)]
            fps = sum(r["fps"] for r in recs) / len(recs)
            greedy = fmt_pm([r.get("eval", {}).get("success") for r in recs])
            lines.append(
                f"| MemoryS{size} | {group_label(name)} | {len(recs)} | {recs[0]['spec']['total_timesteps']:,} | "
                f"{fmt_pm([r['final_train_success'] for r in recs])} | {greedy} | "
                f"{fmt_steps([r['steps_to_success'] for r in recs])} | {fps:.0f} |"
            )
    lines += ["", wall_time_line(records)]
    return "\n".join(lines)


def plot(records: dict, sizes: list[int], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    groups = group(records)
    shown = [s for s in sizes if any(t == f"minigrid-S{s}" for t, _ in groups)]
    fig, axes = plt.subplots(1, max(1, len(shown)), figsize=(5 * max(1, len(shown)), 3.8), squeeze=False)
    for ax, size in zip(axes[0], shown):
        sub = {group_label(a): recs for (t, a), recs in sorted(groups.items()) if t == f"minigrid-S{size}"}
        plot_curves(sub, f"MiniGrid-MemoryS{size}", Path(), ax=ax, chance=0.5)
        ax.legend(fontsize=7)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--quick", action="store_true", help="minutes: S7, 1 seed, 8k steps per run (plumbing only)")
    p.add_argument("--sizes", nargs="+", type=int, default=None, choices=(7, 9, 11, 13), help="full: 7 11")
    p.add_argument("--agents", nargs="+", default=None, choices=tuple(AGENT_LABELS), help="full: hqlt rppo")
    p.add_argument("--seeds", nargs="+", type=int, default=None, help="full: 0 1 2")
    p.add_argument("--budget", type=int, default=None, help="env steps per run (default: quick 8k, S7 500k, S11 1M)")
    p.add_argument(
        "--lr-schedule",
        nargs="+",
        default=["constant"],
        choices=tuple(LR_VARIANTS),
        help="constant, linear (decay to 0 over the budget, variant lrdecay) and/or decay_on_success (constant until "
        "0.9 success over the last 100 episodes, then decayed to 0 at the budget; variant lrdecay-success)",
    )
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--out", type=Path, default=None)
    p.add_argument("--force", action="store_true")
    p.add_argument("--report-only", action="store_true")
    args = p.parse_args(argv)
    quick = args.quick
    sizes = args.sizes or ([7] if quick else [7, 11])
    agents = args.agents or ["hqlt", "rppo"]
    seeds = args.seeds if args.seeds is not None else ([0] if quick else [0, 1, 2])
    out = args.out or (RESULTS_DIR / "quick" if quick else RESULTS_DIR)
    img = (args.out or (RESULTS_DIR / "quick" if quick else IMG_DIR)) / "minigrid_curves.png"
    results = out / "minigrid_curves.json"
    specs = [spec for schedule in args.lr_schedule for spec in specs_for(sizes, agents, seeds, quick, args.budget, schedule)]
    if args.report_only:
        all_records = load_results(results)
        records = {s.key: all_records[s.key] for s in specs if s.key in all_records}
    else:
        records = run_all(specs, results, workers=args.workers, force=args.force)
    text = tables(records, sizes)
    (out / "minigrid_curves.md").write_text(text + "\n")
    print(text)
    plot(records, sizes, img)
    print(f"wrote {img}")


if __name__ == "__main__":
    main()
