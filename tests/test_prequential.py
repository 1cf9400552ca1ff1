"""Prequential coding end to end: encode, decode in a separate process, compare bytes."""

from __future__ import annotations

import hashlib
import json
import os

import numpy as np
import pytest

from conftest import one_line_error, run_cli, small_config
from mdlbench import train
from mdlbench.codes.prequential import Layout
from mdlbench.coding import container
from mdlbench.data import Dataset


def _dataset(data: bytes, name: str = "test") -> Dataset:
    return Dataset(name=name, data=data, sha256=hashlib.sha256(data).hexdigest(), path="",
                   entropy_rate_bits=None, info={})


def _text(n: int) -> bytes:
    words = b"the quick brown fox jumps over the lazy dog while mdlbench counts every bit ".split()
    rng = np.random.default_rng(0)
    return b" ".join(words[i] for i in rng.integers(0, len(words), n))[:n]


@pytest.mark.parametrize("n,b", [(1, 4), (5, 4), (37, 4), (4096, 16), (1000, 3)])
def test_layout_roundtrip(n, b):
    data = bytes(np.random.default_rng(n).integers(0, 256, n, dtype=np.uint8))
    lay = Layout(n, b, 32)
    # The per-step windows, written back at their offsets, rebuild the data; exactly n positions are valid.
    out = np.zeros(n, np.uint8)
    valid = 0
    for s in range(lay.steps):
        win_BxT, valid_BxT = lay.window(data, s), lay.valid_window(s)
        for t in range(lay.seq_len):
            out[lay.offsets(s, t)[valid_BxT[:, t]]] = win_BxT[valid_BxT[:, t], t]
        valid += int(valid_BxT.sum())
    assert out.tobytes() == data and valid == n


# The LSTM's separate-process round trip is -m slow for the suite budget (the default lstm_ngram
# model round-trips in test_bench and test_program; the Transformer here).
@pytest.mark.parametrize("family", ["transformer", pytest.param("lstm", marks=pytest.mark.slow)])
def test_roundtrip_in_separate_process(tmp_path, family):
    data = _text(3000)
    cfg = small_config(family)
    s = train.code_dataset(cfg, _dataset(data), tmp_path / "x.mdl", tmp_path / "metrics.jsonl", progress=False)
    assert s["verify"]["ok"] is True
    assert s["verify"]["decoded_sha256"] == hashlib.sha256(data).hexdigest()
    c = s["code"]
    assert c["bits"] == 8 * (container.read(tmp_path / "x.mdl")[1].__len__())
    assert c["total_bits"] == c["program_bits"] + c["bits"]
    assert c["ideal_bits"] <= c["bits"] <= 1.001 * c["ideal_bits"] + 64
    assert c["bits_per_byte"] < 8.0  # it learned something
    assert s["model"]["n_params"] > 1000
    lines = [json.loads(x) for x in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert lines[-1]["bytes_seen"] == len(data)
    assert abs(sum(m["code/ideal_bits"] for m in lines) - c["ideal_bits"]) < 1e-6 * c["ideal_bits"]
    # The same bytes come back through the public CLI, written only after the sha256 check.
    r = run_cli("decompress", str(tmp_path / "x.mdl"), "-o", str(tmp_path / "back"))
    assert r.returncode == 0, r.stderr
    assert (tmp_path / "back").read_bytes() == data


def test_uniform_model_costs_exactly_8_bits_per_byte(tmp_path):
    data = bytes(np.random.default_rng(3).integers(0, 256, 5001, dtype=np.uint8))
    s = train.code_dataset(small_config("uniform"), _dataset(data), tmp_path / "u.mdl", progress=False)
    c = s["code"]
    assert s["verify"]["ok"] is True
    # Exactly 8 bits per byte plus the coder's final flush (at most two 32-bit words).
    assert 8 * len(data) <= c["bits"] <= 8 * len(data) + 64
    assert abs(c["ideal_bits"] - 8 * len(data)) < 1e-4 * len(data)
    assert c["total_bits"] == c["program_bits"] + c["bits"]
    assert c["container_bytes"] > c["bits"] // 8  # header + CRCs are container overhead, not code


@pytest.fixture(scope="module")
def encoded(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("enc")
    data = _text(1500)
    train.code_dataset(small_config("transformer", verify=False), _dataset(data), tmp / "x.mdl", progress=False)
    return tmp / "x.mdl", data


def test_tampered_payload_is_refused_and_nothing_written(encoded, tmp_path):
    path, _ = encoded
    blob = bytearray(path.read_bytes())
    blob[-60] ^= 0x10
    bad = tmp_path / "bad.mdl"
    bad.write_bytes(bytes(blob))
    r = run_cli("decompress", str(bad), "-o", str(tmp_path / "out"))
    one_line_error(r, "CRC32")
    assert not (tmp_path / "out").exists() and sorted(p.name for p in tmp_path.iterdir()) == ["bad.mdl"]


@pytest.mark.parametrize("field,value,needle", [
    ("env.pkg.jax", "0.0.1", "pkg.jax"),
    ("env.isa", ["sse4_1"], "isa"),
    ("canary_sha256", "0" * 64, "canary"),
    ("program.source_sha256", "f" * 64, "different mdlbench source"),
])
def test_environment_mismatch_refused_in_one_line(encoded, tmp_path, field, value, needle):
    path, _ = encoded
    header, payload = container.read(path)
    obj = header
    *parents, last = field.split(".", 1) if field.startswith("env.") else field.split(".")
    for p in parents:
        obj = obj[p]
    obj[last] = value
    bad = tmp_path / "bad.mdl"
    container.write(bad, header, payload)
    one_line_error(run_cli("decode", str(bad), "-o", str(tmp_path / "out")), needle)
    assert not (tmp_path / "out").exists()


# Suite budget (~60 s on 2 cores): the same pinning through the same CLI is in the default run as
# test_device_coder.py::test_cli_round_trip_decodes_with_another_cpu_count; -m slow runs this one.
@pytest.mark.slow
@pytest.mark.skipif(not hasattr(os, "sched_setaffinity") or len(os.sched_getaffinity(0)) < 2,
                    reason="needs 2 CPUs to show thread pinning")
def test_one_thread_container_decodes_with_all_threads(tmp_path):
    src = tmp_path / "in.txt"
    src.write_bytes(_text(2000))
    one_cpu = sorted(os.sched_getaffinity(0))[:1]
    r = run_cli("compress", str(src), "-o", str(tmp_path / "a.mdl"), "--model", "nano", "--no-verify",
                "code.batch_size=4", "code.seq_len=32", preexec_fn=lambda: os.sched_setaffinity(0, one_cpu))
    assert r.returncode == 0, r.stderr
    assert container.read(tmp_path / "a.mdl")[0]["env"]["threads"] == 1
    r = run_cli("decompress", str(tmp_path / "a.mdl"), "-o", str(tmp_path / "a.txt"))
    assert r.returncode == 0, r.stderr
    assert (tmp_path / "a.txt").read_bytes() == src.read_bytes()


# The guard that the program covers everything the decoder imports, for every model family
# and every container kind, is in tests/test_program.py.


def test_initial_carry_is_not_copied_and_replays_from_the_same_start():
    """The carried state is gigabytes at bench size: ``normalize`` keeps a strongly typed JAX
    array as it is (copying all leaves at once held two copies of the n-gram tables), copies what
    is not one (weakly typed scalars, host arrays, an array met a second time: each donated
    buffer must be its own), and two starts made from host copies of the parameters are equal."""
    import jax
    import jax.numpy as jnp

    from mdlbench.codes import prequential

    cfg = small_config("lstm", batch_size=2, seq_len=8)
    layout = Layout(64, 2, 8)
    prog = prequential.Program(cfg, layout, prequential.Host(layout))
    big = jnp.zeros((4, 256), jnp.float32)
    weak = jnp.asarray(1.0)
    assert weak.weak_type
    out = prog.normalize((big, big, weak, np.arange(3, dtype=np.int32)))
    assert out[0] is big and out[1] is not big and np.array_equal(out[1], big)
    assert not out[2].weak_type and isinstance(out[3], jax.Array) and list(np.asarray(out[3])) == [0, 1, 2]
    start = jax.tree_util.tree_map(np.asarray, prog.start_params())
    a, b = prog.initial(start), prog.initial()
    for x, y in zip(jax.tree_util.tree_leaves(a), jax.tree_util.tree_leaves(b)):
        np.testing.assert_array_equal(np.asarray(x), np.asarray(y))
    shapes = prog.initial_shapes()
    assert [(s.shape, s.dtype) for s in jax.tree_util.tree_leaves(shapes)] == \
        [(x.shape, x.dtype) for x in jax.tree_util.tree_leaves(a)]
