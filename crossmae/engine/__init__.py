from .checkpoint import CheckpointError, encoder_state, load_checkpoint, model_state, save_checkpoint
from .distributed import DistInfo, init_distributed
from .loop import Trainer, steps_per_epoch
from .optim import build_adamw, param_groups, vit_layer_id, warmup_cosine, warmup_step

__all__ = ["CheckpointError", "DistInfo", "Trainer", "build_adamw", "encoder_state", "init_distributed",
           "load_checkpoint", "model_state", "param_groups", "save_checkpoint", "steps_per_epoch", "vit_layer_id",
           "warmup_cosine", "warmup_step"]
