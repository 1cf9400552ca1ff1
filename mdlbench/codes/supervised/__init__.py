"""The MDL code family on labelled data (Blier & Ollivier 2018): uniform, two-part, block-wise
online, prequential online and variational codes of labels y given inputs x.

Modules: ``config`` (the ``supervised:`` settings), ``learner`` (compiled training and coding
probabilities), ``channel`` (encoder/decoder difference), ``uniform``, ``two_part``,
``blockwise``, ``prequential``, ``variational`` (one code each), ``files`` (coded label files and
their decoder), ``run`` (:func:`run_codes`: all codes, table, figure), ``cli`` / ``__main__``
(the decoder's command line). The codes run as a job of ``mdlbench-train`` (:mod:`mdlbench.jobs`).

Importing this package does not import JAX: the decoder pins the recorded thread count first.
Command line::

    mdlbench-train experiment=codes_mnist5k
    python -m mdlbench.codes.supervised decode results/runs/codes_mnist5k/mlp_small/blockwise.mdl
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from mdlbench.codes.supervised.config import SupervisedConfig


def run_codes(cfg: SupervisedConfig) -> dict[str, Any]:
    """Runs the configured codes; see :func:`mdlbench.codes.supervised.run.run_codes`."""
    from mdlbench.codes.supervised.run import run_codes as _run_codes

    return _run_codes(cfg)
