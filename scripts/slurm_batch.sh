#!/usr/bin/env bash
# autointerp on a Slurm cluster, in two phases: mine once (an array over corpus shards, then one
# merge), explain anywhere (an array over units, each worker reading the one mined store, then
# one merge). Run on a real one-node Slurm by tests/batch/test_slurm.py.
#
#   mine array (N_MINE)  ->  merge-mined  ->  explain array (N_EXPLAIN)  ->  merge
#
# How it works
#   mine         task i runs `autointerp mine --shard i/N_MINE`: the i-th of N_MINE equal ranges of
#                the corpus's contexts, into its own store $WORK/mine-i.db (SQLite must not be
#                shared over NFS). A shard keeps its final state beside its store, no records.
#   merge-mined  `autointerp merge` of the mine shards -> $WORK/mined.db: exactly the run one
#                `autointerp mine` over the whole corpus gives (same run id, records, statistics).
#   explain      task i runs `autointerp batch --shard i/N_EXPLAIN --mined $WORK/mined.db` into its own
#                store $WORK/explain-i.db: it explains the units whose position in the (layer, index)
#                order is i mod N_EXPLAIN, reading their records from mined.db read-only (no copy of
#                it: its store holds only jobs, explanations, scores, LLM calls and the run's row).
#                It mines nothing.
#   merge        mined.db and the explain stores -> $OUT, without duplicates.
#   A task that is preempted or fails can be resubmitted: every step continues where it stopped
#   (the mine from its checkpoint; batch from its jobs table; merges are idempotent).
#
# Usage
#   1. serve an LLM the workers can reach, e.g. on a GPU node:
#        vllm serve Qwen/Qwen2.5-7B-Instruct --port 8000      # -> http://gpu-node:8000/v1
#   2. submit the four jobs, chained by dependencies (prints their ids):
#        AUTOINTERP_LLM_BASE_URL=http://gpu-node:8000/v1 scripts/slurm_batch.sh submit
#   3. rerun step 2 after any failure: only work not done yet is done.
#   One step by hand (e.g. in an allocation): scripts/slurm_batch.sh mine|merge-mined|explain|merge
#
# Settings (environment; sbatch passes it to the jobs)
#   AUTOINTERP         the command [.venv/bin/autointerp]
#   AUTOINTERP_MODEL   subject model [smollm2-135m]      AUTOINTERP_LLM  [openai:Qwen/Qwen2.5-7B-Instruct]
#   AUTOINTERP_LLM_BASE_URL [http://gpu-node:8000/v1]
#   N_MINE [4]  N_EXPLAIN [8]  TOKENS [1000000]  CORPUS [gensim]  LAYERS [all]
#   WORK [shards]  OUT [store/autointerp.db]  LOGS [logs]
#   MINE_ARGS / BATCH_ARGS   extra options for `mine` / `batch` (e.g. "--sae PATH", "--units heads")
#   SBATCH_MINE [--cpus-per-task=8 --mem=32G --time=08:00:00]   resources of a mine task (a GPU: --gres=gpu:1)
#   SBATCH_EXPLAIN [--cpus-per-task=4 --mem=16G --time=08:00:00]
#   SBATCH_ARGS        options for every job (e.g. --partition=...)

set -euo pipefail
cd "${SLURM_SUBMIT_DIR:-.}"
AUTOINTERP=${AUTOINTERP:-.venv/bin/autointerp}
MODEL=${AUTOINTERP_MODEL:-smollm2-135m}
LLM=${AUTOINTERP_LLM:-openai:Qwen/Qwen2.5-7B-Instruct}
LLM_URL=${AUTOINTERP_LLM_BASE_URL:-http://gpu-node:8000/v1}
N_MINE=${N_MINE:-4}
N_EXPLAIN=${N_EXPLAIN:-8}
TOKENS=${TOKENS:-1000000}
CORPUS=${CORPUS:-gensim}
LAYERS=${LAYERS:-all}
WORK=${WORK:-shards}
OUT=${OUT:-store/autointerp.db}
LOGS=${LOGS:-logs}
I=${SLURM_ARRAY_TASK_ID:-0}
# the same run: mine and batch must agree on model, corpus, tokens and layers
COMMON=(--model "$MODEL" --corpus "$CORPUS" --tokens "$TOKENS" --layers "$LAYERS")

case "${1:-}" in
  submit)
    mkdir -p "$WORK" "$LOGS" "$(dirname "$OUT")"
    SA=${SBATCH_ARGS:-}
    # shellcheck disable=SC2086
    mine=$(sbatch --parsable $SA ${SBATCH_MINE:---cpus-per-task=8 --mem=32G --time=08:00:00} --requeue \
           --job-name=ai-mine --array=0-$((N_MINE - 1)) --output="$LOGS/mine-%A_%a.log" "$0" mine)
    merged=$(sbatch --parsable $SA --dependency=afterok:"$mine" --job-name=ai-merge-mined \
             --output="$LOGS/merge-mined-%j.log" "$0" merge-mined)
    explain=$(sbatch --parsable $SA ${SBATCH_EXPLAIN:---cpus-per-task=4 --mem=16G --time=08:00:00} --requeue \
              --dependency=afterok:"$merged" --job-name=ai-explain --array=0-$((N_EXPLAIN - 1)) \
              --output="$LOGS/explain-%A_%a.log" "$0" explain)
    final=$(sbatch --parsable $SA --dependency=afterany:"$explain" --job-name=ai-merge \
            --output="$LOGS/merge-%j.log" "$0" merge)
    echo "mine $mine merge-mined $merged explain $explain merge $final"
    ;;
  mine)
    $AUTOINTERP mine "${COMMON[@]}" --shard "$I/$N_MINE" --store "$WORK/mine-$I.db" --json ${MINE_ARGS:-}
    ;;
  merge-mined)
    shards=()
    for ((i = 0; i < N_MINE; i++)); do shards+=("$WORK/mine-$i.db"); done
    $AUTOINTERP merge "${shards[@]}" --into "$WORK/mined.db"
    ;;
  explain)
    ST="$WORK/explain-$I.db"
    # --concurrency: requests in flight per worker (the server batches them); exit 3 (budget) is
    # not an error for the array.
    $AUTOINTERP batch "${COMMON[@]}" --llm "$LLM" --llm-base-url "$LLM_URL" \
      --shard "$I/$N_EXPLAIN" --mined "$WORK/mined.db" --store "$ST" --concurrency "${CONCURRENCY:-8}" --no-progress ${BATCH_ARGS:-} \
      || [ $? -eq 3 ]
    ;;
  merge)
    stores=("$WORK/mined.db")
    for ((i = 0; i < N_EXPLAIN; i++)); do [ -f "$WORK/explain-$i.db" ] && stores+=("$WORK/explain-$i.db"); done
    $AUTOINTERP merge "${stores[@]}" --into "$OUT"
    ;;
  *)
    echo "usage: $0 submit | mine | merge-mined | explain | merge   (see the comments at the top)" >&2
    exit 2
    ;;
esac
