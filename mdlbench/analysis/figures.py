"""Drawing helpers shared by the figure modules: Agg figures, saving with provenance, log ticks.

Figures are drawn on :class:`matplotlib.figure.Figure` objects with the Agg canvas, never through
``pyplot``, so no GUI backend or global state is touched.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np


def new_figure(n_rows: int, n_cols: int, panel_size: tuple[float, float] = (5.0, 3.8)) -> tuple[Any, np.ndarray]:
    """A constrained-layout figure of ``n_rows`` x ``n_cols`` panels and its axes (always 2-D)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(panel_size[0] * n_cols, panel_size[1] * n_rows), layout="constrained")
    FigureCanvasAgg(fig)
    axes = fig.subplots(n_rows, n_cols, squeeze=False)
    return fig, axes


def save(fig: Any, stem: Path) -> list[Path]:
    """Writes ``<stem>.png`` and ``<stem>.svg``, each with its provenance sidecar; returns both."""
    import matplotlib

    stem.parent.mkdir(parents=True, exist_ok=True)
    png, svg = stem.with_name(stem.name + ".png"), stem.with_name(stem.name + ".svg")
    fig.savefig(png, dpi=150)
    # A fixed hash salt and no date keep re-generated SVGs byte-identical (they may be committed).
    with matplotlib.rc_context({"svg.hashsalt": "mdlbench"}):
        fig.savefig(svg, metadata={"Date": None})
    from mdlbench import provenance

    for path in (png, svg):
        provenance.write(path)  # the command and commit that drew it, beside it
    return [png, svg]


def fmt_params(n: float) -> str:
    """``12.5k``, ``1.5M``: a count for a legend."""
    for div, suffix in ((1e9, "G"), (1e6, "M"), (1e3, "k")):
        if n >= div:
            return f"{n / div:.3g}{suffix}"
    return f"{n:.0f}"


def tidy_log_axis(ax: Any, which: str) -> None:
    """Readable tick labels on a log axis (call after plotting, when the limits are known).

    Over a short range (bits/byte typically spans 1.5-8, bytes seen maybe 2k-50k) matplotlib
    labels every minor tick in scientific notation (``4 x 10^0``) and the labels collide, or it
    labels a single power of ten. With fewer than two powers of ten in view, ticks go on a
    1-1.5-2-3-4-5-6-8 grid (under a decade) or a 1-2-5 grid, with plain labels (``1.5``, ``20k``);
    otherwise only the powers of ten are labelled.
    """
    from matplotlib import ticker

    axis = ax.xaxis if which == "x" else ax.yaxis
    lo, hi = ax.get_xlim() if which == "x" else ax.get_ylim()
    if lo > 0 and math.floor(math.log10(hi)) - math.ceil(math.log10(lo)) < 1:
        subs = (1.0, 1.5, 2.0, 3.0, 4.0, 5.0, 6.0, 8.0) if hi / lo < 10 else (1.0, 2.0, 5.0)
        axis.set_major_locator(ticker.LogLocator(base=10, subs=subs))
        axis.set_major_formatter(ticker.FuncFormatter(lambda v, _: fmt_params(v) if v >= 1000 else f"{v:g}"))
    axis.set_minor_formatter(ticker.NullFormatter())


def colors(n: int) -> list[Any]:
    """``n`` distinct colours (tab10, cycling)."""
    from matplotlib import colormaps

    cmap = colormaps["tab10"]
    return [cmap(i % 10) for i in range(n)]
