#!/usr/bin/env bash
# The RESULTS.md trainings, one after another, each resumable (re-running this script
# continues from the per-epoch checkpoints). Logs: runs/<name>.out, runs/<name>.log.csv.
set -u
cd "$(dirname "$0")/.."
DATA=${PYCONV_DATA:-../shared/data}
run() {  # name, then pyconv train arguments
  local name=$1; shift
  if [ -f "runs/$name.pyconv" ]; then echo "$name: done already"; return; fi
  local resume=()  # --resume refuses to start without a checkpoint
  if [ -f "runs/$name.ckpt.pyconv" ]; then resume=(--resume); fi
  pyconv train "$@" --data-dir "$DATA" --out "runs/$name.pyconv" ${resume[@]+"${resume[@]}"} --verbose 2 \
    >> "runs/$name.out" 2>&1
}
run mnist_cnn --model mnist_cnn --dataset mnist --augment --epochs 12
run fashion_cnn --model fashion_cnn --dataset fashion_mnist --augment
run mnist_cnn_e20 --model mnist_cnn --dataset mnist --augment --epochs 20
run cifar10_cnn --model cifar10_cnn --dataset cifar10 --augment
