"""Scaling figures of a sweep run in the fast mode with a few real jobs: estimates are points too.

The sweep is fabricated on disk like ``experiment=scaling_text`` leaves it: Transformer presets
tx12k..tx385k x (tinyshakespeare, dickens) x 2 seeds, every job ``code.name=estimate`` except the
smallest and largest model on tinyshakespeare, coded for real (``code.real_for``). Each job's
``summary.json`` and ``metrics.jsonl`` follow the schema ``mdlbench.train`` writes for its mode
(``estimate_dataset`` / ``code_dataset``), with code lengths drawn from a Chinchilla-shaped law.
"""

from __future__ import annotations

import json
import math
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from mdlbench import cli
from mdlbench import config as config_lib
from mdlbench.analysis import collect as collect_lib
from mdlbench.analysis import fits, flops, plots
from mdlbench.analysis import scaling_figures as sf

# (preset, measured n_params, d_model, n_layers, n_heads): the shapes of conf/model/tx*.yaml.
MODELS = [("tx12k", 11_808, 16, 1, 2), ("tx29k", 29_440, 32, 1, 2), ("tx82k", 82_080, 48, 2, 2),
          ("tx133k", 133_184, 64, 2, 2), ("tx385k", 385_344, 96, 3, 4)]
DATA = {"tinyshakespeare": 2.6, "dickens": 2.3}  # name -> planted asymptote E of the fake law
SEEDS = (0, 1)
REAL_FOR = {("tx12k", "tinyshakespeare"), ("tx385k", "tinyshakespeare")}
B, T, STEPS = 16, 32, 40
STEP_BYTES = B * T
N_BYTES = STEPS * STEP_BYTES
PROGRAM_BITS = 377_344
N_JOBS = len(MODELS) * len(DATA) * len(SEEDS)
N_REAL = len(REAL_FOR) * len(SEEDS)


def _law(n_params: float, trained: np.ndarray, E: float) -> np.ndarray:
    return np.where(trained > 0, fits.chinchilla(n_params, np.maximum(trained, 1), E=E, A=30.0, alpha=0.3, B=20.0,
                                                 beta=0.4), 7.95)


def _config(data: str, model: tuple, seed: int, real: bool) -> dict:
    name, _, d_model, n_layers, n_heads = model
    cfg = config_lib.Config(experiment="scaling_text", seed=seed)
    m = cfg.model
    m.name, m.family, m.d_model, m.n_layers, m.n_heads = name, "transformer", d_model, n_layers, n_heads
    m.positions, m.context, m.memory, m.alibi = "rope", 128, "bytes", True
    cfg.data.name, cfg.data.max_bytes = data, N_BYTES
    cfg.code.name = "prequential" if real else "estimate"  # what config.resolve_mode leaves a job
    cfg.code.batch_size, cfg.code.seq_len, cfg.code.segment_steps = B, T, 1000
    return config_lib.to_dict(cfg)


def _make_job(root: Path, data: str, model: tuple, seed: int, rng: np.random.Generator,
              verified: bool = True) -> dict:
    name, n_params = model[0], model[1]
    real = (name, data) in REAL_FOR
    job = root / data / name / f"seed{seed}"
    (job / ".hydra").mkdir(parents=True)
    (job / ".hydra" / "config.yaml").write_text(f"experiment: scaling_text\nseed: {seed}\nmodel:\n  name: {name}\n")
    config = _config(data, model, seed, real)
    bytes_seen = STEP_BYTES * np.arange(1, STEPS + 1)
    est_bpb = _law(n_params, bytes_seen - STEP_BYTES, DATA[data]) * np.exp(rng.normal(0, 0.003, STEPS))
    est_bits = est_bpb * STEP_BYTES
    tail = slice(STEPS - STEPS // 10, STEPS)
    common = {"experiment": "scaling_text", "seed": seed,
              "data": {"name": data, "bytes": N_BYTES, "sha256": "cd" * 32, "path": f"/data/{data}"},
              "source": {"entropy_rate_bits": None}, "model": {**config["model"], "n_params": n_params}}
    if not real:  # mdlbench.train.estimate_dataset
        records = [{"step": t, "bytes_seen": int(bytes_seen[t]), "step_bytes": STEP_BYTES,
                    "estimate/ideal_bits": float(est_bits[t]), "estimate/cum_ideal_bits": float(est_bits[: t + 1].sum()),
                    "estimate/cum_ideal_bits_per_byte": float(est_bits[: t + 1].sum() / bytes_seen[t]),
                    "train/loss_nats": float(est_bpb[t] * math.log(2)), "time/elapsed_s": 0.1 * (t + 1)}
                   for t in range(STEPS)]
        summary = {**common, "code": {
            "name": "estimate",
            "kind": "estimate (ideal): Σ pre-update training loss of every batch; no bitstream, nothing verified",
            "ideal_bits": float(est_bits.sum()), "ideal_bits_per_byte": float(est_bits.sum() / N_BYTES),
            "program_bits": PROGRAM_BITS, "ideal_total_bits": PROGRAM_BITS + float(est_bits.sum()),
            "final_chunk_ideal_bits_per_byte": float(est_bits[tail].sum() / (STEP_BYTES * (STEPS // 10))),
            "steps": STEPS},
            "time": {"train_s": 4.0}, "perf": {"train_bytes_per_s": N_BYTES / 4.0}, "config": config}
    else:  # mdlbench.train.code_dataset: the coding probabilities differ from the training forward's slightly
        ideal_bits = est_bits * (1 + 1e-5)
        bits = np.ceil(ideal_bits / 32) * 32
        records = [{"step": t, "bytes_seen": int(bytes_seen[t]), "step_bytes": STEP_BYTES,
                    "code/ideal_bits": float(ideal_bits[t]), "code/ideal_bits_per_byte": float(ideal_bits[t] / STEP_BYTES),
                    "code/bits": int(bits[t]), "code/cum_ideal_bits": float(ideal_bits[: t + 1].sum()),
                    "code/cum_bits": int(bits[: t + 1].sum()),
                    "code/cum_bits_per_byte": float(bits[: t + 1].sum() / bytes_seen[t]),
                    "train/loss_nats": float(est_bpb[t] * math.log(2)), "time/elapsed_s": 0.2 * (t + 1)}
                   for t in range(STEPS)]
        total = PROGRAM_BITS + int(bits.sum())
        summary = {**common, "code": {
            "name": "prequential", "bits": int(bits.sum()), "ideal_bits": float(ideal_bits.sum()),
            "program_bits": PROGRAM_BITS, "total_bits": total, "bits_per_byte": float(bits.sum() / N_BYTES),
            "ideal_bits_per_byte": float(ideal_bits.sum() / N_BYTES), "coded_over_ideal": float(bits.sum() / ideal_bits.sum()),
            "ratio": 8 * N_BYTES / total, "container_bytes": int(bits.sum() // 8 + 400),
            "final_chunk_bits_per_byte": float(bits[tail].sum() / (STEP_BYTES * (STEPS // 10))),
            "final_chunk_ideal_bits_per_byte": float(ideal_bits[tail].sum() / (STEP_BYTES * (STEPS // 10)))},
            "estimate": {"kind": "training-loss estimate (ideal; pre-update loss of every batch, training forward)",
                         "bits": float(est_bits.sum()), "bits_per_byte": float(est_bits.sum() / N_BYTES),
                         "over_real": float(est_bits.sum() / bits.sum()), "over_ideal": float(est_bits.sum() / ideal_bits.sum()),
                         "final_chunk_bits_per_byte": float(est_bits[tail].sum() / (STEP_BYTES * (STEPS // 10)))},
            "verify": {"ok": verified, "decoded_sha256": "cd" * 32 if verified else None},
            "time": {"encode_s": 8.0, "encode_total_s": 9.0, "decode_s": 7.0},
            "perf": {"encode_bytes_per_s": N_BYTES / 8.0}, "env": {"platform": "cpu", "threads": 1},
            "config": config}
    (job / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
    (job / "summary.json").write_text(json.dumps(summary, indent=1))
    return summary


def _make_sweep(root: Path, unverified: str | None = None) -> dict[str, dict]:
    rng = np.random.default_rng(0)
    out = {}
    for data in DATA:
        for model in MODELS:
            for seed in SEEDS:
                rel = f"{data}/{model[0]}/seed{seed}"
                out[rel] = _make_job(root, data, model, seed, rng, verified=rel != unverified)
    return out


@pytest.fixture(scope="module")
def sweep(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, dict]]:
    root = tmp_path_factory.mktemp("runs") / "scaling_text"
    return root, _make_sweep(root)


@pytest.fixture(scope="module")
def usable(sweep) -> pd.DataFrame:
    runs, notes = sf.usable_runs(collect_lib.collect(sweep[0]).runs, include_unverified=False)
    return runs


def _legend_texts(fig) -> list[str]:
    """Legend entries with their line wrapping undone (labels are wrapped to the panel width)."""
    return [" ".join(t.get_text().split()) for ax in fig.axes if ax.get_legend() for t in ax.get_legend().get_texts()]


# --------------------------------------------------------------------------- collect


def test_collect_keeps_estimate_jobs_as_labelled_rows(sweep, tmp_path, capsys):
    root, summaries = sweep
    s = collect_lib.collect(root)
    runs = s.runs.set_index("job.dir")
    assert len(runs) == N_JOBS and not s.incomplete
    assert len(s.estimate) == N_JOBS - N_REAL and len(s.complete) == N_REAL and not s.ideal
    for rel, summary in summaries.items():
        row = runs.loc[rel]
        if summary["code"]["name"] == "estimate":
            assert row["job.status"] == "estimate"
            # No bitstream: the real columns stay empty, the estimate sits in estimate.*.
            assert math.isnan(row["code.bits_per_byte"]) and math.isnan(row["code.bits"])
            assert row["estimate.bits_per_byte"] == summary["code"]["ideal_bits_per_byte"]
            assert row["estimate.final_chunk_bits_per_byte"] == summary["code"]["final_chunk_ideal_bits_per_byte"]
            assert "no bitstream" in row["estimate.kind"]
        else:
            assert row["job.status"] == "complete"
            assert row["code.bits_per_byte"] == summary["code"]["bits_per_byte"]
            assert row["estimate.bits_per_byte"] == summary["estimate"]["bits_per_byte"]
            assert row["estimate.final_chunk_bits_per_byte"] == summary["estimate"]["final_chunk_bits_per_byte"]
        assert row["estimate.total_bits"] == pytest.approx(PROGRAM_BITS + row["estimate.bits"])

    curves = s.curves
    assert len(curves) == N_JOBS * STEPS
    is_est = curves["job.dir"].isin(s.estimate)
    est, real = curves[is_est], curves[~is_est]
    assert est["estimate/ideal_bits_per_byte"].to_numpy() == pytest.approx(
        (est["estimate/ideal_bits"] / est["step_bytes"]).to_numpy())
    # A step is either a real code's or an estimate's: the column families never mix.
    assert est["code/cum_bits_per_byte"].isna().all() and est["code/ideal_bits_per_byte"].isna().all()
    assert real["estimate/ideal_bits_per_byte"].isna().all() and real["code/cum_bits_per_byte"].notna().all()

    assert cli.main(["collect", str(root), "--out", str(tmp_path)]) == 0
    printed = capsys.readouterr().out
    assert (f"{N_JOBS} jobs: {N_REAL} complete and verified, {N_JOBS - N_REAL} estimate(s) (training loss, "
            "no bitstream: nothing to decode), 0 complete but unverified, 0 incomplete") in printed


def test_training_flops_counted_from_the_shape_and_monotone_in_size(sweep):
    root, summaries = sweep
    s = collect_lib.collect(root)
    runs = s.runs
    for rel, summary in list(summaries.items())[:3]:
        row = runs[runs["job.dir"] == rel].iloc[0]
        expected = flops.training_flops(summary["model"], summary["model"]["n_params"], N_BYTES, T, 1)
        assert row["compute.training_flops"] == pytest.approx(expected)
        assert row["compute.training_flops"] == pytest.approx(row["compute.training_flops_per_byte"] * N_BYTES)
    for _, g in runs.groupby(["data.name", "seed"]):
        g = g.sort_values("model.n_params")
        assert len(g) == len(MODELS) and (np.diff(g["compute.training_flops"].to_numpy()) > 0).all()
    # Per step: the FLOPs spent before the chunk was coded, rising from 0 at the first chunk.
    one = s.curves[s.curves["job.dir"] == "dickens/tx82k/seed0"]
    per_byte = runs.loc[runs["job.dir"] == "dickens/tx82k/seed0", "compute.training_flops_per_byte"].item()
    assert one["compute/training_flops"].iloc[0] == 0
    assert one["compute/training_flops"].to_numpy() == pytest.approx(per_byte * one["data_bytes_trained"].to_numpy())
    assert (np.diff(one["compute/training_flops"].to_numpy()) > 0).all()


def test_flops_shape_comes_from_the_recorded_config_when_the_summary_lacks_it(tmp_path):
    root = tmp_path / "old"
    summary = _make_job(root, "dickens", MODELS[3], 0, np.random.default_rng(1))
    summary["model"] = {"name": "tx133k", "n_params": MODELS[3][1]}  # an older summary: no shape fields
    (root / "dickens" / "tx133k" / "seed0" / "summary.json").write_text(json.dumps(summary))
    row = collect_lib.collect(root).runs.iloc[0]
    expected = flops.training_flops(summary["config"]["model"], MODELS[3][1], N_BYTES, T, 1)
    assert row["compute.training_flops"] == pytest.approx(expected)
    # Without a window length nothing is counted rather than something wrong.
    assert collect_lib.compute_columns({"model.n_params": 10, "model.d_model": 4, "data.bytes": 100}) == {}


# --------------------------------------------------------------------------- fits


def test_fits_say_what_they_were_fitted_on_and_never_pool_kinds(usable):
    table = sf.scaling_fits(usable, n_boot=0)
    assert set(table["fitted_on"]) == {"real", "estimate"}
    assert (table.loc[table["fitted_on"] == "estimate", "metric"].str.startswith("estimate.")).all()
    assert not (table.loc[table["fitted_on"] == "real", "metric"].str.startswith("estimate.")).any()
    t = table.set_index(["series", "metric"])
    # Cumulative estimates: every job has one (real jobs record theirs), 5 sizes x 2 seeds.
    est = t.loc[("tinyshakespeare", "estimate.bits_per_byte")]
    assert est["n_sizes"] == 5 and est["n_points"] == 10
    # Final-chunk estimates: real runs record theirs too, so every size is in the fit.
    assert t.loc[("tinyshakespeare", "estimate.final_chunk_bits_per_byte"), "n_sizes"] == 5
    assert t.loc[("dickens", "estimate.final_chunk_bits_per_byte"), "n_sizes"] == 5
    # Real values exist at 2 sizes on tinyshakespeare: no fit, said so; none at all on dickens.
    assert "3 distinct parameter counts" in t.loc[("tinyshakespeare", "code.bits_per_byte"), "note"]
    assert "no real values" in t.loc[("dickens", "code.bits_per_byte"), "note"]
    assert pd.isna(t.loc[("dickens", "code.bits_per_byte"), "E"])


def test_real_and_estimate_fits_recover_their_own_planted_laws():
    # The same jobs carry a real value from one law and an estimate from another: pooling them
    # would land between the two asymptotes.
    rows = []
    for n in np.logspace(3, 6, 7):
        for seed in (0, 1):
            noise = 1 + 0.001 * seed
            rows.append({"job.dir": f"d/m{n:g}/seed{seed}", "job.status": "complete", "data.name": "d",
                         "model.name": f"m{n:g}", "model.n_params": n, "seed": seed,
                         "code.bits_per_byte": fits.power_law(n, 2.0, 30.0, 0.3) * noise,
                         "estimate.bits_per_byte": fits.power_law(n, 1.5, 30.0, 0.3) * noise})
    runs, _ = sf.usable_runs(pd.DataFrame(rows), include_unverified=False)
    table = sf.scaling_fits(runs, n_boot=0).set_index("fitted_on")
    assert table.loc["real", "metric"] == "code.bits_per_byte"
    assert table.loc["real", "E"] == pytest.approx(2.0, rel=0.01)
    assert table.loc["estimate", "E"] == pytest.approx(1.5, rel=0.01)


# --------------------------------------------------------------------------- figures


def _kind_containers(fig) -> dict[str, list]:
    """Errorbar containers per kind label found in their legend label."""
    out: dict[str, list] = {k.label: [] for k in sf.KINDS}
    for ax in fig.axes:
        for c in ax.containers:
            for k in sf.KINDS:
                if k.label in str(c.get_label()):
                    out[k.label].append(c)
    return out


def test_scaling_figure_marks_estimates_and_real_points_apart(usable):
    table = sf.scaling_fits(usable, n_boot=0)
    fig = sf._scaling_figure(usable, table)
    kinds = _kind_containers(fig)
    real, est = kinds[sf.REAL.label], kinds[sf.ESTIMATE.label]
    assert real and est and not kinds[sf.UNVERIFIED.label]
    for c in real:  # filled circles
        line = c.lines[0]
        assert line.get_marker() == "o" and line.get_markerfacecolor() != "none"
    for c in est:  # hollow diamonds
        line = c.lines[0]
        assert line.get_marker() == "D" and line.get_markerfacecolor() == "none"
    # Real points only where a job was coded for real; estimate points at every size.
    real_ts = [c for c in real if str(c.get_label()).startswith("tinyshakespeare")]
    assert all(sorted(c.lines[0].get_xdata()) == [MODELS[0][1], MODELS[-1][1]] for c in real_ts)
    assert not any(str(c.get_label()).startswith("dickens") for c in real)
    cum_est = [c for c in est if str(c.get_label()).startswith("tinyshakespeare")][-1]  # cumulative panel
    assert len(cum_est.lines[0].get_xdata()) == len(MODELS)
    labels = _legend_texts(fig)
    assert any("fit [" in t and "to estimates (training loss)" in t for t in labels)
    assert any(t.startswith("fitted E = ") and t.endswith("(estimates)") for t in labels)
    assert not any("to real values" in t for t in labels)  # no real fit was possible here
    assert "estimate only (training loss, no bitstream)" in fig._suptitle.get_text()


def test_compute_figure_puts_each_size_at_its_counted_flops(sweep, usable):
    curves = collect_lib.collect(sweep[0]).curves
    fig = sf._compute_figure(usable, curves)
    kinds = _kind_containers(fig)
    flops_of = dict(zip(usable["model.name"], usable["compute.training_flops"]))
    for c in kinds[sf.ESTIMATE.label] + kinds[sf.REAL.label]:
        xs = sorted(c.lines[0].get_xdata())
        assert all(any(x == pytest.approx(f) for f in flops_of.values()) for x in xs)
    assert kinds[sf.REAL.label] and kinds[sf.ESTIMATE.label]
    labels = _legend_texts(fig)
    # Bottom row: every size's per-chunk curve against compute, the real ones solid, estimates dashed.
    lines = [ln for ax in fig.axes for ln in ax.get_lines() if "params)" in str(ln.get_label())]
    real_lines = [ln for ln in lines if sf.REAL.label in ln.get_label()]
    est_lines = [ln for ln in lines if sf.ESTIMATE.label in ln.get_label()]
    assert {ln.get_label().split(" ")[0] for ln in real_lines} == {"tx12k", "tx385k"}
    assert len(est_lines) == len(MODELS) - 2 + len(MODELS)  # tinyshakespeare's 3 + dickens' 5
    assert all(ln.get_linestyle() == "-" for ln in real_lines) and all(ln.get_linestyle() == "--" for ln in est_lines)
    assert all((np.asarray(ln.get_xdata()) > 0).all() for ln in lines)  # log axis: the untrained chunk is left out
    assert any("training FLOPs" in ax.get_xlabel() for ax in fig.axes)
    assert labels


def test_prequential_and_two_part_figures_label_every_job_by_kind(sweep, usable):
    curves = collect_lib.collect(sweep[0]).curves
    fig = sf._prequential_figure(curves, usable)
    lines = [ln for ax in fig.axes for ln in ax.get_lines() if "params)" in str(ln.get_label())]
    # 2 rows (per chunk, cumulative) x one line per (size, kind) and data set; seeds averaged.
    assert len(lines) == 2 * len(MODELS) * len(DATA)
    for ln in lines:
        model = ln.get_label().split(" ")[0]
        data = next(ax for ax in fig.axes if ln in ax.get_lines()).get_title().split(":")[0]
        real = (model, data) in REAL_FOR
        assert (sf.REAL.label if real else sf.ESTIMATE.label) in ln.get_label(), ln.get_label()
        assert "mean of 2 seeds" in ln.get_label()
    fig = sf._two_part_figure(usable)
    labels = _legend_texts(fig)
    assert f"total = program + data: {sf.ESTIMATE.label}" in labels
    assert f"total = program + data: {sf.REAL.label}" in labels
    assert any(t.startswith("shortest real total: ") for t in labels)
    assert any(t.startswith("shortest estimate total: ") for t in labels)


def test_make_figures_draws_an_estimate_only_sweep(sweep, tmp_path):
    # The dickens half of the sweep has no real job at all: before, nothing was drawn.
    root = tmp_path / "est_only"
    shutil.copytree(sweep[0] / "dickens", root / "dickens")
    lines: list[str] = []
    paths = plots.make_figures(root, tmp_path / "figs", n_boot=10, log=lines.append)
    names = {p.name for p in paths}
    for fig in ("scaling", "compute", "prequential", "two_part"):
        assert {f"est_only_{fig}.png", f"est_only_{fig}.svg"} <= names, fig
    for p in paths:
        assert p.stat().st_size > 1000
    table = pd.read_csv(tmp_path / "figs" / "est_only_fits.csv")
    assert set(table["fitted_on"].dropna()) == {"estimate"}
    power = table[table["form"] == "power_law"]
    assert set(power["metric"]) == {"estimate.final_chunk_bits_per_byte", "estimate.bits_per_byte",
                                    "estimate.total_bits_per_byte"}
    chin = table[table["form"] == "chinchilla"].iloc[0]
    assert chin["metric"] == "estimate/ideal_bits_per_byte" and chin["E"] == pytest.approx(DATA["dickens"], rel=0.1)
    assert any("fitted on estimates (training loss)" in line for line in lines)


def test_make_figures_on_the_mixed_sweep_logs_kinds_and_writes_four_figures(sweep, tmp_path):
    lines: list[str] = []
    paths = plots.make_figures(sweep[0], tmp_path / "figs", n_boot=10, log=lines.append)
    assert {p.name for p in paths} >= {f"scaling_text_{f}.{e}" for f in ("scaling", "compute", "prequential",
                                                                          "two_part") for e in ("png", "svg")}
    assert not any("record only their cumulative estimate" in line for line in lines)
    assert any(line.startswith("fit tinyshakespeare power_law on code.bits_per_byte: skipped") for line in lines)
    table = pd.read_csv(tmp_path / "figs" / "scaling_text_fits.csv")
    chin = table[table["form"] == "chinchilla"].set_index(["data.name", "fitted_on"])
    assert set(chin.index) == {("tinyshakespeare", "real"), ("tinyshakespeare", "estimate"), ("dickens", "estimate")}


def test_unverified_real_jobs_are_left_out_or_drawn_apart(tmp_path):
    root = tmp_path / "scaling_text"
    _make_sweep(root, unverified="tinyshakespeare/tx385k/seed1")
    runs_all = collect_lib.collect(root).runs
    runs, notes = sf.usable_runs(runs_all, include_unverified=False)
    assert len(runs) == N_JOBS - 1 and any("1 unverified run(s)" in n for n in notes)
    runs, _ = sf.usable_runs(runs_all, include_unverified=True)
    assert (runs["job.kind"] == "unverified").sum() == 1
    table = sf.scaling_fits(runs, n_boot=0)
    real = table[(table["series"] == "tinyshakespeare") & (table["metric"] == "code.bits_per_byte")].iloc[0]
    assert real["fitted_on"] == "real (incl. 1 unverified)"
    fig = sf._scaling_figure(runs, table)
    unverified = _kind_containers(fig)[sf.UNVERIFIED.label]
    assert unverified and all(list(c.lines[0].get_xdata()) == [MODELS[-1][1]] for c in unverified)
    assert "NOT verified" in fig._suptitle.get_text()
