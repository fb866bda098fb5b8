#!/usr/bin/env bash
# The quality tables of docs/benchmarks.md for one build profile on both bundled datasets:
# each dataset built by benchmarks/parallel_build.py (independent chains at once; both
# datasets at once too), then `genrec eval` on the validation and test splits and the path
# ablation on test. Logs and each manifest land in OUT.
#
#   benchmarks/full_tables.sh OUT [PROFILE] [DEVICE] [WORKERS]
#   benchmarks/full_tables.sh /tmp/tables full cuda 8       # a GPU box with 16 cores
#   DATASETS=beauty benchmarks/full_tables.sh /tmp/tables   # one dataset (default: both)
#   STAGES=test ...                                         # skip the validation eval
#
# MiniLM content vectors are read from OUT/.cache when present (copy artifacts/.cache there
# to skip the encoder on a machine without the MiniLM package).
set -euo pipefail
out=${1:?usage: full_tables.sh OUT [PROFILE] [DEVICE] [WORKERS]}
profile=${2:-full}
device=${3:-cuda}
workers=${4:-2}
cd "$(dirname "$0")/.."
mkdir -p "$out"
genrec=(python -c "from cli.main import app; app()")
start=$SECONDS
datasets=${DATASETS:-ml-100k beauty}
for d in $datasets; do
  python benchmarks/parallel_build.py --dataset "$d" --profile "$profile" --device "$device" \
    --artifacts "$out/$d" > "$out/build-$d.log" 2>&1 &
done
wait
echo "built $datasets in $((SECONDS - start)) s"
for d in $datasets; do
  for stage in ${STAGES:-valid test}; do
    t=$SECONDS
    "${genrec[@]}" eval --artifacts "$out/$d" --dataset "$d" --stage "$stage" \
      --workers "$workers" > "$out/eval-$d-$stage.log" 2>&1
    echo "$d $stage eval $((SECONDS - t)) s"
  done
  t=$SECONDS
  python benchmarks/path_ablation.py --artifacts "$out/$d" --stage test --workers "$workers" \
    > "$out/ablation-$d.log" 2>&1
  echo "$d ablation $((SECONDS - t)) s"
  cp "$out/$d/current/manifest.json" "$out/manifest-$d.json"
done
