"""FW-memory: fast weights written by the delta rule (DeltaNet) or the sum rule (linear attention).

Shapes: q, k [B, T, H, Dk] (already feature-mapped by ``phi``), v [B, T, H, Dv], beta [B, T, H],
state W [B, H, Dv, Dk], resets [B, T] bool (W is zeroed *before* step t where resets[:, t]).

Delta rule:  W_t = W_{t-1} + beta_t (v_t - W_{t-1} k_t) k_t^T,   o_t = W_t q_t
Sum rule:    W_t = W_{t-1} + v_t k_t^T,                             o_t = W_t q_t

This file holds the plain step-by-step references; every faster form is tested against them.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def phi(x: torch.Tensor, eps: float = 1e-6) -> torch.Tensor:
    """Feature map of the FW branch: L2-normalise(SiLU(x)) over the last dim."""
    return F.normalize(F.silu(x), p=2.0, dim=-1, eps=eps)


def delta_rule_step(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, beta: torch.Tensor, state: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """One step. q, k [B, H, Dk], v [B, H, Dv], beta [B, H], state [B, H, Dv, Dk] -> (o [B, H, Dv], new state)."""
    v_old = torch.einsum("bhvk,bhk->bhv", state, k)  # (B, H, Dv)
    state = state + torch.einsum("bhv,bhk->bhvk", beta.unsqueeze(-1) * (v - v_old), k)
    return torch.einsum("bhvk,bhk->bhv", state, q), state


def sum_rule_step(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, state: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """One step of the sum rule (linear attention); shapes as in :func:`delta_rule_step`."""
    state = state + torch.einsum("bhv,bhk->bhvk", v, k)
    return torch.einsum("bhvk,bhk->bhv", state, q), state


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
