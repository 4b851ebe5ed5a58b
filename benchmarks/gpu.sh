#!/usr/bin/env bash
# Everything a lent GPU should measure, in one command (benchmarks/README.md, "On a GPU").
#   bash benchmarks/gpu.sh [OUT]            # default OUT: benchmarks/results/gpu-<date>
#   bash benchmarks/gpu.sh OUT --dry        # the same steps on the CPU, CUDA parts skipped
# Each step runs in its own process under a 9-minute limit; OUT/summary.md gathers them.
set -euo pipefail
cd "$(dirname "$0")/.."
out="benchmarks/results/gpu-$(date -u +%Y%m%d-%H%M)"
if [[ $# -gt 0 && "$1" != -* ]]; then out="$1"; shift; fi
export TRANSFORMERS_VERBOSITY=error DIFFUSERS_VERBOSITY=error HF_HUB_OFFLINE=1
python3 -m faseg_rt.bench.gpu --out "$out" "$@"
echo "results: $out/summary.md"
