#!/usr/bin/env bash
# Train stsun_base in bf16 on synthetic batches on one GPU for about a minute and report
# samples per second, model FLOPs utilisation (MFU) and peak memory.
#
#   bash benchmarks/gpu_check.sh                       # stsun_base, B=16, 256², 50 steps
#   bash benchmarks/gpu_check.sh --batch-size 32 --compile
#   bash benchmarks/gpu_check.sh --peak-tflops 989     # a GPU the script does not know
#
# Extra options go to benchmarks/gpu_check.py (see its --help). The report is printed and
# written to benchmarks/results/gpu_check.json. Refuses to run without CUDA; the Python
# part alone runs on a CPU for a smoke test:
#   python benchmarks/gpu_check.py --model stsun_tiny --device cpu --steps 3
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-.venv/bin/python}
[[ -x $PY ]] || PY=python

if ! command -v nvidia-smi >/dev/null 2>&1 || ! nvidia-smi -L >/dev/null 2>&1; then
  echo "gpu_check: no NVIDIA GPU here (nvidia-smi finds none); this check needs CUDA." >&2
  exit 2
fi
if ! "$PY" -c 'import sys, torch; sys.exit(0 if torch.cuda.is_available() else 1)'; then
  echo "gpu_check: PyTorch sees no CUDA device ($("$PY" -c 'import torch; print(torch.__version__)'))." >&2
  echo "           Install a CUDA build of torch, or check CUDA_VISIBLE_DEVICES." >&2
  exit 2
fi
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
mkdir -p benchmarks/results
# At most 5 minutes, compilation included; one GPU.
timeout 300 env CUDA_VISIBLE_DEVICES="${CUDA_VISIBLE_DEVICES:-0}" \
  "$PY" benchmarks/gpu_check.py --model stsun_base --device cuda \
  --out benchmarks/results/gpu_check.json "$@"
