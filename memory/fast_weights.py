"""FW-memory: fast weights written by the delta rule (DeltaNet) or the sum rule (linear attention).

Shapes: q, k [B, T, H, Dk] (already feature-mapped by ``phi``), v [B, T, H, Dv], beta [B, T, H],
state W [B, H, Dv, Dk], resets [B, T] bool (W is zeroed *before* step t where resets[:, t]).

Delta rule:  W_t = W_{t-1} + beta_t (v_t - W_{t-1} k_t) k_t^T,   o_t = W_t q_t
Sum rule:    W_t = W_{t-1} + v_t k_t^T,                             o_t = W_t q_t

This file holds the plain step-by-step references and the chunk-parallel training forms tested against them.
"""

from __future__ import annotations

from typing import NamedTuple

import torch
import torch.nn.functional as F


def phi(x: torch.Tensor, eps: float = 1e-6, activation: str = "silu") -> torch.Tensor:
    """Feature map of the FW branch: L2-normalise(SiLU(x)) over the last dim; with ``activation="identity"``,
    L2-normalise(x)."""
    return F.normalize(x if activation == "identity" else F.silu(x), p=2.0, dim=-1, eps=eps)


def delta_rule_step(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, beta: torch.Tensor, state: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """One step. q, k [B, H, Dk], v [B, H, Dv], beta [B, H], state [B, H, Dv, Dk] -> (o [B, H, Dv], new state).

    Written with batched mat-vec products and a broadcast outer product rather than einsum: same arithmetic, about
    1.5x less per-call overhead at rollout sizes (the rollout runs this once per env step and layer).
    """
    v_old = (state @ k.unsqueeze(-1)).squeeze(-1)  # (B, H, Dv): W_{t-1} k_t
    u = beta.unsqueeze(-1) * (v - v_old)  # (B, H, Dv)
    state = state + u.unsqueeze(-1) * k.unsqueeze(-2)  # (B, H, Dv, Dk)
    return (state @ q.unsqueeze(-1)).squeeze(-1), state


def sum_rule_step(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, state: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """One step of the sum rule (linear attention); shapes as in :func:`delta_rule_step`."""
    state = state + v.unsqueeze(-1) * k.unsqueeze(-2)  # (B, H, Dv, Dk)
    return (state @ q.unsqueeze(-1)).squeeze(-1), state


def _apply_reset(state: torch.Tensor, resets: torch.Tensor | None, t: int) -> torch.Tensor:
    if resets is None:
        return state
    keep = (~resets[:, t]).to(state.dtype).view(-1, 1, 1, 1)  # (B, 1, 1, 1)
    return state * keep


def delta_rule_reference(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    beta: torch.Tensor,
    initial_state: torch.Tensor,
    resets: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Step-by-step delta rule. Returns (o [B, T, H, Dv], final state [B, H, Dv, Dk])."""
    state = initial_state
    outputs = []
    for t in range(q.shape[1]):
        state = _apply_reset(state, resets, t)
        o, state = delta_rule_step(q[:, t], k[:, t], v[:, t], beta[:, t], state)
        outputs.append(o)
    return torch.stack(outputs, dim=1), state


def sum_rule_reference(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    initial_state: torch.Tensor,
    resets: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Step-by-step sum rule (linear attention). Returns (o [B, T, H, Dv], final state)."""
    state = initial_state
    outputs = []
    for t in range(q.shape[1]):
        state = _apply_reset(state, resets, t)
        o, state = sum_rule_step(q[:, t], k[:, t], v[:, t], state)
        outputs.append(o)
    return torch.stack(outputs, dim=1), state


# ---------------------------------------------------------------------------------------------------------------------
# Chunk-parallel forms (training path). Everything below is tested against the step-by-step references above.
#
# Within a chunk of C steps starting from state S, with segment ids seg_t = #resets in [chunk start, t]:
#   g_t = [seg_t == 0]                       (the chunk-start state S is still visible at t)
#   M_tj = [seg_t == seg_j]                  (steps t and j are in the same episode segment)
#   W_t = g_t S + sum_{j <= t, M_tj} u_j k_j^T
# The delta rule's pseudo-values u_t = beta_t (v_t - W_{t-1} k_t) then satisfy the unit-lower-triangular system
#   (I + tril(diag(beta) K K^T * M, -1)) U = diag(beta) (V - diag(g) K S^T)
# (the "UT transform"), so U = u0 - w S^T with u0, w from one triangular solve per chunk, all chunks at once.
# Only the chunk-start states are computed sequentially (N = ceil(T / C) small matmuls).
# Default C = 32: fastest of 32/64/128 on CPU for B=16, H=4, d_head=32 (benchmarks/memory_speed.py), 64 close behind.
# The sum rule is the special case u_t = v_t with no solve.
# ---------------------------------------------------------------------------------------------------------------------


class _ChunkMasks(NamedTuple):
    """Reset masks per chunk, or None everywhere when there is no reset (fast path)."""

    same: torch.Tensor | None  # (B, 1, N, C, C): M_tj = [seg_t == seg_j]
    start_visible: torch.Tensor | None  # (B, 1, N, C, 1): g_t = [seg_t == 0]
    to_end: torch.Tensor | None  # (B, 1, N, C, 1): [seg_j == seg_last], j contributes to the chunk-end state
    keep_start: torch.Tensor | None  # (B, 1, N, 1, 1): g_last, the chunk-start state survives to the chunk end
    strict: torch.Tensor | None = None  # (C, C) or (B, 1, N, C, C): j < t (and M_tj)
    causal: torch.Tensor | None = None  # (C, C) or (B, 1, N, C, C): j <= t (and M_tj)


def _check_inputs(
    name: str, k: torch.Tensor, v: torch.Tensor, initial_state: torch.Tensor, resets: torch.Tensor | None, chunk_size: int
) -> None:
    if k.dim() != 4 or v.dim() != 4 or k.shape[:3] != v.shape[:3]:
        raise ValueError(f"{name}: k must be [B, T, H, Dk] and v [B, T, H, Dv], got {tuple(k.shape)} and {tuple(v.shape)}")
    batch, _, heads, d_k = k.shape
    expected = (batch, heads, v.shape[-1], d_k)
    if tuple(initial_state.shape) != expected:
        raise ValueError(f"{name}: initial_state must be [B, H, Dv, Dk] = {expected}, got {tuple(initial_state.shape)}")
    if resets is not None and tuple(resets.shape) != tuple(k.shape[:2]):
        raise ValueError(f"{name}: resets must be [B, T] = {tuple(k.shape[:2])}, got {tuple(resets.shape)}")
    if isinstance(chunk_size, bool) or not isinstance(chunk_size, int) or chunk_size <= 0:
        raise ValueError(f"{name}: chunk_size must be a positive integer, got {chunk_size!r}")


def _chunk_layout(steps: int, chunk_size: int) -> tuple[int, int, int]:
    """(chunk length C, number of chunks N, padded steps) for a sequence of ``steps``."""
    c = max(1, min(chunk_size, steps))
    n = -(-steps // c)
    return c, n, n * c - steps


def _pad_time(x: torch.Tensor, pad: int) -> torch.Tensor:
    """Zero-pad dim 1 (time) at the end by ``pad`` steps."""
    if pad == 0:
        return x
    return torch.cat([x, x.new_zeros((x.shape[0], pad, *x.shape[2:]))], dim=1)


def _to_chunks(x: torch.Tensor, n: int, c: int) -> torch.Tensor:
    """[B, N*C, H, *D] -> [B, H, N, C, *D], contiguous: one copy here spares a copy inside every matmul that reads it
    (the batch dims B, H, N of the moved view do not fold into one), in the forward and the backward pass."""
    b, _, h = x.shape[:3]
    return x.reshape(b, n, c, h, *x.shape[3:]).movedim(3, 1).contiguous()  # (B, H, N, C, *D)


def _from_chunks(x: torch.Tensor, steps: int) -> torch.Tensor:
    """[B, H, N, C, D] -> [B, T, H, D] (padding dropped)."""
    b, h, n, c, d = x.shape
    out = x.movedim(1, 3).reshape(b, n * c, h, d)  # (B, N*C, H, D)
    return out if n * c == steps else out[:, :steps]  # a full-length slice would still cost a backward node


_TRIL_CACHE: dict[tuple, torch.Tensor] = {}
# The layers of a stack call the chunked forms with the same resets tensor: the masks are built once per call.
_MASK_CACHE: list = []  # [resets, its version, key, masks] of the last call, or empty


def _tril(c: int, diagonal: int, dtype: torch.dtype, device: torch.device) -> torch.Tensor:
    """Cached (C, C) lower-triangular ones (read-only: never modify the result in place)."""
    if torch.compiler.is_compiling():
        # built inside the graph: reading the cache while tracing would make the graph depend on what the cache held
        # then, and the first eager call that fills it would force a recompilation
        return torch.ones(c, c, dtype=dtype, device=device).tril(diagonal)
    key = (c, diagonal, dtype, device)
    out = _TRIL_CACHE.get(key)
    if out is None:
        if len(_TRIL_CACHE) > 64:
            _TRIL_CACHE.clear()
        out = _TRIL_CACHE[key] = torch.ones(c, c, dtype=dtype, device=device).tril(diagonal)
    return out


def _chunk_masks(resets: torch.Tensor | None, pad: int, n: int, c: int, dtype: torch.dtype) -> _ChunkMasks:
    if resets is None:
        return _ChunkMasks(None, None, None, None, None, None)
    key = (pad, n, c, dtype)
    cacheable = not torch.compiler.is_compiling() and not resets.is_inference()
    if cacheable and _MASK_CACHE and _MASK_CACHE[0] is resets and _MASK_CACHE[1] == resets._version and _MASK_CACHE[2] == key:
        return _MASK_CACHE[3]
    masks = _build_chunk_masks(resets, pad, n, c, dtype)
    if cacheable:
        _MASK_CACHE[:] = [resets, resets._version, key, masks]
    return masks


def _build_chunk_masks(resets: torch.Tensor, pad: int, n: int, c: int, dtype: torch.dtype) -> _ChunkMasks:
    strict, causal = _tril(c, -1, dtype, resets.device), _tril(c, 0, dtype, resets.device)  # (C, C) each
    if not torch.compiler.is_compiling() and not bool(resets.any()):
        return _ChunkMasks(None, None, None, None, strict, causal)
    r = _pad_time(resets.to(torch.bool), pad).reshape(-1, n, c)  # (B, N, C); padded steps never reset
    seg = torch.cumsum(r.to(torch.int64), dim=-1)  # (B, N, C)
    same = (seg.unsqueeze(-1) == seg.unsqueeze(-2)).to(dtype).unsqueeze(1)  # (B, 1, N, C, C)
    start_visible = (seg == 0).to(dtype)[:, None, :, :, None]  # (B, 1, N, C, 1)
    to_end = (seg == seg[..., -1:]).to(dtype)[:, None, :, :, None]  # (B, 1, N, C, 1)
    keep_start = (seg[..., -1] == 0).to(dtype)[:, None, :, None, None]  # (B, 1, N, 1, 1)
    return _ChunkMasks(same, start_visible, to_end, keep_start, same * strict, same * causal)


def _chunk_scan(
    k: torch.Tensor,
    u0: torch.Tensor,
    w: torch.Tensor | None,
    initial_state: torch.Tensor,
    masks: _ChunkMasks,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Sequential pass over chunks.

    k [B, H, N, C, Dk], u0 [B, H, N, C, Dv], w [B, H, N, C, Dk] or None (then U = u0), initial_state [B, H, Dv, Dk].
    Returns (U [B, H, N, C, Dv], chunk-start states [B, H, N, Dv, Dk], final state [B, H, Dv, Dk]).
    """
    k_end = k if masks.to_end is None else k * masks.to_end  # (B, H, N, C, Dk)
    if k.shape[2] == 1:  # one chunk: no loop, no unbind / stack
        u = u0 if w is None else u0 - w @ initial_state.unsqueeze(2).transpose(-1, -2)  # (B, H, 1, C, Dv)
        update = (u.transpose(-1, -2) @ k_end).squeeze(2)  # (B, H, Dv, Dk)
        keep = None if masks.keep_start is None else masks.keep_start.squeeze(2)  # (B, 1, 1, 1)
        final = initial_state + update if keep is None else initial_state * keep + update
        return u, initial_state.unsqueeze(2), final
    # unbind (not indexing in the loop): its backward stacks the chunk gradients instead of N full-size scatters.
    u0s = u0.unbind(2)
    ws = [None] * len(u0s) if w is None else w.unbind(2)
    keeps = [None] * len(u0s) if masks.keep_start is None else masks.keep_start.unbind(2)
    state = initial_state
    starts, us = [], []
    for u0_i, w_i, k_i, keep_i in zip(u0s, ws, k_end.unbind(2), keeps):
        starts.append(state)
        u = u0_i if w_i is None else u0_i - w_i @ state.transpose(-1, -2)  # (B, H, C, Dv)
        us.append(u)
        update = u.transpose(-1, -2) @ k_i  # (B, H, Dv, Dk)
        state = state + update if keep_i is None else state * keep_i + update
    return torch.stack(us, dim=2), torch.stack(starts, dim=2), state


def _chunk_outputs(
    q: torch.Tensor, k: torch.Tensor, u: torch.Tensor, starts: torch.Tensor, masks: _ChunkMasks
) -> torch.Tensor:
    """o_t = g_t S q_t + sum_{j <= t, same segment} (q_t . k_j) u_j, for all chunks at once -> [B, H, N, C, Dv]."""
    causal = masks.causal if masks.causal is not None else _tril(q.shape[-2], 0, q.dtype, q.device)  # (C, C) / (B, 1, N, C, C)
    scores = (q @ k.transpose(-1, -2)) * causal  # (B, H, N, C, C), diagonal included
    inter = q @ starts.transpose(-1, -2)  # (B, H, N, C, Dv)
    if masks.start_visible is not None:
        inter = inter * masks.start_visible
    return inter + scores @ u


def _delta_rule_pseudo_values_chunks(
    k: torch.Tensor,
    v: torch.Tensor,
    beta: torch.Tensor,
    initial_state: torch.Tensor,
    resets: torch.Tensor | None,
    chunk_size: int,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, _ChunkMasks, int]:
    """Shared core of the chunked delta rule.

    Returns (k chunks [B, H, N, C, Dk], U [B, H, N, C, Dv], chunk-start states [B, H, N, Dv, Dk], final state, masks, pad).
    """
    steps = k.shape[1]
    c, n, pad = _chunk_layout(steps, chunk_size)
    masks = _chunk_masks(resets, pad, n, c, k.dtype)
    # Padded steps have k = 0 and beta = 0: u = 0 there and the state passes through unchanged.
    kc = _to_chunks(_pad_time(k, pad), n, c)  # (B, H, N, C, Dk)
    vc = _to_chunks(_pad_time(v, pad), n, c)  # (B, H, N, C, Dv)
    bc = _to_chunks(_pad_time(beta, pad), n, c).unsqueeze(-1)  # (B, H, N, C, 1)

    mask = masks.strict if masks.strict is not None else _tril(c, -1, k.dtype, k.device)  # (C, C) or (B, 1, N, C, C)
    gram = (kc @ kc.transpose(-1, -2)) * mask  # (B, H, N, C, C), strictly lower
    # Unit lower triangular (the solve reads only the strict lower part when unitriangular=True).
    lower = bc * gram  # (B, H, N, C, C)
    k_start = kc if masks.start_visible is None else kc * masks.start_visible  # (B, H, N, C, Dk)
    rhs = bc * torch.cat([vc, k_start], dim=-1)  # (B, H, N, C, Dv + Dk)
    sol = torch.linalg.solve_triangular(lower, rhs, upper=False, unitriangular=True)  # (B, H, N, C, Dv + Dk)
    d_v = v.shape[-1]
    u0, w = sol.split([d_v, sol.shape[-1] - d_v], dim=-1)  # one backward node for both
    u, starts, final = _chunk_scan(kc, u0, w, initial_state, masks)
    return kc, u, starts, final, masks, pad


def delta_rule_chunked(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    beta: torch.Tensor,
    initial_state: torch.Tensor,
    resets: torch.Tensor | None = None,
    chunk_size: int = 32,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Chunk-parallel delta rule, equal to :func:`delta_rule_reference` (outputs, final state, gradients).

    q, k [B, T, H, Dk] (phi-mapped), v [B, T, H, Dv], beta [B, T, H] (any value; (0, 2) in practice),
    initial_state [B, H, Dv, Dk], resets [B, T] bool or None (state zeroed before step t).
    Returns (o [B, T, H, Dv], final state [B, H, Dv, Dk]). Differentiable w.r.t. q, k, v, beta and initial_state.
    """
    _check_inputs("delta_rule_chunked", k, v, initial_state, resets, chunk_size)
    if q.shape != k.shape or beta.shape != k.shape[:3]:
        raise ValueError(
            f"delta_rule_chunked: q must match k {tuple(k.shape)} and beta be [B, T, H] = {tuple(k.shape[:3])}, "
            f"got q {tuple(q.shape)} and beta {tuple(beta.shape)}"
        )
    steps = k.shape[1]
    if steps == 0:
        return v.new_zeros(v.shape), initial_state
    kc, u, starts, final, masks, pad = _delta_rule_pseudo_values_chunks(k, v, beta, initial_state, resets, chunk_size)
    qc = _to_chunks(_pad_time(q, pad), kc.shape[2], kc.shape[3])  # (B, H, N, C, Dk)
    return _from_chunks(_chunk_outputs(qc, kc, u, starts, masks), steps), final


def delta_rule_pseudo_values(
    k: torch.Tensor,
    v: torch.Tensor,
    beta: torch.Tensor,
    initial_state: torch.Tensor,
    resets: torch.Tensor | None = None,
    chunk_size: int = 32,
) -> torch.Tensor:
    """Pseudo-values u_t = beta_t (v_t - W_{t-1} k_t) of the delta rule (W_{t-1} after the reset at t, if any).

    k [B, T, H, Dk], v [B, T, H, Dv], beta [B, T, H], initial_state [B, H, Dv, Dk], resets [B, T] bool or None
    -> u [B, T, H, Dv]. Then W_t = [no reset in [0, t]] W_0 + sum_{j <= t, same episode segment} u_j k_j^T.
    """
    _check_inputs("delta_rule_pseudo_values", k, v, initial_state, resets, chunk_size)
    if beta.shape != k.shape[:3]:
        raise ValueError(f"delta_rule_pseudo_values: beta must be [B, T, H] = {tuple(k.shape[:3])}, got {tuple(beta.shape)}")
    steps = k.shape[1]
    if steps == 0:
        return v.new_zeros(v.shape)
    _, u, _, _, _, _ = _delta_rule_pseudo_values_chunks(k, v, beta, initial_state, resets, chunk_size)
    return _from_chunks(u, steps)


def delta_rule_pseudo_values_reference(
    k: torch.Tensor,
    v: torch.Tensor,
    beta: torch.Tensor,
    initial_state: torch.Tensor,
    resets: torch.Tensor | None = None,
) -> torch.Tensor:
    """Step-by-step pseudo-values u_t = beta_t (v_t - W_{t-1} k_t); shapes as in :func:`delta_rule_pseudo_values`."""
    state = initial_state
    us = []
    for t in range(k.shape[1]):
        state = _apply_reset(state, resets, t)
        u = beta[:, t].unsqueeze(-1) * (v[:, t] - torch.einsum("bhvk,bhk->bhv", state, k[:, t]))  # (B, H, Dv)
        state = state + torch.einsum("bhv,bhk->bhvk", u, k[:, t])
        us.append(u)
    return torch.stack(us, dim=1)


def sum_rule_chunked(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    initial_state: torch.Tensor,
    resets: torch.Tensor | None = None,
    chunk_size: int = 32,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Chunk-parallel sum rule (linear attention), equal to :func:`sum_rule_reference`; shapes as there."""
    _check_inputs("sum_rule_chunked", k, v, initial_state, resets, chunk_size)
    if q.shape != k.shape:
        raise ValueError(f"sum_rule_chunked: q must match k {tuple(k.shape)}, got {tuple(q.shape)}")
    steps = k.shape[1]
    if steps == 0:
        return v.new_zeros(v.shape), initial_state
    c, n, pad = _chunk_layout(steps, chunk_size)
    masks = _chunk_masks(resets, pad, n, c, k.dtype)
    qc = _to_chunks(_pad_time(q, pad), n, c)  # (B, H, N, C, Dk)
    kc = _to_chunks(_pad_time(k, pad), n, c)  # (B, H, N, C, Dk)
    vc = _to_chunks(_pad_time(v, pad), n, c)  # (B, H, N, C, Dv)
    u, starts, final = _chunk_scan(kc, vc, None, initial_state, masks)
    return _from_chunks(_chunk_outputs(qc, kc, u, starts, masks), steps), final
