"""The knowledge-capacity sweep: train each cell of the grid, measure the bits of facts it stored,
then tables, fits and figures. The method is described in :mod:`mdlbench.capacity`."""


from __future__ import annotations

import dataclasses
import hashlib
import io
import json
import math
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import jax
import jax.numpy as jnp
import numpy as np
import optax

from mdlbench import models
from mdlbench.codes import harness
from mdlbench.coding.container import atomic_write
from mdlbench.capacity.config import (CapacityConfig, KnowledgeSpec, TrainConfig, grid, kb_label, knowledge_config,
                                      optim_config)
from mdlbench.config import ConfigError, ModelConfig
from mdlbench.data import knowledge
from mdlbench.data.knowledge import KnowledgeBase
from mdlbench.models.transformer import BOS
from mdlbench.optim import make_optimizer

LN2 = math.log(2.0)
PAD = 0  # input byte after a statement's end; never a counted target
# Seed streams of the capacity seed: every random choice is (seed, stream).
STREAM_INIT, STREAM_ORDER = 0, 1
# A fact counts as "known" when its value costs at most this many bits (p >= 1/2).
KNOWN_BITS = 1.0

# --------------------------------------------------------------------------- statements as arrays


@dataclass
class Encoded:
    """Every (entity, attribute, template) statement of a knowledge base as padded byte rows.

    Row ``(n * K + k) * n_templates + t`` is entity n's fact k under template t.

    Attributes:
      tokens_MxT1: ``[BOS, statement bytes..., PAD...]``; inputs are ``[:, :-1]``, targets ``[:, 1:]``.
      target_mask_MxT: 1 where the target is a byte of the statement.
      value_mask_MxT: 1 where the target is a byte of the value or its terminator (the coded span).
      n_templates: templates per fact.
    """

    tokens_MxT1: np.ndarray
    target_mask_MxT: np.ndarray
    value_mask_MxT: np.ndarray
    n_templates: int

    @property
    def seq_len(self) -> int:
        """T: the model's window (inputs per row)."""
        return self.tokens_MxT1.shape[1] - 1


def encode(kb: KnowledgeBase, seq_len: int = 0) -> Encoded:
    """Renders every statement of ``kb`` (all used templates) into :class:`Encoded` rows.

    Args:
      kb: the knowledge base.
      seq_len: window T; 0 = the longest statement. A shorter window than a statement is refused.
    """
    n_t, k_attr = kb.config.templates, len(kb.attributes)
    rendered = [kb.statement(n, k, t) for n in range(kb.n_entities) for k in range(k_attr) for t in range(n_t)]
    longest = max(len(s) for s, _ in rendered)
    t_len = seq_len or longest
    if longest > t_len:
        raise ConfigError(f"a statement has {longest} bytes, more than the window of {t_len}")
    m = len(rendered)
    tokens = np.full((m, t_len + 1), PAD, dtype=np.int32)
    tokens[:, 0] = BOS
    target = np.zeros((m, t_len), dtype=np.float32)
    value = np.zeros((m, t_len), dtype=np.float32)
    for i, (s, start) in enumerate(rendered):
        tokens[i, 1:len(s) + 1] = np.frombuffer(s, dtype=np.uint8)
        target[i, :len(s)] = 1.0
        value[i, start:len(s)] = 1.0
    return Encoded(tokens, target, value, n_t)


# --------------------------------------------------------------------------- the measure

# (inputs_BxT, targets_BxT) -> natural-log probability of each target, BxT.
TargetLogProbs = Callable[[np.ndarray, np.ndarray], Any]


def value_code_bits(target_log_probs: TargetLogProbs, enc: Encoded, batch_size: int = 512) -> np.ndarray:
    """Code length in bits of each row's value span: -sum log2 p(byte | previous bytes).

    Args:
      target_log_probs: any predictor; for a Transformer see :func:`transformer_log_probs`.
      enc: the statements.
      batch_size: rows per call (the last batch is padded, so a compiled function sees one shape).

    Returns:
      float64 array of M code lengths.
    """
    m = enc.tokens_MxT1.shape[0]
    out = np.empty(m, dtype=np.float64)
    for lo in range(0, m, batch_size):
        hi = min(lo + batch_size, m)
        rows = np.arange(lo, lo + batch_size) % m  # pad with rows from the start; dropped below
        toks = enc.tokens_MxT1[rows]
        logp = np.asarray(target_log_probs(toks[:, :-1], toks[:, 1:]), dtype=np.float64)
        bits = -(logp * enc.value_mask_MxT[rows]).sum(axis=1) / LN2
        out[lo:hi] = bits[: hi - lo]
    return out


@dataclass
class Credit:
    """What the measure credits a model with on a knowledge base.

    Attributes:
      code_bits_NxK: code length of each fact's value (mean over templates).
      stored_bits_NxK: max(0, log2 |choices_k| - code_bits): the issue's measure.
      net_bits_NxK: log2 |choices_k| - code_bits, unclipped (may be negative).
      info_bits_K: log2 |choices_k|.
    """

    code_bits_NxK: np.ndarray
    stored_bits_NxK: np.ndarray
    net_bits_NxK: np.ndarray
    info_bits_K: np.ndarray

    @property
    def stored_bits(self) -> float:
        return float(self.stored_bits_NxK.sum())

    @property
    def net_bits(self) -> float:
        return float(self.net_bits_NxK.sum())

    @property
    def information_bits(self) -> float:
        return float(self.info_bits_K.sum() * self.code_bits_NxK.shape[0])


def credit(kb: KnowledgeBase, code_bits_M: np.ndarray) -> Credit:
    """Turns per-row code lengths (rows as in :func:`encode`) into per-fact credited bits."""
    n, k = kb.values_NxK.shape
    code = code_bits_M.reshape(n, k, -1).mean(axis=2)
    info = kb.bits_K
    net = info[None, :] - code
    return Credit(code, np.maximum(net, 0.0), net, info)


def make_scorer(module: Any) -> Callable[..., Any]:
    """A jitted float32 forward ``(params, inputs_BxT, targets_BxT) -> log p(target)``, BxT."""

    @jax.jit
    def f(params, inputs_BxT, targets_BxT):
        logits_BxTxV = module.apply(params, inputs_BxT).astype(jnp.float32)
        logp_BxTxV = jax.nn.log_softmax(logits_BxTxV, axis=-1)
        return jnp.take_along_axis(logp_BxTxV, targets_BxT[..., None], axis=-1)[..., 0]

    return f


def transformer_log_probs(module: Any, params: Any, scorer: Callable[..., Any] | None = None) -> TargetLogProbs:
    """The Transformer ``module`` with ``params`` as a predictor for :func:`value_code_bits`.

    Args:
      scorer: a :func:`make_scorer` of ``module`` to reuse (one compilation for several params).
    """
    f = scorer or make_scorer(module)
    return lambda x, y: f(params, jnp.asarray(x), jnp.asarray(y))


# --------------------------------------------------------------------------- parameters


def param_breakdown(params: Any) -> dict[str, int]:
    """Counted parameters: total, feed-forward (fc1, fc2), attention (qkv, proj), embeddings (embed,
    pos, head) and the rest (LayerNorms)."""
    parts = {"n_params": 0, "n_params_ffn": 0, "n_params_attention": 0, "n_params_embedding": 0, "n_params_norm": 0}
    for path, leaf in jax.tree_util.tree_flatten_with_path(params)[0]:
        keys = [str(getattr(p, "key", p)) for p in path]
        size = int(math.prod(leaf.shape))
        parts["n_params"] += size
        if any(k in ("fc1", "fc2") for k in keys):
            parts["n_params_ffn"] += size
        elif any(k in ("qkv", "proj") for k in keys):
            parts["n_params_attention"] += size
        elif any(k in ("embed", "pos", "head") for k in keys):
            parts["n_params_embedding"] += size
        else:
            parts["n_params_norm"] += size
    return parts


# --------------------------------------------------------------------------- training


def train(module: Any, params: Any, enc: Encoded, rows_S: np.ndarray, t: TrainConfig,
          on_chunk: Callable[[dict[str, Any]], None] | None = None) -> tuple[Any, dict[str, Any]]:
    """Trains on the statement rows ``rows_S`` in order, ``t.batch_size`` per update.

    The stream is cut to a whole number of updates (the caller counts exposures on the part
    used). Updates run ``t.steps_per_call`` at a time inside one compiled ``lax.scan``.

    Returns:
      (trained params, {"steps", "final_loss_nats", "losses_nats"}).
    """
    steps = len(rows_S) // t.batch_size
    if steps == 0:
        raise ConfigError(f"capacity.train.batch_size ({t.batch_size}) is larger than the training stream "
                          f"({len(rows_S)} statements)")
    opt = make_optimizer(optim_config(t), steps)
    tokens = jnp.asarray(enc.tokens_MxT1)
    mask = jnp.asarray(enc.target_mask_MxT if t.loss_on == "all" else enc.value_mask_MxT)

    # The statement table goes into the compiled call as an argument, not as a baked-in constant.
    def loss_fn(p, rows_B, tokens, mask):
        toks = tokens[rows_B]
        logits_BxTxV = module.apply(p, toks[:, :-1])
        nll_BxT = optax.softmax_cross_entropy_with_integer_labels(logits_BxTxV, toks[:, 1:])
        m = mask[rows_B]
        return (nll_BxT * m).sum() / m.sum()

    @jax.jit
    def run_chunk(p, s, rows_CxB, tokens, mask):
        def step(carry, rows_B):
            p, s = carry
            loss, grads = jax.value_and_grad(loss_fn)(p, rows_B, tokens, mask)
            updates, s = opt.update(grads, s, p)
            return (optax.apply_updates(p, updates), s), loss

        (p, s), losses = jax.lax.scan(step, (p, s), rows_CxB)
        return p, s, losses

    state = opt.init(params)
    rows = rows_S[: steps * t.batch_size].reshape(steps, t.batch_size).astype(np.int32)
    losses: list[float] = []
    t0 = time.perf_counter()
    for lo in range(0, steps, t.steps_per_call):
        chunk = rows[lo: lo + t.steps_per_call]
        params, state, chunk_losses = run_chunk(params, state, jnp.asarray(chunk), tokens, mask)
        chunk_losses = np.asarray(chunk_losses, dtype=np.float64)
        losses.extend(chunk_losses.tolist())
        if on_chunk is not None:
            on_chunk({"step": lo + len(chunk), "train/loss_nats": float(chunk_losses.mean()),
                      "statements_seen": (lo + len(chunk)) * t.batch_size,
                      "time/elapsed_s": time.perf_counter() - t0})
    tail = losses[-max(1, min(len(losses), t.steps_per_call)):]
    return params, {"steps": steps, "final_loss_nats": float(np.mean(tail))}


# --------------------------------------------------------------------------- one run


def run_config(spec: KnowledgeSpec, model: ModelConfig, cfg: CapacityConfig) -> dict[str, Any]:
    """The plain config that defines one run (what its summary records and its hash covers)."""
    return {"knowledge": dataclasses.asdict(knowledge_config(spec)), "model": dataclasses.asdict(model),
            "train": dataclasses.asdict(cfg.train), "seed": cfg.seed, "eval_batch_size": cfg.eval_batch_size,
            "heldout_entities": cfg.heldout_entities}


def config_hash(run_cfg: dict[str, Any]) -> str:
    return hashlib.sha256(json.dumps(run_cfg, sort_keys=True).encode()).hexdigest()


def _stats(credit_: Credit, kb: KnowledgeBase) -> dict[str, Any]:
    per_attr = {}
    for k, a in enumerate(kb.attributes):
        per_attr[a.name] = {
            "choices": len(a.choices), "information_bits": float(a.bits * kb.n_entities),
            "stored_bits": float(credit_.stored_bits_NxK[:, k].sum()),
            "net_bits": float(credit_.net_bits_NxK[:, k].sum()),
            "facts_known": int((credit_.code_bits_NxK[:, k] <= KNOWN_BITS).sum())}
    return per_attr


def run_one(spec: KnowledgeSpec, model_cfg: ModelConfig, cfg: CapacityConfig, run_dir: Path,
            experiment: str, log: Callable[[str], None] = print) -> dict[str, Any]:
    """Trains one model on one knowledge base and measures what it stored; writes the run directory.

    A ``summary.json`` already in ``run_dir`` with the same config is returned as it is; one with a
    different config is refused.

    Returns:
      The summary (nested, units in the names).

    Raises:
      MdlbenchError: ``run_dir`` holds a run with a different config or cannot be written.
    """
    rc = run_config(spec, model_cfg, cfg)
    digest = config_hash(rc)
    old = harness.finished_run(run_dir, digest)
    if old is not None:
        log(f"already done: {run_dir}")
        return old
    harness.make_run_dir(run_dir)
    t_start = time.perf_counter()

    kb = knowledge.generate(knowledge_config(spec))
    control_kb = knowledge.heldout(kb, cfg.heldout_entities) if cfg.heldout_entities else None
    enc = encode(kb)
    seq_len = enc.seq_len
    if control_kb is not None:
        seq_len = max(seq_len, encode(control_kb).seq_len)
        enc = encode(kb, seq_len)
    module = models.build(model_cfg, seq_len)
    key = jax.random.fold_in(jax.random.PRNGKey(cfg.seed), STREAM_INIT)
    params0 = module.init(key, jnp.zeros((1, seq_len), jnp.int32))
    counts = param_breakdown(params0)

    # The training stream: (entity, attribute, template) -> row of ``enc``.
    rng = np.random.default_rng([cfg.seed, STREAM_ORDER])
    stream = kb.training_stream(rng)
    k_attr, n_t = len(kb.attributes), kb.config.templates
    rows_S = (stream[:, 0] * k_attr + stream[:, 1]) * n_t + stream[:, 2]
    steps = len(rows_S) // cfg.train.batch_size
    used = stream[: steps * cfg.train.batch_size]
    seen_NxK = np.bincount(used[:, 0] * k_attr + used[:, 1], minlength=kb.n_facts).reshape(kb.n_entities, k_attr)
    exposures_N = seen_NxK.mean(axis=1)
    log(f"{run_dir}: {kb.n_entities} entities x {k_attr} attributes = {kb.information_bits:,.0f} bits of facts; "
        f"model {model_cfg.name} ({counts['n_params']:,} params, {counts['n_params_ffn']:,} in FFNs); "
        f"{steps} updates of {cfg.train.batch_size} statements (T={seq_len})")

    scorer = make_scorer(module)
    untrained = credit(kb, value_code_bits(transformer_log_probs(module, params0, scorer), enc, cfg.eval_batch_size))

    metrics: list[dict[str, Any]] = []
    t0 = time.perf_counter()
    params, info = train(module, params0, enc, rows_S, cfg.train, metrics.append)
    train_s = time.perf_counter() - t0

    t0 = time.perf_counter()
    log_probs = transformer_log_probs(module, params, scorer)
    cr = credit(kb, value_code_bits(log_probs, enc, cfg.eval_batch_size))
    control: dict[str, Any] = {"entities": 0}
    if control_kb is not None:
        cc = credit(control_kb, value_code_bits(log_probs, encode(control_kb, seq_len), cfg.eval_batch_size))
        n_facts = control_kb.n_facts
        control = {"entities": control_kb.n_entities, "facts": n_facts,
                   "stored_bits_per_fact": cc.stored_bits / n_facts, "net_bits_per_fact": cc.net_bits / n_facts,
                   "information_bits_per_fact": cc.information_bits / n_facts,
                   "note": "entities never trained on: what the per-fact max(0, .) credits by chance"}
    eval_s = time.perf_counter() - t0

    info_bits = kb.information_bits
    summary = {
        "kind": "capacity",
        "experiment": experiment,
        "seed": cfg.seed,
        "config": rc,
        "config_hash": digest,
        "data": {"name": kb_label(spec), "source": "knowledge", "n_entities": kb.n_entities,
                 "attributes": [a.name for a in kb.attributes], "n_facts": kb.n_facts,
                 "information_bits": info_bits, "bits_per_entity": float(kb.bits_K.sum()),
                 "templates": n_t, "exposure": spec.exposure, "exposures": spec.exposures,
                 "zipf_exponent": spec.zipf_exponent if spec.exposure == "zipf" else None,
                 "train_statements": int(len(used)),
                 "exposures_per_fact_mean": float(seen_NxK.mean()),
                 "exposures_per_fact_min": int(seen_NxK.min()), "exposures_per_fact_max": int(seen_NxK.max())},
        "model": {"name": model_cfg.name, "family": model_cfg.family, "d_model": model_cfg.d_model,
                  "n_layers": model_cfg.n_layers, "n_heads": model_cfg.n_heads,
                  "d_ff": model_cfg.d_ff or 4 * model_cfg.d_model, "seq_len": seq_len, **counts},
        "train": {"steps": info["steps"], "batch_size": cfg.train.batch_size,
                  "final_loss_nats": info["final_loss_nats"], "loss_on": cfg.train.loss_on},
        "capacity": {
            "measure": "ideal bits: sum over facts of max(0, log2|choices| - L), L = -sum log2 p of the value "
                       "and its terminator given the statement prefix under the trained model (float32), "
                       "mean over templates; no bitstream is written",
            "stored_bits": cr.stored_bits, "net_bits": cr.net_bits, "information_bits": info_bits,
            "stored_fraction": cr.stored_bits / info_bits,
            "stored_bits_per_param": cr.stored_bits / counts["n_params"],
            "stored_bits_per_ffn_param": cr.stored_bits / counts["n_params_ffn"],
            "net_bits_per_param": cr.net_bits / counts["n_params"],
            "value_code_bits": float(cr.code_bits_NxK.sum()),
            "facts": kb.n_facts, "facts_known": int((cr.code_bits_NxK <= KNOWN_BITS).sum()),
            "untrained_stored_bits": untrained.stored_bits, "untrained_net_bits": untrained.net_bits,
            "per_attribute": _stats(cr, kb)},
        "control": control,
        "time": {"train_s": train_s, "eval_s": eval_s, "total_s": time.perf_counter() - t_start},
        "env": {"jax": jax.__version__, "backend": jax.default_backend(), "threads": len(os.sched_getaffinity(0))},
    }

    # Per entity: how often it was seen and what fraction of its bits was kept (the retention plot).
    buf = io.StringIO()
    buf.write("entity,exposures_per_fact,information_bits,stored_bits,net_bits,facts_known\n")
    info_e = float(kb.bits_K.sum())
    known_N = (cr.code_bits_NxK <= KNOWN_BITS).sum(axis=1)
    for n in range(kb.n_entities):
        buf.write(f"{n},{exposures_N[n]:.6g},{info_e:.6f},{cr.stored_bits_NxK[n].sum():.6f},"
                  f"{cr.net_bits_NxK[n].sum():.6f},{known_N[n]}\n")
    atomic_write(run_dir / "entities.csv", buf.getvalue().encode())
    atomic_write(run_dir / "metrics.jsonl", "".join(json.dumps(m) + "\n" for m in metrics).encode())
    harness.write_summary(run_dir, summary)
    c = summary["capacity"]
    log(f"  stored {c['stored_bits']:,.0f} of {info_bits:,.0f} bits ({100 * c['stored_fraction']:.1f} %), "
        f"net {c['net_bits']:,.0f}; {c['stored_bits_per_param']:.3f} bits/param; "
        f"control {control.get('stored_bits_per_fact', float('nan')):.3f} bits/fact by chance; "
        f"loss {info['final_loss_nats']:.3f} nats; train {train_s:.0f} s, eval {eval_s:.1f} s")
    return summary


def run(ccfg: CapacityConfig, experiment: str = "capacity", log: Callable[[str], None] = print) -> dict[str, Any]:
    """Runs (or finds finished) every cell of the grid, then writes tables, fits and figures.

    Args:
      ccfg: the sweep (validated: :func:`mdlbench.capacity.config.from_dict` or ``mdlbench.jobs``).
      experiment: the sweep's name: ``<out_dir>/runs/<experiment>/`` and the tables' stem.
      log: called with each progress line.

    Returns:
      {"runs": [summary, ...], "fits": [row, ...], "paths": [...], "time_s": ...}.
    """
    from mdlbench.analysis import collect as collect_lib
    from mdlbench.analysis import plots

    t0 = time.perf_counter()
    out = Path(ccfg.out_dir)
    root = out / "runs" / experiment
    cells = grid(ccfg)
    log(f"[capacity] {experiment}: {len(cells)} runs ({len(ccfg.knowledge)} knowledge bases x models), "
        f"{len(os.sched_getaffinity(0))} CPUs")
    summaries, dirs = [], []
    for i, (spec, model_cfg) in enumerate(cells):
        run_dir = root / kb_label(spec) / model_cfg.name / f"seed{ccfg.seed}"
        log(f"[capacity] run {i + 1}/{len(cells)}")
        summaries.append(run_one(spec, model_cfg, ccfg, run_dir, experiment, log))
        dirs.append(run_dir.relative_to(root).as_posix())

    # Tables and figures from this grid's run directories (older cells in the folder are left out).
    sweep = collect_lib.collect(root)
    keep = sweep.runs["job.dir"].isin(dirs)
    sweep.runs = sweep.runs[keep].reset_index(drop=True)
    sweep.curves = sweep.curves[sweep.curves["job.dir"].isin(dirs)].reset_index(drop=True)
    if not sweep.entities.empty:
        sweep.entities = sweep.entities[sweep.entities["job.dir"].isin(dirs)].reset_index(drop=True)
    paths = collect_lib.write_tables(sweep, out / "tables", experiment)
    fits, figs = plots.make_capacity_figures(sweep.runs, sweep.entities, out / "figures", experiment,
                                             full_fraction=ccfg.full_fraction, ci_level=ccfg.ci_level,
                                             log=lambda s: log(f"[capacity] {s}"))
    paths += figs
    for p in paths:
        log(f"[capacity] wrote {p}")
    return {"runs": summaries, "fits": fits.to_dict("records"), "paths": [str(p) for p in paths],
            "time_s": time.perf_counter() - t0}
