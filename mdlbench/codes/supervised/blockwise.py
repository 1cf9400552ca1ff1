"""Block-wise online label code (Blier & Ollivier 2018; Voita & Titov 2020).

Boundaries 0 = t_0 < t_1 < ... < t_S = N. Block 1 is coded uniformly; block s+1 is coded under
a model trained from scratch (its own seed stream) on blocks 1..s with the fixed recipe of
``TrainConfig``. The same function runs on both sides; only the channel differs.
"""

from __future__ import annotations

import time
from typing import Any

import jax.numpy as jnp
import numpy as np

from mdlbench.codes.supervised.config import SupervisedConfig, block_ends
from mdlbench.codes.supervised.learner import STREAM_BLOCK, Learner, n_steps


def blockwise_pass(learner: Learner, cfg: SupervisedConfig, x_host: np.ndarray, X, channel) -> dict[str, Any]:
    """Codes (or decodes) all N labels block by block.

    Args:
      learner: the classifier and its compiled functions.
      cfg: the supervised config (``train`` and ``blockwise`` are used).
      x_host: ``N x H x W`` float32 inputs (side information).
      X: the same inputs on device.
      channel: an EncodeChannel or DecodeChannel.

    Returns:
      ``y`` (the N labels), ``blocks`` (per-block records) and ``last_params`` (the model that
      coded the last block, trained on blocks 1..S-1).
    """
    n, k = len(x_host), learner.n_classes
    t = cfg.train
    y = np.zeros(n, np.int32)
    blocks = []
    params = None
    start = 0
    for s, end in enumerate(block_ends(n, cfg.blockwise.boundaries_pct)):
        t0 = time.perf_counter()
        bits_before = channel.ideal_bits
        if s == 0:
            steps = 0
            probs = np.full((end - start, k), 1.0 / k, np.float32)
        else:
            steps = n_steps(start, t.epochs, t.batch_size, t.min_steps, t.max_steps)
            # Labels beyond `start` are zeros on the decoder's side and never gathered.
            params = learner.fit(STREAM_BLOCK + s, X, jnp.asarray(y), start, steps, t.batch_size,
                                 t.optimizer, t.lr, t.weight_decay)
            probs = learner.probs(params, x_host[start:end])
        y[start:end] = channel.code(probs)
        blocks.append({"block": s + 1, "start": start, "end": end, "train_examples": start, "steps": steps,
                       "bits": channel.ideal_bits - bits_before,
                       "bits_per_label": (channel.ideal_bits - bits_before) / (end - start),
                       "time_s": time.perf_counter() - t0})
        start = end
    return {"y": y, "blocks": blocks, "last_params": params}
