"""ADE20K (SceneParsing, ``ADEChallengeData2016``) and the samplers that turn an iteration budget into epochs.

Layout (the official zip, unchanged)::

    <root>/images/training/ADE_train_00000001.jpg        <root>/annotations/training/ADE_train_00000001.png
    <root>/images/validation/ADE_val_00000001.jpg        <root>/annotations/validation/ADE_val_00000001.png

Annotation PNGs hold 0 (``other``/unlabelled) and 1..150. With ``reduce_zero_label`` (the ADE20K
convention), 0 becomes the ignore index 255 and k becomes k - 1, so the model predicts 150 classes.
Missing annotations are found when the dataset is built; image/label size mismatches are found
then too (``check_sizes``, reading only the file headers), and so are label values outside the class
range: every label map is decoded once and its set of values cached (``label_values_cache``, keyed by
each file's size and mtime), so a re-run scans only new or changed files (measured: 2000 maps of
256x256 px scanned in ~1.6 s on 2 cores, ~0.1 s from the cache). The same value check still runs
when a file is read, for files changed after the scan. Every error names the file. An evaluation set
stops at the first bad pair (with the count); a training set (``bad_pairs="skip"``) drops them with a
warning naming the first, and skips (logs, counts) one found bad when read.
Images are decoded by :func:`crossmae.data.image.load_rgb` (16-bit images scaled, pixel limit); an
unreadable one is skipped and counted in training (``skip_unreadable``, :mod:`crossmae.data.skipping`) and
stops an evaluation.
"""
from __future__ import annotations

import hashlib
import json
import logging
import os
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch.utils.data import Dataset, Sampler

from crossmae.data.image import UNREADABLE, ImageReadError, header_sizes, load_rgb
from crossmae.data.shards import ShardSampler, build_eval_loader  # noqa: F401 (ShardSampler: re-exported)
from crossmae.data.skipping import CountsSkips, first_readable
from crossmae.errors import WorkerSafe
from crossmae.userfiles import parse_json

from .transforms import IGNORE_INDEX

logger = logging.getLogger("crossmae")


IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png")

ADE20K_CLASSES = (
    "wall", "building", "sky", "floor", "tree", "ceiling", "road", "bed", "windowpane", "grass", "cabinet",
    "sidewalk", "person", "earth", "door", "table", "mountain", "plant", "curtain", "chair", "car", "water",
    "painting", "sofa", "shelf", "house", "sea", "mirror", "rug", "field", "armchair", "seat", "fence", "desk",
    "rock", "wardrobe", "lamp", "bathtub", "railing", "cushion", "base", "box", "column", "signboard",
    "chest of drawers", "counter", "sand", "sink", "skyscraper", "fireplace", "refrigerator", "grandstand",
    "path", "stairs", "runway", "case", "pool table", "pillow", "screen door", "stairway", "river", "bridge",
    "bookcase", "blind", "coffee table", "toilet", "flower", "book", "hill", "bench", "countertop", "stove",
    "palm", "kitchen island", "computer", "swivel chair", "boat", "bar", "arcade machine", "hovel", "bus",
    "towel", "light", "truck", "tower", "chandelier", "awning", "streetlight", "booth", "television receiver",
    "airplane", "dirt track", "apparel", "pole", "land", "bannister", "escalator", "ottoman", "bottle",
    "buffet", "poster", "stage", "van", "ship", "fountain", "conveyer belt", "canopy", "washer", "plaything",
    "swimming pool", "stool", "barrel", "basket", "waterfall", "tent", "bag", "minibike", "cradle", "oven",
    "ball", "food", "step", "tank", "trade name", "microwave", "pot", "animal", "bicycle", "lake",
    "dishwasher", "screen", "blanket", "sculpture", "hood", "sconce", "vase", "traffic light", "tray",
    "ashcan", "fan", "pier", "crt screen", "plate", "monitor", "bulletin board", "shower", "radiator", "glass",
    "clock", "flag")


class SegDataError(WorkerSafe, ValueError):
    pass


def reduce_zero_label(label: np.ndarray) -> np.ndarray:
    """0 -> 255 (ignore), k -> k - 1; a raw 255 stays ignored (mmseg's rule)."""
    out = label.astype(np.int64) - 1
    out[label == 0] = IGNORE_INDEX
    out[label == 255] = IGNORE_INDEX
    return out


def list_pairs(root: str | Path, split: str) -> list[tuple[Path, Path]]:
    """(image, annotation) paths of a split; raises naming what is missing."""
    root = Path(root).expanduser()
    img_dir, ann_dir = root / "images" / split, root / "annotations" / split
    for d in (img_dir, ann_dir):
        if not d.is_dir():
            raise FileNotFoundError(f"ADE20K split {split!r}: directory {d} not found (expected "
                                    f"<root>/images/{split} and <root>/annotations/{split}, root={root})")
    images = sorted(p for p in img_dir.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
    if not images:
        raise FileNotFoundError(f"no images ({', '.join(IMAGE_SUFFIXES)}) in {img_dir}")
    pairs = [(p, ann_dir / (p.stem + ".png")) for p in images]
    missing = [a for _, a in pairs if not a.is_file()]
    if missing:
        raise FileNotFoundError(f"{len(missing)} of {len(pairs)} images in {img_dir} have no annotation file, "
                                f"e.g. {missing[0]}" + (f", {missing[1]}" if len(missing) > 1 else ""))
    return pairs


LABEL_MODES = ("L", "P", "I", "I;16")


def read_label(path: Path) -> np.ndarray:
    """A label map's raw class indices; a SegDataError naming it unless it is single-channel."""
    with Image.open(path) as an:
        if an.mode not in LABEL_MODES:
            raise SegDataError(f"annotation {path} has mode {an.mode}: expected a single-channel PNG of "
                               f"class indices")
        return np.asarray(an)


def unreadable_annotation(path: Path, e: BaseException) -> SegDataError:
    return SegDataError(f"annotation {path} cannot be read ({type(e).__name__}: {e})")


def label_values(path: Path) -> list[int]:
    """The distinct values of a label map (one decode; bincount for 8-bit maps)."""
    try:
        a = read_label(path)
    except SegDataError:
        raise
    except UNREADABLE as e:
        raise unreadable_annotation(path, e) from e
    if a.dtype == np.uint8:
        return np.flatnonzero(np.bincount(a.ravel(), minlength=256)).tolist()
    return np.unique(a).tolist()


def default_cache_dir() -> Path:
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "crossmae"


def _values_or_error(path: Path) -> list[int] | SegDataError:
    try:
        return label_values(path)
    except SegDataError as e:
        return e


def scan_label_values(paths: list[Path], cache_file: Path | None,
                      workers: int = 4) -> dict[str, list[int] | SegDataError]:
    """{path: distinct values, or the SegDataError saying why the map cannot be read} for every label map,
    reusing ``cache_file`` entries whose (size, mtime) still match; the cache is rewritten (atomically)
    when anything was scanned (errors are not cached). An unwritable cache location only costs the re-scan."""
    cache: dict = {}
    if cache_file is not None and cache_file.is_file():
        try:
            cache = parse_json(cache_file.read_text())
        except (OSError, ValueError):
            cache = {}
    stats = {str(p): os.stat(p) for p in paths}
    key = {k: [st.st_size, st.st_mtime_ns] for k, st in stats.items()}
    todo = [k for k in key if not (k in cache and cache[k][:2] == key[k])]
    with ThreadPoolExecutor(max(1, workers)) as pool:  # PNG decoding releases the GIL
        scanned = dict(zip(todo, pool.map(lambda k: _values_or_error(Path(k)), todo)))
    errors = {k: v for k, v in scanned.items() if isinstance(v, SegDataError)}
    cache.update({k: key[k] + [v] for k, v in scanned.items() if k not in errors})
    if todo and cache_file is not None:
        try:
            cache_file.parent.mkdir(parents=True, exist_ok=True)
            tmp = cache_file.with_name(f".{cache_file.name}.{os.getpid()}.tmp")
            tmp.write_text(json.dumps({k: cache[k] for k in key if k in cache}))
            os.replace(tmp, cache_file)
        except OSError:
            pass
    return {k: errors[k] if k in errors else cache[k][2] for k in key}


def check_label_range(values, num_classes: int, reduce_zero: bool) -> list[int]:
    """The raw values of a label map that are neither a class nor ignored."""
    if reduce_zero:  # 0 and 255 are ignored, 1..num_classes are classes
        return [v for v in values if v not in (0, IGNORE_INDEX) and not 1 <= v <= num_classes]
    return [v for v in values if v != IGNORE_INDEX and not 0 <= v < num_classes]


class ADE20KDataset(CountsSkips, Dataset):
    """``__getitem__`` -> ``transform(img uint8 [H, W, 3], label int64 [H, W])``; (image, label) if no transform.

    ``num_classes`` is the number of predicted classes (150 for ADE20K); label values must lie in
    [0, num_classes) or be the ignore index after ``reduce_zero_label``. ``check_labels`` (default:
    as ``check_sizes``) validates every label map's values when the dataset is built (cached scan,
    ``label_values_cache``: a JSON file; default ``<root>/annotations/.crossmae_label_values_<split>.json``
    where writable, else under ``$XDG_CACHE_HOME/crossmae`` or ``~/.cache/crossmae``)."""

    def __init__(self, root: str | Path, split: str = "training", transform=None, num_classes: int = 150,
                 reduce_zero_label: bool = True, check_sizes: bool = True, class_names=None,
                 check_labels: bool | None = None, label_values_cache: str | Path | None = None,
                 skip_unreadable: bool = False, bad_pairs: str = "error"):
        self.root = Path(root).expanduser()
        self.split = split
        self.transform = transform
        self.num_classes = num_classes
        self.reduce_zero_label = reduce_zero_label
        self.pairs = list_pairs(self.root, split)
        self.skip_unreadable = skip_unreadable  # training: skip + count an undecodable image; evaluation: stop
        if bad_pairs not in ("error", "skip"):
            raise ValueError(f"bad_pairs must be 'error' or 'skip', got {bad_pairs!r}")
        self.bad_pairs = bad_pairs  # training: drop (count) a pair whose label map is wrong; evaluation: stop
        self._init_skips()
        if class_names is None:
            class_names = ADE20K_CLASSES if num_classes == len(ADE20K_CLASSES) else [str(i) for i in range(num_classes)]
        if len(class_names) != num_classes:
            raise ValueError(f"{len(class_names)} class names for {num_classes} classes")
        self.class_names = list(class_names)
        problems = self._size_problems() if check_sizes else {}
        if problems and bad_pairs == "error":  # before the (longer) label scan
            self._raise(problems)
        if check_sizes if check_labels is None else check_labels:
            problems.update(self._label_problems(label_values_cache))
        self.dropped = self._drop(problems)

    def _size_problems(self) -> dict[int, SegDataError]:
        """{pair index: what is wrong} for label maps whose size differs from their image's or that cannot
        be read, from the file headers (threaded, no decode; the pixel limit applies). An unreadable image
        is an ImageReadError unless ``skip_unreadable`` (then skipped, logged and counted, when read)."""
        img_sizes = header_sizes([img for img, _ in self.pairs])
        ann_sizes = header_sizes([ann for _, ann in self.pairs])
        problems = {}
        for i, ((img, ann), img_wh, ann_wh) in enumerate(zip(self.pairs, img_sizes, ann_sizes)):
            if isinstance(img_wh, BaseException):
                if not self.skip_unreadable:
                    raise ImageReadError.of(img, img_wh) from img_wh
            elif isinstance(ann_wh, BaseException):
                problems[i] = unreadable_annotation(ann, ann_wh)
            elif img_wh != ann_wh:
                problems[i] = size_mismatch(img_wh, ann_wh, img, ann)
        return problems

    def _label_problems(self, cache_file: str | Path | None = None) -> dict[int, SegDataError]:
        """{pair index: what is wrong} for label maps with values outside the class range or that cannot be
        decoded, from the cached scan of every label map."""
        ann_dir = (self.root / "annotations" / self.split).resolve()
        if cache_file is None:  # beside the annotations if writable, else in the user's cache
            digest = hashlib.sha1(str(ann_dir).encode()).hexdigest()[:16]
            local = ann_dir.parent / f".crossmae_label_values_{self.split}.json"
            user = default_cache_dir() / f"ade20k_label_values_{digest}.json"
            cache_file = next((c for c in (local, user) if c.is_file()),
                              local if os.access(ann_dir.parent, os.W_OK) else user)
        values = scan_label_values([a for _, a in self.pairs], Path(cache_file), workers=min(8, os.cpu_count() or 1))
        problems = {}
        for i, (_, ann) in enumerate(self.pairs):
            found = values[str(ann)]
            if isinstance(found, SegDataError):  # not decodable
                problems[i] = found
                continue
            raw = check_label_range(found, self.num_classes, self.reduce_zero_label)
            if raw:
                problems[i] = SegDataError(f"annotation {ann} has values {raw[:5]} outside the class range "
                                           f"(expected {self._expected()})")
        return problems

    def _raise(self, problems: dict[int, SegDataError]) -> None:
        first = problems[min(problems)]
        raise SegDataError(f"{first}; {len(problems)} of {len(self.pairs)} label maps in "
                           f"{self.root / 'annotations' / self.split} have a problem") from first

    def _drop(self, problems: dict[int, SegDataError]) -> int:
        """Raise on ``problems`` (``bad_pairs="error"``), or drop those pairs with a warning; how many."""
        if not problems:
            return 0
        if self.bad_pairs == "error" or len(problems) == len(self.pairs):
            self._raise(problems)
        logger.warning("%s: skipping %d of %d image/label pairs, e.g. %s", self.root / "annotations" / self.split,
                       len(problems), len(self.pairs), problems[min(problems)])
        self.pairs = [pair for i, pair in enumerate(self.pairs) if i not in problems]
        return len(problems)

    def _expected(self) -> str:
        if self.reduce_zero_label:
            return f"0 = ignore, 1..{self.num_classes}, or 255"
        return f"0..{self.num_classes - 1}, or 255"

    def __len__(self) -> int:
        return len(self.pairs)

    def load(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        """The raw pair: image uint8 [H, W, 3] (RGB), label int64 [H, W] (after reduce_zero_label)."""
        img_path, ann_path = self.pairs[index]
        img = np.asarray(load_rgb(img_path))
        raw_label = read_label(ann_path)
        if img.shape[1::-1] != raw_label.shape[::-1]:
            raise size_mismatch(img.shape[1::-1], raw_label.shape[::-1], img_path, ann_path)
        label = reduce_zero_label(raw_label) if self.reduce_zero_label else raw_label.astype(np.int64)
        bad = (label != IGNORE_INDEX) & ((label < 0) | (label >= self.num_classes))
        if bad.any():
            raw = np.unique(raw_label[bad])
            raise SegDataError(f"annotation {ann_path} has values {raw[:5].tolist()} outside the class range "
                               f"(expected {self._expected()})")
        return torch.from_numpy(img.copy()), torch.from_numpy(label)

    def __getitem__(self, index: int):
        def unreadable(i: int, e: Exception) -> None:
            if isinstance(e, SegDataError):  # a label map changed after the checks
                self.skip(e, self.bad_pairs == "skip")
                return
            pair = " / ".join(map(str, self.pairs[i]))
            self.skip(ImageReadError.of(pair, e), self.skip_unreadable,
                      f"unreadable pair {pair} ({type(e).__name__}: {e})", cause=e)

        img, label = first_readable(self.load, index, len(self.pairs), unreadable, self.root / "images" / self.split)
        if self.transform is not None:
            return self.transform(img, label)
        return img, label


def size_mismatch(img_wh, ann_wh, img_path, ann_path) -> SegDataError:
    return SegDataError(f"annotation {ann_path} is {ann_wh[0]}x{ann_wh[1]} (WxH) but its image {img_path} "
                        f"is {img_wh[0]}x{img_wh[1]}")


class IterationSampler(Sampler[int]):
    """Exactly ``samples_per_rank`` indices per rank per epoch, drawn from back-to-back random
    permutations of the dataset seeded by (seed, epoch) and dealt round-robin to ranks.

    This is how an iteration budget (mmseg's 160k iterations) runs in the epoch-based loop: an
    "epoch" is ``iters_per_epoch`` optimizer steps, whatever the dataset size."""

    def __init__(self, dataset_len: int, samples_per_rank: int, rank: int = 0, world_size: int = 1, seed: int = 0,
                 shuffle: bool = True):
        if dataset_len < 1:
            raise ValueError("empty dataset")
        self.n = dataset_len
        self.samples_per_rank = samples_per_rank
        self.rank, self.world_size = rank, world_size
        self.seed = seed
        self.shuffle = shuffle
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return self.samples_per_rank

    def __iter__(self):
        g = torch.Generator().manual_seed(self.seed * 1_000_003 + self.epoch)
        total = self.samples_per_rank * self.world_size
        chunks = [torch.randperm(self.n, generator=g) if self.shuffle else torch.arange(self.n)
                  for _ in range(-(-total // self.n))]
        stream = torch.cat(chunks)[:total]
        return iter(stream[self.rank::self.world_size].tolist())


def train_loader(dataset, batch_size: int, iters_per_epoch: int, num_workers: int, rank: int, world_size: int,
                 seed: int, pin_memory: bool = False) -> torch.utils.data.DataLoader:
    sampler = IterationSampler(len(dataset), batch_size * iters_per_epoch, rank, world_size, seed)
    return torch.utils.data.DataLoader(dataset, batch_size=batch_size, sampler=sampler, num_workers=num_workers,
                                       pin_memory=pin_memory, drop_last=True, persistent_workers=False)


def eval_loader(dataset, num_workers: int, rank: int, world_size: int) -> torch.utils.data.DataLoader:
    """This rank's shard, one (img, label) pair at a time, unbatched (sizes differ)."""
    return build_eval_loader(dataset, None, num_workers, rank, world_size)
