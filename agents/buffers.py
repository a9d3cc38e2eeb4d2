"""Rollout buffers that keep the memory state only at the start of each training sequence.

A rollout of ``n_steps`` per env is cut into sequences of ``seq_len`` consecutive steps of one env.
The buffer keeps SB3's per-step arrays (observations, actions, rewards, values, log-probs,
episode starts; GAE as SB3 computes it) plus one policy state per sequence, the state *before*
the sequence's first step. Its size is ``n_envs * n_steps / seq_len`` states, independent of how
long a memory's window is. Training replays whole sequences from those states.
"""

from __future__ import annotations

from collections.abc import Generator
from typing import Any, NamedTuple

import numpy as np
import torch
from gymnasium import spaces
from stable_baselines3.common.buffers import DictRolloutBuffer, RolloutBuffer

from memory.state import State, index_state, map_state, stack_states


class SequenceSamples(NamedTuple):
    """A minibatch of B sequences of T = seq_len steps."""

    observations: torch.Tensor | dict[str, torch.Tensor]  # (B, T, ...)
    actions: torch.Tensor  # (B, T, A) raw (a Discrete action is its index, as float)
    rewards: torch.Tensor  # (B, T) reward received after each action
    old_values: torch.Tensor  # (B, T)
    old_log_prob: torch.Tensor  # (B, T)
    advantages: torch.Tensor  # (B, T)
    returns: torch.Tensor  # (B, T)
    episode_starts: torch.Tensor  # (B, T) bool
    states: State  # policy state before each sequence's first step, batch B


class _SequenceMixin:
    """Sequence storage and batching shared by the flat and the Dict buffers."""

    buffer_size: int
    n_envs: int
    device: torch.device

    def __init__(
        self,
        buffer_size: int,
        observation_space: spaces.Space,
        action_space: spaces.Space,
        device: torch.device | str = "auto",
        gae_lambda: float = 1.0,
        gamma: float = 0.99,
        n_envs: int = 1,
        seq_len: int = 32,
    ) -> None:
        super().__init__(buffer_size, observation_space, action_space, device, gae_lambda, gamma, n_envs)  # type: ignore[call-arg]
        self._init_sequences(seq_len)

    def reset(self) -> None:
        super().reset()  # type: ignore[misc]
        self._start_states = []
        self._tensors = None

    def _init_sequences(self, seq_len: int) -> None:
        if isinstance(seq_len, bool) or not isinstance(seq_len, int) or seq_len <= 0:
            raise ValueError(f"rollout buffer 'seq_len' must be a positive integer, got {seq_len!r}")
        if self.buffer_size % seq_len != 0:
            raise ValueError(
                f"rollout buffer size n_steps={self.buffer_size} must be a multiple of seq_len={seq_len}; "
                f"pick n_steps in {{{seq_len}, {2 * seq_len}, ...}} or a seq_len that divides it"
            )
        self.seq_len = seq_len
        self.seqs_per_env = self.buffer_size // seq_len
        self._start_states: list[State] = []
        self._tensors: dict[str, Any] | None = None

    # ---------------------------------------------------------------- filling

    def add_state(self, state: State) -> None:
        """Store the policy state (batch n_envs) before the step about to be added; call every seq_len steps."""
        pos = self.pos
        if pos != len(self._start_states) * self.seq_len:
            raise RuntimeError(
                f"add_state must be called before steps 0, {self.seq_len}, 2*{self.seq_len}, ... of a rollout; "
                f"called at step {pos} with {len(self._start_states)} state(s) stored"
            )
        self._start_states.append(state)
        self._tensors = None

    @property
    def n_stored_states(self) -> int:
        """How many per-env states the buffer holds (n_envs per stored sequence start)."""
        return len(self._start_states) * self.n_envs

    @property
    def n_sequences(self) -> int:
        return self.n_envs * self.seqs_per_env

    # ---------------------------------------------------------------- reading

    def _to_sequences(self, array: np.ndarray) -> torch.Tensor:
        """(n_steps, n_envs, ...) -> (n_envs * seqs_per_env, seq_len, ...) on the device; sequence id = env * k + j."""
        rest = array.shape[2:]
        array = np.ascontiguousarray(array.swapaxes(0, 1))  # (n_envs, n_steps, ...)
        return torch.as_tensor(array.reshape(self.n_sequences, self.seq_len, *rest), device=self.device)

    def sequence_tensors(self) -> dict[str, Any]:
        """All sequences as tensors on the device (built once per rollout)."""
        if self._tensors is not None:
            return self._tensors
        full = self.full
        if not full or len(self._start_states) != self.seqs_per_env:
            raise RuntimeError(
                f"the rollout buffer is not complete ({self.pos} of {self.buffer_size} steps, "
                f"{len(self._start_states)} of {self.seqs_per_env} sequence states)"
            )
        observations = self.observations
        if isinstance(observations, dict):
            obs: Any = {key: self._to_sequences(value) for key, value in observations.items()}
        else:
            obs = self._to_sequences(observations)
        # States: list over j of leaves (n_envs, ...) -> (n_envs, seqs_per_env, ...) -> (n_envs * seqs_per_env, ...).
        stacked = stack_states(self._start_states, dim=1)
        states = map_state(lambda t: t.reshape(self.n_sequences, *t.shape[2:]), stacked)
        self._tensors = dict(
            observations=obs,
            actions=self._to_sequences(self.actions),
            rewards=self._to_sequences(self.rewards),
            old_values=self._to_sequences(self.values),
            old_log_prob=self._to_sequences(self.log_probs),
            advantages=self._to_sequences(self.advantages),
            returns=self._to_sequences(self.returns),
            episode_starts=self._to_sequences(self.episode_starts).bool(),
            states=states,
        )
        return self._tensors

    def select(self, index: torch.Tensor) -> SequenceSamples:
        """The sequences ``index`` (1-D long tensor of sequence ids)."""
        data = self.sequence_tensors()
        obs = data["observations"]
        obs = {key: value[index] for key, value in obs.items()} if isinstance(obs, dict) else obs[index]
        return SequenceSamples(
            observations=obs,
            actions=data["actions"][index],
            rewards=data["rewards"][index],
            old_values=data["old_values"][index],
            old_log_prob=data["old_log_prob"][index],
            advantages=data["advantages"][index],
            returns=data["returns"][index],
            episode_starts=data["episode_starts"][index],
            states=index_state(data["states"], index),
        )

    def get_sequences(self, batch_size: int) -> Generator[SequenceSamples, None, None]:
        """Shuffled minibatches of ``batch_size // seq_len`` whole sequences (the last one smaller if it does not divide)."""
        if batch_size % self.seq_len != 0:
            raise ValueError(f"batch_size={batch_size} must be a multiple of seq_len={self.seq_len}")
        per_batch = batch_size // self.seq_len
        order = torch.as_tensor(np.random.permutation(self.n_sequences), device=self.device)
        for start in range(0, self.n_sequences, per_batch):
            yield self.select(order[start : start + per_batch])


class MemoryRolloutBuffer(_SequenceMixin, RolloutBuffer):
    """SB3 RolloutBuffer plus one policy state per sequence of ``seq_len`` steps."""


class MemoryDictRolloutBuffer(_SequenceMixin, DictRolloutBuffer):
    """SB3 DictRolloutBuffer plus one policy state per sequence of ``seq_len`` steps."""
