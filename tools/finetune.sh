#!/usr/bin/env bash
# finetune launcher: no arguments = the CPU demo; CONFIG PRETRAINED DATA_PATH [key=value ...] = every local GPU.
# Details: tools/classify.sh.
exec "$(dirname "${BASH_SOURCE[0]}")/classify.sh" finetune "$@"
