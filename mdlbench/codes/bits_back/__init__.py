"""Bits-back codes made real with an ANS stack coder.

* ``bbans``: BB-ANS (Townsend, Bird & Barber 2019) codes binarised images under a small VAE:
  pop z from q(z|x), push x under p(x|z), push z under p(z), image by image.
* ``weights``: Hinton & van Camp's bits-back code of a classifier's weights: pop w from the
  discretised posterior q(w), push the labels under w, push w under the prior.

Modules: ``config`` (the ``bits_back:`` settings), ``bbans``, ``weights`` (one code each),
``files`` (containers and their decoder), ``run`` (:func:`run_bits_back`: coding,
separate-process verification, table, summary), ``cli`` / ``__main__`` (the decoders' command
line). The codes run as a job of ``mdlbench-train`` (:mod:`mdlbench.jobs`). The stack
coder they share is :mod:`mdlbench.coding.ans`.

Importing this package does not import JAX: the decoder pins the recorded thread count first.
Command line::

    mdlbench-train experiment=bbans_mnist5k
    python -m mdlbench.codes.bits_back decode results/runs/bbans_mnist5k/mnist5k/vae_small/seed0/mnist5k.bbans.mdl
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from mdlbench.codes.bits_back.config import BitsBackConfig


def run_bits_back(cfg: BitsBackConfig, run_dir: str | None = None) -> dict[str, Any]:
    """Runs one bits-back experiment; see :func:`mdlbench.codes.bits_back.run.run_bits_back`."""
    from mdlbench.codes.bits_back.run import run_bits_back as _run

    return _run(cfg, run_dir)
