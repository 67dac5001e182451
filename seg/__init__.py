"""UperNet semantic segmentation (ADE20K) on the shared dense-prediction ViT, following mmseg's MAE recipe."""
