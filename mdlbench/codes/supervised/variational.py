"""Variational label code: KL(q || p) + E_q[-log2 p(y | x, w)], mean-field Gaussian q (IDEAL length).

This is the bits-back code length (Hinton & van Camp 1993; Blier & Ollivier 2018, section 3.3)
computed, not coded: the real bits-back coder is a separate issue. Reported as ``ideal``.

q(w) = prod N(mu_i, sigma_i^2) with sigma = softplus(rho), trained by the reparameterisation
trick on the negative ELBO (one weight sample per minibatch). The prior is stated in the config:

  * ``tensor``: p(w) = N(0, s_l^2) for each parameter tensor l, with s_l^2 = mean(mu^2 + sigma^2)
    (the KL-minimising value, refitted at every step); at the end s_l is rounded to the grid
    2^(k/8), k in [-128, 128), and sent with 8 bits per tensor, which are counted.
  * ``fixed``: p(w) = N(0, prior_sigma^2) for every parameter; nothing is sent.

The final length uses the exact Gaussian KL (float64) and a Monte-Carlo estimate of E_q[NLL]
over all N labels under the same coding distribution as the other codes (softmax mixed with
``uniform_mix``).
"""

from __future__ import annotations

import math
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax

from mdlbench import optim
from mdlbench.codes.supervised.config import VariationalConfig
from mdlbench.codes.supervised.learner import Learner, batch_indices, n_steps

PRIOR_BITS_PER_TENSOR = 8
_LN2 = math.log(2.0)


def _sample(mu, sigma, key):
    leaves, treedef = jax.tree_util.tree_flatten(mu)
    keys = jax.random.split(key, len(leaves))
    eps = jax.tree_util.tree_unflatten(treedef, [jax.random.normal(k, m.shape, m.dtype) for k, m in zip(keys, leaves)])
    return jax.tree_util.tree_map(lambda m, s, e: m + s * e, mu, sigma, eps)


def _kl_nats(mu, sigma, vc: VariationalConfig):
    """Sum over tensors of KL(N(mu, sigma^2) || N(0, s^2)) in nats, s fitted per tensor or fixed."""
    total = 0.0
    for m, s in zip(jax.tree_util.tree_leaves(mu), jax.tree_util.tree_leaves(sigma)):
        if vc.prior == "tensor":
            var_p = jnp.mean(m * m + s * s)
        else:
            var_p = jnp.float32(vc.prior_sigma) ** 2
        total = total + jnp.sum(0.5 * jnp.log(var_p) - jnp.log(s) + (s * s + m * m) / (2 * var_p) - 0.5)
    return total


def _make_step(module, vc: VariationalConfig, tx: optax.GradientTransformation):
    """The compiled ELBO update ``(state, opt_state, X, Y, idx, key, i, beta, n) -> (state, opt_state, loss)``.

    Data and sizes are arguments (never closure constants): one compilation serves every call.
    """

    def step(state, opt_state, X, Y, idx, key, i, beta, n):
        def loss_fn(st):
            m, r = st
            s = jax.tree_util.tree_map(jax.nn.softplus, r)
            w = _sample(m, s, jax.random.fold_in(key, i))
            logits = module.apply({"params": w}, X[idx])
            nll = optax.softmax_cross_entropy_with_integer_labels(logits, Y[idx]).mean()
            return nll + beta * _kl_nats(m, s, vc) / n

        loss, grads = jax.value_and_grad(loss_fn)(state)
        updates, opt_state = tx.update(grads, opt_state, state)
        return optax.apply_updates(state, updates), opt_state, loss

    return jax.jit(step)


def train_variational(learner: Learner, vc: VariationalConfig, X, Y, n: int, stream: int) -> tuple[Any, Any]:
    """Fits q on examples ``[0, n)`` of the full device arrays; returns (mu, sigma) pytrees."""
    tx = optim.adam(vc.lr)
    step = learner.compiled(("variational", vc.prior, vc.prior_sigma, vc.lr),
                            lambda: _make_step(learner.module, vc, tx))
    mu = learner.init(stream)
    rho0 = math.log(math.expm1(vc.init_sigma))
    state = (mu, jax.tree_util.tree_map(lambda a: jnp.full_like(a, rho0), mu))
    opt_state = tx.init(state)
    key0 = learner.key(stream)
    steps = n_steps(n, vc.epochs, vc.batch_size, 1)
    warm = max(1, int(round(vc.kl_warmup * steps)))
    rng = np.random.default_rng([learner.seed, stream])
    for i, idx in enumerate(batch_indices(n, steps, vc.batch_size, rng)):
        # KL weight ramps 0 -> 1 (then stays 1): avoids collapsing q onto the prior before the
        # means have learnt anything; the reported length is the full (beta = 1) objective.
        beta = jnp.float32(min(1.0, (i + 1) / warm))
        state, opt_state, _ = step(state, opt_state, X, Y, jnp.asarray(idx), key0, i, beta, jnp.float32(n))
    mu, rho = state
    return mu, jax.tree_util.tree_map(jax.nn.softplus, rho)


def kl_bits(mu: Any, sigma: Any, vc: VariationalConfig) -> tuple[float, float]:
    """Exact KL(q || p) in bits (float64) with the prior as sent, and the prior's side bits."""
    total = 0.0
    mus = [np.asarray(a, np.float64) for a in jax.tree_util.tree_leaves(mu)]
    sigmas = [np.asarray(a, np.float64) for a in jax.tree_util.tree_leaves(sigma)]
    for m, s in zip(mus, sigmas):
        if vc.prior == "tensor":
            k = np.clip(np.round(8 * 0.5 * np.log2(np.mean(m * m + s * s))), -128, 127)
            var_p = 2.0 ** (2 * k / 8)
        else:
            var_p = vc.prior_sigma ** 2
        total += float(np.sum(0.5 * np.log(var_p) - np.log(s) + (s * s + m * m) / (2 * var_p) - 0.5))
    side = PRIOR_BITS_PER_TENSOR * len(mus) if vc.prior == "tensor" else 0.0
    return total / _LN2, float(side)


def variational(learner: Learner, vc: VariationalConfig, x_host: np.ndarray, y: np.ndarray, X, Y,
                stream: int, x_eval: np.ndarray | None = None, y_eval: np.ndarray | None = None,
                eval_mu: Any = None) -> dict[str, Any]:
    """Trains q on all N examples and returns the ideal variational code length.

    Args:
      learner: the classifier.
      vc: variational settings.
      x_host, y: the coded data (host); X, Y: the same on device.
      stream: seed stream of the initialisation, minibatches and weight samples.
      x_eval, y_eval: test examples for the posterior mean's accuracy.
      eval_mu: posterior mean to test (one that never saw the test examples); default this q's.

    Returns:
      bits (ideal), KL and data parts, and accuracies.
    """
    n = len(y)
    mu, sigma = train_variational(learner, vc, X, Y, n, stream)
    kl, side = kl_bits(mu, sigma, vc)
    key = jax.random.fold_in(learner.key(stream), 2 ** 30)
    nlls = []
    sample = learner.compiled(("variational_sample",), lambda: jax.jit(_sample))
    for m in range(vc.mc_samples):
        w = sample(mu, sigma, jax.random.fold_in(key, m))
        nlls.append(learner.nll_bits(w, x_host, y))
    data_bits = float(np.mean(nlls))
    test_accuracy = float("nan")
    if x_eval is not None and len(x_eval):
        test_accuracy = learner.accuracy(eval_mu if eval_mu is not None else mu, x_eval, y_eval)
    sig = np.concatenate([np.asarray(s).ravel() for s in jax.tree_util.tree_leaves(sigma)])
    return {"bits": kl + side + data_bits, "kl_bits": kl + side, "data_bits": data_bits,
            "data_bits_mc_std": float(np.std(nlls)), "train_accuracy": learner.accuracy(mu, x_host, y),
            "test_accuracy": test_accuracy, "sigma_median": float(np.median(sig)), "mu": mu}
