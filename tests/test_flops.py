"""Training compute counted from the model shape."""

import pytest

from mdlbench.analysis import flops


def test_transformer_flops_from_shape():
    m = {"family": "transformer", "d_model": 64, "n_layers": 2, "context": 96, "positions": "rope"}
    n_params = 133_184
    per_byte = flops.forward_flops_per_byte(m, n_params, seq_len=32)
    matmul = n_params - 257 * 64
    attn = 4 * 2 * (96 + 33 / 2) * 64
    assert per_byte == pytest.approx(2 * matmul + attn)
    assert flops.training_flops(m, n_params, 1000, 32, updates_per_batch=2) == pytest.approx(6 * per_byte * 1000)
    learned = {**m, "positions": "learned", "context": 0}
    assert flops.matmul_weights(learned, n_params + 32 * 64, 32) == matmul  # the position table is added, not multiplied


def test_memory_and_width_raise_compute_and_lstm_has_no_attention():
    base = {"family": "transformer", "d_model": 64, "n_layers": 2, "context": 0}
    mem = {**base, "context": 128}
    assert flops.forward_flops_per_byte(mem, 133_184, 32) > flops.forward_flops_per_byte(base, 133_184, 32)
    lstm = {"family": "lstm", "d_model": 128, "n_layers": 1}
    assert flops.forward_flops_per_byte(lstm, 197_504, 32) == 2 * (197_504 - 257 * 128)
    assert flops.forward_flops_per_byte({"family": "uniform", "d_model": 1}, 0, 32) == 0
