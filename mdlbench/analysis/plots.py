"""``mdlbench plot``: scaling-law and prequential figures (PNG + SVG) from a sweep.

Three figures, each written as ``<name>_<figure>.png`` and ``.svg``:

* ``scaling``: bits/byte against the *measured* parameter count (log-log), final-chunk and
  cumulative side by side, one series per data set (mean over seeds, bars spanning min to max),
  with the fitted ``E + A * N**-alpha``, E as a dashed asymptote with its confidence band and the
  source's true entropy rate as a dotted line where it is known.
* ``prequential``: per-chunk (ideal) and cumulative (actual) bits/byte against bytes seen,
  one line per model size, one column per data set; the per-chunk panels state the Chinchilla fit.
* ``two_part``: the two-part total (program bits + data bits, in kbit) against model size, with
  its data and program parts, marking the size with the shortest total: beyond it a larger model
  no longer pays for itself.

A knowledge-capacity sweep (``mdlbench.capacity``) gets two figures instead: ``capacity`` (stored
bits of facts against parameters and FFN parameters, each run's stored bits per parameter, a
fitted slope with its intercept only where the runs span >= 10x in size, and the published ~2
bits/param) and ``retention`` (fraction of an entity's bits kept against how often
it was seen, for Zipf-exposure runs); see :func:`make_capacity_figures`.

The fits behind the first figure (and Chinchilla fits of the prequential curves) are written to
``<name>_fits.csv`` next to the figures and printed, each with its confidence intervals and its
verdict (``status``: ok / not identifiable / invalid: E below entropy rate; ``flags``: why; see
:func:`mdlbench.analysis.fits.assess`). Figures are drawn on
:class:`matplotlib.figure.Figure` objects with the Agg canvas, never through ``pyplot``, so no
GUI backend or global state is touched.
"""

from __future__ import annotations

import argparse
import math
import os
import textwrap
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from mdlbench.analysis import AnalysisError
from mdlbench.analysis import fits as fits_lib

# (column in the runs table, label) of the quantities fitted against N.
SCALING_METRICS = (
    ("code.final_chunk_bits_per_byte", "final-chunk code length (bits/byte)"),
    ("code.bits_per_byte", "cumulative code length (bits/byte)"),
)
TOTAL_METRIC = ("total_bits_per_byte", "two-part total (bits/byte)")
PER_STEP = "code/ideal_bits_per_byte"
CUMULATIVE = "code/cum_bits_per_byte"
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


def usable_runs(runs: pd.DataFrame, include_unverified: bool) -> tuple[pd.DataFrame, list[str]]:
    """Runs that can be plotted, and notes on those left out.

    Keeps runs with a positive measured parameter count (log axes) whose bitstream was verified
    (unless ``include_unverified``); adds ``total_bits_per_byte`` and ``series``.

    Returns:
      (runs, notes).
    """
    notes = []
    keep = pd.to_numeric(runs["model.n_params"], errors="coerce") > 0
    if (~keep).any():
        notes.append(f"left out {int((~keep).sum())} run(s) with no parameters (uniform code) from log-scale axes")
    if "job.status" in runs and not include_unverified:
        bad = keep & (runs["job.status"] != "complete")
        if bad.any():
            notes.append(f"left out {int(bad.sum())} unverified run(s) (use --include-unverified to keep them)")
            keep &= ~bad
    out = runs[keep].copy()
    out["model.n_params"] = pd.to_numeric(out["model.n_params"]).astype(float)
    if "code.total_bits" in out and "data.bytes" in out:
        out[TOTAL_METRIC[0]] = out["code.total_bits"] / out["data.bytes"]
    # One scaling series per data set, or per (data set, family) when a sweep mixes families:
    # Transformer and LSTM sizes do not lie on one power law.
    families = out["model.family"].astype(str) if "model.family" in out else None
    if families is not None and families.nunique() > 1:
        out["series"] = out["data.name"].astype(str) + " (" + families + ")"
    else:
        out["series"] = out["data.name"].astype(str)
    return out, notes


def _entropy_rates(runs: pd.DataFrame) -> dict[str, float]:
    """True entropy rate (bits/byte) of each data set whose source knows it."""
    if "source.entropy_rate_bits" not in runs:
        return {}
    rates = {}
    for name, group in runs.groupby("data.name", sort=True):
        values = pd.to_numeric(group["source.entropy_rate_bits"], errors="coerce").dropna()
        if len(values):
            rates[str(name)] = float(values.iloc[0])
    return rates


def _with_series(runs: pd.DataFrame) -> pd.DataFrame:
    """``runs`` with a ``series`` column (the data set) if :func:`usable_runs` did not add one."""
    if "series" in runs:
        return runs
    return runs.assign(series=runs["data.name"].astype(str))


def _series_entropy(runs: pd.DataFrame) -> dict[str, float]:
    """True entropy rate of each series' data set, where known."""
    rates = _entropy_rates(runs)
    pairs = runs[["series", "data.name"]].drop_duplicates()
    return {str(sr): rates[str(dn)] for sr, dn in pairs.itertuples(index=False) if str(dn) in rates}


def _seed_stats(df: pd.DataFrame, column: str) -> pd.DataFrame:
    """Mean, min and max over seeds of ``column`` per model size, sorted by size."""
    d = df[["model.name", "model.n_params", column]].dropna()
    g = d.groupby(["model.n_params", "model.name"], sort=True)[column]
    return g.agg(["mean", "min", "max", "count"]).reset_index()


def _fmt_params(n: float) -> str:
    for div, suffix in ((1e9, "G"), (1e6, "M"), (1e3, "k")):
        if n >= div:
            return f"{n / div:.3g}{suffix}"
    return f"{n:.0f}"


# --------------------------------------------------------------------------- fits


def _groups_of(df: pd.DataFrame) -> Any:
    return df["seed"].to_numpy() if "seed" in df else None


def scaling_fits(runs: pd.DataFrame, *, n_boot: int = 200, seed: int = 0) -> pd.DataFrame:
    """Fits ``E + A * N**-alpha`` per series to final-chunk, cumulative and total bits/byte.

    Args:
      runs: usable runs from :func:`usable_runs` (positive ``model.n_params``, a ``series``
        column: the data set, plus the model family when a sweep mixes families).
      n_boot: bootstrap resamples for the confidence intervals.
      seed: bootstrap seed.

    Returns:
      One row per (series, metric) that could be fitted (>= 3 distinct sizes), with the
      estimates, their ``_lo`` / ``_hi`` bounds, the true entropy rate where known,
      ``E_rel_to_entropy`` = E / H - 1, and the verdict of :func:`mdlbench.analysis.fits.assess`
      (``status``, ``identifiable``, ``valid``, ``flags``); plus ``note`` rows for fits that were
      skipped or failed.
    """
    runs = _with_series(runs)
    rates = _entropy_rates(runs)
    rows = []
    metrics = [m for m in (*SCALING_METRICS, TOTAL_METRIC) if m[0] in runs]
    for series, group in runs.groupby("series", sort=True):
        data_name = str(group["data.name"].iloc[0])
        for column, _ in metrics:
            d = group[["model.n_params", column] + (["seed"] if "seed" in group else [])].copy()
            d[column] = pd.to_numeric(d[column], errors="coerce")
            d = d[d[column] > 0].dropna()
            row: dict[str, Any] = {"series": series, "data.name": data_name, "form": "power_law", "metric": column}
            # Every metric here is a code length of the data, so none can have an asymptote below
            # the entropy rate. (The total's E also carries the program's share per byte, so it is
            # no estimate of the rate, but it is still bounded by it.)
            h = rates.get(data_name)
            try:
                fit = fits_lib.fit_power_law(d["model.n_params"], d[column], groups=_groups_of(d),
                                             n_boot=n_boot, seed=seed, entropy_rate_bits=h)
            except AnalysisError as e:
                row["note"] = str(e)
                rows.append(row)
                continue
            row.update(_fit_row(fit, ("E", "A", "alpha")))
            row["E_rel_to_entropy"] = fit["E"] / h - 1 if h else None
            rows.append(row)
    return pd.DataFrame(rows)


def chinchilla_fits(curves: pd.DataFrame, runs: pd.DataFrame, *, n_boot: int = 100, seed: int = 0,
                    max_points_per_run: int = 40) -> pd.DataFrame:
    """Fits ``E + A/N**alpha + B/D**beta`` per series to the per-chunk prequential curves.

    D is the number of bytes the model had trained on when it coded the chunk, so the first
    chunk (coded by the untrained model, D = 0) is left out. Each run's curve is thinned to at
    most ``max_points_per_run`` log-spaced steps so that long runs do not dominate the cost.

    Args:
      curves: the long-form curves table of :func:`mdlbench.analysis.collect.collect`.
      runs: usable runs from :func:`usable_runs`; only their jobs are fitted.
      n_boot: bootstrap resamples (whole curves are resampled within each size).
      seed: bootstrap seed.
      max_points_per_run: thinning of each curve.

    Returns:
      One row per series (estimates, ``_lo`` / ``_hi`` bounds and the verdict columns of
      :func:`scaling_fits`, or a ``note``).
    """
    needed = {"model.n_params", "job.dir", "data_bytes_trained", PER_STEP}
    if curves is None or curves.empty or not needed <= set(curves.columns) or "job.dir" not in runs:
        return pd.DataFrame()
    runs = _with_series(runs)
    series_of = dict(zip(runs["job.dir"], runs["series"]))
    data_of = dict(zip(runs["job.dir"], runs["data.name"].astype(str)))
    curves = curves[curves["job.dir"].isin(series_of)].copy()
    curves["series"] = curves["job.dir"].map(series_of)
    rates = _entropy_rates(runs)
    rows = []
    for series, group in curves.groupby("series", sort=True):
        data_name = data_of[group["job.dir"].iloc[0]]
        parts = []
        for _, c in group.groupby("job.dir", sort=True):
            c = c[(c["data_bytes_trained"] > 0) & (pd.to_numeric(c[PER_STEP], errors="coerce") > 0)]
            c = c[pd.to_numeric(c["model.n_params"], errors="coerce") > 0]
            if len(c) > max_points_per_run:
                pick = np.unique(np.geomspace(1, len(c), max_points_per_run).astype(int) - 1)
                c = c.iloc[pick]
            parts.append(c)
        row: dict[str, Any] = {"series": series, "data.name": data_name, "form": "chinchilla", "metric": PER_STEP}
        if not parts:
            row["note"] = "no usable curve points"
            rows.append(row)
            continue
        d = pd.concat(parts)
        h = rates.get(data_name)
        try:
            fit = fits_lib.fit_chinchilla(d["model.n_params"].astype(float), d["data_bytes_trained"].astype(float),
                                          d[PER_STEP].astype(float), groups=d["job.dir"].to_numpy(),
                                          n_boot=n_boot, seed=seed, entropy_rate_bits=h)
        except AnalysisError as e:
            row["note"] = str(e)
            rows.append(row)
            continue
        row.update(_fit_row(fit, ("E", "A", "alpha", "B", "beta")))
        row["E_rel_to_entropy"] = fit["E"] / h - 1 if h else None
        rows.append(row)
    return pd.DataFrame(rows)


def _fit_row(fit: dict[str, Any], names: tuple[str, ...]) -> dict[str, Any]:
    # The verdict comes first: a reader of the table sees whether to trust a row before its numbers.
    row: dict[str, Any] = {k: fit[k] for k in ("status", "identifiable", "valid", "flags")}
    for k in names:
        row[k] = fit[k]
        row[f"{k}_lo"], row[f"{k}_hi"] = fit[f"{k}_ci"]
    for k in ("n_points", "n_sizes", "n_data", "n_boot", "ci_level", "ci_method", "rmse_log", "entropy_rate_bits"):
        if k in fit:
            row[k] = fit[k]
    return row


def _verdict(fit: pd.Series) -> str:
    """A fit's status for a legend or log line: ``ok``, or the status with its first reason."""
    status = str(fit.get("status", fits_lib.STATUS_OK))
    if status == fits_lib.STATUS_OK:
        return status
    flags = fit.get("flags")
    first = str(flags).split("; ")[0] if isinstance(flags, str) and flags else ""
    return f"{status.upper()} ({first})" if first else status.upper()


def _ci(fit: pd.Series, k: str, fmt: str = ".3g") -> str:
    """``value [lo, hi]`` of parameter ``k``, or ``value [no CI]``."""
    lo, hi = fit.get(f"{k}_lo"), fit.get(f"{k}_hi")
    if lo is None or hi is None or pd.isna(lo) or pd.isna(hi):
        return f"{fit[k]:{fmt}} [no CI]"
    return f"{fit[k]:{fmt}} [{lo:{fmt}}, {hi:{fmt}}]"


# --------------------------------------------------------------------------- figures


def _new_figure(n_rows: int, n_cols: int, panel_size: tuple[float, float] = (5.0, 3.8)) -> tuple[Any, np.ndarray]:
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(panel_size[0] * n_cols, panel_size[1] * n_rows), layout="constrained")
    FigureCanvasAgg(fig)
    axes = fig.subplots(n_rows, n_cols, squeeze=False)
    return fig, axes


def _save(fig: Any, stem: Path) -> list[Path]:
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


def _tidy_log_axis(ax: Any, which: str) -> None:
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
        axis.set_major_formatter(ticker.FuncFormatter(lambda v, _: _fmt_params(v) if v >= 1000 else f"{v:g}"))
    axis.set_minor_formatter(ticker.NullFormatter())


def _colors(n: int) -> list[Any]:
    from matplotlib import colormaps

    cmap = colormaps["tab10"]
    return [cmap(i % 10) for i in range(n)]


def plot_scaling(runs: pd.DataFrame, fits: pd.DataFrame, stem: Path) -> list[Path]:
    """Figure (a): bits/byte vs measured parameters, fits, asymptotes and entropy rates.

    Each fit's legend entry carries its verdict (``ok``, ``NOT IDENTIFIABLE (...)`` or ``INVALID:
    E BELOW ENTROPY RATE (...)``) and every parameter's confidence interval; E's interval is the
    shaded band. Fits that are not ``ok`` are drawn dashed.

    Args:
      runs: usable runs (see :func:`load_tables`).
      fits: :func:`scaling_fits` output (may be empty).
      stem: output path without extension.

    Returns:
      The PNG and SVG paths, or [] when no metric column is present.
    """
    fig = _scaling_figure(runs, fits)
    return [] if fig is None else _save(fig, stem)


def _scaling_figure(runs: pd.DataFrame, fits: pd.DataFrame) -> Any:
    """The figure of :func:`plot_scaling`, unsaved (None when no metric column is present)."""
    metrics = [m for m in SCALING_METRICS if m[0] in runs]
    if not metrics:
        return None
    runs = _with_series(runs)
    rates = _series_entropy(runs)
    names = sorted(runs["series"].unique())
    colors = dict(zip(names, _colors(len(names))))
    fig, axes = _new_figure(1, len(metrics), panel_size=(5.5, 5.4))
    for ax, (column, label) in zip(axes[0], metrics):
        for name in names:
            color = colors[name]
            s = _seed_stats(runs[runs["series"] == name], column)
            if s.empty:
                continue
            n_seeds = int(s["count"].max())
            yerr = np.vstack([s["mean"] - s["min"], s["max"] - s["mean"]])
            ax.errorbar(s["model.n_params"], s["mean"], yerr=yerr, fmt="o", color=color, capsize=3, ms=5,
                        label=f"{name} (mean of {n_seeds} seed{'s' if n_seeds > 1 else ''}, bars: min-max)")
            fit = _find_fit(fits, name, column)
            if fit is not None:
                # From the smallest measured size (a steep fit explodes below it) to 4x the largest.
                lo, hi = s["model.n_params"].min(), s["model.n_params"].max() * 4
                grid = np.geomspace(lo, hi, 200)
                ok = str(fit.get("status", fits_lib.STATUS_OK)) == fits_lib.STATUS_OK
                # A fit that is invalid or not identifiable is drawn thin and dashed, its verdict
                # in the legend, so it cannot be mistaken for a measurement.
                ax.plot(grid, fits_lib.power_law(grid, fit["E"], fit["A"], fit["alpha"]),
                        ls="-" if ok else (0, (4, 2)), color=color, lw=1.2 if ok else 0.9,
                        label=f"fit [{_verdict(fit)}]:{' ' if ok else chr(10) + '    '}"
                              f"A = {_ci(fit, 'A')}, alpha = {_ci(fit, 'alpha')}")
                ax.axhline(fit["E"], ls="--", color=color, lw=1, label=f"fitted E = {_ci(fit, 'E', '.3f')}")
                if not (pd.isna(fit.get("E_lo")) or pd.isna(fit.get("E_hi"))):
                    ax.axhspan(fit["E_lo"], fit["E_hi"], color=color, alpha=0.12, lw=0)
            if name in rates:
                ax.axhline(rates[name], ls=":", color=color, lw=1.6, label=f"true entropy rate = {rates[name]:.3f}")
        ax.set_xscale("log")
        ax.set_yscale("log")
        _tidy_log_axis(ax, "x")
        _tidy_log_axis(ax, "y")
        ax.set_xlabel("parameters N (measured, model.n_params)")
        ax.set_ylabel(label)
        ax.set_title(label.split(" (")[0])
        ax.grid(True, which="both", alpha=0.3)
        # Below the axes: the curves run from top left to bottom right and leave no free corner.
        # One column: the fit entries carry their verdicts and intervals and are long.
        ax.legend(fontsize=6.5, loc="upper center", bbox_to_anchor=(0.5, -0.14), ncol=1)
    return fig


def _find_fit(fits: pd.DataFrame, series: str, column: str) -> pd.Series | None:
    if fits is None or fits.empty or "E" not in fits:
        return None
    hit = fits[(fits["series"] == series) & (fits["metric"] == column) & fits["E"].notna()]
    return None if hit.empty else hit.iloc[0]


def plot_prequential(curves: pd.DataFrame, runs: pd.DataFrame, stem: Path,
                     fits: pd.DataFrame | None = None) -> list[Path]:
    """Figure (b): per-chunk and cumulative bits/byte vs bytes seen, per model size and data set.

    Curves are averaged over seeds step by step. Only runs present in ``runs`` are drawn
    (so unverified runs follow the same rule as in the other figures). With ``fits`` (the
    :func:`chinchilla_fits` table), each per-chunk panel states its data set's Chinchilla fit:
    the parameters with their confidence intervals and the verdict, and draws E as a dashed
    line with its interval shaded.

    Returns:
      The PNG and SVG paths, or [] when there is no curve to draw.
    """
    if curves is None or curves.empty or "bytes_seen" not in curves:
        return []
    curves = curves.copy()
    if "job.dir" in curves and "job.dir" in runs:
        curves = curves[curves["job.dir"].isin(set(runs["job.dir"]))]
    if CUMULATIVE not in curves and "code/cum_bits" in curves:
        curves[CUMULATIVE] = curves["code/cum_bits"] / curves["bytes_seen"]
    rows = [(PER_STEP, "per-chunk code length (ideal bits/byte)"), (CUMULATIVE, "cumulative code length (bits/byte)")]
    rows = [r for r in rows if r[0] in curves]
    if not rows or curves.empty:
        return []
    curves["model.n_params"] = pd.to_numeric(curves["model.n_params"], errors="coerce")
    rates = _entropy_rates(runs)
    data_names = sorted(curves["data.name"].astype(str).unique())
    fig, axes = _new_figure(len(rows), len(data_names))
    from matplotlib import colormaps

    cmap = colormaps["viridis"]
    for j, data_name in enumerate(data_names):
        d = curves[curves["data.name"].astype(str) == data_name]
        sizes = d[["model.n_params", "model.name"]].drop_duplicates().sort_values("model.n_params")
        for i, (column, label) in enumerate(rows):
            ax = axes[i, j]
            for k, (n_params, model_name) in enumerate(sizes.itertuples(index=False)):
                m = d[(d["model.name"] == model_name) & (d["model.n_params"] == n_params)]
                mean = m.groupby("step", sort=True)[["bytes_seen", column]].mean()
                color = cmap(k / max(len(sizes) - 1, 1))
                size_label = _fmt_params(n_params) if n_params == n_params else "?"
                ax.plot(mean["bytes_seen"], mean[column], color=color, lw=1.2,
                        label=f"{model_name} ({size_label} params)")
            if data_name in rates:
                ax.axhline(rates[data_name], ls=":", color="k", lw=1.2,
                           label=f"true entropy rate = {rates[data_name]:.3f}")
            fit = _chinchilla_of(fits, data_name) if column == PER_STEP else None
            if fit is not None:
                ax.axhline(fit["E"], ls="--", color="tab:red", lw=1, label=f"Chinchilla fit E = {_ci(fit, 'E', '.3f')}")
                if not (pd.isna(fit.get("E_lo")) or pd.isna(fit.get("E_hi"))):
                    ax.axhspan(fit["E_lo"], fit["E_hi"], color="tab:red", alpha=0.12, lw=0)
                text = (f"E + A/N^alpha + B/D^beta: {_verdict(fit)}\n"
                        f"A = {_ci(fit, 'A')}, alpha = {_ci(fit, 'alpha')}\n"
                        f"B = {_ci(fit, 'B')}, beta = {_ci(fit, 'beta')}")
                ax.text(0.02, 0.02, "\n".join(textwrap.fill(t, 75) for t in text.split("\n")), transform=ax.transAxes,
                        fontsize=5.5, va="bottom", ha="left",
                        bbox={"boxstyle": "round", "fc": "white", "ec": "0.7", "alpha": 0.9})
            ax.set_xscale("log")
            _tidy_log_axis(ax, "x")
            ax.set_xlabel("bytes seen (coded so far)")
            ax.set_ylabel(label)
            ax.set_title(f"{data_name}: {label.split(' (')[0]}")
            ax.grid(True, which="both", alpha=0.3)
            if i == 0:
                ax.legend(fontsize=7)
    return _save(fig, stem)


def _chinchilla_of(fits: pd.DataFrame | None, data_name: str) -> pd.Series | None:
    """The fitted Chinchilla row of ``data_name`` (one series per data set), or None."""
    if fits is None or fits.empty or "E" not in fits or "form" not in fits:
        return None
    hit = fits[(fits["form"] == "chinchilla") & (fits["data.name"].astype(str) == data_name) & fits["E"].notna()]
    return None if len(hit) != 1 else hit.iloc[0]


def plot_two_part(runs: pd.DataFrame, stem: Path) -> list[Path]:
    """Figure (c): program bits + data bits vs model size, one column per series.

    Top row: the total and its data part (kbit, mean over seeds, bars min-max), the size with
    the shortest mean total starred. Bottom row: the program part (kbit), on its own axis
    because it is orders of magnitude smaller for a prequential code.

    Returns:
      The PNG and SVG paths, or [] when the summary columns are missing.
    """
    if not {"code.program_bits", "code.bits"} <= set(runs.columns):
        return []
    runs = _with_series(runs).copy()
    runs["program_kbit"] = pd.to_numeric(runs["code.program_bits"], errors="coerce") / 1e3
    runs["data_kbit"] = pd.to_numeric(runs["code.bits"], errors="coerce") / 1e3
    runs["total_kbit"] = runs["program_kbit"] + runs["data_kbit"]
    names = sorted(runs["series"].unique())
    colors = dict(zip(names, _colors(len(names))))
    fig, axes = _new_figure(2, len(names), panel_size=(5.0, 3.0))
    for j, name in enumerate(names):
        d = runs[runs["series"] == name]
        color = colors[name]
        top, bottom = axes[0, j], axes[1, j]
        total, data_part, program = (_seed_stats(d, c) for c in ("total_kbit", "data_kbit", "program_kbit"))
        if total.empty:
            continue
        x = total["model.n_params"]
        yerr = np.vstack([total["mean"] - total["min"], total["max"] - total["mean"]])
        top.errorbar(x, total["mean"], yerr=yerr, fmt="o-", color=color, capsize=3, label="total = program + data")
        top.plot(data_part["model.n_params"], data_part["mean"], "s--", color=color, alpha=0.6, ms=4,
                 label="data part (prequential code)")
        best = total.loc[total["mean"].idxmin()]
        top.plot([best["model.n_params"]], [best["mean"]], "*", color="k", ms=14, zorder=5,
                 label=f"shortest total: {best['model.name']} ({_fmt_params(best['model.n_params'])} params)")
        top.set_ylabel("description length (kbit)")
        top.set_title(f"{name}: two-part total")
        top.legend(fontsize=7)
        bottom.plot(program["model.n_params"], program["mean"], "^:", color=color, label="program part")
        bottom.set_ylabel("program (kbit)")
        bottom.legend(fontsize=7)
        for ax in (top, bottom):
            ax.ticklabel_format(axis="y", style="plain", useOffset=False)  # kbit as they are, no "+1.9e2"
            ax.set_xscale("log")
            _tidy_log_axis(ax, "x")
            ax.set_xlabel("parameters N (measured, model.n_params)")
            ax.grid(True, which="both", alpha=0.3)
    return _save(fig, stem)


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
    """Loads a sweep or table, fits, and writes the three figures and the fits table.

    A capacity sweep (``mdlbench.capacity``) gets its own figures and fits instead
    (:func:`make_capacity_figures`).

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
    runs, notes = usable_runs(runs_all, include_unverified)
    for note in notes:
        log(f"note: {note}")
    if runs.empty:
        raise AnalysisError(f"no run in {source} can be plotted against parameter count")
    out = Path(out_dir)

    fits = scaling_fits(runs, n_boot=n_boot, seed=seed)
    chin = chinchilla_fits(curves, runs, n_boot=n_boot // 2, seed=seed) if curves is not None else pd.DataFrame()
    if chin.empty:
        # Say so in the table: a fits file without Chinchilla rows would otherwise read as if the
        # form had not been tried.
        chin = pd.DataFrame([{"series": sr, "data.name": dn, "form": "chinchilla", "metric": PER_STEP,
                              "note": "not fitted: no prequential curves (no <name>_curves table beside the runs "
                                      "table, or no metrics.jsonl)"}
                             for sr, dn in runs[["series", "data.name"]].drop_duplicates().astype(str)
                             .itertuples(index=False)])
    non_empty = [f for f in (fits, chin) if not f.empty]
    all_fits = pd.concat(non_empty, ignore_index=True) if non_empty else pd.DataFrame()
    _log_fits(all_fits, runs, log)

    written: list[Path] = []
    written += plot_scaling(runs, fits, out / f"{name}_scaling")
    written += plot_prequential(curves, runs, out / f"{name}_prequential", chin)
    written += plot_two_part(runs, out / f"{name}_two_part")
    if not all_fits.empty:
        out.mkdir(parents=True, exist_ok=True)
        fits_path = out / f"{name}_fits.csv"
        all_fits.to_csv(fits_path, index=False)
        from mdlbench import provenance

        provenance.write(fits_path)
        written.append(fits_path)
    if curves is None or curves.empty:
        log("note: no prequential curves found (no <name>_curves table / metrics.jsonl); figure (b) skipped")
    return written


def _log_fits(fits: pd.DataFrame, runs: pd.DataFrame, log: Any) -> None:
    for row in fits.to_dict("records"):
        what = f"{row['series']} {row['form']} on {row['metric']}"
        if not isinstance(row.get("E"), float) or math.isnan(row["E"]):
            log(f"fit {what}: skipped ({row.get('note')})")
            continue
        r = pd.Series(row)
        line = f"fit {what}: {r.get('status', fits_lib.STATUS_OK)}: E = {_ci(r, 'E', '.4g')}, A = {_ci(r, 'A')}, " \
               f"alpha = {_ci(r, 'alpha')}"
        if row["form"] == "chinchilla":
            line += f", B = {_ci(r, 'B')}, beta = {_ci(r, 'beta')}"
        h = row.get("entropy_rate_bits")
        if h is not None and not (isinstance(h, float) and math.isnan(h)):
            line += f"; true entropy rate {h:.4g} ({100 * (row['E'] / h - 1):+.1f} %)"
        if isinstance(row.get("flags"), str) and row["flags"]:
            line += f"; {row['flags']}"
        log(line)
    # The largest model's final-chunk code length against the true rate: the headline check.
    column = SCALING_METRICS[0][0]
    if column in runs:
        for name, h in _series_entropy(runs).items():
            s = _seed_stats(runs[runs["series"] == name], column)
            if not s.empty:
                big = s.iloc[-1]
                gap = 100 * (big["mean"] / h - 1)
                log(f"{name}: largest model {big['model.name']} ({_fmt_params(big['model.n_params'])} params) "
                    f"final-chunk {big['mean']:.4g} bits/byte vs entropy rate {h:.4g} ({gap:+.1f} %)")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Arguments of ``mdlbench plot``."""
    parser.add_argument("source", metavar="TABLE_OR_SWEEP_DIR",
                        help="a table written by mdlbench collect (.csv/.parquet) or a sweep directory")
    parser.add_argument("--out", default="results/figures", help="output directory (default: %(default)s)")
    parser.add_argument("--name", default=None, help="file-name prefix (default: the table's or sweep's name)")
    parser.add_argument("--n-boot", type=int, default=200, help="bootstrap resamples per fit (default: %(default)s)")
    parser.add_argument("--seed", type=int, default=0, help="bootstrap seed (default: %(default)s)")
    parser.add_argument("--include-unverified", action="store_true",
                        help="also plot runs whose decoded bitstream was not verified")
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
