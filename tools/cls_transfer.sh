#!/usr/bin/env bash
# cls_transfer launcher.
#   tools/cls_transfer.sh                                              the CPU demo (needs the pretraining demo's
#                                                             output/demo/checkpoint.pth: tools/pretrain.sh)
#   tools/cls_transfer.sh CONFIG PRETRAINED DATA_PATH [key=value ...]  torchrun on every local GPU
#   tools/cls_transfer.sh CONFIG "" "" eval_only=true resume=CKPT data.path=DATA   evaluate a trained checkpoint
# Multi-node: run the same command on every node with NNODES, NODE_RANK, MASTER_ADDR (and MASTER_PORT) set.
# NGPUS overrides the number of processes per node. SLURM clusters: tools/submit_slurm.py.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
PYTHON="${PYTHON:-python}"
export PYTHONPATH="$ROOT${PYTHONPATH:+:$PYTHONPATH}"

if [ $# -eq 0 ]; then
  exec "$PYTHON" -m cls_transfer --config "$ROOT/configs/cls_transfer/demo.yaml"
fi
if [ $# -lt 3 ]; then
  echo "usage: $0 [CONFIG PRETRAINED DATA_PATH [key=value ...]]" >&2
  exit 2
fi
CONFIG="$1"; PRETRAINED="$2"; DATA="$3"; shift 3
ARGS=()
[ -n "$PRETRAINED" ] && ARGS+=("pretrained=$PRETRAINED")
[ -n "$DATA" ] && ARGS+=("data.path=$DATA")
NGPUS="${NGPUS:-$("$PYTHON" -c 'import torch; print(max(1, torch.cuda.device_count()))')}"
if [ "$NGPUS" -eq 1 ] && [ "${NNODES:-1}" -eq 1 ]; then  # one process (a single GPU, or CPU): no torchrun
  exec "$PYTHON" -m cls_transfer --config "$CONFIG" "${ARGS[@]}" "$@"
fi
exec torchrun --nnodes="${NNODES:-1}" --node_rank="${NODE_RANK:-0}" --nproc_per_node="$NGPUS" \
  --master_addr="${MASTER_ADDR:-127.0.0.1}" --master_port="${MASTER_PORT:-29500}" \
  -m cls_transfer --config "$CONFIG" "${ARGS[@]}" "$@"
