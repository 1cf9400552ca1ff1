"""Classic-compressor baselines: verified round trips, and agreement with the command-line tools."""

from __future__ import annotations

import json
import os
import random
import shutil
import subprocess
import sys
import types
from pathlib import Path

import pytest

from mdlbench import baselines as bl
from mdlbench.cli import main
from mdlbench.errors import DataError


def _shared_data() -> Path | None:
    for d in (os.environ.get("MDLBENCH_SHARED_DATA", ""), Path(__file__).resolve().parents[2] / "shared" / "data",
              "/work/shared/data"):
        if d and (Path(d) / "MANIFEST.tsv").is_file():
            return Path(d)
    return None


SHARED = _shared_data()
needs_shared = pytest.mark.skipif(SHARED is None, reason="shared/data (the real corpora) is not available")


@pytest.fixture(scope="module")
def paper1() -> Path:
    if SHARED is None:
        pytest.skip("shared/data is not available")
    return SHARED / "calgary" / "paper1"


@pytest.fixture(scope="module")
def measured(paper1):
    # The real pool path: two spawned workers, every baseline.
    return bl.measure_all(paper1.read_bytes(), jobs=2)


def _cli(*argv: str) -> bytes:
    return subprocess.run(argv, check=True, capture_output=True).stdout


@needs_shared
def test_all_six_measured_and_verified(measured, paper1):
    n = paper1.stat().st_size
    assert list(measured) == ["gzip_9", "bzip2_9", "xz_9e", "zstd_19", "brotli_11", "ppmd_6"]
    for name, r in measured.items():
        assert r["verified"] is True, name
        assert 0 < r["bytes"] < n, name
        assert r["bits_per_byte"] == 8.0 * r["bytes"] / n
        assert r["seconds"] >= 0 and r["decompress_seconds"] >= 0
    # Text: the context-mixing-free ranking every corpus shows (PPMd < bzip2 < gzip).
    assert measured["ppmd_6"]["bytes"] < measured["bzip2_9"]["bytes"] < measured["gzip_9"]["bytes"]


@needs_shared
@pytest.mark.skipif(shutil.which("gzip") is None, reason="gzip is not installed")
def test_gzip_matches_cli(paper1, measured):
    ours = bl._gzip_compress(paper1.read_bytes())
    assert len(ours) == measured["gzip_9"]["bytes"]
    cli = _cli("gzip", "-9", "-c", str(paper1))
    # The only difference: `gzip FILE` stores the file name (FNAME flag, name + NUL) and the file's
    # mtime in the header; the DEFLATE stream and the CRC32/length trailer are byte-identical.
    name_field = len(paper1.name) + 1
    assert len(cli) == len(ours) + name_field
    assert cli[3] == 0x08 and ours[3] == 0x00  # FLG: FNAME set only by the CLI
    assert cli[10 + name_field:] == ours[10:]


@needs_shared
@pytest.mark.skipif(shutil.which("bzip2") is None, reason="bzip2 is not installed")
def test_bzip2_matches_cli(paper1, measured):
    # Same libbzip2, same block size: identical bytes, no header difference at all.
    assert _cli("bzip2", "-9", "-c", str(paper1)) == bl._bzip2_compress(paper1.read_bytes())
    assert measured["bzip2_9"]["bytes"] == len(_cli("bzip2", "-9", "-c", str(paper1)))


@needs_shared
@pytest.mark.skipif(shutil.which("xz") is None, reason="xz is not installed")
def test_xz_matches_cli(paper1, measured):
    cli = _cli("xz", "-9e", "-c", str(paper1))
    # Single-threaded xz writes exactly our bytes; a multi-threaded xz (the default from xz 5.6 on)
    # also records compressed/uncompressed sizes in the block header: at most a few bytes more.
    assert 0 <= len(cli) - measured["xz_9e"]["bytes"] <= 16
    assert _cli("xz", "-9e", "-T1", "-c", str(paper1)) == bl._xz_compress(paper1.read_bytes())


@needs_shared
@pytest.mark.skipif(shutil.which("brotli") is None, reason="the brotli CLI is not installed")
def test_brotli_matches_cli(paper1, measured):
    # Same window rule as the CLI (smallest lgwin covering the file): identical bytes.
    assert _cli("brotli", "-q", "11", "-c", str(paper1)) == bl._brotli_compress(paper1.read_bytes())
    assert measured["brotli_11"]["bytes"] == len(bl._brotli_compress(paper1.read_bytes()))


@pytest.mark.parametrize("name", list(bl.BASELINES))
@pytest.mark.parametrize("data", [b"\x00", b"abc" * 1000, bytes(range(256)) * 8, random.Random(0).randbytes(3000)],
                         ids=["one-byte", "repetitive", "all-bytes", "random"])
def test_every_baseline_round_trips(name, data):
    r = bl.measure(name, data)
    assert r["verified"] and r["bits_per_byte"] == 8.0 * r["bytes"] / len(data)
    b = bl.BASELINES[name]
    assert b.decompress(b.compress(data)) == data


def test_ppmd_length_prefix_and_brotli_window():
    for n in (0, 1, 127, 128, 300, 2**35 + 7):
        enc = bl._uleb128(n)
        assert bl._read_uleb128(enc + b"tail") == (n, len(enc))
    assert [bl.brotli_lgwin(n) for n in (1, 1008, 1009, 10_192_446, 1 << 30)] == [10, 10, 11, 24, 24]


def test_empty_and_unknown_are_errors():
    with pytest.raises(DataError):
        bl.measure_all(b"", jobs=1)
    with pytest.raises(DataError):
        bl.measure_all(b"abc", jobs=1, names=["lz4"])


def test_cli_writes_json_and_csv(tmp_path, capsys):
    src = tmp_path / "text.txt"
    src.write_bytes(b"the quick brown fox jumps over the lazy dog\n" * 200)
    csv_path = tmp_path / "tables" / "b.csv"
    rc = main(["baselines", str(src), "--only", "gzip_9,ppmd_6", "--jobs", "1", "--out", str(tmp_path / "run"),
               "--csv", str(csv_path)])
    assert rc == 0
    out = capsys.readouterr().out
    assert "gzip -9" in out and "PPMd o6" in out and "bits/byte" in out
    doc = json.loads((tmp_path / "run" / "baselines.json").read_text())
    assert doc["data"]["bytes"] == 8800 and list(doc["baselines"]) == ["gzip_9", "ppmd_6"]
    assert doc["baselines"]["gzip_9"]["bytes"] == len(bl._gzip_compress(src.read_bytes()))
    assert csv_path.read_text().count("\n") == 3  # header + two rows


def test_data_name_goes_through_mdlbench_data(monkeypatch):
    seen = {}

    def load(cfg):
        seen["cfg"] = cfg
        data = b"abracadabra " * 100
        return types.SimpleNamespace(name=cfg.name, data=data[: cfg.max_bytes or None], sha256="", path="/x/fake",
                                     entropy_rate_bits=None, info={})

    monkeypatch.setitem(sys.modules, "mdlbench.data", types.SimpleNamespace(load=load))
    r = bl.run_baselines("data=fake", jobs=1, names=["bzip2_9"], max_bytes=600)
    assert seen["cfg"].name == "fake" and seen["cfg"].max_bytes == 600
    assert r["data"]["name"] == "fake" and r["data"]["bytes"] == 600 and r["baselines"]["bzip2_9"]["verified"]


def test_cli_one_line_errors(tmp_path, capsys):
    for argv in (["baselines", str(tmp_path / "missing.bin")],
                 ["baselines", str(tmp_path)],
                 ["baselines", __file__, "--only", "lz4"]):
        assert main(argv) == 2
        err = capsys.readouterr().err
        assert err.startswith("mdlbench: error: ") and err.count("\n") == 1


@pytest.mark.slow
@needs_shared
def test_dickens_under_a_minute():
    r = bl.run_baselines(str(SHARED / "silesia" / "dickens"), jobs=2)
    bpb = {k: v["bits_per_byte"] for k, v in r["baselines"].items()}
    expected = {"gzip_9": 3.02, "bzip2_9": 2.20, "xz_9e": 2.22, "zstd_19": 2.24, "brotli_11": 2.22, "ppmd_6": 1.80}
    for k, v in expected.items():
        assert bpb[k] == pytest.approx(v, abs=0.02), k
    assert r["wall_s"] < 60


def test_inside_a_launchers_worker_the_baselines_run_in_process(monkeypatch):
    """joblib's loky workers set a start method that spawned children cannot resolve (they die at
    start-up and a pool would wait forever), so there the compressors run in this process."""
    import concurrent.futures
    import multiprocessing

    from mdlbench import baselines

    def no_pool(*a, **k):
        raise AssertionError("a worker pool was started")

    monkeypatch.setattr(multiprocessing, "get_start_method", lambda allow_none=False: "loky")
    monkeypatch.setattr(baselines, "ProcessPoolExecutor", no_pool)
    monkeypatch.setattr(concurrent.futures, "ProcessPoolExecutor", no_pool)
    out = baselines.measure_all(b"abracadabra " * 200, jobs=2, names=["gzip_9", "bzip2_9"])
    assert set(out) == {"gzip_9", "bzip2_9"} and all(r["verified"] for r in out.values())
