"""Byte n-gram count experts mixed into any base model's logits (``model.ngram_orders``).

Online neural coders learn slowly: for the first megabytes a count model of the last few
bytes predicts text far better than the network does. This wrapper keeps, per order k, a table
of byte counts indexed by the previous k bytes (exact for k <= 2 at the default size, hashed
beyond) and forms a product of experts

    logits_V = base_logits_V + sum_k w_k * log p_k(V | last k bytes),
    p_k(x | c) = (n(c, x) + alpha) / (n(c) + 256 alpha),

with mixing weights ``w_k`` computed from each order's evidence (log of the context's count,
share of its most frequent byte), so the mixture leans on high orders only where they have
seen enough. Weights and base are trained by the usual loss; the counts are *not* parameters:
they are carried state, a deterministic function of the bytes already coded, so the decoder
rebuilds them exactly (float32 sums of 1.0 are exact far beyond any file here) and the
program that describes them is just the config. ``counts="uint16"`` halves the tables' memory
(to spend it on rows): a row is halved before any of its cells would pass 65535, the same
integer rule on every path (``_count``).

Counts lag the coder slightly: a window is coded with the counts as they stood before it; its
pairs whose target byte the coder has fed back as an input (all but the window's last byte,
which is counted one window later) are left pending in the carried state and added to the
tables at the start of the next compiled step (``settle``).
Both sides do exactly this, so the lag costs a little compression and no exactness.
The coding scan records the counts every position saw (and the match model's predictions);
the training step after it takes them from there (``prepare_coded``) instead of gathering them
again: the same sums of 1.0, so the same numbers and the same code (the encode of 256 KiB of
dickens ran at 5.2 instead of 4.3 kB/s).
With ``update="position"`` there is no lag inside a window: each (context, byte) pair counts
from the position after the byte is fed back. The big tables still change only between windows
(an in-place update of hundreds of MB at every position would be copied by XLA each time);
within the window, the coder adds to the gathered row the window's own pairs with the same
context (kept in the small buffers the window mode records anyway), and the training forward
adds the same pairs with one masked comparison, so both see identical counts.

``match_min > 0`` adds a match model (as in lpaq/paq8): a ring buffer of each stream's bytes
and one hash table, for all streams, from the last ``match_min`` bytes to the stream and
position that followed their last occurrence in any stream. While the bytes after that
occurrence keep repeating, it predicts the byte that followed; a learned weight per match
length (capped) adds to that byte's logit. Its
state is carried like the counts, a deterministic function of the coded bytes, so the decoder
rebuilds it exactly; as for the counts, buffer and table take in a window's bytes after it, and
positions inside the window look up the window's own bytes and insertions first.

``word > 0`` adds a word expert (as lpaq's word model): one more count table, hashed, indexed by
the current word, i.e. the trailing ASCII letters of the context (case-folded, at most ``word``
of them), or by the last byte where the context does not end in a letter; ``word_bigram`` adds
a table indexed by the current word and the complete word before it, ``word_trigram`` one
indexed by those and the word before them (as far as the ``word`` bytes reach), ``word_skip`` one
indexed by the current word and the word two before it (skipping the one between, as paq's word
model does). Text repeats words far more reliably than it repeats fixed-length byte strings
across word boundaries. The tables that read earlier words can get rows of their own (``log2_rows_words``):
they see millions of contexts where a byte order sees hundreds of thousands. Each byte order can
too (``log2_rows_orders``): order 3 sees tens of thousands.

``sparse`` adds count tables indexed by bytes at chosen distances back, e.g. ``(2, 3)`` (the two
bytes before the last one) or ``(4,)``, as paq's sparse models: binary files have fields at
fixed offsets, and a context that skips the byte just coded survives a changed byte there.
``gate="own"`` computes each expert's weight from its own two evidence features only (a weight
per feature and a bias) instead of a dense layer over every expert's features: with the log of a
count reaching ~13 on a file of mostly one byte, each Adam step of the dense layer moves every
weight by the sum over all experts' features, and the product swung to confidences that cost
tens of bits per surprise. ``logp_floor`` bounds every count expert's log-probabilities below (as
paq clips stretch(p)), so that no expert's single surprise costs more than its weight times the
bound.
``match_long`` gives the match model's learnt weight one value per power of two of the match
length past 15 (up to 2048+) instead of one for all lengths past 14: a repeat that has run for
hundreds of bytes (a table's rows, an image's runs) is surer than one of 20.

``record > 0`` adds a record expert (as paq8's record model): tables and images repeat with a
fixed stride (a spreadsheet's row of cells, a bitmap's scan line), and the byte one record back
predicts the next one far better than any byte just before it. Each stream keeps the count, for
every distance d in ``RECORD_MIN..record``, of the bytes that equalled the byte d back (runs of
one byte are skipped: they agree at every distance), decayed by 1/16 per window; its stride is
the distance with the most agreements (a divisor of it whose count is within 1/16 of it if there
is one: the byte two records back agrees as often as the byte one record back), if that is
clear: at least 1.6 times the mean over all distances (text's best distance agrees 1.2-1.5 times
as often as the mean, a spreadsheet's or an image's 2-4 times). Without a clear stride the
record experts read a row of their tables that nothing is ever counted into, so they predict the
uniform distribution and change no logit (always on, they cost text 0.3-0.4 %; silent where no
stride stands out, they still cost book1 0.36 % and gained 0.15 % on the first 2 MB of dickens:
experiments/bench/README.md). The counts, the stride and the stream's last bytes are carried
state, updated once per window in :meth:`settle`, so the whole window is coded with one stride
on both sides. ``record_contexts`` are count tables indexed by bytes at distances ``k * stride +
j`` back, e.g. ``((1, 0),)`` the byte one record back and ``((0, 1), (1, 0))`` it and the last
byte; the stride itself is not part of the context (the byte one record back is the same context
whatever the record length), so these tables are exact and small.

``column > 0`` adds a column expert: counts indexed by the bytes since the last line feed and the
last byte, for columns ``column // 2`` to ``column`` (exclusive); elsewhere it is silent (an empty
row, as the record expert's without a stride). Wrapped prose breaks its lines near a fixed width:
whether a word ends in a space or a line break depends on the column, which no byte context sees
(on dickens, knowing the column halves the in-sample entropy of that choice: 1.8 % of its code
length). ``column_text`` keeps it silent also where the line so far holds a byte that is not
printable ASCII, tab or CR: object code has a byte 10 every ~200 bytes, and the expert then spoke
on bytes that are not text (it cost `obj2` 0.4 %).

``estimator="backoff"`` replaces the additive smoothing by interpolated estimates, as PPM's
escapes (Witten-Bell): each order's counts sit on top of the next lower order's estimate, which
gets the weight of the context's distinct bytes (plus ``alpha``). A high-order context seen a
few times with one byte then predicts it strongly, and the bytes it has not seen keep the lower
orders' shape instead of a uniform floor.

``online_lr > 0`` adds an online mixer (as paq's mixers learn): each expert's weight gets a
correction ``u[s, f]`` from a weight set ``s`` chosen by the previous byte (or a single set), and
after every coded byte all streams' gradients of that byte's log loss under the full mixture
step ``u`` at once (``u += lr * sum_b grad_b``, a one-hot product, so no float sum depends on a
scatter order). The trained gate moves only twice per batch of B*T bytes; ``u`` moves at every
position, so the mixture adapts within a window. ``u`` and the pending gradient of the last
position are carried state, rebuilt by the decoder; the training forward replays the same
updates (a scan over the window) so that the base model learns under the mixture that codes.
``apm_lr > 0`` adds to it a bias per (previous byte, byte) on the mixture's logits, stepped the
same way by ``apm_lr * (one-hot(byte) - p)``: a secondary estimate after the mixture, as paq's
APM stage, in the logit domain.
``bit_lr > 0`` mixes once more at the bit level, as paq's mixers do: the byte is read as its 8
binary decisions (most significant first, a tree of 255 nodes). At every node, the online
mixture's log-odds for the next bit get corrections, each a learnt weight per (node, input) times
an input's own log-odds there: the base model's, the match model's predicted byte (+-1 on its
path, alone and times its learnt length weight) and a bias,
``P(bit = 1) = sigmoid(odds_mix[n] + sum_g W[g, n] * s_g[n])``, every log-odds bounded by 12.
The weights start at zero (the mixture's code, but for bits it was surer of than e^12 to 1) and
step after every coded byte on the 8 nodes its bits took,
``W += lr * (bit - P) * s`` summed over streams (a one-hot product again). Where the byte-level
mixture has one weight per expert for the whole alphabet, these can differ by node: trust the
network for the first bits (letter or not, case) and not for the last ones. Measured choices
(experiments/bench/README.md, levers table): the mixture's own weight stays 1 (learnt, it and
the trained models under it traded scale and the code drifted away); the count experts as
inputs of their own cost ~40 % of the speed and coded longer.
``bit_decay > 0`` lets each node's rate decay as ``bit_lr / sqrt(1 + n / bit_decay)``, n the
bytes whose path crossed that node. At a constant rate the mixer's early gain faded as the models
under it matured; with the decay it faded too, and the faster the decay the larger the late loss
(levers table): neither is in a preset.
"""

from __future__ import annotations

from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from mdlbench.config import RECORD_MIN  # shortest record stride searched (config.validate bounds contexts by it)

V = 256  # byte alphabet; the base model's BOS input (256) is read as byte 0 here
MATCH_LOG2_BUF = 20   # bytes of history per stream the match model can point into (ring buffer)
MATCH_LOG2_ROWS = 22  # one hash table of last occurrences for all streams
MATCH_BUCKETS = 16    # match lengths 1..14 and "15 or more" each get a learned weight (0: none)
MATCH_LONG_BUCKETS = 24  # with ``match_long``: 1..15, then 16-31, 32-63, ..., 1024-2047, 2048 or more
NODES = V - 1         # binary decisions of the byte tree (bit-level mixer), heap order, root first
BIT_CLIP = 12.0       # bound on an input's log-odds: additive counts reach log(n / alpha) ~ 14
RECORD_DECAY = 4      # the record agreement counts lose 1/2**this of themselves every window
HALVE_ROWS = 16       # uint16 counts: rows per table that one window may halve (see ``_count``)
RECORD_CLEAR = (8, 5)  # a stride is clear when its agreements are at least 8/5 of the mean distance's


class NGramMix(nn.Module):
    """``base`` (any model of the protocol in :mod:`mdlbench.models`) mixed with count experts.

    Attributes:
      base: the neural model whose logits the experts are mixed into.
      orders: context lengths of the count experts, e.g. (1, 2, 3, 4).
      log2_rows: rows per table; an order whose 256**k contexts fit is indexed exactly, higher
        orders are hashed into 2**log2_rows rows (collisions only blur their counts).
      seq_len: window length T (the coding cache records the window's contexts).
      alpha: additive smoothing of the count estimates.
      update: ``window`` (a window is coded with the counts as they stood before it) or
        ``position`` (each byte counts from the next position on).
      match_min: context length of the match model's lookups; 0 for no match model.
    """

    base: nn.Module
    orders: tuple[int, ...]
    log2_rows: int
    seq_len: int
    alpha: float = 0.05
    update: str = "window"
    match_min: int = 0
    match_long: bool = False
    word: int = 0
    word_bigram: bool = False
    word_trigram: bool = False
    word_skip: bool = False
    sparse: tuple[tuple[int, ...], ...] = ()
    logp_floor: float = 0.0
    gate: str = "full"
    online_lr: float = 0.0
    online_sets: str = "byte"
    estimator: str = "additive"
    apm_lr: float = 0.0
    bit_lr: float = 0.0
    bit_decay: float = 0.0
    record: int = 0
    column: int = 0
    column_text: bool = False
    log2_rows_words: int = 0
    log2_rows_orders: tuple[tuple[int, int], ...] = ()
    counts: str = "float32"
    record_contexts: tuple[tuple[tuple[int, int], ...], ...] = (((1, 0),), ((0, 1), (1, 0)))

    def setup(self):
        k = self.n_tables
        # Starts as "trust every order a little"; the evidence features then learn when to lean.
        if self.gate == "own":  # each expert's weight from its own evidence only
            self.own_2xK = self.param("own", nn.initializers.zeros, (2, k))
            self.own_bias_K = self.param("own_bias", nn.initializers.constant(0.3), (k,))
        else:
            self.mix = nn.Dense(k, kernel_init=nn.initializers.zeros, bias_init=nn.initializers.constant(0.3))
        if self.match_min:
            # Starts at "ignore the match"; a weight grows for the lengths at which it is right.
            self.match_w = self.param("match_w", nn.initializers.zeros, (self.match_buckets,))

    @property
    def match_buckets(self) -> int:
        return MATCH_LONG_BUCKETS if self.match_long else MATCH_BUCKETS

    @property
    def history(self) -> int:
        # The column expert reads back to the last line feed, up to ``column`` bytes (and one more).
        return max((max(self.orders), self.match_min, self.word, self.column + 1 if self.column else 0)
                   + tuple(max(p) for p in self.sparse))

    @property
    def n_tables(self) -> int:
        return len(self.table_rows)

    @property
    def table_rows(self) -> tuple[int, ...]:
        """Rows of every count table, in the order of :meth:`_rows`: the byte orders, the word
        experts, the sparse contexts, the column expert, then the record contexts (:meth:`_record_rows`)."""
        words = (2 ** self.log2_rows,) if self.word else ()
        words += (2 ** self.word_bits,) * sum(1 for on in (self.word_bigram, self.word_trigram, self.word_skip) if on)
        return (tuple(self.rows_of(k, self.order_bits(k)) for k in self.orders) + words
                + tuple(self.rows_of(len(p)) for p in self.sparse)
                + (((self.column - self.column // 2) * V + 1,) if self.column else ())
                + (tuple(self.rows_of(len(c)) + 1 for c in self.record_contexts) if self.record else ()))

    @property
    def word_bits(self) -> int:
        """log2 of the rows of the word tables that read earlier words."""
        return self.log2_rows_words or self.log2_rows

    def order_bits(self, k: int) -> int:
        """log2 of the rows of byte order ``k``'s table: its own from ``log2_rows_orders`` (low orders
        have few contexts and need not take the room of the high ones), else ``log2_rows``."""
        return dict(self.log2_rows_orders).get(k, self.log2_rows)

    @property
    def per_position(self) -> bool:
        return self.update == "position"

    def rows_of(self, k: int, bits: int = 0) -> int:
        """Rows of a table of ``k``-byte contexts in 2**``bits`` rows (0: ``log2_rows``): all 256**k
        when they fit (indexed exactly), else 2**bits (hashed)."""
        return min(V ** k, 2 ** (bits or self.log2_rows))

    @staticmethod
    def _or_silent(speaks, row, rows: int, pair: bool):
        """``row`` where the expert ``speaks``, else its silent row: for a query the row after its
        ``rows`` (never counted into, so uniform), for a pair the one after that (dropped)."""
        return jnp.where(speaks, row, rows + (1 if pair else 0))

    def _rows(self, ctx_NxH, pair=False):
        """row index of every order's table for contexts ``ctx_NxH`` (last column = most recent);
        ``pair``: rows to count into (a silent context's pair gets a row that is dropped)."""
        out = [self._context_row([ctx_NxH[..., self.history - k + j] for j in range(k)], 0x9E3779B1 * (k + 1),
                                 self.order_bits(k))
               for k in self.orders]  # each order's bytes oldest first
        if self.word:
            out += self._word_rows(ctx_NxH)
        for i, dist in enumerate(self.sparse):
            out.append(self._sparse_row(ctx_NxH, dist, i))
        if self.column:
            out.append(self._column_row(ctx_NxH, pair))
        return jnp.stack(out, -1)  # ..., K

    def _column_row(self, ctx_NxH, pair=False):
        """Row of the column expert: the bytes since the last line feed (0 right after one) and
        the last byte, exactly, for columns ``column // 2`` up to ``column`` (exclusive); at any
        other column (or with no line feed in the context) a query reads the table's last row,
        which stays empty, and a pair gets the row after it, which the count's scatter drops."""
        H, lo = self.history, self.column // 2
        at_N = jnp.max(jnp.where(ctx_NxH == ord("\n"), jnp.arange(H), -1), -1)  # -1: no line feed
        col_N = H - 1 - at_N
        speaks_N = (col_N >= lo) & (col_N < self.column)
        if self.column_text:  # and only where the line so far is text (printable ASCII, tab, CR)
            printable = ((ctx_NxH >= 32) & (ctx_NxH < 127)) | (ctx_NxH == 9) | (ctx_NxH == 13)
            speaks_N = speaks_N & jnp.all(printable | (jnp.arange(H) <= at_N[..., None]), -1)
        return self._or_silent(speaks_N, (col_N - lo) * V + self._bytes(ctx_NxH[..., H - 1]), (self.column - lo) * V,
                               pair)

    def _sparse_row(self, ctx_NxH, dist, i):
        """Row of a sparse context: the bytes ``dist`` positions back (1: the last byte), as paq's
        sparse models, with a hash seed of their own."""
        return self._context_row([ctx_NxH[..., self.history - d] for d in dist], 0x632BE5AB * (i + 1))

    def _record_rows(self, back, stride, pair=False):
        """Rows of the record contexts: ``back(r)`` gives the byte ``r`` positions back (1: the
        last byte), ``stride`` the stream's record length (shapes broadcast; 0: no clear stride).
        Without a stride a query reads the table's last row, which stays empty, and a pair to
        count gets the row after it, which the count's scatter drops."""
        out, s = [], jnp.maximum(stride, RECORD_MIN)
        for i, ctx in enumerate(self.record_contexts):
            row = self._context_row([back(k * s + j) for k, j in ctx], 0x7F4A7C15 * (i + 1))
            out.append(self._or_silent(stride > 0, row, self.rows_of(len(ctx)), pair))
        return out

    def _context_row(self, cols, seed, bits: int = 0):
        """Row of the context made of the byte columns ``cols`` in a table of 2**``bits`` rows
        (0: ``log2_rows``): exact when their 256**len contexts fit the table, else a multiplicative
        hash in uint32 (wrap-around is defined: the same bits everywhere) from ``seed``."""
        bits = bits or self.log2_rows
        c = [b.astype(jnp.uint32) for b in cols]
        if V ** len(c) <= 2 ** bits:
            idx = jnp.zeros(c[0].shape, jnp.uint32)
            for b in c:
                idx = idx * jnp.uint32(V) + b
            return idx.astype(jnp.int32)
        h = jnp.full(c[0].shape, seed & 0xFFFFFFFF, jnp.uint32)
        for b in c:
            h = (h ^ (b + jnp.uint32(1))) * jnp.uint32(0x85EBCA77)
            h = h ^ (h >> jnp.uint32(13))
        return (h >> jnp.uint32(32 - bits)).astype(jnp.int32)

    def _word_rows(self, ctx_NxH):
        """Rows of the word experts: a hash of the trailing letters (case-folded), else of the last
        byte; with ``word_bigram`` a second row that also hashes the word before them (the last
        complete word). Both share one pass over the context.

        Each letter is hashed with its rank inside its word and the hashes are summed (mod 2**32):
        no chain of dependent steps (a chain of selects over the context made XLA's compile time
        explode) and the same value wherever the word sits in the context."""
        L = self.word
        c = ctx_NxH[..., self.history - L:].astype(jnp.uint32)
        low = c | jnp.uint32(0x20)
        letter = (low >= jnp.uint32(ord("a"))) & (low <= jnp.uint32(ord("z")))
        start = (letter & ~jnp.concatenate([jnp.zeros_like(letter[..., :1]), letter[..., :-1]], -1)).astype(jnp.int32)
        # Word starts after each position: 0 inside the last word (or on its trailing separators).
        after = jnp.flip(jnp.cumsum(jnp.flip(start, -1), -1), -1) - start
        ends_in_word = letter[..., L - 1:]
        current = letter & ends_in_word & (after == 0)
        previous = letter & (after == jnp.where(ends_in_word, 1, 0))

        def word_hash(mask, salt):
            rank = (jnp.cumsum(mask.astype(jnp.uint32), -1) - jnp.uint32(1)) * jnp.uint32(0x85EBCA77)
            v = (low + jnp.uint32(salt)) * jnp.uint32(0x9E3779B1) ^ rank
            v = (v ^ (v >> jnp.uint32(15))) * jnp.uint32(0x2C1B3C6D)
            v = v ^ (v >> jnp.uint32(12))
            return jnp.where(mask, v, jnp.uint32(0)).sum(-1, dtype=jnp.uint32)

        def row(h, bits=self.word_bits):
            h = (h ^ (h >> jnp.uint32(16))) * jnp.uint32(0x7FEB352D)
            h = (h ^ (h >> jnp.uint32(15))) * jnp.uint32(0x846CA68B)
            return (h >> jnp.uint32(32 - bits)).astype(jnp.int32)

        h = word_hash(current, 1) + jnp.where(ends_in_word[..., 0], jnp.uint32(0),
                                              (c[..., L - 1] + jnp.uint32(257)) * jnp.uint32(0x27D4EB2F))
        pair = h + word_hash(previous, 0x3C6EF372)
        out = [row(h, self.log2_rows)] + ([row(pair)] if self.word_bigram else [])
        before = letter & (after == jnp.where(ends_in_word, 2, 1))
        if self.word_trigram:  # and the word before that
            out.append(row(pair + word_hash(before, 0x5BD1E995)))
        if self.word_skip:  # the current word and the one before the previous, skipping that
            out.append(row(h + word_hash(before, 0x1B873593)))
        return out

    @staticmethod
    def _gather(tables, rows_NxK):
        # uint16 counts widen exactly; the experts compute in float32 whatever the tables hold.
        return jnp.stack([t[rows_NxK[..., i]].astype(jnp.float32) for i, t in enumerate(tables)], -2)  # ..., K, V

    @staticmethod
    def _count(tables, rows_NxK, tgt_N):
        """Adds the pairs (row, target) to the tables; BOS targets (>= V) count nothing.

        uint16 tables (``counts="uint16"``) must not wrap: a window adds at most N (its number of
        pairs) to one cell, so a cell above 65535 - N first has its whole row halved (as PPMd
        rescales: the row's proportions stay), and a pair whose cell is still above that (a row
        beyond the HALVE_ROWS halved per table and window) is not counted. Every path counts
        through here, on the same pairs, so encoder, decoder and training agree."""
        valid_N = tgt_N < V
        tgt = NGramMix._bytes(tgt_N)
        out = []
        for i, t in enumerate(tables):
            rows = rows_NxK[..., i]
            one = valid_N
            if t.dtype == jnp.uint16:
                limit = 0xFFFF - valid_N.size
                # Rows past the table's end (silent pairs) read as 0 and are dropped by every scatter.
                full = valid_N & (t.at[rows, tgt].get(mode="fill", fill_value=0) > limit)
                halve_R = jnp.unique(jnp.where(full, rows, t.shape[0]).ravel(), size=HALVE_ROWS,
                                     fill_value=t.shape[0])
                t = t.at[halve_R].set(t.at[halve_R].get(mode="fill", fill_value=0) >> 1, mode="drop")
                one = valid_N & (t.at[rows, tgt].get(mode="fill", fill_value=0) <= limit)
            out.append(t.at[rows, tgt].add(one.astype(t.dtype), mode="drop"))
        return tuple(out)

    def _gate(self, counts_NxKxV):
        """Each count expert's log-probabilities and its trained weight: ``(logp_NxKxV, w_NxK)``."""
        counts = counts_NxKxV
        total = counts.sum(-1)
        if self.estimator == "backoff":
            logp = jnp.log(self._backoff(counts, total))
        else:
            logp = jnp.log(counts + self.alpha) - jnp.log(total + V * self.alpha)[..., None]
        if self.logp_floor:  # bounded evidence, as paq's stretch(p) is clipped: no expert vetoes a byte alone
            logp = jnp.maximum(logp, -self.logp_floor)
        n_NxK, share_NxK = jnp.log1p(total), counts.max(-1) / (total + 1.0)
        if self.gate == "own":
            return logp, self.own_bias_K + n_NxK * self.own_2xK[0] + share_NxK * self.own_2xK[1]
        return logp, self.mix(jnp.concatenate([n_NxK, share_NxK], -1))

    def _backoff(self, counts_NxKxV, total_NxK):
        """Interpolated estimates (Witten-Bell, as PPM's escapes): each byte order's counts on
        top of the next lower order's estimate, which gets the weight of the context's distinct
        bytes plus ``alpha``, p_k(x) = (n_k(x) + (u_k + alpha) p_{k-1}(x)) / (n_k + u_k + alpha),
        from the uniform distribution below order 1. A context seen a few times with one byte
        then predicts it strongly, and an unseen byte keeps the lower orders' shape instead of a
        uniform floor. The word experts build on the estimate of the highest order <= 2."""
        esc_NxK = (counts_NxKxV > 0).sum(-1).astype(jnp.float32) + self.alpha
        out, prev, low = [], jnp.full(counts_NxKxV.shape[:-2] + (V,), 1.0 / V, jnp.float32), None
        for i in range(counts_NxKxV.shape[-2]):
            if i == len(self.orders):  # the word experts
                prev = out[low] if low is not None else jnp.full_like(prev, 1.0 / V)
            e = esc_NxK[..., i, None]
            p = (counts_NxKxV[..., i, :] + e * prev) / (total_NxK[..., i, None] + e)
            if i < len(self.orders):
                prev = p
                low = i if self.orders[i] <= 2 else low
            out.append(p)
        return jnp.stack(out, -2)

    def _match_bonus(self, match):
        """The match model's one-hot over the predicted byte (zeros with no prediction) and its
        learned weight for the match length: ``(hot_NxV, boost_N)``."""
        pred_N, bucket_N = match
        boost_N = jnp.where(bucket_N > 0, self.match_w[bucket_N], 0.0)
        return jax.nn.one_hot(pred_N, V, dtype=jnp.float32) * (bucket_N > 0)[..., None], boost_N

    def _experts(self, counts_NxKxV, match=None):
        """Each expert's feature over the alphabet and its trained weight: ``(x_NxFxV, w_NxF)``,
        F = K count experts (log-probabilities) + 1 for the match model (a one-hot bonus)."""
        logp, w = self._gate(counts_NxKxV)
        if not self.match_min:
            return logp, w
        hot, boost_N = self._match_bonus(match)
        return jnp.concatenate([logp, hot[..., None, :]], -2), jnp.concatenate([w, boost_N[..., None]], -1)

    def _mix(self, base_logits, counts_NxKxV, match=None):
        """The mixture without the online mixer (the arithmetic of the levers before it, unchanged:
        the bonus is 0 wherever the one-hot is masked, so masking changes no value)."""
        logp, w = self._gate(counts_NxKxV)
        logits = base_logits.astype(jnp.float32) + jnp.einsum("...k,...kv->...v", w, logp)
        if self.match_min:
            hot, boost_N = self._match_bonus(match)
            logits = logits + boost_N[..., None] * hot
        return logits

    # ------------------------------------------------------------------ online mixer
    # Carried state: (u_SxF, the weight corrections; pending: the last position's features
    # x_BxFxV, their expectation e_BxF under its mixture, and its weight set s_B), applied when
    # the byte that position predicted arrives as the next input; with ``apm_lr`` then (the bias
    # b_VxV; pending: the mixture's p_BxV and its context ctx_B, -1 for none); with ``bit_lr``
    # then (the bit mixer's weights W_GxN; pending: its inputs s_BxGxN and outputs z_BxN), and
    # with ``bit_decay`` the bytes each node has learnt from, c_N.

    @property
    def n_features(self) -> int:
        return self.n_tables + (1 if self.match_min else 0)

    @property
    def n_sets(self) -> int:
        return V if self.online_sets == "byte" else 1

    @property
    def _apm_at(self) -> int:
        return 4

    @property
    def _bits_at(self) -> int:
        return 4 + (3 if self.apm_lr else 0)

    def _zero_online(self, batch: int):
        F = self.n_features
        out = (jnp.zeros((self.n_sets, F), jnp.float32), jnp.zeros((batch, F, V), jnp.float32),
               jnp.zeros((batch, F), jnp.float32), jnp.zeros((batch,), jnp.int32))
        if self.apm_lr:
            # Context -1: nothing pending (its one-hot row is all zeros, so the first step is none).
            out += (jnp.zeros((V, V), jnp.float32), jnp.zeros((batch, V), jnp.float32), jnp.full((batch,), -1, jnp.int32))
        if self.bit_lr:
            G = self.n_bit_inputs
            # The corrections start at zero: the bit mixer starts as the identity.
            w_GxN = jnp.zeros((G, NODES), jnp.float32)
            out += (w_GxN, jnp.zeros((batch, G, NODES), jnp.float32), jnp.zeros((batch, NODES), jnp.float32))
            if self.bit_decay:  # how many coded bytes each node has learnt from (sums of 1.0: exact)
                out += (jnp.zeros((NODES,), jnp.float32),)
        return out

    def _online_learn(self, online, input_B):
        """The online state after the gradient step of the pending position, whose target is
        ``input_B`` (its pending part is left for :meth:`_online_mix` to replace)."""
        u, x_BxFxV, e_BxF, s_B = online[:4]
        valid = (input_B < V).astype(jnp.float32)
        got_BxF = jnp.take_along_axis(x_BxFxV, self._bytes(input_B)[:, None, None], -1)[..., 0]
        g_BxF = (got_BxF - e_BxF) * valid[:, None]  # d log p(target) / d weight
        hot_BxS = jax.nn.one_hot(s_B, self.n_sets, dtype=jnp.float32)
        u = u + self.online_lr * jnp.einsum("bs,bf->sf", hot_BxS, g_BxF, precision=jax.lax.Precision.HIGHEST)
        online = (u,) + online[1:]
        if self.apm_lr:
            a = self._apm_at
            b_CxV, p_BxV, ctx_B = online[a:a + 3]
            g_BxV = (jax.nn.one_hot(input_B, V, dtype=jnp.float32) - p_BxV) * valid[:, None]  # BOS: no step
            b_CxV = b_CxV + self.apm_lr * jnp.einsum("bc,bv->cv", jax.nn.one_hot(ctx_B, V, dtype=jnp.float32), g_BxV,
                                                     precision=jax.lax.Precision.HIGHEST)
            online = online[:a] + (b_CxV,) + online[a + 1:]
        if self.bit_lr:
            a = self._bits_at
            if self.bit_decay:
                w_GxN, c_N = self._bit_learn(*online[a:a + 3], input_B, online[a + 3])
                online = online[:a] + (w_GxN,) + online[a + 1:a + 3] + (c_N,)
            else:
                online = online[:a] + (self._bit_learn(*online[a:a + 3], input_B),) + online[a + 1:]
        return online

    def _online_mix(self, online, base_BxV, x_BxFxV, w_BxF, input_B, fixed_BxGxN=None):
        """One position's logits under the online mixer and the online state it leaves (this
        position's step pending). ``fixed_BxGxN``: the bit mixer's inputs (:meth:`_bit_fixed`),
        when the caller has them already."""
        if self.bit_lr and fixed_BxGxN is None:  # from the trained weights, as the training forward has them
            fixed_BxGxN = self._bit_fixed(base_BxV, jax.lax.stop_gradient(x_BxFxV), w_BxF)
        u = online[0]
        s_B = self._bytes(input_B) if self.online_sets == "byte" else jnp.zeros_like(input_B)
        w_BxF = w_BxF + u[s_B]
        logits_BxV = base_BxV.astype(jnp.float32) + jnp.einsum("bf,bfv->bv", w_BxF, x_BxFxV)
        if self.apm_lr:
            ctx_B = self._bytes(input_B)
            logits_BxV = logits_BxV + online[self._apm_at][ctx_B]  # the order-1 bias after the mixture
        mixture_BxV = logits_BxV
        x_BxFxV = jax.lax.stop_gradient(x_BxFxV)  # the pending step is data, not part of the loss
        p_BxV = jax.nn.softmax(jax.lax.stop_gradient(logits_BxV), -1)
        new = (u, x_BxFxV, jnp.einsum("bv,bfv->bf", p_BxV, x_BxFxV), s_B)
        if self.apm_lr:
            new += (online[self._apm_at], p_BxV, ctx_B)
        if self.bit_lr:
            w_GxN = online[self._bits_at]
            z_BxN = self._odds(mixture_BxV) + jnp.einsum("bgn,gn->bn", fixed_BxGxN, w_GxN)
            logits_BxV = self._bit_logp(z_BxN)
            new += (w_GxN, jax.lax.stop_gradient(fixed_BxGxN), jax.lax.stop_gradient(z_BxN))
            new += (online[self._bits_at + 3],) if self.bit_decay else ()
        return logits_BxV, new

    # ------------------------------------------------------------------ bit-level mixer

    @property
    def n_bit_inputs(self) -> int:
        """The base model, the match model's direction and its direction times its learned length
        weight, and a bias. (The online mixture enters with the fixed weight 1: a learnt weight
        on it and the trained models under it can trade scale for ever, and did: measured.)"""
        return 1 + (2 if self.match_min else 0) + 1

    @staticmethod
    def _tree(leaves_NxV, merge):
        """``right - left`` of every node of the byte tree (heap order: root, its two children,
        ...), where a node's value is ``merge`` of its children's and the leaves are the bytes."""
        levels, m = [], leaves_NxV
        while m.shape[-1] > 1:
            pair = m.reshape(m.shape[:-1] + (m.shape[-1] // 2, 2))
            levels.append(pair[..., 1] - pair[..., 0])
            m = merge(pair[..., 0], pair[..., 1])
        return jnp.concatenate(levels[::-1], -1)

    def _odds(self, logits_NxV):
        """Log-odds of bit 1 at every node of a distribution given by logits, bounded (they are
        differences of log-masses: no need to normalise the logits first)."""
        return jnp.clip(self._tree(logits_NxV.astype(jnp.float32), jnp.logaddexp), -BIT_CLIP, BIT_CLIP)

    def _bit_fixed(self, base_NxV, x_NxFxV, w_NxF):
        """The bit mixer's inputs, ``..., G, N``: they do not depend on the online state, so the
        training forward computes them for the whole window at once, outside its scan."""
        K = self.n_tables
        cols = [self._odds(base_NxV)[..., None, :]]
        if self.match_min:
            d_N = self._tree(x_NxFxV[..., K, :], jnp.add)  # +-1 on the predicted byte's path, 0 elsewhere
            cols += [d_N[..., None, :], (d_N * w_NxF[..., K, None])[..., None, :]]
        cols.append(jnp.ones_like(cols[-1]))
        return jnp.concatenate(cols, -2)

    @staticmethod
    def _bit_logp(z_BxN):
        """Each byte's log-probability: the sum of log sigmoid(+-z) over the 8 nodes on its path."""
        lead = z_BxN.shape[:-1]
        cum = jnp.zeros(lead + (1,), jnp.float32)
        for d in range(8):
            z_d = z_BxN[..., 2 ** d - 1: 2 ** (d + 1) - 1]
            cum = jnp.stack([cum + jax.nn.log_sigmoid(-z_d), cum + jax.nn.log_sigmoid(z_d)], -1).reshape(lead + (2 ** (d + 1),))
        return cum

    def _bit_learn(self, w_GxN, s_BxGxN, z_BxN, input_B, c_N=None):
        """The weights after the step on the pending position's 8 bits (target ``input_B``).

        With ``bit_decay`` (and ``c_N``, the bytes each node has learnt from), each node steps at
        ``bit_lr / sqrt(1 + c_N / bit_decay)`` and the counts come back too: the early gain of
        large steps without their noise once the models under the mixer have matured."""
        valid = (input_B < V).astype(jnp.float32)
        y_B = self._bytes(input_B)
        d = jnp.arange(8)
        node_Bx8 = ((V + y_B[:, None]) >> (8 - d)) - 1
        bit_Bx8 = ((y_B[:, None] >> (7 - d)) & 1).astype(jnp.float32)
        err_Bx8 = (bit_Bx8 - jax.nn.sigmoid(jnp.take_along_axis(z_BxN, node_Bx8, 1))) * valid[:, None]
        # err at each node of the path, 0 elsewhere: a B x N row per stream, then one product.
        path_Bx8xN = jax.nn.one_hot(node_Bx8, NODES, dtype=jnp.float32)
        err_BxN = jnp.einsum("bd,bdn->bn", err_Bx8, path_Bx8xN)
        step_GxN = jnp.einsum("bn,bgn->gn", err_BxN, s_BxGxN, precision=jax.lax.Precision.HIGHEST)
        if c_N is None:
            return w_GxN + self.bit_lr * step_GxN
        lr_N = self.bit_lr / jnp.sqrt(1.0 + c_N / self.bit_decay)
        hits_N = jnp.einsum("b,bdn->n", valid, path_Bx8xN, precision=jax.lax.Precision.HIGHEST)
        return w_GxN + lr_N * step_GxN, c_N + hits_N

    def _online_forward(self, base_BxTxV, x_BxTxFxV, w_BxTxF, inputs_BxT, online):
        """The training forward's mixture: the coder's per-position updates of ``u``, replayed."""
        def one(carry, t_in):
            base_BxV, x_BxFxV, w_BxF, input_B = t_in[:4]
            learnt = jax.lax.stop_gradient(self._online_learn(carry, input_B))
            logits_BxV, new = self._online_mix(learnt, base_BxV, x_BxFxV, w_BxF, input_B, *t_in[4:])
            return new, logits_BxV

        given = (base_BxTxV, x_BxTxFxV, w_BxTxF, inputs_BxT)
        if self.bit_lr:  # the bit mixer's inputs, vectorised over the window, once
            given += (self._bit_fixed(base_BxTxV, jax.lax.stop_gradient(x_BxTxFxV), w_BxTxF),)
        xs = tuple(jnp.swapaxes(a, 0, 1) for a in given)
        online, logits_TxBxV = jax.lax.scan(one, online, xs)
        return jnp.swapaxes(logits_TxBxV, 0, 1), jax.lax.stop_gradient(online)

    @staticmethod
    def _bytes(x):
        return jnp.where(x >= V, 0, x)

    # ------------------------------------------------------------------ match model
    # Carried state: (buf_BxN uint8, each stream's bytes in a ring; tab_R int32, one table for
    # all streams: context hash -> where the byte that followed it is, packed as p * B + b + 1
    # (0: none); the window record of ``_match_window``: n_B bytes each stream has seen; src_B,
    # at_B: stream and position of the predicted byte; len_B current match length (0: none); and
    # the last window's bytes and insertions, committed to buf/tab by ``settle``). One table for
    # all streams lets a stream continue a repeat of what any stream coded before (the decoder
    # has those bytes too); within a window the coder reads the window's own bytes and
    # insertions before the carried arrays.

    def _zero_match(self, batch: int):
        z = jnp.zeros((batch,), jnp.int32)
        m = (jnp.zeros((batch, 2 ** MATCH_LOG2_BUF), jnp.uint8), jnp.zeros((2 ** MATCH_LOG2_ROWS,), jnp.int32),
             z, z, z, z)
        return m[0], m[1], self._match_window(m)

    def _match_window(self, m):
        _, _, n, src, at, ln = m
        B, T = n.shape[0], self.seq_len
        return (n, src, at, ln, n, jnp.zeros((B, T), jnp.int32), jnp.full((B, T), -1, jnp.int32),
                jnp.zeros((B, T), jnp.int32))

    def _match_hash(self, ctx_BxH):
        c = ctx_BxH[:, self.history - self.match_min:].astype(jnp.uint32)
        h = jnp.full(c.shape[:1], 0x2545F491, jnp.uint32)
        for j in range(self.match_min):
            h = (h ^ (c[:, j] + jnp.uint32(1))) * jnp.uint32(0x9E3779B1)
            h = h ^ (h >> jnp.uint32(15))
        return (h >> jnp.uint32(32 - MATCH_LOG2_ROWS)).astype(jnp.int32)

    def _match_step(self, buf, tab, w, x_B, ctx_BxH, pos):
        """Feeds the coded bytes ``x_B`` (``ctx_BxH`` already ends with them) at window position
        ``pos`` to the match model, reading the carried ``buf``/``tab`` and updating only the
        window's small buffers ``w``; returns them, the predicted next byte and its length
        bucket (0: no prediction)."""
        n, src, at, ln, n0, wbytes_BxT, whash_BxT, wval_BxT = w
        B, N = buf.shape
        T = self.seq_len
        b = jnp.arange(B)
        valid = x_B < V  # a stream's first input is BOS: nothing to feed
        xb = self._bytes(x_B)
        slot = jnp.clip(n - n0, 0, T - 1)
        wbytes_BxT = wbytes_BxT.at[b, slot].set(jnp.where(valid, xb, wbytes_BxT[b, slot]))
        n_new = n + valid.astype(jnp.int32)  # every stream's byte of this position is now known

        def byte_at(s, p):  # byte p of stream s: from this window's bytes or from the ring
            n0s = n0[s]
            return jnp.where(p >= n0s, wbytes_BxT[s, jnp.clip(p - n0s, 0, T - 1)], buf[s, p % N].astype(jnp.int32))

        hit = (ln > 0) & (byte_at(src, at) == xb)
        ln_new = jnp.where(hit, ln + 1, 0)
        at_new = at + 1
        h = self._match_hash(ctx_BxH)
        # The latest earlier insertion of h in this window, over all streams: position, then stream.
        prio_BxT = jnp.arange(T)[None, :] * B + b[:, None]
        earlier_Bx_BT = ((whash_BxT.reshape(-1)[None, :] == h[:, None])
                         & (jnp.broadcast_to(jnp.arange(T)[None, :], (B, T)).reshape(-1)[None, :] < pos))
        best = jnp.argmax(jnp.where(earlier_Bx_BT, prio_BxT.reshape(-1)[None, :], -1), axis=1)
        cand = jnp.where(earlier_Bx_BT.any(1), wval_BxT.reshape(-1)[best], tab[h])
        found = (ln_new == 0) & (cand > 0)
        src_new = jnp.where(found, (cand - 1) % B, src)
        at_new = jnp.where(found, (cand - 1) // B, at_new)
        ln_new = jnp.where(found, 1, ln_new)
        whash_BxT = whash_BxT.at[:, pos].set(jnp.where(valid, h, -1))
        wval_BxT = wval_BxT.at[:, pos].set(n_new * B + b + 1)
        src, at, ln = (jnp.where(valid, new, old) for new, old in ((src_new, src), (at_new, at), (ln_new, ln)))
        # A byte not yet coded (or already out of the ring) cannot be predicted: the match ends.
        ln = jnp.where((at < n_new[src]) & (n0[src] - at <= N), ln, 0)
        pred = byte_at(src, at)
        return (n_new, src, at, ln, n0, wbytes_BxT, whash_BxT, wval_BxT), pred, self._bucket(ln)

    def _bucket(self, ln):
        """The weight index of match length ``ln`` (0: no match)."""
        if not self.match_long:
            return jnp.where(ln > 0, jnp.minimum(ln, MATCH_BUCKETS - 1), 0)
        # A long repeat (a table's rows, an image's runs) is surer than a short one: lengths past
        # 15 get a weight per power of two, counted by comparisons (no float log).
        octave = sum((ln >= 2 ** k).astype(jnp.int32) for k in range(5, 4 + MATCH_LONG_BUCKETS - 16))
        return jnp.where(ln > 0, jnp.where(ln < 16, ln, 16 + octave), 0)

    def _match_commit(self, m, w):
        """The carried state after a window: its bytes into the rings, the last insertion of
        each hash (by position, then stream) into the table; the others are dropped, so no
        scatter order matters."""
        buf, tab = m[0], m[1]
        n, src, at, ln, n0, wbytes_BxT, whash_BxT, wval_BxT = w
        B, N = buf.shape
        T, R = self.seq_len, tab.shape[0]
        j = jnp.arange(T)[None]
        rows = jnp.broadcast_to(jnp.arange(B)[:, None], (B, T))
        where = jnp.where(j < (n - n0)[:, None], (n0[:, None] + j) % N, N)  # N: out of range, dropped
        buf = buf.at[rows, where].set(wbytes_BxT.astype(jnp.uint8), mode="drop")
        h, v = whash_BxT.reshape(-1), wval_BxT.reshape(-1)
        prio = (j * B + rows).reshape(-1)
        later = ((h[:, None] == h[None, :]) & (prio[:, None] < prio[None, :])).any(1)
        tab = tab.at[jnp.where((h >= 0) & ~later, h, R)].set(v, mode="drop")
        return buf, tab, n, src, at, ln

    def _match_replay(self, inputs_BxT, hist_BxH, m):
        """The coder's per-position match steps over a window, for the training forward."""
        buf, tab = m[0], m[1]
        T, H = self.seq_len, self.history
        seq = jnp.concatenate([hist_BxH, self._bytes(inputs_BxT)], 1)

        def one(w, t):
            ctx = jax.lax.dynamic_slice_in_dim(seq, t + 1, H, axis=1)
            w, pred, bucket = self._match_step(buf, tab, w, inputs_BxT[:, t], ctx, t)
            return w, (pred, bucket)

        w, (pred_TxB, bucket_TxB) = jax.lax.scan(one, m[2], jnp.arange(T))
        return (buf, tab, w), (pred_TxB.T, bucket_TxB.T)

    # ------------------------------------------------------------------ record model
    # Carried state (after the match model's, before the online mixer's): far_BxL, each
    # stream's last L bytes as of the window's start (read as the inputs are: BOS as byte 0);
    # cnt_BxD, the decayed agreement counts of distances 1..D; stride_B, the stride the next
    # window is coded with (0: none is clear).

    @property
    def _rec_state_at(self) -> int:
        return 3 + (1 if self.match_min else 0)

    @property
    def _rec_cache_at(self) -> int:
        return 6 + (2 if self.match_min else 0)

    @property
    def record_len(self) -> int:
        """Bytes of history the record model keeps: the window's inputs and ``record`` before
        them (the agreements of :meth:`_record_settle`), and the farthest context byte."""
        far = max(k * self.record + j for ctx in self.record_contexts for k, j in ctx)
        return max(self.seq_len + self.record + 1, far)

    def _zero_record(self, batch: int):
        return (jnp.zeros((batch, self.record_len), jnp.int32), jnp.zeros((batch, self.record), jnp.int32),
                jnp.zeros((batch,), jnp.int32))

    def _stride(self, cnt_BxD):
        """The distance with the most agreements (the smallest such), or a divisor of it by 2..5
        whose count is within 1/16 of the best (the smallest such): one record, not two; 0 where
        the best is not clear (below ``RECORD_CLEAR`` times the mean over the distances)."""
        B = cnt_BxD.shape[0]
        b = jnp.arange(B)
        searched = cnt_BxD[:, RECORD_MIN - 1:]
        s_B = jnp.argmax(searched, 1).astype(jnp.int32) + RECORD_MIN
        best_B = cnt_BxD[b, s_B - 1]
        out_B = s_B
        for k in (2, 3, 4, 5):
            d_B = s_B // k
            ok = (s_B % k == 0) & (d_B >= RECORD_MIN) & (cnt_BxD[b, jnp.maximum(d_B, 1) - 1] * 16 >= best_B * 15)
            out_B = jnp.where(ok & (d_B < out_B), d_B, out_B)
        num, den = RECORD_CLEAR
        clear = best_B * searched.shape[1] * den > searched.sum(1) * num  # integers: no rounding anywhere
        return jnp.where(clear, out_B, 0)

    def _record_settle(self, rec, tgt_TxB):
        """The record state after the window whose inputs ``tgt_TxB`` (BOS: none) are the last
        T bytes of ``far``: their agreements with the bytes 1..D before each (a byte equal to the
        one before it agrees at every distance and says nothing: skipped), then the stride.
        A window with no input in a stream leaves its counts alone, so settling twice is settling
        once, as for the count tables."""
        far_BxL, cnt_BxD, _ = rec
        L, T, D = far_BxL.shape[1], tgt_TxB.shape[0], self.record
        valid_BxT = (tgt_TxB < V).T
        x_BxT = far_BxL[:, L - T:]
        fresh_BxT = valid_BxT & (x_BxT != far_BxL[:, L - T - 1:L - 1])
        back_TxD = (L - T + jnp.arange(T))[:, None] - jnp.arange(1, D + 1)[None, :]
        agree_BxD = ((far_BxL[:, back_TxD] == x_BxT[..., None]) & fresh_BxT[..., None]).sum(1, dtype=jnp.int32)
        cnt_BxD = jnp.where(valid_BxT.any(1)[:, None], cnt_BxD - (cnt_BxD >> RECORD_DECAY) + agree_BxD, cnt_BxD)
        return far_BxL, cnt_BxD, self._stride(cnt_BxD)

    # ------------------------------------------------------------------ the model protocol

    def prepare(self, inputs_BxT, state: Any):
        """The parameter-free part of the training forward: the counts every position sees, the
        match model's predictions and the carried state after the window (counts and match
        model updated exactly as the coding path updates them: same pairs, same lag). The
        trainer computes it once per batch; recomputing it at every update doubled its cost."""
        (tables, _, _), hist_BxH = state[1:3]
        seq = jnp.concatenate([hist_BxH, self._bytes(inputs_BxT)], 1)  # B x (H+T)
        H, T = self.history, inputs_BxT.shape[1]
        query_BxTxK = self._rows(jnp.stack([seq[:, t + 1: t + 1 + H] for t in range(T)], 1))
        # The pair counted at position t is (the H bytes before input t, input t).
        pair_BxTxK = self._rows(jnp.stack([seq[:, t: t + H] for t in range(T)], 1), pair=True)
        if self.record:
            far_BxL, cnt_BxD, stride_B = state[self._rec_state_at]
            L = far_BxL.shape[1]
            seq_long = jnp.concatenate([far_BxL, self._bytes(inputs_BxT)], 1)  # input i at column L + i
            t_BxT = jnp.broadcast_to(jnp.arange(T)[None, :], inputs_BxT.shape)

            def back_from(last_BxT):  # byte r back when input ``last`` is the latest byte
                return lambda r: jnp.take_along_axis(seq_long, L + last_BxT + 1 - r, 1)

            s_Bx1 = stride_B[:, None]
            query_BxTxK = jnp.concatenate(
                [query_BxTxK, jnp.stack(self._record_rows(back_from(t_BxT), s_Bx1), -1)], -1)
            pair_BxTxK = jnp.concatenate(
                [pair_BxTxK, jnp.stack(self._record_rows(back_from(t_BxT - 1), s_Bx1, pair=True), -1)], -1)
        counts = self._gather(tables, query_BxTxK)
        if self.per_position:
            # Position t also sees the window's pairs s <= t with its context: what the coder adds.
            seen_BxTxS = (jnp.arange(T)[None, :, None] >= jnp.arange(T)[None, None, :]) & (inputs_BxT < V)[:, None, :]
            onehot_BxSxV = jax.nn.one_hot(inputs_BxT, V, dtype=jnp.float32)  # BOS: all zeros
            same_BxTxSxK = query_BxTxK[:, :, None, :] == pair_BxTxK[:, None, :, :]
            extra = jnp.einsum("btsk,bsv->btkv", (same_BxTxSxK & seen_BxTxS[..., None]).astype(jnp.float32),
                               onehot_BxSxV)
            counts = counts + extra
        carried = ((tables, jnp.swapaxes(pair_BxTxK, 0, 1), inputs_BxT.T), seq[:, -H:])
        match = None
        if self.match_min:
            m, match = self._match_replay(inputs_BxT, hist_BxH, state[3])
            carried = carried + (m,)
        if self.record:  # the window's bytes join the history; counts and stride move in settle
            carried = carried + ((seq_long[:, -L:], cnt_BxD, stride_B),)
        return jax.lax.stop_gradient((counts, match, carried))

    def forward(self, inputs_BxT, state: Any, prepared: Any = None):
        """Training forward; also returns the state after the window. ``prepared`` is
        :meth:`prepare`'s result for these arguments (computed here when not given)."""
        counts, match, carried = self.prepare(inputs_BxT, state) if prepared is None else prepared
        base_logits, base_next = self.base.forward(inputs_BxT, state[0])
        if not self.online_lr:
            return self._mix(base_logits, counts, match), (base_next,) + carried
        x, w = self._experts(counts, match)
        logits, online = self._online_forward(base_logits, x, w, inputs_BxT, state[-1])
        return logits, (base_next,) + carried + (online,)

    def __call__(self, inputs_BxT, state: Any):
        return self.forward(inputs_BxT, state)[0]

    def decode(self, input_B, cache: Any, pos):
        base_cache, tables, hist_BxH, rows_TxBxK, tgt_TxB, seen = cache[:6]
        pair_BxK = self._rows(hist_BxH, pair=True)  # (context, input) pair to count
        tgt_TxB = tgt_TxB.at[pos].set(input_B)
        hist_BxH = jnp.concatenate([hist_BxH[:, 1:], self._bytes(input_B)[:, None]], 1)
        query_BxK = self._rows(hist_BxH)
        if self.record:
            far_BxL, _, stride_B = cache[self._rec_cache_at]
            L, T = far_BxL.shape[1], tgt_TxB.shape[0]
            b = jnp.arange(input_B.shape[0])

            def back_from(last):  # byte r back when input ``last`` is the latest: window, else history
                def back(r_B):
                    i_B = last + 1 - r_B
                    return jnp.where(i_B >= 0, self._bytes(tgt_TxB[jnp.clip(i_B, 0, T - 1), b]),
                                     far_BxL[b, jnp.clip(L + i_B, 0, L - 1)])
                return back

            pair_BxK = jnp.concatenate([pair_BxK, jnp.stack(self._record_rows(back_from(pos - 1), stride_B, pair=True), -1)],
                                       -1)
            query_BxK = jnp.concatenate([query_BxK, jnp.stack(self._record_rows(back_from(pos), stride_B), -1)], -1)
        rows_TxBxK = rows_TxBxK.at[pos].set(pair_BxK)
        logits_BxV, base_cache = self.base.decode(input_B, base_cache, pos)
        counts = self._gather(tables, query_BxK)
        if self.per_position:
            # The window's recorded pairs with this context, added into a B x K x V block by one
            # scatter (sums of 1.0: exact in any order); pairs not yet recorded have target BOS.
            B, K = query_BxK.shape
            same_TxBxK = (rows_TxBxK == query_BxK[None]) & (tgt_TxB < V)[..., None]
            at_TxBxK = (jnp.arange(B)[:, None] * K + jnp.arange(K)[None, :]) * V + self._bytes(tgt_TxB)[..., None]
            extra = jnp.zeros((B * K * V,), jnp.float32).at[at_TxBxK.reshape(-1)].add(
                same_TxBxK.reshape(-1).astype(jnp.float32))
            counts = counts + extra.reshape(B, K, V)
        rest, match = (), None
        if self.match_min:
            buf, tab = cache[6][0], cache[6][1]
            w, pred, bucket = self._match_step(buf, tab, cache[7], input_B, hist_BxH, pos)
            rest, match = (cache[6], w), (pred, bucket)
        if self.record:
            rest = rest + (cache[self._rec_cache_at],)
        # What this position saw, for the training step after the scan (:meth:`prepare_coded`).
        seen = tuple(a.at[:, pos].set(v) for a, v in zip(seen, (counts,) + (match or ())))
        if not self.online_lr:
            logits_BxV = self._mix(logits_BxV, counts, match)
        else:
            learnt = self._online_learn(cache[-1], input_B)
            x, w = self._experts(counts, match)
            logits_BxV, online = self._online_mix(learnt, logits_BxV, x, w, input_B)
            rest = rest + (online,)
        return logits_BxV, (base_cache, tables, hist_BxH, rows_TxBxK, tgt_TxB, seen) + rest

    def zero_state(self, batch: int):
        tables = tuple(jnp.zeros((r, V), jnp.dtype(self.counts)) for r in self.table_rows)
        rest = (self._zero_match(batch),) if self.match_min else ()
        rest += (self._zero_record(batch),) if self.record else ()
        rest += (self._zero_online(batch),) if self.online_lr else ()
        return (self.base.zero_state(batch), self._no_pending(tables, batch),
                jnp.zeros((batch, self.history), jnp.int32)) + rest

    def _no_pending(self, tables, batch: int):
        """The tables with no window's pairs waiting (targets BOS: they count nothing)."""
        return (tables, jnp.zeros((self.seq_len, batch, self.n_tables), jnp.int32),
                jnp.full((self.seq_len, batch), V, jnp.int32))

    def settle(self, state: Any):
        """The state with the last window's pairs counted and its match-model insertions made.

        ``next_state`` (and the training forward) leave them pending, and the compiled step
        settles them first, before anything reads the tables: the update is then the only
        writer of buffers that the step was handed (donated), so XLA adds the pairs in place.
        Made after the coding scan, which had read the same tables, it made XLA copy every
        table twice per step (hundreds of MB; more than half the step at 2**18 rows)."""
        tables, rows_TxBxK, tgt_TxB = state[1]
        rest = state[3:]
        if self.match_min:
            buf, tab, w = rest[0]
            m = self._match_commit((buf, tab), w)
            rest = ((m[0], m[1], self._match_window(m)),) + rest[1:]
        if self.record:
            at = self._rec_state_at - 3
            rest = rest[:at] + (self._record_settle(rest[at], tgt_TxB),) + rest[at + 1:]
        return (state[0], self._no_pending(self._count(tables, rows_TxBxK, tgt_TxB), rows_TxBxK.shape[1]),
                state[2]) + rest

    def init_cache(self, state: Any, batch: int):
        base_state, (tables, _, _), hist = state[:3]
        rest = (state[3][:2], state[3][2]) if self.match_min else ()
        rest += (state[self._rec_state_at],) if self.record else ()
        rest += (state[-1],) if self.online_lr else ()
        _, rows_TxBxK, tgt_TxB = self._no_pending(tables, batch)  # the window's pairs, recorded as it is coded
        # The counts (and match predictions) each position sees, recorded as it is coded.
        T, K = self.seq_len, self.n_tables
        seen = (jnp.zeros((batch, T, K, V), jnp.float32),)
        seen += (jnp.zeros((batch, T), jnp.int32),) * 2 if self.match_min else ()
        return (self.base.init_cache(base_state, batch), tables, hist, rows_TxBxK, tgt_TxB, seen) + rest

    def next_state(self, cache: Any, state: Any):
        """The state after a window: its pairs and match insertions pending (see :meth:`settle`)."""
        base_cache, tables, hist_BxH, rows_TxBxK, tgt_TxB = cache[:5]
        rest = ((cache[6][0], cache[6][1], cache[7]),) if self.match_min else ()
        if self.record:  # the window's inputs join the history (counts and stride move in settle)
            far_BxL, cnt_BxD, stride_B = cache[self._rec_cache_at]
            grown = jnp.concatenate([far_BxL, self._bytes(tgt_TxB).T], 1)
            rest += ((grown[:, -far_BxL.shape[1]:], cnt_BxD, stride_B),)
        rest += (cache[-1],) if self.online_lr else ()
        return (self.base.next_state(base_cache, state[0]), (tables, rows_TxBxK, tgt_TxB), hist_BxH) + rest

    def prepare_coded(self, state: Any, cache: Any):
        """:meth:`prepare`'s result for the window the coding scan just coded from ``state``,
        taken from its final ``cache`` instead of recomputed: the counts every position saw are
        sums of 1.0 on both paths, so they are the same numbers, and the match model's
        predictions are the same integers. The step that codes a window then trains on it
        without a second pass over the tables."""
        seen, after = cache[5], self.next_state(cache, state)
        match = seen[1:] if self.match_min else None
        carried = after[1:3] + ((after[3],) if self.match_min else ())
        carried += (after[self._rec_state_at],) if self.record else ()
        return jax.lax.stop_gradient((seen[0], match, carried))
