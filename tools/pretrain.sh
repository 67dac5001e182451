#!/usr/bin/env bash
# Pretraining launcher.
#   tools/pretrain.sh                                   the embedded demo (any machine, CPU is fine)
#   tools/pretrain.sh CONFIG DATA_PATH [key=value ...]  torchrun on every local GPU
# Multi-node: run the same command on every node with NNODES, NODE_RANK, MASTER_ADDR (and MASTER_PORT) set.
# NGPUS overrides the number of processes per node. SLURM clusters: tools/submit_slurm.py.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
PYTHON="${PYTHON:-python}"

if [ $# -eq 0 ]; then
  exec "$PYTHON" -m crossmae.cli pretrain --config "$ROOT/configs/pretrain/demo.yaml"
fi
if [ $# -lt 2 ]; then
  echo "usage: $0 [CONFIG DATA_PATH [key=value ...]]" >&2
  exit 2
fi
CONFIG="$1"; DATA="$2"; shift 2
NGPUS="${NGPUS:-$("$PYTHON" -c 'import torch; print(max(1, torch.cuda.device_count()))')}"
exec torchrun --nnodes="${NNODES:-1}" --node_rank="${NODE_RANK:-0}" --nproc_per_node="$NGPUS" \
  --master_addr="${MASTER_ADDR:-127.0.0.1}" --master_port="${MASTER_PORT:-29500}" \
  -m crossmae.cli pretrain --config "$CONFIG" data.path="$DATA" "$@"
