"""``python -m cls_transfer --config configs/cls_transfer/<recipe>.yaml [key=value ...]``"""
import argparse
import sys

from crossmae.cli import report_errors

from . import main


def cli(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m cls_transfer",
                                     description="fine-tune a pretrained encoder on iNat2019 / Places365 / an ImageFolder")
    parser.add_argument("--config", help="YAML recipe under configs/cls_transfer/")
    parser.add_argument("overrides", nargs="*", help="dotted overrides, e.g. data.path=/data/places365 pretrained=ckpt.pth")
    args = parser.parse_intermixed_args(argv)  # options may follow key=value overrides
    return report_errors("cls_transfer", main, args.config, args.overrides)


if __name__ == "__main__":
    sys.exit(cli())
