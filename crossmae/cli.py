"""``crossmae <command> [--config FILE] [key=value ...]``: one console entry for every task."""
from __future__ import annotations

import argparse
import importlib
import sys

# command -> (module with main(config, overrides), help)
COMMANDS = {
    "pretrain": ("crossmae.pretrain", "pretrain CrossMAE or MAE (no config: the embedded demo)"),
    "finetune": ("crossmae.finetune", "fine-tune a pretrained encoder for classification (eval_only=true: evaluate)"),
    "linprobe": ("crossmae.linprobe", "linear probe of a frozen pretrained encoder"),
}
DEMO_CONFIG = "configs/pretrain/demo.yaml"

# what bad input raises (ConfigError and CheckpointError are ValueErrors): reported in one line, exit code 2
USER_ERRORS = (ValueError, FileNotFoundError, KeyError)


def report_errors(prog: str, fn, *args, **kwargs) -> int:
    """Run ``fn``; a user error becomes ``<prog>: error: <message>`` on stderr and exit code 2."""
    try:
        fn(*args, **kwargs)
    except USER_ERRORS as e:
        print(f"{prog}: error: {e}", file=sys.stderr)
        return 2
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="crossmae", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    for name, (_, help_text) in COMMANDS.items():
        p = sub.add_parser(name, help=help_text)
        p.add_argument("--config", help="YAML recipe under configs/")
        p.add_argument("overrides", nargs="*", help="dotted overrides, e.g. optim.blr=1e-4 model.pred_ratio=0.25")
    args = parser.parse_args(argv)
    module = importlib.import_module(COMMANDS[args.command][0])
    return report_errors(f"crossmae {args.command}", module.main, args.config, args.overrides)


if __name__ == "__main__":
    sys.exit(main())
