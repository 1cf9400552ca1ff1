"""What the code families' experiments share on the encoder's side: running a decoder in a
separate process, and writing a results table with its provenance.

No decoder imports this module (it is in no program): the receiver needs only its own decoder.
"""

from __future__ import annotations

import io
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from mdlbench import provenance
from mdlbench.coding import container

REPO_ROOT = Path(__file__).resolve().parents[2]


def decoder_env() -> dict[str, str]:
    """This process's environment with this checkout first on ``PYTHONPATH``, so the separate
    decoder runs the very source the encoder ran (and recorded in the container's program hash)."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(REPO_ROOT)] + ([env["PYTHONPATH"]] if env.get("PYTHONPATH") else []))
    return env


def run_decoder(module: str, *args: str) -> tuple[subprocess.CompletedProcess, float]:
    """``python -m MODULE ARGS`` in a fresh process (the decoder pins its own environment before
    JAX starts); returns the finished process and its wall time in seconds."""
    t0 = time.perf_counter()
    proc = subprocess.run([sys.executable, "-m", module, *args], capture_output=True, text=True, env=decoder_env())
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
