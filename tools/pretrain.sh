#!/usr/bin/env bash
# Pretraining launcher.
#   tools/pretrain.sh                                   the embedded demo (any machine, CPU is fine)
#   tools/pretrain.sh CONFIG DATA_PATH [key=value ...]  every local GPU (multi-node and NGPUS: see launch.sh)
# SLURM clusters: tools/submit_slurm.py.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
if [ $# -eq 0 ]; then
  exec "$ROOT/tools/launch.sh" -m crossmae.cli pretrain --config "$ROOT/configs/pretrain/demo.yaml"
fi
if [ $# -lt 2 ]; then
  echo "usage: $0 [CONFIG DATA_PATH [key=value ...]]" >&2
  exit 2
fi
CONFIG="$1"; DATA="$2"; shift 2
exec "$ROOT/tools/launch.sh" -m crossmae.cli pretrain --config "$CONFIG" data.path="$DATA" "$@"
