"""train_rl.py / evaluate.py in process: train -> checkpoint -> resume -> evaluate, overrides, every error path.

Budgets are tiny (a 5-cell T-maze, a 1-layer d_model=16 memory, a few hundred steps): these check the plumbing,
not learning.
"""

from __future__ import annotations

import json
import math
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

import evaluate
import train_rl
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
)
from agents.runs import list_checkpoints, mean_ci, wilson_ci

TINY = [
    "env.kwargs.memory_length=5",
    "env.kwargs.time_limit=10",
    "memory.d_model=16",
    "memory.n_layers=1",
    "memory.n_heads=2",
    "memory.window=4",
    "memory.chunk_size=16",
    "n_envs=2",
    "vec_env=dummy",
    "ppo.n_steps=64",
    "ppo.seq_len=16",
    "ppo.batch_size=64",
    "ppo.n_epochs=1",
    "checkpoint_freq=128",
    "eval_freq=128",
    "eval_episodes=2",
    "progress_bar=false",
]


def _train(tmp_path: Path, name: str, *extra: str) -> tuple[int, Path]:
    run_dir = tmp_path / name
    rc = train_rl.main(["--preset", "tmaze_hqlt", *TINY, "total_timesteps=256", f"run_dir={run_dir}", *extra])
    return rc, run_dir


def _snapshot(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def trained_run(tmp_path_factory) -> Path:
    """One tiny run, trained to 256 steps then resumed to 512."""
    tmp = tmp_path_factory.mktemp("runs")
    rc, run_dir = _train(tmp, "base")
    assert rc == 0
    rc = train_rl.main(["--resume", str(run_dir), "total_timesteps=512"])
    assert rc == 0
    return run_dir


# ---------------------------------------------------------------------------------------------------------------------
# Config and overrides


def test_overrides_parse_to_typed_fields():
    cfg = resolve_config(
        "tmaze_hqlt",
        None,
        [
            "memory.window=8",
            "ppo.learning_rate=3e-4",
            "env.kwargs.memory_length=100",
            "total_timesteps=2e5",
            "policy.net_arch=64,32",
            "ppo.target_kl=none",
            "memory.rope=false",
            "memory.name=lstm",
            "seed=7",
        ],
    )
    assert cfg.memory.window == 8 and cfg.memory.name == "lstm" and cfg.memory.rope is False
    assert cfg.ppo.learning_rate == pytest.approx(3e-4) and isinstance(cfg.ppo.learning_rate, float)
    assert cfg.env.kwargs == {"memory_length": 100, "time_limit": 100}  # the preset's time_limit is kept
    assert cfg.total_timesteps == 200_000 and isinstance(cfg.total_timesteps, int)
    assert cfg.policy.net_arch == [64, 32]
    assert cfg.ppo.target_kl is None and cfg.seed == 7
    assert cfg.name == "tmaze_hqlt"  # presets are named after their file
    # the resolved config round-trips through YAML unchanged
    assert config_from_dict(yaml.safe_load(yaml.safe_dump(config_to_dict(cfg)))) == cfg


@pytest.mark.parametrize(
    "override, fragments",
    [
        ("memory.windw=3", ["memory.windw", "did you mean 'memory.window'", "allowed", "n_heads"]),
        ("nonsense=1", ["'nonsense'", "allowed", "total_timesteps"]),
        ("ppo.learning_rate=fast", ["ppo.learning_rate", "expects float", "'fast'"]),
        ("total_timesteps=1.5", ["total_timesteps", "expects int"]),
        ("memory.rope=maybe", ["memory.rope", "expects bool"]),
        ("memory.window", ["malformed override", "key=value"]),
        ("total_timesteps.x=1", ["total_timesteps", "no sub-field 'x'"]),
        ("memory.name=transformer", ["'name'", "transformer", "hqlt", "lstm"]),
        ("memory.n_heads=3", ["n_heads", "d_model"]),
        ("vec_env=threads", ["vec_env", "subproc", "dummy"]),
        ("ppo.lr_schedule=cosine", ["ppo.lr_schedule", "decay_on_success"]),
        ("ppo.lr_decay_threshold=2", ["ppo.lr_decay_threshold", "(0, 1]"]),
        ("ppo.memory_reset_prob=1.5", ["ppo.memory_reset_prob", "[0, 1]"]),
        ("ppo.ent_schedule=cosine", ["ppo.ent_schedule", "decay_on_success"]),
        ("ppo.ent_coef=-0.1", ["ppo.ent_coef", ">= 0"]),
    ],
)
def test_bad_overrides_name_the_field(override, fragments):
    with pytest.raises(ConfigError) as info:
        resolve_config("tmaze_hqlt", None, [override])
    for fragment in fragments:
        assert fragment in str(info.value)


def test_apply_override_leaves_untouched_fields():
    data = {"memory": {"window": 4}}
    apply_override(data, "memory.n_layers=3")
    apply_override(data, "env.kwargs.distractor_length=20")
    assert data == {"memory": {"window": 4, "n_layers": 3}, "env": {"kwargs": {"distractor_length": 20}}}


def test_every_preset_is_valid_and_builds_its_env():
    from agents.runs import make_env

    presets = list_presets()
    assert "tmaze_hqlt" in presets and len(presets) >= 5
    for name in presets:
        cfg = resolve_config(name)
        env = make_env(cfg.env.id, cfg.env.kwargs)
        env.close()
        assert train_rl.policy_name(cfg, env.observation_space).endswith("MemoryPolicy")


def test_help_documents_every_field(capsys):
    with pytest.raises(SystemExit) as info:
        train_rl.main(["--help"])
    assert info.value.code == 0
    text = capsys.readouterr().out
    leaves = [line.split()[0] for line in describe_fields() if line.startswith("  ")]
    assert len(leaves) > 40
    for key in leaves + ["memory.window", "ppo.learning_rate", "env.kwargs", "--resume", "--config", "--preset"]:
        assert key in text, key


def test_statistics_match_known_values():
    low, high = wilson_ci(0, 10)
    assert low == 0.0 and high == pytest.approx(0.2775, abs=1e-4)
    low, high = wilson_ci(8, 10)
    assert (low, high) == (pytest.approx(0.4902, abs=1e-4), pytest.approx(0.9433, abs=1e-4))
    stats = mean_ci([1.0, 2.0, 3.0, 4.0, 5.0])  # t(0.975, 4) = 2.776, s = 1.5811
    assert stats["mean"] == 3.0
    assert stats["ci95_high"] - 3.0 == pytest.approx(2.7764 * 1.5811 / math.sqrt(5), rel=1e-3)


# ---------------------------------------------------------------------------------------------------------------------
# Train -> checkpoint -> resume -> evaluate


def test_run_directory_holds_everything(trained_run):
    run_dir = trained_run
    for name in ("config.yaml", "model.zip", "best_model.zip", "evaluations.npz", "evaluations.json", "run.json"):
        assert (run_dir / name).is_file(), name
    steps = [s for s, _ in list_checkpoints(run_dir)]
    assert steps[0] == 128 and steps[-1] == 512 and 256 in steps
    assert list((run_dir / "logs").glob("events.out.tfevents.*")), "no TensorBoard event file"
    status = json.loads((run_dir / "run.json").read_text())
    assert status["status"] == "finished" and status["num_timesteps"] == 512
    assert [s["end_timesteps"] for s in status["segments"]] == [256, 512]
    # each segment says where it ran (a seed repeats a run bit for bit only on the same CPU kind and kernel level)
    for segment in status["segments"]:
        assert segment["device"] == "cpu"
        assert segment["machine"]["cpu_kernels"] == torch.backends.cpu.get_cpu_capability()
    cfg = load_config(run_dir / "config.yaml")
    assert cfg.total_timesteps == 512 and cfg.memory.window == 4 and cfg.env.kwargs == {"memory_length": 5, "time_limit": 10}


def test_logs_hold_sb3_keys_success_and_memory_diagnostics(trained_run):
    import csv

    first = list(csv.DictReader(open(trained_run / "logs" / "progress.csv")))
    resumed = list(csv.DictReader(open(next((trained_run / "logs").glob("progress-resumed-*.csv")))))
    keys = set(first[-1])
    for key in ("rollout/ep_rew_mean", "rollout/success_rate", "train/approx_kl", "time/fps", "memory/gate_mean",
                "eval/success_rate"):
        assert key in keys, key
    # the resumed segment continues the step count instead of restarting at 0
    assert int(first[-1]["time/total_timesteps"]) == 256
    assert [int(r["time/total_timesteps"]) for r in resumed] == [384, 512]
    evals = json.loads((trained_run / "evaluations.json").read_text())["evaluations"]
    assert [e["timesteps"] for e in evals] == [128, 256, 384, 512]
    with np.load(trained_run / "evaluations.npz") as data:
        assert data["timesteps"].tolist() == [128, 256, 384, 512] and data["successes"].shape == (4, 2)


def test_decay_on_success_schedule_survives_resume(tmp_path):
    """ppo.lr_schedule=decay_on_success: full rate until the trigger, then linear decay to 0 at total_timesteps, and a
    resumed run continues the same decay instead of restarting at the full rate."""
    import csv

    short = ["env.kwargs.memory_length=1", "env.kwargs.time_limit=4", "eval_freq=0", "ppo.learning_rate=0.001",
             "ppo.lr_schedule=decay_on_success", "ppo.lr_decay_threshold=0.01", "ppo.lr_decay_window=20"]
    rc, run_dir = _train(tmp_path, "decay", *short)  # 256 steps of episodes <= 4 steps: 20 episodes by step 128
    assert rc == 0
    assert train_rl.main(["--resume", str(run_dir), "total_timesteps=512"]) == 0
    logs = sorted((run_dir / "logs").glob("progress*.csv"))
    rows = [r for f in logs for r in csv.DictReader(open(f))]
    start = next(int(float(r["train/lr_decay_start"])) for r in rows if r.get("train/lr_decay_start"))
    rows = sorted((r for r in rows if r.get("train/learning_rate")), key=lambda r: int(r["time/total_timesteps"]))
    assert [int(r["time/total_timesteps"]) for r in rows] == [256, 512]  # a resumed log starts before its first update
    for r in rows:
        step = int(r["time/total_timesteps"])  # SB3 logs an update in the next row: its rate is from 128 steps earlier
        want = 1e-3 if step - 128 <= start else 1e-3 * (1 - (step - 128 - start) / (512 - start))
        assert float(r["train/learning_rate"]) == pytest.approx(want, rel=1e-6), (step, start)
    assert start == 128 and int(rows[-1]["time/total_timesteps"]) == 512
    assert json.loads((run_dir / "run.json").read_text())["lr_decay_start"] == 128


def test_entropy_schedules(tmp_path):
    """ppo.ent_schedule: linear -> a schedule from ppo.ent_coef to 0; decay_on_success -> the full coefficient until
    the trigger, then linear decay to 0 at total_timesteps (the learning rate untouched unless its own schedule asks)."""
    import csv

    from stable_baselines3.common.utils import LinearSchedule

    cfg = resolve_config("tmaze_hqlt", None, ["ppo.ent_schedule=linear", "ppo.ent_coef=0.02"])
    ent = train_rl.ppo_kwargs(cfg)["ent_coef"]
    assert isinstance(ent, LinearSchedule) and (ent(1.0), ent(0.5), ent(0.0)) == pytest.approx((0.02, 0.01, 0.0))
    short = ["env.kwargs.memory_length=1", "env.kwargs.time_limit=4", "eval_freq=0", "ppo.learning_rate=0.001",
             "ppo.lr_schedule=constant", "ppo.ent_coef=0.02", "ppo.ent_schedule=decay_on_success",
             "ppo.lr_decay_threshold=0.01", "ppo.lr_decay_window=20"]
    rc, run_dir = _train(tmp_path, "entdecay", *short, "total_timesteps=512")
    assert rc == 0
    status = json.loads((run_dir / "run.json").read_text())
    assert status["ent_coef_decay_start"] == 128 and status["lr_decay_start"] is None
    rows = [r for r in csv.DictReader(open(run_dir / "logs" / "progress.csv")) if r.get("train/ent_coef")]
    for r in rows:
        step = int(r["time/total_timesteps"])  # an update is logged in the next row: from 128 steps earlier
        want = 0.02 if step - 128 <= 128 else 0.02 * (1 - (step - 128 - 128) / (512 - 128))
        assert float(r["train/ent_coef"]) == pytest.approx(want, rel=1e-6), step
        assert float(r["train/learning_rate"]) == pytest.approx(1e-3)
    assert len(rows) >= 3


def test_resume_restores_rng_state_exactly(tmp_path):
    """Resuming from the same checkpoint twice gives identical models: RNG streams come from the checkpoint."""
    import shutil

    rc, run_dir = _train(tmp_path, "a", "eval_freq=0")
    assert rc == 0
    twin = tmp_path / "b"
    shutil.copytree(run_dir, twin)
    for folder in (run_dir, twin):
        assert train_rl.main(["--resume", str(folder), "total_timesteps=384"]) == 0
    params = [train_rl.load_model(folder / "model.zip").policy.state_dict() for folder in (run_dir, twin)]
    assert all(bool((params[0][k] == params[1][k]).all()) for k in params[0])


def test_config_file_repeats_a_run_exactly(tmp_path, trained_run, capsys):
    source = tmp_path / "src"
    assert _train(tmp_path, "src")[0] == 0
    # the saved config names its own run directory: repeating into it is refused, nothing overwritten
    before = _snapshot(source)
    assert train_rl.main(["--config", str(source / "config.yaml")]) == 2
    assert "this same run" in capsys.readouterr().err
    assert _snapshot(source) == before
    assert train_rl.main(["--config", str(source / "config.yaml"), f"run_dir={tmp_path / 'again'}"]) == 0
    a = train_rl.load_model(source / "model.zip").policy.state_dict()
    b = train_rl.load_model(tmp_path / "again" / "model.zip").policy.state_dict()
    assert all(bool((a[k] == b[k]).all()) for k in a)


def test_evaluate_reports_success_by_episode_of_the_trial(tmp_path, capsys):
    """On a trials task run_episodes records each episode's place in its trial (info["trial_episode"]), and the
    summary and the printed table give the success of the 1st, 2nd, ... episode of a trial; other envs get none."""
    from agents.runs import EpisodeResults, make_vec_env, run_episodes, summarize

    class Always:  # one action throughout: every episode ends, by a turn or by the time limit
        def predict(self, obs, state=None, episode_start=None, deterministic=True):
            return np.full(len(obs), 0), state

    venv = make_vec_env("hqlt/TMazeTrials-v0", {"memory_length": 2, "episodes_per_trial": 3}, 2, 0)
    try:
        results = run_episodes(Always(), venv, 12)
    finally:
        venv.close()
    assert sorted(results.trial_episodes) == [0, 0, 0, 0, 1, 1, 1, 1, 2, 2, 2, 2]
    made = EpisodeResults([1.0, 0.0, 1.0, 1.0], [3, 3, 3, 3], [1.0, 0.0, 1.0, 1.0], [0, 1, 0, 1])
    summary = summarize(made)
    by_trial = summary["success_by_trial_episode"]
    assert [(p["trial_episode"], p["rate"], p["n"]) for p in by_trial] == [(1, 1.0, 2), (2, 0.5, 2)]
    assert by_trial[1]["ci95_low"] < 0.5 < by_trial[1]["ci95_high"]
    table = evaluate.format_table([{"target": "run", "env": {"id": "e", "kwargs": {}}, "memory": "hqlt",
                                    "trained_timesteps": 1, **summary}])
    assert "run: success by episode of the trial (1st, 2nd, ...): 1.00 [" in table and "], 0.50 [" in table
    assert "success_by_trial_episode" not in summarize(EpisodeResults([1.0], [3], [1.0], [None]))


def test_evaluate_writes_json_gif_and_png(trained_run, tmp_path, capsys):
    import imageio.v3 as iio

    out_json, out_gif, out_png = tmp_path / "e.json", tmp_path / "e.gif", tmp_path / "e.png"
    rc = evaluate.main([str(trained_run), "--episodes", "5", "--json", str(out_json), "--gif", str(out_gif),
                        "--plot", str(out_png)])
    assert rc == 0
    table = capsys.readouterr().out
    assert "success [95% CI]" in table and str(trained_run) in table
    result = json.loads(out_json.read_text())["results"][0]
    assert result["episodes"] == 5 and len(result["per_episode"]["returns"]) == 5
    assert result["trained_timesteps"] == 512 and result["env"]["kwargs"] == {"memory_length": 5, "time_limit": 10}
    success = result["success"]
    assert success["n"] == 5 and success["ci95_low"] <= success["rate"] <= success["ci95_high"]
    assert result["return"]["mean"] == pytest.approx(np.mean(result["per_episode"]["returns"]))
    frames = iio.imread(out_gif, index=None)
    # (the GIF writer merges identical consecutive frames, so it may hold fewer than were rendered)
    assert frames.ndim == 4 and 1 < frames.shape[0] <= result["gif"]["frames"]
    image = iio.imread(out_png)
    assert image.ndim == 3 and image.shape[0] > 100 and image.shape[1] > 100


def test_evaluate_compares_several_runs(trained_run, tmp_path, capsys):
    ckpt = list_checkpoints(trained_run)[0][1]
    rc = evaluate.main([str(trained_run), str(ckpt), "--episodes", "2", "--json", str(tmp_path / "c.json")])
    assert rc == 0
    results = json.loads((tmp_path / "c.json").read_text())["results"]
    assert [r["trained_timesteps"] for r in results] == [512, 128]
    table = [line for line in capsys.readouterr().out.splitlines() if line and not line.startswith("json:")]
    assert len(table) == 4  # header, rule, one row per target


def test_ctrl_c_saves_a_checkpoint_then_resume_finishes(tmp_path, monkeypatch, capsys):
    original = train_rl.SuccessAndProgress._on_step

    def interrupt(self):
        if self.num_timesteps >= 150:
            raise KeyboardInterrupt
        return original(self)

    monkeypatch.setattr(train_rl.SuccessAndProgress, "_on_step", interrupt)
    rc, run_dir = _train(tmp_path, "int")
    assert rc == 130
    assert "--resume" in capsys.readouterr().err
    steps = [s for s, _ in list_checkpoints(run_dir)]
    assert steps[-1] == 150 and json.loads((run_dir / "run.json").read_text())["status"] == "interrupted"
    monkeypatch.setattr(train_rl.SuccessAndProgress, "_on_step", original)
    assert train_rl.main(["--resume", str(run_dir)]) == 0
    # SB3 finishes the rollout it is in: 150 + k * 128 steps (n_steps * n_envs) with k the fewest that reach 256
    assert train_rl.load_model(run_dir / "model.zip").num_timesteps == 278


def test_vecnormalize_stats_are_checkpointed_and_resumed(tmp_path):
    rc, run_dir = _train(tmp_path, "norm", "normalize_reward=true", "eval_freq=0")
    assert rc == 0
    assert sorted(p.name for p in (run_dir / "checkpoints").glob("*.vecnormalize.pkl")) == [
        "step_000000128.vecnormalize.pkl",
        "step_000000256.vecnormalize.pkl",
    ]
    assert train_rl.main(["--resume", str(run_dir), "total_timesteps=384"]) == 0
    assert (run_dir / "checkpoints" / "step_000000384.vecnormalize.pkl").is_file()


def test_subprocess_envs(tmp_path):
    rc, run_dir = _train(tmp_path, "sub", "vec_env=subproc", "eval_freq=0", "checkpoint_freq=0")
    assert rc == 0 and (run_dir / "model.zip").is_file()


# ---------------------------------------------------------------------------------------------------------------------
# Error paths: clear message, exit status 2, nothing written


@pytest.mark.parametrize(
    "override, fragments",
    [
        ("env.id=hqlt/PassiveTMazee-v0", ["unknown environment id", "env.id", "hqlt/PassiveTMaze-v0"]),
        ("env.kwargs.corridor=3", ["env.kwargs", "corridor"]),
        ("memory.name=transformer", ["'name'", "allowed"]),
        ("ppo.learning_rate=", ["ppo.learning_rate", "float"]),
        ("ppo.batch_size=50", ["batch_size", "seq_len"]),
    ],
)
def test_bad_input_exits_2_and_writes_nothing(tmp_path, capsys, override, fragments):
    rc, run_dir = _train(tmp_path, "bad", override)
    assert rc == 2
    err = capsys.readouterr().err
    for fragment in fragments:
        assert fragment in err
    assert not run_dir.exists()


def test_run_dir_holding_another_run_is_left_untouched(trained_run, capsys):
    before = _snapshot(trained_run)
    rc = train_rl.main(["--preset", "tmaze_hqlt", *TINY, "seed=5", f"run_dir={trained_run}"])
    assert rc == 2
    err = capsys.readouterr().err
    assert "a different run" in err and "--resume" in err
    assert _snapshot(trained_run) == before


def test_resume_refuses_to_change_the_run(trained_run, capsys):
    before = _snapshot(trained_run)
    assert train_rl.main(["--resume", str(trained_run), "memory.window=8"]) == 2
    assert "cannot change 'memory.window'" in capsys.readouterr().err
    assert _snapshot(trained_run) == before


def test_evaluate_errors(trained_run, tmp_path, capsys):
    assert evaluate.main([str(tmp_path / "missing")]) == 2
    assert "does not exist" in capsys.readouterr().err

    corrupt = tmp_path / "corrupt.zip"
    corrupt.write_bytes(b"not a zip at all")
    assert evaluate.main([str(corrupt), "--env", "hqlt/PassiveTMaze-v0"]) == 2
    assert "corrupt" in capsys.readouterr().err

    truncated = tmp_path / "run" / "model.zip"
    truncated.parent.mkdir()
    (truncated.parent / "config.yaml").write_text((trained_run / "config.yaml").read_text())
    data = (trained_run / "model.zip").read_bytes()
    truncated.write_bytes(data[: len(data) // 2])
    assert evaluate.main([str(truncated.parent), "--episodes", "1"]) == 2
    assert "model.zip" in capsys.readouterr().err

    foreign = tmp_path / "foreign.zip"
    with zipfile.ZipFile(foreign, "w") as archive:
        archive.writestr("hello.txt", "hi")
    assert evaluate.main([str(foreign), "--env", "hqlt/PassiveTMaze-v0"]) == 2
    assert "not a saved model" in capsys.readouterr().err

    assert evaluate.main([str(trained_run), "--env", "hqlt/PassiveVisualMatchShort-v0", "--episodes", "1"]) == 2
    assert "incompatible" in capsys.readouterr().err

    assert evaluate.main([str(trained_run / "model.zip"), "--episodes", "1", "--env", "hqlt/Nope-v0"]) == 2
    assert "unknown environment id" in capsys.readouterr().err


def test_config_dataclass_rejects_bad_values_directly():
    with pytest.raises(ValueError, match="n_envs"):
        TrainConfig(n_envs=0)
