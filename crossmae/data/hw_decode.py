"""``data.pipeline=nvimgcodec``: JPEG decode on the GPU's hardware decoder through nvImageCodec, region of interest
= the RandomResizedCrop box.

Workers do what they do for device decode (:class:`crossmae.data.fast_device.EncodedCropFolder`): read the file's
bytes and header and draw the box with the fast pipeline's :func:`~crossmae.data.fast_rrc.sample_box` (same
distribution, same RNG calls) and the flip. :class:`HardwareCropDecoder` then decodes only each box, in one batched
nvImageCodec call on the device, and resizes and flips there like :func:`~crossmae.data.fast_device.decode_crops`.
What nvImageCodec cannot decode (other formats, corrupt data) goes through that CPU/torchvision path.

nvImageCodec is an optional extra (``pip install nvidia-nvimgcodec-cu12``, or ``-cu13`` to match torch's CUDA),
imported only when this pipeline is asked for. Not measured yet: ``tools/gpu_check.py --sections loader``.
"""
from __future__ import annotations

import logging

import numpy as np
import torch

from .fast_device import _decode, crops_from_images

logger = logging.getLogger("crossmae")


def package_name() -> str:
    """The nvImageCodec wheel that matches torch's CUDA major version (cu12 where torch has no CUDA)."""
    major = (torch.version.cuda or "12").split(".")[0]
    return f"nvidia-nvimgcodec-cu{major}"


def unavailable_reason(device: str | torch.device) -> str | None:
    """Why ``data.pipeline=nvimgcodec`` cannot run on ``device`` (None: it can), with the fix."""
    try:
        import nvidia.nvimgcodec  # noqa: F401
    except ImportError:
        return f"needs the nvImageCodec package, which is not installed: pip install {package_name()}, " \
               f"or use data.pipeline=fast"
    if torch.device(device).type != "cuda" or not torch.cuda.is_available():
        return "decodes on a CUDA GPU's JPEG decoder and this run has no CUDA device: use data.pipeline=fast"
    return None


def require(device: str | torch.device) -> None:
    """Stop before any data work when the pipeline cannot run here: one line naming the field and the fix."""
    reason = unavailable_reason(device)
    if reason:
        raise ValueError(f"data.pipeline=nvimgcodec {reason}")


def collate_bytes(items: list) -> tuple[list[bytes], torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Like :func:`~crossmae.data.fast_device.collate_encoded`, with the encoded files as ``bytes``: the training
    loop moves tensors to the device, and nvImageCodec reads its input from host memory."""
    data, boxes, flips, jpeg, targets = zip(*items)
    return ([_as_bytes(d) for d in data], torch.stack(boxes), torch.tensor(flips), torch.tensor(jpeg),
            torch.tensor(targets))


class HardwareCropDecoder:
    """A collated batch (encoded files, boxes, flips, is_jpeg, ...) -> uint8 [N, 3, size, size] on ``device``.
    ``device="cpu"`` uses nvImageCodec's CPU backend (libjpeg-turbo): the same code without a GPU."""

    def __init__(self, size: int, device: str | torch.device = "cuda"):
        import nvidia.nvimgcodec as nvimgcodec
        self.nvimgcodec, self.size, self.device = nvimgcodec, size, torch.device(device)
        if self.device.type == "cuda":  # every backend allowed: the hardware decoder first where it takes the input
            index = self.device.index if self.device.index is not None else torch.cuda.current_device()
            self.decoder = nvimgcodec.Decoder(device_id=index)
        else:
            self.decoder = nvimgcodec.Decoder(device_id=nvimgcodec.NVIMGCODEC_DEVICE_CPU_ONLY,
                                              backends=[nvimgcodec.Backend(nvimgcodec.CPU_ONLY)])

    def __call__(self, batch) -> torch.Tensor:
        data, boxes, flips, is_jpeg = list(batch[0]), batch[1].tolist(), batch[2].tolist(), batch[3].tolist()
        codec = self.nvimgcodec
        streams = [codec.CodeStream(_as_bytes(d)).get_sub_code_stream(region=codec.Region(top, left, top + h, left + w))
                   for d, (top, left, h, w) in zip(data, boxes)]
        stream = torch.cuda.current_stream(self.device).cuda_stream if self.device.type == "cuda" else 0
        decoded = self.decoder.decode(streams, cuda_stream=stream)  # None where the data does not decode
        images = [None if img is None else self._to_tensor(img) for img in decoded]
        crop_boxes = [(0, 0, h, w) if img is not None else (top, left, h, w)  # a region is its own whole box
                      for img, (top, left, h, w) in zip(images, boxes)]
        missed = [i for i, img in enumerate(images) if img is None]
        if missed:  # other formats, damaged files: torchvision's path, which logs what it cannot decode either
            retried = _decode([torch.frombuffer(bytearray(_as_bytes(data[i])), dtype=torch.uint8) for i in missed],
                              [is_jpeg[i] for i in missed], self.device)
            for i, img in zip(missed, retried):
                images[i] = img
        crops, bad = crops_from_images(images, crop_boxes, flips, self.size)
        if bad:
            logger.warning("nvimgcodec pipeline: %d undecodable image(s) in a batch of %d replaced", bad, len(images))
        return crops

    def _to_tensor(self, img) -> torch.Tensor:
        """nvImageCodec's HWC uint8 image (device or host buffer) -> CHW on ``self.device``."""
        if img.buffer_kind == self.nvimgcodec.ImageBufferKind.STRIDED_DEVICE:
            hwc = torch.from_dlpack(img)
        else:
            hwc = torch.from_numpy(np.asarray(img))
        return hwc.permute(2, 0, 1).to(self.device)


def _as_bytes(data: bytes | torch.Tensor) -> bytes:
    return data if isinstance(data, bytes) else data.numpy().tobytes()
