"""detectron2 LazyConfig: ViTDet Mask R-CNN, ViT-B, 100 epochs (the paper's COCO recipe), initialised from a
CrossMAE / MAE checkpoint exported with ``python -m det.export``. Needs detectron2 installed from source.

    python -m det.export /ckpt/crossmae_vit_base.pth /ckpt/crossmae_vit_base_d2.pth
    python <detectron2>/tools/lazyconfig_train_net.py --num-gpus 8 \
        --config-file configs/det/detectron2/mask_rcnn_vitdet_b_100ep.py \
        train.init_checkpoint=/ckpt/crossmae_vit_base_d2.pth train.output_dir=output/d2_vitdet_b

It restates detectron2's projects/ViTDet/configs/COCO/mask_rcnn_vitdet_b_100ep.py (and its
common/coco_loader_lsj.py, which is not part of the installed package) on top of the model-zoo
configs that are.
"""
from functools import partial

import detectron2.data.transforms as T
from detectron2 import model_zoo
from detectron2.config import LazyCall as L
from detectron2.modeling.backbone.vit import get_vit_lr_decay_rate
from detectron2.solver import WarmupParamScheduler
from fvcore.common.param_scheduler import MultiStepParamScheduler

model = model_zoo.get_config("common/models/mask_rcnn_vitdet.py").model

# data: large-scale jitter 0.1-2.0 + 1024 crop + flip; test: longest side 1024
image_size = 1024
dataloader = model_zoo.get_config("common/data/coco.py").dataloader
dataloader.train.mapper.augmentations = [
    L(T.RandomFlip)(horizontal=True),
    L(T.ResizeScale)(min_scale=0.1, max_scale=2.0, target_height=image_size, target_width=image_size),
    L(T.FixedSizeCrop)(crop_size=(image_size, image_size), pad=False),
]
dataloader.train.mapper.image_format = "RGB"
dataloader.train.total_batch_size = 64
dataloader.train.mapper.recompute_boxes = True
dataloader.test.mapper.augmentations = [L(T.ResizeShortestEdge)(short_edge_length=image_size, max_size=image_size)]

train = model_zoo.get_config("common/train.py").train
train.amp.enabled = True
train.ddp.fp16_compression = True
train.init_checkpoint = ""  # set on the command line: the file written by `python -m det.export`

# 100 epochs = 184375 iterations x 64 images / 118k images; steps at ~89% and ~96%
train.max_iter = 184375
lr_multiplier = L(WarmupParamScheduler)(
    scheduler=L(MultiStepParamScheduler)(values=[1.0, 0.1, 0.01], milestones=[163889, 177546],
                                         num_updates=train.max_iter),
    warmup_length=250 / train.max_iter,
    warmup_factor=0.001,
)

optimizer = model_zoo.get_config("common/optim.py").AdamW
optimizer.params.lr_factor_func = partial(get_vit_lr_decay_rate, num_layers=12, lr_decay_rate=0.7)
optimizer.params.overrides = {"pos_embed": {"weight_decay": 0.0}}
