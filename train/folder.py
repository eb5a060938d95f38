"""Your own images: a folder with one sub-folder per class, read into a :class:`Dataset`.

Usage::

    edgeport train --dataset photos/ --model cnn --image-size 64 --channels 3 --out RUN
    # photos/cat/*.jpg, photos/dog/*.png, ...: the class names are the sorted folder names

    from edgeport.train.folder import load_folder_dataset
    ds = load_folder_dataset("photos", seed=0, image_size=64, channels=3)

Every file under a class folder (nested folders included, hidden files ignored)
is a candidate; PNG, JPEG, BMP, GIF (first frame) and WebP of any size and mode
are read. Pictures are turned into model input exactly as the device does it
(:func:`mobile_demo.preprocess.preprocess_resize`: EXIF rotation, transparency
composited on white, grayscale or RGB, a plain resize to ``image_size`` square),
so the exported model sees on the phone what it saw in training. A file that is
empty, not a picture, in another format, corrupt, or larger than Pillow's
``MAX_IMAGE_PIXELS`` (a decompression bomb) is skipped with its reason; a summary
(classes, images per class, an imbalance warning, the files skipped) goes to
stderr before training and into ``metrics.json["split"]``.

The split is stratified: per class, the files (sorted by path) are shuffled with
``seed`` and cut by ``split`` fractions, so the same folder and seed always give
the same train/validation/test sets.

Streaming (``--stream``, for folders larger than memory): only the validation
and test splits are decoded into memory; the training split is read by
:meth:`StreamSource.batches`, a ``tf.data`` pipeline (paths -> parallel decode
-> cache in a temporary file -> seeded shuffle -> batch -> prefetch). Training
files are then checked up front only as far as their headers; one whose pixel
data turns out corrupt is dropped during the first pass and added to the
skipped list in ``metrics.json`` when the run is written.
"""

from __future__ import annotations

import os
import sys
import threading
import warnings
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from edgeport.errors import DatasetError

from .data import Dataset, _stratified_split

__all__ = ["IMAGE_FORMATS", "StreamSource", "load_folder_dataset"]

# Pillow format names read; MPO is the multi-picture JPEG many phone cameras write.
IMAGE_FORMATS = ("PNG", "JPEG", "MPO", "BMP", "GIF", "WEBP")
IMBALANCE_RATIO = 3.0  # warn when the largest class has more than 3x the smallest's images
_LAYOUT_HINT = "one sub-folder of images per class, e.g. DIR/cat/*.jpg and DIR/dog/*.jpg"


class _Skip(Exception):
    """A file that is not a usable picture; the message is the reason."""


def _one_line(e: BaseException) -> str:
    return " ".join(str(e).split()) or type(e).__name__


def _workers() -> int:
    return min(32, (os.cpu_count() or 1) + 4)  # Pillow releases the GIL while decoding


def _open_checked(path: Path):
    """Open ``path`` lazily (header only) and check it is a picture we read.

    Raises:
        _Skip: empty file, not a picture, another format, or a decompression bomb.
    """
    from PIL import Image, UnidentifiedImageError

    try:
        size = path.stat().st_size
    except OSError as e:
        raise _Skip(f"unreadable ({e.strerror or e})") from None
    if size == 0:
        raise _Skip("empty file (0 bytes)")
    try:
        im = Image.open(path)
    except UnidentifiedImageError:
        raise _Skip("not an image Pillow can read") from None
    except Image.DecompressionBombError as e:
        raise _Skip(f"decompression bomb ({_one_line(e)})") from None
    except (OSError, SyntaxError, ValueError, EOFError) as e:
        raise _Skip(f"unreadable ({_one_line(e)})") from None
    if im.format not in IMAGE_FORMATS:
        im.close()
        raise _Skip(f"format {im.format} not read; expected PNG, JPEG, BMP, GIF or WebP")
    w, h = im.size
    if w * h > Image.MAX_IMAGE_PIXELS:
        im.close()
        raise _Skip(
            f"decompression bomb: {w}x{h} = {w * h} pixels is over Pillow's "
            f"MAX_IMAGE_PIXELS ({Image.MAX_IMAGE_PIXELS})"
        )
    if w == 0 or h == 0:
        im.close()
        raise _Skip(f"the picture is {w}x{h}")
    return im


def _check_header(path: Path) -> str | None:
    """``None`` if the header says the file is a picture we read, else the reason."""
    try:
        _open_checked(path).close()
    except _Skip as e:
        return str(e)
    return None


def _decode(path: Path, size: int, channels: int) -> np.ndarray:
    """Decode one file into uint8 ``[size, size, channels]``, as the device would.

    Raises:
        _Skip: the file is not a usable picture.
    """
    from PIL import ImageOps

    from edgeport.mobile_demo.preprocess import preprocess_resize

    im = _open_checked(path)
    try:
        with im:
            im.load()
            img = ImageOps.exif_transpose(im)  # phone photos are stored sideways + a tag
            x = preprocess_resize(img, height=size, width=size, channels=channels)
    except _Skip:
        raise
    except Exception as e:  # Pillow reports corrupt data through many exception types
        raise _Skip(f"cannot decode ({type(e).__name__}: {_one_line(e)})") from None
    return np.clip(np.rint(x * 255.0), 0, 255).astype(np.uint8)


def _decode_or_none(path: Path, size: int, channels: int) -> tuple[np.ndarray | None, str]:
    try:
        return _decode(path, size, channels), ""
    except _Skip as e:
        return None, str(e)


def _map_quietly(fn, items: Sequence[Any], *, desc: str, progress: bool) -> list[Any]:
    """``[fn(item) ...]`` on a thread pool, in order, with Pillow's warnings muted.

    Pillow warns on pictures over ``MAX_IMAGE_PIXELS`` before we get to refuse them
    with a reason, and on damaged metadata (common in phone EXIF) of pictures that
    decode fine; a file either decodes or is skipped with its reason. The filter is
    set once here, around the whole pool (``catch_warnings`` is not thread-safe).
    """
    bar = None
    if progress and len(items) > 200:
        from edgeport.progress import progress_bar as tqdm

        bar = tqdm(total=len(items), unit="img", desc=desc, file=sys.stderr, leave=False)
    out: list[Any] = []
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with ThreadPoolExecutor(max_workers=_workers()) as pool:
            for r in pool.map(fn, items):
                out.append(r)
                if bar is not None:
                    bar.update(1)
    if bar is not None:
        bar.close()
    return out


@dataclass
class StreamSource:
    """The training split of a folder dataset, as file paths read by ``tf.data``.

    ``failures`` collects ``{"file", "reason"}`` for training files whose pixel
    data cannot be decoded (their headers were fine); it is the same list object
    as the dataset's ``split["skipped"]``, so the run directory records them.
    """

    root: Path
    paths: tuple[str, ...]
    labels: np.ndarray
    image_size: int
    channels: int
    failures: list[dict[str, str]] = field(default_factory=list)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def __len__(self) -> int:
        return len(self.paths)

    def _decode_for_tf(self, path: bytes) -> tuple[np.ndarray, bool]:
        p = Path(os.fsdecode(path))
        x, why = _decode_or_none(p, self.image_size, self.channels)
        if x is None:
            entry = {"file": _rel(p, self.root), "reason": why}
            with self._lock:
                if entry not in self.failures:  # once, even if read again without a cache
                    self.failures.append(entry)
            return np.zeros((self.image_size, self.image_size, self.channels), np.uint8), False
        return x, True

    def images(self):
        """``tf.data.Dataset`` of ``(image uint8 [S, S, C], label int64)`` in file order.

        Decoding runs on ``tf.data``'s thread pool (``num_parallel_calls=AUTOTUNE``)
        through the same Pillow code as the in-memory path; ``deterministic``
        keeps the order, and undecodable files are filtered out.
        """
        import tensorflow as tf

        s, c = self.image_size, self.channels

        def decode(path, label):
            x, ok = tf.numpy_function(self._decode_for_tf, [path], [tf.uint8, tf.bool],
                                      stateful=False)
            x.set_shape([s, s, c])
            ok.set_shape([])
            return x, label, ok

        paths = tf.constant([os.fsencode(p) for p in self.paths], dtype=tf.string)
        ds = tf.data.Dataset.from_tensor_slices((paths, self.labels.astype(np.int64)))

        def decoded(x, y, ok):
            return ok

        def image_label(x, y, ok):
            return x, y

        ds = ds.map(decode, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
        return ds.filter(decoded).map(image_label)


def _rel(path: Path, root: Path) -> str:
    try:
        return path.relative_to(root).as_posix()
    except ValueError:
        return str(path)


def _list_classes(root: Path) -> tuple[list[str], list[tuple[Path, int]], list[dict[str, str]]]:
    """Class folder names (sorted), ``(file, label)`` candidates, and files outside classes."""
    if not root.is_dir():
        raise DatasetError(f"{root}: not a folder; expected {_LAYOUT_HINT}")
    entries = sorted(p for p in root.iterdir() if not p.name.startswith("."))
    classes = [p.name for p in entries if p.is_dir()]
    stray = [{"file": p.name, "reason": "outside the class folders"}
             for p in entries if p.is_file()]
    if not classes:
        raise DatasetError(
            f"{root}: no class sub-folders; expected {_LAYOUT_HINT}. Fix: move each class's "
            "images into a folder named after the class"
        )
    if len(classes) == 1:
        raise DatasetError(
            f"{root}: only one class sub-folder ({classes[0]!r}); expected at least two "
            f"classes ({_LAYOUT_HINT}). Fix: add a folder of images for every other class"
        )
    files: list[tuple[Path, int]] = []
    real_root = root.resolve()
    seen_dirs: set[Path] = set()
    seen_files: set[Path] = set()

    def inside(p: Path) -> bool:
        return p == real_root or real_root in p.parents

    for label, name in enumerate(classes):
        # Links are followed only while they stay inside the dataset, never back into a
        # folder already walked (a loop, or another class), and no file is counted twice.
        for dirpath, dirnames, filenames in os.walk(root / name, followlinks=True):
            here = Path(dirpath).resolve()
            if not inside(here) or here in seen_dirs:
                dirnames[:] = []
                continue
            seen_dirs.add(here)
            dirnames[:] = sorted(d for d in dirnames if not d.startswith(".")
                                 and inside((Path(dirpath) / d).resolve())
                                 and (Path(dirpath) / d).resolve() not in seen_dirs)
            for f in sorted(filenames):
                path = Path(dirpath) / f
                real = path.resolve()
                if f.startswith(".") or not inside(real) or real in seen_files:
                    continue
                seen_files.add(real)
                files.append((path, label))
    files.sort(key=lambda t: (t[1], _rel(t[0], root)))
    return classes, files, stray


def _require_images(root: Path, classes: list[str], labels: np.ndarray,
                    skipped: list[dict[str, str]]) -> None:
    counts = np.bincount(labels, minlength=len(classes))
    if counts.sum() == 0:
        why = (f" ({len(skipped)} files skipped, e.g. {skipped[0]['file']}: "
               f"{skipped[0]['reason']})" if skipped else "")
        raise DatasetError(
            f"{root}: no usable images in any of the {len(classes)} class folders{why}; "
            f"expected PNG, JPEG, BMP, GIF or WebP files ({_LAYOUT_HINT}). "
            "Fix: put the pictures into the class folders"
        )
    empty = [classes[i] for i in np.flatnonzero(counts == 0)]
    if empty:
        bad = [s for s in skipped if s["file"].split("/", 1)[0] == empty[0]]
        why = f"{len(bad)} files skipped, e.g. {bad[0]['reason']}" if bad else "it is empty"
        raise DatasetError(
            f"{root / empty[0]}: class folder with no usable images ({why}); expected PNG, "
            "JPEG, BMP, GIF or WebP pictures in every class folder. Fix: add pictures of "
            f"{empty[0]!r} or remove the folder"
        )


def summary_text(root: Path, classes: Sequence[str], counts: dict[str, dict[str, int]],
                 skipped: Sequence[dict[str, str]], *, max_listed: int = 20) -> str:
    """The report printed before training: classes, counts, imbalance, skipped files."""
    totals = {c: sum(v.values()) for c, v in counts.items()}
    width = max(len(c) for c in classes)
    lines = [f"folder dataset {root}: {len(classes)} classes, {sum(totals.values())} images"]
    lines += [f"  {c.ljust(width)}  {totals[c]:6d}  (train {counts[c]['train']}, "
              f"validation {counts[c]['validation']}, test {counts[c]['test']})"
              for c in classes]
    lo, hi = min(totals.values()), max(totals.values())
    if lo and hi / lo > IMBALANCE_RATIO:
        big = max(totals, key=totals.__getitem__)
        small = min(totals, key=totals.__getitem__)
        lines.append(
            f"warning: classes are imbalanced ({big!r} has {hi} images, {small!r} {lo}: "
            f"{hi / lo:.1f}x > {IMBALANCE_RATIO:g}x); accuracy will favour the large classes. "
            "Fix: add pictures of the small classes or trim the large ones"
        )
    if skipped:
        lines.append(f"skipped {len(skipped)} files:")
        lines += [f"  {s['file']}: {s['reason']}" for s in skipped[:max_listed]]
        if len(skipped) > max_listed:
            lines.append(f"  ... and {len(skipped) - max_listed} more (all in metrics.json)")
    return "\n".join(lines)


def load_folder_dataset(
    root: str | os.PathLike[str],
    *,
    seed: int,
    image_size: int = 28,
    channels: int = 1,
    split: Sequence[float] = (0.8, 0.1, 0.1),
    progress: bool = True,
    stream: bool = False,
    verbose: bool = True,
) -> Dataset:
    """Read a folder of class sub-folders into a seeded, stratified three-way split.

    Args:
        root: the folder; each sub-folder is a class (sorted names are the labels).
        seed: seeds the per-class shuffle of the split.
        image_size: pictures are resized to ``image_size`` x ``image_size``.
        channels: 1 (grayscale) or 3 (RGB).
        split: train, validation, test fractions (summing to 1).
        progress: show a progress bar while decoding.
        stream: decode only validation and test into memory; the training split
            becomes ``ds.train_source`` (a :class:`StreamSource`) and ``ds.x_train``
            is empty (``[0, S, S, C]``) while ``ds.y_train`` holds its labels.
        verbose: print the summary (classes, counts, skipped files) to stderr.

    Returns:
        A :class:`train.data.Dataset` with ``preprocess="resize"`` and ``split``
        recording the rule, fractions, seed, counts per class and skipped files.

    Raises:
        DatasetError: no class sub-folders, a single class, a class with no
            usable images, or no images at all.
    """
    root = Path(os.path.abspath(Path(root).expanduser()))
    if channels not in (1, 3):
        raise DatasetError(f"--channels {channels}; expected 1 (grayscale) or 3 (RGB)")
    classes, files, skipped = _list_classes(root)

    # 1. Headers (cheap): drop what is not a picture before the split is drawn, so the
    # split depends only on the folder's contents and the seed, streamed or not.
    good = _scan_headers(root, files, skipped, progress=progress)
    labels = np.array([lab for _, lab in good], dtype=np.int64)
    _require_images(root, classes, labels, skipped)
    parts = dict(zip(("train", "validation", "test"),
                     _stratified_split(labels, tuple(split), seed), strict=True))
    if not len(parts["test"]):
        _no_test_split(root, classes, labels, tuple(split))

    # 2. Pixels: decode (in memory) every split, or only validation and test (stream).
    arrays: dict[str, tuple[np.ndarray, np.ndarray]] = {}
    kept: dict[str, np.ndarray] = {}
    for name, idx in parts.items():
        if stream and name == "train":
            continue
        x, kept[name] = _decode_split(root, good, idx, skipped, name=name, image_size=image_size,
                                      channels=channels, progress=progress)
        arrays[name] = (x, labels[kept[name]])
    source = None
    if stream:
        idx = parts["train"]
        source = StreamSource(root=root, paths=tuple(str(good[i][0]) for i in idx),
                              labels=labels[idx], image_size=image_size, channels=channels,
                              failures=skipped)
        arrays["train"] = (np.zeros((0, image_size, image_size, channels), np.uint8),
                           labels[idx])
        kept["train"] = idx
    all_kept = np.concatenate(list(kept.values()))
    _require_images(root, classes, labels[all_kept], skipped)

    counts = {c: {name: int(np.sum(arrays[name][1] == k)) for name in parts}
              for k, c in enumerate(classes)}
    if verbose:
        print(summary_text(root, classes, counts, skipped), file=sys.stderr)
    n = {name: len(arrays[name][1]) for name in parts}
    return Dataset(
        name=root.name,
        class_names=tuple(classes),
        x_train=arrays["train"][0], y_train=arrays["train"][1],
        x_val=arrays["validation"][0], y_val=arrays["validation"][1],
        x_test=arrays["test"][0], y_test=arrays["test"][1],
        preprocess="resize",
        split=_split_record(
            root, n, counts, skipped, [_rel(good[i][0], root) for i in kept["test"]],
            fractions=split, seed=seed, image_size=image_size, channels=channels, stream=stream,
        ),
        train_source=source,
    )


def _no_test_split(root: Path, classes: Sequence[str], labels: np.ndarray,
                   split: tuple[float, ...]) -> None:
    """Raise: every class's test share rounds to no picture (a handful of pictures per class,
    or a test fraction of 0)."""
    counts = np.bincount(labels, minlength=len(classes))
    big = classes[int(counts.argmax())]
    frac = split[2]
    need = next((n for n in range(1, 10_001) if round(n * frac) >= 1), None)
    if need is None:
        how = "a test fraction > 0, e.g. --split 0.8,0.1,0.1"
    else:
        how = f"add pictures (at least {need} in a class at this split)"
        if round(int(counts.max()) * 0.2) >= 1:
            how += ", or a larger test fraction, e.g. --split 0.6,0.2,0.2"
    raise DatasetError(
        f"{root}: --split {','.join(f'{f:g}' for f in split)} leaves the test split empty (the "
        f"largest class, {big!r}, has {int(counts.max())} pictures); expected at least one test "
        f"picture (the reference accuracy and the parity gate score it); fix: {how}"
    )


def _split_record(
    root: Path, n: dict[str, int], counts: dict[str, dict[str, int]],
    skipped: list[dict[str, str]], test_files: list[str], *, fractions: Sequence[float],
    seed: int, image_size: int, channels: int, stream: bool,
) -> dict[str, Any]:
    """``Dataset.split`` of a folder dataset: the rule, its inputs and what it produced."""
    return {
        **n,
        "rule": "stratified per class: files sorted by path, shuffled with the seed, "
                "cut by the fractions",
        "fractions": [float(f) for f in fractions],
        "seed": int(seed),
        "root": str(root),
        "image_size": image_size,
        "channels": channels,
        "stream": bool(stream),
        "counts": counts,
        "skipped": skipped,
        # The test files, relative to root: `edgeport-demo --eval` can score exactly
        # the pictures the parity gate scored.
        "test_files": test_files,
    }


def _scan_headers(
    root: Path, files: list[tuple[Path, int]], skipped: list[dict[str, str]], *, progress: bool
) -> list[tuple[Path, int]]:
    """The ``(path, label)`` pairs whose header is a picture; the others go to ``skipped``."""
    reasons = _map_quietly(lambda t: _check_header(t[0]), files, desc="scan", progress=progress)
    good: list[tuple[Path, int]] = []
    for (path, label), why in zip(files, reasons, strict=True):
        if why is None:
            good.append((path, label))
        else:
            skipped.append({"file": _rel(path, root), "reason": why})
    return good


def _decode_split(
    root: Path, good: list[tuple[Path, int]], idx: np.ndarray, skipped: list[dict[str, str]],
    *, name: str, image_size: int, channels: int, progress: bool,
) -> tuple[np.ndarray, np.ndarray]:
    """Decode ``good[idx]``: uint8 ``[N, S, S, C]`` pixels and the indices that decoded.

    Files that fail to decode go to ``skipped``.
    """
    decoded = _map_quietly(lambda i: _decode_or_none(good[i][0], image_size, channels),
                           list(idx), desc=f"decode {name}", progress=progress)
    ok = []
    for i, (x, why) in zip(idx, decoded, strict=True):
        if x is None:
            skipped.append({"file": _rel(good[i][0], root), "reason": why})
        else:
            ok.append(i)
    ok_idx = np.array(ok, dtype=np.int64)
    x = np.stack([d[0] for d in decoded if d[0] is not None]) if ok else np.zeros(
        (0, image_size, image_size, channels), np.uint8)
    return x, ok_idx


def decode_sample(source: StreamSource, idx: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Decode the training files ``source.paths[idx]`` (uint8, undecodable ones dropped)."""
    idx = np.asarray(idx, dtype=np.int64)
    decoded = _map_quietly(
        lambda i: _decode_or_none(Path(source.paths[i]), source.image_size, source.channels),
        list(idx), desc="decode sample", progress=False)
    keep = [k for k, (x, _) in enumerate(decoded) if x is not None]
    shape = (0, source.image_size, source.image_size, source.channels)
    x = np.stack([decoded[k][0] for k in keep]) if keep else np.zeros(shape, np.uint8)
    return x, source.labels[idx[keep]]


def _stream_shuffle_buffer(n: int, image_bytes: int, batch_size: int) -> int:
    """Up to 256 MB of decoded images (and at least 4 batches): bounded memory."""
    return int(max(min(n, 4 * batch_size), min(n, (256 << 20) // max(1, image_bytes))))


def train_batches(ds: Dataset, *, batch_size: int, seed: int, cache_dir: str | None):
    """The training split as an endless ``tf.data`` stream of ``(uint8 images, labels)``.

    paths -> parallel decode -> ``.cache(<file in cache_dir>)`` -> seeded shuffle ->
    batch -> repeat -> prefetch.
    The file list is permuted once with ``seed`` before decoding, so the cache
    is not ordered by class and a bounded shuffle buffer still mixes classes.
    Datasets held in memory (MNIST) are fed from their arrays, with no cache.
    """
    import tensorflow as tf

    src: StreamSource | None = getattr(ds, "train_source", None)
    n = len(ds.y_train)
    h, w, c = ds.image_shape
    if src is not None:
        order = np.random.default_rng(seed).permutation(len(src))
        src = StreamSource(root=src.root, paths=tuple(src.paths[i] for i in order),
                           labels=src.labels[order], image_size=src.image_size,
                           channels=src.channels, failures=src.failures, _lock=src._lock)
        data = src.images()
        if cache_dir is not None:
            data = data.cache(os.path.join(cache_dir, "train"))
        buffer = _stream_shuffle_buffer(n, h * w * c, batch_size)
    else:
        data = tf.data.Dataset.from_tensor_slices((ds.x_train, ds.y_train))
        buffer = n
    data = data.shuffle(buffer, seed=seed, reshuffle_each_iteration=True)
    # The last batch of an epoch may be smaller: dropping it could leave an epoch with
    # no batch at all (files that fail to decode shrink it), and repeat() would spin.
    return data.batch(batch_size).repeat().prefetch(tf.data.AUTOTUNE)

