"""Analysis of finished sweeps: collect runs into tables, fit scaling laws, draw figures.

Everything here is numpy / pandas / scipy / matplotlib only and must never import JAX, so that
tables and figures can be made on any machine from the run directories alone. Submodules are
not imported here: ``mdlbench collect`` should not pay for matplotlib.
"""

from mdlbench.errors import MdlbenchError


class AnalysisError(MdlbenchError, ValueError):
    """A sweep, table or fit input is missing, empty or unusable."""
