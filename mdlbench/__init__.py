"""mdlbench: description length of data under neural models, with real, verified lossless codes.

Importing the package must not import JAX: the decoder pins the thread count and XLA flags
recorded in a container *before* JAX starts (see ``mdlbench.coding.env``).
"""

__version__ = "0.1.0"
