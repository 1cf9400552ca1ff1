"""mdlbench-train (Hydra) and the plain CLI, as a user runs them."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from conftest import REPO, one_line_error, run_cli, run_train

SMALL = ["model=nano", "code.batch_size=4", "code.seq_len=32", "logger=disabled", "baselines=false"]

REQUIRED = ["data.name", "data.bytes", "data.sha256", "model.name", "model.n_params", "code.bits",
            "code.ideal_bits", "code.program_bits", "code.total_bits", "code.bits_per_byte", "code.ratio",
            "verify.ok", "verify.decoded_sha256", "time.encode_s", "time.decode_s", "env"]


def _get(d, dotted):
    for k in dotted.split("."):
        d = d[k]
    return d


@pytest.fixture(scope="module")
def train_run(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("train")
    src = tmp / "in.txt"
    src.write_bytes(b"A run directory is named from the config, never from the clock. " * 40)
    run_dir = tmp / "custom_run_dir"
    r = run_train(*SMALL, "data=file", f"data.path={src}", f"hydra.run.dir={run_dir}")
    assert r.returncode == 0, r.stderr[-3000:]
    return run_dir, src, r


def test_hydra_run_dir_override_holds_the_whole_run(train_run):
    run_dir, src, r = train_run
    s = json.loads((run_dir / "summary.json").read_text())
    for key in REQUIRED:
        assert _get(s, key) is not None, key
    assert s["verify"]["ok"] is True and s["verify"]["decoded_sha256"] == s["data"]["sha256"]
    assert s["data"]["bytes"] == src.stat().st_size
    assert s["code"]["total_bits"] == s["code"]["program_bits"] + s["code"]["bits"]
    assert s["code"]["ratio"] == pytest.approx(8 * s["data"]["bytes"] / s["code"]["total_bits"])
    assert (run_dir / "metrics.jsonl").exists() and (run_dir / ".hydra" / "config.yaml").exists()
    assert len(list(run_dir.glob("*.mdl"))) == 1
    assert str(run_dir) in r.stdout


def test_rerun_finds_the_finished_run(train_run):
    run_dir, src, _ = train_run
    r = run_train(*SMALL, "data=file", f"data.path={src}", f"hydra.run.dir={run_dir}")
    assert r.returncode == 0 and "already done" in r.stdout, r.stdout + r.stderr


def test_changed_config_in_same_dir_is_refused(train_run):
    run_dir, src, _ = train_run
    r = run_train(*SMALL, "data=file", f"data.path={src}", f"hydra.run.dir={run_dir}", "seed=7")
    assert r.returncode == 2 and "different config" in r.stderr and "Traceback" not in r.stderr


def test_decode_run_dir(train_run, tmp_path):
    run_dir, src, _ = train_run
    r = run_cli("decode", str(run_dir), "-o", str(tmp_path / "out"))
    assert r.returncode == 0, r.stderr
    assert (tmp_path / "out").read_bytes() == src.read_bytes()


@pytest.mark.parametrize("args,needle", [
    (["model=no_such_model"], "model"),
    (["data=file", "data.path=/nonexistent/file.txt"], "/nonexistent/file.txt"),
    (["code.batch_size=0"], "code.batch_size must be positive"),
    (["code.seq_len=-4"], "code.seq_len must be positive"),
    (["run_dir=elsewhere"], "hydra.run.dir=DIR"),  # not silently ignored
])
def test_bad_train_input_is_one_clear_line(args, needle, tmp_path):
    r = run_train(*SMALL, *args, f"hydra.run.dir={tmp_path / 'run'}")
    assert r.returncode != 0
    assert "Traceback" not in r.stderr and needle in r.stderr, r.stderr
    assert not (tmp_path / "run" / "summary.json").exists()


@pytest.mark.parametrize("args,needle", [
    (["decompress", "/nonexistent.mdl", "-o", "x"], "no such file"),
    (["compress", "/nonexistent.txt", "-o", "x.mdl"], "/nonexistent.txt"),
    (["compress", "README.md", "-o", "/nonexistent_dir/x.mdl"], "does not exist"),
])
def test_bad_cli_input_is_one_clear_line(args, needle):
    r = run_cli(*args)
    assert r.returncode == 2 and len(r.stderr.strip().splitlines()) == 1, r.stderr
    assert needle in r.stderr and "Traceback" not in r.stderr


def test_empty_file_is_refused(tmp_path):
    (tmp_path / "empty").write_bytes(b"")
    r = run_cli("compress", str(tmp_path / "empty"), "-o", str(tmp_path / "e.mdl"))
    assert r.returncode == 2 and "empty" in r.stderr and not (tmp_path / "e.mdl").exists()


def _compose(overrides):
    from mdlbench import jobs

    return jobs.compose(overrides)


@pytest.mark.parametrize("model", sorted(p.stem for p in (REPO / "conf" / "model").glob("*.yaml")))
def test_every_model_preset_composes(model):
    job = _compose([f"model={model}"])
    assert job.family is None and job.config.model.name == model


@pytest.mark.parametrize("exp", sorted(p.stem for p in (REPO / "conf" / "experiment").glob("*.yaml")))
def test_every_experiment_composes_and_names_its_command(exp):
    text = (REPO / "conf" / "experiment" / f"{exp}.yaml").read_text().splitlines()
    assert text[0].strip() == "# @package _global_"
    assert any(f"experiment={exp}" in line for line in text[1:3]), "second line must give the exact command"
    _compose([f"experiment={exp}"])


def test_readme_test_command_is_what_ci_runs():
    readme = (REPO / "README.md").read_text()
    ci = (REPO / ".ci" / "run").read_text()
    assert ".venv/bin/python -m pytest" in readme and ".venv/bin/python -m pytest" in ci


def _hydra_compose(overrides):
    from hydra import compose, initialize_config_dir

    with initialize_config_dir(config_dir=str(REPO / "conf"), version_base="1.3"):
        return compose("config", overrides=overrides, return_hydra_config=True)


def test_joblib_launcher_pins_each_job_to_its_own_cpus():
    c = _hydra_compose(["experiment=scaling_smoke"])
    assert c.hydra.launcher._target_.endswith("JoblibLauncher") and c.threads == 1
    # Each job gets its index in the environment; train.pin_threads offsets its CPUs by it.
    assert "MDLBENCH_JOB_INDEX" in c.hydra.job.env_set


def test_job_index_offsets_the_pinned_cpu():
    import os

    allowed = sorted(os.sched_getaffinity(0))
    code = ("import os; from mdlbench.train import pin_threads; pin_threads(1); "
            "print(sorted(os.sched_getaffinity(0))[0])")
    import subprocess
    import sys

    cpus = [subprocess.run([sys.executable, "-c", code], env={**os.environ, "MDLBENCH_JOB_INDEX": str(i)},
                           capture_output=True, text=True, check=True).stdout.strip() for i in range(2)]
    assert cpus == [str(allowed[0]), str(allowed[1 % len(allowed)])]


def test_readme_slurm_and_ray_commands_compose():
    readme = (REPO / "README.md").read_text()
    assert "mdlbench-train -m launcher=slurm experiment=scaling_smoke" in readme
    assert "mdlbench-train -m launcher=ray experiment=scaling_smoke" in readme
    pytest.importorskip("hydra_plugins.hydra_submitit_launcher")
    c = _hydra_compose(["experiment=scaling_smoke", "launcher=slurm", "hydra.launcher.partition=cpu"])
    assert c.hydra.launcher._target_.endswith("SlurmLauncher") and c.hydra.launcher.partition == "cpu"
    assert c.hydra.launcher.cpus_per_task == c.threads  # the job is pinned to what it asked for


def test_decode_names_what_it_cannot_decode_in_one_line(tmp_path):
    """``mdlbench decode`` dispatches on the header's kind: an unknown kind, and a directory with
    more than one container, are one-line refusals that name the problem."""
    from mdlbench.coding import container

    container.write(tmp_path / "odd.mdl", {"kind": "somebody.else", "format": 3}, b"\x00" * 8)
    one_line_error(run_cli("decode", str(tmp_path / "odd.mdl")), "somebody.else", "mdlbench.prequential")
    container.write(tmp_path / "two.mdl", {"kind": "somebody.else", "format": 3}, b"\x00" * 8)
    one_line_error(run_cli("decode", str(tmp_path)), "found 2", "odd.mdl, two.mdl")


@pytest.mark.parametrize("environ, want", [
    ({}, "glibc.malloc.hugetlb=1"),
    ({"GLIBC_TUNABLES": "glibc.malloc.check=0"}, "glibc.malloc.check=0:glibc.malloc.hugetlb=1"),
    ({"GLIBC_TUNABLES": "glibc.malloc.hugetlb=0"}, None),  # the user's own choice stays
    ({"MDLBENCH_HUGE_PAGES": "0"}, None),
])
def test_huge_pages_env(environ, want):
    from mdlbench import cli

    env = cli.huge_pages_env(dict(environ, PATH="/bin"), platform="linux")
    assert (env and env["GLIBC_TUNABLES"]) == want
    if env is not None:
        assert env["PATH"] == "/bin"  # the rest of the environment is kept
    assert cli.huge_pages_env({}, platform="darwin") is None


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's tunable: Linux only")
def test_console_entry_reruns_itself_once_with_huge_pages():
    # The tunable only takes effect when a process starts, so the entry point re-executes its own
    # command line; the second run finds it set and goes on (no loop), with its arguments intact.
    script = ("import os, sys; from mdlbench import cli; print('start', flush=True); "
              "cli.reexec_with_huge_pages(); print(os.environ['GLIBC_TUNABLES'], sys.argv[1:])")
    env = {k: v for k, v in os.environ.items() if k not in ("GLIBC_TUNABLES", "MDLBENCH_HUGE_PAGES")}
    proc = subprocess.run([sys.executable, "-c", script, "a b", "c"], capture_output=True, text=True, env=env, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.splitlines() == ["start", "start", "glibc.malloc.hugetlb=1 ['a b', 'c']"]
