"""What the code families' experiments share on the encoder's side: the run directory (a finished
run with the same config is not redone, one with another config is refused), running a decoder in
a separate process, and writing the summary and a results table with its provenance.

No decoder imports this module (it is in no program): the receiver needs only its own decoder.
"""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Callable

from mdlbench import provenance
from mdlbench.coding import container
from mdlbench.errors import MdlbenchError

REPO_ROOT = Path(__file__).resolve().parents[2]


def finished_run(run_dir: Path, config_hash: str, hash_of: Callable[[dict[str, Any]], str | None] | None = None
                 ) -> dict[str, Any] | None:
    """The summary of the run finished in ``run_dir`` from the same config, if any.

    Args:
      run_dir: the job's run directory (``summary.json`` is written last, whole, by
        :func:`write_summary`, so its presence means the job finished).
      config_hash: this job's config hash.
      hash_of: the config hash a summary records (default: its ``config_hash`` entry).

    Returns:
      The finished summary, or None when there is none (or it cannot be read as JSON: not one this
      code wrote, so the job runs again).

    Raises:
      MdlbenchError: a run of a different config finished there.
    """
    path = Path(run_dir) / "summary.json"
    if not path.exists():
        return None
    try:
        old = json.loads(path.read_text())
    except json.JSONDecodeError:
        return None
    if not isinstance(old, dict):
        return None
    if (hash_of(old) if hash_of else old.get("config_hash")) != config_hash:
        raise MdlbenchError(f"{run_dir} holds a finished run with a different config; "
                            "choose another run_dir/experiment or delete it")
    return old


def make_run_dir(run_dir: Path) -> None:
    """Creates ``run_dir`` and proves it writable, or says in one line why not."""
    try:
        Path(run_dir).mkdir(parents=True, exist_ok=True)
        probe = Path(run_dir) / ".write_test"
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as e:
        raise MdlbenchError(f"cannot write to run directory {run_dir}: {e.strerror}") from None


def write_summary(run_dir: Path, summary: dict[str, Any], indent: int = 2) -> Path:
    """Writes ``<run_dir>/summary.json`` atomically (whole or not at all): the mark of a finished job."""
    path = Path(run_dir) / "summary.json"
    container.atomic_write(path, (json.dumps(summary, indent=indent, default=json_default) + "\n").encode())
    return path


def decoder_env() -> dict[str, str]:
    """This process's environment with this checkout first on ``PYTHONPATH``, so the separate
    decoder runs the very source the encoder ran (and recorded in the container's program hash)."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(REPO_ROOT)] + ([env["PYTHONPATH"]] if env.get("PYTHONPATH") else []))
    return env


def decoder_argv(module: str, *args: str) -> list[str]:
    """The command line of ``python -m MODULE ARGS`` with this interpreter (run it with :func:`decoder_env`)."""
    return [sys.executable, "-m", module, *args]


def run_decoder(module: str, *args: str) -> tuple[subprocess.CompletedProcess, float]:
    """``python -m MODULE ARGS`` in a fresh process (the decoder pins its own environment before
    JAX starts); returns the finished process and its wall time in seconds."""
    t0 = time.perf_counter()
    proc = subprocess.run(decoder_argv(module, *args), capture_output=True, text=True, env=decoder_env())
    return proc, time.perf_counter() - t0


def last_line(proc: subprocess.CompletedProcess) -> str:
    """The decoder's last line of output (its one-line error when it failed), or its exit status."""
    text = (proc.stdout + proc.stderr).strip()
    return text.splitlines()[-1] if text else f"exit status {proc.returncode}"


def write_table(path: Path, rows: list[dict[str, Any]], columns: list[str], results: list[dict[str, Any]]) -> None:
    """Writes a CSV table atomically, then its provenance sidecar (``results``: one
    :func:`mdlbench.provenance.result` per coded result in it)."""
    import pandas as pd

    path.parent.mkdir(parents=True, exist_ok=True)
    buf = io.StringIO()
    pd.DataFrame(rows, columns=columns).to_csv(buf, index=False)
    container.atomic_write(path, buf.getvalue().encode())
    provenance.write(path, results=results)


def json_default(o: Any) -> Any:
    """``json.dumps(default=...)`` for summaries holding numpy scalars and arrays."""
    import numpy as np

    if isinstance(o, (np.floating, np.integer)):
        return o.item()
    if isinstance(o, np.ndarray):
        return o.tolist()
    return str(o)
