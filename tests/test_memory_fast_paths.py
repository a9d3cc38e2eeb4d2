"""Rotary encoding applied to cached keys at write time: exact far into an episode, in both forms."""

from __future__ import annotations

import math

import pytest
import torch

from memory import build_memory
from memory.kv import Rotary


@pytest.mark.parametrize("position", [0, 37, 10_007, 1_000_003, 123_456_789], ids=lambda p: f"p{p}")
def test_rotary_tables_exact_far_into_an_episode(position):
    """cos/sin at large positions match a float64 math reference to float32 round-off (angles are built in float64)."""
    d, base = 16, 10000.0
    rot = Rotary(d, base)
    cos, sin = rot.cos_sin(torch.tensor([position]), torch.float32)  # (1, D)
    angles = [position * base ** (-2.0 * i / d) for i in range(d // 2)]
    ref_cos = torch.tensor([math.cos(a) for a in angles] * 2)
    ref_sin = torch.tensor([-math.sin(a) for a in angles] + [math.sin(a) for a in angles])
    torch.testing.assert_close(cos[0], ref_cos, rtol=0, atol=2e-7)
    torch.testing.assert_close(sin[0], ref_sin, rtol=0, atol=2e-7)
    # Rotation is an isometry and matches the rotate-half definition.
    x = torch.randn(3, d, dtype=torch.float64)
    y = rot.rotate(x, *rot.cos_sin(torch.tensor(position), torch.float64))
    x1, x2 = x[:, : d // 2], x[:, d // 2 :]
    c, s = torch.tensor(angles, dtype=torch.float64).cos(), torch.tensor(angles, dtype=torch.float64).sin()
    torch.testing.assert_close(y, torch.cat((x1 * c - x2 * s, x1 * s + x2 * c), dim=-1), rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("blend", ["synchronous", "delayed_stream", "delayed_chunk"])
def test_steps_equal_parallel_at_large_positions(blend):
    """From a state a million steps into an episode, T one-step calls equal one T-step call (float32)."""
    torch.manual_seed(0)
    mem = build_memory("hqlt", d_model=16, n_layers=2, n_heads=2, window=4, blend=blend)
    x = torch.randn(2, 9, 16)
    starts = torch.zeros(2, 9, dtype=torch.bool)
    starts[1, 5] = True
    _, state = mem(torch.randn(2, 6, 16), None, torch.zeros(2, 6, dtype=torch.bool))
    far = torch.tensor([1_000_000, 2_000_003])
    layers = tuple(layer._replace(kv=layer.kv._replace(position=layer.kv.position + far)) for layer in state.layers)
    state = type(state)(layers)
    y_par, s_par = mem(x, state, starts)
    ys, s = [], state
    for t in range(9):
        y, s = mem(x[:, t : t + 1], s, starts[:, t : t + 1])
        ys.append(y)
    torch.testing.assert_close(torch.cat(ys, dim=1), y_par, rtol=1e-4, atol=1e-5)
    for a, b in zip(s.layers, s_par.layers):
        torch.testing.assert_close(a.kv.keys, b.kv.keys, rtol=1e-4, atol=1e-5)
        assert torch.equal(a.kv.position, b.kv.position)


def test_rotary_tables_first_built_under_inference_mode_are_ordinary_tensors():
    """The per-device copy of the rotary frequencies is made on first use, which in MemoryPPO is a rollout step under
    inference_mode; cached as an inference tensor it breaks the compiled training graph that saves it for backward
    (seen on CUDA). 'meta' stands in for a device other than the CPU."""
    rot = Rotary(8)
    with torch.inference_mode():
        freqs = rot._freqs(torch.device("meta"))
    assert freqs.device.type == "meta" and not freqs.is_inference()
