"""Command line of the supervised codes' decoder: ``decode`` (verify a coded label file).

It pins the recorded thread count before JAX is imported, so it must run in a fresh process:
nothing here imports JAX at import time. Errors print one line (no traceback), exit 2. The codes
themselves run as a job of ``mdlbench-train`` (``mdlbench-train experiment=codes_mnist5k``), or
from Python with :func:`mdlbench.codes.supervised.run_codes`.

Example::

    python -m mdlbench.codes.supervised decode results/runs/codes_mnist5k/mlp_small/blockwise.mdl
"""

from __future__ import annotations

import argparse

from mdlbench.errors import one_line

PROG = "python -m mdlbench.codes.supervised"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Adds the ``decode`` subcommand to ``parser``."""
    sub = parser.add_subparsers(dest="action", metavar="ACTION", required=True)
    dec = sub.add_parser("decode", help="decode a block-wise or prequential label file and check its sha256")
    dec.add_argument("file")
    dec.add_argument("--data-dir", help="shared data folder (default $MDLBENCH_DATA or the recorded one)")


def command(args: argparse.Namespace) -> int:
    """Decodes the file; MdlbenchError propagates (the caller prints one line)."""
    from mdlbench.codes.supervised.files import decode_file

    r = decode_file(args.file, args.data_dir)
    print(f"OK {r['code']}: {r['n']} labels, {r['payload_bits']} payload bits ({r['ideal_bits']:.1f} ideal), "
          f"sha256 {r['labels_sha256'][:16]}..., {r['decode_time_s']:.1f} s")
    return 0


def main(argv: list[str] | None = None) -> int:
    """Entry point of ``python -m mdlbench.codes.supervised``."""
    parser = argparse.ArgumentParser(prog=PROG, description=__doc__.splitlines()[0])
    add_arguments(parser)
    args = parser.parse_args(argv)
    return one_line(PROG, lambda: command(args))
