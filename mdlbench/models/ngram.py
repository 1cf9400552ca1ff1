"""Byte n-gram count experts mixed into any base model's logits (``model.ngram_orders``).

Online neural coders learn slowly: for the first megabytes a count model of the last few
bytes predicts text far better than the network does. This wrapper keeps, per order k, a table
of byte counts indexed by the previous k bytes (exact for k <= 2 at the default size, hashed
beyond) and forms a product of experts

    logits_V = base_logits_V + sum_k w_k * log p_k(V | last k bytes),
    p_k(x | c) = (n(c, x) + alpha) / (n(c) + 256 alpha),

with mixing weights ``w_k`` computed from each order's evidence (log of the context's count,
share of its most frequent byte), so the mixture leans on high orders only where they have
seen enough. Weights and base are trained by the usual loss; the counts are *not* parameters:
they are carried state, a deterministic function of the bytes already coded, so the decoder
rebuilds them exactly (float32 sums of 1.0 are exact far beyond any file here) and the
program that describes them is just the config.

Counts lag the coder slightly: a window is coded with the counts as they stood before it and
they are updated after it (in ``next_state``), with the pairs whose target byte the coder has
fed back as an input, i.e. all but the window's last byte, which is counted one window later.
Both sides do exactly this, so the lag costs a little compression and no exactness.
"""

from __future__ import annotations

from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

V = 256  # byte alphabet; the base model's BOS input (256) is read as byte 0 here


class NGramMix(nn.Module):
    """``base`` (any model of the protocol in :mod:`mdlbench.models`) mixed with count experts.

    Attributes:
      base: the neural model whose logits the experts are mixed into.
      orders: context lengths of the count experts, e.g. (1, 2, 3, 4).
      log2_rows: rows per table; an order whose 256**k contexts fit is indexed exactly, higher
        orders are hashed into 2**log2_rows rows (collisions only blur their counts).
      seq_len: window length T (the coding cache records the window's contexts).
      alpha: additive smoothing of the count estimates.
    """

    base: nn.Module
    orders: tuple[int, ...]
    log2_rows: int
    seq_len: int
    alpha: float = 0.05

    def setup(self):
        k = len(self.orders)
        # Starts as "trust every order a little"; the evidence features then learn when to lean.
        self.mix = nn.Dense(k, kernel_init=nn.initializers.zeros, bias_init=nn.initializers.constant(0.3))

    @property
    def history(self) -> int:
        return max(self.orders)

    def rows_of(self, k: int) -> int:
        return min(V ** k, 2 ** self.log2_rows)

    def _rows(self, ctx_NxH):
        """row index of every order's table for contexts ``ctx_NxH`` (last column = most recent)."""
        out = []
        for k in self.orders:
            c = ctx_NxH[..., self.history - k:].astype(jnp.uint32)  # ..., k (oldest first)
            if V ** k <= 2 ** self.log2_rows:
                idx = jnp.zeros(c.shape[:-1], jnp.uint32)
                for j in range(k):
                    idx = idx * jnp.uint32(V) + c[..., j]
            else:
                # Multiplicative hash in uint32 (wrap-around is defined): same bits everywhere.
                h = jnp.full(c.shape[:-1], 0x9E3779B1 * (k + 1) & 0xFFFFFFFF, jnp.uint32)
                for j in range(k):
                    h = (h ^ (c[..., j] + jnp.uint32(1))) * jnp.uint32(0x85EBCA77)
                    h = h ^ (h >> jnp.uint32(13))
                idx = h >> jnp.uint32(32 - self.log2_rows)
            out.append(idx.astype(jnp.int32))
        return jnp.stack(out, -1)  # ..., K

    def _mix(self, base_logits, tables, rows_NxK):
        counts = jnp.stack([t[rows_NxK[..., i]] for i, t in enumerate(tables)], -2)  # ..., K, V
        total = counts.sum(-1)
        logp = jnp.log(counts + self.alpha) - jnp.log(total + V * self.alpha)[..., None]
        evidence = jnp.concatenate([jnp.log1p(total), counts.max(-1) / (total + 1.0)], -1)
        w = self.mix(evidence)  # ..., K
        return base_logits.astype(jnp.float32) + jnp.einsum("...k,...kv->...v", w, logp)

    @staticmethod
    def _bytes(x):
        return jnp.where(x >= V, 0, x)

    def forward(self, inputs_BxT, state: Any):
        """Training forward; also returns the state after the window, with the counts updated
        exactly as the coding path's ``next_state`` updates them (same pairs, same lag)."""
        base_state, tables, hist_BxH = state
        tables = jax.lax.stop_gradient(tables)
        seq = jnp.concatenate([hist_BxH, self._bytes(inputs_BxT)], 1)  # B x (H+T)
        H, T = self.history, inputs_BxT.shape[1]
        ctx_BxTxH = jnp.stack([seq[:, t + 1: t + 1 + H] for t in range(T)], 1)
        base_logits, base_next = self.base.forward(inputs_BxT, base_state)
        logits = self._mix(base_logits, tables, self._rows(ctx_BxTxH))
        # The pair counted at position t is (the H bytes before input t, input t).
        rows_TxBxK = jnp.swapaxes(self._rows(jnp.stack([seq[:, t: t + H] for t in range(T)], 1)), 0, 1)
        tgt_TxB = inputs_BxT.T
        valid = (tgt_TxB < V).astype(jnp.float32)
        tgt = self._bytes(tgt_TxB)
        new_tables = tuple(t.at[rows_TxBxK[..., i], tgt].add(valid) for i, t in enumerate(tables))
        return logits, (base_next, new_tables, seq[:, -H:])

    def __call__(self, inputs_BxT, state: Any):
        return self.forward(inputs_BxT, state)[0]

    def decode(self, input_B, cache: Any, pos):
        base_cache, tables, hist_BxH, rows_TxBxK, tgt_TxB = cache
        rows_TxBxK = rows_TxBxK.at[pos].set(self._rows(hist_BxH))  # (context, input) pair to count
        tgt_TxB = tgt_TxB.at[pos].set(input_B)
        hist_BxH = jnp.concatenate([hist_BxH[:, 1:], self._bytes(input_B)[:, None]], 1)
        logits_BxV, base_cache = self.base.decode(input_B, base_cache, pos)
        logits_BxV = self._mix(logits_BxV, tables, self._rows(hist_BxH))
        return logits_BxV, (base_cache, tables, hist_BxH, rows_TxBxK, tgt_TxB)

    def zero_state(self, batch: int):
        tables = tuple(jnp.zeros((self.rows_of(k), V), jnp.float32) for k in self.orders)
        return self.base.zero_state(batch), tables, jnp.zeros((batch, self.history), jnp.int32)

    def init_cache(self, state: Any, batch: int):
        base_state, tables, hist = state
        k = len(self.orders)
        return (self.base.init_cache(base_state, batch), tables, hist,
                jnp.zeros((self.seq_len, batch, k), jnp.int32), jnp.full((self.seq_len, batch), V, jnp.int32))

    def next_state(self, cache: Any, state: Any):
        base_cache, tables, hist_BxH, rows_TxBxK, tgt_TxB = cache
        valid = (tgt_TxB < V).astype(jnp.float32)  # the stream's first input is BOS, not data
        tgt = self._bytes(tgt_TxB)
        tables = tuple(t.at[rows_TxBxK[..., i], tgt].add(valid) for i, t in enumerate(tables))
        return self.base.next_state(base_cache, state[0]), tables, hist_BxH
