"""The environment fingerprint: what it records on CPU and GPU, and when the check refuses.

No GPU here: the accelerator readers (device model, CUDA versions, installed plugin packages) are
monkeypatched, as the fingerprint would see them on an NVIDIA machine.
"""

from __future__ import annotations

import pytest

from mdlbench.coding import env
from mdlbench.errors import EnvironmentMismatch

H200_PACKAGES = {"pkg.jax-cuda12-plugin": "0.10.2", "pkg.jax-cuda12-pjrt": "0.10.2",
                 "pkg.nvidia-cudnn-cu12": "9.10.2.21", "pkg.nvidia-cublas-cu12": "12.9.1.4"}


@pytest.fixture
def gpu_machine(monkeypatch):
    """This machine as an H200 with CUDA 12.8 and cuDNN 9.10 would fingerprint it."""
    monkeypatch.setattr(env, "_device_kind", lambda: "NVIDIA H200")
    monkeypatch.setattr(env, "_cuda_versions", lambda: {"cuda.runtime": 12080, "cuda.cudnn": 91002,
                                                        "cuda.driver": 12090})
    monkeypatch.setattr(env, "_accelerator_packages", lambda: dict(H200_PACKAGES))


def _refused(recorded, here, *needles):
    with pytest.raises(EnvironmentMismatch) as e:
        env.check(recorded, here)
    msg = str(e.value)
    assert "\n" not in msg
    for needle in needles:
        assert needle in msg, msg
    return msg


def test_gpu_fingerprint_records_device_cuda_and_plugins(gpu_machine):
    fp = env.fingerprint("gpu")
    assert fp["device_kind"] == "NVIDIA H200"
    assert fp["cuda.runtime"] == 12080 and fp["cuda.cudnn"] == 91002 and fp["cuda.driver"] == 12090
    assert fp["pkg.jax-cuda12-plugin"] == "0.10.2" and fp["pkg.nvidia-cudnn-cu12"] == "9.10.2.21"
    assert fp["fingerprint_version"] == env.FINGERPRINT_VERSION
    env.check(fp, dict(fp))  # the same machine decodes


@pytest.mark.parametrize("key,value", [
    ("device_kind", "NVIDIA A100-SXM4-80GB"),
    ("cuda.runtime", 12040),
    ("cuda.cudnn", 90100),
    ("pkg.jax-cuda12-plugin", "0.9.0"),
])
def test_gpu_container_on_another_gpu_stack_is_refused(gpu_machine, key, value):
    recorded = env.fingerprint("gpu")
    _refused(recorded, {**recorded, key: value}, key, repr(recorded[key]), repr(value))


def test_driver_version_is_recorded_not_compared(gpu_machine):
    recorded = env.fingerprint("gpu")
    env.check(recorded, {**recorded, "cuda.driver": 12020})


def test_a_plugin_missing_on_either_side_is_refused(gpu_machine):
    recorded = env.fingerprint("gpu")
    here = {k: v for k, v in recorded.items() if k != "pkg.nvidia-cudnn-cu12"}
    _refused(recorded, here, "pkg.nvidia-cudnn-cu12", "this environment has none")
    _refused(here, recorded, "pkg.nvidia-cudnn-cu12", "the container records none")


def test_cpu_containers_ignore_accelerator_packages(gpu_machine, monkeypatch):
    # A CPU-backend container made where a CUDA plugin happens to be installed decodes on a
    # CPU-only machine: the plugin takes no part in CPU arithmetic.
    recorded = env.fingerprint("cpu")
    assert "device_kind" not in recorded and "pkg.jax-cuda12-plugin" in recorded
    monkeypatch.setattr(env, "_accelerator_packages", lambda: {})
    env.check(recorded, env.fingerprint("cpu"))


def test_old_gpu_container_without_the_new_fields_still_checks_the_rest(gpu_machine):
    # Written before fingerprint_version 2: no device, CUDA or plugin fields. It must not crash
    # the check; what it does record is still compared.
    here = env.fingerprint("gpu")
    old = {k: v for k, v in here.items()
           if k in env.CHECKED or k == "threads" or k in ("cpu_model",)}
    assert "fingerprint_version" not in old and "device_kind" not in old
    env.check(old, here)
    _refused({**old, "pkg.jax": "0.4.30"}, here, "pkg.jax", "'0.4.30'")


def test_unreadable_instruction_set_fails_closed_on_cpu(monkeypatch, tmp_path):
    monkeypatch.setattr(env, "CPUINFO", str(tmp_path / "no_cpuinfo"))
    assert env._isa() is None
    with pytest.raises(EnvironmentMismatch, match="cannot read the CPU instruction set") as e:
        env.fingerprint("cpu")
    assert "\n" not in str(e.value)
    (tmp_path / "cpuinfo").write_text("processor\t: 0\nmodel name\t: Some CPU\n")  # no flags line
    monkeypatch.setattr(env, "CPUINFO", str(tmp_path / "cpuinfo"))
    with pytest.raises(EnvironmentMismatch, match="cannot read the CPU instruction set"):
        env.fingerprint("cpu")


def test_unreadable_instruction_set_is_recorded_as_unknown_on_gpu(monkeypatch, tmp_path, gpu_machine):
    # On a GPU backend the model runs on the device: an unknown host ISA is recorded as None.
    monkeypatch.setattr(env, "CPUINFO", str(tmp_path / "no_cpuinfo"))
    fp = env.fingerprint("gpu")
    assert fp["isa"] is None and fp["device_kind"] == "NVIDIA H200"


def test_cpu_container_without_an_instruction_set_is_refused():
    here = env.fingerprint("cpu")
    assert here["isa"] is not None  # this machine has /proc/cpuinfo
    no_isa = {k: v for k, v in here.items() if k != "isa"}
    _refused(no_isa, here, "records no CPU instruction set")
    # An old container made where /proc/cpuinfo was missing recorded []: it no longer matches.
    if here["isa"]:
        _refused({**here, "isa": []}, here, "isa was []")


def test_isa_read_from_a_flags_line(monkeypatch, tmp_path):
    (tmp_path / "cpuinfo").write_text("processor\t: 0\nflags\t\t: fpu sse4_1 avx2 bogus avx512f\n")
    monkeypatch.setattr(env, "CPUINFO", str(tmp_path / "cpuinfo"))
    assert env._isa() == ["avx2", "avx512f", "sse4_1"]
