"""Datasets by name: downloads verified against a local server, named folders used or
refused, the per-user cache, the fallback rule, bounded reads, and the progress display.

Every dataset's files here are tiny fakes made in the test: the dataset's spec in
``DATASETS`` is monkeypatched to their checksums (content MD5s for MNIST, .gz MD5s for
Fashion-MNIST and KMNIST, as the real specs have), downloads come from a loopback HTTP
server started here, and the cache is a temporary folder: no test touches the network,
the user's cache or ``NNSCRATCH_DATA``.
"""

from __future__ import annotations

import contextlib
import functools
import gzip
import hashlib
import http.server
import io
import re
import socket
import sys
import tempfile
import threading
import tracemalloc
from collections.abc import Iterator
from dataclasses import dataclass, field, replace
from functools import partial
from pathlib import Path

import numpy as np
import pytest

from nnscratch.datasets import (
    DATASETS,
    DataFile,
    Dataset,
    DatasetSpec,
    banner_text,
    cache_dir,
    get_spec,
    load,
)
from nnscratch.datasets import digits as digits_module
from nnscratch.datasets import download as download_module
from nnscratch.datasets.download import download_file
from nnscratch.datasets.idx import GZIP_SLACK, encode_idx
from nnscratch.errors import ConfigError, DataError
from nnscratch.progress import Progress

NAMES = ["mnist", "fashion-mnist", "kmnist"]
FIELDS = ("x_train", "y_train", "x_test", "y_test")
TITLES = {"mnist": "MNIST", "fashion-mnist": "Fashion-MNIST", "kmnist": "Kuzushiji-MNIST"}
RULE = "!" * 78


# --- fake datasets ------------------------------------------------------------------------


def fake_arrays(seed: int) -> dict[str, np.ndarray]:
    """Three training and two test images with labels; each seed gives other files."""
    rng = np.random.default_rng(seed)
    x_train = rng.integers(0, 256, size=(3, 28, 28), dtype=np.uint8)
    x_train[0, 0, :2] = [0, 255]
    return {
        "x_train": x_train,
        "y_train": (np.array([7, 0, 9]) + seed) % 10,
        "x_test": rng.integers(0, 256, size=(2, 28, 28), dtype=np.uint8),
        "y_test": (np.array([3, 3]) + seed) % 10,
    }


def md5(data: bytes) -> str:
    return hashlib.md5(data).hexdigest()


def pack(data: bytes) -> bytes:
    """gzip with mtime=0: the same bytes every time, as a published .gz is."""
    return gzip.compress(data, mtime=0)


@dataclass
class Fake:
    """A tiny dataset in the MNIST layout, installed in DATASETS under a real name."""

    spec: DatasetSpec
    arrays: dict[str, np.ndarray]
    content: dict[str, bytes]
    packed: dict[str, bytes]

    def file_name(self, field_name: str, compressed: bool = True) -> str:
        return self.spec.files[field_name].name + (".gz" if compressed else "")

    def write(self, folder: Path, *, compressed: bool = True, fields: tuple[str, ...] = FIELDS,
              content: dict[str, bytes] | None = None) -> Path:
        """Write the files (``.gz`` as published, or decompressed) into ``folder``."""
        folder.mkdir(parents=True, exist_ok=True)
        for name in fields:
            data = (content or {}).get(name, self.content[name])
            (folder / self.file_name(name, compressed)).write_bytes(
                pack(data) if compressed else data)
        return folder

    def assert_loaded(self, dataset: Dataset) -> None:
        """``dataset`` holds exactly these arrays, scaled, and the spec's names."""
        for name in FIELDS:
            array = self.arrays[name]
            expected = (array.reshape(array.shape[0], -1) / np.float32(255)).astype(np.float32) \
                if name.startswith("x") else array.astype(np.int64)
            loaded = getattr(dataset, name)
            assert loaded.dtype == expected.dtype, name
            np.testing.assert_array_equal(loaded, expected, err_msg=name)
        assert dataset.name == self.spec.name and dataset.title == self.spec.title
        assert dataset.class_names == self.spec.class_names


def make_fake(name: str, seed: int = 0, mirrors: tuple[str, ...] = ()) -> Fake:
    """A fake for dataset ``name``, verified the way the real one is (content MD5 for MNIST,
    .gz MD5 for Fashion-MNIST and KMNIST)."""
    real = DATASETS[name]
    arrays = fake_arrays(seed)
    content = {
        name: encode_idx(array.astype(np.uint8)) for name, array in arrays.items()
    }
    packed = {name: pack(data) for name, data in content.items()}
    files = {}
    for key, real_file in real.files.items():
        content_md5 = md5(content[key]) if real_file.md5 is not None else None
        files[key] = DataFile(real_file.name, content_md5, len(content[key]), md5(packed[key]))
    return Fake(replace(real, files=files, mirrors=mirrors), arrays, content, packed)


@pytest.fixture
def install(monkeypatch: pytest.MonkeyPatch):
    """``install(name, seed, mirrors)`` puts a fake dataset in DATASETS for this test."""

    def install_fake(name: str, seed: int = 0, mirrors: tuple[str, ...] = ()) -> Fake:
        fake = make_fake(name, seed, mirrors)
        monkeypatch.setitem(DATASETS, name, fake.spec)
        return fake

    return install_fake


def with_file(fake: Fake, field_name: str, **changes: str | int | None) -> Fake:
    """``fake`` with one file's DataFile changed (e.g. a wrong checksum), re-installed."""
    files = {**fake.spec.files, field_name: replace(fake.spec.files[field_name], **changes)}
    return replace(fake, spec=replace(fake.spec, files=files))


@pytest.fixture(autouse=True)
def isolated(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """No test reads the user's environment or cache, or another test's verifications."""
    monkeypatch.delenv("NNSCRATCH_DATA", raising=False)
    monkeypatch.setenv("NNSCRATCH_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    monkeypatch.setattr(download_module, "_verified", set())


def files_under(folder: Path) -> list[str]:
    """Every file below ``folder`` (hidden .part files too), as sorted relative paths."""
    if not folder.exists():
        return []
    return sorted(str(path.relative_to(folder)) for path in folder.rglob("*") if path.is_file())


# --- the loopback server ------------------------------------------------------------------


@dataclass
class Server:
    url: str
    root: Path
    requests: list[str] = field(default_factory=list)

    def mirror(self, fake: Fake | None = None, compressed: bool = True) -> str:
        """A new folder on the server (with ``fake``'s files, if given); its URL."""
        folder = Path(tempfile.mkdtemp(dir=self.root))
        if fake is not None:
            fake.write(folder, compressed=compressed)
        return f"{self.url}/{folder.name}/"

    def folder(self, url: str) -> Path:
        return self.root / url.rstrip("/").rsplit("/", 1)[1]

    def served(self, url: str) -> list[str]:
        """The file names requested below ``url``."""
        prefix = "/" + self.folder(url).name + "/"
        return [path[len(prefix):] for path in self.requests if path.startswith(prefix)]


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    root = tmp_path_factory.mktemp("served")
    state = Server(url="", root=root)

    class Handler(http.server.SimpleHTTPRequestHandler):
        def log_request(self, code: int | str = "-", size: int | str = "-") -> None:
            state.requests.append(self.path)

        def log_message(self, format: str, *args: object) -> None:
            pass  # keep the test output quiet

    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), partial(Handler, directory=str(root)))
    state.url = f"http://127.0.0.1:{httpd.server_address[1]}"
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    try:
        yield state
    finally:
        httpd.shutdown()
        httpd.server_close()
        thread.join()


def closed_port_url() -> str:
    """A URL on localhost where nothing listens: the connection is refused at once."""
    with contextlib.closing(socket.socket()) as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    return f"http://127.0.0.1:{port}/data/"


# --- the registry -------------------------------------------------------------------------


def test_registry_holds_the_published_checksums_and_class_names() -> None:
    """Spot checks against the published values (zalandoresearch/fashion-mnist README,
    torchvision's mnist.py, ../shared/data/mnist/README.md), written out here by hand."""
    mnist, fashion, kmnist = DATASETS["mnist"], DATASETS["fashion-mnist"], DATASETS["kmnist"]
    assert mnist.files["x_train"].md5 == "6bbc9ace898e44ae57da46a324031adb"
    assert mnist.files["y_test"].gz_md5 == "ec29112dd5afa0611ce80d1b7f02629c"
    assert fashion.files["x_train"].gz_md5 == "8d4fb7e6c68d591d4c3dfef9ec88bf0d"
    assert fashion.files["y_test"].gz_md5 == "bb300cfdad3c16e7a12a480ee83cd310"
    assert kmnist.files["x_train"].gz_md5 == "bdb82020997e1d708af4cf47b453dcf7"
    assert kmnist.files["y_test"].gz_md5 == "7320c461ea6c1c855c0b718fb2a4b134"
    # Only MNIST's decompressed content has a published checksum.
    assert [file.md5 is None for file in fashion.files.values()] == [True] * 4
    assert [file.md5 is None for file in kmnist.files.values()] == [True] * 4
    for spec in (mnist, fashion, kmnist):
        assert [file.size for file in spec.files.values()] == [47040016, 60008, 7840016, 10008]
        assert len(spec.class_names) == 10 and spec.mirrors
        for file in spec.files.values():
            assert re.fullmatch("[0-9a-f]{32}", file.gz_md5)
    assert fashion.class_names[7] == "Sneaker" and fashion.class_names[0] == "T-shirt/top"
    assert kmnist.class_names == ("o", "ki", "su", "tsu", "na", "ha", "ma", "ya", "re", "wo")
    assert mnist.class_names == tuple("0123456789")
    assert fashion.title == "Fashion-MNIST"


def test_kmnist_class_names_render_in_the_default_plot_font() -> None:
    """Plots must draw the class names: matplotlib's default font has every glyph."""
    font_manager = pytest.importorskip("matplotlib.font_manager",
                                       reason="the glyph check needs matplotlib")
    from matplotlib.ft2font import FT2Font

    font = FT2Font(font_manager.findfont(font_manager.FontProperties()))
    charmap = font.get_charmap()
    for spec in DATASETS.values():
        missing = {char for name in spec.class_names for char in name if ord(char) not in charmap}
        assert not missing, (spec.name, missing)


@pytest.mark.parametrize("alias", ["fashion-mnist", "Fashion-MNIST", "fashion_mnist"])
def test_names_are_forgiving_about_case_and_underscores(alias: str) -> None:
    assert get_spec(alias) is DATASETS["fashion-mnist"]


def test_unknown_names_and_fallbacks_are_config_errors() -> None:
    with pytest.raises(ConfigError, match="unknown dataset 'cifar10'.*mnist, fashion-mnist"):
        load("cifar10")
    with pytest.raises(ConfigError, match="fallback must be None or one of"):
        load("mnist", fallback="spirals")


# --- downloads, for each named dataset ----------------------------------------------------


@pytest.mark.parametrize("name", NAMES)
def test_download_into_the_cache_is_verified_and_kept(
    server: Server, install, name: str
) -> None:
    fake = install(name)
    url = server.mirror(fake)
    dataset = load(name, mirrors=[url], progress=False)
    fake.assert_loaded(dataset)
    cache = cache_dir(name)
    assert dataset.source == str(cache) and dataset.notes == () and dataset.fallback_reason is None
    assert cache == cache_dir() / name  # one subfolder per dataset
    # the verified .gz files, byte for byte, and nothing else
    assert files_under(cache) == sorted(fake.file_name(key) for key in FIELDS)
    for key in FIELDS:
        assert (cache / fake.file_name(key)).read_bytes() == fake.packed[key]
    assert sorted(server.served(url)) == sorted(fake.file_name(key) for key in FIELDS)
    # from the cache now: no request, no download needed
    fake.assert_loaded(load(name, mirrors=[url], download=False, progress=False))
    assert len(server.served(url)) == 4


@pytest.mark.parametrize("name", NAMES)
def test_a_wrong_checksum_is_refused_and_leaves_no_file(
    server: Server, install, monkeypatch: pytest.MonkeyPatch, name: str
) -> None:
    fake = install(name)
    url = server.mirror(fake)
    kind = "md5" if fake.spec.files["y_test"].md5 is not None else "gz_md5"
    wrong = with_file(fake, "y_test", **{kind: "0" * 32})
    monkeypatch.setitem(DATASETS, name, wrong.spec)
    with pytest.raises(DataError, match="checksum mismatch") as info:
        load(name, mirrors=[url], progress=False)
    message = str(info.value)
    assert "0" * 32 in message and "t10k-labels-idx1-ubyte.gz" in message
    assert ("the .gz file has MD5" in message) == (kind == "gz_md5")
    # the three good files are kept (verified); of the refused one, nothing: no final name,
    # no .part
    assert files_under(cache_dir(name)) == sorted(
        fake.file_name(key) for key in ("x_train", "y_train", "x_test"))


@pytest.mark.parametrize("name", NAMES)
def test_a_download_of_the_wrong_size_is_refused(server: Server, install,
                                                monkeypatch: pytest.MonkeyPatch,
                                                name: str) -> None:
    """The checksum matches but the decompressed content is not the size it should be."""
    fake = install(name)
    url = server.mirror(fake)
    wrong = with_file(fake, "y_train", size=fake.spec.files["y_train"].size + 1)
    monkeypatch.setitem(DATASETS, name, wrong.spec)
    with pytest.raises(DataError, match=r"11 bytes\), expected|has 11 bytes, expected 12"):
        load(name, mirrors=[url], progress=False)
    assert "train-labels-idx1-ubyte.gz" not in files_under(cache_dir(name))


@functools.lru_cache(maxsize=1)
def idx_bomb() -> bytes:
    """A .gz whose IDX header claims 40,000 images and whose stream really holds them: 31 MB
    of zeros once inflated, 31 kB compressed."""
    count = 40_000
    header = bytes([0, 0, 0x08, 3]) + count.to_bytes(4, "big") + (28).to_bytes(4, "big") * 2
    return gzip.compress(header + bytes(count * 28 * 28), mtime=0)


def peak_traced_bytes(action) -> tuple[int, DataError]:
    """The peak Python memory ``action()`` allocates (its DataError is expected)."""
    tracemalloc.start()
    try:
        with pytest.raises(DataError) as info:
            action()
        return tracemalloc.get_traced_memory()[1], info.value
    finally:
        tracemalloc.stop()


@pytest.mark.parametrize("name", NAMES)
def test_an_oversized_header_is_refused_before_inflating(
    server: Server, install, monkeypatch: pytest.MonkeyPatch, name: str
) -> None:
    fake = install(name)
    url = server.mirror(fake)
    bomb = idx_bomb()
    (server.folder(url) / fake.file_name("x_test")).write_bytes(bomb)
    # The spec accepts the bomb's .gz checksum, so only the size can stop it.
    trusting = with_file(fake, "x_test", gz_md5=md5(bomb))
    monkeypatch.setitem(DATASETS, name, trusting.spec)
    peak, error = peak_traced_bytes(lambda: load(name, mirrors=[url], progress=False))
    assert "the IDX header claims shape (40000, 28, 28)" in str(error)
    assert "more than the 1584 bytes this file should hold" in str(error)
    assert peak < 8_000_000  # the 31 MB were never inflated
    assert fake.file_name("x_test") not in files_under(cache_dir(name))


def test_download_falls_through_to_the_next_mirror(server: Server, install) -> None:
    fake = install("fashion-mnist")
    good = server.mirror(fake)
    corrupt = server.mirror()
    for key in FIELDS:
        (server.folder(corrupt) / fake.file_name(key)).write_bytes(b"\x1f\x8b" + b"\x00" * 40)
    empty = server.mirror()
    refused = closed_port_url()
    dataset = load("fashion-mnist", mirrors=[empty, refused, corrupt, good], progress=False)
    fake.assert_loaded(dataset)
    assert len(server.served(empty)) == 4 and len(server.served(corrupt)) == 4
    assert len(server.served(good)) == 4


def test_only_the_missing_files_are_downloaded(server: Server, install) -> None:
    fake = install("kmnist")
    url = server.mirror(fake)
    fake.write(cache_dir("kmnist"), fields=("x_train", "y_train"))
    fake.assert_loaded(load("kmnist", mirrors=[url], progress=False))
    assert sorted(server.served(url)) == ["t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz"]


def test_a_response_larger_than_the_file_is_refused(server: Server, tmp_path: Path) -> None:
    url = server.mirror()
    (server.folder(url) / "big.gz").write_bytes(bytes(GZIP_SLACK + 11))
    with pytest.raises(DataError, match="more than the"):
        download_file([url + "big.gz"], tmp_path / "big.gz", "0" * 32, 10, progress=False)
    assert files_under(tmp_path) == []


def test_download_file_checks_gz_bytes_when_told(server: Server, tmp_path: Path) -> None:
    data = encode_idx(np.arange(5, dtype=np.uint8))
    url = server.mirror()
    (server.folder(url) / "a.gz").write_bytes(pack(data))
    (server.folder(url) / "plain").write_bytes(data)
    # the .gz MD5 is not the content MD5: told "gz", the content MD5 is refused
    with pytest.raises(DataError, match="the .gz file has MD5"):
        download_file([url + "a.gz"], tmp_path / "a.gz", md5(data), len(data), progress=False,
                      md5_of="gz")
    with pytest.raises(DataError, match="not a gzip file"):
        download_file([url + "plain"], tmp_path / "p.gz", md5(data), len(data), progress=False,
                      md5_of="gz")
    assert files_under(tmp_path) == []
    download_file([url + "a.gz"], tmp_path / "a.gz", md5(pack(data)), len(data), progress=False,
                  md5_of="gz")
    assert (tmp_path / "a.gz").read_bytes() == pack(data)
    with pytest.raises(ConfigError, match="md5_of"):
        download_file([url + "a.gz"], tmp_path / "b.gz", md5(data), 13, md5_of="sha")


# --- the per-user cache -------------------------------------------------------------------


def test_cache_dir_is_a_base_with_one_folder_per_dataset(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("NNSCRATCH_CACHE", str(tmp_path / "mine"))
    assert cache_dir() == tmp_path / "mine"
    assert cache_dir("kmnist") == tmp_path / "mine" / "kmnist"
    monkeypatch.delenv("NNSCRATCH_CACHE")
    assert cache_dir("fashion-mnist") == tmp_path / "xdg" / "nnscratch" / "fashion-mnist"
    monkeypatch.delenv("XDG_CACHE_HOME")
    assert cache_dir("mnist") == Path.home() / ".cache" / "nnscratch" / "mnist"


@pytest.mark.parametrize("name", NAMES)
def test_a_bad_cached_file_is_an_error_saying_to_delete_it(install, name: str) -> None:
    fake = install(name)
    cache = fake.write(cache_dir(name))
    other = make_fake(name, seed=5)
    bad = cache / fake.file_name("y_train")
    bad.write_bytes(other.packed["y_train"])  # well-formed, but not the verified file
    with pytest.raises(DataError, match="checksum mismatch") as info:
        load(name, download=False, fallback="digits")  # a bad cache never falls back
    assert f"Delete it ({bad})" in str(info.value)


@pytest.mark.parametrize("name", NAMES)
def test_a_cached_file_with_an_oversized_header_is_refused(
    install, monkeypatch: pytest.MonkeyPatch, name: str
) -> None:
    fake = install(name)
    cache = fake.write(cache_dir(name))
    (cache / fake.file_name("x_test")).write_bytes(idx_bomb())
    # the spec accepts the bomb's .gz checksum, so only the size can stop it
    monkeypatch.setitem(DATASETS, name, with_file(fake, "x_test", gz_md5=md5(idx_bomb())).spec)
    peak, error = peak_traced_bytes(lambda: load(name, download=False))
    assert "the IDX header claims shape (40000, 28, 28)" in str(error)
    assert peak < 8_000_000


def test_a_cached_file_far_larger_than_its_size_is_refused_unread(install) -> None:
    fake = install("mnist")
    cache = fake.write(cache_dir("mnist"))
    (cache / fake.file_name("y_test")).write_bytes(bytes(GZIP_SLACK + 100))
    with pytest.raises(DataError, match="far more than the 10 bytes it should hold"):
        load("mnist", download=False)


def test_mnist_in_the_cache_may_be_decompressed_or_recompressed(install) -> None:
    """MNIST is verified by its content, so the container does not matter."""
    fake = install("mnist")
    cache = fake.write(cache_dir("mnist"), compressed=False, fields=("x_train", "y_train"))
    for key in ("x_test", "y_test"):
        (cache / fake.file_name(key)).write_bytes(
            gzip.compress(fake.content[key], compresslevel=1, mtime=12345))
    fake.assert_loaded(load("mnist", download=False))


@pytest.mark.parametrize("name", ["fashion-mnist", "kmnist"])
def test_a_decompressed_file_in_the_cache_cannot_be_verified(install, name: str) -> None:
    fake = install(name)
    cache = fake.write(cache_dir(name), fields=("x_train", "y_train", "x_test"))
    fake.write(cache, compressed=False, fields=("y_test",))
    with pytest.raises(DataError, match="cannot be verified.*delete it"):
        load(name, download=False)


def test_each_cached_file_is_hashed_once_per_version(
    install, monkeypatch: pytest.MonkeyPatch
) -> None:
    fake = install("fashion-mnist")
    cache = fake.write(cache_dir("fashion-mnist"))
    hashed: list[int] = []
    original = download_module.md5_hex

    def counting(data: bytes) -> str:
        hashed.append(len(data))
        return original(data)

    monkeypatch.setattr(download_module, "md5_hex", counting)
    load("fashion-mnist", download=False)
    load("fashion-mnist", download=False)
    assert len(hashed) == 4
    # a new version of one file (same content, new container): hashed again, and refused
    (cache / fake.file_name("y_test")).write_bytes(gzip.compress(fake.content["y_test"], 1))
    with pytest.raises(DataError, match="checksum mismatch"):
        load("fashion-mnist", download=False)
    assert len(hashed) == 5


# --- named folders: used or refused --------------------------------------------------------


@pytest.mark.parametrize("how", ["root", "NNSCRATCH_DATA"])
def test_a_missing_named_folder_is_an_error_naming_it(
    server: Server, install, monkeypatch: pytest.MonkeyPatch, tmp_path: Path, how: str
) -> None:
    fake = install("mnist")
    url = server.mirror(fake)
    fake.write(cache_dir("mnist"))  # a good copy in the cache must not stand in
    folder = tmp_path / "no" / "such" / "folder"
    root = folder if how == "root" else None
    if how == "NNSCRATCH_DATA":
        monkeypatch.setenv("NNSCRATCH_DATA", str(folder))
    with pytest.raises(DataError, match="does not exist") as info:
        load("mnist", root, mirrors=[url], fallback="digits")
    assert str(folder) in str(info.value)
    assert ("NNSCRATCH_DATA" in str(info.value)) == (how == "NNSCRATCH_DATA")
    assert server.served(url) == [] and not folder.exists()


def test_a_named_path_that_is_a_file_is_refused(tmp_path: Path) -> None:
    (tmp_path / "data").write_text("not a folder")
    with pytest.raises(DataError, match="is not a folder"):
        load("mnist", tmp_path / "data")


@pytest.mark.parametrize("name", NAMES)
def test_a_named_folder_missing_a_file_is_refused_even_with_the_cache_full(
    server: Server, install, tmp_path: Path, name: str
) -> None:
    fake = install(name)
    url = server.mirror(fake)
    fake.write(cache_dir(name))
    folder = fake.write(tmp_path / "mine", fields=("x_train", "y_train", "y_test"))
    with pytest.raises(DataError) as info:
        load(name, folder, mirrors=[url], fallback="digits")
    message = str(info.value)
    assert f"{folder} (named by the root argument) lacks 1 of the 4" in message
    assert "t10k-images-idx3-ubyte" in message and "train-images" not in message
    assert server.served(url) == [] and files_under(folder) == sorted(
        fake.file_name(key) for key in ("x_train", "y_train", "y_test"))


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("compressed", [True, False], ids=["gz", "decompressed"])
def test_canonical_files_in_a_named_folder_load_without_a_note(
    install, tmp_path: Path, name: str, compressed: bool
) -> None:
    fake = install(name)
    folder = fake.write(tmp_path / "mine", compressed=compressed)
    said: list[str] = []
    dataset = load(name, folder, report=said.append)
    fake.assert_loaded(dataset)
    assert dataset.source == str(folder)
    verified_by_content = fake.spec.files["x_train"].md5 is not None
    if compressed or verified_by_content:
        assert said == [] and dataset.notes == ()
    else:  # decompressed Fashion-MNIST / KMNIST: no published checksum to confirm them by
        assert said == list(dataset.notes) and len(said) == 1
        assert said[0] == (
            f"{folder}: cannot confirm these are the canonical {TITLES[name]} files "
            "(train-images-idx3-ubyte, train-labels-idx1-ubyte, t10k-images-idx3-ubyte, "
            "t10k-labels-idx1-ubyte cannot be checked: decompressed, and only the .gz files' "
            "checksums are published): training on them as given")


@pytest.mark.parametrize("name", NAMES)
def test_well_formed_files_of_your_own_load_with_one_note(
    install, monkeypatch: pytest.MonkeyPatch, tmp_path: Path, capsys, name: str
) -> None:
    install(name)
    own = make_fake(name, seed=3)  # not the (fake) canonical files
    folder = own.write(tmp_path / "own")
    monkeypatch.setenv("NNSCRATCH_DATA", str(folder))
    dataset = load(name)
    own.assert_loaded(dataset)  # as given
    expected = (f"{folder}: not the canonical {TITLES[name]} files (train-images-idx3-ubyte.gz, "
                "train-labels-idx1-ubyte.gz, t10k-images-idx3-ubyte.gz, t10k-labels-idx1-ubyte.gz"
                " differ from the published checksums): training on them as given")
    assert dataset.notes == (expected,)
    captured = capsys.readouterr()
    assert captured.err == expected + "\n" and captured.out == ""  # once, on stderr
    load(name, report=None)
    assert capsys.readouterr().err == ""


def test_the_note_names_only_the_files_that_differ(install, tmp_path: Path) -> None:
    fake = install("mnist")
    own = make_fake("mnist", seed=3)
    folder = fake.write(tmp_path / "mixed", content={"y_test": own.content["y_test"]})
    dataset = load("mnist", folder, report=None)
    assert dataset.notes == (
        f"{folder}: not the canonical MNIST files (t10k-labels-idx1-ubyte.gz differ from the "
        "published checksums): training on them as given",)


DEFECTS = {
    # name: (the file it spoils, how, a part of the message)
    "truncated gzip": ("x_train", lambda fake: pack(fake.content["x_train"])[:-30],
                       "corrupt gzip stream"),
    "corrupt gzip": ("y_test", lambda fake: b"\x1f\x8b" + bytes(30), "corrupt gzip stream"),
    "bad magic": ("x_test", lambda fake: pack(b"\x01" + fake.content["x_test"][1:]),
                  "bad magic number"),
    "truncated data": ("x_test", lambda fake: pack(fake.content["x_test"][:-5]),
                       "data shorter than the header says"),
    "count above the data": ("y_train", lambda fake: pack(
        fake.content["y_train"][:7] + b"\x04" + fake.content["y_train"][8:]),
        "data shorter than the header says"),
    "labels out of range": ("y_train", lambda fake: pack(encode_idx(np.array([1, 10, 2],
                                                                             np.uint8))),
                            "label 10 is out of range 0-9 for the 10 classes of"),
    "image and label counts differ": ("y_test", lambda fake: pack(encode_idx(
        np.zeros(3, np.uint8))), "holds 2 images but .* holds 3 labels"),
    "images not 28x28": ("x_train", lambda fake: pack(encode_idx(np.zeros((3, 27, 28),
                                                                           np.uint8))),
                         r"expected uint8 images of shape \(N, 28, 28\)"),
    "labels not a vector": ("y_test", lambda fake: pack(encode_idx(np.zeros((2, 1), np.uint8))),
                            "expected a vector of uint8 labels"),
}


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("defect", sorted(DEFECTS))
def test_each_structural_defect_is_an_error_naming_file_and_problem(
    install, tmp_path: Path, name: str, defect: str
) -> None:
    fake = install(name)
    spoiled, make_bytes, problem = DEFECTS[defect]
    folder = fake.write(tmp_path / "named")
    path = folder / fake.file_name(spoiled)
    path.write_bytes(make_bytes(fake))
    with pytest.raises(DataError, match=problem) as info:
        load(name, folder, fallback="digits")
    assert str(path) in str(info.value)


@pytest.mark.parametrize("how", ["root", "NNSCRATCH_DATA"])
def test_another_datasets_files_in_the_named_folder_are_refused(
    install, monkeypatch: pytest.MonkeyPatch, tmp_path: Path, how: str
) -> None:
    mnist = install("mnist", seed=1)
    install("fashion-mnist", seed=2)
    folder = mnist.write(tmp_path / "mnist")
    if how == "NNSCRATCH_DATA":
        monkeypatch.setenv("NNSCRATCH_DATA", str(folder))
    with pytest.raises(DataError) as info:
        load("fashion-mnist", folder if how == "root" else None)
    message = str(info.value)
    assert message.startswith(f"{folder} (named by ")
    assert "holds the canonical MNIST files (train-images-idx3-ubyte.gz, " in message
    assert "not Fashion-MNIST: to use them, load('mnist')" in message
    assert ("unset it" in message) == (how == "NNSCRATCH_DATA")
    # asked for what the folder holds, it loads
    mnist.assert_loaded(load("mnist", folder if how == "root" else None))


def test_kmnist_gz_files_asked_for_as_mnist_are_refused(install, tmp_path: Path) -> None:
    install("mnist", seed=1)
    kmnist = install("kmnist", seed=4)
    folder = kmnist.write(tmp_path / "k")
    with pytest.raises(DataError, match="holds the canonical Kuzushiji-MNIST files"):
        load("mnist", folder)


def test_nothing_is_downloaded_into_a_named_folder(server: Server, install,
                                                   tmp_path: Path) -> None:
    fake = install("kmnist")
    url = server.mirror(fake)
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match="lacks 4 of the 4"):
        load("kmnist", tmp_path / "empty", mirrors=[url], download=True)
    assert server.served(url) == [] and files_under(tmp_path / "empty") == []


# --- the fallback -------------------------------------------------------------------------


@pytest.fixture
def sklearn():
    return pytest.importorskip("sklearn", reason="the 8x8 digits fallback needs scikit-learn")


@pytest.mark.usefixtures("sklearn")
@pytest.mark.parametrize("name", NAMES)
def test_fallback_when_nothing_is_named_and_the_download_fails(
    server: Server, install, capsys, name: str
) -> None:
    install(name)
    empty = server.mirror()  # every file: HTTP 404
    dataset = load(name, mirrors=[empty], progress=False, fallback="digits")
    assert dataset.name == "digits-8x8" and dataset.x_train.shape[1] == 64
    assert dataset.class_names == tuple("0123456789")
    assert "HTTP 404" in dataset.fallback_reason and empty in dataset.fallback_reason
    err = capsys.readouterr().err
    assert err.count(RULE) == 2 and err.startswith(RULE)
    assert f"!!  {TITLES[name].upper()} IS NOT AVAILABLE: using the 8x8 scikit-learn" in err
    assert "HTTP 404" in err and str(cache_dir(name)) in err  # what failed, where
    assert "train-images-idx3-ubyte.gz" in err and "NNSCRATCH_DATA" in err  # how to fix it


@pytest.mark.usefixtures("sklearn")
def test_fallback_with_download_false_says_so(install, capsys) -> None:
    install("fashion-mnist")
    dataset = load("fashion-mnist", download=False, fallback="digits")
    assert "download=False" in dataset.fallback_reason
    err = capsys.readouterr().err
    assert "FASHION-MNIST IS NOT AVAILABLE" in err and "allow the download" in err


def test_without_fallback_an_unavailable_dataset_is_an_error(server: Server, install,
                                                             capsys) -> None:
    install("kmnist")
    empty = server.mirror()
    with pytest.raises(DataError, match="download failed from every mirror.*HTTP 404") as info:
        load("kmnist", mirrors=[empty], progress=False)
    assert "To get Kuzushiji-MNIST" in str(info.value)
    assert RULE not in capsys.readouterr().err


@pytest.mark.usefixtures("sklearn")
@pytest.mark.parametrize("how", ["root", "NNSCRATCH_DATA"])
def test_named_data_never_falls_back(server: Server, install, monkeypatch: pytest.MonkeyPatch,
                                     tmp_path: Path, capsys, how: str) -> None:
    install("mnist")
    empty_folder = tmp_path / "empty"
    empty_folder.mkdir()
    if how == "NNSCRATCH_DATA":
        monkeypatch.setenv("NNSCRATCH_DATA", str(empty_folder))
    with pytest.raises(DataError, match="lacks 4 of the 4 MNIST files"):
        load("mnist", empty_folder if how == "root" else None, mirrors=[server.mirror()],
             download=False, fallback="digits")
    assert RULE not in capsys.readouterr().err


@pytest.mark.usefixtures("sklearn")
def test_a_partial_cache_still_falls_back_when_the_rest_cannot_be_had(
    server: Server, install
) -> None:
    fake = install("mnist")
    fake.write(cache_dir("mnist"), fields=("x_train",))
    dataset = load("mnist", mirrors=[server.mirror()], progress=False, fallback="digits",
                   report=None)
    assert dataset.fallback_reason is not None and "train-labels-idx1-ubyte.gz" in \
        dataset.fallback_reason


def test_fallback_without_scikit_learn_gives_both_reasons(
    install, monkeypatch: pytest.MonkeyPatch
) -> None:
    install("mnist")

    def no_sklearn(*args: object, **kwargs: object) -> Dataset:
        raise DataError("load_digits needs scikit-learn: pip install scikit-learn")

    monkeypatch.setattr(digits_module, "load_digits", no_sklearn)
    with pytest.raises(DataError, match="MNIST is unavailable: .*download=False.* -- and the "
                                        "fallback, the 8x8 digits, is unavailable too: "
                                        ".*pip install scikit-learn"):
        load("mnist", download=False, fallback="digits")


@pytest.mark.usefixtures("sklearn")
def test_digits_by_name(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("NNSCRATCH_DATA", str(tmp_path / "ignored"))  # only for IDX datasets
    dataset = load("digits")
    assert dataset.name == "digits-8x8" and dataset.x_train.shape[1] == 64
    assert dataset.class_name(7) == "7" and dataset.fallback_reason is None
    with pytest.raises(ConfigError, match="root= does not apply"):
        load("digits", tmp_path)


def test_banner_text_frames_and_wraps() -> None:
    text = banner_text(["SHORT.", "a long paragraph " * 12])
    lines = text.split("\n")
    assert lines[0] == lines[-1] == RULE
    assert lines[1] == "!!  SHORT."
    assert all(line.startswith("!!  ") and len(line) <= 76 for line in lines[1:-1])
    assert len(lines) > 4  # the long paragraph was wrapped


# --- the Dataset --------------------------------------------------------------------------


def test_dataset_class_names_and_title() -> None:
    labels = np.array([0, 2, 1], np.int64)
    dataset = Dataset(np.zeros((3, 4), np.float32), labels, np.zeros((1, 4), np.float32),
                      np.array([1], np.int64), name="tiny", source="here",
                      class_names=("cat", "dog", "eel"))
    assert dataset.title == "tiny" and dataset.num_classes == 3
    assert dataset.class_name(np.int64(2)) == "eel"
    with pytest.raises(DataError, match="no class 3"):
        dataset.class_name(3)
    with pytest.raises(DataError, match="no class -1"):
        dataset.class_name(-1)
    with pytest.raises(DataError, match="train label 2 has no class name"):
        replace(dataset, class_names=("cat", "dog"))
    unnamed = replace(dataset, class_names=())
    assert unnamed.num_classes == 3 and unnamed.class_name(5) == "5"


# --- the progress display -----------------------------------------------------------------


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_plain_progress_on_a_terminal_rewrites_one_line() -> None:
    screen = Terminal()
    with Progress(200, "epoch 1/3", unit="step", stream=screen, refresh=0, use_tqdm=False) as bar:
        bar.update(50)
        bar.set_postfix_str("loss 0.5000")
        drawn = screen.getvalue()
    assert drawn.startswith("\repoch 1/3  [#######") and "  25%  50/200 step" in drawn
    assert drawn.endswith("loss 0.5000")
    assert screen.getvalue()[len(drawn):].strip("\r ") == ""  # erased on close
    assert "\n" not in screen.getvalue()


def test_plain_progress_redraws_at_most_every_refresh_seconds() -> None:
    screen = Terminal()
    bar = Progress(10, "x", stream=screen, refresh=60, use_tqdm=False, leave=True)
    for _ in range(10):
        bar.update(1)
    assert screen.getvalue().count("\r") == 1  # the first update only
    bar.close()
    assert screen.getvalue().endswith("100%  10/10 it\n")  # the final state, kept


def test_plain_progress_shows_bytes_as_megabytes() -> None:
    bar = Progress(9_912_422, "train-images-idx3-ubyte.gz", unit="B", use_tqdm=False)
    bar.update(4_000_000)
    assert bar.text().endswith("40%  4.0/9.9 MB")
    assert Progress(None, "a", unit="B", use_tqdm=False).text() == "a  0.0 MB"


def test_plain_progress_off_a_terminal_prints_only_a_kept_final_line() -> None:
    log = io.StringIO()
    with Progress(3, "steps", stream=log, use_tqdm=False) as bar:
        bar.update(3)
    assert log.getvalue() == ""
    with Progress(3, "steps", stream=log, use_tqdm=False, leave=True) as bar:
        bar.update(3)
    assert log.getvalue() == "steps  [" + "#" * 30 + "] 100%  3/3 it\n"


def test_disabled_progress_shows_nothing_even_with_tqdm() -> None:
    screen = Terminal()
    with Progress(3, "x", stream=screen, enabled=False, leave=True) as bar:
        bar.update(3)
        bar.set_postfix_str("y")
    assert screen.getvalue() == ""


def test_progress_uses_tqdm_when_installed() -> None:
    pytest.importorskip("tqdm", reason="tqdm is optional; the plain display is tested above")
    log = Terminal()
    with Progress(2_000_000, "file.gz", unit="B", stream=log, refresh=0) as bar:
        bar.set_postfix_str("half")  # shown with the next update
        bar.update(1_000_000)
    shown = log.getvalue()
    assert "file.gz:  50%" in shown and "1.00M/2.00M" in shown and "B/s, half]" in shown
    log = io.StringIO()  # a pipe or a log file: tqdm stays silent too
    with Progress(2_000_000, "file.gz", unit="B", stream=log, refresh=0) as bar:
        bar.update(1_000_000)
    assert log.getvalue() == ""


def test_download_progress_goes_to_stderr(server: Server, install, capsys,
                                          monkeypatch: pytest.MonkeyPatch) -> None:
    pytest.importorskip("tqdm", reason="tqdm is optional; without it nothing shows off a TTY")
    fake = install("mnist")
    url = server.mirror(fake)
    terminal, captured = Terminal(), sys.stderr
    monkeypatch.setattr(sys, "stderr", terminal)
    load("mnist", mirrors=[url], progress=True)
    assert "t10k-labels-idx1-ubyte.gz" in terminal.getvalue() and "B/s" in terminal.getvalue()
    assert capsys.readouterr().out == ""
    monkeypatch.setattr(sys, "stderr", captured)  # pytest's capture again
    monkeypatch.setenv("NNSCRATCH_CACHE", str(Path(cache_dir()).parent / "other"))
    monkeypatch.setitem(sys.modules, "tqdm", None)  # makes `import tqdm` fail
    monkeypatch.setitem(sys.modules, "tqdm.auto", None)
    fake.assert_loaded(load("mnist", mirrors=[url], progress=True))
    assert capsys.readouterr().err == ""  # the plain display stays off a non-terminal
