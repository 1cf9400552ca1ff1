"""``mdlbench compress FILE -o FILE.mdl`` and ``mdlbench decompress FILE.mdl -o FILE``.

Compression is a prequential coding run on one file with a named model preset from
``conf/model/``; the container is verified by a separate decoder process unless
``--no-verify`` is given. Decompression is the replay decoder.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from mdlbench.errors import MdlbenchError


def add_compress_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("file", help="the file to compress")
    p.add_argument("-o", "--output", required=True, help="the .mdl container to write")
    p.add_argument("--model", default="lstm_ngram",
                   help="a model preset from conf/model/ (default: lstm_ngram, the best practical one on a CPU)")
    p.add_argument("--no-verify", action="store_true", help="skip the separate-process decode check")
    p.add_argument("overrides", nargs="*", help="further Hydra-style overrides, e.g. code.seq_len=256")


def compress_command(args: argparse.Namespace) -> int:
    from mdlbench import data as data_lib, train

    src, out = Path(args.file), Path(args.output)
    # Checked before coding, which may take minutes: its result would have nowhere to go.
    if not out.parent.exists():
        raise MdlbenchError(f"output directory {out.parent} does not exist")
    if not out.parent.is_dir():
        raise MdlbenchError(f"output directory {out.parent} is not a directory")
    if out.is_dir():
        raise MdlbenchError(f"output {out} is a directory; name the container file")
    from mdlbench import jobs

    cfg = jobs.byte_code(jobs.compose([f"model={args.model}", "data=file", f"data.path={src}", "logger=disabled",
                                       f"code.verify={not args.no_verify}", *args.overrides]), "mdlbench compress")
    cfg.experiment = "compress"
    dataset = data_lib.load(cfg.data)
    train.pin_threads(cfg.threads)
    s = train.code_dataset(cfg, dataset, out, progress=True)
    c = s["code"]
    print(f"{src}: {s['data']['bytes']} bytes -> {out}: {s['code']['container_bytes']} bytes "
          f"(payload {c['bits']} bits = {c['bits_per_byte']:.4f} bits/byte; ideal {c['ideal_bits_per_byte']:.4f}; "
          f"model {cfg.model.name}, {s['model']['n_params']} parameters)")
    if cfg.code.verify:
        if not s["verify"]["ok"]:
            out.unlink(missing_ok=True)
            raise MdlbenchError(f"verification failed, nothing written: {s['verify'].get('error', 'sha256 mismatch')}")
        print(f"verified by a separate decoder: sha256 {s['verify']['decoded_sha256']}")
    else:
        print("not verified (--no-verify): run `mdlbench decompress` to check it")
    if s.get("baselines"):
        print(train.comparison_table(s))
    return 0


def add_decompress_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("file", help="the .mdl container")
    p.add_argument("-o", "--output", required=True, help="where to write the decoded bytes")


def decompress_command(args: argparse.Namespace) -> int:
    from mdlbench.codes import replay

    r = replay.decode_file(args.file, args.output)
    print(f"{args.file} -> {args.output}: {r['bytes']} bytes, sha256 {r['decoded_sha256']} OK")
    return 0
