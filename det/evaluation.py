"""COCO box and mask AP with pycocotools (or faster-coco-eval, when installed and asked for).

Metrics are percentages (0-100): ``bbox_AP``, ``bbox_AP50``, ``bbox_AP75``, ``bbox_APs``, ``bbox_APm``,
``bbox_APl`` and the same with ``segm_``. A size range with no ground truth gives NaN (pycocotools'
-1), as detectron2 reports it.
"""
from __future__ import annotations

import contextlib
import copy
import io
import logging
import math
import time

import numpy as np
import torch
import torch.distributed as torch_dist
from pycocotools import mask as mask_utils

from crossmae.engine.logging import progress_bar

logger = logging.getLogger("crossmae")

STAT_NAMES = ("AP", "AP50", "AP75", "APs", "APm", "APl")


def to_coco_results(output: dict, image_id: int, cat_ids: list[int], mask_threshold: float = 0.5) -> list[dict]:
    """One image's torchvision predictions (``boxes`` xyxy, ``labels`` 1..K, ``scores``, optional
    ``masks`` [N, 1, H, W] probabilities) -> COCO result entries."""
    boxes = output["boxes"].detach().float().cpu()
    if boxes.numel() == 0:
        return []
    xywh = torch.cat([boxes[:, :2], boxes[:, 2:] - boxes[:, :2]], dim=1).tolist()
    scores = output["scores"].detach().float().cpu().tolist()
    cats = [cat_ids[int(label) - 1] for label in output["labels"].cpu()]
    rles = None
    if "masks" in output:
        masks = (output["masks"][:, 0] > mask_threshold).cpu().numpy().astype(np.uint8)
        rles = mask_utils.encode(np.asfortranarray(masks.transpose(1, 2, 0)))
        for r in rles:
            r["counts"] = r["counts"].decode("ascii")
    results = []
    for i, (box, score, cat) in enumerate(zip(xywh, scores, cats)):
        entry = {"image_id": int(image_id), "category_id": int(cat), "bbox": [round(v, 3) for v in box],
                 "score": round(float(score), 5)}
        if rles is not None:
            entry["segmentation"] = rles[i]
        results.append(entry)
    return results


def _backend(name: str):
    """(COCO class, COCOeval class) of the chosen backend."""
    if name == "pycocotools":
        from pycocotools.coco import COCO
        from pycocotools.cocoeval import COCOeval
        return COCO, COCOeval
    if name == "faster_coco_eval":
        try:
            from faster_coco_eval import COCO, COCOeval_faster
        except ImportError as e:
            raise ImportError("eval_backend faster_coco_eval needs the faster-coco-eval package: "
                              "pip install faster-coco-eval (or crossmae[fastcoco])") from e
        return COCO, COCOeval_faster
    raise ValueError(f"eval backend must be 'pycocotools' or 'faster_coco_eval', got {name!r}")


def coco_metrics(gt_dataset: dict, results: list[dict], iou_types=("bbox", "segm"),
                 backend: str = "pycocotools") -> dict[str, float]:
    """COCOeval on a ground-truth dict (a COCO instances file's content) and result entries."""
    COCO, COCOeval = _backend(backend)
    metrics: dict[str, float] = {}
    with contextlib.redirect_stdout(io.StringIO()):
        gt = COCO()
        gt.dataset = copy.deepcopy(gt_dataset)
        gt.createIndex()
    for iou_type in iou_types:
        usable = [r for r in results if iou_type != "segm" or "segmentation" in r]
        if not usable:
            logger.warning("no %s predictions: %s AP is 0", iou_type, iou_type)
            metrics.update({f"{iou_type}_{n}": 0.0 for n in STAT_NAMES})
            continue
        log = io.StringIO()
        with contextlib.redirect_stdout(log):
            dt = gt.loadRes(copy.deepcopy(usable))
            ev = COCOeval(gt, dt, iou_type)
            ev.evaluate()
            ev.accumulate()
            ev.summarize()
        logger.info("COCO %s:\n%s", iou_type, "\n".join(line for line in log.getvalue().splitlines()
                                                      if line.startswith(" Average Precision")))
        for name, value in zip(STAT_NAMES, ev.stats[:6]):
            metrics[f"{iou_type}_{name}"] = float(value) * 100 if value >= 0 else math.nan
    return metrics


def _gather(obj):
    if not (torch_dist.is_available() and torch_dist.is_initialized()):
        return [obj]
    out = [None] * torch_dist.get_world_size()
    torch_dist.all_gather_object(out, obj)
    return out


@torch.no_grad()
def run_inference(model: torch.nn.Module, loader, cat_ids: list[int], device: torch.device, precision_ctx=None,
                  show_progress: bool = True) -> list[dict]:
    """COCO results for every image the loader gives this process."""
    was_training = model.training
    model.eval()
    results = []
    for images, targets in progress_bar(loader, desc="inference", disable=not show_progress):
        images = [img.to(device, non_blocking=True) for img in images]
        with precision_ctx or contextlib.nullcontext():
            outputs = model(images)
        for out, t in zip(outputs, targets):
            results.extend(to_coco_results(out, t["image_id"], cat_ids))
    model.train(was_training)
    return results


class CocoEvaluator:
    """``evaluate(model) -> metrics``, for the training loop and --eval-only. Every process runs
    inference on its shard (:func:`crossmae.data.shards.build_eval_loader`: unpadded); rank 0 scores the
    union (an image seen on two ranks, as a padding sampler would give, is scored once) and the metrics
    are shared with every rank."""

    def __init__(self, loader, gt_dataset: dict, cat_ids: list[int], device: torch.device, rank: int = 0,
                 iou_types=("bbox", "segm"), backend: str = "pycocotools", precision_ctx=None):
        _backend(backend)  # fail now, not after an epoch of training
        self.loader, self.gt, self.cat_ids, self.device, self.rank = loader, gt_dataset, cat_ids, device, rank
        self.iou_types, self.backend, self.precision_ctx = iou_types, backend, precision_ctx
        self.last_results: list[dict] = []

    def __call__(self, model: torch.nn.Module) -> dict[str, float]:
        t0 = time.time()
        results = run_inference(model, self.loader, self.cat_ids, self.device, self.precision_ctx,
                                show_progress=self.rank == 0)
        gathered = _gather(results)
        metrics = None
        if self.rank == 0:
            seen, merged = set(), []
            for part in gathered:  # one list per rank; a padded image appears on two ranks
                ids = {r["image_id"] for r in part} - seen
                merged.extend(r for r in part if r["image_id"] in ids)
                seen |= ids
            self.last_results = merged
            metrics = coco_metrics(self.gt, merged, self.iou_types, self.backend)
            metrics["eval_time_s"] = time.time() - t0
        return _gather(metrics)[0] if torch_dist.is_available() and torch_dist.is_initialized() else metrics
