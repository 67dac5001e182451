"""``python -m cls_transfer --config configs/cls_transfer/<recipe>.yaml [key=value ...]``"""
import argparse
import sys

from . import main


def cli(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m cls_transfer",
                                     description="fine-tune a pretrained encoder on iNat2019 / Places365 / an ImageFolder")
    parser.add_argument("--config", help="YAML recipe under configs/cls_transfer/")
    parser.add_argument("overrides", nargs="*", help="dotted overrides, e.g. data.path=/data/places365 pretrained=ckpt.pth")
    args = parser.parse_args(argv)
    try:
        main(args.config, args.overrides)
    except (ValueError, FileNotFoundError, KeyError) as e:
        print(f"cls_transfer: error: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(cli())
