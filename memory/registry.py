"""Build any memory from its name and a config."""

from __future__ import annotations

from memory.base import Memory
from memory.config import MEMORY_NAMES, MemoryConfig


def build_memory(name: str, d_model: int = 64, **config: object) -> Memory:
    """Build the memory called ``name`` (one of MEMORY_NAMES) with width ``d_model``.

    ``config`` holds MemoryConfig fields (n_layers, n_heads, window, blend, mixer, ...).
    """
    if not isinstance(name, str) or name.lower() not in MEMORY_NAMES:
        raise ValueError(f"unknown memory name {name!r}; allowed: {', '.join(MEMORY_NAMES)}")
    cfg = MemoryConfig.from_kwargs(d_model=d_model, **config)
    name = name.lower()
    if name in ("lstm", "gru"):
        from memory.rnn import RNNMemory

        return RNNMemory(cfg, cell=name)
    if name == "none":
        from memory.rnn import NoMemory

        return NoMemory(cfg)
    from memory.blocks import MemoryStack

    return MemoryStack(cfg, kind=name)
