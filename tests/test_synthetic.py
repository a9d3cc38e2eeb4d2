"""The synthetic tasks of benchmarks/synthetic.py: labels are right, and the quick mode runs end to end."""

import sys
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
