"""The named datasets: for each, its files, their published checksums, its mirrors and its
class names.

MNIST, Fashion-MNIST and KMNIST share one layout: four IDX files, 60,000 training and
10,000 test images of 28x28 grey levels (uint8, ``*-images-idx3-ubyte``) with their
labels 0-9 (uint8, ``*-labels-idx1-ubyte``), published gzip-compressed (``.gz``). So the
decompressed sizes are the same for all three: 16 header bytes + 60,000 x 784 pixels =
47,040,016 bytes for the training images, 8 + 60,000 = 60,008 for the training labels,
7,840,016 and 10,008 for the test set.

What each dataset's publishers give to check a file differs, and so does what the
loader can verify:

- **MNIST**: the MD5 of each file's *decompressed* content is known, so the content is
  what is verified. That accepts the published ``.gz``, a re-compressed copy and an
  already-decompressed file alike (../shared/data/mnist holds a re-compressed
  ``train-images-idx3-ubyte.gz`` with the canonical content).
- **Fashion-MNIST, KMNIST**: only the MD5 of each published *.gz file* is published (no
  checksum of the decompressed content was found). So a download is verified by the MD5
  of the .gz bytes as received (and the size of its decompressed content), the verified
  .gz is what the cache keeps, and a decompressed file can be trusted only as a file the
  user named (see :mod:`nnscratch.datasets.loader`).

Never add a checksum that is not published: each one below cites where it comes from.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class DataFile:
    """One file of a dataset.

    ``name`` is the file name without ``.gz``; ``size`` the bytes of its decompressed
    content. ``md5`` is the MD5 of the decompressed content where that is published (None
    where not); ``gz_md5`` the MD5 of the published ``.gz`` file. A file is verified by
    ``md5`` when there is one, else by ``gz_md5``.
    """

    name: str
    md5: str | None
    size: int
    gz_md5: str | None = None

    @property
    def verified_by_content(self) -> bool:
        """True when the decompressed content is what is checked (MNIST); False when only
        the .gz bytes can be (Fashion-MNIST, KMNIST)."""
        return self.md5 is not None


@dataclass(frozen=True)
class DatasetSpec:
    """A named dataset: what :func:`nnscratch.datasets.load` needs to find, download and
    verify it.

    ``files`` maps each :class:`~nnscratch.datasets.Dataset` field (``x_train``,
    ``y_train``, ``x_test``, ``y_test``) to its file; ``mirrors`` are base URLs tried in
    turn; ``image_shape`` is the shape of one image; ``class_names[k]`` names label ``k``.
    The 8x8 digits have no files: scikit-learn ships them.
    """

    name: str
    title: str
    class_names: tuple[str, ...]
    files: dict[str, DataFile]
    mirrors: tuple[str, ...] = ()
    image_shape: tuple[int, ...] = (28, 28)
    homepage: str = ""

    @property
    def num_classes(self) -> int:
        return len(self.class_names)


# The four files of the MNIST layout, by Dataset field: name and decompressed size (see
# the module docstring).
_LAYOUT = {
    "x_train": ("train-images-idx3-ubyte", 16 + 60_000 * 28 * 28),
    "y_train": ("train-labels-idx1-ubyte", 8 + 60_000),
    "x_test": ("t10k-images-idx3-ubyte", 16 + 10_000 * 28 * 28),
    "y_test": ("t10k-labels-idx1-ubyte", 8 + 10_000),
}


def _idx_files(*checksums: tuple[str | None, str]) -> dict[str, DataFile]:
    """The four files of the MNIST layout, each checksum given as (content MD5 or None,
    .gz MD5), in the order x_train, y_train, x_test, y_test."""
    return {
        field: DataFile(name, md5, size, gz_md5)
        for (field, (name, size)), (md5, gz_md5) in zip(_LAYOUT.items(), checksums, strict=True)
    }


MNIST = DatasetSpec(
    name="mnist",
    title="MNIST",
    class_names=tuple(str(digit) for digit in range(10)),
    # Content MD5s: computed from the canonical files and recorded in
    # ../shared/data/mnist/README.md (with the sizes above), the values this loader has
    # always verified. .gz MD5s: as published with the files and listed in torchvision's
    # torchvision/datasets/mnist.py (MNIST.resources).
    files=_idx_files(
        ("6bbc9ace898e44ae57da46a324031adb", "f68b3c2dcbeaaa9fbdd348bbdeb94873"),
        ("a25bea736e30d166cdddb491f175f624", "d53e105ee54ea40749a09fcbcd1e9432"),
        ("2646ac647ad5339dbf082846283269ea", "9fb629c4189551a2d022fa330f9573f3"),
        ("27ae3e4e09519cfbb04c329615203637", "ec29112dd5afa0611ce80d1b7f02629c"),
    ),
    mirrors=(
        "https://ossci-datasets.s3.amazonaws.com/mnist/",  # torchvision's mirror
        "https://storage.googleapis.com/cvdf-datasets/mnist/",  # TensorFlow's mirror
        "https://yann.lecun.com/exdb/mnist/",  # the original site
    ),
    homepage="https://yann.lecun.com/exdb/mnist/",
)

FASHION_MNIST = DatasetSpec(
    name="fashion-mnist",
    title="Fashion-MNIST",
    # Labels 0-9, as listed under "Labels" in zalandoresearch/fashion-mnist's README.md.
    class_names=("T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt",
                 "Sneaker", "Bag", "Ankle boot"),
    # .gz MD5s: the "MD5 Checksum" column of the table under "Get the Data" in
    # zalandoresearch/fashion-mnist's README.md; the same values are in torchvision's
    # torchvision/datasets/mnist.py (FashionMNIST.resources). No checksum of the
    # decompressed files is published.
    files=_idx_files(
        (None, "8d4fb7e6c68d591d4c3dfef9ec88bf0d"),
        (None, "25c81989df183df01b3e8a0aad5dffbe"),
        (None, "bef4ecab320f06d8554ea6380940ec79"),
        (None, "bb300cfdad3c16e7a12a480ee83cd310"),
    ),
    mirrors=(
        # the download links of the README (plain http: the S3 website endpoint has no TLS)
        "http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/",
        # the repository itself, "the dataset appears under data/fashion" (README)
        "https://raw.githubusercontent.com/zalandoresearch/fashion-mnist/master/data/fashion/",
        # Keras' copy (keras.datasets.fashion_mnist.load_data)
        "https://storage.googleapis.com/tensorflow/tf-keras-datasets/",
    ),
    homepage="https://github.com/zalandoresearch/fashion-mnist",
)

KMNIST = DatasetSpec(
    name="kmnist",
    title="Kuzushiji-MNIST",
    # One hiragana character per row of the syllabary: お き す つ な は ま や れ を,
    # romanized (torchvision's KMNIST.classes) so that every font can draw them.
    class_names=("o", "ki", "su", "tsu", "na", "ha", "ma", "ya", "re", "wo"),
    # .gz MD5s: torchvision's torchvision/datasets/mnist.py (KMNIST.resources); the
    # dataset's own README (rois-codh/kmnist) links the files without checksums. No
    # checksum of the decompressed files is published.
    files=_idx_files(
        (None, "bdb82020997e1d708af4cf47b453dcf7"),
        (None, "e144d726b3acfaa3e44228e80efcd344"),
        (None, "5c965bf0a639b31b8f53240b1b52f4d7"),
        (None, "7320c461ea6c1c855c0b718fb2a4b134"),
    ),
    mirrors=(
        # the download links of rois-codh/kmnist's README (http), over https first
        "https://codh.rois.ac.jp/kmnist/dataset/kmnist/",
        "http://codh.rois.ac.jp/kmnist/dataset/kmnist/",
    ),
    homepage="https://github.com/rois-codh/kmnist",
)

DIGITS = DatasetSpec(
    name="digits",
    title="8x8 digits (scikit-learn)",
    class_names=tuple(str(digit) for digit in range(10)),
    files={},
    image_shape=(8, 8),
    homepage="https://scikit-learn.org/stable/datasets/toy_dataset.html#digits-dataset",
)

#: Every dataset :func:`nnscratch.datasets.load` knows, by name.
DATASETS: dict[str, DatasetSpec] = {
    spec.name: spec for spec in (MNIST, FASHION_MNIST, KMNIST, DIGITS)
}


__all__ = ["DATASETS", "DIGITS", "FASHION_MNIST", "KMNIST", "MNIST", "DataFile", "DatasetSpec"]
