import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

from seg.inference import inference, slide_inference, whole_inference, window_starts
from seg.model import build_upernet

TINY = dict(size="small", img_size=32, patch_size=4, embed_dim=32, depth=4, num_heads=2, use_cls_token=True,
            drop_path_rate=0.0)


@pytest.fixture(scope="module")
def tiny_upernet():
    torch.manual_seed(0)
    model = build_upernet(TINY, num_classes=5, channels=16, aux_channels=8).eval()
    # give the zero-initialised relative-position tables some values, so position matters
    for name, p in model.named_parameters():
        if "relative_position_bias_table" in name:
            nn.init.normal_(p, std=0.5)
    return model


def pixelwise(num_classes=3):
    """A translation-equivariant 'model' (1x1 conv): any window gives the same logits at a pixel."""
    torch.manual_seed(1)
    conv = nn.Conv2d(3, num_classes, 1)
    return lambda x: conv(x)


def test_window_starts_cover_the_axis_and_end_at_the_border():
    assert window_starts(512, 512, 341) == [0]
    assert window_starts(683, 512, 341) == [0, 171]  # second window pulled back to end at 683
    assert window_starts(1100, 512, 341) == [0, 341, 588]
    assert window_starts(100, 512, 341) == [0]  # smaller than the crop: one (padded) window
    for n in (64, 65, 100, 257):
        starts = window_starts(n, 32, 21)
        assert starts[0] == 0 and starts[-1] + 32 == n
        assert all(b - a <= 21 for a, b in zip(starts, starts[1:]))


def test_slide_equals_whole_when_the_crop_covers_the_image(tiny_upernet):
    img = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        whole = whole_inference(tiny_upernet, img, 5, tiny_upernet.size_divisor)
        slide = slide_inference(tiny_upernet, img, 5, crop=32, stride=21)
    assert whole.shape == (2, 5, 32, 32)
    torch.testing.assert_close(slide, whole, atol=1e-5, rtol=1e-5)


def test_slide_pads_images_smaller_than_the_crop(tiny_upernet):
    img = torch.randn(1, 3, 20, 27)
    with torch.no_grad():
        slide = slide_inference(tiny_upernet, img, 5, crop=32, stride=21)
        padded = tiny_upernet(F.pad(img, (0, 5, 0, 12)))[..., :20, :27]
    assert slide.shape == (1, 5, 20, 27)
    torch.testing.assert_close(slide, padded, atol=1e-5, rtol=1e-5)


def test_overlapping_windows_are_averaged_in_place():
    fn = pixelwise()
    img = torch.randn(1, 3, 45, 70)
    torch.testing.assert_close(slide_inference(fn, img, 3, crop=16, stride=11, crop_batch=3), fn(img),
                               atol=1e-5, rtol=1e-5)


def test_real_model_windows_differ_from_whole_on_large_images(tiny_upernet):
    # the sliding window really crops: with global attention the result is not the whole-image one
    img = torch.randn(1, 3, 48, 64)
    with torch.no_grad():
        slide = slide_inference(tiny_upernet, img, 5, crop=32, stride=21)
        whole = whole_inference(tiny_upernet, img, 5, tiny_upernet.size_divisor)
    assert slide.shape == whole.shape == (1, 5, 48, 64)
    assert not torch.allclose(slide, whole, atol=1e-3)


def test_inference_resizes_to_the_test_scale_and_back_and_averages_flips():
    fn = pixelwise()
    img = torch.randn(1, 3, 30, 40)
    # scale (128, 60): the image is resized to 60 x 80, inferred, and the logits resized back to 30 x 40
    one = inference(fn, img, 3, (30, 40), scale=(128, 60), mode="slide", crop=32, stride=21)
    assert one.shape == (1, 3, 30, 40)
    up = F.interpolate(img, size=(60, 80), mode="bilinear", align_corners=False)
    torch.testing.assert_close(one, F.interpolate(fn(up), size=(30, 40), mode="bilinear", align_corners=False),
                               atol=1e-4, rtol=1e-4)
    # a pixelwise model is flip-equivariant: flip averaging gives its softmax
    flipped = inference(fn, img, 3, (30, 40), scale=(128, 60), flip=True, mode="whole")
    torch.testing.assert_close(flipped, one.softmax(1), atol=1e-4, rtol=1e-4)
    ms = inference(fn, img, 3, (30, 40), scale=(128, 60), ratios=(0.5, 1.0, 1.5), flip=True, mode="slide",
                   crop=32, stride=21)
    assert ms.shape == (1, 3, 30, 40)
    torch.testing.assert_close(ms.sum(1), torch.ones(1, 30, 40))
