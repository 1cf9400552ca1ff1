"""Training compute counted from the model's shape (no jax): the x axis of compute plots.

Per byte, a forward pass costs ~2 FLOPs per weight of every matrix it multiplies by (one
multiply-add each; the embedding is a lookup, not a product), plus, for attention, 2·S·d FLOPs
for q·kᵀ and 2·S·d for the weighted sum of values in every layer, where S is the number of keys
a position attends to on average. A training update costs ~3 forwards (forward + backward);
``updates_per_batch`` updates are made on every coded window. Counts are estimates of the
arithmetic, not measurements; they omit layer norms, softmaxes and the optimiser.
"""

from __future__ import annotations

from typing import Any

V = 256  # byte alphabet


def matmul_weights(model: dict[str, Any], n_params: int, seq_len: int = 0) -> int:
    """Weights that multiply activations, per byte: all parameters except the embedding table
    (``vocab + 1`` rows of ``d_model``: a lookup) and, for learned positions, the position table."""
    d = int(model["d_model"])
    family = model.get("family", "transformer")
    if family == "uniform":
        return 0
    tables = (V + 1) * d
    if family == "transformer" and model.get("positions", "learned") == "learned":
        tables += seq_len * d  # one added vector per window position
    return max(0, int(n_params) - tables)


def attended_keys(model: dict[str, Any], seq_len: int) -> float:
    """Keys a position attends to on average: the memory plus half the window (causal)."""
    if model.get("family", "transformer") != "transformer":
        return 0.0
    return float(model.get("context", 0) or 0) + (seq_len + 1) / 2


def forward_flops_per_byte(model: dict[str, Any], n_params: int, seq_len: int) -> float:
    """Forward FLOPs per coded byte."""
    f = 2.0 * matmul_weights(model, n_params, seq_len)
    if model.get("family", "transformer") == "transformer":
        f += 4.0 * int(model["n_layers"]) * attended_keys(model, seq_len) * int(model["d_model"])
    return f


def training_flops(model: dict[str, Any], n_params: int, n_bytes: int, seq_len: int,
                   updates_per_batch: int = 1) -> float:
    """FLOPs of the online training on ``n_bytes`` (3 forwards per update per byte)."""
    return 3.0 * updates_per_batch * forward_flops_per_byte(model, n_params, seq_len) * n_bytes
