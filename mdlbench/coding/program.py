"""The program half of a two-part description: the decoder's own source plus the resolved config.

A receiver that holds the program (code + config + seed) and the bitstream recovers the data,
so the description length is program bits + payload bits. The program of a container is the
source its decoder runs, found from the code rather than listed by hand: starting at the
module the receiver runs for that container kind (``DECODERS``), every ``import`` and
``from ... import`` of an ``mdlbench`` module anywhere in a file (function-level lazy imports
included, so ``models/__init__.py``'s import of every family and of the n-gram experts counts)
is followed, together with the parent packages Python imports on the way. Blocks under
``if __name__ == "__main__":`` are skipped except in the entry module itself (that is the block
``python -m`` runs). The walk does not enter the few encoder-side modules in ``ENCODER_ONLY``
that a decoder module names without running (the packages' lazy ``run_*`` wrappers). Imports
by computed name (``importlib.import_module``) are not seen; no decoder makes one, and the
tests in ``tests/test_program.py`` check every decoder's ``sys.modules`` against the result.

:func:`measure` gives, per container kind, the file list, the sha256 of a deterministic tar of
those files (the decoder refuses a container whose recorded hash differs: :func:`check`) and
the program bits: the xz-compressed size of that tar plus the resolved config as JSON.
Analysis, plotting and experiment code are not part of any program: no decoder imports them.
"""

from __future__ import annotations

import ast
import dataclasses
import hashlib
import io
import json
import lzma
import tarfile
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from mdlbench.errors import EnvironmentMismatch

PACKAGE = "mdlbench"
PACKAGE_DIR = Path(__file__).resolve().parent.parent

PREQUENTIAL = "mdlbench.prequential"
SUPERVISED_LABELS = "mdlbench.supervised_labels"
BBANS = "mdlbench.bbans"
BITSBACK_WEIGHTS = "mdlbench.bitsback_weights"

# Container kind -> the module(s) its receiver runs with ``python -m`` (the verifiers run the same).
# Both bits-back kinds share one decoder (``files.decode_files`` handles either), hence one program.
DECODERS: dict[str, tuple[str, ...]] = {
    PREQUENTIAL: ("mdlbench.codes.replay",),
    SUPERVISED_LABELS: ("mdlbench.codes.supervised.__main__",),
    BBANS: ("mdlbench.codes.bits_back.__main__",),
    BITSBACK_WEIGHTS: ("mdlbench.codes.bits_back.__main__",),
}
# Encoder-side modules that decoder modules name without ever running them: the packages'
# lazy ``run_codes`` / ``run_bits_back`` wrappers. Entering them would count the experiment drivers, tables and figures as the program.
ENCODER_ONLY = frozenset({"mdlbench.codes.supervised.run", "mdlbench.codes.bits_back.run"})


def _module_file(name: str) -> Path | None:
    """The file of package module ``name`` (``a.b`` -> ``a/b.py`` or ``a/b/__init__.py``), if any.

    Resolved on the file system, never by importing: importing would run the module (and JAX)."""
    parts = name.split(".")
    if parts[0] != PACKAGE:
        return None
    base = PACKAGE_DIR.joinpath(*parts[1:])
    if (base / "__init__.py").is_file():
        return base / "__init__.py"
    if len(parts) > 1 and base.with_name(base.name + ".py").is_file():
        return base.with_name(base.name + ".py")
    return None  # an attribute (``from pkg import function``) or not a package module


def _is_main_guard(node: ast.AST) -> bool:
    if not isinstance(node, ast.If) or not isinstance(node.test, ast.Compare):
        return False
    t = node.test
    sides = [t.left, *t.comparators]
    return (len(t.ops) == 1 and isinstance(t.ops[0], ast.Eq)
            and any(isinstance(s, ast.Name) and s.id == "__name__" for s in sides)
            and any(isinstance(s, ast.Constant) and s.value == "__main__" for s in sides))


def _imported_names(name: str, path: Path, run_as_main: bool) -> set[str]:
    """Every module name ``name``'s source imports (or might: ``from a import b`` yields ``a``
    and ``a.b``), anywhere in the file; ``__main__`` blocks only when it is run as the script."""
    tree = ast.parse(path.read_bytes(), filename=str(path))
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found: set[str] = set()

    def visit(node: ast.AST) -> None:
        for child in ast.iter_child_nodes(node):
            if not run_as_main and _is_main_guard(child):
                for sub in child.orelse:  # only the guarded body is the script's
                    visit_one(sub)
                continue
            visit_one(child)

    def visit_one(node: ast.AST) -> None:
        if isinstance(node, ast.Import):
            found.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                up = package.split(".")
                base_parts = up[:len(up) - (node.level - 1)] if node.level > 1 else up
                base = ".".join(base_parts + ([node.module] if node.module else []))
            else:
                base = node.module or ""
            found.add(base)
            found.update(f"{base}.{a.name}" for a in node.names if a.name != "*")
        visit(node)

    visit(tree)
    return found


def closure(entries: Iterable[str], stop: frozenset[str] = ENCODER_ONLY) -> tuple[str, ...]:
    """The package files that running ``entries`` can import, as sorted ``mdlbench/...`` paths.

    Args:
      entries: module names run as scripts (their ``__main__`` blocks count).
      stop: modules not entered unless they are entries themselves.

    Returns:
      Posix paths relative to the package's parent directory, sorted (deterministic).
    """
    entries = tuple(entries)
    seen: dict[str, Path] = {}
    todo = list(entries)
    while todo:
        name = todo.pop()
        if name in seen or (name in stop and name not in entries):
            continue
        path = _module_file(name)
        if path is None:
            continue
        seen[name] = path
        parts = name.split(".")
        todo.extend(".".join(parts[:i]) for i in range(1, len(parts)))  # parent packages run first
        todo.extend(_imported_names(name, path, name in entries))
    return tuple(sorted(p.relative_to(PACKAGE_DIR.parent).as_posix() for p in seen.values()))


def _add(tar: tarfile.TarFile, name: str, data: bytes) -> None:
    info = tarfile.TarInfo(name)
    info.size = len(data)
    info.mode = 0o644
    info.mtime = 0  # reproducible: no clock, owner or permissions leak into the archive
    tar.addfile(info, io.BytesIO(data))


def archive(files: Iterable[str], config: dict[str, Any] | None = None) -> bytes:
    """Deterministic tar of ``files`` (``mdlbench/...`` paths) and the config, when given."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.USTAR_FORMAT) as tar:
        for f in files:
            _add(tar, f, (PACKAGE_DIR.parent / f).read_bytes())
        if config is not None:
            _add(tar, "config.json", json.dumps(config, sort_keys=True, indent=1).encode())
    return buf.getvalue()


def files_sha256(files: Iterable[str]) -> str:
    """sha256 of the deterministic tar of ``files`` (``mdlbench/...`` paths), without any config."""
    return hashlib.sha256(archive(files)).hexdigest()


@dataclasses.dataclass(frozen=True)
class ProgramInfo:
    """The program of one container kind, measured now.

    Attributes:
      kind: the container kind (``header["format"]`` of byte containers, ``header["kind"]``
        of the others).
      files: the decoder's source files, sorted ``mdlbench/...`` paths.
      source_sha256: sha256 of the deterministic tar of ``files`` (no config).
      bits: 8 x the xz size of that tar plus the config JSON; ``None`` when measured without
        a config (the decoder only needs the hash).
    """

    kind: str
    files: tuple[str, ...]
    source_sha256: str
    bits: int | None

    def header(self) -> dict[str, Any]:
        """The container header's ``program`` entry (also copied into run summaries)."""
        return {"source_sha256": self.source_sha256, "bits": self.bits, "files": list(self.files),
                "entry": list(DECODERS[self.kind])}


def measure(kind: str, config: dict[str, Any] | None = None) -> ProgramInfo:
    """File list, source sha256 and program bits of ``kind``'s decoder, from the source as it is now.

    Encoders call it once, before coding, so the recorded program is the one that made the
    payload (the source may change while a long run codes).

    Args:
      kind: a key of :data:`DECODERS`.
      config: the resolved config as stored in the container header; counted in ``bits``.

    Raises:
      KeyError: an unknown kind (a programming error, not a user's).
    """
    files = closure(DECODERS[kind])
    source = files_sha256(files)
    bits = None
    if config is not None:
        bits = 8 * len(lzma.compress(archive(files, config), preset=9 | lzma.PRESET_EXTREME))
    return ProgramInfo(kind, files, source, bits)


def source_sha256(kind: str = PREQUENTIAL) -> str:
    """Identifies the decoder's code: it refuses a container made by different code."""
    return measure(kind).source_sha256


def program_bits(config: dict[str, Any], kind: str = PREQUENTIAL) -> int:
    """Size in bits of the xz-compressed program (decoder source + resolved config)."""
    return int(measure(kind, config).bits)


def check(kind: str, recorded: dict[str, Any] | None) -> None:
    """Refuses, in one line, a container whose recorded program hash is not this source's.

    Args:
      kind: the container kind being decoded.
      recorded: the header's ``program`` entry (``None`` for files written before it existed).

    Raises:
      EnvironmentMismatch: the hashes differ or none was recorded.
    """
    here = source_sha256(kind)
    theirs = (recorded or {}).get("source_sha256")
    if theirs != here:
        made = f"program sha256 {theirs[:12]}..." if isinstance(theirs, str) else "no program sha256 recorded"
        raise EnvironmentMismatch(
            f"this container was made by different mdlbench source code ({made}, here {here[:12]}...); "
            "decode it with the commit that made it")
