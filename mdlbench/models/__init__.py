"""Flax modules (no optimiser, no logging) and the name registry that builds them.

Every module offers the same small protocol, used by ``mdlbench.codes.prequential``:
  * ``__call__(inputs_BxT, state) -> logits_BxTxV``: training forward over a window;
  * ``forward(inputs_BxT, state) -> (logits_BxTxV, next_state)``: the same, also returning the
    state after the window as the training path computes it (the training-loss estimate
    ``code.name=estimate`` carries it; coders never do);
  * optionally ``prepare(inputs_BxT, state)``: the parameter-free part of the training forward,
    which the trainer then computes once per batch and passes as ``forward``'s third argument
    (the n-gram experts' counts and match model);
  * ``decode(input_B, cache, pos) -> (logits_BxV, cache)``: one coding position;
  * ``zero_state(B)``, ``init_cache(state, B)``, ``next_state(cache, state)``: the state
    carried from window to window ((h, c) for the LSTM; the keys/values of the last
    ``model.context`` bytes for a Transformer with memory, nothing without).
"""

from __future__ import annotations

import math

from mdlbench.config import ConfigError, ModelConfig

FAMILIES = ("transformer", "lstm", "uniform")


def build(cfg: ModelConfig, seq_len: int):
    """Builds the flax module named by ``cfg.family`` for windows of ``seq_len`` bytes, wrapped
    in n-gram count experts when ``cfg.ngram_orders`` names any."""
    base = _build_base(cfg, seq_len)
    if not cfg.ngram_orders:
        return base
    from mdlbench.models.ngram import NGramMix  # orders and rows are range-checked by config.validate

    return NGramMix(base, tuple(sorted(cfg.ngram_orders)), cfg.ngram_log2_rows, seq_len,
                    update=cfg.ngram_update, match_min=cfg.match_min, match_long=cfg.match_long_buckets, word=cfg.ngram_word,
                    word_bigram=cfg.ngram_word_bigram, word_trigram=cfg.ngram_word_trigram,
                    word_skip=cfg.ngram_word_skip, sparse=tuple(tuple(sorted(p)) for p in cfg.ngram_sparse),
                    logp_floor=cfg.ngram_logp_floor, gate=cfg.ngram_gate,
                    online_lr=cfg.ngram_online_lr,
                    online_sets=cfg.ngram_online_sets,
                    alpha=cfg.ngram_alpha, estimator=cfg.ngram_estimator,
                    apm_lr=cfg.ngram_apm_lr, bit_lr=cfg.ngram_bit_lr,
                    bit_decay=cfg.ngram_bit_decay, record=cfg.ngram_record,
                    column=cfg.ngram_column, column_text=cfg.ngram_column_text,
                    log2_rows_words=cfg.ngram_log2_rows_words,
                    log2_rows_orders=tuple((k, b) for k, b in cfg.ngram_log2_rows_orders),
                    counts=cfg.ngram_counts,
                    record_contexts=tuple(tuple((k, j) for k, j in c) for c in cfg.ngram_record_contexts))


def _build_base(cfg: ModelConfig, seq_len: int):
    if cfg.family == "transformer":
        from mdlbench.models.transformer import Transformer

        if cfg.positions not in ("learned", "rope"):
            raise ConfigError(f"model.positions must be 'learned' or 'rope', got {cfg.positions!r}")
        return Transformer(cfg.d_model, cfg.n_layers, cfg.n_heads, cfg.d_ff or 4 * cfg.d_model, seq_len,
                           rope=cfg.positions == "rope", context=cfg.context, memory=cfg.memory,
                           alibi=cfg.alibi)
    if cfg.family == "lstm":
        from mdlbench.models.lstm import LSTM

        return LSTM(cfg.d_model, cfg.n_layers)
    if cfg.family == "uniform":
        from mdlbench.models.uniform import Uniform

        return Uniform()
    raise ConfigError(f"unknown model family {cfg.family!r}; known: {', '.join(FAMILIES)}")


def count_params(params) -> int:
    """Number of scalar parameters in a pytree (measured, never read from a name)."""
    import jax

    return int(sum(math.prod(x.shape) for x in jax.tree_util.tree_leaves(params)))
