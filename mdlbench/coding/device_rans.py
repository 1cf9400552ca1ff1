"""rANS entropy coding inside a compiled JAX program: integer-only, vectorised over B streams.

The prequential coder today stops the device at every position with an ordered ``io_callback``
to a host range coder. This module is a coder that runs *inside* the jitted step instead: B
independent rANS coders (one state and one byte buffer per stream), written with uint32
operations only (add, multiply mod 2**32, shift, compare, unsigned divide), whose results are
the same bits on every backend; only the quantiser touches floats (elementwise IEEE ops and
one max, all exact given the float32 inputs). Decoding needs no callback: the payload of a
segment is a device array, and each stream keeps its own read pointer into it.

Use in the coding step (phase 2): tables are made per position inside the scan with
:func:`quantize`. The encoder, which knows the data, collects ``symbol_ranges(freq, x)`` for
every position of a segment (all its steps) and calls :func:`encode_segment` once at the
segment's end. The decoder starts each segment with :func:`decoder_init`, carries the
:class:`DecoderState` through the scan (and from step to step), pops each position's byte with
:func:`decode_step` and ends the segment with :func:`decoder_finish`. Both sides must make the
tables with the same compiled program, as they already do for the probabilities.

Why rANS and not a range coder with carry
-----------------------------------------
* A range coder's low end can carry into bytes that were already written, an unbounded
  distance back (or it needs carry-less tricks that lose precision and add underflow cases).
  That is data-dependent control flow and a scatter into the past of every stream. rANS has one
  integer state, no carry, and at most :data:`MAX_BYTES_PER_SYMBOL` renormalisation bytes per
  symbol, so each step is a fixed, fully unrolled sequence of vector operations: it cannot hang.
* The decoder, which is the side that runs inside the model's per-position scan, uses no
  division: a multiply, an add and shifts. Only the encoder divides (two uint32 divisions).
* The price is that rANS is LIFO: the encoder must run in reverse over a buffered *segment*.
  The prequential encoder knows the data, so it can collect (start, freq) of every position of
  a segment and code them at the segment's end with :func:`encode_segment`; the decoder then
  reads forward, position by position, with :func:`decode_step`.

Precision and bounds (all arithmetic is uint32, no intermediate wraps)
-----------------------------------------------------------------------
Constants: ``PREC = 24``, ``M = 2**24`` (table total), ``L = 2**32`` (lower end of the state
interval), byte-wise renormalisation, state ``x`` in ``I = [L, 2**8 L) = [2**32, 2**40)``. The
state is 40 bits, held as two uint32 words ``hi = x >> 32`` (in ``[1, 2**8)``) and ``lo``. The
headroom ``L / M = 2**8`` is what makes the coder accurate: with a plain 32-bit state and
``L = M = 2**23`` the rANS approximation costs ~0.24% (measured at 3 bits/symbol), and with
``L = 2**24``, ``M = 2**21`` still ~0.007% plus 8x the cost of giving every symbol at least one
quantum; with ``M = 2**24`` that cost is below 2.2e-5 bits/symbol. This is the precision of
constriction's ``AnsCoder`` (24-bit tables, ``L / M = 2**8``), which the bits-back codes use.
Choosing ``L = 2**32`` costs a second uint32 word for the state and a 5-byte flush.

A table is ``freq`` (uint32) with ``freq[s] >= 1`` and ``sum(freq) == M`` (so, for ``V >= 2``
symbols, ``f = freq[s] <= M - 1``), ``c = start[s] = sum(freq[:s])``, ``c + f <= M``.

Encode ``(c, f)`` from ``x`` in ``I``:

1. Renormalise: while ``x >= x_max = 2**16 f`` emit ``x mod 2**8``, ``x <- x >> 8``.
   ``x_max < 2**40`` is the pair ``(f >> 16, (f << 16) mod 2**32)``. As ``x < 2**40`` and
   ``x_max >= 2**16``, at most 3 bytes are emitted. Afterwards ``2**8 f <= x < 2**16 f``: the
   upper bound ends the loop; the lower holds with no emission (``x >= 2**32 > 2**8 f``) and
   after one (the previous ``x >= 2**16 f``).
2. Divide ``x`` by ``f`` in base-2**8 long division: ``x < 2**16 f`` gives ``x >> 16 < f``, so
   the top 24 bits are already a remainder ``r < f``; then for each of the two low bytes
   ``t = (r << 8) | byte < 2**8 f <= 2**32``, ``q_i = t // f < 2**8``, ``r = t mod f``. So
   ``q = (q_1 << 8) | q_0 = x // f`` lies in ``[2**8, 2**16)`` and ``r = x mod f``.
3. ``x' = q M + r + c``: ``q M`` is in ``[2**32, 2**40)`` with zero low 24 bits and
   ``r + c < f + c <= M``, so ``hi = q >> 8`` (in ``[1, 2**8)``), ``lo = (q << 24) | (r + c)``
   (the shift wraps mod 2**32 by design). ``x'`` is in ``I``.

Decode from ``x`` in ``I``: ``slot = x mod M = lo & (M - 1)`` picks the symbol ``s`` with
``c <= slot < c + f`` (count of inclusive cumulative frequencies ``<= slot``, in two levels of
16-entry blocks; exact: the uint32 sums end at ``M < 2**32``). With ``a = x >> 24 = (hi << 8) | (lo >> 24) < 2**16``, split
``a = a_1 2**8 + a_0``: ``u = f a_0 + (slot - c) < 2**8 f <= 2**32`` and ``v = f a_1 < 2**32``,
and ``x = f a + slot - c = v 2**8 + u`` is assembled with one explicit carry. It is at least
``a >= 2**8``, so renormalising (while ``x < L``: ``x <- (x << 8) | next byte``) reads at most 3
bytes; each read has ``hi == 0``, so ``hi <- lo >> 24``, ``lo <- (lo << 8) | byte``.

Quantisation (:func:`quantize`) happens inside the program: ``f = 1 + floor(p (M - V))`` per
symbol in float32 (one multiply by a constant: no FMA, correctly rounded on every IEEE
backend), then the integer residual ``M - sum(f)`` (usually ``+0 .. +V``) goes to a largest
entry, chosen by one exact float32 max. For ``V <= 256`` the uint32 sum cannot overflow:
``V (M - V + 1) < 2**32``. Loss: a symbol with ``p ~ 0`` costs the others at most ``1/M`` of
mass, so at most ``V / M * log2(e) < 2.2e-5`` bits/symbol over the float ideal; rounding loss
is second order. Measured (expected cost over entropy): +1.5e-8 on a real LSTM + n-gram
model's tables (book1, 2.7 bits/byte), +4e-6 on synthetic text-like tables at 2.5 bits with
~170 bytes below 2**-24, +2.5e-5 on sharper ones at 0.8 bits (the floor cost, ~2e-5 bits).

Coded length and flush overhead
-------------------------------
A stream's segment is ``5 + n`` bytes: its final 40-bit state (5 bytes, most significant
first) and then ``n`` renormalisation bytes in the order the decoder reads them. The
encoder starts every stream in state ``L``; the quantised ideal
``I_q = sum log2(M / f)`` equals ``8 n + log2(x_final / L)`` up to the rANS approximation loss
(second order in ``M / L``; measured |loss| < 1e-5 relative at 2-3 bits/symbol). Since
``log2(x_final / L)`` is in ``[0, 8)``, the flush costs ``40 - log2(x_final / L)``, i.e.
**between 32 and 40 bits per stream per segment** over ``I_q`` (about 36 on average):
``8 * length <= I_q * (1 + 2e-4) + 40``. For B=32 streams and segments of 128k positions per
stream at 2 bits/byte that is ~1.4e-4 of the payload.

Integrity: the decoder ends a segment in state ``L`` exactly, with every byte consumed.
:func:`decoder_finish` checks both, and the decoder's ``err_B`` bit records a read past the
stream's length, a state outside ``I`` or a table that is not a valid quantised table, instead
of raising inside jit. Each decode step is the exact inverse of an encode step (it restores
the state the encoder had and reads back exactly the bytes it emitted), so a stream that
passes :func:`decoder_finish` is *exactly* the encoding of the symbols it decoded, under the
tables it saw. Hence a corrupted payload either fails the check or decodes to other symbols
(which the caller's sha256 of the data catches); truncated or extended streams always fail it.
Every step is a fixed sequence of operations: corrupt input cannot crash or hang the decoder.

This is the one module of :mod:`mdlbench.coding` that imports JAX: import it where JAX may
start (inside the program, after :func:`mdlbench.coding.env.pin`), never at package import.
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

NAME = "mdlbench.coding.device_rans (rANS, 24-bit tables, 40-bit state, byte renormalisation)"
PREC = 24
M = 1 << PREC  # table total
STATE_BYTES = 5  # the 40-bit final state
MAX_BYTES_PER_SYMBOL = 3  # a symbol with f = 1 costs 24 bits
MAX_V = 256  # the uint32 table sum in quantize() cannot overflow up to here
_MASK8 = 0xFF

_u32 = jnp.uint32


def buffer_bytes(n_positions: int) -> int:
    """Bytes per stream that always hold a segment of ``n_positions`` symbols (worst case)."""
    return MAX_BYTES_PER_SYMBOL * int(n_positions) + STATE_BYTES


# ---- tables ---------------------------------------------------------------------------------
def quantize(probs_xV: jax.Array) -> jax.Array:
    """Quantises probability tables to integer frequencies summing to exactly ``M``.

    Works on any leading shape (``probs_BxV``, ``probs_SxBxV``). Deterministic from float32
    inputs: elementwise IEEE operations (a multiply by a constant, ``1 + p``, a floor), one
    float max and integer arithmetic, all exact or correctly rounded, so any two runs on the
    same float32 probabilities get identical tables, on any backend (a denormal ``p`` gives
    ``f = 1`` whether or not the backend flushes it to zero).

    Args:
      probs_xV: probabilities over ``V`` symbols (2 <= V <= 256) on the last axis; they should
        sum to ~1 (``exp(log_softmax)``). Negative, NaN entries count as 0, +inf as 1; tables
        far from normalised still give a valid (if poor) table: uniform when the residual
        cannot be absorbed.

    Returns:
      freq_xV: uint32, every entry >= 1, each row summing to ``M``. The rounding residual
      lies on a largest entry (the first of those within 2**-15 of the largest probability).
    """
    V = probs_xV.shape[-1]
    if not 2 <= V <= MAX_V:
        raise ValueError(f"device rANS tables need 2 <= V <= {MAX_V} symbols, got {V}")
    p = jnp.asarray(probs_xV, jnp.float32)
    p = jnp.minimum(jnp.where(p > 0, p, jnp.float32(0)), jnp.float32(1))  # NaN > 0 is False
    f = jnp.floor(p * jnp.float32(M - V)).astype(_u32) + _u32(1)  # in [1, M - V + 1]
    total = f.sum(-1, dtype=_u32)  # <= V (M - V + 1) < 2**32: no wrap
    # The residual goes to a largest entry, found with ONE float32 max (an argmax, a uint32 max
    # or a second reduction are 3-10x slower per position on CPU). The key is 1 + p (in [1, 2]:
    # normal floats, never denormal, so no flush-to-zero differences) with its low 8 mantissa
    # bits replaced by 255 - index; non-negative floats order as their bit patterns, so the
    # max picks, among the entries within 2**-15 of the largest p, the first. That entry has
    # f >= (max p - 2**-15) (M - V) > 60000 >> any excess of a near-normalised table.
    bits = jax.lax.bitcast_convert_type(p + jnp.float32(1), _u32)
    key = jax.lax.bitcast_convert_type((bits & _u32(0xFFFFFF00)) | (_u32(V - 1) - jnp.arange(V, dtype=_u32)),
                                       jnp.float32)
    am = (_u32(V - 1) - (jax.lax.bitcast_convert_type(key.max(-1), _u32) & _u32(_MASK8))).astype(jnp.int32)
    f_am = jnp.take_along_axis(f, am[..., None], -1)[..., 0]
    over = total > _u32(M)
    excess = jnp.where(over, total - _u32(M), _u32(0))
    deficit = jnp.where(over, _u32(0), _u32(M) - total)
    fits = f_am > excess  # the largest keeps >= 1 after giving back the excess
    f = jnp.where(jnp.arange(V) == am[..., None], (f_am - excess + deficit)[..., None], f)
    # Unreachable for normalised inputs (the excess is then a few quanta); keeps garbage valid.
    uniform = jnp.full((V,), M // V, _u32).at[0].add(_u32(M % V))
    return jnp.where(fits[..., None], f, uniform)


def symbol_ranges(freq_xV: jax.Array, sym_x: jax.Array) -> tuple[jax.Array, jax.Array]:
    """(start, freq) of each symbol under its table: what :func:`encode_segment` takes.

    Args:
      freq_xV: quantised tables (uint32, rows summing to ``M``).
      sym_x: int symbols in ``[0, V)``, one per table.

    Returns:
      (start_x, f_x), uint32: ``start = sum(freq[:sym])``, ``f = freq[sym]``.
    """
    V = freq_xV.shape[-1]
    sym = jnp.asarray(sym_x, jnp.int32)
    f = jnp.take_along_axis(freq_xV, sym[..., None], -1)[..., 0]
    # One masked sum, not a cumsum over V (several times slower per position on CPU).
    start = jnp.where(jnp.arange(V) < sym[..., None], freq_xV, _u32(0)).sum(-1, dtype=_u32)
    return start, f


# ---- encoder --------------------------------------------------------------------------------
def _encode_position(carry, inp):
    """One rANS push per stream (see the module docstring for the bounds)."""
    hi, lo = carry
    start, f, valid = inp
    xmax_hi, xmax_lo = f >> 16, f << 16  # x_max = 2**16 f as a (hi, lo) pair
    bytes_, emits = [], []
    for _ in range(MAX_BYTES_PER_SYMBOL):  # unrolled: at most 3 emissions, no data-dependent loop
        emit = valid & ((hi > xmax_hi) | ((hi == xmax_hi) & (lo >= xmax_lo)))
        bytes_.append((lo & _MASK8).astype(jnp.uint8))
        emits.append(emit)
        lo = jnp.where(emit, (lo >> 8) | (hi << 24), lo)
        hi = jnp.where(emit, hi >> 8, hi)
    f1 = jnp.maximum(f, _u32(1))  # a zero f is a caller error; keep the division defined
    r = (hi << 16) | (lo >> 16)  # x >> 16 < f: already a remainder
    t = (r << 8) | ((lo >> 8) & _MASK8)
    q1, r = t // f1, t % f1
    t = (r << 8) | (lo & _MASK8)
    q0, r = t // f1, t % f1
    q = (q1 << 8) | q0
    hi = jnp.where(valid, q >> 8, hi)
    lo = jnp.where(valid, (q << 24) | (r + start), lo)
    count = sum(e.astype(jnp.int32) for e in emits)  # emissions are a prefix of the 3 slots
    return (hi, lo), (jnp.stack(bytes_, -1), count)


@jax.jit
def encode_segment(start_SxB: jax.Array, freq_SxB: jax.Array, valid_SxB: jax.Array | None = None):
    """Codes a segment of S positions of B streams with rANS (one coder per stream).

    Runs a ``lax.scan`` in reverse over the positions (rANS is LIFO), then lays each stream's
    bytes out in the order the decoder reads them, so decoding goes forward from position 0.

    Args:
      start_SxB: uint32 start of each coded symbol under its quantised table
        (:func:`symbol_ranges`).
      freq_SxB: uint32 frequency of each coded symbol (>= 1 where valid).
      valid_SxB: bool; padding positions (False) code nothing. ``None`` = all valid.

    Returns:
      (buf_BxN, lengths_B): uint8 bytes of each stream in ``buf_BxN[b, :lengths_B[b]]`` (zeros
      after), ``N = buffer_bytes(S)``; int32 lengths, each ``STATE_BYTES + renorm bytes``.
    """
    S, B = start_SxB.shape
    if valid_SxB is None:
        valid_SxB = jnp.ones((S, B), bool)
    start_SxB, freq_SxB = start_SxB.astype(_u32), freq_SxB.astype(_u32)
    x0 = (jnp.ones((B,), _u32), jnp.zeros((B,), _u32))  # L = 2**32
    (hi, lo), (bytes_SxBx3, count_SxB) = jax.lax.scan(
        _encode_position, x0, (start_SxB, freq_SxB, valid_SxB.astype(bool)), reverse=True)
    # Read order = reverse emission order: the final state (most significant byte first), then
    # position 0's bytes last-emitted first, then position 1's, ... A prefix sum over positions
    # gives every byte its place; one scatter writes them (non-emitted slots go out of range).
    N = buffer_bytes(S)
    before_SxB = jnp.cumsum(count_SxB, 0) - count_SxB
    k = jnp.arange(MAX_BYTES_PER_SYMBOL)
    pos_SxBx3 = STATE_BYTES + before_SxB[..., None] + count_SxB[..., None] - 1 - k
    pos_SxBx3 = jnp.where(k < count_SxB[..., None], pos_SxBx3, N)
    rows = jnp.broadcast_to(jnp.arange(B)[None, :, None], pos_SxBx3.shape)
    buf = jnp.zeros((B, N), jnp.uint8).at[rows, pos_SxBx3].set(bytes_SxBx3, mode="drop")
    state_Bx5 = jnp.stack([hi & _MASK8, lo >> 24, (lo >> 16) & _MASK8, (lo >> 8) & _MASK8, lo & _MASK8],
                          -1).astype(jnp.uint8)
    buf = buf.at[:, :STATE_BYTES].set(state_Bx5)
    return buf, STATE_BYTES + count_SxB.sum(0)


# ---- decoder --------------------------------------------------------------------------------
class DecoderState(NamedTuple):
    """The B decoders: a pytree, carried through ``lax.scan`` (and across jitted steps).

    Attributes:
      buf_BxN: uint8 payload of each stream (as :func:`encode_segment` returns it).
      length_B: int32 bytes that belong to each stream.
      ptr_B: int32 read pointer (next byte to read).
      hi_B, lo_B: uint32 halves of the 40-bit state ``x = hi * 2**32 + lo``.
      err_B: bool, set (and kept) by a read past ``length_B``, a state outside ``[L, 2**8 L)`` or
        an invalid table; decoding then continues with garbage but never raises.
    """

    buf_BxN: jax.Array
    length_B: jax.Array
    ptr_B: jax.Array
    hi_B: jax.Array
    lo_B: jax.Array
    err_B: jax.Array


def _read(buf_BxN, length_B, ptr_B, n: int):
    """Bytes ``ptr .. ptr + n - 1`` of each stream as uint32 (0 where out of range) + in-range mask."""
    N = buf_BxN.shape[1]
    idx_Bxn = ptr_B[:, None] + jnp.arange(n, dtype=jnp.int32)
    ok_Bxn = (idx_Bxn >= 0) & (idx_Bxn < jnp.minimum(length_B, N)[:, None])
    got = jnp.take_along_axis(buf_BxN, jnp.clip(idx_Bxn, 0, N - 1), 1).astype(_u32)
    return jnp.where(ok_Bxn, got, _u32(0)), ok_Bxn


def decoder_init(buf_BxN: jax.Array, lengths_B: jax.Array) -> DecoderState:
    """Starts B decoders on their segments (reads each stream's 5-byte final encoder state).

    Args:
      buf_BxN: uint8 payloads, stream ``b`` in ``buf_BxN[b, :lengths_B[b]]``.
      lengths_B: int bytes of each stream.

    Returns:
      The decoder state; ``err_B`` is already set for a stream shorter than 5 bytes or longer
      than ``N``, or whose first state byte is 0 (a state below ``L``).
    """
    buf_BxN = jnp.asarray(buf_BxN, jnp.uint8)
    length_B = jnp.asarray(lengths_B, jnp.int32)
    B, N = buf_BxN.shape
    b_Bx5, ok_Bx5 = _read(buf_BxN, length_B, jnp.zeros((B,), jnp.int32), STATE_BYTES)
    hi = b_Bx5[:, 0]
    lo = (b_Bx5[:, 1] << 24) | (b_Bx5[:, 2] << 16) | (b_Bx5[:, 3] << 8) | b_Bx5[:, 4]
    err = ~ok_Bx5.all(1) | (length_B > N) | (hi == 0)
    return DecoderState(buf_BxN, length_B, jnp.full((B,), STATE_BYTES, jnp.int32), hi, lo, err)


_W = 16  # block width of the two-level symbol search


def _lookup(freq_BxV, slot_B):
    """The symbol whose range ``[start, start + f)`` holds ``slot`` (exact, two-level search).

    A cumsum over all V entries at every position is the slowest part of a step on CPU (~4x
    this search, measured); instead the table is cut into blocks of ``_W``: the block comes
    from the cumulative block totals, the symbol from a cumsum inside that block only. A zero
    entry has an empty range and is never chosen. Counting inclusive cumulative sums
    ``<= slot`` is exact: they are uint32 and end at ``M > slot`` for a valid table.

    Returns:
      (sym_B int32, start_B, f_B uint32, bad_B: not a valid table, e.g. not summing to ``M``).
    """
    B, V = freq_BxV.shape
    pad = -V % _W  # zero-frequency padding leaves every count unchanged
    blocks_BxKxW = jnp.pad(freq_BxV, ((0, 0), (0, pad))).reshape(B, -1, _W)
    tot_BxK = blocks_BxKxW.sum(-1, dtype=_u32)
    ctot_BxK = jnp.cumsum(tot_BxK, -1, dtype=_u32)
    K = ctot_BxK.shape[1]
    j_B = jnp.minimum((ctot_BxK <= slot_B[:, None]).sum(-1, dtype=jnp.int32), K - 1)
    base_B = jnp.take_along_axis(ctot_BxK - tot_BxK, j_B[:, None], 1)[:, 0]
    row_BxW = jnp.take_along_axis(blocks_BxKxW, j_B[:, None, None], 1)[:, 0]
    cin_BxW = base_B[:, None] + jnp.cumsum(row_BxW, -1, dtype=_u32)
    i_B = jnp.minimum((cin_BxW <= slot_B[:, None]).sum(-1, dtype=jnp.int32), _W - 1)
    sym_B = j_B * _W + i_B
    f_B = jnp.take_along_axis(row_BxW, i_B[:, None], 1)[:, 0]
    start_B = jnp.take_along_axis(cin_BxW, i_B[:, None], 1)[:, 0] - f_B
    bad_B = (ctot_BxK[:, -1] != _u32(M)) | (sym_B >= V) | (f_B == 0)
    return jnp.minimum(sym_B, V - 1), start_B, f_B, bad_B


def decode_step(state: DecoderState, freq_BxV: jax.Array, valid_B: jax.Array | None = None):
    """Pops one symbol per stream under its quantised table (usable inside ``lax.scan``).

    Args:
      state: from :func:`decoder_init` or the previous step.
      freq_BxV: uint32 tables from :func:`quantize` (the same ones the encoder used).
      valid_B: bool; streams at a padding position (False) decode nothing: their state is
        unchanged and their symbol is 0. ``None`` = all valid.

    Returns:
      (sym_B int32, new state).
    """
    buf, length, ptr, hi, lo, err = state
    B, V = freq_BxV.shape
    valid = jnp.ones((B,), bool) if valid_B is None else jnp.asarray(valid_B, bool)
    freq_BxV = freq_BxV.astype(_u32)
    bad_state = (hi == 0) | (hi > _MASK8)
    slot = lo & _u32(M - 1)
    sym, start, f, bad_table = _lookup(freq_BxV, slot)
    # x = f * (x >> 24) + slot - start, as v * 2**8 + u with one carry (bounds: module docstring).
    a = (hi << 8) | (lo >> 24)
    u = f * (a & _MASK8) + (slot - start)
    v = f * (a >> 8)
    nlo = (v << 8) + u
    nhi = (v >> 24) + (nlo < u).astype(_u32)
    got_Bx3, ok_Bx3 = _read(buf, length, ptr, MAX_BYTES_PER_SYMBOL)
    n_read = jnp.zeros((B,), jnp.int32)
    overrun = jnp.zeros((B,), bool)
    for k in range(MAX_BYTES_PER_SYMBOL):  # unrolled renormalisation: at most 3 reads
        need = nhi == 0
        nhi = jnp.where(need, nlo >> 24, nhi)
        nlo = jnp.where(need, (nlo << 8) | got_Bx3[:, k], nlo)
        n_read = n_read + need.astype(jnp.int32)
        overrun = overrun | (need & ~ok_Bx3[:, k])
    new = DecoderState(
        buf, length,
        jnp.where(valid, ptr + n_read, ptr),
        jnp.where(valid, nhi, hi),
        jnp.where(valid, nlo, lo),
        err | (valid & (bad_state | bad_table | overrun)),
    )
    return jnp.where(valid, sym, 0), new


def decoder_finish(state: DecoderState) -> jax.Array:
    """ok_B: the stream decoded cleanly, consumed exactly its bytes and ended in state ``L``."""
    return ~state.err_B & (state.ptr_B == state.length_B) & (state.hi_B == 1) & (state.lo_B == 0)


@jax.jit
def decode_segment(buf_BxN: jax.Array, lengths_B: jax.Array, freq_SxBxV: jax.Array,
                   valid_SxB: jax.Array | None = None):
    """Decodes a whole segment under known tables (tests and benchmarks; the coding step
    calls :func:`decode_step` itself, with tables made inside the scan).

    Returns:
      (sym_SxB int32, ok_B bool).
    """
    S, B, _ = freq_SxBxV.shape
    if valid_SxB is None:
        valid_SxB = jnp.ones((S, B), bool)

    def body(st, inp):
        sym, st = decode_step(st, *inp)
        return st, sym

    st, sym_SxB = jax.lax.scan(body, decoder_init(buf_BxN, lengths_B), (freq_SxBxV, valid_SxB))
    return sym_SxB, decoder_finish(st)


# ---- host-side helpers ----------------------------------------------------------------------
@jax.jit
def encode_tables(probs_SxBxV: jax.Array, syms_SxB: jax.Array, valid_SxB: jax.Array):
    """Quantises S x B float tables and codes the given symbols under them (tests, tools).

    Returns:
      (freq_SxBxV, start_SxB, f_SxB, buf_BxN, lengths_B): the quantised tables, each coded
      symbol's range, and :func:`encode_segment`'s output.
    """
    freq_SxBxV = quantize(probs_SxBxV)
    start_SxB, f_SxB = symbol_ranges(freq_SxBxV, syms_SxB)
    buf, lengths = encode_segment(start_SxB, f_SxB, valid_SxB)
    return freq_SxBxV, start_SxB, f_SxB, buf, lengths


def stream_bytes(buf_BxN, lengths_B) -> list[bytes]:
    """The payload of each stream as ``bytes`` (what a container stores)."""
    buf, n = np.asarray(buf_BxN), np.asarray(lengths_B)
    return [buf[b, : n[b]].tobytes() for b in range(buf.shape[0])]


def round_trip(probs_SxBxV, syms_SxB, valid_SxB=None) -> dict:
    """Quantises, encodes and decodes (a craystack-style check; for tests).

    Args:
      probs_SxBxV: float32 probabilities of every position of every stream.
      syms_SxB: the symbols to code.
      valid_SxB: bool mask of positions that hold data (``None`` = all).

    Returns:
      dict with ``decoded`` (int32 SxB, 0 at padding), ``ok`` (bool B, from
      :func:`decoder_finish`), ``lengths`` (int B bytes), ``buf`` (uint8 BxN), ``freq``
      (uint32 SxBxV quantised tables) and ``exact`` (every valid symbol came back and every
      stream is ok).
    """
    probs_SxBxV = jnp.asarray(probs_SxBxV, jnp.float32)
    syms_SxB = jnp.asarray(syms_SxB, jnp.int32)
    valid_SxB = jnp.ones(syms_SxB.shape, bool) if valid_SxB is None else jnp.asarray(valid_SxB, bool)
    freq, _, _, buf, lengths = encode_tables(probs_SxBxV, syms_SxB, valid_SxB)
    decoded, ok = decode_segment(buf, lengths, freq, valid_SxB)
    decoded, ok, valid = np.asarray(decoded), np.asarray(ok), np.asarray(valid_SxB)
    exact = bool(ok.all() and np.array_equal(np.where(valid, decoded, 0), np.where(valid, np.asarray(syms_SxB), 0)))
    return {"decoded": decoded, "ok": ok, "lengths": np.asarray(lengths), "buf": np.asarray(buf),
            "freq": np.asarray(freq), "exact": exact}
