"""Bar chart of the supervised code family (Blier & Ollivier Table 1 as a figure).

Left: code length per code in bits on a linear axis (the table's ``bits``), each bar split into
model cost (hatched) and data cost, with the uniform code's N log2 K as a dashed baseline. Real
codes (``kind`` real: a bitstream that was decoded back) are solid bars with their ideal length
marked by a black tick; codes with no bitstream are faded bars with a dashed edge and "ideal" in
their value label. Bars far above the baseline (the two-part codes) are cut at the top of the axis
and labelled with their value. Right: test accuracy per code. Reads the rows of
``results/tables/codes_<data>.csv`` (or the same dicts in memory); no JAX.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any, Iterable

ORDER = ["uniform", "two_part_float32", "two_part", "variational", "blockwise", "prequential"]


def _num(v: Any) -> float:
    try:
        f = float(v)
    except (TypeError, ValueError):
        return float("nan")
    return f


def is_real(row: dict[str, Any]) -> bool:
    """Whether the row's ``bits`` is the size of an actual bitstream (its ``kind`` says real)."""
    return str(row.get("kind", "")).startswith("real")


def plot_codes(rows: list[dict[str, Any]] | str | Path, out_stem: str | Path,
               results: Iterable[dict[str, Any]] = ()) -> list[Path]:
    """Draws the figure and writes ``<out_stem>.png`` and ``<out_stem>.svg``, each with provenance.

    Args:
      rows: table rows (dicts with ``code``, ``label``, ``kind``, ``bits``, ``ideal_bits``,
        ``model_cost_bits``, ``test_accuracy``, ``data``, ``model``, ``n``) or a CSV path.
      out_stem: output path without suffix.
      results: the coded results the figure shows, for its provenance sidecars
        (:func:`mdlbench.provenance.result`).

    Returns:
      The written paths.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.lines import Line2D
    from matplotlib.patches import Patch

    from mdlbench import provenance

    if isinstance(rows, (str, Path)):
        import pandas as pd

        rows = pd.read_csv(rows).to_dict("records")
    rows = sorted(rows, key=lambda r: ORDER.index(r["code"]) if r["code"] in ORDER else len(ORDER))
    labels = [str(r["label"]) for r in rows]
    bits = [_num(r["bits"]) for r in rows]
    real = [is_real(r) for r in rows]
    ideal = [_num(r.get("ideal_bits", r["bits"])) for r in rows]
    model = [max(_num(r["model_cost_bits"]), 0.0) if not math.isnan(_num(r["model_cost_bits"])) else 0.0
             for r in rows]
    acc = [_num(r["test_accuracy"]) for r in rows]
    # The baseline is the uniform code's exact ideal length, N log2 K (its real code rounds it up).
    uni = next((i for r, i in zip(rows, ideal) if r["code"] == "uniform"), None)
    meta = rows[0]

    fig, (ax, ax2) = plt.subplots(1, 2, figsize=(12, 5.4), gridspec_kw={"width_ratios": [2.2, 1]})
    xs = range(len(rows))
    top = 1.35 * max([uni or 0.0] + [b for b in bits if not uni or b <= 1.5 * uni])
    shown = [min(b, top) for b in bits]
    model_shown = [min(m, s_) for m, s_ in zip(model, shown)]
    data_shown = [s_ - m for s_, m in zip(shown, model_shown)]
    for x, d_, m_, s_, r_ in zip(xs, data_shown, model_shown, shown, real):
        # Real codes solid; ideal-only codes faded with a dashed outline, so the two never look alike.
        alpha = 1.0 if r_ else 0.38
        ax.bar(x, d_, color="#4c72b0", alpha=alpha)
        ax.bar(x, m_, bottom=d_, color="#dd8452", hatch="//", edgecolor="white", alpha=alpha)
        ax.bar(x, s_, fill=False, edgecolor="black", lw=1.0 if r_ else 1.2, ls="-" if r_ else "--")
    for x, i_, r_ in zip(xs, ideal, real):
        if r_ and not math.isnan(i_) and i_ <= top:
            ax.plot([x - 0.42, x + 0.42], [i_, i_], color="black", lw=2.2, solid_capstyle="butt")
    if uni:
        ax.axhline(uni, color="k", ls="--", lw=1)
    for x, b, i_, s_, r_ in zip(xs, bits, ideal, shown, real):
        cut = b > s_
        text = f"{b:,.0f}" + (f"\nideal {i_:,.1f}" if r_ else "\n(ideal)") + ("\n(off scale)" if cut else "")
        ax.text(x, s_ - (0.03 * top if cut else -0.01 * top), text,
                ha="center", va="top" if cut else "bottom", fontsize=8, color="white" if cut else "black",
                fontweight="bold" if cut else "normal",
                bbox={"facecolor": "#dd8452", "edgecolor": "none", "pad": 1.5} if cut else None)
    handles = [
        Patch(facecolor="#4c72b0", label="data cost (labels | model)"),
        Patch(facecolor="#dd8452", hatch="//", edgecolor="white",
              label="model cost (two-part: params; variational: KL; online: ideal - N*CE(final model))"),
        Patch(facecolor="#bbbbbb", edgecolor="black", label="real: bitstream size, decoded back (solid bar)"),
        Patch(facecolor="#bbbbbb", alpha=0.38, edgecolor="black", ls="--",
              label="ideal only: no bitstream (faded bar, dashed edge)"),
        Line2D([], [], color="black", lw=2.2, label="ideal length of a real code (sum of -log2 p)"),
    ]
    if uni:
        handles.append(Line2D([], [], color="black", ls="--", lw=1, label=f"uniform: N log2 K = {uni:,.1f} bits"))
    ax.set_ylim(0, top * 1.12)
    ax.set_xticks(list(xs), labels, rotation=20, ha="right", fontsize=8)
    ax.set_ylabel("code length of the labels (bits)")
    ax.set_title(f"{meta['data']}: {int(meta['n'])} labels, model {meta['model']} "
                 "(solid: real bitstream bits; faded: ideal only)", fontsize=10)
    ax.legend(handles=handles, fontsize=7, loc="upper center", bbox_to_anchor=(0.5, -0.22), ncol=2,
              frameon=False)

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
    # A fixed hash salt and no date keep a re-drawn SVG byte-identical to the last one.
    with matplotlib.rc_context({"svg.hashsalt": "mdlbench"}):
        fig.savefig(paths[0], dpi=130)
        fig.savefig(paths[1], metadata={"Date": None})
    plt.close(fig)
    results = list(results)
    for p in paths:
        provenance.write(p, results=results)
    return paths
