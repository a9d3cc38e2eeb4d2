"""CUDA: every memory and the PPO agent on a GPU against the CPU reference (skipped where torch sees no GPU).

- each memory's T-step call on the GPU equals the same weights on the CPU (outputs, final state, gradients), and the
  GPU's one-step path equals its T-step path, episode starts in the middle of sequences included (float64: exact up
  to rounding; float32: within the GPU's float32 rounding);
- MemoryPPO trains on the GPU (parameters, rollout states and stored sequences stay there), replaying stored sequences
  reproduces the rollout, and a model saved there loads on the CPU and acts the same;
- train_rl.py / evaluate.py run with device=cuda, resume included.
"""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch

from memory import map_state, state_leaves

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")

from test_agents import POLICY, REPLAY, TINY, assert_same_actions, make_env, replay_rollout  # noqa: E402
from test_memory_contract import CARRY_CASES, CASES, assert_states_close, inputs, make, run_steps  # noqa: E402

CUDA = torch.device("cuda")


def gpu_model(env, memory: str, obs: str = "box", memory_extra: dict | None = None, **policy):
    """test_agents.make_model's tiny agent, built on the GPU."""
    from agents import MemoryPPO

    if obs == "image":
        policy.setdefault("features_extractor_kwargs", dict(features_dim=32))
    return MemoryPPO(
        POLICY[obs],
        env,
        n_steps=16,
        seq_len=8,
        batch_size=16,
        n_epochs=2,
        seed=0,
        device="cuda",
        policy_kwargs=dict(memory=memory, memory_kwargs=dict(TINY, **(memory_extra or {})), net_arch=[16], **policy),
    )


def _assert_gpu_state_close(gpu_state, ref_state, tol):
    """Every tensor of ``gpu_state`` is still on the GPU and, moved to the CPU in ``ref_state``'s dtypes, matches it."""
    assert all(leaf.is_cuda for leaf in state_leaves(gpu_state)), "a state tensor left the GPU"
    on_cpu = map_state(lambda g, r: g.to("cpu", r.dtype), gpu_state, ref_state)
    assert_states_close(on_cpu, ref_state, tol)


@pytest.mark.parametrize(("name", "cfg"), CASES + CARRY_CASES)
def test_gpu_equals_cpu_float64(name, cfg):
    cpu = make(name, cfg)
    gpu = copy.deepcopy(cpu).to(CUDA)
    x, starts = inputs()
    weights = torch.randn(*x.shape, dtype=torch.float64)

    def run(mem, device):
        xg = x.to(device).requires_grad_(True)
        y, state = mem(xg, None, starts.to(device))
        grads = torch.autograd.grad((y * weights.to(device)).sum(), [xg, *mem.parameters()], allow_unused=True)
        return y, state, grads

    y_c, s_c, g_c = run(cpu, "cpu")
    y_g, s_g, g_g = run(gpu, CUDA)
    torch.testing.assert_close(y_g.cpu(), y_c, rtol=1e-9, atol=1e-10)
    _assert_gpu_state_close(s_g, s_c, 1e-9)
    for a, b in zip(g_g, g_c):
        assert (a is None) == (b is None)
        if a is not None:
            torch.testing.assert_close(a.cpu(), b, rtol=1e-8, atol=1e-9)
    # One step at a time on the GPU equals the T-step call on the GPU.
    with torch.no_grad():
        y1, s1 = run_steps(gpu, x.to(CUDA), starts.to(CUDA), gpu.initial_state(x.shape[0], device=CUDA))
        y_t, s_t = gpu(x.to(CUDA), None, starts.to(CUDA))
    torch.testing.assert_close(y1, y_t, rtol=1e-9, atol=1e-10)
    _assert_gpu_state_close(s1, map_state(lambda t: t.cpu(), s_t), 1e-9)


@pytest.mark.parametrize(("name", "cfg"), CASES)
def test_gpu_float32_close_to_float64_reference(name, cfg):
    ref = make(name, cfg)
    gpu = copy.deepcopy(ref).float().to(CUDA)
    x, starts = inputs()
    with torch.no_grad():
        y_ref, s_ref = ref(x, None, starts)
        y, s = gpu(x.float().to(CUDA), None, starts.to(CUDA))
    scale = y_ref.abs().max().item()
    assert y.dtype == torch.float32 and y.device.type == "cuda"
    # cuDNN may run the GRU/LSTM (and the convolutions) in TF32 (10-bit mantissa): allow ~5e-4 of the output scale.
    torch.testing.assert_close(y.double().cpu(), y_ref, rtol=1e-3, atol=5e-4 * max(scale, 1.0))
    _assert_gpu_state_close(s, s_ref, 1e-3)


@pytest.mark.parametrize("memory,obs,act,options", REPLAY, ids=[f"{m}-{o}-{a}" for m, o, a, _ in REPLAY])
def test_ppo_on_gpu_replay_matches_rollout(memory, obs, act, options):
    env = make_env(n_envs=3, obs=obs, act=act, min_len=2, max_len=6)
    model = gpu_model(env, memory, obs, **options)
    _, _, batch = replay_rollout(model, tol=1e-4)
    assert batch.episode_starts.device.type == "cuda"
    assert all(leaf.device.type == "cuda" for leaf in state_leaves(batch.states) if leaf is not None)
    model.train()
    assert np.isfinite(model.logger.name_to_value["train/value_loss"])


def test_ppo_learns_on_gpu_saves_and_loads_on_cpu(tmp_path):
    from agents import MemoryPPO

    model = gpu_model(make_env(obs="dict", act="box"), "hqlt", obs="dict", critic_memory=True, prev_action_reward=True)
    model.learn(64)
    assert all(p.device.type == "cuda" for p in model.policy.parameters())
    path = tmp_path / "model.zip"
    model.save(path)
    loaded = MemoryPPO.load(path, env=make_env(obs="dict", act="box"), device="cpu")
    assert all(p.device.type == "cpu" for p in loaded.policy.parameters())
    assert_same_actions(model, loaded, make_env(obs="dict", act="box", seed=11), steps=12, tol=1e-4)
    loaded.learn(16)  # and trains on, on the CPU


def test_evaluate_policy_on_gpu():
    from stable_baselines3.common.evaluation import evaluate_policy

    model = gpu_model(make_env(), "hqlt")
    mean, std = evaluate_policy(model, make_env(seed=5), n_eval_episodes=4)
    assert np.isfinite(mean) and np.isfinite(std)


def test_cli_train_resume_evaluate_on_gpu(tmp_path):
    from test_cli import TINY as CLI_TINY

    import evaluate
    import train_rl

    run_dir = tmp_path / "gpu"
    args = ["--preset", "tmaze_hqlt", *CLI_TINY, "total_timesteps=256", f"run_dir={run_dir}", "device=cuda"]
    assert train_rl.main(args) == 0
    assert train_rl.main(["--resume", str(run_dir), "total_timesteps=384"]) == 0
    model = train_rl.load_model(run_dir / "model.zip", device="cuda")
    assert model.num_timesteps >= 384 and next(model.policy.parameters()).device.type == "cuda"
    assert evaluate.main([str(run_dir), "--episodes", "2", "--device", "cuda"]) == 0


def test_compiled_memory_trains_on_gpu():
    """compile_memory=True on the GPU: the rollout steps (under inference_mode) and the training replay both compile,
    and the compiled replay reproduces the rollout before the first gradient step."""
    model = gpu_model(make_env(n_envs=3, min_len=2, max_len=6), "hqlt", compile_memory=True)
    values, log_prob, _ = replay_rollout(model, grad=True, tol=1e-4)
    (values.sum() + log_prob.sum()).backward()
    model.train()
    model.learn(48)
    assert np.isfinite(model.logger.name_to_value["train/value_loss"])
