#!/usr/bin/env bash
# finetune launcher.
#   tools/finetune.sh                                              the CPU demo (needs output/demo/checkpoint.pth
#                                                             from the pretraining demo: tools/pretrain.sh)
#   tools/finetune.sh CONFIG PRETRAINED DATA_PATH [key=value ...]  every local GPU (multi-node: see launch.sh)
#   tools/finetune.sh CONFIG "" "" eval_only=true resume=CKPT data.path=DATA   evaluate a trained checkpoint
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
if [ $# -eq 0 ]; then
  exec "$ROOT/tools/launch.sh" -m crossmae.cli finetune --config "$ROOT/configs/finetune/demo.yaml"
fi
if [ $# -lt 3 ]; then
  echo "usage: $0 [CONFIG PRETRAINED DATA_PATH [key=value ...]]" >&2
  exit 2
fi
CONFIG="$1"; PRETRAINED="$2"; DATA="$3"; shift 3
ARGS=()
[ -n "$PRETRAINED" ] && ARGS+=("pretrained=$PRETRAINED")
[ -n "$DATA" ] && ARGS+=("data.path=$DATA")
exec "$ROOT/tools/launch.sh" -m crossmae.cli finetune --config "$CONFIG" "${ARGS[@]}" "$@"
