"""Shared test helpers: small configs, the real-data directory, subprocess runners."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
_shared = REPO.parent / "shared" / "data"
DATA_DIR = Path(os.environ.get("MDLBENCH_DATA") or _shared)

os.environ.setdefault("WANDB_MODE", "disabled")


def shared_data(rel: str) -> Path:
    """A file from the read-only shared data directory, or skip when it is not there."""
    p = DATA_DIR / rel
    if not p.exists():
        pytest.skip(f"shared data not available: {p}")
    return p


def small_config(family: str = "transformer", **code):
    """A shrunken config (nanodo-style test config): tiny model, short windows, no wandb."""
    from mdlbench.config import CodeConfig, Config, LoggerConfig, ModelConfig

    model = ModelConfig(name=f"test_{family}", family=family, d_model=32, n_layers=1, n_heads=2)
    return Config(experiment="test", model=model,
                  code=CodeConfig(batch_size=code.get("batch_size", 4), seq_len=code.get("seq_len", 32),
                                  verify=code.get("verify", True)),
                  logger=LoggerConfig(wandb_mode="disabled"))


def run_cli(*args: str, cwd: Path | None = None, env: dict | None = None, timeout: int = 600,
            preexec_fn=None) -> subprocess.CompletedProcess:
    """Runs ``python -m mdlbench.cli ARGS`` (the ``mdlbench`` entry point) in a fresh process."""
    e = {**os.environ, "WANDB_MODE": "disabled", **(env or {})}
    return subprocess.run([sys.executable, "-c", "import sys; from mdlbench.cli import main; sys.exit(main())", *args],
                          capture_output=True, text=True, cwd=cwd or REPO, env=e, timeout=timeout,
                          preexec_fn=preexec_fn)


TRAIN_CMD = [sys.executable, "-c", "from mdlbench.cli import train_main; train_main()"]  # mdlbench-train


def run_train(*overrides: str, cwd: Path | None = None, timeout: int = 600) -> subprocess.CompletedProcess:
    """Runs ``mdlbench-train OVERRIDES`` in a fresh process."""
    e = {**os.environ, "WANDB_MODE": "disabled"}
    return subprocess.run([*TRAIN_CMD, *overrides], capture_output=True, text=True, cwd=cwd or REPO, env=e,
                          timeout=timeout)


def one_line_error(r: subprocess.CompletedProcess, *needles: str) -> str:
    """Asserts a CLI refusal: exit status 2, one stderr line, no traceback, containing ``needles``."""
    assert r.returncode == 2, (r.stdout, r.stderr)
    err = r.stderr.strip()
    assert len(err.splitlines()) == 1 and "Traceback" not in r.stderr, r.stderr
    for n in needles:
        assert n in err, err
    return err


def count_lines(path: Path) -> int:
    """Lines written so far to a file another process appends to (0 before it exists)."""
    try:
        return path.read_bytes().count(b"\n")
    except FileNotFoundError:
        return 0


def sigkill_training_at_step(overrides: list[str], run_dir: Path, step: int, timeout_s: float = 300) -> None:
    """Starts ``mdlbench-train OVERRIDES hydra.run.dir=RUN_DIR`` and SIGKILLs it once its
    metrics.jsonl has ``step`` lines (asserting it was still running then)."""
    import signal
    import time

    proc = subprocess.Popen([*TRAIN_CMD, *overrides, f"hydra.run.dir={run_dir}"], cwd=REPO,
                            env={**os.environ, "WANDB_MODE": "disabled"},
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.monotonic() + timeout_s
    while count_lines(run_dir / "metrics.jsonl") < step and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.01)
    assert proc.poll() is None, f"run ended before step {step}: {proc.stderr.read().decode()[-500:]}"
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
