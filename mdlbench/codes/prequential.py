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

That is the host coder (``code.coder=host``, the default and the reference). With
``code.coder=device`` there is no callback: the step takes the data window (encoder) or the
segment's bytes and the decoder's per-stream words (decoder) as inputs, with a traced
``decoding`` flag, and codes every position itself (``mdlbench.coding.device_rans``):

        for t in range(T):
            p_BxV  = model.decode(prev_B, cache, t)
            f_BxV  = quantize(p_BxV, prec_BxT[:, t])    # integer tables, same on both sides
            got_B  = decode_step(words_B, buf_BxN, f_BxV)   # pops from the segment's bytes
            x_B    = where(decoding, got_B, known_BxT[:, t])
            start_B, f_B = symbol_ranges(f_BxV, x_B)    # the encoder's output

The encoder collects ``(start, f)`` on the host and runs the rANS encoder over the whole
segment when it is sealed (rANS codes backwards); :class:`DeviceHost` is its host side.

The bitstream is cut into *segments*: every ``code.segment_steps`` steps the coder is sealed
and a fresh one started. A segment boundary is where a run can be checkpointed (the coder's
whole state is then the sealed bytes) and resumed byte-identically after a kill.

Before coding, both sides run a *canary*: the same step on a fixed synthetic batch from the
initial parameters; the hash of its probabilities (with the device coder: of the quantised
ranges and the ideal bits) and updated parameters is stored in the container, and the decoder
refuses to start when its own canary differs.
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
from mdlbench.config import Config
from mdlbench.errors import ContainerError, DecodeError, EnvironmentMismatch

LN2 = math.log(2.0)
# Parameters, optimiser state and carried model state are handed to each compiled step and not
# used again: donating them lets XLA update them in place. Without it every step allocated fresh
# buffers for the n-gram tables (hundreds of MB), and the kernel's zeroing of their new pages
# took a third of the CPU time. Donation changes buffer assignment, not arithmetic. A carry handed
# to a step is used up: whoever needs the same start again keeps host copies (``replayer``).
DONATED = (0, 1, 2)


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

    def left_in_lane(self, s: int, segment_steps: int, lanes: int) -> np.ndarray:
        """left_BxT: how many valid positions the coder of each position's *lane* still codes
        after it in its segment (of ``segment_steps`` steps). A lane is one rANS coder serving
        ``G = B / lanes`` consecutive streams, position by position and within a position in
        stream order (stream ``b`` is slot ``b % G`` of lane ``b // G``). The device coder sets
        the precision of a lane's last tables in a segment from it; at padding the value is
        meaningless (nothing is coded there)."""
        G = self.batch // lanes
        seg_end = min((s // segment_steps + 1) * segment_steps, self.steps)
        n_valid_B = np.clip(self.n - np.arange(self.batch) * self.stream_len, 0, self.stream_len)
        end_KxG = np.minimum(seg_end * self.seq_len, n_valid_B).reshape(lanes, G)
        p_T = s * self.seq_len + np.arange(self.seq_len)
        # After (p, j) the lane codes, of each slot j', the positions p' > p, and p itself if j' > j.
        after_GxG = (np.arange(G)[None, :] <= np.arange(G)[:, None]).astype(np.int64)  # [j, j'] = j' <= j
        left_KxGxT = np.maximum(
            0, end_KxG[:, None, :, None] - p_T[None, None, None, :] - after_GxG[None, :, :, None]).sum(2)
        return left_KxGxT.reshape(self.batch, self.seq_len)

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
        self.coder_name = range_coder.NAME

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

    def layout_header(self) -> dict[str, Any]:
        """The container's record of the segments: their byte lengths."""
        return {"segments": list(self.segments)}

    def segments_of(self, layout_header: dict[str, Any]) -> list[int]:
        return [int(n) for n in layout_header["segments"]]

    def finish(self) -> None:
        """After the last step (the range decoder's end is checked by the data's sha256)."""

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


def canary_window(layout: Layout, step: int) -> np.ndarray:
    """The canary's fixed synthetic bytes (window_BxT of step ``step``): the same for both coders."""
    t = np.arange(layout.seq_len)[None, :]
    b = np.arange(layout.batch)[:, None]
    return ((t * 31 + b * 17 + step * 7) % 256).astype(np.int32)


class DeviceHost:
    """The host side of the in-program coder (``code.coder=device``): there is no callback.

    The compiled step codes a whole window by itself (:mod:`mdlbench.coding.device_rans`).
    Encoding, it takes the known bytes and returns each position's ``(start, f)`` under the
    quantised tables; decoding, it pops the bytes from the segment's buffers and returns them.
    This object feeds each step its inputs and takes its outputs. The encoder collects the
    ``(start, f)`` of the open segment and runs the rANS encoder when the segment is sealed
    (rANS codes a segment backwards), so at a segment boundary the coder's whole state is the
    sealed bytes, as with the host coder. The decoder loads each segment's bytes onto the
    device once and, at its end, checks that every lane decoded cleanly.

    *Lanes.* ``code.coder_lanes = K`` rANS coders serve the B streams, each ``G = B / K``
    consecutive streams, in stream order at every position (stream ``b`` is slot ``b % G`` of
    lane ``b // G``). Every lane of every segment pays a flush of ~10 bits (the start from
    state 0 and the final state's byte rounding, see the coder's module docstring), so few lanes
    code closest to the ideal: one lane costs ~10 bits a segment whatever B is. More lanes
    decode more streams at once: a position pops its G symbols one after the other, which on
    an accelerator is G rounds of tiny kernels; ``K = B`` (``coder_lanes=0``) pops all B at once.

    ``segments`` is the flat list of per-lane byte lengths, K entries per sealed segment (its
    sum is the payload's length, as for the host coder, so a checkpoint stores it unchanged).
    A segment's payload is its K lanes one after the other.
    """

    def __init__(self, layout: Layout, segment_steps: int, lanes: int = 1):
        import jax
        import jax.numpy as jnp

        from mdlbench.coding import device_rans as dr

        B = layout.batch
        K = B if lanes == 0 else lanes
        if K < 1 or B % K:
            raise config_lib.ConfigError(f"code.coder_lanes={lanes} must divide code.batch_size={B} (0: one per stream)")
        self.K, self.G = K, B // K
        self._decoder_init, self._decoder_finish = jax.jit(dr.decoder_init), jax.jit(dr.decoder_finish)
        self.layout, self.mode, self.error = layout, "idle", None
        self._dr, self._jnp, self.segment_steps = dr, jnp, segment_steps
        self.coder_name = dr.NAME
        # Every segment is coded with the same shapes (the last one padded), so the segment
        # encoder and the step compile once; N bytes per lane hold any segment.
        self.segment_positions = max(1, min(segment_steps, layout.steps)) * layout.seq_len
        self.N = dr.buffer_bytes(self.segment_positions * self.G)
        self._idle_inputs = (jnp.zeros((K, self.N), jnp.uint8), jnp.zeros((K,), jnp.int32),
                             jnp.zeros((K,), jnp.int32), jnp.zeros((K,), jnp.uint32),
                             jnp.zeros((K,), jnp.uint32), jnp.zeros((K,), bool))

    # -- both sides ---------------------------------------------------------------------------
    def precision(self, step: int) -> np.ndarray:
        """prec_BxT: each position's table precision, from the layout alone (both sides)."""
        return self._dr.ramp_precision(self.layout.left_in_lane(step, self.segment_steps, self.K))

    def inputs(self, step: int) -> tuple:
        """(prec_BxT, known_BxT, decoding, buf_KxN, length_K, ptr_K, hi_K, lo_K, err_K) for step ``step``."""
        prec_BxT = self.precision(step)
        if self.mode == "decode":
            return (prec_BxT, np.zeros((self.layout.batch, self.layout.seq_len), np.int32), np.bool_(True),
                    self.buf, self.length, *self.words)
        if self.mode == "encode":
            known = self.layout.window(self.data, step).astype(np.int32)
        elif self.mode == "canary":
            known = canary_window(self.layout, step)
        else:
            raise RuntimeError(f"device coder step in mode {self.mode!r}")
        return (prec_BxT, known, np.bool_(False), *self._idle_inputs)

    def outputs(self, step: int, x_BxT, start_BxT, f_BxT, words) -> None:
        """Takes what step ``step`` coded: the bytes, their (start, f), the decoder's words."""
        if self.mode == "canary":
            for a in (x_BxT, start_BxT, f_BxT):
                self.hash.update(np.asarray(a).tobytes())
        elif self.mode == "encode":
            valid_BxT, prec_BxT = self.layout.valid_window(step), self.precision(step)
            f_BxT = np.asarray(f_BxT)
            self.open.append((np.asarray(start_BxT), f_BxT, valid_BxT, prec_BxT))
            # Σ log2(2**prec / f) of the quantised tables: what the open segment will cost.
            ideal_B = np.where(valid_BxT, prec_BxT - np.log2(np.maximum(f_BxT, 1)), 0.0).sum(1)
            self.open_ideal_K += ideal_B.reshape(self.K, self.G).sum(1)
        elif self.mode == "decode":
            self.words = tuple(words)
            if self.error is None and bool(np.asarray(words[3]).any()):
                k = int(np.flatnonzero(np.asarray(words[3]))[0])
                self.error = (f"the bitstream cannot be decoded: lane {k} of segment {self.segment} is corrupt "
                              f"(the rANS decoder's state left its valid range by step {step})")
                return
            valid_BxT = self.layout.valid_window(step)
            x_BxT = np.asarray(x_BxT)
            offsets_BxT = (np.arange(self.layout.batch)[:, None] * self.layout.stream_len
                           + step * self.layout.seq_len + np.arange(self.layout.seq_len)[None, :])
            self.out[offsets_BxT[valid_BxT]] = x_BxT[valid_BxT]

    def layout_header(self) -> dict[str, Any]:
        """The container's record of the segments: totals and per-lane byte lengths."""
        K = self.K
        per = [list(map(int, self.segments[i:i + K])) for i in range(0, len(self.segments), K)]
        return {"segments": [sum(p) for p in per], "lanes": K, "lane_bytes": per}

    def segments_of(self, layout_header: dict[str, Any]) -> list[int]:
        """The flat per-lane length list of a container's layout record (checked)."""
        per, K = layout_header.get("lane_bytes"), self.K
        if layout_header.get("lanes") != K or not isinstance(per, list) \
                or any(not isinstance(p, list) or len(p) != K for p in per):
            raise DecodeError(f"the container's layout has no valid per-lane lengths for {K} coder lanes")
        flat = [int(n) for p in per for n in p]
        if any(n < 0 for n in flat) or [sum(p) for p in per] != [int(n) for n in layout_header.get("segments", [])]:
            raise DecodeError("the container's per-lane lengths do not match its segment lengths")
        return flat

    # -- encoder ------------------------------------------------------------------------------
    def start_canary(self) -> None:
        self.mode, self.hash = "canary", hashlib.sha256()

    def start_encode(self, data: bytes, sealed: bytes = b"", segments: list[int] | None = None) -> None:
        """Starts (or, with the sealed segments of a checkpoint, resumes) encoding."""
        self.mode, self.data = "encode", data
        self.sealed, self.segments = bytearray(sealed), list(segments or [])
        if len(self.segments) % self.K:
            raise DecodeError(f"a device-coder checkpoint lists {len(self.segments)} lane lengths, "
                              f"not a multiple of {self.K} lanes")
        self.open, self.open_ideal_K = [], np.zeros(self.K)
        self.segment_ideal_bits: list[list[float]] = []  # per sealed segment (of this process), per lane

    def seal(self) -> None:
        """Codes the open segment (the rANS encoder, on the CPU) and appends its bytes."""
        import jax

        dr, B, S, K, G = self._dr, self.layout.batch, self.segment_positions, self.K, self.G
        start_SxB, f_SxB, valid_SxB = np.zeros((S, B), np.uint32), np.ones((S, B), np.uint32), np.zeros((S, B), bool)
        prec_SxB = np.full((S, B), dr.PREC, np.uint32)
        if self.open:
            n = sum(v.shape[1] for _, _, v, _ in self.open)
            for i, a in enumerate((start_SxB, f_SxB, valid_SxB, prec_SxB)):
                a[:n] = np.concatenate([o[i] for o in self.open], 1).T
        # Each lane's symbols in the order its decoder pops them: position-major, then the
        # lane's G streams in order (stream b = lane b // G, slot b % G).
        lanes = [a.reshape(S, K, G).transpose(0, 2, 1).reshape(S * G, K) for a in (start_SxB, f_SxB, valid_SxB, prec_SxB)]
        # Integer-only, hence the same bytes on any backend; the CPU runs its long reverse scan
        # far faster than an accelerator would, one tiny kernel per position.
        try:
            cpu = jax.devices("cpu")[0]
        except RuntimeError:  # JAX_PLATFORMS without the CPU: the default device does it
            cpu = jax.devices()[0]
        with jax.default_device(cpu):
            buf_KxN, lengths_K = dr.encode_segment(*lanes)
        buf_KxN, lengths_K = np.asarray(buf_KxN), np.asarray(lengths_K)
        for k in range(K):
            self.sealed += buf_KxN[k, :lengths_K[k]].tobytes()
        self.segments.extend(int(n) for n in lengths_K)
        self.segment_ideal_bits.append(self.open_ideal_K.tolist())
        self.open, self.open_ideal_K = [], np.zeros(K)

    def bits(self) -> int:
        """Bits so far: the sealed segments, plus the open one at its quantised ideal (it is
        coded only when sealed; the flush then adds about a byte per lane)."""
        return 8 * len(self.sealed) + int(round(float(self.open_ideal_K.sum())))

    # -- decoder ------------------------------------------------------------------------------
    def start_decode(self, payload: bytes, segments: list[int], out) -> None:
        """Starts decoding into ``out`` (a writable uint8 array of n bytes, e.g. a memmap)."""
        if sum(segments) != len(payload):
            raise DecodeError(f"segment table covers {sum(segments)} bytes but the payload has {len(payload)}")
        self.mode, self.payload, self.segments, self.out = "decode", payload, list(segments), out
        self.segment, self.offset = -1, 0
        self.next_segment()

    def next_segment(self) -> None:
        """Checks that the segment just decoded ended cleanly and loads the next one."""
        jnp, K = self._jnp, self.K
        if self.segment >= 0:
            self._check_segment()
        self.segment += 1
        if (self.segment + 1) * K > len(self.segments):
            raise DecodeError(f"the bitstream has {len(self.segments) // K} segments but decoding needs more")
        lengths = self.segments[self.segment * K:(self.segment + 1) * K]
        if max(lengths) > self.N:
            raise DecodeError(f"segment {self.segment} lists a lane of {max(lengths)} bytes, more than "
                              f"{self.segment_positions * self.G} symbols can code ({self.N})")
        buf_KxN = np.zeros((K, self.N), np.uint8)
        for k, n in enumerate(lengths):
            buf_KxN[k, :n] = np.frombuffer(self.payload, np.uint8, n, self.offset)
            self.offset += n
        self.buf, self.length = jnp.asarray(buf_KxN), jnp.asarray(np.asarray(lengths, np.int32))
        st = self._decoder_init(self.buf, self.length)
        self.words = (st.ptr_B, st.hi_B, st.lo_B, st.err_B)

    def _check_segment(self) -> None:
        ok_K = np.asarray(self._decoder_finish(self._dr.DecoderState(self.buf, self.length, *self.words)))
        if not ok_K.all():
            k = int(np.flatnonzero(~ok_K)[0])
            raise DecodeError(f"the bitstream cannot be decoded: lane {k} of segment {self.segment} is corrupt "
                              "(the rANS decoder did not end in its initial state having read exactly its bytes)")

    def finish(self) -> None:
        """After the last step: the last segment ended cleanly and no segment is left over."""
        self._check_segment()
        if (self.segment + 1) * self.K != len(self.segments):
            raise DecodeError(f"the bitstream has {len(self.segments) // self.K} segments "
                              f"but decoding used {self.segment + 1}")


def make_host(cfg: Config, layout: Layout):
    """The host side of the coder ``cfg.code.coder`` names."""
    if cfg.code.coder == "device":
        return DeviceHost(layout, cfg.code.segment_steps, cfg.code.coder_lanes)
    return Host(layout)


class Program:
    """What both sides build identically from the config: model, optimiser, initial
    parameters and the one compiled coding step."""

    def __init__(self, cfg: Config, layout: Layout, host: Host):
        import jax
        import jax.numpy as jnp
        from jax.experimental import io_callback

        from mdlbench import models
        from mdlbench.optim import make_optimizer

        self.cfg, self.layout, self.host = cfg, layout, host
        B, T = cfg.code.batch_size, cfg.code.seq_len
        model = models.build(cfg.model, T)
        # The decoder knows the length from the header, so a schedule over the run's updates is
        # part of the program like everything else.
        tx = make_optimizer(cfg.optim, layout.steps * cfg.optim.updates_per_batch)
        self.model, self.tx = model, tx

        # A module may have a parameter-free part of its training forward (n-gram counts, the
        # match model): computed once per batch, not at each of the updates.
        prepares = hasattr(model, "prepare")
        # A module whose carried state holds updates still to be applied (the n-gram counts of
        # the last window) settles them at the start of every compiled step (see NGramMix.settle).
        settle = model.settle if hasattr(model, "settle") else (lambda state: state)

        def loss_fn(params, state, inputs_BxT, targets_BxT, mask_BxT, prepared):
            extra = (prepared,) if prepares else ()
            logits_BxTxV, next_state = model.apply(params, inputs_BxT, state, *extra, method="forward")
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
            return sym_TxB.T, ideal_bits, last_B, model.next_state(cache, state), cache

        # A module whose coding cache records what the training forward needs (the counts each
        # position saw) hands it over instead of a recomputation (NGramMix.prepare_coded).
        coded = hasattr(model, "prepare_coded")

        def prepared_from(params, state, cache):
            return model.apply(params, state, cache, method="prepare_coded") if coded else None

        def train(params, opt_state, state, prev_B, x_BxT, mask_BxT, prepared=None):
            """``updates_per_batch`` optimiser steps on the window just coded. Also returns the
            loss before the first update (mean nats per byte: Rae's estimate sums it) and the
            carried state after the window as the training forward computes it."""
            inputs_BxT = jnp.concatenate([prev_B[:, None], x_BxT[:, :-1]], axis=1)
            grad_fn = jax.value_and_grad(loss_fn, has_aux=True)
            loss0 = state0 = None
            if prepared is None and prepares:
                prepared = model.apply(params, inputs_BxT, state, method="prepare")
            for _ in range(cfg.optim.updates_per_batch):
                (loss, next_state), grads = grad_fn(params, state, inputs_BxT, x_BxT, mask_BxT, prepared)
                if loss0 is None:
                    loss0, state0 = loss, next_state
                updates, opt_state = tx.update(grads, opt_state, params)
                params = jax.tree_util.tree_map(lambda p, u: p + u, params, updates)
            return params, opt_state, loss0, state0

        def plain_train(params, opt_state, state, prev_B, x_BxT, mask_BxT, prepared=None):
            """The updates of one step from a settled ``state``."""
            params, opt_state, loss0, _ = train(params, opt_state, state, prev_B, x_BxT, mask_BxT, prepared)
            return params, opt_state, loss0

        def estimate(params, opt_state, state, prev_B, x_BxT, mask_BxT):
            """Standard training that carries the state forward: the training-loss estimate."""
            state = settle(state)
            params, opt_state, loss0, next_state = train(params, opt_state, state, prev_B, x_BxT, mask_BxT)
            return params, opt_state, next_state, x_BxT[:, -1], loss0

        def step(params, opt_state, state, prev_B, step_idx, mask_BxT):
            state = settle(state)
            x_BxT, ideal_bits, last_B, next_state, cache = code(params, state, prev_B, step_idx, mask_BxT)
            params, opt_state, loss0 = plain_train(params, opt_state, state, prev_B, x_BxT, mask_BxT,
                                                   prepared_from(params, state, cache))
            return params, opt_state, next_state, last_B, ideal_bits, loss0

        def code_device(params, state, prev_B, mask_BxT, prec_BxT, known_BxT, decoding, buf_KxN, length_K, *words_K):
            """The in-program coder's pass over one window (``code.coder=device``), both sides.

            Each position quantises its probabilities (``device_rans.quantize``, at the
            precision ``prec_BxT`` that the layout gives: coarser over a lane's last positions
            in a segment, which makes its flush cheap), then, with the traced flag ``decoding``,
            either takes the known bytes (encoder) or pops them from the segment's buffers with
            ``decode_step`` (decoder; the K lanes at once, each lane's G streams one after the
            other) and feeds them to the next position. Everything before that choice is
            shared, so both sides compute the probabilities with the same instructions. On
            the CPU the choice is a ``lax.cond``, so the encoder skips the pops; elsewhere both
            branches are computed and one is selected: XLA's GPU backend runs a ``lax.cond`` by
            reading its predicate back to the host, a wait at every position, the very cost
            this coder removes. The byte buffers are arguments, closed over by the scans; only
            the four per-lane words (pointer, two state halves, error) are carried."""
            from mdlbench.coding import device_rans as dr

            K = buf_KxN.shape[0]
            G = B // K

            def pop(words, freq_BxV, valid_B, prec_B):
                """The decoder's G rounds of pops over the K lanes: (sym_B, words)."""
                def one(words, inp):
                    sym_K, st = dr.decode_step(dr.DecoderState(buf_KxN, length_K, *words), *inp)
                    return (st.ptr_B, st.hi_B, st.lo_B, st.err_B), sym_K

                if G == 1:
                    words, sym_B = one(words, (freq_BxV, valid_B, prec_B))
                    return sym_B, words
                V = freq_BxV.shape[-1]
                words, sym_GxK = jax.lax.scan(one, words, (
                    freq_BxV.reshape(K, G, V).swapaxes(0, 1), valid_B.reshape(K, G).T, prec_B.reshape(K, G).T))
                return sym_GxK.T.reshape(B), words

            on_cpu = jax.default_backend() == "cpu"

            def position(carry, inp):
                cache, prev, *words = carry
                t, prec_B, known_B, valid_B = inp
                logits_BxV, cache = model.apply(params, prev, cache, t, method="decode")
                logp_BxV = jax.nn.log_softmax(logits_BxV.astype(jnp.float32))
                freq_BxV = dr.quantize(jnp.exp(logp_BxV), prec_B)
                words = tuple(words)
                if on_cpu:
                    sym_B, words = jax.lax.cond(decoding, lambda w: pop(w, freq_BxV, valid_B, prec_B),
                                                lambda w: (known_B, w), words)
                else:
                    got_B, dec_words = pop(words, freq_BxV, valid_B & decoding, prec_B)
                    sym_B = jnp.where(decoding, got_B, known_B)
                    words = tuple(jnp.where(decoding, d, w) for d, w in zip(dec_words, words))
                start_B, f_B = dr.symbol_ranges(freq_BxV, sym_B)
                lp_B = jnp.take_along_axis(logp_BxV, sym_B[:, None], 1)[:, 0]
                return (cache, sym_B, *words), (sym_B, lp_B, start_B, f_B)

            cache = model.apply(params, state, B, method="init_cache")
            (cache, last_B, *words_K), (sym_TxB, lp_TxB, start_TxB, f_TxB) = jax.lax.scan(
                position, (cache, prev_B, *words_K), (jnp.arange(T), prec_BxT.T, known_BxT.T, (mask_BxT > 0).T))
            ideal_bits = -(lp_TxB.T * mask_BxT).sum() / LN2
            return (sym_TxB.T, ideal_bits, last_B, model.next_state(cache, state), start_TxB.T, f_TxB.T, tuple(words_K),
                    cache)

        def step_device(params, opt_state, state, prev_B, mask_BxT, *coder_inputs):
            state = settle(state)
            x_BxT, ideal_bits, last_B, next_state, start_BxT, f_BxT, words_B, cache = code_device(
                params, state, prev_B, mask_BxT, *coder_inputs)
            params, opt_state, loss0 = plain_train(params, opt_state, state, prev_B, x_BxT, mask_BxT,
                                                   prepared_from(params, state, cache))
            return params, opt_state, next_state, last_B, ideal_bits, loss0, x_BxT, start_BxT, f_BxT, words_B

        n_dev = cfg.code.devices
        self.device_coder = cfg.code.coder == "device"
        if self.device_coder:
            if n_dev != 1:
                raise config_lib.ConfigError("code.coder=device needs code.devices=1 for now")
            # One fused program per step for both sides: coding scan with the coder inside, then
            # the training update. No callback anywhere.
            self._step = jax.jit(step_device, donate_argnums=DONATED)
        elif n_dev == 1:
            # One fused program per step: coding scan, then the training update.
            self._step = jax.jit(step, donate_argnums=DONATED)
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
            code_j = jax.jit(lambda *a: code(*a)[:4])  # not the cache: it holds the tables
            train_j = jax.jit(plain_train, in_shardings=(rep, rep, rep, split, split, split),
                              out_shardings=(rep, rep, rep))
            state_sharding = rep  # carried model state stays replicated (small)

            settle_j = jax.jit(settle)

            def two_programs(params, opt_state, state, prev_B, step_idx, mask_BxT):
                state = settle_j(state)
                on_first = lambda tree: jax.device_put(tree, first)
                x_BxT, ideal_bits, last_B, next_state = code_j(on_first(params), on_first(state),
                                                                on_first(prev_B), step_idx, on_first(mask_BxT))
                params, opt_state, loss0 = train_j(params, opt_state, jax.device_put(state, rep),
                                                   jax.device_put(prev_B, split), jax.device_put(x_BxT, split),
                                                   jax.device_put(mask_BxT, split))
                return params, opt_state, jax.device_put(next_state, state_sharding), last_B, ideal_bits, loss0

            self._step = two_programs
            self._place = lambda carry: jax.device_put(carry, rep)
        self._estimate = jax.jit(estimate, donate_argnums=DONATED)
        self._init = lambda: model.init(jax.random.PRNGKey(cfg.seed), jnp.zeros((B, T), jnp.int32),
                                        model.zero_state(B))
        self._jnp = jnp

    def start_params(self):
        """(params, opt_state) at the start: the model's initialisation from the config's seed."""
        params = self._init()
        return params, self.tx.init(params)

    def initial(self, start=None):
        """(params, opt_state, carried state, previous byte per stream) at the start.

        ``start``: (params, opt_state) as :meth:`start_params` gave them (host copies will do);
        computed here when not given. The carried state (the n-gram tables: gigabytes) is always
        made afresh: it is zeros, so keeping a copy to start again from would double the memory."""
        # Built inside the call, so that nothing but ``normalize`` holds the fresh arrays.
        return self.normalize(self._fresh(start))

    def _fresh(self, start=None):
        """The carry at the start, as made (before :meth:`normalize`)."""
        from mdlbench.models.transformer import BOS

        B = self.cfg.code.batch_size
        return (*(self.start_params() if start is None else start), self.model.zero_state(B),
                self._jnp.full((B,), BOS, self._jnp.int32))

    def initial_shapes(self):
        """Shapes, types and placement of :meth:`initial`'s carry, without making it (a
        checkpoint is restored into them)."""
        import jax

        shapes = jax.eval_shape(self._fresh)
        sharding = self.normalize(np.zeros((), np.int32)).sharding
        return jax.tree_util.tree_map(lambda a: jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=sharding), shapes)

    def normalize(self, carry):
        """Plain, strongly typed arrays (as a checkpoint restores them), placed for the step.

        A fresh carry may hold weakly typed scalars; restored ones never do. Normalising both
        gives the compiled step the same input types either way, hence the same program. A leaf
        that is already a strongly typed JAX array is kept as it is: copying it (as this did for
        every leaf, all at once) held two copies of the n-gram tables at the start of every run,
        and the first step of the 2**19-row bench peaked at twice their size."""
        import jax

        leaves, treedef = jax.tree_util.tree_flatten(carry)
        del carry
        kept = set()  # one array may sit at several leaves (zero_state's zeros): each donated once
        for i, x in enumerate(leaves):
            if isinstance(x, jax.Array) and not x.weak_type and id(x) not in kept:
                kept.add(id(x))
            else:
                leaves[i] = self._jnp.asarray(np.asarray(x))
            del x  # leaf by leaf: an old leaf goes as soon as its copy exists (when no caller holds it)
        carry = jax.tree_util.tree_unflatten(treedef, leaves)
        return self._place(carry) if hasattr(self, "_place") else carry

    def step(self, carry, s: int, mask_BxT: np.ndarray):
        params, opt_state, state, prev = carry
        if self.device_coder:
            params, opt_state, state, prev, ideal_bits, loss, x_BxT, start_BxT, f_BxT, words_B = self._step(
                params, opt_state, state, prev, mask_BxT.astype(np.float32), *self.host.inputs(s))
            self.host.outputs(s, x_BxT, start_BxT, f_BxT, words_B)
        else:
            params, opt_state, state, prev, ideal_bits, loss = self._step(
                params, opt_state, state, prev, np.int32(s), mask_BxT.astype(np.float32))
        return (params, opt_state, state, prev), float(ideal_bits), float(loss)

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
        carry, ideal_bits, _ = self.step(carry, 0, np.ones((self.layout.batch, self.cfg.code.seq_len), bool))
        h = self.host.hash
        if self.device_coder:  # the host coder hashes the probabilities; this coder sees only (start, f)
            h.update(np.float64(ideal_bits).tobytes())
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
      segment_ideal_bits: device coder only: Σ log2(M / f) under the quantised tables, per
        segment sealed by this process (not those restored from a checkpoint) and per stream;
        what each stream's bytes cost over it is the coder's flush.
    """

    payload: bytes
    header: dict[str, Any]
    ideal_bits: float
    encode_s: float
    n_params: int
    estimate_bits: float = 0.0
    segment_ideal_bits: list[list[float]] | None = None


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
    host = make_host(cfg, layout)
    prog = Program(cfg, layout, host)
    fingerprint = env.fingerprint(jax.default_backend())
    canary = prog.canary()
    cursor, sealed = Cursor(), b""
    # Restored into the shapes of a fresh carry, never built: the tables are gigabytes.
    restored = checkpoints.restore(prog.initial_shapes()) if checkpoints is not None else None
    if restored is None:
        carry = prog.initial()
    else:
        carry, cursor, sealed = restored
        del restored
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
                   "steps": layout.steps, **host.layout_header()},
        "coder": host.coder_name,
        "ideal_bits": ideal_bits,
    }
    return EncodeResult(payload, header, ideal_bits, seconds, prog.n_params(), cursor.estimate_bits,
                        getattr(host, "segment_ideal_bits", None))


def decode(header: dict[str, Any], payload: bytes,
           on_step: Callable[[dict[str, Any]], None] | None = None, out=None) -> tuple[bytes | None, float]:
    """Replays the training and decodes; returns (data, seconds). The caller must have pinned
    the environment (``mdlbench.coding.env.pin``) before JAX was imported.

    With ``out`` (a writable uint8 array of ``header['data']['bytes']`` entries, e.g. a memmap
    of the output file) the data is written there position by position and ``None`` is
    returned in its place: decoding then needs no memory proportional to the data."""
    return replayer(header)(payload, on_step, out)


def replayer(header: dict[str, Any]) -> Callable[..., tuple[bytes | None, float]]:
    """The decoder's program for ``header``, built and checked once (environment, program
    source, coder, canary): returns ``run(payload, on_step=None, out=None)``, which decodes a
    payload as :func:`decode` does. Several payloads under one header (the corruption tests)
    then cost one compilation."""
    import jax

    from mdlbench.coding import env, program

    env.check(header["env"], env.fingerprint(jax.default_backend()))
    program.check(program.PREQUENTIAL, header.get("program"))
    cfg = config_lib.from_dict(header["config"])
    layout = Layout(int(header["data"]["bytes"]), cfg.code.batch_size, cfg.code.seq_len)
    host = make_host(cfg, layout)
    if header.get("coder") != host.coder_name:
        raise ContainerError(f"the container was coded with {str(header.get('coder'))[:80]!r}, but its config "
                             f"(code.coder={cfg.code.coder}) decodes with {host.coder_name!r}")
    prog = Program(cfg, layout, host)
    if prog.canary() != header["canary_sha256"]:
        raise EnvironmentMismatch(
            "canary mismatch: one coding + training step on a fixed batch gives different bits here "
            "than on the encoder's machine, so decoding would fail; use the recorded environment")
    from mdlbench.checkpoint import Cursor

    # Host copies of the initial parameters and optimiser state: the compiled step consumes
    # (donates) the arrays it is given, so every run starts from fresh device arrays made from the
    # same values; the carried state (zeros) is made afresh by ``initial``, not kept twice.
    start = jax.tree_util.tree_map(np.asarray, prog.start_params())

    def run(payload: bytes, on_step: Callable[[dict[str, Any]], None] | None = None, out=None):
        buf = np.zeros(layout.n, np.uint8) if out is None else out
        host.error = None
        host.start_decode(payload, host.segments_of(header["layout"]), buf)
        cursor = Cursor()
        _loop(prog, prog.initial(start), cursor, on_step, lambda: 0, lambda carry, cursor: host.next_segment())
        host.finish()
        got = container.sha256_hex(buf)
        if got != header["data"]["sha256"]:
            raise DecodeError(f"decoded data sha256 {got[:16]}... differs from the recorded "
                              f"{header['data']['sha256'][:16]}...; nothing was written")
        return (buf.tobytes() if out is None else None), cursor.elapsed_s

    return run
