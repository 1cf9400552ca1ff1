"""Bits-back coding of a classifier's weights: the variational label code made real (Hinton & van Camp 1993).

The ideal variational code of ``mdlbench.codes.supervised.variational`` has length
KL(q || p) + E_q[-log2 p(y | x, w)]. Here it is an actual ANS bitstream:

  * every weight is put on the grid w = delta * j; the per-tensor prior p_l = N(0, s_l^2) is
    discretised on it (mass of [delta (j - 1/2), delta (j + 1/2)]) and truncated to
    |j| <= R_l = ceil(range_sigmas s_l / delta); the mean-field Gaussian q_i = N(mu_i, sigma_i^2)
    is discretised the same way and truncated to a window of W_i >= window_sigmas * sigma_i / delta
    grid points either side of round(mu_i / delta) (see :func:`q_windows` for why);
  * the encoder starts from seeded clean bits, **pops** j ~ q (bits it takes off the stack),
    **pushes** the N labels under the classifier with weights delta * j, then **pushes** j under p;
  * the receiver pops j under p, pops the labels, **retrains q** from the decoded labels with the
    very same deterministic program (that is how it knows q), pushes j back under q and so gets
    the encoder's clean bits back, which it checks.

Net bits = final stack - initial clean bits + 8 bits per tensor for the prior scales (the
``tensor`` prior's index k_l, s_l = 2^(k_l / 8), sent as one byte each in the payload). Its
expectation is the discretised ideal KL(q^ || p^) + E_q^[NLL] (+ the scales), which is reported
beside it, with the continuous KL + E_q[NLL] of the supervised ``variational`` row.
The inputs x are side information the receiver has (as in every supervised code).
"""

from __future__ import annotations

import math
import time
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from scipy.special import ndtr

from mdlbench.coding import ans
from mdlbench.codes.bits_back.config import BitsBackConfig, WeightsConfig
from mdlbench.codes.supervised.learner import STREAM_VARIATIONAL, Learner
from mdlbench.codes.supervised.variational import _sample, kl_bits, train_variational
from mdlbench.errors import DecodeError

STREAM_CLEAN = 1002
PRIOR_BITS_PER_TENSOR = 8
_LN2 = math.log(2.0)


# ---- the discretised prior and posterior ------------------------------------------------
def prior_indices(mu: Any, sigma: Any, wc: WeightsConfig) -> list[int]:
    """k_l per tensor (the ``tensor`` prior's scale s_l = 2^(k_l/8)); empty for ``fixed``.

    Same rule as the ideal code (``variational.kl_bits``): s_l^2 = mean(mu^2 + sigma^2) on a log2
    grid of step 1/8, k in [-128, 127].
    """
    if wc.variational.prior != "tensor":
        return []
    out = []
    for m, s in zip(jax.tree_util.tree_leaves(mu), jax.tree_util.tree_leaves(sigma)):
        m, s = np.asarray(m, np.float64), np.asarray(s, np.float64)
        out.append(int(np.clip(np.round(8 * 0.5 * np.log2(np.mean(m * m + s * s))), -128, 127)))
    return out


def prior_scales(ks: list[int], n_tensors: int, wc: WeightsConfig) -> list[float]:
    """Prior standard deviation of each tensor (float64)."""
    if wc.variational.prior != "tensor":
        return [float(wc.variational.prior_sigma)] * n_tensors
    return [float(2.0 ** (k / 8.0)) for k in ks]


def grid_ranges(scales: list[float], delta: float, wc: WeightsConfig) -> list[int]:
    """R_l = ceil(range_sigmas * s_l / delta), capped below constriction's 2^23 alphabet limit."""
    return [int(min(2 ** 22, max(1, math.ceil(wc.range_sigmas * s / delta)))) for s in scales]


def _flat(tree: Any) -> list[np.ndarray]:
    return [np.asarray(a, np.float64).ravel() for a in jax.tree_util.tree_leaves(tree)]


def weights_from_grid(js: list[np.ndarray], template: Any, delta: float) -> Any:
    """Classifier parameters delta * j (float32, exactly the same on both sides)."""
    leaves, treedef = jax.tree_util.tree_flatten(template)
    d32 = np.float32(delta)
    return jax.tree_util.tree_unflatten(
        treedef, [jnp.asarray((j.astype(np.float32) * d32).reshape(leaf.shape)) for j, leaf in zip(js, leaves)])


def pop_tensors(stack: ans.AnsStack, means: list[np.ndarray], stds: list[np.ndarray],
                ranges: list[int]) -> list[np.ndarray]:
    """Pops each tensor's grid indices under the prior, in tree order (means/stds in grid units)."""
    return [stack.pop_gaussian(m, s, -r, r) for m, s, r in zip(means, stds, ranges)]


def push_tensors(stack: ans.AnsStack, js: list[np.ndarray], means: list[np.ndarray], stds: list[np.ndarray],
                 ranges: list[int]) -> None:
    """Exact inverse of :func:`pop_tensors` under the same models (tensors in reverse order)."""
    for j, m, s, r in reversed(list(zip(js, means, stds, ranges))):
        stack.push_gaussian(j, m, s, -r, r)


def _ladder_up(need: np.ndarray) -> np.ndarray:
    """Smallest ceil(2^(k/4)), k >= 0, at or above each entry: few distinct window sizes, each <= 1.19x need."""
    ladder = np.unique(np.ceil(2.0 ** (np.arange(0, 4 * 24) / 4.0)).astype(np.int64))
    return ladder[np.searchsorted(ladder, np.minimum(need, 2 ** 23), side="left")]


def q_windows(mu: list[np.ndarray], sigma: list[np.ndarray], ranges: list[int], delta: float,
              window_sigmas: float) -> list[tuple[np.ndarray, np.ndarray]]:
    """Per tensor: centre c_i and half-width W_i of each weight's q window (grid indices, int64).

    Why windows: constriction gives every symbol of a model's alphabet at least 2^-24 of
    probability. A q spread over the whole prior range (tens of thousands of grid points) then
    puts ~1e-3 of its mass on points far in the tails, and popping a weight there (a weight of
    several prior scales in the output layer) ruins the label code. Truncating q_i to
    c_i +- W_i with W_i = the ladder value >= window_sigmas * sigma_i / delta keeps every popped
    weight within about window_sigmas * 1.19 posterior scales of its mean; the truncation is part
    of q's definition, so the ideal lengths below use it too. The window is moved inside
    [-R, R] when it would cross it (W_i <= R).
    """
    out = []
    for m, s, r in zip(mu, sigma, ranges):
        w = np.minimum(_ladder_up(np.ceil(window_sigmas * s / delta)), r)
        c = np.clip(np.round(m / delta).astype(np.int64), -r + w, r - w)
        out.append((c, w))
    return out


def pop_windows(stack: ans.AnsStack, mu: list[np.ndarray], sigma: list[np.ndarray],
                windows: list[tuple[np.ndarray, np.ndarray]], delta: float) -> list[np.ndarray]:
    """Pops grid indices from the windowed q: per tensor, one call per window size, offsets from c_i."""
    js = []
    for m, s, (c, w) in zip(mu, sigma, windows):
        j = np.zeros(len(m), np.int64)
        for width in np.unique(w):
            idx = np.flatnonzero(w == width)
            off = stack.pop_gaussian(m[idx] / delta - c[idx], s[idx] / delta, -int(width), int(width))
            j[idx] = c[idx] + off
        js.append(j)
    return js


def push_windows(stack: ans.AnsStack, js: list[np.ndarray], mu: list[np.ndarray], sigma: list[np.ndarray],
                 windows: list[tuple[np.ndarray, np.ndarray]], delta: float) -> None:
    """Exact inverse of :func:`pop_windows` (tensors and window sizes in reverse order)."""
    for j, m, s, (c, w) in reversed(list(zip(js, mu, sigma, windows))):
        for width in np.unique(w)[::-1]:
            idx = np.flatnonzero(w == width)
            stack.push_gaussian(j[idx] - c[idx], m[idx] / delta - c[idx], s[idx] / delta, -int(width), int(width))


def _log_mass(lo: np.ndarray, hi: np.ndarray) -> np.ndarray:
    """log of N(0,1) mass on [lo, hi] (float64), from the CDF below 0 and the survival above."""
    mid = 0.5 * (lo + hi)
    m = np.where(mid < 0, ndtr(hi) - ndtr(lo), ndtr(-lo) - ndtr(-hi))
    return np.log(np.maximum(m, 1e-300))


def _log_span(mean: np.ndarray, std: np.ndarray, lo_j: np.ndarray, hi_j: np.ndarray, delta: float) -> np.ndarray:
    """log of the mass N(mean, std^2) puts on the grid span [(lo_j - 1/2) delta, (hi_j + 1/2) delta]."""
    return _log_mass(((lo_j - 0.5) * delta - mean) / std, ((hi_j + 0.5) * delta - mean) / std)


def path_bits(js: list[np.ndarray], mu: list[np.ndarray], sigma: list[np.ndarray], scales: list[float],
              ranges: list[int], windows: list[tuple[np.ndarray, np.ndarray]], delta: float) -> tuple[float, float]:
    """Ideal -log2 q^(j) (windowed) and -log2 p^(j) (range-truncated) summed over grid indices (float64)."""
    q_bits = p_bits = 0.0
    for j, m, s, sp, r, (c, w) in zip(js, mu, sigma, scales, ranges, windows):
        lo, hi = (j - 0.5) * delta, (j + 0.5) * delta
        lq = _log_mass((lo - m) / s, (hi - m) / s) - _log_span(m, s, c - w, c + w, delta)
        lp = _log_mass(lo / sp, hi / sp) - _log_span(0.0, sp, -r, r, delta)
        q_bits -= float(lq.sum()) / _LN2
        p_bits -= float(lp.sum()) / _LN2
    return q_bits, p_bits


def discretised_kl_bits(mu: list[np.ndarray], sigma: list[np.ndarray], scales: list[float], ranges: list[int],
                        windows: list[tuple[np.ndarray, np.ndarray]], delta: float,
                        budget: int = 4_000_000) -> dict[str, float]:
    """Exact KL(q^ || p^) and entropy H(q^) in bits, summed over weights (float64).

    Each weight's sum runs over exactly its q window; weights are processed in groups of at most
    ``budget`` grid points.
    """
    kl = ent = 0.0
    for m_all, s_all, sp, r, (c_all, w_all) in zip(mu, sigma, scales, ranges, windows):
        lz_p = float(_log_span(0.0, sp, -r, r, delta))
        for width in np.unique(w_all):
            idx_all = np.flatnonzero(w_all == width)
            n_pts = 2 * int(width) + 1
            step = max(1, budget // n_pts)
            for a in range(0, len(idx_all), step):
                idx = idx_all[a:a + step]
                m, s, c = m_all[idx, None], s_all[idx, None], c_all[idx, None]
                j = c + np.arange(-int(width), int(width) + 1)[None, :]
                lo, hi = (j - 0.5) * delta, (j + 0.5) * delta
                lq = _log_mass((lo - m) / s, (hi - m) / s) - _log_span(m, s, c - width, c + width, delta)
                lp = _log_mass(lo / sp, hi / sp) - lz_p
                q = np.exp(lq)
                kl += float((q * (lq - lp)).sum()) / _LN2
                ent -= float((q * lq).sum()) / _LN2
    return {"kl_bits": kl, "entropy_bits": ent}


# ---- training q (both sides) --------------------------------------------------------------
def make_learner(cfg: BitsBackConfig, n_classes: int, image_shape: tuple[int, int]) -> Learner:
    """The classifier with the supervised codes' compiled forward pass and training steps."""
    wc = cfg.weights
    return Learner(cfg.model, n_classes, image_shape, cfg.seed, wc.uniform_mix, wc.predict_chunk)


def fit_posterior(learner: Learner, cfg: BitsBackConfig, x_host: np.ndarray, y: np.ndarray) -> tuple[Any, Any, float]:
    """Trains q on all labels (deterministic given seed, data and environment); returns (mu, sigma, s)."""
    t0 = time.perf_counter()
    mu, sigma = train_variational(learner, cfg.weights.variational, jnp.asarray(x_host), jnp.asarray(y, jnp.int32),
                                  len(y), STREAM_VARIATIONAL)
    return mu, sigma, time.perf_counter() - t0


# ---- encode / decode -------------------------------------------------------------------
def _models(mu: Any, sigma: Any, ks: list[int], delta: float, wc: WeightsConfig):
    """Flattened posterior, prior scales, grid ranges and q windows of one grid step."""
    mus, sigmas = _flat(mu), _flat(sigma)
    scales = prior_scales(ks, len(mus), wc)
    ranges = grid_ranges(scales, delta, wc)
    windows = q_windows(mus, sigmas, ranges, delta, wc.window_sigmas)
    return mus, sigmas, scales, ranges, windows


def _prior_models(shapes_flat: list[np.ndarray], scales: list[float], delta: float):
    return [np.zeros_like(t) for t in shapes_flat], [np.full_like(t, sp / delta) for t, sp in zip(shapes_flat, scales)]


def encode(learner: Learner, mu: Any, sigma: Any, x_host: np.ndarray, y: np.ndarray, delta: float,
           cfg: BitsBackConfig) -> dict[str, Any]:
    """Bits-back codes the labels at grid step ``delta``; returns the payload and the bits.

    Returns:
      ``payload`` (prior-index bytes + ANS words), ``initial_words``, ``initial_bits``,
      ``final_bits``, ``side_bits``, ideal path components and timings.
    """
    t0 = time.perf_counter()
    wc = cfg.weights
    ks = prior_indices(mu, sigma, wc)
    mus, sigmas, scales, ranges, windows = _models(mu, sigma, ks, delta, wc)
    pm, ps = _prior_models(mus, scales, delta)
    # Clean bits: about H(q^) is needed for the pop; start from the continuous estimate.
    h_est = sum(float(np.sum(np.log2(np.maximum(s * math.sqrt(2 * math.pi * math.e) / delta, 1.0)))) for s in sigmas)
    n_words = ans.round_up_words(1.02 * h_est + 1024)
    while True:
        stack = ans.AnsStack(ans.clean_words(n_words, cfg.seed, STREAM_CLEAN), seal=True)
        initial_bits = stack.num_bits()
        before = stack.num_valid_bits()
        js = pop_windows(stack, mus, sigmas, windows, delta)
        if stack.num_valid_bits() >= ans.RESERVE_BITS:
            break
        n_words = max(n_words + 8, ans.round_up_words(before - stack.num_valid_bits() + ans.RESERVE_BITS + 1024))
    w = weights_from_grid(js, mu, delta)
    probs = learner.probs(w, x_host)
    stack.push_categorical(np.asarray(y, np.int32), probs)
    push_tensors(stack, js, pm, ps, ranges)
    q_bits, p_bits = path_bits([j.astype(np.float64) for j in js], mus, sigmas, scales, ranges, windows, delta)
    label_bits = float(ans.categorical_bits(probs, np.asarray(y, np.int32)).sum())
    side = PRIOR_BITS_PER_TENSOR * len(ks)
    payload = bytes((k + 128) for k in ks) + ans.words_to_bytes(stack.words())
    at_edge = int(sum(int(np.sum(np.abs(j) == r)) for j, r in zip(js, ranges)))
    return {"payload": payload, "initial_words": n_words, "initial_bits": initial_bits,
            "final_bits": stack.num_bits(), "side_bits": side, "prior_k": ks, "ranges": ranges, "windows": windows,
            "window_sizes": int(sum(len(np.unique(w)) for _, w in windows)),
            "ideal_popped_bits": q_bits, "ideal_prior_bits": p_bits, "ideal_label_bits": label_bits,
            "ideal_path_bits": p_bits - q_bits + label_bits + side, "weights_at_range_edge": at_edge,
            "accuracy": float((probs.argmax(-1) == y).mean()), "encode_s": time.perf_counter() - t0}


def decode(learner: Learner, cfg: BitsBackConfig, x_host: np.ndarray, payload: bytes, delta: float, n: int,
           n_tensors: int, initial_words: int, template: Any, posterior=None) -> dict[str, Any]:
    """Recovers the labels, retrains q from them, and gets the clean bits back.

    Args:
      posterior: ``(mu, sigma)`` already retrained from the same labels (several grid steps share
        one training); ``None`` trains it here.

    Returns:
      ``y``, ``posterior``, timings.

    Raises:
      DecodeError: the stack does not end in the seeded clean bits.
    """
    t0 = time.perf_counter()
    wc = cfg.weights
    n_k = n_tensors if wc.variational.prior == "tensor" else 0
    ks = [b - 128 for b in payload[:n_k]]
    stack = ans.AnsStack(ans.bytes_to_words(payload[n_k:]))
    template_flat = _flat(template)
    scales = prior_scales(ks, len(template_flat), wc)
    ranges = grid_ranges(scales, delta, wc)
    p_means, p_stds = _prior_models(template_flat, scales, delta)
    js = pop_tensors(stack, p_means, p_stds, ranges)
    w = weights_from_grid(js, template, delta)
    y = stack.pop_categorical(learner.probs(w, x_host)[:n])
    t_labels = time.perf_counter() - t0
    if posterior is None:
        mu, sigma, _ = fit_posterior(learner, cfg, x_host, y)
    else:
        mu, sigma = posterior
    if prior_indices(mu, sigma, wc) != ks:
        raise DecodeError("the retrained posterior gives other prior scales than the encoder sent: "
                          "training is not reproducible here")
    mus, sigmas, _, _, windows = _models(mu, sigma, ks, delta, wc)
    push_windows(stack, [j.astype(np.int64) for j in js], mus, sigmas, windows, delta)
    if not ans.returned_to(stack, ans.clean_words(initial_words, cfg.seed, STREAM_CLEAN)):
        raise DecodeError("bits-back decode did not return the clean bits: the retrained posterior differs "
                          "from the encoder's")
    return {"y": y, "posterior": (mu, sigma), "labels_s": t_labels, "decode_s": time.perf_counter() - t0}


# ---- ideal references ---------------------------------------------------------------------
def expected_nll_bits(learner: Learner, mu: Any, sigma: Any, x_host: np.ndarray, y: np.ndarray, mc_samples: int,
                      deltas: list[float]) -> dict[str, Any]:
    """E_q[NLL] (continuous samples, the supervised ``variational`` code's keys) and E_q^[NLL] per delta.

    A continuous sample rounded to the nearest grid point is a sample of q^ (q^'s window, at least
    window_sigmas posterior scales wide, is ignored: it holds all but < 1e-6 of the mass at the
    default 5), so the same draws serve every delta.
    """
    key = jax.random.fold_in(learner.key(STREAM_VARIATIONAL), 2 ** 30)
    sample = learner.compiled(("variational_sample",), lambda: jax.jit(_sample))
    cont, disc = [], {d: [] for d in deltas}
    for m in range(mc_samples):
        w = sample(mu, sigma, jax.random.fold_in(key, m))
        cont.append(learner.nll_bits(w, x_host, y))
        for d in deltas:
            wq = jax.tree_util.tree_map(lambda a: jnp.round(a / jnp.float32(d)) * jnp.float32(d), w)
            disc[d].append(learner.nll_bits(wq, x_host, y))
    return {"continuous_bits": float(np.mean(cont)), "continuous_std_bits": float(np.std(cont)),
            "discretised_bits": {d: float(np.mean(v)) for d, v in disc.items()},
            "discretised_std_bits": {d: float(np.std(v)) for d, v in disc.items()}}


def continuous_kl_bits(mu: Any, sigma: Any, cfg: BitsBackConfig) -> tuple[float, float]:
    """KL(q || p) in bits and the prior's side bits, exactly as the ideal variational code reports them."""
    return kl_bits(mu, sigma, cfg.weights.variational)
