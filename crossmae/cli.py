"""``crossmae <command> [--config FILE] [key=value ...]``: one console entry for every task."""
from __future__ import annotations

import argparse
import errno
import importlib
import sys

from .errors import original_message
from .tasks import TASKS

DEMO_CONFIG = "configs/pretrain/demo.yaml"

# what bad input raises (ConfigError and CheckpointError are ValueErrors): reported in one line, exit code 2
USER_ERRORS = (ValueError, FileNotFoundError, KeyError)


# what to do about the environment errors a user meets most (the run itself is not at fault)
OS_HINTS = {
    errno.ENOSPC: "free some space and run the same command again: it resumes from the last checkpoint, "
                  "which a failed write leaves intact",
    errno.EDQUOT: "the disk quota is exhausted: free some space and run the same command again (it resumes)",
    errno.EROFS: "the file system is read-only: choose a writable output_dir",
    errno.EACCES: "no permission: choose a writable output_dir (or check the file's permissions)",
    errno.EPERM: "not permitted: choose a writable output_dir (or check the file's permissions)",
}


def error_message(e: BaseException) -> str:
    """The error's own message, also when torch re-raised it from a DataLoader worker (whose text is then
    the worker's whole traceback; crossmae.errors)."""
    return original_message(str(e), type(e))


def os_error_message(e: OSError) -> str:
    """One line: the path (when known), the cause and what to do."""
    where = f"{e.filename}: " if e.filename is not None else ""
    cause = e.strerror or error_message(e)
    code = errno.errorcode.get(e.errno, "") if e.errno is not None else ""
    hint = OS_HINTS.get(e.errno)
    return f"{where}{cause}" + (f" [{code}]" if code else "") + (f"; {hint}" if hint else "")


def report_errors(prog: str, fn, *args, **kwargs) -> int:
    """Run ``fn``; a user error becomes ``<prog>: error: <message>`` on stderr and exit code 2; an
    error of the machine (full disk, read-only or forbidden output dir) ``<prog>: error: <path>:
    <cause>; <what to do>`` and exit code 1, as does a diverged loss. Anything else is a bug and keeps
    its traceback."""
    try:
        fn(*args, **kwargs)
    except USER_ERRORS as e:  # FileNotFoundError (an OSError) is bad input: listed here first
        print(f"{prog}: error: {error_message(e)}", file=sys.stderr)
        return 2
    except OSError as e:
        print(f"{prog}: error: {os_error_message(e)}", file=sys.stderr)
        return 1
    except FloatingPointError as e:  # the loss diverged (crossmae.engine.loop.check_finite): says what to try
        print(f"{prog}: error: {error_message(e)}", file=sys.stderr)
        return 1
    return 0


def checked(owner: type, field: str, kind=int):
    """An argparse ``type`` that parses ``kind`` and applies the config check of ``owner.field``
    (crossmae.config): an option is refused in one line naming it, like a config field."""
    from .config import check_for
    check = check_for(owner, field)

    def parse(text: str):
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"invalid {kind.__name__} value: {text!r}") from None
        if not check.ok(value):
            raise argparse.ArgumentTypeError(f"{text} must be {check.describe()}")
        return value
    return parse


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="crossmae", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    commands, tasks = {}, {}
    for name, task in TASKS.items():
        # a task with its own command line parses it itself (below): here only its name and help
        p = sub.add_parser(name, help=task.help, aliases=task.aliases, add_help=task.cli is None)
        for alias in (name, *task.aliases):
            commands[alias], tasks[alias] = p, task
        if task.cli is None:
            p.add_argument("--config", help="YAML recipe under configs/")
            p.add_argument("overrides", nargs="*", help="dotted overrides, e.g. optim.blr=1e-4 model.pred_ratio=0.25")
    knn = commands["knn"] = sub.add_parser("knn", help="kNN top-1 of a pretraining checkpoint's encoder features "
                                                      "(k=20, cosine, DINO's weighted votes; crossmae/knn.py)")
    knn.add_argument("--checkpoint", required=True, help="a pretraining checkpoint of this toolkit")
    knn.add_argument("--data", required=True, help="labelled ImageFolder root with train/ (memory) and val/ (queries)")
    from .config import PretrainKnn
    knn_defaults = PretrainKnn()  # one set of defaults for the monitor in pretraining and this command
    knn.add_argument("--train-images", type=checked(PretrainKnn, "train_images"), default=knn_defaults.train_images,
                     help="memory-bank images (0 = all)")
    knn.add_argument("--val-images", type=checked(PretrainKnn, "val_images"), default=knn_defaults.val_images,
                     help="query images (0 = all)")
    knn.add_argument("--k", type=checked(PretrainKnn, "k"), default=knn_defaults.k)
    knn.add_argument("--temperature", type=checked(PretrainKnn, "temperature", float), default=knn_defaults.temperature)
    knn.add_argument("--pool", choices=("avg", "cls"), default=knn_defaults.pool)
    knn.add_argument("--batch-size", type=checked(PretrainKnn, "batch_size"), default=knn_defaults.batch_size)
    knn.add_argument("--num-workers", type=checked(PretrainKnn, "num_workers"), default=knn_defaults.num_workers)
    knn.add_argument("--random-init", action="store_true", help="the same architecture with random weights")
    from .export import add_arguments as add_export_arguments  # light: argparse only
    commands["export"] = sub.add_parser("export", help="a pretraining checkpoint -> a Hugging Face Hub directory "
                                        "(config.json + model.safetensors + model card), the encoder alone or a "
                                        "timm-loadable encoder (crossmae/export.py); --push uploads it")
    add_export_arguments(commands["export"])
    argv = sys.argv[1:] if argv is None else list(argv)
    if not argv or argv[0] not in commands:
        parser.parse_args(argv)  # --help, or the error naming the valid commands
    task = tasks.get(argv[0])
    if task is not None and task.cli:
        return getattr(importlib.import_module(task.module), task.cli)(argv[1:], prog=f"crossmae {argv[0]}")
    # argparse's intermixed parsing (options after key=value overrides) does not support subparsers:
    # the command's own parser does it
    args = commands[argv[0]].parse_intermixed_args(argv[1:])
    if argv[0] == "knn":
        from .knn import run
        return report_errors("crossmae knn", run, **vars(args))
    if argv[0] == "export":
        from .export import main as export
        return report_errors("crossmae export", export, args)
    module = importlib.import_module(task.module)
    return report_errors(f"crossmae {argv[0]}", module.main, args.config, args.overrides)


if __name__ == "__main__":
    sys.exit(main())
