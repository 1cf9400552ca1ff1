"""Knowledge capacity: the synthetic knowledge base and the stored-bits measure (issue 8)."""

from __future__ import annotations

import json
import math

import numpy as np
import pandas as pd
import pytest

from conftest import REPO
from mdlbench.config import ConfigError
from mdlbench.data import knowledge as kn


def _kb(**kw) -> kn.KnowledgeBase:
    return kn.generate(kn.KnowledgeConfig(**kw))


# --------------------------------------------------------------------------- the source


def test_information_content_is_exact():
    attrs = ["birth_year", "birth_city", "employer", "university", "major"]
    kb = _kb(n_entities=37, attributes=attrs)
    # Choice-set sizes counted here from the rendered tables, not taken from Attribute.bits.
    sizes = [len(set(kn.ATTRIBUTES[a].choices)) for a in attrs]
    assert sizes == [128, 64, 32, 16, 20]
    expected = 37 * (7 + 6 + 5 + 4 + math.log2(20))
    assert kb.information_bits == pytest.approx(expected, rel=0, abs=1e-9)
    assert kb.n_facts == 37 * 5
    assert all(0 <= kb.values_NxK[:, k].min() and kb.values_NxK[:, k].max() < s for k, s in enumerate(sizes))


def test_statements_end_with_the_value_and_its_terminator():
    kb = _kb(n_entities=5, templates=3)
    for n in range(5):
        for k, a in enumerate(kb.attributes):
            for t in range(3):
                text, start = kb.statement(n, k, t)
                assert text.startswith(kb.names[n].encode())
                assert text[start:] == (a.choices[kb.values_NxK[n, k]] + ".").encode()


def test_source_is_deterministic_from_its_seed():
    a, b, c = _kb(n_entities=50, exposure="zipf"), _kb(n_entities=50, exposure="zipf"), _kb(n_entities=50, seed=1)
    assert a.names == b.names and a.text() == b.text()
    assert np.array_equal(a.values_NxK, b.values_NxK) and np.array_equal(a.exposures_N, b.exposures_N)
    assert a.names != c.names and not np.array_equal(a.values_NxK, c.values_NxK)
    s1 = a.training_stream(np.random.default_rng(3))
    s2 = b.training_stream(np.random.default_rng(3))
    assert np.array_equal(s1, s2)


def test_names_are_unique_fixed_length_and_heldout_is_disjoint():
    kb = _kb(n_entities=2000)
    assert len(set(kb.names)) == 2000 and len({len(n) for n in kb.names}) == 1
    held = kn.heldout(kb, 300)
    assert not set(held.names) & set(kb.names) and len(set(held.names)) == 300
    assert held.values_NxK.shape == (300, len(kb.attributes))


def test_exposure_profiles_and_training_stream_counts():
    uni = _kb(n_entities=20, exposures=7)
    assert (uni.exposures_N == 7).all()
    zipf = _kb(n_entities=40, exposure="zipf", exposures=200, zipf_exponent=1.0, min_exposures=2)
    planned = np.maximum(np.rint(200 * np.arange(1, 41, dtype=float) ** -1.0), 2).astype(int)
    assert sorted(zipf.exposures_N.tolist(), reverse=True) == planned.tolist()
    stream = zipf.training_stream(np.random.default_rng(0))
    k = len(zipf.attributes)
    counts = np.bincount(stream[:, 0] * k + stream[:, 1], minlength=zipf.n_facts).reshape(40, k)
    assert (counts == zipf.exposures_N[:, None]).all()
    assert set(np.unique(stream[:, 2])) <= set(range(zipf.config.templates))


@pytest.mark.parametrize("kw,needle", [
    ({"attributes": ["birth_year", "shoe_size"]}, "shoe_size"),
    ({"templates": 4}, "templates"),
    ({"exposure": "poisson"}, "exposure"),
    ({"n_entities": 0}, "n_entities must be positive"),
])
def test_bad_knowledge_config_is_one_clear_error(kw, needle):
    with pytest.raises(ConfigError, match=needle):
        _kb(**kw)


# --------------------------------------------------------------------------- the measure


def _uniform_over_choices(kb: kn.KnowledgeBase):
    """A predictor that knows the templates and choice sets but no fact: inside a value it gives
    each next byte the fraction of still-possible choices that continue with it."""
    middles = {t[3:-4].encode(): [(c + ".").encode() for c in a.choices]
               for a in kb.attributes for t in a.templates}
    name_len = len(kb.names[0])

    def log_probs(inputs_BxT, targets_BxT):
        out = np.zeros(targets_BxT.shape)
        for b, row in enumerate(np.asarray(targets_BxT)):
            s = bytes(row.astype(np.uint8).tolist())
            (start, choices), = [(name_len + len(m), c) for m, c in middles.items()
                                 if s[name_len:name_len + len(m)] == m]
            for j in range(start, len(s)):
                prefix = s[start:j]
                alive = [c for c in choices if c.startswith(prefix)]
                nxt = [c for c in alive if c[len(prefix):len(prefix) + 1] == s[j:j + 1]]
                out[b, j] = math.log(len(nxt) / len(alive))
                if any(c == prefix + s[j:j + 1] for c in nxt):
                    break  # the terminator: the value is complete
        return out

    return log_probs


def test_uniform_over_the_choices_is_credited_zero():
    from mdlbench import capacity

    kb = _kb(n_entities=12, attributes=["birth_year", "birth_city", "employer", "university", "major"])
    enc = capacity.encode(kb)
    cr = capacity.credit(kb, capacity.value_code_bits(_uniform_over_choices(kb), enc, batch_size=16))
    # Each value costs exactly log2 |choices| bits, so nothing is stored.
    assert np.allclose(cr.code_bits_NxK, kb.bits_K[None, :], atol=1e-9)
    assert cr.stored_bits == pytest.approx(0.0, abs=1e-9) and cr.net_bits == pytest.approx(0.0, abs=1e-9)


def test_an_oracle_is_credited_the_whole_information_content():
    from mdlbench import capacity

    kb = _kb(n_entities=9)
    enc = capacity.encode(kb)
    cr = capacity.credit(kb, capacity.value_code_bits(lambda x, y: np.zeros(y.shape), enc, batch_size=4))
    assert cr.stored_bits == kb.information_bits == cr.net_bits


def test_untrained_model_is_credited_exactly_zero():
    import jax
    import jax.numpy as jnp

    from mdlbench import capacity, models
    from mdlbench.config import ModelConfig

    kb = _kb(n_entities=30)
    enc = capacity.encode(kb)
    module = models.build(ModelConfig(name="t", d_model=32, n_layers=1, n_heads=2, d_ff=64), enc.seq_len)
    params = module.init(jax.random.PRNGKey(0), jnp.zeros((1, enc.seq_len), jnp.int32))
    cr = capacity.credit(kb, capacity.value_code_bits(capacity.transformer_log_probs(module, params), enc, 64))
    assert cr.stored_bits == 0.0  # exactly: every value costs ~8 bits per byte, far above log2 |choices|
    assert cr.net_bits < -kb.information_bits


def test_parameter_breakdown_adds_up_and_separates_the_ffn():
    import jax
    import jax.numpy as jnp

    from mdlbench import capacity, models
    from mdlbench.config import ModelConfig

    d, ff, t = 32, 48, 20
    module = models.build(ModelConfig(name="t", d_model=d, n_layers=2, n_heads=2, d_ff=ff), t)
    shapes = jax.eval_shape(module.init, jax.random.PRNGKey(0), jnp.zeros((1, t), jnp.int32))
    parts = capacity.param_breakdown(shapes)
    assert parts["n_params_ffn"] == 2 * (d * ff + ff + ff * d + d)
    assert parts["n_params_attention"] == 2 * (d * 3 * d + 3 * d + d * d + d)
    assert parts["n_params"] == sum(v for k, v in parts.items() if k != "n_params")


# --------------------------------------------------------------------------- training + sweep


def _tiny_capacity_config(out_dir) -> dict:
    return {
        "out_dir": str(out_dir), "seed": 0, "heldout_entities": 40, "eval_batch_size": 128,
        "train": {"batch_size": 16, "lr": 0.01, "warmup_steps": 20, "loss_on": "value", "steps_per_call": 1000},
        "models": [{"name": "m_ff16", "d_model": 32, "n_layers": 1, "n_heads": 2, "d_ff": 16},
                   {"name": "m_ff64", "d_model": 32, "n_layers": 1, "n_heads": 2, "d_ff": 64}],
        "knowledge": [{"n_entities": 24, "exposures": 60, "templates": 1, "models": ["m_ff64"]},
                      {"n_entities": 40, "exposure": "zipf", "exposures": 150, "zipf_exponent": 0.7,
                       "templates": 1, "models": ["m_ff16"]}],
    }


@pytest.fixture(scope="module")
def tiny_sweep(tmp_path_factory):
    from mdlbench import capacity

    out = tmp_path_factory.mktemp("capacity")
    lines: list[str] = []
    result = capacity.run(capacity.from_dict(_tiny_capacity_config(out)), experiment="cap_test", log=lines.append)
    return out, result, lines


def test_small_kb_is_memorised_and_credited_at_most_its_information(tiny_sweep):
    out, result, _ = tiny_sweep
    first = result["runs"][0]  # m_ff64 on the 24-entity base
    c = first["capacity"]
    assert first["model"]["n_params"] > 0 and first["data"]["information_bits"] == 24 * 22
    # Learnt well beyond chance, never beyond the information content.
    assert c["net_bits"] > 0.5 * c["information_bits"]
    assert c["net_bits"] <= c["stored_bits"] <= c["information_bits"]
    assert c["untrained_stored_bits"] == 0.0
    assert c["stored_bits"] > 5 * first["control"]["stored_bits_per_fact"] * c["facts"]
    run_dir = out / "runs" / "cap_test" / "kb24_uniform60" / "m_ff64" / "seed0"
    for name in ("summary.json", "entities.csv", "metrics.jsonl"):
        assert (run_dir / name).is_file()
    assert json.loads((run_dir / "summary.json").read_text())["capacity"]["stored_bits"] == c["stored_bits"]


def test_sweep_writes_tables_fits_and_figures(tiny_sweep):
    out, result, lines = tiny_sweep
    for stem in ("cap_test_capacity", "cap_test_retention"):
        assert (out / "figures" / f"{stem}.png").stat().st_size > 0 and (out / "figures" / f"{stem}.svg").is_file()
    runs = pd.read_csv(out / "tables" / "cap_test.csv")
    assert len(runs) == 2 and set(runs["job.status"]) == {"ideal"}
    entities = pd.read_csv(out / "tables" / "cap_test_entities.csv")
    assert len(entities) == 24 + 40
    assert (entities["stored_bits"] <= entities["information_bits"] + 1e-9).all()
    assert any("Allen-Zhu & Li" in line for line in lines)


def test_rerun_skips_finished_runs_and_refuses_a_changed_config(tiny_sweep):
    from mdlbench import capacity
    from mdlbench.errors import MdlbenchError

    out, result, _ = tiny_sweep
    lines: list[str] = []
    again = capacity.run(capacity.from_dict(_tiny_capacity_config(out)), experiment="cap_test", log=lines.append)
    assert sum("already done" in line for line in lines) == 2
    assert [r["config_hash"] for r in again["runs"]] == [r["config_hash"] for r in result["runs"]]
    changed = _tiny_capacity_config(out)
    changed["train"]["lr"] = 0.02
    with pytest.raises(MdlbenchError, match="different config"):
        capacity.run(capacity.from_dict(changed), experiment="cap_test", log=lines.append)


@pytest.mark.parametrize("patch,needle", [
    ({"train": {"loss_on": "names"}}, "loss_on"),
    ({"knowledge": [{"n_entities": 10, "models": ["nope"]}]}, "unknown model"),
    ({"models": [{"name": "l", "family": "lstm"}]}, "transformer"),
    ({"full_fraction": 1.5}, "full_fraction"),
])
def test_bad_capacity_config_is_one_clear_error(patch, needle, tmp_path):
    from mdlbench import capacity

    cfg = _tiny_capacity_config(tmp_path)
    cfg.update(patch)
    with pytest.raises(ConfigError, match=needle):
        capacity.from_dict(cfg)


@pytest.mark.parametrize("exp", ["capacity_smoke", "capacity_sweep"])
def test_experiment_capacity_sections_validate(exp):
    from mdlbench import capacity
    from mdlbench import jobs

    cfg = jobs.compose([f"experiment={exp}"]).family
    assert isinstance(cfg, capacity.CapacityConfig)
    cells = capacity.grid(cfg)
    assert len({m.d_ff for _, m in cells}) >= 3  # FFN width varied
    assert {k.exposure for k in cfg.knowledge} == {"uniform", "zipf"}


# --------------------------------------------------------------------------- analysis (no JAX)


def test_capacity_fit_recovers_a_planted_slope_and_ignores_memorised_runs():
    from mdlbench.analysis import plots

    rng = np.random.default_rng(0)
    n = np.array([10_000, 25_000, 50_000, 100_000, 200_000], dtype=float)  # 20x span
    stored = 1.5 * n - 5_000 + rng.normal(0, 300, n.size)
    rows = [{"job.dir": f"j{i}", "data.name": "kbA", "data.exposure": "uniform", "data.exposures": 100,
             "model.name": f"m{i}", "model.n_params": n[i], "model.n_params_ffn": n[i] / 2,
             "model.d_model": 32, "model.n_layers": 1, "model.n_heads": 2,
             "capacity.stored_bits": stored[i], "capacity.net_bits": stored[i] - 50,
             "capacity.information_bits": 1e6, "capacity.stored_fraction": stored[i] / 1e6} for i in range(5)]
    # A memorised run (all of a small base) far off the line: it must not enter the fit.
    rows.append({**rows[0], "job.dir": "small", "data.name": "kbB", "capacity.stored_bits": 900.0,
                 "capacity.information_bits": 1000.0, "capacity.stored_fraction": 0.9})
    fits = plots.capacity_fits(pd.DataFrame(rows), full_fraction=0.8)
    h = plots.headline_fit(fits)
    assert h["n_runs"] == 5 and h["slope_valid"] and h["slope_lo"] < 1.5 < h["slope_hi"]
    assert h["slope_bits_per_param"] == pytest.approx(1.5, abs=0.05)
    assert h["intercept_bits"] == pytest.approx(-5_000, abs=1_000) and h["x_span"] == 20.0
    # The per-run ratios are the measurement, reported whatever the span.
    assert h["ratio_bits_per_param_min"] == pytest.approx(min(stored / n))
    assert h["ratio_bits_per_param_max"] == pytest.approx(max(stored / n))
    ffn = plots.headline_fit(fits, "model.n_params_ffn")
    assert ffn["slope_bits_per_param"] == pytest.approx(3.0, abs=0.1)


def test_capacity_slope_is_refused_below_a_tenfold_span():
    from mdlbench.analysis import plots

    # The committed smoke's situation: 6 runs within 23.5k-31k parameters (1.3x). A line through
    # them has a slope, but its intercept is far below zero: no slope may be quoted.
    n = np.array([23_504, 24_544, 26_624, 30_784, 31_008, 23_504], dtype=float)
    stored = 0.74 * n - 14_700
    rows = [{"job.dir": f"j{i}", "data.name": "kb", "data.exposure": "uniform", "data.exposures": 200,
             "model.name": f"m{i}", "model.n_params": n[i], "capacity.stored_bits": stored[i],
             "capacity.net_bits": stored[i], "capacity.information_bits": 17_600.0,
             "capacity.stored_fraction": stored[i] / 17_600} for i in range(6)]
    fits = plots.capacity_fits(pd.DataFrame(rows))
    h = plots.headline_fit(fits)
    assert not h["slope_valid"] and pd.isna(h.get("slope_bits_per_param")) and pd.isna(h.get("intercept_bits"))
    assert "spanning 1.3x" in h["note"] and ">= 10x" in h["note"]
    assert h["ratio_bits_per_param_mean"] == pytest.approx(float(np.mean(stored / n)))
    assert "no slope" in plots._fmt_fit(h, "stored bits", "parameters")


def test_capacity_fit_says_so_when_no_run_is_full():
    from mdlbench.analysis import plots

    rows = [{"job.dir": "a", "data.name": "kb", "data.exposure": "uniform", "data.exposures": 100,
             "model.n_params": 1000.0, "capacity.stored_bits": 99.0, "capacity.net_bits": 99.0,
             "capacity.stored_fraction": 0.99}]
    fits = plots.capacity_fits(pd.DataFrame(rows))
    assert plots.headline_fit(fits) is None and "no run" in fits["note"].iloc[0]


def test_collect_and_plot_a_capacity_sweep_from_the_command_line(tiny_sweep, tmp_path, capsys):
    from mdlbench import cli

    out, _, _ = tiny_sweep
    sweep = out / "runs" / "cap_test"
    assert cli.main(["collect", str(sweep), "--out", str(tmp_path / "tables")]) == 0
    printed = capsys.readouterr().out
    assert "2 complete with ideal code lengths" in printed and "cap_test_entities.csv" in printed
    assert cli.main(["plot", str(tmp_path / "tables" / "cap_test.csv"), "--out", str(tmp_path / "fig")]) == 0
    printed = capsys.readouterr().out
    assert (tmp_path / "fig" / "cap_test_capacity.svg").is_file()
    assert (tmp_path / "fig" / "cap_test_retention.png").is_file() and "Allen-Zhu & Li" in printed


def test_readme_and_experiment_notes_exist():
    readme = (REPO / "README.md").read_text()
    assert "mdlbench-train experiment=capacity_smoke" in readme
    assert (REPO / "experiments" / "capacity" / "README.md").is_file()
