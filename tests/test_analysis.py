"""Tests of mdlbench.analysis: collect, fits (planted parameters), plots and their CLI errors.

The sweep is fabricated on disk in the layout and schema the core writes
(``<data>/<model>/seed<k>/{summary.json, metrics.jsonl, .hydra/config.yaml}``), with numbers
drawn from a Chinchilla-shaped law so that the figures and fits have something real to show.
"""

from __future__ import annotations

import json
import math
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from mdlbench import cli
from mdlbench import config as config_lib
from mdlbench.analysis import AnalysisError
from mdlbench.analysis import collect as collect_lib
from mdlbench.analysis import fits, plots, scaling_figures

# (model name, measured n_params, d_model, n_layers): the names deliberately say nothing of size.
MODELS = [("xs", 2_113, 16, 1), ("s", 12_470, 32, 2), ("m", 61_002, 64, 3), ("l", 302_551, 128, 4),
          ("xl", 1_498_880, 256, 5)]
DATA = {"markov2": 1.5, "tinyshakespeare": None}  # name -> true entropy rate (bits/byte) or unknown
SEEDS = (0, 1)
STEPS, STEP_BYTES = 48, 2048
INCOMPLETE = "markov2/xl/seed1"
UNVERIFIED = "tinyshakespeare/s/seed1"
RESUMED = "markov2/m/seed0"  # its metrics.jsonl repeats steps (a resume) and ends in a torn line


def _law(n_params: float, data_bytes: np.ndarray, E: float) -> np.ndarray:
    return fits.chinchilla(n_params, data_bytes, E=E, A=30.0, alpha=0.3, B=20.0, beta=0.4)


def _make_job(root: Path, data: str, model: tuple, seed: int, rng: np.random.Generator) -> dict:
    name, n_params, d_model, n_layers = model
    rel = f"{data}/{name}/seed{seed}"
    job = root / rel
    (job / ".hydra").mkdir(parents=True)
    cfg = config_lib.Config(experiment="fake_sweep", seed=seed)
    cfg.model.name, cfg.model.d_model, cfg.model.n_layers = name, d_model, n_layers
    cfg.data.name = data
    if DATA[data] is not None:
        cfg.data.synthetic = config_lib.SyntheticConfig(kind="markov", order=2, length=STEPS * STEP_BYTES)
    cfg.run_dir = str(job)
    (job / ".hydra" / "config.yaml").write_text(f"experiment: fake_sweep\nseed: {seed}\nmodel:\n  name: {name}\n")

    E = DATA[data] or 1.9
    bytes_seen = STEP_BYTES * np.arange(1, STEPS + 1)
    trained = bytes_seen - STEP_BYTES
    # The first chunk is coded by the untrained model: about 8 bits/byte.
    bpb = np.where(trained > 0, _law(n_params, np.maximum(trained, 1), E), 7.95)
    bpb = bpb * np.exp(rng.normal(0, 0.005, STEPS))
    ideal_bits = bpb * STEP_BYTES
    bits = np.ceil(ideal_bits / 32) * 32  # word-granular actual payload
    records = [{
        "step": t, "bytes_seen": int(bytes_seen[t]), "step_bytes": STEP_BYTES,
        "code/ideal_bits": float(ideal_bits[t]), "code/ideal_bits_per_byte": float(bpb[t]),
        "code/bits": float(bits[t]), "code/cum_ideal_bits": float(ideal_bits[: t + 1].sum()),
        "code/cum_bits": float(bits[: t + 1].sum()),
        "code/cum_bits_per_byte": float(bits[: t + 1].sum() / bytes_seen[t]),
        "train/loss_nats": float(bpb[t] * math.log(2)), "time/elapsed_s": 0.5 * (t + 1),
    } for t in range(STEPS)]
    lines = [json.dumps(r) for r in records]
    if rel == RESUMED:
        stale = dict(records[10], **{"code/ideal_bits_per_byte": 99.0})
        lines = lines[:12] + [json.dumps(stale)] + lines[10:] + ['{"step": 24, "bytes_se']
        # The stale record of step 10 precedes its rewrite, so the rewrite (the true value) must win.
    if rel == INCOMPLETE:
        (job / "metrics.jsonl").write_text("\n".join(lines[:5]) + '\n{"step": 5, "byt')
        return {}
    (job / "metrics.jsonl").write_text("\n".join(lines) + "\n")

    n_bytes = int(bytes_seen[-1])
    program_bits = 8 * (24_000 + 40 * n_layers)
    summary = {
        "experiment": "fake_sweep", "seed": seed,
        "data": {"name": data, "bytes": n_bytes, "sha256": "ab" * 32, "path": f"/data/{data}"},
        "source": {"entropy_rate_bits": DATA[data]},
        "model": {"name": name, "family": "transformer", "n_params": n_params, "d_model": d_model,
                  "n_layers": n_layers},
        "code": {"name": "prequential", "bits": float(bits.sum()), "ideal_bits": float(ideal_bits.sum()),
                 "program_bits": program_bits, "total_bits": float(bits.sum() + program_bits),
                 "bits_per_byte": float(bits.sum() / n_bytes), "ideal_bits_per_byte": float(ideal_bits.sum() / n_bytes),
                 "ratio": 8 * n_bytes / float(bits.sum() + program_bits), "container_bytes": int(bits.sum() // 8 + 300),
                 "final_chunk_bits_per_byte": float(bpb[-1])},
        "verify": {"ok": rel != UNVERIFIED, "decoded_sha256": "ab" * 32},
        "time": {"encode_s": 12.0, "decode_s": 11.0},
        "perf": {"bytes_per_s": 4000.0},
        "env": {"platform": "cpu", "threads": 1, "devices": ["cpu:0"]},
        "config": config_lib.to_dict(cfg),
    }
    (job / "summary.json").write_text(json.dumps(summary, indent=1))
    return summary


@pytest.fixture(scope="module")
def sweep_dir(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, dict]]:
    """A fake sweep: 2 data sets x 5 sizes x 2 seeds; one job incomplete, one unverified."""
    root = tmp_path_factory.mktemp("runs") / "fake_sweep"
    rng = np.random.default_rng(0)
    summaries = {}
    for data in DATA:
        for model in MODELS:
            for seed in SEEDS:
                s = _make_job(root, data, model, seed, rng)
                if s:
                    summaries[f"{data}/{model[0]}/seed{seed}"] = s
    (root / "multirun.yaml").write_text("hydra: {}\n")  # Hydra leaves this at the sweep root
    return root, summaries


N_JOBS = len(DATA) * len(MODELS) * len(SEEDS)


# --------------------------------------------------------------------------- collect


def test_collect_rows_columns_and_values(sweep_dir):
    root, summaries = sweep_dir
    sweep = collect_lib.collect(root)
    runs = sweep.runs
    assert len(runs) == N_JOBS - 1 == len(summaries)
    assert sweep.incomplete and [rel for rel, _ in sweep.incomplete] == [INCOMPLETE]
    assert "no summary.json" in sweep.incomplete[0][1] and "5 steps" in sweep.incomplete[0][1]
    assert sweep.unverified == [UNVERIFIED]
    assert len(sweep.complete) == N_JOBS - 2
    for col in ("code.bits_per_byte", "code.final_chunk_bits_per_byte", "model.n_params", "source.entropy_rate_bits",
                "config.model.d_model", "config.optim.lr", "config.data.synthetic.kind", "verify.ok", "job.dir",
                "job.status", "time.encode_s", "env.devices"):
        assert col in runs.columns, col
    assert runs.loc[runs["job.dir"] == UNVERIFIED, "job.status"].item() == "unverified"

    by_job = runs.set_index("job.dir")
    for rel, s in summaries.items():
        row = by_job.loc[rel]
        assert row["model.n_params"] == s["model"]["n_params"]
        assert row["code.bits"] == pytest.approx(s["code"]["bits"])
        assert row["code.program_bits"] == s["code"]["program_bits"]
        assert row["config.model.n_layers"] == s["config"]["model"]["n_layers"]
        assert row["seed"] == s["seed"]
        h = s["source"]["entropy_rate_bits"]
        assert (math.isnan(row["source.entropy_rate_bits"]) if h is None else row["source.entropy_rate_bits"] == h)
    assert json.loads(by_job.loc["markov2/s/seed0", "env.devices"]) == ["cpu:0"]
    # Sorted by data set, then measured size.
    for _, g in runs.groupby("data.name"):
        assert list(g["model.n_params"]) == sorted(g["model.n_params"])


def test_collect_curves_long_form(sweep_dir):
    root, summaries = sweep_dir
    sweep = collect_lib.collect(root)
    curves = sweep.curves
    assert len(curves) == len(summaries) * STEPS
    assert list(curves.columns[: len(collect_lib.CURVE_KEYS)]) == list(collect_lib.CURVE_KEYS)
    assert INCOMPLETE not in set(curves["job.dir"])
    one = curves[curves["job.dir"] == "tinyshakespeare/l/seed0"]
    assert list(one["step"]) == list(range(STEPS))
    assert (one["model.n_params"] == 302_551).all() and (one["seed"] == 0).all()
    assert (one["data_bytes_trained"] == one["bytes_seen"] - one["step_bytes"]).all()
    assert one["data_bytes_trained"].iloc[0] == 0
    # The resumed job: steps rewritten after a resume keep the last record; the torn line is skipped.
    resumed = curves[curves["job.dir"] == RESUMED]
    assert list(resumed["step"]) == list(range(STEPS))
    assert resumed["code/ideal_bits_per_byte"].max() < 10
    assert sweep.bad_metric_lines == [(RESUMED, 1)]


def test_collect_cli_writes_csv_and_parquet(sweep_dir, tmp_path, capsys):
    root, summaries = sweep_dir
    out = tmp_path / "tables"
    assert cli.main(["collect", str(root), "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert f"{N_JOBS} jobs: {N_JOBS - 2} complete and verified, 1 complete but unverified, 1 incomplete" in printed
    assert f"incomplete: {INCOMPLETE}" in printed and f"unverified: {UNVERIFIED}" in printed
    for stem in ("fake_sweep", "fake_sweep_curves"):
        for ext in ("csv", "parquet"):
            assert f"wrote {out / f'{stem}.{ext}'}" in printed
    csv, parquet = pd.read_csv(out / "fake_sweep.csv"), pd.read_parquet(out / "fake_sweep.parquet")
    assert len(csv) == len(parquet) == len(summaries)
    assert list(csv.columns) == list(parquet.columns)
    assert parquet["code.total_bits"].to_numpy() == pytest.approx(csv["code.total_bits"].to_numpy())
    curves = pd.read_parquet(out / "fake_sweep_curves.parquet")
    assert len(curves) == len(summaries) * STEPS
    assert cli.main(["collect", str(root), "--out", str(out), "--name", "other"]) == 0
    assert (out / "other.parquet").is_file() and (out / "other_curves.csv").is_file()


def test_flatten_nested_lists_and_empty_dicts():
    flat = collect_lib.flatten({"a": {"b": 1, "c": {"d": [1, 2]}}, "e": {}, "f": None})
    assert flat == {"a.b": 1, "a.c.d": "[1, 2]", "e": None, "f": None}


# --------------------------------------------------------------------------- CLI errors


def _one_line_error(capsys) -> str:
    err = capsys.readouterr().err
    assert err.startswith("mdlbench: error: ") and err.count("\n") == 1, err
    return err


def test_cli_errors_are_one_line(tmp_path, capsys):
    assert cli.main(["collect", str(tmp_path / "missing")]) == 2
    assert "not found" in _one_line_error(capsys)

    empty = tmp_path / "empty_sweep"
    (empty / "a" / "b").mkdir(parents=True)
    assert cli.main(["collect", str(empty)]) == 2
    assert "no runs under" in _one_line_error(capsys)

    started = tmp_path / "started" / "d" / "m" / "seed0"
    started.mkdir(parents=True)
    (started / "metrics.jsonl").write_text('{"step": 0}\n')
    assert cli.main(["collect", str(tmp_path / "started")]) == 2
    assert "no finished runs" in _one_line_error(capsys)

    assert cli.main(["plot", str(tmp_path / "missing.csv")]) == 2
    assert "no such sweep directory or table" in _one_line_error(capsys)
    (tmp_path / "notes.txt").write_text("x")
    assert cli.main(["plot", str(tmp_path / "notes.txt")]) == 2
    _one_line_error(capsys)
    pd.DataFrame({"x": [1]}).to_csv(tmp_path / "alien.csv", index=False)
    assert cli.main(["plot", str(tmp_path / "alien.csv")]) == 2
    assert "mdlbench collect" in _one_line_error(capsys)
    assert cli.main(["plot", str(empty)]) == 2
    _one_line_error(capsys)
    alone = tmp_path / "alone"
    alone.mkdir()
    pd.DataFrame({"job.dir": ["a"], "data.name": ["d"], "model.name": ["m"], "model.n_params": [10], "seed": [0],
                  "step": [0], "bytes_seen": [100]}).to_csv(alone / "x_curves.csv", index=False)
    assert cli.main(["plot", str(alone / "x_curves.csv")]) == 2
    assert "curves table" in _one_line_error(capsys)


# --------------------------------------------------------------------------- plots


def _assert_figures(paths: list[Path], prefix: str) -> None:
    names = {p.name for p in paths}
    for fig in ("scaling", "prequential", "two_part"):
        png, svg = f"{prefix}_{fig}.png", f"{prefix}_{fig}.svg"
        assert png in names and svg in names
    for p in paths:
        assert p.is_file() and p.stat().st_size > 1000, p
        if p.suffix == ".png":
            assert p.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
        if p.suffix == ".svg":
            assert b"<svg" in p.read_bytes()[:2000]


def test_plot_from_sweep_dir(sweep_dir, tmp_path):
    root, _ = sweep_dir
    lines: list[str] = []
    paths = plots.make_figures(root, tmp_path / "figs", n_boot=20, log=lines.append)
    _assert_figures(paths, "fake_sweep")
    assert any("unverified" in line for line in lines)

    fit_table = pd.read_csv(tmp_path / "figs" / "fake_sweep_fits.csv")
    power = fit_table[fit_table["form"] == "power_law"]
    assert set(power["data.name"]) == set(DATA)
    assert set(power["metric"]) == {"code.final_chunk_bits_per_byte", "code.bits_per_byte", "total_bits_per_byte"}
    markov = power[(power["data.name"] == "markov2") & (power["metric"] == "code.final_chunk_bits_per_byte")].iloc[0]
    assert markov["entropy_rate_bits"] == 1.5
    assert markov["E_lo"] <= markov["E"] <= markov["E_hi"]
    # The fake curves follow E + 30/N^0.3 + 20/D^0.4 (0.5 % noise per chunk), so the Chinchilla fit
    # of the per-chunk curves must find the planted entropy rate and exponents; this fails if D
    # were taken as the bytes seen *after* the chunk rather than the bytes trained on before it.
    chin = fit_table[(fit_table["form"] == "chinchilla") & (fit_table["data.name"] == "markov2")].iloc[0]
    assert chin["E"] == pytest.approx(1.5, rel=0.05)
    assert chin["alpha"] == pytest.approx(0.3, rel=0.05) and chin["beta"] == pytest.approx(0.4, rel=0.1)
    assert any(line.startswith("markov2: largest model xl") for line in lines)


def test_plot_cli_from_collected_table(sweep_dir, tmp_path, capsys):
    root, _ = sweep_dir
    tables = tmp_path / "tables"
    collect_lib.write_tables(collect_lib.collect(root), tables, "sw")
    out = tmp_path / "figs"
    assert cli.main(["plot", str(tables / "sw.csv"), "--out", str(out), "--n-boot", "10", "--include-unverified"]) == 0
    printed = capsys.readouterr().out
    paths = [Path(line.removeprefix("wrote ")) for line in printed.splitlines() if line.startswith("wrote ")]
    _assert_figures(paths, "sw")
    assert "fit markov2 power_law on code.final_chunk_bits_per_byte: " in printed
    assert "E = " in printed and "A = " in printed
    assert "unverified" not in printed  # kept on request, so no note about leaving them out

    # The Parquet tables load to the same data (the curves found through the runs table's name).
    runs_csv, curves_csv, name_csv = plots.load_tables(tables / "sw.csv")
    runs_pq, curves_pq, name_pq = plots.load_tables(tables / "sw.parquet")
    assert name_csv == name_pq == "sw"
    assert runs_pq.shape == runs_csv.shape and curves_pq.shape == curves_csv.shape
    assert runs_pq["code.bits_per_byte"].to_numpy() == pytest.approx(runs_csv["code.bits_per_byte"].to_numpy())
    assert plots.load_tables(tables / "sw_curves.parquet")[2] == "sw"


def test_svg_output_is_reproducible(sweep_dir, tmp_path):
    root, _ = sweep_dir
    runs, _, _ = plots.load_tables(root)
    usable, _ = scaling_figures.usable_runs(runs, include_unverified=False)
    one = usable[usable["data.name"] == "markov2"]
    a = scaling_figures.plot_two_part(one, tmp_path / "a")
    b = scaling_figures.plot_two_part(one, tmp_path / "b")
    assert a[1].suffix == ".svg" and a[1].read_bytes() == b[1].read_bytes()


def test_mixed_model_families_are_separate_series():
    rows = [{"data.name": "d", "model.name": f"{fam}-{n:g}", "model.family": fam, "model.n_params": n, "seed": 0,
             "code.final_chunk_bits_per_byte": 1.5 + a * n**-0.3, "source.entropy_rate_bits": 1.5,
             "job.status": "complete"}
            for fam, a in (("transformer", 30.0), ("lstm", 60.0)) for n in (1e3, 1e4, 1e5, 1e6)]
    rows.append({"data.name": "d", "model.name": "uniform", "model.family": "uniform", "model.n_params": 0,
                 "seed": 0, "code.final_chunk_bits_per_byte": 8.0, "job.status": "complete"})
    runs, notes = scaling_figures.usable_runs(pd.DataFrame(rows), include_unverified=False)
    assert len(runs) == 8 and any("no parameters" in n for n in notes)
    table = scaling_figures.scaling_fits(runs, n_boot=0).set_index("series")
    assert set(table.index) == {"d (lstm)", "d (transformer)"}
    assert table.loc["d (lstm)", "A"] == pytest.approx(60.0, rel=1e-3)
    assert table.loc["d (transformer)", "A"] == pytest.approx(30.0, rel=1e-3)
    assert table.loc["d (lstm)", "E"] == pytest.approx(1.5, rel=1e-3)
    assert table.loc["d (lstm)", "E_rel_to_entropy"] == pytest.approx(0.0, abs=1e-3)


# --------------------------------------------------------------------------- fits (planted parameters)


def _within(fit: dict, truth: dict, rel: float) -> None:
    for k, v in truth.items():
        assert fit[k] == pytest.approx(v, rel=rel), (k, fit[k], v)


def _ci_contains(fit: dict, truth: dict) -> None:
    for k, v in truth.items():
        lo, hi = fit[f"{k}_ci"]
        assert lo <= v <= hi, (k, lo, v, hi)


def test_power_law_recovers_planted_parameters_with_seeds():
    truth = {"E": 1.3, "A": 40.0, "alpha": 0.35}
    rng = np.random.default_rng(0)
    sizes = np.logspace(3, 6, 13)  # quarter decades
    n = np.repeat(sizes, 3)
    seeds = np.tile(np.arange(3), sizes.size)
    loss = fits.power_law(n, **truth) * np.exp(rng.normal(0, 0.005, n.size))
    fit = fits.fit_power_law(n, loss, groups=seeds, n_boot=200, seed=1)
    _within(fit, truth, 0.05)
    _ci_contains(fit, truth)
    assert fit["ci_method"] == "runs" and fit["n_boot"] == 200 and fit["ci_dof"] == 13 * 2
    assert fit["n_sizes"] == 13 and fit["n_points"] == 39
    assert fit["rmse_log"] == pytest.approx(0.005, rel=0.3)
    assert fit["status"] == fits.STATUS_OK and fit["identifiable"] and fit["valid"] and fit["flags"] == ""


def test_power_law_single_run_per_size_uses_residual_bootstrap():
    truth = {"E": 1.3, "A": 40.0, "alpha": 0.35}
    rng = np.random.default_rng(3)
    n = np.logspace(3, 6, 13)
    loss = fits.power_law(n, **truth) * np.exp(rng.normal(0, 0.003, n.size))
    fit = fits.fit_power_law(n, loss, n_boot=200, seed=0)
    assert fit["ci_method"] == "residuals"
    _within(fit, truth, 0.05)
    _ci_contains(fit, truth)


def test_power_law_pure_power_law_stays_at_E_zero_bound():
    n = np.logspace(3, 6, 8)
    fit = fits.fit_power_law(n, 5.0 * n**-0.2, n_boot=0)
    assert fit["E"] == pytest.approx(0.0, abs=1e-3)
    assert fit["alpha"] == pytest.approx(0.2, rel=1e-3)
    assert math.isnan(fit["E_ci"][0])
    # No interval: the fit is reported, but not as identified.
    assert fit["status"] == fits.STATUS_NOT_IDENTIFIABLE and "no confidence interval" in fit["flags"]


def test_asymptote_at_its_bound_is_not_identifiable():
    # A pure power law (E = 0, as the committed tinyshakespeare Chinchilla fit found): E sits on
    # the optimiser's bound, so the data do not determine it.
    rng = np.random.default_rng(0)
    n = np.repeat(np.logspace(3, 6, 6), 2)
    loss = 5.0 * n**-0.2 * np.exp(rng.normal(0, 0.003, n.size))
    fit = fits.fit_power_law(n, loss, groups=np.tile([0, 1], 6), n_boot=20, seed=0)
    assert fit["E"] >= 0.0 and fit["E_ci"][0] >= 0.0  # E is constrained to E >= 0
    assert not fit["identifiable"] and fit["status"] == fits.STATUS_NOT_IDENTIFIABLE
    assert "E" in fit["flags"] and "bound 0" in fit["flags"]


def test_too_few_sizes_for_the_parameters_is_not_identifiable():
    # 3 sizes for 3 parameters: the law passes through the three means, nothing tests it.
    truth = {"E": 1.3, "A": 40.0, "alpha": 0.35}
    rng = np.random.default_rng(1)
    n = np.repeat([1e3, 1e4, 1e5], 3)
    loss = fits.power_law(n, **truth) * np.exp(rng.normal(0, 0.003, n.size))
    fit = fits.fit_power_law(n, loss, groups=np.tile([0, 1, 2], 3), n_boot=20, seed=0)
    assert fit["n_sizes"] == 3 and not fit["identifiable"]
    assert "3 distinct model sizes (needs >= 4" in fit["flags"]
    # Chinchilla: 3 sizes x 12 data amounts; the D axis is fine, the N axis is not.
    truth = {"E": 1.2, "A": 40.0, "alpha": 0.35, "B": 60.0, "beta": 0.3}
    nn, dd = (a.ravel() for a in np.meshgrid([1e3, 1e4, 1e5], np.logspace(4, 7, 12), indexing="ij"))
    chin = fits.fit_chinchilla(nn, dd, fits.chinchilla(nn, dd, **truth), n_boot=0)
    assert chin["status"] == fits.STATUS_NOT_IDENTIFIABLE and "3 distinct model sizes" in chin["flags"]
    assert "data amounts" not in chin["flags"] and chin["n_data"] == 12


@pytest.mark.parametrize("ci,needle", [
    ({"A_ci": (7.0, 1.7e5)}, "A's CI [7, 1.7e+05] spans 4.4 orders of magnitude"),
    ({"alpha_ci": (0.3, 5.0)}, "alpha's CI [0.3, 5] reaches its bound 5"),
    ({"E_ci": (0.0, 1.4)}, "E's CI [0, 1.4] reaches its bound 0"),
])
def test_assess_flags_wide_or_bounded_intervals(ci, needle):
    fit = {"E": 1.0, "A": 40.0, "alpha": 0.5, "E_ci": (0.9, 1.1), "A_ci": (30.0, 50.0), "alpha_ci": (0.4, 0.6),
           "n_sizes": 8, "n_boot": 100}
    assert fits.assess(fit, ("E", "A", "alpha"), min_sizes=4)["status"] == fits.STATUS_OK
    verdict = fits.assess({**fit, **ci}, ("E", "A", "alpha"), min_sizes=4)
    assert verdict["status"] == fits.STATUS_NOT_IDENTIFIABLE and not verdict["identifiable"]
    assert needle in verdict["flags"]


def test_fit_on_a_known_entropy_source_never_reports_E_below_it_unflagged():
    # Points from a source of entropy rate H: cross-entropy = H + a KL term that shrinks with N,
    # measured with 0.5 % noise. Half the fits land below H by chance; each of those must say
    # "invalid", and none above H may.
    h = 1.4412
    sizes = np.repeat(np.logspace(3.5, 6, 5), 2)
    below = 0
    for trial in range(8):
        rng = np.random.default_rng(100 + trial)
        loss = fits.power_law(sizes, h, 3.0, 0.4) * np.exp(rng.normal(0, 0.005, sizes.size))
        fit = fits.fit_power_law(sizes, loss, groups=np.tile([0, 1], 5), n_boot=10, seed=trial,
                                 entropy_rate_bits=h)
        assert fit["entropy_rate_bits"] == h
        if fit["E"] < h:
            below += 1
            assert fit["status"] == fits.STATUS_INVALID and not fit["valid"]
            assert f"below the entropy rate {h:.4g}" in fit["flags"]
        else:
            assert fit["valid"] and fit["status"] != fits.STATUS_INVALID
    assert below > 0  # the invalid branch was exercised


def test_invalid_and_unidentifiable_fits_are_marked_in_table_and_figure(tmp_path):
    # The Chinchilla-shaped points follow E = 1.3, but the source claims H = 1.5 (as when a fit
    # undershoots a true rate): the table and the legend must both say invalid. A second data
    # set has only 3 sizes: not identifiable.
    rows = []
    for name, h, sizes in (("low", 1.5, (1e3, 1e4, 1e5, 1e6)), ("few", None, (1e3, 1e4, 1e5))):
        for n in sizes:
            for seed in (0, 1):
                rows.append({"data.name": name, "model.name": f"m{n:g}", "model.n_params": n, "seed": seed,
                             "code.final_chunk_bits_per_byte": fits.power_law(n, 1.3, 30.0, 0.3) * (1 + 0.001 * seed),
                             "source.entropy_rate_bits": h, "job.status": "complete"})
    runs, _ = scaling_figures.usable_runs(pd.DataFrame(rows), include_unverified=False)
    table = scaling_figures.scaling_fits(runs, n_boot=10).set_index("series")
    assert table.loc["low", "status"] == fits.STATUS_INVALID
    assert "below the entropy rate 1.5" in table.loc["low", "flags"]
    assert table.loc["few", "status"] == fits.STATUS_NOT_IDENTIFIABLE
    fig = scaling_figures._scaling_figure(runs, table.reset_index())
    labels = [t.get_text() for ax in fig.axes if ax.get_legend() for t in ax.get_legend().get_texts()]
    assert any(label.startswith("fit [INVALID: E BELOW ENTROPY RATE (E = 1.3") for label in labels), labels
    assert any(label.startswith("fit [NOT IDENTIFIABLE (3 distinct model sizes") for label in labels), labels
    assert sum(bool(re.fullmatch(r"fitted E = \d\.\d{3} \[\d\.\d{3}, \d\.\d{3}\] \(real values\)", label))
               for label in labels) == 2  # both fits show E's interval


def test_chinchilla_recovers_planted_parameters():
    truth = {"E": 1.2, "A": 40.0, "alpha": 0.35, "B": 60.0, "beta": 0.3}
    rng = np.random.default_rng(0)
    n, d, s = (a.ravel() for a in np.meshgrid(np.logspace(3, 6, 6), np.logspace(4, 7, 12), np.arange(3), indexing="ij"))
    runs = [f"{ni:g}/seed{si}" for ni, si in zip(n, s)]  # a run's whole curve is one bootstrap unit
    loss = fits.chinchilla(n, d, **truth) * np.exp(rng.normal(0, 0.005, n.size))
    fit = fits.fit_chinchilla(n, d, loss, groups=runs, n_boot=100, seed=0, entropy_rate_bits=1.2 * 0.99)
    _within(fit, truth, 0.05)
    _ci_contains(fit, truth)
    assert fit["ci_method"] == "runs" and fit["n_points"] == n.size
    assert fit["status"] == fits.STATUS_OK and fit["n_sizes"] == 6 and fit["n_data"] == 12


def test_fit_input_errors():
    with pytest.raises(AnalysisError, match="3 distinct parameter counts"):
        fits.fit_power_law([1e3, 1e3, 1e4], [2.0, 2.1, 1.8])
    with pytest.raises(AnalysisError, match="positive"):
        fits.fit_power_law([1e3, 1e4, 1e5], [2.0, -1.0, 1.8])
    with pytest.raises(AnalysisError, match="same length"):
        fits.fit_power_law([1e3, 1e4, 1e5], [2.0, 1.9])
    with pytest.raises(AnalysisError, match="NaN"):
        fits.fit_power_law([1e3, 1e4, 1e5], [2.0, float("nan"), 1.8])
    with pytest.raises(AnalysisError, match="Chinchilla fit needs"):
        fits.fit_chinchilla([1e3] * 6, np.logspace(3, 5, 6), np.linspace(3, 2, 6))


# --------------------------------------------------------------------------- no JAX


def test_analysis_never_imports_jax():
    code = ("import sys, mdlbench.analysis.collect, mdlbench.analysis.fits, mdlbench.analysis.plots, "
            "mdlbench.analysis.scaling_figures, mdlbench.analysis.figures, mdlbench.analysis.flops, mdlbench.cli; "
            "bad = sorted(m for m in sys.modules if m == 'jax' or m.startswith(('jax.', 'flax', 'optax'))); "
            "assert not bad, bad")
    root = Path(__file__).resolve().parent.parent
    subprocess.run([sys.executable, "-c", code], check=True, cwd=root, env={"PYTHONPATH": str(root), "PATH": ""})
