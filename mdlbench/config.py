"""Typed configuration: the only schema the library knows.

Hydra composes YAML at the CLI boundary (``mdlbench.cli``) and hands a plain dict to
:func:`from_dict`; everything below is importable and usable from a notebook without Hydra.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import types
import typing
from dataclasses import dataclass, field
from typing import Any

from mdlbench.errors import MdlbenchError

# Shortest record stride the record expert searches (the sparse contexts cover 2..4 bytes back). It
# lives here so that validation and the jax module (mdlbench.models.ngram) read one value.
RECORD_MIN = 5


class ConfigError(MdlbenchError, ValueError):
    """A configuration value is missing, unknown or out of range."""


@dataclass
class ModelConfig:
    """A model family and its size.

    Attributes:
      name: the preset's name (``tiny``, ``small``, ``lstm`` ...); labels runs only.
      family: registry key in ``mdlbench.models`` (``transformer``, ``lstm``, ``uniform``).
      d_model: width (embedding / hidden size).
      n_layers: number of blocks (Transformer) or stacked cells (LSTM).
      n_heads: attention heads (Transformer only).
      d_ff: feed-forward width (Transformer only); 0 means 4 * d_model.
      positions: Transformer position encoding: ``learned`` (absolute, one vector per window
        position) or ``rope`` (rotary: attention sees relative offsets, which lets small models
        learn "the byte k positions back" dependencies far sooner).
      ngram_orders: byte n-gram count experts mixed into the model's logits (e.g. [1, 2, 3, 4]);
        empty for none. See :mod:`mdlbench.models.ngram`.
      ngram_log2_rows: rows per n-gram table (2**this); orders with more contexts are hashed.
      ngram_log2_rows_words: rows of the word experts that also read earlier words (the word-pair,
        word-trigram and skip-word tables: millions of contexts on a text of megabytes), 2**this;
        0 for ``ngram_log2_rows``.
      ngram_log2_rows_orders: ``[order, log2 rows]`` pairs giving byte orders tables of their own
        size, e.g. ``[[3, 17], [4, 18]]`` (on dickens order 3 has 21k distinct contexts, order 6
        750k); the orders not named keep ``ngram_log2_rows``.
      ngram_counts: what a count table stores: ``float32`` (exact sums of 1.0) or ``uint16``
        (half the memory; a row is halved, as PPMd rescales, before a cell would pass 65535).
      ngram_update: when the counts take in a coded byte: ``window`` (after its window, so a
        window is coded with the counts as they stood before it) or ``position`` (at once).
      match_min: a match model over the last ``match_min`` bytes mixed in with the n-gram
        experts (predicts the byte that followed their last occurrence); 0 for none.
      match_long_buckets: the match model's learnt weights per match length: 1..14 and 15+
        (false), or 1..15 and then one per power of two up to 2048+ (true).
      ngram_word: a word expert: counts indexed by the current word (its trailing ASCII letters,
        case-folded, at most this many) or by the last byte outside words; 0 for none.
      ngram_word_bigram: with ``ngram_word``, a second word expert indexed by the current word and
        the complete word before it (both within the last ``ngram_word`` bytes).
      ngram_word_trigram: with ``ngram_word_bigram``, a third word expert indexed by those two
        words and the word before them.
      ngram_word_skip: with ``ngram_word``, a word expert indexed by the current word and the word
        two before it, skipping the one in between.
      ngram_sparse: sparse byte contexts, each a list of distances back (1: the last byte), e.g.
        ``[[2, 3], [1, 3]]``: one count table each (hashed beyond ``ngram_log2_rows``), as paq's
        sparse models.
      ngram_gate: how each count expert's weight in the product is computed from the evidence
        features (the log of its context's count, its top byte's share): ``full`` (a dense layer
        over every expert's features) or ``own`` (a weight per feature of the expert's own two,
        plus a bias: nothing for Adam to couple across experts).
      ngram_logp_floor: > 0: every count expert's log-probabilities are bounded below by minus
        this (nats) before they enter the product; 0 for no bound.
      ngram_online_lr: learning rate of the online mixer: a correction to each expert's mixing
        weight, updated at every coded byte by a gradient step on that byte's log loss (carried
        state, like the counts, not a parameter); 0 for none.
      ngram_online_sets: which weight set of the online mixer a position uses: ``one`` (a single
        set) or ``byte`` (one set per previous byte).
      ngram_alpha: additive smoothing of every count expert, p = (n + alpha) / (N + 256 alpha).
      ngram_estimator: how each count expert turns counts into probabilities: ``additive`` (the
        formula above) or ``backoff`` (interpolated on the next lower order's estimate with the
        weight of the context's distinct bytes plus ``ngram_alpha``, as PPM's escapes).
      ngram_apm_lr: with the online mixer, learning rate of a bias per (previous byte, byte) added
        to the mixture's logits and stepped at every coded byte (a secondary estimate, as paq's
        APM stage, in the logit domain); 0 for none.
      ngram_bit_lr: with the online mixer, learning rate of a bit-level mixer after it (as
        paq's): the byte is split into its 8 binary decisions, and at each of the 255 nodes of
        that tree the mixture's log-odds for the next bit get learnt corrections from the base
        model's, the match model's and a bias, stepped at every coded byte on the bits it took;
        0 for none.
      ngram_bit_decay: with ``ngram_bit_lr``, each node's rate decays as
        ``ngram_bit_lr / sqrt(1 + n / ngram_bit_decay)``, n the bytes whose path crossed it; 0
        for a constant rate.
      ngram_record: > 0: a record expert (as paq8's record model) that finds each stream's
        record length online, the distance up to this with the most repeated bytes, and counts
        bytes by the bytes one record back; 0 for none. See :mod:`mdlbench.models.ngram`.
      ngram_column: > 0: a column expert, counts indexed by the bytes since the last line feed (at
        most this many) and the last byte (wrapped text breaks lines by the column); 0 for none.
      ngram_column_text: with ``ngram_column``, the column expert is silent also where the line so
        far holds a byte that is not printable ASCII, tab or CR (binary files).
      ngram_record_contexts: with ``ngram_record``, its count tables, each a list of
        ``[k, j]`` for the byte ``k * stride + j`` back: ``[[1, 0]]`` the byte one record back,
        ``[[0, 1], [1, 0]]`` it and the last byte.
      context: Transformer memory across windows: every coded byte also attends to the keys and
        values of the last ``context`` bytes before its window (0 = attention restarts at every
        window). Needs rotary positions. See :mod:`mdlbench.models.transformer`.
      memory: how the memory's keys/values are made: ``bytes`` (the context bytes are carried and
        their keys/values recomputed under the current parameters at every window) or ``kv``
        (Transformer-XL: keys/values kept from the window that computed them, one update stale).
      alibi: add ALiBi recency biases to the attention logits (fixed per-head slopes), so that a
        long memory starts out attending locally.
    """

    name: str = "tiny"
    family: str = "transformer"
    d_model: int = 64
    n_layers: int = 2
    n_heads: int = 2
    d_ff: int = 0
    positions: str = "learned"
    ngram_orders: list[int] = field(default_factory=list)
    ngram_log2_rows: int = 16
    ngram_log2_rows_words: int = 0
    ngram_log2_rows_orders: list[list[int]] = field(default_factory=list)
    ngram_counts: str = "float32"
    ngram_update: str = "window"
    match_min: int = 0
    match_long_buckets: bool = False
    ngram_word: int = 0
    ngram_word_bigram: bool = False
    ngram_word_trigram: bool = False
    ngram_word_skip: bool = False
    ngram_sparse: list[list[int]] = field(default_factory=list)
    ngram_logp_floor: float = 0.0
    ngram_gate: str = "full"
    ngram_online_lr: float = 0.0
    ngram_online_sets: str = "byte"
    ngram_alpha: float = 0.05
    ngram_estimator: str = "additive"
    ngram_apm_lr: float = 0.0
    ngram_bit_lr: float = 0.0
    ngram_bit_decay: float = 0.0
    ngram_record: int = 0
    ngram_column: int = 0
    ngram_column_text: bool = False
    ngram_record_contexts: list[list[list[int]]] = field(default_factory=lambda: [[[1, 0]], [[0, 1], [1, 0]]])
    context: int = 0
    memory: str = "bytes"
    alibi: bool = False


@dataclass
class SyntheticConfig:
    """A source of exactly known entropy rate (see ``mdlbench.data.synthetic``).

    Attributes:
      kind: ``iid``, ``markov`` or ``hmm``.
      alphabet_size: number of symbols; symbols are written as the bytes ``first_byte + i``.
      order: Markov order k (``markov`` only).
      n_states: hidden states (``hmm`` only).
      length: number of symbols (bytes) to generate.
      seed: seed of the source's random tables *and* of the sampled sequence.
      concentration: Dirichlet concentration of random tables; small = low entropy.
      probs: explicit i.i.d. probabilities (``iid`` only); empty = uniform.
      first_byte: byte value of symbol 0 (97 = ``a``, so sources are readable text).
    """

    kind: str = "markov"
    alphabet_size: int = 8
    order: int = 2
    n_states: int = 4
    length: int = 100_000
    seed: int = 0
    concentration: float = 0.5
    probs: list[float] = field(default_factory=list)
    first_byte: int = 97


@dataclass
class DataConfig:
    """Which bytes to code.

    Attributes:
      name: a registry name (``pystdlib``, ``tinyshakespeare``, ``dickens`` ...), or ``file``.
      path: a file to read when ``name == 'file'`` (or to override a registry entry's location).
      data_dir: directory searched first for registry files; else ``$MDLBENCH_DATA``.
      max_bytes: use only the first ``max_bytes`` bytes (0 = all).
      download: fetch from the canonical URL when the file is missing and one is known.
      synthetic: parameters when ``name`` names a synthetic source.
    """

    name: str = "pystdlib"
    path: str = ""
    data_dir: str = ""
    max_bytes: int = 0
    download: bool = False
    synthetic: SyntheticConfig | None = None


@dataclass
class OptimConfig:
    """The online learner's optimiser (optax).

    Attributes:
      name: ``adam``, ``adamw`` or ``sgd``.
      lr: peak learning rate.
      b1, b2, eps: Adam moments.
      weight_decay: decoupled weight decay (``adamw``).
      clip_norm: global gradient-norm clip; 0 disables it.
      warmup_steps: linear warm-up length in optimiser updates.
      schedule: ``constant`` (after the warm-up; the online codes, which may not know their length)
        or ``cosine`` (decay to ``lr * final_lr_fraction`` over a known number of updates).
      final_lr_fraction: where the ``cosine`` schedule ends, as a fraction of ``lr``.
      updates_per_batch: optimiser updates on each coded batch (the data is coded once,
        before the first of them).
    """

    name: str = "adam"
    lr: float = 2e-3
    b1: float = 0.9
    b2: float = 0.999
    eps: float = 1e-8
    weight_decay: float = 0.0
    clip_norm: float = 1.0
    warmup_steps: int = 0
    schedule: str = "constant"
    final_lr_fraction: float = 0.1
    updates_per_batch: int = 1


@dataclass
class CodeConfig:
    """How the data is coded.

    Attributes:
      name: ``prequential`` (the streaming online code: a real bitstream, verified) or
        ``estimate`` (the fast mode: the same training, summing each batch's pre-update loss;
        an ideal length, no bitstream, nothing to verify).
      batch_size: B, parallel streams the data is split into.
      seq_len: T, bytes of every stream coded (then trained on) per step.
      verify: replay the decoder in a separate process at the end of a run.
      chunk_bytes: container payload chunk size (each chunk carries a CRC32).
      segment_steps: the range coder is sealed and restarted every this many steps, so that a
        run can be checkpointed there and resumed byte-identically (costs a few bytes each).
      checkpoint_s: save a checkpoint at the first segment boundary after this many seconds
        since the last one (0: at every boundary; negative: never). Does not change the bits.
      devices: data-parallel training over this many devices (the batch is split evenly with
        a fixed sharding; coding runs on the first device). 1 = one fused program.
      coder: the entropy coder. ``host`` (default, the reference): constriction's range coder
        on the host, reached by an ordered callback at every coded position. ``device``: the
        in-program rANS coder (``mdlbench.coding.device_rans``): the compiled step quantises
        the probabilities and codes or decodes every position itself, with no host round trip
        (for GPUs and TPUs); needs ``devices=1`` for now.
      coder_lanes: with ``coder=device``, how many rANS coders share the B streams (it must
        divide B; 0 = one per stream). Each lane of each segment costs a flush of ~10 bits, so
        1 lane codes closest to the ideal (~10 bits a segment in all); each position then pops
        its B symbols one lane-round after the other, cheap on a CPU. On an accelerator, where
        each round is a few kernel launches, use 0 (all B at once; ~10 bits per stream per
        segment).
      real_for: with ``name=estimate``, the jobs coded for real after all: entries
        ``MODEL/DATA`` (preset and data names, ``*`` matches any). Lets one sweep estimate every
        job and really code (and verify) the ones picked; such a job runs as ``prequential``.
    """

    name: str = "prequential"
    batch_size: int = 16
    seq_len: int = 128
    verify: bool = True
    chunk_bytes: int = 65536
    segment_steps: int = 100
    checkpoint_s: float = 60.0
    devices: int = 1
    real_for: list[str] = field(default_factory=list)
    coder: str = "host"
    coder_lanes: int = 1


@dataclass
class LoggerConfig:
    """Tracking. JSON-lines metrics are always written; wandb is optional on top.

    Attributes:
      wandb_mode: ``offline`` (default), ``online`` or ``disabled``.
      project: wandb project.
      log_every_s: seconds between plain progress lines when stdout is not a terminal.
    """

    wandb_mode: str = "offline"
    project: str = "mdlbench"
    log_every_s: float = 10.0


@dataclass
class Config:
    """A whole run: the program's configuration (with the code, it *is* the program).

    Attributes:
      experiment: names the sweep; the first level of the run directory.
      seed: seeds the parameter initialisation (and nothing else random in the code).
      run_dir: where outputs go; empty = ``results/runs/<experiment>/<data>/<model>/seed<k>``.
      threads: CPUs to pin this run to before JAX starts (0 = all available). The decoder
        reproduces the count recorded in the container, so any value decodes.
      baselines: also measure the classic compressors on the same bytes (``baselines.*``).

    The other code families (``supervised:``, ``bits_back:``, ``capacity:`` sections of a composed
    config) have their own typed schemas; ``mdlbench.jobs`` reads a composed config into one of
    them. They are not fields here, so the byte code's decoder does not carry their schemas.
    """

    experiment: str = "default"
    seed: int = 0
    model: ModelConfig = field(default_factory=ModelConfig)
    data: DataConfig = field(default_factory=DataConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    code: CodeConfig = field(default_factory=CodeConfig)
    logger: LoggerConfig = field(default_factory=LoggerConfig)
    run_dir: str = ""
    threads: int = 0
    baselines: bool = False


def build(cls: type, value: Any, where: str) -> Any:
    """Builds dataclass ``cls`` from the plain ``value`` recursively, refusing unknown keys and wrong
    types: the one way every family's schema is read (``where`` prefixes the error messages)."""
    origin = typing.get_origin(cls)
    if origin in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(cls) if a is not type(None)]
        if value is None:
            return None
        return build(args[0], value, where)
    if dataclasses.is_dataclass(cls):
        if isinstance(value, cls):
            return value
        if not isinstance(value, dict):
            raise ConfigError(f"{where}: expected a mapping, got {type(value).__name__}")
        hints = typing.get_type_hints(cls)
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(value) - names)
        if unknown:
            raise ConfigError(f"{where}: unknown key(s) {', '.join(unknown)}; known: {', '.join(sorted(names))}")
        kwargs = {k: build(hints[k], v, f"{where}.{k}" if where else k) for k, v in value.items()}
        return cls(**kwargs)
    if origin is list:
        (item,) = typing.get_args(cls)
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{where}: expected a list, got {value!r}")
        return [build(item, v, where) for v in value]
    if cls is float and isinstance(value, (int, float)) and not isinstance(value, bool):
        return float(value)
    if cls is int and isinstance(value, bool):
        raise ConfigError(f"{where}: expected an integer, got {value!r}")
    if cls in (int, str, bool) and not isinstance(value, cls):
        raise ConfigError(f"{where}: expected {cls.__name__}, got {value!r}")
    return value


def from_dict(d: dict[str, Any]) -> Config:
    """Builds a validated :class:`Config` from a plain (resolved) dict."""
    cfg = build(Config, d, "")
    validate(cfg)
    return cfg


def to_dict(cfg: Config) -> dict[str, Any]:
    """The plain-dict form stored in containers and summaries."""
    return dataclasses.asdict(cfg)


def resolve_mode(cfg: Config) -> Config:
    """The config a job really runs: an ``estimate`` job named in ``code.real_for`` becomes a
    plain ``prequential`` (real, verified) code, so its container records an ordinary config."""
    import fnmatch

    if cfg.code.name != "estimate" or not cfg.code.real_for:
        return cfg
    job = f"{cfg.model.name}/{cfg.data.name}"
    real = any(fnmatch.fnmatchcase(job, pat) for pat in cfg.code.real_for)
    code = dataclasses.replace(cfg.code, name="prequential" if real else "estimate", real_for=[])
    return dataclasses.replace(cfg, code=code)


def program_dict(cfg: Config) -> dict[str, Any]:
    """The config as stored in a container: what the decoder needs, nothing about where it ran."""
    d = to_dict(cfg)
    d["run_dir"] = ""
    return d


def config_hash(cfg: Config) -> str:
    """sha256 of the config that defines the coded bitstream (run_dir and logging excluded)."""
    d = to_dict(cfg)
    d.pop("run_dir", None)
    d.pop("logger", None)
    d.pop("baselines", None)
    d["code"].pop("verify", None)
    return hashlib.sha256(json.dumps(d, sort_keys=True).encode()).hexdigest()


def check_ranges(prefix: str, positive: dict[str, Any], nonnegative: dict[str, Any]) -> None:
    """Raises ConfigError for the first value that is not > 0 (resp. not >= 0); NaN fails both."""
    for key, v in positive.items():
        if not v > 0:
            raise ConfigError(f"{prefix}{key} must be positive, got {v}")
    for key, v in nonnegative.items():
        if not v >= 0:
            raise ConfigError(f"{prefix}{key} must be >= 0, got {v}")


def validate(cfg: Config) -> None:
    """Range checks with one clear message each."""
    positive = {
        "code.batch_size": cfg.code.batch_size,
        "code.seq_len": cfg.code.seq_len,
        "code.chunk_bytes": cfg.code.chunk_bytes,
        "code.segment_steps": cfg.code.segment_steps,
        "code.devices": cfg.code.devices,
        "optim.updates_per_batch": cfg.optim.updates_per_batch,
    }
    if cfg.model.family != "uniform":
        positive.update({"model.d_model": cfg.model.d_model, "model.n_layers": cfg.model.n_layers})
        if cfg.model.family == "transformer":
            positive["model.n_heads"] = cfg.model.n_heads
    positive["optim.lr"] = cfg.optim.lr
    check_ranges("", positive, {"threads": cfg.threads, "model.d_ff": cfg.model.d_ff,
                                "data.max_bytes": cfg.data.max_bytes, "optim.warmup_steps": cfg.optim.warmup_steps})
    if cfg.model.context < 0:
        raise ConfigError(f"model.context must be >= 0, got {cfg.model.context}")
    if cfg.model.memory not in ("bytes", "kv"):
        raise ConfigError(f"model.memory must be 'bytes' or 'kv', got {cfg.model.memory!r}")
    if cfg.model.context and (cfg.model.family != "transformer" or cfg.model.positions != "rope"):
        raise ConfigError("model.context > 0 (memory across windows) needs family=transformer with "
                          f"positions=rope, got family={cfg.model.family!r}, positions={cfg.model.positions!r}")
    if cfg.model.family == "transformer" and cfg.model.d_model % cfg.model.n_heads:
        raise ConfigError(f"model.d_model ({cfg.model.d_model}) must be divisible by model.n_heads ({cfg.model.n_heads})")
    orders = cfg.model.ngram_orders
    if any(not 1 <= k <= 8 for k in orders) or len(set(orders)) != len(orders):
        raise ConfigError(f"model.ngram_orders must be distinct orders in 1..8, got {orders}")
    if orders and not 8 <= cfg.model.ngram_log2_rows <= 24:
        raise ConfigError(f"model.ngram_log2_rows must be in 8..24, got {cfg.model.ngram_log2_rows}")
    if cfg.model.ngram_log2_rows_words and not 8 <= cfg.model.ngram_log2_rows_words <= 24:
        raise ConfigError(f"model.ngram_log2_rows_words must be 0 (as ngram_log2_rows) or in 8..24, "
                          f"got {cfg.model.ngram_log2_rows_words}")
    if cfg.model.ngram_log2_rows_words and not (cfg.model.ngram_word_bigram or cfg.model.ngram_word_skip):
        raise ConfigError("model.ngram_log2_rows_words sizes the word-pair, word-trigram and skip-word tables: "
                          "it needs model.ngram_word_bigram or model.ngram_word_skip")
    pairs = cfg.model.ngram_log2_rows_orders
    if pairs and (any(len(p) != 2 or p[0] not in orders or not 8 <= p[1] <= 24 for p in pairs)
                  or len({p[0] for p in pairs}) != len(pairs)):
        raise ConfigError(f"model.ngram_log2_rows_orders must be [order, log2 rows] pairs, one per order of "
                          f"model.ngram_orders ({orders}), rows in 8..24, got {pairs}")
    if cfg.model.ngram_counts not in ("float32", "uint16"):
        raise ConfigError(f"model.ngram_counts must be 'float32' or 'uint16', got {cfg.model.ngram_counts!r}")
    if cfg.model.ngram_counts == "uint16" and cfg.code.batch_size * cfg.code.seq_len >= 0x8000:
        raise ConfigError(f"model.ngram_counts=uint16 needs fewer than 32768 bytes per window (halving keeps a cell "
                          f"room for one window's counts), got code.batch_size x code.seq_len = "
                          f"{cfg.code.batch_size * cfg.code.seq_len}")
    if cfg.model.ngram_update not in ("window", "position"):
        raise ConfigError(f"model.ngram_update must be 'window' or 'position', got {cfg.model.ngram_update!r}")
    if cfg.model.match_min and (not orders or not 4 <= cfg.model.match_min <= 32):
        raise ConfigError(f"model.match_min must be 0 (no match model) or in 4..32 with model.ngram_orders set, "
                          f"got {cfg.model.match_min} with ngram_orders={orders}")
    if cfg.model.ngram_word and (not orders or not 2 <= cfg.model.ngram_word <= 32):
        raise ConfigError(f"model.ngram_word must be 0 (no word expert) or in 2..32 with model.ngram_orders set, "
                          f"got {cfg.model.ngram_word} with ngram_orders={orders}")
    if cfg.model.ngram_word_bigram and not cfg.model.ngram_word:
        raise ConfigError("model.ngram_word_bigram needs model.ngram_word > 0 (the bytes it looks back over)")
    if cfg.model.ngram_word_trigram and not cfg.model.ngram_word_bigram:
        raise ConfigError("model.ngram_word_trigram needs model.ngram_word_bigram (its table extends the word pair's)")
    if cfg.model.ngram_word_skip and not cfg.model.ngram_word:
        raise ConfigError("model.ngram_word_skip needs model.ngram_word > 0 (the bytes it looks back over)")
    sparse = cfg.model.ngram_sparse
    if sparse and (not orders or any(not p or len(set(p)) != len(p) or not all(isinstance(d, int) and 1 <= d <= 32 for d in p)
                                     for p in sparse)):
        raise ConfigError(f"model.ngram_sparse must be lists of distinct distances in 1..32, with model.ngram_orders "
                          f"set, got {sparse} with ngram_orders={orders}")
    record, rec_ctx = cfg.model.ngram_record, cfg.model.ngram_record_contexts
    if record and (not orders or not 16 <= record <= 4096):
        raise ConfigError(f"model.ngram_record must be 0 (no record expert) or a longest stride in 16..4096 with "
                          f"model.ngram_orders set, got {record} with ngram_orders={orders}")
    if record and (not rec_ctx or any(
            not c or len({tuple(t) for t in c}) != len(c)
            or not all(len(t) == 2 and all(isinstance(v, int) for v in t) and 0 <= t[0] <= 4 and -4 <= t[1] <= 32
                       and t[0] * RECORD_MIN + t[1] >= 1 for t in c) for c in rec_ctx)):
        raise ConfigError(f"model.ngram_record_contexts must be lists of distinct [k, j] pairs (the byte k * stride + j "
                          f"back, k in 0..4, j in -4..32, at least 1 back), got {rec_ctx}")
    column = cfg.model.ngram_column
    if cfg.model.ngram_column_text and not column:
        raise ConfigError("model.ngram_column_text needs model.ngram_column > 0 (it restricts the column expert)")
    if column and (not orders or not 16 <= column <= 255):
        raise ConfigError(f"model.ngram_column must be 0 (no column expert) or a largest column in 16..255 with "
                          f"model.ngram_orders set, got {column} with ngram_orders={orders}")
    if not 0.0 <= cfg.model.ngram_logp_floor <= 100.0:
        raise ConfigError(f"model.ngram_logp_floor must be 0 (no bound) or a bound in nats up to 100, got {cfg.model.ngram_logp_floor}")
    if not cfg.model.ngram_online_lr >= 0 or (cfg.model.ngram_online_lr and not orders):
        raise ConfigError(f"model.ngram_online_lr must be >= 0 (0: no online mixer), and > 0 only with "
                          f"model.ngram_orders set, got {cfg.model.ngram_online_lr} with ngram_orders={orders}")
    if not cfg.model.ngram_alpha > 0:
        raise ConfigError(f"model.ngram_alpha must be > 0 (every byte keeps some probability), got {cfg.model.ngram_alpha}")
    if not cfg.model.ngram_apm_lr >= 0 or (cfg.model.ngram_apm_lr and not cfg.model.ngram_online_lr):
        raise ConfigError(f"model.ngram_apm_lr must be >= 0 (0: none), and > 0 only with model.ngram_online_lr > 0, "
                          f"got {cfg.model.ngram_apm_lr}")
    if not cfg.model.ngram_bit_lr >= 0 or (cfg.model.ngram_bit_lr and not cfg.model.ngram_online_lr):
        raise ConfigError(f"model.ngram_bit_lr must be >= 0 (0: none), and > 0 only with model.ngram_online_lr > 0, "
                          f"got {cfg.model.ngram_bit_lr}")
    if not cfg.model.ngram_bit_decay >= 0 or (cfg.model.ngram_bit_decay and not cfg.model.ngram_bit_lr):
        raise ConfigError(f"model.ngram_bit_decay must be >= 0 (0: a constant rate), and > 0 only with "
                          f"model.ngram_bit_lr > 0, got {cfg.model.ngram_bit_decay}")
    if cfg.model.ngram_estimator not in ("additive", "backoff"):
        raise ConfigError(f"model.ngram_estimator must be 'additive' or 'backoff', got {cfg.model.ngram_estimator!r}")
    if cfg.model.ngram_gate not in ("full", "own"):
        raise ConfigError(f"model.ngram_gate must be 'full' or 'own', got {cfg.model.ngram_gate!r}")
    if cfg.model.ngram_online_sets not in ("one", "byte"):
        raise ConfigError(f"model.ngram_online_sets must be 'one' or 'byte', got {cfg.model.ngram_online_sets!r}")
    if cfg.code.batch_size % max(cfg.code.devices, 1):
        raise ConfigError(f"code.batch_size ({cfg.code.batch_size}) must be divisible by code.devices "
                          f"({cfg.code.devices}): each device trains on an equal share of the streams")
    if cfg.code.coder not in ("host", "device"):
        raise ConfigError(f"code.coder must be 'host' (constriction's range coder, the reference) or 'device' "
                          f"(the in-program rANS coder), got {cfg.code.coder!r}")
    if cfg.code.coder_lanes < 0 or (cfg.code.coder_lanes and cfg.code.batch_size % cfg.code.coder_lanes):
        raise ConfigError(f"code.coder_lanes ({cfg.code.coder_lanes}) must divide code.batch_size "
                          f"({cfg.code.batch_size}); 0 = one rANS coder per stream")
    if cfg.code.coder == "device" and cfg.code.devices != 1:
        raise ConfigError(f"code.coder=device codes inside the one fused program: it needs code.devices=1 "
                          f"for now, got {cfg.code.devices}")
    if cfg.code.real_for and cfg.code.name != "estimate":
        raise ConfigError("code.real_for picks jobs to code for real inside an estimate sweep: it needs code.name=estimate")
    if any(p.count("/") != 1 for p in cfg.code.real_for):
        raise ConfigError(f"code.real_for entries must be MODEL/DATA patterns, got {cfg.code.real_for}")
    if cfg.code.name not in ("prequential", "estimate"):
        raise ConfigError(f"code.name must be 'prequential' (a real, verified code) or 'estimate' (Rae's "
                          f"training-loss estimate, no bitstream), got {cfg.code.name!r}")
    if cfg.logger.wandb_mode not in ("offline", "online", "disabled"):
        raise ConfigError(f"logger.wandb_mode must be offline, online or disabled, got {cfg.logger.wandb_mode!r}")
