"""Uniform label code: exactly N log2 K bits (ideal), and a real fixed-length code for it.

The real code writes the labels as one base-K integer v = sum_i y_i K^i < K^N, in
``(K**N - 1).bit_length()`` = ceil(N log2 K) bits (stored in whole bytes). It is the shortest
fixed-length code for N labels and is exactly invertible. Conversions use divide and conquer so
that N = 60,000 stays fast.
"""

from __future__ import annotations

import math

import numpy as np


def ideal_bits(n: int, k: int) -> float:
    """N log2 K."""
    return n * math.log2(k)


def real_bits(n: int, k: int) -> int:
    """Bits of the fixed-length base-K integer code: ceil(N log2 K)."""
    return (k ** n - 1).bit_length()


def _to_int(digits: list[int], k: int) -> int:
    if len(digits) <= 64:
        v = 0
        for d in reversed(digits):
            v = v * k + d
        return v
    m = len(digits) // 2
    return _to_int(digits[:m], k) + _to_int(digits[m:], k) * k ** m


def _to_digits(v: int, n: int, k: int) -> list[int]:
    if n <= 64:
        out = []
        for _ in range(n):
            v, d = divmod(v, k)
            out.append(d)
        return out
    m = n // 2
    hi, lo = divmod(v, k ** m)
    return _to_digits(lo, m, k) + _to_digits(hi, n - m, k)


def encode(y: np.ndarray, k: int) -> bytes:
    """The labels as a little-endian base-K integer in ceil(N log2 K / 8) bytes."""
    n = len(y)
    v = _to_int([int(d) for d in y], k)
    return v.to_bytes(-(-real_bits(n, k) // 8), "little")


def decode(payload: bytes, n: int, k: int) -> np.ndarray:
    """Inverse of :func:`encode`."""
    return np.asarray(_to_digits(int.from_bytes(payload, "little"), n, k), np.int32)
