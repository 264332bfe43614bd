#!/usr/bin/env bash
# Check the runner on a GPU: smoke runs with device=cuda of Omniglot (Leap, batched=true Leap, fine-tuning, Reptile,
# 2 torchrun ranks sharing GPU 0 over gloo; nccl needs one GPU per rank) and Multi-CV (Leap, fine-tuning, scratch,
# on facescrub/notMNIST/MNIST), with the same Leap runs on the CPU beside them. Smoke scale: scores are near
# chance by design; the check is that every path runs on the device and writes its results.
#   LEAP_DATA_DIR=<datasets> bash scripts/check_gpu.sh        (results/bench/gpu_runner_check.json came from it)
set -euo pipefail
export PYTHONUNBUFFERED=1 LEAP_RUNS_DIR=${LEAP_RUNS_DIR:-$(mktemp -d)} LEAP_CACHE_DIR=${LEAP_CACHE_DIR:-.cache}
PY=${PY:-python}
O="experiment=omniglot scale=smoke progress=false"
M="experiment=multicv scale=smoke progress=false data.datasets=[facescrub,notmnist,mnist] heldout=mnist"
for args in "$O method=leap" "$O method=leap device=cpu tag=-cpu" "$O method=leap batched=true tag=-batched" \
            "$O method=finetune" "$O method=reptile" "$M method=leap" "$M method=finetune" "$M method=scratch" \
            "$M method=leap device=cpu tag=-cpu"; do
  $PY run.py device=cuda $args  # a later device= on the line wins
done
LEAP_DIST_BACKEND=gloo $PY -m torch.distributed.run --standalone --nproc_per_node=2 run.py $O method=leap \
  device=cuda:0 tag=-2ranks
$PY - "$LEAP_RUNS_DIR" <<'PY'
import json, sys
from pathlib import Path
for f in sorted(Path(sys.argv[1]).rglob("summary.json")):
    s = json.loads(f.read_text())
    print(f"{str(f.parent.relative_to(sys.argv[1])):45s} {s['status']:9s} {s.get('device', '?'):7s} "
          f"ranks {s.get('world_size')}  {s['wall_time_s']:6.1f} s  test error {s['test']['error']:.1f}")
PY
