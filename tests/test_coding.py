"""The coder protocol and both host coders, the container and the environment fingerprint (no JAX needed)."""

from __future__ import annotations

import math
import random

import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

from mdlbench.coding import ans, coder, container, env, program, range_coder
from mdlbench.errors import ContainerError, EnvironmentMismatch


@settings(max_examples=40, deadline=None)
@given(st.integers(0, 2**32 - 1), st.integers(1, 8), st.integers(2, 300), st.integers(1, 64))
def test_range_coder_roundtrip_random_messages(seed, n_msgs, vocab, n):
    rng = np.random.default_rng(seed)
    probs, syms = [], []
    for _ in range(n_msgs):
        # Peaked and flat tables, some with exact zeros: the leaky model must still code any symbol.
        p = rng.dirichlet(np.full(vocab, rng.choice([0.05, 1.0, 20.0])), size=n).astype(np.float32)
        p[rng.random(p.shape) < 0.1] = 0.0
        p[:, 0] += 1e-3
        probs.append(p)
        syms.append(rng.integers(0, vocab, n).astype(np.int32))
    payload, back = range_coder.roundtrip(syms, probs)
    for s, b in zip(syms, back):
        np.testing.assert_array_equal(s, b)
    assert len(payload) % 4 == 0


def test_range_coder_is_close_to_ideal():
    rng = np.random.default_rng(0)
    p = rng.dirichlet(np.full(256, 0.3), size=20000).astype(np.float32)
    s = np.array([rng.choice(256, p=row / row.sum()) for row in p.astype(np.float64)], np.int32)
    ideal = -np.log2(p[np.arange(len(s)), s].astype(np.float64) / p.sum(1)).sum()
    payload, _ = range_coder.roundtrip([s], [p])
    assert ideal <= 8 * len(payload) <= ideal * 1.001 + 64


def test_uniform_tables_cost_exactly_8_bits():
    n = 10000
    p = np.full((n, 256), 1 / 256, np.float32)
    s = np.random.default_rng(1).integers(0, 256, n).astype(np.int32)
    payload, back = range_coder.roundtrip([s], [p])
    assert 8 * n <= 8 * len(payload) <= 8 * n + 64
    np.testing.assert_array_equal(back[0], s)


# ---- the push/pop protocol both host coders implement -------------------------------------------
# (new encoder, decoder from payload) for each coder: the range coder's halves are two classes,
# the ANS stack is one class that both pushes and pops.
CODERS = {"range": (range_coder.Encoder, range_coder.Decoder), "ans": (ans.AnsStack, ans.AnsStack.from_bytes)}


def test_both_host_coders_satisfy_the_protocol():
    enc = range_coder.Encoder()
    assert isinstance(enc, coder.Encoder) and enc.order == coder.QUEUE
    dec = range_coder.Decoder(enc.finish())
    assert isinstance(dec, coder.Decoder) and dec.order == coder.QUEUE
    assert not isinstance(enc, coder.Coder)  # a queue's halves are separate objects
    stack = ans.AnsStack()
    assert isinstance(stack, coder.Coder) and isinstance(stack, coder.Encoder) and isinstance(stack, coder.Decoder)
    assert stack.order == coder.STACK


@settings(max_examples=40, deadline=None)
@given(st.integers(0, 2**32 - 1), st.sampled_from(sorted(CODERS)), st.integers(1, 6), st.integers(2, 300),
       st.integers(0, 48), st.booleans())
def test_random_tables_roundtrip_through_either_coder(seed, which, n_msgs, vocab, n, peaked):
    rng = np.random.default_rng(seed)
    msgs = []
    for _ in range(n_msgs):
        m = int(rng.integers(0, n + 1))  # messages of different lengths, empty ones included
        p = rng.dirichlet(np.full(vocab, 0.05 if peaked else 1.0), size=m).astype(np.float32)
        if peaked:  # near-deterministic rows with exact zeros: what makes leaky quantisers fail
            p[p < 0.1] = 0.0
            p[np.arange(m), rng.integers(0, vocab, m)] += 1.0
            p /= p.sum(-1, keepdims=True)
        msgs.append((rng.integers(0, vocab, m).astype(np.int32), p))  # unlikely symbols too
    payload, back = coder.roundtrip(*CODERS[which], msgs)
    assert len(payload) % 4 == 0
    for (s, _), b in zip(msgs, back):
        np.testing.assert_array_equal(s, b)


def test_both_coders_cost_about_the_ideal_bits():
    rng = np.random.default_rng(2)
    p = rng.dirichlet(np.full(64, 0.3), size=5000).astype(np.float32)
    s = np.array([rng.choice(64, p=row / row.sum()) for row in p.astype(np.float64)], np.int32)
    ideal = -np.log2(p[np.arange(len(s)), s].astype(np.float64) / p.sum(1)).sum()
    for new, open_ in CODERS.values():
        payload, _ = coder.roundtrip(new, open_, [(s[:2000], p[:2000]), (s[2000:], p[2000:])])
        assert ideal <= 8 * len(payload) <= ideal * 1.002 + 128


def test_roundtrip_refuses_a_decoder_of_the_other_order():
    msgs = [(np.array([1, 2], np.int32), np.full((2, 4), 0.25, np.float32))]
    with pytest.raises(ValueError, match="order"):
        coder.roundtrip(range_coder.Encoder, ans.AnsStack.from_bytes, msgs)


def test_range_coder_gaussian_push_pop():
    rng = np.random.default_rng(3)
    q = rng.integers(-40, 41, 1000).astype(np.int64)
    mean, std = rng.uniform(-40, 40, 300), rng.uniform(0.1, 30.0, 300)
    enc = range_coder.Encoder()
    enc.push_gaussian(q, 0.0, 12.5, -40, 40)  # one fixed model
    enc.push_gaussian(q[:300], mean, std, -40, 40)  # per-symbol parameters
    enc.push(q[:5] + 40, np.full((5, 81), 1 / 81, np.float32))  # categorical after Gaussian in one stream
    dec = range_coder.Decoder(enc.finish())
    np.testing.assert_array_equal(dec.pop_gaussian(1000, 0.0, 12.5, -40, 40), q)
    np.testing.assert_array_equal(dec.pop_gaussian(300, mean, std, -40, 40), q[:300])
    np.testing.assert_array_equal(dec.pop(np.full((5, 81), 1 / 81, np.float32)), q[:5] + 40)


HEADER = {"format": "test", "config": {"a": 1}, "data": {"bytes": 3}}


def test_container_roundtrip(tmp_path):
    payload = bytes(range(256)) * 700
    n = container.write(tmp_path / "x.mdl", HEADER, payload, chunk_bytes=1000)
    assert n == (tmp_path / "x.mdl").stat().st_size
    h, p = container.read(tmp_path / "x.mdl")
    assert h == HEADER and p == payload


def _blob():
    return container.encode(HEADER, bytes(random.Random(0).randbytes(5000)), chunk_bytes=512)


def test_container_detects_every_single_bit_flip_in_a_sample():
    blob = _blob()
    rng = random.Random(1)
    for _ in range(300):
        i = rng.randrange(len(blob) * 8)
        bad = bytearray(blob)
        bad[i // 8] ^= 1 << (i % 8)
        with pytest.raises(ContainerError):
            container.decode(bytes(bad))


def _damage_is_caught(data, blob):
    kind = data.draw(st.sampled_from(["truncate", "append", "flip"]))
    if kind == "truncate":
        bad = blob[: data.draw(st.integers(0, len(blob) - 1))]
    elif kind == "append":
        bad = blob + data.draw(st.binary(min_size=1, max_size=64))
    else:
        i = data.draw(st.integers(0, len(blob) * 8 - 1))
        bad = bytearray(blob)
        bad[i // 8] ^= 1 << (i % 8)
        bad = bytes(bad)
    with pytest.raises(ContainerError) as e:
        container.decode(bad)
    assert "\n" not in str(e.value)


_BLOB = _blob()


# Zero silent successes over >= 1000 random flips / truncations / appends, in seconds.
@settings(max_examples=1000, deadline=None)
@given(st.data())
def test_container_property_truncation_append_flip(data):
    _damage_is_caught(data, _BLOB)


@pytest.mark.slow
@settings(max_examples=50_000, deadline=None)
@given(st.data())
def test_container_property_truncation_append_flip_long(data):
    _damage_is_caught(data, _BLOB)


def test_container_messages_name_the_failure():
    blob = _blob()
    with pytest.raises(ContainerError, match="truncated"):
        container.decode(blob[:-5])
    with pytest.raises(ContainerError, match="unexpected bytes after the end marker"):
        container.decode(blob + b"x")
    with pytest.raises(ContainerError, match="bad magic"):
        container.decode(b"hello" + blob)
    bad = bytearray(blob)
    bad[-100] ^= 4
    with pytest.raises(ContainerError, match=r"chunk \d+/\d+ failed its CRC32"):
        container.decode(bytes(bad))


def test_atomic_write_leaves_no_partial_file(tmp_path):
    target = tmp_path / "out.bin"
    with pytest.raises(TypeError):
        container.atomic_write(target, object())  # type: ignore[arg-type]
    assert not target.exists() and list(tmp_path.iterdir()) == []


def test_env_check_names_the_field():
    fp = env.fingerprint("cpu")
    env.check(fp, dict(fp))
    for key, value in [("pkg.jax", "0.0.1"), ("isa", ["sse4_1"]), ("xla_flags", "--xla_foo"), ("threads", 99)]:
        with pytest.raises(EnvironmentMismatch, match=key.split(".")[-1]):
            env.check({**fp, key: value}, fp)


def test_program_bits_counts_source_and_config():
    a = program.program_bits({"seed": 0})
    b = program.program_bits({"seed": 0, "pad": "x" * 5000 + "".join(map(str, range(3000)))})
    assert 8 * 1000 < a < b
    assert program.source_sha256() == program.source_sha256()
    assert math.isclose(a, program.program_bits({"seed": 0}))
