"""The in-program coder (``code.coder=device``) end to end: a CLI round trip decoded with another
CPU count, its bits against the quantised ideal on real model outputs, resume after SIGKILL, and
corrupted containers refused in one line (in-process for speed, twice through the CLI)."""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import random

import numpy as np
import pytest

from conftest import REPO, count_lines, one_line_error, run_cli, run_train, sigkill_training_at_step, small_config
from mdlbench.codes import prequential
from mdlbench.coding import container, device_rans as dr
from mdlbench.errors import MdlbenchError

# ~47 steps of 4 x 32 bytes with the smallest preset; a segment (checkpoint point) every 4 steps.
SMALL = ["model=nano", "data=pystdlib", "data.max_bytes=6000", "code.batch_size=4", "code.seq_len=32",
         "code.segment_steps=4", "code.checkpoint_s=0", "code.verify=false", "logger=disabled",
         "code.coder=device", "code.coder_lanes=0"]  # one rANS coder per stream (the accelerator layout)


def _text(n: int) -> bytes:
    """Real English text (the README), repeated to n bytes."""
    src = (REPO / "README.md").read_bytes()
    return (src * (n // len(src) + 1))[:n]


def _device_config(family: str, batch: int, seq_len: int, segment_steps: int, lanes: int):
    cfg = small_config(family, batch_size=batch, seq_len=seq_len, verify=False)
    cfg.code.coder, cfg.code.segment_steps, cfg.code.coder_lanes = "device", segment_steps, lanes
    return cfg


@pytest.mark.skipif(not hasattr(os, "sched_setaffinity") or len(os.sched_getaffinity(0)) < 2,
                    reason="needs 2 CPUs to decode with another CPU count")
def test_cli_round_trip_decodes_with_another_cpu_count(tmp_path):
    src = tmp_path / "in.txt"
    src.write_bytes(_text(2000))
    one_cpu = sorted(os.sched_getaffinity(0))[:1]
    r = run_cli("compress", str(src), "-o", str(tmp_path / "a.mdl"), "--model", "nano", "--no-verify",
                "code.coder=device", "code.batch_size=4", "code.seq_len=32",
                preexec_fn=lambda: os.sched_setaffinity(0, one_cpu))
    assert r.returncode == 0, r.stderr
    header, payload = container.read(tmp_path / "a.mdl")
    assert header["env"]["threads"] == 1 and header["coder"] == dr.NAME and header["coder"].startswith("device-rans-24")
    # The default: one rANS coder over all 4 streams, one segment.
    assert header["layout"]["lanes"] == 1 and header["layout"]["lane_bytes"] == [[len(payload)]]
    assert sum(header["layout"]["segments"]) == len(payload)
    r = run_cli("decompress", str(tmp_path / "a.mdl"), "-o", str(tmp_path / "a.txt"))
    assert r.returncode == 0, r.stderr
    assert (tmp_path / "a.txt").read_bytes() == src.read_bytes()
    # A payload byte changed under valid CRCs is refused by the coder's checks or the sha256 (1000
    # such cases in-process below; the CLI's write-after-sha256 path is the host coder's, tested in
    # test_reliability). A byte changed in the stored file: its chunk's CRC32 refuses it before any
    # decoding, in one line.
    blob = bytearray((tmp_path / "a.mdl").read_bytes())
    blob[-60] ^= 0x21
    (tmp_path / "g.mdl").write_bytes(bytes(blob))
    one_line_error(run_cli("decompress", str(tmp_path / "g.mdl"), "-o", str(tmp_path / "g.txt")), "CRC32")
    assert not (tmp_path / "g.txt").exists()
    assert not list(tmp_path.glob(".*tmp"))


@pytest.fixture(scope="module")
def tiny():
    """A small device-coded container (a Transformer learning README text: 4 streams on 2 rANS
    lanes of 2 streams each, 7 steps, 4 segments) and its decoder, built once."""
    data = _text(4 * 16 * 7 - 5)  # the last stream is short: padding too
    cfg = _device_config("transformer", 4, 16, 2, lanes=2)
    res = prequential.encode(cfg, data, {"name": "readme"})
    run = prequential.replayer(res.header)
    return data, res, run


def test_bits_are_the_quantised_ideal_plus_a_documented_flush(tiny):
    """On real model outputs: every lane of every segment costs its Σ log2(2**prec / f) under
    the tables it was coded with plus at most FLUSH_BITS_MAX (module docstring), and the whole
    payload is within 0.02% of that ideal + the flushes; the decoder gets the data back."""
    data, res, run = tiny
    lengths_SxK = np.array(res.header["layout"]["lane_bytes"])
    ideal_SxK = np.array(res.segment_ideal_bits)
    assert lengths_SxK.shape == ideal_SxK.shape == (4, 2)
    flush_SxK = 8 * lengths_SxK - ideal_SxK
    assert (flush_SxK <= dr.FLUSH_BITS_MAX).all(), flush_SxK
    # The start from state 0 can also cost a few bits less than the ideal of the last tables.
    assert (flush_SxK >= -2 * dr.PREC_MIN).all(), flush_SxK
    assert 8 * len(res.payload) <= ideal_SxK.sum() * (1 + 2e-4) + dr.FLUSH_BITS_MAX * lengths_SxK.size
    # The quantised tables cost little over the model's float probabilities.
    assert ideal_SxK.sum() <= res.ideal_bits * (1 + 2e-4)
    assert run(res.payload)[0] == data


# ---- corruption: 1000 of them, in-process against the decoder ----------------------------------
@contextlib.contextmanager
def _layout(header, stream_bytes):
    """The decoder reads the header it was built for: swaps its per-lane lengths for a while."""
    old = header["layout"]["lane_bytes"], header["layout"]["segments"]
    header["layout"]["lane_bytes"] = stream_bytes
    header["layout"]["segments"] = [sum(s) for s in stream_bytes]
    try:
        yield
    finally:
        header["layout"]["lane_bytes"], header["layout"]["segments"] = old


def _refused(fn) -> str:
    try:
        fn()
    except MdlbenchError as e:
        msg = str(e)
        assert msg and "\n" not in msg, msg
        return msg
    raise AssertionError("a corrupted container was accepted")


def test_1000_corruptions_are_all_refused_in_one_line(tiny):
    data, res, run = tiny
    blob = container.encode(res.header, res.payload, chunk_bytes=64)
    payload = res.payload
    per = res.header["layout"]["lane_bytes"]
    rng = random.Random(1234)
    kinds: dict[str, int] = {}
    for i in range(1000):
        if i < 500:  # the container as stored: CRCs, lengths, magic and the header checksum catch these
            b = bytearray(blob)
            kind = rng.choice(["flip", "byte", "truncate", "append"])
            if kind == "flip":
                j = rng.randrange(len(b))
                b[j] ^= 1 << rng.randrange(8)
            elif kind == "byte":
                j = rng.randrange(len(b))
                b[j] = (b[j] + rng.randrange(1, 256)) % 256
            elif kind == "truncate":
                del b[rng.randrange(len(b)):]
            else:
                b += bytes(rng.randrange(256) for _ in range(rng.randrange(1, 9)))

            def attempt(b=bytes(b)):
                header, p = container.decode(b)
                run(p)
            _refused(attempt)
        elif i < 900:  # the payload under recomputed CRCs: only the coder and the sha256 stand guard
            p = bytearray(payload)
            kind = rng.choice(["flip", "byte", "zero", "swap"])
            j = rng.randrange(len(p))
            if kind == "flip":
                p[j] ^= 1 << rng.randrange(8)
            elif kind == "byte":
                p[j] = (p[j] + rng.randrange(1, 256)) % 256
            elif kind == "zero":
                p[j] = 0 if p[j] else 1
            else:
                k = rng.randrange(len(p))
                if p[j] == p[k]:
                    p[k] ^= 0x80
                p[j], p[k] = p[k], p[j]
            msg = _refused(lambda p=bytes(p): run(p))
            assert "cannot be decoded" in msg or "sha256" in msg, msg
        else:  # the per-lane lengths (CRCs recomputed): a byte moved to the neighbour, or dropped
            kind = rng.choice(["move", "drop", "add"])
            seg, b = rng.randrange(len(per)), rng.randrange(len(per[0]))
            new = [list(s) for s in per]
            p = bytearray(payload)
            at = sum(map(sum, per[:seg])) + sum(per[seg][:b + 1])  # end of that stream
            if kind == "move" and new[seg][b] > 0:
                c = (b + 1) % len(new[seg])
                if c != b:
                    new[seg][b] -= 1
                    new[seg][c] += 1
                    # the lengths no longer cut where the streams end, but the bytes stay put
            elif kind == "drop" and new[seg][b] > 0:
                new[seg][b] -= 1
                del p[at - 1]
            else:
                kind = "add"
                new[seg][b] += 1
                p[at:at] = bytes([rng.randrange(256)])
            if new == per and bytes(p) == payload:
                kind = "add"
                new[seg][b] += 1
                p[at:at] = bytes([rng.randrange(256)])
            with _layout(res.header, new):
                _refused(lambda p=bytes(p): run(p))
        kinds[kind] = kinds.get(kind, 0) + 1
    assert sum(kinds.values()) == 1000, kinds


# ---- checkpoint / resume -------------------------------------------------------------------------
@pytest.mark.slow  # suite budget: ~95 s on 2 cores; the host coder's resume test is in the default suite
def test_sigkill_then_resume_gives_the_same_container_bytes(tmp_path):
    """As the host coder's test in test_reliability.py, with code.coder=device."""
    whole, killed = tmp_path / "whole", tmp_path / "killed"
    r = run_train(*SMALL, f"hydra.run.dir={whole}")
    assert r.returncode == 0, r.stderr
    n_steps = count_lines(whole / "metrics.jsonl")
    assert n_steps > 30
    header = container.read(whole / "pystdlib.mdl")[0]
    assert header["coder"] == dr.NAME and len(header["layout"]["segments"]) == -(-n_steps // 4)

    kill_at = random.Random(os.getpid()).randrange(6, n_steps - 3)  # past the first checkpoint
    sigkill_training_at_step(SMALL, killed, kill_at)
    assert not (killed / "pystdlib.mdl").exists() and (killed / "checkpoint").is_dir()

    r = run_train(*SMALL, f"hydra.run.dir={killed}")
    assert r.returncode == 0, r.stderr
    assert "resuming from the checkpoint at step" in r.stdout, (kill_at, r.stdout)
    assert (killed / "pystdlib.mdl").read_bytes() == (whole / "pystdlib.mdl").read_bytes(), f"killed at step {kill_at}"
    steps_seen = [json.loads(line)["step"] for line in (killed / "metrics.jsonl").read_text().splitlines()]
    assert steps_seen == list(range(n_steps))
    r = run_cli("decode", str(killed / "pystdlib.mdl"), "-o", str(tmp_path / "out"))
    assert r.returncode == 0, r.stderr
    assert hashlib.sha256((tmp_path / "out").read_bytes()).hexdigest() == header["data"]["sha256"]


def test_device_coder_with_several_devices_is_one_clear_line(tmp_path):
    r = run_train(*SMALL, "code.devices=2", f"hydra.run.dir={tmp_path / 'run'}")
    one_line_error(r, "code.coder=device", "code.devices=1")


def test_the_accelerator_branch_codes_the_same_bytes(tiny, monkeypatch):
    """Off the CPU the step computes the decoder's pops and selects (no ``lax.cond``, which XLA's
    GPU backend would run with a host read-back per position). That branch is traced here on the
    CPU by making the step see another backend: it must write exactly the CPU branch's bytes and
    decode them."""
    import jax

    data, res, _ = tiny
    real = jax.default_backend
    monkeypatch.setattr(jax, "default_backend", lambda: "gpu")
    cfg = _device_config("transformer", 4, 16, 2, lanes=2)
    other = prequential.encode(cfg, data, {"name": "readme"})
    assert other.header["env"]["backend"] == "gpu"  # the step was traced for another backend
    assert other.payload == res.payload and other.header["layout"] == res.header["layout"]
    assert prequential.replayer(other.header)(other.payload)[0] == data
    monkeypatch.setattr(jax, "default_backend", real)
