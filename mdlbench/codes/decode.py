"""``mdlbench decode TARGET [-o OUT] [--json FILE]``: decodes any container mdlbench writes.

The container's header says what made it: ``format: mdlbench.prequential`` (byte streams from
``mdlbench-train``, ``mdlbench compress``, ``mdlbench bench``), or ``kind`` ``mdlbench.bbans`` /
``mdlbench.bitsback_weights`` (bits-back codes) or ``mdlbench.supervised_labels`` (label codes).
This command reads the header without JAX and hands the file to the decoder of its kind, each of
which pins the recorded environment before JAX starts, re-runs the encoder's computation and
checks the sha256 of what it decoded. Each kind's decoder is also runnable on its own as the
receiver's program (:data:`mdlbench.coding.program.DECODERS`); this dispatcher is not part of any
program, as a receiver who holds one container needs only its own decoder.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from mdlbench.codes.replay import find_container
from mdlbench.coding import container, program
from mdlbench.errors import ContainerError, MdlbenchError

KINDS = (program.PREQUENTIAL, program.BBANS, program.BITSBACK_WEIGHTS, program.SUPERVISED_LABELS)


def container_kind(path: Path, header: dict[str, Any]) -> str:
    """The container kind (a key of :data:`mdlbench.coding.program.DECODERS`) its header names."""
    if header.get("format") == program.PREQUENTIAL:  # byte containers name their payload format
        return program.PREQUENTIAL
    if header.get("kind") in KINDS:
        return header["kind"]
    what = header.get("kind") or header.get("format")
    raise ContainerError(f"{path}: not a container mdlbench can decode (kind/format {what!r}; "
                         f"known: {', '.join(KINDS)})")


def decode(path: Path, kind: str, output: str | Path | None = None, data_dir: str | None = None) -> dict[str, Any]:
    """Decodes one bits-back or label container in this process (which must not have imported JAX
    yet); byte streams go through :func:`mdlbench.codes.replay.command` instead (see :func:`command`).

    Args:
      path: the container.
      kind: its :func:`container_kind`.
      output: where the decoded bytes go after the sha256 check (bbans: one uint8 per pixel;
        weights: the labels as uint8). Label files only verify.
      data_dir: the shared data folder for codes whose side information is data (weights, labels).

    Returns:
      The decoder's result, with ``kind`` and ``file`` added.

    Raises:
      ContainerError, EnvironmentMismatch, DataError, DecodeError: each with one line.
    """
    if kind in (program.BBANS, program.BITSBACK_WEIGHTS):
        from mdlbench.codes.bits_back.files import decode_files

        (res,) = decode_files([path], data_dir, output)
    else:
        if output is not None:
            raise MdlbenchError(f"{path}: a label file is decoded to check its labels' sha256; it has no -o output")
        from mdlbench.codes.supervised.files import decode_file

        res = decode_file(path, data_dir)
    return {**res, "kind": kind, "file": str(path)}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("target", help="a container (.mdl) or a run directory holding one")
    parser.add_argument("-o", "--output", help="write the decoded bytes here (default: only verify)")
    parser.add_argument("--json", metavar="FILE", help="write the verification result as JSON to FILE")
    parser.add_argument("--data-dir", help="shared data folder (side information of label and weights codes)")
    parser.add_argument("--progress", action="store_true",
                        help="byte streams: one 'progress BYTES ELAPSED_S' line per decoded step (for a parent's bar)")


def _line(r: dict[str, Any]) -> str:
    """One line saying what was decoded and that its sha256 matched."""
    if r["kind"] == program.SUPERVISED_LABELS:
        return (f"decoded {r['n']} labels ({r['code']} code), {r['payload_bits']} payload bits, "
                f"sha256 {r['labels_sha256']} OK ({r['decode_time_s']:.1f} s)")
    return (f"decoded {r['file']} ({r['kind']}): {r['payload_bits']} payload bits, sha256 {r['decoded_sha256']} OK "
            f"({r['decode_total_s']:.1f} s)" + (f" -> {r['output']}" if r.get("output") else ""))


def command(args: argparse.Namespace) -> int:
    path = find_container(args.target)
    header, _ = container.read(path)
    kind = container_kind(path, header)
    if kind == program.PREQUENTIAL:  # the byte decoder's own command: its --json, --progress and line
        from mdlbench.codes import replay

        return replay.command(argparse.Namespace(**{**vars(args), "target": str(path)}))
    result = decode(path, kind, args.output, args.data_dir)
    if args.json:
        container.atomic_write(args.json, json.dumps(result).encode())
    print(_line(result))
    return 0
