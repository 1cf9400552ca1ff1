"""Command line of the supervised codes: ``run`` (all codes, table, figure) and ``decode`` (verify a file).

``decode`` pins the recorded thread count before JAX is imported, so it must run in a fresh
process: nothing here imports JAX at import time. Errors print one line (no traceback), exit 2.

Examples::

    python -m mdlbench.codes.supervised run --data mnist5k --model mlp_small --out results
    python -m mdlbench.codes.supervised run --config conf/experiment/codes_mnist5k.yaml
    python -m mdlbench.codes.supervised decode results/runs/codes_mnist5k/mlp_small/blockwise.mdl
"""

from __future__ import annotations

import argparse
from typing import Any

from mdlbench.errors import one_line

PROG = "python -m mdlbench.codes.supervised"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Adds the ``run`` and ``decode`` subcommands to ``parser``."""
    sub = parser.add_subparsers(dest="action", metavar="ACTION", required=True)
    run = sub.add_parser("run", help="run the code family on one data set; write table and figure")
    run.add_argument("--config", help="YAML file; its 'supervised:' section (or the whole file) is the config")
    run.add_argument("--data", help="mnist5k, digits or fashion")
    run.add_argument("--model", help="classifier name (mlp_small, cnn_small, ...)")
    run.add_argument("--out", help="results root (tables/, figures/, runs/ below it)")
    run.add_argument("--data-dir", help="shared data folder (default $MDLBENCH_DATA)")
    run.add_argument("--max-examples", type=int, help="code only the first N shuffled examples")
    run.add_argument("--seed", type=int)
    run.add_argument("--shuffle-seed", type=int)
    run.add_argument("--codes", help="comma-separated subset of uniform,two_part,blockwise,prequential,variational")
    run.add_argument("--no-verify", action="store_true", help="skip the separate-process decode")
    dec = sub.add_parser("decode", help="decode a block-wise or prequential label file and check its sha256")
    dec.add_argument("file")
    dec.add_argument("--data-dir", help="shared data folder (default $MDLBENCH_DATA or the recorded one)")


def _run_config(args: argparse.Namespace) -> dict[str, Any]:
    d: dict[str, Any] = {}
    if args.config:
        import yaml

        with open(args.config) as f:
            loaded = yaml.safe_load(f) or {}
        d = dict(loaded.get("supervised", loaded))
    for key, value in {"data": args.data, "model": args.model, "out_dir": args.out, "data_dir": args.data_dir,
                       "max_examples": args.max_examples, "seed": args.seed,
                       "shuffle_seed": args.shuffle_seed}.items():
        if value is not None:
            d[key] = value
    if args.codes:
        d["codes"] = [c.strip() for c in args.codes.split(",") if c.strip()]
    if args.no_verify:
        d["verify"] = False
    return d


def command(args: argparse.Namespace) -> int:
    """Runs the chosen action; MdlbenchError propagates (the caller prints one line)."""
    if args.action == "decode":
        from mdlbench.codes.supervised.files import decode_file

        r = decode_file(args.file, args.data_dir)
        print(f"OK {r['code']}: {r['n']} labels, {r['payload_bits']} payload bits ({r['ideal_bits']:.1f} ideal), "
              f"sha256 {r['labels_sha256'][:16]}..., {r['decode_time_s']:.1f} s")
        return 0
    from mdlbench.codes.supervised import run_codes

    summary = run_codes(_run_config(args))
    for row in summary["rows"]:
        print(f"{row['label']:>22}: {row['bits']:>14,.1f} bits  {row['bits_per_label']:.4f} bits/label  "
              f"test acc {row['test_accuracy']:.3f}  {row['kind']}")
    print(f"table: {summary['paths']['table']}  ({summary['time_s']:.0f} s)")
    return 0


def main(argv: list[str] | None = None) -> int:
    """Entry point of ``python -m mdlbench.codes.supervised``."""
    parser = argparse.ArgumentParser(prog=PROG, description=__doc__.splitlines()[0])
    add_arguments(parser)
    args = parser.parse_args(argv)
    return one_line(PROG, lambda: command(args))
