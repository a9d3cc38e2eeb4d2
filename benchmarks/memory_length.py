"""RL memory-length sweep: how far back can each agent remember? (issue 6)

Passive T-Maze (Ni et al. 2023): the cue is shown only at step 0, the junction comes ``L`` steps later. With a KV
window S = 16 and 2 layers, a KV-only agent can move information at most 2 * (16 - 1) = 30 steps back (its *reach*),
so for L = 16 the cue is within reach and for L = 64, 256, 1024 it is not: KV-only must fall to chance (0.5) there,
while the fast weights of HQLT (and DeltaNet, LSTM) have no such horizon.

Passive Visual Match (the paper's RL task): a colour seen in the first 15 steps must be matched after a distractor
phase longer than the window (chance 1/3).

T-Maze settings applied to every agent alike: time limit 2L (with Ni et al.'s L + 1, PPO's exploration, not memory,
decides the outcome) and training sequences of at least L + 1 steps (``tmaze_seq_len``), so that the cue and the
junction of an episode can share one backward pass. See docs/results.md for the measured results.

Agents (equal step budgets, same PPO hyper-parameters): HQLT synchronous, KV-only, DeltaNet, LSTM (all our
MemoryPPO) and sb3-contrib's RecurrentPPO (LSTM). Reported: training success over the last 100 episodes at the
budget, greedy success on 100 fresh episodes, and steps-to-success (env steps at which the success rate over the
last 100 training episodes first reaches 0.9).

    python benchmarks/memory_length.py --quick             # a few minutes: L = 16, 1 seed, small budgets
    python benchmarks/memory_length.py                     # full sweep (hours on 2 cores; resumable)
    python benchmarks/memory_length.py --tasks tmaze --lengths 16 64 --seeds 0 1 2 --agents hqlt kv lstm
    python benchmarks/memory_length.py --tasks tmaze --lengths 16 64 256 --agents hqlt --target-kl 0.02 \
        --out benchmarks/results/stability        # a stability variant, kept in its own folder
    python benchmarks/memory_length.py --compare "bias 0=benchmarks/results" \
        "bias 2=benchmarks/results/tmaze_mixbias2" --tasks tmaze --lengths 64 256 --agents hqlt \
        --out benchmarks/results/cmp                # two settings side by side, from their folders; runs nothing

Results: ``benchmarks/results/memory_length.json`` (+ ``.md`` tables), figures under ``docs/img/``; ``--quick``
writes to ``benchmarks/results/quick/`` unless ``--out`` is given.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _rl import (  # noqa: E402
    AGENT_COLOURS,
    AGENT_LABELS,
    ENT_VARIANTS,
    IMG_DIR,
    LR_VARIANTS,
    RESULTS_DIR,
    RunSpec,
    fmt_pm,
    fmt_steps,
    group,
    kv_reach,
    load_results,
    permutation_p,
    plot_curves,
    run_all,
    sign_test_p,
    wall_time_line,
)

WINDOW = 16
N_LAYERS = 2
D_MODEL = 32
FULL_LENGTHS = (16, 64, 256, 1024)
FULL_AGENTS = ("hqlt", "kv", "deltanet", "lstm", "rppo")
# Visual Match rewards scaled by 1/100 (final 1, apples 0.01): the same task (every return scaled alike), but value
# targets of order 1, so the critic's loss does not swamp the policy's share of the clipped gradient of the shared trunk.
VM_ENV_KWARGS = {"final_reward": 1.0, "apple_reward": 0.01}
# --separate-critic: the critic gets its own features extractor and memory (nothing of the actor's trunk is shared).
SEPARATE_CRITIC = {"critic_memory": True, "share_features_extractor": False}


def tmaze_budget(length: int, quick: bool) -> int:
    """Env steps per run: the number of episodes needed grows slowly with L, each episode is at least L + 1 steps."""
    if quick:
        return 16_384
    return {16: 40_960, 64: 102_400, 256: 262_144}.get(length, 1_000 * (length + 1))


def tmaze_seq_len(length: int) -> int:
    """Training sequence length: a power of two >= L + 1 (at least 64), so that an episode that lies inside one
    stored sequence has its cue and its junction in the same backward pass, for every agent alike."""
    return max(64, 1 << length.bit_length())


def tmaze_gamma(length: int) -> float:
    """Discount with gamma^L ~ 0.78, so the turn's reward reaches the start of the corridor (at least 0.99)."""
    return max(0.99, 1.0 - 1.0 / (4 * length))


def memory_kwargs(agent: str, mixer_bias: float = 0.0, kv_window: int | None = None, hqlt_window: int | None = None) -> dict:
    """MemoryConfig fields of one agent. ``kv_window`` replaces the KV-only agent's window S (e.g. one that holds a
    whole episode: a full-context Transformer as the reference), ``hqlt_window`` HQLT's (its KV-memory's reach); the
    other agents keep S = WINDOW."""
    # LSTM baselines use one recurrent layer (the usual choice); attention / fast-weight stacks use N_LAYERS blocks.
    layers = 1 if agent in ("lstm", "gru", "rppo") else N_LAYERS
    extra = {"mixer_bias": mixer_bias} if mixer_bias and agent == "hqlt" else {}
    window = _agent_window(agent, kv_window, hqlt_window) or WINDOW
    return dict(d_model=D_MODEL, n_layers=layers, n_heads=2, window=window, **extra)


def _agent_window(agent: str, kv_window: int | None, hqlt_window: int | None) -> int | None:
    """The window S given for this agent on the command line (None: the default WINDOW)."""
    return {"kv": kv_window, "hqlt": hqlt_window}.get(agent)


def _window_variant(agent: str, kv_window: int | None, hqlt_window: int | None) -> list[str]:
    """``["window<S>"]`` where the agent runs with a window given on the command line (its runs' own key), else []."""
    window = _agent_window(agent, kv_window, hqlt_window)
    return [f"window{window}"] if window is not None else []


def _bias_variant(agent: str, mixer_bias: float) -> list[str]:
    """``["mixbias<b>"]`` where HQLT's mixer starts leaning by a nonzero bias (its runs' own key), else []."""
    return [f"mixbias{mixer_bias:g}"] if mixer_bias and agent == "hqlt" else []


def check_window(window: int | None, flag: str = "--kv-window") -> None:
    """A window S given on the command line (``--kv-window``, ``--hqlt-window``) must be a positive number of steps."""
    if window is not None and window <= 0:
        raise SystemExit(f"{flag} must be a positive number of steps, got {window}; leave it out for S = {WINDOW}")


def tmaze_specs(
    lengths: list[int],
    agents: list[str],
    seeds: list[int],
    quick: bool,
    learning_rate: float | None = None,
    target_kl: float | None = None,
    budget_scale: float = 1.0,
    dual_clip: float | None = None,
    mixer_bias: float = 0.0,
    kv_window: int | None = None,
    hqlt_window: int | None = None,
    lr_schedule: str = "constant",
    ent_schedule: str = "constant",
    time_slack: int | None = None,
) -> list[RunSpec]:
    """T-Maze runs. ``learning_rate`` / ``target_kl`` / ``budget_scale`` / ``dual_clip`` other than the defaults (1e-3,
    none, 1, none) make a stability variant: its runs are labelled ``dualclip<c>``, ``tkl<target_kl>-lr<lr>`` or
    ``lr<lr>`` and kept apart from the main table (the main sweep ignores them). A nonzero ``mixer_bias`` starts
    HQLT's blend leaning on the fast weights (``MemoryConfig.mixer_bias``); its HQLT runs get ``mixbias<b>`` too.
    ``kv_window`` / ``hqlt_window`` set the KV-only / HQLT agent's window (its runs get ``window<S>``). An
    ``lr_schedule`` other than ``constant`` (``linear``: decayed to 0 over the budget; ``decay_on_success``: constant
    until 0.9 success over the last 100 episodes, then decayed to 0 at the budget) labels the runs ``lrdecay`` /
    ``lrdecay-success``; an ``ent_schedule`` other than ``constant`` does the same for the entropy coefficient
    (``entdecay`` / ``entdecay-success``; our agents only, as RecurrentPPO takes a float coefficient). The time limit is
    T = 2L (L - 1 steps of slack beyond the L + 1 that succeed) unless ``time_slack`` gives the slack K: T = L + 1 + K
    (K = 0 is Ni et al.'s limit, where a policy that waits at the junction fails), labelled ``slack<K>``."""
    if time_slack is not None and (isinstance(time_slack, bool) or not isinstance(time_slack, int) or time_slack < 0):
        raise ValueError(f"time_slack must be None (T = 2L) or an integer >= 0 (T = L + 1 + K), got {time_slack!r}")
    variant = ""
    if dual_clip is not None:
        variant = f"dualclip{dual_clip}" + (f"-lr{learning_rate}" if learning_rate is not None else "")
    elif target_kl is not None:
        variant = f"tkl{target_kl}-lr{learning_rate or 1e-3}"
    elif learning_rate is not None:
        variant = f"lr{learning_rate}"
    specs = []
    for length in lengths:
        seq_len = tmaze_seq_len(length)
        ppo = dict(
            n_steps=max(128, seq_len),
            seq_len=seq_len,
            batch_size=max(256, seq_len * 2),
            n_epochs=4,
            learning_rate=learning_rate or 1e-3,
            ent_coef=0.01,
            gamma=tmaze_gamma(length),
            gae_lambda=0.95,
        )
        if target_kl is not None:
            ppo["target_kl"] = target_kl
        if dual_clip is not None:
            ppo["dual_clip"] = dual_clip
        if lr_schedule != "constant":
            ppo["lr_schedule"] = lr_schedule
        slack = f"slack{time_slack}" if time_slack is not None else ""
        labels = [variant, LR_VARIANTS[lr_schedule], ENT_VARIANTS[ent_schedule], slack]  # "" for the defaults, dropped
        time_limit = 2 * length if time_slack is None else length + 1 + time_slack
        for agent in agents:
            agent_variant = "-".join(
                filter(None, labels + _bias_variant(agent, mixer_bias) + _window_variant(agent, kv_window, hqlt_window))
            )
            for seed in seeds:
                specs.append(
                    RunSpec(
                        task=f"tmaze-L{length}",
                        env_id="hqlt/PassiveTMaze-v0",
                        env_kwargs={"memory_length": length, "time_limit": time_limit},
                        agent=agent,
                        seed=seed,
                        total_timesteps=int(tmaze_budget(length, quick) * budget_scale),
                        n_envs=8,
                        ppo=ppo | ({"ent_schedule": ent_schedule} if ent_schedule != "constant" else {}),
                        memory_kwargs=memory_kwargs(agent, mixer_bias, kv_window, hqlt_window),
                        net_arch=[32],
                        variant=agent_variant,
                        eval_episodes=20 if quick else 100,
                    )
                )
    return specs


def vm_seq_len(distractor: int) -> int:
    """Training sequence (and n_steps) for Visual Match: a power of two >= twice the longest episode (15 cue + distractor
    + 20 recall steps), so that most episodes lie inside one stored sequence and the choice's gradient reaches the
    cue through the memory (a sequence boundary detaches the state). With 64-step sequences and a 60-step distractor
    no episode fitted, and no agent could learn the task whatever its memory. RecurrentPPO gets the same n_steps
    (its sequences are cut at rollout ends and episode starts)."""
    return max(64, 1 << (2 * (15 + distractor + 20) - 1).bit_length())


def visual_match_specs(
    distractor: int,
    agents: list[str],
    seeds: list[int],
    quick: bool,
    budget: int | None = None,
    n_apples: int | None = None,
    apple_reward: float | None = None,
    mixer_bias: float = 0.0,
    separate_critic: bool = False,
    kv_window: int | None = None,
    hqlt_window: int | None = None,
) -> list[RunSpec]:
    """Visual Match runs; ``n_apples`` / ``apple_reward`` change the distractor room (an ablation: the variant label
    names the change, e.g. ``apples0``). A nonzero ``mixer_bias`` starts HQLT's blend leaning on the fast weights, as
    in the T-Maze runs (its HQLT runs get ``mixbias<b>`` too). ``separate_critic`` gives our agents' critic its own
    features extractor and memory (``critic_memory=True, share_features_extractor=False``; variant ``critic``), so
    that the value loss no longer trains the actor's trunk; RecurrentPPO has its own critic LSTM by default.
    ``kv_window`` sets the KV-only agent's window (variant ``window<S>``): with S at least the longest episode (15 + the
    distractor + 20 steps) every layer attends to the whole episode, a full-context Transformer, the reference the
    paper's hybrid is measured against. ``hqlt_window`` sets HQLT's (variant ``window<S>`` too): with the whole episode
    in its KV-memory's reach, it tells whether the blend itself costs anything against that Transformer."""
    seq_len = vm_seq_len(distractor)
    env_kwargs = VM_ENV_KWARGS | {"distractor_length": distractor}
    variant = []
    if n_apples is not None:
        env_kwargs["n_apples"] = n_apples
        variant.append(f"apples{n_apples}")
    if apple_reward is not None:
        env_kwargs["apple_reward"] = apple_reward
        variant.append(f"applereward{apple_reward:g}")
    ppo = dict(
        n_steps=seq_len,
        seq_len=seq_len,
        batch_size=2 * seq_len,
        n_epochs=4,
        learning_rate=5e-4,
        ent_coef=0.01,
        gamma=0.995,
        gae_lambda=0.95,
    )
    return [
        RunSpec(
            task=f"visualmatch-D{distractor}",
            env_id="hqlt/PassiveVisualMatch-v0",
            env_kwargs=env_kwargs,
            agent=agent,
            seed=seed,
            total_timesteps=budget or (8_192 if quick else 1_000_000),
            n_envs=8,
            ppo=ppo,
            memory_kwargs=memory_kwargs(agent, mixer_bias, kv_window, hqlt_window),
            net_arch=[64],
            policy=dict(SEPARATE_CRITIC) if separate_critic and agent != "rppo" else {},
            variant="-".join(
                variant
                + _bias_variant(agent, mixer_bias)
                + (["critic"] if separate_critic and agent != "rppo" else [])
                + _window_variant(agent, kv_window, hqlt_window)
            ),
            eval_episodes=10 if quick else 100,
        )
        for agent in agents
        for seed in seeds
    ]


def _vm_title(records: dict, distractor: int) -> str:
    """``Passive Visual Match, distractor D steps`` plus the distractor-room changes of an ablation (from the env kwargs)."""
    title = f"Passive Visual Match, distractor {distractor} steps"
    kwargs = [r["spec"]["env_kwargs"] for r in records.values() if r["spec"]["task"] == f"visualmatch-D{distractor}"]
    changes = sorted(
        {
            f"{k}={v:g}"
            for kw in kwargs
            for k, v in kw.items()
            if k == "n_apples" or (k == "apple_reward" and v != VM_ENV_KWARGS["apple_reward"])
        }
    )
    return title + (f" ({', '.join(changes)})" if changes else "")


def _by_agent(records: dict) -> dict:
    """Records grouped by (task, agent) over seeds. One call of this script covers one setting (the main sweep, or
    one stability variant written to its own --out folder), so a variant label does not split the groups."""
    out: dict = {}
    for (task, name), recs in group(records).items():
        out.setdefault((task, name.split("-")[0]), []).extend(recs)
    return out


def _windows(records: list[dict]) -> set[int]:
    """The windows S the records' runs were made with (``--kv-window`` / ``--hqlt-window`` change them)."""
    return {r["spec"].get("memory_kwargs", {}).get("window", WINDOW) for r in records}


def _kv_window(groups: dict) -> int:
    """The KV-only agent's window S as run (``--kv-window`` changes it; one window per call of this script), or
    WINDOW where there are no KV-only runs or they differ."""
    windows = sorted(_windows([r for (_, a), rs in groups.items() if a == "kv" for r in rs]))
    return windows[0] if len(windows) == 1 else WINDOW


def agent_label(agent: str, records: list[dict]) -> str:
    """Display label of an agent's runs; a KV-only or HQLT agent run with another window than S = WINDOW says which,
    and an HQLT agent whose mixer started leaning one way says its bias (``KV-only [S = 128]``,
    ``HQLT (sync) [S = 128, mixer_bias -2]``: in the figures the agent's colour with a dash pattern)."""
    windows = _windows(records) if agent in ("kv", "hqlt") else set()
    other = sorted(w for w in windows if w != WINDOW)
    notes = [f"S = {', '.join(map(str, other))}"] if other else []
    biases = {r["spec"].get("memory_kwargs", {}).get("mixer_bias", 0.0) for r in records} if agent == "hqlt" else set()
    if biases - {0.0}:
        notes.append("mixer_bias " + ", ".join(f"{b:g}" for b in sorted(biases)))
    return AGENT_LABELS[agent] + (f" [{', '.join(notes)}]" if notes else "")


def _value(record: dict, key: str) -> float | None:
    if key == "eval":
        return record.get("eval", {}).get("success")
    if key == "peak":
        return max((v for v in record["curve_success"] if v is not None), default=None)
    return record.get(key)


def _fmt_opt(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f}"


def _vm_comparison(first: list[dict], second: list[dict], names: tuple[str, str] = ("HQLT (sync)", "DeltaNet")) -> list[str]:
    """An exact one-sided permutation test across seeds of ``first``'s success above ``second``'s (runs with no greedy
    evaluation are left out of that test). The paper's claim on Visual Match is the hybrid above FW-memory alone
    (the default pair); against a full-context KV-only agent the question is the gap the hybrid should close."""
    if len(first) < 2 or len(second) < 2:
        return []
    out = [
        "",
        f"{names[0]} above {names[1]}? Exact one-sided permutation test over seeds (p = share of seed relabellings "
        "with at least the observed difference of means):",
        "",
    ]
    for what, get in (
        ("train success", lambda r: r["final_train_success"]),
        ("greedy success", lambda r: r.get("eval", {}).get("success")),
    ):
        a = [v for v in map(get, first) if v is not None]
        b = [v for v in map(get, second) if v is not None]
        if len(a) >= 2 and len(b) >= 2:
            out.append(
                f"- {what}: mean {np.mean(a):.2f} against {np.mean(b):.2f} ({len(a)} and {len(b)} seeds), "
                f"p = {permutation_p(a, b):.3f}"
            )
    reached = [sum(r["steps_to_success"] is not None for r in recs) for recs in (first, second)]
    out.append(f"- reached 0.9: {reached[0]} of {len(first)} against {reached[1]} of {len(second)}")
    return out


def _ranks(values: list[float]) -> list[float]:
    """1-based ranks of ``values``, ties given the mean of the ranks they span (so ranks lie on a 0.5 grid)."""
    return [sum(u < v for u in values) + (sum(u == v for u in values) + 1) / 2 for v in values]


def _steps_within(r: dict, budget: int) -> float:
    """Env steps a run took to reach 0.9, read at ``budget`` (inf: not within it, also for a longer run that got
    there only after it)."""
    s = r["steps_to_success"]
    return float(s) if s is not None and s <= budget else float("inf")


def _success_at(r: dict, budget: int) -> float | None:
    """A run's trailing training success at ``budget``: the last curve point within it (None: none yet)."""
    within = [v for step, v in zip(r["curve_steps"], r["curve_success"]) if step <= budget and v is not None]
    return within[-1] if within else None


def _made_at(records: list[dict], budget: int) -> list[dict]:
    """The runs made with ``budget`` and evaluated greedily (a longer run's evaluation is not of that point)."""
    return [r for r in records if r["spec"]["total_timesteps"] == budget and "eval" in r]


def _greedy_at(records: list[dict], budget: int) -> list[float]:
    """Greedy success of the runs made with ``budget``."""
    return [r["eval"]["success"] for r in _made_at(records, budget)]


def _greedy_pairs(first: list[dict], second: list[dict], budget: int) -> str:
    """Greedy success seed by seed (the seeds both settings ran at ``budget``): how often ``first`` is higher or lower,
    with an exact two-sided sign test (ties dropped); "" with fewer than two such seeds."""
    by_seed = {r["spec"]["seed"]: r["eval"]["success"] for r in _made_at(second, budget)}
    pairs = [(r["eval"]["success"], by_seed[r["spec"]["seed"]]) for r in _made_at(first, budget)
             if r["spec"]["seed"] in by_seed]
    if len(pairs) < 2:
        return ""
    higher, lower = sum(x > y for x, y in pairs), sum(x < y for x, y in pairs)
    return (f"; greedy success, seed by seed: higher in {higher} of {len(pairs)}, lower in {lower} (sign test "
            f"p = {sign_test_p(higher, lower):.3f})")


def _show_steps(values: list[float]) -> str:
    return " / ".join("-" if v == float("inf") else f"{v / 1000:.0f}k" for v in values)


def _tmaze_speed_comparison(first: list[dict], second: list[dict], names: tuple[str, str], task: str) -> list[str]:
    """Does ``first`` take more env steps than ``second`` to reach 0.9 on one T-Maze length? Both are read at the
    smaller budget either had (a run made with ``--budget-scale 2`` counts as not there if it got there only after
    that budget), and a run that did not get there within it ranks after every run that did (ties among them). An
    exact one-sided permutation test on the ranks over seeds (the Mann-Whitney test, exact)."""
    if len(first) < 2 or len(second) < 2:
        return []
    budget = min(r["spec"]["total_timesteps"] for r in first + second)
    a, b = [_steps_within(r, budget) for r in first], [_steps_within(r, budget) for r in second]
    ranks = _ranks(a + b)
    p = permutation_p(ranks[: len(a)], ranks[len(a) :])
    out = [
        f"- {task}: {names[0]} slower than {names[1]}? Env steps to 0.9 within {budget:,} (the smaller budget; '-': not "
        f"within it), by seed: {_show_steps(a)} against {_show_steps(b)}; reached {sum(v < float('inf') for v in a)} "
        f"of {len(a)} against {sum(v < float('inf') for v in b)} of {len(b)}. Exact one-sided permutation test on the "
        f"ranks (those not there rank last): p = {p:.3f}"
    ]
    sa, sb = [_success_at(r, budget) for r in first], [_success_at(r, budget) for r in second]
    if None not in sa + sb:
        out.append(
            f"- {task}: {names[1]} above {names[0]} in training success at {budget:,} (the last curve point within it)? "
            f"{' / '.join(f'{v:.2f}' for v in sb)} against {' / '.join(f'{v:.2f}' for v in sa)} (means "
            f"{np.mean(sb):.2f} and {np.mean(sa):.2f}); exact one-sided permutation test p = {permutation_p(sb, sa):.3f}"
        )
    return out


def tables(records: dict, lengths: list[int], distractor: int) -> str:
    groups = _by_agent(records)
    agents = [a for a in AGENT_LABELS if any(name == a for _, name in groups)]
    window = _kv_window(groups)
    reach = kv_reach(N_LAYERS, window)
    lines = [
        f"KV window S = {window}, {N_LAYERS} layers: KV-only reach = {N_LAYERS} x ({window} - 1) = {reach} steps. "
        "Cells: mean ± std over seeds.",
        "",
    ]
    tm = [f"tmaze-L{n}" for n in lengths if any(t == f"tmaze-L{n}" for t, _ in groups)]
    for title, key, fmt in (
        ("Passive T-Maze: training success (last 100 episodes) at the budget", "final_train_success", fmt_pm),
        ("Passive T-Maze: peak training success (highest 100-episode trailing rate during training)", "peak", fmt_pm),
        ("Passive T-Maze: greedy success (fresh episodes) at the budget", "eval", fmt_pm),
        (
            "Passive T-Maze: share of the last 100 training episodes that reached the junction and turned "
            "(not cut by the time limit)",
            "final_train_ended_by_task",
            fmt_pm,
        ),
        (
            "Passive T-Maze: steps-to-success (median over seeds that reached 0.9; reached / seeds)",
            "steps_to_success",
            fmt_steps,
        ),
    ):
        if not tm:
            break
        lines += [f"**{title}**" + (" (chance 0.5)" if key in ("final_train_success", "peak", "eval") else ""), ""]
        heads = [f"L = {n}" + (" (beyond reach)" if n > reach else "") for n in (int(t.split("L")[-1]) for t in tm)]
        lines.append("| agent | " + " | ".join(heads) + " |")
        lines.append("|---" * (len(tm) + 1) + "|")
        for agent in agents:
            cells = []
            for t in tm:
                recs = groups.get((t, agent), [])
                if not recs:
                    cells.append("not run")
                    continue
                vals = [_value(r, key) for r in recs]
                cells.append(fmt(vals))
            label = agent_label(agent, [r for t in tm for r in groups.get((t, agent), [])])
            lines.append(f"| {label} | " + " | ".join(cells) + " |")
        lines.append("")
    speed = []
    for t in tm:
        hqlt, deltanet = (sorted(groups.get((t, a), []), key=lambda r: r["spec"]["seed"]) for a in ("hqlt", "deltanet"))
        names = (agent_label("hqlt", hqlt), agent_label("deltanet", deltanet))
        speed += _tmaze_speed_comparison(hqlt, deltanet, names, t)
    if speed:
        lines += ["**Passive T-Maze: does the hybrid learn more slowly than DeltaNet?**", ""] + speed + [""]
    budgets = sorted({(r["spec"]["task"], r["spec"]["total_timesteps"]) for r in records.values()}, key=lambda tb: tb[1])
    lines.append("Budgets (env steps per run): " + ", ".join(f"{t}: {b:,}" for t, b in budgets))
    vm = f"visualmatch-D{distractor}"
    if any(t == vm for t, _ in groups):
        lines += ["", f"**{_vm_title(records, distractor)}** (chance 1/3)", ""]
        lines += ["| agent | train success | greedy success | steps-to-success | seeds |", "|---|---|---|---|---|"]
        for agent in agents:
            recs = groups.get((vm, agent), [])
            if recs:
                lines.append(
                    f"| {agent_label(agent, recs)} | {fmt_pm([r['final_train_success'] for r in recs])} | "
                    f"{fmt_pm([r.get('eval', {}).get('success') for r in recs])} | "
                    f"{fmt_steps([r['steps_to_success'] for r in recs])} | {len(recs)} |"
                )
        lines += ["", "Per seed (seed: train / greedy success at the budget):", ""]
        for agent in agents:
            recs = sorted(groups.get((vm, agent), []), key=lambda r: r["spec"]["seed"])
            if recs:
                cells = [
                    f"{r['spec']['seed']}: {r['final_train_success']:.2f} / {_fmt_opt(r.get('eval', {}).get('success'))}"
                    for r in recs
                ]
                lines.append(f"- {agent_label(agent, recs)}: " + ", ".join(cells))
        hqlt, deltanet = groups.get((vm, "hqlt"), []), groups.get((vm, "deltanet"), [])
        lines += _vm_comparison(hqlt, deltanet, (agent_label("hqlt", hqlt), agent_label("deltanet", deltanet)))
        kv = groups.get((vm, "kv"), [])
        if agent_label("kv", kv) != AGENT_LABELS["kv"]:  # a KV-only agent with its own window: the reference
            for other in ("hqlt", "deltanet"):
                recs = groups.get((vm, other), [])
                lines += _vm_comparison(kv, recs, (agent_label("kv", kv), agent_label(other, recs)))
    lines += ["", wall_time_line(records, " (1 torch thread each)")]
    return "\n".join(lines)


def plots(records: dict, lengths: list[int], distractor: int, img_dir: Path) -> list[Path]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    groups = _by_agent(records)
    out = []
    tm = [n for n in lengths if any(t == f"tmaze-L{n}" for t, _ in groups)]
    if tm:
        reach_steps = kv_reach(N_LAYERS, _kv_window(groups))
        fig, axes = plt.subplots(1, len(tm), figsize=(4.2 * len(tm), 3.6), squeeze=False)
        for ax, n in zip(axes[0], tm):
            sub = {agent_label(a, recs): recs for (t, a), recs in sorted(groups.items()) if t == f"tmaze-L{n}"}
            reach = "inside" if n <= reach_steps else "beyond"
            plot_curves(sub, f"Passive T-Maze L = {n} ({reach} KV reach)", Path(), ax=ax, chance=0.5)
        axes[0][-1].legend(fontsize=7, loc="lower right")
        fig.tight_layout()
        path = img_dir / "memory_length_tmaze_curves.png"
        path.parent.mkdir(parents=True, exist_ok=True)
        fig.savefig(path, dpi=110)
        plt.close(fig)
        out.append(path)
        # Success vs memory length: peak and final training success (the stochastic policy that PPO trains).
        import numpy as np

        fig, axes = plt.subplots(1, 2, figsize=(10, 3.8))
        panels = (("peak", "peak training success"), ("final_train_success", "training success at budget"))
        for ax, (key, what) in zip(axes, panels):
            for agent in AGENT_LABELS:
                xs, ms, ss, all_recs = [], [], [], []
                for n in tm:
                    recs = groups.get((f"tmaze-L{n}", agent))
                    if recs:
                        vals = [_value(r, key) for r in recs]
                        xs.append(n)
                        ms.append(np.mean(vals))
                        ss.append(np.std(vals))
                        all_recs += recs
                if xs:
                    colour = AGENT_COLOURS[AGENT_LABELS[agent]]
                    label = agent_label(agent, all_recs)
                    ax.errorbar(xs, ms, yerr=ss, marker="o", capsize=3, color=colour, label=label)
            ax.axhline(0.5, color="grey", ls=":", lw=1, label="chance")
            ax.axvline(reach_steps, color="red", ls="--", lw=1, label="KV-only reach")
            ax.set_xscale("log", base=2)
            ax.set_xlabel("memory length L (steps from cue to junction)")
            ax.set_ylabel(f"{what} (last 100 episodes)")
            ax.set_ylim(-0.02, 1.02)
            ax.grid(alpha=0.3)
        axes[1].legend(fontsize=7)
        fig.suptitle("Passive T-Maze, mean ± std over seeds", fontsize=10)
        fig.tight_layout()
        path = img_dir / "memory_length_tmaze_success.png"
        fig.savefig(path, dpi=110)
        plt.close(fig)
        out.append(path)
    vm = f"visualmatch-D{distractor}"
    sub = {agent_label(a, recs): recs for (t, a), recs in sorted(groups.items()) if t == vm}
    if sub:
        path = img_dir / "memory_length_visualmatch_curves.png"
        plot_curves(sub, _vm_title(records, distractor), path, chance=1 / 3)
        out.append(path)
    return out


def _late_mean(record: dict, share: float = 0.25) -> float | None:
    """Mean of the trailing success curve over the last ``share`` of training: steadier than its last point."""
    values = [v for v in record["curve_success"][-max(1, round(len(record["curve_success"]) * share)) :] if v is not None]
    return float(np.mean(values)) if values else None


def load_records_from(folders: list[Path] | None) -> dict:
    """The runs already in these folders' results files (``--records-from``), read-only: a report can set the runs of
    one folder (e.g. a variant) beside reference runs made into another, without running those again. Where two
    folders hold a run of the same key (the same task, agent, variant and seed), the later folder's is taken."""
    records: dict = {}
    for folder in folders or []:
        path = Path(folder) / "memory_length.json"
        if not path.is_file():
            raise SystemExit(f"--records-from: no results file {path}; give a folder this script wrote with --out")
        records.update(load_results(path))
    return records


def _condition(pair: str, tasks: set[str], fix: str, agents: list[str] | None, seeds: list[int] | None) -> tuple:
    """One ``LABEL=FOLDER[,FOLDER...]`` argument of ``--compare`` -> ``(label, {(task, agent): [records by seed]})``:
    the runs of these tasks (and agents and seeds, where given) that its folders' results files hold; where two
    folders hold the same run, the later folder's, as with ``--records-from``."""
    label, sep, folders = pair.rpartition("=")  # the last "=": a label may hold one ("S = 16=folder")
    if not sep or not label or not folders:
        raise SystemExit(f"--compare: expected LABEL=FOLDER (e.g. 'no apples=benchmarks/results/x'), got {pair!r}")
    records: dict = {}
    for folder in folders.split(","):
        path = Path(folder) / "memory_length.json"
        if not path.is_file():
            raise SystemExit(f"--compare {label!r}: no results file {path}; run the sweep with --out {folder} first")
        records.update(load_results(path))
    records = {
        k: r
        for k, r in records.items()
        if r["spec"]["task"] in tasks
        and (agents is None or r["spec"]["agent"] in agents)
        and (seeds is None or r["spec"]["seed"] in seeds)
    }
    if not records:
        selected = " (or do --agents / --seeds select none of them?)" if agents or seeds else ""
        raise SystemExit(f"--compare {label!r}: {folders} hold no {' / '.join(sorted(tasks))} runs; {fix}{selected}")
    return label, {key: sorted(recs, key=lambda r: r["spec"]["seed"]) for key, recs in sorted(_by_agent(records).items())}


def load_conditions(
    pairs: list[str], distractor: int, agents: list[str] | None = None, seeds: list[int] | None = None
) -> list[tuple[str, dict]]:
    """``LABEL=FOLDER[,FOLDER...]`` arguments -> ``[(label, {agent: [records over seeds]})]``: each setting's Visual
    Match runs at this distractor length (folders written by calls of this script with ``--out``)."""
    task = f"visualmatch-D{distractor}"
    out = []
    for pair in pairs:
        label, by_key = _condition(pair, {task}, f"is --distractor {distractor} right?", agents, seeds)
        out.append((label, {agent: recs for (_, agent), recs in by_key.items()}))
    return out


def load_tmaze_conditions(
    pairs: list[str], lengths: list[int], agents: list[str] | None = None, seeds: list[int] | None = None
) -> list[tuple[str, dict]]:
    """``LABEL=FOLDER[,FOLDER...]`` arguments -> ``[(label, {(task, agent): [records over seeds]})]``: each setting's
    T-Maze runs at these lengths. A setting may gather its seeds from several folders (e.g. seeds 0-2 of one call and
    3-7 of a later one, or runs made with ``--budget-scale 2``: the comparison reads every run at the smallest budget)."""
    tasks = {f"tmaze-L{n}" for n in lengths}
    return [_condition(pair, tasks, "are --lengths right?", agents, seeds) for pair in pairs]


def _tmaze_budgets(conditions: list[tuple[str, dict]]) -> dict[str, int]:
    """Per T-Maze task, the smallest budget any setting's run of it had: every run is read there."""
    budgets: dict[str, list[int]] = {}
    for _, by_key in conditions:
        for (task, _), recs in by_key.items():
            budgets.setdefault(task, []).extend(r["spec"]["total_timesteps"] for r in recs)
    return {task: min(values) for task, values in budgets.items()}


def _condition_agents(conditions: list[tuple[str, dict]]) -> list[str]:
    """The agents any setting holds runs of, in the reports' order."""
    return [a for a in AGENT_LABELS if any(a == agent for _, by_key in conditions for _, agent in by_key)]


def tmaze_compare_table(conditions: list[tuple[str, dict]], lengths: list[int]) -> str:
    """T-Maze settings side by side: per length, agent and setting the env steps to 0.9 and the training success,
    every run read at the smallest budget any run of that length had (with the runs that fell below 0.9 again after
    reaching it), and the greedy evaluation of the runs made with that budget (with the runs that fail it although
    training succeeded); then each later setting against the first, same agent: the steps by rank (those not there
    last), the success at the budget and the greedy success, each with an exact two-sided permutation test over
    seeds (a setting may help or hurt), and the greedy success seed by seed with a sign test."""
    budgets = _tmaze_budgets(conditions)
    agents = _condition_agents(conditions)
    lines = ["**Passive T-Maze: settings compared** (chance 0.5; every run read at the budget named)", ""]
    first_label, first = conditions[0]
    for n in lengths:
        task = f"tmaze-L{n}"
        if task not in budgets:
            continue
        budget = budgets[task]
        lines += [
            f"*L = {n}, read at {budget:,} env steps*",
            "",
            "| agent | setting | steps to 0.9 by seed ('-': not within the budget) | reached | median steps "
            "(of those reached) | training success at the budget | below 0.9 again at the budget | greedy success | "
            "greedy < 0.8 where training >= 0.9 | seeds |",
            "|---|---|---|---|---|---|---|---|---|---|",
        ]
        for agent in agents:
            for label, by_key in conditions:
                recs = by_key.get((task, agent), [])
                if not recs:
                    continue
                steps = [_steps_within(r, budget) for r in recs]
                reached = [v for v in steps if v < float("inf")]
                success = [v for v in (_success_at(r, budget) for r in recs) if v is not None]
                fell = sum(v < float("inf") and (_success_at(r, budget) or 0) < 0.9 for r, v in zip(recs, steps))
                greedy = _greedy_at(recs, budget)
                trained = [r for r in _made_at(recs, budget) if (_success_at(r, budget) or 0) >= 0.9]
                failed = sum(r["eval"]["success"] < 0.8 for r in trained)
                partial = "" if len(greedy) == len(recs) else f" ({len(greedy)} of {len(recs)} runs)"
                lines.append(
                    f"| {agent_label(agent, recs)} | {label} | {_show_steps(steps)} | {len(reached)} of {len(recs)} | "
                    f"{f'{np.median(reached) / 1000:.0f}k' if reached else '-'} | {fmt_pm(success)} | "
                    f"{fell} of {len(reached)} | {fmt_pm(greedy) if greedy else '-'}{partial} | {failed} of {len(trained)} | "
                    f"{', '.join(str(r['spec']['seed']) for r in recs)} |"
                )
        lines.append("")
        for label, by_key in conditions[1:]:
            for agent in agents:
                a, b = by_key.get((task, agent), []), first.get((task, agent), [])
                if len(a) < 2 or len(b) < 2:
                    continue
                ranks = _ranks([_steps_within(r, budget) for r in a + b])
                p_steps = permutation_p(ranks[: len(a)], ranks[len(a) :], alternative="two-sided")
                sa, sb = [_success_at(r, budget) for r in a], [_success_at(r, budget) for r in b]
                test = ""
                if None not in sa + sb:
                    p_success = permutation_p(sa, sb, alternative="two-sided")
                    test = f"; success at the budget {np.mean(sa):.2f} against {np.mean(sb):.2f}, p = {p_success:.3f}"
                ga, gb = _greedy_at(a, budget), _greedy_at(b, budget)
                if len(ga) >= 2 and len(gb) >= 2:
                    p_greedy = permutation_p(ga, gb, alternative="two-sided")
                    test += f"; greedy success {np.mean(ga):.2f} against {np.mean(gb):.2f}, p = {p_greedy:.3f}"
                pairs = _greedy_pairs(a, b, budget)
                lines.append(
                    f"- {AGENT_LABELS[agent]}, *{label}* against *{first_label}*: steps to 0.9, mean rank "
                    f"{np.mean(ranks[: len(a)]):.1f} against {np.mean(ranks[len(a) :]):.1f} (rank 1 the soonest), "
                    f"p = {p_steps:.3f}{test} (exact two-sided permutation tests over seeds){pairs}"
                )
        lines.append("")
    return "\n".join(lines).rstrip()


def _curves_to(records: list[dict], budget: int) -> list[dict]:
    """The records' curves up to ``budget`` on one grid (the coarsest one among them, e.g. that of a 2x-budget run),
    each point the run's last curve value at or before it, so that runs of different budgets share a plot."""
    grids = [[s for s in r["curve_steps"] if s <= budget] for r in records]
    grid = min(grids, key=len)
    out = []
    for r in records:
        values = []
        for g in grid:
            known = [v for s, v in zip(r["curve_steps"], r["curve_success"]) if s <= g]
            values.append(known[-1] if known else None)
        out.append({**r, "curve_steps": grid, "curve_success": values})
    return out


def plot_tmaze_conditions(conditions: list[tuple[str, dict]], lengths: list[int], path: Path) -> None:
    """One row per length and one panel per agent, one curve (mean, min-max band over seeds) per setting, to the
    budget every run is read at."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    budgets = _tmaze_budgets(conditions)
    tasks = [f"tmaze-L{n}" for n in lengths if f"tmaze-L{n}" in budgets]
    agents = _condition_agents(conditions)
    fig, axes = plt.subplots(
        len(tasks), len(agents), figsize=(4.2 * len(agents), 3.6 * len(tasks)), squeeze=False, sharey=True
    )
    for row, task in zip(axes, tasks):
        for ax, agent in zip(row, agents):
            groups = {
                label: _curves_to(by_key[(task, agent)], budgets[task])
                for label, by_key in conditions
                if (task, agent) in by_key
            }
            if groups:
                plot_curves(groups, f"{AGENT_LABELS[agent]}, L = {task.split('-L')[1]}", path, ax=ax, chance=0.5)
                ax.legend(fontsize=7)
    fig.suptitle("Passive T-Maze: settings compared", fontsize=10)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)


def compare_table(conditions: list[tuple[str, dict]], distractor: int) -> str:
    """Visual Match settings side by side (the same agents and seeds, one folder each): per agent and setting the
    success at the budget, and each later setting against the first, seed by seed (same agent, same seed)."""
    agents = [a for a in AGENT_LABELS if any(a in by_agent for _, by_agent in conditions)]
    lines = [
        f"**Passive Visual Match, distractor {distractor} steps: settings compared** (chance 1/3)",
        "",
        "| agent | setting | train success | greedy success | mean over the last quarter | reached 0.9 | seeds |",
        "|---|---|---|---|---|---|---|",
    ]
    for agent in agents:
        for label, by_agent in conditions:
            recs = by_agent.get(agent, [])
            if not recs:
                continue
            lines.append(
                f"| {agent_label(agent, recs)} | {label} | {fmt_pm([r['final_train_success'] for r in recs])} | "
                f"{fmt_pm([_value(r, 'eval') for r in recs])} | {fmt_pm([_late_mean(r) for r in recs])} | "
                f"{fmt_steps([r['steps_to_success'] for r in recs])} | {len(recs)} |"
            )
    first_label, first = conditions[0]
    for label, by_agent in conditions[1:]:
        lines += ["", f"*{label}* against *{first_label}*, same agent and seed (train success at the budget):", ""]
        wins = losses = 0
        for agent in agents:
            a = {r["spec"]["seed"]: r["final_train_success"] for r in by_agent.get(agent, [])}
            b = {r["spec"]["seed"]: r["final_train_success"] for r in first.get(agent, [])}
            seeds = sorted(set(a) & set(b))
            if not seeds:
                continue
            wins += sum(a[s] > b[s] for s in seeds)
            losses += sum(a[s] < b[s] for s in seeds)
            pairs = ", ".join(f"{s}: {a[s]:.2f} vs {b[s]:.2f}" for s in seeds)
            test = ""
            if len(seeds) >= 2:
                p = permutation_p([a[s] for s in seeds], [b[s] for s in seeds], alternative="two-sided")
                test = f"; two-sided permutation test over seeds p = {p:.3f}"
            lines.append(f"- {AGENT_LABELS[agent]}: {pairs}{test}")
        lines.append(
            f"- all agents: higher in {wins} pairs, lower in {losses} (two-sided sign test p = "
            f"{sign_test_p(wins, losses):.3f})"
        )
    return "\n".join(lines)


def plot_conditions(conditions: list[tuple[str, dict]], distractor: int, path: Path) -> None:
    """One panel per agent, one curve (mean, min-max band over seeds) per setting."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    agents = [a for a in AGENT_LABELS if any(a in by_agent for _, by_agent in conditions)]
    fig, axes = plt.subplots(1, len(agents), figsize=(4.2 * len(agents), 3.8), squeeze=False, sharey=True)
    for ax, agent in zip(axes[0], agents):
        groups = {label: by_agent[agent] for label, by_agent in conditions if agent in by_agent}
        plot_curves(groups, AGENT_LABELS[agent], path, ax=ax, chance=1 / 3)
        ax.legend(fontsize=7)
    fig.suptitle(f"Passive Visual Match, distractor {distractor} steps: settings compared", fontsize=10)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--quick", action="store_true", help="minutes: L = 16 T-Maze and a short Visual Match, 1 seed")
    p.add_argument("--tasks", nargs="+", default=None, choices=("tmaze", "visualmatch"))
    p.add_argument("--lengths", nargs="+", type=int, default=None, help=f"T-Maze memory lengths (full: {FULL_LENGTHS})")
    p.add_argument("--distractor", type=int, default=None, help="Visual Match distractor length (full: 250, quick: 20)")
    p.add_argument("--vm-budget", type=int, default=None, help="Visual Match env steps per run (full: 1M, quick: 8k)")
    p.add_argument("--n-apples", type=int, default=None, help="Visual Match apples in the distractor room (env: 10)")
    p.add_argument(
        "--apple-reward",
        type=float,
        default=None,
        help=f"Visual Match reward per apple (default {VM_ENV_KWARGS['apple_reward']})",
    )
    p.add_argument("--agents", nargs="+", default=None, choices=tuple(AGENT_LABELS), help=f"full: {FULL_AGENTS}")
    p.add_argument("--seeds", nargs="+", type=int, default=None, help="full: 0 1 2")
    p.add_argument("--lr", type=float, default=None, help="T-Maze learning rate (default 1e-3; a stability variant)")
    p.add_argument("--target-kl", type=float, default=None, help="T-Maze PPO target_kl (a stability variant)")
    p.add_argument("--dual-clip", type=float, default=None, help="T-Maze dual-clip PPO bound (a stability variant)")
    p.add_argument(
        "--mixer-bias",
        type=float,
        default=0.0,
        help="start HQLT's mixer leaning on the fast weights by this gate bias (a variant; T-Maze and Visual Match)",
    )
    p.add_argument(
        "--separate-critic",
        action="store_true",
        help="Visual Match: give our agents' critic its own features extractor and memory (a variant)",
    )
    p.add_argument(
        "--kv-window",
        type=int,
        default=None,
        help=f"the KV-only agent's window S (default {WINDOW}; one at least the episode long is a full-context "
        "Transformer; a variant, T-Maze and Visual Match)",
    )
    p.add_argument(
        "--hqlt-window",
        type=int,
        default=None,
        help=f"HQLT's window S (default {WINDOW}; one at least the episode long puts the whole episode in its "
        "KV-memory's reach; a variant, T-Maze and Visual Match)",
    )
    p.add_argument("--budget-scale", type=float, default=1.0, help="T-Maze budgets times this (stability variants)")
    p.add_argument(
        "--time-slack",
        type=int,
        default=None,
        metavar="K",
        help="T-Maze time limit L + 1 + K (a variant, runs labelled slack<K>; 0 is Ni et al.'s limit, where waiting at "
        "the junction fails the episode); default: T = 2L",
    )
    p.add_argument(
        "--lr-schedule",
        choices=tuple(LR_VARIANTS),
        default="constant",
        help="T-Maze learning-rate schedule (a variant): linear decays to 0 over the budget, decay_on_success keeps the "
        "rate until 0.9 success over the last 100 episodes, then decays it to 0 at the budget",
    )
    p.add_argument(
        "--ent-schedule",
        choices=tuple(ENT_VARIANTS),
        default="constant",
        help="T-Maze entropy-coefficient schedule (a variant; not for rppo), as --lr-schedule's: decay_on_success keeps "
        "the coefficient until 0.9 success over the last 100 episodes, then decays it to 0 at the budget",
    )
    p.add_argument("--workers", type=int, default=2, help="runs in parallel (one torch thread each)")
    p.add_argument("--out", type=Path, default=None, help="folder for the JSON / tables / figures")
    p.add_argument(
        "--records-from",
        nargs="+",
        type=Path,
        default=None,
        metavar="FOLDER",
        help="take the runs these folders' results files already hold (read-only, not rerun) into this call's report, "
        "e.g. the reference runs beside a variant run into --out; where two hold the same run, the later folder's",
    )
    p.add_argument("--force", action="store_true", help="rerun runs already in the results file")
    p.add_argument("--report-only", action="store_true", help="only rebuild tables and figures from the results file")
    p.add_argument(
        "--compare",
        nargs="+",
        metavar="LABEL=FOLDER[,FOLDER...]",
        default=None,
        help="compare settings run into separate --out folders (the first is the reference; a setting may gather "
        "its runs from several folders, the later folder's where two hold one run): Visual Match at --distractor "
        "(writes visualmatch_conditions.md / .png into --out), or with --tasks tmaze the T-Maze at --lengths, every "
        "run read at the smallest budget of its length (tmaze_conditions.md / .png); --agents / --seeds select; "
        "runs nothing",
    )
    args = p.parse_args(argv)

    if args.compare:
        if args.out is None:
            raise SystemExit("--compare needs --out (where to write the table and the figure)")
        if args.tasks == ["tmaze"]:
            if not args.lengths:
                raise SystemExit("--compare with --tasks tmaze needs --lengths (the T-Maze lengths to compare)")
            conditions = load_tmaze_conditions(args.compare, args.lengths, args.agents, args.seeds)
            text, stem = tmaze_compare_table(conditions, args.lengths), "tmaze_conditions"
            plot_tmaze_conditions(conditions, args.lengths, args.out / f"{stem}.png")
        else:
            if args.distractor is None:
                raise SystemExit(
                    "--compare needs --distractor (the Visual Match runs' distractor length), or --tasks tmaze and "
                    "--lengths for T-Maze runs"
                )
            conditions = load_conditions(args.compare, args.distractor, args.agents, args.seeds)
            text, stem = compare_table(conditions, args.distractor), "visualmatch_conditions"
            plot_conditions(conditions, args.distractor, args.out / f"{stem}.png")
        (args.out / f"{stem}.md").write_text(text + "\n")  # the plot made the folder
        print(text)
        print(f"wrote {args.out / (stem + '.png')}")
        return

    check_window(args.kv_window)
    check_window(args.hqlt_window, "--hqlt-window")
    quick = args.quick
    tasks = args.tasks or ["tmaze", "visualmatch"]
    for flag, value in (("--lr-schedule", args.lr_schedule), ("--ent-schedule", args.ent_schedule)):
        if value != "constant" and "tmaze" not in tasks:
            raise SystemExit(f"{flag} applies to T-Maze runs only; add --tasks tmaze or drop {flag}")
    lengths = args.lengths or ([16] if quick else list(FULL_LENGTHS))
    distractor = args.distractor or (20 if quick else 250)
    agents = args.agents or (["hqlt", "kv", "lstm", "rppo"] if quick else list(FULL_AGENTS))
    seeds = args.seeds if args.seeds is not None else ([0] if quick else [0, 1, 2])
    if args.time_slack is not None and (args.time_slack < 0 or "tmaze" not in tasks):
        raise SystemExit(
            f"--time-slack must be an integer >= 0 (the T-Maze time limit is L + 1 + K) for T-Maze runs (--tasks tmaze), "
            f"got {args.time_slack}; leave it out for T = 2L"
        )
    if args.ent_schedule != "constant" and "rppo" in agents:
        raise SystemExit("--ent-schedule is for our agents only (RecurrentPPO takes a float entropy coefficient); "
                         "drop rppo from --agents")
    out = args.out or (RESULTS_DIR / "quick" if quick else RESULTS_DIR)
    img_dir = args.out or (RESULTS_DIR / "quick" if quick else IMG_DIR)
    results = out / "memory_length.json"

    specs: list[RunSpec] = []
    if "tmaze" in tasks:
        specs += tmaze_specs(
            lengths,
            agents,
            seeds,
            quick,
            args.lr,
            args.target_kl,
            args.budget_scale,
            args.dual_clip,
            args.mixer_bias,
            args.kv_window,
            args.hqlt_window,
            args.lr_schedule,
            args.ent_schedule,
            args.time_slack,
        )
    if "visualmatch" in tasks:
        vm_agents = [a for a in agents if a != "kv"] if quick else agents
        specs += visual_match_specs(
            distractor,
            vm_agents,
            seeds,
            quick,
            args.vm_budget,
            args.n_apples,
            args.apple_reward,
            args.mixer_bias,
            args.separate_critic,
            args.kv_window,
            args.hqlt_window,
        )
    borrowed = load_records_from(args.records_from)
    borrowed = {s.key: borrowed[s.key] for s in specs if s.key in borrowed}
    specs = [s for s in specs if s.key not in borrowed]
    if args.report_only:
        all_records = load_results(results)
        records = {s.key: all_records[s.key] for s in specs if s.key in all_records}
    else:
        records = run_all(specs, results, workers=args.workers, force=args.force)
    records |= borrowed
    text = tables(records, lengths, distractor)
    out.mkdir(parents=True, exist_ok=True)
    (out / "memory_length.md").write_text(text + "\n")
    print(text)
    for path in plots(records, lengths, distractor, img_dir):
        print(f"wrote {path}")


if __name__ == "__main__":
    main()
