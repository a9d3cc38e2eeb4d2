"""Sequence memories with one contract: KV window, delta-rule fast weights, their HQLT blends, baselines.

Build one with :func:`build_memory`; every module has ``initial_state(batch_size, device)`` and
``forward(x, state, episode_starts) -> (y, new_state)`` with batch-first tensors.
"""

from memory.base import Memory
from memory.config import BLENDS, FW_RULES, MEMORY_NAMES, MIXERS, MemoryConfig
from memory.registry import build_memory
from memory.state import (
    State,
    cat_states,
    detach_state,
    index_state,
    map_state,
    stack_states,
    state_leaves,
    state_to,
    where_state,
)

__all__ = [
    "BLENDS",
    "FW_RULES",
    "MEMORY_NAMES",
    "MIXERS",
    "Memory",
    "MemoryConfig",
    "State",
    "build_memory",
    "cat_states",
    "detach_state",
    "index_state",
    "map_state",
    "stack_states",
    "state_leaves",
    "state_to",
    "where_state",
]
