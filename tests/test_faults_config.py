"""Fault paths of configs, the command line, devices, checkpoints and output files: each bad input ends
in one clear error naming the field / file, before anything runs, and nothing already written is lost."""
from __future__ import annotations

import dataclasses
import typing

import pytest
from omegaconf import OmegaConf

from crossmae.config import CHECKS, Check, ConfigError, PretrainConfig, check_for, load_config
from tiny import REPO


def schemas() -> dict:
    from cls_transfer.config import TransferConfig
    from crossmae.classification.config import FinetuneConfig, LinprobeConfig
    from det.train import DetConfig
    from seg.config import SegConfig
    return {"pretrain": PretrainConfig, "finetune": FinetuneConfig, "linprobe": LinprobeConfig,
            "cls_transfer": TransferConfig, "seg": SegConfig, "det": DetConfig}


# ------------------------------------------------------------------ config values
def _numeric(tp) -> bool:
    """int/float, Optional of them, or a list of them (bool excluded)."""
    args = typing.get_args(tp)
    if typing.get_origin(tp) in (typing.Union, list, typing.List):
        return any(_numeric(a) for a in args if a is not type(None))
    return tp in (int, float)


def _fields(cls, prefix=""):
    hints = typing.get_type_hints(cls)
    for f in dataclasses.fields(cls):
        tp = hints[f.name]
        if dataclasses.is_dataclass(tp):
            yield from _fields(tp, prefix + f.name + ".")
        else:
            yield prefix + f.name, cls, f.name, tp


@pytest.mark.parametrize("task", list(schemas()))
def test_every_numeric_field_has_a_check(task):
    """A new numeric field must come with its range (crossmae.config.CHECKS or the class's ``checks``)."""
    fields = [(key, cls, name) for key, cls, name, tp in _fields(schemas()[task]) if _numeric(tp)]
    assert len(fields) > 10
    unchecked = [key for key, cls, name in fields if check_for(cls, name) is None]
    assert not unchecked, f"{task}: no value check for {unchecked}"


@pytest.mark.parametrize("task", list(schemas()))
def test_defaults_pass(task):
    load_config(schemas()[task])


RECIPE_DIRS = {"pretrain": "pretrain", "finetune": "finetune", "linprobe": "linprobe", "cls_transfer": "cls_transfer",
               "seg": "seg", "det": "det"}
RECIPES = [(task, p) for task, d in RECIPE_DIRS.items() for p in sorted((REPO / "configs" / d).glob("*.yaml"))
           if p.name != "references.yaml"]


@pytest.mark.parametrize("task,path", RECIPES, ids=[f"{t}/{p.name}" for t, p in RECIPES])
def test_every_recipe_passes(task, path):
    load_config(schemas()[task], path)


BAD = [  # (task, override, field named in the error); each crashed with a traceback (some after an epoch)
    ("pretrain", "save_every=0", "save_every"),
    ("pretrain", "log_every=0", "log_every"),
    ("pretrain", "optim.betas=[0.9]", "optim.betas"),
    ("pretrain", "optim.betas=[0.9,1.5]", "optim.betas"),
    ("pretrain", "optim.lr=-1e-3", "optim.lr"),
    ("pretrain", "optim.blr=inf", "optim.blr"),
    ("pretrain", "optim.weight_decay=nan", "optim.weight_decay"),
    ("pretrain", "data.min_scale=0", "data.min_scale"),
    ("pretrain", "model.mask_ratio=1.0", "model.mask_ratio"),
    ("pretrain", "precision=bf32", "precision"),
    ("pretrain", "accum_iter=0", "accum_iter"),
    ("finetune", "eval_every=0", "eval_every"),
    ("finetune", "aug.smoothing=1.0", "aug.smoothing"),
    ("finetune", "optim.layer_decay=0", "optim.layer_decay"),
    ("finetune", "data.nb_classes=1", "data.nb_classes"),
    ("linprobe", "optim.momentum=1.0", "optim.momentum"),
    ("linprobe", "optim.name=adam", "optim.name"),
    ("cls_transfer", "data.dataset=imagenet21k", "data.dataset"),
    ("cls_transfer", "save_every=0", "save_every"),
    ("seg", "test.stride=0", "test.stride"),
    ("seg", "data.ratio_range=[2.0,0.5]", "data.ratio_range"),
    ("seg", "model.backbone.depth=0", "model.backbone.depth"),
    ("seg", "test.mode=sliding", "test.mode"),
    ("det", "eval_every=0", "eval_every"),
    ("det", "optim.betas=[0.9]", "optim.betas"),
    ("det", "optim.milestones=[0.9,0.5]", "optim.milestones"),
    ("det", "model.window_size=-1", "model.window_size"),
]


@pytest.mark.parametrize("task,override,key", BAD, ids=[f"{t}:{o}" for t, o, _ in BAD])
def test_bad_value_is_one_clear_error(task, override, key):
    with pytest.raises(ConfigError) as e:
        load_config(schemas()[task], None, [override])
    msg = str(e.value)
    assert msg.startswith(f"{key}=") and "(from command line)" in msg and "must be" in msg
    assert "\n" not in msg


HUGE = 2 ** 70  # beyond 64 bits: torch.manual_seed said "Overflow when unpacking long long", naming nothing
ABSURD = [  # (task, override, field named in the error)
    ("pretrain", f"seed={HUGE}", "seed"),
    ("pretrain", f"seed={2 ** 32}", "seed"),  # seeds are 32-bit (numpy's range; seed * 1_000_003 + i fits int64)
    ("pretrain", f"data.num_workers={HUGE}", "data.num_workers"),
    ("pretrain", "data.num_workers=100000", "data.num_workers"),
    ("pretrain", "epochs=" + "9" * 400, "epochs"),  # beyond float range: the check itself must not overflow
    ("pretrain", f"model.depth={HUGE}", "model.depth"),
    ("finetune", f"batch_size={HUGE}", "batch_size"),
    ("det", f"seed={HUGE}", "seed"),
    ("det", f"optim.warmup_iters={HUGE}", "optim.warmup_iters"),
    ("seg", f"iters_per_epoch={HUGE}", "iters_per_epoch"),
    ("cls_transfer", f"data.num_workers={HUGE}", "data.num_workers"),
]


@pytest.mark.parametrize("task,override,key", ABSURD, ids=[f"{t}:{o[:30]}" for t, o, _ in ABSURD])
def test_absurd_integers_are_one_clear_error(task, override, key):
    with pytest.raises(ConfigError) as e:
        load_config(schemas()[task], None, [override])
    msg = str(e.value)
    assert msg.startswith(f"{key}=") and "(from command line)" in msg and "must be an integer in [" in msg
    assert "\n" not in msg


def test_every_integer_check_has_an_upper_bound():
    """Python integers have no limit, torch's and numpy's do (int64, or 32 bits for seeds)."""
    unbounded = [name for name, check in CHECKS.items() if check.integer and check.hi is None]
    assert not unbounded


def test_a_seed_beyond_64_bits_is_one_line_from_the_cli(capsys):
    from crossmae.cli import main as cli
    assert cli(["pretrain", f"seed={HUGE}"]) == 2
    assert capsys.readouterr().err == (f"crossmae pretrain: error: seed={HUGE} (from command line): must be an "
                                       f"integer in [0, {2 ** 32 - 1}]\n")


def test_error_names_the_yaml_file(tmp_path):
    path = tmp_path / "recipe.yaml"
    path.write_text("epochs: 2\nsave_every: 0\n")
    with pytest.raises(ConfigError, match=r"save_every=0 \(from .*recipe.yaml\): must be an integer in \[1, "):
        load_config(PretrainConfig, path)
    # the command line wins over the file, and is then the source named
    with pytest.raises(ConfigError, match=r"log_every=-1 \(from command line\)"):
        load_config(PretrainConfig, path, ["save_every=1", "log_every=-1"])
    assert load_config(PretrainConfig, path, ["save_every=1"]).save_every == 1


def test_broken_yaml_is_one_line(tmp_path):
    path = tmp_path / "recipe.yaml"
    path.write_text("epochs: [2\nsave_every: 1\n")
    with pytest.raises(ConfigError, match="recipe.yaml: not a readable YAML config"):
        load_config(PretrainConfig, path)
    path.write_text("- 1\n- 2\n")
    with pytest.raises(ConfigError, match="expected a mapping"):
        load_config(PretrainConfig, path)


def test_unparsable_override_and_broken_interpolation_are_one_line():
    with pytest.raises(ConfigError, match=r"command line: cannot parse 'optim.betas=\[0.9'"):
        load_config(PretrainConfig, None, ["epochs=3", "optim.betas=[0.9"])
    with pytest.raises(ConfigError, match=r"data.path \(from command line\): Interpolation key 'oops' not found"):
        load_config(PretrainConfig, None, ["data.path=${oops}"])
    assert load_config(PretrainConfig, None, ["data.path=${output_dir}"]).data.path == "output/pretrain"


def test_check_semantics():
    assert Check(lo=0, hi=1, hi_open=True).ok(0.0) and not Check(lo=0, hi=1, hi_open=True).ok(1.0)
    assert not CHECKS["epochs"].ok(True) and not CHECKS["epochs"].ok(2.5) and CHECKS["epochs"].ok(3)
    assert not CHECKS["lr"].ok(float("nan")) and CHECKS["lr"].ok(None)
    assert CHECKS["betas"].ok([0.9, 0.95]) and not CHECKS["betas"].ok(0.9)
    assert not CHECKS["milestones"].ok([0.9, 0.5]) and CHECKS["milestones"].ok([0.5, 0.9])
    cfg = OmegaConf.structured(PretrainConfig)
    assert cfg.optim.betas == [0.9, 0.95]  # the ClassVar `checks` is not a config field
    assert "checks" not in cfg.data


# ------------------------------------------------------------------ devices
@pytest.mark.parametrize("device", ["cuda", "cuda:3"])
def test_cuda_without_gpu_is_one_error(device, monkeypatch):
    import torch

    from crossmae.engine.distributed import init_distributed
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(ValueError, match=f"device={device} but no CUDA GPU is visible.*device=cpu"):
        init_distributed(device)


def test_missing_gpu_index_and_bad_names(monkeypatch):
    import torch

    from crossmae.engine.distributed import init_distributed
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    monkeypatch.setattr(torch.cuda, "set_device", lambda i: pytest.fail("set_device reached"))
    with pytest.raises(ValueError, match="GPU 3 asked for .* only 1 visible"):
        init_distributed("cuda:3")
    with pytest.raises(ValueError, match="'gpu' is not a device"):
        init_distributed("gpu")
    monkeypatch.setenv("LOCAL_RANK", "x")
    with pytest.raises(ValueError, match="LOCAL_RANK='x' is not an integer"):
        init_distributed("cpu")


# ------------------------------------------------------------------ command lines: options after overrides
def _capture(monkeypatch, module, name="main"):
    calls = []
    monkeypatch.setattr(module, name, lambda *a, **k: calls.append((a, k)))
    return calls


def test_crossmae_cli_intermixed(monkeypatch, tmp_path):
    import crossmae.pretrain
    from crossmae import cli
    calls = _capture(monkeypatch, crossmae.pretrain)
    assert cli.main(["pretrain", "a=1", "--config", "X.yaml", "b=2"]) == 0
    assert calls == [(("X.yaml", ["a=1", "b=2"]), {})]


def test_det_cli_intermixed(monkeypatch):
    import det.train
    calls = _capture(monkeypatch, det.train)
    assert det.train.cli(["--config", "X.yaml", "a=1", "--eval-only", "b=2", "--resume", "r.pth", "c=3"]) == 0
    (args, kwargs), = calls
    assert args == ("X.yaml", ["a=1", "b=2", "c=3", "resume=r.pth"]) and kwargs == {"eval_only": True}


def test_seg_and_cls_transfer_cli_intermixed(monkeypatch):
    import importlib

    import seg.train
    calls = _capture(monkeypatch, seg.train)
    assert seg.train.cli(["a=1", "--eval-only", "b=2", "--config", "X.yaml"]) == 0
    assert calls[0][0][:3] == ("X.yaml", ["a=1", "b=2"], True)
    main_mod = importlib.import_module("cls_transfer.__main__")
    calls = _capture(monkeypatch, main_mod)
    assert main_mod.cli(["a=1", "--config", "X.yaml", "b=2"]) == 0
    assert calls == [(("X.yaml", ["a=1", "b=2"]), {})]


@pytest.mark.parametrize("option,value", [("--k", str(2 ** 70)), ("--num-workers", "100000"), ("--batch-size", "0"),
                                          ("--train-images", "-1"), ("--temperature", "1e400")])
def test_knn_options_are_checked_like_config_fields(option, value, capsys):
    from crossmae.cli import main as cli
    with pytest.raises(SystemExit) as e:
        cli(["knn", "--checkpoint", "c.pth", "--data", "d", option, value])
    err = capsys.readouterr().err.strip().splitlines()
    assert e.value.code == 2 and f"error: argument {option}: {value} must be " in err[-1]
