"""torch.hub entry points: ``torch.hub.load("<this repo>", "crossmae_vit_base_patch16", checkpoint=PATH)``.

Every pretraining model of the toolkit is an entry; ``checkpoint`` (optional) is a local file in our or the
official release's format (weights cannot be downloaded from here: fetch them yourself first).
"""
dependencies = ["torch", "timm"]

from crossmae.models import MODELS as _MODELS  # noqa: E402


def _entry(name):
    def load(checkpoint: str | None = None, **kwargs):
        from crossmae.engine import load_checkpoint, model_state
        model = _MODELS[name](**kwargs)
        if checkpoint:
            model.load_state_dict(model_state(load_checkpoint(checkpoint), checkpoint))
        return model
    load.__name__ = name
    load.__doc__ = _MODELS[name].__doc__
    return load


for _name in _MODELS:
    globals()[_name] = _entry(_name)
