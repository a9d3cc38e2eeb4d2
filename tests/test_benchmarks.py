"""RL benchmark scripts: pure helpers (fast) and each script's ``--quick`` mode end to end (slow)."""

from __future__ import annotations

import dataclasses
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))

import _rl  # noqa: E402


def test_trailing_success_matches_loop() -> None:
    rng = np.random.default_rng(0)
    x = rng.integers(0, 2, size=57)
    got = _rl.trailing_success(x, 10)
    ref = [x[max(0, i - 9) : i + 1].mean() for i in range(len(x))]
    np.testing.assert_allclose(got, ref)


def test_steps_to_success_first_crossing() -> None:
    steps = list(range(10, 210, 10))  # 20 episodes ending at 10, 20, ..., 200
    succ = [0] * 8 + [1] * 12
    # Window 4: the episodes with indices 7..10 are [0, 1, 1, 1] -> 0.75, first reached at index 10 (step 110);
    # a full window of successes (indices 8..11) first at index 11 (step 120).
    assert _rl.steps_to_success(steps, succ, window=4, threshold=0.75) == 110
    assert _rl.steps_to_success(steps, succ, window=4, threshold=1.0) == 120
    assert _rl.steps_to_success(steps, [0] * 20, window=4, threshold=0.5) is None
    # A lucky start before the window is full does not count.
    assert _rl.steps_to_success([1, 2, 3], [1, 1, 0], window=4, threshold=0.5) is None


def test_permutation_p_against_enumeration_by_hand() -> None:
    # fully separated groups of 3: only the observed split (1 of C(6, 3) = 20) is as extreme
    assert _rl.permutation_p([1.0, 1.0, 1.0], [0.0, 0.0, 0.0]) == pytest.approx(1 / 20)
    # the other way round every split is at least as extreme
    assert _rl.permutation_p([0.0, 0.0, 0.0], [1.0, 1.0, 1.0]) == 1.0
    # ties count as extreme: identical values give p = 1
    assert _rl.permutation_p([0.5, 0.5], [0.5, 0.5]) == 1.0
    # a = [3, 1], b = [2, 0]: splits of {3, 1, 2, 0} into pairs by first-pair sum: 4, 5, 3, 3, 1, 2 -> sums >= 4: 2 of 6
    assert _rl.permutation_p([3.0, 1.0], [2.0, 0.0]) == pytest.approx(2 / 6)
    with pytest.raises(ValueError, match="both groups"):
        _rl.permutation_p([], [1.0])


def test_permutation_p_two_sided_and_unequal_groups() -> None:
    # separated groups: the observed split and its mirror image are the 2 of 20 as extreme, either way round
    assert _rl.permutation_p([1.0, 1.0, 1.0], [0.0, 0.0, 0.0], alternative="two-sided") == pytest.approx(2 / 20)
    assert _rl.permutation_p([0.0, 0.0, 0.0], [1.0, 1.0, 1.0], alternative="two-sided") == pytest.approx(2 / 20)
    # a = [3], b = [0, 1, 2]: the single value drawn for a gives differences 2, -2, -2/3, 2/3 (for 3, 0, 1, 2)
    assert _rl.permutation_p([3.0], [0.0, 1.0, 2.0]) == pytest.approx(1 / 4)
    assert _rl.permutation_p([3.0], [0.0, 1.0, 2.0], alternative="two-sided") == pytest.approx(2 / 4)
    with pytest.raises(ValueError, match="alternative"):
        _rl.permutation_p([1.0], [0.0], alternative="less")


def test_permutation_p_matches_a_plain_enumeration_of_relabellings() -> None:
    import itertools

    rng = np.random.default_rng(3)
    for n, m in [(2, 3), (4, 4), (3, 5)]:
        a, b = rng.normal(size=n).round(1), rng.normal(size=m).round(1)  # rounded: ties occur
        pooled = list(a) + list(b)
        observed = np.mean(a) - np.mean(b)
        diffs = []
        for chosen in itertools.combinations(range(n + m), n):
            rest = [pooled[i] for i in range(n + m) if i not in chosen]
            diffs.append(np.mean([pooled[i] for i in chosen]) - np.mean(rest))
        diffs = np.array(diffs)
        assert _rl.permutation_p(a, b) == pytest.approx(np.mean(diffs >= observed - 1e-12))
        assert _rl.permutation_p(a, b, alternative="two-sided") == pytest.approx(
            np.mean(np.abs(diffs) >= abs(observed) - 1e-12))


def test_permutation_p_with_many_seeds_counts_splits_by_their_sums() -> None:
    import math

    # 17 seeds against 17 (2.3 billion splits, too many to enumerate): separated groups leave only the observed split
    # (one-sided) and its mirror image (two-sided) as extreme
    high, low = [0.5 + 0.01 * i for i in range(17)], [0.01 * i for i in range(17)]
    assert _rl.permutation_p(high, low) == pytest.approx(1 / math.comb(34, 17), rel=1e-12)
    assert _rl.permutation_p(high, low, alternative="two-sided") == pytest.approx(2 / math.comb(34, 17), rel=1e-12)
    assert _rl.permutation_p(low, high) == 1.0
    # on a decimal grid the sums are counted; off it the splits are enumerated: the two agree on the same values
    rng = np.random.default_rng(5)
    for n, m in [(3, 4), (6, 6), (1, 7)]:
        a, b = rng.integers(0, 101, n) / 100, rng.integers(0, 101, m) / 100
        off_grid = 1e-7 * np.pi  # moves every value off the grid, keeps the order of all split sums
        for alternative in ("greater", "two-sided"):
            counted = _rl.permutation_p(a, b, alternative=alternative)
            enumerated = _rl.permutation_p(a + off_grid, b + off_grid, alternative=alternative)
            assert counted == pytest.approx(enumerated, abs=1e-12)
    with pytest.raises(ValueError, match="round the values"):
        _rl.permutation_p(rng.random(17), rng.random(17))


def test_sign_test_p_by_hand() -> None:
    assert _rl.sign_test_p(0, 0) == 1.0
    assert _rl.sign_test_p(5, 0) == pytest.approx(2 / 32)
    assert _rl.sign_test_p(0, 5) == pytest.approx(2 / 32)
    assert _rl.sign_test_p(9, 2) == pytest.approx(2 * (1 + 11 + 55) / 2048)
    assert _rl.sign_test_p(3, 3) == 1.0  # capped: both tails overlap


def test_visual_match_report_lists_seeds_and_compares_hqlt_with_deltanet() -> None:
    from memory_length import tables, visual_match_specs

    records = {}
    for spec in visual_match_specs(30, ["hqlt", "deltanet"], [0, 1, 2], quick=True, n_apples=0):
        high = spec.agent == "hqlt"
        records[spec.key] = {
            "key": spec.key, "spec": {"task": spec.task, "agent": spec.agent, "seed": spec.seed,
                                      "env_kwargs": spec.env_kwargs, "total_timesteps": spec.total_timesteps,
                                      "variant": spec.variant},
            "final_train_success": (0.9 if high else 0.3) + 0.01 * spec.seed,
            "steps_to_success": 1000 if high else None,
            "eval": {"success": 0.8 if high else 0.2},
            "train_seconds": 1.0,
        }
    text = tables(records, [], 30)
    assert "- HQLT (sync): 0: 0.90 / 0.80, 1: 0.91 / 0.80, 2: 0.92 / 0.80" in text
    assert "- DeltaNet: 0: 0.30 / 0.20, 1: 0.31 / 0.20, 2: 0.32 / 0.20" in text
    assert "- train success: mean 0.91 against 0.31 (3 and 3 seeds), p = 0.050" in text
    assert "- greedy success: mean 0.80 against 0.20 (3 and 3 seeds), p = 0.050" in text
    assert "- reached 0.9: 3 of 3 against 0 of 3" in text
    # one agent alone: no comparison
    alone = {k: r for k, r in records.items() if r["spec"]["agent"] == "hqlt"}
    assert "permutation" not in tables(alone, [], 30)


def test_visual_match_settings_compared_seed_by_seed(tmp_path: Path) -> None:
    from memory_length import main, visual_match_specs

    def write(folder: Path, n_apples: int | None, success: dict[str, list[float]]) -> None:
        records = {}
        for spec in visual_match_specs(10, list(success), [0, 1, 2], quick=True, n_apples=n_apples):
            value = success[spec.agent][spec.seed]
            records[spec.key] = {
                "key": spec.key, "spec": {"task": spec.task, "agent": spec.agent, "seed": spec.seed,
                                          "env_kwargs": spec.env_kwargs, "variant": spec.variant},
                "final_train_success": value, "steps_to_success": 5000 if value >= 0.9 else None,
                "eval": {"success": value}, "train_seconds": 1.0,
                "curve_steps": [1000, 2000, 3000, 4000], "curve_success": [None, 0.3, 0.5, value],
            }
        _rl.save_results(folder / "memory_length.json", records, meta={})

    write(tmp_path / "a", None, {"hqlt": [0.2, 0.3, 0.4], "deltanet": [0.3, 0.3, 0.3]})
    write(tmp_path / "b", 0, {"hqlt": [0.9, 0.8, 0.7], "deltanet": [0.3, 0.2, 0.6]})
    out = tmp_path / "out"
    main(["--compare", f"apples={tmp_path / 'a'}", f"no apples={tmp_path / 'b'}", "--distractor", "10", "--out", str(out)])
    text = (out / "visualmatch_conditions.md").read_text()
    assert "| HQLT (sync) | apples | 0.30 ± 0.08 | 0.30 ± 0.08 | 0.30 ± 0.08 | - (0/3) | 3 |" in text
    assert "| HQLT (sync) | no apples | 0.80 ± 0.08 | 0.80 ± 0.08 | 0.80 ± 0.08 | 5k (1/3) | 3 |" in text
    assert "- HQLT (sync): 0: 0.90 vs 0.20, 1: 0.80 vs 0.30, 2: 0.70 vs 0.40; two-sided permutation test over seeds " \
        "p = 0.100" in text
    assert "- DeltaNet: 0: 0.30 vs 0.30, 1: 0.20 vs 0.30, 2: 0.60 vs 0.30;" in text
    assert "- all agents: higher in 4 pairs, lower in 1 (two-sided sign test p = 0.375)" in text
    assert (out / "visualmatch_conditions.png").stat().st_size > 0
    # a wrong distractor length or a folder with no runs is an error that names the fix
    with pytest.raises(SystemExit, match="is --distractor 30 right"):
        main(["--compare", f"apples={tmp_path / 'a'}", "--distractor", "30", "--out", str(out)])
    with pytest.raises(SystemExit, match="run the sweep with --out"):
        main(["--compare", f"x={tmp_path / 'missing'}", "--distractor", "10", "--out", str(out)])
    with pytest.raises(SystemExit, match="LABEL=FOLDER"):
        main(["--compare", str(tmp_path / "a"), "--distractor", "10", "--out", str(out)])


def test_tmaze_settings_compared_at_the_smallest_budget(tmp_path: Path) -> None:
    """A T-Maze setting may gather its seeds from several folders (the later folder's run wins, here a 2x-budget
    seed 1 that reached 0.9 only after the 1x budget, so '-'). Steps by rank: 'bias 2' 30k / 50k / 20k (ranks 2, 4,
    1) against 40k / - / 90k (3, 6, 5); 4 of the 20 splits of ranks 1-6 are as far from the mean sum (sums 6, 7, 14,
    15): p = 0.2. Success: 1.00 / 0.97 / 0.99 against 0.95 / 0.60 / 0.85; only the observed split and its mirror
    are as extreme: p = 0.1. Greedy (only runs made at the budget read: seeds 0 and 2 of 'bias 0'): 1.0 / 0.9 / 0.4
    against 0.5 / 0.5; 4 of the 10 splits are as far apart (the observed one, both with 1.0 and 0.9 and one 0.5, and
    0.4 with both 0.5s): p = 0.4."""
    from memory_length import main, tmaze_specs

    def write(folder: Path, runs: dict[int, tuple[int | None, float]], scale: float = 1.0, bias: float = 0.0,
              greedy: dict[int, float] | None = None) -> None:
        records = {}
        for spec in tmaze_specs([64], ["hqlt"], list(runs), quick=False, budget_scale=scale, mixer_bias=bias):
            steps, success = runs[spec.seed]
            budget = spec.total_timesteps
            records[spec.key] = {
                "key": spec.key, "spec": dataclasses.asdict(spec), "final_train_success": 1.0 if scale > 1 else success,
                "steps_to_success": steps, "eval": {"success": (greedy or {}).get(spec.seed, 0.5)}, "train_seconds": 1.0,
                "final_train_ended_by_task": 1.0, "curve_steps": [budget // 2, budget],
                "curve_success": [success, 1.0] if scale > 1 else [0.5, success],
            }
        _rl.save_results(folder / "memory_length.json", records, meta={})

    write(tmp_path / "a1", {0: (40_000, 0.95), 1: (10_000, 1.0)})
    write(tmp_path / "a2", {1: (150_000, 0.6)}, scale=2.0)  # replaces a1's seed 1; read at 102,400: not there, 0.60
    write(tmp_path / "a3", {2: (90_000, 0.85)})  # reached 0.9, below it again at the budget
    write(tmp_path / "b", {0: (30_000, 1.0), 1: (50_000, 0.97), 2: (20_000, 0.99)}, bias=2.0,
          greedy={0: 1.0, 1: 0.9, 2: 0.4})
    out = tmp_path / "out"
    first = "bias 0=" + ",".join(str(tmp_path / f) for f in ("a1", "a2", "a3"))
    main(["--compare", first, f"bias 2={tmp_path / 'b'}", "--tasks", "tmaze", "--lengths", "64", "--out", str(out)])
    text = (out / "tmaze_conditions.md").read_text()
    assert "*L = 64, read at 102,400 env steps*" in text
    # greedy: only runs made with the budget read (not a2's 2x seed 1); 0.5 in each, under training's 0.9 or more
    assert ("| HQLT (sync) | bias 0 | 40k / - / 90k | 2 of 3 | 65k | 0.80 ± 0.15 | 1 of 2 | 0.50 ± 0.00 (2 of 3 runs) | "
            "1 of 1 | 0, 1, 2 |") in text
    assert ("| HQLT (sync) [mixer_bias 2] | bias 2 | 30k / 50k / 20k | 3 of 3 | 30k | 0.99 ± 0.01 | 0 of 3 | 0.77 ± 0.26 | "
            "1 of 3 | 0, 1, 2 |") in text
    assert (
        "- HQLT (sync), *bias 2* against *bias 0*: steps to 0.9, mean rank 2.3 against 4.7 (rank 1 the soonest), "
        "p = 0.200; success at the budget 0.99 against 0.80, p = 0.100; greedy success 0.77 against 0.50, p = 0.400 "
        "(exact two-sided permutation tests over seeds); greedy success, seed by seed: higher in 1 of 2, lower in 1 "
        "(sign test p = 1.000)"
    ) in text
    assert (out / "tmaze_conditions.png").stat().st_size > 0
    # --seeds selects; one seed per setting is too few to test
    main(["--compare", first, f"bias 2={tmp_path / 'b'}", "--tasks", "tmaze", "--lengths", "64", "--seeds", "0",
          "--out", str(out)])
    text = (out / "tmaze_conditions.md").read_text()
    assert "| 40k | 1 of 1 |" in text and "against" not in text
    with pytest.raises(SystemExit, match="are --lengths right"):
        main(["--compare", first, "--tasks", "tmaze", "--lengths", "256", "--out", str(out)])
    with pytest.raises(SystemExit, match="needs --lengths"):
        main(["--compare", first, "--tasks", "tmaze", "--out", str(out)])
    with pytest.raises(SystemExit, match="run the sweep with --out"):
        main(["--compare", f"x={tmp_path / 'a1'},{tmp_path / 'missing'}", "--tasks", "tmaze", "--lengths", "64",
              "--out", str(out)])


def test_steps_to_success_rejects_bad_input() -> None:
    with pytest.raises(ValueError, match="same length"):
        _rl.steps_to_success([1, 2], [1], window=1)
    with pytest.raises(ValueError, match="threshold"):
        _rl.steps_to_success([1], [1], window=1, threshold=0.0)


def test_success_curve_samples_last_finished_episode() -> None:
    steps, succ = [5, 15, 25, 35], [0, 1, 1, 1]
    grid, curve = _rl.success_curve(steps, succ, total_steps=40, window=2, n_points=4)
    assert grid == [10, 20, 30, 40]
    assert curve == [0.0, 0.5, 1.0, 1.0]
    _, early = _rl.success_curve([50], [1], total_steps=40, window=2, n_points=2)
    assert early == [None, None]


def test_kv_reach_and_formatting() -> None:
    assert _rl.kv_reach(2, 16) == 30
    assert _rl.kv_reach(1, 16) == 15
    assert _rl.fmt_steps([None, None]) == "- (0/2)"
    assert _rl.fmt_steps([10_000, None, 30_000]) == "20k (2/3)"
    assert _rl.fmt_pm([1.0, 0.0]) == "0.50 ± 0.50"


def test_machine_info_names_the_cpu_and_its_kernel_level() -> None:
    import torch

    info = _rl.machine_info()
    assert info["cpu_kernels"] == torch.backends.cpu.get_cpu_capability()
    assert isinstance(info["cpu"], str) and info["cpu"]
    assert info["torch"] == torch.__version__ and info["torch_threads_per_run"] == 1


def test_run_spec_validates_agent() -> None:
    with pytest.raises(ValueError, match="agent"):
        _rl.RunSpec(task="t", env_id="x", agent="transformer", seed=0, total_timesteps=10)
    spec = _rl.RunSpec(task="t", env_id="x", agent="hqlt", seed=1, total_timesteps=10, variant="carry")
    assert spec.key == "t/hqlt-carry/seed1"


def test_lr_schedules_of_a_spec() -> None:
    """A spec's lr_schedule: linear -> a callable learning rate; decay_on_success -> a constant rate and the callback
    that starts the decay; an unknown one -> an error naming the field."""
    import minigrid_curves
    from stable_baselines3.common.env_util import make_vec_env

    import envs  # noqa: F401  (registers hqlt/PassiveTMaze-v0)
    from agents.callbacks import DecayLROnSuccess

    base = dict(task="t", env_id="hqlt/PassiveTMaze-v0", env_kwargs={"memory_length": 2}, agent="hqlt", seed=0,
                total_timesteps=64, memory_kwargs=dict(d_model=16, n_layers=1, n_heads=2, window=4))
    env = make_vec_env("hqlt/PassiveTMaze-v0", n_envs=2, env_kwargs={"memory_length": 2})
    ppo = dict(n_steps=16, seq_len=8, batch_size=16, learning_rate=1e-3)
    rates = {}
    for schedule in ("constant", "linear", "decay_on_success"):
        spec = _rl.RunSpec(**base, ppo={**ppo, "lr_schedule": schedule})
        model = _rl.build_model(spec, env)
        rates[schedule] = (model.lr_schedule(1.0), model.lr_schedule(0.5))
        callbacks = _rl.schedule_callbacks(spec, window=20, threshold=0.8)
        assert [type(c) for c in callbacks] == ([DecayLROnSuccess] if schedule == "decay_on_success" else [])
    assert rates == {"constant": (1e-3, 1e-3), "linear": (1e-3, 5e-4), "decay_on_success": (1e-3, 1e-3)}
    assert (callbacks[0].window, callbacks[0].threshold) == (20, 0.8)
    with pytest.raises(ValueError, match="lr_schedule"):
        _rl.build_model(_rl.RunSpec(**base, ppo={**ppo, "lr_schedule": "cosine"}), env)
    specs = minigrid_curves.specs_for([11], ["hqlt"], [0], True, None, "decay_on_success")
    assert specs[0].key == "minigrid-S11/hqlt-lrdecay-success/seed0" and specs[0].ppo["lr_schedule"] == "decay_on_success"


def test_ent_schedules_of_a_spec_and_the_tmaze_sweep() -> None:
    """ppo.ent_schedule: linear -> a callable coefficient; decay_on_success -> the callback decaying the coefficient
    (and the rate only where lr_schedule asks too); RecurrentPPO or an unknown schedule -> an error naming the field;
    the sweep's --ent-schedule labels the runs."""
    from memory_length import main, tmaze_specs
    from stable_baselines3.common.env_util import make_vec_env

    import envs  # noqa: F401  (registers hqlt/PassiveTMaze-v0)

    base = dict(task="t", env_id="hqlt/PassiveTMaze-v0", env_kwargs={"memory_length": 2}, agent="hqlt", seed=0,
                total_timesteps=64, memory_kwargs=dict(d_model=16, n_layers=1, n_heads=2, window=4))
    env = make_vec_env("hqlt/PassiveTMaze-v0", n_envs=2, env_kwargs={"memory_length": 2})
    ppo = dict(n_steps=16, seq_len=8, batch_size=16, learning_rate=1e-3, ent_coef=0.02)
    model = _rl.build_model(_rl.RunSpec(**base, ppo={**ppo, "ent_schedule": "linear"}), env)
    assert (model.ent_coef(1.0), model.ent_coef(0.5)) == pytest.approx((0.02, 0.01))
    assert _rl.build_model(_rl.RunSpec(**base, ppo=ppo), env).ent_coef == 0.02
    for lr_schedule, decay_lr in (("constant", False), ("decay_on_success", True)):
        spec = _rl.RunSpec(**base, ppo={**ppo, "ent_schedule": "decay_on_success", "lr_schedule": lr_schedule})
        (cb,) = _rl.schedule_callbacks(spec)
        assert (cb.decay_ent, cb.decay_lr) == (True, decay_lr)
    with pytest.raises(ValueError, match="ent_schedule"):
        _rl.build_model(_rl.RunSpec(**base, ppo={**ppo, "ent_schedule": "cosine"}), env)
    with pytest.raises(ValueError, match="ent_schedule.*RecurrentPPO"):
        _rl.build_model(_rl.RunSpec(**{**base, "agent": "rppo"}, ppo={**ppo, "ent_schedule": "linear"}), env)
    specs = {s.agent: s for s in tmaze_specs([64], ["hqlt", "deltanet"], [0], quick=True, mixer_bias=2.0,
                                             ent_schedule="decay_on_success")}
    assert specs["hqlt"].key == "tmaze-L64/hqlt-entdecay-success-mixbias2/seed0"
    assert specs["deltanet"].key == "tmaze-L64/deltanet-entdecay-success/seed0"
    assert specs["deltanet"].ppo["ent_schedule"] == "decay_on_success" and "lr_schedule" not in specs["deltanet"].ppo
    with pytest.raises(SystemExit, match="our agents only"):
        main(["--tasks", "tmaze", "--agents", "hqlt", "rppo", "--ent-schedule", "linear", "--report-only"])
    with pytest.raises(SystemExit, match="T-Maze runs only"):
        main(["--tasks", "visualmatch", "--ent-schedule", "linear", "--report-only"])


def test_time_slack_sets_the_tmaze_time_limit_and_labels_the_runs() -> None:
    """--time-slack K: T = L + 1 + K (0: Ni et al.'s limit, one step at the junction), runs labelled slack<K>, the
    default T = 2L unlabelled; a negative slack or one given for Visual Match only is refused, naming the flag."""
    from memory_length import main, tmaze_specs

    default = {s.task: s for s in tmaze_specs([16, 64], ["deltanet"], [0], quick=False)}
    tight = {s.task: s for s in tmaze_specs([16, 64], ["deltanet"], [0], quick=False, time_slack=0)}
    assert {t: s.env_kwargs["time_limit"] for t, s in default.items()} == {"tmaze-L16": 32, "tmaze-L64": 128}
    assert {t: s.env_kwargs["time_limit"] for t, s in tight.items()} == {"tmaze-L16": 17, "tmaze-L64": 65}
    assert default["tmaze-L64"].key == "tmaze-L64/deltanet/seed0"
    assert tight["tmaze-L64"].key == "tmaze-L64/deltanet-slack0/seed0"
    (spec,) = tmaze_specs([64], ["hqlt"], [1], quick=False, time_slack=3, mixer_bias=2.0)
    assert spec.env_kwargs["time_limit"] == 68 and spec.key == "tmaze-L64/hqlt-slack3-mixbias2/seed1"
    assert spec.ppo == tmaze_specs([64], ["hqlt"], [1], quick=False, mixer_bias=2.0)[0].ppo  # only the limit differs
    with pytest.raises(ValueError, match="time_slack"):
        tmaze_specs([64], ["hqlt"], [0], quick=False, time_slack=-1)
    for argv in (["--tasks", "tmaze", "--time-slack", "-1"], ["--tasks", "visualmatch", "--time-slack", "0"]):
        with pytest.raises(SystemExit, match="--time-slack"):
            main([*argv, "--report-only"])


def test_save_results_keeps_records_saved_by_another_process(tmp_path: Path) -> None:
    path = tmp_path / "results.json"
    _rl.save_results(path, {"a": {"key": "a", "v": 1}}, meta={})
    _rl.save_results(path, {"b": {"key": "b", "v": 2}}, meta={})  # a second sweep that loaded the file before "a"
    _rl.save_results(path, {"a": {"key": "a", "v": 3}}, meta={})  # a rerun (--force) replaces its own key
    assert _rl.load_results(path) == {"a": {"key": "a", "v": 3}, "b": {"key": "b", "v": 2}}
    assert [p.name for p in tmp_path.iterdir()] == ["results.json"]


@pytest.mark.slow
@pytest.mark.parametrize("script", ["memory_length.py", "cross_episode.py", "minigrid_curves.py"])
def test_quick_mode_runs_and_writes_results(script: str, tmp_path: Path) -> None:
    cmd = [sys.executable, str(ROOT / "benchmarks" / script), "--quick", "--out", str(tmp_path), "--workers", "1"]
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stderr[-3000:]
    (result,) = list(tmp_path.glob("*.json"))
    runs = json.loads(result.read_text())["runs"]
    assert runs, "no run recorded"
    for run in runs:
        assert run["episodes"] > 0
        assert 0.0 <= run["final_train_success"] <= 1.0
        assert len(run["curve_success"]) == 100
        assert run["machine"]["cpu_kernels"] and run["machine"]["cpu"]  # where it ran: a seed repeats only there
    assert list(tmp_path.glob("*.png")), "no figure written"
    assert list(tmp_path.glob("*.md")), "no table written"


class _GoUpPolicy:
    """Walks to the junction and always turns up: in a trial (goal side fixed) every episode has the same outcome."""

    def predict(self, obs, state=None, episode_start=None, deterministic=True):
        at_junction = obs[:, 0] > 0.5
        return np.where(at_junction, 0, 1), state  # 0 = up, 1 = right (also ends the episode from an arm)


def test_evaluate_greedy_counts_trial_episodes() -> None:
    import envs  # noqa: F401  (registers hqlt/TMazeTrials-v0)

    spec = _rl.RunSpec(
        task="trials",
        env_id="hqlt/TMazeTrials-v0",
        env_kwargs={"memory_length": 2, "episodes_per_trial": 4},
        agent="hqlt",
        seed=0,
        total_timesteps=1,
    )
    result = _rl.evaluate_greedy(_GoUpPolicy(), spec, n_episodes=80, seed=3)
    assert result["episodes"] == 80
    by_k = result["by_trial_episode"]
    assert len(by_k) == 4
    # 20 trials (2 per env), one fixed outcome each: the same rate on every episode of the trial, and not all 0 or 1.
    assert by_k == [by_k[0]] * 4
    assert 0.0 < by_k[0] < 1.0


def test_cross_episode_report_tests_the_carried_agent_against_each_reset_agent() -> None:
    import cross_episode

    def record(agent: str, variant: str, seed: int, greedy_later: float, train_later: float) -> dict:
        return {
            "spec": {"task": "trials", "agent": agent, "variant": variant, "seed": seed, "total_timesteps": 100},
            "final_train_success_by_trial_episode": [0.5, train_later, train_later, train_later],
            "eval": {"by_trial_episode": [0.5, greedy_later, greedy_later, greedy_later]},
            "train_seconds": 1.0,
        }

    records = {}
    for seed, carried in enumerate([0.9, 0.8, 0.95]):
        records[f"c{seed}"] = record("hqlt", "carry", seed, carried, carried)
        # the reset agent: lower than every carried seed when greedy, higher than every one in training
        records[f"r{seed}"] = record("hqlt", "reset", seed, 0.4 + 0.05 * seed, 0.99)
    later = cross_episode.later_episodes(records["c0"])
    assert later == {"train": pytest.approx(0.9), "greedy": pytest.approx(0.9)}
    text = cross_episode.tables(records)
    # greedy: the observed split is the most extreme of the 20 splits of 3 + 3 (p = 1/20); training: the least (p = 1)
    assert "- carried above HQLT, FW reset each episode on episodes 2..4 (3 and 3 seeds): training p = 1, " \
        "greedy p = 0.05" in text
    # the LSTM is tested only with two seeds or more of it
    records["l0"] = record("lstm", "", 0, 0.5, 0.5)
    assert "above LSTM" not in cross_episode.tables(records)
    records["l1"] = record("lstm", "", 1, 0.5, 0.5)
    # 3 carried seeds above 2 LSTM seeds: 1 of the 10 splits of 3 + 2
    assert "- carried above LSTM (reset each episode) on episodes 2..4 (3 and 2 seeds): training p = 0.1, " \
        "greedy p = 0.1" in cross_episode.tables(records)
    # the FW-lean start of the carried agent, against the plain carried agent, either way (two seeds or more)
    records["m0"] = record("hqlt", "carry-mixbias2", 0, 1.0, 1.0)
    assert "mixer_bias 2" not in cross_episode.tables(records).split("Exact one-sided")[1]
    records["m1"] = record("hqlt", "carry-mixbias2", 1, 0.98, 1.0)
    text = cross_episode.tables(records)
    # greedy 1.0 and 0.98 above all of 0.9, 0.8, 0.95: 2 of the 10 splits of 2 + 3 are as far apart (this one and
    # the split of the two lowest, 0.8 and 0.9); training 1.0, 1.0 likewise
    assert "| HQLT, FW carried, mixer_bias 2 | 2 |" in text
    assert "test, HQLT, FW carried, mixer_bias 2 (2 seeds) against HQLT, FW carried across episodes (3) on episodes " \
        "2..4: train 1.00 vs 0.88, p = 0.2, greedy 0.99 vs 0.88, p = 0.2" in text
    specs = cross_episode.specs_for(["hqlt-carry-mixbias2"], [0], quick=True)
    assert specs[0].memory_kwargs["mixer_bias"] == 2.0 and specs[0].memory_kwargs["carry_fw_across_episodes"]
    assert "mixer_bias" not in cross_episode.specs_for(["hqlt-carry"], [0], quick=True)[0].memory_kwargs
    assert "from the training envs' memory state" not in text  # no record has that evaluation yet
    # carried runs evaluated also from the training envs' last memory state: a table of it, and it enters the tests
    for key, value in (("c0", 1.0), ("c1", 0.97), ("c2", 0.99), ("m0", 0.5), ("m1", 0.4)):
        records[key]["eval_from_trained_state"] = {"by_trial_episode": [0.5, value, value, value]}
    assert cross_episode.later_episodes(records["c1"])["greedy_trained"] == pytest.approx(0.97)
    text = cross_episode.tables(records)
    assert "| HQLT, FW carried across episodes | 3 | 0.50 ± 0.00 | 0.99 ± 0.01 |" in text
    # 1.0, 0.97, 0.99 above every reset seed (p = 1/20) and both LSTM seeds (p = 1/10)
    assert "greedy p = 0.05, greedy from the trained state p = 0.05" in text
    assert "greedy p = 0.1, greedy from the trained state p = 0.1" in text
    # the lean's 0.5 and 0.4 below all three: of the 10 splits of 2 + 3 only this one is as far apart, either way
    # (the next, 1.0 and 0.99 against the rest, differs by 0.37 against 0.54)
    assert "greedy from the trained state 0.45 vs 0.99, p = 0.1" in text
    # the carried agent trained with memory resets: its own line, tested the same way
    for seed, value in enumerate((1.0, 0.98)):
        records[f"z{seed}"] = record("hqlt", "carry-memreset0.2", seed, value, 0.95)
        records[f"z{seed}"]["eval_from_trained_state"] = {"by_trial_episode": [0.5, value, value, value]}
    text = cross_episode.tables(records)
    assert "| HQLT, FW carried, memory reset 0.2 | 2 |" in text
    assert "test, HQLT, FW carried, memory reset 0.2 (2 seeds) against HQLT, FW carried across episodes (3) on " \
        "episodes 2..4: train 0.95 vs 0.88, p = 0.4, greedy 0.99 vs 0.88, p = 0.2, greedy from the trained state 0.99 " \
        "vs 0.99, p = 1" in text  # train: 4 of the 10 splits of 0.95, 0.95 | 0.9, 0.8, 0.95 are as far apart
    (spec,) = cross_episode.specs_for(["hqlt-carry-memreset0.2"], [0], quick=True)
    assert spec.ppo["memory_reset_prob"] == 0.2 and spec.memory_kwargs["carry_fw_across_episodes"]
    assert cross_episode.specs_for(["hqlt-carry-memreset0.05"], [0], quick=True)[0].ppo["memory_reset_prob"] == 0.05
    assert "memory_reset_prob" not in cross_episode.specs_for(["hqlt-carry"], [0], quick=True)[0].ppo


def test_stability_collapse_rule() -> None:
    import ppo_stability

    assert ppo_stability.collapsed([None, 0.5, 0.95, 1.0, 0.7, 1.0]) == (True, True)
    assert ppo_stability.collapsed([0.5, 0.9, 0.85, 0.8]) == (True, False)  # 0.8 is not below 0.8
    assert ppo_stability.collapsed([0.5, 0.7, 0.3]) == (False, False)  # never reached 0.9: no collapse either
    assert ppo_stability.collapsed([]) == (False, False)

    def record(successes, entropies):
        return {"updates": [{"success": s, "entropy": e} for s, e in zip(successes, entropies)]}

    assert ppo_stability.collapse_kind(record([0.5, 0.95, 1.0, 1.0, 0.6], [0.5, 0.3, 0.05, 0.04, 0.04])) == "late"
    assert ppo_stability.collapse_kind(record([0.5, 0.95, 0.9, 0.7, 1.0], [0.5, 0.4, 0.4, 0.4, 0.1])) == "early"
    assert ppo_stability.collapse_kind(record([0.5, 0.95, 0.9, 0.85], [0.5, 0.1, 0.05, 0.05])) is None


@pytest.mark.slow
def test_stability_quick_mode_records_every_update(tmp_path: Path) -> None:
    cmd = [sys.executable, str(ROOT / "benchmarks" / "ppo_stability.py"), "--quick", "--out", str(tmp_path), "--workers", "1"]
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stderr[-3000:]
    runs = json.loads((tmp_path / "ppo_stability.json").read_text())["runs"]
    assert {r["variant"] for r in runs} == {"default", "lr-decay"}
    for run in runs:
        assert run["adam_eps"] == 1e-5
        steps = [u["step"] for u in run["updates"]]
        assert len(steps) >= 10 and steps == sorted(steps)
        assert all(u["max_step_over_lr"] > 0 and u["approx_kl"] >= 0 for u in run["updates"])
    assert (tmp_path / "ppo_stability.md").is_file()


def test_cue_signal_sees_the_kv_horizon() -> None:
    """Before training, the cue reaches the recall step through fast weights at any distance, through a KV-only stack
    only inside its reach (2 layers x (16 - 1) = 30 steps): exactly nothing from further back."""
    import cue_signal

    inside = cue_signal.measure("kv", distractor=1, n_apples=None, seed=0, n_episodes=2)
    beyond = cue_signal.measure("kv", distractor=30, n_apples=None, seed=0, n_episodes=2)
    fast_weights = cue_signal.measure("deltanet", distractor=30, n_apples=None, seed=0, n_episodes=2)
    assert inside["retention"] > 0.1
    assert beyond["retention"] == 0.0 and beyond["signal_over_spread"] == 0.0
    assert fast_weights["retention"] > 0.1
    # The T-Maze probe: the same horizon at the junction (L = 64 lies beyond the KV reach, L = 16 inside it).
    assert cue_signal.tmaze_retention("kv", 64, seed=0) == 0.0
    assert cue_signal.tmaze_retention("kv", 16, seed=0) > 0.0
    assert cue_signal.tmaze_retention("deltanet", 64, seed=0) > 0.1


def test_mixer_bias_variant_of_the_tmaze_sweep() -> None:
    """--mixer-bias changes HQLT's runs only (their own key), and at init more of the cue reaches the junction."""
    import cue_signal
    from memory_length import tmaze_specs

    plain = {s.agent: s for s in tmaze_specs([64], ["hqlt", "deltanet"], [0], quick=True)}
    leaned = {s.agent: s for s in tmaze_specs([64], ["hqlt", "deltanet"], [0], quick=True, mixer_bias=2.0)}
    assert leaned["hqlt"].key == "tmaze-L64/hqlt-mixbias2/seed0" and leaned["hqlt"].memory_kwargs["mixer_bias"] == 2.0
    assert leaned["deltanet"] == plain["deltanet"] and "mixer_bias" not in plain["hqlt"].memory_kwargs
    assert cue_signal.tmaze_retention("hqlt", 64, 0, mixer_bias=2.0) > 1.5 * cue_signal.tmaze_retention("hqlt", 64, 0)


def test_lr_schedule_variant_of_the_tmaze_sweep() -> None:
    """--lr-schedule labels every agent's runs (their own keys, beside the constant-rate sweep's), puts the schedule
    in the spec, and decay_on_success gives the run the callback that starts the decay; --lr-schedule is checked."""
    from memory_length import main, tmaze_specs

    from agents.callbacks import DecayLROnSuccess

    plain = {s.agent: s for s in tmaze_specs([64], ["hqlt", "deltanet"], [0], quick=True, mixer_bias=2.0)}
    decayed = {
        s.agent: s
        for s in tmaze_specs([64], ["hqlt", "deltanet"], [0], quick=True, mixer_bias=2.0, lr_schedule="decay_on_success")
    }
    assert decayed["hqlt"].key == "tmaze-L64/hqlt-lrdecay-success-mixbias2/seed0"
    assert decayed["deltanet"].key == "tmaze-L64/deltanet-lrdecay-success/seed0"
    assert decayed["hqlt"].ppo["lr_schedule"] == "decay_on_success" and "lr_schedule" not in plain["hqlt"].ppo
    assert [type(c) for c in _rl.schedule_callbacks(decayed["hqlt"])] == [DecayLROnSuccess]
    assert _rl.schedule_callbacks(plain["hqlt"]) == []
    linear = tmaze_specs([64], ["hqlt"], [0], quick=True, lr_schedule="linear")[0]
    assert linear.key == "tmaze-L64/hqlt-lrdecay/seed0" and _rl.schedule_callbacks(linear) == []
    with pytest.raises(SystemExit):
        main(["--tasks", "tmaze", "--lr-schedule", "cosine", "--report-only"])
    with pytest.raises(SystemExit, match="T-Maze runs only"):
        main(["--tasks", "visualmatch", "--lr-schedule", "linear", "--report-only"])


def test_mixer_bias_variant_of_the_visual_match_sweep() -> None:
    """The same variant on Visual Match: HQLT's runs get their own key (after any apples change), the others not."""
    from memory_length import visual_match_specs

    plain = {s.agent: s for s in visual_match_specs(30, ["hqlt", "kv"], [1], quick=True)}
    leaned = {s.agent: s for s in visual_match_specs(30, ["hqlt", "kv"], [1], quick=True, mixer_bias=2.0)}
    assert leaned["hqlt"].key == "visualmatch-D30/hqlt-mixbias2/seed1"
    assert leaned["hqlt"].memory_kwargs["mixer_bias"] == 2.0 and "mixer_bias" not in plain["hqlt"].memory_kwargs
    assert leaned["kv"] == plain["kv"]
    no_apples = visual_match_specs(30, ["hqlt"], [1], quick=True, n_apples=0, mixer_bias=2.0)[0]
    assert no_apples.key == "visualmatch-D30/hqlt-apples0-mixbias2/seed1"


def test_kv_window_variant_is_a_full_context_reference(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """--kv-window changes the KV-only agent's runs only (their own key, the report's reach line), and a window that
    holds the whole episode passes the cue to the recall room at distractor 30, where S = 16 passes exactly nothing."""
    import cue_signal
    import memory_length
    from memory_length import tables, visual_match_specs

    plain = {s.agent: s for s in visual_match_specs(30, ["hqlt", "kv"], [0], quick=True)}
    full = {s.agent: s for s in visual_match_specs(30, ["hqlt", "kv"], [0], quick=True, kv_window=128)}
    assert full["kv"].key == "visualmatch-D30/kv-window128/seed0" and full["kv"].memory_kwargs["window"] == 128
    assert full["hqlt"] == plain["hqlt"] and plain["kv"].memory_kwargs["window"] == memory_length.WINDOW
    tm = {s.agent: s for s in memory_length.tmaze_specs([64], ["kv", "deltanet"], [0], quick=True, kv_window=64)}
    assert tm["kv"].key == "tmaze-L64/kv-window64/seed0" and "window64" not in tm["deltanet"].key
    record = {"key": full["kv"].key, "spec": dataclasses.asdict(full["kv"]), "final_train_success": 0.5,
              "steps_to_success": None, "eval": {"success": 0.5}, "train_seconds": 1.0}
    text = tables({"k": record}, [], 30)
    assert "KV window S = 128, 2 layers: KV-only reach = 2 x (128 - 1) = 254 steps" in text
    assert "| KV-only [S = 128] | 0.50 ± 0.00 |" in text and "- KV-only [S = 128]: 0: 0.50 / 0.50" in text
    # with HQLT runs beside it, the full-context reference is tested against them
    records = {"k": record}
    for seed, value in ((0, 0.3), (1, 0.4)):
        spec = dataclasses.asdict(visual_match_specs(30, ["hqlt"], [seed], quick=True)[0])
        records[f"h{seed}"] = {"key": f"h{seed}", "spec": spec, "final_train_success": value,
                               "steps_to_success": None, "eval": {"success": value}, "train_seconds": 1.0}
    records["k1"] = {**record, "key": "k1", "final_train_success": 0.7, "eval": {"success": 0.6},
                     "spec": {**record["spec"], "seed": 1}}
    text = tables(records, [], 30)
    assert "KV-only [S = 128] above HQLT (sync)? Exact one-sided permutation test" in text
    assert "- train success: mean 0.60 against 0.35 (2 and 2 seeds), p = 0.167" in text
    with pytest.raises(SystemExit, match="--kv-window must be a positive"):
        memory_length.check_window(0)
    # on the T-Maze the "beyond reach" marks follow the runs' window too: S = 64 reaches 126 steps, so L = 64 is inside
    tm_records = {}
    for n in (64, 256):
        for agent in ("kv", "deltanet"):
            spec = memory_length.tmaze_specs([n], [agent], [0], quick=True, kv_window=64)[0]
            tm_records[spec.key] = {"key": spec.key, "spec": dataclasses.asdict(spec), "final_train_success": 0.5,
                                    "steps_to_success": None, "eval": {"success": 0.5}, "train_seconds": 1.0,
                                    "curve_steps": [1000, 2000], "curve_success": [0.4, 0.5]}
    assert memory_length._kv_window(memory_length._by_agent(tm_records)) == 64
    text = tables(tm_records, [64, 256], 30)
    assert "| L = 64 | L = 256 (beyond reach) |" in text and "KV-only [S = 64]" in text
    # without KV-only runs: the default S = 16 (reach 30) marks L = 64 beyond reach
    deltanet_only = {k: r for k, r in tm_records.items() if r["spec"]["agent"] == "deltanet"}
    assert "| L = 64 (beyond reach) | L = 256 (beyond reach) |" in tables(deltanet_only, [64, 256], 30)
    titles = []
    real_plot_curves = memory_length.plot_curves

    def recording_plot_curves(curves, title, *args, **kwargs):
        titles.append(title)
        return real_plot_curves(curves, title, *args, **kwargs)

    monkeypatch.setattr(memory_length, "plot_curves", recording_plot_curves)
    paths = memory_length.plots(tm_records, [64, 256], 30, tmp_path)
    assert titles == ["Passive T-Maze L = 64 (inside KV reach)", "Passive T-Maze L = 256 (beyond KV reach)"]
    assert [p.name for p in paths] == ["memory_length_tmaze_curves.png", "memory_length_tmaze_success.png"]

    assert cue_signal.measure("kv", 30, None, seed=0, n_episodes=4)["retention"] == 0.0
    assert cue_signal.measure("kv", 30, None, seed=0, n_episodes=4, kv_window=128)["retention"] > 0.05


def test_tmaze_report_tests_whether_hqlt_learns_more_slowly_than_deltanet(tmp_path: Path) -> None:
    """The T-Maze report reads both agents at the smaller budget (a 2x-budget run that got to 0.9 only after it
    counts as not there) and ranks those not there last: ranks HQLT 2 / 5.5 / 5.5 against DeltaNet 1 / 3 / 4, and 3
    of the 20 splits of the six ranks give the first group a sum of at least 13, so p = 3 / 20."""
    from memory_length import _ranks, load_records_from, tables, tmaze_specs

    assert _ranks([3.0, 1.0, float("inf"), 2.0, float("inf")]) == [3.0, 1.0, 4.5, 2.0, 4.5]

    def folder(name: str, agent: str, scale: float, steps: list[int | None], success: list[float]) -> Path:
        records = {}
        for spec in tmaze_specs([1024], [agent], [0, 1, 2], quick=False, budget_scale=scale):
            curve = [success[spec.seed], 1.0][: round(scale)]  # a 2x run is at 1.0 by its end
            records[spec.key] = {
                "key": spec.key, "spec": dataclasses.asdict(spec), "final_train_success": curve[-1],
                "steps_to_success": steps[spec.seed], "eval": {"success": 0.5}, "train_seconds": 60.0,
                "final_train_ended_by_task": 1.0, "curve_steps": [1_025_000, 2_050_000][: round(scale)],
                "curve_success": curve,
            }
        _rl.save_results(tmp_path / name / "memory_length.json", records, meta={})
        return tmp_path / name

    one_x = folder("sweep", "hqlt", 1.0, [611_000, None, None], [0.95, 0.5, 0.5])
    folder("sweep", "deltanet", 1.0, [500_000, 700_000, 900_000], [0.99, 0.97, 0.9])
    two_x = folder("twice", "hqlt", 2.0, [600_000, 1_500_000, None], [0.95, 0.6, 0.5])
    records = load_records_from([one_x, two_x])  # the later folder's HQLT runs replace the earlier's
    assert records["tmaze-L1024/hqlt/seed1"]["steps_to_success"] == 1_500_000
    assert records["tmaze-L1024/deltanet/seed1"]["steps_to_success"] == 700_000
    text = tables(records, [1024], 30)
    assert (
        "- tmaze-L1024: HQLT (sync) slower than DeltaNet? Env steps to 0.9 within 1,025,000 (the smaller budget; '-': "
        "not within it), by seed: 600k / - / - against 500k / 700k / 900k; reached 1 of 3 against 3 of 3. Exact "
        "one-sided permutation test on the ranks (those not there rank last): p = 0.150"
    ) in text
    # success read at 1,025,000 too, not at the 2x runs' end (1.0): 2 of the 20 splits reach DeltaNet's sum
    assert (
        "- tmaze-L1024: DeltaNet above HQLT (sync) in training success at 1,025,000 (the last curve point within it)? "
        "0.99 / 0.97 / 0.90 against 0.95 / 0.60 / 0.50 (means 0.95 and 0.68); exact one-sided permutation test "
        "p = 0.100"
    ) in text
    # given the 2x budget to both, the 1.5M run counts, and DeltaNet alone: no test
    assert "within 2,050,000" not in text
    alone = {k: r for k, r in records.items() if r["spec"]["agent"] == "hqlt"}
    assert "slower than" not in tables(alone, [1024], 30)


def test_hqlt_window_variant_reported_beside_reference_runs_from_another_folder(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """--hqlt-window gives HQLT's runs their own window and key (nothing else changes), and --records-from sets them
    beside a reference folder's runs in one report (the full-context Transformer against the hybrid), running none."""
    import memory_length
    from memory_length import main, visual_match_specs

    plain = {s.agent: s for s in visual_match_specs(30, ["hqlt", "kv", "deltanet"], [0], quick=True)}
    wide = {s.agent: s for s in visual_match_specs(30, ["hqlt", "kv", "deltanet"], [0], quick=True, hqlt_window=128)}
    assert wide["hqlt"].key == "visualmatch-D30/hqlt-window128/seed0" and wide["hqlt"].memory_kwargs["window"] == 128
    assert wide["kv"] == plain["kv"] and wide["deltanet"] == plain["deltanet"]
    tm = memory_length.tmaze_specs([64], ["hqlt"], [0], quick=True, mixer_bias=2.0, hqlt_window=32)[0]
    assert tm.key == "tmaze-L64/hqlt-mixbias2-window32/seed0" and tm.memory_kwargs["window"] == 32
    leaned = {"spec": dataclasses.asdict(visual_match_specs(30, ["hqlt"], [0], True, mixer_bias=-2.0, hqlt_window=128)[0])}
    assert memory_length.agent_label("hqlt", [leaned]) == "HQLT (sync) [S = 128, mixer_bias -2]"
    assert memory_length.agent_label("hqlt", [{"spec": dataclasses.asdict(plain["hqlt"])}]) == "HQLT (sync)"

    def write(folder: Path, success: dict[str, list[float]], **windows: int) -> None:
        records = {}
        for spec in visual_match_specs(30, list(success), [0, 1], quick=True, **windows):
            value = success[spec.agent][spec.seed]
            records[spec.key] = {
                "key": spec.key, "spec": dataclasses.asdict(spec), "final_train_success": value,
                "steps_to_success": None, "eval": {"success": value}, "train_seconds": 60.0,
                "curve_steps": [1000, 2000], "curve_success": [0.3, value],
            }
        _rl.save_results(folder / "memory_length.json", records, meta={})

    write(tmp_path / "ref", {"kv": [0.8, 0.7], "deltanet": [0.3, 0.4], "hqlt": [0.1, 0.1]}, kv_window=128)
    write(tmp_path / "wide", {"hqlt": [0.6, 0.5]}, hqlt_window=128)
    args = ["--tasks", "visualmatch", "--distractor", "30", "--agents", "kv", "hqlt", "deltanet", "--seeds", "0", "1",
            "--kv-window", "128", "--hqlt-window", "128", "--out", str(tmp_path / "wide"),
            "--records-from", str(tmp_path / "ref")]

    def no_runs(*a, **k):
        raise AssertionError("a run found in --records-from or --out was run again")

    monkeypatch.setattr(_rl, "run_one", no_runs)
    main(args)  # every run is in one of the two files: nothing to run
    text = (tmp_path / "wide" / "memory_length.md").read_text()
    assert "| HQLT (sync) [S = 128] | 0.55 ± 0.05 |" in text and "| KV-only [S = 128] | 0.75 ± 0.05 |" in text
    assert "0.10" not in text  # the reference folder's HQLT at S = 16 is not this call's
    assert "HQLT (sync) [S = 128] above DeltaNet?" in text
    assert "KV-only [S = 128] above HQLT (sync) [S = 128]?" in text
    assert "- train success: mean 0.75 against 0.55 (2 and 2 seeds), p = 0.167" in text
    assert "Sum of per-run wall times: 6.0 min over 6 runs" in text
    assert (tmp_path / "wide" / "memory_length_visualmatch_curves.png").stat().st_size > 0
    with pytest.raises(SystemExit, match="--records-from: no results file"):
        main(args[:-1] + [str(tmp_path / "missing")])
    with pytest.raises(SystemExit, match="--hqlt-window must be a positive"):
        main(args[:-6] + ["--hqlt-window", "0"])
    # the cue diagnostic builds the same agents: at distractor 30 only the wider window lets attention see the cue
    import cue_signal

    wide_retention = cue_signal.measure("hqlt", 30, None, seed=0, n_episodes=4, hqlt_window=128)["retention"]
    assert wide_retention != cue_signal.measure("hqlt", 30, None, seed=0, n_episodes=4)["retention"]
    with pytest.raises(SystemExit, match="leave them out with --tmaze"):
        cue_signal.main(["--tmaze", "16", "--hqlt-window", "128"])


def test_separate_critic_variant_builds_a_critic_with_nothing_shared() -> None:
    """--separate-critic: our agents' runs get their own key and a critic with its own extractor and memory, whose
    parameters are disjoint from the actor's; RecurrentPPO (its own critic LSTM already) is left as it is."""
    import gymnasium as gym
    from memory_length import visual_match_specs
    from stable_baselines3.common.env_util import make_vec_env

    import envs  # noqa: F401  (registers hqlt/*)

    plain = {s.agent: s for s in visual_match_specs(10, ["hqlt", "rppo"], [2], quick=True, apple_reward=0.0)}
    split = {s.agent: s for s in visual_match_specs(10, ["hqlt", "rppo"], [2], quick=True, apple_reward=0.0,
                                                     separate_critic=True)}
    assert split["hqlt"].key == "visualmatch-D10/hqlt-applereward0-critic/seed2"
    assert split["rppo"] == plain["rppo"] and plain["hqlt"].policy == {}
    env = make_vec_env(lambda: gym.make(split["hqlt"].env_id, **split["hqlt"].env_kwargs), n_envs=2)
    policy = _rl.build_model(split["hqlt"], env).policy
    assert policy.critic_memory and not policy.share_features_extractor
    actor = {id(p) for m in (policy.pi_features_extractor, policy.memory) for p in m.parameters()}
    critic = {id(p) for m in (policy.vf_features_extractor, policy.vf_memory) for p in m.parameters()}
    assert actor and critic and not actor & critic
    shared = _rl.build_model(plain["hqlt"], env).policy
    assert shared.vf_memory is None and shared.pi_features_extractor is shared.vf_features_extractor


@pytest.mark.slow
def test_cue_signal_quick_mode_writes_table(tmp_path: Path) -> None:
    import cue_signal

    out = tmp_path / "cue_signal.json"
    cue_signal.main(["--quick", "--json", str(out)])
    rows = json.loads(out.read_text())["rows"]
    assert {(r["agent"], r["distractor"]) for r in rows} == {
        (a, d) for a in ("hqlt", "deltanet", "kv", "lstm") for d in (1, 30)
    }
    beyond = {r["agent"]: r["retention"][0] for r in rows if r["distractor"] == 30}
    assert beyond["kv"] == 0.0 and beyond["hqlt"] > 0.1 and beyond["deltanet"] > 0.1
    assert out.with_suffix(".md").read_text().count("\n") == len(rows) + 2


@pytest.mark.slow
def test_memory_speed_compiled_step_part(capsys: pytest.CaptureFixture[str]) -> None:
    import memory_speed
    import torch

    threads = torch.get_num_threads()
    try:
        memory_speed.main(["--quick", "--skip-a", "--skip-latency", "--threads", "1"])
    finally:
        torch.set_num_threads(threads)
    rows = [line.split() for line in capsys.readouterr().out.splitlines() if line.startswith("hqlt ")]
    assert len(rows) == 1
    eager_ms, compiled_ms, speed_up, _, diff = rows[0][1:]
    assert float(eager_ms) > 0 and float(compiled_ms) > 0 and speed_up.endswith("x")
    assert float(diff) < 1e-4  # the compiled rollout step gives the eager outputs
