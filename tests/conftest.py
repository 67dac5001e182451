"""Shared fixtures: tiny models and a small pretrained checkpoint every downstream test can use."""
from __future__ import annotations

import logging
import os

import pytest
import torch

from tiny import REPO, TINY_CROSSMAE, tiny_model


@pytest.fixture(autouse=True)
def _drop_crossmae_log_handlers():
    """setup_logging binds handlers to the current test's stderr and run dir: drop them afterwards, so no
    later test logs into a closed stream."""
    yield
    logger = logging.getLogger("crossmae")
    for handler in logger.handlers[:]:
        logger.removeHandler(handler)
        handler.close()


# one intra-op thread: tiny models gain nothing from more, and a loaded machine loses a lot (measured ~6x)
torch.set_num_threads(int(os.environ.get("CROSSMAE_TEST_THREADS", "1")))


@pytest.fixture(scope="session")
def tiny_checkpoint(tmp_path_factory):
    """A randomly initialised tiny CrossMAE saved in the toolkit's checkpoint format (for loading tests)."""
    from crossmae.engine import save_checkpoint
    torch.manual_seed(0)
    model = tiny_model()
    path = tmp_path_factory.mktemp("tiny_ckpt") / "checkpoint.pth"
    save_checkpoint({"model": model.state_dict(), "epoch": 0, "config": {"model": TINY_CROSSMAE}}, path)
    return path


@pytest.fixture(scope="session")
def tiny_hiera_checkpoint(tmp_path_factory):
    """A randomly initialised tiny CrossMAE-Hiera checkpoint (tests/tiny.py TINY_CROSSMAE_HIERA)."""
    from tiny import save_tiny_hiera_checkpoint
    return save_tiny_hiera_checkpoint(tmp_path_factory.mktemp("tiny_hiera_ckpt") / "checkpoint.pth")


@pytest.fixture(scope="session")
def pretrained_demo_run(tmp_path_factory):
    """Run directory of a short demo pretraining (bundled photos, ~1 minute on 2 cores):
    checkpoint.pth, results.json, train_log.jsonl, epoch_log.jsonl, demo_data/{train,val}/<photo>/*.png."""
    from crossmae.pretrain import main
    out = tmp_path_factory.mktemp("demo_pretrain")
    # the model is pinned here (not taken from demo.yaml) because downstream thresholds were measured on it
    model = ["model.embed_dim=128", "model.depth=4", "model.num_heads=4", "model.decoder_embed_dim=96",
             "model.decoder_depth=2", "model.decoder_num_heads=4", "model.norm_pix_loss=false"]
    main(str(REPO / "configs/pretrain/demo.yaml"),
         [f"output_dir={out}", "epochs=8", "num_vis=4", "data.num_workers=0", *model])
    return out
