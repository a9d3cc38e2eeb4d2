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


def test_only_multi_step_calls_with_gradients_take_the_compiled_path():
    torch.manual_seed(0)
    mem = build_memory("hqlt", d_model=16, n_layers=1, n_heads=2, window=4)
    assert mem.compile_training() is mem and mem._compiled_forward is not None
    rec = mem._compiled_forward = _Recorder(mem._forward)
    state = mem.initial_state(2)
    mem(torch.randn(2, 1, 16), state)  # one step (rollout, predict): eager
    with torch.no_grad():
        mem(torch.randn(2, 5, 16), state)  # no gradients: eager
    assert rec.calls == 0
    y, _ = mem(torch.randn(2, 5, 16), state)  # the training replay
    assert rec.calls == 1 and y.requires_grad
    mem.compile_training(False)
    assert mem._compiled_forward is None


def test_copies_and_pickles_drop_the_compiled_callable():
    mem = build_memory("hqlt", d_model=16, n_layers=1, n_heads=2, window=4).compile_training()
    for other in (copy.deepcopy(mem), pickle.loads(pickle.dumps(mem))):
        assert other._compiled_forward is None
        for a, b in zip(mem.state_dict().values(), other.state_dict().values()):
            torch.testing.assert_close(a, b)
    assert mem._compiled_forward is not None  # the original keeps it


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
    assert model.policy.memory._compiled_forward is not None
    model.save(tmp_path / "m.zip")
    loaded = MemoryPPO.load(tmp_path / "m.zip", device="cpu")
    assert loaded.policy.compile_memory and loaded.policy.memory._compiled_forward is not None
    obs = np.stack([env.observation_space.sample() for _ in range(3)])
    a1, s1 = model.predict(obs[:1], None, np.ones(1, bool), deterministic=True)  # one-step path: nothing compiles
    a2, s2 = loaded.predict(obs[:1], None, np.ones(1, bool), deterministic=True)
    np.testing.assert_array_equal(a1, a2)


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
