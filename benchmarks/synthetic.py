"""The paper's synthetic algorithmic tasks (its Table 2), scaled to a CPU.

Tasks (as defined by Deletang et al. 2023, "Neural Networks and the Chomsky Hierarchy", which the
paper takes from Grazzi et al. 2025):
- parity: a random bit string; the answer is the number of ones modulo 2;
- modular arithmetic without brackets (mod 5): digits in {0..4} alternating with operators
  {+, -, *}, e.g. ``1 + 2 * 3``; the answer is the value (usual precedence: * before + and -) mod 5.

Models read one token per step; a linear head reads the memory's output at the last step.
Train on lengths 3-40, test on lengths 40-256; accuracy is normalised so chance = 0 and perfect = 100.
Windows: S = 8 (S = 16 for delayed-chunk, as in the paper).

    python benchmarks/synthetic.py --quick          # a few minutes
    python benchmarks/synthetic.py                  # the full table (about an hour)
    python benchmarks/synthetic.py --tasks modular --eval-every 500 --json runs.json   # with accuracy curves
    python benchmarks/synthetic.py --plot-curves curves.png runs.json                    # plot those curves
    python benchmarks/synthetic.py --summarise benchmarks/results/synthetic_modular_*.json   # every seed, merged
    python benchmarks/synthetic.py --summarise a.json b.json --plot seeds.png      # and a figure of every seed
    python benchmarks/synthetic.py --tasks modular --pack --batch 512 --device cuda --prefetch   # on a GPU
"""

from __future__ import annotations

import argparse
import json
import math
import multiprocessing
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from memory import build_memory  # noqa: E402
from memory.config import QK_ACTIVATIONS  # noqa: E402
from memory.hqlt import HQLTLayer, ShortConv  # noqa: E402

MODULUS = 5
PLUS, MINUS, TIMES = MODULUS, MODULUS + 1, MODULUS + 2  # operator tokens follow the digits


def parity_batch(rng: np.random.Generator, batch: int, length: int) -> tuple[np.ndarray, np.ndarray]:
    """Bit strings [batch, length] and their parity [batch]."""
    bits = rng.integers(0, 2, size=(batch, length))
    return bits, bits.sum(axis=1) % 2


def evaluate_expression(tokens: np.ndarray) -> int:
    """Value mod 5 of ``d op d op d ...`` with * binding tighter than + and -."""
    total, term, sign = 0, int(tokens[0]), 1
    for op, digit in zip(tokens[1::2], tokens[2::2]):
        if op == TIMES:
            term = term * int(digit) % MODULUS
        else:
            total = (total + sign * term) % MODULUS
            sign, term = (1 if op == PLUS else -1), int(digit)
    return (total + sign * term) % MODULUS


def modular_batch(rng: np.random.Generator, batch: int, length: int) -> tuple[np.ndarray, np.ndarray]:
    """Expressions of odd length (even lengths are shortened by one) and their values mod 5."""
    length = length if length % 2 == 1 else length - 1
    tokens = np.empty((batch, length), dtype=np.int64)
    tokens[:, ::2] = rng.integers(0, MODULUS, size=(batch, length // 2 + 1))
    tokens[:, 1::2] = rng.integers(PLUS, TIMES + 1, size=(batch, length // 2))
    return tokens, np.array([evaluate_expression(row) for row in tokens])


def _check_packing(min_len: int, max_len: int, row_len: int) -> None:
    if not 1 <= min_len <= max_len <= row_len:
        raise ValueError(f"packing needs 1 <= min_len <= max_len <= row_len, got {min_len}, {max_len}, {row_len}")


def packed_batch(
    sample, rng: np.random.Generator, rows: int, row_len: int, min_len: int, max_len: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Sequences of independently drawn lengths in [min_len, max_len], packed back to back into ``rows`` rows of
    ``row_len`` tokens, so that one batch mixes lengths. Each sequence begins an episode: the memory resets there, so
    sequences never see each other (the memory contract makes this equal to running them one by one). A row's unused
    space goes to its front, as an episode of padding whose output is never read.

    Returns tokens [rows, row_len], episode starts [rows, row_len] bool, and per sequence its row, its last column
    and its label.
    """
    _check_packing(min_len, max_len, row_len)
    tokens = np.zeros((rows, row_len), dtype=np.int64)
    starts = np.zeros((rows, row_len), dtype=bool)
    starts[:, 0] = True
    end_rows, end_cols, labels = [], [], []
    for r in range(rows):
        seqs, free = [], row_len
        while free >= min_len:
            n = min(int(rng.integers(min_len, max_len + 1)), free)  # the last one of a row may be cut to fit
            x, y = sample(rng, 1, n)  # modular: an even n comes back one shorter
            seqs.append((x[0], int(y[0])))
            free -= x.shape[1]
        col = free
        for seq, label in seqs:
            tokens[r, col : col + len(seq)] = seq
            starts[r, col] = True
            col += len(seq)
            end_rows.append(r)
            end_cols.append(col - 1)
            labels.append(label)
    return tokens, starts, np.array(end_rows), np.array(end_cols), np.array(labels)


def _parity_fill(rng: np.random.Generator, offset: np.ndarray) -> np.ndarray:
    """Tokens of packed parity sequences: random bits (``offset``: each position's offset in its sequence)."""
    return rng.integers(0, 2, size=offset.shape)


def _parity_values(tokens: np.ndarray, offset: np.ndarray) -> np.ndarray:
    """The parity of each sequence's bits so far, at every position of packed rows."""
    values = np.zeros_like(tokens)
    for c in range(tokens.shape[1]):
        before = values[:, c - 1] if c else 0
        values[:, c] = np.where(offset[:, c] == 0, tokens[:, c], (before + tokens[:, c]) % 2)
    return values


def _modular_fill(rng: np.random.Generator, offset: np.ndarray) -> np.ndarray:
    """Tokens of packed expressions: digits at even offsets in their sequence, operators at odd ones."""
    digits = rng.integers(0, MODULUS, size=offset.shape)
    ops = rng.integers(PLUS, TIMES + 1, size=offset.shape)
    return np.where(offset % 2 == 0, digits, ops)


def _modular_values(tokens: np.ndarray, offset: np.ndarray) -> np.ndarray:
    """The value mod 5 of each expression so far (``evaluate_expression`` of its prefix), at the digits of packed
    rows, all rows at once: the running sum of finished terms, the sign of the open term and the open term."""
    rows, cols = tokens.shape
    total, sign, term, op = (np.zeros(rows, dtype=np.int64) for _ in range(4))
    values = np.zeros_like(tokens)
    for c in range(cols):
        tok, first, digit = tokens[:, c], offset[:, c] == 0, offset[:, c] % 2 == 0
        times = digit & ~first & (op == TIMES)
        close = digit & ~first & (op != TIMES)  # + or -: the open term is finished, a new one opens
        total = np.where(first, 0, np.where(close, (total + sign * term) % MODULUS, total))
        sign = np.where(first, 1, np.where(close, np.where(op == PLUS, 1, -1), sign))
        term = np.where(first | close, tok, np.where(times, term * tok % MODULUS, term))
        op = np.where(digit, op, tok)
        values[:, c] = (total + sign * term) % MODULUS
    return values


@dataclass(frozen=True)
class Task:
    name: str
    vocab: int
    classes: int
    sample: object
    odd_lengths: bool  # sequences have odd lengths (an even length is shortened by one)
    fill: object  # (rng, offsets [R, C]) -> tokens [R, C] of packed sequences
    values: object  # (tokens, offsets) -> the answer of each sequence's prefix at every position


TASKS = {
    "parity": Task("parity", 2, 2, parity_batch, False, _parity_fill, _parity_values),
    "modular": Task("modular", MODULUS + 3, MODULUS, modular_batch, True, _modular_fill, _modular_values),
}


def packed_batch_vectorised(
    task: Task, rng: np.random.Generator, rows: int, row_len: int, min_len: int, max_len: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """What ``packed_batch`` returns, with the same layout and length rule (lengths drawn in [min_len, max_len], the
    last sequence of a row cut to fit, padding in front), drawn for the whole batch at once with numpy: several
    times faster, but other batches than ``packed_batch`` draws from the same generator."""
    _check_packing(min_len, max_len, row_len)
    slots = row_len // min_len + 1
    drawn = rng.integers(min_len, max_len + 1, size=(rows, slots))
    lengths = np.zeros((rows, slots), dtype=np.int64)
    free = np.full(rows, row_len)
    for j in range(slots):
        n = np.minimum(drawn[:, j], free)
        if task.odd_lengths:
            n = n - (n % 2 == 0)
        lengths[:, j] = np.where(free >= min_len, n, 0)
        free -= lengths[:, j]
    begins = free[:, None] + np.cumsum(lengths, axis=1) - lengths  # [rows, slots]
    used = lengths > 0
    seq_rows = np.nonzero(used)[0]  # row-major: the sequences of row 0 first, in order, as packed_batch lists them
    starts = np.zeros((rows, row_len), dtype=bool)
    starts[:, 0] = True
    starts[seq_rows, begins[used]] = True
    offset = np.zeros((rows, row_len), dtype=np.int64)  # each position's offset in its sequence (or padding)
    for c in range(1, row_len):
        offset[:, c] = np.where(starts[:, c], 0, offset[:, c - 1] + 1)
    padding = np.arange(row_len)[None, :] < free[:, None]
    tokens = np.where(padding, 0, task.fill(rng, offset))
    end_cols = (begins + lengths - 1)[used]
    labels = task.values(tokens, offset)[seq_rows, end_cols]
    return tokens, starts, seq_rows, end_cols, labels


# (label, memory name, memory fields)
MODELS = [
    ("KV-only (S=8)", "kv", dict(window=8)),
    ("DeltaNet", "deltanet", dict()),
    ("HQLT synchronous", "hqlt", dict(blend="synchronous", window=8)),
    ("HQLT delayed-stream", "hqlt", dict(blend="delayed_stream", window=8)),
    ("HQLT delayed-chunk (S=16)", "hqlt", dict(blend="delayed_chunk", window=16)),
    ("Linear attention (sum rule)", "linear", dict()),
    ("HQLT sync, sum-rule FW", "hqlt_sum", dict(blend="synchronous", window=8)),
]
# run only when --models names them: the paper's table is MODELS
EXTRA_MODELS = [
    # the blend started leaning on the fast weights: vector gate bias 2, an FW share of sigmoid(2) = 0.88 at init
    ("HQLT sync, FW-lean start", "hqlt", dict(blend="synchronous", window=8, mixer_bias=2.0)),
]
ALL_MODELS = MODELS + EXTRA_MODELS


def select_models(names: list[str] | None) -> list[tuple[str, str, dict]]:
    """``--models``: the models whose label contains any of ``names`` (case-insensitive), extra models included;
    without names, the paper's table (``MODELS``)."""
    if not names:
        return list(MODELS)
    return [m for m in ALL_MODELS if any(n.lower() in m[0].lower() for n in names)]


class SequenceClassifier(nn.Module):
    """Token embedding -> memory -> linear head on the last step."""

    def __init__(self, task: Task, memory_name: str, d_model: int, n_layers: int, n_heads: int, **fields: object) -> None:
        super().__init__()
        self.embed = nn.Embedding(task.vocab, d_model)
        self.memory = build_memory(memory_name, d_model, n_layers=n_layers, n_heads=n_heads, **fields)
        self.head = nn.Linear(d_model, task.classes)

    def forward(
        self, tokens: torch.Tensor, starts: torch.Tensor | None = None, ends: tuple[torch.Tensor, torch.Tensor] | None = None
    ) -> torch.Tensor:
        """tokens [B, T] -> logits [B, classes] at the last step; with packed sequences (``starts`` [B, T] bool,
        ``ends`` = (rows, cols) of each sequence's last token) -> logits [N, classes], one per sequence."""
        y, _ = self.memory(self.embed(tokens), None, starts)  # (B, T, D)
        return self.head(y[:, -1] if ends is None else y[ends])


def init_normal(model: nn.Module, std: float) -> None:
    """Re-initialise as the paper's training script does (its ``initializer_range``): every linear, embedding and
    short-convolution weight ~ N(0, std), every bias 0; norms and the memories' own vectors keep their values, and an
    HQLT layer's mixer keeps its configured lean (``mixer_bias``) on top of the zeroed bias."""
    for module in model.modules():
        if isinstance(module, (nn.Linear, nn.Embedding, ShortConv)):
            nn.init.normal_(module.weight, 0.0, std)
            if getattr(module, "bias", None) is not None:
                nn.init.zeros_(module.bias)
    for module in model.modules():
        if isinstance(module, HQLTLayer):
            module.lean_mixer(module.config.mixer_bias)


def warmup_steps(text: str) -> int | float:
    """``--warmup``: a whole number of steps (``2000``), or a share of ``--steps`` (``10%``, returned as 0.1)."""
    try:
        if text.endswith("%"):
            share = float(text[:-1]) / 100
            if not 0 < share <= 1:
                raise ValueError
            return share
        return int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"'{text}' is neither a number of steps (e.g. 2000) nor a share of --steps above 0% and at most 100% "
            "(e.g. 10%)"
        ) from None


def lr_factor(step: int, total: int, warmup: int, final: float = 1e-3) -> float:
    """The ``warmup-cosine`` schedule: linear warm-up over ``warmup`` steps, then cosine annealing from 1 to ``final``
    (a fraction of the peak) at step ``total``."""
    if step < warmup:
        return (step + 1) / warmup
    progress = min(1.0, (step - warmup) / max(1, total - warmup))
    return final + (1.0 - final) * 0.5 * (1.0 + math.cos(math.pi * progress))


def make_schedule(opt: torch.optim.Optimizer, args: argparse.Namespace) -> torch.optim.lr_scheduler.LRScheduler:
    if getattr(args, "schedule", "onecycle") == "warmup-cosine":
        warmup = min(args.warmup, args.steps)
        return torch.optim.lr_scheduler.LambdaLR(opt, lambda step: lr_factor(step, args.steps, warmup))
    return torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=args.lr, total_steps=args.steps, pct_start=0.1)


def normalised(acc: float, classes: int) -> float:
    chance = 1.0 / classes
    return 100.0 * (acc - chance) / (1.0 - chance)


def _train_batches(task: Task, args: argparse.Namespace, seed: int):
    """The training batches of a run, in order: (tokens, starts, end rows, end cols, labels) as numpy arrays; starts
    and ends are None without ``--pack``. They depend on the seed only."""
    rng = np.random.default_rng(seed)
    for _ in range(args.steps):
        if getattr(args, "pack", False):  # rows of train_max tokens, each holding sequences of mixed lengths
            if getattr(args, "sampler", "sequential") == "vectorised":
                yield packed_batch_vectorised(task, rng, args.batch, args.train_max, args.train_min, args.train_max)
            else:
                yield packed_batch(task.sample, rng, args.batch, args.train_max, args.train_min, args.train_max)
        else:  # one length per batch
            length = int(rng.integers(args.train_min, args.train_max + 1))
            x, y = task.sample(rng, args.batch, length)
            yield x, None, None, None, y


def _fill_queue(queue, task: Task, args: argparse.Namespace, seed: int) -> None:
    for batch in _train_batches(task, args, seed):
        queue.put(batch)


def _prefetched(task: Task, args: argparse.Namespace, seed: int):
    """The same batches as ``_train_batches``, made ahead in a child process (so a GPU run is not held up by Python
    building the next batch). The child is forked here, so call this before the run touches CUDA."""
    ctx = multiprocessing.get_context("fork")
    queue = ctx.Queue(maxsize=16)
    maker = ctx.Process(target=_fill_queue, args=(queue, task, args, seed), daemon=True)
    maker.start()

    def batches():
        try:
            for _ in range(args.steps):
                yield queue.get()
        finally:
            maker.terminate()
            maker.join()

    return batches()


def train_and_test(task: Task, memory_name: str, fields: dict, args: argparse.Namespace, seed: int) -> dict:
    torch.manual_seed(seed)
    device = torch.device(getattr(args, "device", "cpu"))
    if memory_name == "hqlt_sum":  # HQLT with the sum rule in place of the delta rule
        memory_name, fields = "hqlt", dict(fields, fw_rule="sum")
    if getattr(args, "short_conv", 0):
        fields = dict(fields, short_conv=args.short_conv)
    if getattr(args, "qk_activation", "silu") != "silu":
        fields = dict(fields, qk_activation=args.qk_activation)
    batches = _prefetched(task, args, seed) if getattr(args, "prefetch", False) else _train_batches(task, args, seed)
    model = SequenceClassifier(task, memory_name, args.d_model, args.n_layers, args.n_heads, **fields).to(device)
    if getattr(args, "compile", False):  # training calls compiled; the evaluations (no gradients) stay eager
        model.memory.compile_training()
    if getattr(args, "init_std", None) is not None:
        init_normal(model, args.init_std)
    opt = torch.optim.AdamW(model.parameters(), lr=args.lr, weight_decay=getattr(args, "weight_decay", 0.0))
    sched = make_schedule(opt, args)
    loss_fn = nn.CrossEntropyLoss()
    start = time.perf_counter()
    eval_every = getattr(args, "eval_every", 0)
    curve: list[dict] = []
    for step, (x, starts, end_r, end_c, y) in enumerate(batches, start=1):
        x, y = torch.as_tensor(x, device=device), torch.as_tensor(y, device=device)
        if starts is None:
            logits = model(x)
        else:
            ends = (torch.as_tensor(end_r, device=device), torch.as_tensor(end_c, device=device))
            logits = model(x, torch.as_tensor(starts, device=device), ends)
        loss = loss_fn(logits, y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        sched.step()
        if step == 1:  # the first step (with --compile, the compilation) apart
            if device.type == "cuda":
                torch.cuda.synchronize(device)
            first_step = time.perf_counter() - start
        if eval_every and step % eval_every == 0 and step < args.steps:
            eval_start = time.perf_counter()
            point = dict(step=step, **_evaluate(model, task, args, seed))
            point.pop("test_by_length")
            curve.append(point)
            print(f"  seed {seed} step {step}: train {point['train_acc']:.1f} test {point['test_acc']:.1f}", flush=True)
            start += time.perf_counter() - eval_start  # evaluation time is not training time
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    train_time = time.perf_counter() - start
    result = dict(_evaluate(model, task, args, seed), seconds=train_time, first_step_seconds=first_step)
    if eval_every:
        result["curve"] = curve + [{"step": args.steps, "train_acc": result["train_acc"], "test_acc": result["test_acc"]}]
    return result


def _evaluate(model: nn.Module, task: Task, args: argparse.Namespace, seed: int) -> dict:
    """Normalised accuracy on the training lengths, on the test lengths, and on each test length.

    The evaluation sequences depend on the seed only, so every evaluation of a run sees the same ones."""

    def correct_counts(lengths: list[int]) -> list[tuple[int, int]]:
        eval_rng = np.random.default_rng(10_000 + seed)
        counts = []
        device = next(model.parameters()).device
        with torch.no_grad():
            for length in lengths:
                x, y = task.sample(eval_rng, args.eval_batch, length)
                pred = model(torch.as_tensor(x, device=device)).argmax(-1).cpu().numpy()
                counts.append((int((pred == y).sum()), len(y)))
        return counts

    def pooled(counts: list[tuple[int, int]]) -> float:
        return normalised(sum(c for c, _ in counts) / sum(n for _, n in counts), task.classes)

    test_lengths = list(range(args.test_min, args.test_max + 1, args.test_stride))
    test_counts = correct_counts(test_lengths)
    return {
        "train_acc": pooled(correct_counts(list(range(args.train_min, args.train_max + 1, 4)))),
        "test_acc": pooled(test_counts),
        "test_by_length": {length: normalised(c / n, task.classes) for length, (c, n) in zip(test_lengths, test_counts)},
    }


def _run_job(job: tuple) -> dict:
    task_name, name, fields, args, seed = job
    torch.set_num_threads(args.threads)
    return train_and_test(TASKS[task_name], name, fields, args, seed)


def _pyplot():
    """matplotlib's pyplot on the file-only backend (imported late: only the plotting options need it)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _save(fig, path: Path) -> None:
    import matplotlib.pyplot as plt

    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    plt.close(fig)


def plot_table(results: dict, tasks: list[str], labels: list[str], path: Path) -> None:
    """Grouped bars: one group per model, one bar per task."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(10, 4))
    width = 0.8 / len(tasks)
    for i, task in enumerate(tasks):
        values = [results[label][task]["best"]["test_acc"] for label in labels]
        ax.bar(np.arange(len(labels)) + i * width, values, width, label=task)
    ax.set_xticks(np.arange(len(labels)) + width * (len(tasks) - 1) / 2)
    ax.set_xticklabels(labels, rotation=20, ha="right", fontsize=8)
    ax.axhline(0, color="black", linewidth=0.8)
    ax.set_ylabel("normalised test accuracy (chance = 0)")
    ax.set_ylim(-10, 105)
    ax.legend()
    ax.set_title("Length generalisation (train 3-40, test 40-256)")
    _save(fig, path)


# options that shape the model, named in a --plot-curves legend where a run departs from their defaults
SHAPE_OPTIONS = {"d_model": "d_model {}", "n_layers": "{} layers", "n_heads": "{} heads", "qk_activation": "q/k {}"}


def option_defaults() -> dict[str, str]:
    """Every option's default as a record stores it (a string): what a run used for an option its record predates."""
    return {k: str(v) for k, v in vars(build_parser().parse_args([])).items()}


def curve_label(args: dict, model: str, task: str, seed: int) -> str:
    """Legend entry of one run in --plot-curves: model, task, seed, steps, plus every option of ``SHAPE_OPTIONS``
    that is not its default (runs that differ only in one would otherwise share a label)."""
    defaults = option_defaults()
    name = f"{model}, {task}, seed {seed}, {args['steps']} steps"
    extras = [form.format(args[key]) for key, form in SHAPE_OPTIONS.items()
              if str(args.get(key, defaults[key])) != defaults[key]]
    return ", ".join([name, *extras])


# options that do not change what a run learns or how it is scored: runs that differ only in these are merged
NOT_SETTINGS = frozenset({
    "quick", "tasks", "models", "seeds", "first_seed", "eval_every", "device", "prefetch", "compile", "threads",
    "workers", "plot", "json", "plot_curves", "summarise", "compare",
})


def _read_record(json_path: Path, option: str) -> tuple[dict, dict]:
    try:
        record = json.loads(Path(json_path).read_text())
        args, results = dict(record["args"]), dict(record["results"])
    except (ValueError, KeyError, TypeError) as err:
        raise SystemExit(f"{option}: {json_path} is not a JSON file written by synthetic.py --json ({err!r})") from None
    return args, results


def plot_curves(json_paths: list[Path], path: Path) -> None:
    """From runs made with --eval-every: test accuracy against training steps, and the final accuracy per test length."""
    plt = _pyplot()
    fig, (ax_steps, ax_len) = plt.subplots(1, 2, figsize=(11, 4))
    plotted = 0
    for json_path in json_paths:
        args, results = _read_record(json_path, "--plot-curves")
        first_seed = int(args.get("first_seed", 0))
        for label, by_task in results.items():
            for task_name, entry in by_task.items():
                for i, run in enumerate(entry["runs"]):
                    if "curve" not in run:
                        continue
                    name = curve_label(args, label, task_name, first_seed + i)
                    line = ax_steps.plot([p["step"] for p in run["curve"]], [p["test_acc"] for p in run["curve"]],
                                         marker="o", label=name)[0]
                    lengths = sorted(run["test_by_length"], key=int)
                    ax_len.plot([int(n) for n in lengths], [run["test_by_length"][n] for n in lengths],
                                color=line.get_color(), label=name)
                    plotted += 1
    if not plotted:
        raise SystemExit(f"--plot-curves: no run in {[str(p) for p in json_paths]} has a curve; "
                         "make the runs with --eval-every N")
    ax_steps.set_xlabel("training step")
    ax_steps.set_ylabel("normalised accuracy, test lengths (chance = 0)")
    ax_steps.set_title("Extrapolation during training")
    ax_len.set_xlabel("test length")
    ax_len.set_ylabel("normalised accuracy at the end (chance = 0)")
    ax_len.set_title("By test length")
    for ax in (ax_steps, ax_len):
        ax.axhline(0, color="black", linewidth=0.8)
        ax.set_ylim(-10, 105)
        ax.grid(alpha=0.3)
    ax_steps.legend(fontsize=7)
    _save(fig, path)


PAPER_PAIR = ("HQLT synchronous", "DeltaNet")
"""The two models the paper's Table 2 puts level (97.0 and 97.1 on modular arithmetic): --summarise compares them."""


def summarise(json_paths: list[Path], compare: tuple[str, str] = PAPER_PAIR) -> dict:
    """Merge the runs of several synthetic.py JSON files.

    Runs are grouped by task, model and training settings (every option except those in ``NOT_SETTINGS``; an option
    a record predates takes its default, which is what that run used). Returns a dict with
    - ``groups``: per group its seeds with train and test accuracy, best, mean and std;
    - ``tests``: for the two models named in ``compare`` (labels; by default the paper's pair), per task and settings
      where each has at least two seeds, the exact two-sided permutation p-value of their test accuracies;
    - ``paired``: over every task, settings and seed both ran, how often each is higher, and the sign test's p."""
    from _rl import permutation_p, sign_test_p

    defaults = {k: v for k, v in option_defaults().items() if k not in NOT_SETTINGS}
    groups: dict[tuple, dict] = {}
    for json_path in json_paths:
        args, results = _read_record(json_path, "--summarise")
        settings = {k: str(args.get(k, default)) for k, default in defaults.items()}
        first_seed = int(args.get("first_seed", 0))
        for label, by_task in results.items():
            for task_name, entry in by_task.items():
                key = (task_name, label, tuple(sorted(settings.items())))
                group = groups.setdefault(key, {"task": task_name, "model": label, "settings": settings, "runs": {}})
                for i, run in enumerate(entry["runs"]):
                    seed = first_seed + i
                    if seed in group["runs"]:
                        raise SystemExit(
                            f"--summarise: seed {seed} of {label} on {task_name} with the same settings is in both "
                            f"{group['runs'][seed]['file']} and {json_path}; pass only one of them"
                        )
                    try:
                        accuracies = {k: float(run[k]) for k in ("train_acc", "test_acc")}
                    except (KeyError, TypeError, ValueError) as err:
                        raise SystemExit(f"--summarise: run {i} of {label} on {task_name} in {json_path} has no "
                                         f"train and test accuracy ({err!r}); is it a synthetic.py --json file?") from None
                    group["runs"][seed] = {"file": str(json_path), **accuracies}
    out_groups = []
    for group in groups.values():
        tests = [r["test_acc"] for r in group["runs"].values()]
        out_groups.append({
            **group,
            "runs": dict(sorted(group["runs"].items())),
            "best": max(tests), "mean": float(np.mean(tests)), "std": float(np.std(tests)),
        })
    # settings that differ between the groups of a task name the groups in the table
    for group in out_groups:
        same_task = [g["settings"] for g in out_groups if g["task"] == group["task"]]
        group["differs"] = {k: v for k, v in group["settings"].items() if any(s[k] != v for s in same_task)}
    tests_out, pairs = [], []
    for a in (g for g in out_groups if g["model"] == compare[0]):
        for b in (g for g in out_groups if g["model"] == compare[1]):
            if a["task"] != b["task"] or a["settings"] != b["settings"]:
                continue
            # every seed both ran, for the sign test over all matched runs
            pairs += [(a["runs"][s]["test_acc"], b["runs"][s]["test_acc"]) for s in a["runs"] if s in b["runs"]]
            if min(len(a["runs"]), len(b["runs"])) < 2:
                continue
            xa = [r["test_acc"] for r in a["runs"].values()]
            xb = [r["test_acc"] for r in b["runs"].values()]
            tests_out.append({"task": a["task"], "a": a["model"], "b": b["model"], "differs": a["differs"],
                              "mean_a": float(np.mean(xa)), "mean_b": float(np.mean(xb)),
                              "p_two_sided": permutation_p(xa, xb, alternative="two-sided")})
    wins, losses = sum(x > y for x, y in pairs), sum(x < y for x, y in pairs)
    sign = {"a": compare[0], "b": compare[1], "pairs": len(pairs), "a_higher": wins, "b_higher": losses,
            "p_two_sided": sign_test_p(wins, losses)}
    return {"groups": out_groups, "tests": tests_out, "paired": sign}


def _settings_letters(groups: list[dict]) -> dict[str, str]:
    """The settings of one task's summary groups named A, B, ... in order of first appearance, keyed by the options
    in which they differ (as JSON)."""
    letters: dict[str, str] = {}
    for g in groups:
        letters.setdefault(json.dumps(g["differs"], sort_keys=True), chr(ord("A") + len(letters)))
    return letters


def _letter(letters: dict[str, str], group: dict) -> str:
    return letters[json.dumps(group["differs"], sort_keys=True)]


def format_summary(summary: dict) -> str:
    """Markdown: per task, a table with one row per model and settings (settings named by a letter, listed under
    the table by the options in which they differ) and the permutation tests."""
    lines = []
    for task in dict.fromkeys(g["task"] for g in summary["groups"]):
        groups = [g for g in summary["groups"] if g["task"] == task]
        letters = _settings_letters(groups)
        letter = {id(g): _letter(letters, g) for g in groups}
        lines += [f"\n{task}: normalised accuracy (chance = 0) on the test lengths, every seed",
                  "| settings | model | seeds | test per seed | best | mean ± std | train (mean) |",
                  "|---|---|---|---|---|---|---|"]
        for g in sorted(groups, key=lambda g: (letter[id(g)], g["model"])):
            runs = g["runs"]
            per_seed = " / ".join(f"{r['test_acc']:.1f}" for r in runs.values())
            train = np.mean([r["train_acc"] for r in runs.values()])
            lines.append(f"| {letter[id(g)]} | {g['model']} | {', '.join(map(str, runs))} | {per_seed} | "
                         f"{g['best']:.1f} | {g['mean']:.1f} ± {g['std']:.1f} | {train:.1f} |")
        if len(letters) > 1:
            lines.append("\nsettings (where they differ):")
            lines += [f"- {name}: " + " ".join(f"{k}={v}" for k, v in json.loads(key).items())
                      for key, name in letters.items()]
        task_tests = [t for t in summary["tests"] if t["task"] == task]
        if task_tests:
            lines.append("\nexact two-sided permutation test of the test accuracies over seeds (same settings):")
        for t in task_tests:
            name = _letter(letters, t)
            lines.append(f"- {name}: {t['a']} {t['mean_a']:.1f} vs {t['b']} {t['mean_b']:.1f}, "
                         f"p = {t['p_two_sided']:.3f}")
    sign = summary.get("paired")
    if sign and sign["pairs"]:
        lines.append(f"\npaired by task, settings and seed ({sign['pairs']} pairs): {sign['a']} higher in "
                     f"{sign['a_higher']}, {sign['b']} in {sign['b_higher']}; exact two-sided sign test "
                     f"p = {sign['p_two_sided']:.3f}")
    return "\n".join(lines).lstrip("\n")


def plot_summary(summary: dict, path: Path) -> list[dict]:
    """One panel per task of a --summarise: per model and settings, a bar at the best seed (the paper's measure),
    a dot for every seed and a line at the mean. Returns what it drew, panel by panel."""
    plt = _pyplot()
    tasks = list(dict.fromkeys(g["task"] for g in summary["groups"]))
    order = {label: i for i, (label, _, _) in enumerate(ALL_MODELS)}
    fig, axes = plt.subplots(1, len(tasks), figsize=(5.5 * len(tasks), 4.5), squeeze=False)
    drawn = []
    for ax, task in zip(axes[0], tasks):
        groups = [g for g in summary["groups"] if g["task"] == task]
        letters = _settings_letters(groups)
        groups.sort(key=lambda g: (_letter(letters, g), order.get(g["model"], len(order)), g["model"]))
        names = [g["model"] + (f" [{_letter(letters, g)}]" if len(letters) > 1 else "") for g in groups]
        for x, (name, g) in enumerate(zip(names, groups)):
            tests = [r["test_acc"] for r in g["runs"].values()]
            ax.bar(x, g["best"], 0.7, color="tab:blue", alpha=0.35, label="best seed" if x == 0 else None)
            ax.plot([x] * len(tests), tests, "o", color="black", markersize=3, label="each seed" if x == 0 else None)
            ax.plot([x - 0.3, x + 0.3], [g["mean"]] * 2, color="tab:red", label="mean" if x == 0 else None)
            drawn.append({"task": task, "name": name, "best": g["best"], "mean": g["mean"], "seeds": list(g["runs"])})
        ax.set_xticks(range(len(groups)))
        ax.set_xticklabels([f"{n}\n({len(g['runs'])} seeds)" for n, g in zip(names, groups)],
                           rotation=30, ha="right", fontsize=7)
        ax.axhline(0, color="black", linewidth=0.8)
        ax.set_ylim(-10, 105)
        ax.set_ylabel("normalised test accuracy (chance = 0)")
        ranges = {"train {train_min}-{train_max}, test {test_min}-{test_max}".format(**g["settings"]) for g in groups}
        ax.set_title(f"{task}: {ranges.pop()}" if len(ranges) == 1 else task)
        ax.legend(fontsize=7)
        if len(letters) > 1:
            ax.text(0.01, 0.98, "\n".join(f"{v}: " + " ".join(f"{a}={b}" for a, b in json.loads(k).items())
                                          for k, v in letters.items()),
                    transform=ax.transAxes, va="top", fontsize=6)
    _save(fig, path)
    return drawn


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="short run: fewer steps, parity only, 1 seed")
    parser.add_argument("--tasks", nargs="+", default=None, choices=sorted(TASKS), help="tasks to run")
    parser.add_argument("--models", nargs="+", default=None,
                        help="labels (substrings) of the models to run; default: the paper's table; "
                        "'HQLT sync, FW-lean start' (mixer_bias 2) runs only when named")
    parser.add_argument("--seeds", type=int, default=None, help="seeds per model (the best is reported, as in the paper)")
    parser.add_argument("--first-seed", type=int, default=0, help="seeds run are first-seed, first-seed + 1, ...")
    parser.add_argument("--steps", type=int, default=None, help="training steps per model")
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--eval-batch", type=int, default=64)
    parser.add_argument("--lr", type=float, default=3e-3)
    parser.add_argument("--d-model", type=int, default=64)
    parser.add_argument("--n-layers", type=int, default=2)
    parser.add_argument("--n-heads", type=int, default=4)
    parser.add_argument("--train-min", type=int, default=3)
    parser.add_argument("--train-max", type=int, default=40)
    parser.add_argument("--test-min", type=int, default=40)
    parser.add_argument("--test-max", type=int, default=256)
    parser.add_argument("--test-stride", type=int, default=None)
    parser.add_argument(
        "--short-conv", type=int, default=0, help="kernel of the short q/k/v convolutions of every model (0: none)"
    )
    parser.add_argument(
        "--qk-activation",
        choices=QK_ACTIVATIONS,
        default="silu",
        help="feature map of the fast weights' queries and keys before L2 normalisation (identity: the paper's "
        "configs for these tasks)",
    )
    parser.add_argument("--weight-decay", type=float, default=0.0, help="AdamW weight decay, on every parameter")
    parser.add_argument(
        "--init-std",
        type=float,
        default=None,
        help="re-initialise linear, embedding and short-convolution weights ~ N(0, std), biases 0 (default: torch's)",
    )
    parser.add_argument(
        "--schedule",
        choices=["onecycle", "warmup-cosine"],
        default="onecycle",
        help="learning rate: one-cycle (cosine up over 10%% of the steps, then down), or linear warm-up over "
        "--warmup steps, then cosine down to 1e-3 of --lr (the paper's training script)",
    )
    parser.add_argument(
        "--warmup",
        type=warmup_steps,
        default=2000,
        help="warm-up of --schedule warmup-cosine: a number of steps, or a share of --steps such as 10%% (the paper's "
        "2,000 of 20,000)",
    )
    parser.add_argument(
        "--pack",
        action="store_true",
        help="train on rows of train-max tokens packing sequences of mixed lengths (--batch rows per step, each "
        "sequence its own episode) instead of --batch sequences of one length per step",
    )
    parser.add_argument(
        "--sampler",
        choices=["sequential", "vectorised"],
        default="sequential",
        help="with --pack: draw sequences one at a time (sequential: the batches of every run recorded before "
        "2026-11-27) or the whole batch at once with numpy (vectorised: several times faster, other batches)",
    )
    parser.add_argument("--eval-every", type=int, default=0,
                        help="also evaluate every N training steps and record the curve (0: at the end only)")
    parser.add_argument("--device", default="cpu", help="torch device of the runs (cpu, cuda, cuda:1, ...)")
    parser.add_argument("--prefetch", action="store_true",
                        help="make the training batches ahead in a child process per run (the same batches)")
    parser.add_argument("--compile", action="store_true",
                        help="torch.compile the memory's training calls (compiles at the first step, counted in the "
                        "run's time); with --pack every step has one input shape, without it each new length compiles")
    parser.add_argument("--threads", type=int, default=1, help="torch threads per run")
    parser.add_argument("--workers", type=int, default=1, help="runs in parallel (processes)")
    parser.add_argument("--plot", type=Path, default=None,
                        help="write a bar chart of the table to this PNG (with --summarise: of the merged runs, "
                        "every seed shown)")
    parser.add_argument("--json", type=Path, default=None, help="write every figure to this JSON file")
    parser.add_argument("--plot-curves", nargs="+", type=Path, default=None, metavar=("PNG", "JSON"),
                        help="plot the curves of runs made with --eval-every from these JSON files to PNG, and exit")
    parser.add_argument("--summarise", nargs="+", type=Path, default=None, metavar="JSON",
                        help="merge the runs of these JSON files by model and training settings, print every seed, "
                        "best, mean and a permutation test between two models (--compare), and exit")
    parser.add_argument("--compare", nargs=2, default=list(PAPER_PAIR), metavar="MODEL",
                        help="with --summarise: the two models whose test accuracies are compared over seeds")
    return parser


def main(argv: list[str] | None = None) -> dict:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.summarise:
        missing = [str(p) for p in args.summarise if not p.is_file()]
        if missing:
            parser.error(f"--summarise: no such JSON file: {', '.join(missing)}")
        labels = [label for label, _, _ in ALL_MODELS]
        unknown = [m for m in args.compare if m not in labels]
        if unknown:
            parser.error(f"--compare: {unknown} not a model label; use two of {labels}")
        summary = summarise(args.summarise, tuple(args.compare))
        print(format_summary(summary))
        if args.plot:
            summary["plotted"] = plot_summary(summary, args.plot)
        return summary
    if args.plot_curves:
        if len(args.plot_curves) < 2:
            parser.error("--plot-curves needs the PNG to write and at least one JSON file of runs")
        missing = [str(p) for p in args.plot_curves[1:] if not p.is_file()]
        if missing:
            parser.error(f"--plot-curves: no such JSON file: {', '.join(missing)}")
        plot_curves(args.plot_curves[1:], args.plot_curves[0])
        return {}
    if not 1 <= args.train_min <= args.train_max:
        parser.error(f"--train-min ({args.train_min}) must be at least 1 and at most --train-max ({args.train_max})")
    if args.sampler != "sequential" and not args.pack:
        parser.error(f"--sampler {args.sampler} draws packed rows: add --pack, or leave --sampler out")
    if isinstance(args.warmup, float):  # a share of the steps: resolved here, so the JSON keeps the steps it ran
        args.warmup = max(1, round(args.warmup * args.steps))
    if args.warmup < 1:
        parser.error(f"--warmup ({args.warmup}) must be at least 1 step")
    if args.init_std is not None and not args.init_std > 0:
        parser.error(f"--init-std ({args.init_std}) must be > 0, or left out for torch's initialisation")
    if args.weight_decay < 0:
        parser.error(f"--weight-decay ({args.weight_decay}) must be >= 0")
    if args.eval_every < 0:
        parser.error(f"--eval-every ({args.eval_every}) must be 0 (off) or a positive number of steps")
    try:
        device = torch.device(args.device)
    except RuntimeError as err:
        parser.error(f"--device {args.device!r} is not a torch device ({err}); use cpu, cuda or cuda:N")
    if device.type == "cuda" and not torch.cuda.is_available():
        parser.error(f"--device {args.device}: torch sees no CUDA GPU here; use --device cpu")
    torch.set_num_threads(args.threads)
    tasks = args.tasks or (["parity"] if args.quick else ["parity", "modular"])
    args.steps = args.steps or (300 if args.quick else 1500)
    args.seeds = args.seeds or (1 if args.quick else 2)
    args.test_stride = args.test_stride or (36 if args.quick else 8)
    models = select_models(args.models)
    if not models:
        parser.error(f"--models {args.models}: no model label contains any of these; labels: "
                     f"{[label for label, _, _ in ALL_MODELS]}")

    results: dict[str, dict[str, dict]] = {}
    wall = time.perf_counter()
    jobs = [(t, label, name, fields, seed) for t in tasks for label, name, fields in models
            for seed in range(args.first_seed, args.first_seed + args.seeds)]
    # a process forked after CUDA is initialised cannot use CUDA: on a GPU the runs' processes are spawned instead
    context = multiprocessing.get_context("spawn" if device.type == "cuda" else None)
    with ProcessPoolExecutor(max_workers=args.workers, mp_context=context) as pool:
        outcomes = pool.map(_run_job, [(t, name, fields, args, seed) for t, _, name, fields, seed in jobs])
        for (task_name, label, _, _, seed), run in zip(jobs, outcomes):
            entry = results.setdefault(label, {}).setdefault(task_name, {"runs": []})
            entry["runs"].append(run)
            entry["best"] = max(entry["runs"], key=lambda r: r["test_acc"])
            print(f"{task_name:8s} {label:30s} seed {seed}  train {run['train_acc']:6.1f}  test {run['test_acc']:6.1f}  "
                  f"({run['seconds']:.0f}s)", flush=True)
    wall = time.perf_counter() - wall

    print(f"\nNormalised accuracy (chance = 0, perfect = 100) on test lengths {args.test_min}-{args.test_max}, "
          f"trained on {args.train_min}-{args.train_max}; best of {args.seeds} seed(s), {args.steps} steps each")
    print("cells: best seed (mean over seeds)")
    header = f"| {'model':30s} | " + " | ".join(f"{t:>13s}" for t in tasks) + " |"
    print(header)
    print("|" + "-" * 32 + "|" + "|".join("-" * 15 for _ in tasks) + "|")
    for label, _, _ in models:
        entries = [results[label][t] for t in tasks]
        means = [np.mean([r["test_acc"] for r in e["runs"]]) for e in entries]
        cells = " | ".join(f"{e['best']['test_acc']:5.1f} ({m:5.1f})" for e, m in zip(entries, means))
        print(f"| {label:30s} | {cells} |")
    print(f"\nwall time {wall / 60:.1f} min, {args.workers} worker(s) x {args.threads} torch thread(s)")
    if args.plot:
        plot_table(results, tasks, [label for label, _, _ in models], args.plot)
    out = {"args": {k: str(v) for k, v in vars(args).items()}, "results": results, "wall_seconds": wall}
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(out, indent=2))
    return out


if __name__ == "__main__":
    main()
