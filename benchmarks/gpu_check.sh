#!/usr/bin/env bash
# The whole GPU check as one unattended script (issues 13 and 21): every stage has its own time limit and
# writes what it finished, a failing or timed-out stage does not stop the next, and OUT/report.md is
# rewritten after every stage.
#
#   bash benchmarks/gpu_check.sh OUT          # on the CUDA machine, from anywhere; about 9 minutes at most
#   bash benchmarks/gpu_check.sh --fetch-wheels   # here, with PyPI: pycocotools and faster-coco-eval wheels
#                                                 # for the GPU machine's Python 3.12 into .whl/ (carry .whl)
#
# OUT gets three files: report.md (environment and every table), results.json (every stage's raw record
# and status) and stage_files.tar.gz (each stage's JSON and log). Stages (status in the report's table):
#   env        date, GPU, driver, versions, CPU count, a measured bf16 matmul rate
#   tests      (a) pytest -m gpu on the test files that hold GPU tests (what make test-gpu runs)
#   steps      (b) fcoslab imprv_coco_1x and tv_fcos_r50 vs torchvision's FCOS step, bf16 and fp32, 800x1066,
#                  batch 8: images/s, MFU, peak memory, memory per image (benchmarks/gpu_stages.py)
#   profile    (e) torch.profiler top ops and kernels of one step, and the step's phases
#   maxbatch   (c) largest batch that fits at 800x1066
#   evalshare  (f) the 5000-image COCO evaluation (eval.backend=faster) against an epoch of training
#   decode     (g) nvjpeg vs CPU JPEG decoding
#   ddp        (h) torchrun --nproc_per_node=1 with NCCL, one epoch train / evaluate / checkpoint / resume
#   levers     (d) channels-last, cudnn.benchmark, optimizers, host syncs, CuPy on/off, CUDA graphs,
#                  torch.compile (benchmarks/gpu_levers.py); last, so it gets whatever time is left
# Environment: GPU_CHECK_BUDGET (seconds for all stages, default 530), GPU_CHECK_STAGES (a subset, e.g.
# "env steps"), GPU_CHECK_PY (the python; default .venv/bin/python if there, else python3), GPU_CHECK_WORK
# (the stage files' folder; default a new temporary folder), GPU_CHECK_TIME_PCT (every stage's seconds in
# percent, default 100), GPU_CHECK_TINY=1 (a CPU smoke run: tiny sizes, the shapes preset, no pytest, CUDA-only
# columns n/a; about a minute on the project's shared 2-core machine).
set -uo pipefail
repo=$(cd "$(dirname "$0")/.." && pwd)
cd "$repo" || exit 2

if [ "${1:-}" = "--fetch-wheels" ]; then
  exec python3 -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
    --platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 --platform manylinux_2_17_x86_64 \
    --platform manylinux2014_x86_64 -d .whl pycocotools==2.0.11 faster-coco-eval==1.8.0
fi

out=${1:-gpu_check_out}
mkdir -p "$out" && out=$(cd "$out" && pwd)
work=${GPU_CHECK_WORK:-$(mktemp -d "${TMPDIR:-/tmp}/gpu_check.XXXXXX")}
mkdir -p "$work/status" "$work/logs" && work=$(cd "$work" && pwd)
if [ -n "${GPU_CHECK_PY:-}" ]; then py=$GPU_CHECK_PY
elif [ -x .venv/bin/python ]; then py=$repo/.venv/bin/python
else py=python3; fi
pct=${GPU_CHECK_TIME_PCT:-100}  # every stage's seconds (and the default budget) in percent
budget=${GPU_CHECK_BUDGET:-$((530 * pct / 100))}
tiny=${GPU_CHECK_TINY:-0}
t0=$(date +%s)
export PYTHONPATH="$repo${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
export GPU_CHECK_COMMAND="${GPU_CHECK_TINY:+GPU_CHECK_TINY=$GPU_CHECK_TINY }bash benchmarks/gpu_check.sh $*"

# The order the stages run in, and each one's seconds: wanted, and the least worth starting with.
order=(env tests steps profile maxbatch evalshare decode ddp levers)
declare -A want=([env]=30 [tests]=75 [steps]=110 [profile]=35 [maxbatch]=50 [evalshare]=60 [decode]=25
                 [ddp]=60 [levers]=100000)
declare -A least=([env]=10 [tests]=30 [steps]=40 [profile]=20 [maxbatch]=20 [evalshare]=25 [decode]=10
                  [ddp]=30 [levers]=40)

for s in "${!want[@]}"; do
  want[$s]=$(( want[$s] * pct / 100 > 1 ? want[$s] * pct / 100 : 1 ))
  least[$s]=$(( least[$s] * pct / 100 > 1 ? least[$s] * pct / 100 : 1 ))
done

if [ "$tiny" = 1 ]; then
  export OMP_NUM_THREADS=${OMP_NUM_THREADS:-1}  # a shared CPU: two OpenMP threads can be 100x slower
  common=(--device cpu --size 128 128 --batch 1 --iters 1 --warmup 0 --presets shapes --precisions fp32)
  levers_args=(--device cpu --size 128 128 --batch 1 --iters 1 --warmup 0 --preset shapes --precision fp32
               --levers baseline channels_last optimizer_fused trainer_syncs cuda_graph)
  extra_maxbatch=(--max-batch 2); extra_eval=(--eval-images 4 --eval-sizes 256x192 --score-images 50)
  extra_decode=(--decode-images 4); ddp_args=(--device cpu --images 32 --val 8)
else
  common=(--device cuda --size 800 1066 --batch 8 --iters 10 --presets imprv_coco_1x tv_fcos_r50 --precisions bf16 fp32)
  levers_args=(--device cuda --size 800 1066 --batch 8 --iters 10 --preset imprv_coco_1x --precision bf16)
  extra_maxbatch=(); extra_eval=(--eval-images 500); extra_decode=(--decode-images 256); ddp_args=(--images 512 --val 64)
fi

selected() { [ -z "${GPU_CHECK_STAGES:-}" ] || [[ " $GPU_CHECK_STAGES " == *" $1 "* ]]; }
left() { echo $((budget - ($(date +%s) - t0))); }
inner() {  # a Python stage's own limit (it starts no row after it): 15% or 20 s before the timeout, the later
  local a=$(($1 * 85 / 100)) b=$(($1 - 20))
  echo $((a > b ? a : b))
}
T() { timeout -k 10 "$limit" "$@"; }

stage_env() {
  T "$py" benchmarks/gpu_stages.py env --work "$work" --device "${common[1]}"
}
stage_tests() {
  local files
  files=$(grep -rl --include="test_*.py" "mark\.gpu" tests | tr '\n' ' ')
  echo "GPU test files: $files"
  T "$py" -m pytest -q -rs -m gpu -p no:cacheprovider $files
  local rc=$?
  { echo "pytest -q -rs -m gpu $files"; grep -E "passed|failed|error|skipped" "$work/logs/tests.log" | tail -n 1; } \
    > "$work/tests_summary.txt"
  return $rc
}
stage_steps() { T "$py" benchmarks/gpu_stages.py steps --work "$work" "${common[@]}" --time-limit "$(inner "$limit")"; }
stage_profile() { T "$py" benchmarks/gpu_stages.py profile --work "$work" "${common[@]}" --time-limit "$(inner "$limit")"; }
stage_maxbatch() {
  T "$py" benchmarks/gpu_stages.py maxbatch --work "$work" "${common[@]}" "${extra_maxbatch[@]}" \
    --time-limit "$(inner "$limit")"
}
stage_evalshare() {
  T "$py" benchmarks/gpu_stages.py evalshare --work "$work" "${common[@]}" "${extra_eval[@]}" --time-limit "$(inner "$limit")"
}
stage_decode() {
  T "$py" benchmarks/gpu_stages.py decode --work "$work" "${common[@]}" "${extra_decode[@]}" --time-limit "$(inner "$limit")"
}
stage_ddp() {
  T "$py" -m torch.distributed.run --standalone --nproc_per_node=1 benchmarks/gpu_ddp_check.py --work "$work" "${ddp_args[@]}"
}
stage_levers() { T "$py" benchmarks/gpu_levers.py --work "$work" "${levers_args[@]}" --time-limit "$(inner "$limit")"; }

assemble() {
  "$py" benchmarks/gpu_report.py "$work" "$out" >/dev/null 2>"$work/logs/report.log" \
    || echo "report assembly failed: $(tail -n 1 "$work/logs/report.log")"
  tar -czf "$out/stage_files.tar.gz" -C "$work" --exclude=./cocolike --exclude=./ddp_data --exclude=./ddp_run \
    --exclude=./site . 2>/dev/null
}

run_stage() {
  local name=$1 reserve=0 later=0 s
  selected "$name" || return 0
  for s in "${order[@]}"; do  # keep the least time of every selected stage after this one
    if [ "$later" = 1 ] && selected "$s"; then reserve=$((reserve + ${least[$s]})); fi
    [ "$s" = "$name" ] && later=1
  done
  limit=$(( $(left) - reserve ))
  [ "$limit" -gt "${want[$name]}" ] && limit=${want[$name]}
  if [ "$tiny" = 1 ] && [ "$name" = tests ]; then
    printf 'skipped: tiny (CPU) mode\n0\n' > "$work/status/$name"
    echo "== $name: skipped (tiny mode)"
    return 0
  fi
  if [ "$limit" -lt "${least[$name]}" ]; then
    printf 'skipped: %s s left for it, it needs %s\n0\n' "$limit" "${least[$name]}" > "$work/status/$name"
    echo "== $name: skipped ($limit s left)"
    assemble
    return 0
  fi
  echo "== $name (limit $limit s, $(left) s of the budget left)"
  local started rc status
  started=$(date +%s)
  "stage_$name" > "$work/logs/$name.log" 2>&1
  rc=$?
  case $rc in
    0) status=ok ;;
    124|137) status="timed out after $limit s" ;;
    *) status="failed rc=$rc" ;;
  esac
  printf '%s\n%s\n' "$status" "$(( $(date +%s) - started ))" > "$work/status/$name"
  echo "   $name: $status in $(( $(date +%s) - started )) s"
  [ "$status" = ok ] || tail -n 3 "$work/logs/$name.log" | sed 's/^/   | /'
  assemble
}

echo "gpu_check: OUT $out, stage files $work, python $py, budget $budget s${GPU_CHECK_STAGES:+, stages: $GPU_CHECK_STAGES}"
# The project's COCO dependencies where the machine lacks them: wheels carried in .whl (see --fetch-wheels).
if ! "$py" -c "import pycocotools, faster_coco_eval" 2>/dev/null && ls .whl/*.whl >/dev/null 2>&1; then
  "$py" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target "$work/site" .whl/*.whl \
    && export PYTHONPATH="$PYTHONPATH:$work/site" && echo "installed $(ls .whl | tr '\n' ' ')into $work/site"
fi
for stage in "${order[@]}"; do run_stage "$stage"; done
assemble
echo "== done in $(( $(date +%s) - t0 )) s: $out/report.md"
cat "$out/report.md"
