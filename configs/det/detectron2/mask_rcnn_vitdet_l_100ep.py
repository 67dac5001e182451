"""detectron2 LazyConfig: ViTDet Mask R-CNN, ViT-L, 100 epochs, from a `python -m det.export` checkpoint."""
from functools import partial

from .mask_rcnn_vitdet_b_100ep import dataloader, get_vit_lr_decay_rate, lr_multiplier, model, optimizer, train

model.backbone.net.embed_dim = 1024
model.backbone.net.depth = 24
model.backbone.net.num_heads = 16
model.backbone.net.drop_path_rate = 0.4
# global attention in blocks 5, 11, 17, 23
model.backbone.net.window_block_indexes = [i for i in range(24) if i not in (5, 11, 17, 23)]
optimizer.params.lr_factor_func = partial(get_vit_lr_decay_rate, lr_decay_rate=0.8, num_layers=24)
