"""Typed configuration of the supervised code family (the ``supervised:`` section of an experiment).

Plain dataclasses, validated in one place; no JAX here (the decoder reads a config from a file
header and pins the thread count before JAX starts).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

from mdlbench.config import ConfigError, build, check_ranges

CODES = ("uniform", "two_part", "blockwise", "prequential", "variational")
# The doubling schedule of Blier & Ollivier / Voita & Titov, in percent of the data.
DOUBLING_PCT = [0.1, 0.2, 0.4, 0.8, 1.6, 3.2, 6.25, 12.5, 25.0, 50.0, 100.0]


@dataclass
class TrainConfig:
    """The maximum-likelihood training recipe (final model, each block-wise model).

    Attributes:
      optimizer: ``adam`` or ``adamw``.
      lr: constant learning rate.
      weight_decay: decoupled weight decay (``adamw`` only).
      batch_size: examples per update (fixed, so one compiled step serves every block).
      epochs: passes over the training examples; steps = max(min_steps, ceil(epochs*n/batch_size)).
      min_steps: lower bound on updates (tiny blocks still get trained).
      max_steps: upper bound on updates; 0 = none.
    """

    optimizer: str = "adam"
    lr: float = 1e-3
    weight_decay: float = 0.0
    batch_size: int = 64
    epochs: float = 20.0
    min_steps: int = 100
    max_steps: int = 0


@dataclass
class BlockwiseConfig:
    """Block-wise online code.

    Attributes:
      boundaries_pct: cumulative block ends in percent of N, increasing, last = 100. Block 1
        is coded uniformly; block s+1 by a model trained from scratch on blocks 1..s.
    """

    boundaries_pct: list[float] = field(default_factory=lambda: list(DOUBLING_PCT))


@dataclass
class PrequentialConfig:
    """Prequential (streaming) label code: code a batch under the current parameters, then train.

    Attributes:
      batch_size: labels coded per step.
      updates_per_batch: optimiser updates after each coded batch.
      replay: updates draw minibatches from every label coded so far (known to the decoder);
        False = only from the batch just coded.
      train_batch_size: examples per update.
      lr: learning rate of the online Adam optimiser.
    """

    batch_size: int = 50
    updates_per_batch: int = 30
    replay: bool = True
    train_batch_size: int = 64
    lr: float = 1e-3


@dataclass
class TwoPartConfig:
    """Two-part code: quantized parameters under a stated prior, then labels under that model.

    The prior on a tensor's quantized values q = round(w / delta) is a discretised zero-mean
    Gaussian whose scale is the tensor's RMS, sent as a float16 (16 bits per tensor). The best
    delta of ``deltas`` is chosen and its index sent (log2(len(deltas)) bits).

    Attributes:
      deltas: candidate quantization steps (default 2^0 ... 2^-10: coarse enough to contain the
        near-empty model, whose two-part length is about the uniform code plus side information).
    """

    deltas: list[float] = field(default_factory=lambda: [2.0 ** -k for k in range(0, 11)])


@dataclass
class VariationalConfig:
    """Variational code: KL(q||p) + E_q[-log2 p(y|x,w)] with a mean-field Gaussian q (ideal).

    Attributes:
      prior: ``tensor`` = zero-mean Gaussian per parameter tensor whose variance is fitted
        (empirical Bayes) and sent on a log2 grid of step 1/8 (8 bits per tensor); ``fixed`` =
        one zero-mean Gaussian of standard deviation ``prior_sigma`` (nothing sent).
      prior_sigma: prior standard deviation for ``fixed``.
      init_sigma: initial posterior standard deviation.
      lr: Adam learning rate.
      batch_size: examples per update.
      epochs: passes over the data.
      mc_samples: Monte-Carlo samples of w for the final E_q[NLL] over all N labels.
      kl_warmup: fraction of the updates over which the KL weight ramps from 0 to 1 (training
        schedule only; the reported length is always the full KL + E_q[NLL]).
    """

    prior: str = "tensor"
    prior_sigma: float = 0.1
    init_sigma: float = 1e-3
    lr: float = 3e-3
    batch_size: int = 128
    epochs: float = 100.0
    mc_samples: int = 16
    kl_warmup: float = 0.5


@dataclass
class SupervisedConfig:
    """One comparison of the code family on one labelled data set.

    Attributes:
      data: ``mnist5k``, ``digits`` or ``fashion``.
      data_dir: shared data folder; empty = ``$MDLBENCH_DATA`` (see mdlbench.data.supervised).
      max_examples: code only the first N shuffled examples; 0 = all.
      max_test_examples: evaluate on the first test examples only; 0 = all.
      shuffle_seed: seed of the one permutation of the examples (the MNIST-5k file is sorted).
      seed: seed of every initialisation, minibatch order and Monte-Carlo sample.
      model: a name from ``mdlbench.models.classifiers.CLASSIFIERS``.
      codes: which codes to run, from ``uniform two_part blockwise prequential variational``.
      uniform_mix: coding distribution = (1-eps)*softmax + eps/K; bounds a label's cost by
        log2(K/eps) bits, part of every model-based code.
      predict_chunk: rows per compiled forward pass when coding (fixed shape; padded).
      holdout_fraction: without an official test split, test accuracy is measured on the last
        fraction of the shuffled examples by models that never trained on them.
      out_dir: results root: tables/, figures/ and runs/ go below it.
      verify: decode the block-wise and prequential files in a separate process.
      train: the maximum-likelihood recipe.
      blockwise, prequential, two_part, variational: per-code settings.
    """

    data: str = "mnist5k"
    data_dir: str = ""
    max_examples: int = 0
    max_test_examples: int = 0
    shuffle_seed: int = 0
    seed: int = 0
    model: str = "mlp_small"
    codes: list[str] = field(default_factory=lambda: list(CODES))
    uniform_mix: float = 1e-3
    predict_chunk: int = 500
    holdout_fraction: float = 0.1
    out_dir: str = "results"
    verify: bool = True
    train: TrainConfig = field(default_factory=TrainConfig)
    blockwise: BlockwiseConfig = field(default_factory=BlockwiseConfig)
    prequential: PrequentialConfig = field(default_factory=PrequentialConfig)
    two_part: TwoPartConfig = field(default_factory=TwoPartConfig)
    variational: VariationalConfig = field(default_factory=VariationalConfig)


def from_dict(d: dict[str, Any]) -> SupervisedConfig:
    """Builds and validates a :class:`SupervisedConfig` from the plain ``supervised:`` mapping."""
    cfg = build(SupervisedConfig, d, "supervised")
    validate(cfg)
    return cfg


def to_dict(cfg: SupervisedConfig) -> dict[str, Any]:
    """The plain-dict form stored in file headers and summaries."""
    return dataclasses.asdict(cfg)


def validate(cfg: SupervisedConfig) -> None:
    """Range checks with one clear message each (the model name is checked when it is built)."""
    unknown = [c for c in cfg.codes if c not in CODES]
    if unknown:
        raise ConfigError(f"supervised.codes: unknown code(s) {', '.join(unknown)}; known: {', '.join(CODES)}")
    positive = {
        "predict_chunk": cfg.predict_chunk, "train.batch_size": cfg.train.batch_size,
        "prequential.batch_size": cfg.prequential.batch_size,
        "prequential.train_batch_size": cfg.prequential.train_batch_size,
        "variational.batch_size": cfg.variational.batch_size, "variational.mc_samples": cfg.variational.mc_samples,
        "train.lr": cfg.train.lr, "prequential.lr": cfg.prequential.lr, "variational.lr": cfg.variational.lr,
        "variational.init_sigma": cfg.variational.init_sigma, "variational.prior_sigma": cfg.variational.prior_sigma,
    }
    check_ranges("supervised.", positive, {
        "max_examples": cfg.max_examples, "max_test_examples": cfg.max_test_examples,
        "train.min_steps": cfg.train.min_steps, "train.max_steps": cfg.train.max_steps,
        "prequential.updates_per_batch": cfg.prequential.updates_per_batch,
        "train.epochs": cfg.train.epochs, "variational.epochs": cfg.variational.epochs})
    if not 0.0 < cfg.uniform_mix < 1.0:
        raise ConfigError(f"supervised.uniform_mix must be in (0, 1), got {cfg.uniform_mix}")
    if not 0.0 < cfg.holdout_fraction < 1.0:
        raise ConfigError(f"supervised.holdout_fraction must be in (0, 1), got {cfg.holdout_fraction}")
    b = cfg.blockwise.boundaries_pct
    if not b or b[-1] != 100.0 or any(x <= 0 for x in b) or any(x >= y for x, y in zip(b, b[1:])):
        raise ConfigError(f"supervised.blockwise.boundaries_pct must increase from > 0 to exactly 100, got {b}")
    if not cfg.two_part.deltas or any(not d > 0 for d in cfg.two_part.deltas):
        raise ConfigError(f"supervised.two_part.deltas must be a non-empty list of positive steps, got {cfg.two_part.deltas}")
    if cfg.train.optimizer not in ("adam", "adamw"):
        raise ConfigError(f"supervised.train.optimizer must be adam or adamw, got {cfg.train.optimizer!r}")
    if cfg.variational.prior not in ("tensor", "fixed"):
        raise ConfigError(f"supervised.variational.prior must be tensor or fixed, got {cfg.variational.prior!r}")


def block_ends(n: int, boundaries_pct: list[float]) -> list[int]:
    """Cumulative block ends in examples: round(pct/100 * n), strictly increasing, last = n.

    Duplicates that rounding creates on small N are dropped (an empty block codes nothing).
    """
    ends: list[int] = []
    for pct in boundaries_pct:
        e = min(n, max(1, int(round(pct / 100.0 * n))))
        if not ends or e > ends[-1]:
            ends.append(e)
    if ends[-1] != n:
        ends.append(n)
    return ends
