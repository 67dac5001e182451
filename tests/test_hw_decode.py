"""data.pipeline=nvimgcodec on a machine without nvImageCodec or a GPU: the config accepts it, `crossmae pretrain`
stops up front with one line naming the field and the fix, and its workers draw RandomResizedCrop's boxes."""
import sys
import types

import pytest
import torch
from PIL import Image
from torchvision import transforms

from crossmae import pretrain
from crossmae.cli import main as cli
from crossmae.config import PretrainConfig, load_config
from crossmae.data.fast_device import EncodedCropFolder

from tiny import REPO

DEMO = str(REPO / "configs/pretrain/demo.yaml")
FAST = ["model.embed_dim=32", "model.depth=2", "model.num_heads=4", "model.decoder_embed_dim=32", "model.decoder_depth=1",
        "data.num_workers=0", "num_vis=2"]


def test_config_accepts_the_pipeline_and_keeps_fast_the_default():
    assert load_config(PretrainConfig, None, []).data.pipeline == "fast"
    assert load_config(PretrainConfig, None, ["data.pipeline=nvimgcodec"]).data.pipeline == "nvimgcodec"


def no_package(monkeypatch):
    monkeypatch.setitem(sys.modules, "nvidia.nvimgcodec", None)  # `import nvidia.nvimgcodec` raises ImportError


def fake_package(monkeypatch):
    monkeypatch.setitem(sys.modules, "nvidia", sys.modules.get("nvidia") or types.ModuleType("nvidia"))
    monkeypatch.setitem(sys.modules, "nvidia.nvimgcodec", types.ModuleType("nvidia.nvimgcodec"))


@pytest.mark.parametrize("setup,device,expected", [
    (no_package, "cpu", "pip install nvidia-nvimgcodec-cu"),
    (fake_package, "cpu", "no CUDA device"),  # the package is there, the GPU is not
])
def test_a_pipeline_that_cannot_run_stops_before_any_data_work(tmp_path, capsys, monkeypatch, setup, device, expected):
    setup(monkeypatch)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)

    def must_not_run(*args, **kwargs):
        raise AssertionError("reached the model / data set-up")
    for name in ("build_model", "build_loader", "EncodedCropFolder", "make_demo_imagefolder"):
        monkeypatch.setattr(pretrain, name, must_not_run)
    rc = cli(["pretrain", "--config", DEMO, f"output_dir={tmp_path}", f"device={device}", *FAST,
              "data.pipeline=nvimgcodec"])
    err = capsys.readouterr().err.strip()
    assert rc == 2 and len(err.splitlines()) == 1, err
    assert "data.pipeline=nvimgcodec" in err and expected in err and "data.pipeline=fast" in err, err
    assert not (tmp_path / "demo_data").exists()


def test_workers_draw_random_resized_crops_boxes(tmp_path):
    sizes = [(500, 375), (375, 500), (200, 640)]
    for i, (w, h) in enumerate(sizes):
        (tmp_path / "c").mkdir(exist_ok=True)
        Image.new("RGB", (w, h), (i * 40, 90, 200)).save(tmp_path / "c" / f"{i}.jpg")
    ds = EncodedCropFolder(tmp_path, 224, 0.3)
    for seed in range(30):
        for i, (w, h) in enumerate(sizes):
            torch.manual_seed(seed)
            box = ds[i][1].tolist()
            torch.manual_seed(seed)
            ref = transforms.RandomResizedCrop.get_params(Image.new("RGB", (w, h)), (0.3, 1.0), (3 / 4, 4 / 3))
            assert box == list(ref), (seed, i)
