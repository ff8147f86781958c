#!/usr/bin/env bash
# The GPU checks of the kernels issue, as one script: GPU tests, then the kernel benchmark.
# Usage on a CUDA machine from the repository root: bash benchmarks/gpu_check.sh [OUT_DIR]
set -uo pipefail
out=${1:-gpu_check_out}
mkdir -p "$out"
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
date -u +"%Y-%m-%d %H:%M UTC" | tee "$out/date.txt"
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader | tee "$out/device.txt"
python3 -c "import torch, torchvision, cupy; print('torch', torch.__version__, 'torchvision', torchvision.__version__, 'cupy', cupy.__version__)" | tee -a "$out/device.txt"
timeout "${TEST_TIMEOUT:-300}" python3 -m pytest -q -rs -p no:cacheprovider tests/test_cuda.py 2>&1 | tee "$out/gpu_tests.log"
timeout "${BENCH_TIMEOUT:-200}" python3 benchmarks/kernels.py --repeat "${REPEAT:-30}" --out "$out/kernels.md" 2>&1 | tee "$out/bench.log"
# issue 13: model FLOPs utilisation of imprv_coco_1x at 800x1066 against torchvision's FCOS, and the speed table
timeout "${MFU_TIMEOUT:-150}" python3 benchmarks/gpu_efficiency.py --batch 8 --iters 10 --torchvision 2>&1 | tee "$out/mfu.log"
timeout "${SPEED_TIMEOUT:-100}" python3 benchmarks/speed.py --batch 8 --iters 10 2>&1 | tee "$out/speed.log"
