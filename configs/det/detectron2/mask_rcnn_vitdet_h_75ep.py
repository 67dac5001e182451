"""detectron2 LazyConfig: ViTDet Mask R-CNN, ViT-H, 75 epochs, from a `python -m det.export` checkpoint
(the export resamples a 14 px patch projection to ViTDet's 16 px)."""
from functools import partial

from .mask_rcnn_vitdet_b_100ep import dataloader, get_vit_lr_decay_rate, lr_multiplier, model, optimizer, train

model.backbone.net.embed_dim = 1280
model.backbone.net.depth = 32
model.backbone.net.num_heads = 16
model.backbone.net.drop_path_rate = 0.5
# global attention in blocks 7, 15, 23, 31
model.backbone.net.window_block_indexes = [i for i in range(32) if i not in (7, 15, 23, 31)]
optimizer.params.lr_factor_func = partial(get_vit_lr_decay_rate, lr_decay_rate=0.9, num_layers=32)
optimizer.params.overrides = {}
optimizer.params.weight_decay_norm = None

train.max_iter = train.max_iter * 3 // 4  # 100 -> 75 epochs
lr_multiplier.scheduler.milestones = [m * 3 // 4 for m in lr_multiplier.scheduler.milestones]
lr_multiplier.scheduler.num_updates = train.max_iter
