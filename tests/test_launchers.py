"""The cluster launcher presets, each running a real 2-job sweep on this machine.

``launcher=submitit_local`` goes through hydra-submitit-launcher's local executor: the same job
pickling, job folders and result collection as ``launcher=slurm``, with subprocesses for jobs.
``launcher=ray`` starts a local Ray instance (``ray.init(address=None)``). In both, every job must
leave a verified summary whose container records the thread count that the preset gave the job,
since that is the count the decoder pins before it replays the bitstream.
"""

from __future__ import annotations

import json

import pytest

from conftest import REPO, run_train

# The smallest sweep that still trains, codes and verifies: 2 seeds of a 33k-parameter model.
TINY = ["model=nano", "data=file", "data.max_bytes=3000", "code.batch_size=2", "code.seq_len=16",
        "logger=disabled", "baselines=false", "seed=0,1"]
TEXT = b"Each job of a sweep pins its own threads before JAX starts; the decoder pins the same count.\n"


def _sweep(tmp_path, launcher: str, *extra: str):
    """Runs the tiny 2-job sweep through ``launcher``; returns (sweep dir, completed process)."""
    src = tmp_path / "in.txt"
    src.write_bytes(TEXT * (3000 // len(TEXT) + 1))
    sweep = tmp_path / "sweep"
    r = run_train("-m", f"launcher={launcher}", *TINY, f"data.path={src}", f"hydra.sweep.dir={sweep}", *extra,
                  timeout=900)
    assert r.returncode == 0, (r.stdout + r.stderr)[-4000:]
    return sweep, r


def _launcher_config(*overrides: str):
    """The composed config, Hydra's part included, as the sweep's driver sees it."""
    from hydra import compose, initialize_config_dir

    with initialize_config_dir(config_dir=str(REPO / "conf"), version_base="1.3"):
        return compose("config", overrides=list(overrides), return_hydra_config=True)


def _assert_jobs_verified_with(sweep, threads: int) -> list[dict]:
    """Each seed's job verified, and its container records ``threads`` for the decoder to pin."""
    from mdlbench.coding import container

    summaries = []
    for seed in (0, 1):
        run_dir = sweep / "file" / "nano" / f"seed{seed}"
        s = json.loads((run_dir / "summary.json").read_text())
        assert s["verify"]["ok"] is True and s["verify"]["decoded_sha256"] == s["data"]["sha256"], s["verify"]
        assert s["config"]["threads"] == threads and s["config"]["seed"] == seed
        header, _ = container.read(run_dir / "in.txt.mdl")
        assert header["env"]["threads"] == s["env"]["threads"] == threads
        summaries.append(s)
    return summaries


# In the default suite (~80 s on 2 cores): the SLURM path is the one most users scale out on.
def test_submitit_local_sweep_verifies_with_the_launchers_threads(tmp_path):
    pytest.importorskip("hydra_plugins.hydra_submitit_launcher")
    c = _launcher_config("launcher=submitit_local")
    assert c.hydra.launcher._target_.endswith("submitit_launcher.LocalLauncher")
    sweep, _ = _sweep(tmp_path, "submitit_local")
    _assert_jobs_verified_with(sweep, c.hydra.launcher.cpus_per_task)
    # submitit gave each job a folder of its own (named by job id), holding its pickles and its
    # stdout log; the "%j" folder beside them only held the submissions before the ids existed.
    logs = sorted((sweep / ".submitit").glob("*/*_0_log.out"))
    assert len({log.parent for log in logs}) == 2
    for log in logs:
        assert "verified: True" in log.read_text() and (log.parent / log.name.replace("log.out", "result.pkl")).exists()


def test_slurm_preset_asks_for_the_threads_it_pins():
    pytest.importorskip("hydra_plugins.hydra_submitit_launcher")
    c = _launcher_config("launcher=slurm", "threads=8", "hydra.launcher.partition=cpu")
    assert c.hydra.launcher.cpus_per_task == c.threads == 8
    assert c.hydra.launcher.submitit_folder == f"{c.hydra.sweep.dir}/.submitit/%j"


@pytest.mark.slow
def test_ray_local_sweep_verifies_with_the_launchers_threads(tmp_path, monkeypatch):
    pytest.importorskip("hydra_plugins.hydra_ray_launcher")
    monkeypatch.delenv("RAY_ADDRESS", raising=False)  # a local instance, never a cluster the shell points at
    c = _launcher_config("launcher=ray")
    sweep, r = _sweep(tmp_path, "ray", "+hydra.launcher.ray.init.include_dashboard=false")
    _assert_jobs_verified_with(sweep, c.hydra.launcher.ray.remote.num_cpus)
    # Ray forwards each worker's stdout to the driver.
    assert r.stdout.count("verified: True") + r.stderr.count("verified: True") == 2


def test_missing_launcher_plugin_is_one_clear_line(monkeypatch):
    import importlib.util

    from mdlbench import cli

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda name, *a: None if name.startswith("hydra_plugins.hydra_") else real(name, *a))
    assert cli.missing_launcher_plugin(["-m", "launcher=slurm"]) == \
        'launcher=slurm needs the hydra-submitit-launcher plugin: pip install -e ".[slurm]"'
    assert cli.missing_launcher_plugin(["launcher=ray", "seed=0"]).endswith('pip install -e ".[ray]"')
    assert cli.missing_launcher_plugin(["launcher=joblib"]) is None


def test_ray_without_its_plugin_is_one_clear_line(tmp_path):
    import importlib.util

    if importlib.util.find_spec("hydra_plugins.hydra_ray_launcher") is not None:
        pytest.skip("hydra-ray-launcher is installed here")
    r = run_train("-m", "launcher=ray", *TINY, f"hydra.sweep.dir={tmp_path / 'sweep'}")
    assert r.returncode == 2 and "Traceback" not in r.stderr
    assert r.stderr.strip() == 'mdlbench-train: error: launcher=ray needs the hydra-ray-launcher plugin: pip install -e ".[ray]"'
    assert not (tmp_path / "sweep").exists()
