"""iNaturalist 2019 and Places365 on their original on-disk layouts, through torchvision's classes
(never downloading), plus any ImageFolder tree. Every builder takes (data config, split, transform)
and returns a dataset with a ``classes`` list, which crossmae.finetune checks against nb_classes.

iNaturalist 2019 (torchvision ``INaturalist(version="2019")``)::

    <root>/2019/<super category>/<category id>/<image>.jpg   # the train_val2019 archive, renamed 2019
    <root>/train2019.json  <root>/val2019.json                # the competition's annotation files

torchvision indexes every image of the train_val2019 folder, train and val together; the split is
the annotation file's image list (file names ``train_val2019/<super>/<id>/<image>.jpg``, category id =
the folder number, 1010 categories).

Places365 (torchvision ``Places365``)::

    <root>/categories_places365.txt  <root>/places365_train_standard.txt  <root>/places365_val.txt
    <root>/data_256_standard/ (or the archive's data_256/) a/airfield/00000001.jpg ...
    <root>/val_256/Places365_val_00000001.jpg ...
    (data_large_standard or data_large, val_large for the full-resolution images: data.small=false)

Both read images with :func:`crossmae.data.image.load_rgb` and skip unreadable ones (logged, counted)
as the ImageFolder does (:class:`crossmae.data.folder.SkipsUnreadable`).
"""
from __future__ import annotations

import os
from pathlib import Path

import torch
from torchvision.datasets import INaturalist, Places365
from torchvision.datasets.utils import check_integrity

from crossmae.classification.data import imagefolder_dataset
from crossmae.data.folder import SkipsUnreadable
from crossmae.data.image import load_rgb
from crossmae.userfiles import parse_json

NUM_CLASSES = {"inat2019": 1010, "places365": 365}


class INat2019(SkipsUnreadable, torch.utils.data.Dataset):
    """One split of iNaturalist 2019: the images listed in ``<root>/<split>2019.json``, labelled with
    the category folder torchvision's INaturalist indexes them under."""

    def __init__(self, root: str | Path, split: str, transform=None):
        root = Path(root).expanduser()
        if split not in ("train", "val"):
            raise ValueError(f"iNat2019 split must be train or val, got {split!r}")
        images_dir = root / "2019"
        if not images_dir.is_dir() or not any(images_dir.iterdir()):
            hint = (f"; found {root / 'train_val2019'}: rename or symlink it to {images_dir} (torchvision's name)"
                    if (root / "train_val2019").is_dir() else "")
            raise FileNotFoundError(f"iNat2019 images not found: expected {images_dir}/<super>/<id>/*.jpg{hint}")
        ann = root / f"{split}2019.json"
        if not ann.is_file():
            raise FileNotFoundError(f"iNat2019 split {split!r}: annotation file {ann} not found (from the "
                                    f"competition's {split}2019.json.tar.gz)")
        inat = INaturalist(str(root), version="2019", download=False)
        self.classes = inat.all_categories  # index = category id, e.g. 'Plants/400'
        self.transform = transform
        self.root = root
        self.loader = load_rgb
        self.samples = self._read_split(ann, images_dir)
        self._init_skips()

    def _read_split(self, ann: Path, images_dir: Path) -> list[tuple[str, int]]:
        try:
            data = parse_json(ann.read_text())
        except (ValueError, UnicodeDecodeError) as e:  # bad JSON, or nested deeper than any iNat file
            raise ValueError(f"{ann} is not valid JSON: {e}") from e
        try:
            label = {a["image_id"]: a["category_id"] for a in data["annotations"]}
            images = [(im["id"], im["file_name"]) for im in data["images"]]
        except (KeyError, TypeError) as e:
            raise ValueError(f"{ann} is not an iNat2019 annotation file (COCO style images/annotations): {e}") from e
        for a in data["annotations"]:
            if not isinstance(a["category_id"], int) or isinstance(a["category_id"], bool):
                raise ValueError(f"{ann}: annotation {a.get('id', '?')}: category_id {a['category_id']!r} is not "
                                 f"an integer")
        for image_id, file_name in images:
            if not isinstance(file_name, str):
                raise ValueError(f"{ann}: image {image_id}: file_name {file_name!r} is not a path")
        samples, bad = [], []
        for image_id, file_name in images:
            parts = Path(file_name).parts  # train_val2019/<super>/<id>/<file>
            rel = Path(*parts[1:]) if len(parts) == 4 else Path(file_name)
            cat = label.get(image_id)
            if cat is None or not 0 <= cat < len(self.classes) or str(rel.parent) != self.classes[cat]:
                bad.append(file_name)
                continue
            samples.append((str(images_dir / rel), cat))
        if bad:
            raise ValueError(f"{ann}: {len(bad)} images without a label or outside their category folder "
                             f"(e.g. {bad[:3]}); is the annotation file from iNat 2019?")
        if not samples:
            raise ValueError(f"{ann} lists no images")
        missing = [p for p, _ in samples[:1000] if not os.path.isfile(p)]
        if missing:
            raise FileNotFoundError(f"{ann} lists images that are not on disk, e.g. {missing[:3]}")
        return samples

    @property
    def targets(self) -> list[int]:
        return [t for _, t in self.samples]

    def __len__(self) -> int:
        return len(self.samples)


class Places365Local(SkipsUnreadable, Places365):
    """torchvision's Places365 on files already on disk: a missing file is a FileNotFoundError naming it,
    md5 checks are optional (fake or re-listed file lists), and the image folders may keep the archives'
    names (data_256, data_large) as well as torchvision's (data_256_standard, ...)."""

    def __init__(self, root: str | Path, split: str, small: bool = True, transform=None, verify_md5: bool = True):
        self.verify_md5 = verify_md5
        super().__init__(str(Path(root).expanduser()), split=split, small=small, download=False, transform=transform,
                         loader=load_rgb)
        self._init_skips()
        if not os.path.isdir(self.images_dir):
            raise FileNotFoundError(f"Places365 {split} images not found: expected {self.images_dir}")
        first = self.imgs[0][0] if self.imgs else None
        if first is None or not os.path.isfile(first):
            raise FileNotFoundError(f"Places365 {split}: first listed image {first} is not on disk")

    def sample_list(self) -> list:
        return self.imgs

    # torchvision's parsers, checked line by line: a malformed line is a ValueError naming the file and the
    # line, not an unpacking error, and every image has a class index in range (not None or 365)
    def load_categories(self, download: bool = False) -> tuple[list[str], dict[str, int]]:
        file = self._meta_file(self._CATEGORIES_META, download)
        class_to_idx = dict(self._parse_line(file, n, line) for n, line in enumerate(_lines(file), 1))
        if sorted(class_to_idx.values()) != list(range(len(class_to_idx))):
            raise ValueError(f"{file}: class indices must be 0..{len(class_to_idx) - 1} once each")
        return sorted(class_to_idx), class_to_idx

    def load_file_list(self, download: bool = False) -> tuple[list[tuple[str, int]], list[int]]:
        file = self._meta_file(self._FILE_LIST_META[self.split], download)
        images = []
        for n, line in enumerate(_lines(file), 1):
            image, idx = self._parse_line(file, n, line)
            if idx >= len(self.classes):
                raise ValueError(f"{file}, line {n}: class index {idx} is not in 0..{len(self.classes) - 1}")
            images.append((os.path.join(self.images_dir, image.lstrip("/").replace("/", os.sep)), idx))
        return images, [t for _, t in images]

    def _meta_file(self, meta: tuple[str, str], download: bool) -> str:
        file, md5 = meta
        file = os.path.join(self.root, file)
        self._check_integrity(file, md5, download)
        return file

    @staticmethod
    def _parse_line(file: str, n: int, line: str) -> tuple[str, int]:
        parts = line.split()
        if len(parts) != 2 or not parts[1].isdigit():
            raise ValueError(f"{file}, line {n}: expected '<image> <class index>' (or '<class> <index>'), "
                             f"got {line.strip()[:100]!r}")
        return parts[0], int(parts[1])

    @property
    def images_dir(self) -> str:
        tv_name = super().images_dir
        archive_name = tv_name.rsplit("_", 1)[0] if self.split.startswith("train") else tv_name
        return archive_name if not os.path.isdir(tv_name) and os.path.isdir(archive_name) else tv_name

    def _check_integrity(self, file: str, md5: str, download: bool) -> bool:
        if not os.path.isfile(file):
            raise FileNotFoundError(f"Places365: {file} not found (from filelist_places365-standard.tar)")
        if self.verify_md5 and not check_integrity(file, md5=md5):
            raise ValueError(f"Places365: {file} does not match its published md5 (data.verify_md5=false skips "
                             f"the check)")
        return True


def _lines(file: str) -> list[str]:
    """The non-blank lines of a text file."""
    with open(file) as f:
        return [line for line in f if line.strip()]


def inat2019_dataset(data_cfg, split: str, transform) -> INat2019:
    return INat2019(data_cfg.path, split, transform)


def places365_dataset(data_cfg, split: str, transform) -> Places365Local:
    tv_split = f"train-{data_cfg.variant}" if split == "train" else "val"
    return Places365Local(data_cfg.path, tv_split, small=data_cfg.small, transform=transform,
                          verify_md5=data_cfg.verify_md5)


BUILDERS = {"inat2019": inat2019_dataset, "places365": places365_dataset, "imagefolder": imagefolder_dataset}


def dataset_fn(data_cfg):
    """The builder for ``data.dataset``; checks nb_classes against the dataset's known size up front."""
    name = data_cfg.dataset
    if name not in BUILDERS:
        raise ValueError(f"data.dataset must be one of {sorted(BUILDERS)}, got {name!r}")
    expected = NUM_CLASSES.get(name)
    if expected is not None and data_cfg.nb_classes != expected:
        raise ValueError(f"data.dataset={name} has {expected} classes, but data.nb_classes={data_cfg.nb_classes}")
    if name == "places365" and data_cfg.variant not in ("standard", "challenge"):
        raise ValueError(f"data.variant must be standard or challenge, got {data_cfg.variant!r}")
    return BUILDERS[name]
