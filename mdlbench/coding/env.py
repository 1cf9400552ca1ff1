"""The environment fingerprint recorded in every container, and the decoder's pinning of it.

Bit-exact replay depends on more than the program: XLA's CPU code changes with the number of
threads (intra-op partitioning changes summation order), the instruction set it compiles for,
the XLA flags, and the library versions. The encoder records them; the decoder

  1. pins the recorded thread count (CPU affinity) and XLA flags *before* JAX starts,
  2. refuses with one line when a version or the instruction set differs, and
  3. recomputes the canary (one coding + training step on a fixed batch) and refuses when its
     hash differs, before decoding anything.

On a GPU or TPU backend the arithmetic also depends on the device and its libraries, so the
fingerprint records the device model (``device_kind``), the CUDA runtime and cuDNN versions, and
the versions of the installed accelerator packages (``jax-cuda*-plugin``, ``jax-cuda*-pjrt``,
``nvidia-*``, ``libtpu``); they are compared when the recorded backend is not the CPU. On the CPU
the instruction set is part of the arithmetic: when it cannot be read, the fingerprint refuses
(fail closed) rather than record an empty set that any machine would match.

Containers written before these fields existed (``fingerprint_version`` absent) are still
checked on every field they do record; the fields they lack are not compared, and the canary
check still runs.
"""

from __future__ import annotations

import importlib
import os
import platform
import re
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
# Version of the fingerprint's layout; 2 added the accelerator fields below.
FINGERPRINT_VERSION = 2
# Fields compared when the recorded backend is a GPU or TPU, besides every recorded accelerator
# package (ACCELERATOR_PACKAGES). cuda.driver is recorded but not compared: a driver update alone
# does not change XLA's kernels, and the canary check would catch it if it did.
ACCELERATOR_CHECKED = ("device_kind", "cuda.runtime", "cuda.cudnn")
# Distributions (normalised names) whose versions define GPU/TPU arithmetic: the jax plugins,
# NVIDIA's libraries (cuBLAS, cuDNN, ptxas ...) and the TPU runtime.
ACCELERATOR_PACKAGES = re.compile(
    r"^(jax-cuda\d+-(plugin|pjrt)|jax-rocm\d+-(plugin|pjrt)|nvidia-.+|libtpu(-nightly)?)$")
# Modules of the jax CUDA plugins that report the CUDA/cuDNN versions they run with.
_CUDA_VERSION_MODULES = ("jax_cuda13_plugin._versions", "jax_cuda12_plugin._versions")
CPUINFO = "/proc/cpuinfo"


def _isa() -> list[str] | None:
    """The ISA_FLAGS this CPU has, or None when they cannot be read."""
    try:
        with open(CPUINFO) as f:
            for line in f:
                if line.startswith(("flags", "Features")):
                    have = set(line.split(":", 1)[1].split())
                    return sorted(f for f in ISA_FLAGS if f in have)
    except OSError:
        pass
    return None


def _device_kind() -> str | None:
    """The model of the first JAX device (e.g. ``NVIDIA H200``), or None when it cannot be read."""
    try:
        import jax

        return str(jax.devices()[0].device_kind)
    except Exception:  # noqa: BLE001 - any failure here means "unknown", which check() treats as such
        return None


def _cuda_versions() -> dict[str, Any]:
    """CUDA runtime, cuDNN and driver versions as the installed jax CUDA plugin reports them.

    Returns:
      ``{"cuda.runtime": int, "cuda.cudnn": int, "cuda.driver": int}`` for the keys that could be
      read (CUDA's integer encoding, e.g. 12080 for 12.8); empty without a CUDA plugin.
    """
    for name in _CUDA_VERSION_MODULES:
        try:
            mod = importlib.import_module(name)
        except ImportError:
            continue
        out: dict[str, Any] = {}
        for key, fn in (("cuda.runtime", "cuda_runtime_get_version"), ("cuda.cudnn", "cudnn_get_version"),
                        ("cuda.driver", "cuda_driver_get_version")):
            try:
                out[key] = int(getattr(mod, fn)())
            except Exception:  # noqa: BLE001 - a private API: a missing function leaves the key out
                pass
        return out
    return {}


def _accelerator_packages() -> dict[str, str]:
    """``{"pkg.<name>": version}`` of every installed accelerator distribution (see ACCELERATOR_PACKAGES)."""
    found: dict[str, str] = {}
    for dist in metadata.distributions():
        name = re.sub(r"[-_.]+", "-", (dist.metadata.get("Name") or "")).lower()
        if ACCELERATOR_PACKAGES.match(name):
            found[f"pkg.{name}"] = dist.version
    return dict(sorted(found.items()))


def _cpu_model() -> str:
    try:
        with open(CPUINFO) as f:
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
    """The environment as it affects the arithmetic; ``backend`` is jax.default_backend().

    Raises:
      EnvironmentMismatch: on the CPU backend, when the instruction set cannot be read.
    """
    isa = _isa()
    if isa is None and backend == "cpu":
        raise EnvironmentMismatch(
            f"cannot read the CPU instruction set ({CPUINFO} is missing or has no flags line): "
            "bit-exact coding on the CPU depends on it, so mdlbench refuses rather than record an unknown one")
    fp: dict[str, Any] = {
        "fingerprint_version": FINGERPRINT_VERSION,
        "python": platform.python_version(),
        "machine": platform.machine(),
        "isa": isa,
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
    if backend != "cpu":
        fp["device_kind"] = _device_kind()
        fp.update(_cuda_versions())
    # Recorded on every backend (informative on the CPU), compared on GPU/TPU only.
    fp.update(_accelerator_packages())
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


def _accelerator_keys(recorded: dict[str, Any], here: dict[str, Any], versioned: bool) -> list[str]:
    """The accelerator fields to compare: the fixed ones and every accelerator package either side
    records (only those the container records, for a container from before version 2)."""
    pkgs = {k for k in recorded if k.startswith("pkg.") and ACCELERATOR_PACKAGES.match(k[4:])}
    if versioned:
        pkgs |= {k for k in here if k.startswith("pkg.") and ACCELERATOR_PACKAGES.match(k[4:])}
    fixed = [k for k in ACCELERATOR_CHECKED if versioned or k in recorded]
    return fixed + sorted(pkgs)


def check(recorded: dict[str, Any], here: dict[str, Any]) -> None:
    """Raises EnvironmentMismatch naming the first field that differs.

    Compared: :data:`CHECKED` always; on a GPU/TPU container also :data:`ACCELERATOR_CHECKED` and
    every accelerator package version. A field recorded on one side but absent on the other is a
    mismatch (with a line saying which side lacks it), except the accelerator fields of a
    container written before they were recorded (no ``fingerprint_version``), which are skipped.
    A CPU container must record an instruction set.
    """
    versioned = "fingerprint_version" in recorded
    keys = list(CHECKED)
    if recorded.get("backend", "cpu") != "cpu":
        keys += _accelerator_keys(recorded, here, versioned)
    elif recorded.get("isa") is None:
        raise EnvironmentMismatch(
            "the container records no CPU instruction set, so this machine cannot be shown to compute the same "
            "arithmetic; re-encode it with this mdlbench")
    for key in keys:
        if key in recorded and key not in here:
            raise EnvironmentMismatch(
                f"environment differs from the encoder's: {key} was {recorded[key]!r}, this environment has none "
                "(not installed or not readable here)")
        if key not in recorded and key in here:
            raise EnvironmentMismatch(
                f"environment differs from the encoder's: {key} is {here[key]!r} here, the container records none")
        if recorded.get(key) != here.get(key):
            raise EnvironmentMismatch(
                f"environment differs from the encoder's: {key} was {recorded.get(key)!r}, here {here.get(key)!r}; "
                "decoding needs the same versions, instruction set, XLA flags and devices")
    if recorded.get("threads") != here.get("threads"):
        raise EnvironmentMismatch(f"environment differs: threads was {recorded.get('threads')}, here {here.get('threads')}")
