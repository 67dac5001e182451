"""Config schema of ViTDet Mask R-CNN training/evaluation (merged with a YAML recipe and key=value overrides
by :func:`crossmae.config.load_config`). Defaults are detectron2's ViTDet-B recipe (mask_rcnn_vitdet_b_100ep)."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, ClassVar, Dict, List, Optional

from crossmae.config import NONNEG_INT, POS_INT, POSITIVE, PROB, Check, Divergence
from crossmae.models.sizes import VIT_SIZES, vit_encoder


@dataclass
class DetModel:
    family: str = "vit"  # the backbone: vit (the fields below) | hiera (model.hiera)
    # keyword arguments of crossmae.models.hiera.DenseHiera: size (auto = the pretrained checkpoint's) + overrides
    hiera: Dict[str, Any] = field(default_factory=lambda: {"size": "auto"})
    # the ViT (crossmae.models.dense_vit.DenseViT): a size of crossmae.models.sizes.VIT_SIZES gives the four
    # fields after it unless they are set (resolve_vit writes them in, so a saved config names its model)
    size: str = "base"  # small | base | large | huge
    embed_dim: Optional[int] = None
    depth: Optional[int] = None
    num_heads: Optional[int] = None
    patch_size: Optional[int] = None
    mlp_ratio: float = 4.0
    pretrain_img_size: int = 224  # pos_embed is kept on this grid (the pretraining one) and resized per input
    window_size: int = 14
    global_attn_indexes: List[int] = field(default_factory=lambda: [2, 5, 8, 11])  # the others use windows
    drop_path_rate: float = 0.1
    rel_pos: str = "decomposed"  # ViTDet's decomposed relative positions (zero-initialised); "none" to drop
    use_act_checkpoint: bool = False  # recompute blocks in the backward pass (saves memory for L/H)
    # the detector (torchvision components)
    fpn_channels: int = 256
    anchor_sizes: List[int] = field(default_factory=lambda: [32, 64, 128, 256, 512])  # one per level p2..p6
    box_head_convs: int = 4
    box_head_fc: int = 1024
    mask_head_convs: int = 4
    rpn_pre_nms_top_n_train: int = 2000  # per pyramid level
    rpn_pre_nms_top_n_test: int = 1000
    rpn_post_nms_top_n_train: int = 1000  # per image
    rpn_post_nms_top_n_test: int = 1000
    box_batch_size_per_image: int = 512
    box_score_thresh: float = 0.05  # detections below this score are not reported
    detections_per_img: int = 100
    canonical_scale: int = 224  # RoI level assignment: a box of this size goes to p4
    head_init: str = "detectron2"  # ROI predictors as in ViTDet; "torchvision": its defaults (toy CPU runs)

    # value ranges beyond crossmae.config.CHECKS (checked by load_config)
    checks: ClassVar[dict] = {
        "size": Check(choices=tuple(VIT_SIZES)),
        **{k: POS_INT for k in ("fpn_channels", "anchor_sizes", "box_head_fc", "rpn_pre_nms_top_n_train",
                                "rpn_pre_nms_top_n_test", "rpn_post_nms_top_n_train", "rpn_post_nms_top_n_test",
                                "box_batch_size_per_image", "detections_per_img", "canonical_scale")},
        "box_head_convs": NONNEG_INT, "mask_head_convs": NONNEG_INT, "box_score_thresh": PROB}


def resolve_vit(m) -> None:
    """Fill the ViT fields of ``m`` (a ``model`` section) left unset with those of ``m.size``, in place."""
    for name, value in vit_encoder(m.size).items():
        if getattr(m, name) is None:
            setattr(m, name, value)


@dataclass
class DetData:
    root: str = ""  # COCO root: annotations/instances_<split>.json and <split>/ images; "synthetic" = generate
    name: str = ""  # dataset name in results.json; empty = the root folder's name
    train_split: str = "train2017"
    val_split: str = "val2017"
    num_workers: int = 8
    min_scale: float = 0.1  # large-scale jitter range
    max_scale: float = 2.0
    synthetic_train: int = 200  # data.root=synthetic: images per split and their size
    synthetic_val: int = 50
    synthetic_size: int = 96

    checks: ClassVar[dict] = {"min_scale": POSITIVE, "max_scale": POSITIVE}


@dataclass
class DetOptim:
    lr: float = 1e-4  # absolute (ViTDet: 1e-4 at batch 64)
    betas: List[float] = field(default_factory=lambda: [0.9, 0.999])
    weight_decay: float = 0.1
    layer_decay: float = 0.7  # B 0.7, L 0.8, H 0.9
    warmup_iters: int = 250
    warmup_factor: float = 0.001
    milestones: List[float] = field(default_factory=lambda: [0.8889, 0.9630])  # 163889, 177546 of 184375
    gamma: float = 0.1
    clip_grad: Optional[float] = None


@dataclass
class DetConfig:
    model: DetModel = field(default_factory=DetModel)
    data: DetData = field(default_factory=DetData)
    optim: DetOptim = field(default_factory=DetOptim)
    pretrained: str = ""  # pretraining checkpoint whose encoder initialises the ViT ("" = from scratch)
    weights: str = ""  # a trained detector checkpoint to evaluate (eval_only); default <output_dir>/checkpoint.pth
    eval_only: bool = False  # evaluate `weights` and stop (--eval-only on the command line)
    image_size: int = 1024
    epochs: int = 100
    batch_size: int = 8  # images per process (8 x 8 GPUs = 64)
    eval_batch_size: int = 1
    eval_every: int = 10  # epochs
    eval_backend: str = "pycocotools"  # or faster_coco_eval
    precision: str = "auto"
    find_unused_parameters: bool = False
    device: str = "auto"
    seed: int = 0
    output_dir: str = "output/det"
    resume: str = ""
    save_every: int = 1
    keep_every: int = 0
    log_every: int = 20
    on_divergence: str = "stop"  # or rollback: restore the last good checkpoint at a lower lr
    divergence: Divergence = field(default_factory=Divergence)

    checks: ClassVar[dict] = {"image_size": POS_INT, "eval_backend": Check(choices=("pycocotools", "faster_coco_eval"))}
