"""Sources of exactly known entropy rate: the floor that no code can beat on average.

Three kinds, all deterministic from ``SyntheticConfig.seed`` (one ``numpy.random.default_rng``
draws the random tables, then the sequence; no global RNG). Symbol ``i`` is written as the
byte ``first_byte + i``, so one symbol is one byte and bits per symbol are bits per byte.

* ``iid``: categorical with ``probs``; rate ``H(p) = -sum_i p_i log2 p_i``.
* ``markov``: order-k chain, one Dirichlet(concentration) row per context of k symbols; the
  sequence starts from the stationary distribution of the context chain, so it is stationary
  from the first symbol; rate ``sum_c pi(c) H(P(. | c))``.
* ``hmm``: a unifilar hidden-Markov source: hidden states with Dirichlet transitions, each
  state emitting (Dirichlet) from its own disjoint block of the alphabet. The symbol reveals
  the state, so given the past the current state is known and the rate is
  ``sum_s pi(s) [H(Q(. | s)) + sum_s' Q(s' | s) H(E(. | s'))]``: the next state's entropy plus
  the expected emission entropy. Observed, it is a first-order chain over symbols with
  ``P(y' | y) = Q(state(y') | state(y)) E(y' | state(y'))`` (:meth:`UnifilarHMM.symbol_chain`),
  which is how it is sampled and scored.

Numpy only: the decoder imports the data layer before JAX starts.
"""

from __future__ import annotations

import dataclasses
import math
from array import array
from bisect import bisect_right
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from mdlbench.config import ConfigError, SyntheticConfig
from mdlbench.errors import DataError

KINDS = ("iid", "markov", "hmm")
MAX_CONTEXTS = 1_000_000  # alphabet_size ** order
MAX_TABLE = 1 << 24  # alphabet_size ** (order + 1) transition probabilities (128 MiB of float64)
DENSE_MAX = 2048  # context chains up to this size get an exact dense linear solve
POWER_TOL = 1e-12  # larger chains: power iteration until ||pi P - pi||_1 is below this
POWER_WORK = 20_000_000_000  # ... or until this many multiply-adds, then give up with a clear error


def validate(cfg: SyntheticConfig) -> None:
    """Range checks with one clear message each (raises :class:`ConfigError`)."""
    a = cfg.alphabet_size
    if cfg.kind not in KINDS:
        raise ConfigError(f"data.synthetic.kind must be one of {', '.join(KINDS)}, got {cfg.kind!r}")
    if a < 2:
        raise ConfigError(f"data.synthetic.alphabet_size must be >= 2, got {a}")
    if not 0 <= cfg.first_byte or cfg.first_byte + a > 256:
        raise ConfigError(f"data.synthetic.first_byte + alphabet_size must be <= 256 with first_byte >= 0, "
                          f"got {cfg.first_byte} + {a}")
    if cfg.length < 1:
        raise ConfigError(f"data.synthetic.length must be >= 1, got {cfg.length}")
    if cfg.seed < 0:
        raise ConfigError(f"data.synthetic.seed must be >= 0, got {cfg.seed}")
    if cfg.kind != "iid" and not (cfg.concentration > 0 and math.isfinite(cfg.concentration)):
        raise ConfigError(f"data.synthetic.concentration must be positive and finite, got {cfg.concentration}")
    if cfg.probs and cfg.kind != "iid":
        raise ConfigError(f"data.synthetic.probs is used by kind 'iid' only, not {cfg.kind!r}; leave it empty")
    if cfg.kind == "iid" and cfg.probs:
        p = np.asarray(cfg.probs, dtype=np.float64)
        if len(p) != a:
            raise ConfigError(f"data.synthetic.probs has {len(p)} entries but alphabet_size is {a}")
        if not (np.all(np.isfinite(p)) and np.all(p >= 0) and p.sum() > 0):
            raise ConfigError(f"data.synthetic.probs must be finite, >= 0 and not all zero, got {cfg.probs}")
    if cfg.kind == "markov":
        if cfg.order < 0:
            raise ConfigError(f"data.synthetic.order must be >= 0, got {cfg.order}")
        if a ** cfg.order > MAX_CONTEXTS:
            raise ConfigError(f"data.synthetic: alphabet_size ** order = {a}**{cfg.order} contexts is more than "
                              f"{MAX_CONTEXTS:,}; lower the order or the alphabet")
        if a ** (cfg.order + 1) > MAX_TABLE:
            raise ConfigError(f"data.synthetic: the transition table would hold {a}**{cfg.order + 1} "
                              f"probabilities, more than {MAX_TABLE:,}; lower the order or the alphabet")
    if cfg.kind == "hmm" and not 1 <= cfg.n_states <= a:
        raise ConfigError(f"data.synthetic.n_states must be between 1 and alphabet_size ({a}), got {cfg.n_states}")


def row_entropy_bits(p_NxA: np.ndarray) -> np.ndarray:
    """Entropy in bits of each row of a stochastic matrix (``0 log 0 = 0``).

    A row that is uniform over its support of size m gets exactly ``log2 m``: the rounded
    probabilities (1/6 is not a float) would otherwise put the last bit in doubt.
    """
    p = np.asarray(p_NxA, dtype=np.float64)
    with np.errstate(divide="ignore", invalid="ignore"):
        terms = np.where(p > 0, -p * np.log2(p), 0.0)
    h = terms.sum(axis=1)
    support = (p > 0).sum(axis=1)
    uniform = np.all((p == 0) | (p == p.max(axis=1, keepdims=True)), axis=1)
    return np.where(uniform, np.log2(np.maximum(support, 1)), h)


def _stationary_dense(p_NxN: np.ndarray) -> np.ndarray:
    """The unique stationary distribution of a stochastic matrix by a float64 linear solve."""
    n = p_NxN.shape[0]
    m = p_NxN.T - np.eye(n)
    m[-1, :] = 1.0  # replace one (redundant) balance equation by sum(pi) = 1
    b = np.zeros(n)
    b[-1] = 1.0
    try:
        pi = np.linalg.solve(m, b)
    except np.linalg.LinAlgError:
        pi = None
    if pi is None or not np.all(np.isfinite(pi)) or pi.min() < -1e-9 or np.abs(pi @ p_NxN - pi).sum() > 1e-9:
        raise DataError("the chain has no unique stationary distribution (it is reducible); "
                        "its entropy rate would depend on the start")
    pi = np.clip(pi, 0.0, None)
    return pi / pi.sum()


@dataclass
class MarkovChain:
    """An order-k Markov chain over the symbols ``0 .. A-1``.

    Attributes:
      probs: ``(A**k, A)`` float64, rows summing to 1: ``probs[c, x] = P(x | context c)``. The
        context of the k previous symbols is their base-A number, the oldest most significant.
      order: k (0 = i.i.d. with the single row ``probs[0]``).
    """

    probs: np.ndarray
    order: int
    _pi: np.ndarray | None = field(default=None, init=False, repr=False, compare=False)

    @property
    def alphabet_size(self) -> int:
        return self.probs.shape[1]

    def stationary(self) -> np.ndarray:
        """Exact stationary distribution over contexts (float64), solved once per chain.

        A dense linear solve up to :data:`DENSE_MAX` contexts; above it, power iteration to an L1
        residual below :data:`POWER_TOL` (a chain that mixes too slowly for that is refused).
        """
        if self._pi is None:
            self._pi = self._solve_stationary()
        return self._pi

    def _solve_stationary(self) -> np.ndarray:
        a, n = self.alphabet_size, self.probs.shape[0]
        if n == 1:
            return np.ones(1)
        if n <= DENSE_MAX:
            p = np.zeros((n, n))
            rows = np.repeat(np.arange(n), a)
            cols = (rows * a + np.tile(np.arange(a), n)) % n  # context after symbol x
            np.add.at(p, (rows, cols), self.probs.ravel())
            return _stationary_dense(p)
        # With contexts c = (h, r) (h the oldest symbol), the next context is (r, x):
        # pi'(r, x) = sum_h pi(h, r) P(x | h, r). A table with zeros may be periodic, so it is
        # iterated lazily ((I + P) / 2: same fixed point, aperiodic); positive tables need not be.
        table = self.probs.reshape(a, n // a, a)
        lazy = bool((self.probs == 0).any())
        pi = np.full(n, 1.0 / n)
        residual = float("inf")
        for _ in range(max(1000, POWER_WORK // (n * a))):
            step = np.einsum("hr,hrx->rx", pi.reshape(a, n // a), table).ravel()
            residual = float(np.abs(step - pi).sum())
            if residual < POWER_TOL:
                return step / step.sum()
            pi = 0.5 * (pi + step) if lazy else step
        raise DataError(f"the stationary distribution of the order-{self.order} chain over {a} symbols did not "
                        f"converge (residual {residual:.1e}): it mixes too slowly; raise the concentration or "
                        "lower the order")

    def entropy_rate_bits(self) -> float:
        """``sum_c pi(c) H(P(. | c))`` in bits per symbol."""
        return float(self.stationary() @ row_entropy_bits(self.probs))

    def sample(self, length: int, rng: np.random.Generator) -> np.ndarray:
        """``length`` symbols (uint8), starting from the stationary distribution."""
        a, n, k = self.alphabet_size, self.probs.shape[0], self.order
        cdf = np.cumsum(self.probs, axis=1)
        cdf /= cdf[:, -1:]  # last entry exactly 1.0 > any uniform draw in [0, 1)
        if k == 0:
            return np.searchsorted(cdf[0], rng.random(length), side="right").astype(np.uint8)
        pi_cdf = np.cumsum(self.stationary())
        c = int(min(np.searchsorted(pi_cdf / pi_cdf[-1], rng.random(), side="right"), n - 1))
        out = bytearray(length)
        for j in range(min(k, length)):  # the start context's digits, oldest first
            out[j] = (c // a ** (k - 1 - j)) % a
        u = rng.random(max(length - k, 0)).tolist()
        flat = array("d")
        flat.frombytes(np.ascontiguousarray(cdf, dtype=np.float64).tobytes())
        for t in range(k, length):
            lo = c * a
            x = bisect_right(flat, u[t - k], lo, lo + a) - lo
            out[t] = x
            c = (c * a + x) % n
        return np.frombuffer(bytes(out), dtype=np.uint8)

    def code_lengths_bits(self, symbols: np.ndarray) -> np.ndarray:
        """``-log2 P(x_t | x_{t-k..t-1})`` for every ``t >= k`` under this chain."""
        x = np.asarray(symbols, dtype=np.int64)
        k, a = self.order, self.alphabet_size
        if len(x) <= k:
            return np.zeros(0)
        c = np.zeros(len(x) - k, dtype=np.int64)
        for j in range(k):
            c = c * a + x[j:len(x) - k + j]
        with np.errstate(divide="ignore"):
            return -np.log2(self.probs[c, x[k:]])


@dataclass
class UnifilarHMM:
    """Hidden states with transitions ``transition[s, s']``; state s emits only its own symbols.

    Attributes:
      transition: ``(S, S)`` stochastic matrix.
      emission: ``(S, A)`` stochastic matrix; row s is zero outside ``state_of_symbol == s``.
      state_of_symbol: ``(A,)`` the state that owns each symbol (contiguous blocks).
    """

    transition: np.ndarray
    emission: np.ndarray
    state_of_symbol: np.ndarray

    def stationary(self) -> np.ndarray:
        """Stationary distribution of the hidden states."""
        return _stationary_dense(self.transition)

    def entropy_rate_bits(self) -> float:
        """``sum_s pi(s) [H(Q(. | s)) + sum_s' Q(s' | s) H(E(. | s'))]`` in bits per symbol."""
        h_emit = row_entropy_bits(self.emission)
        per_state = row_entropy_bits(self.transition) + self.transition @ h_emit
        return float(self.stationary() @ per_state)

    def symbol_chain(self) -> MarkovChain:
        """The same process seen as a first-order chain over symbols."""
        s = self.state_of_symbol
        probs = self.transition[s][:, s] * self.emission[s, np.arange(len(s))][None, :]
        return MarkovChain(probs=probs / probs.sum(axis=1, keepdims=True), order=1)


def _dirichlet_rows(rng: np.random.Generator, concentration: float, n_rows: int, n_cols: int) -> np.ndarray:
    if n_cols == 1:
        return np.ones((n_rows, 1))
    rows = rng.dirichlet(np.full(n_cols, concentration), size=n_rows)
    sums = rows.sum(axis=1, keepdims=True)
    if not (np.all(np.isfinite(rows)) and np.all(sums > 0)):
        raise ConfigError(f"data.synthetic.concentration {concentration} is too small: Dirichlet rows underflowed")
    return rows / sums


def make_source(cfg: SyntheticConfig, rng: np.random.Generator) -> MarkovChain | UnifilarHMM:
    """Draws the source's random tables from ``rng`` (call with a fresh ``default_rng(cfg.seed)``)."""
    validate(cfg)
    a = cfg.alphabet_size
    if cfg.kind == "iid":
        w = np.asarray(cfg.probs, dtype=np.float64) if cfg.probs else np.ones(a)
        return MarkovChain(probs=(w / w.sum())[None, :], order=0)
    if cfg.kind == "markov":
        return MarkovChain(probs=_dirichlet_rows(rng, cfg.concentration, a ** cfg.order, a), order=cfg.order)
    s = cfg.n_states
    blocks = np.array_split(np.arange(a), s)
    state_of_symbol = np.concatenate([np.full(len(b), i) for i, b in enumerate(blocks)])
    transition = _dirichlet_rows(rng, cfg.concentration, s, s)
    emission = np.zeros((s, a))
    for i, b in enumerate(blocks):
        emission[i, b] = _dirichlet_rows(rng, cfg.concentration, 1, len(b))[0]
    return UnifilarHMM(transition=transition, emission=emission, state_of_symbol=state_of_symbol)


@dataclass
class Synthetic:
    """A generated sequence with its source.

    Attributes:
      data: the bytes (``first_byte + symbol``).
      entropy_rate_bits: the source's exact entropy rate, bits per symbol (= per byte).
      empirical_bits: mean ``-log2 p`` of the sample's symbols under the true source (those with a
        full context; None if none has); tends to the rate as the length grows.
      source: the source itself (tables included).
      params: the ``SyntheticConfig`` fields used.
    """

    data: bytes
    entropy_rate_bits: float
    empirical_bits: float | None
    source: MarkovChain | UnifilarHMM
    params: dict[str, Any]


def empirical_bits(source: MarkovChain | UnifilarHMM, symbols: np.ndarray) -> float | None:
    """Mean code length per symbol of ``symbols`` under the true ``source`` (the sanity estimate).

    None when the sample is too short to hold a symbol with a full context.
    """
    chain = source.symbol_chain() if isinstance(source, UnifilarHMM) else source
    lengths = chain.code_lengths_bits(symbols)
    return float(lengths.mean()) if len(lengths) else None


def generate(cfg: SyntheticConfig) -> Synthetic:
    """Generates ``cfg.length`` bytes from the source ``cfg`` describes, deterministically from its seed."""
    validate(cfg)  # before the seed reaches numpy, which has its own message for a negative one
    rng = np.random.default_rng(cfg.seed)
    source = make_source(cfg, rng)
    chain = source.symbol_chain() if isinstance(source, UnifilarHMM) else source
    symbols = chain.sample(cfg.length, rng)
    data = (symbols.astype(np.int64) + cfg.first_byte).astype(np.uint8).tobytes()
    return Synthetic(data=data, entropy_rate_bits=source.entropy_rate_bits(),
                     empirical_bits=empirical_bits(source, symbols), source=source,
                     params=dataclasses.asdict(cfg))
