"""mdlbench.jobs: a composed config becomes exactly one family's typed config (no JAX needed)."""

from __future__ import annotations

import subprocess
import sys

import pytest

from conftest import REPO
from mdlbench import jobs
from mdlbench.capacity.config import CapacityConfig
from mdlbench.codes.bits_back.config import BitsBackConfig
from mdlbench.codes.supervised.config import SupervisedConfig
from mdlbench.config import Config, ConfigError


def test_each_section_selects_its_family_and_is_validated():
    assert jobs.from_dict({}).family is None
    job = jobs.from_dict({"experiment": "e", "threads": 1, "supervised": {"data": "digits", "train": {"epochs": 2}}})
    assert isinstance(job.config, Config) and job.config.threads == 1
    assert isinstance(job.family, SupervisedConfig) and job.family.train.epochs == 2
    assert isinstance(jobs.from_dict({"bits_back": {"code": "weights"}}).family, BitsBackConfig)
    with pytest.raises(ConfigError, match="capacity.models and capacity.knowledge"):
        jobs.from_dict({"capacity": {}})
    # A section set to null (as a group default may leave it) is no section.
    assert jobs.from_dict({"supervised": None}).family is None
    with pytest.raises(ConfigError, match="unknown key"):
        jobs.from_dict({"supervised": {"epochs": 3}})
    with pytest.raises(ConfigError, match="bits_back.code"):
        jobs.from_dict({"bits_back": {"code": "gzip"}})
    with pytest.raises(ConfigError, match="one code family.*supervised and capacity"):
        jobs.from_dict({"supervised": {}, "capacity": {}})
    with pytest.raises(ConfigError, match="expected a mapping"):
        jobs.from_dict({"capacity": [1, 2]})


def test_byte_code_commands_refuse_another_familys_job():
    job = jobs.compose(["experiment=codes_mnist5k"])
    assert isinstance(job.family, SupervisedConfig) and job.family.data == "mnist5k"
    with pytest.raises(ConfigError, match="mdlbench bench runs the prequential byte code.*SupervisedConfig"):
        jobs.byte_code(job, "mdlbench bench")
    assert jobs.byte_code(jobs.compose(["model=nano"]), "x").model.name == "nano"
    assert jobs.with_run_dir(job, "/tmp/r").config.run_dir == "/tmp/r" and job.config.run_dir == ""
    with pytest.raises(ConfigError, match="cannot compose the config"):
        jobs.compose(["model=no_such_preset"])


def test_reading_a_job_imports_no_jax():
    code = ("import sys; from mdlbench import jobs; "
            "fs = [jobs.compose([f'experiment={e}']).family for e in ('codes_mnist5k', 'bbans_mnist5k', 'capacity_smoke')]; "
            "print([type(f).__name__ for f in fs], 'jax' in sys.modules)")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO, timeout=120)
    assert r.returncode == 0 and r.stdout.strip() == str([c.__name__ for c in (SupervisedConfig, BitsBackConfig, CapacityConfig)]) + " False", r.stderr
