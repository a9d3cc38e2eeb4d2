"""The synthetic tasks of benchmarks/synthetic.py: labels are right, and the quick mode runs end to end."""

import json
import os
import subprocess
import sys
import tarfile
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))

import synthetic  # noqa: E402
from synthetic import MINUS, PLUS, TIMES, evaluate_expression, modular_batch, normalised, parity_batch  # noqa: E402


@pytest.mark.parametrize(
    "tokens, value",
    [
        ([1, PLUS, 2, TIMES, 3], 2),  # 1 + 6 = 7
        ([1, MINUS, 1, MINUS, 1], 4),  # -1
        ([0, TIMES, 1, PLUS, 4, TIMES, 3, MINUS, 2], 0),  # 0 + 12 - 2 = 10
        ([4, TIMES, 4, TIMES, 4], 4),  # 64
        ([3], 3),
        ([2, MINUS, 3, TIMES, 4], 0),  # 2 - 12 = -10
    ],
)
def test_modular_expression_value(tokens, value):
    assert evaluate_expression(np.array(tokens)) == value


def test_modular_batch_matches_python_eval():
    rng = np.random.default_rng(0)
    tokens, labels = modular_batch(rng, 200, 12)  # even length -> shortened to 11
    assert tokens.shape == (200, 11)
    symbols = {PLUS: "+", MINUS: "-", TIMES: "*"}
    for row, label in zip(tokens, labels):
        text = "".join(symbols.get(int(t), str(int(t))) for t in row)
        assert eval(text) % 5 == label  # Python's precedence is the task's


def test_parity_batch_labels_and_balance():
    bits, labels = parity_batch(np.random.default_rng(1), 4000, 17)
    assert np.array_equal(labels, bits.sum(1) % 2)
    assert abs(labels.mean() - 0.5) < 0.03


def test_normalised_accuracy():
    assert normalised(0.5, 2) == 0.0 and normalised(1.0, 5) == 100.0 and normalised(0.2, 5) == pytest.approx(0.0)


@pytest.mark.slow
def test_quick_mode_separates_fast_weights_from_window(tmp_path):
    out = synthetic.main(["--quick", "--models", "KV-only", "DeltaNet", "--json", str(tmp_path / "s.json")])
    parity = {label: res["parity"]["best"]["test_acc"] for label, res in out["results"].items()}
    assert (tmp_path / "s.json").is_file()
    assert parity["KV-only (S=8)"] < 15.0  # a window of 8 cannot count parity over 40-256 steps
    assert parity["DeltaNet"] > 30.0


@pytest.mark.parametrize(
    "pack",
    [
        lambda rng, *a: synthetic.packed_batch(modular_batch, rng, *a),
        lambda rng, *a: synthetic.packed_batch_vectorised(synthetic.TASKS["modular"], rng, *a),
    ],
    ids=["sequential", "vectorised"],
)
def test_packed_batch_layout_and_labels(pack):
    rng = np.random.default_rng(3)
    tokens, starts, rows, cols, labels = pack(rng, 64, 40, 3, 40)
    assert tokens.shape == starts.shape == (64, 40) and starts[:, 0].all()
    lengths = []
    for r in range(64):
        begin = np.flatnonzero(starts[r])
        ends = cols[rows == r]
        assert len(ends) >= 1 and ends[-1] == 39  # the row is filled to its end; padding, if any, in front
        seq_begins = begin[-len(ends) :]
        assert seq_begins[0] < 3  # padding shorter than the shortest sequence
        for b, e, label in zip(seq_begins, ends, labels[rows == r]):
            assert evaluate_expression(tokens[r, b : e + 1]) == label and (e - b) % 2 == 0  # odd length
            lengths.append(e - b + 1)
    assert min(lengths) <= 9 and max(lengths) >= 31  # lengths are mixed within the batch
    with pytest.raises(ValueError, match="row_len"):
        pack(rng, 2, 10, 3, 40)


def test_vectorised_packing_labels_parity_and_draws_like_the_sequential_one():
    rng = np.random.default_rng(4)
    tokens, starts, rows, cols, labels = synthetic.packed_batch_vectorised(synthetic.TASKS["parity"], rng, 64, 40, 3, 40)
    for r, c, label in zip(rows, cols, labels):
        begin = max(b for b in np.flatnonzero(starts[r]) if b <= c)
        assert tokens[r, begin : c + 1].sum() % 2 == label
    # the same distribution of sequence lengths and labels as the sequential sampler (means over 4096 rows)
    task = synthetic.TASKS["modular"]
    draws = [synthetic.packed_batch(task.sample, np.random.default_rng(5), 4096, 40, 3, 40),
             synthetic.packed_batch_vectorised(task, np.random.default_rng(5), 4096, 40, 3, 40)]
    per_row = [len(labels) / 4096 for *_, labels in draws]
    assert per_row[0] == pytest.approx(per_row[1], rel=0.03)
    label_counts = [np.bincount(d[4], minlength=5) / len(d[4]) for d in draws]
    np.testing.assert_allclose(label_counts[0], label_counts[1], atol=0.02)


def test_packed_sequences_equal_separate_runs():
    """Reading each packed sequence's last step gives the logits of running that sequence alone (resets work)."""
    import torch

    torch.manual_seed(0)
    task = synthetic.TASKS["modular"]
    model = synthetic.SequenceClassifier(task, "hqlt", 16, 2, 2, window=4, chunk_size=8).double()
    tokens, starts, rows, cols, labels = synthetic.packed_batch(modular_batch, np.random.default_rng(5), 3, 40, 3, 20)
    with torch.no_grad():
        packed = model(torch.as_tensor(tokens), torch.as_tensor(starts), (torch.as_tensor(rows), torch.as_tensor(cols)))
        for i, (r, c) in enumerate(zip(rows, cols)):
            begin = max(b for b in np.flatnonzero(starts[r]) if b <= c)
            alone = model(torch.as_tensor(tokens[r : r + 1, begin : c + 1]))
            torch.testing.assert_close(packed[i : i + 1], alone, rtol=1e-10, atol=1e-10)
    assert len(rows) > 3  # several sequences per row


def test_eval_every_records_a_curve_without_changing_the_run(tmp_path):
    common = ["--tasks", "modular", "--models", "DeltaNet", "--seeds", "1", "--steps", "12", "--batch", "8",
              "--test-max", "56", "--pack"]
    plain = synthetic.main(common)["results"]["DeltaNet"]["modular"]["runs"][0]
    curved = synthetic.main(common + ["--eval-every", "5", "--json", str(tmp_path / "c.json")])
    run = curved["results"]["DeltaNet"]["modular"]["runs"][0]
    assert [p["step"] for p in run["curve"]] == [5, 10, 12]
    # the evaluations draw from their own generator: the run ends where the plain one does
    assert run["test_acc"] == plain["test_acc"] and run["test_by_length"] == plain["test_by_length"]
    assert run["curve"][-1]["test_acc"] == run["test_acc"]
    assert sorted(run["test_by_length"]) == [40, 48, 56]
    assert (tmp_path / "c.json").is_file()
    assert synthetic.main(["--plot-curves", str(tmp_path / "c.png"), str(tmp_path / "c.json")]) == {}
    assert (tmp_path / "c.png").stat().st_size > 0


def test_curve_label_names_the_shape_options_that_are_not_their_defaults():
    args = {"steps": "20000", "qk_activation": "silu"}
    assert synthetic.curve_label(args, "DeltaNet", "modular", 1) == "DeltaNet, modular, seed 1, 20000 steps"
    args["qk_activation"] = "identity"
    assert synthetic.curve_label(args, "DeltaNet", "modular", 1) == "DeltaNet, modular, seed 1, 20000 steps, q/k identity"
    args.update(n_heads="2", d_model="64")  # d_model 64 is the default: not named
    label = synthetic.curve_label(args, "DeltaNet", "modular", 1)
    assert label == "DeltaNet, modular, seed 1, 20000 steps, 2 heads, q/k identity"
    # records written before the option existed used SiLU
    assert synthetic.curve_label({"steps": "5"}, "DeltaNet", "parity", 0) == "DeltaNet, parity, seed 0, 5 steps"


def test_prefetch_trains_on_the_same_batches(tmp_path):
    common = ["--tasks", "modular", "--models", "HQLT synchronous", "--seeds", "1", "--steps", "6", "--batch", "8",
              "--test-max", "48"]
    for extra in ([], ["--pack"]):
        plain = synthetic.main(common + extra)["results"]["HQLT synchronous"]["modular"]["runs"][0]
        fetched = synthetic.main(common + extra + ["--prefetch"])["results"]["HQLT synchronous"]["modular"]["runs"][0]
        assert fetched["test_by_length"] == plain["test_by_length"] and fetched["train_acc"] == plain["train_acc"]
    batches = list(synthetic._train_batches(synthetic.TASKS["modular"], synthetic.argparse.Namespace(
        steps=3, pack=True, batch=4, train_min=3, train_max=20), seed=2))
    again = list(synthetic._prefetched(synthetic.TASKS["modular"], synthetic.argparse.Namespace(
        steps=3, pack=True, batch=4, train_min=3, train_max=20), seed=2))
    assert len(batches) == len(again) == 3
    for a, b in zip(batches, again):
        assert all(np.array_equal(u, v) for u, v in zip(a, b))


def test_vectorised_sampler_needs_pack_and_trains(capsys):
    with pytest.raises(SystemExit):
        synthetic.main(["--sampler", "vectorised"])
    assert "--sampler vectorised draws packed rows: add --pack" in capsys.readouterr().err
    common = ["--tasks", "modular", "--models", "DeltaNet", "--seeds", "1", "--steps", "3", "--batch", "8",
              "--test-max", "40", "--pack"]
    out = synthetic.main(common + ["--sampler", "vectorised", "--prefetch"])
    assert out["args"]["sampler"] == "vectorised" and out["results"]["DeltaNet"]["modular"]["runs"][0]["seconds"] > 0
    task, args = synthetic.TASKS["modular"], synthetic.argparse.Namespace(
        steps=1, pack=True, batch=4, train_min=3, train_max=20, sampler="vectorised")
    (batch,) = synthetic._train_batches(task, args, seed=1)
    expected = synthetic.packed_batch_vectorised(task, np.random.default_rng(1), 4, 20, 3, 20)
    assert all(np.array_equal(a, b) for a, b in zip(batch, expected))


def test_device_is_checked(capsys):
    with pytest.raises(SystemExit):
        synthetic.main(["--device", "gpu0"])
    assert "--device 'gpu0' is not a torch device" in capsys.readouterr().err
    if not synthetic.torch.cuda.is_available():
        with pytest.raises(SystemExit):
            synthetic.main(["--device", "cuda"])
        assert "torch sees no CUDA GPU" in capsys.readouterr().err


def test_plot_curves_names_what_is_missing(tmp_path, capsys):
    with pytest.raises(SystemExit):
        synthetic.main(["--plot-curves", str(tmp_path / "c.png"), str(tmp_path / "absent.json")])
    assert "absent.json" in capsys.readouterr().err
    synthetic.main(["--tasks", "parity", "--models", "KV-only", "--seeds", "1", "--steps", "2", "--batch", "4",
                    "--test-max", "40", "--json", str(tmp_path / "plain.json")])
    with pytest.raises(SystemExit, match="--eval-every"):  # a run without a curve cannot be plotted
        synthetic.main(["--plot-curves", str(tmp_path / "c.png"), str(tmp_path / "plain.json")])
    (tmp_path / "bad.json").write_text("{not json")
    with pytest.raises(SystemExit, match="bad.json is not a JSON file written by synthetic.py"):
        synthetic.main(["--plot-curves", str(tmp_path / "c.png"), str(tmp_path / "bad.json")])


def test_eval_every_rejects_negative_steps(capsys):
    with pytest.raises(SystemExit):
        synthetic.main(["--eval-every", "-1"])
    assert "--eval-every" in capsys.readouterr().err


@pytest.mark.slow
def test_compile_trains_like_eager():
    import torch._dynamo

    args = synthetic.argparse.Namespace(steps=4, batch=8, pack=True, lr=3e-3, d_model=64, n_layers=2, n_heads=4,
                                        train_min=3, train_max=40, test_min=40, test_max=48, test_stride=8,
                                        eval_batch=64, eval_every=0)
    task = synthetic.TASKS["modular"]
    eager = synthetic.train_and_test(task, "deltanet", {}, args, seed=0)
    torch._dynamo.reset()
    torch._dynamo.utils.counters.clear()
    args.compile = True
    compiled = synthetic.train_and_test(task, "deltanet", {}, args, seed=0)
    assert torch._dynamo.utils.counters["stats"]["unique_graphs"] >= 1  # the training calls went through compile
    # equal to float round-off, so the argmax-based accuracies agree here
    assert compiled["test_by_length"] == eager["test_by_length"] and compiled["train_acc"] == eager["train_acc"]


def test_paper_recipe_options(capsys):
    """--init-std, --weight-decay and --schedule warmup-cosine: the paper's training script's initialisation,
    weight decay and learning-rate schedule."""
    import torch

    torch.manual_seed(0)
    task = synthetic.TASKS["modular"]
    model = synthetic.SequenceClassifier(task, "hqlt", 64, 2, 4, window=8, short_conv=4)
    synthetic.init_normal(model, 0.006)
    convs = [m for m in model.modules() if isinstance(m, synthetic.ShortConv)]
    linears = [m for m in model.modules() if isinstance(m, torch.nn.Linear)]
    assert convs and linears
    for m in [model.embed, *convs, *linears]:
        assert abs(m.weight.std().item() - 0.006) < 0.002, m
        assert getattr(m, "bias", None) is None or not m.bias.any()
    # linear warm-up to the peak, cosine down to 1e-3 of it
    factors = [synthetic.lr_factor(s, 1000, 100) for s in range(1000)]
    assert factors[0] == 0.01 and factors[99] == 1.0 and factors[100] == 1.0
    assert all(a <= b for a, b in zip(factors[:100], factors[1:100]))
    assert all(a >= b for a, b in zip(factors[100:], factors[101:]))
    assert abs(factors[550] - (0.001 + 0.999 * 0.5)) < 1e-9 and abs(factors[-1] - 0.001) < 1e-4
    common = ["--tasks", "modular", "--models", "DeltaNet", "--seeds", "1", "--steps", "4", "--batch", "8",
              "--test-max", "40"]
    plain = synthetic.main(common)["results"]["DeltaNet"]["modular"]["runs"][0]
    recipe = synthetic.main(common + ["--init-std", "0.006", "--weight-decay", "0.1", "--schedule", "warmup-cosine",
                                      "--warmup", "2"])
    assert recipe["args"]["schedule"] == "warmup-cosine" and recipe["args"]["init_std"] == "0.006"
    assert recipe["results"]["DeltaNet"]["modular"]["runs"][0]["seconds"] > 0
    assert recipe["results"]["DeltaNet"]["modular"]["runs"][0]["test_by_length"] != plain["test_by_length"]
    # a share of the steps resolves to whole steps before the run, and the JSON keeps the steps
    share = synthetic.main(common + ["--init-std", "0.006", "--weight-decay", "0.1", "--schedule", "warmup-cosine",
                                     "--warmup", "50%"])
    assert share["args"]["warmup"] == "2"
    assert (share["results"]["DeltaNet"]["modular"]["runs"][0]["test_by_length"]
            == recipe["results"]["DeltaNet"]["modular"]["runs"][0]["test_by_length"])
    identity = synthetic.main(common + ["--qk-activation", "identity"])["results"]["DeltaNet"]["modular"]["runs"][0]
    assert identity["test_by_length"] != plain["test_by_length"]
    silu = synthetic.main(common + ["--qk-activation", "silu"])["results"]["DeltaNet"]["modular"]["runs"][0]
    assert silu["test_by_length"] == plain["test_by_length"]  # silu is the default
    for bad, message in ((["--warmup", "0"], "--warmup (0) must be at least 1"),
                         (["--warmup", "0%"], "nor a share of --steps above 0% and at most 100%"),
                         (["--warmup", "150%"], "nor a share of --steps above 0% and at most 100%"),
                         (["--warmup", "ten"], "'ten' is neither a number of steps"),
                         (["--init-std", "0"], "--init-std (0.0) must be > 0"),
                         (["--weight-decay", "-1"], "--weight-decay (-1.0) must be >= 0")):
        with pytest.raises(SystemExit):
            synthetic.main(common + bad)
        assert message in capsys.readouterr().err


def _record(path, runs, first_seed, model="DeltaNet", **args):
    """A JSON file as synthetic.py --json writes it (args as strings), with the given (train, test) runs."""
    args = {"first_seed": str(first_seed), "seeds": str(len(runs)), "steps": "20000", **args}
    results = {model: {"modular": {"runs": [{"train_acc": tr, "test_acc": te, "seconds": 1.0} for tr, te in runs]}}}
    path.write_text(json.dumps({"args": args, "results": results, "wall_seconds": 1.0}))
    return path


def test_summarise_merges_seeds_across_files_and_keeps_settings_apart(tmp_path, capsys):
    files = [
        _record(tmp_path / "d01.json", [(99.0, 30.0), (98.0, 50.0)], 0, lr="0.005"),
        _record(tmp_path / "d2.json", [(97.0, 40.0)], 2, lr="0.005", compile="True", eval_every="2500"),
        _record(tmp_path / "h0.json", [(99.0, 80.0)], 0, model="HQLT synchronous", lr="0.005"),
        _record(tmp_path / "h1.json", [(99.0, 90.0)], 1, model="HQLT synchronous", lr="0.005"),
        # a record without lr ran with the parser's default (3e-3): other settings, a group of its own
        _record(tmp_path / "old.json", [(90.0, 10.0)], 1),
    ]
    out = synthetic.main(["--summarise", *map(str, files)])
    groups = {(g["model"], g["settings"]["lr"]): g for g in out["groups"]}
    deltanet = groups[("DeltaNet", "0.005")]
    assert list(deltanet["runs"]) == [0, 1, 2]  # compile and eval-every do not split a group
    assert deltanet["best"] == 50.0 and deltanet["mean"] == pytest.approx(40.0)
    assert deltanet["std"] == pytest.approx(np.std([30.0, 50.0, 40.0]))
    assert list(groups[("DeltaNet", "0.003")]["runs"]) == [1]  # the parser's default lr
    assert groups[("DeltaNet", "0.003")]["differs"] == {"lr": "0.003"}
    (test,) = out["tests"]  # only the pair with the same settings and two seeds or more each
    assert (test["a"], test["b"]) == ("HQLT synchronous", "DeltaNet")
    # HQLT 80, 90 against DeltaNet 30, 50, 40: of the 10 ways to pick 2 of the 5, only the observed one is as far
    # apart (45 points; the two lowest, 30 and 40, are 38.3 below the rest)
    assert test["p_two_sided"] == pytest.approx(1 / 10)
    printed = capsys.readouterr().out
    assert "| A | DeltaNet | 0, 1, 2 | 30.0 / 50.0 / 40.0 | 50.0 | 40.0 ± 8.2 | 98.0 |" in printed
    assert "| B | DeltaNet | 1 | 10.0 | 10.0 | 10.0 ± 0.0 | 90.0 |" in printed
    assert "- A: lr=0.005" in printed and "- B: lr=0.003" in printed
    assert "- A: HQLT synchronous 85.0 vs DeltaNet 40.0, p = 0.100" in printed
    # seeds 0 and 1 of settings A were run by both: HQLT higher in both pairs; sign test p = 2 * (1/4)
    assert out["paired"] == {"a": "HQLT synchronous", "b": "DeltaNet", "pairs": 2, "a_higher": 2, "b_higher": 0,
                             "p_two_sided": 0.5}
    # another pair on request; a label that is no model is refused
    out = synthetic.main(["--summarise", *map(str, files), "--compare", "DeltaNet", "KV-only (S=8)"])
    assert out["tests"] == []
    with pytest.raises(SystemExit):
        synthetic.main(["--summarise", *map(str, files), "--compare", "DeltaNet", "HQLT"])


def test_summarise_plots_every_seed_of_the_merged_runs(tmp_path):
    files = [
        _record(tmp_path / "h.json", [(99.0, 80.0), (99.0, 60.0)], 0, model="HQLT synchronous", lr="0.005"),
        _record(tmp_path / "d01.json", [(99.0, 30.0), (98.0, 50.0)], 0, lr="0.005"),
        _record(tmp_path / "d2.json", [(97.0, 40.0)], 2, lr="0.005"),
        _record(tmp_path / "old.json", [(90.0, 10.0)], 1),
    ]
    png = tmp_path / "fig" / "seeds.png"
    out = synthetic.main(["--summarise", *map(str, files), "--plot", str(png)])
    assert png.is_file() and png.stat().st_size > 0
    # settings A (lr 0.005) before B (the default lr); within them the models in the table's order
    assert [(d["name"], d["best"], d["seeds"]) for d in out["plotted"]] == [
        ("DeltaNet [A]", 50.0, [0, 1, 2]), ("HQLT synchronous [A]", 80.0, [0, 1]), ("DeltaNet [B]", 10.0, [1])]
    assert out["plotted"][0]["mean"] == pytest.approx(40.0)
    # one setting: no letters in the names
    out = synthetic.main(["--summarise", *map(str, files[:3]), "--plot", str(png)])
    assert [d["name"] for d in out["plotted"]] == ["DeltaNet", "HQLT synchronous"]


def test_summarise_rejects_a_seed_given_twice_and_a_foreign_file(tmp_path):
    a = _record(tmp_path / "a.json", [(99.0, 30.0)], 1)
    b = _record(tmp_path / "b.json", [(99.0, 31.0)], 1)
    with pytest.raises(SystemExit, match="seed 1 of DeltaNet .* pass only one"):
        synthetic.main(["--summarise", str(a), str(b)])
    (tmp_path / "x.json").write_text(json.dumps({"policy": []}))
    with pytest.raises(SystemExit, match="not a JSON file written by synthetic.py"):
        synthetic.main(["--summarise", str(tmp_path / "x.json")])
    with pytest.raises(SystemExit):
        synthetic.main(["--summarise", str(tmp_path / "missing.json")])


def test_summarise_names_a_run_without_accuracies(tmp_path):
    path = _record(tmp_path / "a.json", [(99.0, 30.0)], 0)
    record = json.loads(path.read_text())
    del record["results"]["DeltaNet"]["modular"]["runs"][0]["test_acc"]
    path.write_text(json.dumps(record))
    with pytest.raises(SystemExit, match="run 0 of DeltaNet on modular .* has no train and test accuracy"):
        synthetic.main(["--summarise", str(path)])


def test_gpu_script_runs_the_six_runs_for_given_steps_without_a_probe(tmp_path):
    """synthetic_gpu.sh with steps=N (here on the CPU, tiny): six runs, HQLT sync and DeltaNet x seeds 0-2, each with
    N steps, five evaluations and the options passed on, and an archive of them all; a bad budget is refused."""
    root = Path(__file__).resolve().parents[1]
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}",
           "OMP_NUM_THREADS": "1"}
    script = ["bash", str(root / "benchmarks" / "synthetic_gpu.sh")]
    out = tmp_path / "sg"
    done = subprocess.run([*script, str(out), "steps=5", "4", "cpu", "--d-model", "16", "--test-max", "40",
                           "--schedule", "warmup-cosine", "--warmup", "20%"],
                          cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "steps=5 given: no probe" in done.stdout and not list(out.glob("probe_*"))
    records = [json.loads(p.read_text()) for p in sorted(out.glob("run_*.json"))]
    runs = {(next(iter(r["results"])), r["args"]["first_seed"]) for r in records}
    assert runs == {(m, s) for m in ("HQLT synchronous", "DeltaNet") for s in ("0", "1", "2")}
    for r in records:
        assert (r["args"]["steps"], r["args"]["eval_every"], r["args"]["warmup"], r["args"]["d_model"]) == (
            "5", "1", "1", "16")
        run = next(iter(r["results"].values()))["modular"]["runs"][0]
        assert [point["step"] for point in run["curve"]] == [1, 2, 3, 4, 5]
    with tarfile.open(tmp_path / "sg.tar.gz") as archive:
        assert sum(name.endswith(".json") for name in archive.getnames()) == 6
    for bad in ("steps=0", "ten", "steps=x"):
        refused = subprocess.run([*script, str(tmp_path / "x"), bad], env=env, capture_output=True, text=True)
        assert refused.returncode == 2 and "whole number of seconds or steps=N" in refused.stdout


def test_gpu_script_takes_its_runs_evaluations_and_a_cap_on_the_probes_steps(tmp_path):
    """RUNS picks the runs, EVALS the evaluations per run, and MAX_STEPS caps the steps the probe chooses (here a
    budget of 1 s, which alone would give the probe's floor of 500 steps); malformed values are refused."""
    root = Path(__file__).resolve().parents[1]
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}",
           "OMP_NUM_THREADS": "1", "RUNS": "DeltaNet:3,HQLT synchronous:4", "EVALS": "2", "MAX_STEPS": "6"}
    script = ["bash", str(root / "benchmarks" / "synthetic_gpu.sh")]
    out = tmp_path / "sg"
    done = subprocess.run([*script, str(out), "1", "4", "cpu", "--d-model", "16", "--test-max", "40"],
                          cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "2 runs side by side" in done.stderr and "-> 6 steps (at most 6)" in done.stderr
    assert len(list(out.glob("probe_*.json"))) == 2
    records = [json.loads(p.read_text()) for p in sorted(out.glob("run_*.json"))]
    assert {(next(iter(r["results"])), r["args"]["first_seed"]) for r in records} == {
        ("DeltaNet", "3"), ("HQLT synchronous", "4")}
    for r in records:
        assert (r["args"]["steps"], r["args"]["eval_every"]) == ("6", "3")
        run = next(iter(r["results"].values()))["modular"]["runs"][0]
        assert [point["step"] for point in run["curve"]] == [3, 6]
    for bad in ({"RUNS": "DeltaNet"}, {"RUNS": "DeltaNet:x"}, {"EVALS": "0"}, {"MAX_STEPS": "many"}):
        refused = subprocess.run([*script, str(tmp_path / "x"), "steps=5"], env={**env, **bad},
                                 capture_output=True, text=True)
        assert refused.returncode == 2 and ("RUNS must be" in refused.stdout or "EVALS must" in refused.stdout)


def test_fw_lean_model_is_opt_in_and_keeps_its_lean_through_the_paper_init():
    """The extra model (the blend started leaning on the fast weights) runs only when --models names it, and the
    paper's initialisation, which zeroes every bias, does not remove its lean."""
    import torch

    labels = lambda names: [label for label, _, _ in synthetic.select_models(names)]  # noqa: E731
    assert labels(None) == [label for label, _, _ in synthetic.MODELS]
    assert "HQLT sync, FW-lean start" not in labels(None)
    assert labels(["HQLT synchronous"]) == ["HQLT synchronous"]
    assert labels(["fw-lean"]) == ["HQLT sync, FW-lean start"]
    assert labels(["nothing like it"]) == []
    torch.manual_seed(0)
    (_, name, fields), = synthetic.select_models(["FW-lean"])
    model = synthetic.SequenceClassifier(synthetic.TASKS["parity"], name, 64, 2, 4, **fields)
    synthetic.init_normal(model, 0.006)
    layers = [m for m in model.modules() if isinstance(m, synthetic.HQLTLayer)]
    assert len(layers) == 2
    for layer in layers:
        beta_bias, gate_bias = layer.aux.bias.split([layer.n_beta, layer.n_gate])
        assert not beta_bias.any() and torch.equal(gate_bias, torch.full_like(gate_bias, 2.0))


def test_unknown_model_name_is_an_error(capsys):
    with pytest.raises(SystemExit):
        synthetic.main(["--models", "Mamba"])
    err = capsys.readouterr().err
    assert "--models ['Mamba']: no model label contains any of these" in err and "HQLT sync, FW-lean start" in err
