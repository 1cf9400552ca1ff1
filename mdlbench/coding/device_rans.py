"""rANS entropy coding inside a compiled JAX program: integer-only, vectorised over B streams.

The host coder (``code.coder=host``) stops the device at every coded position with an ordered
``io_callback`` to constriction's range coder. This module is the coder of ``code.coder=device``,
which runs *inside* the jitted step instead: B independent rANS coders (one state and one byte
buffer per stream), written with uint32 operations only (add, multiply mod 2**32, shift,
compare, unsigned divide), whose results are the same bits on every backend; only the quantiser
touches floats (elementwise IEEE ops and one max, all exact given the float32 inputs). Decoding
needs no callback: the payload of a segment is a device array, and each stream keeps its own
read pointer into it.

Use in the coding step (``mdlbench.codes.prequential``): tables are made per position inside the
scan with :func:`quantize`, at the precision :func:`ramp_precision` gives each position (full,
24 bits, except over a segment's last 15 positions of each stream). The encoder, which knows the
data, collects ``symbol_ranges(freq, x)`` for every position of a segment (all its steps) and
calls :func:`encode_segment` once when the segment is sealed. The decoder starts each segment
with :func:`decoder_init`, carries the per-stream words of :class:`DecoderState` through the
scan (and from step to step; the byte buffer stays an argument), pops each position's byte with
:func:`decode_step` and ends the segment with :func:`decoder_finish`. Both sides make the tables
with the same compiled program, as they do the probabilities.

A coder stream here need not be one model stream: every coder stream of every segment pays a
flush of ~10 bits (below), so the coding step lets one coder stream (a *lane*) serve several
model streams in turn at each position (``code.coder_lanes``), which this module does not see:
it codes whatever sequence of tables it is given.

Why rANS and not a range coder with carry
-----------------------------------------
* A range coder's low end can carry into bytes that were already written, an unbounded
  distance back (or it needs carry-less tricks that lose precision and add underflow cases).
  That is data-dependent control flow and a scatter into the past of every stream. rANS has one
  integer state, no carry, and at most :data:`MAX_BYTES_PER_SYMBOL` renormalisation bytes per
  symbol, so each step is a fixed, fully unrolled sequence of vector operations: it cannot hang.
* The decoder, which is the side that runs inside the model's per-position scan, uses no
  division: multiplies, adds and shifts. Only the encoder divides.
* The price is that rANS is LIFO: the encoder must run in reverse over a buffered *segment*.
  The prequential encoder knows the data, so it collects (start, freq) of every position of a
  segment and codes them when the segment is sealed (:func:`encode_segment`, on the host's
  CPU); the decoder then reads forward, position by position, with :func:`decode_step`.

Precision and bounds (all arithmetic is uint32, no intermediate wraps)
-----------------------------------------------------------------------
Constants: ``PREC = 24``, ``M = 2**24`` (the full table total), ``L = 2**32``, byte-wise
renormalisation. A position's table has precision ``m`` in ``[PREC_MIN, PREC] = [9, 24]``:
total ``2**m``, ``freq[s] >= 1``, ``c = start[s] = sum(freq[:s])``, ``c + f <= 2**m``, so
``f <= 2**m - 1`` for ``V >= 2``. The state ``x < 2**8 L = 2**40`` is held as two uint32 words
``hi = x >> 32`` (``< 2**8``) and ``lo``. While a stream still has bytes to read, its state is
in ``I = [L, 2**8 L)``; below ``L`` only at the very end of a segment (next section). The
headroom ``L / M = 2**8`` is what makes the coder accurate: with a plain 32-bit state and
``L = M = 2**23`` the rANS approximation costs ~0.24% (measured at 3 bits/symbol), and with
``L = 2**24``, ``M = 2**21`` still ~0.007% plus 8x the cost of giving every symbol at least one
quantum; with ``M = 2**24`` that cost is below 2.2e-5 bits/symbol. This is the precision of
constriction's ``AnsCoder`` (24-bit tables, ``L / M = 2**8``), which the bits-back codes use.

Encode ``(c, f)`` at precision ``m`` from ``x``:

1. Renormalise: while ``x >= x_max = 2**(40 - m) f`` emit ``x mod 2**8``, ``x <- x >> 8``.
   ``x_max < 2**40`` is the pair ``(f >> (m - 8), (f << (40 - m)) mod 2**32)``. As ``x < 2**40``
   and ``x_max >= 2**16``, at most 3 bytes are emitted. Afterwards ``x < 2**(40 - m) f``, and
   ``x >= 2**(32 - m) f`` if a byte was emitted or ``x >= L`` was true.
2. ``q = x // f`` by long division in base 2**8 from the top byte: every partial
   ``t = (r << 8) | byte < 2**8 f <= 2**32``, every digit ``< 2**8``; ``q < 2**(40 - m)``.
   At ``m = 24``, ``x >> 16 < f`` is already a remainder and two digits do.
3. ``x' = q 2**m + r + c``: ``r + c < f + c <= 2**m``, so ``hi = q >> (32 - m)``,
   ``lo = (q << m) | (r + c)`` (the shift wraps mod 2**32 by design); ``x' < 2**40``, and
   ``x' >= L`` whenever ``q >= 2**(32 - m)``, i.e. after an emission or from ``x >= L``: once a
   state reaches ``L`` it stays there.

Decode at precision ``m``: ``slot = x mod 2**m`` picks the symbol ``s`` with
``c <= slot < c + f`` (count of inclusive cumulative frequencies ``<= slot``, in two levels of
16-entry blocks; exact: the uint32 sums end at ``2**m < 2**32``). With
``a = x >> m = (hi << (32 - m)) | (lo >> m) < 2**(40 - m)``, split ``a = a_1 2**8 + a_0``:
``u = f a_0 + (slot - c) < 2**8 f <= 2**32`` and ``v = f a_1 < 2**32``, and
``x = f a + slot - c = v 2**8 + u`` is assembled with one explicit carry. From a state in
``I`` it is at least ``2**(32 - m) f >= 2**8``, so renormalising (while ``x < L`` *and the
stream has a byte left*: ``x <- (x << 8) | next byte``) reads at most 3 bytes; each read has
``hi == 0``, so ``hi <- lo >> 24``, ``lo <- (lo << 8) | byte``.

Quantisation (:func:`quantize`) happens inside the program: ``f = 1 + floor(p (2**m - V))`` per
symbol in float32 (one multiply by an exactly representable scale: no FMA, correctly rounded on
every IEEE backend), then the integer residual ``2**m - sum(f)`` (usually ``+0 .. +V``) goes to
a largest entry, chosen by one exact float32 max. For ``V <= 256`` the uint32 sum cannot
overflow: ``V (M - V + 1) < 2**32``. Loss at full precision: a symbol with ``p ~ 0`` costs the
others at most ``1/M`` of mass, so at most ``V / M * log2(e) < 2.2e-5`` bits/symbol over the
float ideal; rounding loss is second order. Measured (expected cost over entropy): +1.5e-8 on a
real LSTM + n-gram model's tables (book1, 2.7 bits/byte), +4e-6 on synthetic text-like tables
at 2.5 bits with ~170 bytes below 2**-24, +2.5e-5 on sharper ones at 0.8 bits (the floor cost).

Coded length: the state starts at 0, the tables end coarse
----------------------------------------------------------
A stream's segment is its final state, most significant byte first, in as few bytes as it
needs (5 once it is ``>= L``; no leading zero byte), then its renormalisation bytes in the
order the decoder reads them. The rANS identity ``8 n + log2(x_final) ~ I_q + log2(x_init)``
(``I_q = sum log2(2**m / f)``, ``n`` renormalisation bytes) says what the encoder's *initial*
state costs: ``log2(x_init)`` bits of nothing. Starting at ``L`` (the textbook choice) costs
32 bits, plus the rounding of the final state to 40 bits: 32-40 bits (mean ~36) per stream
per segment, ~580 bits for 16 streams, 0.17% of a 152 kB text at 2.2 bits/byte. So:

* The encoder starts at ``X_INIT = 0``. Below ``L`` the coder is exact rANS all the same
  (the arithmetic above holds for any ``x < 2**40``); the decoder tells where it is by the
  bytes it has left: it renormalises only while bytes remain, and a state below ``L`` with
  bytes left is an error. This is exactly the inverse of the encoder: a state below ``L``
  occurs only before (in encoding order) any byte was emitted, since an emission or a state
  ``>= L`` leads to ``x' >= L`` for good (step 3), so when the decoder's state is below ``L``
  its stream has no bytes left, and an emission of ``k`` bytes is read back by exactly ``k``
  reads (``x_pre >> 8 < L`` for the first ``k - 1``, the stream ends or ``x_pre >= L`` after).
  A cleanly decoded segment ends in state 0 with every byte read.
* A small state codes poorly at full precision: from ``x = 0`` the first symbol encoded (the
  segment's last position) becomes ``x' = c``, costing ``log2 c`` (up to 24 bits) instead of
  ``log2(2**24 / f)``, the next ones still more than they should while ``x`` is below ``f``: about
  19 bits a stream in all (measured). The fix is coarse tables where the state is small: a
  stream's last position in a segment is coded at ``m = PREC_MIN = 9``, each one before it at
  one bit more, full precision from 15 positions before the end (:func:`ramp_precision`); both
  sides know the positions from the layout. The coarser tables cost a bit or two over the full
  ones on those 15 positions.

Measured over full-precision ideal, 2048-position streams of text-like tables (2-3 bits/symbol):
start at ``L`` 32-40 bits per stream (mean ~36); start at 0, full precision 15-29 (mean 22.8);
start at 0 with the ramp 0-16 (mean ~10, of which ~4 is the rounding to whole bytes, which no
scheme with byte-aligned streams avoids). Against the tables actually used, a stream's segment
costs between about ``-2 PREC_MIN`` and ``+17`` bits (mean ~8.5); :data:`FLUSH_BITS_MAX` is the
bound the tests use. The rANS approximation itself costs < 1e-5 relative at full precision.

Integrity
---------
The decoder's ``err_B`` bit records a state that cannot occur in a valid stream (``>= 2**40``,
or below ``L`` with bytes left), a non-canonical final-state field (a leading zero byte), a
stream longer than its buffer or an invalid table, instead of raising inside jit;
:func:`decoder_finish` also requires state 0 with every byte read. Each decode step is the
exact inverse of an encode step (it restores the state the encoder had and reads back exactly
the bytes it emitted), so a stream that passes :func:`decoder_finish` is *exactly* the encoding
of the symbols it decoded under the tables it saw: a corrupted payload either fails the check
or decodes to other symbols, which the caller's sha256 of the data refuses. The check alone is
weaker than with a start at ``L`` (where a wrong end state had odds ~2**-40): state 0 absorbs a
stream whose bytes ran out, so it catches about half of random byte flips and few truncations;
the sha256 catches the rest, and the 30-odd bits per stream that a stronger check would cost
buy nothing it does not. Every step is a fixed sequence of operations: corrupt input cannot
crash or hang the decoder.

This is the one module of :mod:`mdlbench.coding` that imports JAX: import it where JAX may
start (inside the program, after :func:`mdlbench.coding.env.pin`), never at package import.
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

# What a container records as its coder (``header["coder"]``): the decoder refuses any other.
NAME = ("device-rans-24 (mdlbench.coding.device_rans: rANS, 24-bit tables, 9..23-bit over a segment's "
        "last 15 positions, 40-bit state from 0, byte renormalisation)")
PREC = 24
M = 1 << PREC  # table total
STATE_BYTES = 5  # the 40-bit final state, at most
X_INIT = 0  # the encoder's initial state = the state a cleanly decoded segment ends in
PREC_MIN = 9  # the coarsest tables, at a stream's last position in a segment (2**9 >= 2 * MAX_V)
FLUSH_BITS_MAX = 32  # a bound on what a stream's segment costs over its quantised ideal (observed <= 17)
MAX_BYTES_PER_SYMBOL = 3  # a symbol with f = 1 costs 24 bits
MAX_V = 256  # the uint32 table sum in quantize() cannot overflow up to here
_MASK8 = 0xFF

_u32 = jnp.uint32


def buffer_bytes(n_positions: int) -> int:
    """Bytes per stream that always hold a segment of ``n_positions`` symbols (worst case)."""
    return MAX_BYTES_PER_SYMBOL * int(n_positions) + STATE_BYTES


def ramp_precision(remaining_x) -> np.ndarray:
    """Table precision (bits) of a position followed by ``remaining_x`` valid positions of the
    same stream in the same segment: :data:`PREC_MIN` at the last one, one bit more per
    position before it, :data:`PREC` from 15 positions before the end (module docstring).

    Both sides compute it from the layout, on the host (numpy, uint32)."""
    return np.minimum(PREC, PREC_MIN + np.maximum(np.asarray(remaining_x, np.int64), 0)).astype(np.uint32)


def _totals(prec_x, V: int):
    """(table total 2**prec as uint32, the float32 scale 2**prec - V) for rows of precision ``prec_x``."""
    if prec_x is None:
        return _u32(M), jnp.float32(M - V)
    total = _u32(1) << jnp.asarray(prec_x, _u32)
    return total, (total - _u32(V)).astype(jnp.float32)  # exact: < 2**24


# ---- tables ---------------------------------------------------------------------------------
def quantize(probs_xV: jax.Array, prec_x: jax.Array | None = None) -> jax.Array:
    """Quantises probability tables to integer frequencies summing to exactly ``2**prec``.

    Works on any leading shape (``probs_BxV``, ``probs_SxBxV``). Deterministic from float32
    inputs: elementwise IEEE operations (a multiply by ``2**prec - V``, exactly representable;
    ``1 + p``; a floor), one float max and integer arithmetic, all exact or correctly rounded,
    so any two runs on the same float32 probabilities get identical tables, on any backend (a
    denormal ``p`` gives ``f = 1`` whether or not the backend flushes it to zero).

    Args:
      probs_xV: probabilities over ``V`` symbols (2 <= V <= 256) on the last axis; they should
        sum to ~1 (``exp(log_softmax)``). Negative, NaN entries count as 0, +inf as 1; tables
        far from normalised still give a valid (if poor) table: uniform when the residual
        cannot be absorbed.
      prec_x: per-row precision in ``[PREC_MIN, PREC]`` (uint32, the leading shape); ``None``
        = ``PREC`` everywhere (the same tables as ``prec_x = PREC``, bit for bit).

    Returns:
      freq_xV: uint32, every entry >= 1, each row summing to ``2**prec`` (``M`` by default). The
      rounding residual lies on a largest entry (the first of those within 2**-15 of the
      largest probability).
    """
    V = probs_xV.shape[-1]
    if not 2 <= V <= MAX_V:
        raise ValueError(f"device rANS tables need 2 <= V <= {MAX_V} symbols, got {V}")
    p = jnp.asarray(probs_xV, jnp.float32)
    p = jnp.minimum(jnp.where(p > 0, p, jnp.float32(0)), jnp.float32(1))  # NaN > 0 is False
    M_x, scale_x = _totals(prec_x, V)
    scale_x1 = scale_x if prec_x is None else scale_x[..., None]
    f = jnp.floor(p * scale_x1).astype(_u32) + _u32(1)  # in [1, 2**prec - V + 1]
    total = f.sum(-1, dtype=_u32)  # <= V (M - V + 1) < 2**32: no wrap
    # The residual goes to a largest entry, found with ONE float32 max (an argmax, a uint32 max
    # or a second reduction are 3-10x slower per position on CPU). The key is 1 + p (in [1, 2]:
    # normal floats, never denormal, so no flush-to-zero differences) with its low 8 mantissa
    # bits replaced by 255 - index; non-negative floats order as their bit patterns, so the
    # max picks, among the entries within 2**-15 of the largest p, the first. That entry has
    # f >= (max p - 2**-15) (M - V) > 60000 >> any excess of a near-normalised table (with the
    # coarse tables of a segment's end the excess is 0 or 1 and that f >= 2 for V = 256).
    bits = jax.lax.bitcast_convert_type(p + jnp.float32(1), _u32)
    key = jax.lax.bitcast_convert_type((bits & _u32(0xFFFFFF00)) | (_u32(V - 1) - jnp.arange(V, dtype=_u32)),
                                       jnp.float32)
    am = (_u32(V - 1) - (jax.lax.bitcast_convert_type(key.max(-1), _u32) & _u32(_MASK8))).astype(jnp.int32)
    f_am = jnp.take_along_axis(f, am[..., None], -1)[..., 0]
    over = total > M_x
    excess = jnp.where(over, total - M_x, _u32(0))
    deficit = jnp.where(over, _u32(0), M_x - total)
    fits = f_am > excess  # the largest keeps >= 1 after giving back the excess
    f = jnp.where(jnp.arange(V) == am[..., None], (f_am - excess + deficit)[..., None], f)
    # Unreachable for normalised inputs (the excess is then a few quanta); keeps garbage valid.
    M_x1 = jnp.asarray(M_x)[..., None]
    uniform = M_x1 // _u32(V) + jnp.where(jnp.arange(V) == 0, M_x1 % _u32(V), _u32(0))
    return jnp.where(fits[..., None], f, uniform)


def symbol_ranges(freq_xV: jax.Array, sym_x: jax.Array) -> tuple[jax.Array, jax.Array]:
    """(start, freq) of each symbol under its table: what :func:`encode_segment` takes.

    Args:
      freq_xV: quantised tables (uint32, rows summing to ``2**prec``).
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
    start, f, valid, m = inp  # m: the table's precision, in [PREC_MIN, PREC]
    xmax_hi, xmax_lo = f >> (m - 8), f << (40 - m)  # x_max = 2**(40 - m) f as a (hi, lo) pair
    bytes_, emits = [], []
    for _ in range(MAX_BYTES_PER_SYMBOL):  # unrolled: at most 3 emissions, no data-dependent loop
        emit = valid & ((hi > xmax_hi) | ((hi == xmax_hi) & (lo >= xmax_lo)))
        bytes_.append((lo & _MASK8).astype(jnp.uint8))
        emits.append(emit)
        lo = jnp.where(emit, (lo >> 8) | (hi << 24), lo)
        hi = jnp.where(emit, hi >> 8, hi)
    f1 = jnp.maximum(f, _u32(1))  # a zero f is a caller error; keep the division defined
    # x // f by long division in base 2**8 from the top byte: each partial t = (r << 8) | byte
    # is < 2**8 f <= 2**32, each digit < 2**8. At full precision (m = 24, all but a segment's
    # last 15 positions) x >> 16 < f is already a remainder, so two digits do.
    full = m == _u32(PREC)
    r = jnp.where(full, (hi << 16) | (lo >> 16), _u32(0))
    q = jnp.zeros_like(lo)
    for k, byte in enumerate([hi, lo >> 24, (lo >> 16) & _MASK8, (lo >> 8) & _MASK8, lo & _MASK8]):
        t = (r << 8) | byte
        qk, rk = t // f1, t % f1
        use = ~full | (k >= 3)
        q = jnp.where(use, (q << 8) | qk, q)
        r = jnp.where(use, rk, r)
    # x' = q 2**m + r + c: q < 2**(40 - m), r + c < 2**m.
    hi = jnp.where(valid, q >> (32 - m), hi)
    lo = jnp.where(valid, (q << m) | (r + start), lo)
    count = sum(e.astype(jnp.int32) for e in emits)  # emissions are a prefix of the 3 slots
    return (hi, lo), (jnp.stack(bytes_, -1), count)


@jax.jit
def encode_segment(start_SxB: jax.Array, freq_SxB: jax.Array, valid_SxB: jax.Array | None = None,
                   prec_SxB: jax.Array | None = None):
    """Codes a segment of S positions of B streams with rANS (one coder per stream).

    Runs a ``lax.scan`` in reverse over the positions (rANS is LIFO), then lays each stream's
    bytes out in the order the decoder reads them, so decoding goes forward from position 0.

    Args:
      start_SxB: uint32 start of each coded symbol under its quantised table
        (:func:`symbol_ranges`).
      freq_SxB: uint32 frequency of each coded symbol (>= 1 where valid).
      valid_SxB: bool; padding positions (False) code nothing. ``None`` = all valid.
      prec_SxB: uint32 precision of each position's table (:func:`ramp_precision`); ``None`` =
        ``PREC`` everywhere.

    Returns:
      (buf_BxN, lengths_B): uint8 bytes of each stream in ``buf_BxN[b, :lengths_B[b]]`` (zeros
      after), ``N = buffer_bytes(S)``; int32 lengths, each ``final-state bytes (0..5) + renorm
      bytes``.
    """
    S, B = start_SxB.shape
    if valid_SxB is None:
        valid_SxB = jnp.ones((S, B), bool)
    start_SxB, freq_SxB = start_SxB.astype(_u32), freq_SxB.astype(_u32)
    prec_SxB = jnp.full((S, B), PREC, _u32) if prec_SxB is None else jnp.asarray(prec_SxB, _u32)
    x0 = (jnp.zeros((B,), _u32), jnp.full((B,), X_INIT, _u32))  # X_INIT = 0: nothing to flush
    (hi, lo), (bytes_SxBx3, count_SxB) = jax.lax.scan(
        _encode_position, x0, (start_SxB, freq_SxB, valid_SxB.astype(bool), prec_SxB), reverse=True)
    # The final state goes first, in as few bytes as it needs (most significant first, no
    # leading zero byte; 5 once it is >= L, 0 when it is still 0). Then the renormalisation
    # bytes in read order = reverse emission order: position 0's last-emitted first, then
    # position 1's, ... A prefix sum over positions places every byte; one scatter writes them
    # (non-emitted slots go out of range).
    N = buffer_bytes(S)
    flush_B = jnp.where(hi > 0, 5, (lo > 0).astype(jnp.int32) + (lo > 0xFF) + (lo > 0xFFFF) + (lo > 0xFFFFFF))
    before_SxB = jnp.cumsum(count_SxB, 0) - count_SxB
    k = jnp.arange(MAX_BYTES_PER_SYMBOL)
    pos_SxBx3 = flush_B[:, None] + before_SxB[..., None] + count_SxB[..., None] - 1 - k
    pos_SxBx3 = jnp.where(k < count_SxB[..., None], pos_SxBx3, N)
    rows = jnp.broadcast_to(jnp.arange(B)[None, :, None], pos_SxBx3.shape)
    buf = jnp.zeros((B, N), jnp.uint8).at[rows, pos_SxBx3].set(bytes_SxBx3, mode="drop")
    state_Bx5 = jnp.stack([hi & _MASK8, lo >> 24, (lo >> 16) & _MASK8, (lo >> 8) & _MASK8, lo & _MASK8],
                          -1).astype(jnp.uint8)
    j = jnp.arange(STATE_BYTES)
    src_Bx5 = jnp.clip(STATE_BYTES - flush_B[:, None] + j, 0, STATE_BYTES - 1)  # the last `flush` bytes
    dst_Bx5 = jnp.where(j < flush_B[:, None], j, N)
    buf = buf.at[jnp.arange(B)[:, None], dst_Bx5].set(jnp.take_along_axis(state_Bx5, src_Bx5, 1), mode="drop")
    return buf, flush_B + count_SxB.sum(0)


# ---- decoder --------------------------------------------------------------------------------
class DecoderState(NamedTuple):
    """The B decoders: a pytree, carried through ``lax.scan`` (and across jitted steps).

    Attributes:
      buf_BxN: uint8 payload of each stream (as :func:`encode_segment` returns it).
      length_B: int32 bytes that belong to each stream.
      ptr_B: int32 read pointer (next byte to read).
      hi_B, lo_B: uint32 halves of the 40-bit state ``x = hi * 2**32 + lo``.
      err_B: bool, set (and kept) by a state that cannot occur in a valid stream (``>= 2**8 L``,
        or below ``L`` while bytes remain), a non-canonical or too long stream, or an invalid
        table; decoding then continues with garbage but never raises.
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
    """Starts B decoders on their segments (reads each stream's final encoder state).

    The state starts at 0 and takes bytes while it is below ``L`` and the stream has bytes
    left: 5 bytes for a final state ``>= L``, fewer (0 for a state of 0) for a short segment
    that never reached ``L`` (see the module docstring).

    Args:
      buf_BxN: uint8 payloads, stream ``b`` in ``buf_BxN[b, :lengths_B[b]]``.
      lengths_B: int bytes of each stream.

    Returns:
      The decoder state; ``err_B`` is already set for a stream longer than ``N``, one whose first
      byte is 0 (the encoder writes no leading zero byte), or one still below ``L`` after 5 bytes
      with bytes left.
    """
    buf_BxN = jnp.asarray(buf_BxN, jnp.uint8)
    length_B = jnp.asarray(lengths_B, jnp.int32)
    B, N = buf_BxN.shape
    b_Bx5, ok_Bx5 = _read(buf_BxN, length_B, jnp.zeros((B,), jnp.int32), STATE_BYTES)
    hi, lo = jnp.zeros((B,), _u32), jnp.zeros((B,), _u32)
    ptr = jnp.zeros((B,), jnp.int32)
    for k in range(STATE_BYTES):  # unrolled: reads are a prefix (once hi > 0 or the bytes end)
        need = (hi == 0) & ok_Bx5[:, k]
        hi = jnp.where(need, lo >> 24, hi)
        lo = jnp.where(need, (lo << 8) | b_Bx5[:, k], lo)
        ptr = ptr + need.astype(jnp.int32)
    err = (length_B > N) | (length_B < 0) | (ok_Bx5[:, 0] & (b_Bx5[:, 0] == 0)) | ((hi == 0) & (ptr < length_B))
    return DecoderState(buf_BxN, length_B, ptr, hi, lo, err)


_W = 16  # block width of the two-level symbol search


def _lookup(freq_BxV, slot_B, M_B):
    """The symbol whose range ``[start, start + f)`` holds ``slot`` (exact, two-level search).

    A cumsum over all V entries at every position is the slowest part of a step on CPU (~4x
    this search, measured); instead the table is cut into blocks of ``_W``: the block comes
    from the cumulative block totals, the symbol from a cumsum inside that block only. A zero
    entry has an empty range and is never chosen. Counting inclusive cumulative sums
    ``<= slot`` is exact: they are uint32 and end at ``M > slot`` for a valid table.

    Returns:
      (sym_B int32, start_B, f_B uint32, bad_B: not a valid table, e.g. not summing to ``M_B``).
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
    bad_B = (ctot_BxK[:, -1] != M_B) | (sym_B >= V) | (f_B == 0)
    return jnp.minimum(sym_B, V - 1), start_B, f_B, bad_B


def decode_step(state: DecoderState, freq_BxV: jax.Array, valid_B: jax.Array | None = None,
                prec_B: jax.Array | None = None):
    """Pops one symbol per stream under its quantised table (usable inside ``lax.scan``).

    Args:
      state: from :func:`decoder_init` or the previous step.
      freq_BxV: uint32 tables from :func:`quantize` (the same ones the encoder used).
      valid_B: bool; streams at a padding position (False) decode nothing: their state is
        unchanged and their symbol is 0. ``None`` = all valid.
      prec_B: uint32 precision of the tables (the encoder's, from :func:`ramp_precision`);
        ``None`` = ``PREC``.

    Returns:
      (sym_B int32, new state).
    """
    buf, length, ptr, hi, lo, err = state
    B, V = freq_BxV.shape
    valid = jnp.ones((B,), bool) if valid_B is None else jnp.asarray(valid_B, bool)
    freq_BxV = freq_BxV.astype(_u32)
    # Valid states: x < 2**8 L, and x >= L whenever the stream still has bytes (below L, only
    # in the segment's last positions, after every byte was read: see the module docstring).
    bad_state = (hi > _MASK8) | ((hi == 0) & (ptr < length))
    m = jnp.full((B,), PREC, _u32) if prec_B is None else jnp.asarray(prec_B, _u32)
    M_B = _u32(1) << m
    slot = lo & (M_B - _u32(1))
    sym, start, f, bad_table = _lookup(freq_BxV, slot, M_B)
    # x = f * (x >> m) + slot - start, as v * 2**8 + u with one carry (bounds: module docstring).
    a = (hi << (32 - m)) | (lo >> m)
    u = f * (a & _MASK8) + (slot - start)
    v = f * (a >> 8)
    nlo = (v << 8) + u
    nhi = (v >> 24) + (nlo < u).astype(_u32)
    got_Bx3, ok_Bx3 = _read(buf, length, ptr, MAX_BYTES_PER_SYMBOL)
    n_read = jnp.zeros((B,), jnp.int32)
    for k in range(MAX_BYTES_PER_SYMBOL):  # unrolled renormalisation: at most 3 reads
        need = (nhi == 0) & ok_Bx3[:, k]  # below L and a byte left (reads are a prefix)
        nhi = jnp.where(need, nlo >> 24, nhi)
        nlo = jnp.where(need, (nlo << 8) | got_Bx3[:, k], nlo)
        n_read = n_read + need.astype(jnp.int32)
    new = DecoderState(
        buf, length,
        jnp.where(valid, ptr + n_read, ptr),
        jnp.where(valid, nhi, hi),
        jnp.where(valid, nlo, lo),
        err | (valid & (bad_state | bad_table)),
    )
    return jnp.where(valid, sym, 0), new


def decoder_finish(state: DecoderState) -> jax.Array:
    """ok_B: the stream decoded cleanly, consumed exactly its bytes and ended in the encoder's
    initial state :data:`X_INIT`."""
    return ~state.err_B & (state.ptr_B == state.length_B) & (state.hi_B == 0) & (state.lo_B == X_INIT)


@jax.jit
def decode_segment(buf_BxN: jax.Array, lengths_B: jax.Array, freq_SxBxV: jax.Array,
                   valid_SxB: jax.Array | None = None, prec_SxB: jax.Array | None = None):
    """Decodes a whole segment under known tables (tests and benchmarks; the coding step
    calls :func:`decode_step` itself, with tables made inside the scan).

    Returns:
      (sym_SxB int32, ok_B bool).
    """
    S, B, _ = freq_SxBxV.shape
    if valid_SxB is None:
        valid_SxB = jnp.ones((S, B), bool)
    if prec_SxB is None:
        prec_SxB = jnp.full((S, B), PREC, _u32)

    def body(st, inp):
        sym, st = decode_step(st, *inp)
        return st, sym

    st, sym_SxB = jax.lax.scan(body, decoder_init(buf_BxN, lengths_B), (freq_SxBxV, valid_SxB, prec_SxB))
    return sym_SxB, decoder_finish(st)


# ---- host-side helpers ----------------------------------------------------------------------
@jax.jit
def encode_tables(probs_SxBxV: jax.Array, syms_SxB: jax.Array, valid_SxB: jax.Array,
                  prec_SxB: jax.Array | None = None):
    """Quantises S x B float tables and codes the given symbols under them (tests, tools).

    Returns:
      (freq_SxBxV, start_SxB, f_SxB, buf_BxN, lengths_B): the quantised tables, each coded
      symbol's range, and :func:`encode_segment`'s output.
    """
    freq_SxBxV = quantize(probs_SxBxV, prec_SxB)
    start_SxB, f_SxB = symbol_ranges(freq_SxBxV, syms_SxB)
    buf, lengths = encode_segment(start_SxB, f_SxB, valid_SxB, prec_SxB)
    return freq_SxBxV, start_SxB, f_SxB, buf, lengths


def stream_bytes(buf_BxN, lengths_B) -> list[bytes]:
    """The payload of each stream as ``bytes`` (what a container stores)."""
    buf, n = np.asarray(buf_BxN), np.asarray(lengths_B)
    return [buf[b, : n[b]].tobytes() for b in range(buf.shape[0])]


def round_trip(probs_SxBxV, syms_SxB, valid_SxB=None, prec_SxB=None) -> dict:
    """Quantises, encodes and decodes (a craystack-style check; for tests).

    Args:
      probs_SxBxV: float32 probabilities of every position of every stream.
      syms_SxB: the symbols to code.
      valid_SxB: bool mask of positions that hold data (``None`` = all).
      prec_SxB: table precisions (``None`` = ``PREC``; the coding step uses
        :func:`ramp_precision`).

    Returns:
      dict with ``decoded`` (int32 SxB, 0 at padding), ``ok`` (bool B, from
      :func:`decoder_finish`), ``lengths`` (int B bytes), ``buf`` (uint8 BxN), ``freq``
      (uint32 SxBxV quantised tables) and ``exact`` (every valid symbol came back and every
      stream is ok).
    """
    probs_SxBxV = jnp.asarray(probs_SxBxV, jnp.float32)
    syms_SxB = jnp.asarray(syms_SxB, jnp.int32)
    valid_SxB = jnp.ones(syms_SxB.shape, bool) if valid_SxB is None else jnp.asarray(valid_SxB, bool)
    if prec_SxB is not None:
        prec_SxB = jnp.asarray(prec_SxB, _u32)
    freq, _, _, buf, lengths = encode_tables(probs_SxBxV, syms_SxB, valid_SxB, prec_SxB)
    decoded, ok = decode_segment(buf, lengths, freq, valid_SxB, prec_SxB)
    decoded, ok, valid = np.asarray(decoded), np.asarray(ok), np.asarray(valid_SxB)
    exact = bool(ok.all() and np.array_equal(np.where(valid, decoded, 0), np.where(valid, np.asarray(syms_SxB), 0)))
    return {"decoded": decoded, "ok": ok, "lengths": np.asarray(lengths), "buf": np.asarray(buf),
            "freq": np.asarray(freq), "exact": exact}
