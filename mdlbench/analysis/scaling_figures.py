"""Scaling-law figures and fits of a sweep, every point marked as a real code or an estimate.

A job's code length comes in two kinds, which are drawn with their own markers and fitted
separately, never pooled:

* **real**: the size of an actual bitstream (``code.bits_per_byte``,
  ``code.final_chunk_bits_per_byte``, ``code.total_bits``) of a job whose ``job.status`` is
  ``complete``: a separate decoder process turned it back into the data. Jobs whose decoding was
  not verified (``unverified``) are left out unless asked for, and then drawn apart.
* **estimate**: Rae's training-loss estimate, the pre-update loss of every batch summed
  (``estimate.bits_per_byte``, ``estimate.final_chunk_bits_per_byte``, ``estimate.total_bits``):
  an ideal length, no bitstream. A fast-mode job (``code.name=estimate``) has only this; a real job
  records it beside its bitstream, so a real job gives both points (``mdlbench collect`` puts both
  modes' estimates into the same columns).

Four figures, each written as ``<name>_<figure>.png`` and ``.svg``, each saying in its legend and
its title which points are estimates and which real:

* ``scaling``: bits/byte against the *measured* parameter count (log-log), final-chunk and
  cumulative side by side, one colour per series (data set), a marker per kind (mean over seeds,
  bars spanning min to max), with the fitted ``E + A * N**-alpha`` of each kind (solid: fitted to
  real values, dash-dot: to estimates), E as a dashed asymptote with its confidence band and the
  source's true entropy rate as a dotted line where it is known.
* ``compute``: the same code lengths against the training FLOPs counted from the model shape
  (``compute.training_flops``, :mod:`mdlbench.analysis.flops`), and below, per data set, every
  size's per-chunk curve against the FLOPs spent before the chunk was coded (the compute frontier).
* ``prequential``: per-chunk (ideal) and cumulative bits/byte against bytes seen, one line per
  (model size, kind) averaged over seeds, one column per data set; real jobs solid, estimates
  dashed; the per-chunk panels state the Chinchilla fit of each kind.
* ``two_part``: the two-part total (program bits + data bits, in kbit) against model size, with
  its data and program parts, real and estimated totals apart, marking the size with the shortest
  total of each kind: beyond it a larger model no longer pays for itself.

The fits (power law per series, metric and kind; Chinchilla per series and kind) are returned as
one table whose ``metric`` column names the fitted column and whose ``fitted_on`` column says
``real``, ``real (incl. k unverified)`` or ``estimate``; each row carries its confidence intervals
and its verdict (``status``: ok / not identifiable / invalid: E below entropy rate; ``flags``:
why; see :func:`mdlbench.analysis.fits.assess`).
"""

from __future__ import annotations

import math
import os
import textwrap
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from mdlbench.analysis import AnalysisError
from mdlbench.analysis import fits as fits_lib
from mdlbench.analysis.figures import colors as _colors
from mdlbench.analysis.figures import fmt_params as _fmt_params
from mdlbench.analysis.figures import new_figure as _new_figure
from mdlbench.analysis.figures import save as _save
from mdlbench.analysis.figures import tidy_log_axis as _tidy_log_axis


# --------------------------------------------------------------------------- kinds and metrics


@dataclass(frozen=True)
class Kind:
    """How the code lengths of one kind are labelled and drawn.

    Attributes:
      name: ``real``, ``unverified`` or ``estimate`` (the ``job.kind`` of :func:`usable_runs`).
      label: the legend text.
      marker: point marker; ``filled``: whether it is filled (hollow markers are not real codes).
      line: line style of its curves.
    """

    name: str
    label: str
    marker: str
    filled: bool
    line: Any


REAL = Kind("real", "real (verified bitstream)", "o", True, "-")
UNVERIFIED = Kind("unverified", "real bitstream, NOT verified", "s", False, ":")
ESTIMATE = Kind("estimate", "estimate (training loss, no bitstream)", "D", False, "--")
KINDS = (REAL, UNVERIFIED, ESTIMATE)
KIND_OF = {k.name: k for k in KINDS}
# What a fit was fitted on: real bitstreams (verified, plus unverified ones when asked for) or
# estimates. The two are never pooled into one fit.
FIT_KINDS = (REAL.name, ESTIMATE.name)
_FIT_WORDS = {REAL.name: "real values (verified bitstreams)", ESTIMATE.name: "estimates (training loss)"}
_E_WORDS = {REAL.name: "real values", ESTIMATE.name: "estimates"}
# Fit line styles: (ok, not ok) per kind. A fit that is invalid or not identifiable is drawn thin
# and broken, its verdict in the legend, so it cannot be mistaken for a measurement.
_FIT_LINES = {REAL.name: ("-", (0, (4, 2))), ESTIMATE.name: ((0, (6, 2, 1, 2)), (0, (2, 2, 1, 2)))}
_E_LINES = {REAL.name: "--", ESTIMATE.name: (0, (3, 1, 1, 1, 1, 1))}


@dataclass(frozen=True)
class Metric:
    """A code length per byte of a job, with its column for each kind."""

    label: str
    real: str
    estimate: str

    def column(self, kind: str) -> str:
        return self.estimate if kind == ESTIMATE.name else self.real


FINAL_CHUNK = Metric("final-chunk code length (bits/byte)", "code.final_chunk_bits_per_byte",
                     "estimate.final_chunk_bits_per_byte")
CUMULATIVE_LENGTH = Metric("cumulative code length (bits/byte)", "code.bits_per_byte", "estimate.bits_per_byte")
TOTAL = Metric("two-part total (bits/byte)", "total_bits_per_byte", "estimate.total_bits_per_byte")
SCALING_METRICS = (FINAL_CHUNK, CUMULATIVE_LENGTH)
# Columns of the curves table per kind: a real job's per-chunk length is the ideal length under
# its coding probabilities (its bitstream grows in whole words per chunk), its cumulative one the
# bitstream; an estimate job logs the training loss of each batch.
PER_STEP = {REAL.name: "code/ideal_bits_per_byte", ESTIMATE.name: "estimate/ideal_bits_per_byte"}
CUMULATIVE = {REAL.name: "code/cum_bits_per_byte", ESTIMATE.name: "estimate/cum_ideal_bits_per_byte"}
FLOPS = "compute.training_flops"
CURVE_FLOPS = "compute/training_flops"
_FLOPS_LABEL = "training FLOPs (counted from the model shape, 3 forwards per update)"


# --------------------------------------------------------------------------- rows


def job_kinds(runs: pd.DataFrame) -> pd.Series:
    """Each row's kind of job: ``real`` (complete), ``unverified``, ``estimate``, or None.

    A table without ``job.status`` (built by hand) counts a row as real where it has a real code
    length and as an estimate otherwise.
    """
    if "job.status" in runs:
        return runs["job.status"].map({"complete": REAL.name, "unverified": UNVERIFIED.name,
                                       "estimate": ESTIMATE.name})
    real = pd.Series(False, index=runs.index)
    for m in (*SCALING_METRICS, TOTAL):
        if m.real in runs:
            real |= pd.to_numeric(runs[m.real], errors="coerce").notna()
    return real.map({True: REAL.name, False: ESTIMATE.name})


def usable_runs(runs: pd.DataFrame, include_unverified: bool) -> tuple[pd.DataFrame, list[str]]:
    """Runs that can be plotted, and notes on those left out.

    Keeps runs with a positive measured parameter count (log axes) that are real verified codes
    or estimates, and unverified real codes with ``include_unverified``. Adds ``job.kind`` (see
    :func:`job_kinds`), the two-part totals per byte of each kind (``total_bits_per_byte``,
    ``estimate.total_bits_per_byte``), ``compute.training_flops`` where the table lacks it, and
    ``series``.

    Returns:
      (runs, notes).
    """
    notes = []
    keep = pd.to_numeric(runs["model.n_params"], errors="coerce") > 0
    if (~keep).any():
        notes.append(f"left out {int((~keep).sum())} run(s) with no parameters (uniform code) from log-scale axes")
    kind = job_kinds(runs)
    other = keep & kind.isna()
    if other.any():
        statuses = ", ".join(sorted(runs.loc[other, "job.status"].astype(str).unique()))
        notes.append(f"left out {int(other.sum())} run(s) that are neither real codes nor estimates (job.status "
                     f"{statuses})")
        keep &= ~other
    unverified = keep & (kind == UNVERIFIED.name)
    if unverified.any() and not include_unverified:
        notes.append(f"left out {int(unverified.sum())} unverified run(s) (use --include-unverified to keep them)")
        keep &= ~unverified
    out = runs[keep].copy()
    out["job.kind"] = kind[keep]
    out["model.n_params"] = pd.to_numeric(out["model.n_params"]).astype(float)
    if "data.bytes" in out:
        n_bytes = pd.to_numeric(out["data.bytes"], errors="coerce")
        if "code.total_bits" in out:
            out[TOTAL.real] = pd.to_numeric(out["code.total_bits"], errors="coerce") / n_bytes
        if "estimate.total_bits" in out:
            out[TOTAL.estimate] = pd.to_numeric(out["estimate.total_bits"], errors="coerce") / n_bytes
    if FLOPS not in out:  # a table collected before the compute columns existed
        from mdlbench.analysis.collect import compute_columns

        computed = pd.DataFrame([compute_columns(r) for r in out.to_dict("records")], index=out.index)
        for col in computed:
            out[col] = computed[col]
    if CUMULATIVE_LENGTH.estimate in out:
        # A real run's summary records its cumulative estimate only (no per-step estimate).
        real = out["job.kind"] != ESTIMATE.name
        has_cum = pd.to_numeric(out[CUMULATIVE_LENGTH.estimate], errors="coerce").notna()
        has_final = pd.to_numeric(out[FINAL_CHUNK.estimate], errors="coerce").notna() \
            if FINAL_CHUNK.estimate in out else pd.Series(False, index=out.index)
        lacking = real & has_cum & ~has_final
        if lacking.any():
            notes.append(f"{int(lacking.sum())} real run(s) record only their cumulative estimate, not a final-chunk "
                         "one: the final-chunk estimate points and fits leave them out")
    # One scaling series per data set, or per (data set, family) when a sweep mixes families:
    # Transformer and LSTM sizes do not lie on one power law.
    families = out["model.family"].astype(str) if "model.family" in out else None
    if families is not None and families.nunique() > 1:
        out["series"] = out["data.name"].astype(str) + " (" + families + ")"
    else:
        out["series"] = out["data.name"].astype(str)
    return out, notes


def _with_kinds(runs: pd.DataFrame) -> pd.DataFrame:
    """``runs`` with ``series`` and ``job.kind`` columns if :func:`usable_runs` did not add them."""
    if "series" not in runs:
        runs = runs.assign(series=runs["data.name"].astype(str))
    if "job.kind" not in runs:
        runs = runs.assign(**{"job.kind": job_kinds(runs)})
    return runs


def points(runs: pd.DataFrame, metric: Metric, kind: str) -> pd.DataFrame:
    """The rows of ``runs`` that have a ``kind`` value of ``metric``, that value in ``value``.

    ``kind`` is ``real`` (verified jobs), ``unverified``, ``estimate`` (every job's estimate: the
    fast mode's and the one a real job records), or ``real+unverified`` (what a real fit uses).
    """
    runs = _with_kinds(runs)
    column = metric.column(kind)
    if column not in runs:
        return runs.iloc[:0].assign(value=pd.Series(dtype=float))
    if kind == "real+unverified":
        rows = runs[runs["job.kind"].isin([REAL.name, UNVERIFIED.name])]
    elif kind == ESTIMATE.name:
        rows = runs
    else:
        rows = runs[runs["job.kind"] == kind]
    value = pd.to_numeric(rows[column], errors="coerce")
    return rows.assign(value=value)[value > 0]


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


def _series_entropy(runs: pd.DataFrame) -> dict[str, float]:
    """True entropy rate of each series' data set, where known."""
    rates = _entropy_rates(runs)
    pairs = runs[["series", "data.name"]].drop_duplicates()
    return {str(sr): rates[str(dn)] for sr, dn in pairs.itertuples(index=False) if str(dn) in rates}


def _seed_stats(df: pd.DataFrame, column: str, x: str | None = None) -> pd.DataFrame:
    """Mean, min and max over seeds of ``column`` per model size, sorted by size; with ``x``, its
    mean per size in column ``x`` as well."""
    cols = ["model.name", "model.n_params", column] + ([x] if x and x not in ("model.n_params", column) else [])
    d = df[cols].dropna()
    g = d.groupby(["model.n_params", "model.name"], sort=True)
    out = g[column].agg(["mean", "min", "max", "count"]).reset_index()
    out["seeds"] = df.loc[d.index].groupby(["model.n_params", "model.name"], sort=True)["seed"].nunique().to_numpy() \
        if "seed" in df else out["count"]
    if x:
        out["x"] = g[x].mean().to_numpy() if x != "model.n_params" else out["model.n_params"]
    return out


def kinds_note(runs: pd.DataFrame) -> str:
    """One line for a figure's title: how many jobs of each kind it draws."""
    kinds = _with_kinds(runs)["job.kind"].value_counts()
    parts = []
    if kinds.get(REAL.name):
        parts.append(f"{kinds[REAL.name]} real (verified bitstream; each also records its estimate)")
    if kinds.get(UNVERIFIED.name):
        parts.append(f"{kinds[UNVERIFIED.name]} real but NOT verified")
    if kinds.get(ESTIMATE.name):
        parts.append(f"{kinds[ESTIMATE.name]} estimate only (training loss, no bitstream)")
    n = int(kinds.sum())
    return f"{n} job{'s' if n != 1 else ''}: " + ", ".join(parts)


_MARKER_WORDS = {"o": "circles", "s": "squares", "D": "diamonds"}


def markers_note(runs: pd.DataFrame, sep: str = "\n") -> str:
    """What each marker of a figure is, for the kinds of job in ``runs`` (for a panel title)."""
    present = set(_with_kinds(runs)["job.kind"].dropna())
    if present & {REAL.name, UNVERIFIED.name}:
        present.add(ESTIMATE.name)  # a real job records its estimate too
    return sep.join(f"{'filled' if k.filled else 'hollow'} {_MARKER_WORDS[k.marker]}: {k.label}"
                    for k in KINDS if k.name in present)


def _fitted_on(kind: str, d: pd.DataFrame) -> str:
    """The ``fitted_on`` value of a fit to the points ``d`` of ``kind``."""
    if kind == ESTIMATE.name:
        return ESTIMATE.name
    n_unverified = int((d["job.kind"] == UNVERIFIED.name).sum()) if "job.kind" in d else 0
    return REAL.name if not n_unverified else f"{REAL.name} (incl. {n_unverified} unverified)"


def _fit_words(fitted_on: Any) -> str:
    """What a fit was fitted on, in words: ``real values (verified bitstreams)`` and the like."""
    if fitted_on == ESTIMATE.name or fitted_on == REAL.name:
        return _FIT_WORDS[fitted_on]
    if isinstance(fitted_on, str) and fitted_on.startswith(f"{REAL.name} (incl. "):
        n = fitted_on.removeprefix(f"{REAL.name} (incl. ").split(" ")[0]
        return f"real values (bitstreams, {n} of them not verified)"
    return "nothing"


def _fit_kind(fitted_on: Any) -> str:
    """``real`` or ``estimate`` from a ``fitted_on`` value (tables without the column: real)."""
    return ESTIMATE.name if str(fitted_on) == ESTIMATE.name else REAL.name


# --------------------------------------------------------------------------- fits


def _groups_of(df: pd.DataFrame) -> Any:
    return df["seed"].to_numpy() if "seed" in df else None


def scaling_fits(runs: pd.DataFrame, *, n_boot: int = 200, seed: int = 0) -> pd.DataFrame:
    """Fits ``E + A * N**-alpha`` per series, metric and kind (real or estimate).

    The metrics are the final-chunk and cumulative code lengths and the two-part total, each
    fitted once to the real values and once to the estimates (where the table has them); the two
    are never pooled.

    Args:
      runs: usable runs from :func:`usable_runs` (positive ``model.n_params``, a ``series``
        column: the data set, plus the model family when a sweep mixes families).
      n_boot: bootstrap resamples for the confidence intervals.
      seed: bootstrap seed.

    Returns:
      One row per (series, metric column) that could be fitted (>= 3 distinct sizes), with
      ``fitted_on``, the estimates, their ``_lo`` / ``_hi`` bounds, the true entropy rate where
      known, ``E_rel_to_entropy`` = E / H - 1, and the verdict of
      :func:`mdlbench.analysis.fits.assess` (``status``, ``identifiable``, ``valid``, ``flags``);
      plus ``note`` rows for fits that were skipped or failed.
    """
    runs = _with_kinds(runs)
    rates = _entropy_rates(runs)
    rows = []
    for series, group in runs.groupby("series", sort=True):
        data_name = str(group["data.name"].iloc[0])
        for metric in (*SCALING_METRICS, TOTAL):
            for kind in FIT_KINDS:
                column = metric.column(kind)
                if column not in runs:
                    continue
                d = points(group, metric, "real+unverified" if kind == REAL.name else kind)
                row: dict[str, Any] = {"series": series, "data.name": data_name, "form": "power_law",
                                       "metric": column, "fitted_on": _fitted_on(kind, d)}
                if d.empty:
                    row["note"] = f"not fitted: no {_FIT_WORDS[kind]} in this series"
                    rows.append(row)
                    continue
                # Every metric here is a code length of the data, so none can have an asymptote
                # below the entropy rate. (The total's E also carries the program's share per
                # byte, so it is no estimate of the rate, but it is still bounded by it.)
                h = rates.get(data_name)
                try:
                    fit = fits_lib.fit_power_law(d["model.n_params"], d["value"], groups=_groups_of(d),
                                                 n_boot=n_boot, seed=seed, entropy_rate_bits=h)
                except AnalysisError as e:
                    row["note"] = str(e)
                    rows.append(row)
                    continue
                row.update(_fit_row(fit, ("E", "A", "alpha")))
                row["E_rel_to_entropy"] = fit["E"] / h - 1 if h else None
                rows.append(row)
    return pd.DataFrame(rows)


def job_curves(curves: pd.DataFrame | None, runs: pd.DataFrame) -> pd.DataFrame:
    """The curves of the jobs in ``runs``, with their ``job.kind`` and ``series``, and the derived
    columns a table collected by an older ``mdlbench collect`` lacks.

    Returns:
      The curves (empty when there are none or they lack ``job.dir``).
    """
    if curves is None or curves.empty or "job.dir" not in curves or "job.dir" not in runs:
        return pd.DataFrame()
    runs = _with_kinds(runs)
    curves = curves[curves["job.dir"].isin(set(runs["job.dir"]))].copy()
    if curves.empty:
        return curves
    by_job = runs.set_index("job.dir")
    curves["job.kind"] = curves["job.dir"].map(by_job["job.kind"])
    curves["series"] = curves["job.dir"].map(by_job["series"])
    curves["model.n_params"] = pd.to_numeric(curves["model.n_params"], errors="coerce")
    if CUMULATIVE[REAL.name] not in curves and "code/cum_bits" in curves:
        curves[CUMULATIVE[REAL.name]] = curves["code/cum_bits"] / curves["bytes_seen"]
    if PER_STEP[ESTIMATE.name] not in curves and {"estimate/ideal_bits", "step_bytes"} <= set(curves.columns):
        curves[PER_STEP[ESTIMATE.name]] = curves["estimate/ideal_bits"] / curves["step_bytes"]
    if CURVE_FLOPS not in curves and "compute.training_flops_per_byte" in by_job and "data_bytes_trained" in curves:
        per_byte = pd.to_numeric(curves["job.dir"].map(by_job["compute.training_flops_per_byte"]), errors="coerce")
        curves[CURVE_FLOPS] = per_byte * curves["data_bytes_trained"]
    return curves


def _curve_kind(kind: str) -> str:
    """The curve columns of a job kind: an unverified job logs what a real one does."""
    return ESTIMATE.name if kind == ESTIMATE.name else REAL.name


def chinchilla_fits(curves: pd.DataFrame, runs: pd.DataFrame, *, n_boot: int = 100, seed: int = 0,
                    max_points_per_run: int = 40) -> pd.DataFrame:
    """Fits ``E + A/N**alpha + B/D**beta`` per series and kind to the per-chunk prequential curves.

    Real jobs are fitted on their per-chunk ideal lengths (``code/ideal_bits_per_byte``), estimate
    jobs on their per-batch training loss (``estimate/ideal_bits_per_byte``), separately (a real
    job logs no per-step estimate). D is the number of bytes the model had trained on when it
    coded the chunk, so the first chunk (coded by the untrained model, D = 0) is left out. Each
    run's curve is thinned to at most ``max_points_per_run`` log-spaced steps so that long runs do
    not dominate the cost.

    Args:
      curves: the long-form curves table of :func:`mdlbench.analysis.collect.collect`.
      runs: usable runs from :func:`usable_runs`; only their jobs are fitted.
      n_boot: bootstrap resamples (whole curves are resampled within each size).
      seed: bootstrap seed.
      max_points_per_run: thinning of each curve.

    Returns:
      One row per (series, kind) with curves (``fitted_on``, estimates, ``_lo`` / ``_hi`` bounds
      and the verdict columns of :func:`scaling_fits`, or a ``note``).
    """
    curves = job_curves(curves, runs)
    if curves.empty or not {"model.n_params", "data_bytes_trained"} <= set(curves.columns):
        return pd.DataFrame()
    runs = _with_kinds(runs)
    data_of = dict(zip(runs["job.dir"], runs["data.name"].astype(str)))
    rates = _entropy_rates(runs)
    rows = []
    for series, group in curves.groupby("series", sort=True):
        data_name = data_of[group["job.dir"].iloc[0]]
        for kind in FIT_KINDS:
            column = PER_STEP[kind]
            of_kind = group[group["job.kind"].map(_curve_kind) == kind]
            if of_kind.empty or column not in of_kind:
                continue
            parts = []
            for _, c in of_kind.groupby("job.dir", sort=True):
                c = c[(c["data_bytes_trained"] > 0) & (pd.to_numeric(c[column], errors="coerce") > 0)]
                c = c[pd.to_numeric(c["model.n_params"], errors="coerce") > 0]
                if len(c) > max_points_per_run:
                    pick = np.unique(np.geomspace(1, len(c), max_points_per_run).astype(int) - 1)
                    c = c.iloc[pick]
                parts.append(c)
            d = pd.concat(parts)
            row: dict[str, Any] = {"series": series, "data.name": data_name, "form": "chinchilla", "metric": column,
                                   "fitted_on": _fitted_on(kind, d)}
            if d.empty:
                row["note"] = "no usable curve points"
                rows.append(row)
                continue
            h = rates.get(data_name)
            try:
                fit = fits_lib.fit_chinchilla(d["model.n_params"].astype(float), d["data_bytes_trained"].astype(float),
                                              d[column].astype(float), groups=d["job.dir"].to_numpy(),
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


def _find_fit(fits: pd.DataFrame, series: str, column: str) -> pd.Series | None:
    if fits is None or fits.empty or "E" not in fits:
        return None
    hit = fits[(fits["series"] == series) & (fits["metric"] == column) & fits["E"].notna()]
    return None if hit.empty else hit.iloc[0]


# --------------------------------------------------------------------------- figures


def _errorbar(ax: Any, s: pd.DataFrame, kind: Kind, color: Any, label: str, x: str = "model.n_params") -> None:
    """Seed means of one (series, kind) with min-max bars, in the kind's marker."""
    yerr = np.vstack([s["mean"] - s["min"], s["max"] - s["mean"]])
    ax.errorbar(s[x], s["mean"], yerr=yerr, fmt=kind.marker, color=color, capsize=3,
                ms=5 if kind.filled else 7, mfc=color if kind.filled else "none", mew=1.2,
                zorder=3 if kind.filled else 4, label=label)


def _legend(ax: Any, first: tuple[str, ...] = (), width: int = 0, **kwargs: Any) -> None:
    """A legend with the measured points first, then entries whose label starts with one of
    ``first`` (in that order), then the rest (fits, asymptotes) as drawn; labels longer than
    ``width`` characters are wrapped."""
    from matplotlib.container import ErrorbarContainer

    handles, labels = ax.get_legend_handles_labels()
    if not handles:
        return

    def rank(i: int) -> tuple[int, int]:
        if isinstance(handles[i], ErrorbarContainer):
            return (0, i)
        hit = [j for j, f in enumerate(first) if labels[i].startswith(f)]
        return (1 + hit[0], i) if hit else (1 + len(first), i)

    order = sorted(range(len(handles)), key=rank)
    if width:
        labels = ["\n".join("\n    ".join(textwrap.wrap(line, width)) for line in label.split("\n"))
                  for label in labels]
    ax.legend([handles[i] for i in order], [labels[i] for i in order], **kwargs)


def _mean_of(n_runs: int, n_seeds: int) -> str:
    """``mean of 2 seeds``, or ``mean of 3 runs`` where runs share a seed (a job coded in both modes)."""
    what = "seed" if n_runs == n_seeds else "run"
    return f"mean of {n_runs} {what}{'s' if n_runs > 1 else ''}"


def _seeds_label(s: pd.DataFrame) -> str:
    i = int(s["count"].to_numpy().argmax())
    return f"{_mean_of(int(s['count'].iloc[i]), int(s['seeds'].iloc[i]))}, bars: min-max"


def plot_scaling(runs: pd.DataFrame, fits: pd.DataFrame, stem: Path) -> list[Path]:
    """Figure (a): bits/byte vs measured parameters, real and estimate points, fits, asymptotes.

    Each fit's legend entry names what it was fitted on, its verdict (``ok``, ``NOT IDENTIFIABLE
    (...)`` or ``INVALID: E BELOW ENTROPY RATE (...)``) and every parameter's confidence interval;
    E's interval is the shaded band. Fits that are not ``ok`` are drawn thin and broken.

    Args:
      runs: usable runs (see :func:`usable_runs`).
      fits: :func:`scaling_fits` output (may be empty).
      stem: output path without extension.

    Returns:
      The PNG and SVG paths, or [] when no metric column is present.
    """
    fig = _scaling_figure(runs, fits)
    return [] if fig is None else _save(fig, stem)


def _scaling_figure(runs: pd.DataFrame, fits: pd.DataFrame) -> Any:
    """The figure of :func:`plot_scaling`, unsaved (None when no metric column is present)."""
    metrics = [m for m in SCALING_METRICS if m.real in runs or m.estimate in runs]
    if not metrics:
        return None
    runs = _with_kinds(runs)
    rates = _series_entropy(runs)
    names = sorted(runs["series"].unique())
    colors = dict(zip(names, _colors(len(names))))
    fig, axes = _new_figure(1, len(metrics), panel_size=(5.5, 6.4))
    for ax, metric in zip(axes[0], metrics):
        for name in names:
            color = colors[name]
            group = runs[runs["series"] == name]
            for kind in KINDS:
                s = _seed_stats(points(group, metric, kind.name), "value")
                if not s.empty:
                    _errorbar(ax, s, kind, color, f"{name}: {kind.label} ({_seeds_label(s)})")
            for kind in FIT_KINDS:
                fit = _find_fit(fits, name, metric.column(kind))
                if fit is None:
                    continue
                d = points(group, metric, "real+unverified" if kind == REAL.name else kind)
                # From the smallest measured size (a steep fit explodes below it) to 4x the largest.
                lo, hi = d["model.n_params"].min(), d["model.n_params"].max() * 4
                grid = np.geomspace(lo, hi, 200)
                ok = str(fit.get("status", fits_lib.STATUS_OK)) == fits_lib.STATUS_OK
                ax.plot(grid, fits_lib.power_law(grid, fit["E"], fit["A"], fit["alpha"]),
                        ls=_FIT_LINES[kind][0 if ok else 1], color=color, lw=1.2 if ok else 0.9,
                        label=f"fit [{_verdict(fit)}] to {_fit_words(fit.get('fitted_on', REAL.name))}:"
                              f"{' ' if ok else chr(10) + '    '}"
                              f"A = {_ci(fit, 'A')}, alpha = {_ci(fit, 'alpha')}")
                ax.axhline(fit["E"], ls=_E_LINES[kind], color=color, lw=1,
                           label=f"fitted E = {_ci(fit, 'E', '.3f')} ({_E_WORDS[kind]})")
                if not (pd.isna(fit.get("E_lo")) or pd.isna(fit.get("E_hi"))):
                    ax.axhspan(fit["E_lo"], fit["E_hi"], color=color, alpha=0.12, lw=0)
            if name in rates:
                ax.axhline(rates[name], ls=":", color=color, lw=1.6, label=f"true entropy rate = {rates[name]:.3f}")
        ax.set_xscale("log")
        ax.set_yscale("log")
        _tidy_log_axis(ax, "x")
        _tidy_log_axis(ax, "y")
        ax.set_xlabel("parameters N (measured, model.n_params)")
        ax.set_ylabel(metric.label)
        ax.set_title(f"{metric.label.split(' (')[0]}\n{markers_note(runs)}", fontsize=9)
        ax.grid(True, which="both", alpha=0.3)
        # Below the axes: the curves run from top left to bottom right and leave no free corner.
        # One column: the fit entries carry their verdicts and intervals and are long.
        _legend(ax, width=80, fontsize=6.5, loc="upper center", bbox_to_anchor=(0.5, -0.14), ncol=1)
    fig.suptitle(kinds_note(runs), fontsize=8)
    return fig


def plot_compute(runs: pd.DataFrame, curves: pd.DataFrame | None, stem: Path) -> list[Path]:
    """Figure (d): bits/byte vs training FLOPs counted from the model shape.

    Top row: each size's final-chunk and cumulative code length (mean over seeds, bars min-max)
    against its total training FLOPs (``compute.training_flops``), one colour per series, filled
    markers real, hollow ones estimates, each point named by its model. Bottom row (with curves),
    one panel per data set: every size's per-chunk code length against the FLOPs spent before
    that chunk was coded (``compute/training_flops``), real jobs solid, estimates dashed; their
    lower envelope is the compute frontier. No law is fitted against compute.

    Returns:
      The PNG and SVG paths, or [] when no run has a FLOPs count.
    """
    fig = _compute_figure(runs, curves)
    return [] if fig is None else _save(fig, stem)


def _compute_figure(runs: pd.DataFrame, curves: pd.DataFrame | None) -> Any:
    """The figure of :func:`plot_compute`, unsaved (None without FLOPs counts)."""
    runs = _with_kinds(runs)
    if FLOPS not in runs or not (pd.to_numeric(runs[FLOPS], errors="coerce") > 0).any():
        return None
    metrics = [m for m in SCALING_METRICS if m.real in runs or m.estimate in runs]
    if not metrics:
        return None
    runs = runs.assign(**{FLOPS: pd.to_numeric(runs[FLOPS], errors="coerce")})
    curves = job_curves(curves, runs)
    have_curves = not curves.empty and CURVE_FLOPS in curves
    data_names = sorted(curves["data.name"].astype(str).unique()) if have_curves else []
    n_cols = max(len(metrics), len(data_names))
    fig, axes = _new_figure(2 if data_names else 1, n_cols, panel_size=(5.5, 4.8))
    names = sorted(runs["series"].unique())
    colors = dict(zip(names, _colors(len(names))))
    for ax, metric in zip(axes[0], metrics):
        for name in names:
            color = colors[name]
            group = runs[(runs["series"] == name) & (runs[FLOPS] > 0)]
            named = set()  # each size named once per series (its real and estimate points coincide)
            for kind in KINDS:
                s = _seed_stats(points(group, metric, kind.name), "value", x=FLOPS)
                if s.empty:
                    continue
                _errorbar(ax, s, kind, color, f"{name}: {kind.label} ({_seeds_label(s)})", x="x")
                for model, x, y in zip(s["model.name"], s["x"], s["mean"]):
                    if model not in named:
                        named.add(model)
                        ax.annotate(str(model), (x, y), fontsize=5.5, color="0.3", xytext=(4, 3),
                                    textcoords="offset points")
        ax.set_xscale("log")
        ax.set_yscale("log")
        _tidy_log_axis(ax, "x")
        _tidy_log_axis(ax, "y")
        ax.set_xlabel(_FLOPS_LABEL)
        ax.set_ylabel(metric.label)
        ax.set_title(f"{metric.label.split(' (')[0]} vs training compute\n{markers_note(runs)}", fontsize=9)
        ax.grid(True, which="both", alpha=0.3)
        _legend(ax, fontsize=6.5, loc="upper right")  # the points fall from top left to bottom right
    for ax in axes[0][len(metrics):]:
        ax.set_visible(False)
    if data_names:
        from matplotlib import colormaps

        cmap = colormaps["viridis"]
        for j, data_name in enumerate(data_names):
            ax = axes[1, j]
            d = curves[(curves["data.name"].astype(str) == data_name) & (curves[CURVE_FLOPS] > 0)]
            _draw_curves(ax, d, PER_STEP, CURVE_FLOPS, cmap)
            ax.set_xscale("log")
            _tidy_log_axis(ax, "x")
            ax.set_xlabel(f"{_FLOPS_LABEL.split(' (')[0]} spent before the chunk was coded")
            ax.set_ylabel("per-chunk code length (ideal bits/byte)")
            ax.set_title(f"{data_name}: per-chunk code length vs compute\n(solid: real code, its ideal length; "
                         "dashed: estimate, training loss)", fontsize=9)
            ax.grid(True, which="both", alpha=0.3)
            ax.legend(fontsize=6.5)
        for ax in axes[1][len(data_names):]:
            ax.set_visible(False)
    fig.suptitle(kinds_note(runs) + "\nFLOPs: counted from the model shape (mdlbench.analysis.flops), "
                 "not measured", fontsize=8)
    return fig


def _draw_curves(ax: Any, d: pd.DataFrame, columns: dict[str, str], x: str, cmap: Any) -> None:
    """One seed-averaged line per (model size, kind) of ``d``'s curves, ``columns[kind]`` against
    ``x``: the colour is the size, the line style the kind (real solid, estimate dashed)."""
    sizes = d[["model.n_params", "model.name"]].drop_duplicates().sort_values("model.n_params")
    for k, (n_params, model_name) in enumerate(sizes.itertuples(index=False)):
        color = cmap(k / max(len(sizes) - 1, 1))
        m = d[(d["model.name"] == model_name) & (d["model.n_params"] == n_params)]
        for kind in KINDS:
            c = m[m["job.kind"] == kind.name]
            column = columns[_curve_kind(kind.name)]
            if c.empty or column not in c:
                continue
            mean = c.groupby("step", sort=True)[[x, column]].mean().dropna()
            if mean.empty:
                continue
            n_runs = c["job.dir"].nunique()
            n_seeds = c["seed"].nunique() if "seed" in c else n_runs
            size_label = _fmt_params(n_params) if n_params == n_params else "?"
            ax.plot(mean[x], mean[column], color=color, lw=1.2 if kind.filled else 1.0, ls=kind.line,
                    label=f"{model_name} ({size_label} params): {kind.label}"
                          + (f", {_mean_of(n_runs, n_seeds)}" if n_runs > 1 else ""))


def plot_prequential(curves: pd.DataFrame, runs: pd.DataFrame, stem: Path,
                     fits: pd.DataFrame | None = None) -> list[Path]:
    """Figure (b): per-chunk and cumulative bits/byte vs bytes seen, per model size, kind and data set.

    Curves are averaged over seeds step by step, one line per (model size, kind): real jobs solid
    (per chunk: the ideal length under the coding probabilities; cumulative: the bitstream),
    estimates dashed (the training loss of each batch). Only runs present in ``runs`` are drawn (so
    unverified runs follow the same rule as in the other figures). With ``fits`` (the
    :func:`chinchilla_fits` table), each per-chunk panel states its data set's Chinchilla fit of
    each kind: the parameters with their confidence intervals and the verdict, and draws E as a
    dashed line with its interval shaded.

    Returns:
      The PNG and SVG paths, or [] when there is no curve to draw.
    """
    fig = _prequential_figure(curves, runs, fits)
    return [] if fig is None else _save(fig, stem)


def _prequential_figure(curves: pd.DataFrame | None, runs: pd.DataFrame, fits: pd.DataFrame | None = None) -> Any:
    """The figure of :func:`plot_prequential`, unsaved (None without curves)."""
    curves = job_curves(curves, runs)
    if curves.empty or "bytes_seen" not in curves:
        return None
    rows = [(PER_STEP, "per-chunk code length (ideal bits/byte)",
             "solid: real code, its ideal length; dashed: estimate, training loss"),
            (CUMULATIVE, "cumulative code length (bits/byte)",
             "solid: real, verified bitstream; dashed: estimate, training loss")]
    rows = [r for r in rows if any(c in curves for c in r[0].values())]
    if not rows:
        return None
    runs = _with_kinds(runs)
    rates = _entropy_rates(runs)
    data_names = sorted(curves["data.name"].astype(str).unique())
    fig, axes = _new_figure(len(rows), len(data_names), panel_size=(5.5, 4.2))
    from matplotlib import colormaps

    cmap = colormaps["viridis"]
    for j, data_name in enumerate(data_names):
        d = curves[curves["data.name"].astype(str) == data_name]
        for i, (columns, label, how) in enumerate(rows):
            ax = axes[i, j]
            _draw_curves(ax, d, columns, "bytes_seen", cmap)
            if data_name in rates:
                ax.axhline(rates[data_name], ls=":", color="k", lw=1.2,
                           label=f"true entropy rate = {rates[data_name]:.3f}")
            if columns is PER_STEP:
                texts = []
                for fit in _chinchilla_of(fits, data_name):
                    kind = _fit_kind(fit.get("fitted_on"))
                    color = "tab:red" if kind == REAL.name else "tab:purple"
                    ax.axhline(fit["E"], ls=_E_LINES[kind], color=color, lw=1,
                               label=f"Chinchilla fit E = {_ci(fit, 'E', '.3f')} ({_E_WORDS[kind]})")
                    if not (pd.isna(fit.get("E_lo")) or pd.isna(fit.get("E_hi"))):
                        ax.axhspan(fit["E_lo"], fit["E_hi"], color=color, alpha=0.12, lw=0)
                    texts.append(f"E + A/N^alpha + B/D^beta fitted to {_fit_words(fit.get('fitted_on'))}: "
                                 f"{_verdict(fit)}\n"
                                 f"A = {_ci(fit, 'A')}, alpha = {_ci(fit, 'alpha')}\n"
                                 f"B = {_ci(fit, 'B')}, beta = {_ci(fit, 'beta')}")
                if texts:
                    text = "\n".join(textwrap.fill(t, 75) for t in "\n".join(texts).split("\n"))
                    ax.text(0.02, 0.02, text, transform=ax.transAxes, fontsize=5.5, va="bottom", ha="left",
                            bbox={"boxstyle": "round", "fc": "white", "ec": "0.7", "alpha": 0.9})
            ax.set_xscale("log")
            _tidy_log_axis(ax, "x")
            ax.set_xlabel("bytes seen (coded so far)")
            ax.set_ylabel(label)
            ax.set_title(f"{data_name}: {label.split(' (')[0]}\n({how})", fontsize=9)
            ax.grid(True, which="both", alpha=0.3)
            if i == 0:
                ax.legend(fontsize=6.5)
    fig.suptitle(kinds_note(runs[runs["job.dir"].isin(set(curves["job.dir"]))]), fontsize=8)
    return fig


def _chinchilla_of(fits: pd.DataFrame | None, data_name: str) -> list[pd.Series]:
    """The fitted Chinchilla rows of ``data_name``, one per kind (none where a data set holds
    several series: their fits would not belong to one panel)."""
    if fits is None or fits.empty or "E" not in fits or "form" not in fits:
        return []
    hit = fits[(fits["form"] == "chinchilla") & (fits["data.name"].astype(str) == data_name) & fits["E"].notna()]
    if "series" in hit and hit["series"].nunique() > 1:
        return []
    kinds = hit["fitted_on"].map(_fit_kind) if "fitted_on" in hit else pd.Series(REAL.name, index=hit.index)
    return [hit[kinds == k].iloc[0] for k in FIT_KINDS if (kinds == k).sum() == 1]


def plot_two_part(runs: pd.DataFrame, stem: Path) -> list[Path]:
    """Figure (c): program bits + data bits vs model size, one column per series.

    Top row: the total and its data part (kbit, mean over seeds, bars min-max) of each kind: real
    (the bitstream as data part, filled markers, solid) and estimated (the training-loss estimate
    as data part, hollow markers, dashed); the size with the shortest mean total of each kind is
    starred. Bottom row: the program part (kbit), on its own axis because it is orders of
    magnitude smaller for a prequential code.

    Returns:
      The PNG and SVG paths, or [] when the summary columns are missing.
    """
    fig = _two_part_figure(runs)
    return [] if fig is None else _save(fig, stem)


def _two_part_figure(runs: pd.DataFrame) -> Any:
    """The figure of :func:`plot_two_part`, unsaved (None without program and data bits)."""
    data_cols = {REAL.name: "code.bits", ESTIMATE.name: "estimate.bits"}
    if "code.program_bits" not in runs or not any(c in runs for c in data_cols.values()):
        return None
    runs = _with_kinds(runs).copy()
    runs["program_kbit"] = pd.to_numeric(runs["code.program_bits"], errors="coerce") / 1e3
    names = sorted(runs["series"].unique())
    colors = dict(zip(names, _colors(len(names))))
    fig, axes = _new_figure(2, len(names), panel_size=(5.5, 3.4))
    drawn = False
    for j, name in enumerate(names):
        d = runs[runs["series"] == name]
        color = colors[name]
        top, bottom = axes[0, j], axes[1, j]
        for kind in KINDS:
            column = data_cols[_curve_kind(kind.name)]
            if column not in d:
                continue
            rows = d if kind is ESTIMATE else d[d["job.kind"] == kind.name]
            rows = rows.assign(data_kbit=pd.to_numeric(rows[column], errors="coerce") / 1e3)
            rows = rows.assign(total_kbit=rows["program_kbit"] + rows["data_kbit"])
            total, data_part = _seed_stats(rows, "total_kbit"), _seed_stats(rows, "data_kbit")
            if total.empty:
                continue
            drawn = True
            mfc = color if kind.filled else "none"
            x = total["model.n_params"]
            yerr = np.vstack([total["mean"] - total["min"], total["max"] - total["mean"]])
            top.errorbar(x, total["mean"], yerr=yerr, fmt=kind.marker, ls=kind.line, color=color, mfc=mfc, capsize=3,
                         label=f"total = program + data: {kind.label}")
            top.plot(data_part["model.n_params"], data_part["mean"], kind.marker, ls=(0, (2, 2)), color=color,
                     mfc=mfc, alpha=0.5, ms=4, label=f"data part: {kind.label}")
            best = total.loc[total["mean"].idxmin()]
            top.plot([best["model.n_params"]], [best["mean"]], "*", color="k" if kind.filled else "0.55", ms=14,
                     zorder=5, label=f"shortest {'real' if kind is REAL else kind.name} total: {best['model.name']} "
                                     f"({_fmt_params(best['model.n_params'])} params)")
        program = _seed_stats(d, "program_kbit")
        top.set_ylabel("description length (kbit)")
        top.set_title(f"{name}: two-part total\n{markers_note(d)}", fontsize=8)
        _legend(top, first=("total = ", "data part", "shortest"), fontsize=6)
        bottom.plot(program["model.n_params"], program["mean"], "^:", color=color, label="program part")
        bottom.set_ylabel("program (kbit)")
        bottom.legend(fontsize=7)
        for ax in (top, bottom):
            ax.ticklabel_format(axis="y", style="plain", useOffset=False)  # kbit as they are, no "+1.9e2"
            ax.set_xscale("log")
            _tidy_log_axis(ax, "x")
            ax.set_xlabel("parameters N (measured, model.n_params)")
            ax.grid(True, which="both", alpha=0.3)
    if not drawn:
        return None
    fig.suptitle(kinds_note(runs), fontsize=8)
    return fig


# --------------------------------------------------------------------------- driver


def make_scaling_figures(runs_all: pd.DataFrame, curves: pd.DataFrame | None, out_dir: str | os.PathLike,
                         name: str, *, n_boot: int = 200, seed: int = 0, include_unverified: bool = False,
                         log: Any = print, source: Any = "the table") -> list[Path]:
    """Fits and figures of a scaling sweep: the four figures and ``<name>_fits.csv``.

    Args:
      runs_all: the collected runs table.
      curves: its curves table (or None).
      out_dir: where the figures and ``<name>_fits.csv`` go.
      name: file-name prefix.
      n_boot: bootstrap resamples of the power-law fits (the Chinchilla fits use half).
      seed: bootstrap seed.
      include_unverified: also plot (and fit, saying so) runs whose bitstream was not verified.
      log: called with each progress / result line.
      source: what the runs came from, for the error message.

    Returns:
      The written paths.

    Raises:
      AnalysisError: no run with a positive parameter count that is a real code or an estimate.
    """
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
        chin = pd.DataFrame([{"series": sr, "data.name": dn, "form": "chinchilla", "metric": "per-chunk curves",
                              "fitted_on": None,
                              "note": "not fitted: no prequential curves (no <name>_curves table beside the runs "
                                      "table, or no metrics.jsonl)"}
                             for sr, dn in runs[["series", "data.name"]].drop_duplicates().astype(str)
                             .itertuples(index=False)])
    non_empty = [f for f in (fits, chin) if not f.empty]
    all_fits = pd.concat(non_empty, ignore_index=True) if non_empty else pd.DataFrame()
    _log_fits(all_fits, runs, log)

    written: list[Path] = []
    written += plot_scaling(runs, fits, out / f"{name}_scaling")
    written += plot_compute(runs, curves, out / f"{name}_compute")
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
    if not any(p.name == f"{name}_compute.png" for p in written):
        log("note: no run has a training-FLOPs count (model shape, seq_len or data.bytes missing); "
            "the compute figure is skipped")
    return written


def _log_fits(fits: pd.DataFrame, runs: pd.DataFrame, log: Any) -> None:
    for row in fits.to_dict("records"):
        what = f"{row['series']} {row['form']} on {row.get('metric')}"
        on = f"fitted on {_fit_words(row.get('fitted_on'))}"
        if not isinstance(row.get("E"), float) or math.isnan(row["E"]):
            log(f"fit {what}: skipped ({row.get('note')})")
            continue
        r = pd.Series(row)
        line = f"fit {what}: {r.get('status', fits_lib.STATUS_OK)}, {on}: E = {_ci(r, 'E', '.4g')}, " \
               f"A = {_ci(r, 'A')}, alpha = {_ci(r, 'alpha')}"
        if row["form"] == "chinchilla":
            line += f", B = {_ci(r, 'B')}, beta = {_ci(r, 'beta')}"
        h = row.get("entropy_rate_bits")
        if h is not None and not (isinstance(h, float) and math.isnan(h)):
            line += f"; true entropy rate {h:.4g} ({100 * (row['E'] / h - 1):+.1f} %)"
        if isinstance(row.get("flags"), str) and row["flags"]:
            line += f"; {row['flags']}"
        log(line)
    # The largest model's final-chunk code length against the true rate: the headline check.
    for series, h in _series_entropy(runs).items():
        group = runs[runs["series"] == series]
        for kind in (REAL, UNVERIFIED, ESTIMATE):
            s = _seed_stats(points(group, FINAL_CHUNK, kind.name), "value")
            if not s.empty:
                big = s.iloc[-1]
                gap = 100 * (big["mean"] / h - 1)
                log(f"{series}: largest model {big['model.name']} ({_fmt_params(big['model.n_params'])} params) "
                    f"final-chunk {big['mean']:.4g} bits/byte, {kind.label}, vs entropy rate {h:.4g} ({gap:+.1f} %)")
