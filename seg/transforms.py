"""The ADE20K pipelines of the mmseg MAE/BEiT recipe, as functions on tensors.

Images are float32 [3, H, W] RGB in 0..255 until :func:`normalize`; label maps are int64 [H, W]
with 255 = ignore. Randomness comes from an explicit ``torch.Generator`` so a pipeline is a pure
function of its inputs and the generator state.

Train: :func:`random_resize` (scale (2048, 512), ratio 0.5-2) -> :func:`random_crop` (512, largest
class share < 0.75) -> :func:`random_flip` -> :func:`photometric_distortion` -> :func:`normalize`
-> :func:`pad_to` (image 0, label 255). Test: :func:`rescale` to (2048, 512) keeping the aspect
ratio (in :mod:`seg.inference`) -> sliding window; the label stays at its original size and the
logits are resized back to it (metrics are computed there, as in mmseg).
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F

IGNORE_INDEX = 255
# mmseg's ADE20K normalisation (ImageNet statistics in 0..255, RGB order)
MEAN = (123.675, 116.28, 103.53)
STD = (58.395, 57.12, 57.375)


def _uniform(g: torch.Generator | None, lo: float, hi: float) -> float:
    return lo + (hi - lo) * float(torch.rand((), generator=g))


def _randint(g: torch.Generator | None, lo: int, hi: int) -> int:
    """Integer in [lo, hi] inclusive."""
    return int(torch.randint(lo, hi + 1, (), generator=g))


def rescale_size(h: int, w: int, scale: tuple[int, int]) -> tuple[int, int]:
    """mmcv's keep-ratio rule: the largest size with long side <= max(scale) and short side <= min(scale)."""
    factor = min(max(scale) / max(h, w), min(scale) / min(h, w))
    return int(h * factor + 0.5), int(w * factor + 0.5)


def resize(img: torch.Tensor, label: torch.Tensor | None, size: tuple[int, int]):
    """Bilinear for the image (no antialias, like cv2's INTER_LINEAR), nearest for the label."""
    if tuple(img.shape[-2:]) == tuple(size):
        return img, label
    img = F.interpolate(img[None], size=size, mode="bilinear", align_corners=False)[0]
    if label is not None:
        label = F.interpolate(label[None, None].float(), size=size, mode="nearest")[0, 0].long()
    return img, label


def rescale(img: torch.Tensor, label: torch.Tensor | None, scale: tuple[int, int]):
    return resize(img, label, rescale_size(*img.shape[-2:], scale))


def random_resize(img, label, scale=(2048, 512), ratio_range=(0.5, 2.0), g=None):
    r = _uniform(g, *ratio_range)
    return rescale(img, label, (int(scale[0] * r), int(scale[1] * r)))


def random_crop(img, label, crop_size: tuple[int, int], cat_max_ratio: float = 0.75, g=None,
                ignore_index: int = IGNORE_INDEX, attempts: int = 10):
    """A random window of at most ``crop_size``. Up to ``attempts`` windows are drawn until one has at
    least two classes and no class above ``cat_max_ratio`` of its labelled pixels (mmseg's rule; the
    last draw is kept otherwise)."""
    h, w = img.shape[-2:]
    ch, cw = min(crop_size[0], h), min(crop_size[1], w)

    def draw():
        y, x = _randint(g, 0, h - ch), _randint(g, 0, w - cw)
        return y, x

    y, x = draw()
    if cat_max_ratio < 1.0:
        for _ in range(attempts):
            crop = label[y:y + ch, x:x + cw]
            counts = torch.bincount(crop[crop != ignore_index].flatten(), minlength=1)
            counts = counts[counts > 0]
            if len(counts) > 1 and counts.max() / counts.sum() < cat_max_ratio:
                break
            y, x = draw()
    return img[:, y:y + ch, x:x + cw], label[y:y + ch, x:x + cw]


def random_flip(img, label, prob: float = 0.5, g=None):
    if _uniform(g, 0, 1) < prob:
        return img.flip(-1), label.flip(-1)
    return img, label


def rgb_to_hsv(img: torch.Tensor) -> torch.Tensor:
    """[3, H, W] RGB in 0..255 -> H in degrees [0, 360), S in [0, 1], V in 0..255 (OpenCV's float convention)."""
    r, g, b = img
    v, _ = img.max(0)
    mn, _ = img.min(0)
    delta = v - mn
    s = torch.where(v > 0, delta / v.clamp(min=1e-8), torch.zeros_like(v))
    safe = delta.clamp(min=1e-8)
    h = torch.where(v == r, (g - b) / safe, torch.where(v == g, 2 + (b - r) / safe, 4 + (r - g) / safe))
    h = torch.where(delta > 0, (h * 60) % 360, torch.zeros_like(h))
    return torch.stack([h, s, v])


def hsv_to_rgb(hsv: torch.Tensor) -> torch.Tensor:
    h, s, v = hsv
    h = (h % 360) / 60
    i = h.floor()
    f = h - i
    p, q, t = v * (1 - s), v * (1 - s * f), v * (1 - s * (1 - f))
    i = i.long() % 6
    r = torch.stack([v, q, p, p, t, v])
    g = torch.stack([t, v, v, q, p, p])
    b = torch.stack([p, p, t, v, v, q])
    pick = lambda c: c.gather(0, i[None])[0]  # noqa: E731
    return torch.stack([pick(r), pick(g), pick(b)])


def photometric_distortion(img: torch.Tensor, g=None, brightness_delta: float = 32,
                           contrast_range=(0.5, 1.5), saturation_range=(0.5, 1.5), hue_delta: float = 18):
    """mmseg's PhotoMetricDistortion: random brightness, then contrast either before or after the
    saturation and hue changes (chosen at random); every step applied with probability 1/2, and the
    image clipped to 0..255 after each. Hue is shifted by up to ``hue_delta`` degrees."""
    def maybe() -> bool:
        return _randint(g, 0, 1) == 1

    if maybe():
        img = (img + _uniform(g, -brightness_delta, brightness_delta)).clamp(0, 255)
    contrast_first = maybe()

    def contrast(x):
        return (x * _uniform(g, *contrast_range)).clamp(0, 255) if maybe() else x

    if contrast_first:
        img = contrast(img)
    do_sat, do_hue = maybe(), maybe()
    if do_sat or do_hue:
        hsv = rgb_to_hsv(img)
        if do_sat:
            hsv[1] = (hsv[1] * _uniform(g, *saturation_range)).clamp(0, 1)
        if do_hue:
            hsv[0] = hsv[0] + _uniform(g, -hue_delta, hue_delta)
        img = hsv_to_rgb(hsv).clamp(0, 255)
    if not contrast_first:
        img = contrast(img)
    return img


def normalize(img: torch.Tensor, mean=MEAN, std=STD) -> torch.Tensor:
    return (img - torch.tensor(mean).view(3, 1, 1)) / torch.tensor(std).view(3, 1, 1)


def pad_to(img: torch.Tensor, label: torch.Tensor | None, size: tuple[int, int], ignore_index: int = IGNORE_INDEX):
    """Pad bottom/right to ``size``: image with 0 (after normalisation, as mmseg's data preprocessor
    does), label with the ignore index."""
    ph, pw = max(size[0] - img.shape[-2], 0), max(size[1] - img.shape[-1], 0)
    if ph == 0 and pw == 0:
        return img, label
    img = F.pad(img, (0, pw, 0, ph), value=0.0)
    if label is not None:
        label = F.pad(label, (0, pw, 0, ph), value=ignore_index)
    return img, label


class TrainTransform:
    """The training pipeline; ``__call__(img uint8 [H, W, 3] tensor/array, label [H, W], g)``."""

    def __init__(self, crop_size: int = 512, scale=(2048, 512), ratio_range=(0.5, 2.0), cat_max_ratio: float = 0.75,
                 flip_prob: float = 0.5, photometric: bool = True):
        self.crop_size = (crop_size, crop_size)
        self.scale = tuple(scale)
        self.ratio_range = tuple(ratio_range)
        self.cat_max_ratio = cat_max_ratio
        self.flip_prob = flip_prob
        self.photometric = photometric

    def __call__(self, img: torch.Tensor, label: torch.Tensor, g: torch.Generator | None = None):
        img = img.permute(2, 0, 1).float()
        label = label.long()
        img, label = random_resize(img, label, self.scale, self.ratio_range, g)
        img, label = random_crop(img, label, self.crop_size, self.cat_max_ratio, g)
        img, label = random_flip(img, label, self.flip_prob, g)
        if self.photometric:
            img = photometric_distortion(img, g)
        img, label = pad_to(normalize(img), label, self.crop_size)
        return img.contiguous(), label.contiguous()


class TestTransform:
    """Normalise only: the test-time resize to (2048, 512) (and any extra scales) happens in
    :func:`seg.inference.inference`, so multi-scale testing starts from the original image."""

    def __call__(self, img: torch.Tensor, label: torch.Tensor, g: torch.Generator | None = None):
        return normalize(img.permute(2, 0, 1).float()).contiguous(), label.long()


def scaled_size(h: int, w: int, scale: tuple[int, int], ratio: float) -> tuple[int, int]:
    """Test-time multi-scale: the keep-ratio size for ``scale`` multiplied by ``ratio``."""
    return rescale_size(h, w, (int(math.floor(scale[0] * ratio)), int(math.floor(scale[1] * ratio))))
