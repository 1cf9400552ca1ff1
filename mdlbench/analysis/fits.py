"""Scaling-law fits with bootstrap confidence intervals (scipy only).

Two forms:

* ``L(N) = E + A * N**-alpha`` (:func:`fit_power_law`): code length (bits/byte) against the
  measured parameter count N. E is the irreducible part, which for a source of known entropy
  rate should approach that rate.
* ``L(N, D) = E + A / N**alpha + B / D**beta`` (:func:`fit_chinchilla`): the Hoffmann et al.
  (2022) form, fitted to the prequential curve (bits/byte of the chunk coded after D bytes).

Both fit in log space, i.e. they minimise relative rather than absolute residuals, because the
noise between seeds is roughly multiplicative and the losses span an order of magnitude. The
optimiser (``scipy.optimize.least_squares`` with bounds E >= 0, exponents in (0, 5]) is started
from a small grid of closed-form initial guesses and the best end point is kept, as in Hoffmann
et al.: E, A and alpha trade off along a long, flat valley of the objective, where a single start
can stop short of the optimum.

Confidence intervals come from a bootstrap. When several runs (seeds) share a parameter count,
it resamples runs *within* each parameter count (a stratified case bootstrap,
``ci_method == "runs"``), so that all points of one run (e.g. a whole prequential curve) stay
together. When every parameter count has a single run, it resamples the log-space residuals
instead (``ci_method == "residuals"``). The interval is estimate +- t(dof) x bootstrap standard
error, corrected for the few runs per size (see :func:`_bootstrap` and :func:`_intervals`).

Every fit is judged before it is reported (:func:`assess`): ``identifiable`` is False when the
points cannot pin the law down (fewer distinct model sizes, or data amounts, than the law has
parameters plus one; no confidence interval; an interval spanning more than two orders of
magnitude or reaching a bound of the optimiser, e.g. E = 0), and ``valid`` is False when the
asymptote E lies below the known entropy rate of the source: no code can have that, since
cross-entropy = entropy + KL >= entropy. ``status`` says which, in words, for tables and figures;
``flags`` gives the reasons.

The returned dicts hold plain floats, strings and tuples only, so they can go straight into a
table or JSON file.
"""

from __future__ import annotations

import itertools
from typing import Any, Callable

import numpy as np
from scipy import optimize, stats

from mdlbench.analysis import AnalysisError

_EXPONENT_BOUNDS = (1e-4, 5.0)
# A confidence interval wider than this ratio (hi / lo) leaves a positive parameter unknown to
# within two orders of magnitude: the fit then says nothing about it.
MAX_CI_RATIO = 100.0
# Distinct values needed along each axis: the parameters of that axis's terms plus one, so that
# at least one degree of freedom is left to test the law (3 points fit E + A N^-alpha exactly).
MIN_SIZES_POWER_LAW = 4
MIN_SIZES_CHINCHILLA = 4   # E, A, alpha along N, plus one
MIN_DATA_CHINCHILLA = 4    # E, B, beta along D, plus one
STATUS_OK = "ok"
STATUS_NOT_IDENTIFIABLE = "not identifiable"
STATUS_INVALID = "invalid: E below entropy rate"
# Fractions of min(L) tried as initial guesses for E: E is below every observed loss.
_E_FRACTIONS = (0.0, 0.3, 0.6, 0.8, 0.9, 0.95, 0.98)


def power_law(n_params: Any, E: float, A: float, alpha: float) -> np.ndarray:
    """Evaluates ``E + A * N**-alpha``.

    Args:
      n_params: parameter counts N (scalar or array, > 0).
      E, A, alpha: the law's parameters.

    Returns:
      The predicted loss, same shape as ``n_params``.
    """
    n = np.asarray(n_params, dtype=float)
    return E + A * n ** (-alpha)


def chinchilla(n_params: Any, data_bytes: Any, E: float, A: float, alpha: float, B: float, beta: float) -> np.ndarray:
    """Evaluates ``E + A / N**alpha + B / D**beta``.

    Args:
      n_params: parameter counts N (> 0).
      data_bytes: data seen D (> 0), broadcast against ``n_params``.
      E, A, alpha, B, beta: the law's parameters.

    Returns:
      The predicted loss.
    """
    n = np.asarray(n_params, dtype=float)
    d = np.asarray(data_bytes, dtype=float)
    return E + A * n ** (-alpha) + B * d ** (-beta)


# --------------------------------------------------------------------------- input checks


def _as_positive(name: str, x: Any) -> np.ndarray:
    arr = np.asarray(x, dtype=float).ravel()
    if arr.size and not np.all(np.isfinite(arr)):
        raise AnalysisError(f"{name} contains NaN or infinite values; drop incomplete runs before fitting")
    if arr.size and np.any(arr <= 0):
        raise AnalysisError(f"{name} must be positive everywhere to fit a power law, got min {arr.min():g}")
    return arr


def _check_lengths(**arrays: np.ndarray) -> int:
    sizes = {k: v.size for k, v in arrays.items()}
    if len(set(sizes.values())) != 1:
        raise AnalysisError(f"inputs must have the same length, got {sizes}")
    return next(iter(sizes.values()))


def _groups(groups: Any, n: int) -> np.ndarray:
    if groups is None:
        return np.arange(n)
    g = np.asarray(groups, dtype=object).ravel()
    if g.size != n:
        raise AnalysisError(f"groups must have one label per point ({n}), got {g.size}")
    # Labels may be any hashable (seed ints, job paths); factorise to ints.
    _, codes = np.unique(g.astype(str), return_inverse=True)
    return codes


# --------------------------------------------------------------------------- the optimiser


def _least_squares(
    residual: Callable[[np.ndarray], np.ndarray],
    starts: list[np.ndarray],
    lower: np.ndarray,
    upper: np.ndarray,
    loss: str,
    f_scale: float,
) -> tuple[np.ndarray, float]:
    """Runs ``least_squares`` from every start and returns the best (params, cost)."""
    best_x, best_cost = None, np.inf
    for x0 in starts:
        x0 = np.clip(x0, lower + 1e-12, upper - 1e-12)
        try:
            res = optimize.least_squares(residual, x0, bounds=(lower, upper), loss=loss, f_scale=f_scale,
                                         x_scale="jac", max_nfev=2000)
        except (ValueError, FloatingPointError):
            continue
        if np.isfinite(res.cost) and res.cost < best_cost:
            best_x, best_cost = res.x, float(res.cost)
    if best_x is None:
        raise AnalysisError("the scaling-law fit did not converge from any starting point")
    return best_x, best_cost


def _log_sum(E: float, *log_terms: np.ndarray) -> np.ndarray:
    """log(E + sum(exp(log_terms))) without overflow when the optimiser tries wild exponents."""
    acc = log_terms[0]
    for t in log_terms[1:]:
        acc = np.logaddexp(acc, t)
    return np.logaddexp(acc, np.log(E)) if E > 0 else acc


def _power_law_residual(log_n: np.ndarray, log_y: np.ndarray) -> Callable[[np.ndarray], np.ndarray]:
    # Parameters: (E, log A, alpha); log A keeps A > 0 without a bound and keeps N**-alpha tame.
    def residual(p: np.ndarray) -> np.ndarray:
        E, log_a, alpha = p
        return _log_sum(E, log_a - alpha * log_n) - log_y

    return residual


def _power_law_starts(log_n: np.ndarray, y: np.ndarray) -> list[np.ndarray]:
    """Closed-form guesses: for each trial E, a straight line through log(L - E) vs log N."""
    starts = []
    for frac in _E_FRACTIONS:
        e0 = frac * y.min()
        slope, intercept = np.polyfit(log_n, np.log(y - e0), 1)
        alpha0 = float(np.clip(-slope, 0.01, 3.0))
        starts.append(np.array([e0, intercept, alpha0]))
    return starts


def _fit_power_law_once(log_n: np.ndarray, y: np.ndarray, starts: list[np.ndarray], loss: str,
                        f_scale: float) -> tuple[np.ndarray, float]:
    lower = np.array([0.0, -np.inf, _EXPONENT_BOUNDS[0]])
    upper = np.array([np.inf, np.inf, _EXPONENT_BOUNDS[1]])
    return _least_squares(_power_law_residual(log_n, np.log(y)), starts, lower, upper, loss, f_scale)


def _chinchilla_residual(log_n: np.ndarray, log_d: np.ndarray, log_y: np.ndarray) -> Callable[[np.ndarray], np.ndarray]:
    def residual(p: np.ndarray) -> np.ndarray:
        E, log_a, alpha, log_b, beta = p
        return _log_sum(E, log_a - alpha * log_n, log_b - beta * log_d) - log_y

    return residual


def _chinchilla_starts(log_n: np.ndarray, log_d: np.ndarray, y: np.ndarray) -> list[np.ndarray]:
    """For trial (E, alpha, beta), A and B >= 0 follow from non-negative least squares."""
    starts = []
    for frac, alpha0, beta0 in itertools.product((0.0, 0.5, 0.8, 0.95), (0.1, 0.3, 0.6), (0.1, 0.3, 0.6)):
        e0 = frac * y.min()
        design = np.stack([np.exp(-alpha0 * log_n), np.exp(-beta0 * log_d)], axis=1)
        # Weight rows by 1/y so the linear solve approximates the relative (log-space) objective.
        coef, _ = optimize.nnls(design / y[:, None], (y - e0) / y)
        a0, b0 = np.maximum(coef, 1e-8)
        starts.append(np.array([e0, np.log(a0), alpha0, np.log(b0), beta0]))
    return starts


def _fit_chinchilla_once(log_n: np.ndarray, log_d: np.ndarray, y: np.ndarray, starts: list[np.ndarray],
                         loss: str, f_scale: float) -> tuple[np.ndarray, float]:
    lo, hi = _EXPONENT_BOUNDS
    lower = np.array([0.0, -np.inf, lo, -np.inf, lo])
    upper = np.array([np.inf, np.inf, hi, np.inf, hi])
    return _least_squares(_chinchilla_residual(log_n, log_d, np.log(y)), starts, lower, upper, loss, f_scale)


# --------------------------------------------------------------------------- bootstrap


def _bootstrap(
    fit_indices: Callable[[np.ndarray, np.ndarray | None], np.ndarray],
    strata: np.ndarray,
    units: np.ndarray,
    log_resid: np.ndarray,
    n_fit_params: int,
    n_boot: int,
    rng: np.random.Generator,
) -> tuple[np.ndarray, str, float, int]:
    """Bootstraps a fit.

    ``fit_indices(idx, log_noise)`` refits on the points ``idx`` (with repetition), or on all
    points with the fitted values perturbed by ``log_noise`` (residual bootstrap), and returns the
    raw parameter vector.

    Resampling k runs out of k underestimates the variance by a factor (k - 1) / k, far from
    negligible with the 2-5 seeds a sweep can afford, so the spread of the refits is to be
    inflated by sqrt(k / (k - 1)) (k: harmonic mean of the runs per parameter count); this is the
    usual small-sample correction, exact for statistics linear in the data. The residual bootstrap
    gets the analogous sqrt(n / (n - p)) on the residuals themselves.

    Returns:
      (n_ok x n_params refits, method, inflation of their spread, degrees of freedom of the
      spread: sum over parameter counts of (runs - 1), or n - p for residuals).
    """
    by_stratum: list[list[np.ndarray]] = []
    for s in np.unique(strata):
        in_s = strata == s
        by_stratum.append([np.flatnonzero(in_s & (units == u)) for u in np.unique(units[in_s])])
    runs_per_size = np.array([len(us) for us in by_stratum])
    resample_runs = bool(np.any(runs_per_size > 1))
    if resample_runs:
        k = runs_per_size[runs_per_size > 1]
        k_mean = k.size / np.sum(1.0 / k)
        inflation = float(np.sqrt(k_mean / (k_mean - 1)))
        dof = int(np.sum(k - 1))
    else:
        n = log_resid.size
        dof = max(n - n_fit_params, 1)
        noise = (log_resid - log_resid.mean()) * np.sqrt(n / dof)
        inflation = 1.0
    draws = []
    for _ in range(n_boot):
        try:
            if resample_runs:
                parts = []
                for us in by_stratum:
                    pick = rng.integers(0, len(us), size=len(us))
                    parts.extend(us[i] for i in pick)
                draws.append(fit_indices(np.concatenate(parts), None))
            else:
                draws.append(fit_indices(np.arange(log_resid.size), rng.choice(noise, size=noise.size)))
        except AnalysisError:
            continue  # a degenerate resample; the count of successful draws is reported
    draws_arr = np.array(draws).reshape(len(draws), n_fit_params)
    return draws_arr, ("runs" if resample_runs else "residuals"), inflation, dof


def _intervals(p_raw: np.ndarray, draws_raw: np.ndarray, inflation: float, dof: int, level: float,
               to_natural: Callable[[np.ndarray], np.ndarray]) -> list[tuple[float, float]]:
    """Bootstrap-standard-error intervals with a Student-t quantile, in natural parameters.

    Why not percentiles: with 3 seeds per size the bootstrap distribution is built from a handful
    of distinct resamples per size and its spread is itself uncertain; planted-parameter
    simulations (3 seeds x 8 sizes, 1 % noise) gave 87-92 % coverage for nominal 95 % percentile
    intervals but 93-94 % for estimate +- t(dof) x inflated bootstrap s.e. The interval is formed
    in the fitted parametrisation (log A, log B: closer to normal, and A, B stay positive) and
    mapped back; E's lower end is clipped at its bound 0.
    """
    if draws_raw.shape[0] < 2:
        return [(float("nan"), float("nan"))] * p_raw.size
    se = inflation * draws_raw.std(axis=0, ddof=1)
    half = stats.t.ppf(0.5 + level / 2, dof) * se
    lo, hi = p_raw - half, p_raw + half
    lo[0] = max(lo[0], 0.0)
    return [(float(a), float(b)) for a, b in zip(to_natural(lo), to_natural(hi))]


# --------------------------------------------------------------------------- judging a fit

# Bounds of each natural parameter (those of the optimiser; A and B are unbounded above).
_BOUNDS = {"E": (0.0, np.inf), "A": (0.0, np.inf), "B": (0.0, np.inf),
           "alpha": _EXPONENT_BOUNDS, "beta": _EXPONENT_BOUNDS}
# An estimate or interval end this close to a bound (relative, or absolute for a bound at 0) is
# "at the bound": the optimiser was stopped by it, not by the data.
_BOUND_TOL = 1e-6


def _at(value: float, bound: float) -> bool:
    return abs(value - bound) <= _BOUND_TOL * max(abs(bound), 1e-3)


def assess(fit: dict[str, Any], names: tuple[str, ...], *, min_sizes: int, min_data: int | None = None,
           entropy_rate_bits: float | None = None, max_ci_ratio: float = MAX_CI_RATIO) -> dict[str, Any]:
    """Judges whether a fit is identifiable from its points and possible for a code.

    Not identifiable when any of: fewer than ``min_sizes`` distinct parameter counts (or
    ``min_data`` distinct data amounts); no confidence interval; a parameter's estimate or
    interval at a bound of the optimiser (E = 0, an exponent at 1e-4 or 5); a positive
    parameter's interval wider than ``max_ci_ratio`` (hi / lo). Invalid when E is below
    ``entropy_rate_bits``: a code's asymptote cannot lie below the source's entropy rate.

    Args:
      fit: a dict from :func:`fit_power_law` or :func:`fit_chinchilla` (estimates, ``*_ci``,
        ``n_sizes``, and ``n_data`` when ``min_data`` is given).
      names: the law's parameter names, e.g. ``("E", "A", "alpha")``.
      min_sizes: distinct parameter counts needed.
      min_data: distinct data amounts needed (Chinchilla form), or None.
      entropy_rate_bits: the source's entropy rate in the loss's units, where known.
      max_ci_ratio: widest acceptable hi / lo of an interval.

    Returns:
      ``identifiable`` (bool), ``valid`` (False only when E is below a known entropy rate),
      ``status`` (:data:`STATUS_INVALID`, :data:`STATUS_NOT_IDENTIFIABLE` or :data:`STATUS_OK`,
      in that order of precedence), ``flags`` (the reasons, ``"; "``-separated, empty when ok)
      and ``entropy_rate_bits``.
    """
    not_ident: list[str] = []
    if fit["n_sizes"] < min_sizes:
        not_ident.append(f"{fit['n_sizes']} distinct model sizes (needs >= {min_sizes}: one more than the law's "
                         "parameters along N)")
    if min_data is not None and fit["n_data"] < min_data:
        not_ident.append(f"{fit['n_data']} distinct data amounts (needs >= {min_data}: one more than the law's "
                         "parameters along D)")
    cis = {k: fit[f"{k}_ci"] for k in names}
    if any(not (np.isfinite(lo) and np.isfinite(hi)) for lo, hi in cis.values()):
        not_ident.append(f"no confidence interval ({fit.get('n_boot', 0)} bootstrap refits)")
    else:
        for k in names:
            lo, hi = cis[k]
            b_lo, b_hi = _BOUNDS[k]
            if _at(fit[k], b_lo) or (np.isfinite(b_hi) and _at(fit[k], b_hi)):
                bound = b_lo if _at(fit[k], b_lo) else b_hi
                not_ident.append(f"{k} = {fit[k]:.3g} sits at its bound {bound:g}")
            elif lo <= b_lo or _at(lo, b_lo) or (np.isfinite(b_hi) and (hi >= b_hi or _at(hi, b_hi))):
                bound = b_lo if (lo <= b_lo or _at(lo, b_lo)) else b_hi
                not_ident.append(f"{k}'s CI [{lo:.3g}, {hi:.3g}] reaches its bound {bound:g}")
            elif hi / lo > max_ci_ratio:
                not_ident.append(f"{k}'s CI [{lo:.3g}, {hi:.3g}] spans {np.log10(hi / lo):.1f} orders of magnitude")
    invalid: list[str] = []
    h = entropy_rate_bits
    if h is not None and np.isfinite(h) and fit["E"] < h:
        whole = "; so does its whole CI" if cis["E"][1] < h else ""
        invalid.append(f"E = {fit['E']:.4g} is below the entropy rate {h:.4g} ({100 * (fit['E'] / h - 1):+.1f} %)"
                       f"{whole}")
    status = STATUS_INVALID if invalid else STATUS_NOT_IDENTIFIABLE if not_ident else STATUS_OK
    return {"identifiable": not not_ident, "valid": not invalid, "status": status,
            "flags": "; ".join(invalid + not_ident),
            "entropy_rate_bits": float(h) if h is not None and np.isfinite(h) else None}


# --------------------------------------------------------------------------- public fits


def fit_power_law(
    n_params: Any,
    loss: Any,
    *,
    groups: Any = None,
    n_boot: int = 500,
    seed: int = 0,
    ci: float = 0.95,
    robust_loss: str = "soft_l1",
    f_scale: float = 0.05,
    entropy_rate_bits: float | None = None,
) -> dict[str, Any]:
    """Fits ``L(N) = E + A * N**-alpha`` with E >= 0, in log space, plus bootstrap CIs.

    Args:
      n_params: measured parameter count of each point's model (> 0).
      loss: the point's loss, e.g. final-chunk bits/byte (> 0).
      groups: optional run label of each point (e.g. the seed, or a job directory). Points of one
        run are resampled together; runs are resampled within each parameter count.
      n_boot: bootstrap resamples (0 = no confidence intervals).
      seed: seed of the bootstrap's random generator.
      ci: confidence level of the intervals.
      robust_loss: ``least_squares`` loss on the log residuals (``linear`` = plain least squares;
        the default ``soft_l1`` is quadratic for relative residuals below ``f_scale`` and linear
        above, so one diverged run does not drag the fit).
      f_scale: relative residual at which ``robust_loss`` turns linear.
      entropy_rate_bits: the source's entropy rate in the loss's units, where known: an E below
        it marks the fit invalid.

    Returns:
      A dict with ``E``, ``A``, ``alpha``; ``E_ci``, ``A_ci``, ``alpha_ci`` ((lo, hi) tuples);
      ``ci_level``, ``n_boot`` (successful resamples), ``ci_method`` (``runs`` or ``residuals``),
      ``ci_dof`` (degrees of freedom of the t quantile), ``n_points``, ``n_sizes`` (distinct N),
      ``rmse_log`` (root-mean-square log residual), and :func:`assess`'s ``identifiable``,
      ``valid``, ``status``, ``flags``, ``entropy_rate_bits``.

    Raises:
      AnalysisError: inputs of different lengths, non-positive or non-finite values, or fewer
        than 3 distinct parameter counts (the law has 3 parameters).
    """
    n = _as_positive("n_params", n_params)
    y = _as_positive("loss", loss)
    size = _check_lengths(n_params=n, loss=y)
    n_sizes = np.unique(n).size
    if n_sizes < 3:
        raise AnalysisError(f"a power-law fit needs at least 3 distinct parameter counts, got {n_sizes}")
    g = _groups(groups, size)
    log_n = np.log(n)

    starts = _power_law_starts(log_n, y)
    p, _ = _fit_power_law_once(log_n, y, starts, robust_loss, f_scale)
    log_resid = _power_law_residual(log_n, np.log(y))(p)

    def refit(idx: np.ndarray, log_noise: np.ndarray | None) -> np.ndarray:
        if log_noise is None:
            ln, yy = log_n[idx], y[idx]
            if np.unique(ln).size < 3:
                raise AnalysisError("degenerate resample")
        else:
            ln, yy = log_n, np.exp(np.log(y) - log_resid + log_noise)
        # Starting from the full-data optimum is enough for a resample and 7x cheaper.
        q, _ = _fit_power_law_once(ln, yy, [p], robust_loss, f_scale)
        return q

    def to_natural(q: np.ndarray) -> np.ndarray:
        return np.array([q[0], np.exp(q[1]), q[2]])

    rng = np.random.default_rng(seed)
    draws, method, inflation, dof = _bootstrap(refit, n, g, log_resid, 3, n_boot, rng)
    cis = _intervals(p, draws, inflation, dof, ci, to_natural)
    out = {
        "E": float(p[0]), "A": float(np.exp(p[1])), "alpha": float(p[2]),
        "E_ci": cis[0], "A_ci": cis[1], "alpha_ci": cis[2],
        "ci_level": float(ci), "n_boot": int(draws.shape[0]), "ci_method": method, "ci_dof": dof,
        "n_points": int(size), "n_sizes": int(n_sizes),
        "rmse_log": float(np.sqrt(np.mean(log_resid**2))),
    }
    out.update(assess(out, ("E", "A", "alpha"), min_sizes=MIN_SIZES_POWER_LAW, entropy_rate_bits=entropy_rate_bits))
    return out


def fit_chinchilla(
    n_params: Any,
    data_bytes: Any,
    loss: Any,
    *,
    groups: Any = None,
    n_boot: int = 200,
    seed: int = 0,
    ci: float = 0.95,
    robust_loss: str = "soft_l1",
    f_scale: float = 0.05,
    entropy_rate_bits: float | None = None,
) -> dict[str, Any]:
    """Fits ``L(N, D) = E + A / N**alpha + B / D**beta`` in log space, plus bootstrap CIs.

    Args:
      n_params: measured parameter count of each point's model (> 0).
      data_bytes: bytes the model had trained on when it coded the point's chunk (> 0).
      loss: the chunk's loss, e.g. its ideal bits/byte (> 0).
      groups: run label of each point (e.g. the job directory); a run's whole curve is
        resampled as one unit, within its parameter count. Without it, points are independent.
      n_boot: bootstrap resamples (0 = no confidence intervals).
      seed: seed of the bootstrap's random generator.
      ci: confidence level of the intervals.
      robust_loss: ``least_squares`` loss on the log residuals (see :func:`fit_power_law`).
      f_scale: relative residual at which ``robust_loss`` turns linear.
      entropy_rate_bits: the source's entropy rate in the loss's units, where known: an E below
        it marks the fit invalid.

    Returns:
      A dict with ``E``, ``A``, ``alpha``, ``B``, ``beta``, their ``*_ci`` (lo, hi) tuples,
      ``ci_level``, ``n_boot``, ``ci_method``, ``ci_dof``, ``n_points``, ``n_sizes``,
      ``n_data`` (distinct D), ``rmse_log``, and :func:`assess`'s ``identifiable``, ``valid``,
      ``status``, ``flags``, ``entropy_rate_bits``.

    Raises:
      AnalysisError: inputs of different lengths, non-positive or non-finite values, fewer than
        2 distinct parameter counts or fewer than 3 distinct data sizes, or fewer than 6 points.
    """
    n = _as_positive("n_params", n_params)
    d = _as_positive("data_bytes", data_bytes)
    y = _as_positive("loss", loss)
    size = _check_lengths(n_params=n, data_bytes=d, loss=y)
    n_sizes, n_data = np.unique(n).size, np.unique(d).size
    if n_sizes < 2 or n_data < 3 or size < 6:
        raise AnalysisError(
            f"a Chinchilla fit needs >= 2 parameter counts, >= 3 data sizes and >= 6 points, "
            f"got {n_sizes}, {n_data} and {size}")
    g = _groups(groups, size)
    log_n, log_d = np.log(n), np.log(d)

    p, _ = _fit_chinchilla_once(log_n, log_d, y, _chinchilla_starts(log_n, log_d, y), robust_loss, f_scale)
    log_resid = _chinchilla_residual(log_n, log_d, np.log(y))(p)

    def refit(idx: np.ndarray, log_noise: np.ndarray | None) -> np.ndarray:
        if log_noise is None:
            ln, ld, yy = log_n[idx], log_d[idx], y[idx]
            if np.unique(ln).size < 2 or np.unique(ld).size < 3:
                raise AnalysisError("degenerate resample")
        else:
            ln, ld, yy = log_n, log_d, np.exp(np.log(y) - log_resid + log_noise)
        q, _ = _fit_chinchilla_once(ln, ld, yy, [p], robust_loss, f_scale)
        return q

    def to_natural(q: np.ndarray) -> np.ndarray:
        return np.array([q[0], np.exp(q[1]), q[2], np.exp(q[3]), q[4]])

    rng = np.random.default_rng(seed)
    draws, method, inflation, dof = _bootstrap(refit, n, g, log_resid, 5, n_boot, rng)
    cis = _intervals(p, draws, inflation, dof, ci, to_natural)
    names = ("E", "A", "alpha", "B", "beta")
    values = (p[0], np.exp(p[1]), p[2], np.exp(p[3]), p[4])
    out: dict[str, Any] = {k: float(v) for k, v in zip(names, values)}
    out.update({f"{k}_ci": c for k, c in zip(names, cis)})
    out.update({
        "ci_level": float(ci), "n_boot": int(draws.shape[0]), "ci_method": method, "ci_dof": dof,
        "n_points": int(size), "n_sizes": int(n_sizes), "n_data": int(n_data),
        "rmse_log": float(np.sqrt(np.mean(log_resid**2))),
    })
    out.update(assess(out, names, min_sizes=MIN_SIZES_CHINCHILLA, min_data=MIN_DATA_CHINCHILLA,
                      entropy_rate_bits=entropy_rate_bits))
    return out
