"""Bits-back coded files and their separate-process decoder.

Each file is an ``mdlbench.coding.container`` (magic, CRC-checked JSON header, CRC-checked
payload chunks, payload sha256). The header records the resolved ``bits_back`` config, the
sha256 of what was coded, the clean-bits count, the environment fingerprint with its thread
count, a canary hash of the coder's tables on fixed inputs, and the program: the sha256 and xz
size of this decoder's source files plus the config (``mdlbench.coding.program``, measured
before coding). The decoder refuses a file made by other source code.

  * ``mdlbench.bbans``: payload = the VAE's parameters (``weights_dtype``, xz) followed by the
    ANS stack's 32-bit little-endian words; the receiver needs nothing else (no data).
  * ``mdlbench.bitsback_weights``: payload = one byte per tensor (prior scale index + 128)
    followed by the ANS words; the receiver also needs the inputs x (side information, found
    in the shared data folder and checked by sha256), as every supervised label code does.

Nothing here imports JAX at import time: :func:`decode_files` pins the recorded thread count
and XLA flags first.
"""

from __future__ import annotations

import hashlib
import os
import time
from pathlib import Path
from typing import Any

import numpy as np

from mdlbench.coding import container, env, program
from mdlbench.errors import ContainerError, DataError, DecodeError, EnvironmentMismatch, MdlbenchError

KIND_BBANS = "mdlbench.bbans"
KIND_WEIGHTS = "mdlbench.bitsback_weights"
FORMAT = 1


def order_sha256(order: np.ndarray) -> str:
    """sha256 of the shuffle permutation (int64 little-endian)."""
    return hashlib.sha256(np.asarray(order, "<i8").tobytes()).hexdigest()


def read(path: str | Path) -> tuple[dict[str, Any], bytes]:
    """Reads a container and checks that it is a bits-back file this version understands."""
    header, payload = container.read(path)
    if header.get("kind") not in (KIND_BBANS, KIND_WEIGHTS):
        raise ContainerError(f"{path}: not a bits-back file (kind {header.get('kind')!r})")
    if header.get("format") != FORMAT:
        raise ContainerError(f"{path}: bits-back file format {header.get('format')} is not supported")
    return header, payload


def _pinned(headers: list[dict[str, Any]]) -> None:
    envs = {repr(sorted(h["env"].items())) for h in headers}
    if len(envs) != 1:
        raise EnvironmentMismatch("files recorded in different environments: decode them one at a time")
    env.pin(headers[0]["env"])  # before JAX starts: XLA sizes its thread pool from the affinity


def decode_files(paths: list[str | Path], data_dir: str | None = None,
                 output: str | Path | None = None) -> list[dict[str, Any]]:
    """Decodes bits-back files in this (fresh) process and checks each one's sha256.

    Args:
      paths: containers, all recorded in the same environment.
      data_dir: shared data folder for the side information of weights files; default
        ``$MDLBENCH_DATA``, then the recorded config's.
      output: with a single file, write the decoded bytes here (atomically) after the check:
        binary pixels as one uint8 per pixel (bbans) or labels as uint8 (weights).

    Returns:
      One result per file: ``ok``, ``kind``, ``decoded_sha256``, sizes, timings.

    Raises:
      ContainerError, EnvironmentMismatch, DataError, DecodeError: each with one line.
    """
    if output is not None and len(paths) != 1:
        raise MdlbenchError("--output needs exactly one file")
    loaded = [(Path(p), *read(p)) for p in paths]
    for _, header, _ in loaded:  # no JAX needed: refuse before starting it
        program.check(header["kind"], header.get("program"))
    _pinned([h for _, h, _ in loaded])
    import jax

    env.check(loaded[0][1]["env"], env.fingerprint(jax.default_backend()))
    results = []
    posterior_cache: dict[str, Any] = {}
    for path, header, payload in loaded:
        try:
            if header["kind"] == KIND_BBANS:
                res, data = _decode_bbans(path, header, payload)
            else:
                res, data = _decode_weights(path, header, payload, data_dir, posterior_cache)
        except MdlbenchError:
            raise
        except Exception as e:  # e.g. constriction failing on a forged payload
            first = (str(e).strip().splitlines() or [type(e).__name__])[-1]
            raise DecodeError(f"{path}: decoding failed ({type(e).__name__}: {first[:200]})") from None
        if output is not None:
            container.atomic_write(output, data)
            res["output"] = str(output)
        results.append(res)
    return results


def _decode_bbans(path: Path, header: dict[str, Any], payload: bytes) -> tuple[dict[str, Any], bytes]:
    from mdlbench.codes.bits_back import bbans
    from mdlbench.coding import ans
    from mdlbench.codes.bits_back import config as bconfig

    t0 = time.perf_counter()
    cfg = bconfig.from_dict(header["config"])
    d = int(header["data"]["n_pixels"])
    n = int(header["data"]["n"])
    w = header["weights"]
    split = int(w["bytes"])
    if split > len(payload):
        raise ContainerError(f"{path}: payload shorter than the parameters it should hold")
    module = bbans.build(cfg, d)
    params = bbans.unpack_params(payload[:split], bbans.param_template(module, d), w["dtype"])
    coder = bbans.Coder(module, params, cfg.bbans.latent_bits)
    if coder.canary(cfg.seed) != header["canary"]:
        raise EnvironmentMismatch(f"{path}: canary hash differs: this machine's arithmetic is not the encoder's")
    bits, decode_s = bbans.decode(coder, ans.bytes_to_words(payload[split:]), n, cfg.seed,
                                  int(header["ans"]["initial_words"]))
    got = bbans.pixels_sha256(bits)
    if got != header["pixels_sha256"]:
        raise DecodeError(f"{path}: decoded pixels sha256 {got[:16]}... differs from the recorded "
                          f"{header['pixels_sha256'][:16]}...")
    return ({"ok": True, "kind": header["kind"], "file": str(path), "decoded_sha256": got, "images": n,
             "payload_bits": 8 * len(payload), "decode_s": decode_s, "decode_total_s": time.perf_counter() - t0},
            bits.tobytes())


def _decode_weights(path: Path, header: dict[str, Any], payload: bytes, data_dir: str | None,
                    cache: dict[str, Any]) -> tuple[dict[str, Any], bytes]:
    from mdlbench.codes.bits_back import config as bconfig
    from mdlbench.codes.bits_back import weights
    from mdlbench.codes.supervised.learner import scale_inputs
    from mdlbench.data.supervised import labels_sha256, load_labelled

    t0 = time.perf_counter()
    cfg = bconfig.from_dict(header["config"])
    data_dir = data_dir or os.environ.get("MDLBENCH_DATA") or cfg.data_dir or None
    data = load_labelled(cfg.data, data_dir, cfg.shuffle_seed, cfg.max_examples)
    rec = header["data"]
    if order_sha256(data.order) != rec["order_sha256"] or data.n != rec["n"]:
        raise DataError(f"{path}: the shuffle of {cfg.data} differs from the encoder's (numpy's generator changed?)")
    x_host = scale_inputs(data.x, data.max_value)
    key = bconfig.config_hash(cfg)
    if key not in cache:
        learner = weights.make_learner(cfg, data.n_classes, data.x.shape[1:])
        if learner.canary(x_host) != header["canary"]:
            raise EnvironmentMismatch(f"{path}: canary hash differs: this machine's arithmetic is not the encoder's")
        cache[key] = {"learner": learner, "posterior": None}
    entry = cache[key]
    learner = entry["learner"]
    template = learner.init(0)
    res = weights.decode(learner, cfg, x_host, payload, float(header["delta"]), data.n, int(header["n_tensors"]),
                         int(header["ans"]["initial_words"]), template, entry["posterior"])
    entry["posterior"] = res["posterior"]
    got = labels_sha256(res["y"])
    if got != header["labels_sha256"]:
        raise DecodeError(f"{path}: decoded labels sha256 {got[:16]}... differs from the recorded "
                          f"{header['labels_sha256'][:16]}...")
    return ({"ok": True, "kind": header["kind"], "file": str(path), "decoded_sha256": got, "labels": int(data.n),
             "delta": float(header["delta"]), "payload_bits": 8 * len(payload), "decode_s": res["decode_s"],
             "decode_total_s": time.perf_counter() - t0}, np.asarray(res["y"], np.uint8).tobytes())
