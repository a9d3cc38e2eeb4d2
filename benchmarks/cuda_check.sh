#!/usr/bin/env bash
# CUDA check on a GPU machine: the CUDA tests (tests/test_cuda.py, GPU against the CPU reference) and the PPO
# throughput on the GPU and on the CPU of the same machine, measured in the same run.
#
#   bash benchmarks/cuda_check.sh [WHEEL_DIR] [OUT_DIR]
#
# WHEEL_DIR (optional): wheels of the pure-Python dependencies to install offline first (the GPU machines used here
# have torch but cannot reach PyPI: stable-baselines3, sb3-contrib, gymnasium, farama-notifications, minigrid,
# pygame-ce). Everything is logged to OUT_DIR/cuda_check.log (default: ./cuda_check.log).
set -uo pipefail
cd "$(dirname "$0")/.."
wheels="${1:-}"
out="${2:-.}"
mkdir -p "$out"
log="$out/cuda_check.log"
exec > >(tee "$log") 2>&1
if [ -n "$wheels" ]; then
    python3 -m pip install -q --no-deps --no-index "$wheels"/*.whl || exit 1
fi
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
python3 -c "import torch, sys; print('python', sys.version.split()[0], 'torch', torch.__version__, 'cuda', torch.version.cuda, torch.cuda.get_device_name(0))"
start=$(date +%s)
python3 -m pytest -q -p no:cacheprovider tests/test_cuda.py -o addopts="" --timeout 300
status=$?
echo "tests/test_cuda.py exit $status in $(( $(date +%s) - start )) s"
for device in cuda cpu; do
    timeout 200 python3 benchmarks/ppo_speed.py --quick --device "$device" --only MemoryPPO RecurrentPPO PPO $([ "$device" = cuda ] && echo MemoryPPO+compile)
done
exit $status
