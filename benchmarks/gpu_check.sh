#!/usr/bin/env bash
# The GPU check on the lent device machine (one H100/H200, Python 3.12, no network): benchmarks/gpu_check.py with
# the carried site-packages and tokenizer. Always leaves $OUT/gpu_check.json and every log under $OUT/logs/.
#
# Here, once (a CUDA-less machine with network and the project installed): build the carried folder .device/
# (git-ignored): the site tarball of ../shared/device/build_site.sh (~45 MB) and the embedded model's tokenizer
# files (~4 MB; the model file itself does not fit, so the device builds a random-init 1B-class Llama):
#
#   bash benchmarks/gpu_check.sh --build-carry [extra pip specs for build_site.sh]
#
# On the device: the run tool with command "bash benchmarks/gpu_check.sh", carry [".device"], timeout_s 600.
# GPU_CHECK_BUDGET_S (default 540) is the check's own wall-time budget: its later phases are skipped, recorded,
# rather than the call timing out. On a CPU, the same phases in a few minutes:
#
#   python benchmarks/gpu_check.py --dry-run --out /tmp/gpu-check
set -u
cd "$(dirname "$0")/.."

if [ "${1:-}" = "--build-carry" ]; then
  shift
  set -e
  build_site=${BUILD_SITE:-../shared/device/build_site.sh}
  [ -f "$build_site" ] || build_site=/work/shared/device/build_site.sh
  bash "$build_site" "$PWD/.device" "$@"   # an absolute OUT_DIR: the script cd-s before writing it
  rm -rf .device/tokenizer
  "${PYTHON:-python3}" - <<'EOF'
import shutil
from pathlib import Path

from tuner.trial.embedded import embedded_model_path

source, target = embedded_model_path(), Path(".device/tokenizer")
target.mkdir(parents=True)
for path in source.iterdir():  # every file but the weights
    if path.is_file() and not path.name.endswith(".safetensors"):
        shutil.copy2(path, target / path.name)
print("tokenizer files:", sorted(p.name for p in target.iterdir()))
EOF
  du -sh .device .device/*
  exit 0
fi

OUT=${OUT:-$PWD/gpu-check-out}
mkdir -p "$OUT/logs"
{
  date -u
  nvidia-smi
  nvidia-smi --query-gpu=name,memory.total,memory.used,driver_version,compute_mode --format=csv
  python3 --version
  nproc; free -g; df -h /tmp
} > "$OUT/logs/nvidia-smi.log" 2>&1

started=$(date +%s)
if ! tar xJf .device/site.tar.xz -C /tmp > "$OUT/logs/site.log" 2>&1; then
  echo "tar xJf .device/site.tar.xz failed: see logs/site.log" | tee -a "$OUT/logs/site.log"
fi
echo "site unpacked in $(( $(date +%s) - started )) s" >> "$OUT/logs/site.log"
export PYTHONPATH=/tmp/devsite:$PWD HF_HUB_OFFLINE=1 UNSLOTH_DISABLE_STATISTICS=1

python3 benchmarks/gpu_check.py --out "$OUT" --tokenizer .device/tokenizer --budget-s "${GPU_CHECK_BUDGET_S:-540}" \
  --work /tmp/gpu-check 2>&1 | tee "$OUT/logs/gpu_check.log"
rc=${PIPESTATUS[0]}

nvidia-smi > "$OUT/logs/nvidia-smi.after.log" 2>&1
if [ ! -s "$OUT/gpu_check.json" ]; then
  printf '{"error": "benchmarks/gpu_check.py exited %s before writing its figures; see logs/gpu_check.log"}\n' \
    "$rc" > "$OUT/gpu_check.json"
fi
exit "$rc"
