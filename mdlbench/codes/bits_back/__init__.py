"""Bits-back codes made real with an ANS stack coder.

* ``bbans``: BB-ANS (Townsend, Bird & Barber 2019) codes binarised images under a small VAE:
  pop z from q(z|x), push x under p(x|z), push z under p(z), image by image.
* ``weights``: Hinton & van Camp's bits-back code of a classifier's weights: pop w from the
  discretised posterior q(w), push the labels under w, push w under the prior.

Modules: ``config`` (the ``bits_back:`` settings), ``ans`` (the stack coder), ``bbans``,
``weights`` (one code each), ``files`` (containers and their decoder), ``run``
(:func:`run_bits_back`: coding, separate-process verification, table, summary), ``cli`` /
``__main__`` (command line).

Importing this package does not import JAX: the decoder pins the recorded thread count first.
Command line::

    python -m mdlbench.codes.bits_back run --config conf/experiment/bbans_mnist5k.yaml
    python -m mdlbench.codes.bits_back decode results/runs/bbans_mnist5k/mnist5k/vae_small/seed0/mnist5k.bbans.mdl
"""

from __future__ import annotations

from typing import Any


def run_bits_back(cfg: Any, run_dir: str | None = None) -> dict[str, Any]:
    """Runs one bits-back experiment; see :func:`mdlbench.codes.bits_back.run.run_bits_back`."""
    from mdlbench.codes.bits_back.run import run_bits_back as _run

    return _run(cfg, run_dir)
