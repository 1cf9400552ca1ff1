"""A causal byte-level Transformer with a KV-cache coding path and cross-window memory.

Two entry points share one set of parameters:
  * ``forward`` / ``__call__`` run the full causal forward on a window (training);
  * ``decode`` advances one position with a KV cache (coding).
The two paths are NOT bit-identical (different reduction orders); that is harmless because
encoder and decoder both code with ``decode`` only, inside the same compiled program.

Memory across windows (``context`` > 0, rotary positions only). The carried state holds, per
layer, the keys and values of the last ``context`` positions (Transformer-XL style), so every
coded byte attends to up to ``context`` bytes before its window as well as to the window so far.
The coding path fills the memory from its own KV cache after each window; the training forward
attends to the same memory as a constant (no gradient flows into the past). Memory entries were
computed under the parameters of the step that coded them: both coder sides compute exactly
that, so replay stays exact by construction (the memory is just more carried state, like an
LSTM's (h, c)). Keys are stored already rotated, in a frame where the window starts at position
``context``; after each window the kept keys are rotated back by T so the frame moves with it.
"""

from __future__ import annotations

from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

BOS = 256  # input-only token that starts the very first window


def rotate(x_BxTxHxDh, pos_T):
    """Rotary position encoding: rotates feature pairs of q or k by position-dependent angles,
    so that q·k depends on the positions only through their offset. ``pos_T`` may be negative
    (moving stored keys to a new frame)."""
    half = x_BxTxHxDh.shape[-1] // 2
    freq_F = 10000.0 ** (-jnp.arange(half, dtype=jnp.float32) / half)
    ang_TxF = pos_T.astype(jnp.float32)[:, None] * freq_F[None, :]
    cos, sin = jnp.cos(ang_TxF)[:, None, :], jnp.sin(ang_TxF)[:, None, :]  # Tx1xF, broadcast over heads
    x1, x2 = x_BxTxHxDh[..., :half], x_BxTxHxDh[..., half:]
    return jnp.concatenate([x1 * cos - x2 * sin, x1 * sin + x2 * cos], axis=-1)


class Block(nn.Module):
    """Pre-LayerNorm block: causal self-attention (optionally over a memory) then a GELU MLP."""

    d_model: int
    n_heads: int
    d_ff: int
    rope: bool = False
    alibi: bool = False

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

    def _recency(self, dist):
        """ALiBi: head h subtracts slope_h x distance from its logits (slopes 2^(-8(h+1)/H)), so
        attention starts local and a long memory does not dilute the nearby bytes."""
        slope_H = 2.0 ** (-8.0 * (jnp.arange(self.n_heads, dtype=jnp.float32) + 1) / self.n_heads)
        return -slope_H.reshape((-1,) + (1,) * dist.ndim) * dist.astype(jnp.float32)

    def _mlp(self, x):
        return x + self.fc2(nn.gelu(self.fc1(self.ln2(x))))

    def __call__(self, x_BxTxD, mem=None, fill=None, first_valid=None):
        """Window forward. With ``mem`` ({"k", "v"}: BxCxHxDh, rotated in the window's frame) of
        which the last ``fill`` positions are valid, attends over memory + window; returns the
        block output and this window's (rotated) keys and values."""
        b, t, d = x_BxTxD.shape
        q, k, v = self._split(self.ln1(x_BxTxD))  # BxTxHxDh
        c = 0 if mem is None else mem["k"].shape[1]
        if self.rope:
            pos_T = c + jnp.arange(t)
            q, k = rotate(q, pos_T), rotate(k, pos_T)
        keys, vals = k, v
        allowed_TxS = jnp.tril(jnp.ones((t, t), bool))
        if first_valid is not None:  # a prefill over a context whose first positions hold no data yet
            allowed_TxS = allowed_TxS & (jnp.arange(t) >= first_valid)[None, :]
        if mem is not None:
            keys = jnp.concatenate([jax.lax.stop_gradient(mem["k"]), k], axis=1)
            vals = jnp.concatenate([jax.lax.stop_gradient(mem["v"]), v], axis=1)
            seen_C = jnp.arange(c) >= c - fill
            allowed_TxS = jnp.concatenate([jnp.broadcast_to(seen_C, (t, c)), allowed_TxS], axis=1)
        scale = (d // self.n_heads) ** -0.5
        att_BxHxTxS = jnp.einsum("bqhd,bkhd->bhqk", q, keys) * scale
        if self.alibi:
            dist_TxS = (c + jnp.arange(t))[:, None] - jnp.arange(keys.shape[1])[None, :]
            att_BxHxTxS = att_BxHxTxS + self._recency(dist_TxS)
        att_BxHxTxS = jnp.where(allowed_TxS, att_BxHxTxS, -1e30)
        w = jax.nn.softmax(att_BxHxTxS, axis=-1)
        y = jnp.einsum("bhqk,bkhd->bqhd", w, vals).reshape(b, t, d)
        return self._mlp(x_BxTxD + self.proj(y)), k, v

    def decode(self, x_BxD, cache: dict[str, jax.Array], pos, first_seen):
        """One position: writes its key/value at cache index ``pos`` and attends over cache
        indices ``first_seen .. pos`` (memory, then the window so far)."""
        b, d = x_BxD.shape
        q, k, v = self._split(self.ln1(x_BxD))  # BxHxDh
        if self.rope:
            pos_1 = jnp.reshape(pos, (1,))
            q, k = rotate(q[:, None], pos_1)[:, 0], rotate(k[:, None], pos_1)[:, 0]
        k_BxSxHxDh = jax.lax.dynamic_update_slice_in_dim(cache["k"], k[:, None], pos, axis=1)
        v_BxSxHxDh = jax.lax.dynamic_update_slice_in_dim(cache["v"], v[:, None], pos, axis=1)
        scale = (d // self.n_heads) ** -0.5
        att_BxHxS = jnp.einsum("bhd,bkhd->bhk", q, k_BxSxHxDh) * scale
        idx_S = jnp.arange(k_BxSxHxDh.shape[1])
        if self.alibi:
            att_BxHxS = att_BxHxS + self._recency(pos - idx_S)
        att_BxHxS = jnp.where((idx_S <= pos) & (idx_S >= first_seen), att_BxHxS, -1e30)
        w = jax.nn.softmax(att_BxHxS, axis=-1)
        y = jnp.einsum("bhk,bkhd->bhd", w, v_BxSxHxDh).reshape(b, d)
        return self._mlp(x_BxD + self.proj(y)), {"k": k_BxSxHxDh, "v": v_BxSxHxDh}


class Transformer(nn.Module):
    """Byte-level causal Transformer over windows of ``max_len`` bytes, with learned absolute
    positions or (``rope=True``) rotary relative positions, and (``context`` > 0, rotary only)
    attention over the keys/values of the last ``context`` bytes before the window.

    Carried state: ``()`` without memory; with memory ``(mem, fill)``: ``mem`` a list over
    layers of {"k", "v"} (BxCxHxDh) and ``fill`` (int32) how many of the C entries hold data.
    """

    d_model: int
    n_layers: int
    n_heads: int
    d_ff: int
    max_len: int
    rope: bool = False
    context: int = 0
    memory: str = "kv"
    alibi: bool = False
    vocab: int = 256

    def setup(self):
        init = nn.initializers.normal(0.02)
        self.embed = nn.Embed(self.vocab + 1, self.d_model, embedding_init=init)
        # Rotary models carry no absolute position table: positions enter only through q and k.
        if not self.rope:
            self.pos = self.param("pos", init, (self.max_len, self.d_model))
        self.blocks = [Block(self.d_model, self.n_heads, self.d_ff, self.rope, self.alibi) for _ in range(self.n_layers)]
        self.ln_f = nn.LayerNorm()
        self.head = nn.Dense(self.vocab, kernel_init=init)

    def forward(self, inputs_BxT, state: Any = None):
        """Full causal forward; ``inputs_BxT[:, 0]`` is the previous window's last byte (or BOS).

        Returns (logits_BxTxV, next_state): the state after this window as the training path
        computes it (used by the training-loss estimate, never by a coder)."""
        x = self.embed(inputs_BxT)
        if not self.rope:
            x = x + self.pos[: inputs_BxT.shape[1]]
        mem, fill = state if self.context else (None, None)
        if self.context and self.memory == "bytes":
            ctx_BxC = mem
            mem = self._prefill(ctx_BxC, fill)
        kv = []
        for i, blk in enumerate(self.blocks):
            x, k, v = blk(x, None if mem is None else mem[i], fill)
            kv.append({"k": k, "v": v})
        logits = self.head(self.ln_f(x))
        if not self.context:
            return logits, state
        if self.memory == "bytes":
            return logits, self._keep(ctx_BxC, inputs_BxT, fill)
        full = [{"k": jnp.concatenate([m["k"], n["k"]], 1), "v": jnp.concatenate([m["v"], n["v"]], 1)}
                for m, n in zip(mem, kv)]
        return logits, self._shift(full, fill, inputs_BxT.shape[1])

    def __call__(self, inputs_BxT, state: Any = None):
        return self.forward(inputs_BxT, state)[0]

    def decode(self, input_B, cache: Any, pos):
        """One position of the window with a KV cache; returns logits_BxV and the new cache."""
        x = self.embed(input_B)
        if not self.rope:
            x = x + self.pos[pos]
        if self.context and self.memory == "bytes":
            layers, fill, ctx_BxC, in_TxB = cache
            in_TxB = in_TxB.at[pos].set(input_B)  # the next window's context is made of these inputs
        else:
            layers, fill = (cache, None) if not self.context else cache
        first_seen = 0 if not self.context else self.context - fill
        at = pos + self.context  # window positions follow the memory in the cache
        new = []
        for blk, c in zip(self.blocks, layers):
            x, c = blk.decode(x, c, at, first_seen)
            new.append(c)
        if self.context and self.memory == "bytes":
            return self.head(self.ln_f(x)), (new, fill, ctx_BxC, in_TxB)
        return self.head(self.ln_f(x)), (new if not self.context else (new, fill))

    # State handling needs no parameters; these run on the unbound module.
    def zero_state(self, batch: int):
        if not self.context:
            return ()
        if self.memory == "bytes":
            return jnp.zeros((batch, self.context), jnp.int32), jnp.zeros((), jnp.int32)
        dh = self.d_model // self.n_heads
        z = jnp.zeros((batch, self.context, self.n_heads, dh), jnp.float32)
        return [{"k": z, "v": z} for _ in range(self.n_layers)], jnp.zeros((), jnp.int32)

    def init_cache(self, state: Any, batch: int):
        dh = self.d_model // self.n_heads
        z = jnp.zeros((batch, self.max_len, self.n_heads, dh), jnp.float32)
        if not self.context:
            return [{"k": z, "v": z} for _ in range(self.n_layers)]
        mem, fill = state
        if self.memory == "bytes":
            ctx_BxC = mem
            mem = self._prefill(ctx_BxC, fill)
        layers = [{"k": jnp.concatenate([m["k"], z], 1), "v": jnp.concatenate([m["v"], z], 1)} for m in mem]
        if self.memory == "bytes":
            return layers, fill, ctx_BxC, jnp.zeros((self.max_len, batch), jnp.int32)
        return layers, fill

    def next_state(self, cache: Any, state: Any):
        if not self.context:
            return state
        if self.memory == "bytes":
            _, fill, ctx_BxC, in_TxB = cache
            return self._keep(ctx_BxC, in_TxB.T, fill)
        layers, fill = cache
        return self._shift(layers, fill, self.max_len)

    def _prefill(self, ctx_BxC, fill):
        """Keys/values of the context bytes under the *current* parameters (a forward pass over
        them, no gradient), so the memory is never stale."""
        c = self.context
        x = self.embed(ctx_BxC)
        mem = []
        for blk in self.blocks:
            x, k, v = blk(x, first_valid=c - fill)
            mem.append({"k": k, "v": v})
        return jax.lax.stop_gradient(mem)

    def _keep(self, ctx_BxC, inputs_BxT, fill):
        """The next window's context: the last ``context`` inputs of context + window."""
        t = inputs_BxT.shape[1]
        ctx = jnp.concatenate([ctx_BxC, inputs_BxT.astype(jnp.int32)], 1)[:, -self.context:]
        return ctx, jnp.minimum(fill + t, self.context).astype(jnp.int32)

    def _shift(self, layers, fill, t: int):
        """Keeps the last ``context`` of memory + window (C + t entries) and moves their keys to
        the next window's frame (rotated back by t)."""
        c = self.context
        shift_C = jnp.full((c,), -t)
        mem = [{"k": rotate(layer["k"][:, -c:], shift_C), "v": layer["v"][:, -c:]} for layer in layers]
        return mem, jnp.minimum(fill + t, c).astype(jnp.int32)
