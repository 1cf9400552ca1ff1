"""Typed configuration of the knowledge-capacity experiment (the ``capacity:`` section).

Plain dataclasses and their checks, no JAX: the command line builds them from the composed
config, before the thread count is pinned. The grid of runs is a function of the config alone.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

from mdlbench.config import ConfigError, ModelConfig, OptimConfig, build, check_ranges
from mdlbench.data import knowledge
from mdlbench.data.knowledge import KnowledgeConfig


# --------------------------------------------------------------------------- configuration


@dataclass
class TrainConfig:
    """Offline training recipe (Adam, warm-up then cosine decay).

    Attributes:
      batch_size: statements per update.
      lr: peak learning rate.
      warmup_steps: linear warm-up (capped at half the updates).
      final_lr_fraction: the cosine decays to ``lr * final_lr_fraction``.
      weight_decay: decoupled weight decay (AdamW); 0 = Adam.
      clip_norm: global gradient-norm clip; 0 disables it.
      loss_on: ``all`` (every byte of a statement, as a language model reads text) or ``value``
        (only the value and its terminator).
      steps_per_call: updates fused into one compiled call (fewer Python round trips).
    """

    batch_size: int = 256
    lr: float = 3e-3
    warmup_steps: int = 100
    final_lr_fraction: float = 0.1
    weight_decay: float = 0.0
    clip_norm: float = 1.0
    loss_on: str = "all"
    steps_per_call: int = 50


@dataclass
class KnowledgeSpec(KnowledgeConfig):
    """A knowledge base of the grid: the :class:`KnowledgeConfig` fields plus where it runs.

    Attributes:
      name: label of its runs (the ``data.name`` of the table); empty = made from the fields,
        e.g. ``kb2000_uniform100``.
      models: names of the grid's models trained on it; empty = all of them.
    """

    name: str = ""
    models: list[str] = field(default_factory=list)


@dataclass
class CapacityConfig:
    """A capacity sweep: every knowledge base times (its) models.

    Attributes:
      out_dir: results root; runs/, tables/ and figures/ go below it.
      seed: seed of every initialisation and training order (the knowledge bases have their own).
      models: Transformer sizes (``family: transformer``); vary ``d_ff`` to vary only the FFN.
      knowledge: the knowledge bases.
      train: the training recipe, shared by all runs.
      eval_batch_size: statements per compiled forward pass of the measurement.
      heldout_entities: fresh entities (never trained on) measured as the chance-credit control.
      full_fraction: a run whose stored bits are below this fraction of its knowledge base's
        information is "above capacity" and enters the bits-per-parameter fit.
      ci_level: confidence level of the fitted slopes.
    """

    out_dir: str = "results"
    seed: int = 0
    models: list[ModelConfig] = field(default_factory=list)
    knowledge: list[KnowledgeSpec] = field(default_factory=list)
    train: TrainConfig = field(default_factory=TrainConfig)
    eval_batch_size: int = 512
    heldout_entities: int = 200
    full_fraction: float = 0.8
    ci_level: float = 0.95


def from_dict(d: dict[str, Any]) -> CapacityConfig:
    """Builds and validates a :class:`CapacityConfig` from the plain ``capacity:`` mapping."""
    cfg = build(CapacityConfig, d, "capacity")
    validate(cfg)
    return cfg


def validate(cfg: CapacityConfig) -> None:
    """Range checks with one clear message each."""
    t = cfg.train
    check_ranges("capacity.", {"train.batch_size": t.batch_size, "train.lr": t.lr,
                               "train.steps_per_call": t.steps_per_call, "eval_batch_size": cfg.eval_batch_size},
                 {"seed": cfg.seed, "train.warmup_steps": t.warmup_steps, "train.weight_decay": t.weight_decay,
                  "train.clip_norm": t.clip_norm, "train.final_lr_fraction": t.final_lr_fraction,
                  "heldout_entities": cfg.heldout_entities})
    if t.loss_on not in ("all", "value"):
        raise ConfigError(f"capacity.train.loss_on must be all or value, got {t.loss_on!r}")
    if not 0.0 < cfg.full_fraction <= 1.0:
        raise ConfigError(f"capacity.full_fraction must be in (0, 1], got {cfg.full_fraction}")
    if not 0.0 < cfg.ci_level < 1.0:
        raise ConfigError(f"capacity.ci_level must be in (0, 1), got {cfg.ci_level}")
    if not cfg.models or not cfg.knowledge:
        raise ConfigError("capacity.models and capacity.knowledge must each list at least one entry")
    names = [m.name for m in cfg.models]
    if len(set(names)) != len(names):
        raise ConfigError(f"capacity.models: names must be unique, got {names}")
    for i, m in enumerate(cfg.models):
        if m.family != "transformer":
            raise ConfigError(f"capacity.models[{i}] ({m.name}): only the transformer family is measured, "
                              f"got {m.family!r}")
        check_ranges(f"capacity.models[{i}].", {"d_model": m.d_model, "n_layers": m.n_layers, "n_heads": m.n_heads},
                     {"d_ff": m.d_ff})
        if m.d_model % m.n_heads:
            raise ConfigError(f"capacity.models[{i}] ({m.name}): d_model ({m.d_model}) must be divisible by "
                              f"n_heads ({m.n_heads})")
    labels = [kb_label(k) for k in cfg.knowledge]
    if len(set(labels)) != len(labels):
        raise ConfigError(f"capacity.knowledge: labels must be unique (set 'name'), got {labels}")
    for i, k in enumerate(cfg.knowledge):
        knowledge.validate(k, f"capacity.knowledge[{i}]")
        unknown = [m for m in k.models if m not in names]
        if unknown:
            raise ConfigError(f"capacity.knowledge[{i}].models: unknown model(s) {unknown}; known: {names}")


def kb_label(spec: KnowledgeSpec) -> str:
    """The run label of a knowledge base: its ``name`` or ``kb<N>_<exposure><exposures>``."""
    if spec.name:
        return spec.name
    return f"kb{spec.n_entities}_{spec.exposure}{spec.exposures}" + (f"_s{spec.seed}" if spec.seed else "")


def knowledge_config(spec: KnowledgeSpec) -> KnowledgeConfig:
    """The plain :class:`KnowledgeConfig` of a grid entry (without its label and model list)."""
    names = {f.name for f in dataclasses.fields(KnowledgeConfig)}
    return KnowledgeConfig(**{k: v for k, v in dataclasses.asdict(spec).items() if k in names})


# --------------------------------------------------------------------------- the grid


def grid(cfg: CapacityConfig) -> list[tuple[KnowledgeSpec, ModelConfig]]:
    """The (knowledge base, model) cells, knowledge bases outermost."""
    by_name = {m.name: m for m in cfg.models}
    return [(spec, by_name[m] if spec.models else m)
            for spec in cfg.knowledge for m in (spec.models or cfg.models)]


def optim_config(t: TrainConfig) -> OptimConfig:
    """The shared optimiser description of the capacity recipe: Adam (AdamW with decay), warm-up
    then cosine decay, global-norm clip."""
    return OptimConfig(name="adamw" if t.weight_decay else "adam", lr=t.lr, weight_decay=t.weight_decay,
                       clip_norm=t.clip_norm, warmup_steps=t.warmup_steps, schedule="cosine",
                       final_lr_fraction=t.final_lr_fraction)
