"""``mdlbench collect``: gather a sweep's run directories into two tables.

A sweep directory ``results/runs/<experiment>/`` holds job directories
``<data>/<model>/seed<k>/``. A directory is a job when it holds ``summary.json`` (finished),
``metrics.jsonl`` or ``.hydra/config.yaml`` (started); job directories are not searched further
(wandb keeps its own files inside them).

* The *runs* table has one row per finished job: its ``summary.json`` flattened with dotted
  column names (``code.bits_per_byte``, ``model.n_params``, ``config.optim.lr`` ...), plus
  ``job.dir`` (relative to the sweep), ``job.status`` and the derived columns below.
* The *curves* table is long-form: one row per coding step of every finished job, the
  ``metrics.jsonl`` columns keyed by ``job.dir``, ``data.name``, ``model.name``,
  ``model.family``, ``model.n_params`` and ``seed``, plus ``data_bytes_trained``: the bytes the
  model had trained on when it coded the step's chunk. A real job's steps fill the ``code/*``
  columns (``code/ideal_bits_per_byte``, ``code/cum_bits_per_byte`` ...), an estimate job's the
  ``estimate/*`` ones (``estimate/cum_ideal_bits_per_byte`` ...), never both.

* The *entities* table (capacity sweeps, ``mdlbench.capacity``): one row per entity of every
  finished job that wrote ``entities.csv`` (exposures, information and stored bits), keyed like
  the curves table.

``job.status`` says what a row's code lengths are:

* ``complete``: a real code whose bitstream a separate decoder process turned back into the data
  (``verify.ok``); ``unverified``: a bitstream whose decoding was not verified (kept, reported).
* ``estimate``: the fast mode (``code.name=estimate``): Rae's training-loss estimate, no bitstream,
  nothing to decode. Its summary reports the estimate as ``code.ideal_*``; collect copies it into
  the ``estimate.*`` columns (``estimate.bits``, ``estimate.bits_per_byte``,
  ``estimate.final_chunk_bits_per_byte``), where every real run records the same estimate beside
  its bitstream, so that one column holds the estimate of every job and the ``code.bits*`` columns
  hold real bitstreams only. (Runs made before real runs recorded their final-chunk estimate
  leave that cell empty.)
* ``ideal``: capacity runs measure ideal code lengths and write no bitstream, so there is nothing
  to decode; they count as complete.

Derived columns of every job: ``estimate.total_bits`` (program bits + estimate bits, the
two-part total with the estimate as its data part) and the training compute counted from the
model shape (:func:`compute_columns`: ``compute.training_flops_per_byte``,
``compute.training_flops``; in the curves table ``compute/training_flops``, the FLOPs spent
before the step's chunk was coded, and ``estimate/ideal_bits_per_byte`` per step).

Jobs without ``summary.json`` (running, killed, or with a half-written summary) are reported as
incomplete and left out of both tables, because their measured parameter count and final code
length are not known. A job whose ``verify.ok`` is not true is kept but reported as unverified.
"""

from __future__ import annotations

import argparse
import json
import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from mdlbench import provenance
from mdlbench.analysis import AnalysisError
from mdlbench.analysis import flops

# Keys of the curves table, in this order, taken from the job's row of the runs table.
CURVE_KEYS = ("job.dir", "data.name", "model.name", "model.family", "model.n_params", "seed")
_JOB_MARKERS = ("summary.json", "metrics.jsonl", os.path.join(".hydra", "config.yaml"))


@dataclass
class Sweep:
    """What :func:`collect` found.

    Attributes:
      root: the sweep directory.
      runs: one row per finished job (flattened ``summary.json``).
      curves: one row per coding step of every finished job.
      entities: one row per entity of every finished capacity job (empty for other sweeps).
      complete: job directories (relative) finished and verified.
      unverified: job directories finished whose decoded stream was not verified to match.
      estimate: job directories finished in the fast mode (training-loss estimate, no bitstream).
      incomplete: (job directory, reason) of jobs without a usable ``summary.json``.
      bad_metric_lines: (job directory, count) of unparseable ``metrics.jsonl`` lines skipped.
    """

    root: Path
    runs: pd.DataFrame
    curves: pd.DataFrame
    complete: list[str] = field(default_factory=list)
    unverified: list[str] = field(default_factory=list)
    incomplete: list[tuple[str, str]] = field(default_factory=list)
    bad_metric_lines: list[tuple[str, int]] = field(default_factory=list)
    entities: pd.DataFrame = field(default_factory=pd.DataFrame)
    ideal: list[str] = field(default_factory=list)  # finished, ideal code lengths only (capacity)
    estimate: list[str] = field(default_factory=list)


def flatten(d: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """Flattens nested dicts into dotted keys; lists become JSON strings (one table cell).

    Args:
      d: a nested mapping such as a loaded ``summary.json``.
      prefix: prepended to every key (with a dot).

    Returns:
      A flat dict ``{"code.bits": ..., "config.model.d_model": ...}``.
    """
    out: dict[str, Any] = {}
    for key, value in d.items():
        name = f"{prefix}.{key}" if prefix else str(key)
        if isinstance(value, dict):
            if value:
                out.update(flatten(value, name))
            else:
                out[name] = None
        elif isinstance(value, (list, tuple)):
            out[name] = json.dumps(value)
        else:
            out[name] = value
    return out


def _present(v: Any) -> bool:
    return v is not None and not (isinstance(v, float) and math.isnan(v))


def compute_columns(row: dict[str, Any]) -> dict[str, float]:
    """Training compute of a job, counted from its model shape (:mod:`mdlbench.analysis.flops`).

    The shape is the job's ``model.*`` fields, completed from its recorded config
    (``config.model.*``) where the summary lacks one; the window is ``config.code.seq_len`` and the
    updates per window ``config.optim.updates_per_batch``. Every byte is trained on once, after it
    is coded (estimate jobs train on the same bytes in the same order).

    Args:
      row: one flat row of the runs table (dotted keys, as :func:`flatten` makes them).

    Returns:
      ``compute.training_flops_per_byte`` and ``compute.training_flops`` (over ``data.bytes``),
      or {} when the row lacks the shape, the window or the byte count.
    """
    model = {k.removeprefix("config.model."): v for k, v in row.items()
             if k.startswith("config.model.") and _present(v)}
    model.update({k.removeprefix("model."): v for k, v in row.items() if k.startswith("model.") and _present(v)})
    n_params, n_bytes = row.get("model.n_params"), row.get("data.bytes")
    seq_len, updates = row.get("config.code.seq_len"), row.get("config.optim.updates_per_batch", 1)
    if not all(_present(v) for v in (n_params, n_bytes, seq_len, model.get("d_model"))):
        return {}
    if model.get("family", "transformer") == "transformer" and not _present(model.get("n_layers")):
        return {}
    try:
        per_byte = flops.training_flops(model, int(n_params), 1, int(seq_len),
                                        int(updates) if _present(updates) else 1)
    except (KeyError, TypeError, ValueError):
        return {}
    return {"compute.training_flops_per_byte": per_byte, "compute.training_flops": per_byte * int(n_bytes)}


def estimate_columns(row: dict[str, Any]) -> dict[str, Any]:
    """The training-loss estimate of a job in the ``estimate.*`` columns, whatever its mode.

    A fast-mode job (``code.name=estimate``) reports its estimate as ``code.ideal_*`` (it has no
    other code length); a real job records it under ``estimate.*`` beside its bitstream. Both
    end up in the same columns, and ``estimate.total_bits`` adds the program bits to either.
    """
    out: dict[str, Any] = {}
    if row.get("code.name") == "estimate":
        for src, dst in (("code.ideal_bits", "estimate.bits"), ("code.ideal_bits_per_byte", "estimate.bits_per_byte"),
                         ("code.final_chunk_ideal_bits_per_byte", "estimate.final_chunk_bits_per_byte"),
                         ("code.kind", "estimate.kind")):
            if _present(row.get(src)) and not _present(row.get(dst)):
                out[dst] = row[src]
    bits, program = out.get("estimate.bits", row.get("estimate.bits")), row.get("code.program_bits")
    if _present(bits) and _present(program):
        out["estimate.total_bits"] = float(program) + float(bits)
    return out


def find_jobs(root: Path) -> list[Path]:
    """Job directories under ``root`` (``root`` itself may be one), sorted."""
    jobs = []
    for dirpath, dirnames, _ in os.walk(root):
        here = Path(dirpath)
        if any((here / marker).is_file() for marker in _JOB_MARKERS):
            jobs.append(here)
            dirnames[:] = []  # do not descend into a job (wandb/, .hydra/, checkpoints)
        else:
            dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
    return sorted(jobs)


def _read_metrics(path: Path) -> tuple[list[dict[str, Any]], int]:
    """Rows of a ``metrics.jsonl`` (last record wins per step) and the count of bad lines.

    A killed job can leave a truncated last line, and a resumed job may log a step again; both
    must not break the table.
    """
    rows: dict[Any, dict[str, Any]] = {}
    bad = 0
    with open(path, encoding="utf-8") as f:
        for i, line in enumerate(f):
            line = line.strip()
            if not line:
                continue
            try:
                rec = json.loads(line)
            except json.JSONDecodeError:
                bad += 1
                continue
            if not isinstance(rec, dict):
                bad += 1
                continue
            rows[rec.get("step", f"line{i}")] = rec
    return list(rows.values()), bad


def _read_summary(path: Path) -> dict[str, Any] | str:
    """The parsed summary, or a reason why it is unusable."""
    try:
        with open(path, encoding="utf-8") as f:
            summary = json.load(f)
    except json.JSONDecodeError as e:
        return f"summary.json is not valid JSON ({e.msg})"
    if not isinstance(summary, dict):
        return "summary.json is not a JSON object"
    return summary


def _arrow_safe(df: pd.DataFrame) -> pd.DataFrame:
    """Makes object columns holding several value types (e.g. int and str) plain strings.

    Parquet needs one type per column; config values can legitimately differ in type between
    jobs of a sweep (``data.synthetic`` null in one, a mapping in another).
    """
    df = df.copy()
    for col in df.columns[df.dtypes == object]:
        kinds = {type(v) for v in df[col] if v is not None and not (isinstance(v, float) and math.isnan(v))}
        if len(kinds) > 1:
            df[col] = df[col].map(lambda v: None if v is None or (isinstance(v, float) and math.isnan(v)) else str(v))
    return df


def collect(sweep_dir: str | os.PathLike) -> Sweep:
    """Reads every job of a sweep into a runs table and a long-form curves table.

    Args:
      sweep_dir: the sweep directory (``results/runs/<experiment>``) or a single job directory.

    Returns:
      A :class:`Sweep`; ``runs`` is sorted by data set, parameter count and seed.

    Raises:
      AnalysisError: the directory does not exist, holds no job, or holds no finished job.
    """
    root = Path(sweep_dir)
    if not root.is_dir():
        raise AnalysisError(f"sweep directory not found: {root}")
    jobs = find_jobs(root)
    if not jobs:
        raise AnalysisError(
            f"no runs under {root} (no directory holds summary.json, metrics.jsonl or .hydra/config.yaml)")

    rows, curve_frames, entity_frames = [], [], []
    complete, unverified, incomplete, bad_lines, ideal, estimate = [], [], [], [], [], []
    for job in jobs:
        rel = job.relative_to(root).as_posix() if job != root else "."
        summary_path = job / "summary.json"
        summary = _read_summary(summary_path) if summary_path.is_file() else "no summary.json"
        if isinstance(summary, str):
            metrics = job / "metrics.jsonl"
            n_steps = len(_read_metrics(metrics)[0]) if metrics.is_file() else 0
            incomplete.append((rel, f"{summary}; {n_steps} steps logged"))
            continue
        row = flatten(summary)
        row.update(estimate_columns(row))
        row.update(compute_columns(row))
        verified = (summary.get("verify") or {}).get("ok") is True
        row["job.dir"] = rel
        if summary.get("kind") == "capacity":  # ideal bits only: no bitstream to decode
            row["job.status"] = "ideal"
            ideal.append(rel)
        elif (summary.get("code") or {}).get("name") == "estimate":  # the fast mode: no bitstream at all
            row["job.status"] = "estimate"
            estimate.append(rel)
        else:
            row["job.status"] = "complete" if verified else "unverified"
            (complete if verified else unverified).append(rel)
        rows.append(row)
        if (job / "entities.csv").is_file():
            frame = pd.read_csv(job / "entities.csv")
            for pos, key in enumerate(CURVE_KEYS):
                frame.insert(pos, key, row.get(key))
            entity_frames.append(frame)

        metrics = job / "metrics.jsonl"
        if metrics.is_file():
            records, bad = _read_metrics(metrics)
            if bad:
                bad_lines.append((rel, bad))
            if records:
                frame = pd.DataFrame.from_records(records)
                frame = frame.drop(columns=[k for k in CURVE_KEYS if k in frame])
                for pos, key in enumerate(CURVE_KEYS):
                    frame.insert(pos, key, row.get(key))
                if "bytes_seen" in frame and "step_bytes" in frame:
                    # The chunk of step t is coded by a model trained on the bytes before it.
                    frame["data_bytes_trained"] = frame["bytes_seen"] - frame["step_bytes"]
                    if "compute.training_flops_per_byte" in row:
                        frame["compute/training_flops"] = row["compute.training_flops_per_byte"] * \
                            frame["data_bytes_trained"]
                    if "estimate/ideal_bits" in frame:  # the fast mode logs bits per step, not per byte
                        frame["estimate/ideal_bits_per_byte"] = frame["estimate/ideal_bits"] / frame["step_bytes"]
                curve_frames.append(frame)

    if not rows:
        raise AnalysisError(f"no finished runs under {root}: all {len(incomplete)} job(s) lack a usable summary.json")

    runs = pd.DataFrame.from_records(rows)
    first = ["job.dir", "job.status", "experiment", "data.name", "model.name", "model.n_params", "seed"]
    runs = runs[[c for c in first if c in runs] + [c for c in runs if c not in first]]
    sort_by = [c for c in ("data.name", "model.n_params", "model.name", "seed") if c in runs]
    runs = runs.sort_values(sort_by, kind="stable").reset_index(drop=True)
    if curve_frames:
        curves = pd.concat(curve_frames, ignore_index=True)
        curves = curves.sort_values([c for c in ("data.name", "model.n_params", "model.name", "seed", "step")
                                     if c in curves], kind="stable").reset_index(drop=True)
    else:
        curves = pd.DataFrame(columns=list(CURVE_KEYS))
    entities = pd.concat(entity_frames, ignore_index=True) if entity_frames else pd.DataFrame()
    return Sweep(root=root, runs=runs, curves=curves, complete=complete, unverified=unverified,
                 incomplete=incomplete, bad_metric_lines=bad_lines, entities=entities, ideal=ideal,
                 estimate=estimate)


def write_tables(sweep: Sweep, out_dir: str | os.PathLike, name: str) -> list[Path]:
    """Writes ``<name>.csv/.parquet`` and ``<name>_curves.csv/.parquet`` into ``out_dir``, and
    ``<name>_entities.csv/.parquet`` when the sweep has an entities table.

    Each file gets its provenance sidecar (:mod:`mdlbench.provenance`); the runs table's keeps one
    entry per row (``job.dir``) with the config and program bits its run recorded.

    Returns:
      The written paths (CSV then Parquet of each table, in that order).
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    written = []
    tables = [(name, sweep.runs), (f"{name}_curves", sweep.curves)]
    if not sweep.entities.empty:
        tables.append((f"{name}_entities", sweep.entities))
    for stem, table in tables:
        csv_path, parquet_path = out / f"{stem}.csv", out / f"{stem}.parquet"
        table.to_csv(csv_path, index=False)
        _arrow_safe(table).to_parquet(parquet_path, index=False)
        if table is sweep.runs:
            rows = _row_results(sweep)
            for path in (csv_path, parquet_path):
                provenance.write(path, results=rows, row_key=["job.dir"] if path == csv_path else None)
        else:
            for path in (csv_path, parquet_path):
                provenance.write(path)
        written += [csv_path, parquet_path]
    return written


def _row_results(sweep: Sweep) -> list[dict[str, Any]]:
    """One provenance entry per row of the runs table, from each job's own ``summary.json``."""
    from mdlbench import config as config_lib

    out = []
    for rel in sweep.runs["job.dir"] if "job.dir" in sweep.runs else []:
        job = sweep.root / rel
        summary = _read_summary(job / "summary.json") if (job / "summary.json").is_file() else {}
        summary = summary if isinstance(summary, dict) else {}
        config, code = summary.get("config"), summary.get("code") or {}
        if summary.get("kind") == "capacity" or not isinstance(config, dict) or "program_bits" not in code:
            # Ideal code lengths (capacity), or a summary without a program: no coded result to recheck.
            out.append(provenance.result([rel], config_sha256=summary.get("config_hash")))
            continue
        config = {**config, "run_dir": ""}  # where it ran is not what it coded
        prog = summary.get("program") if isinstance(summary.get("program"), dict) else {}
        try:
            chash = config_lib.config_hash(config_lib.from_dict(config))
        except (config_lib.ConfigError, KeyError, TypeError, ValueError):
            chash = None  # today's code refuses the old config: the provenance check reports it
        out.append(provenance.result([rel], kind=provenance.PREQUENTIAL, config=config, config_sha256=chash,
                                     program_bits=code["program_bits"], source_sha256=prog.get("source_sha256")))
    return out


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Arguments of ``mdlbench collect``."""
    parser.add_argument("sweep_dir", metavar="SWEEP_DIR", help="sweep directory, e.g. results/runs/scaling_smoke")
    parser.add_argument("--out", default="results/tables", help="output directory (default: %(default)s)")
    parser.add_argument("--name", default=None, help="table name (default: the sweep directory's name)")


def command(args: argparse.Namespace) -> int:
    """Runs ``mdlbench collect``; prints the job counts and the written paths."""
    sweep = collect(args.sweep_dir)
    name = args.name or Path(args.sweep_dir).resolve().name
    n_jobs = len(sweep.complete) + len(sweep.unverified) + len(sweep.incomplete) + len(sweep.ideal) + \
        len(sweep.estimate)
    ideal = f", {len(sweep.ideal)} complete with ideal code lengths (nothing to decode)" if sweep.ideal else ""
    if sweep.estimate:
        ideal += f", {len(sweep.estimate)} estimate(s) (training loss, no bitstream: nothing to decode)"
    print(f"{sweep.root}: {n_jobs} jobs: {len(sweep.complete)} complete and verified{ideal}, "
          f"{len(sweep.unverified)} complete but unverified, {len(sweep.incomplete)} incomplete")
    for rel in sweep.unverified:
        print(f"  unverified: {rel}")
    for rel, why in sweep.incomplete:
        print(f"  incomplete: {rel} ({why})")
    for rel, bad in sweep.bad_metric_lines:
        print(f"  skipped {bad} unreadable line(s) in {rel}/metrics.jsonl")
    tables = [sweep.runs, sweep.runs, sweep.curves, sweep.curves]  # the order write_tables writes
    if not sweep.entities.empty:
        tables += [sweep.entities, sweep.entities]
    for path, table in zip(write_tables(sweep, args.out, name), tables):
        print(f"wrote {path} ({len(table)} rows x {table.shape[1]} columns)")
    return 0
