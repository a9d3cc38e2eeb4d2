"""MemoryPPO: smoke tests over memories x spaces, exact replay from stored states, predict, save/load, determinism."""

from __future__ import annotations

from typing import Any

import gymnasium as gym
import numpy as np
import pytest
import torch
from gymnasium import spaces
from stable_baselines3 import PPO
from stable_baselines3.common.env_util import make_vec_env
from stable_baselines3.common.evaluation import evaluate_policy
from stable_baselines3.common.vec_env import DummyVecEnv, VecNormalize

from agents import MemoryPolicyState, MemoryPPO
from agents.buffers import MemoryRolloutBuffer
from agents.policies import state_leaves, tree_map

TINY = dict(d_model=16, n_layers=1, n_heads=2, window=4)  # MemoryConfig fields; RNNs ignore the unused ones


class CueEnv(gym.Env):
    """A cue at step 0, blanks after; the last action is rewarded if it matches the cue.

    Episodes last ``min_len..max_len`` steps: even lengths terminate, odd lengths are truncated (time limit),
    so rollouts see episode starts inside training sequences and truncation bootstraps.
    Observation kinds: ``box`` (4 floats), ``image`` (36x36x3 uint8), ``dict`` (vector + Discrete flag).
    Action kinds: ``discrete`` (3), ``multidiscrete`` ([2, 3]), ``box`` (2 floats in [-1, 1]).
    """

    def __init__(self, obs: str = "box", act: str = "discrete", min_len: int = 3, max_len: int = 7, step_reward: float = 0.0):
        self.obs_kind, self.act_kind = obs, act
        self.min_len, self.max_len, self.step_reward = min_len, max_len, step_reward
        if obs == "box":
            self.observation_space = spaces.Box(-1.0, 1.0, (4,), np.float32)
        elif obs == "image":
            self.observation_space = spaces.Box(0, 255, (36, 36, 3), np.uint8)
        else:
            self.observation_space = spaces.Dict(
                {"vec": spaces.Box(-1.0, 1.0, (4,), np.float32), "flag": spaces.Discrete(2)}
            )
        if act == "discrete":
            self.action_space = spaces.Discrete(3)
        elif act == "multidiscrete":
            self.action_space = spaces.MultiDiscrete([2, 3])
        else:
            self.action_space = spaces.Box(-1.0, 1.0, (2,), np.float32)

    def _obs(self) -> Any:
        vec = np.zeros(4, np.float32)
        if self.t == 0:
            vec[self.cue] = 1.0
        vec[3] = self.t / self.max_len
        if self.obs_kind == "box":
            return vec
        if self.obs_kind == "image":
            img = np.zeros((36, 36, 3), np.uint8)
            img[:, :, 2] = np.uint8(255 * self.t / self.max_len)
            if self.t == 0:
                img[:12, :, self.cue] = 255
            return img
        return {"vec": vec, "flag": int(self.t == 0)}

    def reset(self, *, seed: int | None = None, options: dict | None = None):
        super().reset(seed=seed)
        self.cue = int(self.np_random.integers(2))
        self.length = int(self.np_random.integers(self.min_len, self.max_len + 1))
        self.t = 0
        return self._obs(), {}

    def step(self, action):
        self.t += 1
        a = np.asarray(action).reshape(-1)
        choice = int(a[0] > 0) if self.act_kind == "box" else int(a[0]) % 2
        done = self.t >= self.length
        reward = self.step_reward + (float(choice == self.cue) if done else 0.0)
        info = {"success": choice == self.cue} if done else {}
        terminated = done and self.length % 2 == 0
        truncated = done and not terminated
        return self._obs(), reward, terminated, truncated, info


def make_env(n_envs: int = 2, seed: int = 0, **kwargs: Any) -> DummyVecEnv:
    return make_vec_env(lambda: CueEnv(**kwargs), n_envs=n_envs, seed=seed)


POLICY = {"box": "MlpMemoryPolicy", "image": "CnnMemoryPolicy", "dict": "MultiInputMemoryPolicy"}


def make_model(
    env, memory: str = "gru", obs: str = "box", seed: int = 0, memory_extra: dict | None = None, **policy: Any
) -> MemoryPPO:
    kwargs: dict[str, Any] = dict(n_steps=16, seq_len=8, batch_size=16, n_epochs=2, seed=seed, device="cpu")
    if obs == "image":
        policy.setdefault("features_extractor_kwargs", dict(features_dim=32))
    return MemoryPPO(
        POLICY[obs],
        env,
        policy_kwargs=dict(memory=memory, memory_kwargs=dict(TINY, **(memory_extra or {})), net_arch=[16], **policy),
        **kwargs,
    )


def collect(model: MemoryPPO) -> None:
    """One rollout into the model's buffer, no training."""
    _, callback = model._setup_learn(model.n_steps * model.n_envs, None)
    assert model.collect_rollouts(model.env, callback, model.rollout_buffer, model.n_steps)


def replay_rollout(model: MemoryPPO, grad: bool = False, tol: float = 1e-5) -> tuple[torch.Tensor, torch.Tensor, Any]:
    """Collect one rollout, replay all its stored sequences in training mode and check that the replay reproduces the
    rollout's log-probs and values (within ``tol``); returns values, log-probs and the batch."""
    collect(model)
    buffer = model.rollout_buffer
    batch = buffer.select(torch.arange(buffer.n_sequences))
    model.policy.set_training_mode(True)
    with torch.set_grad_enabled(grad):
        values, log_prob, _ = model.policy.evaluate_sequences(
            batch.observations, batch.actions, batch.rewards, batch.states, batch.episode_starts
        )
    torch.testing.assert_close(log_prob.detach(), batch.old_log_prob.flatten(), atol=tol, rtol=tol)
    torch.testing.assert_close(values.detach(), batch.old_values.flatten(), atol=tol, rtol=tol)
    return values, log_prob, batch


# ---------------------------------------------------------------------------------------------------------- smoke

SMOKE = [
    ("hqlt", "box", "discrete", {}),
    ("hqlt", "dict", "multidiscrete", dict(critic_memory=True, prev_action_reward=True)),
    ("kv", "image", "multidiscrete", {}),
    ("deltanet", "dict", "box", {}),
    ("lstm", "box", "box", dict(critic_memory=True)),
    ("gru", "dict", "discrete", dict(prev_action_reward=True)),
    ("none", "image", "discrete", {}),
    ("linear", "box", "multidiscrete", dict(prev_action_reward=True)),
]


@pytest.mark.parametrize("memory,obs,act,options", SMOKE, ids=[f"{m}-{o}-{a}" for m, o, a, _ in SMOKE])
def test_learn_smoke(memory: str, obs: str, act: str, options: dict) -> None:
    env = make_env(obs=obs, act=act)
    model = make_model(env, memory, obs, **options)
    model.learn(32)
    assert model.num_timesteps == 32
    for key in ("train/approx_kl", "train/value_loss", "train/policy_gradient_loss", "train/entropy_loss"):
        assert np.isfinite(model.logger.name_to_value[key]), key
    assert len(model.ep_success_buffer) > 0  # info["success"] is counted as is_success
    if memory == "hqlt":
        assert any(k.startswith("memory/") for k in model.logger.name_to_value)
    obs_batch = env.reset()
    actions, state = model.predict(obs_batch, deterministic=True)
    assert actions.shape == (env.num_envs, *env.action_space.shape)
    assert isinstance(state, MemoryPolicyState)
    assert np.all([env.action_space.contains(a) for a in actions])


def test_symbolic_grid_uses_project_extractor() -> None:
    import envs  # noqa: F401  (registers hqlt/ ids)
    from agents.extractors import SymbolicGridExtractor

    env = make_vec_env("hqlt/MiniGridMemoryS7View3-v0", n_envs=2, seed=0)
    model = MemoryPPO(
        "CnnMemoryPolicy", env, n_steps=16, seq_len=8, batch_size=16, n_epochs=1, seed=0,
        policy_kwargs=dict(memory="hqlt", memory_kwargs=dict(TINY), features_extractor_kwargs=dict(features_dim=16)),
    )
    assert isinstance(model.policy.features_extractor, SymbolicGridExtractor)
    assert model.policy.features_extractor.features_dim == 16  # user kwargs override the default ones
    model.learn(32)


def test_validation_errors() -> None:
    env = make_env()
    with pytest.raises(ValueError, match="n_steps.*multiple of 'seq_len'"):
        MemoryPPO("MlpMemoryPolicy", env, n_steps=20, seq_len=8, batch_size=16)
    with pytest.raises(ValueError, match="batch_size.*multiple of 'seq_len'"):
        MemoryPPO("MlpMemoryPolicy", env, n_steps=16, seq_len=8, batch_size=12)
    with pytest.raises(ValueError, match="exceeds the rollout size"):
        MemoryPPO("MlpMemoryPolicy", env, n_steps=16, seq_len=8, batch_size=64)
    with pytest.raises(ValueError, match="unknown memory name"):
        MemoryPPO("MlpMemoryPolicy", env, n_steps=16, seq_len=8, batch_size=16, policy_kwargs=dict(memory="transformerxl"))
    with pytest.raises(ValueError, match="memory_kwargs"):
        module = torch.nn.GRU(4, 4)
        module.d_model = 4  # passes the duck-typing, then conflicting kwargs are refused
        module.initial_state = lambda *a: None
        MemoryPPO(
            "MlpMemoryPolicy", env, n_steps=16, seq_len=8, batch_size=16,
            policy_kwargs=dict(memory=module, memory_kwargs=dict(d_model=8)),
        )


def test_memory_module_instance(tmp_path) -> None:
    from memory import build_memory

    env = make_env()
    module = build_memory("gru", 12, n_layers=1)
    model = MemoryPPO(
        "MlpMemoryPolicy", env, n_steps=16, seq_len=8, batch_size=16, n_epochs=1,
        policy_kwargs=dict(memory=module, critic_memory=True),
    )
    assert model.policy.memory is module and model.policy.vf_memory is not module
    assert model.policy.d_model == 12
    model.learn(32)
    model.save(tmp_path / "m.zip")
    loaded = MemoryPPO.load(tmp_path / "m.zip", device="cpu")
    obs = np.random.default_rng(1).uniform(-1, 1, (2, 4)).astype(np.float32)
    np.testing.assert_array_equal(model.predict(obs, deterministic=True)[0], loaded.predict(obs, deterministic=True)[0])


# ---------------------------------------------------------------------------------------------------------- buffer & replay


def test_buffer_stores_one_state_per_sequence() -> None:
    env = make_env(n_envs=3)
    model = MemoryPPO(
        "MlpMemoryPolicy", env, n_steps=24, seq_len=8, batch_size=24, seed=0, device="cpu",
        policy_kwargs=dict(memory="hqlt", memory_kwargs=dict(TINY)),
    )
    collect(model)
    buffer = model.rollout_buffer
    assert isinstance(buffer, MemoryRolloutBuffer)
    assert buffer.n_stored_states == 3 * 24 // 8
    leaves = [t for t in torch.utils._pytree.tree_leaves(buffer.sequence_tensors()["states"]) if torch.is_tensor(t)]
    assert leaves and all(t.shape[0] == 3 * 24 // 8 for t in leaves)
    batches = list(buffer.get_sequences(24))
    assert len(batches) == 3 and all(b.episode_starts.shape == (3, 8) for b in batches)
    seen = torch.cat([b.old_log_prob for b in batches]).flatten().sort().values
    assert torch.equal(seen, torch.as_tensor(buffer.log_probs).flatten().sort().values)  # each step exactly once


REPLAY = [
    ("hqlt", "box", "discrete", {}),
    ("hqlt", "dict", "box", dict(prev_action_reward=True, critic_memory=True)),
    ("kv", "box", "multidiscrete", dict(prev_action_reward=True)),
    ("deltanet", "box", "discrete", {}),
    ("hqlt", "box", "discrete", dict(memory_extra=dict(short_conv=3))),
    ("lstm", "image", "discrete", {}),
    ("gru", "box", "box", dict(prev_action_reward=True)),
]


@pytest.mark.parametrize(
    "memory,obs,act,options",
    REPLAY,
    ids=[f"{m}-{o}-{a}" + ("-conv" if "memory_extra" in opt else "") for m, o, a, opt in REPLAY],
)
def test_replay_matches_rollout(memory: str, obs: str, act: str, options: dict) -> None:
    """Before any gradient step, replaying stored sequences reproduces the rollout's values and log-probs."""
    env = make_env(n_envs=3, obs=obs, act=act, min_len=2, max_len=6)
    model = make_model(env, memory, obs, **options)
    _, _, batch = replay_rollout(model)
    assert bool(batch.episode_starts[:, 1:].any())  # resets inside sequences are exercised
    # The first minibatch of training sees ratio == 1.
    model.train()
    assert model.logger.name_to_value["train/clip_fraction"] < 1.0


def _reset_model(env, prob: float, seed: int = 0) -> MemoryPPO:
    return MemoryPPO(
        "MlpMemoryPolicy", env, n_steps=16, seq_len=8, batch_size=16, n_epochs=1, seed=seed, device="cpu",
        memory_reset_prob=prob,
        policy_kwargs=dict(memory="hqlt", memory_kwargs=dict(TINY, carry_fw_across_episodes=True), net_arch=[16]),
    )


def test_memory_reset_prob_resets_whole_states_where_sequences_start_and_replay_follows() -> None:
    """memory_reset_prob: some envs' stored states are the initial state (carried fast weights included), the
    replay from the stored states still reproduces the rollout, and 0 changes nothing (no random draw either)."""
    initial = _reset_model(make_env(n_envs=3), 0.0).policy.initial_state(1)
    always = _reset_model(make_env(n_envs=3, min_len=2, max_len=6), 1.0)
    always.learn(48)  # a first rollout and update, so that the carried state is no longer the initial one
    assert always._n_memory_resets == 3 * 2  # every env at each of the rollout's 2 sequence starts
    _, _, batch = replay_rollout(always)
    for leaf, first in zip(state_leaves(batch.states), state_leaves(initial)):
        if leaf is not None:
            torch.testing.assert_close(leaf, first.expand_as(leaf))
    half = _reset_model(make_env(n_envs=3, min_len=2, max_len=6), 0.5, seed=1)
    half.learn(48)
    _, _, batch = replay_rollout(half)  # checks the replay against the rollout
    assert 0 < half._n_memory_resets < 3 * 2 * 2
    plain = _reset_model(make_env(n_envs=2), 0.0, seed=3)
    plain.learn(32)  # (each model trains right after it is built: building one seeds the global generators)
    off = MemoryPPO(  # the option not given
        "MlpMemoryPolicy", make_env(n_envs=2), n_steps=16, seq_len=8, batch_size=16, n_epochs=1, seed=3, device="cpu",
        policy_kwargs=dict(memory="hqlt", memory_kwargs=dict(TINY, carry_fw_across_episodes=True), net_arch=[16]),
    )
    off.learn(32)
    for a, b in zip(plain.policy.parameters(), off.policy.parameters()):
        assert torch.equal(a, b)
    for bad in (-0.1, 1.5, True, "half"):
        with pytest.raises(ValueError, match="'memory_reset_prob'"):
            _reset_model(make_env(), bad)


def test_truncation_bootstraps_from_final_observation_under_episode_state() -> None:
    gamma, step_reward = 0.9, 0.25
    env = make_vec_env(lambda: CueEnv(min_len=5, max_len=5, step_reward=step_reward), n_envs=1, seed=3)
    model = MemoryPPO(
        "MlpMemoryPolicy", env, n_steps=8, seq_len=8, batch_size=8, gamma=gamma, seed=0, device="cpu",
        policy_kwargs=dict(memory="hqlt", memory_kwargs=dict(TINY)),
    )
    collect(model)
    buffer = model.rollout_buffer
    assert buffer.episode_starts[0, 0] == 1 and buffer.episode_starts[5, 0] == 1  # odd length: truncated at step 4
    # Replay the first episode followed by its final observation as one sequence from the initial state.
    obs = torch.as_tensor(buffer.observations[:5, 0])  # (5, 4)
    final = obs[-1].clone()
    final[:3] = 0.0
    final[3] = 5 / 5
    seq = torch.cat([obs, final[None]], dim=0)[None]  # (1, 6, 4)
    starts = torch.zeros(1, 6, dtype=torch.bool)
    starts[0, 0] = True
    actions = torch.zeros(1, 6, 1)
    with torch.no_grad():
        values, _, _ = model.policy.evaluate_sequences(
            seq, actions, torch.zeros(1, 6), model.policy.initial_state(1), starts
        )
    raw_reward = buffer.rewards[4, 0] - gamma * values[5].item()
    assert min(abs(raw_reward - step_reward), abs(raw_reward - step_reward - 1.0)) < 1e-5
    assert abs(values[5].item()) > 1e-4  # the bootstrap term is not trivially zero


# ---------------------------------------------------------------------------------------------------------- predict


@pytest.mark.parametrize("n_envs", [1, 3])
@pytest.mark.parametrize("memory", ["hqlt", "lstm"])
def test_predict_state_and_episode_start(n_envs: int, memory: str) -> None:
    env = make_env(n_envs=n_envs)
    model = make_model(env, memory, prev_action_reward=True)
    rng = np.random.default_rng(0)
    observations = rng.uniform(-1, 1, size=(6, n_envs, 4)).astype(np.float32)

    # Batched predict with the state carried equals each env run alone (unvectorized observations).
    state, batched = None, []
    for t in range(6):
        starts = np.array([t == 0] * n_envs)
        actions, state = model.predict(observations[t], state=state, episode_start=starts, deterministic=True)
        batched.append(actions)
    assert isinstance(state, MemoryPolicyState) and state.prev_action.shape == (n_envs, 1)
    for i in range(n_envs):
        single_state = None
        for t in range(6):
            action, single_state = model.predict(observations[t, i], state=single_state, deterministic=True)
            assert np.ndim(action) == 0  # unvectorized observation -> unbatched action
            assert int(action) == int(batched[t][i])

    # episode_start=True resets: the values seen over the next steps equal those from the initial state.
    def values_from(start_state: MemoryPolicyState | None) -> list[torch.Tensor]:
        torch_state = model.policy.initial_state(n_envs) if start_state is None else tree_map(torch.as_tensor, start_state)
        out = []
        for t in range(4):
            starts = torch.full((n_envs,), t == 0)
            with torch.no_grad():
                _, values, _, torch_state = model.policy(torch.as_tensor(observations[t]), torch_state, starts, True)
            out.append(values)
        return out

    for fresh, reset in zip(values_from(None), values_from(state)):
        torch.testing.assert_close(fresh, reset, atol=1e-6, rtol=1e-6)
    # ... and without the reset the carried state changes them (the memory is used).
    starts = torch.zeros(n_envs, dtype=torch.bool)
    with torch.no_grad():
        _, carried, _, _ = model.policy(torch.as_tensor(observations[0]), tree_map(torch.as_tensor, state), starts, True)
    assert not torch.allclose(carried, values_from(None)[0])
    with pytest.raises(ValueError, match="env"):
        model.predict(np.zeros((n_envs + 1, 4), np.float32), state=state)


def test_evaluate_policy_and_vecnormalize() -> None:
    env = VecNormalize(make_env(n_envs=2), norm_reward=True)
    model = make_model(env, "hqlt")
    model.learn(32)
    eval_env = make_env(n_envs=3, seed=7)
    mean, std = evaluate_policy(model, eval_env, n_eval_episodes=6)
    assert np.isfinite(mean) and 0.0 <= mean <= 1.0


# ---------------------------------------------------------------------------------------------------------- save / load


def test_save_load_identical_actions(tmp_path) -> None:
    env = make_env(obs="dict", act="box")
    model = make_model(env, "hqlt", obs="dict", critic_memory=True, prev_action_reward=True)
    model.learn(32)
    path = tmp_path / "model.zip"
    model.save(path)
    loaded = MemoryPPO.load(path, env=make_env(obs="dict", act="box"), device="cpu")
    assert loaded.seq_len == model.seq_len and loaded.policy.critic_memory
    assert_same_actions(model, loaded, make_env(obs="dict", act="box", seed=11), steps=8)
    loaded.learn(16)  # a loaded model trains on


def assert_same_actions(model: MemoryPPO, other: MemoryPPO, env, steps: int, tol: float = 0.0) -> None:
    """Both models act alike on ``env`` for ``steps`` steps (greedy, their states carried): equal actions when ``tol``
    is 0, else actions and every state leaf within ``tol``."""
    obs = env.reset()
    s1 = s2 = None
    starts = np.ones(env.num_envs, dtype=bool)
    for _ in range(steps):
        a1, s1 = model.predict(obs, s1, starts, deterministic=True)
        a2, s2 = other.predict(obs, s2, starts, deterministic=True)
        if tol == 0.0:
            np.testing.assert_array_equal(a1, a2)
        else:
            np.testing.assert_allclose(a1, a2, rtol=tol, atol=tol)
            for u, v in zip(torch.utils._pytree.tree_leaves(s1), torch.utils._pytree.tree_leaves(s2), strict=True):
                np.testing.assert_allclose(u, v, rtol=tol, atol=tol)
        obs, _, starts, _ = env.step(a1)


def test_load_mismatched_env_and_foreign_file(tmp_path) -> None:
    model = make_model(make_env(), "gru")
    path = tmp_path / "model.zip"
    model.save(path)
    with pytest.raises(ValueError, match="cannot load MemoryPPO model .*observation space"):
        MemoryPPO.load(path, env=make_env(obs="image"))
    with pytest.raises(ValueError, match="cannot load MemoryPPO model .*[Aa]ction space"):
        MemoryPPO.load(path, env=make_env(act="box"))
    ppo_path = tmp_path / "ppo.zip"
    PPO("MlpPolicy", make_env(), n_steps=16, batch_size=16).save(ppo_path)
    with pytest.raises(ValueError, match="not a MemoryPPO model"):
        MemoryPPO.load(ppo_path)


# ---------------------------------------------------------------------------------------------------------- determinism


def test_same_seed_same_learning_curve() -> None:
    def run() -> tuple[dict, list[torch.Tensor]]:
        model = make_model(make_env(n_envs=2, seed=5), "hqlt", seed=5, prev_action_reward=True)
        model.learn(64)
        logs = {k: v for k, v in model.logger.name_to_value.items() if k.startswith("train/")}
        return logs, [p.detach().clone() for p in model.policy.parameters()]

    logs_a, params_a = run()
    logs_b, params_b = run()
    assert logs_a == logs_b and "train/value_loss" in logs_a
    assert all(torch.equal(a, b) for a, b in zip(params_a, params_b))


# ---------------------------------------------------------------------------------------------------------- integration


@pytest.mark.filterwarnings("ignore:Training and eval env are not of the same type")
@pytest.mark.filterwarnings("ignore:rich is experimental")
def test_subproc_callbacks_tensorboard_progress_bar(tmp_path) -> None:
    from stable_baselines3.common.callbacks import CheckpointCallback, EvalCallback
    from stable_baselines3.common.vec_env import SubprocVecEnv

    env = make_vec_env(CueEnv, n_envs=2, seed=0, vec_env_cls=SubprocVecEnv, vec_env_kwargs=dict(start_method="fork"))
    try:
        model = MemoryPPO(
            "MlpMemoryPolicy", env, n_steps=16, seq_len=8, batch_size=16, n_epochs=1, seed=0,
            tensorboard_log=str(tmp_path / "tb"), policy_kwargs=dict(memory="hqlt", memory_kwargs=dict(TINY)),
        )
        eval_cb = EvalCallback(make_env(n_envs=1, seed=9), n_eval_episodes=2, eval_freq=16, log_path=str(tmp_path / "eval"))
        ckpt_cb = CheckpointCallback(save_freq=16, save_path=str(tmp_path / "ckpt"), name_prefix="m")
        model.learn(64, callback=[eval_cb, ckpt_cb], progress_bar=True)
    finally:
        env.close()
    assert eval_cb.n_calls > 0 and np.isfinite(eval_cb.last_mean_reward)
    checkpoints = sorted((tmp_path / "ckpt").glob("m_*_steps.zip"))
    assert checkpoints
    MemoryPPO.load(checkpoints[-1])  # a checkpoint is a loadable MemoryPPO
    assert list((tmp_path / "tb").rglob("events.out.tfevents.*"))
    assert (tmp_path / "tb" / "MemoryPPO_1").is_dir()


def test_dual_clip_objective() -> None:
    """Without dual clip: SB3's min(r A, clip(r) A). With c: negative-advantage samples are bounded below by c A, so a
    sample whose ratio explodes neither dominates the loss nor gets a gradient; positive advantages are unchanged."""
    from agents.ppo import clipped_objective

    adv = torch.tensor([1.0, 1.0, -1.0, -1.0, -1.0, -2.0])
    ratio = torch.tensor([0.5, 3.0, 0.5, 1.1, 50.0, 4.0], requires_grad=True)
    plain = clipped_objective(adv, ratio, 0.2)
    torch.testing.assert_close(plain, torch.min(adv * ratio, adv * ratio.clamp(0.8, 1.2)))
    dual = clipped_objective(adv, ratio, 0.2, dual_clip=3.0)
    torch.testing.assert_close(dual[:4], plain[:4])  # A > 0, or A < 0 with r below c: as before
    torch.testing.assert_close(dual[4:], torch.tensor([-3.0, -6.0]))  # r > c: max(r A, c A) = c A
    (grad,) = torch.autograd.grad(dual.sum(), ratio)
    assert grad[4] == 0 and grad[5] == 0 and grad[3] == -1.0  # bounded samples pass no gradient to the ratio
    assert plain[4].item() == -50.0  # ... which SB3's objective would have let through


def test_dual_clip_validation_and_training() -> None:
    env = make_env()
    for bad in (1.0, 0.5, True, "3"):
        with pytest.raises(ValueError, match="dual_clip"):
            MemoryPPO("MlpMemoryPolicy", env, n_steps=16, seq_len=8, batch_size=16, dual_clip=bad)
    model = MemoryPPO(
        "MlpMemoryPolicy", env, n_steps=16, seq_len=8, batch_size=16, dual_clip=3,
        policy_kwargs=dict(memory="hqlt", memory_kwargs=TINY), seed=0, device="cpu",
    )
    model.learn(64)
    assert model.dual_clip == 3.0 and model.num_timesteps >= 64


def test_default_optimizer_matches_sb3_ppo() -> None:
    """Without optimizer_kwargs, Adam gets SB3's eps = 1e-5 (as PPO and RecurrentPPO do), not torch's 1e-8;
    optimizer_kwargs given by the user are kept as they are."""
    env = make_env(n_envs=1)
    sb3_eps = PPO("MlpPolicy", env, n_steps=16, batch_size=16).policy.optimizer.defaults["eps"]
    ours = make_model(env, "hqlt").policy.optimizer.defaults
    assert ours["eps"] == sb3_eps == 1e-5
    custom = make_model(env, "hqlt", optimizer_kwargs=dict(eps=1e-3, fused=False)).policy.optimizer.defaults
    assert custom["eps"] == 1e-3 and custom["fused"] is False
    sgd = make_model(env, "gru", optimizer_class=torch.optim.SGD, optimizer_kwargs=dict(momentum=0.5)).policy.optimizer
    assert isinstance(sgd, torch.optim.SGD)


def test_ent_coef_schedule() -> None:
    """ent_coef may be a schedule of the progress remaining: a constant one trains exactly as the float, another
    changes the update and is logged; a negative or non-numeric coefficient is an error naming the field."""
    from stable_baselines3.common.utils import ConstantSchedule, LinearSchedule

    def run(ent_coef: Any) -> tuple[list[torch.Tensor], float]:
        env = make_vec_env(CueEnv, n_envs=2, seed=3, vec_env_cls=DummyVecEnv)
        model = make_model(env, "hqlt", seed=3)
        model.ent_coef = ent_coef
        model.learn(64)
        return [p.detach().clone() for p in model.policy.parameters()], model.logger.name_to_value["train/ent_coef"]

    plain, logged = run(0.05)
    same, logged_same = run(ConstantSchedule(0.05))
    assert logged == logged_same == pytest.approx(0.05)
    assert all(torch.equal(a, b) for a, b in zip(plain, same))
    decayed, logged_decayed = run(LinearSchedule(0.05, 0.0, 1.0))
    assert logged_decayed == 0.0  # the last of 2 updates (rollouts of 32 steps) comes at progress remaining 0
    assert not all(torch.equal(a, b) for a, b in zip(plain, decayed))
    for bad in (-0.01, "0.01", True):
        with pytest.raises(ValueError, match="'ent_coef'"):
            MemoryPPO("MlpMemoryPolicy", make_env(), n_steps=16, seq_len=8, batch_size=16, ent_coef=bad)
