"""``mdlbench bench``: the online neural coder against the classic compressors, in one job.

One command composes the config (``conf/``, Hydra overrides on the command line), then on the
same machine and the same bytes:

1. codes the data prequentially and replay-decodes it in a separate process (``train.run``:
   the run directory is named from the config, so a re-run resumes or finds it done);
2. times *plain training*: the same optimiser updates on the same windows, without coding;
3. runs the six classic compressors (each verified by a round trip);

and upserts one row per method into ``results/tables/bench.csv`` (key: method, device, data, bytes):

* P1 ``bits_per_byte``: actual bitstream bits / bytes (the program's bits are in
  ``total_bits_per_byte``);
* P2 ``coded_over_ideal``: bitstream bits / sum of -log2 p;
* P3 ``encode_over_train``: encode wall time / plain-training wall time;
* P4 ``decode_over_encode``: replay-decode wall time / encode wall time;
* throughputs in bytes/s and the computed parameter count;
* ``config``: the neural row's ``config_sha256``; ``record``: the directory holding its run record.

The run record of the neural coder goes to ``results/bench/<data>/<device>/`` (``--records``):
``summary.json`` (the run's own summary) and ``train_only.json`` (the plain-training time, keyed by
the config's sha256; the same layout as the cache in the run directory). Every written file gets
its provenance sidecar (:mod:`mdlbench.provenance`); the table's sidecar keeps one entry per row
(command, commit, date of the write that made the row; for the neural row also the recorded config,
``config_sha256``, ``program_bits`` and ``source_sha256``), so rows upserted by different runs keep
their own provenance. ``--baselines-only`` runs just the classic compressors on the composed
config's data (no JAX, about half a minute on dickens).

With ``code.name=estimate`` (the fast mode) the command measures the fast mode's speed instead: it
runs the training-loss estimate, then times plain training of the same model on the same windows
in the same process (both times include their compilation), and upserts one row into ``results/tables/estimate_speed.csv`` (the estimate is
an ideal length, never a verified code, so it stays out of ``bench.csv``): ``speed_over_plain`` =
plain-training time / estimate time. Plain training runs the fast mode's own compiled step
(:func:`plain_training_s`), so since 2026-12-06 that ratio measures the fast mode's loop around it
(loss read-back, metrics, checkpoints); the rows before that date timed a step that did not carry
the model state.
"""

from __future__ import annotations

import csv
import io
import json
import re
import time
from pathlib import Path
from typing import Any

from mdlbench import config as config_lib
from mdlbench import provenance
from mdlbench.coding import container
from mdlbench import jobs
from mdlbench.config import Config
from mdlbench.errors import MdlbenchError

COLUMNS = ["method", "device", "data", "bytes", "n_params", "bits", "bits_per_byte", "total_bits_per_byte",
           "ideal_bits_per_byte", "coded_over_ideal", "encode_s", "decode_s", "train_only_s",
           "encode_over_train", "decode_over_encode", "encode_bytes_per_s", "decode_bytes_per_s",
           "verified", "budget_s", "within_budget", "config", "record"]
KEY = ("method", "device", "data", "bytes")
TABLE = Path("results/tables/bench.csv")
ESTIMATE_COLUMNS = ["method", "device", "data", "bytes", "n_params", "steps", "estimate_ideal_bits_per_byte",
                    "estimate_s", "train_only_s", "speed_over_plain", "estimate_bytes_per_s",
                    "train_only_bytes_per_s", "config", "run_dir"]
ESTIMATE_TABLE = Path("results/tables/estimate_speed.csv")


def device_label(cfg: Config) -> str:
    """Where the model ran, e.g. ``cpu x2 threads`` or ``gpu NVIDIA H200``."""
    import jax

    from mdlbench.coding import env

    dev = jax.devices()[0]
    if dev.platform == "cpu":
        return f"cpu x{env.threads()} threads"
    return f"{dev.platform} {dev.device_kind}"


def plain_training_s(cfg: Config, data, with_compile: bool = False) -> float:
    """Wall time of the same optimiser updates on the same windows with no coding pass
    (compilation excluded, as it is from the encode time; included with ``with_compile``, as it is
    in the fast mode's loop time). The carried state is advanced as the coder advances it (the
    training forward's state after each window), so a model whose state is updated in place (the
    n-gram tables) is timed as the coder runs it: with a state that was never advanced, each step
    would write a fresh copy of every table (XLA cannot update in place what it was not handed),
    which at 2**18 rows made plain training slower than coding (P3 0.58-0.70 on the files of
    2026-12-06). Its losses are not reported."""
    from mdlbench.codes import prequential

    layout = prequential.Layout(len(data), cfg.code.batch_size, cfg.code.seq_len)
    prog = prequential.Program(cfg, layout, prequential.Host(layout))
    if not with_compile:
        # Compiled outside the clock on a carry of its own, dropped before the timed one is made:
        # two carries at once held the n-gram tables twice (11e6 KiB for the 2**19-row bench).
        prog.estimate_step(prog.initial(), layout.window(data, 0), layout.valid_window(0))
    carry = prog.initial()
    t0 = time.perf_counter()
    for s in range(layout.steps):
        carry, _ = prog.estimate_step(carry, layout.window(data, s), layout.valid_window(s))
    return time.perf_counter() - t0


def _fmt(v: Any) -> str:
    if v is None:
        return ""
    if isinstance(v, float):
        return f"{v:.6g}"
    return str(v)


def row_key(row: dict[str, Any]) -> tuple[str, ...]:
    """A row's key as written in the table: (method, device, data, bytes)."""
    return tuple(_fmt(row.get(k)) for k in KEY)


def upsert(table: Path, rows: list[dict[str, Any]], results: list[dict[str, Any]] | None = None,
           columns: list[str] = COLUMNS) -> None:
    """Replaces the rows with the same (method, device, data, bytes) and writes the table atomically.

    The table's provenance sidecar keeps the entries of the rows that stay and adds ``results``
    (one :func:`mdlbench.provenance.result` per new row; rows without one get a plain entry naming
    this command), so every row names the command and commit that made it.
    """
    old: list[dict[str, str]] = []
    if table.exists():
        with open(table, newline="") as f:
            old = list(csv.DictReader(f))
    keys = {row_key(r) for r in rows}
    kept = [r for r in old if tuple(r.get(k, "") for k in KEY) not in keys]
    buf = io.StringIO()
    w = csv.DictWriter(buf, columns, extrasaction="ignore", lineterminator="\n")
    w.writeheader()
    for r in kept:
        w.writerow(r)
    for r in rows:
        w.writerow({k: _fmt(r.get(k)) for k in columns})
    table.parent.mkdir(parents=True, exist_ok=True)
    container.atomic_write(table, buf.getvalue().encode())
    new = {tuple(e["key"]): e for e in results or []}
    entries = provenance.kept_results(table, [tuple(r.get(k, "") for k in KEY) for r in kept])
    entries += [new.get(row_key(r)) or provenance.result(row_key(r)) for r in rows]
    provenance.write(table, results=entries, row_key=list(KEY))


def device_slug(device: str) -> str:
    """A directory name for a device label: ``cpu x2 threads`` -> ``cpu-x2-threads``."""
    return re.sub(r"[^a-z0-9]+", "-", device.lower()).strip("-") or "device"


def record_dir(records: Path, cfg: Config, summary: dict[str, Any], device: str) -> Path:
    """``<records>/<data>/<device>/``; a run with the in-program coder goes beside the host
    coder's (``<device>-device-coder``), so an A/B of the two keeps both records."""
    slug = device_slug(device) + ("-device-coder" if cfg.code.coder == "device" else "")
    return records / summary["data"]["name"] / slug


def train_only_record(cfg: Config, train_s: float, device: str, n_bytes: int) -> dict[str, Any]:
    """The one layout of ``train_only.json`` (run-directory cache and bench record alike)."""
    return {"config_sha256": config_lib.config_hash(cfg), "train_only_s": train_s, "device": device,
            "data": cfg.data.name, "bytes": n_bytes}


def _recorded_program(summary: dict[str, Any], run_dir: Path) -> dict[str, Any]:
    """The run's ``program`` entry (source sha256, bits): from its summary, else its container header."""
    if isinstance(summary.get("program"), dict):
        return summary["program"]
    for path in sorted(run_dir.glob("*.mdl")):
        try:
            header, _ = container.read(path)
        except (MdlbenchError, OSError):  # unreadable: fall back to the summary's bits
            continue
        if isinstance(header.get("program"), dict):
            return header["program"]
    return {"bits": summary["code"].get("program_bits")}


def neural_result(cfg: Config, summary: dict[str, Any], key: tuple[str, ...], record: Path) -> dict[str, Any]:
    """The provenance entry of the neural row: the config and program as the run recorded them."""
    prog = _recorded_program(summary, Path(cfg.run_dir))
    config = dict(summary.get("config") or config_lib.to_dict(cfg))
    config["run_dir"] = ""  # where it ran is not part of what it coded (config_hash drops it too)
    return provenance.result(key, kind=provenance.PREQUENTIAL, config=config,
                             config_sha256=config_lib.config_hash(config_lib.from_dict(config)),
                             program_bits=summary["code"].get("program_bits", prog.get("bits")),
                             source_sha256=prog.get("source_sha256"), record=record.as_posix())


def write_record(records: Path, cfg: Config, summary: dict[str, Any], train: dict[str, Any] | None,
                 device: str, result: dict[str, Any]) -> Path:
    """Writes ``<records>/<data>/<device>/{summary.json,train_only.json}``, each with provenance."""
    out = record_dir(records, cfg, summary, device)
    out.mkdir(parents=True, exist_ok=True)
    files = [("summary.json", summary)] + ([("train_only.json", train)] if train else [])
    for name, doc in files:
        container.atomic_write(out / name, (json.dumps(doc, indent=2) + "\n").encode())
        provenance.write(out / name, results=[{**result, "key": None}])
    stale = out / "train_only.json"
    if not train and stale.exists():  # a timing of another config must not sit beside this summary
        stale.unlink()
        provenance.sidecar(stale).unlink(missing_ok=True)
    return out


def neural_row(cfg: Config, summary: dict[str, Any], train_s: float | None, device: str,
               budget_s: float) -> dict[str, Any]:
    c, t, n = summary["code"], summary["time"], summary["data"]["bytes"]
    label = method_label(cfg)
    if cfg.code.coder == "device":  # the coder changes the bits and the times: its own row
        label += f" device-rANS lanes{cfg.code.coder_lanes or cfg.code.batch_size}"
    return {
        "method": label, "device": device, "data": summary["data"]["name"], "bytes": n,
        "n_params": summary["model"]["n_params"], "bits": c["bits"], "bits_per_byte": c["bits_per_byte"],
        "total_bits_per_byte": c["total_bits"] / n, "ideal_bits_per_byte": c["ideal_bits_per_byte"],
        "coded_over_ideal": c["coded_over_ideal"], "encode_s": t["encode_s"], "decode_s": t.get("decode_s"),
        "train_only_s": train_s, "encode_over_train": t["encode_s"] / train_s if train_s else None,
        "decode_over_encode": t.get("decode_over_encode"), "encode_bytes_per_s": n / t["encode_s"],
        "decode_bytes_per_s": n / t["decode_s"] if t.get("decode_s") else None,
        "verified": summary["verify"]["ok"], "budget_s": budget_s, "within_budget": t["encode_s"] <= budget_s,
        "config": config_lib.config_hash(cfg),
    }


def classic_rows(data, name: str, device: str) -> list[dict[str, Any]]:
    from mdlbench import baselines

    n = len(data)
    rows = []
    for method, r in baselines.measure_all(bytes(data)).items():
        rows.append({
            "method": f"{method} ({r['settings']})" if r.get("settings") else method, "device": "cpu",
            "data": name, "bytes": n, "n_params": 0, "bits": 8 * r["bytes"], "bits_per_byte": r["bits_per_byte"],
            "total_bits_per_byte": r["bits_per_byte"], "encode_s": r["seconds"], "decode_s": r["decompress_seconds"],
            "decode_over_encode": r["decompress_seconds"] / r["seconds"] if r["seconds"] else None,
            "encode_bytes_per_s": n / r["seconds"] if r["seconds"] else None,
            "decode_bytes_per_s": n / r["decompress_seconds"] if r["decompress_seconds"] else None,
            "verified": r["verified"],
        })
    return rows


def add_arguments(p) -> None:
    p.add_argument("overrides", nargs="*", metavar="KEY=VALUE",
                   help="Hydra overrides, e.g. experiment=bench_dickens (the default) model.d_model=384")
    p.add_argument("--table", type=Path, default=None,
                   help="CSV to upsert rows into (default results/tables/bench.csv; with code.name=estimate "
                        "results/tables/estimate_speed.csv)")
    p.add_argument("--budget-s", type=float, default=3600.0, help="encode wall-time budget for P1 (default 1 h)")
    p.add_argument("--no-baselines", action="store_true", help="skip the classic compressors")
    p.add_argument("--no-train-only", action="store_true", help="skip the plain-training timing (P3)")
    p.add_argument("--baselines-only", action="store_true",
                   help="run only the classic compressors on the config's data (no neural coder, no JAX)")
    p.add_argument("--records", type=Path, default=Path("results/bench"),
                   help="where the neural run's summary.json and train_only.json go, under <data>/<device>/")


def command(args) -> int:
    overrides = list(args.overrides)
    if not any(o.split("=", 1)[0].lstrip("+") == "experiment" for o in overrides):
        overrides.insert(0, "experiment=bench_dickens")
    cfg = jobs.byte_code(jobs.compose(overrides), "mdlbench bench")
    if args.baselines_only:
        return _baselines_only(cfg, args)
    if cfg.code.name == "estimate":
        return _estimate_speed(cfg, args)
    if not cfg.code.verify:
        raise MdlbenchError("the benchmark reports verified code lengths only: drop code.verify=false")
    from mdlbench import data as data_lib
    from mdlbench import train

    train.pin_threads(cfg.threads)  # before JAX is imported
    summary = train.run(cfg)
    run_dir = Path(cfg.run_dir)
    device = device_label(cfg)
    dataset = data_lib.load(cfg.data)
    train_s, train = None, None
    if not args.no_train_only:
        cache = run_dir / "train_only.json"  # a re-run reuses the timing of the same config on the same device
        old = json.loads(cache.read_text()) if cache.exists() else {}
        if old.get("config_sha256") == config_lib.config_hash(cfg) and old.get("device") == device:
            train = {**train_only_record(cfg, old["train_only_s"], device, len(dataset.data)), **old}
        else:
            print("timing plain training (same updates, no coding)...", flush=True)
            train = train_only_record(cfg, plain_training_s(cfg, dataset.data), device, len(dataset.data))
            container.atomic_write(cache, (json.dumps(train, indent=2) + "\n").encode())
        train_s = train["train_only_s"]
    row = neural_row(cfg, summary, train_s, device, args.budget_s)
    record = record_dir(args.records, cfg, summary, device)
    row["record"] = record.as_posix()
    result = neural_result(cfg, summary, row_key(row), record)
    write_record(args.records, cfg, summary, train, device, result)
    rows = [row]
    if not args.no_baselines:
        print("running the classic compressors...", flush=True)
        rows += classic_rows(dataset.data, summary["data"]["name"], device)
    table = args.table or TABLE
    upsert(table, rows, [result])
    width = max(len(r["method"]) for r in rows)
    for r in sorted(rows, key=lambda r: r["bits_per_byte"]):
        extra = ""
        if r.get("coded_over_ideal"):
            extra = (f"  P2 {r['coded_over_ideal']:.6f}  P3 {_fmt(r['encode_over_train'])}  "
                     f"P4 {_fmt(r['decode_over_encode'])}  {r['encode_bytes_per_s']:.0f} B/s  "
                     f"{r['n_params']} params  within {args.budget_s:.0f} s: {r['within_budget']}")
        print(f"{r['method']:<{width}}  {r['bits_per_byte']:.4f} bits/byte  verified={r['verified']}{extra}")
    print(f"wrote {table}  (run record: {record})")
    return 0 if all(r["verified"] for r in rows) else 1


def _record_term(k: int, j: int) -> str:
    """A record context's byte ``k * stride + j`` back in a label: ``s``, ``2s-1``, ``1``."""
    if not k:
        return str(j)
    return (f"{k}s" if k > 1 else "s") + (f"{j:+d}" if j else "")


def method_label(cfg: Config) -> str:
    """The model and coding shape of a row, e.g. ``prequential transformer d64x2 B16xT32 u1`` or
    ``prequential lstm d256x1 + ngram123456pos + match12 B32xT128 u2`` (counts per position)."""
    m = cfg.model
    label = f"{cfg.code.name} {m.family} d{m.d_model}x{m.n_layers}"
    if m.ngram_orders:
        label += f" + ngram{''.join(str(k) for k in sorted(m.ngram_orders))}"
        label += "pos" if m.ngram_update == "position" else ""
        label += f" + match{m.match_min}" if m.match_min else ""
        label += "long" if m.match_min and m.match_long_buckets else ""
        label += f" + word{m.ngram_word}" if m.ngram_word else ""
        label += "bi" if m.ngram_word_bigram else ""
        label += "tri" if m.ngram_word_trigram else ""
        label += "skip" if m.ngram_word_skip else ""
        label += f" + sparse{'_'.join('.'.join(str(d) for d in sorted(p)) for p in m.ngram_sparse)}" if m.ngram_sparse else ""
        label += (f" + record{m.ngram_record}:" + "_".join(".".join(_record_term(k, j) for k, j in c)
                                                            for c in m.ngram_record_contexts) if m.ngram_record else "")
        label += f" + column{m.ngram_column // 2}-{m.ngram_column}" if m.ngram_column else ""
        label += "text" if m.ngram_column and m.ngram_column_text else ""
        label += f" + online{m.ngram_online_lr:g}{m.ngram_online_sets}" if m.ngram_online_lr else ""
        label += f" + apm{m.ngram_apm_lr:g}" if m.ngram_apm_lr else ""
        label += f" + bits{m.ngram_bit_lr:g}" if m.ngram_bit_lr else ""
        label += f" decay{m.ngram_bit_decay:g}" if m.ngram_bit_decay else ""
        label += f" backoff{m.ngram_alpha:g}" if m.ngram_estimator == "backoff" else ""
        label += f" floor{m.ngram_logp_floor:g}" if m.ngram_logp_floor else ""
        label += " owngate" if m.ngram_gate == "own" else ""
        label += f" rows2^{m.ngram_log2_rows}" if m.ngram_log2_rows != 16 else ""
        label += f" wordrows2^{m.ngram_log2_rows_words}" if m.ngram_log2_rows_words else ""
        label += "".join(f" o{k}rows2^{b}" for k, b in m.ngram_log2_rows_orders)
        label += " u16counts" if m.ngram_counts == "uint16" else ""
    if m.context:
        label += f" mem{m.context}"
    return label + f" B{cfg.code.batch_size}xT{cfg.code.seq_len} u{cfg.optim.updates_per_batch}"


def estimate_row(cfg: Config, summary: dict[str, Any], train_s: float, device: str) -> dict[str, Any]:
    """One row of ``estimate_speed.csv``: the fast mode's time against plain training's."""
    n, est_s = summary["data"]["bytes"], summary["time"]["train_s"]
    return {
        "method": method_label(cfg), "device": device, "data": summary["data"]["name"], "bytes": n,
        "n_params": summary["model"]["n_params"], "steps": summary["code"]["steps"],
        "estimate_ideal_bits_per_byte": summary["code"]["ideal_bits_per_byte"], "estimate_s": est_s,
        "train_only_s": train_s, "speed_over_plain": train_s / est_s if est_s else None,
        "estimate_bytes_per_s": n / est_s if est_s else None, "train_only_bytes_per_s": n / train_s if train_s else None,
        "config": config_lib.config_hash(cfg), "run_dir": Path(cfg.run_dir).as_posix(),
    }


def _estimate_speed(cfg: Config, args) -> int:
    """``code.name=estimate``: the fast mode's run, then plain training timed in the same process."""
    from mdlbench import data as data_lib
    from mdlbench import train

    train.pin_threads(cfg.threads)  # before JAX is imported
    summary = train.run(cfg)
    dataset = data_lib.load(cfg.data)
    print("timing plain training (same updates, no estimate)...", flush=True)
    train_s = plain_training_s(cfg, dataset.data, with_compile=True)  # the estimate's time includes its compile
    row = estimate_row(cfg, summary, train_s, device_label(cfg))
    table = args.table or ESTIMATE_TABLE
    upsert(table, [row], columns=ESTIMATE_COLUMNS)
    print(f"{row['method']} on {row['data']}: estimate {row['estimate_s']:.1f} s, plain training "
          f"{row['train_only_s']:.1f} s: the fast mode runs at {row['speed_over_plain']:.3f}x plain training's speed"
          f"  (~{row['estimate_ideal_bits_per_byte']:.4f} bits/byte, an estimate: no bitstream)")
    print(f"wrote {table}")
    return 0


def _baselines_only(cfg: Config, args) -> int:
    """``--baselines-only``: the classic compressors' rows for the config's data, nothing else."""
    from mdlbench import data as data_lib

    dataset = data_lib.load(cfg.data)
    print(f"running the classic compressors on {dataset.name} ({len(dataset.data)} bytes)...", flush=True)
    rows = classic_rows(dataset.data, dataset.name, "cpu")
    table = args.table or TABLE
    upsert(table, rows)
    width = max(len(r["method"]) for r in rows)
    for r in sorted(rows, key=lambda r: r["bits_per_byte"]):
        print(f"{r['method']:<{width}}  {r['bits_per_byte']:.4f} bits/byte  verified={r['verified']}")
    print(f"wrote {table}")
    return 0 if all(r["verified"] for r in rows) else 1
