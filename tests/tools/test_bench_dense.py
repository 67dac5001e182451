"""tools/bench_dense.py on CPU with tiny versions of the real recipes: the synthetic batches are what the
recipes train on, checkpointing changes memory and not results, MFU by hand, OOM rows, the memory cap."""
from __future__ import annotations

import pytest
import torch

from tools import bench_dense as bench

TINY = {"det": ["model.embed_dim=32", "model.depth=2", "model.num_heads=2", "model.window_size=4",
                "model.global_attn_indexes=[1]", "image_size=64", "model.pretrain_img_size=64", "model.fpn_channels=16",
                "model.box_head_fc=32", "model.box_head_convs=1", "model.mask_head_convs=1",
                "model.anchor_sizes=[8,16,32,64,128]", "model.box_batch_size_per_image=16",
                "model.rpn_pre_nms_top_n_train=50", "model.rpn_post_nms_top_n_train=20"],
        "seg": ["model.backbone.embed_dim=32", "model.backbone.depth=4", "model.backbone.num_heads=2",
                "model.backbone.img_size=64", "data.crop_size=64", "model.channels=16", "model.aux_channels=8",
                "model.backbone.out_indices=[0,1,2,3]"]}


@pytest.mark.parametrize("task", ["det", "seg"])
def test_checkpointing_changes_nothing_but_memory(task):
    losses, grads = [], []
    for ckpt in (False, True):
        torch.manual_seed(0)
        model, size, make_batch, loss_fn = bench.build_task(task, TINY[task], act_ckpt=ckpt)
        backbone = [m for m in model.modules() if hasattr(m, "use_act_checkpoint")]
        assert backbone and all(m.use_act_checkpoint == ckpt for m in backbone)
        batch = make_batch(2, torch.device("cpu"), torch.Generator().manual_seed(0))
        torch.manual_seed(1)  # the same RoI sampling in both runs
        loss = loss_fn(model.train(), batch)
        loss.backward()
        losses.append(float(loss.detach()))
        grads.append(torch.cat([p.grad.flatten() for p in model.parameters() if p.grad is not None]))
    assert size == 64 and losses[0] == pytest.approx(losses[1], rel=1e-5)
    assert torch.allclose(grads[0], grads[1], rtol=1e-4, atol=1e-6)


def test_detection_batches_look_like_coco():
    _, size, make_batch, _ = bench.build_task("det", TINY["det"], act_ckpt=False)
    images, targets = make_batch(3, torch.device("cpu"), torch.Generator().manual_seed(0))
    assert len(images) == 3 and images[0].shape == (3, size, size)
    for t in targets:
        boxes = t["boxes"]
        assert boxes.shape == (bench.OBJECTS_PER_IMAGE, 4) and bool((boxes[:, 2:] > boxes[:, :2]).all())
        assert bool((boxes >= 0).all() and (boxes <= size).all())
        areas = ((boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])).tolist()
        assert t["masks"].flatten(1).sum(1).tolist() == areas  # each mask fills its box exactly
        assert int(t["labels"].min()) >= 1 and int(t["labels"].max()) <= 80


def test_rows_mfu_by_hand_and_table():
    rows = [{"task": "seg", "image_size": 512, "batch_size": 2, "act_ckpt": True, "oom": False,
             "gflops_per_image": 100.0, "images_per_s": 10.0, "step_s": 0.2}]
    bench.add_mfu(rows, peak_tflops=1000.0)
    assert rows[0]["mfu"] == pytest.approx(3 * 100e9 * 10 / 1000e12)  # 0.3%
    assert bench.table(rows)[0]["MFU"] == "0.3%"


def test_a_real_cpu_row_and_an_oom_row(monkeypatch):
    rows = bench.dense_rows(["seg"], 2, torch.device("cpu"), "fp32", act_ckpt=(False,), overrides=TINY,
                            repeats=1, steps_per_repeat=1, warmup=1)
    assert rows[0]["images_per_s"] == pytest.approx(2 / rows[0]["step_s"]) and rows[0]["gflops_per_image"] > 0
    assert not rows[0]["oom"] and rows[0]["loss"] > 0

    def out_of_memory(*a, **k):
        raise torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB\nmore")
    monkeypatch.setattr(bench, "forward_flops", out_of_memory)
    row = bench.time_task("seg", TINY["seg"], False, 2, torch.device("cpu"), "fp32", repeats=1, steps_per_repeat=1,
                          warmup=0)
    assert row["oom"] and row["error"] == "CUDA out of memory. Tried to allocate 2.00 GiB"


def test_memory_cap_needs_a_gpu():
    with pytest.raises(ValueError, match="CUDA"):
        bench.dense_rows(["seg"], 1, torch.device("cpu"), "fp32", mem_cap_gb=24)
