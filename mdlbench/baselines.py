"""Classic compressors on the same bytes: the reference lines every mdlbench figure is read against.

Six codes, each run through its Python binding with the settings of the usual command-line
invocation, and each *verified*: the output is decompressed and compared with the input before
its size is reported (a baseline figure is a real code too). Sizes include each format's own
container (headers, checksums, end markers), as the command-line tools would write them.

=========  ===========================================================================
name       settings
=========  ===========================================================================
gzip_9     DEFLATE level 9, window 2^15, memLevel 9 (GNU gzip's 32 KiB literal buffer), gzip
           header without file name and with mtime 0, CRC32 + length trailer. On text this
           is byte-identical to ``gzip -9 -c < FILE``; ``gzip -9 -c FILE`` adds the file name
           (len(name) + 1 bytes) and the file's mtime.
bzip2_9    libbzip2, 900 kB blocks: byte-identical to ``bzip2 -9 -c``.
xz_9e      liblzma, .xz format, preset 9 | PRESET_EXTREME, CRC64 check: byte-identical to
           single-threaded ``xz -9e -c`` (multi-threaded xz adds sizes to block headers).
zstd_19    libzstd level 19, frame with content size and XXH64 checksum (as the ``zstd``
           CLI writes by default). The python binding's bundled libzstd may be newer than the
           CLI's, so sizes can differ from ``zstd -19`` by a fraction of a percent.
brotli_11  quality 11, window chosen as the ``brotli`` CLI does: the smallest lgwin in
           [10, 24] whose window (2^lgwin - 16) covers the input.
ppmd_6     PPMd variant H (7-Zip's Ppmd7 with the 7z range coder) via pyppmd, order 6,
           256 MiB model memory, preceded by the input length as a LEB128 varint (7z stores
           it in its headers; the stream has no end marker). 7-Zip's own default for PPMd is
           order 6 with 16 MiB (level 5; 2^(19 + level) bytes); 16 MiB fills up on ~10 MB of
           text and the model restarts (dickens: 1.838 vs 1.803 bits/byte), so we use the
           memory 7-Zip gives level 9.
=========  ===========================================================================

The codes run in a process pool (``jobs`` workers, default 2), largest expected cost first.
Workers are spawned, not forked, so this is safe to call from a process that has started JAX.
"""

from __future__ import annotations

import argparse
import bz2
import csv
import hashlib
import json
import lzma
import multiprocessing
import os
import sys
import time
import zlib
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Sequence

from mdlbench.errors import DataError, DecodeError

PPMD_ORDER = 6
PPMD_MEM_BYTES = 256 << 20
BROTLI_QUALITY = 11


def _gzip_compress(data: bytes) -> bytes:
    # wbits 16 + 15 asks zlib for the gzip wrapper; memLevel 9 gives GNU gzip's literal buffer size,
    # which makes the DEFLATE stream match `gzip -9` exactly on text.
    enc = zlib.compressobj(9, zlib.DEFLATED, 16 + 15, 9)
    return enc.compress(data) + enc.flush()


def _gzip_decompress(blob: bytes) -> bytes:
    dec = zlib.decompressobj(16 + 15)
    out = dec.decompress(blob) + dec.flush()
    if not dec.eof or dec.unused_data:
        raise DecodeError("gzip stream is truncated or has trailing bytes")
    return out


def _bzip2_compress(data: bytes) -> bytes:
    return bz2.compress(data, 9)


def _xz_compress(data: bytes) -> bytes:
    return lzma.compress(data, format=lzma.FORMAT_XZ, check=lzma.CHECK_CRC64, preset=9 | lzma.PRESET_EXTREME)


def _zstd_compress(data: bytes) -> bytes:
    import zstandard

    return zstandard.ZstdCompressor(level=19, write_checksum=True, write_content_size=True).compress(data)


def _zstd_decompress(blob: bytes) -> bytes:
    import zstandard

    return zstandard.ZstdDecompressor().decompress(blob)


def brotli_lgwin(n_bytes: int) -> int:
    """The window the ``brotli`` CLI picks for an input of ``n_bytes``: smallest that covers it."""
    lgwin = 10
    while (1 << lgwin) - 16 < n_bytes and lgwin < 24:
        lgwin += 1
    return lgwin


def _brotli_compress(data: bytes) -> bytes:
    import brotli

    return brotli.compress(data, quality=BROTLI_QUALITY, lgwin=brotli_lgwin(len(data)))


def _brotli_decompress(blob: bytes) -> bytes:
    import brotli

    return brotli.decompress(blob)


def _uleb128(n: int) -> bytes:
    out = bytearray()
    while True:
        byte, n = n & 0x7F, n >> 7
        out.append(byte | (0x80 if n else 0))
        if not n:
            return bytes(out)


def _read_uleb128(blob: bytes) -> tuple[int, int]:
    n = shift = 0
    for i, byte in enumerate(blob[:10]):
        n |= (byte & 0x7F) << shift
        shift += 7
        if not byte & 0x80:
            return n, i + 1
    raise DecodeError("PPMd stream has a malformed length prefix")


def _ppmd_compress(data: bytes) -> bytes:
    import pyppmd

    enc = pyppmd.Ppmd7Encoder(PPMD_ORDER, PPMD_MEM_BYTES)
    return _uleb128(len(data)) + enc.encode(data) + enc.flush()


def _ppmd_decompress(blob: bytes) -> bytes:
    import pyppmd

    n, start = _read_uleb128(blob)
    if n == 0:
        return b""
    return pyppmd.Ppmd7Decoder(PPMD_ORDER, PPMD_MEM_BYTES).decode(blob[start:], n)


@dataclass(frozen=True)
class Baseline:
    """One classic code.

    Attributes:
      name: key in results (``gzip_9``).
      label: as on the command line (``gzip -9``).
      settings: the exact parameters, one line.
      compress, decompress: inverse functions on bytes.
      cost: relative compression time on text (schedules the slowest first).
    """

    name: str
    label: str
    settings: str
    compress: Callable[[bytes], bytes]
    decompress: Callable[[bytes], bytes]
    cost: float


BASELINES: dict[str, Baseline] = {b.name: b for b in (
    Baseline("gzip_9", "gzip -9", "DEFLATE level 9, window 2^15, memLevel 9, gzip header (no name, mtime 0)",
             _gzip_compress, _gzip_decompress, 1.1),
    Baseline("bzip2_9", "bzip2 -9", "libbzip2 block size 900k", _bzip2_compress, bz2.decompress, 1.0),
    Baseline("xz_9e", "xz -9e", "liblzma .xz, preset 9|EXTREME (LZMA2, 64 MiB dictionary), CRC64",
             _xz_compress, lzma.decompress, 10.0),
    Baseline("zstd_19", "zstd -19", "libzstd level 19, content size + XXH64 checksum",
             _zstd_compress, _zstd_decompress, 8.0),
    Baseline("brotli_11", "brotli -11", "quality 11, lgwin = smallest in [10, 24] covering the input (as the CLI)",
             _brotli_compress, _brotli_decompress, 20.0),
    Baseline("ppmd_6", "PPMd o6", f"PPMd var.H (7z Ppmd7), order {PPMD_ORDER}, {PPMD_MEM_BYTES >> 20} MiB, "
             "LEB128 length prefix", _ppmd_compress, _ppmd_decompress, 3.0),
)}

_WORKER_DATA: bytes = b""


def _set_worker_data(data: bytes) -> None:
    # Runs once per worker: the input crosses the process boundary once per worker, not per task.
    global _WORKER_DATA
    _WORKER_DATA = data


def measure(name: str, data: bytes) -> dict[str, Any]:
    """Compresses ``data`` with one baseline, decompresses, checks, and reports.

    Returns:
      ``{"bytes", "bits_per_byte", "seconds" (compression wall time), "decompress_seconds",
      "verified": True, "settings"}``.

    Raises:
      DataError: unknown name or empty input. DecodeError: the round trip failed.
    """
    if name not in BASELINES:
        raise DataError(f"unknown baseline {name!r}: known baselines are {', '.join(BASELINES)}")
    if not data:
        raise DataError("cannot measure compression of empty input")
    b = BASELINES[name]
    t0 = time.perf_counter()
    blob = b.compress(data)
    t1 = time.perf_counter()
    try:
        back = b.decompress(blob)
    except DecodeError:
        raise
    except Exception as e:  # a library's own error type: the code is broken, report it as such
        raise DecodeError(f"{b.label} could not decode its own output: {e}") from None
    t2 = time.perf_counter()
    if back != data:
        raise DecodeError(f"{b.label} round trip changed the data ({len(back)} bytes back of {len(data)})")
    return {"bytes": len(blob), "bits_per_byte": 8.0 * len(blob) / len(data), "seconds": t1 - t0,
            "decompress_seconds": t2 - t1, "verified": True, "settings": b.settings}


def _measure_in_worker(name: str) -> dict[str, Any]:
    return measure(name, _WORKER_DATA)


def measure_all(data: bytes, *, jobs: int = 2, names: Sequence[str] | None = None) -> dict[str, dict[str, Any]]:
    """Runs every baseline (or ``names``) on ``data``, in parallel, each verified by a round trip.

    Args:
      data: the bytes to compress.
      jobs: worker processes; 1 runs in this process.
      names: a subset of :data:`BASELINES` keys; default all, in table order.

    Returns:
      ``{name: {"bytes", "bits_per_byte", "seconds", "decompress_seconds", "verified", "settings"}}``
      in the order of ``names``.

    Raises:
      DataError: empty input or unknown name. DecodeError: a round trip failed.
    """
    names = list(BASELINES if names is None else names)
    unknown = [n for n in names if n not in BASELINES]
    if unknown:
        raise DataError(f"unknown baseline(s) {', '.join(unknown)}: known baselines are {', '.join(BASELINES)}")
    if not data:
        raise DataError("cannot measure compression of empty input")
    data = bytes(data)
    if hasattr(os, "sched_getaffinity"):  # a job pinned to one CPU gains nothing from workers
        jobs = min(jobs, len(os.sched_getaffinity(0)))
    # Inside a launcher's worker (joblib's loky) the process-wide start method is the launcher's,
    # which spawned children cannot resolve: they die at start-up and the pool never finishes.
    foreign = multiprocessing.get_start_method(allow_none=True) not in (None, "fork", "spawn", "forkserver")
    if jobs <= 1 or len(names) <= 1 or foreign:
        return {n: measure(n, data) for n in names}
    order = sorted(names, key=lambda n: -BASELINES[n].cost)
    ctx = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(max_workers=min(jobs, len(names)), mp_context=ctx,
                             initializer=_set_worker_data, initargs=(data,)) as pool:
        futures = {n: pool.submit(_measure_in_worker, n) for n in order}
        results = {n: futures[n].result() for n in order}
    return {n: results[n] for n in names}


def library_versions() -> dict[str, str]:
    """Versions of the libraries behind the figures (sizes can change between versions)."""
    import brotli
    import pyppmd
    import zstandard

    return {"zlib": zlib.ZLIB_RUNTIME_VERSION, "zstd": ".".join(map(str, zstandard.ZSTD_VERSION)),
            "zstandard": zstandard.__version__, "brotli": getattr(brotli, "version", getattr(brotli, "__version__", "?")),
            "pyppmd": pyppmd.__version__, "python": sys.version.split()[0]}


def load_source(source: str, max_bytes: int = 0) -> dict[str, Any]:
    """Bytes named on the command line: a file path, or ``data=NAME`` via :func:`mdlbench.data.load`.

    Returns:
      ``{"name", "path", "bytes", "sha256", "data"}``.

    Raises:
      DataError: missing or empty file, or an unknown data set.
    """
    if max_bytes < 0:
        raise DataError(f"--max-bytes must be >= 0, got {max_bytes}")
    if source.startswith("data="):
        from mdlbench.config import DataConfig

        try:
            from mdlbench.data import load
        except ImportError as e:
            raise DataError(f"data={source[5:]} needs mdlbench.data.load, which cannot be imported: {e}") from None
        ds = load(DataConfig(name=source[5:], max_bytes=max_bytes))
        data, name, path = bytes(ds.data), ds.name, str(ds.path or "")
    else:
        p = Path(source)
        if not p.exists():
            raise DataError(f"file not found: {source} (to name a registered data set, write data=NAME)")
        if not p.is_file():
            raise DataError(f"not a regular file: {source}")
        with p.open("rb") as f:
            data = f.read(max_bytes) if max_bytes else f.read()
        name, path = p.name, str(p)
    if not data:
        raise DataError(f"{source} is empty: there is nothing to compress")
    return {"name": name, "path": path, "bytes": len(data), "sha256": hashlib.sha256(data).hexdigest(), "data": data}


def write_outputs(result: dict[str, Any], out_dir: str | Path | None = None, csv_path: str | Path | None = None) -> list[Path]:
    """Writes ``baselines.json`` into ``out_dir`` and/or a CSV table; returns the paths written."""
    written: list[Path] = []
    if out_dir:
        d = Path(out_dir)
        d.mkdir(parents=True, exist_ok=True)
        p = d / "baselines.json"
        p.write_text(json.dumps(result, indent=2) + "\n")
        written.append(p)
    if csv_path:
        p = Path(csv_path)
        p.parent.mkdir(parents=True, exist_ok=True)
        with p.open("w", newline="") as f:
            w = csv.writer(f)
            w.writerow(["data", "data_bytes", "data_sha256", "compressor", "label", "bytes", "bits_per_byte",
                        "seconds", "decompress_seconds", "settings"])
            for name, r in result["baselines"].items():
                w.writerow([result["data"]["name"], result["data"]["bytes"], result["data"]["sha256"], name,
                            BASELINES[name].label, r["bytes"], f"{r['bits_per_byte']:.6f}", f"{r['seconds']:.3f}",
                            f"{r['decompress_seconds']:.3f}", r["settings"]])
        written.append(p)
    return written


def run_baselines(source: str, *, jobs: int = 2, names: Sequence[str] | None = None,
                  max_bytes: int = 0) -> dict[str, Any]:
    """Loads ``source`` (see :func:`load_source`) and measures the baselines on it.

    Returns:
      ``{"data": {"name", "path", "bytes", "sha256"}, "baselines": measure_all(...), "jobs",
      "wall_s", "versions"}`` — the content of ``baselines.json``.
    """
    src = load_source(source, max_bytes)
    data = src.pop("data")
    t0 = time.perf_counter()
    measured = measure_all(data, jobs=jobs, names=names)
    return {"data": src, "baselines": measured, "jobs": jobs, "wall_s": time.perf_counter() - t0,
            "versions": library_versions()}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Arguments of ``mdlbench baselines``."""
    parser.add_argument("source", metavar="FILE|data=NAME", help="a file, or data=NAME for a registered data set")
    parser.add_argument("--jobs", type=int, default=2, help="worker processes (default 2; 1 = in this process)")
    parser.add_argument("--only", metavar="NAMES", help=f"comma-separated subset of: {','.join(BASELINES)}")
    parser.add_argument("--max-bytes", type=int, default=0, help="use only the first N bytes (0 = all)")
    parser.add_argument("--out", metavar="DIR", help="write DIR/baselines.json (e.g. beside the runs on this data)")
    parser.add_argument("--csv", nargs="?", const="", default=None, metavar="PATH",
                        help="also write a CSV table (default path results/tables/baselines_<name>.csv)")
    parser.add_argument("--json", action="store_true", help="print the result as JSON")


def command(args: argparse.Namespace) -> int:
    """``mdlbench baselines``: measures, prints a table, optionally writes JSON/CSV."""
    names = [n.strip() for n in args.only.split(",") if n.strip()] if args.only else None
    result = run_baselines(args.source, jobs=args.jobs, names=names, max_bytes=args.max_bytes)
    csv_path = None
    if args.csv is not None:
        csv_path = args.csv or Path("results") / "tables" / f"baselines_{result['data']['name']}.csv"
    written = write_outputs(result, args.out, csv_path)
    if args.json:
        print(json.dumps(result, indent=2))
    else:
        print_table(result)
    for p in written:
        print(f"wrote {p}", file=sys.stderr)
    return 0


def print_table(result: dict[str, Any]) -> None:
    """The human-readable table of :func:`run_baselines`'s result."""
    d = result["data"]
    print(f"baselines on {d['path'] or d['name']}: {d['bytes']:,} bytes, sha256 {d['sha256'][:16]}...")
    print(f"{'compressor':<12} {'bytes':>12} {'bits/byte':>10} {'seconds':>9} {'decomp_s':>9}  verified")
    for name, r in result["baselines"].items():
        print(f"{BASELINES[name].label:<12} {r['bytes']:>12,} {r['bits_per_byte']:>10.4f} {r['seconds']:>9.2f} "
              f"{r['decompress_seconds']:>9.2f}  {'yes' if r['verified'] else 'NO'}")
    print(f"wall time {result['wall_s']:.1f} s with {result['jobs']} worker(s); every figure decoded back to the "
          f"original bytes; sizes include each format's container")
    for name in result["baselines"]:
        print(f"  {BASELINES[name].label:<11} {BASELINES[name].settings}")


if __name__ == "__main__":  # pragma: no cover - the CLI entry point is mdlbench.cli
    from mdlbench.cli import main

    sys.exit(main(["baselines", *sys.argv[1:]]))
