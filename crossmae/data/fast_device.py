"""Decode and crop on the device: workers only read bytes and draw boxes, the GPU does the rest.

Each sample is ``(encoded bytes, box, flip, target)``: the worker opens the file's header (size, format),
draws the RandomResizedCrop box exactly as :func:`crossmae.data.fast_rrc.sample_box` does, and the flip;
it never decodes pixels. :func:`decode_crops` then decodes the batch's JPEGs with one batched
``torchvision.io.decode_jpeg(device=...)`` call (nvJPEG on CUDA), crops, resizes (bicubic, antialiased)
and flips there, returning uint8 [N, 3, size, size] on the device for :func:`normalize_uint8`.
Other formats are decoded on the CPU and moved. On the CPU device the same code runs with libjpeg,
which is how it is tested without a GPU.
"""
from __future__ import annotations

import logging
from pathlib import Path

import torch
import torch.nn.functional as F

from .fast_rrc import RATIO, sample_box, torchvision_decoders
from .folder import SafeImageFolder
from .image import open_image
from .skipping import first_readable

logger = logging.getLogger("crossmae")


class EncodedCropFolder(SafeImageFolder):
    """ImageFolder whose samples are ``(bytes uint8 [B], box int64 [4] (top, left, h, w), flip bool,
    is_jpeg bool, target)``. Files whose header cannot be read, or above the pixel limit, are skipped
    and counted like :class:`SafeImageFolder`; errors inside the compressed data surface at
    :func:`decode_crops`, which skips and counts them too."""

    def __init__(self, root: str | Path, size: int = 224, min_scale: float = 0.2, max_pixels: int | None = None):
        super().__init__(root)
        self.size, self.scale, self.max_pixels = size, (min_scale, 1.0), max_pixels

    def encoded(self, path: str):
        data = Path(path).read_bytes()
        with open_image(path, self.max_pixels, data) as im:  # header only; the pixel limit is enforced here
            (width, height), fmt = im.size, im.format
        box = torch.tensor(sample_box(width, height, self.scale, RATIO), dtype=torch.int64)
        flip = bool(torch.rand(1).item() < 0.5)
        return torch.frombuffer(bytearray(data), dtype=torch.uint8), box, flip, fmt == "JPEG"

    def __getitem__(self, index: int):
        return first_readable(lambda i: (*self.encoded(self.samples[i][0]), self.samples[i][1]), index,
                              len(self.samples), lambda i, e: self.unreadable(self.samples[i][0], e), self.root)


def collate_encoded(items: list) -> tuple[list[torch.Tensor], torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """(list of byte tensors, boxes [N, 4], flips [N], is_jpeg [N], targets [N]): the bytes stay a list."""
    data, boxes, flips, jpeg, targets = zip(*items)
    return (list(data), torch.stack(boxes), torch.tensor(flips), torch.tensor(jpeg),
            torch.tensor(targets))


def _decode(data: list[torch.Tensor], is_jpeg: list[bool], device: torch.device) -> list[torch.Tensor | None]:
    """uint8 [3, H, W] images on ``device``; None where the data does not decode (logged)."""
    from torchvision.io import ImageReadMode, decode_image, decode_jpeg
    out: list[torch.Tensor | None] = [None] * len(data)
    jpeg_idx = [i for i, j in enumerate(is_jpeg) if j]
    with torchvision_decoders():
        if jpeg_idx:
            try:
                decoded = decode_jpeg([data[i] for i in jpeg_idx], mode=ImageReadMode.RGB, device=device)
            except RuntimeError:  # one bad file fails the batched call: decode one by one to find it
                decoded = []
                for i in jpeg_idx:
                    try:
                        decoded.append(decode_jpeg(data[i], mode=ImageReadMode.RGB, device=device))
                    except RuntimeError as e:
                        logger.warning("skipping undecodable JPEG in batch position %d (%s)", i, e)
                        decoded.append(None)
            for i, img in zip(jpeg_idx, decoded):
                out[i] = img
        for i in (i for i, j in enumerate(is_jpeg) if not j):
            try:
                out[i] = decode_image(data[i], mode=ImageReadMode.RGB).to(device)
            except RuntimeError as e:
                logger.warning("skipping undecodable image in batch position %d (%s)", i, e)
    return out


def decode_crops(data: list[torch.Tensor], boxes: torch.Tensor, flips: torch.Tensor, is_jpeg: torch.Tensor,
                 size: int = 224, device: str | torch.device = "cuda") -> tuple[torch.Tensor, int]:
    """Decode, crop, resize (bicubic, antialiased, like PIL) and flip a batch on ``device``.

    Returns (uint8 [N, 3, size, size], number of undecodable images); an undecodable image is replaced by
    another image of the batch so the batch keeps its size (all undecodable: ValueError)."""
    device = torch.device(device)
    return crops_from_images(_decode(data, is_jpeg.tolist(), device), boxes.tolist(), flips.tolist(), size)


def crops_from_images(images: list[torch.Tensor | None], boxes: list, flips: list, size: int) -> tuple[torch.Tensor, int]:
    """:func:`decode_crops` after the decode: each image's box cropped, resized and flipped; None (undecodable)
    replaced by another crop of the batch."""
    crops = []
    for img, (top, left, h, w), flip in zip(images, boxes, flips):
        if img is None:
            crops.append(None)
            continue
        region = img[None, :, top:top + h, left:left + w].float()
        x = F.interpolate(region, size=(size, size), mode="bicubic", antialias=True, align_corners=False)
        x = x.round_().clamp_(0, 255).to(torch.uint8)
        crops.append(x.flip(-1) if flip else x)
    good = [c for c in crops if c is not None]
    if not good:
        raise ValueError(f"none of the {len(crops)} images of the batch could be decoded")
    bad = len(crops) - len(good)
    return torch.cat([c if c is not None else good[i % len(good)] for i, c in enumerate(crops)]), bad
