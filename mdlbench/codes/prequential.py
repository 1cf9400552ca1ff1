"""Prequential (online) coding with a real range-coded bitstream, and its exact inverse.

The data is split into B contiguous streams. Step s codes the next T bytes of every stream
under the current parameters, then trains on them:

    for s in range(steps):
        for t in range(T):                              # inside one jitted program
            p_BxV = model.decode(prev_B, cache, t)      # KV-cache / recurrent step
            x_B   = host(s, t, p_BxV)                   # ordered host callback: code or decode
        params = optimiser_update(params, x_BxT)        # same program, after the scan

Bit-exact replay by construction: the encoder and the decoder run the *same* compiled step
function on the same inputs. The only difference is on the host side of the callback: the
encoder pushes the known bytes into the range coder and returns them, the decoder pops bytes
from the bitstream and returns those. So the probabilities each side sees are produced by the
same instructions from the same parameters; training-step logits are never used for coding.

Before coding, both sides run a *canary*: the same step on a fixed synthetic batch from the
initial parameters; the hash of its probabilities and updated parameters is stored in the
container, and the decoder refuses to start when its own canary differs.
"""

from __future__ import annotations

import dataclasses
import hashlib
import math
import time
from collections.abc import Callable
from typing import Any

import numpy as np

from mdlbench import config as config_lib
from mdlbench.coding import range_coder
from mdlbench.config import Config, OptimConfig
from mdlbench.errors import DecodeError, EnvironmentMismatch

LN2 = math.log(2.0)


@dataclasses.dataclass(frozen=True)
class Layout:
    """How n bytes map onto B streams of ``steps`` windows of T bytes (tail padded, masked)."""

    n: int
    batch: int
    seq_len: int

    @property
    def stream_len(self) -> int:
        return max(1, -(-self.n // self.batch))

    @property
    def steps(self) -> int:
        return -(-self.stream_len // self.seq_len) if self.n else 0

    @property
    def padded_len(self) -> int:
        return self.steps * self.seq_len

    def valid_BxN(self) -> np.ndarray:
        b = np.arange(self.batch)[:, None]
        i = np.arange(self.padded_len)[None, :]
        return (i < self.stream_len) & (b * self.stream_len + i < self.n)

    def to_streams(self, data: bytes) -> np.ndarray:
        flat = np.zeros(self.batch * self.stream_len, np.uint8)
        flat[: self.n] = np.frombuffer(data, np.uint8)
        out = np.zeros((self.batch, self.padded_len), np.uint8)
        out[:, : self.stream_len] = flat.reshape(self.batch, self.stream_len)
        return out

    def from_streams(self, streams_BxN: np.ndarray) -> bytes:
        return streams_BxN[:, : self.stream_len].reshape(-1)[: self.n].astype(np.uint8).tobytes()


class Host:
    """The host side of the ordered callback: encodes, decodes, or hashes (canary)."""

    def __init__(self, layout: Layout):
        self.layout = layout
        self.valid_BxN = layout.valid_BxN()
        self.mode = "idle"

    def start_canary(self) -> None:
        self.mode, self.hash = "canary", hashlib.sha256()

    def start_encode(self, data: bytes) -> None:
        self.mode, self.enc = "encode", range_coder.Encoder()
        self.data_BxN = self.layout.to_streams(data)

    def start_decode(self, payload: bytes) -> None:
        self.mode, self.dec = "decode", range_coder.Decoder(payload)
        self.out_BxN = np.zeros((self.layout.batch, self.layout.padded_len), np.uint8)

    def __call__(self, step, t, probs_BxV):
        step, t = int(step), int(t)
        b = self.layout.batch
        if self.mode == "canary":
            self.hash.update(np.asarray(probs_BxV).tobytes())
            return ((t * 31 + np.arange(b) * 17 + step * 7) % 256).astype(np.int32)
        pos = step * self.layout.seq_len + t
        valid_B = self.valid_BxN[:, pos]
        probs_BxV = np.asarray(probs_BxV)
        if self.mode == "encode":
            sym_B = self.data_BxN[:, pos].astype(np.int32)
            self.enc.push(sym_B[valid_B], probs_BxV[valid_B])
            return sym_B
        if self.mode == "decode":
            sym_B = np.zeros(b, np.int32)
            sym_B[valid_B] = self.dec.pop(probs_BxV[valid_B])
            self.out_BxN[:, pos] = sym_B
            return sym_B
        raise RuntimeError(f"host callback in mode {self.mode!r}")


def make_optimizer(o: OptimConfig):
    """The optax optimiser named by the config (a small registry, not a class tree)."""
    import optax

    lr = optax.linear_schedule(0.0, o.lr, o.warmup_steps) if o.warmup_steps else o.lr
    if o.name == "adam":
        base = optax.adam(lr, b1=o.b1, b2=o.b2, eps=o.eps)
    elif o.name == "adamw":
        base = optax.adamw(lr, b1=o.b1, b2=o.b2, eps=o.eps, weight_decay=o.weight_decay)
    elif o.name == "sgd":
        base = optax.sgd(lr)
    else:
        raise config_lib.ConfigError(f"unknown optimiser {o.name!r}; known: adam, adamw, sgd")
    return optax.chain(optax.clip_by_global_norm(o.clip_norm), base) if o.clip_norm > 0 else base


class Program:
    """What both sides build identically from the config: model, optimiser, initial
    parameters and the one compiled coding step."""

    def __init__(self, cfg: Config, layout: Layout, host: Host):
        import jax
        import jax.numpy as jnp
        from jax.experimental import io_callback

        from mdlbench import models

        self.cfg, self.layout, self.host = cfg, layout, host
        B, T = cfg.code.batch_size, cfg.code.seq_len
        model = models.build(cfg.model, T)
        tx = make_optimizer(cfg.optim)
        self.model, self.tx = model, tx

        def loss_fn(params, state, inputs_BxT, targets_BxT, mask_BxT):
            logits_BxTxV = model.apply(params, inputs_BxT, state).astype(jnp.float32)
            logp = jax.nn.log_softmax(logits_BxTxV)
            nll_BxT = -jnp.take_along_axis(logp, targets_BxT[..., None], -1)[..., 0]
            return (nll_BxT * mask_BxT).sum() / jnp.maximum(mask_BxT.sum(), 1.0)

        def step(params, opt_state, state, prev_B, step_idx, mask_BxT):
            def position(carry, t):
                cache, prev = carry
                logits_BxV, cache = model.apply(params, prev, cache, t, method="decode")
                logp_BxV = jax.nn.log_softmax(logits_BxV.astype(jnp.float32))
                sym_B = io_callback(host, jax.ShapeDtypeStruct((B,), jnp.int32), step_idx, t,
                                    jnp.exp(logp_BxV), ordered=True)
                lp_B = jnp.take_along_axis(logp_BxV, sym_B[:, None], 1)[:, 0]
                return (cache, sym_B), (sym_B, lp_B)

            cache = model.init_cache(state, B)
            (cache, last_B), (sym_TxB, lp_TxB) = jax.lax.scan(position, (cache, prev_B), jnp.arange(T))
            x_BxT = sym_TxB.T
            ideal_bits = -(lp_TxB.T * mask_BxT).sum() / LN2
            inputs_BxT = jnp.concatenate([prev_B[:, None], x_BxT[:, :-1]], axis=1)
            grad_fn = jax.value_and_grad(loss_fn)
            loss0 = None
            for _ in range(cfg.optim.updates_per_batch):
                loss, grads = grad_fn(params, state, inputs_BxT, x_BxT, mask_BxT)
                loss0 = loss if loss0 is None else loss0
                updates, opt_state = tx.update(grads, opt_state, params)
                params = jax.tree_util.tree_map(lambda p, u: p + u, params, updates)
            return params, opt_state, model.next_state(cache, state), last_B, ideal_bits, loss0

        self._step = jax.jit(step)
        self._init = lambda: model.init(jax.random.PRNGKey(cfg.seed), jnp.zeros((B, T), jnp.int32),
                                        model.zero_state(B))
        self._jnp = jnp

    def initial(self):
        """(params, opt_state, carried state, previous byte per stream) at the start."""
        params = self._init()
        from mdlbench.models.transformer import BOS

        return params, self.tx.init(params), self.model.zero_state(self.cfg.code.batch_size), \
            self._jnp.full((self.cfg.code.batch_size,), BOS, self._jnp.int32)

    def step(self, carry, s: int, mask_BxT: np.ndarray):
        params, opt_state, state, prev = carry
        params, opt_state, state, prev, ideal_bits, loss = self._step(
            params, opt_state, state, prev, np.int32(s), mask_BxT.astype(np.float32))
        return (params, opt_state, state, prev), float(ideal_bits), float(loss)

    def canary(self) -> str:
        """Hash of one step on a fixed synthetic batch: probabilities seen + updated parameters."""
        import jax

        self.host.start_canary()
        carry = self.initial()
        carry, _, _ = self.step(carry, 0, np.ones((self.layout.batch, self.cfg.code.seq_len), bool))
        h = self.host.hash
        for leaf in jax.tree_util.tree_leaves(carry):
            h.update(np.asarray(leaf).tobytes())
        self.host.mode = "idle"
        return h.hexdigest()

    def n_params(self) -> int:
        from mdlbench import models

        return models.count_params(self._init())


def _loop(prog: Program, on_step: Callable[[dict[str, Any]], None] | None, bits_now: Callable[[], int]):
    """The coding loop shared by encoder and decoder; returns (ideal_bits, seconds)."""
    layout, T = prog.layout, prog.cfg.code.seq_len
    valid_BxN = prog.host.valid_BxN
    carry = prog.initial()
    cum_ideal, seen, t0 = 0.0, 0, time.perf_counter()
    last_bits = 0
    for s in range(layout.steps):
        mask_BxT = valid_BxN[:, s * T:(s + 1) * T]
        carry, ideal, loss = prog.step(carry, s, mask_BxT)
        n = int(mask_BxT.sum())
        seen += n
        cum_ideal += ideal
        if on_step is not None:
            bits = bits_now()
            on_step({
                "step": s, "bytes_seen": seen, "step_bytes": n,
                "code/ideal_bits": ideal, "code/ideal_bits_per_byte": ideal / max(n, 1),
                "code/bits": bits - last_bits, "code/cum_ideal_bits": cum_ideal, "code/cum_bits": bits,
                "code/cum_bits_per_byte": bits / max(seen, 1), "train/loss_nats": loss,
                "time/elapsed_s": time.perf_counter() - t0,
            })
            last_bits = bits
    return cum_ideal, time.perf_counter() - t0


@dataclasses.dataclass
class EncodeResult:
    payload: bytes
    header: dict[str, Any]
    ideal_bits: float
    encode_s: float
    n_params: int


def encode(cfg: Config, data: bytes, data_info: dict[str, Any],
           on_step: Callable[[dict[str, Any]], None] | None = None) -> EncodeResult:
    """Codes ``data`` prequentially; returns the payload and the container header."""
    import jax

    from mdlbench.coding import env, program

    layout = Layout(len(data), cfg.code.batch_size, cfg.code.seq_len)
    host = Host(layout)
    prog = Program(cfg, layout, host)
    fingerprint = env.fingerprint(jax.default_backend())
    canary = prog.canary()
    host.start_encode(data)
    ideal_bits, seconds = _loop(prog, on_step, host.enc.num_bits)
    payload = host.enc.finish()
    cfg_dict = config_lib.to_dict(cfg)
    header = {
        "format": "mdlbench.prequential",
        "config": cfg_dict,
        "config_sha256": config_lib.config_hash(cfg),
        "program": {"source_sha256": program.source_sha256(), "bits": program.program_bits(cfg_dict)},
        "env": fingerprint,
        "canary_sha256": canary,
        "data": {**data_info, "bytes": len(data), "sha256": hashlib.sha256(data).hexdigest()},
        "layout": {"streams": layout.batch, "seq_len": layout.seq_len, "stream_len": layout.stream_len,
                   "steps": layout.steps},
        "coder": range_coder.NAME,
        "ideal_bits": ideal_bits,
    }
    return EncodeResult(payload, header, ideal_bits, seconds, prog.n_params())


def decode(header: dict[str, Any], payload: bytes,
           on_step: Callable[[dict[str, Any]], None] | None = None) -> tuple[bytes, float]:
    """Replays the training and decodes; returns (data, seconds). The caller must have pinned
    the environment (``mdlbench.coding.env.pin``) before JAX was imported."""
    import jax

    from mdlbench.coding import env, program

    env.check(header["env"], env.fingerprint(jax.default_backend()))
    if header["program"]["source_sha256"] != program.source_sha256():
        raise EnvironmentMismatch(
            "this container was made by different mdlbench source code (program sha256 "
            f"{header['program']['source_sha256'][:12]}..., here {program.source_sha256()[:12]}...); "
            "decode it with the commit that made it")
    cfg = config_lib.from_dict(header["config"])
    layout = Layout(int(header["data"]["bytes"]), cfg.code.batch_size, cfg.code.seq_len)
    host = Host(layout)
    prog = Program(cfg, layout, host)
    if prog.canary() != header["canary_sha256"]:
        raise EnvironmentMismatch(
            "canary mismatch: one coding + training step on a fixed batch gives different bits here "
            "than on the encoder's machine, so decoding would fail; use the recorded environment")
    host.start_decode(payload)
    _, seconds = _loop(prog, on_step, lambda: 0)
    data = layout.from_streams(host.out_BxN)
    got = hashlib.sha256(data).hexdigest()
    if got != header["data"]["sha256"]:
        raise DecodeError(f"decoded data sha256 {got[:16]}... differs from the recorded "
                          f"{header['data']['sha256'][:16]}...; nothing was written")
    return data, seconds
