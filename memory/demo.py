"""Tour of the memories: ``python -m memory.demo``.

For each memory: parameter count, one-step latency (the PPO rollout call: batch 8, T = 1), T-step latency
(the training call, forward and forward + backward), and a check that a sequence with episode starts gives
the same output in one T-step call as in T one-step calls.
"""

from __future__ import annotations

import argparse
import time

import torch

from memory import build_memory
from memory.config import BLENDS, MIXERS


def _time(fn, repeats: int) -> float:
    fn()  # warm-up
    t0 = time.perf_counter()
    for _ in range(repeats):
        fn()
    return (time.perf_counter() - t0) / repeats


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--d-model", type=int, default=64)
    parser.add_argument("--window", type=int, default=16)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--steps", type=int, default=64, help="T of the T-step call")
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)

    memories = [("hqlt", dict(blend=b, mixer=m)) for b in BLENDS for m in MIXERS]
    memories += [("hqlt", dict(carry_fw_across_episodes=True))]
    memories += [(name, {}) for name in ("kv", "deltanet", "linear", "lstm", "gru", "none")]
    b, t = args.batch, args.steps
    x = torch.randn(b, t, args.d_model)
    starts = torch.zeros(b, t, dtype=torch.bool)
    starts[:, 0] = True
    starts[0, t // 3] = starts[1, t // 2] = starts[2, t // 2 + 1] = True  # resets inside the sequence
    print(f"d_model={args.d_model} window={args.window} n_layers=2 batch={b} T={t} threads={args.threads} (float32, CPU)")
    print(f"{'memory':<42}{'params':>9}{'1-step ms':>11}{'T-step ms':>11}{'fwd+bwd ms':>12}{'max |T-step - steps|':>22}")
    for name, cfg in memories:
        mem = build_memory(name, d_model=args.d_model, n_layers=2, window=args.window, **cfg).eval()
        n_params = sum(p.numel() for p in mem.parameters())
        with torch.no_grad():
            y, _ = mem(x, None, starts)
            state, ys = mem.initial_state(b), []
            for i in range(t):
                yi, state = mem(x[:, i : i + 1], state, starts[:, i : i + 1])
                ys.append(yi)
            err = (y - torch.cat(ys, 1)).abs().max().item()
            x1, s1 = x[:, :1], mem.initial_state(b)
            one = _time(lambda m=mem, x1=x1, s1=s1: m(x1, s1), 50)
            full = _time(lambda m=mem: m(x, None, starts), 3)
        x_grad = x.clone().requires_grad_(True)
        train = _time(lambda m=mem, xg=x_grad: m(xg, None, starts)[0].square().mean().backward(), 3)
        label = name + ("" if not cfg else " " + ",".join(f"{k}={v}" for k, v in cfg.items()))
        print(f"{label:<42}{n_params:>9,}{one * 1e3:>11.3f}{full * 1e3:>11.2f}{train * 1e3:>12.2f}{err:>22.1e}")


if __name__ == "__main__":
    main()
