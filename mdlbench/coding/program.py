"""The program half of a two-part description: mdlbench's own source plus the resolved config.

A receiver that holds the program (code + config + seed) and the bitstream recovers the data,
so the description length is program bits + payload bits. The program is the decoder's own
source: the package files the replay decoder imports (``DECODER_FILES``; a test checks that
list against what the decoder really imports), measured as the xz-compressed size of a
deterministic tar of those files plus the resolved config as JSON. Analysis, plotting and
experiment code are not part of it: the receiver does not need them.
"""

from __future__ import annotations

import hashlib
import io
import json
import lzma
import tarfile
from pathlib import Path
from typing import Any

PACKAGE_DIR = Path(__file__).resolve().parent.parent


def _add(tar: tarfile.TarFile, name: str, data: bytes) -> None:
    info = tarfile.TarInfo(name)
    info.size = len(data)
    info.mode = 0o644
    info.mtime = 0  # reproducible: no clock, owner or permissions leak into the archive
    tar.addfile(info, io.BytesIO(data))


DECODER_FILES = (
    "__init__.py", "checkpoint.py", "cli.py", "config.py", "errors.py",
    "coding/__init__.py", "coding/container.py", "coding/env.py", "coding/program.py", "coding/range_coder.py",
    "codes/__init__.py", "codes/prequential.py", "codes/replay.py",
    "models/__init__.py", "models/lstm.py", "models/transformer.py", "models/uniform.py",
)


def source_files() -> list[Path]:
    return [PACKAGE_DIR / f for f in DECODER_FILES]


def archive(config: dict[str, Any] | None = None) -> bytes:
    """Deterministic tar of the package source (and the config, when given)."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.USTAR_FORMAT) as tar:
        for p in source_files():
            _add(tar, f"mdlbench/{p.relative_to(PACKAGE_DIR).as_posix()}", p.read_bytes())
        if config is not None:
            _add(tar, "config.json", json.dumps(config, sort_keys=True, indent=1).encode())
    return buf.getvalue()


def source_sha256() -> str:
    """Identifies the code: the decoder refuses a container made by different code."""
    return hashlib.sha256(archive(None)).hexdigest()


def program_bits(config: dict[str, Any]) -> int:
    """Size in bits of the xz-compressed program (source + resolved config)."""
    return 8 * len(lzma.compress(archive(config), preset=9 | lzma.PRESET_EXTREME))
