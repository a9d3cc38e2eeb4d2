"""benchmarks/greedy_check.py: playing T-Maze episodes with actions sampled or greedy by part of the episode, from a
fresh or a given memory state; and run_one's saved model and memory state."""

from __future__ import annotations

import dataclasses
import json
import math
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))

import _rl  # noqa: E402
import greedy_check  # noqa: E402

TINY = dict(d_model=16, n_layers=1, n_heads=2, window=4)
TMAZE = _rl.RunSpec(task="t", env_id="hqlt/PassiveTMaze-v0", env_kwargs={"memory_length": 3, "time_limit": 6},
                    agent="hqlt", seed=0, total_timesteps=1, memory_kwargs=TINY, n_envs=2)


def _model_with_fixed_probabilities(spec: _rl.RunSpec, logits: list[float]):
    """A MemoryPPO whose policy gives the same action probabilities (softmax of ``logits``) at every step."""
    from stable_baselines3.common.env_util import make_vec_env

    import envs  # noqa: F401

    env = make_vec_env(spec.env_id, n_envs=spec.n_envs, env_kwargs=spec.env_kwargs)
    model = _rl.build_model(spec, env)
    with torch.no_grad():
        model.policy.action_net.weight.zero_()
        model.policy.action_net.bias.copy_(torch.tensor(logits))
    return model


def test_play_reports_how_episodes_end_and_the_probabilities_seen():
    """Stepping right the most likely action everywhere: greedily every episode walks the 3 corridor steps
    and then stays at the junction until the time limit (6 steps); the probabilities are the softmax's."""
    logits = [2.0, 3.0, 2.0, 0.0]  # right most likely (0.56), each turn 0.21
    p = torch.softmax(torch.tensor(logits), 0).tolist()
    model = _model_with_fixed_probabilities(TMAZE, logits)
    way = greedy_check.play(model, TMAZE, n_episodes=20, seed=5, corridor="greedy", junction="greedy")
    assert (way["episodes"], way["success"], way["wrong_arm"], way["time_out"]) == (20, 0.0, 0.0, 1.0)
    assert (way["reached_junction"], way["corridor_steps"], way["junction_steps"]) == (1.0, 3.0, 3.0)
    assert way["first_junction"] == pytest.approx(
        {"p_correct": p[0], "p_wrong": p[2], "p_stay": p[1] + p[3], "argmax_correct": 0.0})
    assert way["corridor_p_right"] == pytest.approx({"mean": p[1], "min": p[1], "argmax_not_right": 0.0, "steps": 60})
    assert _rl.evaluate_greedy(model, TMAZE, 20, seed=5)["success"] == way["success"]
    # the sweeps' sampled evaluation: the same episodes with sampled actions turn sometimes, reproducibly
    sampled = _rl.evaluate_greedy(model, TMAZE, 40, seed=5, deterministic=False)
    assert sampled["success"] > 0 and sampled == _rl.evaluate_greedy(model, TMAZE, 40, seed=5, deterministic=False)
    # sampling at the junction turns some time: a right or a wrong turn (the cue is random), or still the time limit
    mixed = greedy_check.play(model, TMAZE, 40, seed=5, corridor="greedy", junction="sample", sample_seed=1)
    assert math.isclose(mixed["success"] + mixed["wrong_arm"] + mixed["time_out"], 1.0)
    assert mixed["success"] > 0 and mixed["wrong_arm"] > 0 and mixed["junction_steps"] < 3.0
    assert mixed == greedy_check.play(model, TMAZE, 40, seed=5, corridor="greedy", junction="sample", sample_seed=1)
    assert [e[0] for e in mixed["per_episode"]] == [3] * 40  # corridor steps of each episode


def test_play_when_the_greedy_policy_never_leaves_the_start():
    model = _model_with_fixed_probabilities(TMAZE, [4.0, 0.0, 0.0, 0.0])  # "up": does nothing in the corridor
    way = greedy_check.play(model, TMAZE, n_episodes=10, seed=0, corridor="greedy", junction="sample")
    assert (way["time_out"], way["reached_junction"], way["corridor_steps"]) == (1.0, 0.0, None)
    assert way["first_junction"] == dict.fromkeys(("p_correct", "p_wrong", "p_stay", "argmax_correct"))
    assert way["corridor_p_right"]["argmax_not_right"] == 1.0


def test_play_and_evaluate_greedy_start_from_a_given_state_with_its_envs():
    model = _model_with_fixed_probabilities(TMAZE, [0.0, 1.0, 0.5, 0.5])
    state = model.policy.initial_state(4)
    way = greedy_check.play(model, TMAZE, n_episodes=8, seed=0, corridor="sample", junction="sample", start_state=state)
    assert way["episodes"] == 8
    assert _rl.evaluate_greedy(model, TMAZE, 8, seed=0, start_state=state)["episodes"] == 8
    with pytest.raises(ValueError, match="'sample' or 'greedy'"):
        greedy_check.play(model, TMAZE, 4, seed=0, corridor="random", junction="greedy")
    other = _rl.RunSpec(task="t", env_id="CartPole-v1", agent="hqlt", seed=0, total_timesteps=1)
    with pytest.raises(ValueError, match="not a T-Maze task"):
        greedy_check.play(model, other, 4, seed=0, corridor="greedy", junction="greedy")


def test_run_one_saves_the_model_and_the_carried_memory_state_and_evaluates_from_it(tmp_path):
    """A memory carried across episodes: run_one saves the model and the training envs' last memory state, and
    evaluates greedily from that state as well as from a fresh one; greedy_check analyses the saved pair."""
    from agents import MemoryPPO
    from agents.policies import state_leaves

    ppo = dict(n_steps=16, seq_len=8, batch_size=16, n_epochs=1, learning_rate=1e-3)
    spec = _rl.RunSpec(task="trials", env_id="hqlt/TMazeTrials-v0", env_kwargs={"memory_length": 4,
                       "episodes_per_trial": 4}, agent="hqlt", seed=0, total_timesteps=64, n_envs=2, ppo=ppo,
                       memory_kwargs={**TINY, "carry_fw_across_episodes": True}, eval_episodes=8)
    record = _rl.run_one(spec, save_to=tmp_path / "run.zip")
    state_file = _rl.memory_state_file(tmp_path / "run.zip")
    assert record["model_file"] == str(tmp_path / "run.zip") and record["memory_state_file"] == str(state_file)
    state = torch.load(state_file, weights_only=False)
    assert state.prev_action.shape[0] == 2
    assert any(float(leaf.abs().sum()) > 0 for leaf in state_leaves(state.actor) if leaf is not None)
    assert record["eval"]["episodes"] == 8 and record["eval_from_trained_state"]["episodes"] == 8
    assert record["eval_sampled"]["episodes"] == 8
    MemoryPPO.load(tmp_path / "run.zip", device="cpu")
    reset = _rl.run_one(dataclasses.replace(spec, memory_kwargs=TINY))  # nothing saved, nothing carried
    assert "eval_from_trained_state" not in reset and "model_file" not in reset

    # trained further with another entropy coefficient, from the saved model, on fresh envs of the same spec
    model, state, done = greedy_check.continue_training(tmp_path / "run.zip", spec, 32, ent_coef=0.0)
    assert (model.ent_coef, done["steps"], done["ent_coef"], done["env_seed"]) == (0.0, 32, 0.0, 20_000)
    assert model.num_timesteps > 64 and state.prev_action.shape[0] == 2

    out = tmp_path / "check"
    result = greedy_check.main(["--task", "trials", "--model", str(tmp_path / "run.zip"), "--episodes", "40",
                                "--out", str(out)])
    assert [(w["start"], w["corridor"], w["junction"]) for w in result["ways"]] == list(greedy_check.WAYS)
    assert all(w["episodes"] == 40 and len(w["success_by_trial_episode"]) == 4 for w in result["ways"])
    saved = json.loads((out / "trials-L4-K4_hqlt-carry_seed0.json").read_text())
    assert saved["ways"] == json.loads(json.dumps(result["ways"]))
    text = (out / "trials-L4-K4_hqlt-carry_seed0.md").read_text()
    assert text.count("\n| fresh |") == 4 and text.count("\n| trained |") == 2


def test_greedy_check_refuses_what_it_cannot_check(tmp_path):
    with pytest.raises(SystemExit, match="no such file"):
        greedy_check.main(["--model", str(tmp_path / "missing.zip"), "--out", str(tmp_path)])
    with pytest.raises(SystemExit, match="only our MemoryPPO agents"):
        greedy_check.main(["--task", "tmaze", "--agent", "rppo", "--out", str(tmp_path)])
    with pytest.raises(SystemExit, match="--variant 'carry' is unknown"):
        greedy_check.main(["--variant", "carry", "--out", str(tmp_path)])
    (tmp_path / "bad.zip").write_bytes(b"not a zip")
    with pytest.raises(SystemExit, match="not a MemoryPPO model"):
        greedy_check.main(["--model", str(tmp_path / "bad.zip"), "--out", str(tmp_path)])
    with pytest.raises(SystemExit):
        greedy_check.main(["--continue-steps", "-5", "--out", str(tmp_path)])


def test_tmaze_spec_is_the_sweeps_own_with_its_schedules():
    from argparse import Namespace

    from memory_length import tmaze_specs

    args = Namespace(task="tmaze", agent="deltanet", length=64, seed=3, quick=False, budget_scale=1.0, mixer_bias=0.0,
                     lr_schedule="constant", ent_schedule="decay_on_success")
    spec = greedy_check.build_spec(args)
    assert spec.key == "tmaze-L64/deltanet-entdecay-success/seed3"
    assert spec == tmaze_specs([64], ["deltanet"], [3], False, ent_schedule="decay_on_success")[0]


@pytest.mark.slow
def test_quick_mode_matches_the_sweeps_greedy_evaluation(tmp_path):
    """Trained in-process as cross_episode.py --quick trains: greedy everywhere from a fresh state gives the run's own
    greedy evaluation, and from the trained state the run's evaluation from that state."""
    result = greedy_check.main(["--quick", "--out", str(tmp_path)])
    ways = {(w["start"], w["corridor"], w["junction"]): w for w in result["ways"]}
    assert ways["fresh", "greedy", "greedy"]["success"] == result["train"]["eval"]["success"]
    assert ways["trained", "greedy", "greedy"]["success"] == result["train"]["eval_from_trained_state"]["success"]
    assert np.isclose(sum(ways["fresh", "sample", "sample"][k] for k in ("success", "wrong_arm", "time_out")), 1.0)
