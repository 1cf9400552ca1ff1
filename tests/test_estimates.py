"""Rae-style estimates: the Llama-65B arithmetic, exact integration, and run-dir comparisons."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

from mdlbench.analysis import AnalysisError
from mdlbench.analysis import estimates as est
from mdlbench.cli import main
from mdlbench.errors import DataError

LN2 = math.log(2.0)


def test_loss_sum_arithmetic_on_planted_inputs():
    # Planted inputs chosen so every step is exact: 1000 tokens x 3 bytes = 3000 bytes of text;
    # a summed loss of 500 bytes plus a 100-byte program = 600 bytes; ratio 3000 / 600 = 5.
    r = est.estimate(tokens=1000, bytes_per_token=3.0, loss_sum_bytes=500, program_bytes=100)
    assert r["raw_bytes"] == 3000.0 and r["data_bits"] == 4000.0 and r["compressed_bytes"] == 600.0
    assert r["ratio"] == 5.0 and r["bits_per_byte"] == 8 * 600 / 3000
    assert r["mean_loss_bits_per_token"] == 4.0  # 4000 bits / 1000 tokens: derived from the sum
    assert "mean_loss_bits_per_token" in r["derived"] and "loss_sum_bytes" in r["inputs"]
    assert "mean_loss" not in r["inputs"]
    assert "ratio        = raw bytes / compressed = 3,000 / 600 = 5x" in r["arithmetic"]


def test_loss_sum_from_the_command_line(capsys):
    argv = ["estimate", "--tokens", "1000", "--loss-sum-bytes", "500", "--bytes-per-token", "3",
            "--program-bytes", "100", "--json"]
    assert main(argv) == 0
    r = json.loads(capsys.readouterr().out)
    assert r["ratio"] == 5.0 and r["inputs"]["loss_sum_bytes"] == 500.0
    _one_line_error(capsys, argv[:-1] + ["--mean-loss", "2"])  # a sum and a mean: contradictory


def test_llama_preset_is_the_talks_arithmetic_on_its_quoted_inputs():
    r = est.estimate_preset("llama-65b")
    # The inputs are the talk's quoted figures, and no mean loss is among them.
    assert r["inputs"] == {"bytes_per_token": 4.0, "program_bytes": 1e6, "loss_unit": "bits",
                           "tokens": 1.4e12, "loss_sum_bytes": 400e9}
    # ratio = text bytes / summed code length, from those inputs alone.
    assert r["raw_bytes"] == 1.4e12 * 4.0
    assert r["ratio"] == (1.4e12 * 4.0) / (400e9 + 1e6)
    # The mean loss is what the quoted sum implies (8 x 400e9 / 1.4e12 bits/token), marked derived.
    assert r["mean_loss_bits_per_token"] == 8 * 400e9 / 1.4e12
    assert {"ratio", "mean_loss_bits_per_token"} <= set(r["derived"])
    assert "not an independent reproduction" in r["preset"]["note"]
    assert r["hutter"]["record_ratio"] == pytest.approx(1e9 / 110_793_128)


def test_llama_preset_cli_prints_inputs_and_arithmetic(capsys):
    assert main(["estimate", "--preset", "llama-65b"]) == 0
    out = capsys.readouterr().out
    for piece in ("1.4e+12 tokens x 4 bytes/token = 5.6e+12 bytes (5.6 TB)",
                  "training loss sum   4e+11 bytes (400 GB), as given",
                  "5.6e+12 / 4.00001e+11 = 14x", "2.286 bits/token", "not an input",
                  "9.03x", "8.7x", "program size        1,000,000 bytes"):
        assert piece in out, piece
    assert "reproduces" not in out and "mean training loss" not in out


def test_preset_override_is_reported():
    # A mean-loss override replaces the quoted sum: the code is then tokens x mean loss.
    r = est.estimate_preset("llama-65b", mean_loss=1.58, loss_unit="nats")
    assert r["preset"]["overridden"] == ["loss_unit", "mean_loss"]
    assert "loss_sum_bytes" not in r["inputs"]
    assert r["data_bits"] == pytest.approx(1.4e12 * 1.58 / LN2, rel=1e-12)
    assert r["ratio"] == pytest.approx(5.6e12 / (1.4e12 * 1.58 / LN2 / 8 + 1e6), rel=1e-12)
    r = est.estimate_preset("llama-65b", loss_sum_bytes=700e9)
    assert r["preset"]["overridden"] == ["loss_sum_bytes"] and r["ratio"] == 5.6e12 / (700e9 + 1e6)
    with pytest.raises(AnalysisError, match="not both"):
        est.estimate_preset("llama-65b", mean_loss=2.0, loss_sum_bytes=1e9)
    with pytest.raises(AnalysisError, match="not a mean loss and a loss sum"):
        est.estimate(tokens=10, bytes_per_token=1, mean_loss=1, loss_sum_bytes=1)


def test_trapezoid_exact_on_linear_curve():
    # loss(t) = 3 - 0.01 t nats; the first loss is held back to 0 tokens and the last forward to 150.
    t = np.array([10.0, 20.0, 50.0, 100.0])
    loss = 3.0 - 0.01 * t
    inside = 3.0 * 90 - 0.005 * (100**2 - 10**2)  # integral from 10 to 100
    assert est.integrate_curve(t, loss, "nats") == pytest.approx((10 * 2.9 + inside) / LN2, rel=1e-13)
    assert est.integrate_curve(t, loss, "bits", total_tokens=150) == pytest.approx(10 * 2.9 + inside + 50 * 2.0,
                                                                                   rel=1e-13)


def test_summary_figures_arithmetic():
    r = est.estimate(tokens=1000, mean_loss=2.0, loss_unit="bits", bytes_per_token=1.0, program_bytes=25)
    assert r["data_bits"] == 2000.0 and r["data_bytes"] == 250.0 and r["compressed_bytes"] == 275.0
    assert r["ratio"] == pytest.approx(1000 / 275)
    assert r["bits_per_byte"] == pytest.approx(8 * 275 / 1000)


@pytest.mark.parametrize("kwargs", [
    {"tokens": [1, 2], "loss": [1, 1], "unit": "furlongs"},
    {"tokens": [2, 1], "loss": [1, 1]},
    {"tokens": [1, 2], "loss": [1, -1]},
    {"tokens": [], "loss": []},
    {"tokens": [1, 2], "loss": [1, float("nan")]},
    {"tokens": [1, 2], "loss": [1, 1], "total_tokens": 1.5},
])
def test_integrate_curve_rejects_bad_input(kwargs):
    with pytest.raises(AnalysisError):
        est.integrate_curve(**kwargs)


def test_read_curve_csv_header_names_and_comments(tmp_path):
    p = tmp_path / "c.csv"
    p.write_text("# Llama-style curve\nstep,tokens_seen,train_loss\n1,100,3.0\n\n2,300,2.5\n")
    x, y = est.read_curve_csv(p)
    assert x.tolist() == [100.0, 300.0] and y.tolist() == [3.0, 2.5]
    p.write_text("100,3.0\n300,2.5\n")
    assert est.read_curve_csv(p)[0].tolist() == [100.0, 300.0]


def _fabricate_run(tmp_path, *, n_steps=20, step_bytes=100, last_bytes=50, a=5.0, b=0.001, actual_bits=10_000.0):
    """A run dir per the core's schema whose losses are linear in bytes_seen: loss = a - b * bytes_seen."""
    run = tmp_path / "results" / "runs" / "exp" / "toy" / "tiny" / "seed0"
    run.mkdir(parents=True)
    sizes = [step_bytes] * (n_steps - 1) + [last_bytes]
    seen = np.cumsum(sizes)
    total = int(seen[-1])
    lines = []
    for i, (s, x) in enumerate(zip(sizes, seen)):
        lines.append(json.dumps({"step": i, "bytes_seen": int(x), "step_bytes": s, "code/bits": 1.0,
                                 "train/loss_nats": a - b * float(x), "time/elapsed_s": 0.1 * i}))
    # A resumed run repeats step 3 (the later record wins) and a line without a loss is ignored.
    lines.insert(3, json.dumps({"step": 3, "bytes_seen": int(seen[3]), "step_bytes": step_bytes,
                                "train/loss_nats": 99.0}))
    lines.append(json.dumps({"step": n_steps, "event": "done"}))
    (run / "metrics.jsonl").write_text("\n".join(lines) + "\n")
    summary = {"experiment": "exp", "seed": 0,
               "data": {"name": "toy", "bytes": total, "sha256": "0" * 64, "path": ""},
               "model": {"name": "tiny", "family": "transformer", "n_params": 1234},
               "code": {"name": "prequential", "bits": actual_bits, "ideal_bits": actual_bits - 3,
                        "program_bits": 800.0, "total_bits": actual_bits + 800.0}}
    (run / "summary.json").write_text(json.dumps(summary))
    return run, seen, sizes, total


def _linear_integral(a, b, x0, x1, total):
    def loss(x):
        return a - b * x
    return (loss(x0) * x0 + (a * (x1 - x0) - b / 2 * (x1**2 - x0**2)) + loss(x1) * (total - x1)) / LN2


@pytest.mark.parametrize("every", [1, 5, 7, 100])
def test_estimate_run_exact_on_synthetic_run(tmp_path, every):
    a, b = 5.0, 0.001
    run, seen, sizes, total = _fabricate_run(tmp_path, a=a, b=b)
    r = est.estimate_run(run, every)
    kept = seen[::every]  # steps 0, K, 2K, ...
    expected = _linear_integral(a, b, float(kept[0]), float(kept[-1]), float(total))
    assert r["n_points"] == len(kept) and r["n_steps"] == 20 and r["bytes"] == total == 1950
    assert r["estimate_bits"] == pytest.approx(expected, rel=1e-12)
    assert r["actual_bits"] == 10_000.0
    assert r["rel_error"] == pytest.approx((expected - 10_000.0) / 10_000.0, rel=1e-12)
    assert r["loss_sum_bits"] == pytest.approx(sum(s * (a - b * x) for s, x in zip(sizes, seen)) / LN2, rel=1e-12)
    assert r["ratio_actual"] == pytest.approx(8 * 1950 / 10_800.0)


def test_center_placement_every_step_equals_loss_sum(tmp_path):
    # Equal steps, arbitrary (non-linear) losses: centred points make the trapezoid sum exactly
    # sum(step_bytes x loss); end placement over-counts by (first - last loss) x step / 2.
    run, seen, sizes, total = _fabricate_run(tmp_path, last_bytes=100, a=5.0, b=0.0)
    lines = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    for rec in lines:
        if "train/loss_nats" in rec:
            rec["train/loss_nats"] = 1.0 + 4.0 / (1.0 + rec["step"]) ** 0.7
    (run / "metrics.jsonl").write_text("\n".join(json.dumps(r) for r in lines) + "\n")
    losses = np.array([1.0 + 4.0 / (1.0 + i) ** 0.7 for i in range(20)])
    c = est.estimate_run(run, 1, "center")
    assert c["estimate_bits"] == pytest.approx(c["loss_sum_bits"], rel=1e-13)
    assert c["loss_sum_bits"] == pytest.approx(100 * losses.sum() / LN2, rel=1e-13)
    e = est.estimate_run(run, 1, "end")
    assert e["estimate_bits"] - c["estimate_bits"] == pytest.approx((losses[0] - losses[-1]) * 50 / LN2, rel=1e-10)
    with pytest.raises(AnalysisError):
        est.estimate_run(run, 1, "middle")


def test_estimate_run_cli_table_and_json(tmp_path, capsys):
    run, *_ = _fabricate_run(tmp_path)
    assert main(["estimate", "--run", str(run), "--every", "1", "5"]) == 0
    out = capsys.readouterr().out
    assert "rel_error" in out and "code.bits = 10,000 bits" in out
    assert main(["estimate", "--run", str(run), "--every", "1", "5", "--json"]) == 0
    rows = json.loads(capsys.readouterr().out)["run"]
    assert [r["every"] for r in rows] == [1, 5]
    assert rows[1]["estimate_bits"] == pytest.approx(est.estimate_run(run, 5)["estimate_bits"], rel=1e-15)


def test_estimate_run_errors(tmp_path):
    with pytest.raises(DataError):
        est.estimate_run(tmp_path / "missing")
    run, *_ = _fabricate_run(tmp_path)
    with pytest.raises(AnalysisError):
        est.estimate_run(run, 0)
    (run / "summary.json").write_text(json.dumps({"code": {}}))
    with pytest.raises(DataError, match="code.bits"):
        est.estimate_run(run)


def _one_line_error(capsys, argv):
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.startswith("mdlbench: error: ") and err.count("\n") == 1 and "Traceback" not in err
    return err


def test_cli_one_line_errors(tmp_path, capsys):
    err = _one_line_error(capsys, ["estimate", "--curve", str(tmp_path / "nope.csv"), "--bytes-per-token", "4"])
    assert "not found" in err
    bad = tmp_path / "bad.csv"
    bad.write_text("tokens,loss\n100,3.0\n200,abc\n")
    assert "bad.csv:3" in _one_line_error(capsys, ["estimate", "--curve", str(bad), "--bytes-per-token", "4"])
    bad.write_text("tokens,loss\n300,3.0\n200,2.0\n")
    assert "increase" in _one_line_error(capsys, ["estimate", "--curve", str(bad), "--bytes-per-token", "4"])
    err = _one_line_error(capsys, ["estimate", "--tokens", "1e6", "--mean-loss", "2", "--bytes-per-token", "1",
                                   "--loss-unit", "furlongs"])
    assert "furlongs" in err
    _one_line_error(capsys, ["estimate", "--tokens", "1e6", "--mean-loss", "2"])  # no bytes per token
    _one_line_error(capsys, ["estimate", "--preset", "gpt-5"])
    _one_line_error(capsys, ["estimate", "--run", str(tmp_path / "norun")])
    _one_line_error(capsys, ["estimate"])
