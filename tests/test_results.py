"""Every committed file under ``results/`` names the command and commit that made it, its content is
what that command wrote, and the program bits and config hashes it records are what today's code
computes for the recorded configs (``mdlbench.provenance``). Plus the provenance writer itself.

Fast: no JAX; the only computing is measuring program bits (xz of the decoders' source).
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import REPO

from mdlbench import provenance

RESULTS = REPO / "results"


def test_every_committed_results_file_has_provenance_naming_its_command_and_commit():
    files = provenance.committed_files(RESULTS)
    assert files, "no files under results/"
    assert not any("runs" == p.relative_to(RESULTS).parts[0] for p in files)  # git ignores results/runs/
    problems = [f"{p}: provenance of a file that no longer exists" for p in provenance.orphan_sidecars(RESULTS)]
    for path in files:
        problems += provenance.check_file(path)
    assert not problems, "files under results/ without complete provenance (regenerate them with their " \
                         "recorded command):\n" + "\n".join(problems)


def test_recorded_program_bits_and_config_hashes_are_what_their_commits_code_gives():
    problems = provenance.check_recorded(provenance.committed_files(RESULTS))
    assert not problems, "committed results that their recorded commit does not reproduce:\n" + "\n".join(problems)


def test_check_at_the_recorded_commit_catches_wrong_numbers_dirty_code_and_unknown_commits(tmp_path):
    if provenance.git_state()["commit"] is None:
        pytest.skip("not a git checkout: no history to check against")
    # A real recorded result (its config as that commit's code wrote it; the working tree's
    # config schema may have moved on since).
    recorded = next(e for path in provenance.committed_files(RESULTS) for e in (provenance.read(path) or {})
                    .get("results") or [] if e.get("kind") == provenance.PREQUENTIAL and e.get("dirty") is False)
    head, config = recorded["commit"], recorded["config"]
    (want,) = provenance._expected_at(head, [(provenance.PREQUENTIAL, config)])
    assert want["program_bits"] > 0 and len(want["config_sha256"]) == 64 and len(want["source_sha256"]) == 64
    assert want["program_bits"] == recorded["program_bits"]
    f = tmp_path / "summary.json"
    f.write_text("{}")

    def record(**changes):
        entry = provenance.result(kind=provenance.PREQUENTIAL, config=config, **want)
        entry.update({"commit": head, "dirty": False, **changes})
        provenance.write(f, results=[entry])
        return provenance.check_recorded([f])

    assert record() == []
    (wrong,) = record(program_bits=want["program_bits"] + 8)
    assert f"recorded program_bits {want['program_bits'] + 8} but the code of its commit {head[:12]} gives " \
           f"{want['program_bits']}" in wrong
    (wrong,) = record(source_sha256="0" * 64)
    assert "recorded source_sha256 000" in wrong
    (dirty,) = record(dirty=True)
    assert "uncommitted code" in dirty
    (unknown,) = record(commit="0" * 40)
    assert "not in this checkout's history" in unknown


def test_provenance_command_reports_in_one_line_per_problem(tmp_path, capsys):
    from mdlbench import cli

    res = tmp_path / "results"
    res.mkdir()
    (res / "bare.csv").write_text("k\n")
    assert cli.main(["provenance", str(res)]) == 1
    out = capsys.readouterr().out.splitlines()
    assert out[0] == f"{res / 'bare.csv'}: no provenance (bare.csv.provenance.json missing or unreadable)"
    assert out[-1] == f"1 files under {res}: 1 problems"
    provenance.write(res / "bare.csv")
    assert cli.main(["provenance", str(res)]) == 0
    capsys.readouterr()
    assert cli.main(["provenance", str(res), "--today"]) == 0  # dated results are listed, not failed
    assert capsys.readouterr().out.splitlines()[-1].endswith("0 recorded values that a re-run on today's code would change")


# --------------------------------------------------------------------------- the writer


def _git(repo: Path, *args: str) -> str:
    return subprocess.run(["git", "-C", str(repo), "-c", "user.name=t", "-c", "user.email=t@t", *args],
                          check=True, capture_output=True, text=True).stdout.strip()


def test_git_state_commit_dirty_flag_and_no_checkout(tmp_path):
    repo = tmp_path / "repo"
    (repo / "results" / "runs").mkdir(parents=True)
    (repo / "code.py").write_text("x = 1\n")
    (repo / ".gitignore").write_text("results/runs/\n")
    _git(repo, "init", "-q")
    _git(repo, "add", "-A")
    _git(repo, "commit", "-q", "-m", "one")
    head = _git(repo, "rev-parse", "HEAD")
    assert provenance.git_state(repo) == {"commit": head, "dirty": False, "dirty_files": []}

    clean_but_results = repo / "clone2"
    subprocess.run(["git", "clone", "-q", str(repo), str(clean_but_results)], check=True)
    (clean_but_results / "results" / "t.csv").parent.mkdir(exist_ok=True)
    (clean_but_results / "results" / "t.csv").write_text("a\n")  # outputs do not make the code dirty
    assert provenance.git_state(clean_but_results)["dirty"] is False

    edited = repo / "clone3"
    subprocess.run(["git", "clone", "-q", str(repo), str(edited)], check=True)
    (edited / "code.py").write_text("x = 2\n")
    (edited / "new.py").write_text("")
    state = provenance.git_state(edited)
    assert state["commit"] == head and state["dirty"] is True and state["dirty_files"] == ["code.py", "new.py"]

    plain = tmp_path / "plain"
    plain.mkdir()
    assert provenance.git_state(plain) == {"commit": None, "dirty": None, "dirty_files": []}


def test_command_line_as_typed():
    assert provenance.command_line(["/v/bin/mdlbench-train", "experiment=codes_mnist5k"],
                                   ["/v/bin/python", "/v/bin/mdlbench-train", "experiment=codes_mnist5k"]) \
        == "mdlbench-train experiment=codes_mnist5k"
    assert provenance.command_line(["/r/mdlbench/codes/supervised/__main__.py", "run", "--config", "a b.yaml"],
                                   ["python3", "-m", "mdlbench.codes.supervised", "run", "--config", "a b.yaml"]) \
        == "python -m mdlbench.codes.supervised run --config 'a b.yaml'"
    assert provenance.command_line(["-c", "bench", "x=1"], ["py", "-c", "import m", "bench", "x=1"]) \
        == "python -c 'import m' bench x=1"


def test_writer_sidecar_and_what_the_checks_catch(tmp_path):
    table = tmp_path / "t.csv"
    table.write_text("method,bits\ngzip,10\nxz,9\n")
    side = provenance.write(table, results=[provenance.result(["gzip"])], row_key=["method"])
    assert side == tmp_path / "t.csv.provenance.json"
    doc = json.loads(side.read_text())
    assert doc["schema"] == provenance.SCHEMA and doc["file"] == "t.csv"
    assert doc["command"] and doc["date"] and doc["row_key"] == ["method"]
    assert doc["commit"] == provenance.git_state()["commit"]  # the code's checkout, wherever the output is
    assert {"command", "commit", "dirty", "date"} <= set(doc["results"][0])
    problems = provenance.check_file(table)
    if provenance.git_state()["commit"] is None:  # a tarball copy of the code: nothing names a commit
        problems = [p for p in problems if "commit" not in p]
    assert problems == [f"{table}: row xz has no provenance entry"]

    provenance.write(table, results=[provenance.result(["gzip"]), provenance.result(["xz"])], row_key=["method"])
    table.write_text("method,bits\ngzip,10\nxz,8\n")  # a hand edit
    assert any("sha256 mismatch" in p for p in provenance.check_file(table))

    provenance.sidecar(table).unlink()
    assert provenance.check_file(table) == [f"{table}: no provenance (t.csv.provenance.json missing or unreadable)"]


def test_recomputation_catches_stale_program_bits_and_config_hash(tmp_path):
    from mdlbench import config as config_lib

    config = config_lib.program_dict(config_lib.Config())
    now = provenance.expected(provenance.PREQUENTIAL, config)
    assert now["program_bits"] > 0 and len(now["config_sha256"]) == 64
    f = tmp_path / "summary.json"
    f.write_text("{}")

    def record(**changes):
        entry = provenance.result(kind=provenance.PREQUENTIAL, config=config, **{**now, **changes})
        provenance.write(f, results=[entry])
        return provenance.check_current(f)

    assert record() == []
    (stale,) = record(program_bits=now["program_bits"] + 8)
    assert f"recorded program_bits {now['program_bits'] + 8} but today's code gives {now['program_bits']}" in stale
    (stale,) = record(config_sha256="0" * 64)
    assert "recorded config_sha256 000" in stale
    provenance.write(f, results=[provenance.result(kind=provenance.PREQUENTIAL,
                                                   config={**config, "code": {**config["code"], "batch_size": 0}})])
    (refused,) = provenance.check_current(f)
    assert "today's code refuses the recorded config" in refused


def test_tree_walk_skips_ignored_files_and_flags_orphans(tmp_path):
    repo = tmp_path / "repo"
    res = repo / "results"
    (res / "runs" / "x").mkdir(parents=True)
    (res / "tables").mkdir()
    (repo / ".gitignore").write_text("results/runs/\nresults/tables/*_curves.csv\n")
    _git(repo, "init", "-q")
    (res / "runs" / "x" / "summary.json").write_text("{}")
    for name in ("a.csv", "a_curves.csv", "gone.csv"):
        (res / "tables" / name).write_text("k\n1\n")
        provenance.write(res / "tables" / name)
    (res / "tables" / "gone.csv").unlink()
    (res / "tables" / "a_curves.csv").unlink()  # ignored: a fresh clone never has it
    (res / "tables" / "bare.csv").write_text("k\n")
    assert [p.name for p in provenance.committed_files(res)] == ["a.csv", "bare.csv"]
    assert [p.name for p in provenance.orphan_sidecars(res)] == ["gone.csv.provenance.json"]
    problems = provenance.check_tree(res)
    assert any("bare.csv: no provenance" in p for p in problems)
    assert any("gone.csv.provenance.json: provenance of a file that no longer exists" in p for p in problems)


def test_provenance_checks_do_not_import_jax():
    code = ("import sys; from mdlbench import provenance, config; "
            "provenance.expected(provenance.PREQUENTIAL, config.program_dict(config.Config())); "
            "assert 'jax' not in sys.modules, 'jax imported'; print('clean')")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO, timeout=120)
    assert r.stdout.strip() == "clean", r.stderr[-2000:]


@pytest.mark.parametrize("kind", [provenance.SUPERVISED_LABELS, provenance.BBANS, provenance.BITSBACK_WEIGHTS])
def test_every_container_kind_has_a_recomputation(kind):
    if kind == provenance.SUPERVISED_LABELS:
        from mdlbench.codes.supervised import config as sconfig

        config = sconfig.to_dict(sconfig.from_dict({}))
    else:
        from mdlbench.codes.bits_back import config as bconfig

        config = bconfig.to_dict(bconfig.from_dict({"code": "bbans" if kind == provenance.BBANS else "weights"}))
    got = provenance.expected(kind, config)
    assert got["program_bits"] > 0 and len(got["config_sha256"]) == 64
