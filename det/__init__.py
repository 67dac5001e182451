"""ViTDet detection and instance segmentation on COCO with a CrossMAE / MAE encoder.

``det.train`` (entry point), ``det.modeling`` (Mask R-CNN from torchvision components on the ViT),
``det.fpn`` (simple feature pyramid), ``det.coco`` (COCO data), ``det.transforms`` (large-scale jitter),
``det.evaluation`` (COCO AP), ``det.export`` (detectron2 checkpoints), ``det.synthetic`` (a synthetic
COCO-format set).
"""
