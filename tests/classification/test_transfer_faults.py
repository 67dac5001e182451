"""iNat2019 / Places365 read images through the toolkit's shared reader: an unreadable file is skipped
and counted (not a crash mid-epoch), and a 16-bit image is scaled, not clipped."""
from __future__ import annotations

import numpy as np
from PIL import Image

from cls_transfer import INat2019, Places365Local

from .fakes import make_inat2019_tree, make_places365_tree


def test_places365_skips_an_unreadable_image_and_scales_16bit(tmp_path):
    root = make_places365_tree(tmp_path, {0: 2, 1: 2})
    ds = Places365Local(root, "train-standard", small=True, verify_md5=False)
    bad, g16 = ds.imgs[0][0], ds.imgs[1][0]
    open(bad, "wb").close()  # zero bytes
    Image.fromarray(np.linspace(0, 65535, 400).round().astype(np.uint16).reshape(20, 20)).save(g16, format="PNG")
    img, target = ds[0]
    assert ds.num_skipped() == 1 and target == ds.imgs[1][1]  # replaced by the next sample
    assert (np.asarray(img) == 255).mean() < 0.01  # convert("RGB") would saturate ~99%


def test_inat2019_skips_an_unreadable_image(tmp_path):
    root = make_inat2019_tree(tmp_path, {3: 2, 500: 1})
    ds = INat2019(root, "train")
    open(ds.samples[0][0], "wb").close()
    img, _ = ds[0]
    assert ds.num_skipped() == 1 and img.size[0] > 0
