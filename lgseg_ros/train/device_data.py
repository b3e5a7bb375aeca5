"""The training set held on the training device as uint8, augmented there batch by batch.

On a GPU the model step of this 4 M-parameter network is far faster than DataLoader
workers can decode, scale, crop and jitter frames with OpenCV, so the GPU waits on the
CPU. Held on the device, the whole multi-source set (about 1,500 frames near 360x480: 0.8
GB as uint8) costs one upload, and each batch is cut from it with torch ops: no workers,
no host-to-device copy per step. `lgseg train --data-on-device` selects it.

The augmentation is TrainAugment's (augment.py), in the same order and with the same
ranges: scale (bilinear, antialiased when shrinking, as INTER_AREA; labels nearest), a
crop padded on a random side with image 0 / label IGNORE, horizontal flip, colour jitter
in random order (torchvision's functional ops; its contrast pivots on the grey mean
where augment.py's uses the mean over channels). Its randomness comes from torch's global
generator, so `torch.manual_seed` and `--resume` reproduce it, as for the workers.
"""
from __future__ import annotations

import logging
from collections.abc import Iterable, Sequence

import torch
import torch.nn.functional as F

from .augment import TrainAugment
from .datasets import IGNORE

log = logging.getLogger(__name__)


def _uniform(lo: float, hi: float) -> float:
    return lo + (hi - lo) * float(torch.rand(()))


class DeviceData:
    """Every (image, label, source) of ``dataset`` on ``device``; ``batch(indices)`` returns
    what the DataLoader path returns: images float [B, 3, H, W] in [0, 1], labels int64
    [B, H, W] with IGNORE, source index int64 [B]."""

    def __init__(self, dataset, device: torch.device | str, augment: TrainAugment):
        if augment.crop is None:
            raise ValueError("--data-on-device needs --crop: a batch is one tensor of the crop size")
        self.augment = augment
        self.device = torch.device(device)
        locate = getattr(dataset, "locate", None)
        images, labels, sources = [], [], []
        for i in range(len(dataset)):
            img, lbl = dataset.load(i)
            images.append(torch.from_numpy(img).permute(2, 0, 1).contiguous())
            labels.append(torch.from_numpy(lbl).contiguous())
            sources.append(locate(i)[0] if locate is not None else 0)
        for part in getattr(dataset, "parts", [dataset]):
            # The decoded copies were needed only to get here; the device holds them now.
            getattr(part, "_cache", {}).clear()
        self.sources = torch.tensor(sources, dtype=torch.int64)
        shapes = {tuple(t.shape) for t in images}
        if len(shapes) == 1:
            # One allocation, as the frames are one size (CamVid).
            self.images = torch.stack(images).to(self.device)
            self.labels = torch.stack(labels).to(self.device)
        else:
            self.images = [t.to(self.device) for t in images]
            self.labels = [t.to(self.device) for t in labels]
        self.nbytes = sum(t.numel() for t in images) + sum(t.numel() for t in labels)
        log.info("training data on %s: %d frames, %.0f MB as uint8", self.device, len(images),
                 self.nbytes / 1e6)

    def __len__(self) -> int:
        return len(self.sources)

    def batch(self, indices: Sequence[int]):
        pairs = [self.augment_one(self.images[i], self.labels[i]) for i in indices]
        images = torch.stack([p[0] for p in pairs]).div_(255.0)
        labels = torch.stack([p[1] for p in pairs]).long()
        return images, labels, self.sources[list(indices)]

    def augment_one(self, image: torch.Tensor, label: torch.Tensor):
        """uint8 [3, H, W] and [H, W] -> float [3, ch, cw] in 0..255 and uint8 [ch, cw]."""
        a = self.augment
        h, w = a.base_size if a.base_size is not None else label.shape
        s = _uniform(*a.scale)
        nh, nw = max(1, round(h * s)), max(1, round(w * s))
        img = image.float()[None]
        lbl = label[None, None]
        if (nh, nw) != tuple(image.shape[1:]):
            img = F.interpolate(img, size=(nh, nw), mode="bilinear", align_corners=False,
                                antialias=nh < image.shape[1])
            # "nearest" picks floor(x * in / out), as cv2.INTER_NEAREST; labels stay ids.
            lbl = F.interpolate(lbl.float(), size=(nh, nw), mode="nearest").to(torch.uint8)
        img, lbl = img[0], lbl[0, 0]
        img, lbl = self._crop(img, lbl, a.crop, a.ignore)
        if float(torch.rand(())) < a.hflip:
            img, lbl = img.flip(-1), lbl.flip(-1)
        if float(torch.rand(())) < a.jitter_p:
            img = self._jitter(img)
        return img, lbl

    @staticmethod
    def _crop(img: torch.Tensor, lbl: torch.Tensor, size: tuple[int, int], ignore: int = IGNORE):
        ch, cw = size
        h, w = lbl.shape
        ph, pw = max(ch - h, 0), max(cw - w, 0)
        if ph or pw:
            # A random side, as augment.random_crop: "bottom/right is void" is not learnt.
            top = int(torch.randint(0, ph + 1, ()))
            left = int(torch.randint(0, pw + 1, ()))
            img = F.pad(img, (left, pw - left, top, ph - top), value=0.0)
            lbl = F.pad(lbl[None], (left, pw - left, top, ph - top), value=ignore)[0]
            h, w = lbl.shape
        y = int(torch.randint(0, h - ch + 1, ()))
        x = int(torch.randint(0, w - cw + 1, ()))
        return img[:, y:y + ch, x:x + cw], lbl[y:y + ch, x:x + cw]

    def _jitter(self, img: torch.Tensor) -> torch.Tensor:
        import torchvision.transforms.v2.functional as TF

        a = self.augment
        x = img.div(255.0)
        for op in torch.randperm(4).tolist():
            if op == 0 and a.brightness > 0:
                x = TF.adjust_brightness(x, _uniform(1 - a.brightness, 1 + a.brightness))
            elif op == 1 and a.contrast > 0:
                x = TF.adjust_contrast(x, _uniform(1 - a.contrast, 1 + a.contrast))
            elif op == 2 and a.saturation > 0:
                x = TF.adjust_saturation(x, _uniform(1 - a.saturation, 1 + a.saturation))
            elif op == 3 and a.hue > 0:
                x = TF.adjust_hue(x, _uniform(-a.hue, a.hue))
        return x.clamp_(0.0, 1.0).mul_(255.0)


def index_batches(indices: Iterable[int], batch_size: int) -> Iterable[list[int]]:
    """Consecutive full batches of a sampler's indices (the last partial one dropped)."""
    chunk: list[int] = []
    for i in indices:
        chunk.append(int(i))
        if len(chunk) == batch_size:
            yield chunk
            chunk = []
