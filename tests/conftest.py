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


def run_train(*overrides: str, cwd: Path | None = None, timeout: int = 600) -> subprocess.CompletedProcess:
    """Runs ``mdlbench-train OVERRIDES`` in a fresh process."""
    e = {**os.environ, "WANDB_MODE": "disabled"}
    return subprocess.run([sys.executable, "-c", "from mdlbench.cli import train_main; train_main()", *overrides],
                          capture_output=True, text=True, cwd=cwd or REPO, env=e, timeout=timeout)
