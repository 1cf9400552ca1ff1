"""The data layer: which bytes to code, with their provenance.

``load(cfg)`` turns a :class:`mdlbench.config.DataConfig` into a :class:`Dataset`: a registry
file checked against its recorded size and checksum, any file (``name: file``), the offline
default ``pystdlib``, or a synthetic source of exactly known entropy rate. Every failure is a
:class:`mdlbench.errors.DataError` (or ``ConfigError``) with one clear sentence.

Numpy only, never JAX: the decoder imports this module before JAX starts.
"""

from __future__ import annotations

import hashlib
import math
import platform
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from mdlbench.coding.container import STREAM_BYTES, sha256_hex
from mdlbench.config import DataConfig, SyntheticConfig
from mdlbench.data import registry, stdlib, synthetic
from mdlbench.data.registry import REGISTRY, Entry
from mdlbench.errors import DataError

__all__ = ["Dataset", "load", "names"]


@dataclass
class Dataset:
    """Bytes to code and where they came from.

    Attributes:
      name: the registry name (``data.name``).
      data: the bytes to code (after ``max_bytes``); a read-only uint8 memmap for large files.
      sha256: hex sha256 of ``data``.
      path: the file read ('' for generated data).
      entropy_rate_bits: exact entropy rate in bits per byte for synthetic sources, else None.
      info: provenance (description, url, source parameters, bounds ...), JSON-serialisable.
    """

    name: str
    data: bytes | np.ndarray
    sha256: str
    path: str
    entropy_rate_bits: float | None
    info: dict


def names() -> list[str]:
    """Registered data set names (``file`` included), sorted."""
    return sorted(REGISTRY)


def _read(path: Path, name: str):
    """The file's bytes, or a read-only uint8 memmap of it when it is large."""
    if path.is_dir():
        raise DataError(f"data set {name!r}: {path} is a directory, not a file")
    try:
        size = path.stat().st_size
        if size >= STREAM_BYTES:  # memory-mapped: the coder reads one window per step
            return np.memmap(path, np.uint8, mode="r", shape=(size,))
        return path.read_bytes()
    except FileNotFoundError as e:
        raise DataError(f"data set {name!r}: no file at {path}") from e
    except OSError as e:
        raise DataError(f"data set {name!r}: cannot read {path} ({e.strerror or e})") from e


def _missing(entry: Entry, cfg: DataConfig) -> DataError:
    looked = ", ".join(str(d / entry.relpath) for d in registry.search_dirs(cfg.data_dir))
    fix = f"point {registry.ENV_VAR} or data.data_dir at a directory of data (with {entry.relpath} in it)"
    if entry.downloadable:
        fix += f", or set data.download=true to fetch it from {entry.url}"
    return DataError(f"data set {entry.name!r} not found (looked for {looked}); {fix}")


def _load_file(entry: Entry, cfg: DataConfig) -> tuple[bytes, str, dict[str, Any]]:
    if cfg.path:
        path = Path(cfg.path).expanduser()
    else:
        found = registry.locate(entry, cfg.data_dir)
        if found is None:
            if not cfg.download:
                raise _missing(entry, cfg)
            found = registry.download(entry, cfg.data_dir)
        path = found
    data = _read(path, entry.name)
    if len(data) != entry.size:
        raise DataError(f"data set {entry.name!r} at {path} has {len(data)} bytes, expected {entry.size} "
                        f"(a different or truncated file)")
    got = registry.digest(data, entry.checksum)
    if got != entry.checksum:
        raise DataError(f"data set {entry.name!r} at {path} has checksum {got}, expected {entry.checksum}")
    info = {"description": entry.description, "url": entry.url, "checksum": entry.checksum}
    if entry.bounds:
        info["bounds"] = entry.bounds
    return data, str(path), info


def _load_path(cfg: DataConfig) -> tuple[bytes, str, dict[str, Any]]:
    if not cfg.path:
        raise DataError("data.name=file reads data.path, which is empty; set data.path=<file>")
    path = Path(cfg.path).expanduser()
    return _read(path, "file"), str(path), {"description": REGISTRY["file"].description}


def _load_stdlib(entry: Entry, cfg: DataConfig) -> tuple[bytes, str, dict[str, Any]]:
    root = Path(cfg.path).expanduser() if cfg.path else stdlib.stdlib_dir()
    data, used = stdlib.build(root)
    version = platform.python_version()
    sha = hashlib.sha256(data).hexdigest()
    info: dict[str, Any] = {
        "description": entry.description, "url": None, "stdlib_dir": str(root), "files": used,
        "python_version": version, "python_implementation": platform.python_implementation(),
        "recorded_sha256": dict(entry.checksums),
    }
    recorded = entry.checksums.get(version)
    if recorded != sha:
        ref = ", ".join(entry.checksums)
        info["sha256_note"] = (
            f"these bytes come from Python {version}'s standard library and differ from those recorded for "
            f"Python {ref} (sha256 {sha[:16]}... vs {'unknown' if recorded is None else recorded[:16] + '...'}), "
            "so results are not directly comparable with runs on that version")
    return data, "", info


def _load_synthetic(entry: Entry, cfg: DataConfig) -> tuple[bytes, float, dict[str, Any]]:
    if cfg.path:
        raise DataError(f"data set {entry.name!r} is synthetic and reads no file; leave data.path empty")
    preset = SyntheticConfig(**entry.synthetic) if entry.synthetic else None
    scfg = cfg.synthetic if cfg.synthetic is not None else preset
    if scfg is None:
        raise DataError(f"data set {entry.name!r} needs data.synthetic (kind, alphabet_size, ...)")
    gen = synthetic.generate(scfg)
    info = {
        "description": entry.description if scfg == preset else
        f"{scfg.kind} source given by data.synthetic (not the preset {entry.name!r}: {entry.description})",
        "url": None,
        "source": gen.params,
        "entropy_rate_bits": gen.entropy_rate_bits,
        "empirical_bits_per_byte": gen.empirical_bits,
        "uniform_bits_per_byte": math.log2(scfg.alphabet_size),
        "rng": f"numpy.random.default_rng({scfg.seed}), numpy {np.__version__}",
        "bounds": {"entropy_rate_bits_per_byte": gen.entropy_rate_bits,
                   "note": "the exact entropy rate: no code beats it on average"},
    }
    return gen.data, gen.entropy_rate_bits, info


def load(cfg: DataConfig) -> Dataset:
    """The bytes ``cfg`` names, checked, cut to ``cfg.max_bytes`` (0 = all).

    Raises:
      DataError: unknown name, missing, unreadable, empty or mismatching data.
      ConfigError: invalid synthetic parameters.
    """
    entry = REGISTRY.get(cfg.name)
    if entry is None:
        raise DataError(f"unknown data set {cfg.name!r}; known: {', '.join(names())}")
    if cfg.max_bytes < 0:
        raise DataError(f"data.max_bytes must be >= 0 (0 = all), got {cfg.max_bytes}")
    if cfg.synthetic is not None and entry.kind != registry.SYNTHETIC:
        synth = ", ".join(n for n in names() if REGISTRY[n].kind == registry.SYNTHETIC)
        raise DataError(f"data.synthetic is set but data set {cfg.name!r} is not synthetic (use one of: {synth})")
    rate = None
    if entry.kind == registry.SYNTHETIC:
        data, rate, info = _load_synthetic(entry, cfg)
        path = ""
    elif entry.kind == registry.STDLIB:
        data, path, info = _load_stdlib(entry, cfg)
    elif entry.kind == registry.KNOWLEDGE:
        from mdlbench.data import knowledge

        kb = knowledge.generate(knowledge.KnowledgeConfig(**entry.synthetic))
        data, path = kb.text(), ""
        info = {"description": entry.description, "knowledge": dict(entry.synthetic),
                "information_bits": kb.information_bits, "n_facts": kb.n_facts}
    elif entry.kind == registry.PATH:
        data, path, info = _load_path(cfg)
    else:
        data, path, info = _load_file(entry, cfg)
    if not len(data):
        raise DataError(f"data set {cfg.name!r}{f' at {path}' if path else ''} is empty")
    info["bytes_total"] = len(data)
    if cfg.max_bytes and cfg.max_bytes < len(data):
        info["sha256_total"] = sha256_hex(data)
        data = data[: cfg.max_bytes]
    info["max_bytes"] = cfg.max_bytes
    return Dataset(name=cfg.name, data=data, sha256=sha256_hex(data), path=path,
                   entropy_rate_bits=rate, info=info)
