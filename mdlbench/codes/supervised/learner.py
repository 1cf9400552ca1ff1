"""Training and coding probabilities for the supervised codes (JAX side).

Bit-exactness rests on two rules that every code here follows:
  * coding probabilities come only from :meth:`Learner.probs`, one jitted forward pass over
    fixed-size chunks of known inputs (never from logits computed inside a training step);
  * training is a deterministic function of (seed, stream, the labels it may see): the same
    jitted step, the same minibatch indices from a seeded numpy generator, inputs and labels
    gathered on device from full-length arrays, so the compiled programs are the same whether
    the encoder (all labels known) or the decoder (labels known up to the current block) runs.
"""

from __future__ import annotations

import hashlib
import math
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax

from mdlbench import optim
from mdlbench.config import OptimConfig
from mdlbench.models.classifiers import build_classifier

# Seed streams: every random choice is (config seed, stream) so that codes never share draws.
STREAM_FINAL = 0
STREAM_HOLDOUT = 1
STREAM_PREQUENTIAL = 2
STREAM_VARIATIONAL = 3
STREAM_VARIATIONAL_HOLDOUT = 4
STREAM_CANARY = 99
STREAM_BLOCK = 1000  # + block index


def batch_indices(n: int, steps: int, batch_size: int, rng: np.random.Generator) -> np.ndarray:
    """``steps x batch_size`` indices into ``range(n)``: concatenated permutations (epochs), cut."""
    total = steps * batch_size
    reps = -(-total // n)
    return np.concatenate([rng.permutation(n) for _ in range(reps)])[:total].reshape(steps, batch_size).astype(np.int32)


def n_steps(n: int, epochs: float, batch_size: int, min_steps: int, max_steps: int = 0) -> int:
    """Updates for ``epochs`` passes over ``n`` examples, at least ``min_steps``, at most ``max_steps`` (0 = no cap)."""
    steps = max(min_steps, math.ceil(epochs * n / batch_size))
    return min(steps, max_steps) if max_steps else steps


def make_optimizer(name: str, lr: float, weight_decay: float = 0.0) -> optax.GradientTransformation:
    """Adam or AdamW at a constant learning rate, no clipping (the shared factory's recipe)."""
    return optim.make_optimizer(OptimConfig(name=name, lr=lr, weight_decay=weight_decay, clip_norm=0.0))


class Learner:
    """A named classifier with its compiled forward pass and training steps.

    Args:
      model: a name from ``mdlbench.models.classifiers.CLASSIFIERS``.
      n_classes: K.
      image_shape: (H, W) of one input.
      seed: the config seed; initialisations and minibatch orders derive from (seed, stream).
      uniform_mix: coding distribution = (1 - eps) * softmax + eps / K.
      predict_chunk: rows per compiled forward pass.
    """

    def __init__(self, model: str, n_classes: int, image_shape: tuple[int, int], seed: int,
                 uniform_mix: float, predict_chunk: int):
        self.module = build_classifier(model, n_classes)
        self.n_classes = n_classes
        self.image_shape = tuple(image_shape)
        self.seed = seed
        self.uniform_mix = uniform_mix
        self.predict_chunk = predict_chunk
        self._predict = jax.jit(self._probs_fn)
        # One compiled program instead of many eagerly dispatched ops (seconds saved per init).
        self._init = jax.jit(lambda key: self.module.init(key, jnp.zeros((1, *self.image_shape), jnp.float32))["params"])
        self._steps: dict[tuple, Any] = {}

    # ---- parameters -------------------------------------------------------------------
    def key(self, stream: int) -> jax.Array:
        """The PRNG key of a seed stream."""
        return jax.random.fold_in(jax.random.PRNGKey(self.seed), stream)

    def init(self, stream: int) -> Any:
        """Fresh parameters for a seed stream."""
        return self._init(self.key(stream))

    # ---- coding probabilities ---------------------------------------------------------
    def _probs_fn(self, params, x_CxHxW):
        logits = self.module.apply({"params": params}, x_CxHxW).astype(jnp.float32)
        eps = jnp.float32(self.uniform_mix)
        return (1 - eps) * jax.nn.softmax(logits, axis=-1) + eps / jnp.float32(self.n_classes)

    def probs(self, params: Any, x_host: np.ndarray, chunk: int | None = None) -> np.ndarray:
        """Coding probabilities, ``N x K`` float32, from fixed-size (zero-padded) chunks.

        Args:
          params: classifier parameters.
          x_host: ``N x H x W`` float32 inputs (host array).
          chunk: rows per compiled call (default ``predict_chunk``).
        """
        c = chunk or self.predict_chunk
        n = len(x_host)
        out = np.empty((n, self.n_classes), np.float32)
        for a in range(0, n, c):
            part = x_host[a:a + c]
            m = len(part)
            if m < c:
                part = np.concatenate([part, np.zeros((c - m, *part.shape[1:]), np.float32)])
            out[a:a + m] = np.asarray(self._predict(params, jnp.asarray(part)))[:m]
        return out

    # ---- training ---------------------------------------------------------------------
    def compiled(self, key: tuple, build):
        """A compiled function cached on this learner: ``build()`` runs once per ``key``.

        Reusing one jitted function (instead of re-wrapping a fresh closure per call) means one
        compilation per shape for a whole run, for the encoder and the decoder alike.
        """
        if key not in self._steps:
            self._steps[key] = build()
        return self._steps[key]

    def train_step(self, optimizer: str, lr: float, weight_decay: float = 0.0):
        """The compiled update ``(params, opt_state, X, Y, idx) -> (params, opt_state, loss_nats)``."""
        key = (optimizer, lr, weight_decay)
        if key not in self._steps:
            tx = make_optimizer(optimizer, lr, weight_decay)
            module = self.module

            def step(params, opt_state, X, Y, idx):
                def loss_fn(p):
                    logits = module.apply({"params": p}, X[idx])
                    return optax.softmax_cross_entropy_with_integer_labels(logits, Y[idx]).mean()

                loss, grads = jax.value_and_grad(loss_fn)(params)
                updates, opt_state = tx.update(grads, opt_state, params)
                return optax.apply_updates(params, updates), opt_state, loss

            self._steps[key] = (tx, jax.jit(step))
        return self._steps[key]

    def fit(self, stream: int, X: jax.Array, Y: jax.Array, n: int, steps: int, batch_size: int,
            optimizer: str = "adam", lr: float = 1e-3, weight_decay: float = 0.0) -> Any:
        """Trains from scratch (init of ``stream``) on examples ``[0, n)`` of the full device arrays.

        ``X`` and ``Y`` always have full length N (labels beyond ``n`` may be unknown zeros on the
        decoder's side): only indices below ``n`` are gathered, and the compiled step is the same.
        """
        tx, step = self.train_step(optimizer, lr, weight_decay)
        params = self.init(stream)
        opt_state = tx.init(params)
        rng = np.random.default_rng([self.seed, stream])
        for idx in batch_indices(n, steps, batch_size, rng):
            params, opt_state, _ = step(params, opt_state, X, Y, jnp.asarray(idx))
        return params

    # ---- evaluation -------------------------------------------------------------------
    def nll_bits(self, params: Any, x_host: np.ndarray, y: np.ndarray) -> float:
        """Sum of -log2 p(y|x) under the coding distribution (float64 sum)."""
        return float(label_bits(self.probs(params, x_host), y).sum())

    def accuracy(self, params: Any, x_host: np.ndarray, y: np.ndarray) -> float:
        """Fraction of argmax predictions equal to the labels."""
        return float((self.probs(params, x_host).argmax(-1) == y).mean()) if len(y) else float("nan")

    def canary(self, x_host: np.ndarray) -> str:
        """sha256 of one coding forward and one training step on fixed inputs and synthetic labels.

        Encoder and decoder compare it before coding anything: a mismatch means this machine's
        arithmetic differs and decoding would fail somewhere in the middle.
        """
        c = min(self.predict_chunk, len(x_host))
        params = self.init(STREAM_CANARY)
        p = self.probs(params, x_host[:c])
        X = jnp.asarray(x_host[:c])
        Y = jnp.asarray(np.arange(c, dtype=np.int32) % self.n_classes)
        tx, step = self.train_step("adam", 1e-3)
        params, _, _ = step(params, tx.init(params), X, Y, jnp.arange(c, dtype=jnp.int32))
        h = hashlib.sha256(p.tobytes())
        for leaf in jax.tree_util.tree_leaves(params):
            h.update(np.asarray(leaf).tobytes())
        return h.hexdigest()


def label_bits(probs_NxK: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Ideal code length of each label, -log2 (p_y / sum p), in float64."""
    p = np.asarray(probs_NxK, np.float64)
    return -np.log2(p[np.arange(len(y)), y] / p.sum(-1))


def scale_inputs(x_uint8: np.ndarray, max_value: int) -> np.ndarray:
    """Pixels to float32 in [0, 1] (numpy, so both sides compute it identically)."""
    return (x_uint8.astype(np.float32) / np.float32(max_value)).astype(np.float32)
