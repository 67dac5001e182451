"""The one image reader of the toolkit: every dataset (ImageFolder, COCO, ADE20K, iNat, Places) decodes
through ``load_rgb`` so the same policy holds everywhere.

Policy:
- the image is decoded fully here, so truncated or corrupt files fail at read time (``OSError``);
- 16-bit (and 32-bit integer) greyscale images (PIL modes ``I;16*`` and ``I``) are scaled to 8 bit
  (0..65535 -> 0..255, rounded), not clipped at 255 as ``convert("RGB")`` would; values outside
  0..65535 and floating-point images (mode ``F``, no defined range) are refused. 48-bit RGB PNGs
  already decode to 8-bit RGB in PIL (high byte), so they need nothing;
- an image of more than ``max_pixels`` pixels is refused (a decompression bomb, or a scan nobody
  meant to train on). The default is PIL's ``Image.MAX_IMAGE_PIXELS`` (89.5M pixels unless changed,
  e.g. 9459 x 9459; PIL only warns there and raises at twice that); ``CROSSMAE_MAX_IMAGE_PIXELS``
  (inherited by data workers) or a dataset's ``max_pixels`` argument overrides it.

Every refusal is an :class:`UnreadableImageError` (an ``OSError``), so the datasets that skip
unreadable files skip these too, with the file named in a warning and counted.
"""
from __future__ import annotations

import io
import os
import warnings
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
from PIL import Image

from ..errors import WorkerSafe

MAX_PIXELS_ENV = "CROSSMAE_MAX_IMAGE_PIXELS"
HIGH_DEPTH_MODES = ("I;16", "I;16L", "I;16B", "I;16N", "I")

# what reading a bad file can raise: PIL raises OSError (UnidentifiedImageError, truncated data),
# ValueError and SyntaxError (broken headers) for unreadable files
UNREADABLE = (OSError, ValueError, SyntaxError)


class UnreadableImageError(WorkerSafe, OSError):
    """An image that decodes but is refused by the policy above (too large, unsupported depth)."""


class ImageReadError(WorkerSafe, ValueError):
    """An image that must be read (e.g. by an evaluation, where a substitute would change the score) and
    cannot be: bad input, reported as ``<prog>: error: unreadable image <path> (...)`` with exit code 2.
    Built by :meth:`of`; ``path`` is the file (None after a DataLoader worker re-raised it: torch passes
    the message alone)."""

    path: str | None = None

    @classmethod
    def of(cls, path: str | Path, cause: BaseException, what: str = "") -> "ImageReadError":
        return cls(f"unreadable image {path}{' ' + what if what else ''} ({type(cause).__name__}: {cause})",
                   path=str(path))


def default_max_pixels() -> int | None:
    """``CROSSMAE_MAX_IMAGE_PIXELS`` if set, else PIL's current ``Image.MAX_IMAGE_PIXELS`` (None: no limit)."""
    value = os.environ.get(MAX_PIXELS_ENV, "")
    if not value:
        return Image.MAX_IMAGE_PIXELS
    try:
        n = int(float(value))
    except (ValueError, OverflowError):  # not a number, nan; inf
        raise ValueError(f"{MAX_PIXELS_ENV}={value!r} is not a number of pixels") from None
    if n < 1:
        raise ValueError(f"{MAX_PIXELS_ENV}={value!r}: the pixel limit must be >= 1")
    return n


def to_rgb8(im: Image.Image, path: str | Path = "image") -> Image.Image:
    """An opened PIL image -> 8-bit RGB, scaling high bit depths instead of clipping them."""
    if im.mode in HIGH_DEPTH_MODES:
        a = np.asarray(im)
        lo, hi = (int(a.min()), int(a.max())) if a.size else (0, 0)
        if lo < 0 or hi > 65535:
            raise UnreadableImageError(f"{path}: {im.mode} image with values {lo}..{hi}; only 0..65535 "
                                       f"(16-bit) integer images can be scaled to 8 bit")
        a8 = ((a.astype(np.uint32) * 255 + 32767) // 65535).astype(np.uint8)  # round(v * 255 / 65535)
        return Image.fromarray(a8, "L").convert("RGB")
    if im.mode == "F":
        raise UnreadableImageError(f"{path}: floating-point image (mode F) has no defined 8-bit range")
    return im.convert("RGB")


def open_image(path: str | Path, max_pixels: int | None = None, data: bytes | None = None) -> Image.Image:
    """Open ``path`` lazily (header only) with the pixel limit enforced; the caller decodes and closes it.
    ``data``: the file's bytes, when the caller has read them already (no second read of the file)."""
    limit = default_max_pixels() if max_pixels is None else int(max_pixels)
    if Image.MAX_IMAGE_PIXELS is not None and (limit is None or limit > Image.MAX_IMAGE_PIXELS):
        # PIL itself refuses images above 2x its own limit before we can look at the size
        Image.MAX_IMAGE_PIXELS = limit
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", Image.DecompressionBombWarning)  # the limit is enforced below
        try:
            im = Image.open(path if data is None else io.BytesIO(data))
        except Image.DecompressionBombError as e:
            raise UnreadableImageError(f"{path}: {e}") from e
    w, h = im.size
    if limit is not None and w * h > limit:
        im.close()
        raise UnreadableImageError(f"{path}: {w}x{h} = {w * h} pixels is above the limit of {limit} "
                                   f"(set {MAX_PIXELS_ENV} to read larger images)")
    return im


def header_size(path: str | Path) -> tuple[int, int] | BaseException:
    """(width, height) from the image's header (no decode; the pixel limit applies), or what reading it
    raised when it is unreadable."""
    try:
        with open_image(path) as im:
            return im.size
    except UNREADABLE as e:
        return e


def header_sizes(paths: list, workers: int = 8) -> list[tuple[int, int] | BaseException]:
    """:func:`header_size` of each path, read by ``workers`` threads (opening files waits on the disk, not
    the GIL). The cheap up-front check of the sets an evaluation reads: a header read costs a file open
    and a few KB, a full decode of a large set minutes."""
    with ThreadPoolExecutor(max(1, workers)) as pool:
        return list(pool.map(header_size, paths))


def load_rgb(path: str | Path, max_pixels: int | None = None) -> Image.Image:
    """Decode ``path`` fully into an 8-bit RGB PIL image, applying the module's policy."""
    with open_image(path, max_pixels) as im:
        return to_rgb8(im, path)
