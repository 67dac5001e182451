"""A faster pretraining input pipeline: RandomResizedCrop from a reduced-scale JPEG decode, uint8 batches.

The classic pipeline (torchvision ImageFolder + RandomResizedCrop + ToTensor + Normalize) decodes every
JPEG at full size, crops, resizes, and ships float32 tensors. Here, per image:

1. the file is opened lazily (header only) and the crop box is drawn from its size exactly as
   ``torchvision.transforms.RandomResizedCrop.get_params`` draws it (same algorithm, same calls on the
   torch RNG, so the same seed gives the same boxes);
2. a JPEG whose crop will be shrunk to ``size`` anyway is decoded at 1/2, 1/4 or 1/8 scale through
   libjpeg's DCT scaling (``Image.draft``), never below ``size`` pixels of crop on either side;
3. crop + bicubic resize to ``size``, then the flip. With a full-size decode the resize is torch's uint8
   antialiased bicubic, PIL's own filter at about 5x its speed (>60 dB from the classic crop-then-resize);
   after a reduced decode it is PIL's resize of the fractional box;
4. the sample is a uint8 [3, size, size] tensor: 4x fewer bytes through worker queues, pinned memory
   and the host-to-device copy. :func:`normalize_uint8` turns the batch into the model's float input
   on the device.

Unreadable files are skipped, logged and counted as in :class:`SafeImageFolder`, and images go through
the toolkit's read policy (pixel limit, 16-bit scaling) from :mod:`crossmae.data.image`.
"""
from __future__ import annotations

import contextlib
import math
import warnings
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from .folder import IMAGENET_MEAN, IMAGENET_STD, SafeImageFolder
from .image import open_image, to_rgb8

RATIO = (3.0 / 4.0, 4.0 / 3.0)  # RandomResizedCrop's default aspect-ratio range

try:
    from torchvision.io import ImageReadMode as _ReadMode
    from torchvision.io import decode_jpeg as _decode_jpeg
    _RGB = _ReadMode.RGB
except ImportError:  # a torchvision that has moved image decoding to TorchCodec
    _decode_jpeg = None


def sample_box(width: int, height: int, scale=(0.2, 1.0), ratio=RATIO,
               generator: torch.Generator | None = None) -> tuple[int, int, int, int]:
    """(top, left, crop_height, crop_width) distributed as torchvision's RandomResizedCrop.get_params:
    up to 10 draws of (area fraction ~ U(scale), log aspect ~ U(log ratio)) until the box fits, then a
    uniform position; otherwise the largest central crop within the ratio range."""
    area = height * width
    log_ratio = torch.log(torch.tensor(ratio))
    for _ in range(10):
        target_area = area * torch.empty(1).uniform_(scale[0], scale[1], generator=generator).item()
        aspect = torch.exp(torch.empty(1).uniform_(float(log_ratio[0]), float(log_ratio[1]),
                                                   generator=generator)).item()
        w = int(round(math.sqrt(target_area * aspect)))
        h = int(round(math.sqrt(target_area / aspect)))
        if 0 < w <= width and 0 < h <= height:
            top = int(torch.randint(0, height - h + 1, size=(1,), generator=generator).item())
            left = int(torch.randint(0, width - w + 1, size=(1,), generator=generator).item())
            return top, left, h, w
    in_ratio = width / height
    if in_ratio < min(ratio):
        w, h = width, int(round(width / min(ratio)))
    elif in_ratio > max(ratio):
        w, h = int(round(height * max(ratio))), height
    else:
        w, h = width, height
    return (height - h) // 2, (width - w) // 2, h, w


def draft_request(width: int, height: int, crop_w: int, crop_h: int, size: int) -> tuple[int, int]:
    """The size to pass to ``Image.draft`` so that the DCT-scaled crop keeps >= ``size`` pixels on
    both sides (draft picks the largest 1/2^k reduction whose image is still >= the request)."""
    return math.ceil(width * size / crop_w), math.ceil(height * size / crop_h)


@contextlib.contextmanager
def torchvision_decoders():
    """Calls into torchvision.io's image decoders, without the DeprecationWarning torchvision >= 0.29 emits
    at every call (TorchCodec supersedes them; until it is a dependency they are the fast path)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        yield


def decode_rgb(path: str | Path, im: Image.Image) -> torch.Tensor:
    """The full-size image as uint8 [3, H, W]. RGB and greyscale JPEGs are decoded from the file by
    torchvision's libjpeg-turbo decoder: the same pixels as PIL's (same library and settings; tested) with
    no PIL -> numpy -> torch copies, 1.3x faster per ~500x375 image. Anything else, and torchvision
    releases without the decoder, go through PIL and the read policy (``to_rgb8``)."""
    if im.format == "JPEG" and im.mode in ("RGB", "L") and _decode_jpeg is not None:
        im.fp.seek(0)  # the file PIL opened for the header: no second open in the loader's hot path
        data = torch.frombuffer(bytearray(im.fp.read()), dtype=torch.uint8)
        try:
            with torchvision_decoders():
                return _decode_jpeg(data, mode=_RGB)
        except RuntimeError as e:  # corrupt data: an unreadable file, skipped like PIL's OSError
            raise OSError(f"cannot decode {path}: {e}") from e
    if im.mode != "RGB":
        im = to_rgb8(im, path)  # also decodes; 16-bit scaled, not clipped
    return torch.from_numpy(np.array(im)).permute(2, 0, 1)  # np.array: a writable copy


def random_resized_crop_file(path: str | Path, size: int = 224, scale=(0.2, 1.0), ratio=RATIO, flip: bool = True,
                             draft: bool = True, max_pixels: int | None = None,
                             generator: torch.Generator | None = None) -> torch.Tensor:
    """Read ``path`` and return its RandomResizedCrop (+ random horizontal flip) as uint8 [3, size, size].

    Raises what PIL raises for unreadable files, or :class:`UnreadableImageError` under the read policy."""
    with open_image(path, max_pixels) as im:  # header only; the pixel limit is enforced here
        width, height = im.size
        top, left, h, w = sample_box(width, height, scale, ratio, generator)
        if draft and im.format == "JPEG" and min(w, h) > size:
            im.draft("RGB", draft_request(width, height, w, h, size))
        sx, sy = width / im.size[0], height / im.size[1]  # 1 unless draft reduced the decode
        if sx == 1 and sy == 1:
            # full-size decode, whole-pixel box: torch's uint8 antialiased bicubic is PIL's filter (same
            # kernel; >60 dB from PIL's crop-then-resize) at about 5x the speed of PIL's resize
            crop = decode_rgb(path, im)[:, top:top + h, left:left + w].unsqueeze(0)
            out = F.interpolate(crop, size=(size, size), mode="bicubic", antialias=True)[0]
        else:
            if im.mode != "RGB":
                im = to_rgb8(im, path)  # also decodes; 16-bit scaled, not clipped
            # reduced decode: the box is fractional in the smaller image. Crop to whole pixels around it
            # first, so the filter clamps at the crop's edges as the classic crop-then-resize does
            x0, y0, x1, y1 = left / sx, top / sy, (left + w) / sx, (top + h) / sy
            ix0, iy0 = math.floor(x0), math.floor(y0)
            region = im.crop((ix0, iy0, math.ceil(x1), math.ceil(y1)))
            out = region.resize((size, size), Image.BICUBIC, box=(x0 - ix0, y0 - iy0, x1 - ix0, y1 - iy0))
            out = torch.from_numpy(np.array(out)).permute(2, 0, 1)
    if flip and torch.rand(1, generator=generator).item() < 0.5:
        out = out.flip(-1)
    return out.contiguous()


class FastPretrainFolder(SafeImageFolder):
    """ImageFolder whose samples are ``(uint8 [3, size, size] crop, class index)`` from
    :func:`random_resized_crop_file`. Unreadable files are replaced by the next readable one, logged and
    counted in ``num_skipped()`` exactly like :class:`SafeImageFolder` (whose ``loader`` still returns the
    full decoded image for figures and fixed batches)."""

    def __init__(self, root: str | Path, size: int = 224, min_scale: float = 0.2, draft: bool = True,
                 max_pixels: int | None = None):
        super().__init__(root)
        if size < 1 or not 0.0 < min_scale <= 1.0:
            raise ValueError(f"size must be >= 1 and min_scale in (0, 1], got {size} and {min_scale}")
        self.size, self.scale, self.draft, self.max_pixels = size, (min_scale, 1.0), draft, max_pixels

    def load_sample(self, path: str) -> torch.Tensor:
        return random_resized_crop_file(path, self.size, self.scale, draft=self.draft, max_pixels=self.max_pixels)


def normalize_uint8(imgs: torch.Tensor, mean=IMAGENET_MEAN, std=IMAGENET_STD,
                    dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """uint8 [N, C, H, W] (0..255) -> ``(x / 255 - mean) / std`` in ``dtype``, computed where ``imgs``
    lives (the device): what ToTensor + Normalize compute per image on the CPU, as one fused affine."""
    if imgs.dtype != torch.uint8:
        raise ValueError(f"normalize_uint8 expects a uint8 batch, got {imgs.dtype}")
    scale = torch.tensor([1.0 / (255.0 * s) for s in std], device=imgs.device).view(1, -1, 1, 1)
    shift = torch.tensor([-m / s for m, s in zip(mean, std)], device=imgs.device).view(1, -1, 1, 1)
    return torch.addcmul(shift, imgs.float(), scale).to(dtype)
