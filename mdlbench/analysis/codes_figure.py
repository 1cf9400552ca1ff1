"""Bar chart of the supervised code family (Blier & Ollivier Table 1 as a figure).

Left: code length per code in bits on a linear axis, each bar split into model cost (hatched)
and data cost, with the uniform code as a dashed baseline; bars far above the baseline (the
two-part codes) are cut at the top of the axis and labelled with their value. Right: test
accuracy per code. Reads the
rows of ``results/tables/codes_<data>.csv`` (or the same dicts in memory); no JAX.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

ORDER = ["uniform", "two_part_float32", "two_part", "variational", "blockwise", "prequential"]


def _num(v: Any) -> float:
    try:
        f = float(v)
    except (TypeError, ValueError):
        return float("nan")
    return f


def plot_codes(rows: list[dict[str, Any]] | str | Path, out_stem: str | Path) -> list[Path]:
    """Draws the figure and writes ``<out_stem>.png`` and ``<out_stem>.svg``.

    Args:
      rows: table rows (dicts with ``code``, ``label``, ``bits``, ``model_cost_bits``,
        ``data_bits``, ``test_accuracy``, ``data``, ``model``, ``n``) or a CSV path.
      out_stem: output path without suffix.

    Returns:
      The written paths.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    if isinstance(rows, (str, Path)):
        import pandas as pd

        rows = pd.read_csv(rows).to_dict("records")
    rows = sorted(rows, key=lambda r: ORDER.index(r["code"]) if r["code"] in ORDER else len(ORDER))
    labels = [str(r["label"]) for r in rows]
    bits = [_num(r["bits"]) for r in rows]
    model = [max(_num(r["model_cost_bits"]), 0.0) if not math.isnan(_num(r["model_cost_bits"])) else 0.0
             for r in rows]
    acc = [_num(r["test_accuracy"]) for r in rows]
    uni = next((b for r, b in zip(rows, bits) if r["code"] == "uniform"), None)
    meta = rows[0]

    fig, (ax, ax2) = plt.subplots(1, 2, figsize=(12, 5.4), gridspec_kw={"width_ratios": [2.2, 1]})
    xs = range(len(rows))
    top = 1.35 * max([uni or 0.0] + [b for b in bits if not uni or b <= 1.5 * uni])
    shown = [min(b, top) for b in bits]
    model_shown = [min(m, s_) for m, s_ in zip(model, shown)]
    data_shown = [s_ - m for s_, m in zip(shown, model_shown)]
    ax.bar(xs, data_shown, color="#4c72b0", label="data cost (labels | model)")
    ax.bar(xs, model_shown, bottom=data_shown, color="#dd8452", hatch="//", edgecolor="white",
           label="model cost (two-part: params; variational: KL; online: code - N*CE(final model))")
    if uni:
        ax.axhline(uni, color="k", ls="--", lw=1, label=f"uniform: N log2 K = {uni:,.1f} bits")
    for x, b, s_ in zip(xs, bits, shown):
        cut = b > s_
        ax.text(x, s_ - (0.03 * top if cut else -0.01 * top), f"{b:,.0f}" + ("\n(off scale)" if cut else ""),
                ha="center", va="top" if cut else "bottom", fontsize=8, color="white" if cut else "black",
                fontweight="bold" if cut else "normal",
                bbox={"facecolor": "#dd8452", "edgecolor": "none", "pad": 1.5} if cut else None)
    ax.set_ylim(0, top * 1.12)
    ax.set_xticks(list(xs), labels, rotation=20, ha="right", fontsize=8)
    ax.set_ylabel("code length of the labels (bits)")
    ax.set_title(f"{meta['data']}: {int(meta['n'])} labels, model {meta['model']}", fontsize=10)
    ax.legend(fontsize=7, loc="upper center", bbox_to_anchor=(0.5, -0.22), ncol=2, frameon=False)

    ax2.bar(xs, [a if not math.isnan(a) else 0 for a in acc], color="#55a868")
    for x, a in zip(xs, acc):
        ax2.text(x, (a if not math.isnan(a) else 0) + 0.01, "n/a" if math.isnan(a) else f"{a:.3f}",
                 ha="center", va="bottom", fontsize=8)
    ax2.set_ylim(0, 1.1)
    ax2.set_xticks(list(xs), labels, rotation=20, ha="right", fontsize=8)
    ax2.set_ylabel("test accuracy")
    ax2.set_title(str(meta.get("accuracy_split", "")), fontsize=8)
    fig.tight_layout()
    out_stem = Path(out_stem)
    out_stem.parent.mkdir(parents=True, exist_ok=True)
    paths = [out_stem.with_suffix(".png"), out_stem.with_suffix(".svg")]
    for p in paths:
        fig.savefig(p, dpi=130)
    plt.close(fig)
    return paths
