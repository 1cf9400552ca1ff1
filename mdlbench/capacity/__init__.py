"""Knowledge capacity: how many bits of facts a model stores per parameter, and what it loses when full.

A knowledge base (``mdlbench.data.knowledge``) holds N entities with K attributes whose values are
uniform over known choice sets, so its information content is exactly
``I = sum over facts of log2 |choices|`` bits. A causal byte-level Transformer is trained on its
statements for many epochs (offline: plain maximum likelihood, not a prequential code), then

    stored bits = sum over facts of max(0, log2 |choices| - L(fact))

where ``L(fact)`` is the code length of the value and its terminator given the statement prefix,
``-sum log2 p(byte | all previous bytes)`` under the trained model, averaged over the templates.
This is an **ideal** code length (no bitstream is written). Its logic: without the training data,
no model can code uniform, independent values in fewer than log2 |choices| bits on average, so
every bit saved was learnt from the data and sits in the parameters. A model that spreads its
mass evenly over the choices is credited 0, and so is an untrained one (it pays about 8 bits per
byte). The unclipped sum ``net bits = I - sum L`` is reported beside it: it is the lower bound a
Kraft argument gives (as in Allen-Zhu & Li 2024), whereas the per-fact max(0, .) also credits
lucky guesses; the ``control`` section measures that chance credit on entities the model never saw.

A grid of models (FFN width varied separately from width/depth) times knowledge bases (N, exposure
profile) runs one job per cell, each in ``<out_dir>/runs/<experiment>/<kb>/<model>/seed<k>/``
(``summary.json``, ``metrics.jsonl``, ``entities.csv``); a finished cell with the same config is
not redone. Then the table (``<out_dir>/tables/<experiment>.csv``), the fits and the figures
(``mdlbench.analysis.plots.make_capacity_figures``) are written and the measurement printed:
each run's stored bits per parameter, for the runs whose knowledge base holds more than they
stored (above capacity), next to the published ~2 bits per parameter (Allen-Zhu & Li 2024,
"Physics of Language Models: Part 3.3", at 1000 exposures; ~1 at 100, for GPT-2-size models
that need a GPU). A slope of stored bits against parameters is printed, with its intercept and
confidence interval, only where those runs span >= 10x in parameters
(``plots.capacity_fits``: ``slope_valid``).

Modules: ``config`` (the typed ``capacity:`` section and its grid; no JAX) and ``sweep`` (encoding
statements, training, measuring, the run directories, tables and figures). Entry points:
``mdlbench-train experiment=capacity_smoke``, :func:`run` (a :class:`CapacityConfig`), :func:`run_one`.

Importing this package does not import JAX: the names of ``sweep`` load on first use, so a
command line can pin the thread count after reading the config.
"""

from __future__ import annotations

import importlib
from typing import Any

from mdlbench.capacity.config import (CapacityConfig, KnowledgeSpec, TrainConfig, from_dict, grid, kb_label,
                                      knowledge_config, validate)

__all__ = ["CapacityConfig", "KnowledgeSpec", "TrainConfig", "from_dict", "grid", "kb_label", "knowledge_config",
           "validate"]


def __getattr__(name: str) -> Any:
    # PEP 562: the JAX side (``sweep``) is imported only when one of its names is asked for.
    module = importlib.import_module("mdlbench.capacity.sweep")
    try:
        return getattr(module, name)
    except AttributeError:
        raise AttributeError(f"module 'mdlbench.capacity' has no attribute {name!r}") from None
