"""ImageFolder data (the ImageNet layout) that survives corrupt files, and the pretraining transform."""
from __future__ import annotations

import functools
import itertools
import logging
import os
from pathlib import Path

import torch
from torchvision import datasets, transforms

from .image import UNREADABLE, ImageReadError, header_sizes, load_rgb
from .skipping import CountsSkips, first_readable

logger = logging.getLogger("crossmae")

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def pretrain_transform(img_size: int, min_scale: float = 0.2) -> transforms.Compose:
    """MAE/CrossMAE pretraining augmentation: RandomResizedCrop(0.2-1, bicubic) + flip + normalise."""
    return transforms.Compose([
        transforms.RandomResizedCrop(img_size, scale=(min_scale, 1.0),
                                     interpolation=transforms.InterpolationMode.BICUBIC),
        transforms.RandomHorizontalFlip(),
        transforms.ToTensor(),
        transforms.Normalize(IMAGENET_MEAN, IMAGENET_STD),
    ])


def split_dir(root: str | Path, split: str) -> Path:
    """``<root>/<split>`` if it exists (the ImageNet layout), else ``root`` itself for split 'train'."""
    root = Path(root).expanduser()
    if not root.is_dir():
        raise FileNotFoundError(f"data path {root} does not exist or is not a directory")
    if (root / split).is_dir():
        return root / split
    if split == "train":
        return root
    raise FileNotFoundError(f"split {split!r} not found: expected a directory {root / split}")


class SkipsUnreadable(CountsSkips):
    """Mixin for datasets of ``(path, target)`` samples: an unreadable image is logged with its path and
    replaced by the next readable one (:mod:`crossmae.data.skipping`), so a corrupt file cannot stop a
    multi-day run. The class sets ``loader`` (normally :func:`crossmae.data.image.load_rgb`),
    ``transform``/``target_transform`` and calls ``_init_skips()``; ``sample_list()`` names its samples.
    ``skip_unreadable = False`` (evaluation sets, where a substitute would change the score) makes an
    unreadable image an :class:`ImageReadError` naming it instead."""

    skip_unreadable = True

    def sample_list(self) -> list:
        return self.samples

    def read(self, path: str, count: bool = True):
        """The decoded image, or None after logging (and counting) an unreadable one."""
        try:
            return self.loader(path)  # decodes fully, so broken files fail here
        except UNREADABLE as e:
            self.unreadable(path, e, count)
            return None

    def load_sample(self, path: str):
        """What one sample's file becomes before ``transform``; what it raises for a bad file is skipped."""
        return self.loader(path)

    def unreadable(self, path: str, e: BaseException, count: bool = True) -> None:
        """Log (and count) an unreadable image; where no substitute is allowed, raise an ImageReadError."""
        self.skip(ImageReadError.of(path, e), self.skip_unreadable, count=count, cause=e)

    def readable_images(self, n: int, max_tries: int = 100) -> list:
        """Up to ``n`` decoded images spread over the set (ImageFolder sorts by class), unreadable ones
        replaced by later files; raises a ValueError when none of the files tried can be read, so a
        folder of broken files fails before training rather than after ``MAX_SKIPS_IN_A_ROW`` in an epoch."""
        samples = self.sample_list()
        step = max(1, len(samples) // max(n, 1))
        spread = list(range(0, len(samples), step))[:n]
        taken = set(spread)
        order = spread + list(itertools.islice((i for i in range(len(samples)) if i not in taken), max_tries))
        images, tried = [], 0
        for i in order:
            if len(images) == n:
                break
            tried += 1
            img = self.read(samples[i][0], count=False)  # training counts its own skips
            if img is not None:
                images.append(img)
        if not images:
            raise ValueError(f"no readable image among the {tried} files tried of {len(samples)} in "
                             f"{getattr(self, 'root', '?')} (see the warnings above for why each failed)")
        return images

    def check_headers(self, workers: int = 8) -> None:
        """Open every sample's header (format, size, pixel limit; no decode), so that an evaluation set's
        unreadable file stops the run before training, not after an epoch: an :class:`ImageReadError`
        naming the first such file and the count. Files whose data is broken past the header still fail
        when they are read (a full decode of a large set would cost minutes at every start)."""
        paths = [s[0] for s in self.sample_list()]
        problems = [(p, e) for p, e in zip(paths, header_sizes(paths, workers)) if isinstance(e, BaseException)]
        if problems:
            path, e = problems[0]
            raise ImageReadError.of(path, e, f"(one of {len(problems)} unreadable of the {len(paths)} images in "
                                    f"{getattr(self, 'root', '?')})" if len(problems) > 1 else "")

    def __getitem__(self, index: int):
        samples = self.sample_list()
        img, target = first_readable(lambda i: (self.load_sample(samples[i][0]), samples[i][1]), index,
                                     len(samples), lambda i, e: self.unreadable(samples[i][0], e),
                                     getattr(self, "root", "?"))
        # transform errors are bugs, not bad files: they propagate
        if getattr(self, "transform", None) is not None:
            img = self.transform(img)
        if getattr(self, "target_transform", None) is not None:
            target = self.target_transform(target)
        return img, target


def _dir_id(path: str) -> tuple[int, int]:
    st = os.stat(path)  # follows the link
    return st.st_dev, st.st_ino


def walk_class(class_dir: str, visited: set, class_ids: set, class_reals: list[str],
               skipped: list[str]) -> list[tuple[str, list[str]]]:
    """(directory, file names) for ``class_dir`` and every directory under it. Directory symlinks are
    followed, but each real directory is entered once over the whole dataset (``visited``: (st_dev, st_ino)),
    and never a class directory (``class_ids``), one inside another class's directory or one holding a
    class directory (an ancestor such as ``..``, the split root; ``class_reals``: their real paths): a loop
    would list the same images up to the 40 levels the OS allows, and another class's images would carry
    this class's label. What is not entered is appended to ``skipped``."""
    own = os.path.realpath(class_dir)
    walked = []
    for root, dirs, files in os.walk(class_dir, followlinks=True):
        walked.append((root, files))
        entered = []
        for d in dirs:
            path = os.path.join(root, d)
            try:
                ident, real = _dir_id(path), os.path.realpath(path)
            except OSError as e:
                skipped.append(f"{path} ({e.strerror})")
                continue
            elsewhere = any(c != own and real.startswith(c + os.sep) for c in class_reals)
            holds_a_class = any(c.startswith(real.rstrip(os.sep) + os.sep) for c in class_reals)
            if ident in visited or ident in class_ids or elsewhere or holds_a_class:
                skipped.append(f"{path} -> {real}")
                continue
            visited.add(ident)
            entered.append(d)
        dirs[:] = entered
    return walked


class SafeImageFolder(SkipsUnreadable, datasets.ImageFolder):
    """ImageFolder that skips unreadable images (:class:`SkipsUnreadable`). Images are read by
    :func:`crossmae.data.image.load_rgb`: 16-bit images are scaled to 8 bit, and images above
    ``max_pixels`` (default: PIL's limit) or of an unsupported depth count as unreadable."""

    def __init__(self, root: str | Path, transform=None, max_pixels: int | None = None):
        root = Path(root)
        try:
            super().__init__(str(root), transform=transform, loader=functools.partial(load_rgb, max_pixels=max_pixels))
        except FileNotFoundError as e:
            raise FileNotFoundError(f"no images found under {root}: expected <class>/<image> subfolders "
                                    f"({e})") from e
        self._init_skips()

    def make_dataset(self, directory: str, class_to_idx: dict[str, int], extensions=None, is_valid_file=None,
                     allow_empty: bool = False) -> list[tuple[str, int]]:
        """torchvision's listing (the same samples in the same order) with directory symlinks followed at
        most once and never into another class (:func:`walk_class`); what was skipped is logged."""
        if is_valid_file is None:
            is_valid_file = functools.partial(datasets.folder.has_file_allowed_extension, extensions=extensions)
        class_dirs = {c: os.path.join(directory, c) for c in class_to_idx if os.path.isdir(os.path.join(directory, c))}
        ids = {c: _dir_id(d) for c, d in class_dirs.items()}
        reals = {c: os.path.realpath(d) for c, d in class_dirs.items()}
        class_ids, class_reals = set(ids.values()), list(reals.values())
        visited, skipped, samples = set(), [], []
        for c in sorted(class_dirs):
            if ids[c] in visited:  # a class directory that is a link to another one
                skipped.append(f"{class_dirs[c]} -> {reals[c]}")
                continue
            visited.add(ids[c])
            for root, files in sorted(walk_class(class_dirs[c], visited, class_ids, class_reals, skipped)):
                paths = [os.path.join(root, f) for f in sorted(files)]
                samples += [(path, class_to_idx[c]) for path in paths if is_valid_file(path)]
        if skipped:
            logger.warning("%s: skipped %d linked directories (a directory is listed once, and never one holding "
                           "or inside another class), e.g. %s", directory, len(skipped), "; ".join(skipped[:3]))
        found = {t for _, t in samples}
        empty = sorted(c for c, i in class_to_idx.items() if i not in found)
        if empty and not allow_empty:
            raise FileNotFoundError(f"found no valid file for the classes {', '.join(empty)}"
                                    + (f" (extensions {', '.join(extensions)})" if extensions else ""))
        return samples


def build_loader(dataset, batch_size: int, num_workers: int, rank: int, world_size: int, seed: int,
                 shuffle: bool = True, drop_last: bool = True, pin_memory: bool = False, collate_fn=None,
                 persistent_workers: bool = False):
    """DataLoader over a DistributedSampler (also in one process, so the order is a function of
    (seed, epoch) whatever the world size). ``pin_memory`` speeds up host-to-GPU copies (pass it on
    CUDA). ``persistent_workers`` saves restarting the workers each epoch (seconds, against epochs of
    minutes) but is off by default: persistent workers carry their RNG state across epochs, so a run
    resumed at an epoch boundary would no longer draw the same augmentations as one that never stopped."""
    sampler = torch.utils.data.DistributedSampler(dataset, num_replicas=world_size, rank=rank, shuffle=shuffle,
                                                  seed=seed, drop_last=drop_last)
    return torch.utils.data.DataLoader(dataset, batch_size=batch_size, sampler=sampler, num_workers=num_workers,
                                       pin_memory=pin_memory, drop_last=drop_last, collate_fn=collate_fn,
                                       persistent_workers=persistent_workers and num_workers > 0)
