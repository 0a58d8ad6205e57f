#!/usr/bin/env bash
# autointerp batch on a Slurm cluster: n workers as an array job, each explaining its share of
# the units into its own store, all asking one shared LLM server (e.g. vLLM); then one merge.
#
# How it works
#   `autointerp batch --shard i/n` takes the units whose position in the (layer, index) order is
#   i mod n, so the n workers cover every unit exactly once. Each writes its own store file
#   (SQLite must not be shared over NFS); each mines the layers it needs itself (one pass of the
#   subject model, the same deterministic run in every shard). `autointerp merge` then combines
#   the shards without duplicates (rows are matched by their content keys). A worker that is
#   preempted or fails can simply be resubmitted: its store remembers what it has done.
#
# Usage
#   1. serve an LLM the workers can reach, e.g. on a GPU node:
#        vllm serve Qwen/Qwen2.5-7B-Instruct --port 8000      # -> http://gpu-node:8000/v1
#   2. submit the workers, then the merge once they are all done:
#        jid=$(sbatch --parsable scripts/slurm_batch.sh)
#        sbatch --dependency=afterany:$jid --wrap \
#          ".venv/bin/autointerp merge shards/shard-*.db --into store/autointerp.db"
#   3. rerun step 2 after any failure: only work not done yet is done.
#
#SBATCH --job-name=autointerp-batch
#SBATCH --array=0-7                  # n = 8 workers; keep N_SHARDS below equal to the array size
#SBATCH --cpus-per-task=4
#SBATCH --mem=16G
#SBATCH --time=08:00:00
#SBATCH --output=logs/batch-%A_%a.log
#SBATCH --requeue                    # a preempted worker is requeued and continues

set -euo pipefail
cd "${SLURM_SUBMIT_DIR:-.}"
mkdir -p shards logs
N_SHARDS=${SLURM_ARRAY_TASK_COUNT:-8}
I=${SLURM_ARRAY_TASK_ID:-0}
MODEL=${AUTOINTERP_MODEL:-smollm2-135m}
LLM=${AUTOINTERP_LLM:-openai:Qwen/Qwen2.5-7B-Instruct}
LLM_URL=${AUTOINTERP_LLM_BASE_URL:-http://gpu-node:8000/v1}

# --concurrency: requests in flight per worker (the server batches them); exit 3 (budget) is
# not an error for the array.
.venv/bin/autointerp batch \
  --model "$MODEL" --llm "$LLM" --llm-base-url "$LLM_URL" \
  --shard "$I/$N_SHARDS" --store "shards/shard-$I.db" \
  --concurrency 8 --no-progress "$@" || [ $? -eq 3 ]
