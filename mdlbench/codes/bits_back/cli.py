"""Command line of the bits-back decoders: ``decode`` (verify coded files).

It pins the recorded thread count before JAX is imported, so it must run in a fresh process:
nothing here imports JAX at import time. Errors print one line (no traceback), exit 2. The codes
themselves run as a job of ``mdlbench-train`` (``mdlbench-train experiment=bbans_mnist5k``), or
from Python with :func:`mdlbench.codes.bits_back.run_bits_back`.

Example::

    python -m mdlbench.codes.bits_back decode RUN_DIR/mnist5k.bbans.mdl -o pixels.u8
"""

from __future__ import annotations

import argparse
import json

from mdlbench.errors import one_line

PROG = "python -m mdlbench.codes.bits_back"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Adds the ``decode`` subcommand to ``parser``."""
    sub = parser.add_subparsers(dest="action", metavar="ACTION", required=True)
    dec = sub.add_parser("decode", help="decode bits-back files in this process and check their sha256")
    dec.add_argument("files", nargs="+")
    dec.add_argument("--data-dir", help="shared data folder (default $MDLBENCH_DATA or the recorded one)")
    dec.add_argument("-o", "--output", help="with one file: write the decoded bytes here")
    dec.add_argument("--json", metavar="FILE", help="write the results as JSON to FILE")


def command(args: argparse.Namespace) -> int:
    """Decodes the files; MdlbenchError propagates (the caller prints one line)."""
    from mdlbench.codes.bits_back.files import decode_files

    results = decode_files(args.files, args.data_dir, args.output)
    if args.json:
        from mdlbench.coding.container import atomic_write

        atomic_write(args.json, json.dumps(results, indent=1).encode())
    for r in results:
        print(f"OK {r['kind']}: {r['file']}: {r['payload_bits']} payload bits, sha256 {r['decoded_sha256'][:16]}..., "
              f"{r['decode_total_s']:.1f} s")
    return 0


def main(argv: list[str] | None = None) -> int:
    """Entry point of ``python -m mdlbench.codes.bits_back``."""
    parser = argparse.ArgumentParser(prog=PROG, description=__doc__.splitlines()[0])
    add_arguments(parser)
    args = parser.parse_args(argv)
    return one_line(PROG, lambda: command(args))
