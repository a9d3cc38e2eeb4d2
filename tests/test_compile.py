"""Opt-in torch.compile of the training replay (Memory.compile_training, policy_kwargs compile_memory=True)."""

from __future__ import annotations

import copy
import pickle

import gymnasium as gym
import numpy as np
import pytest
import torch
from torch import nn

import envs  # noqa: F401  (registers the hqlt/ ids)
from agents import MemoryPPO
from memory import build_memory


class _Recorder:
    """Stands in for the compiled callable: records calls and runs the eager forward."""

    def __init__(self, fn):
        self.fn, self.calls = fn, 0

    def __call__(self, *args):
        self.calls += 1
        return self.fn(*args)


def test_each_compiled_path_takes_only_its_calls():
    torch.manual_seed(0)
    mem = build_memory("hqlt", d_model=16, n_layers=1, n_heads=2, window=4)
    assert mem.compile_training() is mem and mem._compiled_forward is not None
    assert mem.compile_rollout() is mem and mem._compiled_step is not None
    train = mem._compiled_forward = _Recorder(mem._forward)
    step = mem._compiled_step = _Recorder(mem._forward)
    state = mem.initial_state(2)
    mem(torch.randn(2, 1, 16), state)  # one step with gradients: eager
    with torch.no_grad():
        mem(torch.randn(2, 5, 16), state)  # several steps without gradients: eager
    assert train.calls == 0 and step.calls == 0
    y, _ = mem(torch.randn(2, 5, 16), state)  # the training replay
    assert train.calls == 1 and step.calls == 0 and y.requires_grad
    with torch.no_grad():  # predict, value bootstraps: eager
        mem(torch.randn(2, 1, 16), state)
    assert train.calls == 1 and step.calls == 0
    with torch.inference_mode():  # the rollout
        mem(torch.randn(2, 1, 16), state)
    assert train.calls == 1 and step.calls == 1
    mem.compile_training(False)
    mem.compile_rollout(False)
    assert mem._compiled_forward is None and mem._compiled_step is None


def test_copies_and_pickles_drop_the_compiled_callable():
    mem = build_memory("hqlt", d_model=16, n_layers=1, n_heads=2, window=4).compile_training().compile_rollout()
    for other in (copy.deepcopy(mem), pickle.loads(pickle.dumps(mem))):
        assert other._compiled_forward is None and other._compiled_step is None
        for a, b in zip(mem.state_dict().values(), other.state_dict().values()):
            torch.testing.assert_close(a, b)
    assert mem._compiled_forward is not None and mem._compiled_step is not None  # the original keeps them


def test_policy_kwarg_validation():
    env = gym.make("hqlt/PassiveTMaze-v0", memory_length=4)
    with pytest.raises(ValueError, match="compile_memory"):
        MemoryPPO("MlpMemoryPolicy", env, policy_kwargs=dict(compile_memory="yes"), device="cpu")

    class Bare(nn.Module):
        d_model = 8

        def initial_state(self, batch_size, device=None):
            return torch.zeros(batch_size, 8)

        def forward(self, x, state, episode_starts):
            return x, state

    with pytest.raises(ValueError, match="compile_training"):
        MemoryPPO("MlpMemoryPolicy", env, policy_kwargs=dict(memory=Bare(), compile_memory=True), device="cpu")


def test_compile_flag_survives_save_and_load(tmp_path):
    env = gym.make("hqlt/PassiveTMaze-v0", memory_length=4)
    model = MemoryPPO(
        "MlpMemoryPolicy",
        env,
        n_steps=16,
        seq_len=8,
        batch_size=16,
        policy_kwargs=dict(memory_kwargs=dict(d_model=16, n_layers=1, n_heads=2, window=4), compile_memory=True),
        seed=0,
        device="cpu",
    )
    mem = model.policy.memory
    assert mem._compiled_forward is not None and mem._compiled_step is not None
    model.save(tmp_path / "m.zip")
    loaded = MemoryPPO.load(tmp_path / "m.zip", device="cpu")
    assert loaded.policy.compile_memory
    assert loaded.policy.memory._compiled_forward is not None and loaded.policy.memory._compiled_step is not None
    obs = np.stack([env.observation_space.sample() for _ in range(3)])
    actions = []
    for policy in (model.policy, loaded.policy):  # the recorder runs eager: no compile in the fast suite
        rec = policy.memory._compiled_step = _Recorder(policy.memory._forward)
        with torch.inference_mode():  # a rollout step, as in MemoryPPO.collect_rollouts
            obs_tensor, _ = policy.obs_to_tensor(obs)
            policy(obs_tensor, policy.initial_state(3), torch.ones(3, dtype=torch.bool))
        assert rec.calls == 1
        actions.append(policy.predict(obs[:1], None, np.ones(1, bool), deterministic=True)[0])
        assert rec.calls == 1  # predict stays eager
    np.testing.assert_array_equal(*actions)


@pytest.mark.slow
@pytest.mark.parametrize(
    ("kind", "extra"),
    [("hqlt", {}), ("kv", {}), ("deltanet", {}), ("hqlt", {"short_conv": 4})],
    ids=["hqlt", "kv", "deltanet", "hqlt-conv"],
)
def test_compiled_replay_equals_eager(kind, extra):
    """Outputs, final state and every gradient of the compiled replay match the eager forward (float32 round-off),
    with resets in the middle of the sequence and with none (the compiled graph takes the masked form for both)."""
    torch.manual_seed(0)
    mem = build_memory(kind, d_model=32, n_layers=2, n_heads=2, window=8, **extra)
    b, t = 3, 16
    with torch.no_grad():  # a state partway into episodes, cache full
        _, state = mem(torch.randn(b, 20, 32), mem.initial_state(b), torch.zeros(b, 20, dtype=torch.bool))
    compiled = copy.deepcopy(mem).compile_training()
    for case in ("resets", "none"):
        starts = torch.zeros(b, t, dtype=torch.bool)
        if case == "resets":
            starts[0, 0] = starts[1, 5] = starts[2, 11] = True
        x = torch.randn(b, t, 32)
        outs = []
        for module in (mem, compiled):
            xi = x.clone().requires_grad_()
            y, new_state = module(xi, state, starts)
            leaves = [s for s in torch.utils._pytree.tree_leaves(new_state) if s.is_floating_point()]
            loss = (y * torch.linspace(-1, 1, y.numel()).view_as(y)).sum() + sum(s.square().mean() for s in leaves)
            grads = torch.autograd.grad(loss, [xi, *module.parameters()])
            outs.append((y.detach(), [s.detach() for s in leaves], grads))
        (y0, s0, g0), (y1, s1, g1) = outs
        torch.testing.assert_close(y1, y0, rtol=1e-4, atol=1e-5)
        for a, c in zip(s1, s0):
            torch.testing.assert_close(a, c, rtol=1e-4, atol=1e-5)
        for a, c in zip(g1, g0):
            torch.testing.assert_close(a, c, rtol=1e-3, atol=1e-4)


@pytest.mark.slow
@pytest.mark.parametrize(
    ("kind", "extra"),
    [
        ("hqlt", {}),
        ("hqlt", {"blend": "delayed_stream"}),
        ("hqlt", {"blend": "delayed_chunk"}),
        ("kv", {}),
        ("deltanet", {}),
        ("hqlt", {"short_conv": 4}),
    ],
    ids=["hqlt", "hqlt-stream", "hqlt-chunk", "kv", "deltanet", "hqlt-conv"],
)
def test_compiled_step_equals_eager_and_has_no_graph_break(kind, extra):
    """Step by step under inference_mode (as in rollouts), with episode starts at some steps and not at others,
    the compiled one-step path gives the eager outputs and final state; and it compiles to one graph (a host read
    such as ``bool(starts.any())`` would split it and cost most of its speed)."""
    torch.manual_seed(0)
    mem = build_memory(kind, d_model=32, n_layers=2, n_heads=2, window=4, **extra)
    b, t = 3, 12
    starts = torch.zeros(b, t, dtype=torch.bool)
    starts[:, 0] = True
    starts[1, 5] = starts[2, 5] = starts[0, 9] = True  # several starts at a step, one alone, steps with none
    x = torch.randn(b, t, 32)
    compiled = copy.deepcopy(mem).compile_rollout()
    explained = torch._dynamo.explain(mem._forward)(x[:, :1], mem.initial_state(b), starts[:, :1])
    assert explained.graph_break_count == 0, explained.break_reasons
    runs = []
    for module in (mem, compiled):
        state, ys = module.initial_state(b), []
        with torch.inference_mode():
            for i in range(t):  # past the window: the ring wraps
                y, state = module(x[:, i : i + 1], state, starts[:, i : i + 1])
                ys.append(y)
        runs.append((torch.cat(ys, 1), torch.utils._pytree.tree_leaves(state)))
    (y0, s0), (y1, s1) = runs
    torch.testing.assert_close(y1, y0, rtol=1e-4, atol=1e-5)
    for a, c in zip(s1, s0):
        torch.testing.assert_close(a, c, rtol=1e-4, atol=1e-5)


@pytest.mark.slow
def test_compiled_rollout_then_compiled_training_backward():
    """The first compiled call (a rollout step under inference_mode) must not leave inference tensors in per-device
    caches that the compiled training graph then saves for backward (it did with the rotary tables on CUDA)."""
    from test_agents import make_env, make_model, replay_rollout

    model = make_model(make_env(n_envs=3, min_len=2, max_len=6), "hqlt", compile_memory=True)
    values, log_prob, _ = replay_rollout(model, grad=True)
    (values.sum() + log_prob.sum()).backward()


@pytest.mark.slow
def test_compiled_replay_compiles_once_from_empty_caches():
    """A fresh process: the first compiled call finds the module caches empty. Later calls of the same shape, and
    eager calls in between (which fill the caches), must reuse its graph: a graph that read a cache while tracing
    was compiled a second time (it cost each synthetic.py --compile run a second compilation)."""
    from memory import fast_weights

    fast_weights._TRIL_CACHE.clear()
    torch._dynamo.reset()
    torch._dynamo.utils.counters.clear()
    torch.manual_seed(0)
    mem = build_memory("deltanet", d_model=32, n_layers=2, n_heads=2).compile_training()
    b, t = 3, 40
    for i in range(3):
        starts = torch.zeros(b, t, dtype=torch.bool)
        starts[:, 0] = True
        starts[i, 7 + i] = True
        y, _ = mem(torch.randn(b, t, 32, requires_grad=True), None, starts)
        y.sum().backward()
        with torch.no_grad():  # an eager call (as an evaluation makes) fills the caches
            mem(torch.randn(b, 9, 32), None, starts[:, :9])
    assert torch._dynamo.utils.counters["stats"]["unique_graphs"] == 1
