"""The n-gram count experts (exact replay, real gain) and the ``mdlbench bench`` harness."""

from __future__ import annotations

import csv
import dataclasses
import json

import numpy as np
import pytest

from conftest import run_cli, shared_data, small_config


def _text(n: int) -> bytes:
    return shared_data("canterbury/alice29.txt").read_bytes()[:n]


@pytest.mark.slow  # suite budget; an n-gram model's separate-process replay stays in the default suite (test_program)
def test_ngram_mix_replays_bit_exactly_and_beats_the_bare_model():
    """Counts are carried state rebuilt by the decoder: the container decodes to the input,
    and on text the mixture codes far shorter than the same LSTM alone."""
    from mdlbench.codes import prequential

    data = _text(12000)
    cfg = small_config("lstm", batch_size=4, seq_len=16)
    bare = prequential.encode(cfg, data, {"name": "alice", "path": ""})
    cfg_ng = dataclasses.replace(cfg, model=dataclasses.replace(cfg.model, ngram_orders=[1, 2, 3, 5],
                                                                ngram_log2_rows=12))
    mixed = prequential.encode(cfg_ng, data, {"name": "alice", "path": ""})
    out, _ = prequential.decode(mixed.header, mixed.payload)
    assert out == data
    assert mixed.n_params == bare.n_params + 4 * 8 + 4  # the mixing gate: 2K evidence features -> K weights
    assert len(mixed.payload) < 0.85 * len(bare.payload)
    assert 8 * len(mixed.payload) <= 1.001 * mixed.ideal_bits + 64


def test_ngram_tables_count_every_coded_byte_but_the_windows_last():
    """After coding, order-1 counts hold each (previous byte, byte) pair whose target the coder
    fed back as an input: every byte but each stream's last, the first with context 0 (BOS)."""
    import jax

    from mdlbench.codes import prequential

    data = _text(4 * 16 * 3)  # 4 streams x 3 windows of 16, no padding
    cfg = small_config("lstm", batch_size=4, seq_len=16)
    cfg = dataclasses.replace(cfg, model=dataclasses.replace(cfg.model, ngram_orders=[1], ngram_log2_rows=8))
    layout = prequential.Layout(len(data), 4, 16)
    host = prequential.Host(layout)
    prog = prequential.Program(cfg, layout, host)
    host.start_encode(data)
    carry = prog.initial()
    for s in range(layout.steps):
        carry, _, _ = prog.step(carry, s, layout.valid_window(s))
    # The last window's pairs are pending in the carried state until the next step settles them.
    table = np.asarray(jax.tree_util.tree_leaves(prog.model.settle(carry[2])[1])[0])
    expect = np.zeros((256, 256))
    for b in range(4):
        stream = data[b * 48:(b + 1) * 48]
        for i in range(47):  # target stream[i] after stream[i-1]; the last byte is still pending
            expect[stream[i - 1] if i else 0, stream[i]] += 1
    np.testing.assert_array_equal(table, expect)


def test_per_position_counts_take_in_each_byte_before_the_next_position():
    """In the first window the ``window`` update still codes with empty tables (every position
    gets the same mixture), while ``position`` already counts the window's own bytes: a
    position whose context was seen earlier in the window is predicted from that count."""
    import jax
    import jax.numpy as jnp

    from mdlbench import models
    from mdlbench.config import ModelConfig

    x = jnp.array([list(b"abababab")], jnp.int32)  # one stream; inputs a b a b ..., contexts repeat
    out = {}
    for update in ("window", "position"):
        model = models.build(ModelConfig(family="uniform", ngram_orders=[1], ngram_log2_rows=8,
                                         ngram_update=update), 8)
        state = model.zero_state(1)
        params = model.init(jax.random.PRNGKey(0), x, state)
        out[update] = np.asarray(model.apply(params, x, state))[0]  # T x V
    assert np.all(out["window"] == out["window"][0])
    p = np.exp(out["position"] - out["position"].max(-1, keepdims=True))
    p /= p.sum(-1, keepdims=True)
    # Input 2 is 'a' after 'b' had followed 'a' once: 'b' is now the likeliest next byte.
    assert p[2].argmax() == ord("b") and p[3].argmax() == ord("a") and np.allclose(p[0], 1 / 256)


def test_backoff_estimates_build_each_order_on_the_one_below():
    """The backoff estimator (Witten-Bell's escapes): every estimate is a
    distribution; a context never seen predicts exactly what the order below it predicts; a
    byte seen in a context gains over the order below, the others lose in proportion; the word
    experts build on order 2; and a context seen often with one byte predicts it far more
    strongly than additive smoothing does."""
    import jax.numpy as jnp

    from mdlbench import models
    from mdlbench.config import ModelConfig

    model = models.build(ModelConfig(family="uniform", ngram_orders=[1, 2, 3], ngram_word=6, ngram_estimator="backoff",
                                     ngram_alpha=0.5), 8)
    counts = np.zeros((1, 4, 256), np.float32)
    counts[0, 0, [5, 6]] = [3, 1]  # order 1 saw bytes 5 and 6
    counts[0, 2, 5] = 4            # order 3 saw byte 5 four times; order 2's context is new
    counts[0, 3, 7] = 2            # the word expert saw byte 7 twice
    c = jnp.asarray(counts)
    p = np.asarray(model._backoff(c, c.sum(-1)))[0]
    np.testing.assert_allclose(p.sum(-1), 1.0, rtol=1e-5)
    np.testing.assert_array_equal(p[1], p[0])  # unseen context: the order below, exactly
    assert p[0, 5] > p[0, 6] > p[0, 7] and np.allclose(p[0, 7:], p[0, 7])  # unseen bytes keep the uniform shape
    assert p[2, 5] > p[1, 5] and np.allclose(p[2, 6] / p[1, 6], p[2, 7] / p[1, 7], rtol=1e-5)
    assert p[3, 7] > p[1, 7] and np.allclose(p[3, 5] / p[1, 5], p[3, 6] / p[1, 6], rtol=1e-5)  # on order 2
    additive = (4 + 0.05) / (4 + 256 * 0.05)
    assert p[2, 5] > 0.8 > additive


def test_word_experts_index_the_trailing_letters_and_the_word_before_case_folded():
    import jax.numpy as jnp

    from mdlbench import models
    from mdlbench.config import ModelConfig

    model = models.build(ModelConfig(family="uniform", ngram_orders=[1], ngram_log2_rows=12, ngram_word=8,
                                     ngram_word_bigram=True), 8)

    def word_rows(contexts, which):
        return [int(r) for r in model._word_rows(jnp.array([list(c[-8:].rjust(8)) for c in contexts], jnp.int32))[which]]

    ctx = [b"the  cat", b"   a Cat", b"x.y, CAT", b"ollocat", b"xx  dogs", b"ab\ndogs"]
    rows = word_rows(ctx, 0)
    assert rows[0] == rows[1] == rows[2]  # "cat" after "the ", "a " or anything else, in any case
    assert rows[3] != rows[0]  # "ollocat" is another word
    assert rows[4] == rows[5]
    outside = word_rows([b"the cat ", b"a big  ."], 0)
    assert outside[0] != outside[1]  # outside a word: the last byte (space vs '.') picks the row
    pairs = [b"the  cat", b"x, The Cat", b"a  cat", b"the cat ", b"THE. CAT "]
    bi = word_rows(pairs, 1)
    assert bi[0] == bi[1] != bi[2]  # "the cat" whatever comes before or the case; "a cat" is another pair
    assert bi[3] == bi[4] != bi[0]  # after the word: the pair and the separator that followed it


def test_word_trigram_expert_indexes_the_last_three_words_case_folded():
    import jax.numpy as jnp

    from mdlbench import models
    from mdlbench.config import ModelConfig

    model = models.build(ModelConfig(family="uniform", ngram_orders=[1], ngram_log2_rows=16, ngram_word=16,
                                     ngram_word_bigram=True, ngram_word_trigram=True), 8)
    assert model.n_tables == 4

    def tri(contexts):
        ctx = jnp.array([list(c[-16:].rjust(16)) for c in contexts], jnp.int32)
        return [int(r) for r in model._word_rows(ctx)[2]]

    rows = tri([b"xx of the big", b"yy, Of The Big", b"on the big", b"of a big", b"of the bag"])
    assert rows[0] == rows[1]  # the same three words, whatever comes before, in any case
    assert len({rows[0], rows[2], rows[3], rows[4]}) == 4  # another first, second or third word: another row
    from mdlbench.config import Config, ConfigError, validate

    with pytest.raises(ConfigError, match="ngram_word_trigram needs model.ngram_word_bigram"):
        validate(Config(model=ModelConfig(family="lstm", ngram_orders=[1], ngram_word=8, ngram_word_trigram=True)))


def test_word_tables_that_read_earlier_words_can_have_rows_of_their_own():
    import jax.numpy as jnp

    from mdlbench import models
    from mdlbench.config import Config, ConfigError, ModelConfig, validate

    cfg = ModelConfig(family="uniform", ngram_orders=[1, 3], ngram_log2_rows=10, ngram_word=16, ngram_word_bigram=True,
                      ngram_word_trigram=True, ngram_word_skip=True)
    same, wide = models.build(cfg, 8), models.build(dataclasses.replace(cfg, ngram_log2_rows_words=14), 8)
    assert same.table_rows == (256, 2 ** 10) + (2 ** 10,) * 4
    assert wide.table_rows == (256, 2 ** 10, 2 ** 10) + (2 ** 14,) * 3  # the current word's table keeps its rows
    texts = [b"it was the best of", b"it was the worst of", b"Of Times", b"the age of wisdom, it", b"abc"]
    ctx = jnp.array([list(c[-16:].rjust(16)) for c in texts], jnp.int32)
    r_same, r_wide = same._rows(ctx), wide._rows(ctx)
    assert (r_wide[:, :3] == r_same[:, :3]).all()  # byte orders and the current word: the same rows
    assert int(r_wide[:, 3:].max()) >= 2 ** 10 and (r_wide[:, 3:] < 2 ** 14).all()
    with pytest.raises(ConfigError, match="ngram_log2_rows_words must be"):
        validate(Config(model=dataclasses.replace(cfg, family="lstm", ngram_log2_rows_words=30)))
    with pytest.raises(ConfigError, match="needs model.ngram_word_bigram or model.ngram_word_skip"):
        validate(Config(model=ModelConfig(family="lstm", ngram_orders=[1], ngram_word=8, ngram_log2_rows_words=20)))
    validate(Config(model=dataclasses.replace(cfg, family="lstm", ngram_log2_rows_words=20)))  # a valid setting


def test_byte_orders_can_have_rows_of_their_own():
    import jax.numpy as jnp

    from mdlbench import models
    from mdlbench.config import Config, ConfigError, ModelConfig, validate

    cfg = ModelConfig(family="uniform", ngram_orders=[1, 2, 3, 4], ngram_log2_rows=12, ngram_word=16,
                      ngram_word_bigram=True)
    same = models.build(cfg, 8)
    own = models.build(dataclasses.replace(cfg, ngram_log2_rows_orders=[[3, 10], [2, 18]]), 8)
    assert same.table_rows == (256, 2 ** 12, 2 ** 12, 2 ** 12, 2 ** 12, 2 ** 12)
    # order 2 fits 2**18 rows, so it is indexed exactly (256**2 rows); order 3 is hashed into 2**10
    assert own.table_rows == (256, 2 ** 16, 2 ** 10, 2 ** 12, 2 ** 12, 2 ** 12)
    texts = [b"it was the best of", b"it was the worst of", b"Of Times", b"the age of wisdom, it", b"abc\x00\xff"]
    ctx_NxH = jnp.array([list(c[-16:].rjust(16)) for c in texts], jnp.int32)
    r_same, r_own = same._rows(ctx_NxH), own._rows(ctx_NxH)
    keep = [0, 3, 4, 5]  # order 1, order 4 and the word tables: rows unchanged
    assert (r_own[:, keep] == r_same[:, keep]).all()
    exact = ctx_NxH[:, -2] * 256 + ctx_NxH[:, -1]
    assert (r_own[:, 1] == exact).all()
    assert (r_own[:, 2] < 2 ** 10).all() and (r_own[:, 2] != r_same[:, 2]).any()
    for bad in ([[5, 16]], [[3, 30]], [[3, 16], [3, 17]], [[3]]):
        with pytest.raises(ConfigError, match="ngram_log2_rows_orders must be"):
            validate(Config(model=dataclasses.replace(cfg, family="lstm", ngram_log2_rows_orders=bad)))
    validate(Config(model=dataclasses.replace(cfg, family="lstm", ngram_log2_rows_orders=[[3, 17], [4, 18]])))


def test_uint16_counts_halve_a_row_before_a_cell_could_wrap():
    """Narrow counts: the pairs count as in float32 until a cell could pass 65535 within the
    window; then that row is halved first (its proportions kept), and a row beyond the ones a
    window may halve stops counting instead of wrapping."""
    import jax.numpy as jnp

    from mdlbench.config import Config, ConfigError, ModelConfig, validate
    from mdlbench.models.ngram import HALVE_ROWS, NGramMix

    N = 8  # pairs per window: a cell above 65535 - 8 is halved first
    rows_N = jnp.array([3, 3, 3, 7, 9, 9, 2, 4])
    tgt_N = jnp.array([65, 65, 66, 0, 1, 1, 256, 5])  # 256: BOS, counts nothing
    t = np.zeros((11, 256), np.uint16)
    t[3, 65], t[3, 66], t[3, 200] = 0xFFFF - N + 1, 1000, 7  # row 3 could wrap: halved
    t[7, 0], t[9, 1], t[4, 5] = 0xFFFF - N, 123, 0xFFFF  # 7 at the limit exactly: counted as it is
    got = np.asarray(NGramMix._count((jnp.asarray(t),), rows_N[:, None], tgt_N)[0])
    want = t.astype(np.int64)
    want[3], want[4] = want[3] // 2, want[4] // 2
    for r, x in [(3, 65), (3, 65), (3, 66), (7, 0), (9, 1), (9, 1), (4, 5)]:
        want[r, x] += 1
    assert got.dtype == np.uint16 and np.array_equal(got, want) and want.max() <= 0xFFFF
    f32 = np.asarray(NGramMix._count((jnp.zeros((11, 256), jnp.float32),), rows_N[:, None], tgt_N)[0])
    assert f32.sum() == 7 and f32[3, 65] == 2  # float32 tables simply add
    # More full rows than one window may halve: the rest wait (not counted), none wraps.
    R = HALVE_ROWS + 3
    full = np.zeros((R + 1, 256), np.uint16)
    full[:R, 0] = 0xFFFF
    got = np.asarray(NGramMix._count((jnp.asarray(full),), jnp.arange(R)[:, None], jnp.zeros(R, jnp.int32))[0])
    assert list(got[:R, 0]) == [0x7FFF + 1] * HALVE_ROWS + [0xFFFF] * 3
    with pytest.raises(ConfigError, match="ngram_counts must be"):
        validate(Config(model=ModelConfig(family="lstm", ngram_orders=[1], ngram_counts="int8")))
    big = Config(model=ModelConfig(family="lstm", ngram_orders=[1], ngram_counts="uint16"))
    big.code.batch_size, big.code.seq_len = 256, 128
    with pytest.raises(ConfigError, match="fewer than 32768 bytes per window"):
        validate(big)


def test_long_match_buckets_give_each_power_of_two_past_15_a_weight():
    import jax.numpy as jnp

    from mdlbench import models
    from mdlbench.config import ModelConfig

    cfg = ModelConfig(family="uniform", ngram_orders=[1], match_min=4)
    short = models.build(cfg, 8)
    long = models.build(dataclasses.replace(cfg, match_long_buckets=True), 8)
    ln = jnp.array([0, 1, 14, 15, 16, 31, 32, 1000, 2047, 2048, 10 ** 6], jnp.int32)
    assert short._bucket(ln).tolist() == [0, 1, 14, 15, 15, 15, 15, 15, 15, 15, 15]
    assert long._bucket(ln).tolist() == [0, 1, 14, 15, 16, 16, 17, 21, 22, 23, 23]
    assert long.match_buckets == 24 and short.match_buckets == 16


def test_sparse_contexts_and_skip_word_index_only_the_bytes_and_words_they_name():
    import jax.numpy as jnp

    from mdlbench import models
    from mdlbench.config import Config, ConfigError, ModelConfig, validate

    model = models.build(ModelConfig(family="uniform", ngram_orders=[1], ngram_log2_rows=12, ngram_word=16,
                                     ngram_word_skip=True, ngram_sparse=[[2, 4], [3]]), 8)
    assert model.n_tables == 5 and model.history == 16
    assert model.table_rows == (256, 2 ** 12, 2 ** 12, 2 ** 12, 256)  # one byte back 3 fits exactly

    def rows(contexts):
        ctx = jnp.array([list(c[-16:].rjust(16)) for c in contexts], jnp.int32)
        return [[int(r) for r in row] for row in model._rows(ctx)]

    # Bytes 2 and 4 back: "a?c?" patterns; byte 3 back alone.
    r = rows([b"xxabcd", b"yyaXcY", b"xxQbcd", b"xxabQd"])
    assert r[0][3] == r[1][3] and len({r[0][3], r[2][3], r[3][3]}) == 3
    assert r[0][4] == r[2][4] == ord("b") and r[1][4] == ord("X")
    # Skip-word: the current word and the one two before it, whatever the word between.
    w = rows([b"of the big", b"Of A Big", b"on the big", b"of the bag"])
    assert w[0][2] == w[1][2] and len({w[0][2], w[2][2], w[3][2]}) == 3
    assert w[0][1] == w[2][1] != w[3][1]  # the word expert alone: only the current word
    with pytest.raises(ConfigError, match="ngram_word_skip needs model.ngram_word"):
        validate(Config(model=ModelConfig(family="lstm", ngram_orders=[1], ngram_word_skip=True)))
    for bad in ([[]], [[2, 2]], [[0, 1]], [[33]]):
        with pytest.raises(ConfigError, match="ngram_sparse must be lists of distinct distances"):
            validate(Config(model=ModelConfig(family="lstm", ngram_orders=[1], ngram_sparse=bad)))


def test_record_expert_finds_the_stride_online_and_indexes_the_byte_one_record_back():
    """Streams of 13-byte records: after a few windows the carried counts name 13 (not 26, which
    agrees as often); a stream of one repeated byte keeps its counts at zero, and English text
    agrees at no distance much more than at the others: neither has a stride, so their record
    experts read an empty row and count into none. The record tables are indexed by the bytes
    ``k * stride + j`` back and nothing else; settling twice is settling once."""
    import jax.numpy as jnp

    from mdlbench import models
    from mdlbench.config import Config, ConfigError, ModelConfig, validate

    T, W = 128, 12  # as the bench's windows; the text's best distance then agrees 1.22 times as often as the mean
    model = models.build(ModelConfig(family="uniform", ngram_orders=[1], ngram_log2_rows=16, ngram_record=64,
                                     ngram_record_contexts=[[[1, 0]], [[0, 1], [1, 0]], [[1, -1], [2, 0]]]), T)
    # Two bytes fit exactly; one more row each: the empty row read without a stride.
    assert model.n_tables == 4 and model.table_rows == (256, 257, 2 ** 16 + 1, 2 ** 16 + 1)
    rng = np.random.default_rng(0)
    record = rng.integers(1, 256, 13)
    rows = [np.where(rng.random(13) < 0.3, rng.integers(1, 256, 13), record) for _ in range(120)]
    streams = np.stack([np.concatenate(rows)[:W * T], np.zeros(W * T, np.int64),
                        np.frombuffer(_text(20000)[-W * T:], np.uint8)])
    state = model.zero_state(3)
    for w in range(W):
        x_TxB = jnp.asarray(streams[:, w * T:(w + 1) * T].T, jnp.int32)
        far, cnt, stride = state[3]
        far = jnp.concatenate([far, x_TxB.T], 1)[:, -far.shape[1]:]  # what next_state does with the inputs
        pending = (state[1][0], state[1][1], x_TxB)
        state = model.settle((state[0], pending, state[2], (far, cnt, stride)))
    far, cnt, stride = state[3]
    assert int(stride[0]) == 13 and int(cnt[0, 12]) > 2 * int(np.delete(np.asarray(cnt[0]), [12, 25, 38, 51]).max())
    assert not np.asarray(cnt[1]).any() and int(stride[1]) == 0 and np.asarray(cnt[2]).any() and int(stride[2]) == 0
    again = model.settle(state)[3]
    assert all(np.array_equal(a, b) for a, b in zip(again, state[3]))

    hist = {1: 7, 13: 40, 12: 41, 26: 50}  # the byte r back, for one query
    rows_K = model._record_rows(lambda r: jnp.asarray(hist.get(int(r), 0)), jnp.asarray(13))
    assert int(rows_K[0]) == 40 and int(rows_K[1]) == 7 * 256 + 40
    moved = model._record_rows(lambda r: jnp.asarray({**hist, 2: 9, 14: 3}.get(int(r), 0)), jnp.asarray(13))
    assert [int(r) for r in moved] == [int(r) for r in rows_K]  # bytes it does not name change nothing
    assert int(rows_K[2]) == 41 * 256 + 50  # one record back less one, and two records back
    silent = [int(r) for r in model._record_rows(lambda r: jnp.asarray(hist.get(int(r), 0)), jnp.asarray(0))]
    dropped = [int(r) for r in model._record_rows(lambda r: jnp.asarray(0), jnp.asarray(0), pair=True)]
    assert silent == [256, 2 ** 16, 2 ** 16] and dropped == [257, 2 ** 16 + 1, 2 ** 16 + 1]
    tables = state[1][0]
    rows_NxK = jnp.asarray([[7] + dropped])
    counted = model._count(tables, rows_NxK, jnp.asarray([65]))
    assert float(counted[0][7, 65]) == float(tables[0][7, 65]) + 1  # the byte order counted it
    assert all(np.array_equal(a, b) for a, b in zip(counted[1:], tables[1:]))  # the record tables did not
    for bad in ({"ngram_record": 8}, {"ngram_record": 64, "ngram_record_contexts": [[[0, 0]]]},
                {"ngram_record": 64, "ngram_record_contexts": [[[1, 0], [1, 0]]]}):
        with pytest.raises(ConfigError, match="ngram_record"):
            validate(Config(model=ModelConfig(family="lstm", ngram_orders=[1], **bad)))


def test_own_gate_weighs_each_expert_by_its_own_evidence_only():
    import jax
    import jax.numpy as jnp

    from mdlbench import models
    from mdlbench.config import Config, ConfigError, ModelConfig, validate

    model = models.build(ModelConfig(family="uniform", ngram_orders=[1, 2], ngram_log2_rows=10, ngram_gate="own"), 8)
    x = jnp.zeros((1, 8), jnp.int32)
    params = model.init(jax.random.PRNGKey(0), x, model.zero_state(1))
    assert set(params["params"]) == {"own", "own_bias"} and params["params"]["own_bias"].tolist() == pytest.approx([0.3, 0.3])
    params = {"params": {"own": jnp.array([[0.5, -1.0], [2.0, 3.0]]), "own_bias": jnp.array([0.1, 0.2])}}
    counts_NxKxV = jnp.zeros((2, 2, 256)).at[0, :, 7].set(3.0).at[1, 0, 7].set(3.0).at[1, 1, :4].set(5.0)
    _, w_NxK = model.apply(params, counts_NxKxV, method="_gate")
    log4 = float(jnp.log1p(3.0))
    assert w_NxK[0].tolist() == pytest.approx([0.1 + 0.5 * log4 + 2.0 * 0.75, 0.2 - log4 + 3.0 * 0.75], rel=1e-6)
    assert float(w_NxK[1, 0]) == float(w_NxK[0, 0])  # the other expert's counts changed, this weight did not
    with pytest.raises(ConfigError, match="ngram_gate must be 'full' or 'own'"):
        validate(Config(model=ModelConfig(family="lstm", ngram_orders=[1], ngram_gate="diag")))


def test_logp_floor_bounds_every_count_experts_evidence_and_nothing_else():
    import jax
    import jax.numpy as jnp

    from mdlbench import models
    from mdlbench.config import ModelConfig

    cfg = ModelConfig(family="uniform", ngram_orders=[1, 2], ngram_log2_rows=10, ngram_alpha=0.1)
    free, floored = models.build(cfg, 8), models.build(dataclasses.replace(cfg, ngram_logp_floor=8.0), 8)
    x = jnp.zeros((1, 8), jnp.int32)
    params = free.init(jax.random.PRNGKey(0), x, free.zero_state(1))
    counts_NxKxV = jnp.zeros((3, 2, 256)).at[:, :, 0].set(jnp.array([[0.0], [10.0], [1e5]]))  # unseen, seen, seen a lot
    lp_free, w_free = free.apply(params, counts_NxKxV, method="_gate")
    lp, w = floored.apply(params, counts_NxKxV, method="_gate")
    assert float(lp.min()) == pytest.approx(-8.0) and float(lp_free.min()) < -13  # log(0.1 / 1e5) bounded at -8
    assert jnp.array_equal(lp, jnp.maximum(lp_free, -8.0)) and jnp.array_equal(w, w_free)  # the gate is untouched
    assert jnp.array_equal(lp[:2], lp_free[:2])  # few counts: every estimate is above the floor


@pytest.mark.parametrize("update,online_lr,apm_lr,estimator,bit_lr,bit_decay",
                         [("window", 0.0, 0.0, "additive", 0.0, 0.0),
                          ("position", 0.0, 0.0, "backoff", 0.0, 0.0),
                          ("position", 0.05, 0.0, "additive", 0.05, 0.0),
                          ("position", 0.05, 0.05, "backoff", 0.05, 10.0)])
def test_training_forward_sees_the_counts_and_matches_the_coder_saw(update, online_lr, apm_lr, estimator, bit_lr,
                                                                    bit_decay):
    """The training forward replays the coder's per-position updates: its logits are the coding
    path's (to float rounding), what it computes before them (counts, match predictions) is what
    the coding scan recorded, exactly, its carried state (counts, word counts, match model) is the coding
    path's exactly (the online mixer's weights to float rounding: they are sums of float gradients),
    and the match model predicts the byte that comes next in a repeat, also of what another
    stream coded (one table for all streams)."""
    import jax
    import jax.numpy as jnp

    from mdlbench import models
    from mdlbench.config import ModelConfig

    B, T = 2, 24
    cfg = ModelConfig(family="uniform", ngram_orders=[1, 3], ngram_log2_rows=10, ngram_update=update, match_min=4,
                      ngram_online_lr=online_lr, ngram_word=6 if online_lr else 0, ngram_apm_lr=apm_lr,
                      ngram_estimator=estimator, ngram_bit_lr=bit_lr, ngram_bit_decay=bit_decay,
                      ngram_word_skip=bool(online_lr),
                      ngram_sparse=[[2, 4], [3]] if online_lr else [], match_long_buckets=bool(apm_lr),
                      ngram_record=16 if update == "position" else 0,
                      ngram_record_contexts=[[[1, 0]], [[0, 1], [1, 0]], [[1, -1], [2, 0]]],
                      ngram_column=16 if update == "position" else 0, ngram_column_text=bool(apm_lr),
                      ngram_counts="uint16" if online_lr else "float32")
    model = models.build(cfg, T)
    unit = b"the cat sat\non the mat.\n"  # 24 bytes: the second window repeats the first
    windows = [jnp.array([list(unit), list(unit[::-1])], jnp.int32),  # B x T
               jnp.array([list(unit), list(unit)], jnp.int32)]        # stream 1 now repeats stream 0
    state = model.zero_state(B)
    params = model.init(jax.random.PRNGKey(0), windows[0], state)
    params = jax.tree_util.tree_map(lambda p: p + 0.5, params)  # a gate and match weights that do something
    for x in windows:
        logits_f, state_f = model.apply(params, x, state, method="forward")
        cache = model.apply(params, state, B, method="init_cache")
        rows = []
        for t in range(T):
            logits_t, cache = model.apply(params, x[:, t], cache, t, method="decode")
            rows.append(logits_t)
        np.testing.assert_allclose(np.asarray(logits_f), np.stack(rows, 1), rtol=1e-5, atol=1e-5)
        # The coding scan's record of what each position saw is the training forward's input, exactly.
        want = jax.tree_util.tree_leaves(model.apply(params, x, state, method="prepare"))
        got = jax.tree_util.tree_leaves(model.apply(params, state, cache, method="prepare_coded"))
        assert len(want) == len(got) and all(np.array_equal(a, b) for a, b in zip(want, got))
        state_c = model.next_state(cache, state)
        exact = len(state_c) - 1 if online_lr else len(state_c)  # the online mixer's state is last
        for a, b in zip(jax.tree_util.tree_leaves(state_f[1:exact]), jax.tree_util.tree_leaves(state_c[1:exact])):
            np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
        for a, b in zip(jax.tree_util.tree_leaves(state_f[exact:]), jax.tree_util.tree_leaves(state_c[exact:])):
            np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-5, atol=1e-5)
        state = model.settle(state_c)  # what the compiled step does first: the window's pairs are counted
    if online_lr:
        u = np.asarray(state[-1][0])
        assert np.abs(u).max() > 0 and np.isfinite(u).all()  # the mixer moved at the coded bytes' contexts
        assert np.count_nonzero(np.abs(u).sum(1)) <= len(set(unit) | set(unit[::-1]))  # one set per previous byte
    if apm_lr:
        bias = np.asarray(state[-1][4])  # previous byte x byte
        contexts = set(unit) | set(unit[::-1]) | {0}  # a stream's first byte has context BOS, read as 0
        assert np.isfinite(bias).all() and 0 < np.count_nonzero(np.abs(bias).sum(1)) <= len(contexts)
        assert all(bias[c].sum() == pytest.approx(0, abs=1e-5) for c in range(256))  # steps of (one-hot - p)
    if bit_lr:
        w_GxN = np.asarray(state[-1][4 + (3 if apm_lr else 0)])
        assert np.isfinite(w_GxN).all() and np.abs(w_GxN).max() > 0  # from zero, it stepped on the coded bits
    if bit_decay:
        c_N = np.asarray(state[-1][4 + (3 if apm_lr else 0) + 3])
        # Every input byte took the step of the position before it along its 8 nodes, the root
        # among them (here every input is a byte, no BOS: the windows are fed as inputs).
        assert c_N.sum() == 8 * c_N[0] and c_N[0] == B * 2 * T
    buf, _, (n, src, at, ln, *_) = jax.tree_util.tree_map(np.asarray, state[3])
    assert list(n) == [2 * T, 2 * T] and (ln > 0).all()
    # Both streams are inside a repeat of stream 0's first window: the next byte starts a third copy.
    assert list(src) == [0, 0] and bytes(buf[src, at % buf.shape[1]].tolist()) == bytes([unit[0], unit[0]])


def test_bit_tree_splits_a_byte_distribution_into_its_eight_binary_decisions_exactly():
    """The bit-level mixer's two halves are inverse: the log-odds of every node of the byte tree,
    put back together along each byte's path, give the distribution back; and its update moves
    only the 8 nodes the coded byte's bits took."""
    import jax
    import jax.numpy as jnp

    from mdlbench.models.ngram import NODES, NGramMix

    logp_BxV = jax.nn.log_softmax(3.0 * jax.random.normal(jax.random.PRNGKey(1), (3, 256)), -1)
    z_BxN = NGramMix._tree(logp_BxV, jnp.logaddexp)
    assert z_BxN.shape == (3, NODES)
    np.testing.assert_allclose(np.asarray(NGramMix._bit_logp(z_BxN)), np.asarray(logp_BxV), atol=2e-4)
    # The root decides the top bit: its log-odds are log P(byte >= 128) - log P(byte < 128).
    p = np.exp(np.asarray(logp_BxV, np.float64))
    np.testing.assert_allclose(np.asarray(z_BxN[:, 0]), np.log(p[:, 128:].sum(1) / p[:, :128].sum(1)), rtol=1e-4)
    mix = NGramMix(None, (1,), 8, 4, online_lr=0.1, bit_lr=0.5)
    w = jnp.zeros((2, NODES))
    s = jnp.ones((2, 2, NODES))
    moved = np.asarray(mix._bit_learn(w, s, jnp.zeros((2, NODES)), jnp.array([0b10100001, 256]))).T
    path = [((256 + 0b10100001) >> (8 - d)) - 1 for d in range(8)]
    assert sorted(np.flatnonzero(moved[:, 0])) == sorted(path)  # stream 1's input is BOS: no step
    bits = [(0b10100001 >> (7 - d)) & 1 for d in range(8)]
    np.testing.assert_allclose(moved[path, 0], [0.5 * (b - 0.5) for b in bits])


@pytest.mark.slow  # suite budget (~80 s on 2 cores); the table/provenance logic is tested by the baselines-only test
def test_bench_writes_verified_rows_and_rerun_replaces_them(tmp_path):
    shared_data("canterbury/alice29.txt")
    args = ["bench", "data=alice29", "data.max_bytes=3000", "model.d_model=32", "model.ngram_log2_rows=10",
            "code.batch_size=4", "code.seq_len=16", "threads=1", "--table", str(tmp_path / "bench.csv")]
    r = run_cli(*args, cwd=tmp_path)
    assert r.returncode == 0, r.stderr[-2000:]
    rows = list(csv.DictReader(open(tmp_path / "bench.csv")))
    assert len(rows) == 7  # the neural coder + six classic compressors
    neural = [x for x in rows if x["method"].startswith("prequential")]
    assert len(neural) == 1
    (n,) = neural
    assert n["verified"] == "True" and int(n["bytes"]) == 3000
    assert float(n["coded_over_ideal"]) < 1.01
    assert float(n["encode_over_train"]) > 0 and float(n["decode_over_encode"]) > 0
    assert int(n["n_params"]) > 0
    summary = json.loads(next(tmp_path.glob("results/runs/bench/alice29/*/seed0/summary.json")).read_text())
    assert float(n["bits_per_byte"]) == pytest.approx(summary["code"]["bits_per_byte"], rel=1e-5)
    assert all(x["verified"] == "True" for x in rows)
    # The run record lands in one layout, results/bench/<data>/<device>/, each file with provenance.
    from mdlbench import provenance

    record = tmp_path / n["record"]
    assert record.parent == tmp_path / "results" / "bench" / "alice29"
    assert json.loads((record / "summary.json").read_text())["code"]["bits"] == int(n["bits"])
    train = json.loads((record / "train_only.json").read_text())
    assert set(train) == {"config_sha256", "train_only_s", "device", "data", "bytes"}
    assert train["config_sha256"] == n["config"] and train["bytes"] == 3000
    for path in (tmp_path / "bench.csv", record / "summary.json", record / "train_only.json"):
        assert provenance.check_file(path) == [], path
    entries = {tuple(e["key"]): e for e in provenance.read(tmp_path / "bench.csv")["results"]}
    mine = entries[(n["method"], n["device"], n["data"], n["bytes"])]
    assert mine["kind"] == provenance.PREQUENTIAL and mine["config_sha256"] == n["config"]
    assert mine["program_bits"] == summary["code"]["program_bits"] and " bench data=alice29 " in mine["command"]
    # A re-run finds the finished run and replaces its rows instead of appending.
    r = run_cli(*args, "--no-baselines", cwd=tmp_path)
    assert r.returncode == 0, r.stderr[-2000:]
    assert "already done" in r.stdout
    assert len(list(csv.DictReader(open(tmp_path / "bench.csv")))) == 7
    assert provenance.check_file(tmp_path / "bench.csv") == []  # kept rows kept their entries


def test_baselines_only_upserts_classic_rows_with_provenance_per_row(tmp_path):
    """``--baselines-only`` is bench's own code path for the compressor rows (no JAX); an upsert of
    another row keeps each earlier row's provenance entry."""
    shared_data("canterbury/alice29.txt")
    from mdlbench import bench, provenance

    table = tmp_path / "bench.csv"
    r = run_cli("bench", "data=alice29", "data.max_bytes=3000", "--baselines-only", "--table", str(table),
                cwd=tmp_path)
    assert r.returncode == 0, r.stderr[-2000:]
    rows = list(csv.DictReader(open(table)))
    assert len(rows) == 6 and all(x["verified"] == "True" and x["bytes"] == "3000" for x in rows)
    assert provenance.check_file(table) == []
    before = provenance.read(table)["results"]
    assert all("--baselines-only" in e["command"] for e in before)
    assert not (tmp_path / "results").exists()  # no run directory, no record: nothing neural ran

    fake = {"method": "prequential test", "device": "cpu x1 threads", "data": "alice29", "bytes": 3000,
            "bits": 1, "bits_per_byte": 1.0, "verified": True}
    bench.upsert(table, [fake], [provenance.result(bench.row_key(fake), note="test")])
    assert provenance.check_file(table) == []
    after = {tuple(e["key"]): e for e in provenance.read(table)["results"]}
    assert all(after[tuple(e["key"])] == e for e in before)  # untouched rows keep their own command and date
    assert after[bench.row_key(fake)]["note"] == "test"
    table.write_text(table.read_text().replace("prequential test", "prequential edited"))
    assert any("sha256 mismatch" in p for p in provenance.check_file(table))


def test_column_expert_indexes_the_bytes_since_the_last_line_feed_and_the_last_byte():
    """The column expert's row is (bytes since the last line feed, the last byte), exactly, for
    columns from half its bound up to it; at other columns, and with no line feed in the context,
    a query reads an empty last row and a pair the row after it, which counting drops."""
    import jax.numpy as jnp

    from mdlbench import models
    from mdlbench.config import ModelConfig

    from mdlbench.config import Config, ConfigError, validate

    model = models.build(ModelConfig(family="uniform", ngram_orders=[1], ngram_column=16), 8)
    assert model.history == 17 and model.table_rows == (256, 8 * 256 + 1)

    def row(text, pair=False):
        return int(model._rows(jnp.asarray([list(text.rjust(17, b"x")[-17:])], jnp.int32), pair=pair)[0, 1])

    assert row(b"it ends.\nAnd so it g") == 3 * 256 + ord("g")  # column 11: the 4th of 8 (8..15)
    assert row(b"zz\nthe end.\nAnd so it g") == row(b"q\nAnd so it g") == 3 * 256 + ord("g")  # the last line feed
    assert row(b"\n" + b"y" * 15) == 7 * 256 + ord("y") and row(b"\n" + b"y" * 8) == 0 * 256 + ord("y")
    silent = [b"\n" + b"y" * 7, b"\n" + b"y" * 16, b"line\n", b"no line feed here at all"]
    assert [row(t) for t in silent] == [8 * 256] * 4 and [row(t, pair=True) for t in silent] == [8 * 256 + 1] * 4
    tables = model.zero_state(1)[1][0]
    counted = model._count(tables, jnp.asarray([[7, 8 * 256 + 1]]), jnp.asarray([65]))
    assert float(counted[1].sum()) == 0 and float(counted[0][7, 65]) == 1  # the silent pair is dropped
    # ngram_column_text: silent also where the line so far holds a byte that is not text.
    text = models.build(ModelConfig(family="uniform", ngram_orders=[1], ngram_column=16, ngram_column_text=True), 8)

    def text_row(line):
        return int(text._rows(jnp.asarray([list((b"\x00\x01\n" + line).rjust(17, b"x")[-17:])], jnp.int32))[0, 1])

    assert text_row(b"And so it g") == 3 * 256 + ord("g")  # printable, as without the option
    assert text_row(b"And so\tit\r") == 2 * 256 + 13  # tab and CR are text (column 10)
    assert text_row(b"And s\x00 it g") == text_row(b"And s\xe9 it g") == 8 * 256  # a byte that is not: silent
    with pytest.raises(ConfigError, match="ngram_column_text needs"):
        validate(Config(model=ModelConfig(family="lstm", ngram_orders=[1], ngram_column_text=True)))


def test_bench_refuses_unverified_runs_in_one_line(tmp_path):
    r = run_cli("bench", "code.verify=false", cwd=tmp_path)
    assert r.returncode != 0
    assert r.stderr.strip().count("\n") == 0 and "verified" in r.stderr


@pytest.mark.parametrize("override,needle", [("model.ngram_orders=[0,2]", "ngram_orders"),
                                             ("model.ngram_orders=[2,2]", "ngram_orders"),
                                             ("model.ngram_log2_rows=30", "ngram_log2_rows"),
                                             ("model.ngram_estimator=ppm", "ngram_estimator"),
                                             ("model.ngram_apm_lr=-1", "ngram_apm_lr"),
                                             ("model.ngram_bit_lr=-1", "ngram_bit_lr"),
                                             ("model.ngram_bit_decay=100", "ngram_bit_decay"),
                                             ("model.ngram_alpha=0", "ngram_alpha"),
                                             ("model.ngram_column=8", "ngram_column")])
def test_bad_ngram_settings_are_one_line_before_any_work(tmp_path, override, needle):
    r = run_cli("bench", override, cwd=tmp_path)
    assert r.returncode == 2
    assert r.stderr.strip().count("\n") == 0 and needle in r.stderr
    assert not (tmp_path / "results").exists()


def test_bench_of_the_fast_mode_times_it_against_plain_training_and_writes_no_code(tmp_path):
    """``code.name=estimate``: one run measures the estimate and plain training of the same model on
    the same windows; the row goes to its own table, and nothing that looks like a code is written."""
    shared_data("canterbury/alice29.txt")
    from mdlbench import provenance

    table = tmp_path / "estimate_speed.csv"
    r = run_cli("bench", "data=alice29", "data.max_bytes=3000", "model=tx133k", "code.name=estimate",
                "code.batch_size=4", "code.seq_len=16", "threads=1", "--table", str(table), cwd=tmp_path)
    assert r.returncode == 0, r.stderr[-2000:]
    (row,) = list(csv.DictReader(open(table)))
    assert row["method"].startswith("estimate transformer d64x2 mem128") and row["bytes"] == "3000"
    assert float(row["speed_over_plain"]) == pytest.approx(float(row["train_only_s"]) / float(row["estimate_s"]),
                                                              rel=1e-4)
    assert float(row["speed_over_plain"]) > 0 and int(row["steps"]) == -(-3000 // 64)
    run_dir = tmp_path / row["run_dir"]
    summary = json.loads((run_dir / "summary.json").read_text())
    assert "bits" not in summary["code"] and summary["code"]["ideal_bits_per_byte"] == pytest.approx(
        float(row["estimate_ideal_bits_per_byte"]), rel=1e-5)
    assert not list(run_dir.glob("*.mdl")) and not (run_dir / "verify.ok").exists()
    assert not (tmp_path / "results" / "tables" / "bench.csv").exists()
    assert provenance.check_file(table) == []
    assert "x plain training's speed" in r.stdout
