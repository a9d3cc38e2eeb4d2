"""KV-memory: causal softmax attention over a sliding window of the last S steps of the current episode.

The cache is a fixed-size ring buffer: the step with position p (its index within the episode) lives in
slot ``p % S``. Only the position of the next step is stored; which slots are valid follows from it
(slot ``i`` holds position ``p - ((p - i) mod S)``, valid when that is >= 0), so clearing the window at
an episode start is ``position = 0`` (slots are also zeroed, so both forms produce the same state).

Two forms, tested against each other and against a plain per-episode reference in ``tests/``:

- ``step``: one step, O(S) work, independent of the episode length (rollouts);
- ``parallel``: T steps at once; the cache (in ring layout) is concatenated with the new keys and a
  window + same-episode + valid mask is built over their positions (training); the next ring is one gather.

With rotary encoding, keys are cached *rotated* at their own position within the episode (q is rotated at
its position when it attends), so a step costs no per-slot rotation; angles are computed in float64, so this
stays exact far into long episodes. The delayed-streaming blend keeps its own ring of feature-mapped raw keys.
"""

from __future__ import annotations

from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import nn


class KVState(NamedTuple):
    """Ring-buffer KV cache of one layer."""

    keys: torch.Tensor  # (B, H, S, Dk), rotated at their positions (raw when rope=False)
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


def write_slot(ring: torch.Tensor, slot: torch.Tensor, new: torch.Tensor, keep: torch.Tensor | None = None) -> torch.Tensor:
    """Out-of-place write of ``new`` [B, H, ...] into ``ring`` [B, H, S, ...] at ``slot`` [B] (long).

    ``keep`` [B] (0/1, the ring's dtype) first clears the whole ring where it is 0 (an episode start). One multiply
    and one scatter: a broadcast ``torch.where`` over the ring costs several times more on CPU at rollout sizes.
    """
    b, h = ring.shape[:2]
    tail = ring.shape[3:]
    idx = slot.view(b, 1, 1, *([1] * len(tail))).expand(b, h, 1, *tail)  # (B, H, 1, ...)
    if keep is None:
        return ring.scatter(2, idx, new.unsqueeze(2))
    return (ring * keep.view(b, *([1] * (ring.dim() - 1)))).scatter_(2, idx, new.unsqueeze(2))


def read_slot(ring: torch.Tensor, slot: torch.Tensor) -> torch.Tensor:
    """``ring`` [B, H, S, ...] at ``slot`` [B] -> [B, H, ...]."""
    b, h, s = ring.shape[:3]
    idx = slot.view(b, 1, 1, *([1] * (ring.dim() - 3))).expand(-1, h, 1, *ring.shape[3:])
    return ring.gather(2, idx).squeeze(2)


class Rotary(nn.Module):
    """Rotary position encoding (rotate-half convention) for head size ``dim`` (even).

    x rotated by position p: dims (i, i + D/2) turn by angle p * base^(-2i/D), written as
    ``x * cos + roll(x, D/2) * sin_signed`` with cos = [cos a, cos a], sin_signed = [-sin a, sin a].
    Angles are computed in float64 whatever the module dtype, so positions far into an episode (1e6 and more)
    keep float32-exact angles; only cos and sin are cast down.
    """

    def __init__(self, dim: int, base: float = 10000.0) -> None:
        super().__init__()
        if dim % 2 != 0:
            raise ValueError(f"rotary encoding needs an even head size, got d_head={dim}; set rope=False or change n_heads")
        self.dim, self.base = dim, base
        inv_freq = base ** (-torch.arange(0, dim, 2, dtype=torch.float64) / dim)  # (D/2,)
        # Not a buffer: Module.to(dtype) would cast it down. Copied per device on first use.
        self._freqs_source = torch.cat((-inv_freq, inv_freq))  # (D,)
        self._signed_freqs: dict[torch.device, torch.Tensor] = {}

    def prepare_device(self, device: torch.device) -> None:
        """Build the tables for ``device`` now (``Memory`` calls it before compiled calls, see ``_prepare_device``)."""
        self._freqs(device)

    def _freqs(self, device: torch.device) -> torch.Tensor:
        if device not in self._signed_freqs:
            # First use on this device may come under inference_mode (a rollout): cache an ordinary tensor, or
            # torch.compile's training graph, which saves it for backward, would refuse it later.
            with torch.inference_mode(False):
                self._signed_freqs[device] = self._freqs_source.to(device, copy=True)
        return self._signed_freqs[device]

    def cos_sin(self, pos: torch.Tensor, dtype: torch.dtype) -> tuple[torch.Tensor, torch.Tensor]:
        """pos [...] long -> (cos, sin_signed) [..., D] in ``dtype``."""
        angle = pos.to(torch.float64).unsqueeze(-1) * self._freqs(pos.device)  # (..., D), float64
        return angle.cos().to(dtype), angle.sin().to(dtype)

    def rotate(self, x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
        """x [..., D] with cos, sin broadcastable to it -> rotated x."""
        return torch.addcmul(x * cos, x.roll(self.dim // 2, dims=-1), sin)

    def forward(self, x: torch.Tensor, pos: torch.Tensor) -> torch.Tensor:
        """x [B, H, N, D], pos [B, N] long -> x rotated by angle pos * inv_freq."""
        cos, sin = self.cos_sin(pos, x.dtype)  # (B, N, D)
        return self.rotate(x, cos.unsqueeze(1), sin.unsqueeze(1))


class StepContext(NamedTuple):
    """What one step needs that depends only on positions: the same for every layer of a stack, built once."""

    position: torch.Tensor  # (B,) long: position p of this step within its episode
    slot: torch.Tensor  # (B,) long: p % S
    keep: torch.Tensor | None  # (B,) 1.0, or 0.0 at an episode start (values' dtype); None when no env starts one
    cos: torch.Tensor | None  # (B, 1, 1, Dk) rotary tables at p (None without rotary encoding)
    sin: torch.Tensor | None  # (B, 1, 1, Dk)
    mask: torch.Tensor  # (B, 1, 1, S) bool: slots q may attend to


class WindowContext(NamedTuple):
    """What T steps need that depends only on positions (parallel form), built once per stack call.

    The context of T new steps is the cache in *ring* layout (slot i, no reordering: attention does not care about
    order, keys carry their rotation) followed by the T new pairs: N = S + T entries.
    """

    pos: torch.Tensor  # (B, T) long, from step_positions
    seg: torch.Tensor  # (B, T) long
    cos: torch.Tensor | None  # (B, T, 1, 1, Dk)
    sin: torch.Tensor | None  # (B, T, 1, 1, Dk)
    mask: torch.Tensor  # (B, 1, T, S+T) bool: window + same episode + valid (+ same chunk)
    ring_index: torch.Tensor | None = None  # (B, S) long: context entry that ring slot i holds after the T steps
    ring_keep: torch.Tensor | None = None  # (B, 1, S, 1) 0/1 (values' dtype): slot i is valid after the T steps; None: all


def next_ring(ctx: torch.Tensor, index: torch.Tensor, keep: torch.Tensor | None) -> torch.Tensor:
    """Ring [B, H, S, ...] after T steps from a ring-layout context [B, H, S+T, ...] (see :class:`WindowContext`).

    ``index`` [B, S] and ``keep`` [B, 1, S, 1] (None: every slot valid) from :meth:`WindowAttention.window_context`;
    one gather and at most one multiply.
    """
    b, h, s = ctx.shape[0], ctx.shape[1], index.shape[1]
    tail = ctx.shape[3:]
    idx = index.view(b, 1, s, *([1] * len(tail))).expand(b, h, s, *tail)  # (B, H, S, ...)
    ring = ctx.gather(2, idx)  # (B, H, S, ...)
    if keep is None:
        return ring
    return ring * (keep if len(tail) == 1 else keep.view(b, 1, s, *([1] * len(tail))))


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
        self.register_buffer("slots", torch.arange(window), persistent=False)  # (S,)

    def initial_state(self, batch_size: int, n_heads: int, d_value: int, device: torch.device, dtype: torch.dtype) -> KVState:
        return KVState(
            keys=torch.zeros(batch_size, n_heads, self.window, self.d_head, device=device, dtype=dtype),
            values=torch.zeros(batch_size, n_heads, self.window, d_value, device=device, dtype=dtype),
            position=torch.zeros(batch_size, dtype=torch.long, device=device),
        )

    def step_context(self, position: torch.Tensor, start: torch.Tensor, dtype: torch.dtype) -> StepContext:
        """position [B] (the state's next position), start [B] bool -> :class:`StepContext`."""
        p = position.masked_fill(start, 0)  # (B,)
        slot = torch.remainder(p, self.window)  # (B,)
        cos = sin = None
        if self.rotary is not None:
            cos, sin = self.rotary.cos_sin(p, dtype)  # (B, Dk)
            cos, sin = cos.view(-1, 1, 1, self.d_head), sin.view(-1, 1, 1, self.d_head)
        # Slot i holds position p - ((p - i) mod S): valid (>= 0) iff i <= p; in the current chunk iff i <= p mod S.
        mask = (self.slots <= (slot if self.chunked else p).unsqueeze(1)).view(-1, 1, 1, self.window)  # (B, 1, 1, S)
        # One host read per stack step (rollouts read actions back anyway) spares clearing rings when nothing starts;
        # compiled, the graph always takes the masked form (no host read, no graph break).
        keep = (~start).to(dtype) if torch.compiler.is_compiling() or bool(start.any()) else None
        return StepContext(p, slot, keep, cos, sin, mask)

    def step(self, qk: torch.Tensor, v: torch.Tensor, state: KVState, ctx: StepContext) -> tuple[torch.Tensor, KVState]:
        """One step. qk [B, 2, H, Dk] (query, key), v [B, H, Dv], ctx from :meth:`step_context` -> (o [B, H, Dv], new state).

        O(S) per step: q and k are rotated at the step's position p, the key goes into slot ``p % S`` (the ring is
        cleared first at an episode start) and q attends to the valid slots. The caller may read the pair being
        evicted (``read_slot(state.values, ctx.slot)``) before calling.
        """
        if ctx.cos is not None:
            qk = self.rotary.rotate(qk, ctx.cos, ctx.sin)
        q, k = qk.unbind(1)  # (B, H, Dk) each
        keys = write_slot(state.keys, ctx.slot, k, ctx.keep)  # (B, H, S, Dk)
        values = write_slot(state.values, ctx.slot, v, ctx.keep)  # (B, H, S, Dv)
        o = F.scaled_dot_product_attention(q.unsqueeze(2), keys, values, attn_mask=ctx.mask, scale=self.scale)  # (B, H, 1, Dv)
        return o.squeeze(2), KVState(keys, values, ctx.position + 1)

    def window_context(self, position: torch.Tensor, starts: torch.Tensor, dtype: torch.dtype) -> WindowContext:
        """position [B] (the state's next position), starts [B, T] bool -> :class:`WindowContext`."""
        s = self.window
        pos, seg = step_positions(starts, position)  # (B, T) each
        cos = sin = None
        if self.rotary is not None:
            cos, sin = self.rotary.cos_sin(pos, dtype)  # (B, T, Dk)
            cos, sin = cos[:, :, None, None], sin[:, :, None, None]  # (B, T, 1, 1, Dk)
        # Before the T steps, ring slot i holds position p - 1 - ((p - 1 - i) mod S) (valid when >= 0); context
        # entries stay in ring layout.
        last = position.unsqueeze(1) - 1  # (B, 1)
        cache_pos = last - torch.remainder(last - self.slots, s)  # (B, S)
        ctx_pos = torch.cat((cache_pos, pos), dim=1)  # (B, S+T)
        ctx_seg = torch.cat((torch.zeros_like(cache_pos), seg), dim=1)  # (B, S+T)
        p_t, p_j = pos.unsqueeze(2), ctx_pos.unsqueeze(1)  # (B, T, 1), (B, 1, S+T)
        mask = (p_j >= 0) & (ctx_seg.unsqueeze(1) == seg.unsqueeze(2)) & (p_j <= p_t) & (p_j > p_t - s)  # (B, T, S+T)
        if self.chunked:
            mask = mask & (p_j >= p_t - torch.remainder(p_t, s))
        # After the T steps, slot i holds position e - d with e the last position and d = (e - i) mod S: new step
        # T-1-d when d < T (then in the last episode segment whenever e - d >= 0), else the same slot of the old
        # ring (no episode start in the call); nothing when e - d < 0.
        steps = pos.shape[1]
        last = pos[:, -1:]  # (B, 1)
        d = torch.remainder(last - self.slots, s)  # (B, S)
        ring_index = torch.where(d < steps, s + steps - 1 - d, self.slots)  # (B, S)
        valid = d <= last  # (B, S)
        # One host read per stack call spares 2 multiplies per layer (and their backward) in the common case.
        all_valid = not torch.compiler.is_compiling() and bool(valid.all())
        ring_keep = None if all_valid else valid.to(dtype).unsqueeze(1).unsqueeze(-1)  # (B, 1, S, 1)
        return WindowContext(pos, seg, cos, sin, mask.unsqueeze(1), ring_index, ring_keep)

    def parallel(
        self, qk: torch.Tensor, v: torch.Tensor, state: KVState, ctx: WindowContext
    ) -> tuple[torch.Tensor, KVState, tuple[torch.Tensor, torch.Tensor]]:
        """T steps. qk [B, T, 2, H, Dk] (raw query and key), v [B, H, T, Dv], ctx from :meth:`window_context`.

        Returns (o [B, H, T, Dv], new state, (ctx_keys [B, H, S+T, Dk], ctx_values [B, H, S+T, Dv])): the cache in
        ring layout (slot i at index i) followed by the new pairs, keys rotated at their positions.
        """
        if ctx.cos is not None:
            qk = self.rotary.rotate(qk, ctx.cos, ctx.sin)  # q and k at once
        q, k = qk.transpose(1, 3).unbind(2)  # (B, H, T, Dk) each; unbind: one backward node for both
        ctx_k = torch.cat((state.keys, k), dim=2)  # (B, H, S+T, Dk)
        ctx_v = torch.cat((state.values, v), dim=2)  # (B, H, S+T, Dv)
        o = F.scaled_dot_product_attention(q, ctx_k, ctx_v, attn_mask=ctx.mask, scale=self.scale)  # (B, H, T, Dv)
        end = ctx.pos[:, -1] + 1  # (B,) position of the next step
        keys = next_ring(ctx_k, ctx.ring_index, ctx.ring_keep)  # (B, H, S, Dk)
        values = next_ring(ctx_v, ctx.ring_index, ctx.ring_keep)  # (B, H, S, Dv)
        return o, KVState(keys, values, end), (ctx_k, ctx_v)
