"""The replay decoder: ``python -m mdlbench.codes.replay RUN_DIR|FILE.mdl [-o OUT]`` (also ``mdlbench decode``).

Runs in its own process with only the container and the program. It reads the container
without JAX, pins the recorded thread count and XLA flags, then imports JAX, checks the
environment, the program's source hash and the canary, re-runs the training while decoding,
checks the sha256 of the result, and only then moves the output into place.

This module is where the receiver's program starts (``mdlbench.coding.program.DECODERS``):
``python -m mdlbench.codes.replay`` imports nothing but the files counted as program bits.
``mdlbench decode`` is the same command reached through ``mdlbench.cli``'s command table.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

from mdlbench.coding import container
from mdlbench.errors import ContainerError, DecodeError, MdlbenchError, one_line


def find_container(target: str | Path) -> Path:
    """A container file, or the single ``.mdl`` file inside a run directory (``mdlbench decode``
    finds every kind of container with it)."""
    p = Path(target)
    if p.is_dir():
        found = sorted(p.glob("*.mdl"))
        if len(found) != 1:
            names = ", ".join(f.name for f in found)
            raise ContainerError(f"{p}: expected exactly one .mdl container in the directory, found {len(found)}"
                                 + (f" ({names}): name one" if found else ""))
        return found[0]
    if not p.exists():
        raise ContainerError(f"{p}: no such file or run directory")
    return p


def decode_file(path: str | Path, out: str | Path | None, on_step=None) -> dict:
    """Decodes a container in this process (which must not have imported JAX yet)."""
    t0 = time.perf_counter()
    path = find_container(path)
    header, payload = container.read(path)
    if header.get("format") != "mdlbench.prequential":
        raise ContainerError(f"{path}: unknown payload format {header.get('format')!r}")
    from mdlbench.coding import env

    env.pin(header["env"])
    from mdlbench.codes import prequential

    import numpy as np

    n = int(header["data"]["bytes"])
    if out is not None:
        out = Path(out)
        if out.is_dir():
            raise ContainerError(f"output {out} is a directory")
        if not out.parent.is_dir():
            raise ContainerError(f"output directory {out.parent} does not exist")
    # Large outputs are decoded straight into a memory-mapped temporary file beside the output
    # (or in the temp dir when only verifying), renamed into place only after the sha256 check.
    stream = n >= container.STREAM_BYTES
    tmp = None
    try:
        if stream:
            tmp = Path(tempfile.mkstemp(dir=out.parent if out is not None else None,
                                        prefix=f".{out.name if out is not None else 'verify'}.", suffix=".tmp")[1])
            with open(tmp, "r+b") as f:
                f.truncate(n)
            buf = np.memmap(tmp, np.uint8, mode="r+", shape=(n,)) if n else np.zeros(0, np.uint8)
            _, seconds = prequential.decode(header, payload, out=buf, on_step=on_step)
            if n:
                buf.flush()
            del buf
            if out is not None:
                os.replace(tmp, out)
                tmp = None
        else:
            data, seconds = prequential.decode(header, payload, on_step=on_step)
            if out is not None:
                container.atomic_write(out, data)
    except MdlbenchError:
        raise
    except Exception as e:  # e.g. the coder failing inside the compiled program on a forged payload
        first = (str(e).strip().splitlines() or [type(e).__name__])[-1]
        raise DecodeError(f"{path}: decoding failed ({type(e).__name__}: {first[:200]}); nothing was written") from None
    finally:
        if tmp is not None:
            tmp.unlink(missing_ok=True)
    return {"ok": True, "decoded_sha256": header["data"]["sha256"], "bytes": n,
            "decode_s": seconds, "decode_total_s": time.perf_counter() - t0, "output": str(out) if out else None}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("target", help="a run directory or a .mdl container")
    parser.add_argument("-o", "--output", help="write the decoded bytes here (default: only verify)")
    parser.add_argument("--json", metavar="FILE", help="write the verification result as JSON to FILE")
    parser.add_argument("--progress", action="store_true",
                        help="print one 'progress BYTES ELAPSED_S' line per decoded step (for a parent's bar)")


def _print_progress(m: dict) -> None:
    print(f"progress {m['bytes_seen']} {m['time/elapsed_s']:.3f}", flush=True)


def command(args: argparse.Namespace) -> int:
    result = decode_file(args.target, args.output, on_step=_print_progress if getattr(args, "progress", False) else None)
    if args.json:
        container.atomic_write(args.json, json.dumps(result).encode())
    print(f"decoded {result['bytes']} bytes, sha256 {result['decoded_sha256']} OK "
          f"({result['decode_s']:.1f} s decoding, {result['decode_total_s']:.1f} s in all)"
          + (f" -> {result['output']}" if result["output"] else ""))
    return 0


def main(argv: list[str] | None = None) -> int:
    """``python -m mdlbench.codes.replay TARGET [-o OUT] [--json FILE]``: the receiver's decoder.

    The same command as ``mdlbench decode`` without ``mdlbench.cli``'s command table, whose
    training, analysis and benchmark commands are no part of the program (the file set
    :func:`mdlbench.coding.program.measure` counts starts here)."""
    parser = argparse.ArgumentParser(prog="mdlbench decode", description=__doc__.splitlines()[0])
    add_arguments(parser)
    args = parser.parse_intermixed_args(argv)
    return one_line("mdlbench", lambda: command(args))


if __name__ == "__main__":
    sys.exit(main())
