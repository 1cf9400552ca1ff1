"""Coded label files for the online codes, and their separate-process decoder.

A file is an ``mdlbench.coding.container`` (magic, CRC-checked JSON header, CRC-checked payload
chunks, payload sha256) whose header says ``kind = "mdlbench.supervised_labels"`` and records
everything the receiver needs besides the program: the resolved supervised config (data set,
shuffle seed, model, recipe), N and K, the sha256 of the labels in coding order, the sha256 of
the permutation and of the data files (the inputs are side information the receiver must have),
the environment fingerprint with the thread count, a canary hash, and the program: the sha256
and xz size of the decoder's source files (``mdlbench.coding.program``, measured before coding)
plus the config. The payload is the range coder's 32-bit words.

This module does not import JAX at import time: :func:`decode_file` pins the recorded thread
count and XLA flags first, then imports the learner.
"""

from __future__ import annotations

import hashlib
import os
import time
from pathlib import Path
from typing import Any

import numpy as np

from mdlbench.coding import container, env, program
from mdlbench.errors import ContainerError, DataError, DecodeError, EnvironmentMismatch

KIND = "mdlbench.supervised_labels"
FORMAT = 1
ONLINE_CODES = ("blockwise", "prequential")


def order_sha256(order: np.ndarray) -> str:
    """sha256 of the shuffle permutation (int64 little-endian)."""
    return hashlib.sha256(np.asarray(order, "<i8").tobytes()).hexdigest()


def make_header(code: str, cfg_dict: dict[str, Any], data, labels_sha: str, canary: str,
                ideal_bits: float, payload_bits: int, backend: str,
                program_info: program.ProgramInfo) -> dict[str, Any]:
    """The self-describing header of a coded label file.

    ``program_info`` is :func:`mdlbench.coding.program.measure` of :data:`KIND` with ``cfg_dict``,
    taken before coding."""
    return {
        "kind": KIND, "format": FORMAT, "code": code, "config": cfg_dict, "program": program_info.header(),
        "data": {"name": data.name, "n": data.n, "n_classes": data.n_classes, "shuffle_seed": data.shuffle_seed,
                 "order_sha256": order_sha256(data.order), "files_sha256": data.sha256},
        "labels_sha256": labels_sha, "canary": canary, "env": env.fingerprint(backend),
        "bits": {"ideal": ideal_bits, "payload": payload_bits},
    }


def read_header(path: str | Path) -> tuple[dict[str, Any], bytes]:
    """Reads a coded label file and checks that it is one."""
    header, payload = container.read(path)
    if header.get("kind") != KIND:
        raise ContainerError(f"{path}: not a supervised label file (kind {header.get('kind')!r})")
    if header.get("format") != FORMAT:
        raise ContainerError(f"{path}: supervised label file format {header.get('format')} is not supported")
    if header.get("code") not in ONLINE_CODES:
        raise ContainerError(f"{path}: unknown code {header.get('code')!r}")
    return header, payload


def decode_file(path: str | Path, data_dir: str | None = None) -> dict[str, Any]:
    """Decodes a block-wise or prequential label file by re-running its training.

    Pins the recorded thread count before JAX is imported (so call it in a fresh process, as
    ``python -m mdlbench.codes.supervised decode FILE`` does), checks the environment and the
    canary, decodes every label, and checks their sha256.

    Args:
      path: the coded file.
      data_dir: shared data folder holding the inputs (side information); default
        ``$MDLBENCH_DATA``, then the recorded config's, then ``<repo>/../shared/data``. The
        files' sha256 are checked whichever folder is used.

    Returns:
      A summary: code, n, ideal and payload bits, labels sha256, decode time.

    Raises:
      ContainerError, EnvironmentMismatch, DataError, DecodeError: each with one line.
    """
    t0 = time.perf_counter()
    header, payload = read_header(path)
    program.check(KIND, header.get("program"))  # no JAX needed: refuse before starting it
    env.pin(header["env"])  # before JAX starts: XLA sizes its thread pool from the affinity
    import jax

    from mdlbench.codes.supervised import config as sconfig
    from mdlbench.codes.supervised.blockwise import blockwise_pass
    from mdlbench.codes.supervised.channel import DecodeChannel
    from mdlbench.codes.supervised.learner import Learner, scale_inputs
    from mdlbench.codes.supervised.prequential import prequential_pass
    from mdlbench.data.supervised import labels_sha256, load_labelled

    env.check(header["env"], env.fingerprint(jax.default_backend()))
    cfg = sconfig.from_dict(header["config"])
    data_dir = data_dir or os.environ.get("MDLBENCH_DATA") or cfg.data_dir or None
    data = load_labelled(cfg.data, data_dir, cfg.shuffle_seed, cfg.max_examples, cfg.max_test_examples)
    rec = header["data"]
    if order_sha256(data.order) != rec["order_sha256"] or data.n != rec["n"]:
        raise DataError(f"{path}: the shuffle of {cfg.data} differs from the encoder's (numpy's generator changed?)")
    x_host = scale_inputs(data.x, data.max_value)
    learner = Learner(cfg.model, data.n_classes, data.x.shape[1:], cfg.seed, cfg.uniform_mix, cfg.predict_chunk)
    if learner.canary(x_host) != header["canary"]:
        raise EnvironmentMismatch(f"{path}: canary hash differs: this machine's arithmetic is not the encoder's")
    X = jax.numpy.asarray(x_host)
    channel = DecodeChannel(payload)
    if header["code"] == "blockwise":
        y = blockwise_pass(learner, cfg, x_host, X, channel)["y"]
    else:
        y = prequential_pass(learner, cfg, x_host, X, channel)["y"]
    got = labels_sha256(y)
    if got != header["labels_sha256"]:
        raise DecodeError(f"{path}: decoded labels sha256 {got[:16]}... differs from the recorded "
                          f"{header['labels_sha256'][:16]}...")
    return {"code": header["code"], "n": int(len(y)), "ideal_bits": channel.ideal_bits,
            "payload_bits": 8 * len(payload), "labels_sha256": got, "decode_time_s": time.perf_counter() - t0}
