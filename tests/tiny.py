"""Tiny models shared by the tests (a module, not conftest, so any test can import it unambiguously:
tests/det has a conftest.py of its own)."""
from __future__ import annotations

from pathlib import Path

REPO = Path(__file__).resolve().parents[1]

# a tiny CrossMAE: 32 px images, 4 px patches (8 x 8 grid), 4 encoder blocks of width 64
TINY_CROSSMAE = dict(name="crossmae_vit_small_patch16", img_size=32, patch_size=4, embed_dim=64, depth=4,
                     num_heads=4, decoder_embed_dim=32, decoder_depth=2, decoder_num_heads=4)


def tiny_model(**overrides):
    from crossmae.models import build_model
    kwargs = {**TINY_CROSSMAE, **overrides}
    return build_model(kwargs.pop("name"), **kwargs)


# a tiny CrossMAE-Hiera as `crossmae pretrain` records it (factory name + overrides): 32 px, 3x3/2 patch conv
# (16 x 16 tokens), mask units of 4 x 4 tokens (8 px), stages 1-2-1 of width 16-32-64
TINY_CROSSMAE_HIERA = dict(name="crossmae_hiera_tiny_224", img_size=32, embed_dim=16, num_heads=1, stages=[1, 2, 1],
                           q_pool=1, mask_unit_size=4, mask_unit_attn=[True, False, False], patch_kernel=3,
                           patch_stride=2, patch_padding=1, decoder_embed_dim=32, decoder_depth=2,
                           decoder_num_heads=2)


def save_tiny_hiera_checkpoint(path: Path, seed: int = 0, **overrides) -> Path:
    """A randomly initialised tiny CrossMAE-Hiera in the toolkit's checkpoint format."""
    import torch
    from crossmae.engine import save_checkpoint
    torch.manual_seed(seed)
    config = {**TINY_CROSSMAE_HIERA, **overrides}
    from crossmae.models import build_model
    model = build_model(**config)
    save_checkpoint({"model": model.state_dict(), "epoch": 0, "config": {"model": config}}, path)
    return path


def free_port() -> int:
    import socket
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def spawn_ranks(fn, world: int, args: tuple, outputs: list[Path], timeout: float = 300, grace: float = 30) -> None:
    """Run ``fn(rank, *args)`` in ``world`` spawned processes and wait until they exit. Once every file in
    ``outputs`` exists (the ranks' work is done), a process still alive after ``grace`` seconds is
    terminated: gloo's teardown can hang for good on torch 2.5 (``destroy_process_group`` of rank 0 never
    returned after rank 1 had exited, once in CI), a torch bug that must not hang the suite. A rank that
    fails, or no output after ``timeout``, fails the test."""
    import time
    import warnings

    import torch.multiprocessing as mp
    ctx = mp.start_processes(fn, args=args, nprocs=world, join=False, start_method="spawn")
    deadline, done_at = time.monotonic() + timeout, None
    while not ctx.join(timeout=0.5):  # raises if a rank failed
        now = time.monotonic()
        if done_at is None and all(Path(p).exists() for p in outputs):
            done_at = now
        if done_at is not None and now - done_at > grace:
            warnings.warn(f"terminating ranks stuck in process-group teardown after their work was done ({fn.__name__})")
            for p in ctx.processes:
                if p.is_alive():
                    p.terminate()
            return
        if done_at is None and now > deadline:
            for p in ctx.processes:
                p.terminate()
            raise TimeoutError(f"{fn.__name__}: no result after {timeout:.0f} s")
