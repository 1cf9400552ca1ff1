"""Typed configuration of the bits-back codes (the ``bits_back:`` section of an experiment).

Plain dataclasses, validated in one place; no JAX here (the decoder reads a config from a file
header and pins the thread count before JAX starts).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from dataclasses import dataclass, field
from typing import Any

from mdlbench.codes.supervised.config import VariationalConfig
from mdlbench.config import ConfigError, build, check_ranges

CODES = ("bbans", "weights")


@dataclass
class VAETrainConfig:
    """Maximum-ELBO training of the VAE (Adam, reparameterisation trick, one z sample per image).

    Attributes:
      lr: Adam learning rate (constant).
      batch_size: images per update.
      epochs: passes over the coded images.
    """

    lr: float = 1e-3
    batch_size: int = 100
    epochs: float = 50.0


@dataclass
class BBANSConfig:
    """BB-ANS settings (Townsend, Bird & Barber 2019).

    Attributes:
      latent_bits: each latent dimension is cut into 2**latent_bits buckets of equal mass under
        the N(0, 1) prior, so p(z) is uniform over buckets; z is represented by its bucket centre.
      initial_words: 32-bit words of seeded random "clean bits" the stack starts with; 0 = the
        smallest multiple of 8 words that the first image's pop needs (found by the encoder).
      weights_dtype: the VAE's parameters are shipped as side information in this precision
        (``float16`` or ``float32``), xz-compressed and counted; the encoder codes with exactly
        those (rounded) parameters.
      elbo_samples: Monte-Carlo samples of z per image for the discretised -ELBO reference.
      heldout_images: also report the continuous -ELBO on this many official test images
        (data sets with a test split; 0 = none).
    """

    latent_bits: int = 10
    initial_words: int = 0
    weights_dtype: str = "float16"
    elbo_samples: int = 4
    heldout_images: int = 10000


@dataclass
class WeightsConfig:
    """Bits-back coding of a classifier's weights (Hinton & van Camp 1993) as a real ANS code.

    q(w) is the mean-field Gaussian of ``mdlbench.codes.supervised.variational`` (same recipe,
    same seed stream, so its ideal length is the ``variational`` row of ``codes_<data>.csv``).
    Each weight is put on the grid delta * j; q and the per-tensor prior are discretised on it.

    Attributes:
      deltas: grid steps to code with (one coded file each).
      range_sigmas: the grid covers |j| <= ceil(range_sigmas * s_l / delta) for tensor l, whose
        prior scale s_l is sent (8 bits per tensor); the prior is truncated to that range.
      window_sigmas: q_i is truncated to round(mu_i / delta) +- W_i grid points, W_i the first of
        ceil(2^(k/4)) at or above window_sigmas * sigma_i / delta (see ``weights.q_windows``).
      uniform_mix: label coding distribution = (1 - eps) softmax + eps / K.
      predict_chunk: rows per compiled forward pass when coding labels.
      variational: the posterior's training recipe (the supervised code family's schema).
    """

    deltas: list[float] = field(default_factory=lambda: [2.0 ** -8, 2.0 ** -10, 2.0 ** -12])
    range_sigmas: float = 16.0
    window_sigmas: float = 5.0
    uniform_mix: float = 1e-3
    predict_chunk: int = 500
    variational: VariationalConfig = field(default_factory=VariationalConfig)


@dataclass
class BitsBackConfig:
    """One bits-back experiment.

    Attributes:
      code: ``bbans`` (images under a VAE) or ``weights`` (labels under variational weights).
      experiment: names the table ``<out_dir>/tables/<experiment>.csv`` and the run directory
        ``<out_dir>/runs/<experiment>/<data>/<model>/seed<seed>``.
      data: ``mnist5k``, ``digits`` or ``fashion`` (``mdlbench.data.supervised``).
      data_dir: shared data folder; empty = ``$MDLBENCH_DATA``.
      max_examples: code only the first N shuffled examples; 0 = all.
      shuffle_seed: seed of the one permutation of the examples (the MNIST-5k file is sorted).
      seed: seed of initialisations, minibatch orders, Monte-Carlo samples and the clean bits.
      model: ``bbans``: a name from ``mdlbench.models.vae.VAES``; ``weights``: from
        ``mdlbench.models.classifiers.CLASSIFIERS``.
      binarize_threshold: ``bbans`` codes binarised pixels, 1 where pixel >= threshold.
      out_dir: results root (``tables/`` and ``runs/`` below it).
      verify: decode every coded file in a separate process and check its sha256.
      baselines: measure gzip / bzip2 / xz / PNG on the same pixels (``bbans``).
      train: VAE training (``bbans``).
      bbans: BB-ANS settings.
      weights: bits-back weights settings.
    """

    code: str = "bbans"
    experiment: str = ""
    data: str = "mnist5k"
    data_dir: str = ""
    max_examples: int = 0
    shuffle_seed: int = 0
    seed: int = 0
    model: str = "vae_small"
    binarize_threshold: int = 128
    out_dir: str = "results"
    verify: bool = True
    baselines: bool = True
    train: VAETrainConfig = field(default_factory=VAETrainConfig)
    bbans: BBANSConfig = field(default_factory=BBANSConfig)
    weights: WeightsConfig = field(default_factory=WeightsConfig)

    @property
    def experiment_name(self) -> str:
        """``experiment``, or ``bbans_<data>`` / ``bitsback_weights`` when it is empty."""
        return self.experiment or (f"bbans_{self.data}" if self.code == "bbans" else "bitsback_weights")


def from_dict(d: dict[str, Any]) -> BitsBackConfig:
    """Builds and validates a :class:`BitsBackConfig` from the plain ``bits_back:`` mapping."""
    cfg = build(BitsBackConfig, d, "bits_back")
    validate(cfg)
    return cfg


def to_dict(cfg: BitsBackConfig) -> dict[str, Any]:
    """The plain-dict form stored in file headers and summaries."""
    return dataclasses.asdict(cfg)


def config_hash(cfg: BitsBackConfig) -> str:
    """sha256 of everything that defines the coded files (paths, verification and baselines excluded)."""
    d = to_dict(cfg)
    for key in ("data_dir", "out_dir", "verify", "baselines"):
        d.pop(key)
    return hashlib.sha256(json.dumps(d, sort_keys=True).encode()).hexdigest()


def validate(cfg: BitsBackConfig) -> None:
    """Range checks with one clear message each (model names are checked when built)."""
    if cfg.code not in CODES:
        raise ConfigError(f"bits_back.code must be one of {', '.join(CODES)}, got {cfg.code!r}")
    w, b, t = cfg.weights, cfg.bbans, cfg.train
    check_ranges("bits_back.", {
        "train.lr": t.lr, "train.batch_size": t.batch_size, "train.epochs": t.epochs,
        "bbans.latent_bits": b.latent_bits, "bbans.elbo_samples": b.elbo_samples,
        "weights.range_sigmas": w.range_sigmas,
        "weights.window_sigmas": w.window_sigmas, "weights.predict_chunk": w.predict_chunk,
        "weights.variational.lr": w.variational.lr, "weights.variational.batch_size": w.variational.batch_size,
        "weights.variational.mc_samples": w.variational.mc_samples,
        "weights.variational.init_sigma": w.variational.init_sigma,
        "weights.variational.prior_sigma": w.variational.prior_sigma,
    }, {"max_examples": cfg.max_examples, "bbans.initial_words": b.initial_words,
        "bbans.heldout_images": b.heldout_images, "weights.variational.epochs": w.variational.epochs})
    if not 1 <= b.latent_bits <= 16:
        raise ConfigError(f"bits_back.bbans.latent_bits must be in 1..16, got {b.latent_bits}")
    if not 1 <= cfg.binarize_threshold <= 255:
        raise ConfigError(f"bits_back.binarize_threshold must be in 1..255, got {cfg.binarize_threshold}")
    if b.weights_dtype not in ("float16", "float32"):
        raise ConfigError(f"bits_back.bbans.weights_dtype must be float16 or float32, got {b.weights_dtype!r}")
    if not w.deltas or any(not d > 0 for d in w.deltas):
        raise ConfigError(f"bits_back.weights.deltas must be a non-empty list of positive steps, got {w.deltas}")
    if not 0.0 < w.uniform_mix < 1.0:
        raise ConfigError(f"bits_back.weights.uniform_mix must be in (0, 1), got {w.uniform_mix}")
    if w.variational.prior not in ("tensor", "fixed"):
        raise ConfigError(f"bits_back.weights.variational.prior must be tensor or fixed, got {w.variational.prior!r}")
