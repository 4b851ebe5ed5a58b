#!/usr/bin/env bash
# A time-boxed, resumable benchmark for any CUDA GPU (benchmarks/README.md, "On a GPU").
#   bash benchmarks/gpu.sh [OUT] [--budget S] [--steps A,B]   # default OUT: benchmarks/results/gpu-<date>
#   bash benchmarks/gpu.sh OUT                                # again: continues where the budget stopped
#   bash benchmarks/gpu.sh OUT --dry                          # the same plan on the CPU, CUDA parts skipped
# Preflight first (imports, C compiler, free GPU memory); then steps of one variant x one batch
# size, each writing OUT/<step>.json as it measures; OUT/summary.md is rewritten after every step.
# No `set -e`: the last line is printed whatever a step did, with the command's exit status.
set -uo pipefail
cd "$(dirname "$0")/.." || exit 2
out="benchmarks/results/gpu-$(date -u +%Y%m%d-%H%M)"
if [[ $# -gt 0 && "$1" != -* ]]; then out="$1"; shift; fi
export TRANSFORMERS_VERBOSITY=error DIFFUSERS_VERBOSITY=error HF_HUB_OFFLINE=1
python3 -m faseg_rt.bench.gpu --out "$out" "$@"
rc=$?
echo "results: $out/summary.md (exit status $rc)"
exit $rc
