"""Data faults and re-runs of the core: 16-bit images, decompression bombs, unreadable files in the
pretraining set, determinism and results.json of a finished run run again."""
import json

import numpy as np
import pytest
import torch
from PIL import Image

from crossmae.cli import main as cli
from crossmae.data import SafeImageFolder
from crossmae.data.image import MAX_PIXELS_ENV, UnreadableImageError, load_rgb, to_rgb8
from crossmae.engine import load_checkpoint
from crossmae.pretrain import fixed_batch

TINY = ["model.img_size=16", "model.patch_size=4", "model.embed_dim=32", "model.depth=1", "model.num_heads=2",
        "model.decoder_embed_dim=16", "model.decoder_depth=1", "model.decoder_num_heads=2", "data.num_workers=0",
        "batch_size=4", "epochs=1", "num_vis=2", "log_every=1"]


def image_folder(root, n_per_class=4, size=20, classes=("a", "b")):
    rng = np.random.default_rng(0)
    for c in classes:
        (root / c).mkdir(parents=True, exist_ok=True)
        for i in range(n_per_class):
            Image.fromarray(rng.integers(0, 256, (size, size, 3), dtype=np.uint8)).save(root / c / f"{i}.png")
    return root


def ramp16(size=64) -> np.ndarray:
    return np.linspace(0, 65535, size * size).round().astype(np.uint16).reshape(size, size)


# --------------------------------------------------------------------------------------- 16-bit images

def test_16bit_png_is_scaled_not_clipped(tmp_path):
    a = ramp16()
    Image.fromarray(a).save(tmp_path / "g16.png")
    rgb = np.asarray(load_rgb(tmp_path / "g16.png"))
    assert rgb.shape == (64, 64, 3) and rgb.dtype == np.uint8
    assert np.abs(rgb[..., 0].astype(int) - np.round(a / 257).astype(int)).max() <= 1
    assert (rgb == 255).mean() < 0.01  # convert("RGB") saturates ~99.6% of this ramp


def test_32bit_int_image_in_16bit_range_is_scaled_and_others_are_refused():
    a = ramp16(8).astype(np.int32)
    out = np.asarray(to_rgb8(Image.fromarray(a)))  # mode I
    assert out.max() == 255 and out.min() == 0 and (out == 255).mean() < 0.05
    with pytest.raises(UnreadableImageError, match="0..65535"):
        to_rgb8(Image.fromarray(np.full((4, 4), 70000, np.int32)))
    with pytest.raises(UnreadableImageError, match="mode F"):
        to_rgb8(Image.fromarray(np.ones((4, 4), np.float32)))


def test_imagefolder_reads_16bit_images_through_the_shared_reader(tmp_path):
    (tmp_path / "a").mkdir()
    Image.fromarray(ramp16()).save(tmp_path / "a" / "g16.png")
    img, _ = SafeImageFolder(tmp_path)[0]
    assert (np.asarray(img) == 255).mean() < 0.01


# --------------------------------------------------------------------------------------- pixel limit

def test_decompression_bomb_is_skipped_counted_and_named(tmp_path, monkeypatch, caplog):
    image_folder(tmp_path, n_per_class=2, size=16)
    Image.new("RGB", (64, 64)).save(tmp_path / "a" / "bomb.png")  # 4096 px: above 2x the patched limit
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 1000)  # PIL raises DecompressionBombError above 2000
    ds = SafeImageFolder(tmp_path)
    bomb = [i for i, (p, _) in enumerate(ds.samples) if p.endswith("bomb.png")][0]
    img, _ = ds[bomb]
    assert img.size == (16, 16)  # replaced by the next readable image
    assert ds.num_skipped() == 1 and "bomb.png" in caplog.text


def test_pixel_limit_is_configurable(tmp_path, monkeypatch):
    Image.new("RGB", (40, 30)).save(tmp_path / "x.png")
    with pytest.raises(UnreadableImageError, match="1200 pixels is above the limit of 1000"):
        load_rgb(tmp_path / "x.png", max_pixels=1000)
    monkeypatch.setenv(MAX_PIXELS_ENV, "1199")
    with pytest.raises(UnreadableImageError, match=MAX_PIXELS_ENV):
        load_rgb(tmp_path / "x.png")
    monkeypatch.setenv(MAX_PIXELS_ENV, "1200")
    assert load_rgb(tmp_path / "x.png").size == (40, 30)


@pytest.mark.parametrize("value", ["1e400", "inf", "nan", "lots", "0"])
def test_an_absurd_pixel_limit_names_the_variable(tmp_path, monkeypatch, value):
    from crossmae.data.image import default_max_pixels
    monkeypatch.setenv(MAX_PIXELS_ENV, value)
    with pytest.raises(ValueError, match=f"{MAX_PIXELS_ENV}='{value}'"):
        default_max_pixels()


# --------------------------------------------------------------------------------------- unreadable files

def test_fixed_batch_skips_a_zero_byte_image(tmp_path):
    image_folder(tmp_path)
    (tmp_path / "a" / "0.png").write_bytes(b"")  # the first sample: the one fixed_batch used to read
    batch = fixed_batch(SafeImageFolder(tmp_path), 2, 16)
    assert batch.shape == (2, 3, 16, 16) and torch.isfinite(batch).all()


@pytest.mark.parametrize("num_vis", [2, 0])
def test_pretraining_on_only_unreadable_images_fails_up_front_with_one_line(tmp_path, capsys, num_vis):
    data = tmp_path / "data" / "a"
    data.mkdir(parents=True)
    for i in range(6):
        (data / f"{i}.png").write_bytes(b"" if i else b"not an image")
    assert cli(["pretrain", f"data.path={data.parent}", f"output_dir={tmp_path / 'out'}", *TINY,
                f"num_vis={num_vis}"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert "error: no readable image among the 6 files" in err[-1]
    assert not (tmp_path / "out" / "checkpoint.pth").exists()


# --------------------------------------------------------------------------------------- determinism, re-runs

def test_pretraining_is_deterministic_and_a_rerun_keeps_its_results(tmp_path):
    data = image_folder(tmp_path / "data")
    runs = [tmp_path / "r1", tmp_path / "r2"]
    for out in runs:
        assert cli(["pretrain", f"data.path={data}", f"output_dir={out}", *TINY]) == 0
    a, b = (load_checkpoint(out / "checkpoint.pth")["model"] for out in runs)
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)

    first = json.loads((runs[0] / "results.json").read_text())["metrics"]
    assert {"fixed_mask_loss", "fixed_mask_loss_before", "train_time_s"} <= first.keys()
    assert cli(["pretrain", f"data.path={data}", f"output_dir={runs[0]}", *TINY]) == 0  # finished: re-run
    assert json.loads((runs[0] / "results.json").read_text())["metrics"] == pytest.approx(first)
    (runs[0] / "results.json").unlink()  # killed after the last checkpoint, before the results
    assert cli(["pretrain", f"data.path={data}", f"output_dir={runs[0]}", *TINY]) == 0
    again = json.loads((runs[0] / "results.json").read_text())["metrics"]
    assert again["fixed_mask_loss"] == pytest.approx(first["fixed_mask_loss"])


def test_an_evaluation_set_refuses_an_unreadable_image_instead_of_substituting_one(tmp_path, capsys):
    from crossmae.data.image import ImageReadError
    image_folder(tmp_path)
    (tmp_path / "b" / "1.png").write_bytes(b"")
    ds = SafeImageFolder(tmp_path)
    ds.skip_unreadable = False
    bad = [i for i, (p, _) in enumerate(ds.samples) if p.endswith("b/1.png")][0]
    with pytest.raises(ImageReadError, match=r"unreadable image .*b/1\.png"):
        ds[bad]
    # a fine-tuning run whose val split holds it stops at its evaluation with one line (exit 2)
    data = tmp_path / "cls"
    image_folder(data / "train")
    image_folder(data / "val")
    (data / "val" / "a" / "2.png").write_bytes(b"")
    cli(["pretrain", f"data.path={data / 'train'}", f"output_dir={tmp_path / 'pre'}", *TINY])
    args = ["finetune", f"pretrained={tmp_path / 'pre' / 'checkpoint.pth'}", f"data.path={data}", "data.nb_classes=2",
            "data.num_workers=0", "batch_size=4", "epochs=1", "optim.warmup_epochs=0", "device=cpu",
            f"output_dir={tmp_path / 'ft'}"]
    assert cli(args) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert "error: unreadable image" in err[-1] and "val/a/2.png" in err[-1]


def test_first_readable_skips_counts_and_gives_up_after_ten_in_a_row():
    from crossmae.data.skipping import MAX_SKIPS_IN_A_ROW, SkipCount, first_readable
    bad = {3, 4, 5}
    skips, seen = SkipCount(), []

    def load(i):
        if i in bad:
            raise OSError(f"broken {i}")
        return i

    def on_unreadable(i, e):
        seen.append(i)
        skips.add()

    assert first_readable(load, 3, 8, on_unreadable, "here") == 6 and seen == [3, 4, 5] and int(skips) == 3
    assert first_readable(load, 7, 8, on_unreadable, "here") == 7  # wraps around the end, none skipped
    with pytest.raises(OSError, match=f"{MAX_SKIPS_IN_A_ROW} unreadable images in a row from index 0 in /data"):
        first_readable(lambda i: load(3), 0, 100, on_unreadable, "/data")
    with pytest.raises(KeyError):  # not an unreadable-file error: a bug, and it propagates
        first_readable(lambda i: {}[i], 0, 4, on_unreadable, "here")


# --------------------------------------------------------------------------------------- directory symlinks

def linked_folder(root):
    """train/{astronaut,coffee} with 3 images each, and a directory outside with 2 more images."""
    image_folder(root / "train", n_per_class=3, classes=("astronaut", "coffee"))
    image_folder(root / "outside", n_per_class=2, classes=("more",))
    return root / "train"


@pytest.mark.parametrize("link,target,skipped", [
    ("coffee/loop", "..", "coffee/loop"),  # the split root: every class again, labelled coffee, 40 levels deep
    ("astronaut/self", ".", "astronaut/self"),  # a cycle
    ("astronaut/other", "../coffee", "astronaut/other"),  # another class's images under this label
    ("coffee/deep/up", "../..", "coffee/deep/up"),  # an ancestor of the class, deeper down
])
def test_directory_symlinks_neither_multiply_nor_relabel_images(tmp_path, caplog, link, target, skipped):
    import logging
    import os
    train = linked_folder(tmp_path)
    (train / link).parent.mkdir(parents=True, exist_ok=True)
    os.symlink(target, train / link)
    os.symlink(tmp_path / "outside" / "more", train / "coffee" / "extra")  # a real extra directory: followed
    os.symlink(tmp_path / "outside" / "more", train / "coffee" / "extra_again")  # ... once
    with caplog.at_level(logging.WARNING, logger="crossmae"):
        ds = SafeImageFolder(train)
    files = sorted((os.path.relpath(p, train), ds.classes[t]) for p, t in ds.samples)
    expected = sorted([(f"astronaut/{i}.png", "astronaut") for i in range(3)]
                      + [(f"coffee/{i}.png", "coffee") for i in range(3)]
                      + [(f"coffee/extra/{i}.png", "coffee") for i in range(2)])
    assert files == expected
    assert "skipped 2 linked directories" in caplog.text and skipped in caplog.text and "extra_again" in caplog.text


def test_a_folder_without_links_lists_the_same_samples_as_torchvision(tmp_path):
    from torchvision.datasets import ImageFolder
    image_folder(tmp_path / "a" / "x", n_per_class=2, classes=("p", "q"))
    image_folder(tmp_path / "b", n_per_class=3, classes=("r",))
    assert SafeImageFolder(tmp_path).samples == ImageFolder(str(tmp_path)).samples
