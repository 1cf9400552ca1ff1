"""The default data set ``pystdlib``: a fixed slice of this Python's own standard library source.

It exists on any machine with Python and no network. The bytes depend on the Python version
(the modules change a little between releases), so the registry records the sha256 measured on
a given version; on another version the data still loads, with a note that it differs.
"""

from __future__ import annotations

import sysconfig
from pathlib import Path

from mdlbench.errors import DataError

# Long-stable pure-Python modules, in sorted order; together well over SIZE bytes, so the cut
# falls inside the last files rather than short of SIZE on a version where they shrank a little.
FILES: tuple[str, ...] = (
    "abc.py",
    "bisect.py",
    "calendar.py",
    "colorsys.py",
    "contextlib.py",
    "copy.py",
    "fnmatch.py",
    "fractions.py",
    "functools.py",
    "glob.py",
    "graphlib.py",
    "heapq.py",
    "json/decoder.py",
    "numbers.py",
    "operator.py",
    "queue.py",
    "reprlib.py",
    "sched.py",
    "shlex.py",
    "textwrap.py",
)
SIZE = 262_144


def stdlib_dir() -> Path:
    """This interpreter's standard-library directory."""
    return Path(sysconfig.get_paths()["stdlib"])


def build(root: str | Path | None = None) -> tuple[bytes, list[str]]:
    """The ``pystdlib`` bytes and the files that contributed to them.

    Args:
      root: the standard-library directory; default: this interpreter's.

    Returns:
      Exactly :data:`SIZE` bytes: each file of :data:`FILES` after a ``# ==== <path> ====`` line,
      concatenated in order and cut; and the relative paths of the files used.
    """
    base = Path(root) if root else stdlib_dir()
    parts: list[bytes] = []
    used: list[str] = []
    total = 0
    for rel in FILES:
        if total >= SIZE:
            break
        path = base / rel
        try:
            body = path.read_bytes()
        except OSError as e:
            raise DataError(f"pystdlib: cannot read {path} ({e.strerror or e}); the standard library at "
                            f"{base} lacks a module the data set is built from") from e
        chunk = f"# ==== {rel} ====\n".encode() + body
        parts.append(chunk)
        used.append(rel)
        total += len(chunk)
    if total < SIZE:
        raise DataError(f"pystdlib: the {len(FILES)} modules under {base} give only {total} bytes, "
                        f"fewer than the {SIZE} the data set needs")
    return b"".join(parts)[:SIZE], used
