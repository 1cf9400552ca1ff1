"""The data layer: registry, checksums, errors, downloads, pystdlib, synthetic sources, YAMLs."""

from __future__ import annotations

import bz2
import dataclasses
import hashlib
import io
import json
import math
import os
import platform
import subprocess
import sys
import tarfile
import urllib.error
import zipfile
from pathlib import Path

import numpy as np
import pytest
import yaml

from mdlbench import config as config_lib
from mdlbench.config import ConfigError, DataConfig, SyntheticConfig
from mdlbench import data as data_lib
from mdlbench.data import registry, stdlib, synthetic
from mdlbench.data.registry import REGISTRY, Entry
from mdlbench.errors import DataError

REPO = Path(__file__).resolve().parent.parent
CONF_DATA = REPO / "conf" / "data"


def _shared_data() -> Path | None:
    """The shared read-only data directory CI has beside the clone, if any."""
    for cand in (os.environ.get("MDLBENCH_DATA", ""), str(REPO.parent / "shared" / "data")):
        if cand and (Path(cand) / "MANIFEST.tsv").is_file():
            return Path(cand)
    return None


SHARED = _shared_data()
needs_shared = pytest.mark.skipif(SHARED is None, reason="no shared data directory (MDLBENCH_DATA or ../shared/data)")


@pytest.fixture
def isolated(tmp_path, monkeypatch):
    """No data roots but the ones a test makes: an empty $MDLBENCH_DATA and a private home."""
    home = tmp_path / "home"
    home.mkdir()
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.delenv(registry.ENV_VAR, raising=False)
    return tmp_path


def _register(monkeypatch, name: str, content: bytes, relpath: str = "sub/tiny.bin", **kw) -> Entry:
    algo = kw.pop("algo", "sha256")
    entry = Entry(name=name, kind=registry.FILE, description="a test file", relpath=relpath, size=len(content),
                  checksum=f"{algo}:{hashlib.new(algo, content).hexdigest()}", **kw)
    monkeypatch.setitem(REGISTRY, name, entry)
    return entry


# ---------------------------------------------------------------- registry


def test_names_cover_the_required_sets():
    required = {"pystdlib", "file", "tinyshakespeare", "dickens", "mr", "ooffice", "alice29", "asyoulik", "lcet10",
                "plrabn12", "kennedy", "bible", "book1", "book2", "paper1", "news", "pic", "progc", "pi", "e",
                "opticks", "mnist5k", "digits", "fashion_mnist_train_images", "fashion_mnist_train_labels",
                "fashion_mnist_t10k_images", "fashion_mnist_t10k_labels", "enwik8", "iid_die", "markov1",
                "markov2", "hmm4"}
    assert required <= set(data_lib.names())
    assert data_lib.names() == sorted(data_lib.names())


def test_registry_entries_are_well_formed():
    for name, e in REGISTRY.items():
        assert e.name == name and e.description
        if e.kind == registry.FILE:
            algo, hexd = e.checksum.split(":")
            assert len(hexd) == hashlib.new(algo).digest_size * 2 and e.size > 0 and e.relpath
            assert e.archive in ("", "zip", "tar", "bz2", "gz")


def test_enwik8_entry():
    e = REGISTRY["enwik8"]
    assert (e.size, e.checksum) == (100_000_000, "md5:a1fa5ffddb56f4953e226637dabbb36a")
    assert (e.url, e.archive, e.member) == ("http://mattmahoney.net/dc/enwik8.zip", "zip", "enwik8")


@needs_shared
def test_registry_matches_the_manifest():
    rows = [ln.split("\t") for ln in (SHARED / "MANIFEST.tsv").read_text().splitlines()
            if ln and not ln.startswith("#")]
    by_path = {e.relpath: e for e in REGISTRY.values() if e.kind == registry.FILE}
    for rel, size, sha in rows:
        assert rel in by_path, rel
        assert (by_path[rel].size, by_path[rel].checksum) == (int(size), f"sha256:{sha}")


@needs_shared
@pytest.mark.parametrize("name", ["tinyshakespeare", "pi", "alice29", "paper1", "digits", "fashion_mnist_t10k_labels"])
def test_load_shared_files(name):
    ds = data_lib.load(DataConfig(name=name, data_dir=str(SHARED)))
    e = REGISTRY[name]
    assert len(ds.data) == e.size and f"sha256:{ds.sha256}" == e.checksum
    assert ds.path == str(SHARED / e.relpath) and ds.entropy_rate_bits is None
    json.dumps(ds.info)
    cut = data_lib.load(DataConfig(name=name, data_dir=str(SHARED), max_bytes=1000))
    assert cut.data == ds.data[:1000] and cut.sha256 == hashlib.sha256(ds.data[:1000]).hexdigest()
    assert cut.info["sha256_total"] == ds.sha256 and cut.info["bytes_total"] == e.size


def test_registry_file_and_search_order(isolated, monkeypatch):
    content = b"hello registry\n" * 10
    _register(monkeypatch, "tiny", content)
    roots = {k: isolated / k for k in ("cfgdir", "envdir")}
    roots["cache"] = Path(os.environ["HOME"]) / ".cache" / "mdlbench" / "data"
    for root in roots.values():
        (root / "sub").mkdir(parents=True)
    monkeypatch.setenv(registry.ENV_VAR, str(roots["envdir"]))
    (roots["cache"] / "sub" / "tiny.bin").write_bytes(content)
    assert data_lib.load(DataConfig(name="tiny")).path == str(roots["cache"] / "sub" / "tiny.bin")
    (roots["envdir"] / "sub" / "tiny.bin").write_bytes(content)
    assert data_lib.load(DataConfig(name="tiny")).path == str(roots["envdir"] / "sub" / "tiny.bin")
    (roots["cfgdir"] / "sub" / "tiny.bin").write_bytes(content)
    ds = data_lib.load(DataConfig(name="tiny", data_dir=str(roots["cfgdir"])))
    assert ds.path == str(roots["cfgdir"] / "sub" / "tiny.bin") and ds.data == content
    assert ds.sha256 == hashlib.sha256(content).hexdigest()


def test_path_override_still_checks(isolated, monkeypatch):
    content = b"abc" * 50
    _register(monkeypatch, "tiny", content)
    good, bad = isolated / "good.bin", isolated / "bad.bin"
    good.write_bytes(content)
    bad.write_bytes(content[:-1] + b"x")
    assert data_lib.load(DataConfig(name="tiny", path=str(good))).data == content
    with pytest.raises(DataError, match=r"has checksum sha256:[0-9a-f]{64}, expected sha256:"):
        data_lib.load(DataConfig(name="tiny", path=str(bad)))
    bad.write_bytes(content + b"!")
    with pytest.raises(DataError, match=rf"has {len(content) + 1} bytes, expected {len(content)}"):
        data_lib.load(DataConfig(name="tiny", path=str(bad), max_bytes=10))


# ---------------------------------------------------------------- errors


def test_unknown_name_lists_known_names():
    with pytest.raises(DataError, match=r"unknown data set 'nope'; known: .*pystdlib.*tinyshakespeare"):
        data_lib.load(DataConfig(name="nope"))


def test_missing_file_says_where_and_how(isolated, monkeypatch):
    _register(monkeypatch, "tiny", b"x")
    with pytest.raises(DataError) as err:
        data_lib.load(DataConfig(name="tiny", data_dir=str(isolated / "d")))
    msg = str(err.value)
    assert str(isolated / "d" / "sub" / "tiny.bin") in msg and "MDLBENCH_DATA" in msg and "data.data_dir" in msg
    assert "data.download" not in msg  # no URL, nothing to fetch
    with pytest.raises(DataError, match=r"set data\.download=true to fetch it from http://mattmahoney\.net"):
        data_lib.load(DataConfig(name="enwik8", data_dir=str(isolated / "d")))


def test_file_errors(isolated, monkeypatch):
    with pytest.raises(DataError, match="data.path, which is empty"):
        data_lib.load(DataConfig(name="file"))
    with pytest.raises(DataError, match="no file at"):
        data_lib.load(DataConfig(name="file", path=str(isolated / "absent")))
    with pytest.raises(DataError, match="is a directory"):
        data_lib.load(DataConfig(name="file", path=str(isolated)))
    empty = isolated / "empty"
    empty.write_bytes(b"")
    with pytest.raises(DataError, match="is empty"):
        data_lib.load(DataConfig(name="file", path=str(empty)))
    with pytest.raises(DataError, match="max_bytes must be >= 0"):
        data_lib.load(DataConfig(name="file", path=str(empty), max_bytes=-1))
    locked = isolated / "locked"
    locked.write_bytes(b"secret")

    def deny(self):
        raise PermissionError(13, "Permission denied", str(self))

    monkeypatch.setattr(Path, "read_bytes", deny)
    with pytest.raises(DataError, match=r"cannot read .*locked \(Permission denied\)"):
        data_lib.load(DataConfig(name="file", path=str(locked)))


def test_file_reads_any_file(tmp_path):
    f = tmp_path / "x.bin"
    f.write_bytes(bytes(range(256)) * 3)
    ds = data_lib.load(DataConfig(name="file", path=str(f), max_bytes=300))
    assert ds.data == (bytes(range(256)) * 3)[:300] and ds.path == str(f) and ds.name == "file"
    assert ds.info["bytes_total"] == 768


def test_synthetic_config_on_a_file_set_is_refused():
    with pytest.raises(DataError, match="is not synthetic"):
        data_lib.load(DataConfig(name="pystdlib", synthetic=SyntheticConfig()))
    with pytest.raises(DataError, match="reads no file"):
        data_lib.load(DataConfig(name="markov2", path="/etc/hostname"))


# ---------------------------------------------------------------- downloads (never the network)


def _zip_bytes(member: str, content: bytes) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as z:
        z.writestr(member, content)
    return buf.getvalue()


def _tar_bytes(member: str, content: bytes) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as t:
        info = tarfile.TarInfo(member)
        info.size = len(content)
        t.addfile(info, io.BytesIO(content))
    return buf.getvalue()


@pytest.mark.parametrize("archive", ["zip", "tar", "bz2", ""])
def test_download_from_file_url(isolated, monkeypatch, archive):
    content = b"downloaded bytes " * 100
    packed = {"zip": lambda: _zip_bytes("tiny.bin", content), "tar": lambda: _tar_bytes("corpus/tiny.bin", content),
              "bz2": lambda: bz2.compress(content), "": lambda: content}[archive]()
    src = isolated / "remote.pack"
    src.write_bytes(packed)
    _register(monkeypatch, "tiny", content, url=src.as_uri(), archive=archive, member="tiny.bin" if archive else "")
    root = isolated / "d"
    ds = data_lib.load(DataConfig(name="tiny", data_dir=str(root), download=True))
    assert ds.data == content and ds.path == str(root / "sub" / "tiny.bin")
    assert sorted(p.name for p in (root / "sub").iterdir()) == ["tiny.bin"]  # no temp files left
    # Present now: a second load does not download (the URL is gone).
    src.unlink()
    assert data_lib.load(DataConfig(name="tiny", data_dir=str(root), download=True)).data == content


def test_enwik8_download_path_md5_zip(isolated, monkeypatch):
    """The enwik8 entry's own zip member and md5 check, with a small stand-in served locally."""
    content = b"<mediawiki>stand-in for enwik8</mediawiki>\n" * 50
    src = isolated / "enwik8.zip"
    src.write_bytes(_zip_bytes("enwik8", content))
    e = dataclasses.replace(REGISTRY["enwik8"], url=src.as_uri(), size=len(content),
                            checksum=f"md5:{hashlib.md5(content).hexdigest()}")
    monkeypatch.setitem(REGISTRY, "enwik8", e)
    # $MDLBENCH_DATA read-only is skipped: the file lands in the next root, the cache.
    ro = isolated / "ro"
    ro.mkdir()
    monkeypatch.setenv(registry.ENV_VAR, str(ro))
    monkeypatch.setattr(registry.os, "access", lambda p, mode: not str(p).startswith(str(ro)))
    ds = data_lib.load(DataConfig(name="enwik8", download=True, max_bytes=100))
    assert ds.data == content[:100]
    assert ds.path == str(Path(os.environ["HOME"]) / ".cache/mdlbench/data/enwik8/enwik8")
    assert ds.info["checksum"] == e.checksum


def test_download_mismatch_leaves_nothing(isolated, monkeypatch):
    content = b"the real bytes" * 10
    src = isolated / "remote.zip"
    src.write_bytes(_zip_bytes("tiny.bin", content[:-1] + b"X"))
    _register(monkeypatch, "tiny", content, url=src.as_uri(), archive="zip", member="tiny.bin", algo="md5")
    root = isolated / "d"
    with pytest.raises(DataError, match=r"has checksum md5:[0-9a-f]{32}, expected md5:"):
        data_lib.load(DataConfig(name="tiny", data_dir=str(root), download=True))
    assert list((root / "sub").iterdir()) == []
    src.write_bytes(_zip_bytes("other.bin", content))
    with pytest.raises(DataError, match="has no member 'tiny.bin'"):
        data_lib.load(DataConfig(name="tiny", data_dir=str(root), download=True))
    src.write_bytes(b"not a zip at all")
    with pytest.raises(DataError, match="is not a valid zip"):
        data_lib.load(DataConfig(name="tiny", data_dir=str(root), download=True))
    assert list((root / "sub").iterdir()) == []


def test_download_network_failure(isolated, monkeypatch):
    _register(monkeypatch, "tiny", b"abc", url="http://example.invalid/tiny.bin")

    def refuse(url, timeout=None):
        raise urllib.error.URLError("no route to host")

    monkeypatch.setattr(registry.urllib.request, "urlopen", refuse)
    with pytest.raises(DataError, match=r"could not download 'tiny' from http://example.invalid/tiny.bin: no route"):
        data_lib.load(DataConfig(name="tiny", data_dir=str(isolated / "d"), download=True))


# ---------------------------------------------------------------- pystdlib


def test_pystdlib_is_deterministic_and_recorded():
    a = data_lib.load(DataConfig())
    b = data_lib.load(DataConfig(name="pystdlib"))
    assert a.data == b.data and a.sha256 == b.sha256 and len(a.data) == stdlib.SIZE == 262_144
    assert a.data.startswith(b"# ==== abc.py ====\n") and a.path == "" and a.entropy_rate_bits is None
    assert a.info["files"] == list(stdlib.FILES[: len(a.info["files"])])
    json.dumps(a.info)
    recorded = REGISTRY["pystdlib"].checksums.get(platform.python_version())
    if recorded is None:
        assert "sha256_note" in a.info
    else:
        assert (a.sha256 == recorded) == ("sha256_note" not in a.info)


@pytest.mark.skipif(platform.python_version() != "3.11.7", reason="sha256 recorded for Python 3.11.7")
def test_pystdlib_sha256_on_3_11_7():
    ds = data_lib.load(DataConfig())
    assert ds.sha256 == REGISTRY["pystdlib"].checksums["3.11.7"]
    assert "sha256_note" not in ds.info


def test_pystdlib_other_version_notes_instead_of_failing(monkeypatch):
    monkeypatch.setattr(platform, "python_version", lambda: "3.99.0")
    ds = data_lib.load(DataConfig(max_bytes=4096))
    assert len(ds.data) == 4096 and "not directly comparable" in ds.info["sha256_note"]


def test_pystdlib_from_a_short_or_broken_stdlib(tmp_path):
    for rel in stdlib.FILES:
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / rel).write_bytes(b"x = 1\n")
    with pytest.raises(DataError, match="give only .* fewer than the 262144"):
        data_lib.load(DataConfig(path=str(tmp_path)))
    (tmp_path / stdlib.FILES[0]).unlink()
    with pytest.raises(DataError, match="cannot read"):
        stdlib.build(tmp_path)


# ---------------------------------------------------------------- synthetic: exact rates


def _h2(p: float) -> float:
    return -p * math.log2(p) - (1 - p) * math.log2(1 - p)


def test_fair_die_is_exactly_log2_6():
    ds = data_lib.load(DataConfig(name="iid_die"))
    assert ds.entropy_rate_bits == math.log2(6)
    assert set(ds.data) == set(b"123456") and len(ds.data) == 100_000
    g = synthetic.generate(SyntheticConfig(kind="iid", alphabet_size=6, probs=[1, 1, 1, 1, 1, 1]))
    assert g.entropy_rate_bits == math.log2(6)


def test_iid_with_probs():
    g = synthetic.generate(SyntheticConfig(kind="iid", alphabet_size=4, probs=[2, 1, 1, 0], length=200_000))
    assert g.entropy_rate_bits == pytest.approx(1.5, abs=1e-15)
    counts = np.bincount(np.frombuffer(g.data, np.uint8) - 97, minlength=4)
    assert counts[3] == 0 and abs(counts[0] / 200_000 - 0.5) < 0.01


def test_two_state_chain_closed_form():
    a, b = 0.1, 0.3
    chain = synthetic.MarkovChain(probs=np.array([[1 - a, a], [b, 1 - b]]), order=1)
    np.testing.assert_allclose(chain.stationary(), [b / (a + b), a / (a + b)], rtol=0, atol=1e-15)
    expected = (b * _h2(a) + a * _h2(b)) / (a + b)
    assert chain.entropy_rate_bits() == pytest.approx(expected, abs=1e-14)
    x = chain.sample(400_000, np.random.default_rng(1))
    assert chain.code_lengths_bits(x).mean() == pytest.approx(expected, rel=0.01)


def test_deterministic_chain_has_rate_zero():
    cycle = np.roll(np.eye(5), 1, axis=1)  # 0 -> 1 -> 2 -> 3 -> 4 -> 0 (periodic, still a unique pi)
    chain = synthetic.MarkovChain(probs=cycle, order=1)
    assert chain.entropy_rate_bits() == 0.0
    x = chain.sample(50, np.random.default_rng(0))
    assert np.all(np.diff(x.astype(int)) % 5 == 1)
    assert np.all(chain.code_lengths_bits(x) == 0.0)


def test_reducible_chain_is_refused():
    with pytest.raises(DataError, match="no unique stationary distribution"):
        synthetic.MarkovChain(probs=np.eye(3), order=1).stationary()


def test_power_iteration_agrees_with_the_dense_solve(monkeypatch):
    rng = np.random.default_rng(3)
    probs = rng.dirichlet(np.full(3, 0.7), size=3**4)
    dense = synthetic.MarkovChain(probs=probs, order=4).stationary()
    monkeypatch.setattr(synthetic, "DENSE_MAX", 8)
    monkeypatch.setattr(synthetic, "_stationary_dense", None)  # the power iteration must not fall back on it
    power = synthetic.MarkovChain(probs=probs, order=4).stationary()
    np.testing.assert_allclose(power, dense, rtol=0, atol=1e-12)
    assert power.sum() == pytest.approx(1.0, abs=1e-12)


def test_second_order_context_convention():
    """Context c of (x_{t-2}, x_{t-1}) is x_{t-2} * A + x_{t-1}: check against a hand-built chain."""
    # A=2, order 2: next symbol = x_{t-2} (copy the older one) deterministically -> period-2 pattern.
    probs = np.zeros((4, 2))
    for c in range(4):
        probs[c, c // 2] = 1.0
    chain = synthetic.MarkovChain(probs=probs, order=2)
    with pytest.raises(DataError):  # contexts 00 and 11 are absorbing, 01 <-> 10 a cycle: reducible
        chain.stationary()
    x = np.array([0, 1, 0, 1, 0, 1])
    assert np.all(chain.code_lengths_bits(x) == 0.0)


def test_hmm_rate_matches_its_symbol_chain():
    cfg = SyntheticConfig(kind="hmm", alphabet_size=10, n_states=3, seed=5)
    src = synthetic.make_source(cfg, np.random.default_rng(cfg.seed))
    assert isinstance(src, synthetic.UnifilarHMM)
    assert list(src.state_of_symbol) == [0, 0, 0, 0, 1, 1, 1, 2, 2, 2]
    for s in range(3):  # each state emits only its own block
        assert np.all(src.emission[s, src.state_of_symbol != s] == 0)
        assert src.emission[s].sum() == pytest.approx(1.0)
    assert src.entropy_rate_bits() == pytest.approx(src.symbol_chain().entropy_rate_bits(), abs=1e-12)


@pytest.mark.parametrize("preset", ["markov1", "markov2", "hmm4", "iid_die"])
def test_empirical_rate_within_one_percent(preset):
    scfg = SyntheticConfig(**{**REGISTRY[preset].synthetic, "length": 300_000})
    g = synthetic.generate(scfg)
    assert 0 < g.entropy_rate_bits < math.log2(scfg.alphabet_size) + 1e-12
    assert g.empirical_bits == pytest.approx(g.entropy_rate_bits, rel=0.01)
    # Scoring the bytes independently of generate() gives the same estimate.
    src = synthetic.make_source(scfg, np.random.default_rng(scfg.seed))
    symbols = np.frombuffer(g.data, np.uint8) - scfg.first_byte
    assert synthetic.empirical_bits(src, symbols) == g.empirical_bits


def test_synthetic_determinism_and_seeds():
    base = SyntheticConfig(kind="markov", alphabet_size=5, order=2, length=5000)
    a, b = synthetic.generate(base), synthetic.generate(base)
    assert a.data == b.data and a.entropy_rate_bits == b.entropy_rate_bits
    c = synthetic.generate(dataclasses.replace(base, seed=1))
    assert c.data != a.data and c.entropy_rate_bits != a.entropy_rate_bits
    d = synthetic.generate(dataclasses.replace(base, length=7000))
    assert d.data[:5000] == a.data  # the sequence does not depend on how much is asked for
    for kind in ("iid", "hmm"):
        cfg = dataclasses.replace(base, kind=kind)
        assert synthetic.generate(cfg).data == synthetic.generate(cfg).data
        assert synthetic.generate(cfg).data != synthetic.generate(dataclasses.replace(cfg, seed=9)).data


def test_load_synthetic_preset_and_override():
    ds = data_lib.load(DataConfig(name="markov2"))
    assert ds.entropy_rate_bits == ds.info["entropy_rate_bits"] and ds.path == ""
    assert ds.info["source"]["order"] == 2 and ds.info["source"]["alphabet_size"] == 8
    assert set(ds.data) <= set(range(97, 105)) and len(ds.data) == 100_000
    json.dumps(ds.info)
    scfg = SyntheticConfig(kind="markov", alphabet_size=3, order=1, length=2000, seed=4, first_byte=0)
    ds2 = data_lib.load(DataConfig(name="markov2", synthetic=scfg, max_bytes=500))
    assert len(ds2.data) == 500 and set(ds2.data) <= {0, 1, 2}
    assert ds2.info["source"]["alphabet_size"] == 3 and "not the preset" in ds2.info["description"]
    assert ds2.data == synthetic.generate(scfg).data[:500]
    assert data_lib.load(DataConfig(name="synthetic", synthetic=scfg)).data == synthetic.generate(scfg).data
    with pytest.raises(DataError, match="needs data.synthetic"):
        data_lib.load(DataConfig(name="synthetic"))


@pytest.mark.parametrize("change, message", [
    ({"alphabet_size": 1}, "alphabet_size must be >= 2"),
    ({"first_byte": 250}, "first_byte \\+ alphabet_size must be <= 256"),
    ({"first_byte": -1}, "first_byte"),
    ({"length": 0}, "length must be >= 1"),
    ({"order": -1}, "order must be >= 0"),
    ({"alphabet_size": 10, "order": 7}, "contexts is more than 1,000,000"),
    ({"kind": "hmm", "n_states": 9}, "n_states must be between 1 and alphabet_size"),
    ({"kind": "iid", "probs": [1.0, 2.0]}, "probs has 2 entries but alphabet_size is 8"),
    ({"kind": "iid", "alphabet_size": 2, "probs": [1.0, -1.0]}, "must be finite, >= 0"),
    ({"probs": [1.0] * 8}, "probs is used by kind 'iid' only"),
    ({"kind": "lstm"}, "kind must be one of iid, markov, hmm"),
    ({"concentration": 0.0}, "concentration must be positive"),
    ({"seed": -3}, "seed must be >= 0"),
])
def test_synthetic_validation(change, message):
    with pytest.raises(ConfigError, match=message):
        data_lib.load(DataConfig(name="markov2", synthetic=SyntheticConfig(**change)))


# ---------------------------------------------------------------- YAML and imports


def test_yaml_files_are_data_configs():
    files = {p.stem: p for p in CONF_DATA.glob("*.yaml")}
    assert {"pystdlib", "tinyshakespeare", "dickens", "alice29", "enwik8", "pi", "file", "iid_die", "markov2",
            "hmm4"} <= set(files)
    fields = {f.name for f in dataclasses.fields(DataConfig)}
    for stem, path in files.items():
        d = yaml.safe_load(path.read_text())
        assert set(d) == fields, path
        assert d["name"] == stem and d["name"] in REGISTRY and d["data_dir"] == ""
        cfg = config_lib.from_dict({"data": d}).data
        entry = REGISTRY[stem]
        if entry.kind == registry.SYNTHETIC:
            assert set(d["synthetic"]) == {f.name for f in dataclasses.fields(SyntheticConfig)}
            assert cfg.synthetic == SyntheticConfig(**entry.synthetic), f"{path} differs from the preset"
        else:
            assert d["synthetic"] is None


def test_data_layer_never_imports_jax():
    code = ("import sys; from mdlbench import data; from mdlbench.config import DataConfig; "
            "data.load(DataConfig()); data.load(DataConfig(name='hmm4')); "
            "assert 'jax' not in sys.modules, 'jax imported'")
    subprocess.run([sys.executable, "-c", code], check=True, cwd=REPO)


def test_knowledge_base_is_a_data_set_like_any_other():
    from mdlbench.data import knowledge

    a = data_lib.load(DataConfig(name="knowledge_base"))
    b = data_lib.load(DataConfig(name="knowledge_base"))
    assert a.data == b.data and a.sha256 == b.sha256  # deterministic from the registry's seed
    kb = knowledge.generate(knowledge.KnowledgeConfig(**REGISTRY["knowledge_base"].synthetic))
    per_entity = sum(math.log2(len(knowledge.ATTRIBUTES[name].choices)) for name in kb.config.attributes)
    assert a.info["information_bits"] == pytest.approx(kb.n_entities * per_entity)
    assert a.data.count(b"\n") == kb.n_facts * kb.config.templates
