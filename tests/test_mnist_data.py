"""MNIST: the real files, the old ``load_mnist`` entry point, and the 8x8 digits.

The rules every named dataset follows (downloads, named folders, the cache, the
fallback) are tested on tiny fake sets in test_datasets.py; here they are checked once
more on the real MNIST files where they are present (``NNSCRATCH_DATA``, else
``../shared/data/mnist``), which are never copied: a test that needs a changed file
links the other three and writes only that one.
"""

from __future__ import annotations

import gzip
import os
import sys
from pathlib import Path

import numpy as np
import pytest

from nnscratch.datasets import (
    DATASETS,
    MNIST_FILES,
    Dataset,
    cache_dir,
    default_cache_dir,
    load,
    load_digits,
    load_mnist,
)
from nnscratch.datasets import download as download_module
from nnscratch.errors import ConfigError, DataError

REPO_ROOT = Path(__file__).resolve().parents[1]
REAL_DIR = Path(os.environ.get("NNSCRATCH_DATA") or REPO_ROOT.parent / "shared" / "data" / "mnist")
FILE_NAMES = [spec.name for spec in MNIST_FILES.values()]

# The published class counts of MNIST's training and test sets, digits 0 to 9.
TRAIN_CLASS_COUNTS = [5923, 6742, 5958, 6131, 5842, 5421, 5918, 6265, 5851, 5949]
TEST_CLASS_COUNTS = [980, 1135, 1032, 1010, 982, 892, 958, 1028, 974, 1009]


@pytest.fixture(autouse=True)
def isolated(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """No test reads the user's environment or cache, or another test's verifications."""
    monkeypatch.delenv("NNSCRATCH_DATA", raising=False)
    monkeypatch.setenv("NNSCRATCH_CACHE", str(tmp_path / "cache"))
    monkeypatch.setattr(download_module, "_verified", set())


def real_files_present() -> bool:
    return all((REAL_DIR / (name + ".gz")).is_file() or (REAL_DIR / name).is_file()
               for name in FILE_NAMES)


@pytest.fixture(scope="module")
def real_mnist() -> Dataset:
    if not real_files_present():
        pytest.skip(f"real MNIST not found in {REAL_DIR}: set NNSCRATCH_DATA to a folder "
                    "holding it")
    said: list[str] = []
    dataset = load("mnist", REAL_DIR, download=False, progress=False, report=said.append)
    assert said == []  # the canonical files: nothing to say
    return dataset


@pytest.fixture
def real_dir() -> Path:
    if not real_files_present():
        pytest.skip(f"real MNIST not found in {REAL_DIR}: set NNSCRATCH_DATA to a folder "
                    "holding it")
    return REAL_DIR


# --- real MNIST ---------------------------------------------------------------------


def test_real_mnist_arrays(real_mnist: Dataset) -> None:
    assert real_mnist.x_train.shape == (60000, 784) and real_mnist.x_test.shape == (10000, 784)
    assert real_mnist.x_train.dtype == np.float32 and real_mnist.x_test.dtype == np.float32
    assert real_mnist.y_train.dtype == np.int64 and real_mnist.y_test.dtype == np.int64
    for images in (real_mnist.x_train, real_mnist.x_test):
        assert images.min() == 0.0 and images.max() == 1.0
        # grey levels / 255, exactly: 256 distinct values at most
        np.testing.assert_array_equal(np.round(images[:500] * 255) / 255, images[:500])
    assert real_mnist.name == "mnist" and real_mnist.source == str(REAL_DIR)
    assert real_mnist.title == "MNIST" and real_mnist.class_names == tuple("0123456789")
    assert real_mnist.notes == () and real_mnist.fallback_reason is None


def test_real_mnist_labels(real_mnist: Dataset) -> None:
    assert real_mnist.y_train[0] == 5
    assert list(real_mnist.y_train[:5]) == [5, 0, 4, 1, 9]
    assert np.bincount(real_mnist.y_train, minlength=10).tolist() == TRAIN_CLASS_COUNTS
    assert np.bincount(real_mnist.y_test, minlength=10).tolist() == TEST_CLASS_COUNTS
    assert sum(TRAIN_CLASS_COUNTS) == 60000 and sum(TEST_CLASS_COUNTS) == 10000


def test_real_mnist_through_nnscratch_data_and_load_mnist(
    real_dir: Path, real_mnist: Dataset, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("NNSCRATCH_DATA", str(real_dir))
    for dataset in (load("mnist", report=None), load_mnist(progress=False)):
        assert dataset.source == str(real_dir) and dataset.notes == ()
        np.testing.assert_array_equal(dataset.y_test, real_mnist.y_test)


@pytest.mark.parametrize("asked", ["fashion-mnist", "kmnist"])
def test_real_mnist_is_refused_when_another_dataset_is_asked_for(
    real_dir: Path, monkeypatch: pytest.MonkeyPatch, asked: str
) -> None:
    """What CI does: NNSCRATCH_DATA names the MNIST folder; asking for Fashion-MNIST or
    KMNIST must not train on MNIST under their class names."""
    monkeypatch.setenv("NNSCRATCH_DATA", str(real_dir))
    with pytest.raises(DataError) as info:
        load(asked)
    message = str(info.value)
    assert f"{real_dir} (named by the NNSCRATCH_DATA environment variable) holds the " \
           "canonical MNIST files" in message
    assert f"not {DATASETS[asked].title}: to use them, load('mnist')" in message


def test_real_mnist_with_one_label_changed_is_used_with_the_note(
    real_dir: Path, tmp_path: Path, capsys
) -> None:
    own = tmp_path / "relabelled"
    own.mkdir()
    for name in FILE_NAMES[:3]:
        found = real_dir / (name + ".gz")
        (own / found.name).symlink_to((found if found.exists() else real_dir / name).resolve())
    labels = gzip.decompress((real_dir / "t10k-labels-idx1-ubyte.gz").read_bytes())
    changed = labels[:8] + bytes([(labels[8] + 1) % 10]) + labels[9:]
    (own / "t10k-labels-idx1-ubyte").write_bytes(changed)
    dataset = load("mnist", own)
    assert dataset.y_test[0] == (labels[8] + 1) % 10 and dataset.y_test[1] == labels[9]
    note = (f"{own}: not the canonical MNIST files (t10k-labels-idx1-ubyte differ from the "
            "published checksums): training on them as given")
    assert dataset.notes == (note,) and capsys.readouterr().err == note + "\n"


# --- load_mnist, the old entry point ------------------------------------------------------


def test_load_mnist_refuses_a_missing_root_instead_of_searching(tmp_path: Path) -> None:
    missing = tmp_path / "nowhere"
    with pytest.raises(DataError, match="does not exist") as info:
        load_mnist(missing)
    assert str(missing) in str(info.value)


def test_load_mnist_without_download_explains_where_to_put_files() -> None:
    with pytest.raises(DataError, match="download=False") as info:
        load_mnist(download=False)
    message = str(info.value)
    assert str(default_cache_dir()) in message
    assert all(name + ".gz" in message for name in FILE_NAMES)
    assert "NNSCRATCH_DATA" in message


def test_default_cache_dir_is_the_mnist_folder_of_the_cache(tmp_path: Path) -> None:
    assert default_cache_dir() == cache_dir("mnist") == tmp_path / "cache" / "mnist"


def test_mnist_files_are_the_registry_entries() -> None:
    assert MNIST_FILES is DATASETS["mnist"].files
    assert FILE_NAMES == ["train-images-idx3-ubyte", "train-labels-idx1-ubyte",
                          "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"]


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


def test_dataset_refuses_unpaired_samples_and_labels() -> None:
    with pytest.raises(DataError, match="2 test samples but 3 test labels"):
        Dataset(np.zeros((1, 2), np.float32), np.zeros(1, np.int64),
                np.zeros((2, 2), np.float32), np.zeros(3, np.int64), name="odd", source="-")


# --- 8x8 digits ---------------------------------------------------------------------


def test_load_digits_split_is_deterministic_and_stratified() -> None:
    pytest.importorskip("sklearn", reason="load_digits needs the optional scikit-learn")
    digits = load_digits()
    assert digits.name == "digits-8x8" and digits.class_names == tuple("0123456789")
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
