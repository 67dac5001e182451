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


# OpenCV's 8-bit RGB -> HSV divides through fixed-point tables (12 fractional bits) built with cvRound
_HSV_SHIFT = 12
_SDIV = torch.tensor([0] + [round((255 << _HSV_SHIFT) / i) for i in range(1, 256)], dtype=torch.int64)
_HDIV180 = torch.tensor([0] + [round((180 << _HSV_SHIFT) / (6 * i)) for i in range(1, 256)], dtype=torch.int64)
# OpenCV's HSV -> RGB sector_data: the table index of (b, g, r) for each sector
_HSV_SECTORS = torch.tensor([[1, 3, 0], [1, 0, 2], [3, 0, 1], [0, 2, 1], [0, 1, 3], [2, 1, 0]])


def rgb_to_hsv_u8(img: torch.Tensor) -> torch.Tensor:
    """[3, H, W] RGB with integer values 0..255 -> OpenCV's 8-bit HSV (``COLOR_BGR2HSV`` on uint8):
    H in 2-degree units 0..179, S and V in 0..255, all integer-valued float32."""
    r, g, b = img.to(torch.int64)
    v = torch.maximum(torch.maximum(r, g), b)
    diff = v - torch.minimum(torch.minimum(r, g), b)
    half = 1 << (_HSV_SHIFT - 1)
    s = (diff * _SDIV[v] + half) >> _HSV_SHIFT
    h = torch.where(v == r, g - b, torch.where(v == g, b - r + 2 * diff, r - g + 4 * diff))
    h = (h * _HDIV180[diff] + half) >> _HSV_SHIFT
    h = torch.where(h < 0, h + 180, h)
    return torch.stack([h, s, v]).float()


def hsv_u8_to_rgb(hsv: torch.Tensor) -> torch.Tensor:
    """OpenCV's 8-bit HSV (H in 2-degree units) -> RGB integers 0..255, as ``COLOR_HSV2BGR``'s
    vectorised path (OpenCV 4.x, 5.x): float32 sector formula on H * 6/180, S / 255, V / 255, then
    x 255 truncated (only its few-pixel scalar tail rounds)."""
    h, s, v = hsv.float()
    h = h * (6.0 / 180.0)
    s = s * (1.0 / 255.0)
    v = v * (1.0 / 255.0)
    sector = h.floor()
    f = h - sector
    bad = (sector < 0) | (sector >= 6)
    sector = torch.where(bad, torch.zeros_like(sector), sector).long()
    f = torch.where(bad, torch.zeros_like(f), f)
    tab = torch.stack([v, v * (1 - s), v * (1 - s * f), v * (1 - s * (1 - f))])
    idx = _HSV_SECTORS[sector]  # [H, W, 3] = (b, g, r)
    pick = lambda k: tab.gather(0, idx[..., k][None])[0]  # noqa: E731
    rgb = torch.stack([pick(2), pick(1), pick(0)])
    return (rgb * 255.0).floor().clamp(0, 255)


def _to_u8(x: torch.Tensor) -> torch.Tensor:
    """``np.clip(x, 0, 255).astype(np.uint8)``: clip, then truncate."""
    return x.clamp(0, 255).floor()


def adjust_brightness(img: torch.Tensor, delta: float) -> torch.Tensor:
    return _to_u8(img + delta)


def adjust_contrast(img: torch.Tensor, alpha: float) -> torch.Tensor:
    return _to_u8(img * alpha)


def adjust_saturation(img: torch.Tensor, alpha: float) -> torch.Tensor:
    hsv = rgb_to_hsv_u8(img)
    hsv[1] = _to_u8(hsv[1] * alpha)
    return hsv_u8_to_rgb(hsv)


def shift_hue(img: torch.Tensor, shift: int) -> torch.Tensor:
    """Shift hue by ``shift`` OpenCV units (2 degrees each), modulo 180 units."""
    hsv = rgb_to_hsv_u8(img)
    hsv[0] = (hsv[0] + shift) % 180
    return hsv_u8_to_rgb(hsv)


def photometric_distortion(img: torch.Tensor, g=None, brightness_delta: float = 32,
                           contrast_range=(0.5, 1.5), saturation_range=(0.5, 1.5), hue_delta: int = 18):
    """mmseg's PhotoMetricDistortion on the uint8 image its pipeline carries: random brightness, then
    contrast either before or after the saturation and hue changes; every step applied with
    probability 1/2 and its result truncated to uint8. Saturation and hue each round-trip through
    OpenCV's 8-bit HSV, where hue is stored in 2-degree units, so the hue shift
    ``randint(-hue_delta, hue_delta)`` (numpy's: upper bound excluded) moves it by -36..+34 degrees.
    The float input (0..255) is first rounded to uint8, as cv2's resize leaves it in mmseg."""
    def maybe() -> bool:
        return _randint(g, 0, 1) == 1

    img = img.round().clamp(0, 255)
    if maybe():
        img = adjust_brightness(img, _uniform(g, -brightness_delta, brightness_delta))
    contrast_first = maybe()

    def contrast(x):
        return adjust_contrast(x, _uniform(g, *contrast_range)) if maybe() else x

    if contrast_first:
        img = contrast(img)
    if maybe():
        img = adjust_saturation(img, _uniform(g, *saturation_range))
    if maybe():
        img = shift_hue(img, _randint(g, -int(hue_delta), int(hue_delta) - 1))
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
