#!/usr/bin/env bash
# The GPU checks of deepmargin, in one run on a machine with CUDA (CI has none).
# Usage: bash benchmarks/gpu_check.sh [OUT_DIR]   (about 10 minutes on one recent GPU)
# Writes OUT_DIR/*.txt: the test suite with CUDA visible, the step cost (float32; bf16 autocast;
# per-class gradients in a loop or vmapped), the attack speed, and a DDP smoke run on all GPUs.
set -u
out="${1:-${OUT:-gpu-check}}"
mkdir -p "$out"
python3 -m pip install -q torch==2.13.0 2>/dev/null || true   # the machine's CUDA build may already be there
python3 -m pip install -q -e ".[test]"
{ nvidia-smi; python3 -c "import torch; print(torch.__version__, torch.version.cuda, torch.cuda.get_device_name(0))"; } > "$out/device.txt" 2>&1
timeout 900 python3 -m pytest -q -x > "$out/tests.txt" 2>&1; echo "tests rc=$?" >> "$out/tests.txt"
timeout 600 python3 benchmarks/step_cost.py --device cuda > "$out/step_cost.txt" 2>&1
timeout 600 python3 benchmarks/step_cost.py --device cuda --others --memory > "$out/step_cost_memory.txt" 2>&1
timeout 600 python3 benchmarks/autocast_cost.py --device cuda > "$out/autocast_cost.txt" 2>&1
timeout 600 python3 benchmarks/attack_speed.py --device cuda > "$out/attack_speed.txt" 2>&1
n=$(python3 -c "import torch; print(torch.cuda.device_count())")
if [ "$n" -ge 2 ]; then
  timeout 600 torchrun --standalone --nproc_per_node "$n" -m deepmargin train --preset margin-l2 --device cuda \
    --epochs 2 --out "$out/ddp-run" > "$out/ddp.txt" 2>&1; echo "ddp rc=$?" >> "$out/ddp.txt"
else
  echo "one GPU: DDP over NCCL not checked (the CPU tests cover gloo)" > "$out/ddp.txt"
fi
tail -n 3 "$out"/*.txt
