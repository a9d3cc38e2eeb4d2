"""Baselines under the memory contract: LSTM, GRU, and no memory at all."""

from __future__ import annotations

from typing import NamedTuple

import torch
from torch import nn

from memory.base import Memory
from memory.config import MemoryConfig


class LSTMState(NamedTuple):
    h: torch.Tensor  # (B, L, D)
    c: torch.Tensor  # (B, L, D)


class GRUState(NamedTuple):
    h: torch.Tensor  # (B, L, D)


class NoState(NamedTuple):
    empty: torch.Tensor  # (B, 0): carries the batch size only


class RNNMemory(Memory):
    """``n_layers`` of torch's LSTM or GRU with hidden size d_model; x [B, T, D] -> y [B, T, D]."""

    def __init__(self, config: MemoryConfig, cell: str = "lstm") -> None:
        super().__init__()
        if cell not in ("lstm", "gru"):
            raise ValueError(f"RNNMemory cell must be 'lstm' or 'gru', got {cell!r}")
        self.config = config
        self.cell = cell
        self.d_model = config.d_model
        rnn_cls = nn.LSTM if cell == "lstm" else nn.GRU
        self.rnn = rnn_cls(config.d_model, config.d_model, num_layers=config.n_layers, batch_first=True)

    def initial_state(self, batch_size: int, device: torch.device | str | None = None) -> LSTMState | GRUState:
        shape = (batch_size, self.config.n_layers, self.d_model)
        zeros = torch.zeros(shape, device=self._param_device(device), dtype=self._param_dtype())
        return LSTMState(zeros, zeros.clone()) if self.cell == "lstm" else GRUState(zeros)

    def _forward(self, x, state, episode_starts):
        steps = x.shape[1]
        # Cut the time axis where any sequence starts an episode; run cuDNN-style calls in between.
        cuts = [0] + [t for t in range(1, steps) if bool(episode_starts[:, t].any())] + [steps]
        outputs = []
        for t0, t1 in zip(cuts[:-1], cuts[1:]):
            keep = (~episode_starts[:, t0]).to(x.dtype).view(-1, 1, 1)  # (B, 1, 1)
            hidden = tuple((s * keep).transpose(0, 1).contiguous() for s in state)  # each (L, B, D)
            y, hidden = self.rnn(x[:, t0:t1], hidden if self.cell == "lstm" else hidden[0])
            if self.cell == "gru":
                hidden = (hidden,)
            state = type(state)(*(h.transpose(0, 1) for h in hidden))  # each (B, L, D)
            outputs.append(y)
        return torch.cat(outputs, dim=1), state


class NoMemory(Memory):
    """The identity: the agent acts on the current observation only."""

    def __init__(self, config: MemoryConfig) -> None:
        super().__init__()
        self.config = config
        self.d_model = config.d_model

    def initial_state(self, batch_size: int, device: torch.device | str | None = None) -> NoState:
        return NoState(torch.zeros(batch_size, 0, device=self._param_device(device), dtype=self._param_dtype()))

    def _forward(self, x, state, episode_starts):
        return x, state
