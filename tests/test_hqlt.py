"""HQLT layer vs a plain per-episode reference written from the definitions, and the behaviour of each blend.

The reference keeps, for each sequence, the list of the current episode's steps and recomputes every
branch from it (window attention over a python slice, delta rule one pair at a time, delayed-chunk FW
absorbing a finished chunk at the boundary). Both forms of the layer (T == 1 steps and the parallel
T-step form) must match it in float64.
"""

from __future__ import annotations

import math

import pytest
import torch

from memory import MemoryConfig, build_memory
from memory.blocks import MemoryStack
from memory.config import BLENDS, MIXERS
from memory.hqlt import HQLTLayer

SHORT = {"synchronous": "sync", "delayed_stream": "stream", "delayed_chunk": "chunk"}


def rope_ref(x: torch.Tensor, pos: int, base: float) -> torch.Tensor:
    """Rotate dims (i, i + D/2) of x [H, D] by pos * base^(-2i/D)."""
    d = x.shape[-1]
    out = x.clone()
    for i in range(d // 2):
        a = pos * base ** (-2.0 * i / d)
        c, s = math.cos(a), math.sin(a)
        out[..., i] = x[..., i] * c - x[..., i + d // 2] * s
        out[..., i + d // 2] = x[..., i] * s + x[..., i + d // 2] * c
    return out


def ref_phi(x: torch.Tensor, activation: str) -> torch.Tensor:
    """The FW feature map from its definition: SiLU (or nothing) then division by the L2 norm."""
    z = x * torch.sigmoid(x) if activation == "silu" else x
    return z / z.norm(dim=-1, keepdim=True).clamp_min(1e-6)


def delta_write(w, k, v, beta):
    """w [H, Dv, Dk], k [H, Dk], v [H, Dv], beta [H] (None: sum rule)."""
    if beta is None:
        return w + v.unsqueeze(-1) * k.unsqueeze(-2)
    v_old = (w @ k.unsqueeze(-1)).squeeze(-1)
    return w + (beta.unsqueeze(-1) * (v - v_old)).unsqueeze(-1) * k.unsqueeze(-2)


def reference_short_conv(layer: HQLTLayer, x: torch.Tensor, starts: torch.Tensor) -> torch.Tensor:
    """q|k|v [B, T, 3D] after the short convolution, from a fresh state: per step, the kernel's taps over the
    earlier steps of the same episode only; SiLU on v."""
    raw = layer.qkv(x)  # (B, T, 3D)
    w = layer.short_conv.weight  # (3D, K): column K-1 multiplies the current step
    k, d = w.shape[1], layer.config.d_model
    out = torch.zeros_like(raw)
    for b in range(raw.shape[0]):
        episode_start = 0
        for t in range(raw.shape[1]):
            if starts[b, t]:
                episode_start = t
            for j in range(min(k, t - episode_start + 1)):
                out[b, t] += w[:, k - 1 - j] * raw[b, t - j]
    out[..., 2 * d :] = torch.nn.functional.silu(out[..., 2 * d :])
    return out


def reference_layer(layer: HQLTLayer, x: torch.Tensor, starts: torch.Tensor):
    """Branch outputs (o_fw, o_kv) [B, T, H, Dh] (None for an absent branch) from a fresh state."""
    cfg = layer.config

    def phi(z):
        return ref_phi(z, cfg.qk_activation)

    s, carry, blend = cfg.window, cfg.carry_fw_across_episodes, layer.blend
    proj = layer.project(x) if layer.short_conv is None else layer.project(x, reference_short_conv(layer, x, starts))
    b_sz, steps, h, d = proj.q.shape
    o_fw = torch.zeros(b_sz, steps, h, d, dtype=x.dtype) if layer.has_fw else None
    o_kv = torch.zeros(b_sz, steps, h, d, dtype=x.dtype) if layer.has_kv else None
    for b in range(b_sz):
        betas = [None] * steps if proj.beta is None else list(proj.beta[b])  # (H,) per step
        w = torch.zeros(h, d, d, dtype=x.dtype)
        episode: list[int] = []  # time indices of the current episode's steps
        for t in range(steps):
            if starts[b, t]:
                episode = []
                if not carry:
                    w = torch.zeros_like(w)
            p = len(episode)
            episode.append(t)
            q = proj.q[b, t]  # (H, D)
            if layer.has_kv:
                lo = p - p % s if blend == "delayed_chunk" else max(0, p - s + 1)
                idx = episode[lo:]
                rope = (lambda z, i: rope_ref(z, i, cfg.rope_base)) if cfg.rope else (lambda z, i: z)
                keys = torch.stack([rope(proj.k[b, j], lo + n) for n, j in enumerate(idx)], dim=1)  # (H, N, D)
                vals = torch.stack([proj.v[b, j] for j in idx], dim=1)  # (H, N, D)
                att = ((keys @ rope(q, p).unsqueeze(-1)).squeeze(-1) / math.sqrt(d)).softmax(-1)  # (H, N)
                o_kv[b, t] = (att.unsqueeze(-1) * vals).sum(1)
            if layer.has_fw:
                if blend == "synchronous":
                    w = delta_write(w, phi(proj.k[b, t]), proj.v[b, t], betas[t])
                elif blend == "delayed_stream" and p >= s:
                    j = episode[p - s]
                    w = delta_write(w, phi(proj.k[b, j]), proj.v[b, j], betas[j])
                elif blend == "delayed_chunk" and p % s == 0 and p > 0:
                    for j in episode[p - s : p]:  # the chunk that just finished
                        w = delta_write(w, phi(proj.k[b, j]), proj.v[b, j], betas[j])
                o_fw[b, t] = (w @ phi(q).unsqueeze(-1)).squeeze(-1)
    return o_fw, o_kv


def layer_cases():
    for carry in (False, True):
        tag = "-carry" if carry else ""
        for b in BLENDS:
            for m in MIXERS if not carry else ("vector",):
                cfg = dict(blend=b, mixer=m, carry_fw_across_episodes=carry)
                yield pytest.param("hqlt", cfg, id=f"hqlt-{SHORT[b]}-{m}{tag}")
        for kind in ("kv", "deltanet", "linear"):
            if not (carry and kind == "kv"):
                yield pytest.param(kind, dict(carry_fw_across_episodes=carry), id=f"{kind}{tag}")
    yield pytest.param("hqlt", dict(blend="synchronous", rope=False, allow_neg_eigval=False), id="hqlt-sync-vector-norope")
    for b in BLENDS:
        yield pytest.param("hqlt", dict(blend=b, fw_rule="sum"), id=f"hqlt-{SHORT[b]}-vector-sumrule")
    for b in BLENDS:
        yield pytest.param("hqlt", dict(blend=b, short_conv=4), id=f"hqlt-{SHORT[b]}-vector-conv")
    yield pytest.param("hqlt", dict(short_conv=3, carry_fw_across_episodes=True), id="hqlt-sync-vector-carry-conv")
    for kind in ("kv", "deltanet", "linear"):
        yield pytest.param(kind, dict(short_conv=4), id=f"{kind}-conv")
    for b in BLENDS:
        yield pytest.param("hqlt", dict(blend=b, qk_activation="identity"), id=f"hqlt-{SHORT[b]}-vector-identity")
    for kind in ("deltanet", "linear"):
        yield pytest.param(kind, dict(qk_activation="identity", short_conv=4), id=f"{kind}-identity-conv")


@pytest.mark.parametrize("shape", [(2, 37), (1, 20)], ids=lambda s: f"B{s[0]}-T{s[1]}")
@pytest.mark.parametrize(("kind", "cfg"), list(layer_cases()))
def test_layer_matches_reference(kind, cfg, shape):
    b_sz, steps = shape
    config = MemoryConfig(d_model=16, n_heads=2, window=5, chunk_size=8, **cfg)
    layer = HQLTLayer(config, kind).double()
    x = torch.randn(b_sz, steps, 16, dtype=torch.float64)
    starts = torch.zeros(b_sz, steps, dtype=torch.bool)
    starts[0, [3, 4, 19]] = True
    if b_sz > 1:
        starts[1, [0, 12]] = True
    ref_fw, ref_kv = reference_layer(layer, x, starts)
    ref = layer.mix(ref_fw, ref_kv, layer.project(x).gate)

    out, _ = layer(x, layer.initial_state(b_sz, x.device, x.dtype), starts)
    torch.testing.assert_close(out, ref, rtol=1e-10, atol=1e-10)

    state = layer.initial_state(b_sz, x.device, x.dtype)
    outs = []
    for t in range(steps):
        o, state = layer(x[:, t : t + 1], state, starts[:, t : t + 1])
        outs.append(o)
    torch.testing.assert_close(torch.cat(outs, dim=1), ref, rtol=1e-10, atol=1e-10)


def test_kv_window_is_exactly_s_steps():
    """KV-only, one layer: y_t ignores inputs older than S steps and feels the input at t - S + 1."""
    s, t = 6, 20
    mem = build_memory("kv", d_model=16, n_layers=1, n_heads=2, window=s).double()
    x = torch.randn(1, 25, 16, dtype=torch.float64)
    y, _ = mem(x)
    for old in (0, t - s - 3, t - s):
        x2 = x.clone()
        x2[0, old] += 1.0
        torch.testing.assert_close(mem(x2)[0][0, t], y[0, t], rtol=1e-12, atol=1e-12)
    x2 = x.clone()
    x2[0, t - s + 1] += 1.0
    assert (mem(x2)[0][0, t] - y[0, t]).abs().max() > 1e-4
    # The same through the one-step path.
    state, ys = mem.initial_state(1), []
    for i in range(25):
        yi, state = mem(x2[:, i : i + 1], state)
        ys.append(yi)
    assert (ys[t][0, 0] - y[0, t]).abs().max() > 1e-4


def branch_outputs(layer: HQLTLayer, x: torch.Tensor, starts: torch.Tensor, one_step: bool = False):
    """(o_fw, o_kv) of a fresh layer, T-step form or one step at a time."""
    state = layer.initial_state(x.shape[0], x.device, x.dtype)
    if not one_step:
        o_fw, o_kv, _ = layer.branches(layer.project(x), state, starts)
        return o_fw, o_kv
    fws, kvs = [], []
    for t in range(x.shape[1]):
        o_fw, o_kv, state = layer.branches(layer.project(x[:, t : t + 1]), state, starts[:, t : t + 1])
        fws.append(o_fw)
        kvs.append(o_kv)
    return torch.cat(fws, 1), torch.cat(kvs, 1)


def changed_steps(a: torch.Tensor, b: torch.Tensor) -> list[int]:
    """Time indices where [1, T, H, D] outputs differ."""
    return [t for t in range(a.shape[1]) if (a[0, t] - b[0, t]).abs().max() > 1e-9]


@pytest.mark.parametrize("one_step", [False, True], ids=["parallel", "steps"])
def test_delayed_stream_fw_feels_input_exactly_s_steps_later(one_step):
    s, t0, steps = 5, 7, 18  # t0 >= S: W is already non-zero at t0, so q_t0 shows
    cfg = MemoryConfig(d_model=16, n_heads=2, window=s, blend="delayed_stream")
    layer = HQLTLayer(cfg, "hqlt").double()
    x = torch.randn(1, steps, 16, dtype=torch.float64)
    starts = torch.zeros(1, steps, dtype=torch.bool)
    x2 = x.clone()
    x2[0, t0] += 1.0
    fw1, kv1 = branch_outputs(layer, x, starts, one_step)
    fw2, kv2 = branch_outputs(layer, x2, starts, one_step)
    # FW: changes at t0 only through q_t0, then first at t0 + S (the pair enters FW), and from then on.
    assert changed_steps(fw1, fw2) == [t0] + list(range(t0 + s, steps))
    # KV: feels it from t0 for exactly S steps (then it has left the window).
    assert changed_steps(kv1, kv2) == list(range(t0, t0 + s))
    # Synchronous for contrast: FW feels it at once and keeps it.
    sync = HQLTLayer(MemoryConfig(d_model=16, n_heads=2, window=s), "hqlt").double()
    sync.load_state_dict(layer.state_dict())
    assert changed_steps(branch_outputs(sync, x, starts)[0], branch_outputs(sync, x2, starts)[0]) == list(range(t0, steps))


def test_delayed_chunk_reads_chunk_start_state():
    """Chunks counted from the episode start: an input enters KV for the rest of its chunk and FW from the next chunk."""
    s, steps = 4, 14
    layer = HQLTLayer(MemoryConfig(d_model=16, n_heads=2, window=s, blend="delayed_chunk"), "hqlt").double()
    x = torch.randn(1, steps, 16, dtype=torch.float64)
    starts = torch.zeros(1, steps, dtype=torch.bool)
    starts[0, 1] = True  # episode starts at t = 1: chunks are t = 1..4, 5..8, 9..12
    x2 = x.clone()
    x2[0, 6] += 1.0  # position 5, second chunk
    for one_step in (False, True):
        fw1, kv1 = branch_outputs(layer, x, starts, one_step)
        fw2, kv2 = branch_outputs(layer, x2, starts, one_step)
        assert changed_steps(kv1, kv2) == [6, 7, 8]
        assert changed_steps(fw1, fw2) == [6] + list(range(9, steps))


@pytest.mark.parametrize("blend", BLENDS, ids=lambda b: SHORT[b])
def test_carry_fw_across_episodes(blend):
    """After an episode start, the FW part still depends on the previous episode when carried; KV never does."""
    s, steps, start = 3, 14, 8
    x = torch.randn(1, steps, 16, dtype=torch.float64)
    starts = torch.zeros(1, steps, dtype=torch.bool)
    starts[0, start] = True
    x2 = x.clone()
    x2[0, :start] += torch.randn(start, 16, dtype=torch.float64)  # change the whole first episode
    for carry in (False, True):
        torch.manual_seed(1)
        cfg = MemoryConfig(d_model=16, n_heads=2, window=s, blend=blend, carry_fw_across_episodes=carry)
        layer = HQLTLayer(cfg, "hqlt").double()
        fw1, kv1 = branch_outputs(layer, x, starts)
        fw2, kv2 = branch_outputs(layer, x2, starts)
        assert changed_steps(kv1[:, start:], kv2[:, start:]) == []
        assert changed_steps(fw1[:, start:], fw2[:, start:]) == (list(range(steps - start)) if carry else [])
        # The whole stack (one layer) follows: output after the start depends on episode one only when carried.
        torch.manual_seed(1)
        mem = MemoryStack(
            MemoryConfig(d_model=16, n_layers=1, n_heads=2, window=s, blend=blend, carry_fw_across_episodes=carry), "hqlt"
        ).double()
        y1, y2 = mem(x, None, starts)[0], mem(x2, None, starts)[0]
        assert (len(changed_steps(y1[:, start:, None], y2[:, start:, None])) > 0) == carry


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        (dict(window=0), "window"),
        (dict(blend="chunky"), "blend"),
        (dict(mixer="gated"), "mixer"),
        (dict(n_heads=3), "n_heads"),
        (dict(chunk_size=-4), "chunk_size"),
        (dict(n_heads=8, d_model=24), "rope"),  # d_head = 3 is odd: no rotary encoding possible
        (dict(carry_fw_across_episodes="yes"), "carry_fw_across_episodes"),
        (dict(mlp_ratio=0.0), "mlp_ratio"),
        (dict(fw_rule="hebb"), "fw_rule"),
        (dict(qk_activation="relu"), "qk_activation"),
        (dict(short_conv=-1), "short_conv"),
        (dict(short_conv=2.5), "short_conv"),
        (dict(mixer_bias=float("nan")), "mixer_bias"),
        (dict(mixer_bias="fw"), "mixer_bias"),
        (dict(windw=4), "windw"),
    ],
    ids=lambda v: v if isinstance(v, str) else None,
)
def test_bad_config_raises_naming_the_field(kwargs, field):
    kwargs = {"d_model": 16, **kwargs}
    with pytest.raises(ValueError, match=field):
        build_memory("hqlt", **kwargs)


def test_bad_kind_raises():
    with pytest.raises(ValueError, match="kind"):
        MemoryStack(MemoryConfig(d_model=16), kind="mamba")
    with pytest.raises(ValueError, match="StackState"):
        mem = MemoryStack(MemoryConfig(d_model=16, n_layers=2), kind="kv")
        mem(torch.randn(1, 3, 16), MemoryStack(MemoryConfig(d_model=16, n_layers=1), kind="kv").initial_state(1))


@pytest.mark.parametrize("mixer", ["vector", "scalar"])
def test_mixer_bias_leans_the_initial_blend(mixer):
    """mixer_bias shifts only the gate's bias: 0 leaves the seeded init as it was; +3 starts each layer's FW share
    near sigmoid(3) (the scalar mixer's KV weight near sigmoid(-3)); beta and every other weight are untouched."""

    def build(bias):
        torch.manual_seed(0)
        return build_memory("hqlt", d_model=16, n_heads=2, window=4, n_layers=1, mixer=mixer, mixer_bias=bias)

    plain, zero, leaned = build(0.0), build(0), build(3.0)
    torch.manual_seed(0)
    default = build_memory("hqlt", d_model=16, n_heads=2, window=4, n_layers=1, mixer=mixer)
    for a, b in zip(default.state_dict().values(), zero.state_dict().values()):
        assert torch.equal(a, b)
    diff = {k: (leaned.state_dict()[k] - v).abs().max().item() for k, v in plain.state_dict().items()}
    assert all(d == 0.0 for k, d in diff.items() if "aux" not in k)
    x = torch.randn(2, 5, 16)
    proj = _hqlt_layer(leaned).project(x)
    if mixer == "vector":
        assert 0.85 < proj.gate.mean().item() < 0.99
    else:
        assert proj.gate[..., 0].mean().item() > 0.85 and proj.gate[..., 1].mean().item() < 0.15
    assert proj.beta is not None and torch.equal(proj.beta, _hqlt_layer(plain).project(x).beta)  # beta untouched


def _hqlt_layer(stack: MemoryStack) -> HQLTLayer:
    return next(m for m in stack.modules() if isinstance(m, HQLTLayer))


def test_diagnostics_after_forward():
    mem = build_memory("hqlt", d_model=16, n_heads=2, window=4)
    mem(torch.randn(2, 6, 16))
    diag = mem.diagnostics()
    assert set(diag) == {"memory/gate_mean", "memory/beta_mean", "memory/fw_norm"}
    assert 0.0 < diag["memory/gate_mean"] < 1.0 and 0.0 < diag["memory/beta_mean"] < 2.0 and diag["memory/fw_norm"] > 0.0
    assert build_memory("kv", d_model=16).diagnostics() == {}


@pytest.mark.parametrize("name", ["hqlt-sync", "hqlt-stream", "hqlt-chunk", "linear"])
def test_chunked_kernels_equal_reference_fallback(name, monkeypatch):
    """The layer gives the same result with memory.fast_weights' chunked kernels and with its step-by-step fallback."""
    import memory.fast_weights as fast_weights

    kind, _, blend = name.partition("-")
    cfg = dict(blend={"sync": "synchronous", "stream": "delayed_stream", "chunk": "delayed_chunk"}[blend]) if blend else {}
    mem = build_memory(kind, d_model=16, n_heads=2, window=4, chunk_size=8, **cfg).double()
    x = torch.randn(2, 29, 16, dtype=torch.float64)
    starts = torch.zeros(2, 29, dtype=torch.bool)
    starts[0, [0, 9, 10]] = True
    starts[1, 21] = True
    y_fast, s_fast = mem(x, None, starts)
    for fn in ("delta_rule_chunked", "sum_rule_chunked", "delta_rule_pseudo_values"):
        monkeypatch.delattr(fast_weights, fn, raising=False)
    y_ref, s_ref = mem(x, None, starts)
    torch.testing.assert_close(y_fast, y_ref, rtol=1e-10, atol=1e-10)
