"""The Transformer's memory across windows (``model.context``) and the training-loss estimate
(``code.name=estimate``): memory is real, replay stays exact, the estimate is no code."""

from __future__ import annotations

import json

import numpy as np
import pytest

from conftest import REPO, run_cli, run_train
from mdlbench.coding import container

SMALL_MEM = ["model=nano", "model.positions=rope", "model.context=48", "code.batch_size=2", "code.seq_len=16", "baselines=false",
             "logger=disabled"]


def _windows(model, params, windows_NxBxT):
    """Logits of every position of every window through the coding path (no training)."""
    import jax.numpy as jnp

    from mdlbench.models.transformer import BOS

    b = windows_NxBxT.shape[1]
    state, prev = model.zero_state(b), jnp.full((b,), BOS, jnp.int32)
    out = []
    for w in windows_NxBxT:
        cache, logits = model.apply(params, state, b, method="init_cache"), []
        for t in range(w.shape[1]):
            lg, cache = model.apply(params, prev, cache, t, method="decode")
            logits.append(lg)
            prev = jnp.asarray(w[:, t])
        state = model.next_state(cache, state)
        out.append(jnp.stack(logits, 1))
    return out


@pytest.mark.parametrize("context,memory", [(0, "bytes"), (40, "bytes"), (40, "kv")])
def test_a_byte_more_than_one_window_back_changes_the_probabilities(context, memory):
    """With memory, changing a byte in window 0 changes the coding logits of window 2; without
    memory (only the previous byte carries over) it cannot."""
    import jax
    import jax.numpy as jnp

    from mdlbench import models
    from mdlbench.config import ModelConfig

    T = 8
    model = models.build(ModelConfig(d_model=32, n_layers=2, n_heads=2, positions="rope", context=context,
                                     memory=memory), T)
    params = model.init(jax.random.PRNGKey(0), jnp.zeros((1, T), jnp.int32), model.zero_state(1))
    rng = np.random.default_rng(0)
    a = rng.integers(97, 123, size=(3, 1, T))
    b = a.copy()
    b[0, 0, 3] = (a[0, 0, 3] - 97 + 5) % 26 + 97  # one byte of window 0, two windows before window 2
    la, lb = _windows(model, params, a), _windows(model, params, b)
    np.testing.assert_array_equal(np.asarray(la[0][:, :4]), np.asarray(lb[0][:, :4]))  # before the change
    changed = float(jnp.abs(la[2] - lb[2]).max())
    if context:
        assert changed > 1e-6, "memory is not real: window 2 does not see window 0"
    else:
        assert changed == 0.0


@pytest.mark.parametrize("memory,alibi", [("bytes", False), ("kv", False), ("bytes", True)])
def test_memory_coding_equals_full_attention_over_the_stream(memory, alibi):
    """With a memory that covers everything before the window and fixed parameters, coding a
    stream window by window gives the logits of one causal forward over the whole stream (up
    to float rounding): the memory is the context, positions included."""
    import jax
    import jax.numpy as jnp

    from mdlbench import models
    from mdlbench.config import ModelConfig
    from mdlbench.models.transformer import BOS

    T = 8
    mem = models.build(ModelConfig(d_model=32, n_layers=2, n_heads=2, positions="rope", context=2 * T,
                                   memory=memory, alibi=alibi), T)
    full = models.build(ModelConfig(d_model=32, n_layers=2, n_heads=2, positions="rope", alibi=alibi), 3 * T)
    params = mem.init(jax.random.PRNGKey(1), jnp.zeros((1, T), jnp.int32), mem.zero_state(1))
    seq = np.random.default_rng(1).integers(97, 123, size=(1, 3 * T))
    ref = np.asarray(full.apply(params, jnp.asarray(np.concatenate([[[BOS]], seq[:, :-1]], 1))))
    coded = np.concatenate([np.asarray(x) for x in _windows(mem, params, seq.reshape(1, 3, T).swapaxes(0, 1))], 1)
    np.testing.assert_allclose(coded, ref, atol=1e-5)


def test_memory_needs_rotary_positions():
    from mdlbench.config import Config, ConfigError, ModelConfig, validate

    with pytest.raises(ConfigError, match="positions=rope"):
        validate(Config(model=ModelConfig(positions="learned", context=64)))
    with pytest.raises(ConfigError, match="family=transformer"):
        validate(Config(model=ModelConfig(family="lstm", positions="rope", context=64)))


@pytest.mark.parametrize("extra", [[], pytest.param(["++model.ngram_orders=[1,2]", "++model.ngram_log2_rows=10"],
                                                     marks=pytest.mark.slow)],  # suite budget: -m slow
                         ids=["transformer", "transformer+ngram"])
def test_memory_round_trip_in_separate_processes(tmp_path, extra):
    """compress, then decompress in a separate process (the verification compress would run is
    the same replay: one decoder process is enough for the suite)."""
    src = tmp_path / "in.txt"
    text = (REPO / "README.md").read_bytes()[:3000]
    src.write_bytes(text)
    out, back = tmp_path / "in.mdl", tmp_path / "back.txt"
    r = run_cli("compress", str(src), "-o", str(out), "--no-verify", *SMALL_MEM, *extra)
    assert r.returncode == 0, r.stderr[-2000:]
    r = run_cli("decompress", str(out), "-o", str(back))
    assert r.returncode == 0, r.stderr[-2000:]
    assert back.read_bytes() == text


def test_real_run_records_the_estimate_and_estimate_mode_writes_no_code(tmp_path):
    """A real run's summary carries the training-loss estimate beside its bitstream bits; the
    fast mode reports only an ideal estimate and leaves no container or verification."""
    common = [*SMALL_MEM, "data=pystdlib", "data.max_bytes=4000"]
    real_dir, est_dir = tmp_path / "real", tmp_path / "est"
    # Not verified here (the round trip above decodes memory containers): the bits are the bitstream's.
    r = run_train(*common, "code.verify=false", f"hydra.run.dir={real_dir}")
    assert r.returncode == 0, r.stderr[-2000:]
    real = json.loads((real_dir / "summary.json").read_text())
    _, payload = container.read(next(real_dir.glob("*.mdl")))
    assert real["code"]["bits"] == 8 * len(payload)
    est_real = real["estimate"]
    assert est_real["over_real"] == pytest.approx(est_real["bits"] / real["code"]["bits"])
    # Same probabilities up to the training forward's rounding: the estimate tracks the code closely.
    assert abs(est_real["over_ideal"] - 1) < 1e-3

    r = run_train(*common, "code.name=estimate", f"hydra.run.dir={est_dir}")
    assert r.returncode == 0, r.stderr[-2000:]
    est = json.loads((est_dir / "summary.json").read_text())
    assert est["code"]["name"] == "estimate" and "bits" not in est["code"] and "verify" not in est
    assert "estimate" in est["code"]["kind"]
    assert not list(est_dir.glob("*.mdl")) and not list(est_dir.glob("verify*"))
    # Same data order, batches and optimiser: the fast mode's sum is the real run's estimate.
    assert est["code"]["ideal_bits"] == pytest.approx(est_real["bits"], rel=2e-3)
    # ... and so is its final chunk (the last ~10% of steps), which the real run records too.
    assert est["code"]["final_chunk_ideal_bits_per_byte"] == pytest.approx(est_real["final_chunk_bits_per_byte"], rel=5e-3)


def _hydra(overrides):
    from hydra import compose, initialize_config_dir

    with initialize_config_dir(config_dir=str(REPO / "conf"), version_base="1.3"):
        return compose("config", overrides=overrides, return_hydra_config=True)


@pytest.mark.parametrize("exp,min_ratio,min_params", [("scaling_text", 30, 0), ("scaling_text_gpu", 30, 50e6)])
def test_scaling_text_experiments_compose_and_span_the_sizes(exp, min_ratio, min_params):
    """Both scaling experiments compose; their sweeps cover >= 5 memory Transformers spanning
    >= 30x in parameters (counted from the composed shapes), >= 2 corpora and 2 seeds, run the
    fast mode everywhere and real coding for the smallest and the largest model."""
    import jax
    import jax.numpy as jnp

    from mdlbench import config as config_lib, models

    if exp == "scaling_text_gpu":
        pytest.importorskip("hydra_plugins.hydra_submitit_launcher")
    c = _hydra([f"experiment={exp}"])
    params = c.hydra.sweeper.params
    sizes, datas = params.model.split(","), params.data.split(",")
    assert len(sizes) >= 5 and len(datas) >= 2 and len(params.seed.split(",")) == 2
    counts = {}
    from mdlbench import jobs

    for name in sizes:
        cfg = jobs.byte_code(jobs.compose([f"experiment={exp}", f"model={name}"]), "the scaling sweep")
        assert cfg.model.positions == "rope" and cfg.model.context >= 4 * cfg.code.seq_len
        assert cfg.code.name == "estimate"
        m = models.build(cfg.model, cfg.code.seq_len)
        shapes = jax.eval_shape(lambda: m.init(jax.random.PRNGKey(0), jnp.zeros((1, cfg.code.seq_len), jnp.int32),
                                               m.zero_state(1)))
        counts[name] = models.count_params(shapes)
        real = config_lib.resolve_mode(cfg).code.name
        picked = any(name == r.split("/")[0] for r in cfg.code.real_for)
        assert real == ("prequential" if picked and cfg.data.name in [r.split("/")[1] for r in cfg.code.real_for]
                        else "estimate")
    smallest, largest = min(counts, key=counts.get), max(counts, key=counts.get)
    assert counts[largest] >= min_ratio * counts[smallest] and counts[largest] >= min_params
    real_models = {r.split("/")[0] for r in c.code.real_for}
    assert {smallest, largest} <= real_models
