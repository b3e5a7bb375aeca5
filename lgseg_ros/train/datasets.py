"""Segmentation datasets: CamVid (SegNet's 11-class 360x480 release) and a generic folder format.

Both give ``(image, label)`` pairs: ``image`` a float32 ``[3, H, W]`` RGB tensor in [0, 1],
``label`` an int64 ``[H, W]`` tensor of class ids with ``IGNORE`` (255) where the pixel
must not count (CamVid's void id 11 is mapped to 255).

Folder format (bring your own data)::

    my_dataset/
      classes.txt        # one class name per line; line order is the id (first line = 0).
                         # Optional line "ignore: <id>" names the label value to ignore
                         # (default 255). Blank lines and lines starting with '#' are skipped.
      images/            # RGB images: .png .jpg .jpeg .bmp .tif .tiff .webp
      labels/            # single-channel PNGs with the same stem as the image; pixel = class id
      train.txt          # optional: stems (one per line) of the training split
      val.txt            # optional: stems of the validation split

Without ``<split>.txt`` every image/label pair belongs to every split (say so in your
numbers). Label values that are neither a class id nor the ignore value are treated as
ignore, so stray values never reach the loss as an out-of-range index.
"""
from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Sequence

import cv2
import numpy as np
import torch
from torch.utils.data import Dataset

from lgseg_ros.labels import CAMVID_CLASSES

IGNORE = 255
IMAGE_EXTS = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp")

CAMVID_VOID = 11
# SegNet's median-frequency-balancing weights from the dataset README, in class order.
CAMVID_MEDIAN_FREQ_WEIGHTS = (0.2595, 0.1826, 4.5640, 0.1417, 0.9051, 0.3826, 9.6446,
                              1.8418, 0.6823, 6.2478, 7.3614)
# Original tools' colours, for figures.
CAMVID_COLORS = ((128, 128, 128), (128, 0, 0), (192, 192, 128), (128, 64, 128), (60, 40, 222),
                 (128, 128, 0), (192, 128, 128), (64, 64, 128), (64, 0, 128), (64, 64, 0),
                 (0, 128, 192))


def default_camvid_root() -> Path:
    """``$LGSEG_CAMVID`` or ``../shared/datasets/camvid`` beside the checkout."""
    env = os.environ.get("LGSEG_CAMVID")
    if env:
        return Path(env)
    return Path(__file__).resolve().parents[3] / "shared" / "datasets" / "camvid"


def _imread(path: str | Path, flags: int) -> np.ndarray | None:
    """cv2.imread, with OpenCV 5's exception for an image over its decoder cap (8K UHD, set
    in lgseg_ros/__init__.py) turned into an error naming the file."""
    try:
        return cv2.imread(str(path), flags)
    except cv2.error as exc:
        raise ValueError(f"cannot read image {path}: "
                         f"{str(exc).strip().splitlines()[-1][:200]}") from None


def read_rgb(path: str | Path) -> np.ndarray:
    img = _imread(path, cv2.IMREAD_COLOR)
    if img is None:
        raise FileNotFoundError(f"cannot read image {path}")
    return cv2.cvtColor(img, cv2.COLOR_BGR2RGB)


def read_label(path: str | Path) -> np.ndarray:
    lbl = _imread(path, cv2.IMREAD_UNCHANGED)
    if lbl is None:
        raise FileNotFoundError(f"cannot read label {path}")
    if lbl.ndim != 2:
        raise ValueError(f"label {path} has shape {lbl.shape}; expected a single-channel PNG")
    if lbl.dtype != np.uint8:
        if lbl.max() > 255:
            raise ValueError(f"label {path} has values above 255; only 8-bit ids are supported")
        lbl = lbl.astype(np.uint8)
    return lbl


def to_tensors(image: np.ndarray, label: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
    img = torch.from_numpy(np.ascontiguousarray(image)).permute(2, 0, 1).float().div_(255.0)
    return img, torch.from_numpy(np.ascontiguousarray(label)).long()


@dataclass
class SegDataset(Dataset):
    """Image/label pairs with a lookup table from stored label values to training ids.

    ``transform(image_rgb_uint8_hwc, label_uint8_hw) -> (image, label)`` runs on numpy
    arrays before conversion. ``cache=True`` keeps decoded pairs in memory: PNG decoding
    costs more than the augmentation on a small CPU (CamVid train is ~190 MB decoded).
    ``reader(pair) -> (rgb, stored label)`` replaces reading the pair's files: a packed
    bundle (pack.py) holds its frames in memory, under names that are not files.
    """

    pairs: list[tuple[Path, Path]]
    class_names: tuple[str, ...]
    lut: np.ndarray  # uint8[256]: stored value -> class id or IGNORE
    transform: Callable | None = None
    cache: bool = False
    name: str = "dataset"
    reader: Callable | None = None

    def __post_init__(self):
        self._cache: dict[int, tuple[np.ndarray, np.ndarray]] = {}

    def __len__(self) -> int:
        return len(self.pairs)

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    def load(self, i: int) -> tuple[np.ndarray, np.ndarray]:
        """Decoded ``(rgb uint8 HxWx3, label uint8 HxW with IGNORE)`` before any transform."""
        if self.cache and i in self._cache:
            return self._cache[i]
        img_path, lbl_path = self.pairs[i]
        if self.reader is not None:
            img, raw = self.reader(self.pairs[i])
        else:
            img, raw = read_rgb(img_path), read_label(lbl_path)
        lbl = self.lut[raw]
        if img.shape[:2] != lbl.shape:
            raise ValueError(f"{img_path} is {img.shape[:2]} but {lbl_path} is {lbl.shape}")
        if self.cache:
            self._cache[i] = (img, lbl)
        return img, lbl

    def __getitem__(self, i: int) -> tuple[torch.Tensor, torch.Tensor]:
        img, lbl = self.load(i)
        if self.transform is not None:
            img, lbl = self.transform(img, lbl)
        return to_tensors(img, lbl)

    def subset(self, n: int) -> "SegDataset":
        """The first ``n`` pairs (for smoke tests and quick looks)."""
        return dataclasses.replace(self, pairs=self.pairs[:n])


def _lut(num_classes: int, ignore_values: Sequence[int] = ()) -> np.ndarray:
    lut = np.full(256, IGNORE, dtype=np.uint8)
    lut[:num_classes] = np.arange(num_classes, dtype=np.uint8)
    for v in ignore_values:
        lut[v] = IGNORE
    return lut


def load_camvid(root: str | Path | None = None, split: str = "train", **kw) -> SegDataset:
    """CamVid from the SegNet layout: ``<split>.txt`` lists ``image label`` paths."""
    root = Path(root) if root is not None else default_camvid_root()
    listing = root / f"{split}.txt"
    if not listing.exists():
        raise FileNotFoundError(f"CamVid split list {listing} not found (splits here: "
                                f"{sorted(p.stem for p in root.glob('*.txt'))})")
    pairs = []
    for line in listing.read_text().splitlines():
        if line.strip():
            img, lbl = line.split()
            pairs.append((root / img, root / lbl))
    return SegDataset(pairs, CAMVID_CLASSES, _lut(len(CAMVID_CLASSES), [CAMVID_VOID]),
                      name=f"camvid/{split}", **kw)


def read_classes_file(path: str | Path) -> tuple[tuple[str, ...], int]:
    """Parse a folder dataset's classes.txt -> (names, ignore value)."""
    names, ignore = [], IGNORE
    for raw in Path(path).read_text(encoding="utf-8").splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        key, sep, value = line.partition(":")
        if sep and key.strip().lower() == "ignore":
            ignore = int(value)
            if not 0 <= ignore <= 255:
                raise ValueError(f"{path}: ignore value {ignore} is not in 0..255")
            continue
        names.append(line)
    if not names:
        raise ValueError(f"{path} lists no classes")
    if len(names) > 255:
        raise ValueError(f"{path} lists {len(names)} classes; at most 255 fit 8-bit labels")
    if len(set(names)) != len(names):
        raise ValueError(f"{path} has duplicate class names")
    if ignore < len(names):
        raise ValueError(f"{path}: ignore value {ignore} collides with class id {ignore} "
                         f"({names[ignore]!r})")
    return tuple(names), ignore


def load_folder(root: str | Path, split: str | None = None, **kw) -> SegDataset:
    """A folder dataset (format in this module's docstring)."""
    root = Path(root)
    names, ignore = read_classes_file(root / "classes.txt")
    img_dir, lbl_dir = root / "images", root / "labels"
    if not img_dir.is_dir() or not lbl_dir.is_dir():
        raise FileNotFoundError(f"{root} needs images/ and labels/ folders")
    images = {p.stem: p for p in sorted(img_dir.iterdir()) if p.suffix.lower() in IMAGE_EXTS}
    listing = root / f"{split}.txt" if split else None
    if listing is not None and listing.exists():
        stems = [s.strip() for s in listing.read_text().splitlines() if s.strip()]
        missing = [s for s in stems if s not in images]
        if missing:
            raise FileNotFoundError(f"{listing} names images not in {img_dir}: {missing[:5]}")
    else:
        stems = list(images)
    pairs = []
    for stem in stems:
        lbl = lbl_dir / f"{stem}.png"
        if not lbl.exists():
            raise FileNotFoundError(f"no label {lbl} for image {images[stem]}")
        pairs.append((images[stem], lbl))
    if not pairs:
        raise FileNotFoundError(f"no image/label pairs in {root}")
    return SegDataset(pairs, names, _lut(len(names), [ignore]),
                      name=f"{root.name}/{split or 'all'}", **kw)


def build_dataset(spec: str, split: str, **kw) -> SegDataset:
    """``spec``: "camvid" (the shared copy), a CamVid-layout folder, or a folder dataset."""
    if spec == "camvid":
        return load_camvid(None, split, **kw)
    root = Path(spec.removeprefix("pack:"))
    if (root / "lgseg_pack.json").exists():
        raise FileNotFoundError(f"{spec!r} is a packed bundle (lgseg pack-data): it is read "
                                f"as lgseg train --source pack:{root}, not as a dataset folder")
    if (root / "images").is_dir():
        return load_folder(root, split, **kw)
    if (root / f"{split}.txt").exists() and (root / "classes.txt").exists():
        return load_camvid(root, split, **kw)
    raise FileNotFoundError(f"{spec!r} is neither 'camvid' nor a dataset folder "
                            f"(images/, labels/, classes.txt)")


def relabelled(ds: SegDataset, class_names: Sequence[str]) -> SegDataset:
    """The same pairs with class ids looked up by name in ``class_names`` (every class of
    ``ds`` must be there): two datasets relabelled into one list can train together."""
    remap = np.full(256, IGNORE, dtype=np.uint8)
    for i, name in enumerate(ds.class_names):
        remap[i] = list(class_names).index(name)
    return dataclasses.replace(ds, class_names=tuple(class_names), lut=remap[ds.lut])


class MixedDataset(Dataset):
    """Several datasets over one class list, drawn with fixed shares per sample
    (``sample_weights`` for a WeightedRandomSampler): fine-tuning on a user's few dozen
    images while replaying the original data, so that old classes are not forgotten."""

    def __init__(self, parts: Sequence[SegDataset], shares: Sequence[float]):
        if len(parts) != len(shares) or not parts:
            raise ValueError("one share per dataset")
        names = parts[0].class_names
        if any(p.class_names != names for p in parts):
            raise ValueError("relabel the datasets into one class list first (relabelled())")
        if any(s < 0 for s in shares) or sum(shares) <= 0:
            raise ValueError(f"shares must be >= 0 and not all 0, got {list(shares)}")
        self.parts, self.shares, self.class_names = list(parts), list(shares), names
        self.name = " + ".join(p.name for p in parts)
        self._starts = np.cumsum([0] + [len(p) for p in parts])

    @property
    def transform(self):
        return self.parts[0].transform

    @transform.setter
    def transform(self, value):
        for p in self.parts:
            p.transform = value

    def __len__(self) -> int:
        return int(self._starts[-1])

    def _locate(self, i: int) -> tuple[SegDataset, int]:
        k = int(np.searchsorted(self._starts, i, side="right")) - 1
        return self.parts[k], i - int(self._starts[k])

    def load(self, i: int):
        part, j = self._locate(i)
        return part.load(j)

    def __getitem__(self, i: int):
        part, j = self._locate(i)
        return part[j]

    def sample_weights(self) -> torch.Tensor:
        total = sum(self.shares)
        return torch.cat([torch.full((len(p),), s / total / max(len(p), 1), dtype=torch.float64)
                          for p, s in zip(self.parts, self.shares)])
