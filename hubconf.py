"""torch.hub entry points: ``torch.hub.load("<this repo>", "crossmae_vit_base_patch16", checkpoint=PATH)``.

Every pretraining model of the toolkit is an entry; ``checkpoint`` (optional) is a local file in our or the
official release's format. ``from_pretrained`` loads a Hugging Face Hub repo id or a local directory
(``save_pretrained`` / ``crossmae export`` output, or one holding an official release checkpoint):
``torch.hub.load("<this repo>", "from_pretrained", "org/name", encoder_only=True)``.
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


def from_pretrained(repo_id_or_dir: str, encoder_only: bool = False, **kwargs):
    """The model a Hub repo or a local directory holds (CrossMAE or MAE), or with ``encoder_only`` its
    encoder; ``kwargs`` go to :func:`crossmae.hub.load` (``revision``, ``filename``, ``map_location``, ...)."""
    from crossmae.hub import load
    from crossmae.models.encoder import MaskedViTEncoder
    return load(repo_id_or_dir, want=MaskedViTEncoder if encoder_only else None, **kwargs)
