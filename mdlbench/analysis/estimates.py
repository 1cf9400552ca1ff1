"""Rae-style compression estimates from training-loss curves, and how close they come to real codes.

A model trained for one epoch, each token predicted *before* it is trained on, defines a
prequential code for its training set: its description length is the program size plus the sum
of the per-token losses (Rae, "Compression for AGI", Stanford MLSys 2023). Published runs only
log the loss every so often, so the sum is an integral over a sparse curve. This module does
that arithmetic, shows every step of it, and checks it against mdlbench runs whose code length
is known exactly (``code.bits`` of a verified bitstream).

The ``llama-65b`` preset is the talk's arithmetic on the talk's quoted figures (5.6 TB of text,
a summed training loss of ~400 GB): it checks that arithmetic and nothing else. The talk does
not give the loss curve, so its ~400 GB is taken as quoted; the mean loss it implies is printed
as a consequence, never used as an input.

Interpolation (used everywhere here, and printed with every curve estimate): the loss is
piecewise-linear in tokens between logged points (the trapezoid rule); before the first point it
is held constant at the first point's value back to 0 tokens; after the last point, up to the
total number of tokens trained on when that is given, it is held at the last point's value.

Units: losses are per token, in ``nats`` or ``bits``; sizes are in bytes, with decimal prefixes
(1 GB = 1e9 bytes, 1 TB = 1e12 bytes) as in the talk.

No JAX here: the tool runs on any machine, from a CSV or a run directory alone.
"""

from __future__ import annotations

import argparse
import csv
import json
import math
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from mdlbench.analysis import AnalysisError
from mdlbench.errors import DataError

LOSS_UNITS: dict[str, float] = {"nats": 1.0 / math.log(2.0), "bits": 1.0}
"""Bits per unit of loss, for each accepted ``loss_unit``."""

INTERPOLATION = (
    "piecewise-linear in tokens between logged points (trapezoid rule); the first point's loss "
    "held constant back to 0 tokens; the last point's loss held constant up to the total tokens "
    "when that is larger than the last point"
)

# Hutter Prize record since 3 Sep 2024 (fx2-cmix): enwik9, size includes the decompressor.
HUTTER_RECORD: dict[str, Any] = {
    "entry": "fx2-cmix",
    "date": "2024-09-03",
    "file": "enwik9",
    "raw_bytes": 1_000_000_000,
    "compressed_bytes": 110_793_128,
}
HUTTER_RECORD_RATIO: float = HUTTER_RECORD["raw_bytes"] / HUTTER_RECORD["compressed_bytes"]
# Best Hutter Prize ratio at the time of Rae's talk (2023), as quoted in the talk.
HUTTER_THEN_BEST_RATIO: float = 8.7


@dataclass(frozen=True)
class Preset:
    """Published summary figures for one model, with where each number comes from.

    A preset gives the summed code length of the data either directly (``loss_sum_bytes``, a
    total quoted by its source) or as ``tokens x mean_loss``; exactly one of the two is set.

    Attributes:
      tokens: tokens trained on (one epoch).
      bytes_per_token: average raw bytes per token of the tokenizer on the training mix.
      program_bytes: size of the program (code that defines model, data order and training).
      loss_sum_bytes: sum of the per-token training losses over the epoch, as a size in bytes
        (bits / 8), as quoted by the source; None when ``mean_loss`` is given instead.
      mean_loss: mean training loss per token over that epoch, in ``loss_unit``; None when
        ``loss_sum_bytes`` is given.
      loss_unit: ``bits`` or ``nats`` (unit of ``mean_loss`` and of command-line overrides).
      source: where the figures come from.
      note: what is approximate about them, and what the estimate does and does not show.
    """

    tokens: float
    bytes_per_token: float
    program_bytes: float
    source: str
    note: str
    loss_sum_bytes: float | None = None
    mean_loss: float | None = None
    loss_unit: str = "bits"


PRESETS: dict[str, Preset] = {
    "llama-65b": Preset(
        tokens=1.4e12,
        bytes_per_token=4.0,
        program_bytes=1e6,
        loss_sum_bytes=400e9,
        source='Rae, "Compression for AGI", Stanford MLSys seminar, 2023 (Llama 65B, Touvron et al. 2023)',
        note=(
            "every input is a figure quoted in the talk: 1.4T training tokens, ~4 bytes/token, the sum of "
            "the training loss ~400 GB and a program of ~1 MB. The ratio is the talk's own arithmetic "
            "redone (text bytes / summed code length), not an independent reproduction: no loss curve or "
            "bitstream is measured here, and the mean loss it implies (~2.29 bits/token) is a consequence "
            "of the quoted sum, not an input"
        ),
    ),
}


def _bits_per_unit(unit: str) -> float:
    try:
        return LOSS_UNITS[unit]
    except KeyError:
        raise AnalysisError(f"unknown loss unit {unit!r}: use one of {', '.join(LOSS_UNITS)}") from None


def integrate_curve(tokens: Sequence[float], loss: Sequence[float], unit: str = "nats", *,
                    total_tokens: float | None = None) -> float:
    """Sum of per-token losses over a sparse loss curve, in bits.

    See the module docstring for the interpolation: trapezoids between points, the first loss
    held back to 0 tokens, the last held forward to ``total_tokens``.

    Args:
      tokens: tokens seen at each logged point; non-negative and strictly increasing.
      loss: mean per-token loss at each point, in ``unit``.
      unit: ``nats`` or ``bits``.
      total_tokens: tokens trained on in all; defaults to the last point. Must not be smaller.

    Returns:
      The integral of the loss over tokens, in bits.

    Raises:
      AnalysisError: empty, mismatched, non-finite, negative or non-increasing inputs, or an
        unknown unit.
    """
    scale = _bits_per_unit(unit)
    x = np.asarray(tokens, dtype=np.float64).ravel()
    y = np.asarray(loss, dtype=np.float64).ravel()
    if x.size == 0 or x.size != y.size:
        raise AnalysisError(f"a loss curve needs as many losses as token counts and at least one point, "
                            f"got {x.size} token counts and {y.size} losses")
    if not (np.all(np.isfinite(x)) and np.all(np.isfinite(y))):
        raise AnalysisError("a loss curve must contain finite numbers only")
    if x[0] < 0 or np.any(y < 0):
        raise AnalysisError("token counts and losses must be non-negative")
    if np.any(np.diff(x) <= 0):
        i = int(np.argmax(np.diff(x) <= 0))
        raise AnalysisError(f"token counts must increase strictly: point {i + 2} has {x[i + 1]:g} after {x[i]:g}")
    end = x[-1] if total_tokens is None else float(total_tokens)
    if end < x[-1]:
        raise AnalysisError(f"total tokens ({end:g}) is smaller than the last point of the curve ({x[-1]:g})")
    bits = y * scale
    area = bits[0] * x[0]
    area += float(np.sum(np.diff(x) * (bits[1:] + bits[:-1]) / 2.0))
    area += bits[-1] * (end - x[-1])
    return float(area)


def read_curve_csv(path: str | Path) -> tuple[np.ndarray, np.ndarray]:
    """Reads a loss curve: two columns, tokens seen and loss.

    Blank lines and lines starting with ``#`` are skipped. An optional header row is recognised
    by not being numeric; when it names a column containing ``token`` and one containing
    ``loss``, those columns are used, otherwise the first two.

    Returns:
      ``(tokens, loss)`` as float64 arrays.

    Raises:
      DataError: the file is missing, unreadable, or not a two-column numeric table.
    """
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise DataError(f"loss curve file not found: {path}") from None
    except (OSError, UnicodeDecodeError) as e:
        raise DataError(f"cannot read loss curve {path}: {e}") from None
    rows = [(i + 1, row) for i, row in enumerate(csv.reader(text.splitlines()))
            if row and "".join(row).strip() and not row[0].lstrip().startswith("#")]
    if not rows:
        raise DataError(f"loss curve {path} has no rows")
    ti, li = 0, 1
    first = [c.strip() for c in rows[0][1]]
    if not _all_numbers(first[:2]):
        names = [c.lower() for c in first]
        tok = [j for j, c in enumerate(names) if "token" in c]
        los = [j for j, c in enumerate(names) if "loss" in c]
        if tok and los:
            ti, li = tok[0], los[0]
        rows = rows[1:]
        if not rows:
            raise DataError(f"loss curve {path} has a header but no data rows")
    xs, ys = [], []
    for lineno, row in rows:
        try:
            xs.append(float(row[ti]))
            ys.append(float(row[li]))
        except (IndexError, ValueError):
            raise DataError(f"{path}:{lineno}: expected numbers for tokens and loss, got {','.join(row)!r}") from None
    x, y = np.array(xs), np.array(ys)
    if not (np.all(np.isfinite(x)) and np.all(np.isfinite(y))):
        raise DataError(f"loss curve {path} contains non-finite numbers")
    bad = np.flatnonzero(np.diff(x) <= 0)
    if bad.size:
        lineno = rows[bad[0] + 1][0]
        raise DataError(f"{path}:{lineno}: tokens must increase strictly ({x[bad[0] + 1]:g} after {x[bad[0]]:g})")
    return x, y


def _all_numbers(cells: Sequence[str]) -> bool:
    try:
        [float(c) for c in cells]
    except ValueError:
        return False
    return len(cells) > 0


def _num(x: float) -> str:
    """Whole numbers below 1e9 in full (with thousands separators), the rest to 6 significant digits."""
    x = float(x)
    if x.is_integer() and abs(x) < 1e9:
        return f"{int(x):,}"
    return f"{x:,.6g}" if 1e-3 <= abs(x) < 1e9 else f"{x:.6g}"


def _si_bytes(n: float) -> str:
    for unit, size in (("TB", 1e12), ("GB", 1e9), ("MB", 1e6), ("kB", 1e3)):
        if abs(n) >= size:
            return f"{n / size:.6g} {unit}"
    return f"{n:.6g} B"


def hutter_comparison(ratio: float) -> dict[str, Any]:
    """The Hutter Prize reference points beside a compression ratio."""
    return {
        "record": dict(HUTTER_RECORD),
        "record_ratio": HUTTER_RECORD_RATIO,
        "then_best_ratio": HUTTER_THEN_BEST_RATIO,
        "ratio_over_record": ratio / HUTTER_RECORD_RATIO,
    }


def estimate(*, bytes_per_token: float, tokens: float | None = None, mean_loss: float | None = None,
             curve: tuple[Sequence[float], Sequence[float]] | None = None, loss_unit: str = "nats",
             loss_sum_bytes: float | None = None, program_bytes: float = 0.0) -> dict[str, Any]:
    """Description length and compression ratio from a loss curve or from summary figures.

    Give one of: ``curve`` (with ``tokens`` optionally the total trained on, default the last
    point); ``tokens`` and ``mean_loss``; or ``tokens`` and ``loss_sum_bytes`` (a summed code
    length quoted as it is, e.g. a talk's total). In every case

        ratio = raw text bytes / (summed per-token loss in bytes + program bytes),
        raw text bytes = tokens x bytes_per_token.

    Args:
      bytes_per_token: raw bytes per token (1 for byte-level models).
      tokens: total tokens trained on.
      mean_loss: mean per-token training loss over those tokens, in ``loss_unit``.
      curve: ``(tokens_seen, loss)`` sparse points, loss in ``loss_unit``.
      loss_unit: ``nats`` or ``bits``.
      loss_sum_bytes: the sum of the per-token losses over all tokens, as a size in bytes
        (bits / 8), taken as given.
      program_bytes: program size added to the compressed size.

    Returns:
      A dict with ``inputs``, ``interpolation`` (None for summary figures), ``tokens``,
      ``raw_bytes``, ``data_bits``, ``data_bytes``, ``program_bytes``, ``compressed_bytes``,
      ``ratio``, ``mean_loss_bits_per_token``, ``mean_loss_nats_per_token`` (derived from the
      sum when ``loss_sum_bytes`` is given), ``data_bits_per_byte``, ``bits_per_byte`` (program
      included), ``derived`` (names of the results that follow from the inputs rather than
      being inputs), ``hutter`` and ``arithmetic`` (the computation as printable lines).

    Raises:
      AnalysisError: missing, contradictory or out-of-range inputs.
    """
    scale = _bits_per_unit(loss_unit)
    if not (bytes_per_token > 0 and math.isfinite(bytes_per_token)):
        raise AnalysisError(f"bytes per token must be a positive number, got {bytes_per_token}")
    if not (program_bytes >= 0 and math.isfinite(program_bytes)):
        raise AnalysisError(f"program size must be a non-negative number of bytes, got {program_bytes}")
    given = [name for name, v in (("a loss curve", curve), ("a mean loss", mean_loss),
                                  ("a loss sum", loss_sum_bytes)) if v is not None]
    if len(given) > 1:
        raise AnalysisError(f"give one of a loss curve, a mean loss or a loss sum, not {' and '.join(given)}")
    inputs: dict[str, Any] = {"bytes_per_token": bytes_per_token, "program_bytes": program_bytes,
                              "loss_unit": loss_unit}
    lines: list[str] = []
    interpolation: str | None = None
    if curve is not None:
        x, y = (np.asarray(c, dtype=np.float64) for c in curve)
        data_bits = integrate_curve(x, y, loss_unit, total_tokens=tokens)
        total = float(x[-1] if tokens is None else tokens)
        if total <= 0:
            raise AnalysisError("a loss curve must reach past 0 tokens")
        inputs.update({"curve_points": int(x.size), "curve_first_tokens": float(x[0]),
                       "curve_last_tokens": float(x[-1]), "tokens": total})
        interpolation = INTERPOLATION
        conversion = ", nats / ln 2" if loss_unit == "nats" else ""
        lines.append(f"data code    = integral of loss over {_num(total)} tokens ({x.size} points{conversion})")
        lines.append(f"             = {_num(data_bits)} bits (mean {data_bits / total:.6g} bits/token)")
    else:
        if tokens is None or (mean_loss is None and loss_sum_bytes is None):
            raise AnalysisError("give a loss curve, or a token count with a mean loss or a loss sum")
        if not (tokens > 0 and math.isfinite(tokens)):
            raise AnalysisError(f"token count must be positive, got {tokens}")
        total = float(tokens)
        if loss_sum_bytes is not None:
            if not (loss_sum_bytes >= 0 and math.isfinite(loss_sum_bytes)):
                raise AnalysisError(f"the loss sum must be a non-negative number of bytes, got {loss_sum_bytes}")
            inputs.update({"tokens": total, "loss_sum_bytes": float(loss_sum_bytes)})
            data_bits = 8.0 * float(loss_sum_bytes)
            lines.append(f"data code    = {_num(loss_sum_bytes)} bytes ({_si_bytes(loss_sum_bytes)}): "
                         "the summed per-token loss, as given (an input, not computed here)")
            lines.append(f"             = {_num(loss_sum_bytes)} bytes x 8 = {_num(data_bits)} bits")
        else:
            if not (mean_loss >= 0 and math.isfinite(mean_loss)):
                raise AnalysisError(f"mean loss must be a non-negative number, got {mean_loss}")
            inputs.update({"tokens": total, "mean_loss": mean_loss})
            mean_bits = mean_loss * scale
            if loss_unit != "bits":
                lines.append(f"mean loss    = {mean_loss:.6g} {loss_unit}/token / ln 2 = {mean_bits:.6g} bits/token")
            data_bits = total * mean_bits
            lines.append(f"data code    = {_num(total)} tokens x {mean_bits:.6g} bits/token = {_num(data_bits)} bits")
    raw_bytes = total * bytes_per_token
    data_bytes = data_bits / 8.0
    compressed = data_bytes + program_bytes
    if compressed <= 0:
        raise AnalysisError("the estimated compressed size is zero: a ratio is undefined")
    ratio = raw_bytes / compressed
    lines[:0] = [f"raw size     = {_num(total)} tokens x {bytes_per_token:g} bytes/token = "
                 f"{_num(raw_bytes)} bytes ({_si_bytes(raw_bytes)})"]
    if loss_sum_bytes is None:
        lines.append(f"             = {_num(data_bits)} bits / 8 = {_num(data_bytes)} bytes ({_si_bytes(data_bytes)})")
    lines += [
        f"compressed   = {_num(data_bytes)} bytes + {_num(program_bytes)} bytes program = "
        f"{_num(compressed)} bytes ({_si_bytes(compressed)})",
        f"ratio        = raw bytes / compressed = {_num(raw_bytes)} / {_num(compressed)} = {ratio:.4g}x",
        f"bits/byte    = 8 x {_num(compressed)} / {_num(raw_bytes)} = {8.0 * compressed / raw_bytes:.4g}",
    ]
    derived = ["raw_bytes", "compressed_bytes", "ratio", "bits_per_byte"]
    if loss_sum_bytes is not None:
        # The mean loss is what the given sum implies; printing it as an input would make the
        # estimate look like it was computed from it.
        lines.append(f"implied mean = {_num(data_bits)} bits / {_num(total)} tokens = {data_bits / total:.4g} "
                     f"bits/token ({data_bits / total * math.log(2.0):.4g} nats/token): follows from the "
                     "given sum, not an input")
        derived += ["mean_loss_bits_per_token", "mean_loss_nats_per_token"]
    return {
        "inputs": inputs,
        "interpolation": interpolation,
        "tokens": total,
        "raw_bytes": raw_bytes,
        "data_bits": data_bits,
        "data_bytes": data_bytes,
        "program_bytes": float(program_bytes),
        "compressed_bytes": compressed,
        "ratio": ratio,
        "mean_loss_bits_per_token": data_bits / total,
        "mean_loss_nats_per_token": data_bits / total * math.log(2.0),
        "data_bits_per_byte": data_bits / raw_bytes,
        "bits_per_byte": 8.0 * compressed / raw_bytes,
        "derived": derived,
        "hutter": hutter_comparison(ratio),
        "arithmetic": lines,
    }


def estimate_preset(name: str, **overrides: Any) -> dict[str, Any]:
    """:func:`estimate` from a named :data:`PRESETS` entry; keyword arguments override its figures.

    A ``mean_loss`` override replaces the preset's quoted ``loss_sum_bytes`` (the code length is
    then ``tokens x mean_loss``), and a ``loss_sum_bytes`` override replaces its ``mean_loss``.

    Raises:
      AnalysisError: unknown preset or override, or both a mean loss and a loss sum overridden.
    """
    if name not in PRESETS:
        raise AnalysisError(f"unknown preset {name!r}: known presets are {', '.join(PRESETS)}")
    p = PRESETS[name]
    values = {"tokens": p.tokens, "mean_loss": p.mean_loss, "loss_sum_bytes": p.loss_sum_bytes,
              "loss_unit": p.loss_unit, "bytes_per_token": p.bytes_per_token, "program_bytes": p.program_bytes}
    unknown = sorted(set(overrides) - set(values))
    if unknown:
        raise AnalysisError(f"cannot override {', '.join(unknown)} in a preset; known: {', '.join(values)}")
    given = {k: v for k, v in overrides.items() if v is not None}
    if "mean_loss" in given and "loss_sum_bytes" in given:
        raise AnalysisError("give either a mean loss or a loss sum, not both")
    overridden = sorted(k for k, v in given.items() if v != values[k])
    values.update(given)
    # The two ways of giving the code length exclude each other: the overridden one wins.
    if "mean_loss" in given:
        values["loss_sum_bytes"] = None
    elif "loss_sum_bytes" in given:
        values["mean_loss"] = None
    out = estimate(**values)
    out["preset"] = {"name": name, "source": p.source, "note": p.note, "overridden": overridden}
    return out


# --------------------------------------------------------------------------- runs


@dataclass
class RunLog:
    """What an estimate needs from a run directory.

    Attributes:
      run_dir: the directory.
      steps, bytes_seen, step_bytes, loss_nats: per coding step, sorted by step.
      total_bytes: bytes of data coded (``summary.data.bytes``).
      actual_bits: payload bits of the real code (``summary.code.bits``).
      ideal_bits: sum of -log2 p under the coder's tables (``summary.code.ideal_bits``) or None.
      program_bits: ``summary.code.program_bits`` (0 when absent).
      summary: the parsed summary.json.
    """

    run_dir: Path
    steps: np.ndarray
    bytes_seen: np.ndarray
    step_bytes: np.ndarray
    loss_nats: np.ndarray
    total_bytes: int
    actual_bits: float
    ideal_bits: float | None
    program_bits: float
    summary: dict[str, Any]


def load_run(run_dir: str | Path) -> RunLog:
    """Reads ``summary.json`` and ``metrics.jsonl`` of a finished run.

    Steps logged twice (a resumed run) keep their last record. Steps without a training loss
    are ignored.

    Raises:
      DataError: missing files, malformed JSON, or no usable steps.
    """
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise DataError(f"run directory not found: {run_dir}")
    summary_path, metrics_path = run_dir / "summary.json", run_dir / "metrics.jsonl"
    for p in (summary_path, metrics_path):
        if not p.is_file():
            raise DataError(f"{p.name} not found in {run_dir}: is this a finished mdlbench run?")
    try:
        summary = json.loads(summary_path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise DataError(f"{summary_path} is not valid JSON: {e}") from None
    code = summary.get("code") if isinstance(summary, dict) else None
    if not isinstance(code, dict) or not isinstance(code.get("bits"), (int, float)):
        raise DataError(f"{summary_path} has no code.bits: the run did not finish coding")
    by_step: dict[int, dict[str, Any]] = {}
    with metrics_path.open() as f:
        for lineno, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                rec = json.loads(line)
            except json.JSONDecodeError as e:
                raise DataError(f"{metrics_path}:{lineno}: not valid JSON ({e.msg})") from None
            if isinstance(rec, dict) and "train/loss_nats" in rec and "bytes_seen" in rec and "step" in rec:
                by_step[int(rec["step"])] = rec
    if not by_step:
        raise DataError(f"{metrics_path} has no steps with bytes_seen and train/loss_nats")
    recs = [by_step[k] for k in sorted(by_step)]
    steps = np.array([r["step"] for r in recs], dtype=np.int64)
    seen = np.array([r["bytes_seen"] for r in recs], dtype=np.float64)
    loss = np.array([r["train/loss_nats"] for r in recs], dtype=np.float64)
    prev = np.concatenate([[0.0], seen[:-1]])
    step_bytes = np.array([r.get("step_bytes", s - p) for r, s, p in zip(recs, seen, prev)], dtype=np.float64)
    if np.any(np.diff(seen) <= 0):
        raise DataError(f"{metrics_path}: bytes_seen does not increase from step to step")
    total = int((summary.get("data") or {}).get("bytes") or seen[-1])
    return RunLog(run_dir=run_dir, steps=steps, bytes_seen=seen, step_bytes=step_bytes, loss_nats=loss,
                  total_bytes=total, actual_bits=float(code["bits"]),
                  ideal_bits=float(code["ideal_bits"]) if isinstance(code.get("ideal_bits"), (int, float)) else None,
                  program_bits=float(code.get("program_bits") or 0.0), summary=summary)


PLACEMENTS = ("end", "center")


def estimate_run(run: str | Path | RunLog, every: int = 1, placement: str = "end") -> dict[str, Any]:
    """Estimate a run's payload bits from every ``every``-th logged loss and compare with the code.

    Only steps whose 0-based index is a multiple of ``every`` are used (steps 0, K, 2K, ...),
    as a logger with interval K would keep them. Each step's ``train/loss_nats`` (computed on
    that step's bytes before the update, i.e. the prequential loss) is placed at that step's
    ``bytes_seen`` (``placement="end"``, as one reads a published curve of loss against tokens
    seen) or at the centre of the bytes it was measured on (``"center"``: ``bytes_seen -
    step_bytes / 2``); bytes are tokens (1 byte/token). The integral follows
    :data:`INTERPOLATION`, with the last sampled loss held to the end of the data.

    With ``every=1``, ``"center"`` reproduces the plain loss sum exactly (for equal steps),
    while ``"end"`` lags by half a step: it over-counts by about (first loss - last loss) x
    step_bytes / 2, which is visible when a run has only a few hundred steps.

    Args:
      run: a run directory or a :class:`RunLog` from :func:`load_run`.
      every: logging interval in steps, >= 1.
      placement: ``end`` or ``center`` (see above).

    Returns:
      A dict with ``every``, ``n_points``, ``n_steps``, ``bytes``, ``estimate_bits``,
      ``estimate_bits_per_byte``, ``actual_bits``, ``actual_bits_per_byte``, ``rel_error``
      (``(estimate - actual) / actual``), ``abs_error_bits``, ``loss_sum_bits`` (sum over
      all steps of step_bytes x loss, no interpolation), ``loss_sum_rel_error``, ``ideal_bits``,
      ``program_bits``, ``ratio_estimate`` and ``ratio_actual`` (program included in both).

    Raises:
      AnalysisError: ``every`` < 1. DataError: see :func:`load_run`.
    """
    if isinstance(every, bool) or not isinstance(every, (int, np.integer)) or every < 1:
        raise AnalysisError(f"the logging interval must be a positive whole number of steps, got {every!r}")
    if placement not in PLACEMENTS:
        raise AnalysisError(f"unknown placement {placement!r}: use one of {', '.join(PLACEMENTS)}")
    log = run if isinstance(run, RunLog) else load_run(run)
    keep = log.steps % int(every) == 0
    if not np.any(keep):
        raise DataError(f"{log.run_dir}: no logged step is a multiple of {every} (the first logged step is {log.steps[0]})")
    x = log.bytes_seen if placement == "end" else log.bytes_seen - log.step_bytes / 2.0
    est = integrate_curve(x[keep], log.loss_nats[keep], "nats",
                          total_tokens=max(float(log.total_bytes), float(log.bytes_seen[-1])))
    loss_sum = float(np.sum(log.step_bytes * log.loss_nats) / math.log(2.0))
    n = log.total_bytes
    actual = log.actual_bits
    return {
        "run_dir": str(log.run_dir),
        "every": int(every),
        "n_points": int(keep.sum()),
        "n_steps": int(log.steps.size),
        "placement": placement,
        "interpolation": INTERPOLATION + (
            "; x = bytes_seen after the step" if placement == "end"
            else "; x = centre of the step's bytes (bytes_seen - step_bytes / 2)") + "; 1 byte = 1 token",
        "bytes": n,
        "estimate_bits": est,
        "estimate_bits_per_byte": est / n,
        "actual_bits": actual,
        "actual_bits_per_byte": actual / n,
        "rel_error": (est - actual) / actual,
        "abs_error_bits": est - actual,
        "loss_sum_bits": loss_sum,
        "loss_sum_rel_error": (loss_sum - actual) / actual,
        "ideal_bits": log.ideal_bits,
        "program_bits": log.program_bits,
        "ratio_estimate": 8.0 * n / (est + log.program_bits),
        "ratio_actual": 8.0 * n / (actual + log.program_bits),
    }


def estimate_run_intervals(run_dir: str | Path, everies: Sequence[int] = (1, 10, 100),
                           placement: str = "end") -> list[dict[str, Any]]:
    """:func:`estimate_run` for several logging intervals, reading the run once."""
    log = load_run(run_dir)
    return [estimate_run(log, k, placement) for k in everies]


# --------------------------------------------------------------------------- CLI


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Arguments of ``mdlbench estimate``."""
    src = parser.add_argument_group("what to estimate (choose one)")
    src.add_argument("--preset", metavar="NAME", help=f"published figures: {', '.join(PRESETS)}")
    src.add_argument("--curve", metavar="CSV", help="loss curve: columns tokens seen, loss (header optional)")
    src.add_argument("--tokens", type=float, metavar="N",
                     help="tokens trained on (with --mean-loss; with --curve: total, if past the last point)")
    src.add_argument("--mean-loss", type=float, metavar="X", help="mean per-token training loss over the epoch")
    src.add_argument("--loss-sum-bytes", type=float, metavar="S",
                     help="with --tokens: the summed per-token training loss as a size in bytes (a quoted total)")
    src.add_argument("--run", metavar="RUN_DIR", help="an mdlbench run directory: estimate from its logged losses")
    parser.add_argument("--loss-unit", metavar="UNIT", help="unit of the loss per token: nats (default) or bits")
    parser.add_argument("--bytes-per-token", type=float, metavar="B", help="raw bytes per token (1 for bytes)")
    parser.add_argument("--program-bytes", type=float, metavar="P", help="program size added to the code (default 0)")
    parser.add_argument("--every", type=int, nargs="+", metavar="K",
                        help="with --run: logging intervals in steps to compare (default: 1 10 100)")
    parser.add_argument("--placement", default="end", metavar="WHERE",
                        help="with --run: a step's loss sits at its bytes_seen (end, default) or at the "
                             "centre of its bytes (center)")
    parser.add_argument("--json", action="store_true", help="print the result as JSON")


def command(args: argparse.Namespace) -> int:
    """``mdlbench estimate``: prints the estimate and its arithmetic."""
    if args.loss_unit is not None:
        _bits_per_unit(args.loss_unit)
    modes = [m for m, on in (("--preset", args.preset), ("--curve", args.curve), ("--run", args.run)) if on]
    if len(modes) > 1:
        raise AnalysisError(f"choose one of --preset, --curve, --tokens/--mean-loss or --run, got {' and '.join(modes)}")
    if args.run:
        rows = estimate_run_intervals(args.run, args.every or [1, 10, 100], args.placement)
        if args.json:
            print(json.dumps({"run": rows}, indent=2))
        else:
            _print_run(rows)
        return 0
    if args.every:
        raise AnalysisError("--every applies to --run only")
    if args.preset:
        result = estimate_preset(args.preset, tokens=args.tokens, mean_loss=args.mean_loss,
                                 loss_sum_bytes=args.loss_sum_bytes, loss_unit=args.loss_unit,
                                 bytes_per_token=args.bytes_per_token, program_bytes=args.program_bytes)
    else:
        if args.bytes_per_token is None:
            raise AnalysisError("--bytes-per-token is required with --curve or --tokens/--mean-loss/--loss-sum-bytes")
        common = {"bytes_per_token": args.bytes_per_token, "loss_unit": args.loss_unit or "nats",
                  "program_bytes": args.program_bytes or 0.0}
        if args.curve:
            if args.mean_loss is not None or args.loss_sum_bytes is not None:
                raise AnalysisError("give either --curve or --mean-loss/--loss-sum-bytes, not both")
            result = estimate(curve=read_curve_csv(args.curve), tokens=args.tokens, **common)
            result["inputs"]["curve_file"] = args.curve
        elif args.tokens is not None or args.mean_loss is not None or args.loss_sum_bytes is not None:
            result = estimate(tokens=args.tokens, mean_loss=args.mean_loss, loss_sum_bytes=args.loss_sum_bytes,
                              **common)
        else:
            raise AnalysisError("nothing to estimate: give --preset, --curve, --tokens with --mean-loss or "
                                "--loss-sum-bytes, or --run")
    if args.json:
        print(json.dumps(result, indent=2))
    else:
        _print_estimate(result)
    return 0


def _print_estimate(r: dict[str, Any]) -> None:
    out = sys.stdout.write
    if "preset" in r:
        p = r["preset"]
        out(f"Rae-style compression estimate: preset {p['name']} (the source's arithmetic on its quoted figures)\n"
            f"  source: {p['source']}\n  note:   {p['note']}\n")
        if p["overridden"]:
            out(f"  overridden on the command line: {', '.join(p['overridden'])}\n")
    else:
        out("Rae-style compression estimate (description length = program + sum of per-token losses)\n")
    inp = r["inputs"]
    out("inputs\n")
    if "curve_points" in inp:
        src = f" from {inp['curve_file']}" if "curve_file" in inp else ""
        out(f"  loss curve{src}: {inp['curve_points']} points, tokens {_num(inp['curve_first_tokens'])} .. "
            f"{_num(inp['curve_last_tokens'])}, loss in {inp['loss_unit']}/token\n")
        out(f"  tokens trained on   {_num(inp['tokens'])}\n")
    else:
        out(f"  tokens trained on   {_num(inp['tokens'])}\n")
        if "loss_sum_bytes" in inp:
            out(f"  training loss sum   {_num(inp['loss_sum_bytes'])} bytes ({_si_bytes(inp['loss_sum_bytes'])}), "
                "as given\n")
        else:
            other = (f"{r['mean_loss_nats_per_token']:.4f} nats/token" if inp["loss_unit"] == "bits"
                     else f"{r['mean_loss_bits_per_token']:.4f} bits/token")
            out(f"  mean training loss  {inp['mean_loss']:g} {inp['loss_unit']}/token (= {other})\n")
    out(f"  bytes per token     {inp['bytes_per_token']:g}\n")
    out(f"  program size        {_num(inp['program_bytes'])} bytes ({_si_bytes(inp['program_bytes'])})\n")
    if r["interpolation"]:
        out(f"interpolation: {r['interpolation']}\n")
    out("arithmetic\n")
    for line in r["arithmetic"]:
        out(f"  {line}\n")
    h = r["hutter"]
    rec = h["record"]
    out("beside the Hutter Prize\n")
    out(f"  record ({rec['entry']}, {rec['date']}): {rec['file']} {rec['raw_bytes']:,} -> "
        f"{rec['compressed_bytes']:,} bytes = {h['record_ratio']:.2f}x\n")
    out(f"  best entry at the time of the talk: {h['then_best_ratio']:.1f}x\n")
    out(f"  this estimate: {r['ratio']:.2f}x ({h['ratio_over_record']:.2f} x the record's ratio, on different data)\n")


def _print_run(rows: list[dict[str, Any]]) -> None:
    out = sys.stdout.write
    r0 = rows[0]
    log_summary = json.loads((Path(r0["run_dir"]) / "summary.json").read_text())
    data = log_summary.get("data") or {}
    model = log_summary.get("model") or {}
    out("Rae-style estimate from a run's logged losses, against its actual code\n")
    out(f"  run            {r0['run_dir']}\n")
    out(f"  data           {data.get('name', '?')}, {r0['bytes']:,} bytes (1 byte = 1 token)\n")
    if model:
        params = model.get("n_params")
        out(f"  model          {model.get('name', '?')} ({model.get('family', '?')}"
            f"{f', {params:,} parameters' if isinstance(params, int) else ''})\n")
    out(f"  actual payload code.bits = {r0['actual_bits']:,.0f} bits ({r0['actual_bits_per_byte']:.5f} bits/byte)\n")
    if r0["ideal_bits"] is not None:
        out(f"  ideal          code.ideal_bits = {r0['ideal_bits']:,.0f} bits\n")
    out(f"  interpolation  {r0['interpolation']}\n")
    out(f"  loss sum over all {r0['n_steps']} steps (step_bytes x loss, no interpolation): "
        f"{r0['loss_sum_bits']:,.0f} bits ({100 * r0['loss_sum_rel_error']:+.3f}% vs actual)\n")
    out(f"{'every':>7} {'points':>7} {'estimate_bits':>16} {'bits/byte':>10} {'actual_bits':>16} {'rel_error':>10}\n")
    for r in rows:
        out(f"{r['every']:>7} {r['n_points']:>7} {r['estimate_bits']:>16,.0f} {r['estimate_bits_per_byte']:>10.5f} "
            f"{r['actual_bits']:>16,.0f} {100 * r['rel_error']:>+9.3f}%\n")
    out("rel_error = (estimate - actual) / actual; program bits are excluded from both.\n")
    if r0["placement"] == "end":
        out("(x = bytes_seen lags each loss by half a step; --placement center measures without that lag.)\n")
