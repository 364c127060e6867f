#!/usr/bin/env bash
# One prepared run of every GPU check, for a machine with a CUDA device (results to $OUT or ./gpu-results).
# Usage: OUT=/some/dir bash benchmarks/gpu_checks.sh
# Assumes torch with CUDA is installed; installs the project without touching torch.
set -uo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-gpu-results}
mkdir -p "$OUT"
export PYTHONUNBUFFERED=1 RECSYS_NO_PROGRESS=1 RECSYS_RUNS_DIR="$OUT/runs" RECSYS_DATA_DIR=/tmp/recsys-data
python -m pip install -q --no-deps -e . 2>&1 | tail -1
python -m pip install -q typer rich pydantic pyyaml pandas scikit-learn matplotlib nltk pytest hypothesis pytest-timeout 2>&1 | tail -1
{
  nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv
  python -c "import torch; print(torch.__version__, torch.version.cuda, torch.cuda.get_device_name(0))"
} > "$OUT/device.txt" 2>&1
run() { local name=$1; shift; echo "== $name: $*"; timeout 900 "$@" > "$OUT/$name.log" 2>&1; echo "   exit $?"; }
run tests python -m pytest -q -x
run evaluator python benchmarks/bench_evaluator.py --device cuda --output "$OUT/evaluator.json"
run closed_form python benchmarks/bench_closed_form.py --device cuda --json "$OUT/closed_form.json"
run lightgcn python benchmarks/bench_lightgcn.py --device cuda --json "$OUT/lightgcn.json"
run bench_dtype_ease python -m recsys_cli bench-dtype configs/ease.yaml --device cuda --repeats 2 \
    --set data.dataset=synthetic --set data.synthetic.n_users=20000 --set data.synthetic.n_items=5000 \
    --set data.synthetic.n_interactions=1000000 --json
echo "results in $OUT"
