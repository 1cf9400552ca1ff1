"""A streaming range coder for per-symbol categorical distributions (constriction).

Encoder and decoder are a push/pop pair (in the spirit of craystack) implementing
:class:`mdlbench.coding.coder.Encoder` and :class:`~mdlbench.coding.coder.Decoder` as a *queue*:
``Encoder.push`` codes symbols under probability tables, ``Decoder.pop`` recovers them from the
same tables, messages in the order they were pushed. The tables are quantised by constriction
itself (a "leaky" categorical: every symbol keeps a nonzero probability, so any byte can be
coded). Both sides must pass bit-identical float32 tables; float32 and float64 tables quantise
differently, so the dtype is fixed here.

Besides categorical tables, ``push_gaussian``/``pop_gaussian`` code integers under a discretised
Gaussian (the two-part code's parameter prior), outside the protocol.
"""

from __future__ import annotations

import numpy as np

from mdlbench.coding import coder

try:
    import constriction
except ImportError as e:  # pragma: no cover - dependency declared in pyproject
    raise ImportError("mdlbench needs the 'constriction' package for entropy coding") from e

NAME = "constriction.stream.queue.RangeEncoder/Categorical(perfect=False)"
_FAMILY = constriction.stream.model.Categorical(perfect=False)


# constriction's leaky quantiser can still give a symbol zero mass when its probability is 0 and
# many others are tiny (seen with peaked tables: it panics). Flooring every entry at 2^-24 (an
# absolute floor: the model's tables sum to 1, so about 2^-24 of the total) avoids that; it is an elementwise IEEE max, so both sides get identical tables, and it
# costs at most 256 * 2^-24 of probability mass (< 2e-5 bits per symbol).
FLOOR = np.float32(2.0**-24)


def _tables(probs_NxV) -> np.ndarray:
    return np.maximum(np.ascontiguousarray(probs_NxV, dtype=np.float32), FLOOR)


def _gaussian(mean, std, lo: int, hi: int) -> tuple:
    """The constriction model and its per-symbol parameters for a Gaussian on the integers lo..hi.

    Scalar ``mean`` and ``std`` give one fixed model (no N-long parameter arrays to build for a
    tensor of millions of integers); arrays give per-symbol parameters (float64 on both sides).
    """
    if np.ndim(mean) == 0 and np.ndim(std) == 0:
        return constriction.stream.model.QuantizedGaussian(int(lo), int(hi), float(mean), float(std)), ()
    return constriction.stream.model.QuantizedGaussian(int(lo), int(hi)), (
        np.ascontiguousarray(mean, np.float64), np.ascontiguousarray(std, np.float64))


class Encoder:
    """Appends symbols to one continuous range-coded bitstream (a :class:`coder.Encoder`, a queue)."""

    order: coder.Order = coder.QUEUE

    def __init__(self):
        self._enc = constriction.stream.queue.RangeEncoder()

    def push(self, symbols_N: np.ndarray, probs_NxV: np.ndarray) -> None:
        """Codes ``symbols_N[i]`` under the float32 table ``probs_NxV[i]`` (floored at :data:`FLOOR`)."""
        if len(symbols_N):
            self._enc.encode(np.ascontiguousarray(symbols_N, dtype=np.int32), _FAMILY, _tables(probs_NxV))

    def push_gaussian(self, symbols_N: np.ndarray, mean, std, lo: int, hi: int) -> None:
        """Codes integers under N(mean, std^2) integrated over [j - 1/2, j + 1/2], truncated to [lo, hi].

        Args:
          symbols_N: integers in ``[lo, hi]``.
          mean, std: scalars (one model for all symbols) or one value per symbol.
          lo, hi: the support.
        """
        if len(symbols_N):
            model, params = _gaussian(mean, std, lo, hi)
            self._enc.encode(np.ascontiguousarray(symbols_N, dtype=np.int32), model, *params)

    def num_bits(self) -> int:
        """Bits the stream would take if it ended now (whole 32-bit words)."""
        return int(self._enc.num_bits())

    def finish(self) -> bytes:
        """The compressed stream as little-endian bytes."""
        return self._enc.get_compressed().astype("<u4").tobytes()


class Decoder:
    """Pops symbols from a bitstream made by :class:`Encoder`, in the same order (a :class:`coder.Decoder`)."""

    order: coder.Order = coder.QUEUE

    def __init__(self, payload: bytes):
        if len(payload) % 4:
            raise ValueError(f"range-coder payload must be whole 32-bit words, got {len(payload)} bytes")
        self._dec = constriction.stream.queue.RangeDecoder(np.frombuffer(payload, dtype="<u4").astype(np.uint32))

    def pop(self, probs_NxV: np.ndarray) -> np.ndarray:
        """Decodes one symbol per table row (the tables the encoder pushed with)."""
        if len(probs_NxV) == 0:
            return np.zeros(0, np.int32)
        return np.asarray(self._dec.decode(_FAMILY, _tables(probs_NxV)), dtype=np.int32)

    def pop_gaussian(self, n: int, mean, std, lo: int, hi: int) -> np.ndarray:
        """Decodes ``n`` integers pushed by :meth:`Encoder.push_gaussian` with the same arguments."""
        if n == 0:
            return np.zeros(0, np.int32)
        model, params = _gaussian(mean, std, lo, hi)
        if params and len(params[0]) != n:
            raise ValueError(f"pop_gaussian of {n} integers got {len(params[0])} per-symbol parameters")
        # A fixed model takes the count; per-symbol parameters imply it.
        return np.asarray(self._dec.decode(model, *params) if params else self._dec.decode(model, int(n)),
                          dtype=np.int32)


def roundtrip(symbols: list[np.ndarray], probs: list[np.ndarray]) -> tuple[bytes, list[np.ndarray]]:
    """Encodes a list of (symbols, tables) messages and decodes them back; for tests.

    The range-coder case of :func:`mdlbench.coding.coder.roundtrip`.
    """
    return coder.roundtrip(Encoder, Decoder, list(zip(symbols, probs)))
