"""Reliability: resume after SIGKILL, refusal of foreign checkpoints, multi-device replay,
degenerate inputs, GPU determinism (marked)."""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from conftest import REPO, TRAIN_CMD, count_lines, run_cli, run_train, sigkill_training_at_step

# ~190 steps of 4 x 32 bytes with the smallest preset; a segment (checkpoint point) every 8 steps.
SMALL = ["model=nano", "data=pystdlib", "data.max_bytes=24000", "code.batch_size=4", "code.seq_len=32",
         "code.segment_steps=8", "code.checkpoint_s=0", "code.verify=false", "logger=disabled", "baselines=false"]


# A third of SMALL's data: ~63 steps, a checkpoint every 8 (the suite's budget; the kill point is still random).
KILLED = [o if not o.startswith("data.max_bytes=") else "data.max_bytes=8000" for o in SMALL]


def test_sigkill_then_resume_gives_the_same_container_bytes(tmp_path):
    whole, killed = tmp_path / "whole", tmp_path / "killed"
    r = run_train(*KILLED, f"hydra.run.dir={whole}")
    assert r.returncode == 0, r.stderr
    steps = json.loads((whole / "summary.json").read_text())["config"]["code"]
    n_steps = count_lines(whole / "metrics.jsonl")
    assert n_steps > 50, steps

    # Kill at a random step (seeded, so a failure can be reproduced), past the first checkpoint.
    kill_at = random.Random(os.getpid()).randrange(12, n_steps - 5)
    sigkill_training_at_step(KILLED, killed, kill_at)
    assert not (killed / "pystdlib.mdl").exists() and not (killed / "summary.json").exists()
    assert (killed / "checkpoint").is_dir()

    r = run_train(*KILLED, f"hydra.run.dir={killed}")
    assert r.returncode == 0, r.stderr
    assert "resuming from the checkpoint at step" in r.stdout, (kill_at, r.stdout)
    assert (killed / "pystdlib.mdl").read_bytes() == (whole / "pystdlib.mdl").read_bytes(), f"killed at step {kill_at}"
    assert not (killed / "checkpoint").exists()
    # The metrics of the resumed run are one line per step, as if it had never stopped.
    steps_seen = [json.loads(line)["step"] for line in (killed / "metrics.jsonl").read_text().splitlines()]
    assert steps_seen == list(range(n_steps))
    summary = json.loads((killed / "summary.json").read_text())
    assert summary["code"]["bits"] == json.loads((whole / "summary.json").read_text())["code"]["bits"]
    # Byte-identical to the uninterrupted run's container, so it decodes as any container does
    # (the device coder's resume test, -m slow, also decodes its resumed container).


def test_checkpoint_of_another_config_is_refused(tmp_path):
    run_dir = tmp_path / "run"
    env = {**os.environ, "WANDB_MODE": "disabled"}
    proc = subprocess.Popen([*TRAIN_CMD, *SMALL, f"hydra.run.dir={run_dir}"], cwd=REPO, env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 300
    # A finished orbax checkpoint is a directory named by its step (renamed into place when complete).
    done = lambda: any(p.name.isdigit() for p in (run_dir / "checkpoint").glob("*")) if (run_dir / "checkpoint").is_dir() else False
    while not done() and time.monotonic() < deadline:
        assert proc.poll() is None, "run ended before its first checkpoint"
        time.sleep(0.02)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    r = run_train(*SMALL, "optim.lr=0.001", f"hydra.run.dir={run_dir}")
    assert r.returncode == 2, r.stderr
    assert "checkpoint of a different config" in r.stderr and "Traceback" not in r.stderr
    assert len(r.stderr.strip().splitlines()) == 1, r.stderr
    assert not (run_dir / "summary.json").exists()


@pytest.mark.slow  # suite budget: ~70 s on 2 cores
def test_two_devices_data_parallel_replays_bit_exactly(tmp_path):
    run_dir = tmp_path / "run"
    env = {**os.environ, "WANDB_MODE": "disabled", "XLA_FLAGS": "--xla_force_host_platform_device_count=2"}
    overrides = [o for o in SMALL if not o.startswith("code.verify")] + [
        "data.max_bytes=6000", "code.devices=2", "code.verify=true", f"hydra.run.dir={run_dir}"]
    r = subprocess.run([*TRAIN_CMD, *overrides], cwd=REPO, env=env, capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr[-2000:]
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["verify"]["ok"] is True and summary["verify"]["decoded_sha256"] == summary["data"]["sha256"]
    assert "xla_force_host_platform_device_count=2" in summary["env"]["xla_flags"]
    # The decoder (a fresh process without the flag in its environment) sets it from the container.
    clean = {k: v for k, v in os.environ.items() if k != "XLA_FLAGS"}
    r = subprocess.run([sys.executable, "-m", "mdlbench.codes.replay", str(run_dir / "pystdlib.mdl"),
                        "-o", str(tmp_path / "out")], cwd=REPO, env=clean, capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    assert len((tmp_path / "out").read_bytes()) == summary["data"]["bytes"]


def test_devices_must_divide_the_batch(tmp_path):
    r = run_train(*SMALL, "code.devices=3", f"hydra.run.dir={tmp_path / 'run'}")
    assert r.returncode == 2 and "divisible by code.devices" in r.stderr and "Traceback" not in r.stderr


def test_more_devices_than_present_is_one_clear_line(tmp_path):
    r = run_train(*SMALL, "code.devices=2", f"hydra.run.dir={tmp_path / 'run'}")
    assert r.returncode == 2 and "JAX sees 1 device" in r.stderr and "Traceback" not in r.stderr, r.stderr
    assert not (tmp_path / "run" / "summary.json").exists()


@pytest.mark.parametrize("content", [b"x", pytest.param(b"\x00\xff", marks=pytest.mark.slow)])  # suite budget
def test_one_and_two_byte_files_round_trip(tmp_path, content):
    src = tmp_path / "tiny.bin"
    src.write_bytes(content)
    # The decompress below is the separate-process check: compress need not run one as well.
    r = run_cli("compress", str(src), "-o", str(tmp_path / "t.mdl"), "model=nano", "--no-verify")
    assert r.returncode == 0, r.stderr
    r = run_cli("decompress", str(tmp_path / "t.mdl"), "-o", str(tmp_path / "back"))
    assert r.returncode == 0, r.stderr
    assert (tmp_path / "back").read_bytes() == content


def test_output_under_a_file_is_one_clear_line(tmp_path):
    (tmp_path / "afile").write_bytes(b"")
    r = run_cli("compress", str(REPO / "README.md"), "-o", str(tmp_path / "afile" / "x.mdl"))
    assert r.returncode == 2 and len(r.stderr.strip().splitlines()) == 1 and "Traceback" not in r.stderr, r.stderr
    assert not list(tmp_path.glob("afile*/*"))


@pytest.mark.gpu
def test_gpu_encode_decode_deterministic(tmp_path):
    jax = pytest.importorskip("jax")
    if jax.default_backend() != "gpu":
        pytest.skip("no GPU")
    run_dir = tmp_path / "run"
    r = run_train(*SMALL, "code.verify=true", f"hydra.run.dir={run_dir}")
    assert r.returncode == 0, r.stderr
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["env"]["backend"] == "gpu" and summary["verify"]["ok"] is True
    assert "--xla_gpu_deterministic_ops=true" in summary["env"]["xla_flags"]


def _rss_anon_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("RssAnon:"):
            return int(line.split()[1])
    return 0


@pytest.mark.skipif(not Path("/proc/self/status").exists(), reason="needs /proc")
def test_file_larger_than_the_stream_threshold_is_streamed_not_loaded(tmp_path):
    # A 4 GiB sparse file, memory-mapped above a 1 MiB threshold: the encoder must start coding
    # without ever holding the file (or a padded copy of it) in anonymous memory.
    big = tmp_path / "big.bin"
    with open(big, "wb") as f:
        f.truncate(4 << 30)
    out = tmp_path / "big.mdl"
    env = {**os.environ, "WANDB_MODE": "disabled", "MDLBENCH_STREAM_BYTES": str(1 << 20)}
    proc = subprocess.Popen([sys.executable, "-c", "import sys; from mdlbench.cli import main; sys.exit(main())",
                             "compress", str(big), "-o", str(out), "model=nano", "logger.log_every_s=0.2"],
                            cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    peak_kib, coding = 0, False
    deadline = time.monotonic() + 240
    try:
        while time.monotonic() < deadline and proc.poll() is None:
            line = proc.stdout.readline()
            peak_kib = max(peak_kib, _rss_anon_kib(proc.pid))
            if "/4294967296 bytes" in line:
                coding = True
                break
    finally:
        if proc.poll() is None:
            peak_kib = max(peak_kib, _rss_anon_kib(proc.pid))
            os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
    assert coding, proc.stderr.read()[-2000:]
    assert peak_kib < 1_500_000, f"{peak_kib} KiB of anonymous memory for a 4 GiB input"
    assert not out.exists() and [p.name for p in tmp_path.iterdir()] == ["big.bin"]


@pytest.mark.slow  # suite budget (~70 s); streaming itself is in the default suite (the test above)
def test_streamed_decode_writes_through_a_temporary_file(tmp_path):
    src = tmp_path / "src.txt"
    src.write_bytes((REPO / "README.md").read_bytes()[:3000])
    r = run_cli("compress", str(src), "-o", str(tmp_path / "s.mdl"), "model=nano", "--no-verify")
    assert r.returncode == 0, r.stderr
    r = run_cli("decompress", str(tmp_path / "s.mdl"), "-o", str(tmp_path / "back"),
                env={"MDLBENCH_STREAM_BYTES": "1"})
    assert r.returncode == 0, r.stderr
    assert (tmp_path / "back").read_bytes() == src.read_bytes()
    # A damaged payload: refused, and neither the output nor the memory-mapped temporary remains.
    blob = bytearray((tmp_path / "s.mdl").read_bytes())
    from mdlbench.coding import container

    header, payload = container.decode(bytes(blob))
    forged = bytearray(payload)
    forged[len(forged) // 2] ^= 0x40
    container.write(tmp_path / "f.mdl", header, bytes(forged))
    r = run_cli("decompress", str(tmp_path / "f.mdl"), "-o", str(tmp_path / "forged_out"),
                env={"MDLBENCH_STREAM_BYTES": "1"})
    assert r.returncode == 2 and "Traceback" not in r.stderr, r.stderr
    assert not (tmp_path / "forged_out").exists() and not list(tmp_path.glob(".*tmp"))
