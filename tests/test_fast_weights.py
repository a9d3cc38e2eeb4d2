"""Chunk-parallel fast weights (delta rule, sum rule, pseudo-values) against the step-by-step references.

Float64 equivalence on outputs, final state and gradients (w.r.t. q, k, v, beta, initial state), with resets
anywhere in a chunk; plus a long-run stability test of the one-step delta rule used in rollouts.
"""

from __future__ import annotations

import pytest
import torch

from memory.fast_weights import (
    delta_rule_chunked,
    delta_rule_pseudo_values,
    delta_rule_pseudo_values_reference,
    delta_rule_reference,
    delta_rule_step,
    phi,
    sum_rule_chunked,
    sum_rule_reference,
    sum_rule_step,
)

RTOL = 1e-9  # float64: chunked and step-by-step differ only by round-off

# (B, T, H, chunk, resets pattern). Patterns: none, false (a resets tensor with no True: fast path), t0 (reset at the
# first step), mid (one reset in the middle of a chunk), many (several resets in one chunk, adjacent ones included),
# last (reset at the last step of a chunk and at the last step), random (about 1 step in 6).
CASES = [
    (2, 37, 2, 8, "none"),
    (2, 37, 2, 8, "mid"),
    (2, 37, 2, 8, "many"),
    (2, 37, 2, 8, "random"),
    (1, 64, 1, 16, "t0"),
    (2, 40, 3, 8, "last"),
    (3, 5, 2, 8, "mid"),  # T < chunk
    (2, 1, 2, 4, "none"),  # T == 1
    (2, 1, 2, 4, "t0"),
    (2, 33, 2, 1, "random"),  # chunk of one step
    (1, 50, 2, 64, "false"),
    (2, 100, 2, 32, "random"),
]


def _case_id(case: tuple[int, int, int, int, str]) -> str:
    b, t, h, c, pattern = case
    return f"B{b}-T{t}-H{h}-C{c}-{pattern}"


def _resets(pattern: str, batch: int, steps: int, chunk: int, gen: torch.Generator) -> torch.Tensor | None:
    if pattern == "none":
        return None
    r = torch.zeros(batch, steps, dtype=torch.bool)
    if pattern == "t0":
        r[:, 0] = True
        if batch > 1 and steps > 3:
            r[1, steps // 2] = True
    elif pattern == "mid":
        r[0, min(steps - 1, chunk // 2 + 1)] = True
        if batch > 1:
            r[-1, min(steps - 1, chunk + chunk // 2)] = True
    elif pattern == "many":
        for t in (1, 3, 4, 6):  # several in the first chunk, two adjacent
            r[0, min(t, steps - 1)] = True
        r[-1, min(steps - 1, chunk + 2)] = True
        r[-1, min(steps - 1, chunk + 5)] = True
    elif pattern == "last":
        r[:, min(steps - 1, chunk - 1)] = True
        r[0, steps - 1] = True
    elif pattern == "random":
        r = torch.rand(batch, steps, generator=gen) < 1 / 6
    elif pattern != "false":
        raise ValueError(pattern)
    return r


def _inputs(case: tuple[int, int, int, int, str], d_k: int = 6, d_v: int = 5, dtype: torch.dtype = torch.float64):
    b, t, h, c, pattern = case
    gen = torch.Generator().manual_seed(1000 + b * 100 + t + h + c)
    q = phi(torch.randn(b, t, h, d_k, generator=gen, dtype=dtype))
    k = phi(torch.randn(b, t, h, d_k, generator=gen, dtype=dtype))
    v = torch.randn(b, t, h, d_v, generator=gen, dtype=dtype)
    beta = 2.0 * torch.rand(b, t, h, generator=gen, dtype=dtype)  # (0, 2): negative eigenvalues allowed
    w0 = 0.5 * torch.randn(b, h, d_v, d_k, generator=gen, dtype=dtype)
    resets = _resets(pattern, b, t, c, gen)
    return q, k, v, beta, w0, resets, c


def _rel_err(a: torch.Tensor, b: torch.Tensor) -> float:
    return ((a - b).norm() / b.norm().clamp_min(1e-30)).item()


def _grads(fn, tensors: list[torch.Tensor], gen_seed: int) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
    """Values and gradients of a random linear functional of fn's outputs w.r.t. tensors."""
    leaves = [x.detach().clone().requires_grad_(True) for x in tensors]
    outs = fn(*leaves)
    outs = outs if isinstance(outs, tuple) else (outs,)
    gen = torch.Generator().manual_seed(gen_seed)
    loss = sum((o * torch.randn(o.shape, generator=gen, dtype=o.dtype)).sum() for o in outs)
    return [o.detach() for o in outs], list(torch.autograd.grad(loss, leaves))


@pytest.mark.parametrize("case", CASES, ids=_case_id)
def test_delta_rule_chunked_matches_reference(case):
    q, k, v, beta, w0, resets, c = _inputs(case)
    ref_out, ref_grads = _grads(lambda *x: delta_rule_reference(*x, resets=resets), [q, k, v, beta, w0], 7)
    out, grads = _grads(lambda *x: delta_rule_chunked(*x, resets=resets, chunk_size=c), [q, k, v, beta, w0], 7)
    for name, a, b in zip(("o", "final state"), out, ref_out):
        assert a.shape == b.shape, name
        assert _rel_err(a, b) < RTOL, f"{name}: rel err {_rel_err(a, b):.2e}"
    for name, a, b in zip(("q", "k", "v", "beta", "initial_state"), grads, ref_grads):
        assert _rel_err(a, b) < RTOL, f"grad {name}: rel err {_rel_err(a, b):.2e}"


@pytest.mark.parametrize("case", CASES, ids=_case_id)
def test_sum_rule_chunked_matches_reference(case):
    q, k, v, _, w0, resets, c = _inputs(case)
    ref_out, ref_grads = _grads(lambda *x: sum_rule_reference(*x, resets=resets), [q, k, v, w0], 11)
    out, grads = _grads(lambda *x: sum_rule_chunked(*x, resets=resets, chunk_size=c), [q, k, v, w0], 11)
    for name, a, b in zip(("o", "final state"), out, ref_out):
        assert _rel_err(a, b) < RTOL, f"{name}: rel err {_rel_err(a, b):.2e}"
    for name, a, b in zip(("q", "k", "v", "initial_state"), grads, ref_grads):
        assert _rel_err(a, b) < RTOL, f"grad {name}: rel err {_rel_err(a, b):.2e}"


@pytest.mark.parametrize("case", CASES, ids=_case_id)
def test_pseudo_values_match_reference(case):
    _, k, v, beta, w0, resets, c = _inputs(case)
    ref_out, ref_grads = _grads(lambda *x: delta_rule_pseudo_values_reference(*x, resets=resets), [k, v, beta, w0], 13)
    out, grads = _grads(lambda *x: delta_rule_pseudo_values(*x, resets=resets, chunk_size=c), [k, v, beta, w0], 13)
    assert out[0].shape == v.shape
    assert _rel_err(out[0], ref_out[0]) < RTOL, f"u: rel err {_rel_err(out[0], ref_out[0]):.2e}"
    for name, a, b in zip(("k", "v", "beta", "initial_state"), grads, ref_grads):
        assert _rel_err(a, b) < RTOL, f"grad {name}: rel err {_rel_err(a, b):.2e}"


@pytest.mark.parametrize("case", [CASES[1], CASES[2], CASES[3]], ids=_case_id)
def test_pseudo_values_rebuild_states(case):
    """W_t = [no reset in [0, t]] W_0 + sum_{j <= t, same segment} u_j k_j^T, the identity the delayed-chunk blend uses."""
    _, k, v, beta, w0, resets, c = _inputs(case)
    u = delta_rule_pseudo_values(k, v, beta, w0, resets=resets, chunk_size=c)
    steps = k.shape[1]
    r = torch.zeros(k.shape[:2], dtype=torch.bool) if resets is None else resets
    seg = torch.cumsum(r.long(), dim=1)  # (B, T)
    for t in (0, steps // 3, steps - 1):
        _, w_ref = delta_rule_reference(k[:, : t + 1], k[:, : t + 1], v[:, : t + 1], beta[:, : t + 1], w0, r[:, : t + 1])
        same = (seg[:, : t + 1] == seg[:, t : t + 1]).to(k.dtype)[:, :, None, None]  # (B, t+1, 1, 1)
        w = (seg[:, t] == 0).to(k.dtype)[:, None, None, None] * w0
        w = w + torch.einsum("bthv,bthk->bhvk", u[:, : t + 1] * same, k[:, : t + 1])
        assert _rel_err(w, w_ref) < RTOL


@pytest.mark.parametrize("chunk", [1, 3, 16, 64, 200])
def test_chunk_size_does_not_change_result(chunk):
    q, k, v, beta, w0, resets, _ = _inputs((2, 70, 2, 8, "random"))
    o_ref, s_ref = delta_rule_reference(q, k, v, beta, w0, resets)
    o, s = delta_rule_chunked(q, k, v, beta, w0, resets, chunk_size=chunk)
    assert _rel_err(o, o_ref) < RTOL and _rel_err(s, s_ref) < RTOL


def test_resets_equal_separate_episodes():
    """A call with a reset inside equals the second episode run alone from a zero state."""
    q, k, v, beta, w0, _, _ = _inputs((1, 30, 2, 8, "none"))
    resets = torch.zeros(1, 30, dtype=torch.bool)
    resets[0, 11] = True
    o, s = delta_rule_chunked(q, k, v, beta, w0, resets, chunk_size=8)
    o2, s2 = delta_rule_chunked(q[:, 11:], k[:, 11:], v[:, 11:], beta[:, 11:], torch.zeros_like(w0), chunk_size=8)
    assert _rel_err(o[:, 11:], o2) < RTOL and _rel_err(s, s2) < RTOL


def test_float32_matches_reference():
    q, k, v, beta, w0, resets, c = _inputs((2, 300, 2, 64, "random"), d_k=16, d_v=16, dtype=torch.float32)
    o_ref, s_ref = delta_rule_reference(q, k, v, beta, w0, resets)
    o, s = delta_rule_chunked(q, k, v, beta, w0, resets, chunk_size=c)
    assert o.dtype == torch.float32
    assert _rel_err(o, o_ref) < 1e-4 and _rel_err(s, s_ref) < 1e-4


def test_bad_inputs_raise():
    q, k, v, beta, w0, _, _ = _inputs((2, 10, 2, 4, "none"))
    with pytest.raises(ValueError, match="initial_state"):
        delta_rule_chunked(q, k, v, beta, w0[:1], chunk_size=4)
    with pytest.raises(ValueError, match="resets"):
        delta_rule_chunked(q, k, v, beta, w0, torch.zeros(2, 9, dtype=torch.bool))
    with pytest.raises(ValueError, match="chunk_size"):
        sum_rule_chunked(q, k, v, w0, chunk_size=0)
    with pytest.raises(ValueError, match="beta"):
        delta_rule_pseudo_values(k, v, beta[..., :1], w0)


def _run_steps(k_all, v_all, beta_all, state, record):
    """Run delta_rule_step over dim 0 of the inputs; returns (final state, [record(state) after each step])."""
    records = []
    for k, v, beta in zip(k_all.unbind(0), v_all.unbind(0), beta_all.unbind(0)):
        _, state = delta_rule_step(k, k, v, beta, state)
        records.append(record(state))
    return state, records


@torch.no_grad()
def test_delta_rule_step_stable_100k_steps():
    """100,000 one-step updates with phi-mapped keys and beta ~ U(0, 2): no NaN and a bounded fast-weight norm.

    Why it is bounded. Per row w of W (one output unit) and a = w . k, ||k|| = 1, an update changes only the
    component along k: a' = (1 - beta) a + beta v_i, so
        ||w'||^2 = ||w||^2 - beta (2 - beta) a^2 + beta^2 v_i^2 + 2 beta (1 - beta) a v_i.
    With v independent of the past and zero-mean, and E[(w . k)^2] >= lam ||w||^2 (lam = smallest eigenvalue of
    E[k k^T], about 0.93 / Dk for phi of Gaussians), summing over the Dv rows gives
        E||W_t||_F^2 <= (1 - E[beta (2 - beta)] lam) E||W_{t-1}||_F^2 + E[beta^2] E||v||^2,
    a contraction for beta in (0, 2), hence for all t:
        E||W_t||_F^2 <= max(||W_0||_F^2, E[beta^2] E||v||^2 / (E[beta (2 - beta)] lam)) = 2 E||v||^2 / lam
    for beta ~ U(0, 2) (E[beta^2] = 4/3, E[beta (2 - beta)] = 2/3) and W_0 = 0. The test averages ||W||_F^2 over
    the B*H independent matrices and asserts that its time average stays under that bound (+10% sampling slack)
    and its peak under 3x the bound over 100k steps. (A single map I - beta k k^T is only non-expansive, so there is
    no per-step worst-case bound; the expected contraction is what keeps the memory finite.)
    """
    batch, heads, d_k, d_v = 4, 2, 8, 8
    steps, block = 100_000, 2_000
    gen = torch.Generator().manual_seed(0)
    lam = torch.linalg.eigvalsh(
        (lambda x: x.T @ x / x.shape[0])(phi(torch.randn(200_000, d_k, generator=gen, dtype=torch.float64)))
    )[0].item()
    v_sq = d_v / 3.0  # v ~ U(-1, 1)^Dv: E||v||^2 = Dv / 3, max ||v|| = sqrt(Dv)
    bound = 2.0 * v_sq / lam
    state = torch.zeros(batch, heads, d_v, d_k)
    peak, total = 0.0, 0.0
    for _ in range(steps // block):
        k = phi(torch.randn(block, batch, heads, d_k, generator=gen))
        v = 2.0 * torch.rand(block, batch, heads, d_v, generator=gen) - 1.0
        beta = 2.0 * torch.rand(block, batch, heads, generator=gen)
        state, norms = _run_steps(k, v, beta, state, lambda s: s.square().sum())
        norms = torch.stack(norms) / (batch * heads)  # (block,): mean over the B*H matrices
        peak, total = max(peak, norms.max().item()), total + norms.sum().item()
        assert torch.isfinite(state).all()
    assert peak <= 3.0 * bound, f"mean ||W||_F^2 peaked at {peak:.2f}, bound 3 * {bound:.2f}"
    # The bound holds at every t in expectation, so also for the average over time (up to sampling noise).
    assert total / steps <= 1.1 * bound, f"time-averaged ||W||_F^2 {total / steps:.2f} > 1.1 * {bound:.2f}"
    # The norm also stays far below the trivial non-expansive bound t * max ||v|| (= 100k * sqrt(Dv)).
    assert peak**0.5 <= 3.0 * (d_v * d_k) ** 0.5


@torch.no_grad()
def test_delta_rule_step_consistent_targets_monotone():
    """If v_t = W* k_t for a fixed W*, each update is a relaxed projection (beta in (0, 2)), so ||W_t - W*||_F
    never increases (it drops by beta (2 - beta) (a - v_i)^2 per row), whence ||W_t||_F <= ||W_0 - W*|| + ||W*||."""
    batch, heads, d_k, d_v, steps = 2, 2, 8, 4, 5_000
    gen = torch.Generator().manual_seed(1)
    w_star = torch.randn(batch, heads, d_v, d_k, generator=gen, dtype=torch.float64)
    k = phi(torch.randn(steps, batch, heads, d_k, generator=gen, dtype=torch.float64))
    v = torch.einsum("bhvk,tbhk->tbhv", w_star, k)
    beta = 2.0 * torch.rand(steps, batch, heads, generator=gen, dtype=torch.float64)
    _, dist = _run_steps(k, v, beta, torch.zeros_like(w_star), lambda s: (s - w_star).norm(dim=(-2, -1)))
    dist = torch.stack([w_star.norm(dim=(-2, -1))] + dist)  # (steps + 1, B, H)
    assert (dist[1:] <= dist[:-1] * (1 + 1e-12) + 1e-12).all()
    assert (dist[-1] < 0.5 * dist[0]).all()  # and it actually learns W*


@pytest.mark.parametrize("batch", [1, 8])
def test_step_functions_match_einsum_formulas(batch):
    """The one-step functions (written with matmuls for speed) equal the textbook einsum formulas, values and grads."""
    gen = torch.Generator().manual_seed(3)
    heads, d_k, d_v = 3, 6, 5
    q = phi(torch.randn(batch, heads, d_k, generator=gen, dtype=torch.float64))
    k = phi(torch.randn(batch, heads, d_k, generator=gen, dtype=torch.float64))
    v = torch.randn(batch, heads, d_v, generator=gen, dtype=torch.float64)
    beta = 2.0 * torch.rand(batch, heads, generator=gen, dtype=torch.float64)
    w = torch.randn(batch, heads, d_v, d_k, generator=gen, dtype=torch.float64)

    def delta_einsum(q, k, v, beta, w):
        w = w + torch.einsum("bhv,bhk->bhvk", beta.unsqueeze(-1) * (v - torch.einsum("bhvk,bhk->bhv", w, k)), k)
        return torch.einsum("bhvk,bhk->bhv", w, q), w

    def sum_einsum(q, k, v, w):
        w = w + torch.einsum("bhv,bhk->bhvk", v, k)
        return torch.einsum("bhvk,bhk->bhv", w, q), w

    for fast, plain, args in ((delta_rule_step, delta_einsum, [q, k, v, beta, w]), (sum_rule_step, sum_einsum, [q, k, v, w])):
        out, grads = _grads(fast, args, 5)
        ref_out, ref_grads = _grads(plain, args, 5)
        for a, b in zip(out + grads, ref_out + ref_grads):
            assert _rel_err(a, b) < 1e-12
