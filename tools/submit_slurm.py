#!/usr/bin/env python
"""Submit a toolkit command to SLURM with submitit: one task per GPU over N nodes.

    python tools/submit_slurm.py --nodes 4 --gpus-per-node 8 --partition gpu --timeout 4320 -- \
        pretrain --config configs/pretrain/crossmae_vit_large.yaml data.path=/data/imagenet

The command after ``--`` is a ``crossmae`` command: a task of crossmae/tasks.py (pretrain, finetune, linprobe,
det, seg, cls-transfer) and its arguments.

A job stopped at its time limit or preempted is requeued and resumes from ``<output_dir>/checkpoint.pth``.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

if not __package__:  # run as `python tools/<name>.py`: the checkout's root on sys.path (tools/_checkout.py)
    import _checkout  # noqa: F401


class Task:
    def __init__(self, argv: list[str]):
        self.argv = argv

    def __call__(self) -> int:
        import submitit
        # sets RANK / WORLD_SIZE / LOCAL_RANK / MASTER_ADDR / MASTER_PORT from the SLURM job
        submitit.helpers.TorchDistributedEnvironment().export(set_cuda_visible_devices=False)
        from crossmae.cli import main
        return main(self.argv)

    def checkpoint(self):
        import submitit
        return submitit.helpers.DelayedSubmission(Task(self.argv))  # auto-resume picks up checkpoint.pth


def parse(argv: list[str]) -> tuple[argparse.Namespace, list[str]]:
    usage = "submit_slurm.py [options] -- <crossmae command and arguments>"
    split = argv.index("--") if "--" in argv else len(argv)
    p = argparse.ArgumentParser(usage=usage, description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--nodes", type=int, default=1)
    p.add_argument("--gpus-per-node", type=int, default=8)
    p.add_argument("--cpus-per-task", type=int, default=10)
    p.add_argument("--mem-gb", type=int, default=0, help="0 = all of the node's memory")
    p.add_argument("--timeout", type=int, default=4320, help="minutes")
    p.add_argument("--partition", default=None)
    p.add_argument("--account", default=None)
    p.add_argument("--constraint", default=None)
    p.add_argument("--job-dir", default="output/slurm/%j")
    p.add_argument("--name", default="crossmae")
    p.add_argument("--dry-run", action="store_true", help="print the executor parameters, submit nothing")
    args = p.parse_args(argv[:split])  # --help too
    if split == len(argv):
        raise SystemExit(f"usage: {usage}")
    return args, argv[split + 1:]


def main(argv: list[str]) -> int:
    args, command = parse(argv)
    extra = {k: v for k, v in {"account": args.account, "constraint": args.constraint}.items() if v}
    params = dict(name=args.name, nodes=args.nodes, gpus_per_node=args.gpus_per_node,
                  tasks_per_node=args.gpus_per_node, cpus_per_task=args.cpus_per_task, timeout_min=args.timeout,
                  slurm_partition=args.partition, slurm_signal_delay_s=120, slurm_additional_parameters=extra)
    if args.mem_gb:
        params["mem_gb"] = args.mem_gb
    if args.dry_run:
        print(f"would submit: crossmae {' '.join(command)}\nwith {params}")
        return 0
    import submitit
    executor = submitit.AutoExecutor(folder=Path(args.job_dir), cluster="slurm", slurm_max_num_timeout=30)
    executor.update_parameters(**params)
    job = executor.submit(Task(command))
    print(f"submitted job {job.job_id}; logs in {args.job_dir}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
