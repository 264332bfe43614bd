#!/usr/bin/env bash
# A paper-scale Omniglot cell (Leap, 20 pretraining alphabets, then no pretraining on the same split) on one GPU in
# one short window: equality checks on the device, throughput, then the two runs (scripts/gpu_paper_cell.py).
#   LEAP_DATA_DIR=<datasets> bash scripts/gpu_paper_cell.sh            # on a GPU; at most --budget seconds (480)
#   LEAP_DATA_DIR=<datasets> bash scripts/gpu_paper_cell.sh --smoke    # the CPU form, seconds (tests run it)
# A run cut off by the budget checkpoints; calling the script again resumes it. Writes
# results/bench/gpu_paper_cell.json and exports the finished runs to results/omniglot/paper/runs/.
# On a machine that has only this checkout (no datasets beside it), bring Omniglot and the image cache along:
#   mkdir -p .device && tar czf .device/omniglot.tgz -C <datasets>/omniglot images_background images_evaluation
#   (there) mkdir -p /tmp/data/omniglot && tar xzf .device/omniglot.tgz -C /tmp/data/omniglot &&
#           LEAP_DATA_DIR=/tmp/data PYTHONPATH=src bash scripts/gpu_paper_cell.sh      (with .device and .cache)
set -euo pipefail
cd "$(dirname "$0")/.."
export PYTHONUNBUFFERED=1 WANDB_MODE=${WANDB_MODE:-disabled} LEAP_CACHE_DIR=${LEAP_CACHE_DIR:-.cache}
exec "${PY:-python}" scripts/gpu_paper_cell.py "$@"
