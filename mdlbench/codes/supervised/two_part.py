"""Two-part label code: L(theta) + L(y | x, theta) with quantized parameters (classic MDL).

Parameters of the final maximum-likelihood model are quantized to q = round(w / delta). The
stated prior on each tensor's integers is a discretised zero-mean Gaussian of scale
sigma_l / delta, truncated to [-R_l, R_l], where sigma_l is the tensor's RMS rounded to float16
and R_l = max |q_l|: both are sent as side information (16 + 32 bits per tensor), plus the
index of delta among the candidates (log2 of their number). The labels are then coded under the
quantized model. The best delta is the one with the smallest ideal total, as in Blier &
Ollivier's search.

For that delta the code is also made real: one stream of :mod:`mdlbench.coding.range_coder`
holding the parameters (its discretised-Gaussian family) then the labels (the categorical
push/pop of the :mod:`mdlbench.coding.coder` protocol), decoded back in-process and checked.
"""

from __future__ import annotations

import math
from typing import Any

import jax
import numpy as np
from scipy.special import log_ndtr

from mdlbench.codes.supervised.learner import Learner, label_bits
from mdlbench.coding import range_coder
from mdlbench.errors import DecodeError

SIDE_BITS_PER_TENSOR = 16 + 32  # float16 scale + int32 range
_LN2 = math.log(2.0)


def _scales(leaves: list[np.ndarray]) -> list[float]:
    """Each tensor's RMS as a float16 value (what the receiver gets), floored at 2^-14."""
    return [float(np.float16(max(float(np.sqrt(np.mean(np.square(w, dtype=np.float64)))), 2.0 ** -14)))
            for w in leaves]


def gaussian_int_bits(q: np.ndarray, s: float, r: int) -> float:
    """Ideal bits of integers ``q`` under N(0, s^2) discretised on unit bins and truncated to [-r, r]."""
    a = np.abs(q).astype(np.float64)
    hi = log_ndtr((0.5 - a) / s)  # lower-tail form of the symmetric bin mass: accurate far out
    lo = log_ndtr((-0.5 - a) / s)
    log_mass = hi + np.log1p(-np.exp(lo - hi))
    log_z = math.log1p(-2.0 * math.exp(float(log_ndtr(-(r + 0.5) / s))))
    return float(-(log_mass - log_z).sum() / _LN2)


def quantize(leaves: list[np.ndarray], delta: float) -> list[np.ndarray]:
    """Integer codes of every tensor."""
    return [np.round(np.asarray(w, np.float64) / delta).astype(np.int64) for w in leaves]


def dequantize(qs: list[np.ndarray], delta: float) -> list[np.ndarray]:
    """float32 parameters from integer codes (the same arithmetic on both sides)."""
    return [(q.astype(np.float64) * delta).astype(np.float32) for q in qs]


def two_part(learner: Learner, params: Any, x_host: np.ndarray, y: np.ndarray, deltas: list[float],
             x_eval: np.ndarray | None = None, y_eval: np.ndarray | None = None,
             eval_params: Any = None) -> dict[str, Any]:
    """The two-part code of ``y`` given ``x`` for the trained ``params``.

    Args:
      learner: the classifier.
      params: the final maximum-likelihood parameters.
      x_host, y: the coded data.
      deltas: candidate quantization steps.
      x_eval, y_eval: test examples for the accuracy of the quantized model.
      eval_params: parameters to quantize for the test accuracy (a model that never saw the
        test examples, e.g. trained on the non-held-out part); default ``params``.

    Returns:
      Ideal and real bits, the search over delta, and the test accuracy.
    """
    leaves, treedef = jax.tree_util.tree_flatten(params)
    leaves = [np.asarray(w, np.float32) for w in leaves]
    scales = _scales(leaves)
    n_params = sum(w.size for w in leaves)
    side_bits = SIDE_BITS_PER_TENSOR * len(leaves) + math.log2(len(deltas))
    search = []
    for delta in deltas:
        qs = quantize(leaves, delta)
        ranges = [max(1, int(np.abs(q).max())) for q in qs]
        param_bits = sum(gaussian_int_bits(q, s / delta, r) for q, s, r in zip(qs, scales, ranges))
        wq = jax.tree_util.tree_unflatten(treedef, dequantize(qs, delta))
        probs = learner.probs(wq, x_host)
        data_bits = float(label_bits(probs, y).sum())
        search.append({"delta": delta, "param_bits": param_bits, "data_bits": data_bits,
                       "bits": side_bits + param_bits + data_bits,
                       "train_accuracy": float((probs.argmax(-1) == y).mean())})
    best = min(search, key=lambda r: r["bits"])
    real = real_code(learner, leaves, treedef, scales, best["delta"], x_host, y)
    real_total = real["payload_bits"] + SIDE_BITS_PER_TENSOR * len(leaves) + math.ceil(math.log2(len(deltas)))
    test_accuracy = float("nan")
    if x_eval is not None and len(x_eval):
        src, tdef = jax.tree_util.tree_flatten(eval_params if eval_params is not None else params)
        wq = jax.tree_util.tree_unflatten(tdef, dequantize(quantize([np.asarray(w) for w in src], best["delta"]),
                                                           best["delta"]))
        test_accuracy = learner.accuracy(wq, x_eval, y_eval)
    return {"bits": best["bits"], "real_bits": real_total, "param_bits": best["param_bits"] + side_bits,
            "data_bits": best["data_bits"], "delta": best["delta"], "n_params": n_params,
            "param_bits_per_param": best["param_bits"] / n_params, "search": search,
            "test_accuracy": test_accuracy, "train_accuracy": best["train_accuracy"], "verified": real["verified"]}


def real_code(learner: Learner, leaves: list[np.ndarray], treedef, scales: list[float], delta: float,
              x_host: np.ndarray, y: np.ndarray) -> dict[str, Any]:
    """Range-codes the quantized parameters then the labels; decodes both back and checks them."""
    qs = quantize(leaves, delta)
    ranges = [max(1, int(np.abs(q).max())) for q in qs]
    if max(ranges) >= 2 ** 31:
        raise DecodeError(f"delta {delta} gives integer codes beyond int32")
    enc = range_coder.Encoder()
    for q, s, r in zip(qs, scales, ranges):
        enc.push_gaussian(q.ravel(), 0.0, s / delta, -r, r)
    wq = jax.tree_util.tree_unflatten(treedef, dequantize(qs, delta))
    enc.push(np.asarray(y, np.int32), learner.probs(wq, x_host))
    payload = enc.finish()

    # The receiver knows delta, the scales, the ranges and the shapes (side information), and
    # pops in push order (the range coder is a queue): parameters first, then the labels under
    # the model they define.
    dec = range_coder.Decoder(payload)
    got = [dec.pop_gaussian(w.size, 0.0, s / delta, -r, r).reshape(w.shape).astype(np.int64)
           for w, s, r in zip(leaves, scales, ranges)]
    wq2 = jax.tree_util.tree_unflatten(treedef, dequantize(got, delta))
    y2 = dec.pop(learner.probs(wq2, x_host))
    ok = all(np.array_equal(a, b) for a, b in zip(got, qs)) and np.array_equal(y2, y)
    if not ok:
        raise DecodeError("two-part code did not decode back to the same parameters and labels")
    return {"payload_bits": 8 * len(payload), "verified": True}
