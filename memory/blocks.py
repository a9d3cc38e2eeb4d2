"""Blocks and the stack: the transformer-style memories of the registry (hqlt, kv, deltanet, linear).

Block: pre-RMSNorm -> memory layer -> per-head RMSNorm -> output projection -> residual;
       pre-RMSNorm -> SwiGLU MLP -> residual.
Stack: n_layers blocks and a final RMSNorm, with one typed state (:class:`StackState`).
"""

from __future__ import annotations

from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import nn

from memory.base import Memory
from memory.config import MemoryConfig
from memory.hqlt import KINDS, HQLTLayer, LayerState


class StackState(NamedTuple):
    """State of a :class:`MemoryStack`: one layer state per block (every leaf batch-first)."""

    layers: tuple[LayerState, ...]


class SwiGLU(nn.Module):
    """x [..., D] -> W2 (silu(W1 x) * W3 x)."""

    def __init__(self, d_model: int, d_ff: int) -> None:
        super().__init__()
        self.w13 = nn.Linear(d_model, 2 * d_ff, bias=False)
        self.w2 = nn.Linear(d_ff, d_model, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        a, b = self.w13(x).chunk(2, dim=-1)
        return self.w2(F.silu(a) * b)


class MemoryBlock(nn.Module):
    """One residual block around an :class:`HQLTLayer` of the given kind."""

    def __init__(self, config: MemoryConfig, kind: str) -> None:
        super().__init__()
        d = config.d_model
        self.norm1 = nn.RMSNorm(d, eps=config.norm_eps)
        self.layer = HQLTLayer(config, kind)
        self.head_norm = nn.RMSNorm(config.d_head, eps=config.norm_eps)
        self.out = nn.Linear(d, d, bias=False)
        self.norm2 = nn.RMSNorm(d, eps=config.norm_eps)
        self.mlp = SwiGLU(d, config.d_ff)

    def forward(
        self, x: torch.Tensor, state: LayerState, episode_starts: torch.Tensor, shared: dict | None = None
    ) -> tuple[torch.Tensor, LayerState]:
        """x [B, T, D] -> (y [B, T, D], new layer state). ``shared``: see :meth:`HQLTLayer.forward`."""
        o, state = self.layer(self.norm1(x), state, episode_starts, shared)  # (B, T, H, Dh)
        x = x + self.out(self.head_norm(o).flatten(2))  # (B, T, D)
        return x + self.mlp(self.norm2(x)), state


class MemoryStack(Memory):
    """``n_layers`` memory blocks of one kind: ``"hqlt"`` (KV + FW, blended and mixed per the config),
    ``"kv"`` (sliding-window transformer), ``"deltanet"`` (delta-rule fast weights) or ``"linear"``
    (sum-rule linear attention).

    x [B, T, D] -> y [B, T, D]. A call with T == 1 takes the O(S + d^2) one-step path; T > 1 the
    parallel path. ``diagnostics()`` returns cheap scalars of the last forward pass.
    """

    def __init__(self, config: MemoryConfig, kind: str = "hqlt") -> None:
        super().__init__()
        if not isinstance(config, MemoryConfig):
            raise ValueError(
                f"MemoryStack needs a MemoryConfig, got {type(config).__name__}; build one with MemoryConfig(...)"
            )
        if kind not in KINDS:
            raise ValueError(f"MemoryStack field 'kind'={kind!r} is unknown; allowed: {', '.join(KINDS)}")
        self.config = config
        self.kind = kind
        self.d_model = config.d_model
        self.blocks = nn.ModuleList(MemoryBlock(config, kind) for _ in range(config.n_layers))
        self.norm = nn.RMSNorm(config.d_model, eps=config.norm_eps)

    def initial_state(self, batch_size: int, device: torch.device | str | None = None) -> StackState:
        device, dtype = self._param_device(device), self._param_dtype()
        return StackState(tuple(block.layer.initial_state(batch_size, device, dtype) for block in self.blocks))

    def _forward(self, x: torch.Tensor, state: StackState, episode_starts: torch.Tensor) -> tuple[torch.Tensor, StackState]:
        if not isinstance(state, StackState) or len(state.layers) != len(self.blocks):
            raise ValueError(
                f"state must be the StackState of this memory ({len(self.blocks)} layers); "
                "get one from initial_state(batch_size) or a previous forward"
            )
        new_layers = []
        shared: dict = {}  # position-only tensors, built by the first layer that needs them
        for block, layer_state in zip(self.blocks, state.layers):
            x, layer_state = block(x, layer_state, episode_starts, shared)
            new_layers.append(layer_state)
        return self.norm(x), StackState(tuple(new_layers))

    def diagnostics(self) -> dict[str, float]:
        """Means over layers of the last forward: memory/gate_mean, memory/beta_mean, memory/fw_norm (when present)."""
        per_layer = [block.layer.diagnostics() for block in self.blocks]
        names = sorted({name for stats in per_layer for name in stats})
        return {f"memory/{name}": sum(s[name] for s in per_layer if name in s) / len(per_layer) for name in names}

    def extra_repr(self) -> str:
        c = self.config
        extra = f", blend={c.blend}, mixer={c.mixer}" if self.kind == "hqlt" else ""
        return f"kind={self.kind}, window={c.window}{extra}, carry_fw_across_episodes={c.carry_fw_across_episodes}"
