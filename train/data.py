"""Datasets: MNIST and Fashion-MNIST from their IDX files, scikit-learn's 8x8 digits.

Usage (library)::

    from edgeport.train.data import load_dataset
    ds = load_dataset("mnist")            # looks in --data-dir, $EDGEPORT_DATA/mnist, ~/.cache
    ds.x_train.shape                      # (55000, 28, 28, 1) uint8

Files are looked for in ``data_dir`` if given, else ``$EDGEPORT_DATA/<name>``,
else ``~/.cache/edgeport/<name>``. Missing files are downloaded over HTTPS
into a temporary file, md5-verified, then renamed into place; a file whose md5
does not match is downloaded again once, then refused.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import tempfile
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from edgeport.errors import DatasetError
from edgeport.fileio import atomic_write_bytes

from .idx import IMAGES_MAGIC, LABELS_MAGIC, read_idx

__all__ = [
    "DATASETS",
    "Dataset",
    "IdxDataset",
    "balanced_sample",
    "default_data_dir",
    "ensure_files",
    "export_samples",
    "load_dataset",
    "to_model_input",
]

_ALLOWED_SCHEMES = ("https", "file")  # never plain http; file:// is for local mirrors and tests


@dataclass(frozen=True)
class IdxDataset:
    """Where an IDX dataset lives and how to verify it."""

    name: str
    files: dict[str, str]  # role -> file name
    md5: dict[str, str]  # file name -> md5
    mirrors: tuple[str, ...]
    class_names: tuple[str, ...]
    preprocess: str  # how a device should turn a photo into model input


_ROLES = ("train_images", "train_labels", "test_images", "test_labels")
_MNIST_FILES = dict(
    zip(
        _ROLES,
        (
            "train-images-idx3-ubyte.gz",
            "train-labels-idx1-ubyte.gz",
            "t10k-images-idx3-ubyte.gz",
            "t10k-labels-idx1-ubyte.gz",
        ),
        strict=True,
    )
)

DATASETS: dict[str, IdxDataset] = {
    "mnist": IdxDataset(
        name="mnist",
        files=_MNIST_FILES,
        md5={
            "train-images-idx3-ubyte.gz": "f68b3c2dcbeaaa9fbdd348bbdeb94873",
            "train-labels-idx1-ubyte.gz": "d53e105ee54ea40749a09fcbcd1e9432",
            "t10k-images-idx3-ubyte.gz": "9fb629c4189551a2d022fa330f9573f3",
            "t10k-labels-idx1-ubyte.gz": "ec29112dd5afa0611ce80d1b7f02629c",
        },
        mirrors=(
            "https://ossci-datasets.s3.amazonaws.com/mnist/",
            "https://storage.googleapis.com/cvdf-datasets/mnist/",
        ),
        class_names=tuple(str(i) for i in range(10)),
        preprocess="mnist",
    ),
    "fashion-mnist": IdxDataset(
        name="fashion-mnist",
        files=_MNIST_FILES,
        # Values published by Zalando Research (github.com/zalandoresearch/fashion-mnist).
        md5={
            "train-images-idx3-ubyte.gz": "8d4fb7e6c68d591d4c3dfef9ec88bf0d",
            "train-labels-idx1-ubyte.gz": "25c81989df183df01b3e8a0aad5dffbe",
            "t10k-images-idx3-ubyte.gz": "bef4ecab320f06d8554ea6380940ec79",
            "t10k-labels-idx1-ubyte.gz": "bb300cfdad3c16e7a12a480ee83cd310",
        },
        # Keras' fashion_mnist.load_data() mirror (same file names as MNIST, at the top
        # level), then the data/fashion folder of the Zalando repository.
        mirrors=(
            "https://storage.googleapis.com/tensorflow/tf-keras-datasets/",
            "https://raw.githubusercontent.com/zalandoresearch/fashion-mnist/master/data/fashion/",
        ),
        class_names=(
            "T-shirt/top",
            "Trouser",
            "Pullover",
            "Dress",
            "Coat",
            "Sandal",
            "Shirt",
            "Sneaker",
            "Bag",
            "Ankle boot",
        ),
        preprocess="resize",
    ),
}


@dataclass(frozen=True)
class Dataset:
    """A dataset split three ways; images uint8 ``[N, H, W, C]``, labels int64 ``[N]``."""

    name: str
    class_names: tuple[str, ...]
    x_train: np.ndarray
    y_train: np.ndarray
    x_val: np.ndarray
    y_val: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray
    preprocess: str = "mnist"
    split: dict[str, object] = field(default_factory=dict)
    # Streaming folder datasets (``--stream``): the training split as file paths
    # (a ``train.folder.StreamSource``); ``x_train`` is then empty, ``y_train`` complete.
    train_source: Any = None

    @property
    def image_shape(self) -> tuple[int, int, int]:
        h, w, c = self.x_train.shape[1:]
        return int(h), int(w), int(c)

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    def summary(self) -> str:
        h, w, c = self.image_shape
        return (
            f"{self.name}: {self.num_classes} classes, {h}x{w}x{c}, "
            f"train {len(self.y_train)} / validation {len(self.y_val)} / test {len(self.y_test)}"
        )


def balanced_sample(labels: np.ndarray, n: int, *, seed: int) -> np.ndarray:
    """Pick ``n`` indices spread evenly over the classes, reproducibly.

    Each class gets ``n // classes`` indices (the first ``n % classes`` classes
    one more), drawn without replacement; a class with too few members gives
    all it has and the rest are drawn from the remaining indices.

    Args:
        labels: the class of every sample.
        n: how many indices to return (at most ``len(labels)``).
        seed: the random seed.

    Returns:
        Sorted int64 indices into ``labels``.
    """
    labels = np.asarray(labels)
    n = min(int(n), len(labels))
    rng = np.random.default_rng(seed)
    classes = np.unique(labels)
    share = [n // len(classes) + (i < n % len(classes)) for i in range(len(classes))]
    chosen: list[np.ndarray] = []
    for cls, k in zip(classes, share, strict=True):
        members = np.flatnonzero(labels == cls)
        chosen.append(rng.choice(members, size=min(k, len(members)), replace=False))
    picked = np.concatenate(chosen) if chosen else np.empty(0, dtype=np.int64)
    if len(picked) < n:
        rest = np.setdiff1d(np.arange(len(labels)), picked)
        picked = np.concatenate([picked, rng.choice(rest, size=n - len(picked), replace=False)])
    return np.sort(picked).astype(np.int64)


def to_model_input(x: np.ndarray, layout: str) -> np.ndarray:
    """uint8 ``[N, H, W, C]`` -> float32 in [0, 1], flat ``[N, H*W*C]`` or ``nhwc``."""
    out = np.asarray(x, dtype=np.float32) / np.float32(255.0)
    if layout == "flat":
        return out.reshape(len(out), int(np.prod(out.shape[1:])))  # also for 0 images
    if layout == "nhwc":
        return out
    raise ValueError(f"layout={layout!r}; expected 'flat' or 'nhwc'")


def default_data_dir(name: str) -> Path:
    """``$EDGEPORT_DATA/<name>`` if set, else ``~/.cache/edgeport/<name>``."""
    root = os.environ.get("EDGEPORT_DATA")
    if root:
        return Path(root).expanduser() / name
    return Path.home() / ".cache" / "edgeport" / name


def _md5(path: Path) -> str:
    h = hashlib.md5(usedforsecurity=False)
    with path.open("rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _download(url: str, dest: Path, *, expected_md5: str, progress: bool) -> None:
    """Download ``url`` to a temp file beside ``dest``, verify md5, rename into place."""
    scheme = urllib.parse.urlparse(url).scheme
    if scheme not in _ALLOWED_SCHEMES:
        raise DatasetError(f"{url}: refusing a {scheme}:// download; mirrors must use https://")
    # Folders made for this download are removed again if it fails (e.g. a relative
    # --data-dir used from another folder, offline): no empty folder is left behind.
    created = [d for d in [dest.parent, *dest.parent.parents] if not d.exists()]
    dest.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{dest.name}.", suffix=".part", dir=dest.parent)
    tmp = Path(tmp_name)
    ok = False
    try:
        with os.fdopen(fd, "wb") as out, urllib.request.urlopen(url, timeout=60) as resp:
            total = int(resp.headers.get("Content-Length") or 0) or None
            bar = None
            if progress:
                from edgeport.progress import progress_bar as tqdm

                bar = tqdm(total=total, unit="B", unit_scale=True, desc=f"download {dest.name}")
            try:
                for chunk in iter(lambda: resp.read(1 << 16), b""):
                    out.write(chunk)
                    if bar is not None:
                        bar.update(len(chunk))
            finally:
                if bar is not None:
                    bar.close()
        got = _md5(tmp)
        if got != expected_md5:
            raise DatasetError(
                f"{url}: md5 {got}, expected {expected_md5}; the mirror served a bad file"
            )
        os.replace(tmp, dest)
        ok = True
    finally:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()
        for d in created if not ok else ():
            with contextlib.suppress(OSError):
                d.rmdir()  # only if empty


def ensure_files(
    spec: IdxDataset,
    data_dir: str | os.PathLike[str] | None = None,
    *,
    mirrors: Sequence[str] | None = None,
    progress: bool = True,
) -> Path:
    """Make sure the four files of ``spec`` are in the data folder and md5-correct.

    Missing files are downloaded; a file with a wrong md5 is downloaded again
    once (into a temp file, so the bad one is only replaced by a verified one).

    Returns:
        The folder holding the verified files.

    Raises:
        DatasetError: files missing and no mirror reachable, or md5 still wrong.
    """
    folder = Path(data_dir).expanduser() if data_dir is not None else default_data_dir(spec.name)
    mirrors = tuple(mirrors) if mirrors is not None else spec.mirrors
    for fname in spec.files.values():
        path = folder / fname
        expected = spec.md5[fname]
        if path.is_file():
            got = _md5(path)
            if got == expected:
                continue
            problem = f"{path}: md5 {got}, expected {expected} (corrupt or truncated)"
        else:
            problem = f"{path}: missing"
        errors: list[str] = []
        for base in mirrors:
            try:
                _download(base + fname, path, expected_md5=expected, progress=progress)
                break
            except (urllib.error.URLError, OSError, DatasetError) as e:
                errors.append(f"{base}: {getattr(e, 'reason', e)}")
        else:
            expected_files = ", ".join(spec.files.values())
            why = "; ".join(errors) or "no mirrors"
            raise DatasetError(
                f"{problem}, and the download failed ({why}). Expected the files {expected_files} "
                f"in {folder}. Fix: copy them there, pass data_dir=DIR, set EDGEPORT_DATA "
                f"(files in $EDGEPORT_DATA/{spec.name}), or train offline with dataset=digits"
            )
    return folder


def _load_idx_dataset(
    spec: IdxDataset,
    data_dir: str | os.PathLike[str] | None,
    *,
    validation_size: int,
    progress: bool,
) -> Dataset:
    folder = ensure_files(spec, data_dir, progress=progress)
    f = spec.files
    x_tr = read_idx(folder / f["train_images"], expect_magic=IMAGES_MAGIC)
    y_tr = read_idx(folder / f["train_labels"], expect_magic=LABELS_MAGIC)
    x_te = read_idx(folder / f["test_images"], expect_magic=IMAGES_MAGIC)
    y_te = read_idx(folder / f["test_labels"], expect_magic=LABELS_MAGIC)
    for xs, ys, xn, yn in ((x_tr, y_tr, "train_images", "train_labels"),
                           (x_te, y_te, "test_images", "test_labels")):
        if len(xs) != len(ys):
            raise DatasetError(
                f"{folder / f[xn]} has {len(xs)} images but {folder / f[yn]} has {len(ys)} labels; "
                "they must match: re-download both files"
            )
        if ys.size and int(ys.max()) >= len(spec.class_names):
            raise DatasetError(
                f"{folder / f[yn]}: label {int(ys.max())} out of range "
                f"0..{len(spec.class_names) - 1}; re-download the file"
            )
    if not 0 < validation_size < len(x_tr):
        raise DatasetError(
            f"validation_size={validation_size}; expected 1..{len(x_tr) - 1} for {len(x_tr)} "
            "training images"
        )
    n_train = len(x_tr) - validation_size
    # The seed's split: the last 5,000 training images are the validation set.
    return Dataset(
        name=spec.name,
        class_names=spec.class_names,
        x_train=x_tr[:n_train, :, :, None],
        y_train=y_tr[:n_train].astype(np.int64),
        x_val=x_tr[n_train:, :, :, None],
        y_val=y_tr[n_train:].astype(np.int64),
        x_test=x_te[:, :, :, None],
        y_test=y_te.astype(np.int64),
        preprocess=spec.preprocess,
        split={"train": n_train, "validation": validation_size, "test": len(x_te),
               "rule": "last N training images are validation"},
    )


def _stratified_split(
    labels: np.ndarray, fractions: Sequence[float], seed: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per class, shuffle with ``seed`` and cut by ``fractions`` (train, val, test)."""
    rng = np.random.default_rng(seed)
    parts: list[list[np.ndarray]] = [[], [], []]
    for c in np.unique(labels):
        idx = rng.permutation(np.flatnonzero(labels == c))
        n = len(idx)
        n_val = round(n * fractions[1])
        n_test = round(n * fractions[2])
        n_train = n - n_val - n_test
        parts[0].append(idx[:n_train])
        parts[1].append(idx[n_train : n_train + n_val])
        parts[2].append(idx[n_train + n_val :])
    return tuple(np.sort(np.concatenate(p)) for p in parts)  # type: ignore[return-value]


def _load_digits(*, seed: int) -> Dataset:
    """scikit-learn's 1,797 8x8 digits, upscaled to MNIST's 20x20-in-28x28 layout."""
    try:
        from sklearn.datasets import load_digits
    except ImportError:
        raise DatasetError(
            "dataset=digits needs scikit-learn, which is not installed; "
            "fix: pip install scikit-learn"
        ) from None
    from PIL import Image

    d = load_digits()
    imgs = np.empty((len(d.images), 28, 28, 1), dtype=np.uint8)
    for i, im in enumerate(d.images):
        small = Image.fromarray((im * (255.0 / 16.0)).round().astype(np.uint8))
        big = np.asarray(small.resize((20, 20), Image.Resampling.BILINEAR))
        imgs[i, 4:24, 4:24, 0] = big
    labels = d.target.astype(np.int64)
    tr, va, te = _stratified_split(labels, (0.8, 0.1, 0.1), seed)
    return Dataset(
        name="digits",
        class_names=tuple(str(i) for i in range(10)),
        x_train=imgs[tr], y_train=labels[tr],
        x_val=imgs[va], y_val=labels[va],
        x_test=imgs[te], y_test=labels[te],
        preprocess="mnist",
        split={"train": len(tr), "validation": len(va), "test": len(te),
               "rule": "stratified 0.8/0.1/0.1", "seed": seed},
    )


def load_dataset(
    name: str = "mnist",
    *,
    data_dir: str | os.PathLike[str] | None = None,
    seed: int = 0,
    validation_size: int = 5000,
    progress: bool = True,
    image_size: int = 28,
    channels: int = 1,
    split: Sequence[float] = (0.8, 0.1, 0.1),
    stream: bool = False,
    verbose: bool = True,
) -> Dataset:
    """Load a dataset by name (``mnist``, ``fashion-mnist``, ``digits``) or folder path.

    Args:
        name: a registered name, or a folder with one sub-folder per class.
        data_dir: the folder holding the IDX files (default: see module docstring).
        seed: seeds the split of datasets that have no canonical one.
        validation_size: for IDX datasets, the last N training images.
        progress: show download progress bars.
        image_size, channels, split: folder datasets only: the model's input size and
            channel count, and the stratified train/validation/test fractions.
        stream: folder datasets only: leave the training split on disk, to be read
            by a ``tf.data`` pipeline (see :mod:`train.folder`); datasets that are
            loaded whole (MNIST, digits) ignore it.
        verbose: folder datasets only: print the summary (counts, skipped files).

    Raises:
        DatasetError: unknown name, files missing and not downloadable, corrupt files.
    """
    if name in DATASETS:
        return _load_idx_dataset(
            DATASETS[name], data_dir, validation_size=validation_size, progress=progress
        )
    if name == "digits":
        return _load_digits(seed=seed)
    if Path(name).expanduser().is_dir():
        from .folder import load_folder_dataset

        return load_folder_dataset(
            Path(name).expanduser(), seed=seed, image_size=image_size, channels=channels,
            split=tuple(split), progress=progress, stream=stream, verbose=verbose,
        )
    known = ", ".join([*DATASETS, "digits"])
    raise DatasetError(
        f"dataset={name!r}: not a known dataset nor a folder; expected one of {known} "
        "or a folder with one sub-folder of images per class"
    )


def export_samples(
    n: int, out_dir: str | os.PathLike[str], *, data_dir: str | os.PathLike[str] | None = None
) -> list[Path]:
    """Write the first ``n`` MNIST test images as ``<label>_<index>.png`` (index 5 digits).

    The pictures are MNIST's own (light digit on black, 28x28), so they are what
    ``edgeport-demo --eval`` expects and need no network: only the two IDX test files.
    Pure numpy and Pillow: the device side (``edgeport-demo --export-samples``) calls
    it without TensorFlow.

    Args:
        n: how many test images, from the first.
        out_dir: the folder to write into (created if needed). Other files there are left
            alone; a file with one of the names must already hold the same picture (a
            rerun), else nothing is written.
        data_dir: folder with ``t10k-images-idx3-ubyte.gz`` and
            ``t10k-labels-idx1-ubyte.gz`` (default: ``default_data_dir("mnist")``).

    Returns:
        The written files, in order.

    Raises:
        DatasetError: the IDX files are missing or corrupt, ``n`` is out of range, or a
            file with one of the names holds something else.
    """
    import io

    from PIL import Image

    spec = DATASETS["mnist"]
    root = Path(data_dir) if data_dir is not None else default_data_dir(spec.name)
    images = read_idx(root / spec.files["test_images"], expect_magic=IMAGES_MAGIC)
    labels = read_idx(root / spec.files["test_labels"], expect_magic=LABELS_MAGIC)
    if len(images) != len(labels):
        raise DatasetError(
            f"{root}: {len(images)} test images but {len(labels)} labels; "
            "re-download the MNIST test files"
        )
    if not 1 <= n <= len(images):
        raise DatasetError(
            f"n={n}: expected a count from 1 to {len(images)} (the MNIST test set)"
        )
    out = Path(out_dir)
    digits = max(5, len(str(len(images))))
    pngs = []
    for i in range(n):
        buf = io.BytesIO()
        Image.fromarray(np.ascontiguousarray(images[i])).save(buf, format="PNG")
        pngs.append((out / f"{int(labels[i])}_{i:0{digits}d}.png", buf.getvalue()))
    # Never overwrite a file of the user's: a name already there must hold these very bytes
    # (a rerun), else nothing is written. Other files in the folder are left alone.
    clash = [p for p, data in pngs if p.exists() and not (p.is_file() and not p.is_symlink()
                                                         and p.read_bytes() == data)]
    if clash:
        raise DatasetError(
            f"{clash[0]}: already exists with other contents ({len(clash)} of the {n} names "
            "are taken); expected a folder without those files, edgeport never overwrites "
            "them; fix: choose a new or empty folder")
    return [p if p.exists() else atomic_write_bytes(p, data) for p, data in pngs]
