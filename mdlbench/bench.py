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
* throughputs in bytes/s and the computed parameter count.
"""

from __future__ import annotations

import csv
import io
import json
import time
from pathlib import Path
from typing import Any

import numpy as np

from mdlbench import config as config_lib
from mdlbench.coding import container
from mdlbench.config import Config
from mdlbench.errors import MdlbenchError

COLUMNS = ["method", "device", "data", "bytes", "n_params", "bits", "bits_per_byte", "total_bits_per_byte",
           "ideal_bits_per_byte", "coded_over_ideal", "encode_s", "decode_s", "train_only_s",
           "encode_over_train", "decode_over_encode", "encode_bytes_per_s", "decode_bytes_per_s",
           "verified", "budget_s", "within_budget", "config"]
KEY = ("method", "device", "data", "bytes")


def compose(overrides: list[str]) -> Config:
    """The typed config from ``conf/`` and command-line overrides (Hydra stays at this boundary)."""
    from hydra import compose as hydra_compose, initialize_config_dir
    from hydra.errors import HydraException
    from omegaconf import OmegaConf
    from omegaconf.errors import OmegaConfBaseException

    from mdlbench.cli import CONF_DIR

    try:
        with initialize_config_dir(str(CONF_DIR), version_base="1.3"):
            d = OmegaConf.to_container(hydra_compose("config", overrides=overrides), resolve=True)
    except (HydraException, OmegaConfBaseException) as e:
        raise config_lib.ConfigError(f"cannot compose the config: {str(e).splitlines()[0]}") from None
    return config_lib.from_dict(d)


def device_label(cfg: Config) -> str:
    """Where the model ran, e.g. ``cpu x2 threads`` or ``gpu NVIDIA H200``."""
    import jax

    from mdlbench.coding import env

    dev = jax.devices()[0]
    if dev.platform == "cpu":
        return f"cpu x{env.threads()} threads"
    return f"{dev.platform} {dev.device_kind}"


def plain_training_s(cfg: Config, data) -> float:
    """Wall time of the same optimiser updates on the same windows with no coding pass
    (compilation excluded, as it is from the encode time). The carried state is not advanced,
    so its losses are not the coder's and are not reported."""
    from mdlbench.codes import prequential

    layout = prequential.Layout(len(data), cfg.code.batch_size, cfg.code.seq_len)
    prog = prequential.Program(cfg, layout, prequential.Host(layout))
    carry = prog.initial()
    x0 = layout.window(data, 0)
    prog.train_only(prog.initial(), x0, layout.valid_window(0))  # compile outside the clock
    t0 = time.perf_counter()
    for s in range(layout.steps):
        carry, _ = prog.train_only(carry, layout.window(data, s), layout.valid_window(s))
    return time.perf_counter() - t0


def _fmt(v: Any) -> str:
    if v is None:
        return ""
    if isinstance(v, float):
        return f"{v:.6g}"
    return str(v)


def upsert(table: Path, rows: list[dict[str, Any]]) -> None:
    """Replaces the rows with the same (method, device, data, bytes) and writes the table atomically."""
    old: list[dict[str, str]] = []
    if table.exists():
        with open(table, newline="") as f:
            old = list(csv.DictReader(f))
    keys = {tuple(_fmt(r[k]) for k in KEY) for r in rows}
    kept = [r for r in old if tuple(r.get(k, "") for k in KEY) not in keys]
    buf = io.StringIO()
    w = csv.DictWriter(buf, COLUMNS, extrasaction="ignore", lineterminator="\n")
    w.writeheader()
    for r in kept:
        w.writerow(r)
    for r in rows:
        w.writerow({k: _fmt(r.get(k)) for k in COLUMNS})
    table.parent.mkdir(parents=True, exist_ok=True)
    container.atomic_write(table, buf.getvalue().encode())


def neural_row(cfg: Config, summary: dict[str, Any], train_s: float | None, device: str,
               budget_s: float) -> dict[str, Any]:
    c, t, n = summary["code"], summary["time"], summary["data"]["bytes"]
    m = cfg.model
    label = f"prequential {m.family} d{m.d_model}x{m.n_layers}"
    if m.ngram_orders:
        label += f" + ngram{''.join(str(k) for k in sorted(m.ngram_orders))}"
    label += f" B{cfg.code.batch_size}xT{cfg.code.seq_len} u{cfg.optim.updates_per_batch}"
    return {
        "method": label, "device": device, "data": summary["data"]["name"], "bytes": n,
        "n_params": summary["model"]["n_params"], "bits": c["bits"], "bits_per_byte": c["bits_per_byte"],
        "total_bits_per_byte": c["total_bits"] / n, "ideal_bits_per_byte": c["ideal_bits_per_byte"],
        "coded_over_ideal": c["coded_over_ideal"], "encode_s": t["encode_s"], "decode_s": t.get("decode_s"),
        "train_only_s": train_s, "encode_over_train": t["encode_s"] / train_s if train_s else None,
        "decode_over_encode": t.get("decode_over_encode"), "encode_bytes_per_s": n / t["encode_s"],
        "decode_bytes_per_s": n / t["decode_s"] if t.get("decode_s") else None,
        "verified": summary["verify"]["ok"], "budget_s": budget_s, "within_budget": t["encode_s"] <= budget_s,
        "config": cfg.run_dir,
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
    p.add_argument("--table", type=Path, default=Path("results/tables/bench.csv"), help="CSV to upsert rows into")
    p.add_argument("--budget-s", type=float, default=3600.0, help="encode wall-time budget for P1 (default 1 h)")
    p.add_argument("--no-baselines", action="store_true", help="skip the classic compressors")
    p.add_argument("--no-train-only", action="store_true", help="skip the plain-training timing (P3)")


def command(args) -> int:
    overrides = list(args.overrides)
    if not any(o.split("=", 1)[0].lstrip("+") == "experiment" for o in overrides):
        overrides.insert(0, "experiment=bench_dickens")
    cfg = compose(overrides)
    if not cfg.code.verify:
        raise MdlbenchError("the benchmark reports verified code lengths only: drop code.verify=false")
    from mdlbench import data as data_lib
    from mdlbench import train

    train.pin_threads(cfg.threads)  # before JAX is imported
    summary = train.run(cfg)
    run_dir = Path(cfg.run_dir)
    device = device_label(cfg)
    dataset = data_lib.load(cfg.data)
    train_s = None
    if not args.no_train_only:
        cache = run_dir / "train_only.json"  # a re-run reuses the timing of the same config
        if cache.exists() and json.loads(cache.read_text()).get("config_sha256") == config_lib.config_hash(cfg):
            train_s = json.loads(cache.read_text())["train_only_s"]
        else:
            print("timing plain training (same updates, no coding)...", flush=True)
            train_s = plain_training_s(cfg, dataset.data)
            container.atomic_write(cache, json.dumps({"config_sha256": config_lib.config_hash(cfg),
                                                      "train_only_s": train_s, "device": device}).encode())
    rows = [neural_row(cfg, summary, train_s, device, args.budget_s)]
    if not args.no_baselines:
        print("running the classic compressors...", flush=True)
        rows += classic_rows(dataset.data, summary["data"]["name"], device)
    upsert(args.table, rows)
    width = max(len(r["method"]) for r in rows)
    for r in sorted(rows, key=lambda r: r["bits_per_byte"]):
        extra = ""
        if r.get("coded_over_ideal"):
            extra = (f"  P2 {r['coded_over_ideal']:.6f}  P3 {_fmt(r['encode_over_train'])}  "
                     f"P4 {_fmt(r['decode_over_encode'])}  {r['encode_bytes_per_s']:.0f} B/s  "
                     f"{r['n_params']} params  within {args.budget_s:.0f} s: {r['within_budget']}")
        print(f"{r['method']:<{width}}  {r['bits_per_byte']:.4f} bits/byte  verified={r['verified']}{extra}")
    print(f"wrote {args.table}")
    return 0 if all(r["verified"] for r in rows) else 1
