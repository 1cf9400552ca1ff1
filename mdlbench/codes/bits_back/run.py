"""One bits-back experiment end to end: code, verify in a separate process, table, summary.

``run_bits_back(cfg)`` writes, for ``code = bbans``:

  * ``<run_dir>/<data>.bbans.mdl``: VAE parameters (side information) + the BB-ANS stack;
  * ``<out>/tables/<experiment>.csv``: BB-ANS net / with clean bits / with parameters, the
    discretised and continuous -ELBO, gzip / bzip2 / xz on the same binary pixels (packed
    8 pixels per byte, and one byte per pixel) and a 1-bit PNG mosaic;

and for ``code = weights``:

  * ``<run_dir>/weights_delta_2pow-<k>.mdl`` per grid step: prior scales + the bits-back stack;
  * ``<out>/tables/<experiment>.csv``: real bits-back length per grid step beside the
    discretised ideal KL + E[NLL], the continuous ideal, and the other label codes of
    ``<out>/tables/codes_<data>.csv`` when that table exists;

both with ``<run_dir>/summary.json`` (nested, units in the names). The run directory defaults to
``<out>/runs/<experiment>/<data>/<model>/seed<k>``; re-running the same config there returns
the finished summary at once (unless the codes' source changed: then it runs again), a different
config there is refused.

Every coded file is decoded by ``python -m mdlbench.codes.bits_back decode`` in a separate
process (which pins the recorded environment before JAX starts) and its sha256 checked. Every
container header and the summary carry ``program``: the sha256 and xz bits (source + config)
of that decoder's files, measured before coding (``mdlbench.coding.program.measure``).
"""

from __future__ import annotations

import hashlib
import io
import json
import math
import os
import time
from pathlib import Path
from typing import Any

import numpy as np

from mdlbench import provenance
from mdlbench.codes.bits_back import config as bconfig
from mdlbench.codes import harness
from mdlbench.codes.bits_back import files
from mdlbench.codes.bits_back.config import BitsBackConfig
from mdlbench.coding import container, env, program
from mdlbench.errors import DecodeError
from mdlbench.models import count_params

# The module that runs the experiment: with the decoder's program it is the code a finished run
# depends on (re-running reuses the run only while that code is unchanged).
RUN_MODULE = "mdlbench.codes.bits_back.run"
COLUMNS = ["code", "label", "kind", "bits", "bits_per_dim", "bits_per_label", "ideal_bits", "ratio_to_ideal",
           "initial_bits", "model_cost_bits", "data_bits", "verified", "delta", "detail", "data", "model", "n",
           "dims", "seed"]
PNG_IMAGES_PER_ROW = 100
_LN2 = math.log(2.0)


def _log(msg: str) -> None:
    print(f"[bits-back] {msg}", flush=True)


def default_run_dir(cfg: BitsBackConfig) -> Path:
    """``<out>/runs/<experiment>/<data>/<model>/seed<k>`` (the Hydra experiment files use the same)."""
    from mdlbench.data.supervised import resolve_name

    return Path(cfg.out_dir) / "runs" / cfg.experiment_name / resolve_name(cfg.data) / cfg.model / f"seed{cfg.seed}"


def source_sha256(cfg: BitsBackConfig) -> str:
    """sha256 of the experiment's code: this module's import closure and its decoder's program."""
    kind = files.KIND_BBANS if cfg.code == "bbans" else files.KIND_WEIGHTS
    return program.files_sha256(program.closure((RUN_MODULE, *program.DECODERS[kind])))


def _verify(paths: list[Path], cfg: BitsBackConfig, run_dir: Path) -> list[dict[str, Any]]:
    """Decodes files in a separate process; returns its per-file results (sha256 checked there and here)."""
    out = run_dir / "verify.json"
    out.unlink(missing_ok=True)
    args = ["decode", *map(str, paths), "--json", str(out)] + (["--data-dir", cfg.data_dir] if cfg.data_dir else [])
    proc, wall = harness.run_decoder("mdlbench.codes.bits_back", *args)
    if proc.returncode != 0 or not out.exists():
        raise DecodeError(f"separate-process decode failed: {harness.last_line(proc)}")
    results = json.loads(out.read_text())
    for r in results:
        r["process_wall_s"] = wall
    return results


def _row(**kw: Any) -> dict[str, Any]:
    row = {c: "" for c in COLUMNS}
    row.update(kw)
    return row


def run_bits_back(cfg: BitsBackConfig, run_dir: str | os.PathLike | None = None) -> dict[str, Any]:
    """Runs one bits-back experiment (``cfg.code``: ``bbans`` or ``weights``).

    Args:
      cfg: the validated ``bits_back:`` section (:func:`mdlbench.codes.bits_back.config.from_dict`).
      run_dir: where the coded files and ``summary.json`` go; default :func:`default_run_dir`.

    Returns:
      The summary (also written to ``<run_dir>/summary.json``).

    Raises:
      MdlbenchError: a different finished config in ``run_dir``, bad data, a failed decode.
    """
    run_dir = Path(run_dir) if run_dir else default_run_dir(cfg)
    summary_path = run_dir / "summary.json"
    chash = bconfig.config_hash(cfg)
    code_sha = source_sha256(cfg)
    old = harness.finished_run(run_dir, chash)
    if old is not None:
        if old.get("source_sha256") != code_sha:
            _log(f"the bits-back code changed since {summary_path} was written: running again")
        elif old.get("verify", {}).get("ok") or not cfg.verify:
            _log(f"already done: {summary_path}")
            return old
    harness.make_run_dir(run_dir)
    t0 = time.perf_counter()
    # The decoder's program, measured before coding: the source that makes the payloads.
    program_info = program.measure(files.KIND_BBANS if cfg.code == "bbans" else files.KIND_WEIGHTS,
                                   bconfig.to_dict(cfg))
    if cfg.code == "bbans":
        summary, rows = _run_bbans(cfg, run_dir, program_info)
    else:
        summary, rows = _run_weights(cfg, run_dir, program_info)
    table = Path(cfg.out_dir) / "tables" / f"{cfg.experiment_name}.csv"
    harness.write_table(table, rows, COLUMNS, [provenance.result(
        kind=program_info.kind, config=bconfig.to_dict(cfg), config_sha256=chash, program_bits=program_info.bits,
        source_sha256=program_info.source_sha256)])
    summary.update(config=bconfig.to_dict(cfg), config_hash=chash, source_sha256=code_sha,
                   program=program_info.header(), experiment=cfg.experiment_name, rows=rows, threads=env.threads())
    summary.setdefault("time", {})["total_s"] = time.perf_counter() - t0
    summary["paths"] = {**summary.get("paths", {}), "table": str(table), "summary": str(summary_path)}
    harness.write_summary(run_dir, summary, indent=1)
    _log(f"done in {summary['time']['total_s']:.1f} s: {table}")
    return summary


# ---- BB-ANS ------------------------------------------------------------------------------
def _train_hash(cfg: BitsBackConfig, pixels_sha: str) -> str:
    d = {"model": cfg.model, "train": bconfig.to_dict(cfg)["train"], "seed": cfg.seed,
         "weights_dtype": cfg.bbans.weights_dtype, "pixels_sha256": pixels_sha}
    return hashlib.sha256(json.dumps(d, sort_keys=True).encode()).hexdigest()


def _trained_vae(cfg: BitsBackConfig, module, bits_NxD: np.ndarray, pixels_sha: str,
                 run_dir: Path) -> tuple[bytes, dict[str, Any]]:
    """The shipped parameter blob: from the run directory's cache when the recipe matches, else trained."""
    from mdlbench.codes.bits_back import bbans

    blob_path, rec_path = run_dir / "vae_params.xz", run_dir / "vae_train.json"
    th = _train_hash(cfg, pixels_sha)
    if blob_path.exists() and rec_path.exists():
        rec = json.loads(rec_path.read_text())
        blob = blob_path.read_bytes()
        if rec.get("train_hash") == th and rec.get("blob_sha256") == hashlib.sha256(blob).hexdigest():
            _log(f"VAE parameters from the cache in {run_dir} (trained in {rec['time_s']:.1f} s)")
            return blob, {**rec, "cached": True}
    params, rec = bbans.train_vae(module, bits_NxD, cfg, _log)
    blob = bbans.pack_params(params, cfg.bbans.weights_dtype)
    rec.update(train_hash=th, blob_sha256=hashlib.sha256(blob).hexdigest())
    container.atomic_write(blob_path, blob)
    container.atomic_write(rec_path, json.dumps(rec).encode())
    return blob, {**rec, "cached": False}


def image_baselines(bits_NxD: np.ndarray, image_shape: tuple[int, int]) -> dict[str, dict[str, Any]]:
    """gzip / bzip2 / xz on the binary pixels (packed and one byte per pixel) and a 1-bit PNG mosaic.

    Every size is of a real file that was decompressed and compared with the input.
    """
    from PIL import Image

    from mdlbench import baselines

    out: dict[str, dict[str, Any]] = {}
    reps = {"packed": (np.packbits(bits_NxD, axis=None).tobytes(), "8 pixels per byte, images concatenated"),
            "bytes": (np.ascontiguousarray(bits_NxD, np.uint8).tobytes(), "one byte (0/1) per pixel")}
    for rep, (data, what) in reps.items():
        for name, r in baselines.measure_all(data, jobs=2, names=["gzip_9", "bzip2_9", "xz_9e"]).items():
            out[f"{name}_{rep}"] = {"bytes": r["bytes"], "representation": what, "settings": r["settings"],
                                    "seconds": r["seconds"]}
    n = len(bits_NxD)
    h, w = image_shape
    per_row = min(n, PNG_IMAGES_PER_ROW)
    rows = -(-n // per_row)
    padded = np.zeros((rows * per_row, h * w), np.uint8)
    padded[:n] = bits_NxD
    mosaic = padded.reshape(rows, per_row, h, w).transpose(0, 2, 1, 3).reshape(rows * h, per_row * w).astype(bool)
    t0 = time.perf_counter()
    buf = io.BytesIO()
    Image.fromarray(mosaic).save(buf, format="PNG", optimize=True)
    blob = buf.getvalue()
    back = np.array(Image.open(io.BytesIO(blob)))
    if back.shape != mosaic.shape or not np.array_equal(back.astype(bool), mosaic):
        raise DecodeError("the PNG mosaic did not decode back to the pixels")
    out["png_mosaic"] = {"bytes": len(blob), "seconds": time.perf_counter() - t0,
                         "representation": f"one 1-bit grayscale PNG, {per_row} images per row "
                                           f"({rows * per_row - n} blank padding images), Pillow optimize=True"}
    return out


def _run_bbans(cfg: BitsBackConfig, run_dir: Path,
               program_info: program.ProgramInfo) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    from mdlbench.data.supervised import load_labelled

    bc = cfg.bbans
    data = load_labelled(cfg.data, cfg.data_dir or None, cfg.shuffle_seed, cfg.max_examples, bc.heldout_images)
    import jax

    from mdlbench.codes.bits_back import bbans
    from mdlbench.coding import ans

    bits = bbans.binarize(data.x, cfg.binarize_threshold)
    n, d = bits.shape
    dims = n * d
    pix_sha = bbans.pixels_sha256(bits)
    module = bbans.build(cfg, d)
    template = bbans.param_template(module, d)
    n_params = count_params(template)
    _log(f"{data.name}: {n} images x {d} binary pixels (>= {cfg.binarize_threshold}), {cfg.model} "
         f"({n_params} parameters), 2^{bc.latent_bits} buckets per latent, threads={env.threads()}")
    blob, train_rec = _trained_vae(cfg, module, bits, pix_sha, run_dir)
    params = bbans.unpack_params(blob, template, bc.weights_dtype)
    coder = bbans.Coder(module, params, bc.latent_bits)
    canary = coder.canary(cfg.seed)
    enc = bbans.encode(coder, bits, cfg.seed, bc.initial_words, bc.elbo_samples, _log)
    ans_bytes = ans.words_to_bytes(enc["words"])
    weights_bits = 8 * len(blob)
    header = {
        "kind": files.KIND_BBANS, "format": files.FORMAT, "config": bconfig.to_dict(cfg),
        "data": {"name": data.name, "n": n, "n_pixels": d, "image_shape": list(data.x.shape[1:]),
                 "binarize_threshold": cfg.binarize_threshold, "shuffle_seed": cfg.shuffle_seed,
                 "order_sha256": files.order_sha256(data.order), "files_sha256": data.sha256},
        "pixels_sha256": pix_sha, "coder": ans.NAME, "grid_sha256": coder.grid_sha256,
        "weights": {"dtype": bc.weights_dtype, "n_params": n_params, "bytes": len(blob)},
        "ans": {"initial_words": enc["initial_words"], "initial_bits": enc["initial_bits"],
                "final_bits": enc["final_bits"]},
        "canary": canary, "env": env.fingerprint(jax.default_backend()), "program": program_info.header(),
    }
    path = run_dir / f"{data.name}.bbans.mdl"
    container_bytes = container.write(path, header, blob + ans_bytes)
    verify: dict[str, Any] = {"ok": False, "separate_process": False}
    if cfg.verify:
        _log(f"decoding {path.name} in a separate process")
        (v,) = _verify([path], cfg, run_dir)
        if v["decoded_sha256"] != pix_sha:
            raise DecodeError(f"{path}: separate-process decode gave sha256 {v['decoded_sha256'][:16]}..., "
                              f"expected {pix_sha[:16]}...")
        verify = {"ok": True, "separate_process": True, "decoded_sha256": v["decoded_sha256"],
                  "decode_s": v["decode_s"], "decode_total_s": v["decode_total_s"],
                  "process_wall_s": v["process_wall_s"]}
        _log(f"verified: sha256 {pix_sha[:16]}... in {v['process_wall_s']:.1f} s")
    cont = bbans.continuous_neg_elbo_bits(module, params, bits, cfg.seed, bc.elbo_samples)
    heldout = None
    if data.x_test is not None and bc.heldout_images:
        test_bits = bbans.binarize(data.x_test, cfg.binarize_threshold)
        heldout = bbans.continuous_neg_elbo_bits(module, params, test_bits, cfg.seed, bc.elbo_samples)
        heldout = {"images": len(test_bits), "neg_elbo_continuous_bits_per_dim": heldout["bits"] / test_bits.size}
    net = enc["final_bits"] - enc["initial_bits"]
    elbo = enc["neg_elbo_disc_bits"]
    code = {
        "latent_bits": bc.latent_bits, "buckets_per_latent": 2 ** bc.latent_bits,
        "initial_bits": enc["initial_bits"], "initial_words": enc["initial_words"],
        "initial_bits_per_dim_amortised": enc["initial_bits"] / dims,
        "final_bits": enc["final_bits"], "net_bits": net, "net_bits_per_dim": net / dims,
        "total_bits_per_dim": enc["final_bits"] / dims,
        "neg_elbo_bits": elbo, "neg_elbo_bits_per_dim": elbo / dims,
        "neg_elbo_stderr_bits_per_dim": enc["neg_elbo_disc_stderr_bits"] / dims,
        "neg_elbo_kl_bits_per_dim": enc["neg_elbo_disc_kl_bits"] / dims,
        "neg_elbo_reconstruction_bits_per_dim": enc["neg_elbo_disc_rec_bits"] / dims,
        "neg_elbo_continuous_bits_per_dim": cont["bits"] / dims,
        "net_over_neg_elbo": net / elbo, "total_over_neg_elbo": enc["final_bits"] / elbo,
        "within_1pct_of_neg_elbo": abs(enc["final_bits"] / elbo - 1.0) < 0.01,
        "ideal_path_bits": enc["ideal_path_bits"], "net_over_ideal_path": net / enc["ideal_path_bits"],
        "ideal_popped_bits": enc["ideal_popped_bits"], "ideal_pixel_bits": enc["ideal_pixel_bits"],
        "ideal_prior_bits": enc["ideal_prior_bits"],
        "weights_bits": weights_bits, "weights_bits_per_dim": weights_bits / dims,
        "with_weights_bits": enc["final_bits"] + weights_bits,
        "with_weights_bits_per_dim": (enc["final_bits"] + weights_bits) / dims,
        "payload_bits": 8 * (len(blob) + len(ans_bytes)), "container_bytes": container_bytes,
        "program_bits": program_info.bits,
        "curve": enc["curve"],
    }
    base = image_baselines(bits, tuple(data.x.shape[1:])) if cfg.baselines else {}
    common = {"data": data.name, "model": cfg.model, "n": n, "dims": dims, "seed": cfg.seed}
    vmark = "separate process, sha256" if verify["ok"] else ""
    rows = [
        _row(code="bbans_net", label="BB-ANS net (final - initial stack)", kind="real (ANS)", bits=net,
             bits_per_dim=net / dims, ideal_bits=elbo, ratio_to_ideal=net / elbo, initial_bits=enc["initial_bits"],
             verified=vmark, detail=f"2^{bc.latent_bits} equal-mass buckets per latent", **common),
        _row(code="bbans_message", label="BB-ANS message incl. clean bits", kind="real (ANS)",
             bits=enc["final_bits"], bits_per_dim=enc["final_bits"] / dims, ideal_bits=elbo,
             ratio_to_ideal=enc["final_bits"] / elbo, initial_bits=enc["initial_bits"], verified=vmark,
             detail=f"{enc['initial_bits']} initial clean bits amortised over {n} images", **common),
        _row(code="bbans_with_weights", label=f"BB-ANS message + VAE parameters ({bc.weights_dtype}, xz)",
             kind="real (ANS + xz)", bits=enc["final_bits"] + weights_bits,
             bits_per_dim=(enc["final_bits"] + weights_bits) / dims, model_cost_bits=weights_bits,
             data_bits=enc["final_bits"], verified=vmark, detail=f"{n_params} parameters shipped", **common),
        _row(code="neg_elbo_discretised", label="-ELBO, discretised latents", kind="ideal", bits=elbo,
             bits_per_dim=elbo / dims, model_cost_bits=enc["neg_elbo_disc_kl_bits"],
             data_bits=enc["neg_elbo_disc_rec_bits"],
             detail=f"exact KL + {bc.elbo_samples}-sample reconstruction, stderr "
                    f"{enc['neg_elbo_disc_stderr_bits'] / dims:.2e} bits/dim", **common),
        _row(code="neg_elbo_continuous", label="-ELBO, continuous latents", kind="ideal", bits=cont["bits"],
             bits_per_dim=cont["bits"] / dims, model_cost_bits=cont["kl_bits"], data_bits=cont["reconstruction_bits"],
             detail=f"analytic KL + {bc.elbo_samples}-sample reconstruction", **common),
    ]
    for name, b in base.items():
        rows.append(_row(code=name, label=name.replace("_", " "), kind="real (verified round trip)",
                         bits=8 * b["bytes"], bits_per_dim=8 * b["bytes"] / dims, verified="in-process",
                         detail=b["representation"], **common))
    summary = {
        "kind": "bbans",
        "data": {"name": data.name, "images": n, "pixels_per_image": d, "dims": dims,
                 "pixels": f"binarised: 1 where the 8-bit value >= {cfg.binarize_threshold}",
                 "ones_fraction": float(bits.mean()), "pixels_sha256": pix_sha,
                 "order_sha256": files.order_sha256(data.order)},
        "model": {"name": cfg.model, "n_params": n_params, "hidden": module.hidden, "latent": module.latent,
                  "weights": f"shipped in the container as {bc.weights_dtype}, xz-compressed, counted "
                             "(code.weights_bits); the decoder never retrains",
                  "weights_dtype": bc.weights_dtype},
        "train": train_rec, "code": code, "verify": verify,
        "heldout": heldout, "baselines": base,
        "time": {"train_s": 0.0 if train_rec.get("cached") else train_rec["time_s"], "encode_s": enc["encode_s"],
                 "decode_s": verify.get("decode_s"), "decode_process_wall_s": verify.get("process_wall_s")},
        "env": header["env"], "paths": {"container": str(path)},
    }
    _log(f"net {net / dims:.5f} bits/dim, with clean bits {enc['final_bits'] / dims:.5f}, discretised -ELBO "
         f"{elbo / dims:.5f} (ratio {enc['final_bits'] / elbo:.5f}), continuous -ELBO {cont['bits'] / dims:.5f}, "
         f"with parameters {(enc['final_bits'] + weights_bits) / dims:.4f} bits/dim")
    return summary, rows


# ---- bits-back weights ------------------------------------------------------------------------
def _delta_name(delta: float) -> str:
    """``2^-12`` for powers of two, else the plain number."""
    k = math.log2(delta)
    return f"2^{int(k)}" if k == int(k) else f"{delta:g}"


def _reference_rows(cfg: BitsBackConfig, data_name: str, n: int) -> list[dict[str, Any]]:
    """Rows of ``<out>/tables/codes_<data>.csv`` for the same data, model and N, marked as references."""
    import csv

    path = Path(cfg.out_dir) / "tables" / f"codes_{data_name}.csv"
    if not path.exists():
        return []
    out = []
    with open(path, newline="") as f:
        for r in csv.DictReader(f):
            if r.get("model") != cfg.model or str(r.get("n")) != str(n):
                continue
            out.append(_row(code=f"ref_{r['code']}", label=f"{r['label']} ({path.name})",
                            kind=f"reference: {r['kind']}", bits=float(r["bits"]), bits_per_label=float(r["bits"]) / n,
                            ideal_bits=r.get("ideal_bits", ""),
                            model_cost_bits=r.get("model_cost_bits", ""), data_bits=r.get("data_bits", ""),
                            verified=r.get("verified", ""), detail=r.get("detail", ""), data=data_name,
                            model=cfg.model, n=n, seed=r.get("seed", "")))
    return out


def _run_weights(cfg: BitsBackConfig, run_dir: Path,
                  program_info: program.ProgramInfo) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    from mdlbench.data.supervised import labels_sha256, load_labelled

    wc = cfg.weights
    data = load_labelled(cfg.data, cfg.data_dir or None, cfg.shuffle_seed, cfg.max_examples)
    import jax

    from mdlbench.codes.bits_back import weights
    from mdlbench.codes.supervised.learner import scale_inputs

    x_host = scale_inputs(data.x, data.max_value)
    y = data.y
    n = data.n
    learner = weights.make_learner(cfg, data.n_classes, data.x.shape[1:])
    canary = learner.canary(x_host)
    template = learner.init(0)
    n_params = count_params(template)
    n_tensors = len(jax.tree_util.tree_leaves(template))
    _log(f"{data.name}: {n} labels, {cfg.model} ({n_params} parameters in {n_tensors} tensors), "
         f"grid steps {', '.join(_delta_name(d) for d in wc.deltas)}, threads={env.threads()}")
    mu, sigma, fit_s = weights.fit_posterior(learner, cfg, x_host, y)
    _log(f"posterior trained in {fit_s:.1f} s")
    kl_cont, side = weights.continuous_kl_bits(mu, sigma, cfg)
    nll = weights.expected_nll_bits(learner, mu, sigma, x_host, y, wc.variational.mc_samples, wc.deltas)
    ideal_cont = kl_cont + side + nll["continuous_bits"]
    mus, sigmas = weights._flat(mu), weights._flat(sigma)
    fp = env.fingerprint(jax.default_backend())
    lab_sha = labels_sha256(y)
    codes, paths = [], []
    for delta in wc.deltas:
        enc = weights.encode(learner, mu, sigma, x_host, y, delta, cfg)
        scales = weights.prior_scales(enc["prior_k"], n_tensors, wc)
        kd = weights.discretised_kl_bits(mus, sigmas, scales, enc["ranges"], enc["windows"], delta)
        e_nll = nll["discretised_bits"][delta]
        ideal = kd["kl_bits"] + enc["side_bits"] + e_nll
        header = {
            "kind": files.KIND_WEIGHTS, "format": files.FORMAT, "config": bconfig.to_dict(cfg), "delta": delta,
            "data": {"name": data.name, "n": n, "n_classes": data.n_classes, "shuffle_seed": cfg.shuffle_seed,
                     "order_sha256": files.order_sha256(data.order), "files_sha256": data.sha256},
            "labels_sha256": lab_sha, "n_tensors": n_tensors, "coder": "constriction AnsCoder",
            "ans": {"initial_words": enc["initial_words"], "initial_bits": enc["initial_bits"],
                    "final_bits": enc["final_bits"]},
            "canary": canary, "env": fp, "program": program_info.header(),
        }
        path = run_dir / f"weights_delta_{_delta_name(delta).replace('^', 'pow')}.mdl"
        cbytes = container.write(path, header, enc["payload"])
        paths.append(path)
        real = 8 * len(enc["payload"])
        net = real - enc["initial_bits"]
        codes.append({
            "delta": delta, "delta_name": _delta_name(delta), "file": str(path), "container_bytes": cbytes,
            "initial_bits": enc["initial_bits"], "final_bits": enc["final_bits"], "side_bits": enc["side_bits"],
            "payload_bits": real, "net_bits": net, "net_bits_per_label": net / n,
            "ideal_expected_bits": ideal, "net_over_ideal_expected": net / ideal,
            "ideal_path_bits": enc["ideal_path_bits"], "net_over_ideal_path": net / enc["ideal_path_bits"],
            "kl_discretised_bits": kd["kl_bits"], "entropy_q_discretised_bits": kd["entropy_bits"],
            "expected_nll_discretised_bits": e_nll,
            "expected_nll_discretised_std_bits": nll["discretised_std_bits"][delta],
            "sample_nll_bits": enc["ideal_label_bits"], "sample_accuracy": enc["accuracy"],
            "ideal_popped_bits": enc["ideal_popped_bits"], "ideal_prior_bits": enc["ideal_prior_bits"],
            "weights_at_range_edge": enc["weights_at_range_edge"], "grid_ranges": enc["ranges"],
            "q_window_sizes": enc["window_sizes"],
            "prior_k": enc["prior_k"], "encode_s": enc["encode_s"],
        })
        _log(f"delta {_delta_name(delta)}: net {net} bits ({net / n:.4f} bits/label), ideal KL + E[NLL] "
             f"{ideal:.1f} (ratio {net / ideal:.4f}), {enc['initial_bits']} clean bits")
    verify: dict[str, Any] = {"ok": False, "separate_process": False}
    if cfg.verify:
        _log(f"decoding {len(paths)} files in a separate process (it retrains q from the decoded labels)")
        results = _verify(paths, cfg, run_dir)
        bad = [r["file"] for r in results if r["decoded_sha256"] != lab_sha]
        if bad:
            raise DecodeError(f"separate-process decode gave other labels for {', '.join(bad)}")
        for c, r in zip(codes, results):
            c["verify"] = {"ok": True, "decode_s": r["decode_s"]}
        verify = {"ok": True, "separate_process": True, "decoded_sha256": lab_sha,
                  "process_wall_s": results[0]["process_wall_s"], "files": len(results)}
        _log(f"verified {len(results)} files: sha256 {lab_sha[:16]}... in {results[0]['process_wall_s']:.1f} s")
    head = codes[-1]
    common = {"data": data.name, "model": cfg.model, "n": n, "seed": cfg.seed}
    vmark = "separate process, sha256" if verify["ok"] else ""
    rows = []
    for c in codes:
        rows.append(_row(code=f"bitsback_{c['delta_name']}", label=f"bits-back weights, delta={c['delta_name']}",
                         kind="real (ANS)", bits=c["net_bits"], bits_per_label=c["net_bits_per_label"],
                         ideal_bits=c["ideal_expected_bits"], ratio_to_ideal=c["net_over_ideal_expected"],
                         initial_bits=c["initial_bits"], model_cost_bits=c["net_bits"] - c["sample_nll_bits"],
                         data_bits=c["sample_nll_bits"], verified=vmark, delta=c["delta"],
                         detail=f"net = payload - clean bits; ideal path {c['ideal_path_bits']:.1f}", **common))
        rows.append(_row(code=f"ideal_discretised_{c['delta_name']}",
                         label=f"KL(q^||p^) + E_q^[NLL], delta={c['delta_name']}", kind="ideal",
                         bits=c["ideal_expected_bits"], bits_per_label=c["ideal_expected_bits"] / n,
                         model_cost_bits=c["kl_discretised_bits"] + c["side_bits"],
                         data_bits=c["expected_nll_discretised_bits"], delta=c["delta"],
                         detail=f"exact discretised KL, {wc.variational.mc_samples}-sample E[NLL]", **common))
    rows.append(_row(code="ideal_continuous", label="KL(q||p) + E_q[NLL], continuous (variational)",
                     kind="ideal", bits=ideal_cont, bits_per_label=ideal_cont / n, model_cost_bits=kl_cont + side,
                     data_bits=nll["continuous_bits"], detail="the supervised variational code's length", **common))
    rows += _reference_rows(cfg, data.name, n)
    sig = np.concatenate(sigmas)
    summary = {
        "kind": "bitsback_weights",
        "data": {"name": data.name, "n": n, "n_classes": data.n_classes, "labels_sha256": lab_sha,
                 "inputs": "side information (the receiver has x, as in every supervised label code)"},
        "model": {"name": cfg.model, "n_params": n_params, "n_tensors": n_tensors},
        "posterior": {"fit_s": fit_s, "sigma_median": float(np.median(sig)), "sigma_min": float(sig.min()),
                      "kl_continuous_bits": kl_cont, "prior_side_bits": side,
                      "expected_nll_continuous_bits": nll["continuous_bits"],
                      "expected_nll_continuous_std_bits": nll["continuous_std_bits"], "prior": wc.variational.prior},
        "ideal": {"continuous_bits": ideal_cont, "continuous_bits_per_label": ideal_cont / n},
        "code": {"delta": head["delta"], "net_bits": head["net_bits"], "net_bits_per_label": head["net_bits_per_label"],
                 "initial_bits": head["initial_bits"], "final_bits": head["final_bits"],
                 "ideal_expected_bits": head["ideal_expected_bits"],
                 "net_over_ideal_expected": head["net_over_ideal_expected"],
                 "net_over_ideal_continuous": head["net_bits"] / ideal_cont},
        "codes": codes, "verify": verify,
        "time": {"fit_s": fit_s, "encode_s": sum(c["encode_s"] for c in codes),
                 "decode_process_wall_s": verify.get("process_wall_s")},
        "env": fp, "paths": {"containers": [str(p) for p in paths]},
    }
    return summary, rows
