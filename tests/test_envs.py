"""Tests for envs/ and agents/extractors.py: API conformance, oracles solve, memoryless agents are at chance, trials."""

from __future__ import annotations

import math
import warnings
from collections import Counter, defaultdict

import gymnasium as gym
import numpy as np
import pytest
from gymnasium import spaces
from gymnasium.envs.registration import load_env_creator
from gymnasium.utils.env_checker import check_env

import envs
from envs import (
    HiddenGoalTMaze,
    MiniGridMemory,
    PassiveTMaze,
    PassiveVisualMatch,
    TrialsWrapper,
    make_minigrid_memory,
    make_tmaze_trials,
    minigrid_memory_optimal_action,
)
from envs.tmaze import DOWN, LEFT, RIGHT, UP
from envs.visual_match import RECALL_PHASE


def _raw(env_id: str, **kwargs) -> gym.Env:
    """The env an id's entry point builds, without gymnasium.make's wrappers."""
    spec = gym.spec(env_id)
    return load_env_creator(spec.entry_point)(**{**spec.kwargs, **kwargs})


def _oracle(env: gym.Env) -> int:
    base = env.unwrapped
    return minigrid_memory_optimal_action(env) if hasattr(base, "success_pos") else base.optimal_action()


# ---------------------------------------------------------------------------------------------------------------------
# API conformance
# ---------------------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("env_id", envs.ENV_IDS)
def test_check_env_and_render(env_id):
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*is different from the unwrapped version.*")
        warnings.filterwarnings("ignore", message=".*Not able to test alternative render modes.*")
        check_env(_raw(env_id))
        check_env(gym.make(env_id))
    env = gym.make(env_id, render_mode="rgb_array")
    env.reset(seed=0)
    for _ in range(3):
        frame = env.render()
        assert frame.dtype == np.uint8 and frame.ndim == 3 and frame.shape[2] == 3 and min(frame.shape[:2]) >= 8
        env.step(env.action_space.sample())


@pytest.mark.parametrize("env_id", envs.ENV_IDS)
def test_seeding_is_reproducible(env_id):
    def rollout(seed):
        env = gym.make(env_id)
        actions = np.random.default_rng(7).integers(env.action_space.n, size=1500)
        obs, _ = env.reset(seed=seed)
        trace = [obs.tobytes()]
        for a in actions:
            obs, r, term, trunc, info = env.step(int(a))
            trace.append((obs.tobytes(), r, term, trunc, info.get("success")))
            if term or trunc:
                obs, _ = env.reset()
                trace.append(obs.tobytes())
        return trace

    assert rollout(3) == rollout(3)
    assert rollout(3) != rollout(4)


def test_time_limits_truncate_not_terminate():
    env = PassiveTMaze(memory_length=5)
    env.reset(seed=0)
    for t in range(1, 7):
        _, r, term, trunc, info = env.step(LEFT)
        assert not term and r == pytest.approx(-1 / 5)
        assert trunc == (t == 6)
    assert info["success"] is False

    env = PassiveVisualMatch(cue_length=3, distractor_length=4, final_time_limit=9)
    env.reset(seed=0)
    steps, done = 0, False
    while not done:
        _, _, term, trunc, info = env.step(2)  # south: into the wall in the recall room
        steps += 1
        done = term or trunc
    # The recall deadline is a terminal failure (no bootstrap), not a time-limit truncation.
    assert (term, trunc, steps, info["success"]) == (True, False, 3 + 4 + 9, False)

    env = make_minigrid_memory(size=7, max_steps=5)
    env.reset(seed=0)
    for t in range(1, 6):
        _, _, term, trunc, info = env.step(0)  # turning in place never ends an episode
        assert not term and trunc == (t == 5)
    assert info["success"] is False


# ---------------------------------------------------------------------------------------------------------------------
# The oracle solves every env; info["success"] comes exactly at episode ends
# ---------------------------------------------------------------------------------------------------------------------
SOLVE_CASES = [
    ("hqlt/PassiveTMaze-v0", 50),
    ("hqlt/PassiveTMazeL100-v0", 50),
    ("hqlt/HiddenGoalTMaze-v0", 50),
    ("hqlt/TMazeTrials-v0", 50),
    ("hqlt/PassiveVisualMatch-v0", 50),
    ("hqlt/MiniGridMemoryS7-v0", 50),
    ("hqlt/MiniGridMemoryS9View3-v0", 30),
    ("hqlt/MiniGridMemoryS13-v0", 20),
    ("hqlt/MiniGridMemoryS13Random-v0", 20),
]


@pytest.mark.parametrize("env_id,episodes", SOLVE_CASES)
def test_oracle_solves(env_id, episodes):
    env = gym.make(env_id)
    env.reset(seed=1)
    successes, returns = [], []
    for _ in range(episodes):
        ret, done = 0.0, False
        while not done:
            obs, r, term, trunc, info = env.step(_oracle(env))
            ret += r
            done = term or trunc
            assert ("success" in info) == done
        assert term and not trunc
        successes.append(info["success"])
        returns.append(ret)
        env.reset()
    assert np.mean(successes) == 1.0
    if "TMaze" in env_id:
        assert np.allclose(returns, 1.0)  # no step penalties on the optimal path
    if "VisualMatch" in env_id:
        assert min(returns) >= 100.0


def test_tmaze_cue_only_at_first_step():
    env = PassiveTMaze(memory_length=6)
    for seed in range(20):
        obs, _ = env.reset(seed=seed)
        assert obs[:2].sum() == 1 and obs[env.cue] == 1
        for a in [RIGHT, LEFT, RIGHT, RIGHT, UP, RIGHT, RIGHT, RIGHT]:
            obs, *_ = env.step(a)
            assert obs[:2].sum() == 0


def test_visual_match_apples_respawn():
    env = PassiveVisualMatch(cue_length=1, distractor_length=200, n_apples=1, apple_respawn=20)
    env.reset(seed=5)
    env.step(0)  # leaves the cue room
    (ar, ac), total = env._apple_rc[0], 0.0
    while (env.r, env.c) != (ar, ac):
        a = 2 if env.r < ar else 0 if env.r > ar else 1 if env.c < ac else 3
        _, r, *_ = env.step(a)
        total += r
    assert total == 1.0 and env._grid[ar, ac, 0] == 0  # eaten
    back = 3 if env._grid[ar, ac - 1, 0] != 1 else 1  # step off the apple's cell, then stand still against a wall
    env.step(back)
    rewards = []
    for _ in range(25):
        _, r, *_ = env.step(back)
        rewards.append(r)
    assert sum(rewards) == 0.0 and env._grid[ar, ac, 0] == 2  # back after 20 steps, not eaten again


# ---------------------------------------------------------------------------------------------------------------------
# Memoryless policies are at chance on the recall step
# ---------------------------------------------------------------------------------------------------------------------
def _best_fixed_policy_accuracy(keys: list, answers: list) -> float:
    """Held-out accuracy of the best map key -> answer fitted on the first half of the data (unbiased)."""
    half = len(keys) // 2
    counts: dict = defaultdict(Counter)
    for k, a in zip(keys[:half], answers[:half]):
        counts[k][a] += 1
    policy = {k: c.most_common(1)[0][0] for k, c in counts.items()}
    test = list(zip(keys[half:], answers[half:]))
    return sum(policy.get(k) == a for k, a in test) / len(test)


def _tmaze_decisions(n: int):
    env = PassiveTMaze(memory_length=3)
    env.reset(seed=11)
    first, junction, answer = [], [], []
    for _ in range(n):
        obs, _ = env.reset()
        first.append(obs.tobytes())
        while env.x < env.memory_length:
            obs, *_ = env.step(RIGHT)
        junction.append(obs.tobytes())  # what a memoryless agent sees when it must turn
        answer.append(env.optimal_action())
    return first, junction, answer


def _visual_match_decisions(n: int):
    env = PassiveVisualMatch(cue_length=1, distractor_length=1, n_colours=3)
    env.reset(seed=12)
    first, recall, answer = [], [], []
    for _ in range(n):
        obs, _ = env.reset()
        first.append(obs.tobytes())
        env.step(0)
        env.step(0)
        assert env.phase == RECALL_PHASE
        # The whole recall room (not only a view) as the key: more than a memoryless agent can ever see there.
        recall.append(env.square_colours)
        answer.append(env.square_colours.index(env.cue_colour))
    return first, recall, answer


def _tmaze_trials_decisions(n: int):
    """Episodes 2..K of TMazeTrials: everything seen in the episode before the turn vs what the previous one showed."""
    env = make_tmaze_trials(memory_length=3, episodes_per_trial=4)
    obs, info = env.reset(seed=13)
    previous, within, answer = [], [], []
    last_outcome = b""
    while len(answer) < n:
        seen = [obs.tobytes()]
        while obs[0] != 1.0:  # walk to the junction
            obs, *_ = env.step(RIGHT)
            seen.append(obs.tobytes())
        if info["trial_episode"] > 0:
            previous.append(last_outcome)
            within.append(b"".join(seen))
            answer.append(env.unwrapped.goal_side)
        done = False
        while not done:
            obs, _, term, trunc, info = env.step(env.unwrapped.optimal_action())
            if obs[1] or obs[2]:
                last_outcome = obs.tobytes()  # the arm it went to and whether the goal was there
            done = term or trunc
        obs, info = env.reset()
    return previous, within, answer


@pytest.mark.parametrize(
    "collect,chance",
    [(_tmaze_decisions, 1 / 2), (_visual_match_decisions, 1 / 3), (_tmaze_trials_decisions, 1 / 2)],
    ids=["tmaze", "visual_match", "tmaze_trials_within_episode"],
)
def test_memoryless_policy_is_at_chance(collect, chance):
    n = 4000
    first, at_recall, answer = collect(n)
    sigma = math.sqrt(chance * (1 - chance) / (n // 2))
    acc = _best_fixed_policy_accuracy(at_recall, answer)
    assert acc < chance + 4 * sigma, f"memoryless accuracy {acc:.3f} vs chance {chance:.3f}"
    # Control: with the first observation (the cue) remembered, the same fit finds the answer every time.
    assert _best_fixed_policy_accuracy(list(zip(first, at_recall)), answer) == 1.0


# ---------------------------------------------------------------------------------------------------------------------
# Trials
# ---------------------------------------------------------------------------------------------------------------------
def test_trials_keep_the_task_within_a_trial_and_change_it_between():
    k, n_trials = 4, 40
    env = gym.make("hqlt/TMazeTrials-v0", episodes_per_trial=k)
    obs, info = env.reset(seed=0)
    sides, flags, indices = [], [], []
    for _ in range(k * n_trials):
        sides.append(env.unwrapped.goal_side)
        flags.append(obs[-1])
        indices.append(info["trial_episode"])
        done = False
        while not done:
            obs, _, term, trunc, info = env.step(env.unwrapped.optimal_action())
            assert info["trial_episode"] == indices[-1] and obs[-1] == 0.0
            done = term or trunc
        obs, info = env.reset()
    per_trial = np.array(sides).reshape(n_trials, k)
    assert (per_trial == per_trial[:, :1]).all()  # fixed within each trial
    assert 8 <= per_trial[:, 0].sum() <= 32  # both sides drawn across trials (Binomial(40, 1/2))
    assert (np.diff(per_trial[:, 0]) != 0).any()
    assert indices == list(range(k)) * n_trials
    assert flags == [1.0 if i == 0 else 0.0 for i in indices]


def test_trials_wrapper_on_visual_match_and_reseeding():
    env = TrialsWrapper(PassiveVisualMatch(cue_length=2, distractor_length=3), episodes_per_trial=3)
    cues = []
    env.reset(seed=4)
    for _ in range(30):
        cues.append(env.unwrapped.cue_colour)
        env.reset()
    per_trial = np.array(cues).reshape(10, 3)
    assert (per_trial == per_trial[:, :1]).all() and len(set(per_trial[:, 0])) > 1
    env.reset(seed=4)  # a seeded reset restarts the trial sequence
    again = [env.unwrapped.cue_colour]
    for _ in range(2):
        env.reset()
        again.append(env.unwrapped.cue_colour)
    assert again == cues[:3]
    _, info = env.reset(options={"new_trial": True})
    assert info["trial_episode"] == 0


def test_cross_episode_memory_pays_off_in_trials():
    """A scripted agent that remembers the last outcome across episodes solves episodes 2..K; within-episode
    memory alone cannot beat 50 %, because nothing in an episode reveals the side before the turn."""
    k = 4
    env = make_tmaze_trials(memory_length=3, episodes_per_trial=k)
    obs, info = env.reset(seed=9)
    success = defaultdict(list)
    remembered = None
    for _ in range(k * 150):
        if obs[-1] == 1.0:
            remembered = None  # new trial: forget
        done = False
        while not done:
            if obs[0] == 1.0:  # at the junction
                action = UP if remembered in (None, 0) else DOWN
            else:
                action = RIGHT
            obs, _, term, trunc, info = env.step(action)
            if obs[1] or obs[2]:  # in an arm: see whether the goal was there
                arm = 0 if obs[1] else 1
                remembered = arm if obs[3] else 1 - arm
            done = term or trunc
        success[info["trial_episode"]].append(info["success"])
        obs, info = env.reset()
    assert abs(np.mean(success[0]) - 0.5) < 4 * math.sqrt(0.25 / 150)
    for i in range(1, k):
        assert np.mean(success[i]) == 1.0


# ---------------------------------------------------------------------------------------------------------------------
# Validation
# ---------------------------------------------------------------------------------------------------------------------
BAD_KWARGS = [
    (PassiveTMaze, {"memory_length": 0}, "memory_length"),
    (PassiveTMaze, {"memory_length": 2.5}, "memory_length"),
    (PassiveTMaze, {"memory_length": 5, "time_limit": 5}, "time_limit"),
    (PassiveTMaze, {"render_mode": "human"}, "render_mode"),
    (HiddenGoalTMaze, {"memory_length": 3, "time_limit": 4}, "time_limit"),
    (PassiveVisualMatch, {"distractor_length": -1}, "distractor_length"),
    (PassiveVisualMatch, {"n_colours": 2}, "n_colours"),
    (PassiveVisualMatch, {"n_colours": 7}, "n_colours"),
    (PassiveVisualMatch, {"cue_length": 0}, "cue_length"),
    (PassiveVisualMatch, {"final_time_limit": 6}, "final_time_limit"),
    (PassiveVisualMatch, {"view_size": 4}, "view_size"),
    (PassiveVisualMatch, {"n_apples": 45}, "n_apples"),
    (PassiveVisualMatch, {"apple_respawn": 0}, "apple_respawn"),
    (make_minigrid_memory, {"size": 8}, "size"),
    (make_minigrid_memory, {"view_size": 2}, "view_size"),
    (make_minigrid_memory, {"n_actions": 4}, "n_actions"),
    (make_tmaze_trials, {"episodes_per_trial": 0}, "episodes_per_trial"),
]


@pytest.mark.parametrize("ctor,kwargs,field", BAD_KWARGS, ids=[f"{c.__name__}-{f}" for c, _, f in BAD_KWARGS])
def test_bad_kwargs_raise_value_error_naming_the_field(ctor, kwargs, field):
    with pytest.raises(ValueError, match=field):
        ctor(**kwargs)


def test_mark_trial_start_needs_flat_box():
    with pytest.raises(ValueError, match="mark_trial_start"):
        TrialsWrapper(PassiveVisualMatch(), mark_trial_start=True)


def test_minigrid_wrapper_on_registered_minigrid_env():
    env = MiniGridMemory(gym.make("MiniGrid-MemoryS7-v0"), view_size=3)
    obs, _ = env.reset(seed=0)
    assert obs.shape == (3, 3, 3) and env.observation_space.contains(obs) and env.action_space.n == 3
    assert int(env.observation_space.high.max()) < 255  # categories, not pixels: SB3 must not treat it as an image


# ---------------------------------------------------------------------------------------------------------------------
# Features extractor
# ---------------------------------------------------------------------------------------------------------------------
def test_default_extractor_for():
    from agents.extractors import SymbolicGridExtractor, default_extractor_for

    for env_id in ["hqlt/PassiveVisualMatch-v0", "hqlt/MiniGridMemoryS7-v0", "hqlt/MiniGridMemoryS9View3-v0"]:
        cls, kwargs = default_extractor_for(gym.make(env_id).observation_space)
        assert cls is SymbolicGridExtractor and kwargs["features_dim"] > 0
    assert default_extractor_for(gym.make("hqlt/PassiveTMaze-v0").observation_space) is None
    assert default_extractor_for(spaces.Box(0, 255, (84, 84, 3), np.uint8)) is None  # real images: NatureCNN


def test_symbolic_extractor_shapes_and_index_sensitivity():
    import torch

    from agents.extractors import SymbolicGridExtractor

    space = PassiveVisualMatch(view_size=5).observation_space
    ext = SymbolicGridExtractor(space, features_dim=16)
    obs = torch.as_tensor(np.stack([space.sample() for _ in range(6)])).float()
    out = ext(obs)
    assert out.shape == (6, 16) and torch.isfinite(out).all()
    other = obs.clone()
    other[:, 2, 2, 1] = (other[:, 2, 2, 1] + 1) % (space.high[0, 0, 1] + 1)  # change one colour index
    assert not torch.allclose(ext(other), out)
    with pytest.raises(ValueError, match="observation_space"):
        SymbolicGridExtractor(spaces.Box(0, 1, (4,), np.float32))


@pytest.mark.parametrize("env_id", ["hqlt/PassiveVisualMatch-v0", "hqlt/MiniGridMemoryS7-v0"])
def test_symbolic_extractor_one_hot_path_equals_embedding_path(env_id):
    """With gradients the extractor folds the embedding into the first kernel and convolves one-hot cells; that
    must be the embedding path's function (outputs) with the embedding path's gradients for every parameter."""
    import torch

    from agents.extractors import SymbolicGridExtractor

    torch.manual_seed(0)
    space = gym.make(env_id).observation_space
    ext = SymbolicGridExtractor(space, features_dim=16).double()
    obs = torch.as_tensor(np.stack([space.sample() for _ in range(5)])).double()
    params = list(ext.parameters())
    fast = ext(obs)  # grad enabled: the one-hot path
    with torch.no_grad():
        plain = ext(obs)  # the embedding path
    torch.testing.assert_close(fast, plain, rtol=0, atol=1e-12)

    b, h, w, c = obs.shape
    idx = obs.long() + ext.offsets
    ref = ext.linear(ext.conv(ext.embed(idx).reshape(b, h, w, -1).permute(0, 3, 1, 2)))  # embedding path, with grads
    grad_out = torch.randn_like(ref)
    got = torch.autograd.grad(fast, params, grad_out)
    want = torch.autograd.grad(ref, params, grad_out)
    for name, g, r in zip([n for n, _ in ext.named_parameters()], got, want):
        assert g.abs().sum() > 0, name
        torch.testing.assert_close(g, r, rtol=1e-10, atol=1e-12, msg=name)


@pytest.mark.parametrize("env_id", ["hqlt/PassiveVisualMatchShort-v0", "hqlt/MiniGridMemoryS7View3-v0"])
def test_ppo_learns_with_symbolic_extractor(env_id):
    from stable_baselines3 import PPO

    from agents.extractors import SymbolicGridExtractor

    env = gym.make(env_id)
    model = PPO(
        "MlpPolicy",
        env,
        n_steps=128,
        batch_size=64,
        n_epochs=1,
        policy_kwargs=dict(features_extractor_class=SymbolicGridExtractor, features_extractor_kwargs=dict(features_dim=32)),
        seed=0,
        device="cpu",
    )
    before = [p.detach().clone() for p in model.policy.features_extractor.parameters()]
    model.learn(256)
    after = list(model.policy.features_extractor.parameters())
    assert any(not np.allclose(b.numpy(), a.detach().numpy()) for b, a in zip(before, after))
