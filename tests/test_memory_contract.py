"""The memory contract (DESIGN.md, "Contracts") for every memory of the registry, in float64.

- one T-step call equals T one-step calls (outputs and final state), episode starts included;
- a batch whose sequences contain episode starts equals the separate episodes run one by one;
- a call split into two at any point equals one call;
- gradients of the T-step (parallel) form equal those of the one-step path;
- the state is a NamedTuple of batch-first tensors in the parameter dtype that the state helpers can index.
"""

from __future__ import annotations

import pytest
import torch

from memory import build_memory, cat_states, index_state, state_leaves
from memory.config import BLENDS, MIXERS

D_MODEL, B, T = 16, 3, 37
SMALL = dict(n_layers=2, n_heads=2, window=4, chunk_size=8)
SHORT = {"synchronous": "sync", "delayed_stream": "stream", "delayed_chunk": "chunk"}

CASES = [pytest.param("hqlt", dict(blend=b, mixer=m), id=f"hqlt-{SHORT[b]}-{m}") for b in BLENDS for m in MIXERS]
CASES += [pytest.param(name, {}, id=name) for name in ("kv", "deltanet", "linear", "lstm", "gru", "none")]
CARRY_CASES = [
    pytest.param("hqlt", dict(blend=b, carry_fw_across_episodes=True), id=f"hqlt-{SHORT[b]}-vector-carry") for b in BLENDS
] + [pytest.param(n, dict(carry_fw_across_episodes=True), id=f"{n}-carry") for n in ("deltanet", "linear")]
SUM_RULE_CASES = [pytest.param("hqlt", dict(blend=b, fw_rule="sum"), id=f"hqlt-{SHORT[b]}-vector-sumrule") for b in BLENDS]
CASES += SUM_RULE_CASES
# Short convolutions on q, k, v (kernel 3 here, so that two episode starts in a row and a 2-step first episode
# fall inside one kernel span).
CONV_CASES = [pytest.param("hqlt", dict(blend=b, short_conv=3), id=f"hqlt-{SHORT[b]}-vector-conv") for b in BLENDS]
CONV_CASES += [pytest.param(n, dict(short_conv=3), id=f"{n}-conv") for n in ("kv", "deltanet")]
CASES += CONV_CASES
CARRY_CASES += [pytest.param("hqlt", dict(carry_fw_across_episodes=True, short_conv=3), id="hqlt-sync-vector-carry-conv")]


def make(name: str, cfg: dict) -> torch.nn.Module:
    return build_memory(name, d_model=D_MODEL, **SMALL, **cfg).double()


def inputs(batch: int = B, steps: int = T) -> tuple[torch.Tensor, torch.Tensor]:
    x = torch.randn(batch, steps, D_MODEL, dtype=torch.float64)
    starts = torch.zeros(batch, steps, dtype=torch.bool)
    starts[0, [t for t in (5, 6, 17) if t < steps]] = True  # two in a row, and one mid-sequence
    starts[1, [t for t in (0, 13, 30) if t < steps]] = True  # at t = 0 too
    starts[-1, 2] = True  # short first episode (shorter than the window)
    return x, starts


def run_steps(mem, x, starts, state=None):
    state = mem.initial_state(x.shape[0]) if state is None else state
    ys = []
    for t in range(x.shape[1]):
        y, state = mem(x[:, t : t + 1], state, starts[:, t : t + 1])
        ys.append(y)
    return torch.cat(ys, dim=1), state


def assert_states_close(a, b, tol=1e-10):
    la, lb = state_leaves(a), state_leaves(b)
    assert type(a) is type(b) and len(la) == len(lb)
    for u, v in zip(la, lb):
        assert u.shape == v.shape and u.dtype == v.dtype
        if u.is_floating_point():
            torch.testing.assert_close(u, v, rtol=tol, atol=tol)
        else:
            assert torch.equal(u, v)


@pytest.mark.parametrize(("name", "cfg"), CASES + CARRY_CASES)
def test_t_steps_equal_one_steps(name, cfg):
    mem = make(name, cfg)
    x, starts = inputs()
    y, state = mem(x, None, starts)
    y1, state1 = run_steps(mem, x, starts)
    assert y.shape == x.shape
    torch.testing.assert_close(y, y1, rtol=1e-10, atol=1e-10)
    assert_states_close(state, state1)


@pytest.mark.parametrize(("name", "cfg"), CASES)
def test_resets_equal_separate_episodes(name, cfg):
    mem = make(name, cfg)
    x, starts = inputs()
    y, _ = mem(x, None, starts)
    for b in range(x.shape[0]):
        cuts = [0] + [t for t in range(1, T) if starts[b, t]] + [T]
        parts = [mem(x[b : b + 1, t0:t1], mem.initial_state(1))[0] for t0, t1 in zip(cuts[:-1], cuts[1:])]
        torch.testing.assert_close(y[b : b + 1], torch.cat(parts, dim=1), rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize("split", [1, 3, 6, 22], ids=lambda s: f"split{s}")
@pytest.mark.parametrize(("name", "cfg"), CASES + CARRY_CASES)
def test_split_call_equals_one_call(name, cfg, split):
    mem = make(name, cfg)
    x, starts = inputs()
    y, state = mem(x, None, starts)
    ya, sa = mem(x[:, :split], None, starts[:, :split])
    yb, sb = mem(x[:, split:], sa, starts[:, split:])
    torch.testing.assert_close(y, torch.cat((ya, yb), dim=1), rtol=1e-10, atol=1e-10)
    assert_states_close(state, sb)


@pytest.mark.parametrize(("name", "cfg"), CASES + CARRY_CASES)
def test_gradients_parallel_equal_steps(name, cfg):
    mem = make(name, cfg)
    params = [p for p in mem.parameters() if p.requires_grad]
    x, starts = inputs(batch=2, steps=19)
    weights = torch.randn(2, 19, D_MODEL, dtype=torch.float64)

    def grads(step_by_step: bool):
        xg = x.clone().requires_grad_(True)
        y, _ = run_steps(mem, xg, starts) if step_by_step else mem(xg, None, starts)
        return torch.autograd.grad((y * weights).sum(), [xg, *params], allow_unused=True)

    for g_par, g_step in zip(grads(False), grads(True)):
        if g_par is None or g_step is None:
            assert g_par is None and g_step is None
            continue
        torch.testing.assert_close(g_par, g_step, rtol=1e-9, atol=1e-10)


@pytest.mark.parametrize(("name", "cfg"), CASES)
def test_state_is_typed_batch_first_and_indexable(name, cfg):
    mem = make(name, cfg)
    state = mem.initial_state(4)
    assert isinstance(state, tuple) and hasattr(state, "_fields")
    has_params = any(True for _ in mem.parameters())
    for leaf in state_leaves(state):
        assert leaf.shape[0] == 4
        assert not (has_params and leaf.is_floating_point()) or leaf.dtype == torch.float64
    x, starts = inputs(batch=4, steps=9)
    _, state = mem(x, state, starts)
    # Running a subset of the batch from the indexed state equals indexing the full result.
    idx = torch.tensor([2, 0])
    x2, starts2 = inputs(batch=4, steps=5)
    y_full, s_full = mem(x2, state, starts2)
    y_sub, s_sub = mem(x2[idx], index_state(state, idx), starts2[idx])
    torch.testing.assert_close(y_sub, y_full[idx], rtol=1e-10, atol=1e-10)
    assert_states_close(s_sub, index_state(s_full, idx))
    assert_states_close(cat_states([index_state(state, [0, 1]), index_state(state, [2, 3])]), state)


def test_one_step_path_does_not_grow_with_episode_length():
    """The one-step KV cache has a fixed size whatever the episode length."""
    mem = make("hqlt", dict(blend="delayed_stream"))
    state = mem.initial_state(2)
    sizes = {tuple(leaf.shape) for leaf in state_leaves(state)}
    x = torch.randn(2, 1, D_MODEL, dtype=torch.float64)
    for _ in range(20):
        _, state = mem(x, state)
    assert {tuple(leaf.shape) for leaf in state_leaves(state)} == sizes
    assert int(state.layers[0].kv.position[0]) == 20
