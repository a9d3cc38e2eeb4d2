"""Hybrid Quadratic-Linear Transformer layer: a KV window and delta-rule fast weights on shared q, k, v.

One layer serves every transformer-style memory of the registry (``kind``):

- ``"hqlt"``: KV branch + FW branch (delta rule; sum rule with ``fw_rule="sum"``), combined by a blend and a mixer;
- ``"kv"``: KV branch only (sliding-window transformer);
- ``"deltanet"``: FW branch only, delta rule;
- ``"linear"``: FW branch only, sum rule (linear attention).

Blends (how input reaches the two systems; positions p count from the episode start):

- ``synchronous``: pair t is written to both at step t; o_fw = W_t phi(q_t).
- ``delayed_stream``: FW receives the pair (k_{t-S}, v_{t-S}, beta_{t-S}) that just left the window
  (none while p < S), so the two systems hold disjoint parts of the past.
- ``delayed_chunk``: chunks of S steps from the episode start; KV attends within the current chunk;
  o_fw is read with the FW state at the current chunk's start; at a chunk boundary FW absorbs the
  finished chunk. Pairs of a chunk that an episode start cuts short are dropped.

Mixers: ``sum`` (o_fw + o_kv), ``scalar`` (a * o_fw + b * o_kv, two sigmoid scalars per head from x),
``vector`` (g * o_fw + (1 - g) * o_kv with g = sigmoid(W_g x) in R^{Dv} per head).

Forms: a call with T == 1 takes the one-step path (ring-buffer KV, one delta-rule step; O(S + d^2) per
step); a call with T > 1 takes the parallel path (masked window attention, chunk-parallel delta rule).
Both are tested against each other and against a plain per-episode reference in ``tests/test_hqlt.py``.
"""

from __future__ import annotations

from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import nn

from memory import fast_weights as fw
from memory.config import MemoryConfig
from memory.kv import KVState, StepContext, WindowAttention, WindowContext, next_ring, read_slot, write_slot

KINDS = ("hqlt", "kv", "deltanet", "linear")


class FWState(NamedTuple):
    """FW-only layer (deltanet / linear)."""

    fw: torch.Tensor  # (B, H, Dv, Dk)


class KVOnlyState(NamedTuple):
    kv: KVState


class SyncState(NamedTuple):
    """HQLT, synchronous blend."""

    kv: KVState
    fw: torch.Tensor  # (B, H, Dv, Dk)


class StreamState(NamedTuple):
    """HQLT, delayed-streaming blend: the cache also keeps each pair's FW key and beta for when it enters FW."""

    kv: KVState
    fw: torch.Tensor  # (B, H, Dv, Dk)
    betas: torch.Tensor  # (B, H, S) ring, aligned with kv.keys
    fw_keys: torch.Tensor  # (B, H, S, Dk) ring of phi(k) (raw keys, feature-mapped), aligned with kv.keys


class ChunkState(NamedTuple):
    """HQLT, delayed-chunk blend: ``fw`` absorbs every pair at once, ``fw_read`` is the state at the chunk start."""

    kv: KVState
    fw: torch.Tensor  # (B, H, Dv, Dk), includes the current chunk's pairs (pending)
    fw_read: torch.Tensor  # (B, H, Dv, Dk), what the current chunk reads


class ConvLayerState(NamedTuple):
    """Any of the states above plus the short convolution's input history (``short_conv`` > 0)."""

    inner: FWState | KVOnlyState | SyncState | StreamState | ChunkState
    conv: torch.Tensor  # (B, K-1, 3D): the last K-1 projections q|k|v before the convolution; zeros before an episode start


LayerState = FWState | KVOnlyState | SyncState | StreamState | ChunkState | ConvLayerState


class Projection(NamedTuple):
    q: torch.Tensor  # (B, T, H, D)
    k: torch.Tensor  # (B, T, H, D)
    v: torch.Tensor  # (B, T, H, D)
    beta: torch.Tensor | None  # (B, T, H), delta rule only
    gate: torch.Tensor | None  # (B, T, H, D) vector mixer, (B, T, H, 2) scalar mixer
    qk: torch.Tensor  # (B, T, 2, H, D): q and k side by side (a view; one op treats both)


# --- fast-weight kernels: chunk-parallel when memory.fast_weights provides them, else the references ---


def _delta_rule(q, k, v, beta, state, resets, chunk_size):
    fn = getattr(fw, "delta_rule_chunked", None)
    if fn is None:
        return fw.delta_rule_reference(q, k, v, beta, state, resets)
    return fn(q, k, v, beta, state, resets=resets, chunk_size=chunk_size)


def _sum_rule(q, k, v, state, resets, chunk_size):
    fn = getattr(fw, "sum_rule_chunked", None)
    if fn is None:
        return fw.sum_rule_reference(q, k, v, state, resets)
    return fn(q, k, v, state, resets=resets, chunk_size=chunk_size)


def _pseudo_values(k, v, beta, state, resets, chunk_size):
    """u_t = beta_t (v_t - W_{t-1} k_t), W after any reset at t. k [B, T, H, Dk] -> u [B, T, H, Dv]."""
    fn = getattr(fw, "delta_rule_pseudo_values", None)
    if fn is not None:
        return fn(k, v, beta, state, resets=resets, chunk_size=chunk_size)
    us = []
    for t in range(k.shape[1]):
        if resets is not None:
            state = state * (~resets[:, t]).to(state.dtype).view(-1, 1, 1, 1)
        u = beta[:, t].unsqueeze(-1) * (v[:, t] - torch.einsum("bhvk,bhk->bhv", state, k[:, t]))  # (B, H, Dv)
        state = state + torch.einsum("bhv,bhk->bhvk", u, k[:, t])
        us.append(u)
    return torch.stack(us, dim=1)


class ShortConv(nn.Module):
    """Causal depthwise convolution over time with kernel ``kernel`` on ``channels`` channels; SiLU on channels from
    ``silu_from`` on. out_t = sum_j w[:, K-1-j] * x_{t-j}, where x_{t-j} counts only if step t-j lies in the
    same episode as step t (the history is zero before an episode start, as if every episode were zero-padded).

    The history (the last K-1 inputs) is carried between calls, so T steps in one call equal T one-step calls.
    """

    def __init__(self, channels: int, kernel: int, silu_from: int) -> None:
        super().__init__()
        self.kernel, self.silu_from = kernel, silu_from
        self.weight = nn.Parameter(torch.empty(channels, kernel))
        bound = kernel**-0.5  # nn.Conv1d's default for a depthwise kernel (fan-in = kernel)
        nn.init.uniform_(self.weight, -bound, bound)

    def initial_history(self, batch_size: int, device: torch.device, dtype: torch.dtype) -> torch.Tensor:
        return torch.zeros(batch_size, self.kernel - 1, self.weight.shape[0], device=device, dtype=dtype)

    def forward(self, x: torch.Tensor, history: torch.Tensor, starts: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """x [B, T, C], history [B, K-1, C], starts [B, T] bool -> (y [B, T, C], new history [B, K-1, C])."""
        k, steps = self.kernel, x.shape[1]
        if steps == 1:  # one step (rollouts): clear the history at an episode start, then one weighted sum
            keep = (~starts).to(x.dtype).unsqueeze(-1)  # (B, 1, 1)
            ext = torch.cat((history * keep, x), dim=1)  # (B, K, C)
            y = torch.einsum("bkc,ck->bc", ext, self.weight).unsqueeze(1)  # (B, 1, C)
            return self._activate(y), ext[:, 1:]
        ext = torch.cat((history, x), dim=1)  # (B, K-1+T, C): entry K-1+t is step t
        t = torch.arange(steps, device=x.device)
        last = torch.where(starts, t, -1).cummax(dim=1).values  # (B, T): last episode start at or before t, -1: none
        age = torch.where(last >= 0, t - last, k)  # (B, T): steps since that start (>= k: the whole kernel is valid)
        y = ext[:, k - 1 :] * self.weight[:, k - 1]  # (B, T, C): the current step
        for j in range(1, k):
            tap = ext[:, k - 1 - j : k - 1 - j + steps] * self.weight[:, k - 1 - j]  # (B, T, C): x_{t-j}
            y = y + tap * (age >= j).to(x.dtype).unsqueeze(-1)
        # New history: steps T-K+1 .. T-1, zeroed when they precede the call's last episode start.
        u = torch.arange(steps - k + 1, steps, device=x.device)  # (K-1,)
        last_start = torch.where(last[:, -1:] >= 0, last[:, -1:], -k)  # (B, 1)
        new_history = ext[:, steps:] * (u >= last_start).to(x.dtype).unsqueeze(-1)  # (B, K-1, C)
        return self._activate(y), new_history

    def _activate(self, y: torch.Tensor) -> torch.Tensor:
        if self.silu_from >= y.shape[-1]:
            return y
        return torch.cat((y[..., : self.silu_from], F.silu(y[..., self.silu_from :])), dim=-1)


def _bmask(mask: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    """[B] bool -> broadcastable against ``like`` [B, ...]."""
    return mask.view(-1, *([1] * (like.dim() - 1)))


class HQLTLayer(nn.Module):
    """The memory part of one block: x [B, T, D] -> per-head outputs o [B, T, H, Dh], new state."""

    def __init__(self, config: MemoryConfig, kind: str = "hqlt") -> None:
        super().__init__()
        if kind not in KINDS:
            raise ValueError(f"HQLT layer field 'kind'={kind!r} is unknown; allowed: {', '.join(KINDS)}")
        self.config = config
        self.kind = kind
        self.n_heads, self.d_head, self.window = config.n_heads, config.d_head, config.window
        self.has_kv = kind in ("hqlt", "kv")
        self.has_fw = kind != "kv"
        self.rule = "sum" if kind == "linear" else (config.fw_rule if kind == "hqlt" else "delta")
        self.blend = config.blend if kind == "hqlt" else "synchronous"
        self.mixer = config.mixer if kind == "hqlt" else None
        self.carry = config.carry_fw_across_episodes
        if self.has_kv and config.rope and self.d_head % 2 != 0:
            raise ValueError(
                f"memory config field 'rope'=True needs an even d_head, got d_head = d_model / n_heads = {self.d_head}; "
                "set rope=False or choose n_heads so that d_model / n_heads is even"
            )
        d = config.d_model
        self.qkv = nn.Linear(d, 3 * d, bias=False)
        n_beta = self.n_heads if (self.has_fw and self.rule == "delta") else 0
        n_gate = {None: 0, "sum": 0, "scalar": 2 * self.n_heads, "vector": d}[self.mixer]
        self.n_beta, self.n_gate = n_beta, n_gate
        self.aux = nn.Linear(d, n_beta + n_gate, bias=True) if n_beta + n_gate > 0 else None
        self.lean_mixer(config.mixer_bias)
        if self.has_kv:
            self.attn = WindowAttention(
                self.d_head, self.window, rope=config.rope, rope_base=config.rope_base, chunked=self.blend == "delayed_chunk"
            )
        self.beta_scale = 2.0 if config.allow_neg_eigval else 1.0
        self.short_conv = ShortConv(3 * d, config.short_conv, silu_from=2 * d) if config.short_conv > 0 else None
        self.last_stats: dict[str, torch.Tensor] = {}

    def lean_mixer(self, bias: float) -> None:
        """Add ``bias`` to the mixer's gate logits (``MemoryConfig.mixer_bias``): the vector gate g (the FW share)
        by +bias; the scalar mixer's FW weights by +bias and its KV weights by -bias. Called at construction; call it
        again after re-initialising the parameters (an init that zeroes every bias removes the lean)."""
        if self.n_gate and bias:
            shift = torch.full((self.n_gate,), float(bias))
            if self.mixer == "scalar":
                shift.view(self.n_heads, 2)[:, 1].neg_()
            with torch.no_grad():
                self.aux.bias[self.n_beta :] += shift.to(self.aux.bias)

    # --- pieces shared by every path (and by the test reference) ---

    def project(self, x: torch.Tensor, qkv: torch.Tensor | None = None) -> Projection:
        """x [B, T, D] -> q, k, v [B, T, H, Dh], beta [B, T, H] (or None), gate (or None).

        ``qkv`` [B, T, 3D]: the q|k|v projections to use in place of ``self.qkv(x)`` (after the short convolution).
        """
        b, t, _ = x.shape
        h, dh = self.n_heads, self.d_head
        qkv = (self.qkv(x) if qkv is None else qkv).view(b, t, 3, h, dh)  # (B, T, 3, H, Dh)
        aux = None if self.aux is None else torch.sigmoid(self.aux(x))  # (B, T, n_beta + n_gate)
        qk, v = qkv.split([2, 1], dim=2)  # (B, T, 2, H, Dh), (B, T, 1, H, Dh): one backward node
        v = v.squeeze(2)  # (B, T, H, Dh)
        q, k = qk.unbind(dim=2)  # each (B, T, H, Dh)
        beta = gate = None
        if aux is not None:
            aux_beta, aux_gate = aux.split([self.n_beta, self.n_gate], dim=-1)  # (B, T, H), (B, T, n_gate): one node
            if self.n_beta:
                beta = aux_beta * self.beta_scale if self.beta_scale != 1.0 else aux_beta
            if self.mixer == "vector":
                gate = aux_gate.view(b, t, h, dh)  # (B, T, H, Dh)
            elif self.mixer == "scalar":
                gate = aux_gate.view(b, t, h, 2)  # (B, T, H, 2)
        return Projection(q, k, v, beta, gate, qk)

    def mix(self, o_fw: torch.Tensor | None, o_kv: torch.Tensor | None, gate: torch.Tensor | None) -> torch.Tensor:
        """Combine the branch outputs [B, T, H, Dh]; a single branch passes through."""
        if o_kv is None:
            return o_fw
        if o_fw is None:
            return o_kv
        if self.mixer == "sum":
            return o_fw + o_kv
        if self.mixer == "scalar":
            return gate[..., :1] * o_fw + gate[..., 1:] * o_kv
        return torch.lerp(o_kv, o_fw, gate)  # g * o_fw + (1 - g) * o_kv in one op

    def initial_state(self, batch_size: int, device: torch.device, dtype: torch.dtype) -> LayerState:
        inner = self._initial_inner_state(batch_size, device, dtype)
        if self.short_conv is None:
            return inner
        return ConvLayerState(inner, self.short_conv.initial_history(batch_size, device, dtype))

    def _initial_inner_state(self, batch_size: int, device: torch.device, dtype: torch.dtype) -> LayerState:
        h, dh = self.n_heads, self.d_head
        w = torch.zeros(batch_size, h, dh, dh, device=device, dtype=dtype)
        if not self.has_kv:
            return FWState(w)
        kv = self.attn.initial_state(batch_size, h, dh, device, dtype)
        if not self.has_fw:
            return KVOnlyState(kv)
        if self.blend == "synchronous":
            return SyncState(kv, w)
        if self.blend == "delayed_stream":
            betas = torch.zeros(batch_size, h, self.window, device=device, dtype=dtype)
            return StreamState(kv, w, betas, torch.zeros_like(kv.keys))
        return ChunkState(kv, w, w.clone())

    def forward(
        self, x: torch.Tensor, state: LayerState, episode_starts: torch.Tensor, shared: dict | None = None
    ) -> tuple[torch.Tensor, LayerState]:
        """x [B, T, D], episode_starts [B, T] bool -> (o [B, T, H, Dh], new state).

        ``shared``: a dict that the layers of one stack call pass along, so that position-only tensors (positions,
        rotary tables, attention masks) are built by the first layer and reused by the others.
        """
        qkv = None
        if self.short_conv is not None:
            qkv, history = self.short_conv(self.qkv(x), state.conv, episode_starts)
            state = state.inner
        proj = self.project(x, qkv)
        o_fw, o_kv, inner = self.branches(proj, state, episode_starts, shared)
        self._record(proj, inner)
        state = inner if self.short_conv is None else ConvLayerState(inner, history)
        return self.mix(o_fw, o_kv, proj.gate), state

    def branches(
        self, proj: Projection, state: LayerState, episode_starts: torch.Tensor, shared: dict | None = None
    ) -> tuple[torch.Tensor | None, torch.Tensor | None, LayerState]:
        """Branch outputs (o_fw, o_kv), each [B, T, H, Dh] or None, and the new state."""
        if proj.q.shape[1] == 1:
            o_fw, o_kv, state = self._step(proj, state, episode_starts[:, 0], shared)
            return (None if o_fw is None else o_fw.unsqueeze(1)), (None if o_kv is None else o_kv.unsqueeze(1)), state
        return self._parallel(proj, state, episode_starts, shared)

    def _shared(self, shared: dict | None, name: str, build):
        """Build position-only tensors once per stack call: every layer of a stack sees the same episode starts and
        has the same window and rotary settings, so their KV positions (and all that derives from them) agree."""
        if shared is None:
            return build()
        key = (name, self.window, self.attn.rotary is not None, self.config.rope_base, self.attn.chunked)
        if key not in shared:
            shared[key] = build()
        return shared[key]

    def _record(self, proj: Projection, state: LayerState) -> None:
        """Keep detached references; the reductions run only when ``diagnostics`` asks."""
        self.last_stats = {
            name: t.detach()
            for name, t in (("gate", proj.gate), ("beta", proj.beta), ("fw", state.fw if self.has_fw else None))
            if t is not None
        }

    def diagnostics(self) -> dict[str, float]:
        """gate_mean, beta_mean, fw_norm (mean Frobenius norm of the fast weights) of the last forward."""
        out = {}
        if "gate" in self.last_stats:
            out["gate_mean"] = float(self.last_stats["gate"].mean())
        if "beta" in self.last_stats:
            out["beta_mean"] = float(self.last_stats["beta"].mean())
        if "fw" in self.last_stats:
            out["fw_norm"] = float(torch.linalg.matrix_norm(self.last_stats["fw"]).mean())
        return out

    # --- fast-weight writes; ``strength`` is beta for the delta rule and a 0/1 mask (or None) for the sum rule ---

    def _write_step(self, phi_qk, v, strength, w):
        """One write then read. phi_qk [B, 2, H, Dk] (phi of the query, then of the key written), v [B, H, Dv],
        strength [B, H] or None, w [B, H, Dv, Dk] -> (o [B, H, Dv], new w).

        Same arithmetic as ``fast_weights.delta_rule_step`` with one batched mat-vec instead of two:
        W_{t-1} [q, k] at once, then W_t q = W_{t-1} q + u (k . q) with u the value written.
        """
        reads = w @ phi_qk.permute(0, 2, 3, 1)  # (B, H, Dv, 2): W_{t-1} q, W_{t-1} k
        w_q, w_k = reads.unbind(-1)  # (B, H, Dv) each
        phi_q, phi_k = phi_qk.unbind(1)  # (B, H, Dk) each
        if self.rule == "sum":
            u = v if strength is None else v * strength.unsqueeze(-1)  # (B, H, Dv)
        else:
            u = strength.unsqueeze(-1) * (v - w_k)  # (B, H, Dv)
        o = torch.addcmul(w_q, u, torch.linalg.vecdot(phi_k, phi_q).unsqueeze(-1))  # (B, H, Dv)
        return o, torch.addcmul(w, u.unsqueeze(-1), phi_k.unsqueeze(-2))  # (B, H, Dv, Dk)

    def _write_parallel(self, phi_q, phi_k, v, strength, w, resets):
        """T writes and reads: phi_q, phi_k, v [B, T, H, D], strength [B, T, H] or None -> (o [B, T, H, Dv], w)."""
        cs = self.config.chunk_size
        if self.rule == "sum":
            return _sum_rule(phi_q, phi_k, v if strength is None else v * strength.unsqueeze(-1), w, resets, cs)
        return _delta_rule(phi_q, phi_k, v, strength, w, resets, cs)

    # --- one step: O(S) KV ring buffer, one fast-weight step ---

    def _step(self, proj: Projection, state: LayerState, start: torch.Tensor, shared: dict | None = None):
        """One step; every per-env choice is an arithmetic mask or a scatter (broadcast ``where``s are slow on CPU)."""
        qk, v = proj.qk[:, 0], proj.v[:, 0]  # (B, 2, H, Dh), (B, H, Dh)
        beta = None if proj.beta is None else proj.beta[:, 0]  # (B, H)
        ctx: StepContext | None = None
        if self.has_kv:
            ctx = self._shared(shared, "step", lambda: self.attn.step_context(state.kv.position, start, v.dtype))
            keep = ctx.keep  # (B,): 0 at an episode start; None when no env starts an episode
        else:
            keep = (~start).to(v.dtype)
        o_fw = o_kv = None
        if not self.has_fw:  # KV only
            o_kv, kv = self.attn.step(qk, v, state.kv, ctx)
            return None, o_kv, KVOnlyState(kv)

        w = state.fw if (self.carry or keep is None) else state.fw * keep.view(-1, 1, 1, 1)  # (B, H, Dv, Dk)
        phi_qk = fw.phi(qk, activation=self.config.qk_activation)  # (B, 2, H, Dh)
        if not self.has_kv:  # FW only
            o_fw, w = self._write_step(phi_qk, v, beta, w)
            return o_fw, None, FWState(w)

        if self.blend == "synchronous":
            o_fw, w = self._write_step(phi_qk, v, beta, w)
            o_kv, kv = self.attn.step(qk, v, state.kv, ctx)
            return o_fw, o_kv, SyncState(kv, w)

        s, p, slot = self.window, ctx.position, ctx.slot  # (B,) each
        if self.blend == "delayed_stream":
            # The pair at position p - S leaves the window now and enters FW (none while p < S).
            k_old, v_old = read_slot(state.fw_keys, slot), read_slot(state.kv.values, slot)  # (B, H, Dh)
            beta_old = read_slot(state.betas, slot) * (p >= s).to(v.dtype).unsqueeze(1)  # (B, H)
            o_fw, w = self._write_step(torch.stack((phi_qk[:, 0], k_old), dim=1), v_old, beta_old, w)
            o_kv, kv = self.attn.step(qk, v, state.kv, ctx)
            strength = beta if beta is not None else torch.ones_like(v[..., 0])  # (B, H)
            betas = write_slot(state.betas, slot, strength, keep)  # (B, H, S)
            fw_keys = write_slot(state.fw_keys, slot, phi_qk[:, 1], keep)  # (B, H, S, Dh)
            return o_fw, o_kv, StreamState(kv, w, betas, fw_keys)

        # delayed_chunk: at an episode start the pending pairs are dropped (w reverts to the chunk-start state
        # when carried); at a chunk boundary the read state catches up with everything absorbed so far.
        # lerp with a 0/1 weight is an exact per-env select.
        keep4 = (~start).to(v.dtype).view(-1, 1, 1, 1)
        if self.carry:
            w = torch.lerp(state.fw, state.fw_read, 1.0 - keep4)
            w_read = state.fw_read
        else:
            w_read = state.fw_read * keep4
        w_read = torch.lerp(w_read, w, (slot == 0).to(v.dtype).view(-1, 1, 1, 1))  # (B, H, Dv, Dk)
        o_fw = (w_read @ phi_qk[:, 0].unsqueeze(-1)).squeeze(-1)  # (B, H, Dv)
        _, w = self._write_step(phi_qk, v, beta, w)
        o_kv, kv = self.attn.step(qk, v, state.kv, ctx)
        return o_fw, o_kv, ChunkState(kv, w, w_read)

    # --- T steps in parallel: masked window attention, chunk-parallel fast weights ---

    def _parallel(self, proj: Projection, state: LayerState, starts: torch.Tensor, shared: dict | None = None):
        resets = None if self.carry else starts
        phi_qk = fw.phi(proj.qk, activation=self.config.qk_activation)  # (B, T, 2, H, Dh): q and k at once
        phi_q, phi_k = phi_qk.unbind(2)  # (B, T, H, Dh) each
        if not self.has_kv:
            o_fw, w = self._write_parallel(phi_q, phi_k, proj.v, proj.beta, state.fw, resets)
            return o_fw, None, FWState(w)

        kv_state = state.kv
        ctx: WindowContext = self._shared(
            shared, "window", lambda: self.attn.window_context(kv_state.position, starts, proj.v.dtype)
        )
        pos, seg = ctx.pos, ctx.seg  # (B, T) each
        o_kv, kv, (_, ctx_v) = self.attn.parallel(proj.qk, proj.v.transpose(1, 2), kv_state, ctx)
        o_kv = o_kv.transpose(1, 2)  # (B, T, H, Dh)
        if not self.has_fw:
            return None, o_kv, KVOnlyState(kv)

        s, steps = self.window, proj.q.shape[1]
        if self.blend == "synchronous":
            o_fw, w = self._write_parallel(phi_q, phi_k, proj.v, proj.beta, state.fw, resets)
            return o_fw, o_kv, SyncState(kv, w)

        if self.blend == "delayed_stream":
            # FW at step t receives the context entry t (position p_t - S of the same episode) when p_t >= S.
            strength = proj.beta if proj.beta is not None else torch.ones_like(proj.q[..., 0])  # (B, T, H)
            ctx_b = torch.cat((state.betas, strength.transpose(1, 2)), dim=2)  # (B, H, S+T), ring layout
            ctx_fk = torch.cat((state.fw_keys, phi_k.transpose(1, 2)), dim=2)  # (B, H, S+T, Dh), ring layout
            # Entry t of the ordered context (position p_0 - S + t): ring slot (p_0 + t) mod S while t < S, else new t - S.
            steps_idx = torch.arange(steps, device=pos.device)  # (T,)
            in_idx = torch.where(
                steps_idx < s, torch.remainder(kv_state.position.unsqueeze(1) + steps_idx, s), steps_idx
            )  # (B, T)
            idx4 = in_idx.view(-1, 1, steps, 1).expand(-1, ctx_v.shape[1], -1, ctx_v.shape[3])  # (B, H, T, Dh)
            k_in = ctx_fk.gather(2, idx4).transpose(1, 2)  # (B, T, H, Dh)
            v_in = ctx_v.gather(2, idx4).transpose(1, 2)  # (B, T, H, Dh)
            b_in = ctx_b.gather(2, in_idx.unsqueeze(1).expand(-1, ctx_b.shape[1], -1)).transpose(1, 2)  # (B, T, H)
            b_in = b_in * (pos >= s).to(v_in.dtype).unsqueeze(-1)  # (B, T, H)
            o_fw, w = self._write_parallel(phi_q, k_in, v_in, b_in, state.fw, resets)
            betas = next_ring(ctx_b.unsqueeze(-1), ctx.ring_index, ctx.ring_keep).squeeze(-1)  # (B, H, S)
            return o_fw, o_kv, StreamState(kv, w, betas, next_ring(ctx_fk, ctx.ring_index, ctx.ring_keep))

        o_fw, w, w_read = self._parallel_chunk(proj, state, starts, pos, seg, phi_q, phi_k, resets)
        return o_fw, o_kv, ChunkState(kv, w, w_read)

    def _parallel_chunk(self, proj, state, starts, pos, seg, phi_q, phi_k, resets):
        """Delayed-chunk FW branch for T steps via pseudo values u_t = beta_t (v_t - W_{t-1} k_t).

        With W the state that absorbs every kept pair at once, W_j = [W0 if no reset in 0..j] +
        sum_{s <= j, same segment} u_s k_s^T, and step t reads W at its chunk start minus one.
        """
        s, steps = self.window, proj.q.shape[1]
        dev = pos.device
        t = torch.arange(steps, device=dev)
        boundary = torch.remainder(pos, s) == 0  # (B, T)
        chunk_start = t - torch.remainder(pos, s)  # (B, T), < 0: the chunk began before this call
        before = chunk_start < 0
        # A pair is dropped when the next chunk boundary after it is an episode start.
        idx = torch.where(boundary, t, steps)  # (B, T)
        first_from = idx.flip(1).cummin(dim=1).values.flip(1)  # (B, T): first boundary at or after t
        next_b = torch.cat((first_from[:, 1:], torch.full_like(first_from[:, :1], steps)), dim=1)
        dropped = (next_b < steps) & starts.gather(1, next_b.clamp(max=steps - 1))
        keep = (~dropped).to(proj.v.dtype).unsqueeze(-1)  # (B, T, 1)
        first_b = first_from[:, 0]  # (B,)
        revert = (first_b < steps) & starts.gather(1, first_b.clamp(max=steps - 1).unsqueeze(1)).squeeze(1)
        if self.carry:
            w0 = torch.where(_bmask(revert, state.fw), state.fw_read, state.fw)
        else:
            w0 = state.fw
        if self.rule == "sum":  # the sum rule writes v_t itself
            u = proj.v * keep.unsqueeze(-1)  # (B, T, H, Dh)
        else:
            u = _pseudo_values(phi_k, proj.v, proj.beta * keep, w0, resets, self.config.chunk_size)  # (B, T, H, Dh)
        same = (
            torch.ones(seg.shape[0], steps, steps, dtype=torch.bool, device=dev)
            if self.carry
            else (seg.unsqueeze(2) == seg.unsqueeze(1))
        )  # (B, T, T)
        reads = (t.view(1, 1, steps) < chunk_start.unsqueeze(2)) & same  # (B, T, T): s < chunk_start(t)
        init = torch.ones_like(seg, dtype=torch.bool) if self.carry else seg == 0  # (B, T): W0 still counts
        scores = torch.einsum("bthk,bshk->bhts", phi_q, phi_k) * reads.unsqueeze(1).to(phi_q.dtype)  # (B, H, T, T)
        o = torch.einsum("bhts,bshv->bthv", scores, u)
        o = o + init.unsqueeze(-1).unsqueeze(-1).to(o.dtype) * torch.einsum("bhvk,bthk->bthv", w0, phi_q)
        o_before = torch.einsum("bhvk,bthk->bthv", state.fw_read, phi_q)
        o = torch.where(before.view(*before.shape, 1, 1), o_before, o)  # (B, T, H, Dh)
        # Final states.
        last_same = same[:, -1].to(u.dtype)  # (B, T)
        init_last = init[:, -1].to(u.dtype).view(-1, 1, 1, 1)
        w_end = init_last * w0 + torch.einsum("bs,bshv,bshk->bhvk", last_same, u, phi_k)
        w_read = init_last * w0 + torch.einsum("bs,bshv,bshk->bhvk", reads[:, -1].to(u.dtype), u, phi_k)
        w_read = torch.where(_bmask(before[:, -1], w_read), state.fw_read, w_read)
        return o, w_end, w_read
