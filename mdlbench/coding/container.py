"""The ``.mdl`` container: everything a receiver needs besides the program itself.

Layout (all integers little-endian)::

    magic        8 bytes  b"\\x89MDL\\r\\n\\x1a\\n"   (catches text-mode and truncation damage)
    version      u16
    header_len   u32, header (UTF-8 JSON), header_crc32 u32
    payload_len  u64, n_chunks u32
    n_chunks x   [chunk_len u32, chunk_crc32 u32, chunk bytes]
    payload_sha256  32 bytes
    end magic    8 bytes  b"MDLEND\\x00\\x00"

The header holds the resolved config, the program hash, the environment fingerprint with its
canary hash, and the data's length and sha256. Every way a file can be damaged (flipped bit,
truncation, appended bytes, edited header) fails one of the checks with a message that names
what failed and where. Files are written to a temporary name and renamed into place.
"""

from __future__ import annotations

import hashlib
import json
import os
import struct
import tempfile
import zlib
from pathlib import Path
from typing import Any

from mdlbench.errors import ContainerError

MAGIC = b"\x89MDL\r\n\x1a\n"
END = b"MDLEND\x00\x00"
VERSION = 1


def _crc(b: bytes) -> int:
    return zlib.crc32(b) & 0xFFFFFFFF


# Inputs and outputs at least this large are memory-mapped and handled one window at a time
# (the encoder's data, the decoder's output), so data larger than memory is streamed.
STREAM_BYTES = int(os.environ.get("MDLBENCH_STREAM_BYTES", 1 << 28))


def sha256_hex(buf, chunk: int = 1 << 24) -> str:
    """sha256 of bytes or a uint8 array (e.g. a memmap), 16 MiB at a time, so that hashing a
    memory-mapped file never needs a copy of it."""
    h = hashlib.sha256()
    for i in range(0, len(buf), chunk):
        piece = buf[i:i + chunk]
        h.update(piece if isinstance(piece, (bytes, bytearray)) else memoryview(piece))
    return h.hexdigest()


def encode(header: dict[str, Any], payload: bytes, chunk_bytes: int = 65536) -> bytes:
    """Serialises a header and payload into container bytes."""
    h = json.dumps(header, sort_keys=True, separators=(",", ":")).encode()
    chunks = [payload[i : i + chunk_bytes] for i in range(0, len(payload), chunk_bytes)]
    out = [MAGIC, struct.pack("<HI", VERSION, len(h)), h, struct.pack("<I", _crc(h))]
    out.append(struct.pack("<QI", len(payload), len(chunks)))
    for c in chunks:
        out += [struct.pack("<II", len(c), _crc(c)), c]
    out += [hashlib.sha256(payload).digest(), END]
    return b"".join(out)


def decode(blob: bytes, name: str = "container") -> tuple[dict[str, Any], bytes]:
    """Parses and checks container bytes; raises ContainerError naming the first failure."""
    pos = 0

    def take(n: int, what: str) -> bytes:
        nonlocal pos
        if pos + n > len(blob):
            raise ContainerError(f"{name}: truncated in {what} (needs bytes {pos}..{pos + n}, file has {len(blob)})")
        b = blob[pos : pos + n]
        pos += n
        return b

    if take(len(MAGIC), "the magic number") != MAGIC:
        raise ContainerError(f"{name}: not an mdlbench container (bad magic number)")
    version, hlen = struct.unpack("<HI", take(6, "the format header"))
    if version != VERSION:
        raise ContainerError(f"{name}: container format version {version} is not supported (this mdlbench reads {VERSION})")
    h = take(hlen, "the JSON header")
    (hcrc,) = struct.unpack("<I", take(4, "the header CRC"))
    if _crc(h) != hcrc:
        raise ContainerError(f"{name}: header CRC32 mismatch (header bytes {len(MAGIC) + 6}..{len(MAGIC) + 6 + hlen} corrupted)")
    try:
        header = json.loads(h)
    except ValueError as e:  # CRC passed, so the writer itself was wrong
        raise ContainerError(f"{name}: header is not valid JSON ({e})") from None
    plen, n_chunks = struct.unpack("<QI", take(12, "the payload header"))
    parts = []
    for i in range(n_chunks):
        start = pos
        clen, ccrc = struct.unpack("<II", take(8, f"chunk {i + 1}/{n_chunks} header"))
        c = take(clen, f"chunk {i + 1}/{n_chunks}")
        if _crc(c) != ccrc:
            raise ContainerError(f"{name}: chunk {i + 1}/{n_chunks} failed its CRC32 (file bytes {start}..{pos})")
        parts.append(c)
    payload = b"".join(parts)
    if len(payload) != plen:
        raise ContainerError(f"{name}: payload is {len(payload)} bytes but the header says {plen}")
    if take(32, "the payload sha256") != hashlib.sha256(payload).digest():
        raise ContainerError(f"{name}: payload sha256 mismatch (corrupted chunk table)")
    if take(len(END), "the end marker") != END:
        raise ContainerError(f"{name}: bad end marker at byte {pos - len(END)}")
    if pos != len(blob):
        raise ContainerError(f"{name}: {len(blob) - pos} unexpected bytes after the end marker (appended data?)")
    return header, payload


def atomic_write(path: str | os.PathLike, data: bytes) -> None:
    """Writes ``data`` to a temporary file beside ``path`` and renames it into place."""
    path = Path(path)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)  # mkstemp makes 0600; give the file the usual mode
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def write(path: str | os.PathLike, header: dict[str, Any], payload: bytes, chunk_bytes: int = 65536) -> int:
    """Writes a container atomically; returns its size in bytes."""
    blob = encode(header, payload, chunk_bytes)
    atomic_write(path, blob)
    return len(blob)


def read(path: str | os.PathLike) -> tuple[dict[str, Any], bytes]:
    """Reads and checks a container file."""
    path = Path(path)
    if path.is_dir():
        raise ContainerError(f"{path} is a directory, not a .mdl container")
    try:
        blob = path.read_bytes()
    except FileNotFoundError:
        raise ContainerError(f"{path}: no such file") from None
    return decode(blob, str(path))
