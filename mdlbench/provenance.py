"""Provenance of every file under ``results/``: the command and commit that made it.

The convention (one for tables, figures and summaries alike): whoever writes a file ``F`` under
``results/`` calls :func:`write` right after, which puts ``F.provenance.json`` beside it::

    {"schema": "mdlbench.provenance/1", "file": "codes_mnist5k.csv", "sha256": "...",
     "command": "mdlbench-train experiment=codes_mnist5k", "cwd": ".",
     "commit": "65612a6...", "dirty": true, "dirty_files": ["mdlbench/bench.py", ...],
     "date": "2026-12-01T10:00:00+00:00",
     "row_key": null,
     "results": [{"key": null, "kind": "mdlbench.supervised_labels", "config": {...},
                  "config_sha256": "...", "program_bits": 123456, "source_sha256": "...",
                  "command": ..., "commit": ..., "dirty": ..., "date": ...}]}

* ``sha256`` is the file's content when the sidecar was written: a hand edit shows as a mismatch.
* ``commit`` is HEAD of the checkout the *code* ran from (``None`` outside a git checkout, which
  :func:`check_file` then reports); ``dirty`` is true when that checkout had uncommitted changes
  outside ``results/`` (the outputs themselves do not make the code dirty), listed in
  ``dirty_files``.
* ``results`` describe the coded results in the file, as recorded by the run that coded them:
  the container kind, the config, its ``config_sha256``, ``program_bits`` and ``source_sha256``.
  An entry with ``key: null`` covers the whole file. Tables whose rows come from different runs
  (``mdlbench bench`` upserts) set ``row_key`` to the key columns and keep one entry per row, each
  with the command, commit and date of the write that made that row.

``tests/test_results.py`` runs the checks on ``results/``: :func:`check_file` (a sidecar naming
command and commit, the content hash matching, one entry per keyed row) and :func:`check_recorded`
(each recorded ``config_sha256`` / ``program_bits`` / ``source_sha256`` equal to what the code *of
the recorded commit* computes for the recorded config: the numbers are tied to a commit anyone can
check out and re-run the recorded command on). A result made from uncommitted code cannot be tied
to any commit and is refused. Whether a result is also what *today's* code would give is a
separate question, answered by :func:`check_current` and ``mdlbench provenance --today``: a
result from an older commit is not wrong, it is labelled with that commit, and READMEs quoting it
say which. No JAX is imported here.
"""

from __future__ import annotations

import csv
import datetime
import functools
import hashlib
import io
import json
import os
import shlex
import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterable

if TYPE_CHECKING:
    import argparse

SCHEMA = "mdlbench.provenance/1"
SUFFIX = ".provenance.json"
REPO_ROOT = Path(__file__).resolve().parent.parent
MAX_DIRTY_FILES = 100

# Container kinds (the same strings as ``mdlbench.coding.program``'s constants).
PREQUENTIAL = "mdlbench.prequential"
SUPERVISED_LABELS = "mdlbench.supervised_labels"
BBANS = "mdlbench.bbans"
BITSBACK_WEIGHTS = "mdlbench.bitsback_weights"


# --------------------------------------------------------------------------- writing


def sidecar(path: str | os.PathLike) -> Path:
    """The provenance file of ``path``: ``<path>.provenance.json`` in the same directory."""
    path = Path(path)
    return path.with_name(path.name + SUFFIX)


def _git(repo: Path, *args: str) -> str | None:
    try:
        proc = subprocess.run(["git", "-C", str(repo), *args], capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.SubprocessError):
        return None  # no git binary, or it hung: provenance says "unknown" rather than failing the run
    return proc.stdout if proc.returncode == 0 else None


def git_state(repo: str | os.PathLike | None = None) -> dict[str, Any]:
    """HEAD, the dirty flag and the changed paths of the checkout holding the code.

    Cached per process: the state when the first output was written stands for the whole run.

    Args:
      repo: the directory whose checkout is asked; by default the one this package lives in.

    Returns:
      ``{"commit": str | None, "dirty": bool | None, "dirty_files": [...]}``; ``None`` values when
      ``repo`` is not the top of a git checkout (an installed package, a tarball) or git is missing.
    """
    return _git_state(Path(REPO_ROOT if repo is None else repo).resolve())


@functools.lru_cache(maxsize=8)
def _git_state(repo: Path) -> dict[str, Any]:
    top = _git(repo, "rev-parse", "--show-toplevel")
    # An installed package can sit inside some other checkout (a venv in the repo): that HEAD
    # does not describe this code, so only the checkout whose top is ``repo`` counts.
    if top is None or Path(top.strip()).resolve() != repo:
        return {"commit": None, "dirty": None, "dirty_files": []}
    head = _git(repo, "rev-parse", "--verify", "HEAD")
    status = _git(repo, "status", "--porcelain=v1", "--untracked-files=normal", "--", ".", ":(exclude)results")
    files = sorted({line[3:] for line in (status or "").splitlines() if len(line) > 3})
    return {"commit": head.strip() if head else None, "dirty": bool(files) if status is not None else None,
            "dirty_files": files[:MAX_DIRTY_FILES] + ([f"... {len(files) - MAX_DIRTY_FILES} more"]
                                                     if len(files) > MAX_DIRTY_FILES else [])}


def command_line(argv: list[str] | None = None, orig_argv: list[str] | None = None) -> str:
    """This process's command line as a user would type it.

    Console scripts appear by name (``mdlbench-train experiment=codes_mnist5k``), ``python -m``
    runs as ``python -m module ...``, anything else by its script name.

    Args:
      argv: ``sys.argv`` (default).
      orig_argv: ``sys.orig_argv`` (default): tells ``python -m`` and ``python -c`` apart.
    """
    argv = list(sys.argv if argv is None else argv)
    orig = list(getattr(sys, "orig_argv", []) if orig_argv is None else orig_argv)
    if not argv:
        return ""
    head = argv[0]
    if "-m" in orig[1:]:
        i = orig.index("-m", 1)
        prog = ["python", "-m", orig[i + 1]] if i + 1 < len(orig) else ["python", "-m"]
    elif head == "-c":
        prog = ["python", "-c", orig[orig.index("-c", 1) + 1] if "-c" in orig[1:] else "..."]
    else:
        prog = [Path(head).name]
    return shlex.join(prog + argv[1:])


def _cwd() -> str:
    cwd = Path.cwd().resolve()
    try:
        return cwd.relative_to(REPO_ROOT).as_posix() or "."
    except ValueError:
        return str(cwd)


def made_by() -> dict[str, Any]:
    """Command, working directory (relative to the repository when inside it), commit and date now."""
    return {"command": command_line(), "cwd": _cwd(), **git_state(),
            "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")}


def result(key: Any = None, *, kind: str | None = None, config: dict[str, Any] | None = None,
           config_sha256: str | None = None, program_bits: int | None = None,
           source_sha256: str | None = None, **extra: Any) -> dict[str, Any]:
    """One entry of a sidecar's ``results``: a row (or the whole file, ``key=None``) and what made it.

    Args:
      key: the row's key values (``row_key`` columns, as written in the table), or ``None``.
      kind: the container kind of the coded result (a key of :data:`RECOMPUTE`), if coded.
      config: the config as the run recorded it (what :func:`expected` recomputes from).
      config_sha256, program_bits, source_sha256: as the run recorded them.
      extra: further fields worth keeping (e.g. ``record``: where the run's summary is).

    Returns:
      The entry, stamped with this process's command, commit and date.
    """
    entry: dict[str, Any] = {"key": None if key is None else [str(k) for k in key]}
    coded = {"kind": kind, "config": config, "config_sha256": config_sha256, "program_bits": program_bits,
             "source_sha256": source_sha256}
    entry.update({k: v for k, v in coded.items() if v is not None})
    entry.update(extra)
    entry.update(made_by())
    return entry


def file_sha256(path: str | os.PathLike) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def write(path: str | os.PathLike, *, results: Iterable[dict[str, Any]] = (),
          row_key: list[str] | None = None) -> Path:
    """Records the provenance of ``path`` (already written) in ``<path>.provenance.json``.

    Call it right after writing the file, from the process that wrote it.

    Args:
      path: the output file.
      results: entries made by :func:`result` (coded results the file describes).
      row_key: key columns of a CSV whose every row has its own entry in ``results``.

    Returns:
      The sidecar's path.
    """
    from mdlbench.coding.container import atomic_write

    path = Path(path)
    doc = {"schema": SCHEMA, "file": path.name, "sha256": file_sha256(path), **made_by(),
           "row_key": list(row_key) if row_key else None, "results": list(results)}
    out = sidecar(path)
    atomic_write(out, (json.dumps(doc, indent=1, sort_keys=False, default=_json_default) + "\n").encode())
    return out


def _json_default(o: Any) -> Any:
    item = getattr(o, "item", None)  # numpy scalars
    if callable(item):
        return item()
    return str(o)


def read(path: str | os.PathLike) -> dict[str, Any] | None:
    """The provenance recorded for ``path``, or ``None`` when there is none (or it is unreadable)."""
    try:
        doc = json.loads(sidecar(path).read_text())
    except (OSError, json.JSONDecodeError):
        return None
    return doc if isinstance(doc, dict) else None


def kept_results(path: str | os.PathLike, keys: Iterable[Iterable[Any]]) -> list[dict[str, Any]]:
    """The entries of ``path``'s current sidecar whose keys are in ``keys`` (rows an upsert keeps)."""
    want = {tuple(str(k) for k in key) for key in keys}
    old = read(path) or {}
    return [e for e in old.get("results") or [] if isinstance(e.get("key"), list) and tuple(e["key"]) in want]


# --------------------------------------------------------------------------- checking


def _program(kind: str, config: dict[str, Any]) -> tuple[int | None, str | None]:
    """(program bits, source sha256) of ``kind``'s decoder for ``config``, by today's code."""
    from mdlbench.coding import program

    info = program.measure(kind, config)
    return info.bits, info.source_sha256


def _supervised_config_sha256(config: dict[str, Any]) -> str:
    """sha256 of a supervised label-code config (paths and verification excluded, as bits-back's)."""
    from mdlbench.codes.supervised import config as sconfig

    d = sconfig.to_dict(sconfig.from_dict(config))
    for key in ("data_dir", "out_dir", "verify"):
        d.pop(key, None)
    return hashlib.sha256(json.dumps(d, sort_keys=True).encode()).hexdigest()


def supervised_config_sha256(config: dict[str, Any]) -> str:
    """The ``config_sha256`` recorded for label-code results (the supervised config has no hash of its own)."""
    return _supervised_config_sha256(config)


def expected(kind: str, config: dict[str, Any]) -> dict[str, Any]:
    """What today's code computes for a recorded config of a coded result.

    Args:
      kind: the container kind (:data:`PREQUENTIAL`, :data:`SUPERVISED_LABELS`, :data:`BBANS`,
        :data:`BITSBACK_WEIGHTS`).
      config: the config as recorded (a full ``mdlbench.config`` dict for prequential runs, the
        ``supervised`` / ``bits_back`` section otherwise).

    Returns:
      ``{"config_sha256": ..., "program_bits": ...}``: the config through today's ``from_dict``
      and hash, and ``mdlbench.coding.program.measure(kind, config).bits``.

    Raises:
      KeyError: an unknown kind. ConfigError: a config today's code no longer accepts.
    """
    if kind == PREQUENTIAL:
        from mdlbench import config as config_lib

        cfg = config_lib.from_dict(config)
        bits, _ = _program(kind, config_lib.program_dict(cfg))
        return {"config_sha256": config_lib.config_hash(cfg), "program_bits": bits}
    if kind == SUPERVISED_LABELS:
        from mdlbench.codes.supervised import config as sconfig

        bits, _ = _program(kind, sconfig.to_dict(sconfig.from_dict(config)))
        return {"config_sha256": _supervised_config_sha256(config), "program_bits": bits}
    if kind in (BBANS, BITSBACK_WEIGHTS):
        from mdlbench.codes.bits_back import config as bconfig

        cfg = bconfig.from_dict(config)
        bits, _ = _program(kind, bconfig.to_dict(cfg))
        return {"config_sha256": bconfig.config_hash(cfg), "program_bits": bits}
    raise KeyError(kind)


def _csv_keys(path: Path, columns: list[str]) -> list[tuple[str, ...]] | str:
    try:
        with open(path, newline="") as f:
            rows = list(csv.DictReader(f))
    except (OSError, csv.Error, UnicodeDecodeError) as e:
        return f"cannot read its rows ({e})"
    missing = [c for c in columns if rows and c not in rows[0]]
    if missing:
        return f"row_key columns {missing} are not in the table"
    return [tuple(r[c] for c in columns) for r in rows]


def _where(path: Path, entry: dict[str, Any]) -> str:
    return f"{path} [{' | '.join(entry['key'])}]" if isinstance(entry.get("key"), list) else str(path)


def check_file(path: str | os.PathLike) -> list[str]:
    """Problems with the provenance recorded for ``path``; empty when it is complete.

    The sidecar must exist, name a command and a commit, match the file's content (a hand edit
    breaks the sha256), and, for a keyed table, hold one entry per row and none for rows gone.

    Args:
      path: a file under ``results/`` (not a sidecar).

    Returns:
      One line per problem, each starting with the path.
    """
    path = Path(path)
    doc = read(path)
    if doc is None:
        return [f"{path}: no provenance ({sidecar(path).name} missing or unreadable)"]
    problems = [f"{path}: provenance names no {field}" for field in ("command", "commit") if not doc.get(field)]
    if doc.get("sha256") != file_sha256(path):
        problems.append(f"{path}: content differs from what its command wrote (sha256 mismatch: edited by hand "
                        "or rewritten without provenance)")
    entries = [e for e in doc.get("results") or [] if isinstance(e, dict)]
    if doc.get("row_key"):
        keys = _csv_keys(path, list(doc["row_key"]))
        if isinstance(keys, str):
            problems.append(f"{path}: {keys}")
        else:
            have = {tuple(e["key"]) for e in entries if isinstance(e.get("key"), list)}
            problems += [f"{path}: row {' | '.join(key)} has no provenance entry" for key in keys if key not in have]
            problems += [f"{path}: provenance entry for a row no longer in the table: {' | '.join(key)}"
                         for key in sorted(have - set(keys))]
    for e in entries:
        problems += [f"{_where(path, e)}: result names no {field}" for field in ("command", "commit")
                     if not e.get(field)]
        if e.get("kind") is not None and not isinstance(e.get("config"), dict):
            problems.append(f"{_where(path, e)}: coded result of kind {e['kind']} records no config")
    return problems


def check_current(path: str | os.PathLike, cache: dict[Any, dict[str, Any]] | None = None) -> list[str]:
    """Problems where ``path``'s recorded ``config_sha256`` / ``program_bits`` are no longer what
    today's code computes for the recorded config (:func:`expected`).

    Args:
      path: a file under ``results/`` (not a sidecar); files without provenance have nothing to check.
      cache: shared between calls so that each config's program is measured once.

    Returns:
      One line per stale value, each starting with the path and naming both values.
    """
    path = Path(path)
    cache = {} if cache is None else cache
    problems = []
    for e in (read(path) or {}).get("results") or []:
        kind, config = (e.get("kind"), e.get("config")) if isinstance(e, dict) else (None, None)
        if kind is None or not isinstance(config, dict):
            continue
        ck = (kind, json.dumps(config, sort_keys=True))
        if ck not in cache:
            try:
                cache[ck] = expected(kind, config)
            except KeyError:
                cache[ck] = {"error": f"unknown kind {kind!r}"}
            except Exception as err:  # noqa: BLE001 - today's code refusing an old config is a finding
                cache[ck] = {"error": f"today's code refuses the recorded config ({type(err).__name__}: {err})"}
        got = cache[ck]
        if "error" in got:
            problems.append(f"{_where(path, e)}: {got['error']}")
            continue
        problems += _mismatches(path, e, got, "today's code", "for the recorded config: regenerate it with its command")
    return problems


def _mismatches(path: Path, entry: dict[str, Any], want: dict[str, Any], by: str, then: str) -> list[str]:
    """One line per recorded ``config_sha256`` / ``program_bits`` / ``source_sha256`` of ``entry``
    that is missing or differs from ``want`` (what ``by`` computes); fields ``want`` lacks are not
    asked, and a missing ``source_sha256`` is allowed (older tables did not copy it)."""
    out = []
    for field in ("config_sha256", "program_bits", "source_sha256"):
        if want.get(field) is None:
            continue
        if field not in entry:
            if field != "source_sha256":
                out.append(f"{_where(path, entry)}: coded result of kind {entry['kind']} records no {field}")
        elif entry[field] != want[field]:
            out.append(f"{_where(path, entry)}: recorded {field} {entry[field]} but {by} gives {want[field]} {then}")
    return out


# Run inside an export of one commit's ``mdlbench/`` (the working directory): that commit's own
# :func:`expected` for each recorded (kind, config), read as JSON from stdin.
_AT_COMMIT = r"""
import json, os, sys
sys.path.insert(0, os.getcwd())
import mdlbench
assert os.path.dirname(os.path.abspath(mdlbench.__file__)) == os.path.join(os.getcwd(), "mdlbench"), mdlbench.__file__
from mdlbench import provenance
out = []
for kind, config in json.load(sys.stdin):
    try:
        from mdlbench.coding import program
        out.append({**provenance.expected(kind, config), "source_sha256": program.measure(kind).source_sha256})
    except Exception as err:
        out.append({"error": f"the code of that commit refuses the recorded config ({type(err).__name__}: {err})"})
print(json.dumps(out))
"""


def _expected_at(commit: str, items: list[tuple[str, dict[str, Any]]]) -> list[dict[str, Any]] | str:
    """What the code of ``commit`` computes for each (kind, config), or one line saying why it cannot.

    The commit's ``mdlbench/`` is exported from this checkout's git history into a temporary
    directory and asked in a subprocess, so today's modules never mix with that commit's."""
    repo = Path(REPO_ROOT)
    if _git(repo, "cat-file", "-e", f"{commit}^{{commit}}") is None:
        return f"commit {commit[:12]} is not in this checkout's history (a shallow clone?): cannot check"
    with tempfile.TemporaryDirectory(prefix="mdlbench-at-commit-") as tmp:
        try:
            tar = subprocess.run(["git", "-C", str(repo), "archive", "--format=tar", commit, "mdlbench"],
                                 capture_output=True, check=True, timeout=120).stdout
            with tarfile.open(fileobj=io.BytesIO(tar)) as tf:
                # The "data" filter (no absolute paths or links out) exists from Python 3.11.4 on.
                tf.extractall(tmp, **({"filter": "data"} if hasattr(tarfile, "data_filter") else {}))
            proc = subprocess.run([sys.executable, "-c", _AT_COMMIT], input=json.dumps(items), cwd=tmp,
                                  capture_output=True, text=True, timeout=600)
        except (OSError, subprocess.SubprocessError, tarfile.TarError) as err:
            return f"cannot export commit {commit[:12]} ({type(err).__name__}: {err})"
    if proc.returncode != 0:
        last = (proc.stderr.strip().splitlines() or ["no output"])[-1]
        return f"the code of commit {commit[:12]} failed to recompute its results ({last})"
    return json.loads(proc.stdout)


def check_recorded(paths: Iterable[str | os.PathLike]) -> list[str]:
    """Problems where a recorded coded result is not what the code of its recorded commit gives.

    Each entry with a ``kind`` and a ``config`` must name a commit, must not come from a dirty
    checkout (uncommitted code: no commit can reproduce it), and its ``config_sha256``,
    ``program_bits`` and ``source_sha256`` must equal what that commit's code computes for the
    recorded config (one subprocess per distinct commit, on an export of its ``mdlbench/``).

    Args:
      paths: files under ``results/`` (not sidecars); files without provenance have nothing to check.

    Returns:
      One line per problem, each starting with the path.
    """
    problems: list[str] = []
    todo: dict[str, list[tuple[Path, dict[str, Any]]]] = {}
    for path in map(Path, paths):
        for e in (read(path) or {}).get("results") or []:
            if not isinstance(e, dict) or e.get("kind") is None or not isinstance(e.get("config"), dict):
                continue
            if e.get("dirty") is not False:
                problems.append(f"{_where(path, e)}: made from uncommitted code (dirty checkout), so no commit "
                                "reproduces it: regenerate it with its command on a clean checkout")
            elif not isinstance(e.get("commit"), str):
                problems.append(f"{_where(path, e)}: names no commit")
            else:
                todo.setdefault(e["commit"], []).append((path, e))
    for commit, entries in sorted(todo.items()):
        unique = sorted({(e["kind"], json.dumps(e["config"], sort_keys=True)) for _, e in entries})
        got = _expected_at(commit, [(k, json.loads(c)) for k, c in unique])
        if isinstance(got, str):
            problems += [f"{_where(path, e)}: {got}" for path, e in entries]
            continue
        by_config = dict(zip(unique, got))
        for path, e in entries:
            want = by_config[(e["kind"], json.dumps(e["config"], sort_keys=True))]
            if "error" in want:
                problems.append(f"{_where(path, e)}: {want['error']}")
                continue
            problems += _mismatches(path, e, want, f"the code of its commit {commit[:12]}",
                                    "for the recorded config: it was not made by that commit's code")
    return problems


def committed_files(root: str | os.PathLike) -> list[Path]:
    """The files under ``root`` that git would commit (ignored ones, e.g. ``results/runs/``, left out),
    sidecars excluded; every non-hidden file outside ``runs/`` when git cannot tell."""
    root = Path(root).resolve()
    out = _git(root, "ls-files", "-z", "--cached", "--others", "--exclude-standard", "--", ".")
    if out is not None:
        files = [root / p for p in out.split("\0") if p]
    else:
        files = [p for p in root.rglob("*") if p.is_file() and not p.relative_to(root).parts[0] == "runs"]
    return sorted(p for p in files if p.is_file() and not p.name.endswith(SUFFIX)
                  and not any(part.startswith(".") for part in p.relative_to(root).parts))


def orphan_sidecars(root: str | os.PathLike) -> list[Path]:
    """Sidecars whose file is gone (a removed result's provenance left behind).

    The sidecar of a git-ignored file (``*_curves.csv``) is committed while its file is not, so
    on a fresh clone it has no file: that is not an orphan."""
    root = Path(root).resolve()
    gone = [p for p in root.rglob(f"*{SUFFIX}")
            if p.relative_to(root).parts[0] != "runs" and not p.with_name(p.name[:-len(SUFFIX)]).exists()]
    out = []
    for p in sorted(gone):
        ignored = _git(root, "check-ignore", "-q", "--no-index", str(p.with_name(p.name[:-len(SUFFIX)])))
        if ignored is None:  # exit status 1 (not ignored) or no git: a real orphan
            out.append(p)
    return out


def check_tree(root: str | os.PathLike, *, recompute: bool = True) -> list[str]:
    """Problems of every committed file under ``root`` (:func:`check_file`, and with ``recompute``
    :func:`check_recorded`: each coded result against the code of its recorded commit) and its
    orphan sidecars."""
    problems = [f"{p}: provenance of a file that no longer exists" for p in orphan_sidecars(root)]
    files = committed_files(root)
    for path in files:
        problems += check_file(path)
    if recompute:
        problems += check_recorded(files)
    return problems


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """``mdlbench provenance``'s arguments."""
    parser.add_argument("root", nargs="?", default=str(REPO_ROOT / "results"),
                        help="the results directory to check (default: this checkout's results/)")
    parser.add_argument("--today", action="store_true",
                        help="also list the results whose command, re-run on today's code, would record "
                             "other program bits or config hashes (stale, not wrong)")


def command(args: argparse.Namespace) -> int:
    """Checks every committed result's provenance; prints one line per problem (and, with
    ``--today``, one per dated result), then a summary line. Exits 1 on a problem only."""
    problems = check_tree(args.root)
    for line in problems:
        print(line)
    files = committed_files(args.root)
    dated: list[str] = []
    if args.today:
        cache: dict[Any, dict[str, Any]] = {}
        for path in files:
            dated += check_current(path, cache)
        for line in dated:
            print(f"dated: {line}")
    summary = (f"{len(problems)} problems" if problems else
               "every file names its command and commit, and every coded result is what its commit's code gives")
    if args.today:
        summary += f"; {len(dated)} recorded values that a re-run on today's code would change"
    print(f"{len(files)} files under {args.root}: {summary}")
    return 1 if problems else 0
