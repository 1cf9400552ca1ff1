"""A streaming range coder for per-symbol categorical distributions (constriction).

Encoder and decoder are a push/pop pair (in the spirit of craystack): ``Encoder.push`` codes
symbols under probability tables, ``Decoder.pop`` recovers them from the same tables. The
tables are quantised by constriction itself (a "leaky" categorical: every symbol keeps a
nonzero probability, so any byte can be coded). Both sides must pass bit-identical float32
tables; float32 and float64 tables quantise differently, so the dtype is fixed here.
"""

from __future__ import annotations

import numpy as np

try:
    import constriction
except ImportError as e:  # pragma: no cover - dependency declared in pyproject
    raise ImportError("mdlbench needs the 'constriction' package for entropy coding") from e

NAME = "constriction.stream.queue.RangeEncoder/Categorical(perfect=False)"
_FAMILY = constriction.stream.model.Categorical(perfect=False)


# constriction's leaky quantiser can still give a symbol zero mass when its probability is 0 and
# many others are tiny (seen with peaked tables: it panics). Flooring every entry at 2^-24 of the
# total avoids that; it is an elementwise IEEE max, so both sides get identical tables, and it
# costs at most 256 * 2^-24 of probability mass (< 2e-5 bits per symbol).
FLOOR = np.float32(2.0**-24)


def _tables(probs_NxV) -> np.ndarray:
    return np.maximum(np.ascontiguousarray(probs_NxV, dtype=np.float32), FLOOR)


class Encoder:
    """Appends symbols to one continuous range-coded bitstream."""

    def __init__(self):
        self._enc = constriction.stream.queue.RangeEncoder()

    def push(self, symbols_N: np.ndarray, probs_NxV: np.ndarray) -> None:
        if len(symbols_N):
            self._enc.encode(np.ascontiguousarray(symbols_N, dtype=np.int32), _FAMILY, _tables(probs_NxV))

    def num_bits(self) -> int:
        """Bits the stream would take if it ended now (whole 32-bit words)."""
        return int(self._enc.num_bits())

    def finish(self) -> bytes:
        """The compressed stream as little-endian bytes."""
        return self._enc.get_compressed().astype("<u4").tobytes()


class Decoder:
    """Pops symbols from a bitstream made by :class:`Encoder`, in the same order."""

    def __init__(self, payload: bytes):
        if len(payload) % 4:
            raise ValueError(f"range-coder payload must be whole 32-bit words, got {len(payload)} bytes")
        self._dec = constriction.stream.queue.RangeDecoder(np.frombuffer(payload, dtype="<u4").astype(np.uint32))

    def pop(self, probs_NxV: np.ndarray) -> np.ndarray:
        if len(probs_NxV) == 0:
            return np.zeros(0, np.int32)
        return np.asarray(self._dec.decode(_FAMILY, _tables(probs_NxV)), dtype=np.int32)


def roundtrip(symbols: list[np.ndarray], probs: list[np.ndarray]) -> tuple[bytes, list[np.ndarray]]:
    """Encodes a list of (symbols, tables) messages and decodes them back; for tests."""
    enc = Encoder()
    for s, p in zip(symbols, probs):
        enc.push(s, p)
    payload = enc.finish()
    dec = Decoder(payload)
    return payload, [dec.pop(p) for p in probs]
