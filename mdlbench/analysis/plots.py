"""``mdlbench plot``: figures (PNG + SVG) and fits from a collected sweep.

A scaling sweep gets four figures, each written as ``<name>_<figure>.png`` and ``.svg``, and
``<name>_fits.csv`` (:mod:`mdlbench.analysis.scaling_figures`, where each is described): ``scaling``
(bits/byte against measured parameters, with power-law fits), ``compute`` (bits/byte against
training FLOPs counted from the model shape), ``prequential`` (the curves against bytes seen)
and ``two_part`` (program + data bits). Every point is marked as a real (verified bitstream) code
or an estimate (training loss, no bitstream); every fit says which of the two it was fitted on.

A knowledge-capacity sweep (``mdlbench.capacity``) gets two figures instead: ``capacity`` (stored
bits of facts against parameters and FFN parameters, each run's stored bits per parameter, a
fitted slope with its intercept only where the runs span >= 10x in size, and the published ~2
bits/param) and ``retention`` (fraction of an entity's bits kept against how often
it was seen, for Zipf-exposure runs); see :func:`make_capacity_figures`.

The fits are written to ``<name>_fits.csv`` next to the figures and printed, each with its
confidence intervals and its verdict (``status``: ok / not identifiable / invalid: E below
entropy rate; ``flags``: why; see :func:`mdlbench.analysis.fits.assess`). Figures are drawn on
:class:`matplotlib.figure.Figure` objects with the Agg canvas, never through ``pyplot``
(:mod:`mdlbench.analysis.figures`), so no GUI backend or global state is touched.
"""

from __future__ import annotations

import argparse
import math
import os
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from mdlbench.analysis import AnalysisError
from mdlbench.analysis.figures import colors as _colors
from mdlbench.analysis.figures import fmt_params as _fmt_params
from mdlbench.analysis.figures import new_figure as _new_figure
from mdlbench.analysis.figures import save as _save
from mdlbench.analysis.figures import tidy_log_axis as _tidy_log_axis

_REQUIRED = ("data.name", "model.name", "model.n_params")


# --------------------------------------------------------------------------- loading


def load_tables(source: str | os.PathLike) -> tuple[pd.DataFrame, pd.DataFrame | None, str]:
    """Loads a runs table (and its curves) from a sweep directory or a collected table.

    Args:
      source: a sweep directory (collected in memory), or a ``.csv`` / ``.parquet`` runs table
        written by ``mdlbench collect``; its ``<stem>_curves`` sibling is loaded when present.

    Returns:
      (runs, curves or None, name): name is the sweep directory's or table's base name.

    Raises:
      AnalysisError: the path does not exist, is not a table, or lacks the collected columns.
    """
    path = Path(source)
    if path.is_dir():
        from mdlbench.analysis.collect import collect

        sweep = collect(path)
        runs, curves, name = sweep.runs, sweep.curves, path.resolve().name
    elif path.is_file():
        if path.suffix not in (".csv", ".parquet"):
            raise AnalysisError(f"expected a sweep directory or a .csv/.parquet table, got {path}")
        name = path.stem
        if name.endswith("_curves") and path.with_name(name[: -len("_curves")] + path.suffix).is_file():
            name = name[: -len("_curves")]  # given the curves table: use the runs table beside it
        runs = _read_table(path.with_name(name + path.suffix))
        curves_path = path.with_name(f"{name}_curves{path.suffix}")
        curves = _read_table(curves_path) if curves_path.is_file() else None
    else:
        raise AnalysisError(f"no such sweep directory or table: {path}")
    if {"step", "bytes_seen"} <= set(runs.columns):
        raise AnalysisError(
            f"{path} is a per-step curves table; pass the runs table written beside it by mdlbench collect")
    missing = [c for c in _REQUIRED if c not in runs]
    if missing:
        raise AnalysisError(f"{path} lacks column(s) {', '.join(missing)}; is it a table written by mdlbench collect?")
    if runs.empty:
        raise AnalysisError(f"{path} has no runs")
    return runs, curves, name


def _read_table(path: Path) -> pd.DataFrame:
    try:
        return pd.read_parquet(path) if path.suffix == ".parquet" else pd.read_csv(path)
    except (ValueError, OSError, pd.errors.ParserError) as e:
        raise AnalysisError(f"cannot read table {path}: {e}") from e


# --------------------------------------------------------------------------- knowledge capacity

# Allen-Zhu & Li (2024), "Physics of Language Models: Part 3.3": about 2 bits of knowledge per
# parameter after 1000 exposures of each fact, about 1 after 100 (GPT-2 models, all parameters).
PUBLISHED_BITS_PER_PARAM = ((2.0, "2 bits/param: Allen-Zhu & Li 2024, 1000 exposures"),
                            (1.0, "1 bit/param: Allen-Zhu & Li 2024, 100 exposures"))
CAPACITY_X = (("model.n_params", "parameters (measured)"), ("model.n_params_ffn", "FFN parameters (fc1 + fc2)"))
CAPACITY_Y = (("capacity.stored_bits", "stored bits (sum of max(0, .) per fact)"),
              ("capacity.net_bits", "net bits (unclipped sum)"))


def above_capacity(runs: pd.DataFrame, full_fraction: float) -> pd.Series:
    """True for runs that stored less than ``full_fraction`` of their knowledge base's information."""
    return pd.to_numeric(runs["capacity.stored_fraction"], errors="coerce") < full_fraction


def _linear_fit(x: np.ndarray, y: np.ndarray, ci_level: float) -> dict[str, Any]:
    """Least-squares line y = a + b x with a t-interval on the slope (needs >= 3 points for one)."""
    from scipy import stats

    n = len(x)
    xm, ym = x.mean(), y.mean()
    sxx = float(((x - xm) ** 2).sum())
    b = float(((x - xm) * (y - ym)).sum() / sxx)
    a = float(ym - b * xm)
    resid = y - (a + b * x)
    ss_tot = float(((y - ym) ** 2).sum())
    out = {"slope": b, "intercept": a, "slope_lo": float("nan"), "slope_hi": float("nan"),
           "r2": 1.0 - float((resid ** 2).sum()) / ss_tot if ss_tot > 0 else float("nan")}
    if n >= 3:
        se = math.sqrt(float((resid ** 2).sum()) / (n - 2) / sxx)
        half = float(stats.t.ppf(0.5 + ci_level / 2, n - 2)) * se
        out.update(slope_lo=b - half, slope_hi=b + half)
    return out


# A slope of stored bits against parameters is quoted only over runs spanning at least this
# factor in size: over a narrow range the line is an extrapolation whose intercept (often tens of
# kbit below zero) says more than its slope.
MIN_SLOPE_SPAN = 10.0
MIN_SLOPE_RUNS = 3  # a slope with a t-interval needs n - 2 >= 1 degrees of freedom


def capacity_fits(runs: pd.DataFrame, *, full_fraction: float = 0.8, ci_level: float = 0.95) -> pd.DataFrame:
    """Per-run stored bits per parameter and, where the runs allow one, the slope, above capacity.

    Only runs above capacity (stored fraction < ``full_fraction``) under uniform exposure enter:
    below capacity the stored bits are capped by the knowledge base, not by the model, and Zipf
    runs see their facts unequally often. Against all parameters, one group per planned exposure
    count; against FFN parameters, one group per (knowledge base, d_model, n_layers, n_heads): runs
    that differ only in FFN width.

    The measurement is each run's ratio (stored bits / parameters). A least-squares slope with its
    intercept is reported only when the group spans >= :data:`MIN_SLOPE_SPAN` x in the x variable
    and has >= :data:`MIN_SLOPE_RUNS` runs (``slope_valid``); otherwise the slope columns are empty
    and ``note`` says why.

    Returns:
      One row per group: ``metric``, ``x``, ``series``, ``n_runs``, ``x_min``, ``x_max``,
      ``x_span`` (x_max / x_min), the per-run ratio ``ratio_bits_per_param_{mean,min,max}`` and
      ``ratio_bits_per_param_runs`` (``job=ratio`` pairs), ``slope_valid``, and when valid
      ``slope_bits_per_param`` with ``slope_lo`` / ``slope_hi`` (t-interval at ``ci_level``),
      ``intercept_bits`` and ``r2``; ``jobs``; ``note`` where there is something to say.
    """
    runs = runs.copy()
    if "data.exposure" not in runs:
        runs["data.exposure"] = "uniform"
    pop = runs[above_capacity(runs, full_fraction) & (runs["data.exposure"].astype(str) == "uniform")]
    rows = []
    for x_col, _ in CAPACITY_X:
        if x_col not in pop:
            continue
        keys = ["data.exposures"] if x_col == "model.n_params" else \
            ["data.exposures", "data.name", "model.d_model", "model.n_layers", "model.n_heads"]
        keys = [k for k in keys if k in pop]
        groups = pop.groupby(keys, sort=True) if keys and not pop.empty else []
        for key, g in groups:
            key = key if isinstance(key, tuple) else (key,)
            series = ", ".join(f"{k.split('.')[-1]}={v}" for k, v in zip(keys, key))
            for y_col, _ in CAPACITY_Y:
                if y_col not in g:
                    continue
                x = pd.to_numeric(g[x_col], errors="coerce").to_numpy(float)
                y = pd.to_numeric(g[y_col], errors="coerce").to_numpy(float)
                jobs = g["job.dir"].astype(str).to_numpy() if "job.dir" in g else np.array([""] * len(g))
                ok = np.isfinite(x) & np.isfinite(y) & (x > 0)
                x, y, jobs = x[ok], y[ok], jobs[ok]
                row: dict[str, Any] = {"metric": y_col, "x": x_col, "series": series, "n_runs": int(len(x)),
                                       "ci_level": ci_level, "full_fraction": full_fraction,
                                       "jobs": ";".join(jobs), "slope_valid": False}
                if len(x) == 0:
                    continue
                ratio = y / x
                span = float(x.max() / x.min())
                row.update(x_min=float(x.min()), x_max=float(x.max()), x_span=span,
                           ratio_bits_per_param_mean=float(ratio.mean()), ratio_bits_per_param_min=float(ratio.min()),
                           ratio_bits_per_param_max=float(ratio.max()),
                           ratio_bits_per_param_runs=";".join(f"{j}={r:.4g}" for j, r in zip(jobs, ratio)))
                if len(x) < MIN_SLOPE_RUNS or span < MIN_SLOPE_SPAN:
                    row["note"] = (f"no slope: {len(x)} run(s) above capacity spanning {span:.2g}x in "
                                   f"{x_col} ({x.min():,.0f}-{x.max():,.0f}); a slope needs >= {MIN_SLOPE_RUNS} "
                                   f"runs spanning >= {MIN_SLOPE_SPAN:g}x")
                    rows.append(row)
                    continue
                f = _linear_fit(x, y, ci_level)
                row.update(slope_valid=True, slope_bits_per_param=f["slope"], slope_lo=f["slope_lo"],
                           slope_hi=f["slope_hi"], intercept_bits=f["intercept"], r2=f["r2"])
                rows.append(row)
    if not rows:
        rows.append({"metric": CAPACITY_Y[0][0], "x": CAPACITY_X[0][0], "n_runs": 0, "slope_valid": False,
                     "note": f"no run under uniform exposure stored less than {full_fraction:.0%} of its knowledge "
                             "base: every model held all it was given (add entities or smaller models)"})
    return pd.DataFrame(rows)


def headline_fit(fits: pd.DataFrame, x_col: str = "model.n_params", y_col: str = CAPACITY_Y[0][0]) -> pd.Series | None:
    """The group of ``y_col`` (default: stored bits) against ``x_col`` with the most runs above capacity.

    Its headline is the per-run ratio (``ratio_bits_per_param_*``); its slope only where
    ``slope_valid``.
    """
    if fits.empty or "ratio_bits_per_param_mean" not in fits:
        return None
    f = fits[(fits["metric"] == y_col) & (fits["x"] == x_col) & fits["ratio_bits_per_param_mean"].notna()]
    if f.empty:
        return None
    return f.sort_values(["n_runs", "series"], ascending=[False, False], kind="stable").iloc[0]


def _fmt_fit(row: pd.Series, y_label: str, x_label: str) -> str:
    per = "FFN parameter" if "ffn" in str(row["x"]) else "parameter"
    line = (f"{y_label} per {per}, per run: {row['ratio_bits_per_param_min']:.3g}-"
            f"{row['ratio_bits_per_param_max']:.3g} (mean {row['ratio_bits_per_param_mean']:.3g}) over "
            f"{row['n_runs']} runs above capacity ({row['series']}; {x_label} {row['x_min']:,.0f}-{row['x_max']:,.0f}, "
            f"{row['x_span']:.2g}x)")
    if bool(row.get("slope_valid")):
        ci = (f"[{row['slope_lo']:.3g}, {row['slope_hi']:.3g}] ({100 * row['ci_level']:.0f} % CI)")
        line += (f"; line: {row['intercept_bits']:+,.0f} bits + {row['slope_bits_per_param']:.3g} {ci} bits "
                 f"per {per}, r2 {row['r2']:.3f}")
    else:
        line += f"; {row.get('note', 'no slope')}"
    return line


def plot_capacity(runs: pd.DataFrame, fits: pd.DataFrame, stem: Path, full_fraction: float) -> list[Path]:
    """Stored bits against parameters (left) and FFN parameters (right), log-log.

    Colour: the knowledge base, whose information content is the dashed line of that colour.
    Filled circles: runs above capacity under uniform exposure (they enter the per-run ratios and,
    where they span >= 10x, the fitted line); hollow circles: runs that stored at least
    ``full_fraction`` of their base; squares: Zipf exposure (not fitted). The number beside each
    dot is that run's stored bits per parameter (per FFN parameter on the right). Black line: the
    fitted slope with its intercept, drawn only when ``slope_valid``; otherwise the panel says
    why there is none. Dotted: the published 2 and 1 bits per parameter.
    """
    from matplotlib.lines import Line2D

    kbs = sorted(runs["data.name"].astype(str).unique())
    colors = dict(zip(kbs, _colors(len(kbs))))
    full = above_capacity(runs, full_fraction)
    zipf = runs["data.exposure"].astype(str) == "zipf" if "data.exposure" in runs else pd.Series(False, runs.index)
    fig, axes = _new_figure(1, len(CAPACITY_X), panel_size=(5.4, 4.6))
    for ax, (x_col, x_label) in zip(axes[0], CAPACITY_X):
        if x_col not in runs:
            continue
        x_all = pd.to_numeric(runs[x_col], errors="coerce")
        y_all = pd.to_numeric(runs["capacity.stored_bits"], errors="coerce").clip(lower=1.0)
        for kb in kbs:
            d = runs["data.name"].astype(str) == kb
            color = colors[kb]
            for sel, kw in ((d & full & ~zipf, {"color": color}),
                            (d & ~full & ~zipf, {"facecolors": "none", "edgecolors": color}),
                            (d & zipf, {"color": color, "marker": "s"})):
                if sel.any():
                    ax.scatter(x_all[sel], y_all[sel], s=34, zorder=3, **kw)
            info = float(pd.to_numeric(runs.loc[d, "capacity.information_bits"]).iloc[0])
            ax.axhline(info, ls="--", lw=1, color=color)
        # One label per model, at its highest point; each run's measured ratio beside its dot.
        for model, g in runs.assign(_x=x_all, _y=y_all).groupby("model.name", sort=True):
            top = g.loc[g["_y"].idxmax()]
            ax.annotate(str(model), (top["_x"], top["_y"]), fontsize=6, xytext=(4, 4), textcoords="offset points",
                        color="0.25")
        # Only the measured runs (above capacity, uniform exposure) get their ratio: a memorised
        # run's ratio is capped by its knowledge base. Runs of the same size on different bases
        # sit on one vertical; their labels alternate right / left by knowledge base.
        raw_y = pd.to_numeric(runs["capacity.stored_bits"], errors="coerce")
        measured = full & ~zipf
        measured_kbs = sorted(runs.loc[measured, "data.name"].astype(str).unique())
        for i in np.flatnonzero(measured.to_numpy()):
            ri = raw_y.iloc[i] / x_all.iloc[i]
            if np.isfinite(ri):
                kb = str(runs["data.name"].iloc[i])
                k = measured_kbs.index(kb)
                ax.annotate(f"{ri:.2g}", (x_all.iloc[i], y_all.iloc[i]), fontsize=5.5, color=colors[kb],
                            xytext=(5 if k % 2 == 0 else -5, -9 - 7 * (k // 2)), textcoords="offset points",
                            ha="left" if k % 2 == 0 else "right")
        fit_rows = fits[(fits["x"] == x_col) & (fits["metric"] == CAPACITY_Y[0][0])] if "x" in fits else fits
        no_slope = []
        for _, f in fit_rows.iterrows():
            if not bool(f.get("slope_valid")):
                if f.get("n_runs", 0) >= 2 and not pd.isna(f.get("x_span")):
                    # The exposure count is the same for all groups of a smoke; the rest says which runs.
                    short = ", ".join(p for p in str(f["series"]).split(", ") if not p.startswith("exposures="))
                    no_slope.append(f"{short.replace('name=', '') or 'all runs'}: {f['n_runs']} runs "
                                    f"span {f['x_span']:.2g}x")
                continue
            xs = x_all[runs["job.dir"].isin(str(f["jobs"]).split(";"))]
            grid = np.geomspace(xs.min() / 1.1, xs.max() * 1.1, 200)
            ci = f" [{f['slope_lo']:.2g}, {f['slope_hi']:.2g}]"
            line = f["intercept_bits"] + f["slope_bits_per_param"] * grid
            # On log axes a line with a negative intercept dives to minus infinity: draw it only
            # where it is within the data's range of heights.
            line = np.where(line >= 0.5 * float(y_all[xs.index].min()), line, np.nan)
            ax.plot(grid, line, "-", color="k",
                    lw=1.2, label=f"line over {f['n_runs']} runs ({f['x_span']:.2g}x span): "
                                  f"{f['intercept_bits']:+,.0f} bits + {f['slope_bits_per_param']:.2g}{ci} bits/param")
        if no_slope:
            ax.text(0.02, 0.98, f"no slope (needs >= {MIN_SLOPE_RUNS} runs spanning >= {MIN_SLOPE_SPAN:g}x):\n"
                    + "\n".join(no_slope), transform=ax.transAxes, fontsize=5.5, va="top", ha="left", color="0.2",
                    bbox={"boxstyle": "round", "fc": "white", "ec": "0.7", "alpha": 0.9}, zorder=5)
        if x_col == "model.n_params":
            lo, hi = ax.get_xlim()
            grid = np.geomspace(lo, hi, 20)
            for rate, label in PUBLISHED_BITS_PER_PARAM:
                ax.plot(grid, rate * grid, ":", color="0.3" if rate == 2.0 else "0.6", lw=1.4, label=label)
            ax.set_xlim(lo, hi)
        ax.set_xscale("log")
        ax.set_yscale("log")
        _tidy_log_axis(ax, "x")
        ax.set_xlabel(x_label)
        ax.set_ylabel("stored bits of facts (ideal)")
        per = "per FFN parameter" if "ffn" in x_col else "per parameter"
        ax.set_title(f"stored bits vs {x_label.split(' (')[0]}\n(numbers: each run's stored bits {per})", fontsize=9)
        ax.grid(True, which="both", alpha=0.3)
        if ax.get_legend_handles_labels()[0]:
            ax.legend(fontsize=6.5, loc="best")
    info_of = runs.groupby(runs["data.name"].astype(str))["capacity.information_bits"].first()
    handles = [Line2D([], [], color=colors[kb], ls="--", marker="o", label=f"{kb}: information {info_of[kb]:,.0f} bits")
               for kb in kbs]
    handles += [Line2D([], [], color="k", marker="o", ls="", label="above capacity, uniform exposure (measured)"),
                Line2D([], [], color="k", marker="o", mfc="none", ls="",
                       label=f"stored >= {full_fraction:.0%} of its base"),
                Line2D([], [], color="k", marker="s", ls="", label="Zipf exposure (not fitted)")]
    fig.legend(handles=handles, loc="outside lower center", ncol=3, fontsize=7)
    return _save(fig, stem)


def plot_retention(runs: pd.DataFrame, entities: pd.DataFrame, stem: Path) -> list[Path]:
    """Fraction of an entity's bits kept against how often it was seen, for Zipf-exposure runs.

    One panel per knowledge base, one colour per model: each entity a faint dot, the mean per
    (log-spaced) exposure bin a line; solid = stored (per-fact max(0, .)), dashed = net (unclipped);
    dotted = what the stored measure credits by chance (held-out entities).

    Returns:
      The PNG and SVG paths, or [] without a Zipf run with entities.
    """
    if entities is None or entities.empty or "data.exposure" not in runs:
        return []
    zipf_jobs = set(runs.loc[runs["data.exposure"].astype(str) == "zipf", "job.dir"])
    ent = entities[entities["job.dir"].isin(zipf_jobs)].copy()
    if ent.empty:
        return []
    ent["kept"] = ent["stored_bits"] / ent["information_bits"]
    ent["kept_net"] = ent["net_bits"] / ent["information_bits"]
    kbs = sorted(ent["data.name"].astype(str).unique())
    fig, axes = _new_figure(1, len(kbs), panel_size=(6.0, 4.6))
    for ax, kb in zip(axes[0], kbs):
        d = ent[ent["data.name"].astype(str) == kb]
        jobs = sorted(d["job.dir"].unique(), key=lambda j: float(d.loc[d["job.dir"] == j, "model.n_params"].iloc[0]))
        colors = _colors(len(jobs))
        for color, job in zip(colors, jobs):
            e = d[d["job.dir"] == job]
            run = runs[runs["job.dir"] == job].iloc[0]
            x = e["exposures_per_fact"].to_numpy(float)
            ax.scatter(x, e["kept"], s=3, alpha=0.15, color=color, lw=0)
            edges = np.unique(np.geomspace(max(x.min(), 0.5), x.max() + 1e-9, 14))
            idx = np.clip(np.digitize(x, edges) - 1, 0, len(edges) - 2)
            b = e.assign(bin=idx).groupby("bin").agg(x=("exposures_per_fact", "mean"), kept=("kept", "mean"),
                                                      net=("kept_net", "mean"), n=("kept", "size"))
            frac = float(run["capacity.stored_fraction"])
            ax.plot(b["x"], b["kept"], "o-", color=color, ms=3,
                    label=f"{run['model.name']} ({_fmt_params(float(run['model.n_params']))} params): "
                          f"{frac:.0%} of all bits stored")
            ax.plot(b["x"], b["net"], "--", color=color, lw=1)
            chance = run.get("control.stored_bits_per_fact")
            info_fact = run.get("control.information_bits_per_fact")
            if chance is not None and info_fact and not pd.isna(chance) and not pd.isna(info_fact):
                ax.axhline(float(chance) / float(info_fact), ls=":", color=color, lw=1)
        ax.set_xscale("log")
        _tidy_log_axis(ax, "x")
        ax.set_ylim(-0.05, 1.05)
        ax.set_xlabel("exposures of each of the entity's facts in training")
        ax.set_ylabel("fraction of the entity's bits kept (ideal)")
        ax.set_title(f"{kb}: what a full model keeps\n(solid: stored, dashed: net, dotted: chance level)", fontsize=9)
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(fontsize=7, loc="upper left")
    return _save(fig, stem)


def make_capacity_figures(runs: pd.DataFrame, entities: pd.DataFrame | None, out_dir: str | os.PathLike, name: str,
                          *, full_fraction: float = 0.8, ci_level: float = 0.95,
                          log: Any = print) -> tuple[pd.DataFrame, list[Path]]:
    """Fits and figures of a capacity sweep (``mdlbench.capacity``).

    Writes ``<name>_capacity.{png,svg}``, ``<name>_retention.{png,svg}`` (with Zipf runs) and
    ``<name>_fits.csv`` into ``out_dir``, and logs each run's regime and stored bits per
    parameter (the measurement), then the per-run range and, only where the runs span >= 10x in
    size, the fitted slope with its intercept.

    Returns:
      (the fits table, the written paths).

    Raises:
      AnalysisError: no capacity run in ``runs``.
    """
    if "capacity.stored_bits" not in runs:
        raise AnalysisError("no capacity runs in the table (no capacity.stored_bits column)")
    runs = runs[pd.to_numeric(runs["capacity.stored_bits"], errors="coerce").notna()].copy()
    if runs.empty:
        raise AnalysisError("no finished capacity run in the table")
    runs = runs.reset_index(drop=True)
    full = above_capacity(runs, full_fraction)
    for i, r in runs.iterrows():
        regime = "above capacity" if full[i] else f"stored >= {full_fraction:.0%} of its knowledge base"
        log(f"{r['data.name']} / {r['model.name']} ({int(r['model.n_params']):,} params): stored "
            f"{r['capacity.stored_bits']:,.0f} of {r['capacity.information_bits']:,.0f} bits "
            f"({100 * r['capacity.stored_fraction']:.1f} %), net {r['capacity.net_bits']:,.0f}; "
            f"{r['capacity.stored_bits'] / r['model.n_params']:.3f} stored bits per parameter: {regime}")
    fits = capacity_fits(runs, full_fraction=full_fraction, ci_level=ci_level)
    for x_col, x_label in CAPACITY_X:
        for y_col, y_label in CAPACITY_Y:
            h = headline_fit(fits, x_col, y_col)
            if h is not None:
                log(_fmt_fit(h, y_label, x_label.split(" (")[0]))
    if headline_fit(fits) is None:
        for note in fits.get("note", pd.Series(dtype=object)).dropna():
            log(f"no bits-per-parameter estimate: {note}")
    log("published: about 2 bits per parameter at 1000 exposures, about 1 at 100 "
        "(Allen-Zhu & Li 2024, Physics of Language Models: Part 3.3; GPT-2-size models: that regime needs a GPU)")
    out = Path(out_dir)
    written = plot_capacity(runs, fits, out / f"{name}_capacity", full_fraction)
    written += plot_retention(runs, entities, out / f"{name}_retention")
    out.mkdir(parents=True, exist_ok=True)
    fits.to_csv(out / f"{name}_fits.csv", index=False)
    from mdlbench import provenance

    provenance.write(out / f"{name}_fits.csv")
    written.append(out / f"{name}_fits.csv")
    return fits, written


def _load_entities(source: str | os.PathLike, name: str) -> pd.DataFrame:
    """The entities table of a capacity sweep directory or beside a collected runs table."""
    path = Path(source)
    if path.is_dir():
        from mdlbench.analysis.collect import collect

        return collect(path).entities
    sibling = path.with_name(f"{name}_entities{path.suffix}")
    return _read_table(sibling) if sibling.is_file() else pd.DataFrame()


# --------------------------------------------------------------------------- driver


def make_figures(source: str | os.PathLike, out_dir: str | os.PathLike = "results/figures", *,
                 name: str | None = None, n_boot: int = 200, seed: int = 0,
                 include_unverified: bool = False, log: Any = print, full_fraction: float = 0.8) -> list[Path]:
    """Loads a sweep or table, fits, and writes the figures and the fits table.

    A capacity sweep (``mdlbench.capacity``) gets its own figures and fits
    (:func:`make_capacity_figures`); any other sweep the scaling-law figures
    (:func:`mdlbench.analysis.scaling_figures.make_scaling_figures`).

    Args:
      source: sweep directory or collected ``.csv`` / ``.parquet`` runs table.
      out_dir: where the figures and ``<name>_fits.csv`` go.
      name: file-name prefix (default: the sweep's or table's name).
      n_boot: bootstrap resamples of the power-law fits (the Chinchilla fits use half).
      seed: bootstrap seed.
      include_unverified: also plot runs whose bitstream was not verified.
      log: called with each progress / result line.
      full_fraction: capacity sweeps: runs storing less than this fraction of their knowledge base
        are above capacity and enter the bits-per-parameter fit.

    Returns:
      The written paths.

    Raises:
      AnalysisError: unreadable source, or no run with a positive parameter count.
    """
    runs_all, curves, default_name = load_tables(source)
    name = name or default_name
    if "capacity.stored_bits" in runs_all:
        entities = _load_entities(source, default_name)
        return make_capacity_figures(runs_all, entities, out_dir, name, full_fraction=full_fraction, log=log)[1]
    from mdlbench.analysis import scaling_figures

    return scaling_figures.make_scaling_figures(runs_all, curves, out_dir, name, n_boot=n_boot, seed=seed,
                                                include_unverified=include_unverified, log=log, source=source)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Arguments of ``mdlbench plot``."""
    parser.add_argument("source", metavar="TABLE_OR_SWEEP_DIR",
                        help="a table written by mdlbench collect (.csv/.parquet) or a sweep directory")
    parser.add_argument("--out", default="results/figures", help="output directory (default: %(default)s)")
    parser.add_argument("--name", default=None, help="file-name prefix (default: the table's or sweep's name)")
    parser.add_argument("--n-boot", type=int, default=200, help="bootstrap resamples per fit (default: %(default)s)")
    parser.add_argument("--seed", type=int, default=0, help="bootstrap seed (default: %(default)s)")
    parser.add_argument("--include-unverified", action="store_true",
                        help="also plot runs whose decoded bitstream was not verified (drawn apart, and fits "
                             "to real values then say how many unverified runs they include)")
    parser.add_argument("--full-fraction", type=float, default=0.8,
                        help="capacity sweeps: runs that stored less than this fraction of their knowledge base are "
                             "above capacity and enter the bits-per-parameter fit (default: %(default)s)")


def command(args: argparse.Namespace) -> int:
    """Runs ``mdlbench plot``; prints the fits and the written paths."""
    if args.n_boot < 0:
        raise AnalysisError(f"--n-boot must be >= 0, got {args.n_boot}")
    for path in make_figures(args.source, args.out, name=args.name, n_boot=args.n_boot, seed=args.seed,
                             include_unverified=args.include_unverified, full_fraction=args.full_fraction):
        print(f"wrote {path}")
    return 0
