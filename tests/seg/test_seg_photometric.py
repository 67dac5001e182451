"""PhotoMetricDistortion as mmseg 1.2.2 runs it: uint8 after every step, OpenCV's 8-bit HSV (issue 12)."""
from __future__ import annotations

import torch

from seg.transforms import (adjust_brightness, adjust_contrast, adjust_saturation, photometric_distortion,
                            rgb_to_hsv_u8, shift_hue)


def pixel(r, g, b):
    return torch.tensor([r, g, b], dtype=torch.float32).view(3, 1, 1)


def test_each_step_truncates_to_uint8():
    img = pixel(100, 250, 0)
    assert adjust_brightness(img, 10.7).flatten().tolist() == [110, 255, 10]  # 110.7 -> 110, clipped at 255
    assert adjust_contrast(pixel(3, 100, 200), 1.3).flatten().tolist() == [3, 130, 255]  # 3.9 -> 3
    # saturation halved: S 255 -> 127 (truncated), V kept; the others are 255 * (1 - 127/255) = 128 in
    # exact arithmetic, 127.99999 in OpenCV's float32 and truncated to 127 (what cv2 4.x / 5.x give)
    out = adjust_saturation(pixel(255, 0, 0), 0.5)
    assert out.flatten().tolist() == [255, 127, 127]


def test_hue_moves_in_opencv_two_degree_units():
    hsv = rgb_to_hsv_u8(torch.stack([pixel(255, 0, 0), pixel(0, 255, 0), pixel(0, 0, 255)], 1)[:, :, 0])
    assert hsv[0].flatten().tolist() == [0, 60, 120]  # red, green, blue at 0, 120, 240 degrees
    # 30 units = 60 degrees: red -> yellow exactly; 18 units (the largest draw) = 36 degrees
    assert shift_hue(pixel(255, 0, 0), 30).flatten().tolist() == [255, 255, 0]
    g = shift_hue(pixel(255, 0, 0), 18)[1].item()
    assert abs(g - 255 * 36 / 60) <= 1  # an 18-degree shift would give 76
    assert shift_hue(pixel(255, 0, 0), -30).flatten().tolist() == [255, 0, 254]  # wraps modulo 180 units (cv2: 254)


def test_distortion_output_is_uint8_valued_and_hue_draws_reach_34_degrees():
    gen = torch.Generator().manual_seed(0)
    img = (torch.rand(3, 8, 8, generator=gen) * 255)
    outs = [photometric_distortion(img, gen) for _ in range(16)]
    for o in outs:
        assert torch.equal(o, o.round()) and o.min() >= 0 and o.max() <= 255
    assert sum(not torch.equal(o, img.round()) for o in outs) >= 8
