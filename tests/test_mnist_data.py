"""MNIST loading (real files, search order, checksums, downloads) and the 8x8 digits.

Everything but the real-file tests runs on tiny fake "MNIST" sets made here: the
checksum table is monkeypatched to their checksums, and downloads are served by a
local HTTP server, so no test touches the network or the user's cache.
"""

from __future__ import annotations

import contextlib
import gzip
import hashlib
import http.server
import os
import socket
import sys
import tempfile
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path

import numpy as np
import pytest

from nnscratch.datasets import mnist
from nnscratch.datasets.digits import load_digits
from nnscratch.datasets.idx import encode_idx
from nnscratch.datasets.mnist import DataFile, Dataset, default_cache_dir, download_file, load_mnist
from nnscratch.errors import ConfigError, DataError

REPO_ROOT = Path(__file__).resolve().parents[1]
REAL_DIR = Path(os.environ.get("NNSCRATCH_DATA") or REPO_ROOT.parent / "shared" / "data" / "mnist")
FILE_NAMES = [spec.name for spec in mnist.MNIST_FILES.values()]

# The published class counts of MNIST's training and test sets, digits 0 to 9.
TRAIN_CLASS_COUNTS = [5923, 6742, 5958, 6131, 5842, 5421, 5918, 6265, 5851, 5949]
TEST_CLASS_COUNTS = [980, 1135, 1032, 1010, 982, 892, 958, 1028, 974, 1009]


# --- real MNIST ---------------------------------------------------------------------


@pytest.fixture(scope="module")
def real_mnist() -> Dataset:
    if not all(
        (REAL_DIR / (name + ".gz")).is_file() or (REAL_DIR / name).is_file() for name in FILE_NAMES
    ):
        pytest.skip(
            f"real MNIST not found in {REAL_DIR}: set NNSCRATCH_DATA to a folder holding it"
        )
    return load_mnist(REAL_DIR, download=False, progress=False)


def test_real_mnist_arrays(real_mnist: Dataset) -> None:
    assert real_mnist.x_train.shape == (60000, 784) and real_mnist.x_test.shape == (10000, 784)
    assert real_mnist.x_train.dtype == np.float32 and real_mnist.x_test.dtype == np.float32
    assert real_mnist.y_train.dtype == np.int64 and real_mnist.y_test.dtype == np.int64
    for images in (real_mnist.x_train, real_mnist.x_test):
        assert images.min() == 0.0 and images.max() == 1.0
        # grey levels / 255, exactly: 256 distinct values at most
        np.testing.assert_array_equal(np.round(images[:500] * 255) / 255, images[:500])
    assert real_mnist.name == "mnist" and real_mnist.source == str(REAL_DIR)


def test_real_mnist_labels(real_mnist: Dataset) -> None:
    assert real_mnist.y_train[0] == 5
    assert list(real_mnist.y_train[:5]) == [5, 0, 4, 1, 9]
    assert np.bincount(real_mnist.y_train, minlength=10).tolist() == TRAIN_CLASS_COUNTS
    assert np.bincount(real_mnist.y_test, minlength=10).tolist() == TEST_CLASS_COUNTS
    assert sum(TRAIN_CLASS_COUNTS) == 60000 and sum(TEST_CLASS_COUNTS) == 10000


# --- tiny fake MNIST sets -----------------------------------------------------------


def _fake_arrays() -> dict[str, np.ndarray]:
    rng = np.random.default_rng(0)
    x_train = rng.integers(0, 256, size=(3, 28, 28), dtype=np.uint8)
    x_train[0, 0, :2] = [0, 255]
    return {
        "x_train": x_train,
        "y_train": np.array([7, 0, 9], dtype=np.uint8),
        "x_test": rng.integers(0, 256, size=(2, 28, 28), dtype=np.uint8),
        "y_test": np.array([3, 3], dtype=np.uint8),
    }


FAKE_ARRAYS = _fake_arrays()
FAKE_CONTENT = {name: encode_idx(array) for name, array in FAKE_ARRAYS.items()}


def _table_for(content: dict[str, bytes]) -> dict[str, DataFile]:
    return {
        name: DataFile(mnist.MNIST_FILES[name].name, hashlib.md5(data).hexdigest(), len(data))
        for name, data in content.items()
    }


FAKE_TABLE = _table_for(FAKE_CONTENT)


def write_fake_mnist(
    directory: Path,
    *,
    compressed: bool = True,
    fields: tuple[str, ...] = tuple(FAKE_CONTENT),
    content: dict[str, bytes] = FAKE_CONTENT,
) -> Path:
    """Write the fake set's files (``name.gz`` or plain ``name``) into ``directory``."""
    directory.mkdir(parents=True, exist_ok=True)
    for name in fields:
        file_name = FAKE_TABLE[name].name
        if compressed:
            (directory / (file_name + ".gz")).write_bytes(gzip.compress(content[name]))
        else:
            (directory / file_name).write_bytes(content[name])
    return directory


@pytest.fixture(autouse=True)
def isolated(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """No test reads the user's environment or cache, or another test's verifications."""
    monkeypatch.delenv("NNSCRATCH_DATA", raising=False)
    monkeypatch.setenv("NNSCRATCH_CACHE", str(tmp_path / "cache"))
    monkeypatch.setattr(mnist, "_verified", set())


@pytest.fixture
def fake_table(monkeypatch: pytest.MonkeyPatch) -> dict[str, DataFile]:
    monkeypatch.setattr(mnist, "MNIST_FILES", FAKE_TABLE)
    return FAKE_TABLE


def assert_is_fake(dataset: Dataset) -> None:
    assert dataset.x_train.shape == (3, 784) and dataset.x_test.shape == (2, 784)
    assert dataset.x_train.dtype == np.float32 and dataset.y_train.dtype == np.int64
    np.testing.assert_array_equal(dataset.y_train, [7, 0, 9])
    np.testing.assert_array_equal(dataset.x_train[0, :2], [0.0, 1.0])
    np.testing.assert_allclose(
        dataset.x_test, FAKE_ARRAYS["x_test"].reshape(2, 784) / np.float32(255), rtol=0, atol=0
    )


# --- finding files ------------------------------------------------------------------


@pytest.mark.usefixtures("fake_table")
def test_search_order_root_then_env_then_cache(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    root = write_fake_mnist(tmp_path / "root")
    env_dir = write_fake_mnist(tmp_path / "env")
    cache = write_fake_mnist(default_cache_dir())
    monkeypatch.setenv("NNSCRATCH_DATA", str(env_dir))

    dataset = load_mnist(root, download=False)
    assert dataset.source == str(root)
    assert_is_fake(dataset)
    assert load_mnist(download=False).source == str(env_dir)
    monkeypatch.delenv("NNSCRATCH_DATA")
    assert load_mnist(download=False).source == str(cache)
    # A root without the files falls back to the next place that has them.
    assert load_mnist(tmp_path / "empty", download=False).source == str(cache)


@pytest.mark.usefixtures("fake_table")
def test_folder_missing_a_file_is_skipped(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    partial_dir = write_fake_mnist(tmp_path / "partial", fields=("x_train", "y_train", "x_test"))
    complete = write_fake_mnist(tmp_path / "complete")
    monkeypatch.setenv("NNSCRATCH_DATA", str(complete))
    assert load_mnist(partial_dir, download=False).source == str(complete)


@pytest.mark.usefixtures("fake_table")
def test_decompressed_and_recompressed_files_are_accepted(tmp_path: Path) -> None:
    assert_is_fake(
        load_mnist(write_fake_mnist(tmp_path / "plain", compressed=False), download=False)
    )
    recompressed = tmp_path / "recompressed"
    recompressed.mkdir()
    for name, data in FAKE_CONTENT.items():
        packed = gzip.compress(data, compresslevel=1, mtime=12345)
        assert packed != gzip.compress(data)  # a different container, the same content
        (recompressed / (FAKE_TABLE[name].name + ".gz")).write_bytes(packed)
    assert_is_fake(load_mnist(recompressed, download=False))


def test_checksum_mismatch_names_file_and_both_checksums(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    wrong = DataFile(FAKE_TABLE["y_test"].name, "0" * 32, FAKE_TABLE["y_test"].size)
    monkeypatch.setattr(mnist, "MNIST_FILES", {**FAKE_TABLE, "y_test": wrong})
    write_fake_mnist(tmp_path / "data")
    with pytest.raises(DataError, match="checksum mismatch") as info:
        load_mnist(tmp_path / "data", download=False)
    message = str(info.value)
    assert str(tmp_path / "data" / "t10k-labels-idx1-ubyte.gz") in message
    assert "0" * 32 in message and FAKE_TABLE["y_test"].md5 in message


@pytest.mark.usefixtures("fake_table")
def test_content_is_verified_once_per_file_version(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    verified: list[str] = []
    original = mnist.verify_content

    def counting(data: bytes, name: str, expected_md5: str, expected_size: int) -> None:
        verified.append(Path(name).name)
        original(data, name, expected_md5, expected_size)

    monkeypatch.setattr(mnist, "verify_content", counting)
    directory = write_fake_mnist(tmp_path / "data")
    load_mnist(directory, download=False)
    load_mnist(directory, download=False)
    assert len(verified) == 4
    # Replaced by a different container: checked again, and only that file.
    labels = directory / "t10k-labels-idx1-ubyte.gz"
    labels.write_bytes(gzip.compress(FAKE_CONTENT["y_test"], compresslevel=1))
    load_mnist(directory, download=False)
    assert verified[4:] == ["t10k-labels-idx1-ubyte.gz"]


@pytest.mark.parametrize(
    ("field_name", "array", "problem"),
    [
        ("x_train", np.zeros((3, 27, 28), np.uint8), "shape"),
        ("x_train", np.zeros((3, 28, 28), np.float32), "uint8 images"),
        ("y_train", np.array([1, 10, 2], np.uint8), "label 10 is out of range"),
        ("y_test", np.zeros((2, 1), np.uint8), "vector of uint8 labels"),
        ("y_test", np.zeros(3, np.uint8), "2 test samples but 3 test labels"),
    ],
)
def test_files_that_are_not_mnist_shaped(
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
    field_name: str,
    array: np.ndarray,
    problem: str,
) -> None:
    content = {**FAKE_CONTENT, field_name: encode_idx(array)}
    monkeypatch.setattr(mnist, "MNIST_FILES", _table_for(content))
    write_fake_mnist(tmp_path / "odd", content=content)
    with pytest.raises(DataError, match=problem):
        load_mnist(tmp_path / "odd", download=False)


@pytest.mark.usefixtures("fake_table")
def test_missing_without_download_explains_where_to_put_files(tmp_path: Path) -> None:
    write_fake_mnist(tmp_path / "root", fields=("x_train",))
    with pytest.raises(DataError, match="download=False") as info:
        load_mnist(tmp_path / "root", download=False)
    message = str(info.value)
    assert str(tmp_path / "root") in message and str(default_cache_dir()) in message
    assert all(name + ".gz" in message for name in FILE_NAMES)
    assert "NNSCRATCH_DATA" in message


def test_default_cache_dir(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("NNSCRATCH_CACHE", str(tmp_path / "mine"))
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert default_cache_dir() == tmp_path / "mine"
    monkeypatch.delenv("NNSCRATCH_CACHE")
    assert default_cache_dir() == tmp_path / "xdg" / "nnscratch" / "mnist"
    monkeypatch.delenv("XDG_CACHE_HOME")
    assert default_cache_dir() == Path.home() / ".cache" / "nnscratch" / "mnist"


def test_dataset_repr_shows_shapes_not_values() -> None:
    dataset = Dataset(
        np.zeros((4, 2), np.float32),
        np.zeros(4, np.int64),
        np.zeros((1, 2), np.float32),
        np.zeros(1, np.int64),
        name="tiny",
        source="here",
    )
    assert repr(dataset) == (
        "Dataset(name='tiny', x_train=float32[4, 2], y_train=int64[4], x_test=float32[1, 2], "
        "y_test=int64[1], source='here')"
    )


# --- downloading from a local server ------------------------------------------------


@dataclass
class Server:
    url: str
    root: Path
    requests: list[str] = field(default_factory=list)

    def mirror(self) -> tuple[Path, str]:
        """A new empty folder on the server, and its URL (a mirror with no files yet)."""
        folder = Path(tempfile.mkdtemp(dir=self.root))
        return folder, f"{self.url}/{folder.name}/"


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
    return f"http://127.0.0.1:{port}/mnist/"


@pytest.mark.usefixtures("fake_table")
@pytest.mark.parametrize("first_mirror", ["404", "refused", "corrupt gzip", "wrong content"])
def test_download_falls_through_to_the_next_mirror(
    server: Server, tmp_path: Path, first_mirror: str
) -> None:
    bad_folder, bad_url = server.mirror()
    if first_mirror == "refused":
        bad_url = closed_port_url()
    for spec in FAKE_TABLE.values():
        if first_mirror == "corrupt gzip":
            (bad_folder / (spec.name + ".gz")).write_bytes(b"\x1f\x8b" + b"\x00" * 40)
        elif first_mirror == "wrong content":
            (bad_folder / (spec.name + ".gz")).write_bytes(
                gzip.compress(b"\x00\x00\x08\x01\x00\x00\x00\x00")
            )
    good_folder, good_url = server.mirror()
    write_fake_mnist(good_folder)

    target = tmp_path / "target"
    dataset = load_mnist(target, mirrors=[bad_url, good_url], progress=False)
    assert_is_fake(dataset)
    assert dataset.source == str(target)
    assert sorted(path.name for path in target.iterdir()) == sorted(n + ".gz" for n in FILE_NAMES)
    served = [path for path in server.requests if path.startswith(f"/{good_folder.name}/")]
    assert len(served) == 4
    if first_mirror != "refused":
        assert sum(path.startswith(f"/{bad_folder.name}/") for path in server.requests) == 4


@pytest.mark.usefixtures("fake_table")
def test_download_fetches_only_the_missing_files(server: Server, tmp_path: Path) -> None:
    folder, url = server.mirror()
    write_fake_mnist(folder)
    target = write_fake_mnist(tmp_path / "target", fields=("x_train", "y_train"), compressed=False)
    assert_is_fake(load_mnist(target, mirrors=[url], progress=False))
    fetched = sorted(path.rsplit("/", 1)[1] for path in server.requests if folder.name in path)
    assert fetched == ["t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz"]


def test_download_with_wrong_checksum_leaves_no_file(server: Server, tmp_path: Path) -> None:
    folder, url = server.mirror()
    write_fake_mnist(folder, fields=("y_train",))
    dest = tmp_path / "dest" / "train-labels-idx1-ubyte.gz"
    with pytest.raises(DataError, match="checksum mismatch") as info:
        download_file([url + dest.name], dest, "f" * 32, FAKE_TABLE["y_train"].size, progress=False)
    assert FAKE_TABLE["y_train"].md5 in str(info.value) and "f" * 32 in str(info.value)
    assert not dest.exists()
    assert not dest.parent.exists() or list(dest.parent.iterdir()) == []


def test_download_refuses_a_response_larger_than_the_file(server: Server, tmp_path: Path) -> None:
    folder, url = server.mirror()
    (folder / "big.gz").write_bytes(bytes(mnist._DOWNLOAD_SLACK + 11))
    with pytest.raises(DataError, match="more than the"):
        download_file([url + "big.gz"], tmp_path / "big.gz", "0" * 32, 10, progress=False)
    assert not (tmp_path / "big.gz").exists()


def test_download_verified_file_is_not_hashed_again(
    server: Server, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    folder, url = server.mirror()
    write_fake_mnist(folder)
    monkeypatch.setattr(mnist, "MNIST_FILES", FAKE_TABLE)
    target = tmp_path / "target"
    load_mnist(target, mirrors=[url], progress=False)
    monkeypatch.setattr(mnist, "verify_content", pytest.fail)
    assert_is_fake(load_mnist(target, download=False))


@pytest.mark.usefixtures("fake_table")
def test_all_mirrors_failing_explains_what_to_do(server: Server, tmp_path: Path) -> None:
    _, empty_url = server.mirror()
    refused_url = closed_port_url()
    target = tmp_path / "offline"
    with pytest.raises(DataError, match="failed from every mirror") as info:
        load_mnist(target, mirrors=[empty_url, refused_url], progress=False)
    message = str(info.value)
    assert str(target) in message
    assert all(name + ".gz" in message for name in FILE_NAMES)
    assert empty_url in message and refused_url in message and "HTTP 404" in message
    assert not target.exists() or list(target.iterdir()) == []


@pytest.mark.usefixtures("fake_table")
def test_progress_without_tqdm_is_a_percentage_on_stderr(
    server: Server, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture
) -> None:
    folder, url = server.mirror()
    write_fake_mnist(folder)
    monkeypatch.setitem(sys.modules, "tqdm", None)  # makes `import tqdm` fail
    load_mnist(tmp_path / "with", mirrors=[url], progress=True)
    shown = capsys.readouterr()
    assert "train-images-idx3-ubyte.gz: 100%" in shown.err and shown.out == ""
    load_mnist(tmp_path / "without", mirrors=[url], progress=False)
    assert capsys.readouterr().err == ""


@pytest.mark.usefixtures("fake_table")
def test_progress_uses_tqdm_when_installed(
    server: Server, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    pytest.importorskip("tqdm", reason="tqdm is optional; the plain progress line is tested above")
    folder, url = server.mirror()
    write_fake_mnist(folder)
    load_mnist(tmp_path / "target", mirrors=[url], progress=True)
    err = capsys.readouterr().err
    assert "t10k-labels-idx1-ubyte.gz" in err and "B/s" in err  # tqdm's rate, in bytes


# --- 8x8 digits ---------------------------------------------------------------------


def test_load_digits_split_is_deterministic_and_stratified() -> None:
    pytest.importorskip("sklearn", reason="load_digits needs the optional scikit-learn")
    digits = load_digits()
    assert digits.name == "digits-8x8"
    assert digits.x_train.shape[1] == 64 and digits.x_train.dtype == np.float32
    assert digits.y_train.dtype == np.int64
    assert len(digits.x_train) + len(digits.x_test) == 1797
    assert abs(len(digits.x_test) - 0.2 * 1797) <= 5
    assert digits.x_train.min() == 0.0 and digits.x_train.max() == 1.0
    test_share = np.bincount(digits.y_test, minlength=10) / np.bincount(
        np.concatenate([digits.y_train, digits.y_test]), minlength=10
    )
    np.testing.assert_allclose(test_share, 0.2, atol=0.01)
    assert not np.all(np.diff(digits.y_train) >= 0)  # shuffled, not sorted by class

    again = load_digits()
    np.testing.assert_array_equal(again.x_train, digits.x_train)
    np.testing.assert_array_equal(again.y_test, digits.y_test)
    other = load_digits(seed=1)
    assert not np.array_equal(other.y_train, digits.y_train)
    assert len(load_digits(test_fraction=0.5).x_test) == pytest.approx(1797 / 2, abs=6)


@pytest.mark.parametrize("fraction", [0.0, 1.0, -0.1, 1.5, 0.0001])
def test_load_digits_rejects_fractions_that_empty_a_split(fraction: float) -> None:
    pytest.importorskip("sklearn", reason="load_digits needs the optional scikit-learn")
    with pytest.raises(ConfigError, match="test_fraction"):
        load_digits(test_fraction=fraction)


def test_load_digits_without_sklearn_says_how_to_install(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "sklearn.datasets", None)
    with pytest.raises(DataError, match="pip install scikit-learn"):
        load_digits()
