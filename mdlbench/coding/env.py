"""The environment fingerprint recorded in every container, and the decoder's pinning of it.

Bit-exact replay depends on more than the program: XLA's CPU code changes with the number of
threads (intra-op partitioning changes summation order), the instruction set it compiles for,
the XLA flags, and the library versions. The encoder records them; the decoder

  1. pins the recorded thread count (CPU affinity) and XLA flags *before* JAX starts,
  2. refuses with one line when a version or the instruction set differs, and
  3. recomputes the canary (one coding + training step on a fixed batch) and refuses when its
     hash differs, before decoding anything.
"""

from __future__ import annotations

import os
import platform
import sys
from importlib import metadata
from typing import Any

from mdlbench.errors import EnvironmentMismatch

# Packages whose arithmetic defines the probabilities or the bitstream.
PINNED_PACKAGES = ("jax", "jaxlib", "flax", "optax", "constriction", "numpy")
# Instruction-set extensions XLA:CPU may compile for; a difference changes generated code.
ISA_FLAGS = (
    "sse4_1", "sse4_2", "avx", "avx2", "fma", "f16c", "avx512f", "avx512dq", "avx512bw", "avx512vl",
    "avx512cd", "avx512_vnni", "avx512_bf16", "avx512_fp16", "amx_tile", "amx_bf16", "amx_int8",
    "asimd", "sve", "sve2",
)
# Fields the decoder must match exactly (threads is pinned, not compared).
CHECKED = ("python", "machine", "isa", "xla_flags", "backend") + tuple(f"pkg.{p}" for p in PINNED_PACKAGES)


def _isa() -> list[str]:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith(("flags", "Features")):
                    have = set(line.split(":", 1)[1].split())
                    return sorted(f for f in ISA_FLAGS if f in have)
    except OSError:
        pass
    return []


def _cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor()


def threads() -> int:
    """CPUs this process may run on; XLA:CPU sizes its thread pool from this."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)


def fingerprint(backend: str = "cpu") -> dict[str, Any]:
    """The environment as it affects the arithmetic; ``backend`` is jax.default_backend()."""
    fp: dict[str, Any] = {
        "python": platform.python_version(),
        "machine": platform.machine(),
        "isa": _isa(),
        "cpu_model": _cpu_model(),
        "xla_flags": os.environ.get("XLA_FLAGS", ""),
        "threads": threads(),
        "backend": backend,
    }
    for p in PINNED_PACKAGES:
        try:
            fp[f"pkg.{p}"] = metadata.version(p)
        except metadata.PackageNotFoundError:
            fp[f"pkg.{p}"] = None
    return fp


GPU_DETERMINISTIC = "--xla_gpu_deterministic_ops=true"


def deterministic_gpu() -> None:
    """On a machine with an NVIDIA GPU, asks XLA for deterministic GPU kernels (fixed
    reduction order, no atomics) before JAX starts; the flag is then recorded with the other
    XLA flags and the decoder sets it too. No effect on CPU-only machines."""
    if "jax" in sys.modules or not os.path.exists("/dev/nvidiactl"):
        return
    flags = os.environ.get("XLA_FLAGS", "")
    if "xla_gpu_deterministic_ops" not in flags:
        os.environ["XLA_FLAGS"] = (flags + " " + GPU_DETERMINISTIC).strip()


def pin(recorded: dict[str, Any]) -> None:
    """Reproduces the recorded thread count and XLA flags; must run before JAX is imported."""
    want = int(recorded["threads"])
    flags = recorded.get("xla_flags", "")
    if "jax" in sys.modules:
        if threads() != want or os.environ.get("XLA_FLAGS", "") != flags:
            raise EnvironmentMismatch(
                f"JAX was already imported with {threads()} threads / XLA_FLAGS={os.environ.get('XLA_FLAGS', '')!r}; "
                f"the container needs {want} / {flags!r}: decode in a fresh process (mdlbench decode)")
        return
    if hasattr(os, "sched_setaffinity"):
        allowed = sorted(os.sched_getaffinity(0))
        if len(allowed) < want:
            raise EnvironmentMismatch(
                f"the container was encoded with {want} CPU threads but only {len(allowed)} CPUs are available here")
        os.sched_setaffinity(0, allowed[:want])
    elif (os.cpu_count() or 1) != want:
        raise EnvironmentMismatch(f"cannot pin {want} threads on this platform (no sched_setaffinity)")
    if flags:
        os.environ["XLA_FLAGS"] = flags
    else:
        os.environ.pop("XLA_FLAGS", None)


def check(recorded: dict[str, Any], here: dict[str, Any]) -> None:
    """Raises EnvironmentMismatch naming the first field that differs."""
    for key in CHECKED:
        if recorded.get(key) != here.get(key):
            raise EnvironmentMismatch(
                f"environment differs from the encoder's: {key} was {recorded.get(key)!r}, here {here.get(key)!r}; "
                "decoding needs the same versions, instruction set and XLA flags")
    if recorded.get("threads") != here.get("threads"):
        raise EnvironmentMismatch(f"environment differs: threads was {recorded.get('threads')}, here {here.get('threads')}")
