"""Helpers that treat any memory state as a tree of tensors with batch as dim 0.

Every memory keeps its state in a NamedTuple (possibly nested: a stack holds a tuple of
per-layer states). The agent never looks inside; it uses these helpers to index, concatenate,
move and reset states without knowing which memory made them.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import torch

State = Any  # a NamedTuple (or nested tuples of NamedTuples) whose leaves are tensors [B, ...]


def _is_namedtuple(obj: Any) -> bool:
    return isinstance(obj, tuple) and hasattr(obj, "_fields")


def map_state(fn: Callable[..., torch.Tensor], state: State, *others: State) -> State:
    """Apply ``fn`` leaf-wise to one state (or several states of the same structure)."""
    if isinstance(state, torch.Tensor):
        return fn(state, *others)
    if state is None:
        return None
    if _is_namedtuple(state):
        return type(state)(*(map_state(fn, s, *(o[i] for o in others)) for i, s in enumerate(state)))
    if isinstance(state, (tuple, list)):
        return type(state)(map_state(fn, s, *(o[i] for o in others)) for i, s in enumerate(state))
    if isinstance(state, dict):
        return {key: map_state(fn, value, *(o[key] for o in others)) for key, value in state.items()}
    raise TypeError(f"memory state leaves must be tensors, got {type(state).__name__}")


def state_leaves(state: State) -> list[torch.Tensor]:
    """All tensors of a state, in a fixed order."""
    leaves: list[torch.Tensor] = []
    map_state(lambda t: leaves.append(t) or t, state)
    return leaves


def index_state(state: State, index: torch.Tensor | slice | int | Sequence[int]) -> State:
    """Select batch entries: ``index_state(s, idx)`` is ``s[idx]`` on every leaf."""
    return map_state(lambda t: t[index], state)


def cat_states(states: Sequence[State]) -> State:
    """Concatenate states along the batch dim."""
    return map_state(lambda *ts: torch.cat(ts, dim=0), states[0], *states[1:])


def stack_states(states: Sequence[State], dim: int = 0) -> State:
    """Stack states along a new dim (``dim=1`` keeps batch first: leaves become [B, N, ...])."""
    return map_state(lambda *ts: torch.stack(ts, dim=dim), states[0], *states[1:])


def detach_state(state: State) -> State:
    return map_state(lambda t: t.detach(), state)


def state_to(state: State, device: torch.device | str | None = None, dtype: torch.dtype | None = None) -> State:
    """Move a state; only floating leaves change dtype."""
    return map_state(lambda t: t.to(device=device, dtype=dtype if t.is_floating_point() else None), state)


def where_state(mask: torch.Tensor, new: State, old: State) -> State:
    """Per batch entry: ``new`` where ``mask`` [B] is True, else ``old``."""

    def pick(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        m = mask.view(-1, *([1] * (a.dim() - 1)))
        return torch.where(m, a, b)

    return map_state(pick, new, old)
