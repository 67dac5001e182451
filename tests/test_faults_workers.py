"""Errors raised inside DataLoader worker processes: torch re-raises them in the main process by calling
``type(text)`` with one string (the worker's formatted traceback), falling back to RuntimeError when the
type cannot be built that way. Every exception class of the toolkit must come back with its type and its
own message (the CLI prints one line), and an unreadable validation image stops fine-tuning and linear
probing before training, in one line."""
from __future__ import annotations

import pickle
import re
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from crossmae.cli import main as cli
from crossmae.cli import report_errors
from tiny import REPO

PACKAGES = ("crossmae", "det", "seg", "cls_transfer")
CLASS_LINE = re.compile(r"^class (\w+)\(([^)]*)\):", re.M)


def toolkit_exception_classes() -> list[type]:
    """Every exception class defined in the toolkit's packages, found from their source (so a new one is
    covered without editing this test)."""
    import importlib
    found = []
    for package in PACKAGES:
        for path in sorted((REPO / package).rglob("*.py")):
            text = path.read_text()
            names = [n for n, bases in CLASS_LINE.findall(text) if re.search(r"Error|Exception|Busy", bases)]
            if not names:
                continue
            module = importlib.import_module(".".join(path.relative_to(REPO).with_suffix("").parts))
            found += [c for c in (getattr(module, n) for n in names) if issubclass(c, BaseException)]
    return found


CLASSES = toolkit_exception_classes()


class Raises(torch.utils.data.Dataset):
    def __init__(self, make):
        self.make = make

    def __len__(self):
        return 2

    def __getitem__(self, i):
        raise self.make()


def raised_through_workers(make) -> BaseException:
    loader = torch.utils.data.DataLoader(Raises(make), batch_size=1, num_workers=1,
                                         multiprocessing_context="fork")
    with pytest.raises(BaseException) as info:
        next(iter(loader))
    return info.value


def test_the_toolkit_exception_classes_are_found():
    names = {c.__name__ for c in CLASSES}
    assert {"ImageReadError", "UnreadableImageError", "AnnotationError", "SegDataError", "ConfigError",
            "CheckpointError"} <= names


# raised where a DataLoader worker runs (datasets, readers, the config a dataset checks): the exception
# itself must come back as it was raised; the others (raised in the main process only) at least print as
# one line when they do come through a worker
DATA_SIDE = ("crossmae.data.", "crossmae.config", "det.coco", "seg.data", "cls_transfer.")


@pytest.mark.parametrize("cls", CLASSES, ids=lambda c: c.__name__)
def test_every_exception_class_survives_a_worker_with_its_type_and_message(cls, capsys):
    message = f"{cls.__name__} about /data/val/a/1.png (annotation 7)"
    error = raised_through_workers(lambda: cls(message))
    assert type(error) is cls
    if cls.__module__.startswith(DATA_SIDE):
        assert str(error) == message
        copy = pickle.loads(pickle.dumps(error))  # spawn workers and multiprocessing pickle them
        assert type(copy) is cls and str(copy) == message

    def fail():
        raise error

    assert report_errors("prog", fail) in (1, 2)
    assert capsys.readouterr().err == f"prog: error: {message}\n"


def test_data_side_classes_are_found():
    assert {c.__name__ for c in CLASSES if c.__module__.startswith(DATA_SIDE)} >= {
        "ImageReadError", "UnreadableImageError", "AnnotationError", "SegDataError", "ConfigError"}


def test_image_read_error_keeps_the_path_through_a_worker_and_pickle():
    from crossmae.data.image import ImageReadError
    error = raised_through_workers(lambda: ImageReadError.of("/d/val/a/1.png", OSError("truncated")))
    assert type(error) is ImageReadError
    assert str(error) == "unreadable image /d/val/a/1.png (OSError: truncated)"
    copy = pickle.loads(pickle.dumps(ImageReadError.of("/d/x.png", OSError("bad"), "(image_id 3)")))
    assert copy.path == "/d/x.png" and str(copy) == "unreadable image /d/x.png (image_id 3) (OSError: bad)"


def test_a_builtin_error_from_a_worker_is_printed_as_its_own_line(capsys):
    error = raised_through_workers(lambda: OSError("10 unreadable images in a row from index 0 in /data"))

    def fail():
        raise error

    assert report_errors("prog", fail) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "10 unreadable images in a row from index 0 in /data" in err
    assert "Traceback" not in err


# ------------------------------------------------------------------ the CLI, 2 workers as in the demo configs

TINY_PRETRAIN = ["model.img_size=16", "model.patch_size=4", "model.embed_dim=32", "model.depth=1",
                 "model.num_heads=2", "model.decoder_embed_dim=16", "model.decoder_depth=1",
                 "model.decoder_num_heads=2", "data.num_workers=0", "batch_size=4", "epochs=1", "num_vis=0"]


def image_folder(root: Path, n_per_class=4, size=20, classes=("a", "b")) -> Path:
    rng = np.random.default_rng(0)
    for c in classes:
        (root / c).mkdir(parents=True, exist_ok=True)
        for i in range(n_per_class):
            Image.fromarray(rng.integers(0, 256, (size, size, 3), dtype=np.uint8)).save(root / c / f"{i}.png")
    return root


@pytest.fixture(scope="module")
def pretrained(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("pre")
    image_folder(root / "data")
    assert cli(["pretrain", f"data.path={root / 'data'}", f"output_dir={root / 'out'}", *TINY_PRETRAIN]) == 0
    return root / "out" / "checkpoint.pth"


def truncated_png(path: Path) -> None:
    """A PNG whose header reads but whose pixel data stops early (decoding fails)."""
    data = path.read_bytes()
    path.write_bytes(data[:len(data) // 2])


@pytest.mark.parametrize("command", ["finetune", "linprobe"])
@pytest.mark.parametrize("damage", ["garbage", "truncated"])
def test_an_unreadable_val_image_is_one_line_with_two_workers(command, damage, pretrained, tmp_path, capsys):
    data = tmp_path / "cls"
    image_folder(data / "train")
    image_folder(data / "val")
    bad = data / "val" / "b" / "2.png"
    if damage == "garbage":
        bad.write_bytes(b"not an image")
    else:
        truncated_png(bad)
    out = tmp_path / "run"
    args = [command, "--config", str(REPO / "configs" / command / "demo.yaml"), f"pretrained={pretrained}",
            f"data.path={data}", "data.nb_classes=2", "data.num_workers=2", "batch_size=4", "eval_batch_size=4",
            "epochs=1", "optim.warmup_epochs=0", "device=cpu", f"output_dir={out}"]
    assert cli(args) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1].startswith(f"crossmae {command}: error: unreadable image {bad}")
    assert "Traceback" not in "\n".join(err) and "Caught" not in err[-1]
    if damage == "garbage":  # found by the header check, before the first training step
        log = out / "train_log.jsonl"
        assert not log.exists() or log.read_text() == ""
