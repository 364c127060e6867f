#!/usr/bin/env bash
# One prepared run of every GPU check, for a machine with a CUDA device and a short lease.
#
#   OUT=/some/dir bash benchmarks/gpu_checks.sh
#
# Steps run in order of importance, each under a time cap, and the whole script within BUDGET
# seconds (default 470): a step that no longer fits is skipped and says so, so the log is always
# complete up to the deadline. Everything goes to $OUT/gpu_checks.log (one file, so a tool that
# fetches few files gets it all). Environment:
#   OUT      results folder (default ./gpu-results)
#   BUDGET   seconds for all steps (default 470)
#   DEVICE   cuda (default) or cpu, to rehearse the script on a machine without a GPU
#   QUICK    any value: small benchmark sizes (a rehearsal)
#   WHEELS   a folder of wheels to install first (for a machine without network access)
#   ML100K   path to ml-100k.zip for the end-to-end runs and bench-dtype (skipped when absent)
#   E2E      0: skip the end-to-end MovieLens-100K runs (about 2 minutes; the first H100 run has them)
# torch with CUDA must already be installed; the project runs from this checkout (PYTHONPATH).
set -uo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-gpu-results}
BUDGET=${BUDGET:-470}
DEVICE=${DEVICE:-cuda}
QUICK=${QUICK:-}
PY=${PYTHON:-python3}
mkdir -p "$OUT"
LOG="$OUT/gpu_checks.log"
: >"$LOG"
start=$(date +%s)
if [[ -n "${WHEELS:-}" ]]; then
  $PY -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site "$WHEELS"/*.whl \
    >>"$LOG" 2>&1 || echo "wheel install failed" >>"$LOG"
  export PYTHONPATH=/tmp/site${PYTHONPATH:+:$PYTHONPATH}
fi
export PYTHONPATH="$PWD:${PYTHONPATH:-}" PYTHONUNBUFFERED=1 RECSYS_NO_PROGRESS=1
export RECSYS_RUNS_DIR=/tmp/recsys-runs RECSYS_DATA_DIR=/tmp/recsys-data
# tests/test_runs.py also runs the `recsys` console script when it is on PATH.
mkdir -p /tmp/recsys-bin && printf '#!/bin/sh\nexec %s -m recsys_cli "$@"\n' "$PY" >/tmp/recsys-bin/recsys
chmod +x /tmp/recsys-bin/recsys && export PATH="/tmp/recsys-bin:$PATH"
quick=${QUICK:+--quick}

step() {  # step NAME CAP_SECONDS COMMAND...
  local name=$1 cap=$2; shift 2
  local left=$((BUDGET - ($(date +%s) - start)))
  if ((left < 15)); then echo "== $name: SKIPPED (budget spent)" >>"$LOG"; return; fi
  ((cap > left)) && cap=$left
  echo "== $name (cap ${cap} s, t=$(($(date +%s) - start)) s): $*" >>"$LOG"
  local t0=$(date +%s)
  timeout -k 5 "$cap" "$@" >>"$LOG" 2>&1
  local rc=$?; echo >>"$LOG"
  echo "== $name: exit $rc after $(($(date +%s) - t0)) s" >>"$LOG"
}

step device 20 bash -c "nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv; nproc; \
  $PY -c 'import torch, sys; print(sys.version.split()[0], torch.__version__, torch.version.cuda, \
  torch.cuda.is_available() and torch.cuda.get_device_name(0))'"
step cuda_tests 100 $PY -m pytest -q -p no:cacheprovider -rs tests/test_cuda.py
# End to end on real MovieLens-100K (the settings docs/benchmarks.md used on the CPU), on the device.
if [[ -n "${ML100K:-}" && -f "${ML100K:-}" && "${E2E:-1}" != 0 ]]; then
  ml=(--set data.dataset=movielens-100k --set "data.source=$ML100K" --set data.verify=false
      --set "device.accelerator=$DEVICE" --json -q)
  step e2e_ease 40 $PY -m recsys_cli run configs/ease.yaml "${ml[@]}"
  step e2e_gfcf 40 $PY -m recsys_cli run configs/gfcf.yaml "${ml[@]}"
  # the shipped configs as they are (docs/benchmarks.md has their CPU figures on the same split)
  step e2e_dae 60 $PY -m recsys_cli run configs/dae.yaml "${ml[@]}"
  step e2e_multvae 60 $PY -m recsys_cli run configs/multvae.yaml "${ml[@]}"
  step e2e_two_tower_1 60 $PY -m recsys_cli run configs/two-tower-1.yaml "${ml[@]}"
  step e2e_two_tower_2 60 $PY -m recsys_cli run configs/two-tower-2.yaml "${ml[@]}"
  step e2e_ials 40 $PY -m recsys_cli run configs/ials.yaml "${ml[@]}"
  step e2e_lightgcn 120 $PY -m recsys_cli run configs/lightgcn.yaml "${ml[@]}"
fi
# issue 12: iALS on the GPU against implicit's ALS on this machine's CPU cores (target ≥ 10×); needs the
# implicit package (pip, or its wheel in WHEELS)
step bench_ials 120 $PY benchmarks/bench_baselines.py --only implicit-als ials --device "$DEVICE" --repeats 2 \
  ${QUICK:+--scale 0.1}
step bench_lightgcn 150 $PY benchmarks/bench_lightgcn.py --device "$DEVICE" $quick
step bench_closed_form 80 $PY benchmarks/bench_closed_form.py --device "$DEVICE" --skip-course --repeats 2 $quick
step bench_neural 80 $PY benchmarks/bench_neural.py --device "$DEVICE" $quick
step bench_evaluator 60 $PY benchmarks/bench_evaluator.py --device "$DEVICE" --repeats 2 $quick
if [[ -n "${ML100K:-}" && -f "${ML100K:-}" ]]; then
  # 10 epochs took ~9 s of fit per dtype on the H100 plus a process start each: 3 epochs fit the cap
  step bench_dtype_lightgcn 100 $PY -m recsys_cli bench-dtype configs/lightgcn.yaml --device "$DEVICE" --repeats 1 \
    --set data.dataset=movielens-100k --set "data.source=$ML100K" --set data.verify=false \
    --set training.epochs=3 --set training.batch_size=4096 --set training.learning_rate=4e-3
fi
step all_tests 150 $PY -m pytest -q -p no:cacheprovider -x --timeout 120
echo "== done at t=$(($(date +%s) - start)) s" >>"$LOG"
