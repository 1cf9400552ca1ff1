"""A stacked byte-level LSTM whose state is carried across windows (stateful coding).

The cell is written out with explicit parameters so that the training path can precompute the
input projections for a whole window while the coding path steps one byte at a time; the two
paths may differ by an ulp, which is harmless since both coder sides use the stepping path.
"""

from __future__ import annotations

from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp


class LSTMLayer(nn.Module):
    """One LSTM layer: gates = x W_x + h W_h + b, split as (i, f, g, o)."""

    d_in: int
    d_hidden: int

    def setup(self):
        d = self.d_hidden
        self.w_x = self.param("w_x", nn.initializers.lecun_normal(), (self.d_in, 4 * d))
        self.w_h = self.param("w_h", nn.initializers.orthogonal(), (d, 4 * d))
        # Forget-gate bias 1: remember by default, a standard trick for stable early learning.
        self.b = self.param("b", lambda k, s: jnp.zeros(s).at[d : 2 * d].set(1.0), (4 * d,))

    @staticmethod
    def _cell(gates_BxG, c_BxD):
        i, f, g, o = jnp.split(gates_BxG, 4, axis=-1)
        c = jax.nn.sigmoid(f) * c_BxD + jax.nn.sigmoid(i) * jnp.tanh(g)
        return jax.nn.sigmoid(o) * jnp.tanh(c), c

    def __call__(self, x_BxTxD, carry):
        xg_TxBxG = jnp.swapaxes(x_BxTxD @ self.w_x + self.b, 0, 1)
        w_h = self.w_h

        def step(hc, xg):
            h, c = hc
            h, c = self._cell(xg + h @ w_h, c)
            return (h, c), h

        carry, h_TxBxD = jax.lax.scan(step, carry, xg_TxBxG)
        return jnp.swapaxes(h_TxBxD, 0, 1), carry

    def decode(self, x_BxD, carry):
        h, c = carry
        h, c = self._cell(x_BxD @ self.w_x + self.b + h @ self.w_h, c)
        return h, (h, c)


class LSTM(nn.Module):
    """Embedding -> stacked LSTM layers -> linear head over 256 byte values."""

    d_model: int
    n_layers: int
    vocab: int = 256

    def setup(self):
        self.embed = nn.Embed(self.vocab + 1, self.d_model, embedding_init=nn.initializers.normal(0.1))
        self.layers = [LSTMLayer(self.d_model, self.d_model) for _ in range(self.n_layers)]
        self.head = nn.Dense(self.vocab, kernel_init=nn.initializers.normal(0.02))

    def forward(self, inputs_BxT, state: Any):
        """Training forward over a window, starting from the carried state (gradients stop there).

        Returns (logits_BxTxV, the state after the window as this path computes it)."""
        x = self.embed(inputs_BxT)
        out = []
        for layer, carry in zip(self.layers, jax.lax.stop_gradient(state)):
            x, carry = layer(x, carry)
            out.append(carry)
        return self.head(x), out

    def __call__(self, inputs_BxT, state: Any):
        return self.forward(inputs_BxT, state)[0]

    def decode(self, input_B, cache: Any, pos):
        x = self.embed(input_B)
        new = []
        for layer, carry in zip(self.layers, cache):
            x, carry = layer.decode(x, carry)
            new.append(carry)
        return self.head(x), new

    def zero_state(self, batch: int):
        z = jnp.zeros((batch, self.d_model), jnp.float32)
        return [(z, z) for _ in range(self.n_layers)]

    def init_cache(self, state: Any, batch: int):
        return state

    def next_state(self, cache: Any, state: Any):
        return cache
