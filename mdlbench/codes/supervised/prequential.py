"""Prequential (streaming online) label code.

For each mini-batch of ``batch_size`` examples, in the shuffled order: code its labels under the
current parameters (one compiled forward pass on the known inputs), then make
``updates_per_batch`` optimiser updates on minibatches drawn from every label coded so far
(``replay``) or from the batch just coded. Parameters and optimiser state carry over; nothing is
ever retrained from scratch. The same function runs on both sides; only the channel differs.
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from mdlbench.codes.supervised.config import SupervisedConfig
from mdlbench.codes.supervised.learner import STREAM_PREQUENTIAL, Learner


def prequential_pass(learner: Learner, cfg: SupervisedConfig, x_host: np.ndarray, X, channel,
                     snapshot_at: int = 0) -> dict[str, Any]:
    """Codes (or decodes) all N labels batch by batch, training after each batch.

    Args:
      learner: the classifier and its compiled functions.
      cfg: the supervised config (``prequential`` is used).
      x_host: ``N x H x W`` float32 inputs (side information).
      X: the same inputs on device.
      channel: an EncodeChannel or DecodeChannel.
      snapshot_at: also return the parameters as they were when training had used only
        examples below this index (for a held-out accuracy); 0 = no snapshot.

    Returns:
      ``y`` (the N labels), ``params`` (final), ``snapshot`` (or None) and ``curve``
      (cumulative ideal bits after each batch).
    """
    pc = cfg.prequential
    n = len(x_host)
    tx, step = learner.train_step("adam", pc.lr)
    params = learner.init(STREAM_PREQUENTIAL)
    opt_state = tx.init(params)
    rng = np.random.default_rng([learner.seed, STREAM_PREQUENTIAL])
    y = np.zeros(n, np.int32)
    Y = jnp.asarray(y)
    snapshot = None
    curve = []
    for start in range(0, n, pc.batch_size):
        end = min(n, start + pc.batch_size)
        if snapshot_at and snapshot is None and end > snapshot_at:
            snapshot = jax.tree_util.tree_map(lambda a: a, params)
        y[start:end] = channel.code(learner.probs(params, x_host[start:end], chunk=pc.batch_size))
        curve.append((end, channel.ideal_bits))
        Y = Y.at[start:end].set(jnp.asarray(y[start:end]))
        lo = 0 if pc.replay else start
        for _ in range(pc.updates_per_batch):
            idx = rng.integers(lo, end, size=pc.train_batch_size, dtype=np.int64).astype(np.int32)
            params, opt_state, _ = step(params, opt_state, X, Y, jnp.asarray(idx))
    return {"y": y, "params": params, "snapshot": snapshot, "curve": curve}
