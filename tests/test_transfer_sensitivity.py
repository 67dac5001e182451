"""End to end: the detection and segmentation pipelines are sensitive to the backbone they are given.

A tiny encoder is pretrained once (CrossMAE, configs/paper_row/toy_pretrain.yaml) on an unlabelled pool of the
synthetic detection and segmentation images (det/synthetic.py, seg/synthetic.py: classes differ in shape, not
colour). A short ViTDet run and a short UperNet run from that encoder must reach a clearly lower training loss
than the same runs from random init: same recipe, seed, data order and head initialisation; only
``pretrained=`` differs. A change that silently stops loading ``pretrained=`` (in det/backbone.py,
seg/model.py, the configs or the launchers) makes the two runs identical and fails this test.
"""
from __future__ import annotations

import json
import statistics

import pytest

from tiny import REPO

pytestmark = pytest.mark.slow  # 17.5 min for both with the fixture under a load average of 11 on 2 cores

# Both runs of a pair see the same batches in the same order with the same head initialisation, so their losses
# are compared step by step: from the pretrained encoder the loss must be lower at most steps after warmup and
# lower on average over the second half. Measured on 2 shared cores (see each test); a run that ignores
# pretrained= is identical to the random one (no step lower, ratio 1.0).
MIN_STEPS_LOWER = 0.75
DET_MAX_RATIO = 0.93
SEG_MAX_RATIO = 0.985


@pytest.fixture(scope="session")
def toy_encoder(tmp_path_factory):
    """checkpoint.pth of a CrossMAE pretrained for 20 epochs on 600 unlabelled synthetic images."""
    from crossmae.pretrain import main
    from det.synthetic import make_unlabelled as det_pool
    from seg.synthetic import make_unlabelled as seg_pool
    root = tmp_path_factory.mktemp("sensitivity_pretrain")
    det_pool(root / "pool" / "train" / "shapes", 300, 64, seed=100)
    seg_pool(root / "pool" / "train" / "scenes", 300, (64, 96), seed=100)
    main(str(REPO / "configs/paper_row/toy_pretrain.yaml"),
         [f"data.path={root / 'pool'}", f"output_dir={root / 'run'}", "epochs=20", "save_every=20",
          "optim.warmup_epochs=2", "data.num_workers=0", "num_vis=0", "device=cpu"])
    return root / "run" / "checkpoint.pth"


def _losses(run_dir) -> list[float]:
    return [json.loads(line)["loss"] for line in (run_dir / "train_log.jsonl").read_text().splitlines()]


def _compare(pretrained: list[float], random: list[float], warmup: int) -> tuple[float, float]:
    """(share of steps after warmup where the pretrained run's loss is lower, second-half mean loss ratio)."""
    pairs = list(zip(pretrained, random))[warmup:]
    lower = sum(p < r for p, r in pairs) / len(pairs)
    half = len(pretrained) // 2
    return lower, statistics.mean(pretrained[half:]) / statistics.mean(random[half:])


def _train_pair(main, config: str, recipe: list[str], encoder, tmp_path) -> dict[str, list[float]]:
    losses = {}
    for init, extra in (("pretrained", [f"pretrained={encoder}"]), ("random", [])):
        main(str(REPO / config), recipe + extra + [f"output_dir={tmp_path / init}"])
        losses[init] = _losses(tmp_path / init)
    return losses


def test_detection_from_the_pretrained_encoder_trains_to_a_lower_loss(toy_encoder, tmp_path):
    from det.synthetic import make_split
    from det.train import main
    data = tmp_path / "shapes"
    make_split(data, "train2017", 32, 64, seed=0)
    make_split(data, "val2017", 4, 64, seed=1)
    recipe = [f"data.root={data}", "epochs=10", "eval_every=100", "save_every=100", "log_every=1",
              "optim.warmup_iters=5", "device=cpu"]  # 40 steps of the toy recipe
    losses = _train_pair(main, "configs/paper_row/toy_det.yaml", recipe, toy_encoder, tmp_path)
    lower, ratio = _compare(losses["pretrained"], losses["random"], warmup=5)
    print(f"det: pretrained lower at {lower:.0%} of steps, second-half loss ratio {ratio:.3f}")
    # measured: lower at 91% of steps, ratio 0.867 (with load_encoder returning early: 0%, 1.000)
    assert lower >= MIN_STEPS_LOWER and ratio < DET_MAX_RATIO, (lower, ratio)


def test_segmentation_from_the_pretrained_encoder_trains_to_a_lower_loss(toy_encoder, tmp_path):
    from seg.synthetic import make_synthetic_ade20k
    from seg.train import main
    data = make_synthetic_ade20k(tmp_path / "scenes", num_train=32, num_val=4, size_range=(64, 96))
    recipe = [f"data.path={data}", "max_iters=60", "iters_per_epoch=60", "eval_every=100", "log_every=1",
              "optim.warmup_iters=5", "device=cpu"]  # 60 iterations of the toy recipe (lr 2e-3)
    losses = _train_pair(main, "configs/paper_row/toy_seg.yaml", recipe, toy_encoder, tmp_path)
    lower, ratio = _compare(losses["pretrained"], losses["random"], warmup=5)
    print(f"seg: pretrained lower at {lower:.0%} of steps, second-half loss ratio {ratio:.3f}")
    # measured: lower at 84% of steps, ratio 0.970 (with load_pretrained_encoder returning early: 0%, 1.000);
    # the effect is small at 60 iterations (both runs still predict mostly background) but systematic
    assert lower >= MIN_STEPS_LOWER and ratio < SEG_MAX_RATIO, (lower, ratio)
