"""All label codes on the same shuffled data in one run: one table, one figure, verified files.

``run_codes(cfg)`` is the whole experiment: load and shuffle the data once, train the final
maximum-likelihood model once (two-part code, model cost of the online codes), run each code,
write the block-wise and prequential bitstreams as containers and decode them in a separate
process, then write ``<out>/tables/codes_<data>.csv``, ``<out>/figures/codes_<data>.{png,svg}``
and ``<out>/runs/codes_<data>/<model>/summary.json``. The run directory belongs to the
experiment harness (:mod:`mdlbench.codes.harness`): a finished run of the same config on the same
decoder source is returned as it is, one of another config there is refused. The coded files and the summary carry the
program of their decoder (``program``: source sha256, xz bits of source + config, file list),
measured before any code runs.

Table columns (one row per code), units in the names:
  bits: the code length the row reports, bits_per_label = bits / N. Where ``kind`` starts with
    ``real`` it is the size of the actual bitstream (payload + side information), decoded back as
    ``verified`` says (separate process for the online codes, in-process for uniform and two-part);
    where ``kind`` starts with ``ideal`` no bitstream exists and it is the ideal length;
  ideal_bits, ideal_bits_per_label: the ideal length of every code beside it (-log2 of the float32
    coding probabilities; N log2 K for uniform; KL + E_q[NLL] for variational), equal to ``bits``
    in the ideal rows;
  model_cost_bits / data_bits: the split of ``ideal_bits`` into the cost of the model and of the
    labels given it: two-part L(theta) | L(y|theta); variational KL | E_q[NLL]; online codes (Voita
    & Titov) ideal_bits - N*CE(final model) | N*CE(final model); uniform 0 | N log2 K;
  compression = N log2 K / bits (the uniform code's exact ideal length over the row's length);
  test_accuracy on ``accuracy_split``; online_accuracy: share of labels the coder's argmax
  predicted before seeing them; time_s: wall time of the code.

The table and the figures get provenance sidecars (:mod:`mdlbench.provenance`) recording the
command, the commit, the config with its ``config_sha256`` and the decoder's program bits.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import time
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from mdlbench import provenance
from mdlbench.codes import harness
from mdlbench.codes.supervised import config as sconfig
from mdlbench.codes.supervised import files, uniform
from mdlbench.codes.supervised.blockwise import blockwise_pass
from mdlbench.codes.supervised.channel import EncodeChannel
from mdlbench.codes.supervised.config import SupervisedConfig, block_ends
from mdlbench.codes.supervised.learner import (STREAM_FINAL, STREAM_HOLDOUT, STREAM_VARIATIONAL,
                                               STREAM_VARIATIONAL_HOLDOUT, Learner, n_steps,
                                               scale_inputs)
from mdlbench.codes.supervised.prequential import prequential_pass
from mdlbench.codes.supervised.two_part import two_part
from mdlbench.codes.supervised.variational import train_variational, variational
from mdlbench.coding import container, program
from mdlbench.data.supervised import labels_sha256, load_labelled
from mdlbench.models import count_params
from mdlbench.errors import DecodeError

LABELS = {"uniform": "uniform", "two_part_float32": "two-part (float32)", "two_part": "two-part (quantized)",
          "blockwise": "block-wise online", "prequential": "prequential online", "variational": "variational"}
COLUMNS = ["code", "label", "kind", "bits", "bits_per_label", "ideal_bits", "ideal_bits_per_label", "verified",
           "model_cost_bits", "data_bits", "compression", "test_accuracy", "online_accuracy", "train_accuracy",
           "n_params", "time_s", "detail", "data", "model", "n", "n_classes", "accuracy_split", "shuffle_seed", "seed"]


def config_hash(cfg: SupervisedConfig) -> str:
    """sha256 of everything that defines the codes (where files go and whether they are verified excluded)."""
    d = sconfig.to_dict(cfg)
    for key in ("out_dir", "data_dir", "verify"):
        d.pop(key, None)
    return hashlib.sha256(json.dumps(d, sort_keys=True).encode()).hexdigest()


def _recorded_hash(summary: dict[str, Any]) -> str | None:
    # Summaries record the config itself; one this schema cannot read is not the same config.
    try:
        return config_hash(sconfig.from_dict(summary["config"]))
    except (KeyError, TypeError, ValueError):
        return None


def _log(msg: str) -> None:
    print(f"[codes] {msg}", flush=True)


def _verify(path: Path, cfg: SupervisedConfig) -> dict[str, Any]:
    """Decodes a file in a separate process; returns its parsed OK line and wall time."""
    proc, wall = harness.run_decoder("mdlbench.codes.supervised", "decode", str(path),
                                     *(["--data-dir", cfg.data_dir] if cfg.data_dir else []))
    if proc.returncode != 0 or not proc.stdout.startswith("OK"):
        raise DecodeError(f"separate-process decode of {path.name} failed: {harness.last_line(proc)}")
    return {"ok_line": proc.stdout.strip(), "decode_wall_s": wall}


def _write_online(path: Path, code: str, cfg: SupervisedConfig, data, y: np.ndarray, channel: EncodeChannel,
                  canary: str, program_info: program.ProgramInfo) -> int:
    payload = channel.finish()
    header = files.make_header(code, sconfig.to_dict(cfg), data, labels_sha256(y), canary, channel.ideal_bits,
                               8 * len(payload), jax.default_backend(), program_info)
    container.write(path, header, payload)
    return 8 * len(payload)


def run_codes(cfg: SupervisedConfig) -> dict[str, Any]:
    """Runs every configured code on the same data; writes the table, figure, files and summary.

    Args:
      cfg: the validated ``supervised:`` section (:func:`mdlbench.codes.supervised.config.from_dict`).

    Returns:
      The summary: ``rows`` (one dict per code, the table's columns), ``paths`` (table,
      figures, coded files, summary) and ``time_s``.
    """
    t_run = time.perf_counter()
    # The decoder's program, measured before coding: the source that makes the payloads.
    program_info = program.measure(files.KIND, sconfig.to_dict(cfg))
    data = load_labelled(cfg.data, cfg.data_dir or None, cfg.shuffle_seed, cfg.max_examples, cfg.max_test_examples)
    n, k = data.n, data.n_classes
    x_host = scale_inputs(data.x, data.max_value)
    y = data.y
    if data.x_test is not None:
        h = n
        x_eval, y_eval = scale_inputs(data.x_test, data.max_value), data.y_test
        split = f"official test split ({len(y_eval)})"
    else:
        h = n - max(1, int(round(cfg.holdout_fraction * n)))
        x_eval, y_eval = x_host[h:], y[h:]
        split = f"last {n - h} shuffled examples, models trained without them"
    out = Path(cfg.out_dir)
    run_dir = out / "runs" / f"codes_{data.name}" / cfg.model
    old = harness.finished_run(run_dir, config_hash(cfg), _recorded_hash)
    if old is not None:
        if old.get("program", {}).get("source_sha256") != program_info.source_sha256:
            _log(f"the label decoder changed since {run_dir / 'summary.json'} was written: running again")
        elif old["config"].get("verify") or not cfg.verify:
            _log(f"already done: {run_dir / 'summary.json'}")
            return old
    for d in (out / "tables", out / "figures", run_dir):
        harness.make_run_dir(d)
    learner = Learner(cfg.model, k, data.x.shape[1:], cfg.seed, cfg.uniform_mix, cfg.predict_chunk)
    X, Y = jnp.asarray(x_host), jnp.asarray(y)
    canary = learner.canary(x_host)
    n_params = count_params(learner.init(STREAM_FINAL))
    uniform_bits = uniform.ideal_bits(n, k)
    t = cfg.train
    _log(f"{data.name}: N={n} K={k} model={cfg.model} ({n_params} params) codes={','.join(cfg.codes)} "
         f"threads={len(os.sched_getaffinity(0))}")

    rows: list[dict[str, Any]] = []
    details: dict[str, Any] = {}
    paths: dict[str, str] = {}

    def add(code: str, ideal_bits: float, real_bits: int | None = None, **kw: Any) -> None:
        # A real code leads with its bitstream's size; the ideal length stays beside it, labelled.
        bits = ideal_bits if real_bits is None else real_bits
        row = {c: "" for c in COLUMNS}
        row.update(code=code, label=LABELS[code], bits=bits, bits_per_label=bits / n, ideal_bits=ideal_bits,
                   ideal_bits_per_label=ideal_bits / n, compression=uniform_bits / bits, n_params=n_params,
                   data=data.name, model=cfg.model, n=n, n_classes=k, accuracy_split=split,
                   shuffle_seed=cfg.shuffle_seed, seed=cfg.seed)
        row.update(kw)
        rows.append(row)
        what = "ideal" if real_bits is None else f"real (ideal {ideal_bits:.1f})"
        _log(f"{code}: {bits:.1f} bits {what}, {bits / n:.4f} bits/label, test accuracy {row['test_accuracy']}, "
             f"{row['time_s']:.1f} s")

    # Final maximum-likelihood model: the two-part code's model and the online codes' reference.
    final_params = final_bits = None
    if any(c in cfg.codes for c in ("two_part", "blockwise", "prequential")):
        t0 = time.perf_counter()
        steps = n_steps(n, t.epochs, t.batch_size, t.min_steps, t.max_steps)
        final_params = learner.fit(STREAM_FINAL, X, Y, n, steps, t.batch_size, t.optimizer, t.lr, t.weight_decay)
        final_bits = learner.nll_bits(final_params, x_host, y)
        details["final_model"] = {"steps": steps, "data_bits": final_bits, "time_s": time.perf_counter() - t0,
                                  "train_accuracy": learner.accuracy(final_params, x_host, y)}
        _log(f"final model: {steps} steps, N*CE = {final_bits:.1f} bits, {details['final_model']['time_s']:.1f} s")

    if "uniform" in cfg.codes:
        t0 = time.perf_counter()
        payload = uniform.encode(y, k)
        if not np.array_equal(uniform.decode(payload, n, k), y):
            raise DecodeError("uniform code did not decode back to the labels")
        add("uniform", uniform_bits, real_bits=uniform.real_bits(n, k), kind="real (base-K integer)",
            verified="in-process", model_cost_bits=0.0, data_bits=uniform_bits, test_accuracy=1.0 / k,
            n_params=0, time_s=time.perf_counter() - t0, detail="N log2 K exactly")

    if "two_part" in cfg.codes:
        t0 = time.perf_counter()
        eval_params = final_params
        if h < n:
            steps_h = n_steps(h, t.epochs, t.batch_size, t.min_steps, t.max_steps)
            eval_params = learner.fit(STREAM_HOLDOUT, X, Y, h, steps_h, t.batch_size, t.optimizer, t.lr,
                                      t.weight_decay)
        tp = two_part(learner, final_params, x_host, y, cfg.two_part.deltas, x_eval, y_eval, eval_params)
        details["two_part"] = tp
        f32_bits = 32.0 * tp["n_params"] + final_bits
        add("two_part_float32", f32_bits, kind="ideal", model_cost_bits=32.0 * tp["n_params"], data_bits=final_bits,
            test_accuracy=learner.accuracy(eval_params, x_eval, y_eval),
            train_accuracy=details["final_model"]["train_accuracy"], time_s=0.0,
            detail="32 bits per parameter, labels under the float32 model")
        add("two_part", tp["bits"], real_bits=tp["real_bits"], kind="real (range coder)", verified="in-process",
            model_cost_bits=tp["param_bits"], data_bits=tp["data_bits"], test_accuracy=tp["test_accuracy"],
            train_accuracy=tp["train_accuracy"], time_s=time.perf_counter() - t0,
            detail=f"delta=2^{math.log2(tp['delta']):g}, {tp['param_bits_per_param']:.2f} bits/param")

    for code in ("blockwise", "prequential"):
        if code not in cfg.codes:
            continue
        t0 = time.perf_counter()
        channel = EncodeChannel(y)
        if code == "blockwise":
            res = blockwise_pass(learner, cfg, x_host, X, channel)
            test_params = res["last_params"]
            ends = block_ends(n, cfg.blockwise.boundaries_pct)
            # The last block's model never saw examples past ends[-2]; it tests cleanly on them.
            acc_ok = data.x_test is not None or len(ends) < 2 or ends[-2] <= h
            detail = f"{len(ends)} blocks, last model trained on {ends[-2] if len(ends) > 1 else 0}"
            details[code] = {"blocks": res["blocks"]}
        else:
            res = prequential_pass(learner, cfg, x_host, X, channel, snapshot_at=h if h < n else 0)
            test_params = res["snapshot"] if h < n else res["params"]
            acc_ok = test_params is not None
            pc = cfg.prequential
            detail = f"batch {pc.batch_size}, {pc.updates_per_batch} updates/batch, replay={pc.replay}"
            details[code] = {"curve_bits": res["curve"]}
        if not np.array_equal(res["y"], y):
            raise DecodeError(f"{code}: the encoder's pass returned labels other than the data's")
        path = run_dir / f"{code}.mdl"
        payload_bits = _write_online(path, code, cfg, data, y, channel, canary, program_info)
        paths[code] = str(path)
        elapsed = time.perf_counter() - t0
        verified = ""
        if cfg.verify:
            v = _verify(path, cfg)
            details[code]["verify"] = v
            verified = f"separate process ({v['decode_wall_s']:.0f} s)"
            _log(f"{code}: {v['ok_line']}")
        add(code, channel.ideal_bits, real_bits=payload_bits, kind="real (range coder)", verified=verified,
            model_cost_bits=channel.ideal_bits - final_bits, data_bits=final_bits,
            test_accuracy=learner.accuracy(test_params, x_eval, y_eval) if acc_ok else float("nan"),
            online_accuracy=channel.correct / n, time_s=elapsed, detail=detail)

    if "variational" in cfg.codes:
        t0 = time.perf_counter()
        eval_mu = None
        if h < n:
            eval_mu, _ = train_variational(learner, cfg.variational, X, Y, h, STREAM_VARIATIONAL_HOLDOUT)
        v = variational(learner, cfg.variational, x_host, y, X, Y, STREAM_VARIATIONAL, x_eval, y_eval, eval_mu)
        v.pop("mu")
        details["variational"] = v
        add("variational", v["bits"], kind="ideal (bits-back length)", model_cost_bits=v["kl_bits"],
            data_bits=v["data_bits"], test_accuracy=v["test_accuracy"], train_accuracy=v["train_accuracy"],
            time_s=time.perf_counter() - t0,
            detail=f"prior={cfg.variational.prior}, {cfg.variational.mc_samples} MC samples "
                   f"(std {v['data_bits_mc_std']:.1f} bits)")

    table = out / "tables" / f"codes_{data.name}.csv"
    prov = [provenance.result(kind=files.KIND, config=sconfig.to_dict(cfg),
                              config_sha256=provenance.supervised_config_sha256(sconfig.to_dict(cfg)),
                              program_bits=program_info.bits, source_sha256=program_info.source_sha256)]
    harness.write_table(table, rows, COLUMNS, prov)
    paths["table"] = str(table)
    from mdlbench.analysis.codes_figure import plot_codes

    paths.update({f"figure_{p.suffix[1:]}": str(p) for p in plot_codes(rows, out / "figures" / f"codes_{data.name}",
                                                                           results=prov)})
    summary = {"config": sconfig.to_dict(cfg), "config_hash": config_hash(cfg), "program": program_info.header(), "rows": rows,
               "details": details, "paths": paths,
               "n_params": n_params, "time_s": time.perf_counter() - t_run,
               "threads": len(os.sched_getaffinity(0))}
    paths["summary"] = str(run_dir / "summary.json")
    harness.write_summary(run_dir, summary, indent=1)
    _log(f"done in {summary['time_s']:.1f} s: {table}")
    return summary
