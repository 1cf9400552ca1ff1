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

The bitstream is cut into *segments*: every ``code.segment_steps`` steps the range coder is
sealed and a fresh one started. A segment boundary is where a run can be checkpointed (the
coder's whole state is then the sealed bytes) and resumed byte-identically after a kill.

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
from mdlbench.coding import container, range_coder
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

    # Per-step views: what the coder touches at step s. Nothing proportional to n is built, so
    # data of any size (a memory-mapped file) is streamed window by window.
    def valid_window(self, s: int) -> np.ndarray:
        """valid_BxT: which positions of step ``s`` hold data (the tail is padding)."""
        i = s * self.seq_len + np.arange(self.seq_len)[None, :]
        b = np.arange(self.batch)[:, None]
        return (i < self.stream_len) & (b * self.stream_len + i < self.n)

    def offsets(self, s: int, t: int) -> np.ndarray:
        """offset_B: where position ``t`` of step ``s`` of every stream sits in the data."""
        return np.arange(self.batch) * self.stream_len + s * self.seq_len + t

    def window(self, data, s: int) -> np.ndarray:
        """window_BxT (uint8) of step ``s`` read from ``data`` (bytes or a uint8 array / memmap)."""
        out = np.zeros((self.batch, self.seq_len), np.uint8)
        for b in range(self.batch):
            lo = b * self.stream_len + s * self.seq_len
            hi = min(lo + self.seq_len, (b + 1) * self.stream_len, self.n)
            if hi > lo:
                out[b, : hi - lo] = np.frombuffer(data[lo:hi], np.uint8) if isinstance(data, (bytes, bytearray)) \
                    else np.asarray(data[lo:hi], np.uint8)
        return out


class Host:
    """The host side of the ordered callback: encodes, decodes, or hashes (canary)."""

    def __init__(self, layout: Layout):
        self.layout = layout
        self.mode = "idle"
        self._step = -1
        self.error: str | None = None  # set by a failed decode; raised by the loop, not in the callback

    def _at(self, step: int) -> None:
        """Loads step ``step``'s validity mask (and, encoding, its data window) once per step."""
        if step != self._step:
            self._step = step
            self.valid_BxT = self.layout.valid_window(step)
            if self.mode == "encode":
                self.data_BxT = self.layout.window(self.data, step)

    def start_canary(self) -> None:
        self.mode, self.hash = "canary", hashlib.sha256()

    def start_encode(self, data: bytes, sealed: bytes = b"", segments: list[int] | None = None) -> None:
        """Starts (or, with the sealed segments of a checkpoint, resumes) encoding."""
        self.mode, self.enc = "encode", range_coder.Encoder()
        self.sealed, self.segments = bytearray(sealed), list(segments or [])
        self.data, self._step = data, -1

    def seal(self) -> None:
        """Ends the current segment of the bitstream and starts the next."""
        seg = self.enc.finish()
        self.sealed += seg
        self.segments.append(len(seg))
        self.enc = range_coder.Encoder()

    def bits(self) -> int:
        """Bits of the bitstream so far (sealed segments + the open one, in whole words)."""
        return 8 * len(self.sealed) + self.enc.num_bits()

    def start_decode(self, payload: bytes, segments: list[int], out) -> None:
        """Starts decoding into ``out`` (a writable uint8 array of n bytes, e.g. a memmap)."""
        if sum(segments) != len(payload):
            raise DecodeError(f"segment table covers {sum(segments)} bytes but the payload has {len(payload)}")
        self.mode, self.payload, self.segments = "decode", payload, list(segments)
        self.segment, self.offset = -1, 0
        self.next_segment()
        self.out, self._step = out, -1

    def next_segment(self) -> None:
        self.segment += 1
        if self.segment >= len(self.segments):
            raise DecodeError(f"the bitstream has {len(self.segments)} segments but decoding needs more")
        n = self.segments[self.segment]
        self.dec = range_coder.Decoder(self.payload[self.offset:self.offset + n])
        self.offset += n

    def __call__(self, step, t, probs_BxV):
        step, t = int(step), int(t)
        b = self.layout.batch
        if self.mode == "canary":
            self.hash.update(np.asarray(probs_BxV).tobytes())
            return ((t * 31 + np.arange(b) * 17 + step * 7) % 256).astype(np.int32)
        self._at(step)
        valid_B = self.valid_BxT[:, t]
        probs_BxV = np.asarray(probs_BxV)
        if self.mode == "encode":
            sym_B = self.data_BxT[:, t].astype(np.int32)
            self.enc.push(sym_B[valid_B], probs_BxV[valid_B])
            return sym_B
        if self.mode == "decode":
            sym_B = np.zeros(b, np.int32)
            if self.error is not None:  # already failed: finish the step quietly, the loop raises
                return sym_B
            try:
                sym_B[valid_B] = self.dec.pop(probs_BxV[valid_B])
            except Exception as e:  # noqa: BLE001 - a corrupt bitstream; raising here would print JAX's traceback
                self.error = f"the bitstream cannot be decoded at step {step}, position {t}: {e}"
                return sym_B
            self.out[self.layout.offsets(step, t)[valid_B]] = sym_B[valid_B]
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
            logits_BxTxV, next_state = model.apply(params, inputs_BxT, state, method="forward")
            logp = jax.nn.log_softmax(logits_BxTxV.astype(jnp.float32))
            nll_BxT = -jnp.take_along_axis(logp, targets_BxT[..., None], -1)[..., 0]
            return (nll_BxT * mask_BxT).sum() / jnp.maximum(mask_BxT.sum(), 1.0), next_state

        def code(params, state, prev_B, step_idx, mask_BxT):
            """Codes (or decodes) one window of every stream under the current parameters."""
            def position(carry, t):
                cache, prev = carry
                logits_BxV, cache = model.apply(params, prev, cache, t, method="decode")
                logp_BxV = jax.nn.log_softmax(logits_BxV.astype(jnp.float32))
                sym_B = io_callback(host, jax.ShapeDtypeStruct((B,), jnp.int32), step_idx, t,
                                    jnp.exp(logp_BxV), ordered=True)
                lp_B = jnp.take_along_axis(logp_BxV, sym_B[:, None], 1)[:, 0]
                return (cache, sym_B), (sym_B, lp_B)

            # Parameters may enter the cache (a Transformer recomputing its memory's keys/values).
            cache = model.apply(params, state, B, method="init_cache")
            (cache, last_B), (sym_TxB, lp_TxB) = jax.lax.scan(position, (cache, prev_B), jnp.arange(T))
            ideal_bits = -(lp_TxB.T * mask_BxT).sum() / LN2
            return sym_TxB.T, ideal_bits, last_B, model.next_state(cache, state)

        def train(params, opt_state, state, prev_B, x_BxT, mask_BxT):
            """``updates_per_batch`` optimiser steps on the window just coded. Also returns the
            loss before the first update (mean nats per byte: Rae's estimate sums it) and the
            carried state after the window as the training forward computes it."""
            inputs_BxT = jnp.concatenate([prev_B[:, None], x_BxT[:, :-1]], axis=1)
            grad_fn = jax.value_and_grad(loss_fn, has_aux=True)
            loss0 = state0 = None
            for _ in range(cfg.optim.updates_per_batch):
                (loss, next_state), grads = grad_fn(params, state, inputs_BxT, x_BxT, mask_BxT)
                if loss0 is None:
                    loss0, state0 = loss, next_state
                updates, opt_state = tx.update(grads, opt_state, params)
                params = jax.tree_util.tree_map(lambda p, u: p + u, params, updates)
            return params, opt_state, loss0, state0

        def plain_train(params, opt_state, state, prev_B, x_BxT, mask_BxT):
            params, opt_state, loss0, _ = train(params, opt_state, state, prev_B, x_BxT, mask_BxT)
            return params, opt_state, loss0

        def estimate(params, opt_state, state, prev_B, x_BxT, mask_BxT):
            """Standard training that carries the state forward: the training-loss estimate."""
            params, opt_state, loss0, next_state = train(params, opt_state, state, prev_B, x_BxT, mask_BxT)
            return params, opt_state, next_state, x_BxT[:, -1], loss0

        def step(params, opt_state, state, prev_B, step_idx, mask_BxT):
            x_BxT, ideal_bits, last_B, next_state = code(params, state, prev_B, step_idx, mask_BxT)
            params, opt_state, loss0 = plain_train(params, opt_state, state, prev_B, x_BxT, mask_BxT)
            return params, opt_state, next_state, last_B, ideal_bits, loss0

        n_dev = cfg.code.devices
        if n_dev == 1:
            # One fused program per step: coding scan, then the training update.
            self._step = jax.jit(step)
        else:
            # Data-parallel: the ordered coding callback runs on the first device; the update
            # splits the streams over n_dev devices with a fixed sharding (the gradient
            # all-reduce is then the same reduction on every replay with that device count).
            from jax.sharding import Mesh, NamedSharding, PartitionSpec

            devices = jax.devices()
            if len(devices) < n_dev:
                raise EnvironmentMismatch(
                    f"code.devices={n_dev} but JAX sees {len(devices)} device(s) here "
                    "(on CPU: XLA_FLAGS=--xla_force_host_platform_device_count=N)")
            mesh = Mesh(np.array(devices[:n_dev]), ("data",))
            rep, split = NamedSharding(mesh, PartitionSpec()), NamedSharding(mesh, PartitionSpec("data"))
            first = jax.sharding.SingleDeviceSharding(devices[0])
            code_j = jax.jit(code)
            train_j = jax.jit(plain_train, in_shardings=(rep, rep, rep, split, split, split),
                              out_shardings=(rep, rep, rep))
            state_sharding = rep  # carried model state stays replicated (small)

            def two_programs(params, opt_state, state, prev_B, step_idx, mask_BxT):
                on_first = lambda tree: jax.device_put(tree, first)
                x_BxT, ideal_bits, last_B, next_state = code_j(on_first(params), on_first(state),
                                                                on_first(prev_B), step_idx, on_first(mask_BxT))
                params, opt_state, loss0 = train_j(params, opt_state, jax.device_put(state, rep),
                                                   jax.device_put(prev_B, split), jax.device_put(x_BxT, split),
                                                   jax.device_put(mask_BxT, split))
                return params, opt_state, jax.device_put(next_state, state_sharding), last_B, ideal_bits, loss0

            self._step = two_programs
            self._place = lambda carry: jax.device_put(carry, rep)
        # The optimiser updates alone, for the "plain training" a coder's cost is compared with.
        self._train_only = jax.jit(plain_train)
        self._estimate = jax.jit(estimate)
        self._init = lambda: model.init(jax.random.PRNGKey(cfg.seed), jnp.zeros((B, T), jnp.int32),
                                        model.zero_state(B))
        self._jnp = jnp

    def initial(self):
        """(params, opt_state, carried state, previous byte per stream) at the start."""
        params = self._init()
        from mdlbench.models.transformer import BOS

        carry = (params, self.tx.init(params), self.model.zero_state(self.cfg.code.batch_size),
                 self._jnp.full((self.cfg.code.batch_size,), BOS, self._jnp.int32))
        return self.normalize(carry)

    def normalize(self, carry):
        """Plain, strongly typed arrays (as a checkpoint restores them), placed for the step.

        A fresh carry may hold weakly typed scalars; restored ones never do. Normalising both
        gives the compiled step the same input types either way, hence the same program."""
        import jax

        carry = jax.tree_util.tree_map(lambda x: self._jnp.asarray(np.asarray(x)), carry)
        return self._place(carry) if hasattr(self, "_place") else carry

    def step(self, carry, s: int, mask_BxT: np.ndarray):
        params, opt_state, state, prev = carry
        params, opt_state, state, prev, ideal_bits, loss = self._step(
            params, opt_state, state, prev, np.int32(s), mask_BxT.astype(np.float32))
        return (params, opt_state, state, prev), float(ideal_bits), float(loss)

    def train_only(self, carry, x_BxT: np.ndarray, mask_BxT: np.ndarray):
        """The training updates of one step without its coding pass (no callback, no decode
        scan); the carried model state is left as it is, which changes no arithmetic cost."""
        params, opt_state, state, prev = carry
        params, opt_state, loss = self._train_only(params, opt_state, state, prev, x_BxT.astype(np.int32),
                                                   mask_BxT.astype(np.float32))
        return (params, opt_state, state, self._jnp.asarray(x_BxT[:, -1].astype(np.int32))), float(loss)

    def estimate_step(self, carry, x_BxT: np.ndarray, mask_BxT: np.ndarray):
        """One step of the training-loss estimate: the same updates on the same window as the
        coder, no coding pass; returns the new carry and the pre-update loss (mean nats/byte)."""
        params, opt_state, state, prev = carry
        params, opt_state, state, prev, loss = self._estimate(params, opt_state, state, prev,
                                                              x_BxT.astype(np.int32), mask_BxT.astype(np.float32))
        return (params, opt_state, state, prev), float(loss)

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


def _loop(prog: Program, carry, cursor, on_step: Callable[[dict[str, Any]], None] | None,
          bits_now: Callable[[], int], at_boundary: Callable[[Any, Any], None]):
    """The coding loop shared by encoder and decoder, from ``cursor.step`` to the end.

    ``at_boundary(carry, cursor)`` runs after every step that ends a bitstream segment (except
    the last step); ``cursor`` then points at the next step. Updates ``cursor`` in place."""
    layout, every = prog.layout, prog.cfg.code.segment_steps
    t0, elapsed0 = time.perf_counter(), cursor.elapsed_s
    last_bits = bits_now()
    for s in range(cursor.step, layout.steps):
        mask_BxT = layout.valid_window(s)
        carry, ideal, loss = prog.step(carry, s, mask_BxT)
        if prog.host.error is not None:
            raise DecodeError(prog.host.error)
        n = int(mask_BxT.sum())
        cursor.step, cursor.bytes_seen, cursor.ideal_bits = s + 1, cursor.bytes_seen + n, cursor.ideal_bits + ideal
        cursor.estimate_bits += loss * n / LN2
        cursor.elapsed_s = elapsed0 + time.perf_counter() - t0
        if on_step is not None:
            bits = bits_now()
            on_step({
                "step": s, "bytes_seen": cursor.bytes_seen, "step_bytes": n,
                "code/ideal_bits": ideal, "code/ideal_bits_per_byte": ideal / max(n, 1),
                "code/bits": bits - last_bits, "code/cum_ideal_bits": cursor.ideal_bits, "code/cum_bits": bits,
                "code/cum_bits_per_byte": bits / max(cursor.bytes_seen, 1), "train/loss_nats": loss,
                "time/elapsed_s": cursor.elapsed_s,
            })
            last_bits = bits
        if (s + 1) % every == 0 and s + 1 < layout.steps:
            at_boundary(carry, cursor)
    return carry


@dataclasses.dataclass
class EncodeResult:
    """What an encode produced.

    Attributes:
      payload: the bitstream.
      header: the container header.
      ideal_bits: Σ −log2 p of the coded bytes under the coding probabilities.
      encode_s: coding-loop seconds.
      n_params: parameters of the model.
      estimate_bits: Σ of every step's pre-update training loss, in bits: Rae's estimate of
        the prequential length, computed from the training forward (not from the coder).
    """

    payload: bytes
    header: dict[str, Any]
    ideal_bits: float
    encode_s: float
    n_params: int
    estimate_bits: float = 0.0


@dataclasses.dataclass
class EstimateResult:
    """The training-loss estimate of a prequential code length (no bitstream exists).

    Attributes:
      ideal_bits: Σ over steps of the pre-update loss of the batch × its bytes, in bits: an
        *ideal* length, an estimate of what the prequential code would cost.
      train_s: seconds of the training loop.
      n_params: parameters of the model.
      steps: optimiser steps taken (each on one window of every stream).
      final_chunk_ideal_bits_per_byte: the estimate over the last ~10% of steps.
    """

    ideal_bits: float
    train_s: float
    n_params: int
    steps: int
    final_chunk_ideal_bits_per_byte: float | None = None


def estimate(cfg: Config, data, on_step: Callable[[dict[str, Any]], None] | None = None) -> EstimateResult:
    """Rae's estimate: standard online training with the same data order, windows, batches and
    optimiser as the real code, summing each batch's loss *before* the update on it.

    The carried state (LSTM state, n-gram counts, Transformer memory) advances through the
    training forward. Nothing here is a code: no coder runs, no container is written."""
    layout = Layout(len(data), cfg.code.batch_size, cfg.code.seq_len)
    host = Host(layout)
    prog = Program(cfg, layout, host)
    carry = prog.initial()
    total, seen = 0.0, 0
    tail_from, tail_bits, tail_bytes = layout.steps - max(1, layout.steps // 10), 0.0, 0
    t0 = time.perf_counter()
    for s in range(layout.steps):
        mask_BxT = layout.valid_window(s)
        carry, loss = prog.estimate_step(carry, layout.window(data, s), mask_BxT)
        n = int(mask_BxT.sum())
        bits = loss * n / LN2
        total, seen = total + bits, seen + n
        if s >= tail_from:  # the last ~10% of steps, as the real runs' final chunk
            tail_bits, tail_bytes = tail_bits + bits, tail_bytes + n
        if on_step is not None:
            on_step({"step": s, "bytes_seen": seen, "step_bytes": n, "estimate/ideal_bits": bits,
                     "estimate/cum_ideal_bits": total, "estimate/cum_ideal_bits_per_byte": total / max(seen, 1),
                     "train/loss_nats": loss, "time/elapsed_s": time.perf_counter() - t0})
    return EstimateResult(total, time.perf_counter() - t0, prog.n_params(), layout.steps,
                          tail_bits / tail_bytes if tail_bytes else None)


def encode(cfg: Config, data: bytes, data_info: dict[str, Any],
           on_step: Callable[[dict[str, Any]], None] | None = None, checkpoints=None) -> EncodeResult:
    """Codes ``data`` prequentially; returns the payload and the container header.

    With ``checkpoints`` (a :class:`mdlbench.checkpoint.Checkpoints`), resumes from the latest
    checkpoint if there is one and saves new ones at segment boundaries every
    ``code.checkpoint_s`` seconds."""
    import jax

    from mdlbench.checkpoint import Cursor
    from mdlbench.coding import env, program

    cfg_dict = config_lib.program_dict(cfg)
    # Measured before coding: the recorded program is the source that makes this payload.
    program_info = program.measure(program.PREQUENTIAL, cfg_dict)
    layout = Layout(len(data), cfg.code.batch_size, cfg.code.seq_len)
    host = Host(layout)
    prog = Program(cfg, layout, host)
    fingerprint = env.fingerprint(jax.default_backend())
    canary = prog.canary()
    carry, cursor, sealed = prog.initial(), Cursor(), b""
    restored = checkpoints.restore(carry) if checkpoints is not None else None
    if restored is not None:
        carry, cursor, sealed = restored
        carry = prog.normalize(carry)
    host.start_encode(data, sealed, cursor.segments)
    last_save = time.monotonic()

    def at_boundary(carry, cursor):
        nonlocal last_save
        host.seal()
        cursor.segments = list(host.segments)
        if checkpoints is not None and cfg.code.checkpoint_s >= 0 and \
                time.monotonic() - last_save >= cfg.code.checkpoint_s:
            checkpoints.save(carry, cursor, bytes(host.sealed))
            last_save = time.monotonic()

    _loop(prog, carry, cursor, on_step, host.bits, at_boundary)
    host.seal()
    payload = bytes(host.sealed)
    ideal_bits, seconds = cursor.ideal_bits, cursor.elapsed_s
    header = {
        "format": "mdlbench.prequential",
        "config": cfg_dict,
        "config_sha256": config_lib.config_hash(cfg),
        "program": program_info.header(),
        "env": fingerprint,
        "canary_sha256": canary,
        "data": {**data_info, "bytes": len(data), "sha256": container.sha256_hex(data)},
        "layout": {"streams": layout.batch, "seq_len": layout.seq_len, "stream_len": layout.stream_len,
                   "steps": layout.steps, "segments": list(host.segments)},
        "coder": range_coder.NAME,
        "ideal_bits": ideal_bits,
    }
    return EncodeResult(payload, header, ideal_bits, seconds, prog.n_params(), cursor.estimate_bits)


def decode(header: dict[str, Any], payload: bytes,
           on_step: Callable[[dict[str, Any]], None] | None = None, out=None) -> tuple[bytes | None, float]:
    """Replays the training and decodes; returns (data, seconds). The caller must have pinned
    the environment (``mdlbench.coding.env.pin``) before JAX was imported.

    With ``out`` (a writable uint8 array of ``header['data']['bytes']`` entries, e.g. a memmap
    of the output file) the data is written there position by position and ``None`` is
    returned in its place: decoding then needs no memory proportional to the data."""
    import jax

    from mdlbench.coding import env, program

    env.check(header["env"], env.fingerprint(jax.default_backend()))
    program.check(program.PREQUENTIAL, header.get("program"))
    cfg = config_lib.from_dict(header["config"])
    layout = Layout(int(header["data"]["bytes"]), cfg.code.batch_size, cfg.code.seq_len)
    host = Host(layout)
    prog = Program(cfg, layout, host)
    if prog.canary() != header["canary_sha256"]:
        raise EnvironmentMismatch(
            "canary mismatch: one coding + training step on a fixed batch gives different bits here "
            "than on the encoder's machine, so decoding would fail; use the recorded environment")
    from mdlbench.checkpoint import Cursor

    buf = np.zeros(layout.n, np.uint8) if out is None else out
    host.start_decode(payload, [int(n) for n in header["layout"]["segments"]], buf)
    cursor = Cursor()
    _loop(prog, prog.initial(), cursor, on_step, lambda: 0, lambda carry, cursor: host.next_segment())
    got = container.sha256_hex(buf)
    if got != header["data"]["sha256"]:
        raise DecodeError(f"decoded data sha256 {got[:16]}... differs from the recorded "
                          f"{header['data']['sha256'][:16]}...; nothing was written")
    return (buf.tobytes() if out is None else None), cursor.elapsed_s
