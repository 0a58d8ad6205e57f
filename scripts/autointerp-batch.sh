#!/usr/bin/env bash
# The nightly batch: explain and score every unit not done yet, logging to a file.
# Used by scripts/cron.txt and scripts/autointerp-batch.service; safe to run by hand.
#
# Only new work is done: every unit is a job in the store keyed by what determines its result,
# so units already done are skipped, and a run killed midway (reboot, OOM, kill -9) simply
# continues next time. Overlapping runs are harmless too (they share the work through safe
# claims), but flock keeps a second nightly run from starting while one still runs.
#
# Settings come from the environment (or autointerp.toml in AUTOINTERP_DIR):
#   AUTOINTERP_DIR    the checkout to run in            [default: this script's repository]
#   AUTOINTERP_STORE  the store                         [default: store/autointerp.db]
#   AUTOINTERP_MODEL, AUTOINTERP_LLM, AUTOINTERP_LLM_BASE_URL, OPENAI_API_KEY as for any command
#   BATCH_ARGS        extra flags, e.g. "--layers 0-11 --max-cost-usd 5 --concurrency 8"
#   BATCH_LOG         the log file                      [default: $AUTOINTERP_DIR/logs/batch.log]
# Exit status: that of `autointerp batch` (0 ok, 1 error, 2 bad flags, 3 budget reached).
set -u
DIR="${AUTOINTERP_DIR:-$(cd "$(dirname "$0")/.." && pwd)}"
cd "$DIR" || exit 1
LOG="${BATCH_LOG:-$DIR/logs/batch.log}"
mkdir -p "$(dirname "$LOG")"
AUTOINTERP="${AUTOINTERP_BIN:-$DIR/.venv/bin/autointerp}"
{
  echo "=== $(date -Is) autointerp batch ${BATCH_ARGS:-} (pid $$)"
  # shellcheck disable=SC2086
  flock -n -E 75 "$DIR/.autointerp-batch.lock" "$AUTOINTERP" batch --no-progress ${BATCH_ARGS:-}
  rc=$?
  if [ $rc -eq 75 ]; then echo "another batch run holds the lock; nothing started"; rc=0; fi
  echo "=== $(date -Is) exit $rc"
} >>"$LOG" 2>&1
exit $rc
