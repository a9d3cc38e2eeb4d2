"""Memory speed benchmark: chunk-parallel delta rule vs step loop, per-step rollout latency vs episode step, and the
compiled vs the eager rollout step.

Usage: ``python benchmarks/memory_speed.py [--quick] [--threads 2]``

a) Delta rule forward+backward, B=16, H=4, d_head=32: the step-by-step reference loop against the chunk-parallel
   form for several chunk sizes (float32). Prints ms and the speed-up over the step loop.
b) HQLT (build_memory("hqlt", 64, n_layers=2, window=32)) one-step latency under torch.no_grad, batch 1 and 8, run
   step by step from the episode start; the median latency of the steps timed just after step 100 and just after
   step 10,000 (timed steps of the two points interleaved, so background load hits both alike). A sliding window
   plus fixed-size fast weights should make the ratio ~1.
c) The same for a full-context causal attention stack of the same width/heads/layers with a growing KV cache
   (what the window saves): its per-step cost grows with the episode step.

d) The rollout step with ``compile_rollout()`` (``policy_kwargs compile_memory=True``) against the eager step, under
   ``torch.inference_mode`` as in MemoryPPO's rollouts: HQLT, KV-only and DeltaNet at the RL sweeps' size (d_model
   32, 2 heads, 2 layers, window 16), batch 8, episode starts at about 5% of the steps; median ms per step of the two
   interleaved, and the largest output difference (float round-off). The first compiled call (the compile) is
   reported apart.

All numbers come from one run on this machine; wall-clock medians/minima, so other load on the CPU adds noise.
"""

from __future__ import annotations

import argparse
import copy
import math
import os
import statistics
import sys
import time
from collections.abc import Callable
from functools import partial

import torch
import torch.nn.functional as F
from torch import nn

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from memory.fast_weights import delta_rule_chunked, delta_rule_reference, phi  # noqa: E402


def _best_ms(fn: Callable[[], None], reps: int, warmup: int = 1) -> float:
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(reps):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return 1e3 * min(times)


# ---------------------------------------------------------------------------------------------------------------------
# a) chunk-parallel vs step-by-step delta rule
# ---------------------------------------------------------------------------------------------------------------------


def _fwd_bwd(
    fn: Callable[..., tuple[torch.Tensor, torch.Tensor]], inputs: tuple[torch.Tensor, ...], grad_o: torch.Tensor
) -> None:
    o, s = fn(*inputs)
    ((o * grad_o).sum() + s.sum()).backward()


def bench_delta_rule(lengths: list[int], chunk_sizes: list[int], reps: int, default_chunk: int) -> None:
    batch, heads, d_head = 16, 4, 32
    print(f"\n(a) delta rule forward+backward, B={batch} H={heads} d_head={d_head}, float32, best of {reps} (ms)")
    header = f"{'T':>6} {'step loop':>10} " + " ".join(f"{'C=' + str(c):>8}" for c in chunk_sizes)
    print(header + f" {'speed-up C=' + str(default_chunk):>14} {'best C':>7} {'best speed-up':>14}")
    gen = torch.Generator().manual_seed(0)
    for steps in lengths:
        q = phi(torch.randn(batch, steps, heads, d_head, generator=gen)).requires_grad_(True)
        k = phi(torch.randn(batch, steps, heads, d_head, generator=gen)).requires_grad_(True)
        v = torch.randn(batch, steps, heads, d_head, generator=gen).requires_grad_(True)
        beta = (2.0 * torch.rand(batch, steps, heads, generator=gen)).requires_grad_(True)
        w0 = torch.zeros(batch, heads, d_head, d_head, requires_grad=True)
        grad_o = torch.randn(batch, steps, heads, d_head, generator=gen)

        inputs = (q, k, v, beta, w0)
        runs = {"ref": partial(_fwd_bwd, delta_rule_reference, inputs, grad_o)}
        runs.update({c: partial(_fwd_bwd, partial(delta_rule_chunked, chunk_size=c), inputs, grad_o) for c in chunk_sizes})
        for c in chunk_sizes:  # warm-up
            runs[c]()
        # Reps interleaved (loop, C=32, C=64, ... , loop, ...) so that background load hits every variant alike.
        best_ms = {name: math.inf for name in runs}
        ref_reps = max(1, reps // 2) if steps >= 2048 else reps
        for rep in range(reps):
            for name, fn in runs.items():
                if name == "ref" and rep >= ref_reps:
                    continue
                best_ms[name] = min(best_ms[name], _best_ms(fn, 1, warmup=0))
        t_ref = best_ms.pop("ref")
        t_chunk = best_ms
        best = min(t_chunk, key=t_chunk.get)
        row = f"{steps:>6} {t_ref:>10.1f} " + " ".join(f"{t_chunk[c]:>8.1f}" for c in chunk_sizes)
        default = t_ref / t_chunk[default_chunk] if default_chunk in t_chunk else float("nan")
        print(row + f" {default:>13.1f}x {best:>7} {t_ref / t_chunk[best]:>13.1f}x")


# ---------------------------------------------------------------------------------------------------------------------
# c) full-context attention baseline with a growing KV cache
# ---------------------------------------------------------------------------------------------------------------------


class _SwiGLU(nn.Module):
    def __init__(self, d_model: int, d_ff: int) -> None:
        super().__init__()
        self.w_in = nn.Linear(d_model, 2 * d_ff, bias=False)
        self.w_out = nn.Linear(d_ff, d_model, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        a, b = self.w_in(x).chunk(2, dim=-1)
        return self.w_out(F.silu(a) * b)


class FullAttentionStack(nn.Module):
    """Causal softmax attention over the whole episode (growing KV cache), pre-RMSNorm blocks with SwiGLU MLPs.

    Same d_model / heads / layers / MLP width as the HQLT stack; no window, so step t attends to t keys.
    The cache is preallocated ([L, B, H, capacity, Dh]) so a step writes in place instead of copying the cache.
    """

    def __init__(self, d_model: int = 64, n_heads: int = 4, n_layers: int = 2, mlp_ratio: float = 4.0) -> None:
        super().__init__()
        self.d_model, self.n_heads, self.n_layers = d_model, n_heads, n_layers
        self.d_head = d_model // n_heads
        d_ff = max(1, int(round(mlp_ratio * 2.0 / 3.0 * d_model)))
        self.norm1 = nn.ModuleList(nn.RMSNorm(d_model) for _ in range(n_layers))
        self.qkv = nn.ModuleList(nn.Linear(d_model, 3 * d_model, bias=False) for _ in range(n_layers))
        self.out = nn.ModuleList(nn.Linear(d_model, d_model, bias=False) for _ in range(n_layers))
        self.norm2 = nn.ModuleList(nn.RMSNorm(d_model) for _ in range(n_layers))
        self.mlp = nn.ModuleList(_SwiGLU(d_model, d_ff) for _ in range(n_layers))

    def new_cache(self, batch: int, capacity: int) -> dict[str, torch.Tensor | int]:
        shape = (self.n_layers, batch, self.n_heads, capacity, self.d_head)
        return {"k": torch.zeros(shape), "v": torch.zeros(shape), "len": 0}

    @torch.no_grad()
    def step(self, x: torch.Tensor, cache: dict[str, torch.Tensor | int]) -> torch.Tensor:
        """x [B, D] -> y [B, D]; appends this step's keys/values to the cache."""
        batch = x.shape[0]
        t = int(cache["len"])
        for i in range(self.n_layers):
            h = self.norm1[i](x)
            q, k, v = self.qkv[i](h).view(batch, 3, self.n_heads, self.d_head).unbind(1)  # (B, H, Dh) each
            cache["k"][i, :, :, t] = k
            cache["v"][i, :, :, t] = v
            keys, values = cache["k"][i, :, :, : t + 1], cache["v"][i, :, :, : t + 1]  # (B, H, t+1, Dh)
            att = F.scaled_dot_product_attention(q.unsqueeze(2), keys, values)  # (B, H, 1, Dh)
            x = x + self.out[i](att.reshape(batch, self.d_model))
            x = x + self.mlp[i](self.norm2[i](x))
        cache["len"] = t + 1
        return x


# ---------------------------------------------------------------------------------------------------------------------
# b) + c) per-step latency at an early and a late episode step
# ---------------------------------------------------------------------------------------------------------------------


def _latency_at(
    make_runner: Callable[[], Callable[[torch.Tensor], None]], batch: int, d_model: int, points: list[int], timed: int
) -> list[float]:
    """Median ms per step of ``timed`` steps starting at each episode step in ``points``.

    One runner (own state) per point is run step by step from the episode start up to its point; the timed steps of
    all points are then interleaved, so a change of background load on the CPU hits every point alike.
    """
    gen = torch.Generator().manual_seed(0)
    xs = torch.randn(64, batch, d_model, generator=gen)
    runners = [make_runner() for _ in points]
    for runner, point in zip(runners, points):
        for t in range(point):
            runner(xs[t % 64])
    times: list[list[float]] = [[] for _ in points]
    for i in range(timed):
        for j, runner in enumerate(runners):
            x = xs[(points[j] + i) % 64]
            t0 = time.perf_counter()
            runner(x)
            times[j].append(time.perf_counter() - t0)
    return [1e3 * statistics.median(ts) for ts in times]


def _hqlt_runner(mem: torch.nn.Module, batch: int) -> Callable[[torch.Tensor], None]:
    state = [mem.initial_state(batch, "cpu")]

    @torch.no_grad()
    def run(x: torch.Tensor) -> None:
        _, state[0] = mem(x.unsqueeze(1), state[0])  # (B, 1, D): one step

    return run


def _attention_runner(att: FullAttentionStack, batch: int, capacity: int) -> Callable[[torch.Tensor], None]:
    return partial(att.step, cache=att.new_cache(batch, capacity))


def bench_latency(points: list[int], timed: int, batches: list[int]) -> None:
    d_model, n_heads, n_layers, window = 64, 4, 2, 32
    print(
        f"\n(b, c) one-step latency under torch.no_grad, d_model={d_model} heads={n_heads} layers={n_layers}; "
        f"median of {timed} steps starting at each episode step, interleaved (ms)"
    )
    print(f"{'model':<28} {'batch':>5} " + " ".join(f"{'t=' + str(p):>10}" for p in points) + f" {'ratio':>7}")

    def report(name: str, batch: int, ms: list[float]) -> None:
        print(f"{name:<28} {batch:>5} " + " ".join(f"{m:>10.3f}" for m in ms) + f" {ms[-1] / ms[0]:>7.2f}", flush=True)

    for batch in batches:
        name = f"HQLT (window {window})"
        try:
            from memory import build_memory

            mem = build_memory("hqlt", d_model, n_layers=n_layers, n_heads=n_heads, window=window).eval()
            report(name, batch, _latency_at(partial(_hqlt_runner, mem, batch), batch, d_model, points, timed))
        except Exception as exc:  # noqa: BLE001 - the HQLT stack may be missing or broken; still report the baseline
            print(f"{name:<28} {batch:>5}  unavailable: {type(exc).__name__}: {exc}")
        att = FullAttentionStack(d_model, n_heads, n_layers).eval()
        runner = partial(_attention_runner, att, batch, points[-1] + timed + 1)
        report("full-context attention", batch, _latency_at(runner, batch, d_model, points, timed))


# ---------------------------------------------------------------------------------------------------------------------
# d) compiled vs eager rollout step
# ---------------------------------------------------------------------------------------------------------------------


def bench_compiled_step(names: list[str], steps: int, batch: int = 8) -> None:
    from memory import build_memory

    d_model = 32
    print(
        f"\n(d) rollout step under torch.inference_mode, d_model={d_model} heads=2 layers=2 window=16 batch={batch}: "
        f"eager vs compile_rollout(), median of {steps} interleaved steps (ms)"
    )
    print(f"{'memory':<10} {'eager':>8} {'compiled':>9} {'speed-up':>9} {'compile (s)':>12} {'max |diff|':>11}")
    for name in names:
        torch.manual_seed(0)
        eager = build_memory(name, d_model, n_layers=2, n_heads=2, window=16).eval()
        compiled = copy.deepcopy(eager).compile_rollout()
        gen = torch.Generator().manual_seed(1)
        xs = torch.randn(steps, batch, 1, d_model, generator=gen)
        starts = torch.rand(steps, batch, 1, generator=gen) < 0.05
        starts[0] = True
        states = [eager.initial_state(batch), compiled.initial_state(batch)]
        times: list[list[float]] = [[], []]
        diff = 0.0
        with torch.inference_mode():
            t0 = time.perf_counter()
            compiled(xs[0], compiled.initial_state(batch), starts[0])  # the compile
            compile_s = time.perf_counter() - t0
            for i in range(steps):
                ys = []
                for j, mem in enumerate((eager, compiled)):
                    t0 = time.perf_counter()
                    y, states[j] = mem(xs[i], states[j], starts[i])
                    times[j].append(time.perf_counter() - t0)
                    ys.append(y)
                diff = max(diff, (ys[0] - ys[1]).abs().max().item())
        e_ms, c_ms = (1e3 * statistics.median(t) for t in times)
        print(f"{name:<10} {e_ms:>8.3f} {c_ms:>9.3f} {e_ms / c_ms:>8.2f}x {compile_s:>12.1f} {diff:>11.1e}", flush=True)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=" ".join(__doc__.split("\n\n")[0].split()))
    parser.add_argument("--quick", action="store_true", help="short run: T in {128, 512}, late point t=2000, fewer reps")
    parser.add_argument("--threads", type=int, default=2, help="torch intra-op threads (default 2)")
    parser.add_argument("--chunk-sizes", type=int, nargs="+", default=[32, 64, 128], help="chunk sizes to compare in (a)")
    parser.add_argument("--default-chunk", type=int, default=32, help="chunk size whose speed-up is reported first")
    parser.add_argument("--skip-a", action="store_true", help="skip part (a)")
    parser.add_argument("--skip-latency", action="store_true", help="skip parts (b) and (c)")
    parser.add_argument("--skip-compile", action="store_true", help="skip part (d) (torch.compile needs a C++ compiler)")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    load = ", ".join(f"{x:.1f}" for x in os.getloadavg())
    print(
        f"torch {torch.__version__}, {torch.get_num_threads()} threads, {'quick' if args.quick else 'full'} run; "
        f"{os.cpu_count()} CPUs, load average {load} (other load inflates the multi-threaded timings most)"
    )
    if not args.skip_a:
        lengths = [128, 512] if args.quick else [128, 512, 2048]
        bench_delta_rule(lengths, args.chunk_sizes, reps=3 if args.quick else 5, default_chunk=args.default_chunk)
    if not args.skip_latency:
        points = [100, 2_000] if args.quick else [100, 10_000]
        bench_latency(points, timed=100 if args.quick else 200, batches=[1, 8])
    if not args.skip_compile:
        bench_compiled_step(["hqlt"] if args.quick else ["hqlt", "kv", "deltanet"], steps=100 if args.quick else 400)


if __name__ == "__main__":
    main()
