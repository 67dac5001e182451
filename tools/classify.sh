#!/usr/bin/env bash
# Shared body of tools/finetune.sh, tools/linprobe.sh and tools/cls_transfer.sh.
#   tools/classify.sh TASK                                              the CPU demo (needs output/demo/checkpoint.pth
#                                                                      from the pretraining demo: tools/pretrain.sh)
#   tools/classify.sh TASK CONFIG PRETRAINED DATA_PATH [key=value ...]  every local GPU (multi-node: see launch.sh)
#   tools/classify.sh TASK CONFIG "" "" eval_only=true resume=CKPT data.path=DATA   evaluate a trained checkpoint
# TASK: finetune | linprobe | cls_transfer
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
TASK="$1"; shift
case "$TASK" in  # the classification tasks: a configs/$TASK/demo.yaml each, and a pretrained encoder
  finetune|linprobe|cls_transfer) ;;
  *) echo "unknown task $TASK (finetune, linprobe, cls_transfer)" >&2; exit 2 ;;
esac
ENTRY=(-m crossmae.cli "$TASK")  # the program of each task: crossmae/tasks.py (cls_transfer: cls-transfer's alias)
if [ $# -eq 0 ]; then
  exec "$ROOT/tools/launch.sh" "${ENTRY[@]}" --config "$ROOT/configs/$TASK/demo.yaml"
fi
if [ $# -lt 3 ]; then
  echo "usage: tools/$TASK.sh [CONFIG PRETRAINED DATA_PATH [key=value ...]]" >&2
  exit 2
fi
CONFIG="$1"; PRETRAINED="$2"; DATA="$3"; shift 3
ARGS=()
[ -n "$PRETRAINED" ] && ARGS+=("pretrained=$PRETRAINED")
[ -n "$DATA" ] && ARGS+=("data.path=$DATA")
exec "$ROOT/tools/launch.sh" "${ENTRY[@]}" --config "$CONFIG" "${ARGS[@]}" "$@"
