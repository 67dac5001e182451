#!/usr/bin/env bash
# Run a Python program on every local GPU with torchrun, or as one plain process when there is one GPU or none
# (CPU runs need no torchrun). Multi-node: run the same command on every node with NNODES, NODE_RANK,
# MASTER_ADDR (and MASTER_PORT) set. NGPUS overrides the number of processes per node.
#   tools/launch.sh -m crossmae.cli finetune --config configs/finetune/vit_base.yaml pretrained=... data.path=...
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
PYTHON="${PYTHON:-python}"
export PYTHONPATH="$ROOT${PYTHONPATH:+:$PYTHONPATH}"  # works from a checkout that is not pip-installed too
NGPUS="${NGPUS:-$("$PYTHON" -c 'import torch; print(max(1, torch.cuda.device_count()))')}"
if [ "$NGPUS" -eq 1 ] && [ "${NNODES:-1}" -eq 1 ]; then
  exec "$PYTHON" "$@"
fi
exec "$PYTHON" -m torch.distributed.run --nnodes="${NNODES:-1}" --node_rank="${NODE_RANK:-0}" --nproc_per_node="$NGPUS" \
  --master_addr="${MASTER_ADDR:-127.0.0.1}" --master_port="${MASTER_PORT:-29500}" "$@"
