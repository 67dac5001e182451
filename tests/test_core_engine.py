import math
import os

import pytest
import torch
from PIL import Image

from crossmae.data import SafeImageFolder, build_loader, pretrain_transform, split_dir
from crossmae.engine import (CheckpointError, DistInfo, Trainer, build_adamw, load_checkpoint, param_groups,
                             save_checkpoint, warmup_cosine)
from crossmae.engine import checkpoint as ckpt_module
from crossmae.masking import random_masking

from tiny import free_port, spawn_ranks, tiny_model

CPU = DistInfo(rank=0, world_size=1, local_rank=0, device=torch.device("cpu"))


def test_weight_decay_groups_exclude_biases_norms_tokens_and_positions():
    model = tiny_model()
    names_by_decay = {}
    for g in param_groups(model, weight_decay=0.05):
        for n in g["param_names"]:
            names_by_decay[n] = g["weight_decay"]
    assert names_by_decay["blocks.0.attn.qkv.weight"] == 0.05
    assert names_by_decay["wfm.linear.weight"] == 0.05
    for n in ["blocks.0.attn.qkv.bias", "blocks.0.norm1.weight", "cls_token", "mask_token", "dec_norms.0.weight",
              "decoder_norm.bias"]:
        assert names_by_decay[n] == 0.0, n
    assert "pos_embed" not in names_by_decay and "decoder_pos_embed" not in names_by_decay  # frozen


def test_warmup_cosine_schedule():
    lr = warmup_cosine(1.0, 0.1, total_iters=100, warmup_iters=10)
    assert lr(0) == 0 and lr(5) == pytest.approx(0.5) and lr(10) == pytest.approx(1.0)
    assert lr(55) == pytest.approx(0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * 0.5)))
    assert lr(100) == pytest.approx(0.1)
    assert all(lr(i) >= lr(i + 1) for i in range(10, 100))


def test_overfits_a_tiny_fixed_batch():
    torch.manual_seed(0)
    model = tiny_model(norm_pix_loss=False)
    imgs = torch.randn(8, 3, 32, 32).cumsum(-1) / 8  # smooth-ish images
    masks = random_masking(8, 64, 0.75, 0.75, generator=torch.Generator().manual_seed(0))
    opt = build_adamw(model, 1e-3, 0.0, betas=(0.9, 0.95))
    first = model(imgs, masks).loss.item()
    for _ in range(250):
        loss = model(imgs, masks).loss
        opt.zero_grad()
        loss.backward()
        opt.step()
    # measured: 0.887 -> 0.052 after 250 steps (a plateau near 0.24, predicting the mean, ends around step 150)
    assert loss.item() < 0.15 * first, (first, loss.item())


class RandomImages(torch.utils.data.Dataset):
    def __init__(self, n=24):
        self.x = torch.randn(n, 3, 32, 32, generator=torch.Generator().manual_seed(0))

    def __len__(self):
        return len(self.x)

    def __getitem__(self, i):
        return self.x[i], torch.randn(3, 32, 32)[0, 0, 0] * 0  # second item: dataloader-side randomness


def make_trainer(out_dir, epochs, dist=CPU, batch_size=4, accum_iter=2, loss_fn=None, dataset=None, sgd=False, **kw):
    torch.manual_seed(0)
    model = tiny_model()
    loader = build_loader(dataset or RandomImages(), batch_size, 0, dist.rank, dist.world_size, seed=0)
    # plain SGD where runs are compared across process counts: Adam turns float-rounding-level
    # differences of near-zero gradients (e.g. key biases) into full-size steps
    opt = torch.optim.SGD(model.parameters(), lr=0.1) if sgd else build_adamw(model, 1e-3, 0.05, betas=(0.9, 0.95))
    steps = len(loader) // accum_iter
    return Trainer(model=model, optimizer=opt, train_loader=loader, lr_schedule=warmup_cosine(1e-3, 0, epochs * steps, 2),
                   loss_fn=loss_fn or (lambda m, b: m(b[0]).loss), epochs=epochs, output_dir=out_dir, dist=dist,
                   accum_iter=accum_iter, clip_grad=1.0, tensorboard=False, **kw)


def test_exact_resume_matches_uninterrupted_run(tmp_path):
    full = make_trainer(tmp_path / "full", epochs=3)
    full.fit()
    part = make_trainer(tmp_path / "part", epochs=1)
    part.fit()
    assert (tmp_path / "part" / "checkpoint.pth").is_file()
    resumed = make_trainer(tmp_path / "part", epochs=3)
    resumed.auto_resume("")
    assert resumed.start_epoch == 1 and resumed.step == part.step
    resumed.fit()
    for (name, a), b in zip(full.module.state_dict().items(), resumed.module.state_dict().values()):
        assert torch.equal(a, b), name
    # and the optimizer moments too
    sa, sb = full.optimizer.state_dict()["state"], resumed.optimizer.state_dict()["state"]
    assert all(torch.equal(sa[k]["exp_avg"], sb[k]["exp_avg"]) for k in sa)
    logs = (tmp_path / "part" / "epoch_log.jsonl").read_text().splitlines()
    assert len(logs) == 3


def test_the_evaluator_receives_the_epochs_trained_also_after_a_resume(tmp_path):
    seen = []

    def evaluate(model, epoch):
        seen.append(epoch)
        return {}
    make_trainer(tmp_path, epochs=2, evaluate=evaluate).fit()  # evaluates after epochs 1 and 2
    resumed = make_trainer(tmp_path, epochs=5, evaluate=evaluate, eval_every=2)
    resumed.auto_resume("")
    resumed.fit()  # epochs 3, 4, 5: evaluates after 4 (eval_every) and 5 (the last)
    assert seen == [1, 2, 4, 5]


def test_resume_from_a_file_that_is_not_a_training_checkpoint(tmp_path):
    save_checkpoint({"model": tiny_model().state_dict()}, tmp_path / "weights.pth")
    with pytest.raises(CheckpointError, match="lacks"):
        make_trainer(tmp_path / "run", epochs=1).resume(tmp_path / "weights.pth")
    torch.save({"hello": "world"}, tmp_path / "other.pth")
    with pytest.raises(CheckpointError, match="not a CrossMAE/MAE checkpoint"):
        from crossmae.engine import model_state
        model_state(load_checkpoint(tmp_path / "other.pth"), tmp_path / "other.pth")


class Evil:
    def __reduce__(self):
        return (os.system, ("echo pwned",))


def test_loading_refuses_pickled_code(tmp_path):
    torch.save({"model": {}, "payload": Evil()}, tmp_path / "evil.pth")
    with pytest.raises(CheckpointError, match="refusing to load"):
        load_checkpoint(tmp_path / "evil.pth")
    with pytest.raises(CheckpointError, match="not found"):
        load_checkpoint(tmp_path / "missing.pth")


def test_a_crash_while_saving_keeps_the_previous_checkpoint(tmp_path, monkeypatch):
    path = tmp_path / "checkpoint.pth"
    save_checkpoint({"model": {"w": torch.ones(3)}, "epoch": 1}, path)

    def crash(obj, f, *a, **k):
        f.write(b"partial garbage")
        raise KeyboardInterrupt  # a kill in the middle of the write

    monkeypatch.setattr(ckpt_module.torch, "save", crash)
    with pytest.raises(KeyboardInterrupt):
        save_checkpoint({"model": {"w": torch.zeros(3)}, "epoch": 2}, path)
    monkeypatch.undo()
    assert load_checkpoint(path)["epoch"] == 1
    assert [p.name for p in tmp_path.iterdir()] == ["checkpoint.pth"]  # no temp file left behind


def _ddp_worker(rank, world_size, port, out_dir, result_path):
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank), WORLD_SIZE=str(world_size))
    torch.set_num_threads(1)
    from crossmae.engine import init_distributed
    dist_info = init_distributed("cpu")
    trainer = make_trainer(out_dir, epochs=1, dist=dist_info, batch_size=4 // world_size, accum_iter=1,
                           loss_fn=_loss_with_index_masks, dataset=IndexedImages(), sgd=True)
    trainer.fit()
    if rank == 0:
        torch.save(trainer.module.state_dict(), result_path)
    from crossmae.engine.distributed import cleanup
    cleanup()


class IndexedImages(RandomImages):
    def __getitem__(self, i):
        return self.x[i], i


def _loss_with_index_masks(model, batch):
    """Masks drawn from each sample's index, so they do not depend on how the batch is split."""
    imgs, idx = batch
    masks = [random_masking(1, 64, 0.75, 0.75, generator=torch.Generator().manual_seed(int(i))) for i in idx]
    masks = type(masks[0])(*(torch.cat(t) for t in zip(*masks)))
    return model(imgs, masks).loss


def test_ddp_two_processes_equal_one_process_on_the_same_global_batch(tmp_path):
    # one process, global batch 4
    single = make_trainer(tmp_path / "single", epochs=1, batch_size=4, accum_iter=1, loss_fn=_loss_with_index_masks,
                          dataset=IndexedImages(), sgd=True)
    single.fit()
    # two gloo processes, 2 per process: the sampler gives them the same 4 samples per step
    spawn_ranks(_ddp_worker, 2, (2, free_port(), str(tmp_path / "ddp"), str(tmp_path / "ddp.pt")), [tmp_path / "ddp.pt"])
    ddp_state = torch.load(tmp_path / "ddp.pt")
    init = make_trainer(tmp_path / "init", epochs=1).module.state_dict()
    for name, a in single.module.state_dict().items():
        assert torch.allclose(a, ddp_state[name], atol=1e-6), name
    assert not torch.allclose(single.module.blocks[0].attn.qkv.weight, init["blocks.0.attn.qkv.weight"])  # it trained


def _png(path, size=(40, 40)):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", size, (120, 30, 200)).save(path)


def test_corrupt_images_are_skipped_and_counted(tmp_path, caplog):
    for i in range(4):
        _png(tmp_path / "train" / "a" / f"{i}.png")
    (tmp_path / "train" / "a" / "9_broken.png").write_bytes(b"not a png at all")
    ds = SafeImageFolder(split_dir(tmp_path, "train"), transform=pretrain_transform(32))
    with caplog.at_level("WARNING", logger="crossmae"):
        items = [ds[i] for i in range(len(ds))]
    assert len(items) == 5 and all(x.shape == (3, 32, 32) for x, _ in items)
    assert ds.num_skipped() == 1
    assert "9_broken.png" in caplog.text


def test_missing_or_empty_data_dir_is_a_clear_error(tmp_path):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        split_dir(tmp_path / "nope", "train")
    (tmp_path / "train").mkdir()
    with pytest.raises(FileNotFoundError, match="no images found under"):
        SafeImageFolder(split_dir(tmp_path, "train"))


def test_a_non_finite_loss_stops_the_run_without_touching_the_checkpoint(tmp_path):
    make_trainer(tmp_path, epochs=1).fit()
    before = load_checkpoint(tmp_path / "checkpoint.pth")["model"]
    trainer = make_trainer(tmp_path, epochs=2, loss_fn=lambda m, b: m(b[0]).loss * float("nan"))
    trainer.auto_resume("")
    with pytest.raises(FloatingPointError, match=r"loss is nan at step \d+; stopping. The last good checkpoint is "
                                                 r".*checkpoint.pth \(epoch 1\)"):
        trainer.fit()
    after = load_checkpoint(tmp_path / "checkpoint.pth")
    assert after["epoch"] == 1 and all(torch.equal(before[k], after["model"][k]) for k in before)


def test_transform_errors_are_not_mistaken_for_corrupt_images(tmp_path):
    _png(tmp_path / "a" / "0.png")

    def broken_transform(img):
        raise TypeError("a bug in the transform")

    ds = SafeImageFolder(tmp_path, transform=broken_transform)
    with pytest.raises(TypeError, match="bug in the transform"):
        ds[0]
    assert ds.num_skipped() == 0


def _work_then_hang(rank, out):
    import time
    torch.save(rank, f"{out}.{rank}")
    time.sleep(600)  # like gloo's teardown on torch 2.5, once: the work is saved, the process never exits


def test_spawn_ranks_ends_ranks_stuck_after_their_work(tmp_path):
    import time
    out = str(tmp_path / "rank")
    start = time.monotonic()
    with pytest.warns(UserWarning, match="terminating ranks stuck"):
        spawn_ranks(_work_then_hang, 2, (out,), [f"{out}.0", f"{out}.1"], grace=1)
    assert time.monotonic() - start < 120 and [torch.load(f"{out}.{r}") for r in range(2)] == [0, 1]


def test_accumulation_skips_the_all_reduce_through_the_ddp_wrapper_even_when_compiled(tmp_path):
    """Non-final micro-steps run under DDP's no_sync(). The check used to look at self.model, which
    torch.compile wraps, so with compile on every micro-step would have all-reduced."""
    import contextlib
    trainer = make_trainer(tmp_path, epochs=1)
    calls = []

    class FakeDDP:
        def no_sync(self):
            calls.append("no_sync")
            return contextlib.nullcontext()

    trainer.ddp = FakeDDP()  # trainer.model stays the plain module, as a compiled wrapper would not be DDP either
    batch = next(iter(trainer.loader))
    trainer._micro_step(batch, sync=False)
    trainer._micro_step(batch, sync=True)
    assert calls == ["no_sync"]
