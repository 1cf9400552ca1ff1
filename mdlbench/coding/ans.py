"""An ANS stack of bits with push/pop under explicit models (constriction's ``AnsCoder``).

Bits-back coding needs a *stack* coder: the encoder pops (decodes) a latent or a weight from
the stack under q, which removes bits it holds, then pushes (encodes) the data and the latent;
the decoder undoes every step in reverse order and, by pushing the latent back under q, recovers
the bits the encoder popped. An ANS coder is exactly such a stack. This module wraps
constriction's ``AnsCoder`` with push/pop pairs for the four model families the codes use, the
seeded "clean bits" a stack starts from, and the ideal code lengths (-log2 p, float64) of the
same probability tables. Its categorical push/pop is the :class:`mdlbench.coding.coder.Coder`
protocol with ``order == "stack"`` (the range coder is the same protocol as a queue).

Underflow: constriction pops silently from an exhausted stack (it invents bits that no push can
give back), so :meth:`AnsStack.check_reserve` refuses when fewer than :data:`RESERVE_BITS` remain.
Constriction quantises every model to 24-bit fixed point and gives every symbol at least one
quantum; tables are float32 on both sides (float32 and float64 tables quantise differently).
"""

from __future__ import annotations

import math

import numpy as np

from mdlbench.coding import coder

try:
    import constriction
except ImportError as e:  # pragma: no cover - dependency declared in pyproject
    raise ImportError("mdlbench needs the 'constriction' package for entropy coding") from e

from mdlbench.errors import DecodeError

NAME = "constriction.stream.stack.AnsCoder (32-bit words, 24-bit probabilities)"
_M = constriction.stream.model
_CATEGORICAL = _M.Categorical(perfect=False)
_BERNOULLI = _M.Bernoulli(perfect=False)
# Peaked float32 tables with exact zeros can make constriction's leaky quantiser panic. The floor
# must be relative to the table's total: an absolute 2^-24 floor still panics on tables summing
# to more than 1 (found by the property test). Normalise in float32, then an elementwise IEEE max:
# identical on both sides; it adds at most K * 2^-24 of mass.
FLOOR = np.float32(2.0 ** -24)
# A pop that leaves fewer valid bits than this may have reached the bottom of the stack: the
# 64-bit head alone holds up to 64 bits, so >= 96 means the bulk still had a word left.
RESERVE_BITS = 96


class StackUnderflow(DecodeError):
    """A pop needed more bits than the stack held (the encoder retries with more clean bits).

    Attributes:
      needed_bits: clean bits that would have left the reserve intact (0 = unknown).
    """

    def __init__(self, msg: str, needed_bits: int = 0):
        super().__init__(msg)
        self.needed_bits = needed_bits


def floor_tables(probs_NxK: np.ndarray) -> np.ndarray:
    """Float32, C-contiguous tables normalised to sum 1, every entry at least 2^-24."""
    t = np.ascontiguousarray(probs_NxK, dtype=np.float32)
    return np.maximum(t / t.sum(-1, keepdims=True, dtype=np.float32), FLOOR)


def clean_words(n_words: int, seed: int, stream: int) -> np.ndarray:
    """``n_words`` seeded random 32-bit words: the clean bits a stack starts with."""
    rng = np.random.default_rng(np.random.SeedSequence([seed, stream, n_words]))
    return rng.integers(0, 2 ** 32, n_words, dtype=np.uint64).astype(np.uint32)


def words_to_bytes(words: np.ndarray) -> bytes:
    """Little-endian bytes of 32-bit words (architecture-independent payload)."""
    return np.asarray(words, dtype=np.uint32).astype("<u4").tobytes()


def bytes_to_words(payload: bytes) -> np.ndarray:
    """Inverse of :func:`words_to_bytes`."""
    if len(payload) % 4:
        raise DecodeError(f"ANS payload must be whole 32-bit words, got {len(payload)} bytes")
    return np.frombuffer(payload, dtype="<u4").astype(np.uint32)


class AnsStack:
    """A stack of compressed bits (a :class:`coder.Coder`: one object pushes and pops, last in first out).

    Args:
      words: initial compressed data (uint32 words); ``None`` = empty.
      seal: append constriction's seal word so that any words (even trailing zeros, as random
        clean bits may have) survive; the decoder then ends with :meth:`unsealed_words`.
    """

    order: coder.Order = coder.STACK

    def __init__(self, words: np.ndarray | None = None, seal: bool = False):
        if words is None:
            self._c = constriction.stream.stack.AnsCoder()
        else:
            self._c = constriction.stream.stack.AnsCoder(np.ascontiguousarray(words, dtype=np.uint32), seal=seal)

    @classmethod
    def from_bytes(cls, payload: bytes) -> AnsStack:
        """A stack holding a payload made by :meth:`finish` (the protocol's decoder side)."""
        return cls(bytes_to_words(payload))

    # ---- size -------------------------------------------------------------------------
    def num_bits(self) -> int:
        """Size of the compressed data in whole 32-bit words, in bits."""
        return int(self._c.num_bits())

    def num_valid_bits(self) -> int:
        """Size without the unused high bits of the top word."""
        return int(self._c.num_valid_bits())

    def words(self) -> np.ndarray:
        """A copy of the compressed data (uint32 words)."""
        return self._c.get_compressed()

    def finish(self) -> bytes:
        """The compressed data as little-endian bytes; the stack stays usable."""
        return words_to_bytes(self.words())

    def unsealed_words(self) -> np.ndarray:
        """The data under the seal word (fails when the stack is not in its sealed state)."""
        try:
            return self._c.get_compressed(unseal=True)
        except Exception as e:  # constriction raises a plain error when the top word is not the seal
            raise DecodeError(f"the ANS stack did not return to its initial sealed state ({e})") from None

    # ---- categorical (per-symbol float32 tables) --------------------------------------
    def push_categorical(self, symbols_N: np.ndarray, probs_NxK: np.ndarray) -> None:
        """Pushes ``symbols_N`` under per-symbol tables (one pop returns them in the same order)."""
        if len(symbols_N):
            self._c.encode_reverse(np.ascontiguousarray(symbols_N, dtype=np.int32), _CATEGORICAL,
                                   floor_tables(probs_NxK))

    def pop_categorical(self, probs_NxK: np.ndarray) -> np.ndarray:
        """Pops one symbol per table row."""
        if len(probs_NxK) == 0:
            return np.zeros(0, np.int32)
        return np.asarray(self._c.decode(_CATEGORICAL, floor_tables(probs_NxK)), dtype=np.int32)

    # The protocol's names for the categorical pair (the other families keep explicit names only).
    push = push_categorical
    pop = pop_categorical

    # ---- Bernoulli (per-symbol float32 p(1)) ------------------------------------------
    def push_bernoulli(self, bits_N: np.ndarray, p1_N: np.ndarray) -> None:
        """Pushes binary symbols under per-symbol probabilities of a 1."""
        self._c.encode_reverse(np.ascontiguousarray(bits_N, dtype=np.int32), _BERNOULLI,
                               np.ascontiguousarray(p1_N, dtype=np.float32))

    def pop_bernoulli(self, p1_N: np.ndarray) -> np.ndarray:
        """Pops one binary symbol per probability."""
        return np.asarray(self._c.decode(_BERNOULLI, np.ascontiguousarray(p1_N, dtype=np.float32)), dtype=np.int32)

    # ---- uniform over {0..size-1} -----------------------------------------------------
    def push_uniform(self, symbols_N: np.ndarray, size: int) -> None:
        """Pushes symbols under the uniform distribution over ``size`` values."""
        self._c.encode_reverse(np.ascontiguousarray(symbols_N, dtype=np.int32), _M.Uniform(int(size)))

    def pop_uniform(self, n: int, size: int) -> np.ndarray:
        """Pops ``n`` uniform symbols."""
        return np.asarray(self._c.decode(_M.Uniform(int(size)), int(n)), dtype=np.int32)

    # ---- Gaussian discretised on the integers lo..hi ----------------------------------
    def push_gaussian(self, symbols_N: np.ndarray, mean_N: np.ndarray, std_N: np.ndarray, lo: int, hi: int) -> None:
        """Pushes integers under N(mean, std^2) integrated over [j - 1/2, j + 1/2], truncated to [lo, hi]."""
        self._c.encode_reverse(np.ascontiguousarray(symbols_N, dtype=np.int32), _M.QuantizedGaussian(int(lo), int(hi)),
                               np.ascontiguousarray(mean_N, np.float64), np.ascontiguousarray(std_N, np.float64))

    def pop_gaussian(self, mean_N: np.ndarray, std_N: np.ndarray, lo: int, hi: int) -> np.ndarray:
        """Pops one integer per (mean, std)."""
        return np.asarray(self._c.decode(_M.QuantizedGaussian(int(lo), int(hi)), np.ascontiguousarray(mean_N, np.float64),
                                         np.ascontiguousarray(std_N, np.float64)), dtype=np.int32)

    # ---- underflow guard ----------------------------------------------------------------
    def check_reserve(self, what: str) -> None:
        """Raises StackUnderflow when the last pops may have run the stack dry."""
        if self.num_valid_bits() < RESERVE_BITS:
            raise StackUnderflow(f"popping {what} ran the ANS stack down to {self.num_valid_bits()} bits: "
                                 "start with more clean bits")


def returned_to(stack: AnsStack, clean_N: np.ndarray) -> bool:
    """Whether a decoder's stack holds exactly the sealed clean words it must end with."""
    try:
        return bool(np.array_equal(stack.unsealed_words(), clean_N))
    except DecodeError:  # not even in a sealed state: some table differed from the encoder's
        return False


# ---- ideal code lengths (what an ideal coder would pay for the same tables) ------------
def categorical_bits(probs_NxK: np.ndarray, symbols_N: np.ndarray) -> np.ndarray:
    """-log2 of each symbol's probability under its floored, normalised float32 table (float64)."""
    t = floor_tables(probs_NxK).astype(np.float64)
    return -np.log2(t[np.arange(len(symbols_N)), symbols_N] / t.sum(-1))


def bernoulli_bits(bits_N: np.ndarray, p1_N: np.ndarray) -> np.ndarray:
    """-log2 p(bit) under float32 probabilities of a 1 (float64)."""
    p = np.asarray(p1_N, np.float64)
    return -np.log2(np.where(np.asarray(bits_N) == 1, p, 1.0 - p))


def round_up_words(bits: float, multiple: int = 8) -> int:
    """Whole 32-bit words holding ``bits``, rounded up to a multiple of ``multiple`` words."""
    words = max(1, math.ceil(bits / 32))
    return multiple * math.ceil(words / multiple)
