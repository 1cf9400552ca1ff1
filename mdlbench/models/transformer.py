"""A causal byte-level Transformer with a KV-cache decoding path.

Two entry points share one set of parameters:
  * ``__call__`` runs the full causal forward on a window (training);
  * ``decode`` advances one position with a KV cache (coding).
The two paths are NOT bit-identical (different reduction orders); that is harmless because
encoder and decoder both code with ``decode`` only, inside the same compiled program.
"""

from __future__ import annotations

from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

BOS = 256  # input-only token that starts the very first window


def rotate(x_BxTxHxDh, pos_T):
    """Rotary position encoding: rotates feature pairs of q or k by position-dependent angles,
    so that q·k depends on the positions only through their offset."""
    half = x_BxTxHxDh.shape[-1] // 2
    freq_F = 10000.0 ** (-jnp.arange(half, dtype=jnp.float32) / half)
    ang_TxF = pos_T.astype(jnp.float32)[:, None] * freq_F[None, :]
    cos, sin = jnp.cos(ang_TxF)[:, None, :], jnp.sin(ang_TxF)[:, None, :]  # Tx1xF, broadcast over heads
    x1, x2 = x_BxTxHxDh[..., :half], x_BxTxHxDh[..., half:]
    return jnp.concatenate([x1 * cos - x2 * sin, x1 * sin + x2 * cos], axis=-1)


class Block(nn.Module):
    """Pre-LayerNorm block: causal self-attention then a GELU MLP."""

    d_model: int
    n_heads: int
    d_ff: int
    rope: bool = False

    def setup(self):
        init = nn.initializers.normal(0.02)
        self.ln1 = nn.LayerNorm()
        self.qkv = nn.Dense(3 * self.d_model, kernel_init=init)
        self.proj = nn.Dense(self.d_model, kernel_init=init)
        self.ln2 = nn.LayerNorm()
        self.fc1 = nn.Dense(self.d_ff, kernel_init=init)
        self.fc2 = nn.Dense(self.d_model, kernel_init=init)

    def _split(self, x):
        *lead, _ = x.shape
        h = self.n_heads
        q, k, v = jnp.split(self.qkv(x), 3, axis=-1)
        shape = (*lead, h, self.d_model // h)
        return q.reshape(shape), k.reshape(shape), v.reshape(shape)

    def _mlp(self, x):
        return x + self.fc2(nn.gelu(self.fc1(self.ln2(x))))

    def __call__(self, x_BxTxD):
        b, t, d = x_BxTxD.shape
        q, k, v = self._split(self.ln1(x_BxTxD))  # BxTxHxDh
        if self.rope:
            pos_T = jnp.arange(t)
            q, k = rotate(q, pos_T), rotate(k, pos_T)
        scale = (d // self.n_heads) ** -0.5
        att_BxHxTxT = jnp.einsum("bqhd,bkhd->bhqk", q, k) * scale
        causal_TxT = jnp.tril(jnp.ones((t, t), bool))
        att_BxHxTxT = jnp.where(causal_TxT, att_BxHxTxT, -1e30)
        w = jax.nn.softmax(att_BxHxTxT, axis=-1)
        y = jnp.einsum("bhqk,bkhd->bqhd", w, v).reshape(b, t, d)
        return self._mlp(x_BxTxD + self.proj(y))

    def decode(self, x_BxD, cache: dict[str, jax.Array], pos):
        b, d = x_BxD.shape
        q, k, v = self._split(self.ln1(x_BxD))  # BxHxDh
        if self.rope:
            pos_1 = jnp.reshape(pos, (1,))
            q, k = rotate(q[:, None], pos_1)[:, 0], rotate(k[:, None], pos_1)[:, 0]
        k_BxTxHxDh = jax.lax.dynamic_update_slice_in_dim(cache["k"], k[:, None], pos, axis=1)
        v_BxTxHxDh = jax.lax.dynamic_update_slice_in_dim(cache["v"], v[:, None], pos, axis=1)
        scale = (d // self.n_heads) ** -0.5
        att_BxHxT = jnp.einsum("bhd,bkhd->bhk", q, k_BxTxHxDh) * scale
        seen_T = jnp.arange(k_BxTxHxDh.shape[1]) <= pos
        att_BxHxT = jnp.where(seen_T, att_BxHxT, -1e30)
        w = jax.nn.softmax(att_BxHxT, axis=-1)
        y = jnp.einsum("bhk,bkhd->bhd", w, v_BxTxHxDh).reshape(b, d)
        return self._mlp(x_BxD + self.proj(y)), {"k": k_BxTxHxDh, "v": v_BxTxHxDh}


class Transformer(nn.Module):
    """Byte-level causal Transformer over windows of ``max_len`` bytes, with learned absolute
    positions or (``rope=True``) rotary relative positions.

    The coding state carried across windows is only the previous byte (the first input of
    the next window); attention context restarts every window.
    """

    d_model: int
    n_layers: int
    n_heads: int
    d_ff: int
    max_len: int
    rope: bool = False
    vocab: int = 256

    def setup(self):
        init = nn.initializers.normal(0.02)
        self.embed = nn.Embed(self.vocab + 1, self.d_model, embedding_init=init)
        # Rotary models carry no absolute position table: positions enter only through q and k.
        if not self.rope:
            self.pos = self.param("pos", init, (self.max_len, self.d_model))
        self.blocks = [Block(self.d_model, self.n_heads, self.d_ff, self.rope) for _ in range(self.n_layers)]
        self.ln_f = nn.LayerNorm()
        self.head = nn.Dense(self.vocab, kernel_init=init)

    def __call__(self, inputs_BxT, state: Any = None):
        """Full causal forward; ``inputs_BxT[:, 0]`` is the previous window's last byte (or BOS)."""
        x = self.embed(inputs_BxT)
        if not self.rope:
            x = x + self.pos[: inputs_BxT.shape[1]]
        for blk in self.blocks:
            x = blk(x)
        return self.head(self.ln_f(x))

    def decode(self, input_B, cache: Any, pos):
        """One position of the window with a KV cache; returns logits_BxV and the new cache."""
        x = self.embed(input_B)
        if not self.rope:
            x = x + self.pos[pos]
        new = []
        for blk, c in zip(self.blocks, cache):
            x, c = blk.decode(x, c, pos)
            new.append(c)
        return self.head(self.ln_f(x)), new

    # State handling needs no parameters; these run on the unbound module.
    def zero_state(self, batch: int):
        return ()

    def init_cache(self, state: Any, batch: int):
        dh = self.d_model // self.n_heads
        z = jnp.zeros((batch, self.max_len, self.n_heads, dh), jnp.float32)
        return [{"k": z, "v": z} for _ in range(self.n_layers)]

    def next_state(self, cache: Any, state: Any):
        return state
