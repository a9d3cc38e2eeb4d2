"""KV-memory: causal softmax attention over a sliding window of the last S steps of the current episode.

The cache is a fixed-size ring buffer: the step with position p (its index within the episode) lives in
slot ``p % S``. Only the position of the next step is stored; which slots are valid follows from it
(slot ``i`` holds position ``p - ((p - i) mod S)``, valid when that is >= 0), so clearing the window at
an episode start is just ``position = 0``.

Two forms, tested against each other and against a plain per-episode reference in ``tests/``:

- ``step``: one step, O(S) work, independent of the episode length (rollouts);
- ``parallel``: T steps at once; the ordered cache is concatenated with the new keys and a
  window + same-episode + valid mask is built (training).

Keys are cached *without* rotary encoding; RoPE is applied at attention time from the positions, so the
same raw keys can also feed the fast weights (delayed-streaming blend).
"""

from __future__ import annotations

from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import nn


class KVState(NamedTuple):
    """Ring-buffer KV cache of one layer."""

    keys: torch.Tensor  # (B, H, S, Dk), raw keys (no RoPE)
    values: torch.Tensor  # (B, H, S, Dv)
    position: torch.Tensor  # (B,) long: index within the episode of the next step


def step_positions(episode_starts: torch.Tensor, position: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Positions within the episode and segment ids of T new steps.

    episode_starts [B, T] bool, position [B] long (position of the first new step if no start) ->
    (pos [B, T] long, seg [B, T] long) where ``seg`` counts the episode starts seen up to and including t
    (so seg == 0 means "same episode as the state").
    """
    steps = episode_starts.shape[1]
    t = torch.arange(steps, device=episode_starts.device)
    last_start = torch.where(episode_starts, t, -1).cummax(dim=1).values  # (B, T)
    pos = torch.where(last_start >= 0, t - last_start, position.unsqueeze(1) + t)
    seg = episode_starts.long().cumsum(dim=1)
    return pos, seg


def order_ring(ring: torch.Tensor, position: torch.Tensor) -> torch.Tensor:
    """Ring [B, H, S, ...] -> the same entries ordered by position p - S .. p - 1 (oldest first)."""
    b, _, s = ring.shape[:3]
    idx = torch.remainder(position.unsqueeze(1) - s + torch.arange(s, device=ring.device), s)  # (B, S)
    idx = idx.view(b, 1, s, *([1] * (ring.dim() - 3))).expand(-1, ring.shape[1], -1, *ring.shape[3:])
    return ring.gather(2, idx)


def to_ring(ordered: torch.Tensor, position: torch.Tensor) -> torch.Tensor:
    """Inverse of :func:`order_ring`: entries [B, H, S, ...] for positions p - S .. p - 1 -> ring slots."""
    b, _, s = ordered.shape[:3]
    idx = torch.remainder(torch.arange(s, device=ordered.device) - position.unsqueeze(1), s)  # (B, S)
    idx = idx.view(b, 1, s, *([1] * (ordered.dim() - 3))).expand(-1, ordered.shape[1], -1, *ordered.shape[3:])
    return ordered.gather(2, idx)


def last_window(ctx: torch.Tensor, position: torch.Tensor, window: int) -> torch.Tensor:
    """Ring [B, H, S, ...] for the next step from a context [B, H, N, ...] (N >= S) ending at position p - 1.

    The last S entries are positions p - S .. p - 1; those with a negative position (earlier episodes) are
    zeroed, so the ring matches the one of the one-step path exactly.
    """
    last = ctx[:, :, ctx.shape[2] - window :]  # (B, H, S, ...)
    keep = position.unsqueeze(1) - window + torch.arange(window, device=ctx.device) >= 0  # (B, S)
    last = last * keep.view(*keep.shape[:1], 1, window, *([1] * (ctx.dim() - 3))).to(ctx.dtype)
    return to_ring(last, position)


def write_slot(ring: torch.Tensor, slot: torch.Tensor, new: torch.Tensor) -> torch.Tensor:
    """Out-of-place write of ``new`` [B, H, ...] into ``ring`` [B, H, S, ...] at ``slot`` [B] (long)."""
    s = ring.shape[2]
    hit = torch.arange(s, device=ring.device).unsqueeze(0) == slot.unsqueeze(1)  # (B, S)
    hit = hit.view(ring.shape[0], 1, s, *([1] * (ring.dim() - 3)))
    return torch.where(hit, new.unsqueeze(2), ring)


def read_slot(ring: torch.Tensor, slot: torch.Tensor) -> torch.Tensor:
    """``ring`` [B, H, S, ...] at ``slot`` [B] -> [B, H, ...]."""
    b, h, s = ring.shape[:3]
    idx = slot.view(b, 1, 1, *([1] * (ring.dim() - 3))).expand(-1, h, 1, *ring.shape[3:])
    return ring.gather(2, idx).squeeze(2)


class Rotary(nn.Module):
    """Rotary position encoding (rotate-half convention) for head size ``dim`` (even).

    Angles are computed in float64 whatever the module dtype (positions grow with the episode), and
    ``relative`` serves the one-step path from a small cached table: <R(p) q, R(s) k> = <R(p - s) q, k>.
    """

    def __init__(self, dim: int, base: float = 10000.0) -> None:
        super().__init__()
        if dim % 2 != 0:
            raise ValueError(f"rotary encoding needs an even head size, got d_head={dim}; set rope=False or change n_heads")
        self.dim, self.base = dim, base
        self._tables: dict[tuple, tuple[torch.Tensor, torch.Tensor]] = {}

    def _angles(self, pos: torch.Tensor) -> torch.Tensor:
        inv_freq = self.base ** (-torch.arange(0, self.dim, 2, dtype=torch.float64, device=pos.device) / self.dim)
        return pos.to(torch.float64).unsqueeze(-1) * inv_freq  # (..., D/2)

    @staticmethod
    def _rotate(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
        x1, x2 = x.chunk(2, dim=-1)
        return torch.cat((x1 * cos - x2 * sin, x1 * sin + x2 * cos), dim=-1)

    def forward(self, x: torch.Tensor, pos: torch.Tensor) -> torch.Tensor:
        """x [B, H, N, D], pos [B, N] long -> x rotated by angle pos * inv_freq."""
        angle = self._angles(pos).unsqueeze(1)  # (B, 1, N, D/2)
        return self._rotate(x, angle.cos().to(x.dtype), angle.sin().to(x.dtype))

    def relative(self, q: torch.Tensor, offset: torch.Tensor, size: int) -> torch.Tensor:
        """q [B, H, D] rotated by each offset [B, N] (long, in [0, size)) -> [B, H, N, D], from a cached table."""
        key = (q.dtype, q.device, size)
        if key not in self._tables:
            angle = self._angles(torch.arange(size, device=q.device))  # (size, D/2)
            self._tables[key] = (angle.cos().to(q.dtype), angle.sin().to(q.dtype))
        cos, sin = (tab[offset].unsqueeze(1) for tab in self._tables[key])  # (B, 1, N, D/2)
        return self._rotate(q.unsqueeze(2), cos, sin)


class WindowAttention(nn.Module):
    """Softmax attention over the last ``window`` steps of the episode (current step included).

    ``chunked=True`` restricts attention to the current chunk of ``window`` steps counted from the
    episode start (delayed-chunk blend). No parameters; q, k, v come from the enclosing layer.
    """

    def __init__(self, d_head: int, window: int, rope: bool = True, rope_base: float = 10000.0, chunked: bool = False):
        super().__init__()
        self.d_head = d_head
        self.window = window
        self.chunked = chunked
        self.rotary = Rotary(d_head, rope_base) if rope else None
        self.scale = d_head**-0.5

    def initial_state(self, batch_size: int, n_heads: int, d_value: int, device: torch.device, dtype: torch.dtype) -> KVState:
        return KVState(
            keys=torch.zeros(batch_size, n_heads, self.window, self.d_head, device=device, dtype=dtype),
            values=torch.zeros(batch_size, n_heads, self.window, d_value, device=device, dtype=dtype),
            position=torch.zeros(batch_size, dtype=torch.long, device=device),
        )

    def _rope(self, x: torch.Tensor, pos: torch.Tensor) -> torch.Tensor:
        return x if self.rotary is None else self.rotary(x, pos)

    def step(
        self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, state: KVState, start: torch.Tensor
    ) -> tuple[torch.Tensor, KVState]:
        """One step. q, k [B, H, Dk], v [B, H, Dv], start [B] bool -> (o [B, H, Dv], new state).

        O(S) per step: the new pair goes into slot ``p % S`` and q attends to the valid slots.
        The caller may read the pair being evicted (``read_slot(state.keys, p % S)``) before calling.
        """
        s = self.window
        p = torch.where(start, torch.zeros_like(state.position), state.position)  # (B,)
        slot = torch.remainder(p, s)
        clear = start.view(-1, 1, 1, 1)  # an episode start empties the window (keeps the state canonical)
        keys = write_slot(state.keys.masked_fill(clear, 0.0), slot, k)  # (B, H, S, Dk)
        values = write_slot(state.values.masked_fill(clear, 0.0), slot, v)  # (B, H, S, Dv)
        slots = torch.arange(s, device=q.device)
        slot_pos = p.unsqueeze(1) - torch.remainder(p.unsqueeze(1) - slots, s)  # (B, S)
        valid = slot_pos >= 0
        if self.chunked:
            valid = valid & (slot_pos >= (p - torch.remainder(p, s)).unsqueeze(1))
        if self.rotary is None:
            scores = torch.einsum("bhk,bhsk->bhs", q, keys) * self.scale  # (B, H, S)
        else:  # rotate q by each slot's distance p - pos_i instead of rotating the S keys
            q_rel = self.rotary.relative(q, p.unsqueeze(1) - slot_pos, s)  # (B, H, S, Dk)
            scores = (q_rel * keys).sum(-1) * self.scale  # (B, H, S)
        scores = scores.masked_fill(~valid.unsqueeze(1), float("-inf"))
        o = torch.einsum("bhs,bhsv->bhv", scores.softmax(dim=-1), values)
        return o, KVState(keys, values, p + 1)

    def parallel(
        self,
        q: torch.Tensor,
        k: torch.Tensor,
        v: torch.Tensor,
        state: KVState,
        pos: torch.Tensor,
        seg: torch.Tensor,
    ) -> tuple[torch.Tensor, KVState, tuple[torch.Tensor, torch.Tensor]]:
        """T steps. q, k [B, H, T, Dk], v [B, H, T, Dv], pos/seg [B, T] from :func:`step_positions`.

        Returns (o [B, H, T, Dv], new state, (ctx_keys [B, H, S+T, Dk], ctx_values [B, H, S+T, Dv])): the
        ordered cache followed by the new pairs (the delayed-streaming blend reads its first T entries).
        """
        s = self.window
        batch, _, steps, _ = q.shape
        cache_pos = state.position.unsqueeze(1) - s + torch.arange(s, device=q.device)  # (B, S)
        ctx_k = torch.cat((order_ring(state.keys, state.position), k), dim=2)  # (B, H, S+T, Dk)
        ctx_v = torch.cat((order_ring(state.values, state.position), v), dim=2)  # (B, H, S+T, Dv)
        ctx_pos = torch.cat((cache_pos, pos), dim=1)  # (B, S+T)
        ctx_seg = torch.cat((torch.zeros_like(cache_pos), seg), dim=1)  # (B, S+T)
        p_t, p_j = pos.unsqueeze(2), ctx_pos.unsqueeze(1)  # (B, T, 1), (B, 1, S+T)
        mask = (p_j >= 0) & (ctx_seg.unsqueeze(1) == seg.unsqueeze(2)) & (p_j <= p_t) & (p_j > p_t - s)  # (B, T, S+T)
        if self.chunked:
            mask = mask & (p_j >= p_t - torch.remainder(p_t, s))
        qr = self._rope(q, pos)
        kr = self._rope(ctx_k, ctx_pos)
        o = F.scaled_dot_product_attention(qr, kr, ctx_v, attn_mask=mask.unsqueeze(1), scale=self.scale)  # (B, H, T, Dv)
        end = pos[:, -1] + 1  # (B,) position of the next step
        new_state = KVState(last_window(ctx_k, end, s), last_window(ctx_v, end, s), end)
        return o, new_state, (ctx_k, ctx_v)
