"""Typed, validated configuration shared by every memory."""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass

MEMORY_NAMES = ("hqlt", "kv", "deltanet", "linear", "lstm", "gru", "none")
BLENDS = ("synchronous", "delayed_stream", "delayed_chunk")
MIXERS = ("sum", "scalar", "vector")
FW_RULES = ("delta", "sum")
QK_ACTIVATIONS = ("silu", "identity")


@dataclass(frozen=True)
class MemoryConfig:
    """Configuration of a memory; fields a memory does not use are ignored by it."""

    d_model: int = 64
    """Width of the memory's input and output."""
    n_layers: int = 2
    """Number of stacked blocks (or recurrent layers for lstm/gru)."""
    n_heads: int = 4
    """Attention / fast-weight heads per layer; d_model must be divisible by it."""
    window: int = 32
    """S: the KV-memory attends to the last S steps, the current one included."""
    blend: str = "synchronous"
    """How input reaches the two systems: synchronous, delayed_stream or delayed_chunk."""
    mixer: str = "vector"
    """How the two outputs combine: sum, scalar (two sigmoid scalars per head) or vector (sigmoid gate)."""
    mixer_bias: float = 0.0
    """Added to the mixer's initial gate bias (vector and scalar mixers): 0 starts an even blend (sigmoid 0.5); a
    positive value starts the blend leaning on the fast weights (sigmoid(2) = 0.88), a negative one on the KV window."""
    fw_rule: str = "delta"
    """Fast-weight update: delta (DeltaNet) or sum (linear attention, the paper's ablation); 'linear' always uses sum."""
    qk_activation: str = "silu"
    """Feature map of the FW branch's queries and keys before L2 normalisation: silu (phi = L2(SiLU(x)), DeltaNet's
    default) or identity (phi = L2(x), keys of any sign, as in the paper's configs for parity and modular arithmetic)."""
    allow_neg_eigval: bool = True
    """beta = 2 * sigmoid(.) in (0, 2) instead of sigmoid(.) in (0, 1)."""
    rope: bool = True
    """Rotary position encoding on the KV branch (positions count from the episode start)."""
    rope_base: float = 10000.0
    """Base of the rotary frequencies."""
    short_conv: int = 0
    """Kernel size of causal depthwise convolutions over time on q, k and v (v then goes through SiLU), as in the
    paper authors' DeltaNet/HQLT layers (they use 4); 0 turns them off. They never reach across an episode start."""
    carry_fw_across_episodes: bool = False
    """Fast weights survive episode starts (the KV window still resets)."""
    chunk_size: int = 32
    """Chunk length of the chunk-parallel delta rule used for multi-step calls."""
    mlp_ratio: float = 4.0
    """SwiGLU hidden width = round(mlp_ratio * 2/3 * d_model)."""
    norm_eps: float = 1e-5
    """Epsilon of the RMS norms."""

    def __post_init__(self) -> None:
        def positive_int(name: str) -> None:
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
                raise ValueError(f"memory config field '{name}' must be a positive integer, got {value!r}")

        for name in ("d_model", "n_layers", "n_heads", "window", "chunk_size"):
            positive_int(name)
        if isinstance(self.short_conv, bool) or not isinstance(self.short_conv, int) or self.short_conv < 0:
            raise ValueError(
                f"memory config field 'short_conv' must be a kernel size >= 0 (0: no convolution), got {self.short_conv!r}"
            )
        if self.d_model % self.n_heads != 0:
            raise ValueError(
                f"memory config field 'n_heads'={self.n_heads} must divide 'd_model'={self.d_model}; "
                f"pick n_heads in {[h for h in range(1, self.d_model + 1) if self.d_model % h == 0]}"
            )
        if self.blend not in BLENDS:
            raise ValueError(f"memory config field 'blend'={self.blend!r} is unknown; allowed: {', '.join(BLENDS)}")
        if self.mixer not in MIXERS:
            raise ValueError(f"memory config field 'mixer'={self.mixer!r} is unknown; allowed: {', '.join(MIXERS)}")
        if self.fw_rule not in FW_RULES:
            raise ValueError(f"memory config field 'fw_rule'={self.fw_rule!r} is unknown; allowed: {', '.join(FW_RULES)}")
        if self.qk_activation not in QK_ACTIVATIONS:
            raise ValueError(
                f"memory config field 'qk_activation'={self.qk_activation!r} is unknown; allowed: {', '.join(QK_ACTIVATIONS)}"
            )
        for name in ("allow_neg_eigval", "rope", "carry_fw_across_episodes"):
            if not isinstance(getattr(self, name), bool):
                raise ValueError(f"memory config field '{name}' must be true or false, got {getattr(self, name)!r}")
        if (
            isinstance(self.mixer_bias, bool)
            or not isinstance(self.mixer_bias, (int, float))
            or not math.isfinite(self.mixer_bias)
        ):
            raise ValueError(f"memory config field 'mixer_bias' must be a finite number, got {self.mixer_bias!r}")
        if not self.mlp_ratio > 0:
            raise ValueError(f"memory config field 'mlp_ratio' must be > 0, got {self.mlp_ratio!r}")
        if not self.norm_eps > 0:
            raise ValueError(f"memory config field 'norm_eps' must be > 0, got {self.norm_eps!r}")
        if not self.rope_base > 1:
            raise ValueError(f"memory config field 'rope_base' must be > 1, got {self.rope_base!r}")

    @property
    def d_head(self) -> int:
        return self.d_model // self.n_heads

    @property
    def d_ff(self) -> int:
        return max(1, int(round(self.mlp_ratio * 2.0 / 3.0 * self.d_model)))

    @classmethod
    def from_kwargs(cls, **kwargs: object) -> MemoryConfig:
        """Build from keyword arguments; an unknown field raises ValueError listing the allowed ones."""
        allowed = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(kwargs) - allowed)
        if unknown:
            raise ValueError(f"unknown memory config field(s) {unknown}; allowed: {', '.join(sorted(allowed))}")
        return cls(**kwargs)  # type: ignore[arg-type]
