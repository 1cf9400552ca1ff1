"""Command line of the bits-back codes: ``run`` (code, verify, table) and ``decode`` (verify files).

``decode`` pins the recorded thread count before JAX is imported, so it must run in a fresh
process: nothing here imports JAX at import time. Errors print one line (no traceback), exit 2.

Examples::

    python -m mdlbench.codes.bits_back run --config conf/experiment/bbans_mnist5k.yaml
    python -m mdlbench.codes.bits_back decode RUN_DIR/mnist5k.bbans.mdl -o pixels.u8
"""

from __future__ import annotations

import argparse
import json
from typing import Any

from mdlbench.errors import one_line

PROG = "python -m mdlbench.codes.bits_back"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Adds the ``run`` and ``decode`` subcommands to ``parser``."""
    sub = parser.add_subparsers(dest="action", metavar="ACTION", required=True)
    run = sub.add_parser("run", help="run one bits-back experiment (bbans or weights)")
    run.add_argument("--config", help="YAML file; its 'bits_back:' section (or the whole file) is the config")
    run.add_argument("--out", help="results root (tables/ and runs/ below it)")
    run.add_argument("--run-dir", help="put the run's files here instead of <out>/runs/...")
    run.add_argument("--data-dir", help="shared data folder (default $MDLBENCH_DATA)")
    run.add_argument("--max-examples", type=int, help="code only the first N shuffled examples")
    run.add_argument("--no-verify", action="store_true", help="skip the separate-process decode")
    dec = sub.add_parser("decode", help="decode bits-back files in this process and check their sha256")
    dec.add_argument("files", nargs="+")
    dec.add_argument("--data-dir", help="shared data folder (default $MDLBENCH_DATA or the recorded one)")
    dec.add_argument("-o", "--output", help="with one file: write the decoded bytes here")
    dec.add_argument("--json", metavar="FILE", help="write the results as JSON to FILE")


def _run_config(args: argparse.Namespace) -> dict[str, Any]:
    d: dict[str, Any] = {}
    if args.config:
        import yaml

        with open(args.config) as f:
            loaded = yaml.safe_load(f) or {}
        d = dict(loaded.get("bits_back", loaded))
        # The experiment file names its table through the top-level Hydra key.
        if isinstance(d.get("experiment"), str) and d["experiment"].startswith("${"):
            d["experiment"] = loaded.get("experiment", "")
    for key, value in {"out_dir": args.out, "data_dir": args.data_dir, "max_examples": args.max_examples}.items():
        if value is not None:
            d[key] = value
    if args.no_verify:
        d["verify"] = False
    return d


def command(args: argparse.Namespace) -> int:
    """Runs the chosen action; MdlbenchError propagates (the caller prints one line)."""
    if args.action == "decode":
        from mdlbench.codes.bits_back.files import decode_files

        results = decode_files(args.files, args.data_dir, args.output)
        if args.json:
            from mdlbench.coding.container import atomic_write

            atomic_write(args.json, json.dumps(results, indent=1).encode())
        for r in results:
            print(f"OK {r['kind']}: {r['file']}: {r['payload_bits']} payload bits, sha256 {r['decoded_sha256'][:16]}..., "
                  f"{r['decode_total_s']:.1f} s")
        return 0
    from mdlbench.codes.bits_back import run_bits_back

    summary = run_bits_back(_run_config(args), args.run_dir)
    print(f"table: {summary['paths']['table']}  summary: {summary['paths']['summary']}")
    return 0


def main(argv: list[str] | None = None) -> int:
    """Entry point of ``python -m mdlbench.codes.bits_back``."""
    parser = argparse.ArgumentParser(prog=PROG, description=__doc__.splitlines()[0])
    add_arguments(parser)
    args = parser.parse_args(argv)
    return one_line(PROG, lambda: command(args))
