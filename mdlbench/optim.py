"""The one optimiser factory: every learner in mdlbench gets its optax optimiser here.

The prequential byte code, the supervised code family, BB-ANS's VAE, the variational
posteriors and the capacity experiment all describe their optimiser with the same
:class:`mdlbench.config.OptimConfig`; this module turns one into an optax transformation. The
factory is part of every decoder's program (a learner's updates decide the receiver's
probabilities), so it is kept small and deterministic.
"""

from __future__ import annotations

import optax

from mdlbench.config import ConfigError, OptimConfig

OPTIMIZERS = ("adam", "adamw", "sgd")
SCHEDULES = ("constant", "cosine")


def learning_rate(o: OptimConfig, total_steps: int = 0) -> float | optax.Schedule:
    """The learning rate (schedule) of ``o``.

    ``constant``: ``o.lr`` after an optional linear warm-up of ``o.warmup_steps`` updates.
    ``cosine``: warm-up (capped at half the updates) then cosine decay to
    ``o.lr * o.final_lr_fraction`` at ``total_steps``; it needs the number of updates, which an
    offline recipe knows in advance.
    """
    if o.schedule == "cosine":
        warmup = min(o.warmup_steps, total_steps // 2)
        return optax.warmup_cosine_decay_schedule(0.0, o.lr, warmup, max(total_steps, warmup + 1),
                                                  end_value=o.lr * o.final_lr_fraction)
    if o.schedule != "constant":
        raise ConfigError(f"unknown learning-rate schedule {o.schedule!r}; known: {', '.join(SCHEDULES)}")
    return optax.linear_schedule(0.0, o.lr, o.warmup_steps) if o.warmup_steps else o.lr


def make_optimizer(o: OptimConfig, total_steps: int = 0) -> optax.GradientTransformation:
    """The optax optimiser ``o`` describes: base rule, learning-rate schedule, gradient clip.

    Args:
      o: name (``adam``, ``adamw``, ``sgd``), moments, weight decay, clip and schedule.
      total_steps: updates the learner will make (only the ``cosine`` schedule reads it).

    Raises:
      ConfigError: an unknown optimiser or schedule name.
    """
    lr = learning_rate(o, total_steps)
    if o.name == "adam":
        base = optax.adam(lr, b1=o.b1, b2=o.b2, eps=o.eps)
    elif o.name == "adamw":
        base = optax.adamw(lr, b1=o.b1, b2=o.b2, eps=o.eps, weight_decay=o.weight_decay)
    elif o.name == "sgd":
        base = optax.sgd(lr)
    else:
        raise ConfigError(f"unknown optimiser {o.name!r}; known: {', '.join(OPTIMIZERS)}")
    return optax.chain(optax.clip_by_global_norm(o.clip_norm), base) if o.clip_norm > 0 else base


def adam(lr: float) -> optax.GradientTransformation:
    """Plain Adam at a constant rate, no clipping: the recipe of the VAE and the posteriors."""
    return make_optimizer(OptimConfig(name="adam", lr=lr, clip_norm=0.0))
