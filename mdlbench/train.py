"""``run(cfg) -> summary``: one prequential coding run, from config to verified bitstream.

The run directory is named from the config, so re-running the same command finds the
finished run and returns at once; a different config in the same directory is refused.
Outputs: ``<data>.mdl`` (the container), ``metrics.jsonl`` (one line per coding step) and
``summary.json`` (nested, units in the names), after a separate decoder process has
reproduced the data and its sha256.
"""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from mdlbench import config as config_lib
from mdlbench.codes import harness
from mdlbench.coding import container
from mdlbench.config import Config
from mdlbench.errors import DecodeError, MdlbenchError


def data_label(cfg: Config) -> str:
    return Path(cfg.data.path).name if cfg.data.name == "file" and cfg.data.path else cfg.data.name


def default_run_dir(cfg: Config) -> Path:
    # The fast mode gets its own directory: it never holds a container or a verification.
    leaf = f"seed{cfg.seed}" + ("-estimate" if cfg.code.name == "estimate" else "")
    return Path("results/runs") / cfg.experiment / data_label(cfg) / cfg.model.name / leaf


def pin_threads(n: int) -> None:
    """Pins this process to ``n`` CPUs before JAX starts (the count is what XLA depends on)."""
    from mdlbench.coding import env

    env.deterministic_gpu()
    if n <= 0:
        return
    if "jax" in sys.modules:
        if env.threads() != n:
            raise MdlbenchError(f"threads={n} must be set before JAX is imported (it runs with {env.threads()})")
        return
    allowed = sorted(os.sched_getaffinity(0))
    if len(allowed) < n:
        raise MdlbenchError(f"threads={n} but only {len(allowed)} CPUs are available")
    # Jobs of a local parallel sweep get disjoint CPUs where they can.
    first = int(os.environ.get("MDLBENCH_JOB_INDEX", "0")) * n % len(allowed)
    os.sched_setaffinity(0, [allowed[(first + i) % len(allowed)] for i in range(n)])


class Progress:
    """A live bar on a terminal; plain periodic lines otherwise (cluster logs)."""

    def __init__(self, total_bytes: int, label: str, every_s: float, decoding: bool = False):
        self.total, self.label, self.every_s, self.decoding = total_bytes, label, every_s, decoding
        self.bar = None
        self.last = 0.0
        if sys.stdout.isatty():
            from rich.progress import BarColumn, Progress as RichProgress, TextColumn, TimeRemainingColumn

            self.bar = RichProgress(TextColumn("{task.description}"), BarColumn(),
                                    TextColumn("{task.fields[info]}"), TimeRemainingColumn())
            self.task = self.bar.add_task(label, total=total_bytes, info="")
            self.bar.start()

    def update(self, m: dict[str, Any]) -> None:
        rate = m["bytes_seen"] / max(m["time/elapsed_s"], 1e-9)
        if self.decoding:  # the decoder knows no bit counts until the end: bytes only
            info = f"{rate / 1e3:.1f} kB/s  decoded"
        elif "code/cum_bits_per_byte" in m:
            info = f"{rate / 1e3:.1f} kB/s  {m['code/cum_bits_per_byte']:.3f} bits/byte"
        else:  # the training-loss estimate: no bitstream, so say it is an estimate
            info = f"{rate / 1e3:.1f} kB/s  ~{m['estimate/cum_ideal_bits_per_byte']:.3f} bits/byte (estimate)"
        if self.bar is not None:
            self.bar.update(self.task, completed=m["bytes_seen"], info=info)
        elif time.monotonic() - self.last >= self.every_s or m["bytes_seen"] == self.total:
            self.last = time.monotonic()
            print(f"[{self.label}] {m['bytes_seen']}/{self.total} bytes  {info}", flush=True)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.stop()


def verify(container_path: Path, total_bytes: int | None = None, label: str = "verify",
           every_s: float = 10.0) -> dict[str, Any]:
    """Replays the decoder in a separate process; returns its verification record.

    With ``total_bytes``, the decoder reports every step and this process shows it as a bar
    (a terminal) or periodic lines (a log): long decodes are not silent."""
    with tempfile.TemporaryDirectory() as tmp:
        out_json = Path(tmp) / "verify.json"
        args = [str(container_path), "--json", str(out_json)]
        if total_bytes is None:
            proc, _ = harness.run_decoder("mdlbench.codes.replay", *args)
            returncode, err = proc.returncode, proc.stderr or proc.stdout
        else:
            bar = Progress(total_bytes, label, every_s, decoding=True)
            with subprocess.Popen(harness.decoder_argv("mdlbench.codes.replay", *args, "--progress"),
                                  stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                  env=harness.decoder_env()) as proc:
                rest = []
                for line in proc.stdout:
                    parts = line.split()
                    if len(parts) == 3 and parts[0] == "progress":
                        bar.update({"bytes_seen": int(parts[1]), "time/elapsed_s": float(parts[2])})
                    else:
                        rest.append(line)
                err = proc.stderr.read() or "".join(rest)
                returncode = proc.wait()
            bar.close()
        if returncode != 0 or not out_json.exists():
            lines = err.strip().splitlines()
            return {"ok": False, "error": lines[-1] if lines else f"decoder exited {returncode}"}
        return json.loads(out_json.read_text())


class Tail:
    """Bits and bytes of the last ~10% of steps, where the learning curve has flattened most,
    accumulated step by step (no per-step history is kept: runs may have millions of steps)."""

    def __init__(self, steps: int):
        self.first = steps - max(1, steps // 10)
        self.bits, self.ideal_bits, self.estimate_bits, self.bytes = 0, 0.0, 0.0, 0

    def add(self, m: dict[str, Any]) -> None:
        if m["step"] >= self.first:
            self.bits += m["code/bits"]
            self.ideal_bits += m["code/ideal_bits"]
            self.estimate_bits += m["train/loss_nats"] * m["step_bytes"] / math.log(2)  # as the cursor sums it
            self.bytes += m["step_bytes"]


def _resume_metrics(metrics_path: Path, step: int, tail: Tail) -> None:
    """Keeps the metrics lines of steps before ``step`` (a resumed run redoes the rest)."""
    kept: list[str] = []
    if metrics_path.exists():
        with open(metrics_path) as f:
            for line in f:
                try:
                    m = json.loads(line)
                except ValueError:  # a line torn by the kill
                    break
                if m.get("step", step) >= step:
                    break
                tail.add(m)
                kept.append(line if line.endswith("\n") else line + "\n")
    container.atomic_write(metrics_path, "".join(kept).encode())


def run_header(cfg: Config, dataset, n_params: int) -> dict[str, Any]:
    """The summary entries every run starts with, real or estimate: what was coded, by what."""
    return {
        "experiment": cfg.experiment,
        "seed": cfg.seed,
        "data": {"name": dataset.name, "bytes": len(dataset.data), "sha256": dataset.sha256, "path": dataset.path},
        "source": {"entropy_rate_bits": dataset.entropy_rate_bits},
        "model": {**config_lib.to_dict(cfg)["model"], "n_params": n_params},
    }


class StepSinks:
    """Where every step's metrics go: the JSON-lines file, the progress bar and wandb (when a
    metrics file is written); the coding and the estimate loops share it as their ``on_step``."""

    def __init__(self, cfg: Config, metrics_path: Path | None, bar: "Progress | None", append: bool = False,
                 tail: "Tail | None" = None):
        self.metrics_f = open(metrics_path, "a" if append else "w") if metrics_path else None
        self.bar, self.tail = bar, tail
        self.tracker = _wandb_start(cfg) if metrics_path else None

    def __call__(self, m: dict[str, Any]) -> None:
        if self.tail is not None:
            self.tail.add(m)
        if self.metrics_f:
            self.metrics_f.write(json.dumps(m) + "\n")
            self.metrics_f.flush()  # a killed run's file holds every step it finished
        if self.bar:
            self.bar.update(m)
        if self.tracker:
            self.tracker.log(m, step=m["step"])

    def run(self, loop):
        """Runs ``loop()``; the file and the bar are closed whatever happens, wandb on failure."""
        try:
            return loop()
        except BaseException:
            if self.tracker:
                self.tracker.finish()
            raise
        finally:
            if self.metrics_f:
                self.metrics_f.close()
            if self.bar:
                self.bar.close()

    def finish(self, summary: dict[str, Any]) -> None:
        """Hands the run's summary to wandb and closes it."""
        if self.tracker:
            try:
                self.tracker.summary(summary)
            finally:
                self.tracker.finish()


def code_dataset(cfg: Config, dataset, container_path: Path, metrics_path: Path | None = None,
                 progress: bool = True, checkpoint_dir: Path | None = None) -> dict[str, Any]:
    """Encodes ``dataset`` into ``container_path``, verifies it (if configured); returns the summary.

    With ``checkpoint_dir``, a killed run resumes from its latest checkpoint (same config and
    data only) and produces the same container bytes as an uninterrupted run."""
    from mdlbench.checkpoint import Checkpoints
    from mdlbench.codes import prequential

    t0 = time.perf_counter()
    checkpoints = Checkpoints(checkpoint_dir, config_lib.config_hash(cfg), dataset.sha256) if checkpoint_dir else None
    cursor = checkpoints.peek() if checkpoints else None
    tail = Tail(prequential.Layout(len(dataset.data), cfg.code.batch_size, cfg.code.seq_len).steps)
    if cursor is not None:
        print(f"resuming from the checkpoint at step {cursor.step} ({cursor.bytes_seen} bytes coded) in {checkpoint_dir}",
              flush=True)
        if metrics_path:
            _resume_metrics(metrics_path, cursor.step, tail)
    bar = Progress(len(dataset.data), f"{cfg.model.name} on {dataset.name}", cfg.logger.log_every_s) if progress else None
    sinks = StepSinks(cfg, metrics_path, bar, append=cursor is not None, tail=tail)
    info = {"name": dataset.name, "path": dataset.path}
    res = sinks.run(lambda: prequential.encode(cfg, dataset.data, info, on_step=sinks, checkpoints=checkpoints))
    encode_total_s = time.perf_counter() - t0
    container_bytes = container.write(container_path, res.header, res.payload, cfg.code.chunk_bytes)
    if checkpoints is not None:
        checkpoints.remove()  # the container is in place: nothing left to resume
    n = len(dataset.data)
    bits = 8 * len(res.payload)
    program_bits = res.header["program"]["bits"]
    tail_bits, tail_bytes = tail.bits, tail.bytes  # payload growth over the last ~10% of steps
    summary: dict[str, Any] = {
        **run_header(cfg, dataset, res.n_params),
        "code": {
            "name": "prequential",
            "bits": bits,
            "ideal_bits": res.ideal_bits,
            "program_bits": program_bits,
            "total_bits": program_bits + bits,
            "bits_per_byte": bits / n,
            "ideal_bits_per_byte": res.ideal_bits / n,
            "coded_over_ideal": bits / res.ideal_bits if res.ideal_bits else None,
            "ratio": 8 * n / (program_bits + bits),
            "container_bytes": container_bytes,
            "final_chunk_bits_per_byte": tail_bits / tail_bytes if tail_bytes else None,
            "final_chunk_ideal_bits_per_byte": tail.ideal_bits / tail_bytes if tail_bytes else None,
        },
        # Rae's estimate from the same run: the pre-update training loss of every batch, summed.
        "estimate": {
            "kind": "training-loss estimate (ideal; pre-update loss of every batch, training forward)",
            "bits": res.estimate_bits,
            "bits_per_byte": res.estimate_bits / n if n else None,
            "over_real": res.estimate_bits / bits if bits else None,
            "over_ideal": res.estimate_bits / res.ideal_bits if res.ideal_bits else None,
            "final_chunk_bits_per_byte": tail.estimate_bits / tail_bytes if tail_bytes else None,
        },
        "verify": {"ok": None, "decoded_sha256": None},
        "time": {"encode_s": res.encode_s, "encode_total_s": encode_total_s},
        "perf": {"encode_bytes_per_s": n / res.encode_s if res.encode_s else None},
        "env": res.header["env"],
        "config": config_lib.to_dict(cfg),
    }
    if dataset.info:
        summary["data"]["info"] = dataset.info
    if cfg.code.verify:
        v = verify(container_path, n if progress else None, f"verifying {dataset.name} (separate decoder)",
                   cfg.logger.log_every_s)
        summary["verify"] = {"ok": bool(v.get("ok")) and v.get("decoded_sha256") == dataset.sha256,
                             "decoded_sha256": v.get("decoded_sha256")}
        if "error" in v:
            summary["verify"]["error"] = v["error"]
        summary["time"].update(decode_s=v.get("decode_s"), decode_total_s=v.get("decode_total_s"),
                               decode_over_encode=(v["decode_s"] / res.encode_s) if v.get("decode_s") else None)
        summary["perf"]["decode_bytes_per_s"] = n / v["decode_s"] if v.get("decode_s") else None
    try:
        if cfg.baselines:
            from mdlbench import baselines

            summary["baselines"] = baselines.measure_all(dataset.data)
    finally:
        sinks.finish(summary)
    return summary


def comparison_table(summary: dict[str, Any], names: tuple[str, ...] = ("gzip_9", "xz_9e", "ppmd_6")) -> str:
    """The run's verified payload and two-part total beside classic compressors on the same
    bytes, best first, and which of them the model beat (on its payload alone)."""
    from mdlbench.baselines import BASELINES

    c, n = summary["code"], summary["data"]["bytes"]
    model = summary["model"]["name"]
    verified = "verified" if summary.get("verify", {}).get("ok") else "NOT verified"
    rows = [(c["bits_per_byte"], f"{model} payload ({verified})"),
            (c["total_bits"] / n, f"{model} + program ({c['program_bits']} bits)")]
    rows += [(summary["baselines"][k]["bits_per_byte"], BASELINES[k].label) for k in names if k in summary["baselines"]]
    lines = [f"{'code':<44} bits/byte", *(f"{label:<44} {bpb:9.4f}" for bpb, label in sorted(rows))]
    beat = [BASELINES[k].label for k in names if k in summary["baselines"]
            and c["bits_per_byte"] < summary["baselines"][k]["bits_per_byte"]]
    lost = [BASELINES[k].label for k in names if k in summary["baselines"] and BASELINES[k].label not in beat]
    lines.append(f"{model} beats {', '.join(beat) or 'none of them'}"
                 + (f"; behind {', '.join(lost)}" if lost else "") + " on these bytes (payload)")
    return "\n".join(lines)


def estimate_dataset(cfg: Config, dataset, metrics_path: Path | None = None, progress: bool = True) -> dict[str, Any]:
    """The fast mode (``code.name=estimate``): trains exactly as the real code would and sums
    each batch's pre-update loss (Rae's estimate). Writes no container and verifies nothing:
    its summary has ``code.ideal_bits`` (an ideal length, labelled as an estimate) and no
    ``code.bits``."""
    from mdlbench.coding import program
    from mdlbench.codes import prequential

    bar = Progress(len(dataset.data), f"{cfg.model.name} on {dataset.name} (estimate)",
                   cfg.logger.log_every_s) if progress else None
    sinks = StepSinks(cfg, metrics_path, bar)
    res = sinks.run(lambda: prequential.estimate(cfg, dataset.data, on_step=sinks))
    n = len(dataset.data)
    program_bits = program.program_bits(config_lib.program_dict(cfg))
    summary: dict[str, Any] = {
        **run_header(cfg, dataset, res.n_params),
        "code": {
            "name": "estimate",
            "kind": "estimate (ideal): Σ pre-update training loss of every batch; no bitstream, nothing verified",
            "ideal_bits": res.ideal_bits,
            "ideal_bits_per_byte": res.ideal_bits / n if n else None,
            "program_bits": program_bits,
            "ideal_total_bits": program_bits + res.ideal_bits,
            "final_chunk_ideal_bits_per_byte": res.final_chunk_ideal_bits_per_byte,
            "steps": res.steps,
        },
        "time": {"train_s": res.train_s},
        "perf": {"train_bytes_per_s": n / res.train_s if res.train_s else None},
        "config": config_lib.to_dict(cfg),
    }
    sinks.finish(summary)
    return summary


def _wandb_start(cfg: Config):
    if cfg.logger.wandb_mode == "disabled":
        return None
    from mdlbench.tracking import WandbTracker

    return WandbTracker(cfg)


def run(cfg: Config) -> dict[str, Any]:
    """Runs (or finds finished) one coding job; returns its summary."""
    from mdlbench import data as data_lib

    cfg = config_lib.resolve_mode(cfg)
    run_dir = Path(cfg.run_dir) if cfg.run_dir else default_run_dir(cfg)
    cfg.run_dir = str(run_dir)
    summary_path = run_dir / "summary.json"
    old = harness.finished_run(run_dir, config_lib.config_hash(cfg),
                               lambda s: config_lib.config_hash(config_lib.from_dict(s["config"])))
    if old is not None:
        if old["code"].get("name") == "estimate":
            print(f"already done: {run_dir} (estimate ~{old['code']['ideal_bits_per_byte']:.4f} bits/byte, no bitstream)")
            return old
        if old.get("verify", {}).get("ok") or not cfg.code.verify:
            print(f"already done: {run_dir} ({old['code']['bits_per_byte']:.4f} bits/byte, verified="
                  f"{old['verify']['ok']})")
            return old
    harness.make_run_dir(run_dir)
    pin_threads(cfg.threads)
    dataset = data_lib.load(cfg.data)
    if cfg.code.name == "estimate":
        summary = estimate_dataset(cfg, dataset, run_dir / "metrics.jsonl")
        harness.write_summary(run_dir, summary)
        c = summary["code"]
        print(f"{dataset.name}: {summary['data']['bytes']} bytes, training-loss estimate "
              f"~{c['ideal_bits_per_byte']:.4f} bits/byte (ideal, no bitstream); run dir: {run_dir}")
        return summary
    container_path = run_dir / f"{data_label(cfg)}.mdl"
    summary = code_dataset(cfg, dataset, container_path, run_dir / "metrics.jsonl",
                           checkpoint_dir=run_dir / "checkpoint")
    harness.write_summary(run_dir, summary)
    c = summary["code"]
    print(f"{dataset.name}: {summary['data']['bytes']} bytes -> {c['bits']} payload bits "
          f"({c['bits_per_byte']:.4f} bits/byte; ideal {c['ideal_bits_per_byte']:.4f}); "
          f"program {c['program_bits']} bits; total {c['total_bits']} bits, ratio {c['ratio']:.3f}")
    print(f"verified: {summary['verify']['ok']}  run dir: {run_dir}")
    if summary.get("baselines"):
        print(comparison_table(summary))
    if cfg.code.verify and not summary["verify"]["ok"]:
        raise DecodeError(f"verification failed: {summary['verify'].get('error', 'sha256 mismatch')} (see {summary_path})")
    return summary
