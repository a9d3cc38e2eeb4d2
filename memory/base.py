"""The contract every memory follows (see shared DESIGN.md, "Contracts")."""

from __future__ import annotations

import torch
from torch import nn

from memory.state import State


class Memory(nn.Module):
    """A sequence memory: x [B, T, D] -> y [B, T, D], with a typed state carried between calls.

    Subclasses implement ``initial_state`` and ``_forward``. ``episode_starts`` [B, T] bool marks
    steps that begin a new episode; the memory resets its state *before* such a step.
    One call with T steps equals T calls with one step each (to float round-off).
    """

    d_model: int
    _compiled_forward = None  # set by compile_training; never pickled or deep-copied (see __getstate__)
    _compiled_step = None  # set by compile_rollout; the same
    _ready_devices: frozenset = frozenset()  # devices whose caches _prepare_device has filled

    def compile_training(self, enabled: bool = True) -> Memory:
        """Opt in to ``torch.compile`` for multi-step calls with gradients (the training replay); other calls stay
        eager (see :meth:`compile_rollout` for the rollout's one-step calls).

        The compiled graph fuses the many small ops of the chunk-parallel forms and their backward into a few kernels
        (about 1.6x less time per training minibatch of the HQLT stack on a CPU, see docs/results.md). Costs: the
        first call of each new input shape compiles (about a minute on a CPU; ``torch.compile`` needs a C++ compiler
        there), and a compiled call is equal to the eager one to float round-off, not bit for bit.
        """
        self._compiled_forward = torch.compile(self._forward, dynamic=False) if enabled else None
        return self

    def compile_rollout(self, enabled: bool = True) -> Memory:
        """Opt in to ``torch.compile`` for one-step calls under ``torch.inference_mode`` (``MemoryPPO``'s rollouts);
        other calls without gradients (``predict``, value bootstraps of truncated episodes, whose batch sizes vary)
        stay eager.

        One step of a stack is dozens of tiny ops whose per-op overhead dominates on a CPU; the compiled graph runs
        it in a few kernels (a 2-layer HQLT step at batch 8 about 2x faster, see docs/results.md). The first rollout
        compiles (10-20 s on a CPU); the result equals the eager step to float round-off.
        """
        self._compiled_step = torch.compile(self._rollout_step, dynamic=False) if enabled else None
        return self

    def _rollout_step(self, x: torch.Tensor, state: State, episode_starts: torch.Tensor) -> tuple[torch.Tensor, State]:
        # A code object of its own: torch.compile caches graphs per code object (up to a limit, then runs eager), so
        # the rollout's graphs do not crowd out the training replay's.
        return self._forward(x, state, episode_starts)

    def __getstate__(self) -> dict:
        state = self.__dict__.copy()
        # compiled callables are rebuilt by compile_training / compile_rollout, not copied
        state.pop("_compiled_forward", None)
        state.pop("_compiled_step", None)
        return state

    def initial_state(self, batch_size: int, device: torch.device | str | None = None) -> State:
        raise NotImplementedError

    def _forward(self, x: torch.Tensor, state: State, episode_starts: torch.Tensor) -> tuple[torch.Tensor, State]:
        raise NotImplementedError

    def forward(
        self,
        x: torch.Tensor,
        state: State | None = None,
        episode_starts: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, State]:
        """x [B, T, D], state from ``initial_state`` or a previous call, episode_starts [B, T] bool."""
        if x.dim() != 3 or x.shape[-1] != self.d_model:
            raise ValueError(f"memory input must be [batch, time, {self.d_model}], got shape {tuple(x.shape)}")
        batch, steps = x.shape[:2]
        if state is None:
            state = self.initial_state(batch, x.device)
        if episode_starts is None:
            episode_starts = torch.zeros(batch, steps, dtype=torch.bool, device=x.device)
        elif episode_starts.shape != (batch, steps):
            raise ValueError(
                f"episode_starts must be [batch, time] = {(batch, steps)}, got {tuple(episode_starts.shape)}"
            )
        episode_starts = episode_starts.to(device=x.device, dtype=torch.bool)
        if self._compiled_forward is not None and steps > 1 and torch.is_grad_enabled():
            self._prepare_device(x.device)
            return self._compiled_forward(x, state, episode_starts)
        if self._compiled_step is not None and steps == 1 and torch.is_inference_mode_enabled():
            self._prepare_device(x.device)
            return self._compiled_step(x, state, episode_starts)
        return self._forward(x, state, episode_starts)

    def _prepare_device(self, device: torch.device) -> None:
        """Before a compiled call: let submodules fill their per-device caches (``prepare_device(device)``, e.g. the
        rotary tables) eagerly, outside inference mode. Filled inside the compiled rollout step they would be inference
        tensors, which the compiled training graph refuses to save for backward."""
        if device in self._ready_devices:
            return
        with torch.inference_mode(False):
            for module in self.modules():
                prepare = getattr(module, "prepare_device", None)
                if callable(prepare):
                    prepare(device)
        self._ready_devices = self._ready_devices | {device}

    def _param_dtype(self) -> torch.dtype:
        for p in self.parameters():
            return p.dtype
        return torch.get_default_dtype()

    def _param_device(self, device: torch.device | str | None) -> torch.device:
        if device is not None:
            return torch.device(device)
        for p in self.parameters():
            return p.device
        return torch.device("cpu")

    def diagnostics(self) -> dict[str, float]:
        """Scalar summaries of the last forward pass (e.g. mean mixing gate, fast-weight norm)."""
        return {}
