"""The experiment harness's run-directory rules, shared by every code family (no JAX)."""

from __future__ import annotations

import json

import pytest

from mdlbench.codes import harness
from mdlbench.errors import MdlbenchError


def test_finished_run_returns_the_same_config_refuses_another_and_redoes_unreadable(tmp_path):
    assert harness.finished_run(tmp_path, "abc") is None  # nothing there yet
    path = harness.write_summary(tmp_path, {"config_hash": "abc", "bits": 12})
    assert path == tmp_path / "summary.json" and not list(tmp_path.glob("*.tmp*"))
    assert harness.finished_run(tmp_path, "abc") == {"config_hash": "abc", "bits": 12}
    with pytest.raises(MdlbenchError, match="different config"):
        harness.finished_run(tmp_path, "xyz")
    # A family may record its hash elsewhere: the caller says where.
    assert harness.finished_run(tmp_path, "ABC", lambda s: s["config_hash"].upper())["bits"] == 12
    path.write_text('{"config_hash": "abc", "bi')  # cut short: not written by this code, so run again
    assert harness.finished_run(tmp_path, "abc") is None


def test_make_run_dir_creates_it_or_says_why_not_in_one_line(tmp_path):
    harness.make_run_dir(tmp_path / "a" / "b")
    assert (tmp_path / "a" / "b").is_dir() and not list((tmp_path / "a" / "b").iterdir())
    (tmp_path / "file").write_text("x")
    with pytest.raises(MdlbenchError, match="cannot write to run directory") as e:
        harness.make_run_dir(tmp_path / "file" / "sub")
    assert "\n" not in str(e.value)


def test_write_summary_serialises_numpy_values(tmp_path):
    import numpy as np

    harness.write_summary(tmp_path, {"x": np.float32(1.5), "a": np.arange(3)})
    assert json.loads((tmp_path / "summary.json").read_text()) == {"x": 1.5, "a": [0, 1, 2]}
