"""data.path=synthetic: random uint8 images, the same on every read, and a bad count named up front."""
import pytest
import torch

from crossmae.config import ConfigError, PretrainConfig, load_config
from crossmae.data.synthetic import SyntheticImages


def test_images_are_uint8_noise_and_repeatable():
    data = SyntheticImages(5, 16, seed=3)
    img, label = data[2]
    assert len(data) == 5 and img.shape == (3, 16, 16) and img.dtype == torch.uint8 and label == 0
    assert torch.equal(img, SyntheticImages(5, 16, seed=3)[2][0])  # a fresh dataset (another worker) gives the same
    assert not torch.equal(img, data[3][0]) and not torch.equal(img, SyntheticImages(5, 16, seed=4)[2][0])
    assert img.float().std() > 50  # uniform over 0..255: std 73.9
    assert [im.size for im in data.readable_images(9)] == [(16, 16)] * 5


def test_a_bad_count_is_named():
    with pytest.raises(ConfigError, match="data.synthetic_images"):
        load_config(PretrainConfig, None, ["data.path=synthetic", "data.synthetic_images=0"])
    with pytest.raises(ValueError, match=">= 1 image"):
        SyntheticImages(0, 16)
